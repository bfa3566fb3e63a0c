//! `model_type: "ernie5"`: our config-driven reading of ERNIE 5.0 (spec
//! `shared/spec/ernie5-generation.md` §1-2). The backbone is the ERNIE 4.5 MoE decoder with
//! unified routing (one router over one expert pool: the text-MoE keys and tensor names) and 3-D
//! RoPE (`mrope_section` / `freq_allocation`, as ERNIE-4.5-VL); two optional sections describe the
//! generation heads:
//!
//! ```json
//! "visual_generation": { "bits": 32, "scales": [[1,1],[2,2],[4,4]], "resample": "bilinear",
//!                        "scale_positions": "center", "boi_token": "<|BOI|>", "eoi_token": "<|EOI|>" },
//! "audio": { "num_levels": 8, "codebook_size": 2048, "frame_rate": 12.5,
//!            "boa_token": "<|BOA|>", "eoa_token": "<|EOA|>" }
//! ```
//!
//! A missing section means the checkpoint cannot generate (or, for audio, take in) that modality;
//! the engine refuses it with an error naming the missing part.

use serde_json::{Map, Value};

use super::keys::Keys;
use super::text::TextConfig;
use crate::error::config_err;
use crate::Result;

/// Largest token grid side of one scale (a 4096² image at 16× downsampling is 256).
const MAX_SCALE_SIDE: usize = 256;
/// Largest number of bits per visual token (Infinity uses 32 and 64).
const MAX_BITS: usize = 64;
/// Largest codebook (Mimi's is 2048).
const MAX_CODEBOOK: usize = 1 << 16;

/// How the accumulated latent is resampled between scales (spec §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Infinity: bilinear (align_corners = false, no antialias) down and up.
    Bilinear,
    /// VAR: area down, bicubic up.
    AreaBicubic,
}

/// Where a scale's cells sit on the final grid for their RoPE positions (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalePositions {
    /// Cell centres: `h = s + (i + 0.5)·H_f/h_k − 0.5` (ERNIE 5.0 §1.4).
    Center,
    /// Cell corners: `h = s + i·H_f/h_k` (Infinity).
    TopLeft,
}

/// The `visual_generation` section: next-scale bitwise prediction (spec §2-3).
#[derive(Clone, Debug, PartialEq)]
pub struct VisualGenConfig {
    /// `bits`: d, bits per visual token = latent channels of the image decoder.
    pub bits: usize,
    /// `scales`: the (h, w) token grid of each scale, coarse to fine; the last is the final
    /// latent grid (H_f, W_f).
    pub scales: Vec<(usize, usize)>,
    /// `resample`: `"bilinear"` (default) or `"area_bicubic"`.
    pub resample: Resample,
    /// `scale_positions`: `"center"` (default) or `"top_left"`.
    pub scale_positions: ScalePositions,
    /// `boi_token`: the begin-of-image token's text (default `<|BOI|>`).
    pub boi_token: String,
    /// `eoi_token`: the end-of-image token's text (default `<|EOI|>`).
    pub eoi_token: String,
}

/// The `audio` section: codec codes in and next-codec prediction out (spec §2, §5).
#[derive(Clone, Debug, PartialEq)]
pub struct AudioGenConfig {
    /// `num_levels`: Q, RVQ levels the model uses (≤ the codec's quantizers, ≤ decoder layers).
    pub num_levels: usize,
    /// `codebook_size`: V, codes per level.
    pub codebook_size: usize,
    /// `frame_rate`: codec frames per second (Mimi: 12.5).
    pub frame_rate: f32,
    /// `boa_token`: the begin-of-audio token's text (default `<|BOA|>`).
    pub boa_token: String,
    /// `eoa_token`: the end-of-audio token's text (default `<|EOA|>`).
    pub eoa_token: String,
}

/// A whole `ernie5` configuration: the decoder plus the optional generation sections.
#[derive(Clone, Debug, PartialEq)]
pub struct Ernie5Config {
    /// The MoE decoder (unified routing, 3-D RoPE in `text.mrope_section`).
    pub text: TextConfig,
    /// Image generation, when the checkpoint has it.
    pub visual_generation: Option<VisualGenConfig>,
    /// Audio understanding and generation, when the checkpoint has it.
    pub audio: Option<AudioGenConfig>,
}

impl Ernie5Config {
    /// Parses an `ernie5` config.json value.
    ///
    /// Errors: [`crate::Error::Config`] naming the key (dotted, e.g. `visual_generation.scales`)
    /// that is missing, mistyped or out of range, and those of [`TextConfig::from_json`].
    pub fn from_json(v: &Value) -> Result<Ernie5Config> {
        let text = TextConfig::from_json(v)?;
        let obj = v.as_object().ok_or_else(|| config_err("config.json", "is not a JSON object"))?;
        let visual_generation = match section(obj, "visual_generation")? {
            Some(s) => Some(VisualGenConfig::from_keys(&Keys(s))?),
            None => None,
        };
        let audio = match section(obj, "audio")? {
            Some(s) => Some(AudioGenConfig::from_keys(&Keys(s), &text)?),
            None => None,
        };
        Ok(Ernie5Config { text, visual_generation, audio })
    }
}

/// An optional object-valued key.
fn section<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(config_err(key, format!("expected an object, found {other}"))),
    }
}

impl VisualGenConfig {
    fn from_keys(c: &Keys<'_>) -> Result<VisualGenConfig> {
        let key = |k: &str| format!("visual_generation.{k}");
        let bits = c.usize_or("bits", 32).map_err(|_| config_err(&key("bits"), "expected a non-negative integer"))?;
        if bits == 0 || bits > MAX_BITS {
            return Err(config_err(&key("bits"), format!("{bits} must be in 1..={MAX_BITS}")));
        }
        let scales = match c.get("scales") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|s| match s.as_array().map(|p| p.iter().map(Value::as_u64).collect::<Vec<_>>()).as_deref() {
                    Some([Some(h), Some(w)]) if (1..=MAX_SCALE_SIDE as u64).contains(h) && (1..=MAX_SCALE_SIDE as u64).contains(w) => {
                        Ok((*h as usize, *w as usize))
                    }
                    _ => Err(config_err(&key("scales"), format!("entry {s} is not [h, w] with sides in 1..={MAX_SCALE_SIDE}"))),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => return Err(config_err(&key("scales"), format!("expected a non-empty list of [h, w], found {other}"))),
            None => return Err(config_err(&key("scales"), "missing")),
        };
        if scales.windows(2).any(|p| p[1].0 < p[0].0 || p[1].1 < p[0].1) {
            return Err(config_err(&key("scales"), "grids must grow (or stay) from coarse to fine"));
        }
        let resample = match c.str("resample")?.as_deref() {
            None | Some("bilinear") => Resample::Bilinear,
            Some("area_bicubic") => Resample::AreaBicubic,
            Some(other) => return Err(config_err(&key("resample"), format!("{other:?} is not \"bilinear\" or \"area_bicubic\""))),
        };
        let scale_positions = match c.str("scale_positions")?.as_deref() {
            None | Some("center") => ScalePositions::Center,
            Some("top_left") => ScalePositions::TopLeft,
            Some(other) => return Err(config_err(&key("scale_positions"), format!("{other:?} is not \"center\" or \"top_left\""))),
        };
        Ok(VisualGenConfig {
            bits,
            scales,
            resample,
            scale_positions,
            boi_token: c.str("boi_token")?.unwrap_or_else(|| "<|BOI|>".into()),
            eoi_token: c.str("eoi_token")?.unwrap_or_else(|| "<|EOI|>".into()),
        })
    }

    /// The final latent grid (H_f, W_f): the last scale's.
    pub fn final_grid(&self) -> (usize, usize) {
        // `from_keys` refuses an empty schedule.
        self.scales.last().copied().unwrap_or((1, 1))
    }
}

impl AudioGenConfig {
    fn from_keys(c: &Keys<'_>, text: &TextConfig) -> Result<AudioGenConfig> {
        let key = |k: &str| format!("audio.{k}");
        let num_levels = c.usize_or("num_levels", 8).map_err(|_| config_err(&key("num_levels"), "expected a non-negative integer"))?;
        if num_levels == 0 || num_levels > text.num_hidden_layers {
            return Err(config_err(
                &key("num_levels"),
                format!("{num_levels} must be in 1..={} (one decoder layer per level, spec §5.3)", text.num_hidden_layers),
            ));
        }
        let codebook_size =
            c.usize_or("codebook_size", 2048).map_err(|_| config_err(&key("codebook_size"), "expected a non-negative integer"))?;
        if codebook_size == 0 || codebook_size > MAX_CODEBOOK {
            return Err(config_err(&key("codebook_size"), format!("{codebook_size} must be in 1..={MAX_CODEBOOK}")));
        }
        let frame_rate = c.f32_or("frame_rate", 12.5)?;
        if !(frame_rate > 0.0 && frame_rate.is_finite()) {
            return Err(config_err(&key("frame_rate"), "must be a finite value > 0"));
        }
        Ok(AudioGenConfig {
            num_levels,
            codebook_size,
            frame_rate,
            boa_token: c.str("boa_token")?.unwrap_or_else(|| "<|BOA|>".into()),
            eoa_token: c.str("eoa_token")?.unwrap_or_else(|| "<|EOA|>".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "model_type": "ernie5", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "moe_num_experts": 4, "moe_k": 2, "moe_intermediate_size": 16, "moe_layer_start_index": 1,
            "rope_parameters": {"mrope_section": [1, 1, 2]}, "rope_theta": 1000000.0,
        })
    }

    #[test]
    fn parses_sections_and_backbone() {
        let mut v = base();
        v["visual_generation"] = json!({"bits": 16, "scales": [[1,1],[2,2],[3,4]], "scale_positions": "top_left"});
        v["audio"] = json!({"num_levels": 2, "codebook_size": 32});
        let c = Ernie5Config::from_json(&v).unwrap();
        let vg = c.visual_generation.unwrap();
        assert_eq!((vg.bits, vg.scales.len(), vg.final_grid()), (16, 3, (3, 4)));
        assert_eq!((vg.resample, vg.scale_positions), (Resample::Bilinear, ScalePositions::TopLeft));
        let a = c.audio.unwrap();
        assert_eq!((a.num_levels, a.codebook_size, a.frame_rate), (2, 32, 12.5));
        // The backbone: text MoE keys with unified routing and 3-D RoPE (1+1 h/w pairs, 2 t pairs).
        assert_eq!(c.text.moe.as_ref().map(|m| (m.num_experts, m.top_k)), Some((4, 2)));
        assert_eq!(c.text.mrope_section.map(|m| (m.hw_pairs, m.t_pairs)), Some((2, 2)));
        assert_eq!(c.text.num_hidden_layers, 4);
    }

    #[test]
    fn sections_are_optional() {
        let c = Ernie5Config::from_json(&base()).unwrap();
        assert!(c.visual_generation.is_none() && c.audio.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("visual_generation", json!({"bits": 0, "scales": [[1,1]]}), "visual_generation.bits"),
            ("visual_generation", json!({"scales": []}), "visual_generation.scales"),
            ("visual_generation", json!({"scales": [[2,2],[1,1]]}), "visual_generation.scales"),
            ("visual_generation", json!({"scales": [[1,1]], "resample": "nearest"}), "visual_generation.resample"),
            ("audio", json!({"num_levels": 5}), "audio.num_levels"),
            ("audio", json!({"num_levels": 2, "codebook_size": 0}), "audio.codebook_size"),
            ("audio", json!({"num_levels": 2, "frame_rate": -1.0}), "audio.frame_rate"),
            ("audio", json!(3), "audio"),
        ];
        for (section, value, key) in cases {
            let mut v = base();
            v[section] = value;
            let err = Ernie5Config::from_json(&v).unwrap_err().to_string();
            assert!(err.contains(key), "{section}: {err}");
        }
    }
}

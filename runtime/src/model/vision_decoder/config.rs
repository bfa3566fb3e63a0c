//! `vision_decoder/config.json` in diffusers `AutoencoderKL` keys (spec ernie5-generation §4.3;
//! diffusers 0.42.1 `models/autoencoders/autoencoder_kl.py` for the defaults).

use std::path::Path;

use serde_json::Value;

use crate::error::config_err;
use crate::{Error, Result};

/// Channel counts beyond this are treated as a malformed config (real VAEs use ≤ 1024).
const MAX_CHANNELS: usize = 1 << 16;
/// More resolution levels than this are treated as a malformed config (real VAEs use 4 or 5).
const MAX_BLOCKS: usize = 12;
/// More resnets per level than this are treated as a malformed config (real VAEs use 2).
const MAX_LAYERS: usize = 64;

/// The image decoder's (and encoder's) hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionDecoderConfig {
    /// Image channels into the encoder (3).
    pub in_channels: usize,
    /// Image channels out of the decoder (3).
    pub out_channels: usize,
    /// Latent channels `z` (16 for FLUX, the bit count `d` for Infinity's BSQ-VAE, 4 for SD).
    pub latent_channels: usize,
    /// Channels per resolution level, finest first (diffusers order). The decoder runs them
    /// coarsest first; `len − 1` is the number of 2× up/down steps.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; decoder levels have one more.
    pub layers_per_block: usize,
    /// GroupNorm groups of every norm (channels must divide by it).
    pub norm_num_groups: usize,
    /// Single-head attention between the two mid resnets.
    pub mid_block_add_attention: bool,
    /// 1×1 conv on the encoder's moments (`[2z, 2z]`).
    pub use_quant_conv: bool,
    /// 1×1 conv on the latent before the decoder (`[z, z]`).
    pub use_post_quant_conv: bool,
    /// Pipelines divide latents by this before decoding (default 0.18215, the SD value).
    pub scaling_factor: f32,
    /// Pipelines add this after dividing (FLUX 0.1159; absent = 0).
    pub shift_factor: f32,
}

impl VisionDecoderConfig {
    /// Reads and validates `path` (a `config.json`).
    ///
    /// Errors: [`Error::Io`], [`Error::Json`], and [`Error::Config`] naming the bad key.
    pub fn from_file(path: &Path) -> Result<VisionDecoderConfig> {
        let v: Value = crate::io::read_json(path)?;
        VisionDecoderConfig::from_json(&v)
    }

    /// Parses diffusers keys with diffusers' defaults, then validates.
    ///
    /// Errors: [`Error::Config`] for a wrong type, an out-of-range value, block types other than
    /// `DownEncoderBlock2D` / `UpDecoderBlock2D` or a list length that disagrees with
    /// `block_out_channels`, an activation other than SiLU, or channels that `norm_num_groups`
    /// does not divide.
    pub fn from_json(v: &Value) -> Result<VisionDecoderConfig> {
        if !v.is_object() {
            return Err(config_err("vision_decoder", "config.json is not a JSON object"));
        }
        let block_out_channels = match v.get("block_out_channels") {
            None => vec![64],
            Some(Value::Array(a)) => a.iter().map(|x| as_count("block_out_channels", x, MAX_CHANNELS)).collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(config_err("block_out_channels", "expected a list of integers")),
        };
        let cfg = VisionDecoderConfig {
            in_channels: count(v, "in_channels", 3, MAX_CHANNELS)?,
            out_channels: count(v, "out_channels", 3, MAX_CHANNELS)?,
            latent_channels: count(v, "latent_channels", 4, MAX_CHANNELS)?,
            block_out_channels,
            layers_per_block: count(v, "layers_per_block", 1, MAX_LAYERS)?,
            norm_num_groups: count(v, "norm_num_groups", 32, MAX_CHANNELS)?,
            mid_block_add_attention: flag(v, "mid_block_add_attention", true)?,
            use_quant_conv: flag(v, "use_quant_conv", true)?,
            use_post_quant_conv: flag(v, "use_post_quant_conv", true)?,
            scaling_factor: real(v, "scaling_factor", 0.18215)?,
            shift_factor: real(v, "shift_factor", 0.0)?,
        };
        cfg.validate(v)?;
        Ok(cfg)
    }

    fn validate(&self, v: &Value) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || n > MAX_BLOCKS {
            return Err(config_err("block_out_channels", format!("expected 1..={MAX_BLOCKS} levels, got {n}")));
        }
        for &c in &self.block_out_channels {
            if c % self.norm_num_groups != 0 {
                return Err(config_err("norm_num_groups", format!("{} groups do not divide {c} channels", self.norm_num_groups)));
            }
        }
        if self.scaling_factor == 0.0 {
            return Err(config_err("scaling_factor", "must not be 0 (latents are divided by it)"));
        }
        if let Some(act) = v.get("act_fn") {
            if act.as_str() != Some("silu") {
                return Err(config_err("act_fn", format!("only \"silu\" is supported, got {act}")));
            }
        }
        for (key, want) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let Some(list) = v.get(key) else { continue };
            let list = list.as_array().ok_or_else(|| config_err(key, "expected a list of block names"))?;
            if list.len() != n {
                return Err(config_err(key, format!("{} entries but block_out_channels has {n}", list.len())));
            }
            if let Some(bad) = list.iter().find(|b| b.as_str() != Some(want)) {
                return Err(config_err(key, format!("only {want} is supported, got {bad}")));
            }
        }
        Ok(())
    }

    /// Number of resolution levels (`block_out_channels.len()`).
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Pixels per latent cell along each axis: `2^(levels − 1)`.
    pub fn downscale(&self) -> usize {
        1 << (self.levels() - 1)
    }
}

fn as_count(key: &str, x: &Value, max: usize) -> Result<usize> {
    match x.as_u64() {
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        _ => Err(config_err(key, format!("expected an integer in 1..={max}, got {x}"))),
    }
}

fn count(v: &Value, key: &str, default: usize, max: usize) -> Result<usize> {
    v.get(key).map_or(Ok(default), |x| as_count(key, x, max))
}

fn flag(v: &Value, key: &str, default: bool) -> Result<bool> {
    match v.get(key) {
        None => Ok(default),
        Some(x) => x.as_bool().ok_or_else(|| config_err(key, format!("expected true or false, got {x}"))),
    }
}

fn real(v: &Value, key: &str, default: f32) -> Result<f32> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => match x.as_f64() {
            Some(f) if f.is_finite() && (f as f32).is_finite() => Ok(f as f32),
            _ => Err(Error::Config { key: key.into(), reason: format!("expected a finite number, got {x}") }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_flux_keys() {
        let c = VisionDecoderConfig::from_json(&json!({})).unwrap();
        assert_eq!((c.latent_channels, c.block_out_channels.clone(), c.norm_num_groups, c.scaling_factor), (4, vec![64], 32, 0.18215));
        let f = VisionDecoderConfig::from_json(&json!({
            "latent_channels": 16, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "use_quant_conv": false, "use_post_quant_conv": false, "scaling_factor": 0.3611, "shift_factor": 0.1159,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "act_fn": "silu"
        }))
        .unwrap();
        assert_eq!((f.levels(), f.downscale(), f.shift_factor, f.use_quant_conv), (4, 8, 0.1159, false));
    }

    #[test]
    fn malformed_configs_name_the_key() {
        let bad = [
            (json!({"block_out_channels": []}), "block_out_channels"),
            (json!({"block_out_channels": [64, "x"]}), "block_out_channels"),
            (json!({"norm_num_groups": 3, "block_out_channels": [64]}), "norm_num_groups"),
            (json!({"latent_channels": 0}), "latent_channels"),
            (json!({"scaling_factor": 0.0}), "scaling_factor"),
            (json!({"mid_block_add_attention": "yes"}), "mid_block_add_attention"),
            (json!({"act_fn": "gelu"}), "act_fn"),
            (json!({"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}), "up_block_types"),
            (json!({"down_block_types": ["CrossAttnDownBlock2D"]}), "down_block_types"),
            (json!([1, 2]), "vision_decoder"),
        ];
        for (v, key) in bad {
            match VisionDecoderConfig::from_json(&v) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: expected a config error on {key}, got {other:?}"),
            }
        }
    }
}

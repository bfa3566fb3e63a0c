//! The ERNIE-4.5-VL parts of `config.json` beyond the language model (spec §3.1): the vision
//! tower, the resampler's merge sizes, and the special token ids. Both spellings are read:
//! transformers 5.x (`model_type: ernie4_5_vl_moe`, nested `vision_config` with `hidden_size`,
//! `intermediate_size`, top-level `image_token_id`, ...) and the original remote code
//! (`ernie4_5_moe_vl`, `vision_config.embed_dim` / `mlp_ratio`, `im_patch_id`,
//! `spatial_conv_size`, `temporal_conv_size`).

use std::path::Path;

use serde_json::{Map, Value};

use super::keys::Keys;
use super::{ModelType, TextConfig};
use crate::error::config_err;
use crate::io::read_json;
use crate::Result;

/// The vision tower (spec §3.2; `Ernie4_5_VLMoeVisionConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// Blocks (`depth`).
    pub depth: usize,
    /// Width `d` (`hidden_size`, original `embed_dim`).
    pub hidden_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP width (`intermediate_size`, original `embed_dim * mlp_ratio`).
    pub intermediate_size: usize,
    /// Patch side in pixels (14).
    pub patch_size: usize,
    /// Image channels (3).
    pub in_channels: usize,
    /// Spatial merge `m` (2): the resampler folds `m × m` windows.
    pub spatial_merge_size: usize,
    /// Temporal merge (2): the resampler pairs frames.
    pub temporal_merge_size: usize,
    /// LayerNorm eps of the tower and the resampler (`rms_norm_eps` in HF's vision config: 1e-6).
    pub layer_norm_eps: f32,
    /// 2-D RoPE base (`rope_parameters.rope_theta`, 10000).
    pub rope_theta: f32,
}

impl VisionConfig {
    /// `d / num_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Values of one flattened patch: `in_channels · patch²` (588).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.patch_size * self.patch_size
    }
}

/// Special token ids of the VL prompt format (spec §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlTokenIds {
    /// `<|IMAGE_START|>`
    pub image_start: u32,
    /// `<|IMAGE_END|>`
    pub image_end: u32,
    /// `<|IMAGE_PLACEHOLDER|>` (original `im_patch_id`).
    pub image: u32,
    /// `<|VIDEO_START|>`
    pub video_start: u32,
    /// `<|VIDEO_END|>`
    pub video_end: u32,
    /// `<|VIDEO_PLACEHOLDER|>` (HF); the original format reuses the image placeholder.
    pub video: u32,
}

/// A VL checkpoint's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct VlConfig {
    /// The language model (routing groups, 3-D RoPE).
    pub text: TextConfig,
    /// The vision tower.
    pub vision: VisionConfig,
    /// Special token ids of the prompt format.
    pub tokens: VlTokenIds,
}

impl VlConfig {
    /// Reads `dir/config.json`. Errors: [`crate::Error::Io`], [`crate::Error::Json`],
    /// [`crate::Error::UnknownModelType`] for a non-VL model type, [`crate::Error::Config`] naming the key.
    pub fn from_dir(dir: &Path) -> Result<VlConfig> {
        let v: Value = read_json(&dir.join("config.json"))?;
        VlConfig::from_json(&v)
    }

    /// Parses a config.json value (see [`VlConfig::from_dir`]).
    pub fn from_json(v: &Value) -> Result<VlConfig> {
        let text = TextConfig::from_json(v)?;
        if text.model_type != ModelType::Ernie45VlMoe {
            return Err(crate::Error::UnknownModelType(format!("{:?} is not a VL model", text.model_type)));
        }
        let obj = v.as_object().ok_or_else(|| config_err("config.json", "is not a JSON object"))?;
        let c = Keys(obj);
        let empty = Map::new();
        let vis = match c.get("vision_config") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => &empty,
            Some(_) => return Err(config_err("vision_config", "is not a JSON object")),
        };
        let vc = Keys(vis);
        let hidden_size = match vc.get("hidden_size") {
            Some(_) => vc.usize_or("hidden_size", 1280)?,
            None => vc.usize_or("embed_dim", 1280)?,
        };
        let intermediate_size = match vc.get("intermediate_size") {
            Some(_) => vc.usize_or("intermediate_size", 4 * hidden_size)?,
            None => (vc.f32_or("mlp_ratio", 4.0)? * hidden_size as f32).round() as usize,
        };
        let act = vc.str("hidden_act")?.unwrap_or_else(|| "quick_gelu".into());
        if act != "quick_gelu" {
            return Err(config_err("vision_config.hidden_act", format!("{act:?} is not supported (ERNIE-4.5-VL uses \"quick_gelu\")")));
        }
        let rope_theta = match vc.get("rope_parameters") {
            Some(Value::Object(p)) => p.get("rope_theta").and_then(Value::as_f64).unwrap_or(10000.0) as f32,
            _ => vc.f32_or("rope_theta", 10000.0)?,
        };
        let vision = VisionConfig {
            depth: vc.usize_or("depth", 32)?,
            hidden_size,
            num_heads: vc.usize_or("num_heads", 16)?,
            intermediate_size,
            patch_size: vc.usize_or("patch_size", 14)?,
            in_channels: vc.usize_or("in_channels", 3)?,
            spatial_merge_size: match vc.get("spatial_merge_size") {
                Some(_) => vc.usize_or("spatial_merge_size", 2)?,
                None => c.usize_or("spatial_conv_size", 2)?,
            },
            temporal_merge_size: match vc.get("temporal_merge_size") {
                Some(_) => vc.usize_or("temporal_merge_size", 2)?,
                None => c.usize_or("temporal_conv_size", 2)?,
            },
            layer_norm_eps: vc.f32_or("rms_norm_eps", vc.f32_or("layer_norm_eps", 1e-6)?)?,
            rope_theta,
        };
        let image = match c.get("image_token_id") {
            Some(_) => c.usize_or("image_token_id", 100295)?,
            None => c.usize_or("im_patch_id", 100295)?,
        } as u32;
        let id = |key: &str, default: usize| -> Result<u32> { Ok(c.usize_or(key, default)? as u32) };
        let tokens = VlTokenIds {
            image_start: id("image_start_token_id", 101304)?,
            image_end: id("image_end_token_id", 101305)?,
            image,
            video_start: id("video_start_token_id", 101306)?,
            video_end: id("video_end_token_id", 101307)?,
            video: match c.get("video_token_id") {
                Some(_) => id("video_token_id", 103367)?,
                None => image,
            },
        };
        let cfg = VlConfig { text, vision, tokens };
        cfg.validate()?;
        // Token ids a config states must be in the vocabulary; absent ones (the original configs
        // name only `im_patch_id`) are looked up in the tokenizer by the stream builder.
        let vocab = cfg.text.vocab_size as u64;
        for key in ["image_token_id", "im_patch_id", "video_token_id", "image_start_token_id", "image_end_token_id", "video_start_token_id", "video_end_token_id"] {
            if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                let id = v.as_u64().ok_or_else(|| config_err(key, format!("expected a token id, found {v}")))?;
                if id >= vocab {
                    return Err(config_err(key, format!("{id} is outside the vocabulary of {vocab}")));
                }
            }
        }
        Ok(cfg)
    }

    /// Checks the vision sizes make a runnable tower and resampler.
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        for (key, x) in [
            ("vision_config.depth", v.depth),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.in_channels", v.in_channels),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
        ] {
            if x == 0 || x > (1 << 20) {
                return Err(config_err(key, format!("{x} is outside 1..=2^20")));
            }
        }
        if v.hidden_size % v.num_heads != 0 || v.head_dim() % 4 != 0 {
            return Err(config_err(
                "vision_config.num_heads",
                format!("head dim {} / {} must be a whole multiple of 4 (2-D half-split RoPE)", v.hidden_size, v.num_heads),
            ));
        }
        if v.temporal_merge_size != 2 {
            return Err(config_err("vision_config.temporal_merge_size", format!("{} is not supported (the resampler pairs frames: 2)", v.temporal_merge_size)));
        }
        Ok(())
    }
}

//! `config.json`: what the checkpoint says it is. [`ModelConfig::from_json`] reads the
//! `model_type` once ([`ModelType::of_json`], the only match on its spellings) and parses the
//! text decoder's keys ([`TextConfig`], `text.rs`) or, for ERNIE-4.5-VL, those plus the vision
//! tower and token ids ([`VlConfig`], `vl.rs`); `keys.rs` gives typed access with errors that
//! name the key.
//!
//! This folder is part of the base layer: it depends only on `error.rs` and `io.rs`.

mod ernie5;
pub(crate) mod keys;
mod text;
mod vl;

use std::path::Path;

use serde_json::Value;

pub use ernie5::{AudioGenConfig, Ernie5Config, Resample, ScalePositions, VisualGenConfig};
pub use text::{generation_eos_ids, MlpKind, MoeConfig, MropeSection, TextConfig};
pub use vl::{VisionConfig, VlConfig, VlTokenIds};

use crate::error::config_err;
use crate::io::read_json;
use crate::{Error, Result};

/// Which architecture the checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    /// Dense `Ernie4_5ForCausalLM` (0.3B).
    Ernie45,
    /// `Ernie4_5_MoeForCausalLM` (21B-A3B, 300B-A47B).
    Ernie45Moe,
    /// The language model of `Ernie4_5_VLMoeForConditionalGeneration` (28B-A3B, 424B-A47B;
    /// `ernie4_5_vl_moe`, original `ernie4_5_moe_vl`): routing groups, 3-D RoPE (spec §3).
    Ernie45VlMoe,
    /// ERNIE 5.0 as this runtime reads it (`ernie5`): the MoE decoder with unified routing and
    /// 3-D RoPE, plus optional image- and audio-generation parts (spec `ernie5-generation.md`).
    Ernie5,
}

impl ModelType {
    /// The `model_type` of a parsed config.json: the one place its spellings are matched.
    ///
    /// Errors: [`Error::Config`] when the value is not an object or the key is missing or not a
    /// string, [`Error::UnknownModelType`] for an architecture this runtime does not implement.
    pub fn of_json(v: &Value) -> Result<ModelType> {
        let obj = v.as_object().ok_or_else(|| config_err("config.json", "is not a JSON object"))?;
        match keys::Keys(obj).str("model_type")?.as_deref() {
            Some("ernie4_5") => Ok(ModelType::Ernie45),
            Some("ernie4_5_moe") => Ok(ModelType::Ernie45Moe),
            Some("ernie4_5_vl_moe") | Some("ernie4_5_moe_vl") => Ok(ModelType::Ernie45VlMoe),
            Some("ernie5") => Ok(ModelType::Ernie5),
            Some(other) => Err(Error::UnknownModelType(other.to_string())),
            None => Err(config_err("model_type", "missing")),
        }
    }
}

/// A checkpoint's whole configuration: a text decoder, or a VL model (decoder + vision).
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// `ernie4_5` / `ernie4_5_moe`.
    Text(TextConfig),
    /// `ernie4_5_vl_moe` / `ernie4_5_moe_vl`.
    Vl(VlConfig),
    /// `ernie5`.
    Ernie5(Ernie5Config),
}

impl ModelConfig {
    /// Parses a config.json value: the model type decides which parser runs.
    ///
    /// Errors: as [`ModelType::of_json`], [`TextConfig::from_json`] and [`VlConfig::from_json`].
    pub fn from_json(v: &Value) -> Result<ModelConfig> {
        Ok(match ModelType::of_json(v)? {
            ModelType::Ernie45VlMoe => ModelConfig::Vl(VlConfig::from_json(v)?),
            ModelType::Ernie5 => ModelConfig::Ernie5(Ernie5Config::from_json(v)?),
            ModelType::Ernie45 | ModelType::Ernie45Moe => ModelConfig::Text(TextConfig::from_json(v)?),
        })
    }

    /// Reads and parses `dir/config.json` (read once: it may be a pipe that a deployment fills
    /// late). Errors: [`Error::Io`], [`Error::Json`], and those of [`ModelConfig::from_json`].
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        ModelConfig::from_json(&read_json::<Value>(&dir.join("config.json"))?)
    }

    /// The decoder's configuration (the language model of a VL checkpoint).
    pub fn text(&self) -> &TextConfig {
        match self {
            ModelConfig::Text(t) => t,
            ModelConfig::Vl(v) => &v.text,
            ModelConfig::Ernie5(e) => &e.text,
        }
    }
}

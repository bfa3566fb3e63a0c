//! The decoder (text models, and the language model of VL checkpoints; the vision side lives in
//! `vl/`).

mod transformer;

use std::path::Path;

pub use transformer::{Layer, Logits, Mlp, Rows, Transformer};

use crate::config::TextConfig;
use crate::elastic::ElasticOptions;
use crate::weights::Weights;
use crate::Result;

/// Loads a text checkpoint directory (config.json + safetensors), optionally as an elastic
/// sub-model, and proves every tensor was used.
///
/// Errors: any config error, any safetensors error, and [`crate::Error::TensorSet`] listing every
/// missing and unused tensor at once.
pub fn load_text_model(dir: &Path, elastic: &ElasticOptions) -> Result<Transformer> {
    load_text_model_with(dir, &TextConfig::from_dir(dir)?, elastic)
}

/// [`load_text_model`] with the config already parsed (config.json is read once: it may be a
/// pipe or change underneath us).
pub fn load_text_model_with(dir: &Path, cfg: &TextConfig, elastic: &ElasticOptions) -> Result<Transformer> {
    let plan = elastic.resolve(cfg)?;
    let mut w = Weights::open(dir)?;
    let model = Transformer::load_elastic(cfg, &mut w, &plan)?;
    w.finish()?;
    Ok(model)
}

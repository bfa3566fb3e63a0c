//! The decoder (text models, and the language model of VL checkpoints; the vision side lives in
//! `vl/`).

pub mod audio_codec;
mod transformer;

use std::path::Path;

pub use transformer::{Layer, Logits, Mlp, Rows, Transformer};

use crate::config::TextConfig;
use crate::elastic::ElasticOptions;
use crate::weights::Weights;
use crate::Result;

/// Loads the safetensors of a text checkpoint directory for `cfg` (its parsed config.json, read
/// once by the caller: it may be a pipe), optionally as an elastic sub-model, and proves every
/// tensor was used.
///
/// Errors: any safetensors error, elastic-option errors, and [`crate::Error::TensorSet`] listing
/// every missing and unused tensor at once.
pub fn load_text_model(dir: &Path, cfg: &TextConfig, elastic: &ElasticOptions) -> Result<Transformer> {
    let plan = elastic.resolve(cfg)?;
    let mut w = Weights::open(dir)?;
    let model = Transformer::load_elastic(cfg, &mut w, &plan)?;
    w.finish()?;
    Ok(model)
}

//! Models: the text decoder now; the vision encoder and heads join here as they land.

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
    let cfg = TextConfig::from_dir(dir)?;
    let plan = elastic.resolve(&cfg)?;
    let mut w = Weights::open(dir)?;
    let model = Transformer::load_elastic(&cfg, &mut w, &plan)?;
    w.finish()?;
    Ok(model)
}

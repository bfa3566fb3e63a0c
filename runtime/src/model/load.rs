//! The one checkpoint loader: opens the safetensors, rewrites every stored name to the canonical
//! spelling (`names.rs`), builds the decoder (and for VL the vision tower and resampler) for the
//! parsed config, optionally as an elastic sub-model, and proves every tensor was used.

use std::path::Path;

use super::decoder::Transformer;
use super::elastic::ElasticOptions;
use super::names;
use super::vision::{Resampler, VisionStack, VisionTower};
use crate::config::{Ernie5Config, ModelConfig, TextConfig, VlConfig};
use crate::error::unsupported;
use crate::weights::Weights;
use crate::Result;

/// Loads the model `cfg` describes from checkpoint directory `dir`: the decoder, plus the
/// [`VisionStack`] for a VL checkpoint.
///
/// Errors: as [`load_text_model`] and [`load_vl_model`].
pub fn load(dir: &Path, cfg: &ModelConfig, elastic: &ElasticOptions) -> Result<(Transformer, Option<VisionStack>)> {
    match cfg {
        ModelConfig::Text(c) => Ok((load_text_model(dir, c, elastic)?, None)),
        ModelConfig::Vl(c) => load_vl_model(dir, c.clone(), elastic).map(|(m, v)| (m, Some(v))),
        ModelConfig::Ernie5(c) => {
            // The text path of an ERNIE 5.0 checkpoint: its generation parts are not needed here.
            let (model, mut parts) = load_ernie5_backbone(dir, c, elastic)?;
            for prefix in ERNIE5_PART_PREFIXES {
                parts.take_prefix(prefix);
            }
            parts.finish()?;
            Ok((model, None))
        }
    }
}

/// Tensor-name prefixes of the ERNIE 5.0 parts beyond the decoder (spec `ernie5-generation.md` §2):
/// the visual-generation head and the audio embeddings and heads.
pub const ERNIE5_PART_PREFIXES: [&str; 2] = ["visual_gen.", "audio."];

/// Loads the decoder of an `ernie5` checkpoint (the ERNIE 4.5 MoE names, unified routing, 3-D
/// RoPE) and returns it with the checkpoint's remaining tensors: the generation parts under
/// [`ERNIE5_PART_PREFIXES`], for their own loaders to take before they call
/// [`Weights::finish`], which then also proves the decoder used everything else.
///
/// Errors: as [`load_text_model`], without the final unused-tensor check.
pub fn load_ernie5_backbone(dir: &Path, cfg: &Ernie5Config, elastic: &ElasticOptions) -> Result<(Transformer, Weights)> {
    let plan = elastic.resolve(&cfg.text)?;
    let mut w = Weights::open(dir)?;
    w.rename(names::canonical_text_name)?;
    let model = Transformer::load_elastic(&cfg.text, &mut w, &plan)?;
    Ok((model, w))
}

/// Loads the safetensors of a text checkpoint directory for `cfg` (its parsed config.json, read
/// once by the caller: it may be a pipe), optionally as an elastic sub-model, and proves every
/// tensor was used.
///
/// Errors: any safetensors error, elastic-option errors, and [`crate::Error::TensorSet`] listing
/// every missing and unused tensor at once.
pub fn load_text_model(dir: &Path, cfg: &TextConfig, elastic: &ElasticOptions) -> Result<Transformer> {
    let plan = elastic.resolve(cfg)?;
    let mut w = Weights::open(dir)?;
    w.rename(names::canonical_text_name)?;
    let model = Transformer::load_elastic(cfg, &mut w, &plan)?;
    w.finish()?;
    Ok(model)
}

/// Loads a VL checkpoint directory for `cfg` (its parsed config.json): the language model (as a
/// [`Transformer`] with grouped-MoE layers and 3-D RoPE) and the [`VisionStack`], from either
/// spelling (`names.rs`), proving every tensor was used.
///
/// Elastic options: layer selection and the top-k override apply (to every group); expert masks
/// are refused for grouped MoE layers ([`crate::Error::Unsupported`]).
///
/// Errors: config, safetensors and [`crate::Error::TensorSet`] errors as for text checkpoints.
pub fn load_vl_model(dir: &Path, cfg: VlConfig, elastic: &ElasticOptions) -> Result<(Transformer, VisionStack)> {
    let plan = elastic.resolve(&cfg.text)?;
    if !plan.expert_mask.is_empty() {
        return Err(unsupported(
            "an expert selection (the experts option) on a VL checkpoint's routing groups",
            "select layers or a smaller top-k instead",
        ));
    }
    let mut w = Weights::open(dir)?;
    w.rename(names::canonical_vl_name)?;
    let model = Transformer::load_elastic(&cfg.text, &mut w, &plan)?;
    let tower = VisionTower::load(&mut w, "model.vision_tower", &cfg.vision)?;
    let resampler = Resampler::load(&mut w, "model.resampler_model", &cfg)?;
    w.finish()?;
    Ok((model, VisionStack { cfg, tower, resampler }))
}

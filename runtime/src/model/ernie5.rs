//! The one loader of an `ernie5` checkpoint (spec `ernie5-generation.md` §1-2): opens the
//! safetensors once, builds the decoder, hands the audio parts their tensors
//! ([`AudioLm::load`]) and keeps the visual-generation head's tensors (mmapped views, not copied)
//! for [`VisualGenHead::load`] at first use, then proves every other tensor was used.
//!
//! The head is built lazily so that a checkpoint whose head disagrees with its
//! `visual_generation` section (or lacks some `visual_gen.*` tensors) still loads for text and
//! audio; image generation then fails naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use super::audio_lm::AudioLm;
use super::decoder::Transformer;
use super::elastic::ElasticOptions;
use super::load::load_ernie5_backbone;
use crate::config::Ernie5Config;
use crate::tensor::Tensor;
use crate::Result;

/// Prefix of the visual-generation head's tensors (`model/visual_gen.rs`).
pub const VISUAL_GEN_PREFIX: &str = "visual_gen.";

/// A loaded `ernie5` checkpoint: the decoder and its generation parts.
pub struct Ernie5Parts {
    /// The MoE decoder (unified routing, 3-D RoPE).
    pub model: Transformer,
    /// Audio level embeddings and heads; `None` without an `audio` section or `audio.*` tensors.
    pub audio: Option<AudioLm>,
    /// Every stored `visual_gen.*` tensor, by name (empty when there are none), for
    /// [`crate::model::visual_gen::VisualGenHead::load`] through
    /// [`crate::weights::Weights::from_tensors`].
    pub visual_gen: BTreeMap<String, Tensor>,
}

/// Loads `dir` for `cfg` (its parsed config.json), optionally as an elastic sub-model.
///
/// Errors: as [`load_ernie5_backbone`] and [`AudioLm::load`]; [`crate::Error::TensorSet`] for
/// a partial audio set, `audio.*` tensors without an `audio` section, or any other tensor the
/// decoder did not use.
pub fn load_ernie5(dir: &Path, cfg: &Ernie5Config, elastic: &ElasticOptions) -> Result<Ernie5Parts> {
    let (model, mut w) = load_ernie5_backbone(dir, cfg, elastic)?;
    let audio = match &cfg.audio {
        Some(a) => AudioLm::load(&mut w, a, cfg.text.hidden_size, cfg.text.rms_norm_eps)?,
        None => None,
    };
    let visual_gen = w.take_prefix(VISUAL_GEN_PREFIX);
    w.finish()?;
    Ok(Ernie5Parts { model, audio, visual_gen })
}

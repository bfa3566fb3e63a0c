//! The visual-generation head of an `ernie5` checkpoint (spec `ernie5-generation.md` §2, §3.5):
//! the slot input projection, the per-scale embedding and the two-logit-per-bit head.
//!
//! ```text
//! visual_gen.word_embed.weight   [H, d]     slot input: resampled accumulated latent (d) → hidden
//! visual_gen.word_embed.bias     [H]
//! visual_gen.scale_embed.weight  [K + 1, H] row k added to scale k's slots; row K = the sum slot
//! visual_gen.head_norm.weight    [H]        RMSNorm (the decoder's eps) before the bit head
//! visual_gen.head.weight         [2d, H]    bit logits, bit j's pair at rows (2j, 2j + 1)
//! visual_gen.head.bias           [2d]
//! ```

use std::path::Path;

use crate::config::{TextConfig, VisualGenConfig};
use crate::error::unsupported;
use crate::nn::linear::Linear;
use crate::nn::norm::RmsNorm;
use crate::weights::Weights;
use crate::{Error, Result};

/// Tensor names of the head, in the order they are checked.
const NAMES: [&str; 6] = [
    "visual_gen.word_embed.weight",
    "visual_gen.word_embed.bias",
    "visual_gen.scale_embed.weight",
    "visual_gen.head_norm.weight",
    "visual_gen.head.weight",
    "visual_gen.head.bias",
];

/// The loaded head.
pub struct VisualGenHead {
    /// `[H, d]` + `[H]`: latent channels → hidden.
    pub word_embed: Linear,
    /// `[K + 1, H]` f32.
    pub scale_embed: Vec<f32>,
    /// `[H]` RMSNorm before the bit head.
    pub head_norm: RmsNorm,
    /// `[2d, H]` + `[2d]`.
    pub head: Linear,
    /// d: bits per token.
    pub bits: usize,
    /// H.
    pub hidden: usize,
    /// K + 1 rows of `scale_embed`.
    pub n_scale_rows: usize,
}

impl VisualGenHead {
    /// Takes the head's tensors from `w` (the rest of [`crate::model::load::load_ernie5_backbone`]'s
    /// weights, or any `Weights`) for decoder `text` and section `vg`.
    ///
    /// Errors: [`Error::Unsupported`] "this checkpoint has no visual_gen head: it cannot generate
    /// images" when none of its tensors is there, naming the missing ones when only some are;
    /// [`Error::TensorShape`] for a stored shape that disagrees with the config.
    pub fn load(w: &mut Weights, text: &TextConfig, vg: &VisualGenConfig) -> Result<VisualGenHead> {
        let missing: Vec<&str> = NAMES.iter().copied().filter(|n| !w.contains(n)).collect();
        if missing.len() == NAMES.len() {
            return Err(unsupported("this checkpoint has no visual_gen head: it cannot generate images", "use a checkpoint with visual_gen.* tensors"));
        }
        if !missing.is_empty() {
            return Err(Error::TensorSet { missing: missing.iter().map(|s| s.to_string()).collect(), unused: vec![] });
        }
        let (h, d, k1) = (text.hidden_size, vg.bits, vg.scales.len() + 1);
        Ok(VisualGenHead {
            word_embed: Linear::load(w, "visual_gen.word_embed", h, d, true)?,
            scale_embed: w.take_f32("visual_gen.scale_embed.weight", &[k1, h])?,
            head_norm: RmsNorm::load(w, "visual_gen.head_norm", h, text.rms_norm_eps)?,
            head: Linear::load(w, "visual_gen.head", 2 * d, h, true)?,
            bits: d,
            hidden: h,
            n_scale_rows: k1,
        })
    }

    /// Opens the checkpoint in `dir` (mmapped) and takes only the head's tensors: what an engine
    /// that loaded the decoder for text needs to generate images.
    ///
    /// Errors: as [`Weights::open`] and [`VisualGenHead::load`].
    pub fn open(dir: &Path, text: &TextConfig, vg: &VisualGenConfig) -> Result<VisualGenHead> {
        let mut w = Weights::open(dir)?;
        VisualGenHead::load(&mut w, text, vg)
    }

    /// `scale_embed[k]`: `[H]`. Errors: [`Error::Request`] for `k > K`.
    pub fn scale_row(&self, k: usize) -> Result<&[f32]> {
        if k >= self.n_scale_rows {
            return Err(Error::Request(format!("scale {k} is outside the {} scale embeddings", self.n_scale_rows)));
        }
        Ok(&self.scale_embed[k * self.hidden..(k + 1) * self.hidden])
    }

    /// Slot inputs of one scale: `latent_cells` `[cells, d]` → `word_embed(x) + scale_embed[k]`
    /// `[cells, H]`.
    ///
    /// Errors: a `latent_cells` length that is not a multiple of d; `k > K`.
    pub fn slot_inputs(&self, latent_cells: &[f32], k: usize) -> Result<Vec<f32>> {
        let row = self.scale_row(k)?;
        let mut x = self.word_embed.forward(latent_cells)?; // [cells, H]
        x.chunks_exact_mut(self.hidden).for_each(|r| r.iter_mut().zip(row).for_each(|(a, b)| *a += b));
        Ok(x)
    }

    /// Bit logits `head(head_norm(hidden))`: `[t, H]` (the decoder's final normalised rows) →
    /// `[t, d, 2]` (index 0 = bit 0).
    pub fn bit_logits(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        self.head.forward(&self.head_norm.forward(hidden)) // [t, 2d] = [t, d, 2]
    }
}

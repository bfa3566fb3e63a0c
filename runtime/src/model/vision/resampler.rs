//! The resampler (spec §3.3; transformers `Ernie4_5_VLMoeVariableResolutionResamplerModel`):
//! vision-tower rows → language-model embeddings.
//!
//! ```text
//! [n, d] ─ reshape (4 consecutive rows = one 2×2 window) ─▶ [n/4, 4d]
//!   spatial_linear:  fc1 (4d→4d) → GELU(erf) → fc2 (4d→4d) → LayerNorm
//!   temporal pairing: row = [window of frame 2j | same window of frame 2j+1]   (an image is
//!                     paired with itself)                                      ─▶ [n/4/2 or n/4, 8d]
//!   temporal_linear: fc1 (8d→4d) → GELU → fc2 (4d→4d) → LayerNorm
//!   mlp (4d→H) → after_norm (RMSNorm, text eps)                                ─▶ [tokens, H]
//! ```
//! Checkpoint names (canonical = transformers 5.x, under `model.resampler_model.`; the original
//! `spatial_linear.{0,2,3}` indices are renamed by `model/names.rs`): `spatial_linear.{fc1,fc2,ln}`,
//! `temporal_linear.{fc1,fc2,ln}`, `mlp.{weight [H, 4d], bias}`, `after_norm.weight [H]`.

use crate::config::VlConfig;
use crate::nn::linear::Linear;
use crate::nn::norm::{LayerNorm, RmsNorm};
use crate::ops::gelu_erf_in_place;
use crate::weights::Weights;
use crate::{Error, Result};

/// `fc1 → GELU → fc2 → LayerNorm` (transformers `Ernie4_5_VLMoeVisionMLP`).
pub struct ResamplerMlp {
    /// First projection.
    pub fc1: Linear,
    /// Second projection.
    pub fc2: Linear,
    /// Output LayerNorm.
    pub ln: LayerNorm,
}

impl ResamplerMlp {
    fn load(w: &mut Weights, prefix: &str, inp: usize, out: usize, eps: f32) -> Result<ResamplerMlp> {
        Ok(ResamplerMlp {
            fc1: Linear::load(w, &format!("{prefix}.fc1"), out, inp, true)?,
            fc2: Linear::load(w, &format!("{prefix}.fc2"), out, out, true)?,
            ln: LayerNorm::load(w, &format!("{prefix}.ln"), out, eps)?,
        })
    }

    fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = self.fc1.forward(x)?;
        gelu_erf_in_place(&mut y);
        Ok(self.ln.forward(&self.fc2.forward(&y)?))
    }
}

/// The resampler.
pub struct Resampler {
    /// `[n/4, 4d]` → `[n/4, 4d]` over 2×2 windows.
    pub spatial_linear: ResamplerMlp,
    /// `[pairs, 8d]` → `[pairs, 4d]` over frame pairs.
    pub temporal_linear: ResamplerMlp,
    /// `[H, 4d]`
    pub mlp: Linear,
    /// `[H]`, the text model's eps.
    pub after_norm: RmsNorm,
    /// `m²` rows per window.
    pub window: usize,
}

impl Resampler {
    /// Loads `{prefix}` (= `model.resampler_model`).
    pub fn load(w: &mut Weights, prefix: &str, cfg: &VlConfig) -> Result<Resampler> {
        let v = &cfg.vision;
        let window = v.spatial_merge_size * v.spatial_merge_size;
        let sd = v.hidden_size * window;
        let td = sd * v.temporal_merge_size;
        let h = cfg.text.hidden_size;
        Ok(Resampler {
            spatial_linear: ResamplerMlp::load(w, &format!("{prefix}.spatial_linear"), sd, sd, v.layer_norm_eps)?,
            temporal_linear: ResamplerMlp::load(w, &format!("{prefix}.temporal_linear"), td, sd, v.layer_norm_eps)?,
            mlp: Linear::load(w, &format!("{prefix}.mlp"), h, sd, true)?,
            after_norm: RmsNorm::load(w, &format!("{prefix}.after_norm"), h, cfg.text.rms_norm_eps)?,
            window,
        })
    }

    /// Tokens one item gives: `gh·gw/m²` for an image (T = 1), `⌊T/2⌋·gh·gw/m²` for a video.
    pub fn n_tokens(&self, grid_thw: [usize; 3]) -> usize {
        let [t, gh, gw] = grid_thw;
        let per_frame = gh * gw / self.window;
        if t == 1 {
            per_frame
        } else {
            t / 2 * per_frame
        }
    }

    /// `x`: the tower's `[T·gh·gw, d]` for one item → `[n_tokens, H]`.
    ///
    /// Errors: [`Error::ShapeMismatch`] when `x` does not hold `T·gh·gw` rows.
    pub fn forward(&self, x: &[f32], grid_thw: [usize; 3]) -> Result<Vec<f32>> {
        let [t, gh, gw] = grid_thw;
        let sd = self.spatial_linear.fc2.out_dim();
        let per_frame = gh * gw / self.window; // windows per frame
        if t == 0 || per_frame == 0 || x.len() != t * per_frame * sd {
            return Err(Error::ShapeMismatch { op: "Resampler::forward", expected: format!("[{t}·{gh}·{gw}, d]"), got: x.len().to_string() });
        }
        let s = self.spatial_linear.forward(x)?; // [T·per_frame, 4d]: each row one window
        // Temporal pairing (transformers `_temporal_slicing`): frames (0,1), (2,3), ...; an
        // image (T = 1) is paired with itself; an odd last video frame is dropped, as there.
        let pairs: Vec<(usize, usize)> = if t == 1 { vec![(0, 0)] } else { (0..t / 2).map(|j| (2 * j, 2 * j + 1)).collect() };
        let mut cat = Vec::with_capacity(pairs.len() * per_frame * 2 * sd); // [pairs·per_frame, 8d]
        for &(a, b) in &pairs {
            for win in 0..per_frame {
                cat.extend_from_slice(&s[(a * per_frame + win) * sd..(a * per_frame + win + 1) * sd]);
                cat.extend_from_slice(&s[(b * per_frame + win) * sd..(b * per_frame + win + 1) * sd]);
            }
        }
        let y = self.temporal_linear.forward(&cat)?; // [tokens, 4d]
        let z = self.mlp.forward(&y)?; // [tokens, H]
        Ok(self.after_norm.forward(&z)) // [tokens, H]
    }
}

//! Normalisation layers with their weights: [`RmsNorm`] (the decoder, the resampler's
//! `after_norm`) and [`LayerNorm`] (the vision tower and the resampler). The math is in
//! `ops/norm.rs`.

use crate::ops::{layer_norm, rms_norm};
use crate::weights::Weights;
use crate::Result;

/// RMSNorm weights (spec §2.4: no bias, no `+1` offset).
pub struct RmsNorm {
    /// `[d]`
    pub weight: Vec<f32>,
    /// Added to the mean square.
    pub eps: f32,
}

impl RmsNorm {
    /// Loads `{prefix}.weight` `[d]`.
    pub fn load(w: &mut Weights, prefix: &str, d: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: w.take_f32(&format!("{prefix}.weight"), &[d])?, eps })
    }

    /// `x`: `[t, d]` → `[t, d]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; x.len()]; // [t, d]
        rms_norm(x, &self.weight, self.eps, &mut y);
        y
    }
}

/// LayerNorm weights.
pub struct LayerNorm {
    /// `[d]`
    pub weight: Vec<f32>,
    /// `[d]`
    pub bias: Vec<f32>,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[d]`.
    pub fn load(w: &mut Weights, prefix: &str, d: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: w.take_f32(&format!("{prefix}.weight"), &[d])?, bias: w.take_f32(&format!("{prefix}.bias"), &[d])?, eps })
    }

    /// `x`: `[t, d]` → `[t, d]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; x.len()];
        layer_norm(x, &self.weight, &self.bias, self.eps, &mut y);
        y
    }
}


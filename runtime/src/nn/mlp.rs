//! The SwiGLU feed-forward `down(silu(gate(x)) ⊙ up(x))` (spec §2.4): the dense FFN of dense
//! layers, one routed expert, and the shared experts (one wide MLP) are all this type.

use super::linear::{add_bias, load_bias as bias, Linear};
use crate::ops::gemm::{gemv_batch, GemvJob, Kernel, Precision, GEMV_MAX_ROWS};
use crate::ops::{silu_mul_in_place, silu_mul_slow};
use crate::weights::Weights;
use crate::Result;

/// One SwiGLU MLP. Weights are `[out, in]`; biases exist only when `use_bias`.
pub struct SwiGlu {
    /// `[i, h]`
    pub gate: Linear,
    /// `[i, h]`
    pub up: Linear,
    /// `[h, i]`
    pub down: Linear,
    /// `h`
    pub hidden: usize,
    /// `i`
    pub inter: usize,
}

impl SwiGlu {
    /// Loads `{prefix}.{gate_proj,up_proj,down_proj}` or the fused `{prefix}.up_gate_proj`
    /// (`[2i, h]`, gate rows FIRST despite the name: spec §2.3).
    pub fn load(w: &mut Weights, prefix: &str, hidden: usize, inter: usize, use_bias: bool) -> Result<SwiGlu> {
        let fused = format!("{prefix}.up_gate_proj.weight");
        let (gate, up, gate_bias, up_bias) = if w.contains(&fused) {
            let gu = w.take(&fused, &[2 * inter, hidden])?; // [2i, h]
            let b = if use_bias { Some(w.take_f32(&format!("{prefix}.up_gate_proj.bias"), &[2 * inter])?) } else { None };
            let (gb, ub) = match b {
                Some(b) => (Some(b[..inter].to_vec()), Some(b[inter..].to_vec())),
                None => (None, None),
            };
            (gu.narrow0(0, inter)?, gu.narrow0(inter, inter)?, gb, ub)
        } else {
            let gate = w.take(&format!("{prefix}.gate_proj.weight"), &[inter, hidden])?;
            let up = w.take(&format!("{prefix}.up_proj.weight"), &[inter, hidden])?;
            let gb = bias(w, &format!("{prefix}.gate_proj.bias"), inter, use_bias)?;
            let ub = bias(w, &format!("{prefix}.up_proj.bias"), inter, use_bias)?;
            (gate, up, gb, ub)
        };
        let down = w.take(&format!("{prefix}.down_proj.weight"), &[hidden, inter])?;
        let down_bias = bias(w, &format!("{prefix}.down_proj.bias"), hidden, use_bias)?;
        Ok(SwiGlu {
            gate: Linear::of(gate, gate_bias),
            up: Linear::of(up, up_bias),
            down: Linear::of(down, down_bias),
            hidden,
            inter,
        })
    }

    /// `x`: `[t, h]` → `[t, h]`. With few rows (decode) and dense weights, gate and up stream in
    /// one [`gemv_batch`] pass.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let t = x.len() / self.hidden.max(1);
        let (mut g, u) = match (self.gate.dense_ref(), self.up.dense_ref()) {
            (Some(wg), Some(wu)) if t <= GEMV_MAX_ROWS && t * self.hidden == x.len() => {
                let (i, h) = (self.inter, self.hidden);
                let mut g = vec![0.0f32; t * i]; // [t, i]
                let mut u = vec![0.0f32; t * i]; // [t, i]
                let jobs = [GemvJob::new(wg, x, t, i, h, &mut g), GemvJob::new(wu, x, t, i, h, &mut u)];
                gemv_batch(&jobs, Kernel::detect(Precision::Exact))?;
                add_bias(&mut g, self.gate.bias.as_deref());
                add_bias(&mut u, self.up.bias.as_deref());
                (g, u)
            }
            _ => (self.gate.forward(x)?, self.up.forward(x)?), // [t, i] each
        };
        // The activation overwrites `g` and `u` goes before the down projection: at a prefill's
        // peak (the dense FFN's down projection) two `[t, i]` buffers fewer are live.
        silu_mul_in_place(&mut g, &u); // [t, i]
        drop(u);
        self.down.forward(&g) // [t, h]
    }

    /// Slow twin of [`SwiGlu::forward`] (slow matmuls and activation).
    pub fn forward_slow(&self, x: &[f32]) -> Result<Vec<f32>> {
        let g = self.gate.forward_slow(x)?; // [t, i]
        let u = self.up.forward_slow(x)?; // [t, i]
        let mut a = vec![0.0f32; g.len()]; // [t, i]
        silu_mul_slow(&g, &u, &mut a);
        self.down.forward_slow(&a) // [t, h]
    }
}

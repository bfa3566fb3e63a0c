//! The SwiGLU feed-forward `down(silu(gate(x)) ⊙ up(x))` (spec §2.4): the dense FFN of dense
//! layers, one routed expert, and the shared experts (one wide MLP) are all this type.

use crate::ops::{matmul_xwt, matmul_xwt_slow, silu_mul, silu_mul_slow};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::Result;

/// One SwiGLU MLP. Weights are `[out, in]`; biases exist only when `use_bias`.
pub struct SwiGlu {
    /// `[i, h]`
    pub gate: Tensor,
    /// `[i, h]`
    pub up: Tensor,
    /// `[h, i]`
    pub down: Tensor,
    pub gate_bias: Option<Vec<f32>>,
    pub up_bias: Option<Vec<f32>>,
    pub down_bias: Option<Vec<f32>>,
    pub hidden: usize,
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
        Ok(SwiGlu { gate, up, down, gate_bias, up_bias, down_bias, hidden, inter })
    }

    /// `x`: `[t, h]` → `[t, h]`.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>> {
        let t = x.len() / self.hidden;
        let mut g = vec![0.0f32; t * self.inter]; // [t, i]
        let mut u = vec![0.0f32; t * self.inter]; // [t, i]
        matmul_xwt(x, &self.gate, &mut g)?;
        matmul_xwt(x, &self.up, &mut u)?;
        add_bias(&mut g, self.gate_bias.as_deref());
        add_bias(&mut u, self.up_bias.as_deref());
        let mut a = vec![0.0f32; t * self.inter]; // [t, i]
        silu_mul(&g, &u, &mut a);
        let mut y = vec![0.0f32; t * self.hidden]; // [t, h]
        matmul_xwt(&a, &self.down, &mut y)?;
        add_bias(&mut y, self.down_bias.as_deref());
        Ok(y)
    }

    /// Slow twin of [`SwiGlu::forward`] (slow matmuls and activation).
    pub fn forward_slow(&self, x: &[f32]) -> Result<Vec<f32>> {
        let t = x.len() / self.hidden;
        let mut g = vec![0.0f32; t * self.inter];
        let mut u = vec![0.0f32; t * self.inter];
        matmul_xwt_slow(x, &self.gate, &mut g)?;
        matmul_xwt_slow(x, &self.up, &mut u)?;
        add_bias(&mut g, self.gate_bias.as_deref());
        add_bias(&mut u, self.up_bias.as_deref());
        let mut a = vec![0.0f32; t * self.inter];
        silu_mul_slow(&g, &u, &mut a);
        let mut y = vec![0.0f32; t * self.hidden];
        matmul_xwt_slow(&a, &self.down, &mut y)?;
        add_bias(&mut y, self.down_bias.as_deref());
        Ok(y)
    }
}

pub(crate) fn bias(w: &mut Weights, name: &str, len: usize, use_bias: bool) -> Result<Option<Vec<f32>>> {
    if use_bias {
        w.take_f32(name, &[len]).map(Some)
    } else {
        Ok(None)
    }
}

/// Adds `bias` (`[n]`) to every row of `y` (`[t, n]`).
pub(crate) fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

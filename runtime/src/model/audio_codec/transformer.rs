//! Mimi's encoder / decoder transformer (transformers 5.25.0 `MimiTransformerModel`): pre-norm
//! layers of LayerNorm → sliding-window causal self-attention with rotate-half RoPE → layer scale
//! → residual, then LayerNorm → fc1 → exact GELU → fc2 → layer scale → residual.
//!
//! Rows are time steps: activations are `[t, H]` f32. Attention keeps a [`KvState`] so the same
//! code runs a whole clip (fresh state) or a stream of chunks (state carried between calls):
//! the query at absolute position `p` sees keys at `p − sliding_window < j ≤ p`
//! (`masking_utils.sliding_window_overlay`), and the state keeps only the last
//! `sliding_window − 1` positions afterwards.

use rayon::prelude::*;

use super::config::MimiConfig;
use crate::ops::{gelu_erf_in_place, layer_norm, matmul_xwt, softmax_in_place};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::Result;

/// A `nn.Linear`: weight `[out, in]` (any stored dtype), optional bias `[out]`.
struct Linear {
    w: Tensor,
    b: Option<Vec<f32>>,
    out: usize,
}

impl Linear {
    fn load(w: &mut Weights, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = w.take(&format!("{name}.weight"), &[out, inp])?;
        let b = if bias { Some(w.take_f32(&format!("{name}.bias"), &[out])?) } else { None };
        Ok(Linear { w: weight, b, out })
    }

    /// `x`: `[t, in]` → `[t, out]`.
    fn forward(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let mut y = vec![0.0f32; t * self.out];
        matmul_xwt(x, &self.w, &mut y)?;
        if let Some(b) = &self.b {
            for row in y.chunks_mut(self.out) {
                row.iter_mut().zip(b).for_each(|(v, bv)| *v += bv);
            }
        }
        Ok(y)
    }
}

struct Layer {
    ln1: (Vec<f32>, Vec<f32>),
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_scale: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    fc2: Linear,
    mlp_scale: Vec<f32>,
}

/// Keys and values of past positions, per layer (`[positions, kv_heads · head_dim]` each, RoPE
/// already applied to the keys), and the number of positions seen so far.
pub(crate) struct KvState {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Absolute position of the next row.
    pos: usize,
}

impl KvState {
    pub(crate) fn new(n_layers: usize) -> KvState {
        KvState { layers: (0..n_layers).map(|_| (Vec::new(), Vec::new())).collect(), pos: 0 }
    }
}

/// `MimiTransformerModel` with its weights.
pub(crate) struct CodecTransformer {
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    window: Option<usize>,
    /// `1 / theta^(2i / head_dim)`, `[head_dim / 2]`, f32 as transformers computes it.
    inv_freq: Vec<f32>,
}

impl CodecTransformer {
    /// Takes `{prefix}.layers.{i}.*` for every layer.
    pub(crate) fn load(w: &mut Weights, prefix: &str, cfg: &MimiConfig) -> Result<CodecTransformer> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kvd) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("{prefix}.layers.{i}.{s}");
            let bias = cfg.attention_bias;
            layers.push(Layer {
                ln1: (w.take_f32(&n("input_layernorm.weight"), &[h])?, w.take_f32(&n("input_layernorm.bias"), &[h])?),
                q: Linear::load(w, &n("self_attn.q_proj"), qd, h, bias)?,
                k: Linear::load(w, &n("self_attn.k_proj"), kvd, h, bias)?,
                v: Linear::load(w, &n("self_attn.v_proj"), kvd, h, bias)?,
                o: Linear::load(w, &n("self_attn.o_proj"), h, qd, bias)?,
                attn_scale: w.take_f32(&n("self_attn_layer_scale.scale"), &[h])?,
                ln2: (w.take_f32(&n("post_attention_layernorm.weight"), &[h])?, w.take_f32(&n("post_attention_layernorm.bias"), &[h])?),
                fc1: Linear::load(w, &n("mlp.fc1"), cfg.intermediate_size, h, false)?,
                fc2: Linear::load(w, &n("mlp.fc2"), h, cfg.intermediate_size, false)?,
                mlp_scale: w.take_f32(&n("mlp_layer_scale.scale"), &[h])?,
            });
        }
        Ok(CodecTransformer {
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            eps: cfg.norm_eps,
            window: cfg.sliding_window,
            inv_freq: inv_freq(hd, cfg.rope_theta),
        })
    }

    pub(crate) fn new_state(&self) -> KvState {
        KvState::new(self.layers.len())
    }

    /// `x`: `[t, H]` rows at absolute positions `state.pos..state.pos + t` → `[t, H]`; appends
    /// to `state`.
    pub(crate) fn forward(&self, x: &[f32], t: usize, state: &mut KvState) -> Result<Vec<f32>> {
        let h = self.hidden;
        let pos0 = state.pos;
        let mut x = x.to_vec();
        let mut normed = vec![0.0f32; t * h];
        for (layer, (kc, vc)) in self.layers.iter().zip(state.layers.iter_mut()) {
            layer_norm(&x, &layer.ln1.0, &layer.ln1.1, self.eps, &mut normed);
            let mut q = layer.q.forward(&normed, t)?; // [t, heads · hd]
            let mut k = layer.k.forward(&normed, t)?; // [t, kv · hd]
            let v = layer.v.forward(&normed, t)?;
            rope_rotate_half(&mut q, self.heads, self.head_dim, pos0, &self.inv_freq);
            rope_rotate_half(&mut k, self.kv_heads, self.head_dim, pos0, &self.inv_freq);
            let kvd = self.kv_heads * self.head_dim;
            let cached = kc.len() / kvd; // rows at positions pos0 − cached .. pos0
            kc.extend_from_slice(&k);
            vc.extend_from_slice(&v);
            let attn = self.attend(&q, t, kc, vc, cached);
            let a = layer.o.forward(&attn, t)?;
            add_scaled(&mut x, &a, &layer.attn_scale);
            layer_norm(&x, &layer.ln2.0, &layer.ln2.1, self.eps, &mut normed);
            let mut m = layer.fc1.forward(&normed, t)?;
            gelu_erf_in_place(&mut m);
            let m = layer.fc2.forward(&m, t)?;
            add_scaled(&mut x, &m, &layer.mlp_scale);
            // Keep only what a later query can see: the last window − 1 positions.
            if let Some(w) = self.window {
                let keep = (w - 1).min(cached + t);
                let n_drop = (cached + t - keep) * kvd;
                kc.drain(..n_drop);
                vc.drain(..n_drop);
            }
        }
        state.pos += t;
        Ok(x)
    }

    /// Softmax attention of `q` (`[t, heads · hd]`, row i at cache row `cached + i`) over the
    /// cache `kc`/`vc` (`[rows, kv · hd]`), causal within the sliding window.
    fn attend(&self, q: &[f32], t: usize, kc: &[f32], vc: &[f32], cached: usize) -> Vec<f32> {
        let (hd, heads) = (self.head_dim, self.heads);
        let kvd = self.kv_heads * hd;
        let group = heads / self.kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0.0f32; t * heads * hd];
        out.par_chunks_mut(heads * hd).enumerate().for_each(|(i, orow)| {
            let r = cached + i; // this query's row in the cache
            let first = self.window.map_or(0, |w| (r + 1).saturating_sub(w));
            let mut p = vec![0.0f32; r + 1 - first];
            for hh in 0..heads {
                let qh = &q[i * heads * hd + hh * hd..i * heads * hd + (hh + 1) * hd];
                let kvh = hh / group;
                for (j, s) in (first..=r).zip(p.iter_mut()) {
                    let kh = &kc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                    *s = qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                softmax_in_place(&mut p);
                let oh = &mut orow[hh * hd..(hh + 1) * hd];
                for (j, &pj) in (first..=r).zip(p.iter()) {
                    let vh = &vc[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                    oh.iter_mut().zip(vh).for_each(|(o, v)| *o += pj * v);
                }
            }
        });
        out
    }
}

/// `x[t, c] += scale[c] · y[t, c]` (`residual + MimiLayerScale(y)`).
fn add_scaled(x: &mut [f32], y: &[f32], scale: &[f32]) {
    for (xr, yr) in x.chunks_mut(scale.len()).zip(y.chunks(scale.len())) {
        for ((a, &b), &s) in xr.iter_mut().zip(yr).zip(scale) {
            *a += s * b;
        }
    }
}

/// `inv_freq[i] = 1 / theta^(2i / head_dim)` in f32 (`MimiRotaryEmbedding`, default RoPE).
pub(crate) fn inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// Rotate-half ("NeoX") RoPE in place, as transformers' `apply_rotary_pos_emb` with
/// `rotate_half`: lane `i < d/2` pairs with lane `i + d/2`, both rotated by
/// `angle = pos · inv_freq[i]`: `x'[i] = x[i]·cos − x[i+d/2]·sin`, `x'[i+d/2] = x[i+d/2]·cos +
/// x[i]·sin`. Pairing adjacent lanes (2i, 2i+1) instead is the bug candle shipped for Mimi
/// (huggingface/candle#3948). `x`: `[t, n_heads · head_dim]`, row r at position `pos0 + r`.
pub(crate) fn rope_rotate_half(x: &mut [f32], n_heads: usize, head_dim: usize, pos0: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    for (r, row) in x.chunks_mut(n_heads * head_dim).enumerate() {
        let pos = (pos0 + r) as f32;
        for head in row.chunks_mut(head_dim) {
            for i in 0..half {
                let angle = pos * inv_freq[i];
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos - b * sin;
                head[i + half] = b * cos + a * sin;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairing test: a head of 4 lanes `[1, 2, 3, 4]` at position 1 with inv_freq [1, 0.01]
    /// must rotate lanes (0, 2) by 1 rad and (1, 3) by 0.01 rad (rotate-half). Under interleaved
    /// pairs (0, 1), (2, 3) lane 0 would become `1·cos 1 − 2·sin 1` instead: this test fails.
    #[test]
    fn rope_pairs_lane_i_with_lane_i_plus_half() {
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        rope_rotate_half(&mut x, 1, 4, 1, &[1.0, 0.01]);
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        let want = [1.0 * c0 - 3.0 * s0, 2.0 * c1 - 4.0 * s1, 3.0 * c0 + 1.0 * s0, 4.0 * c1 + 2.0 * s1];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?} vs {want:?}");
        }
        // The interleaved answer differs by far more than the tolerance.
        let interleaved0 = 1.0 * c0 - 2.0 * s0;
        assert!((x[0] - interleaved0).abs() > 0.5);
    }

    #[test]
    fn inv_freq_is_the_default_rope() {
        let f = inv_freq(8, 10000.0);
        let want = [1.0, 0.1, 0.01, 0.001];
        for (g, w) in f.iter().zip(want) {
            assert!((g - w).abs() <= 1e-6 * w.max(1e-3), "{f:?}");
        }
    }
}

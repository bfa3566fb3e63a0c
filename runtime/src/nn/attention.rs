//! Grouped-query self-attention with interleaved RoPE over the KV cache (spec §2.4):
//! q/k/v projections, RoPE on q and k, K (post-RoPE) and V appended to the cache, causal softmax
//! attention in f32 with scale `head_dim^-0.5`, query head `j` reading KV head
//! `j / (n_heads / n_kv_heads)`, then the output projection.

use rayon::prelude::*;

use super::kv_cache::LayerKv;
use super::linear::{load_bias as bias, Linear};
use crate::config::TextConfig;
use crate::ops::{dot, rope_apply, softmax_in_place, RopePositions, RopeTable};
use crate::weights::Weights;
use crate::Result;

/// Which cached keys a row of one forward pass attends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mask {
    /// Row `i` sees the cache and rows `0..=i` of its pass (text).
    #[default]
    Causal,
    /// Every row sees the cache and all rows of its pass, later ones included: the block-causal
    /// attention of one NFSP scale (`ernie5-generation.md` §3.3).
    Block,
}

/// Attention weights of one layer.
pub struct Attention {
    /// `[n_heads * head_dim, h]`
    pub q_proj: Linear,
    /// `[n_kv_heads * head_dim, h]`
    pub k_proj: Linear,
    /// `[n_kv_heads * head_dim, h]`
    pub v_proj: Linear,
    /// `[h, n_heads * head_dim]`
    pub o_proj: Linear,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` is a multiple).
    pub n_kv_heads: usize,
    /// Lanes per head.
    pub head_dim: usize,
}

impl Attention {
    /// Loads `{prefix}` (= `model.layers.{l}.self_attn`): separate `q_proj/k_proj/v_proj` or the
    /// fused `qkv_proj` whose rows are `[q | k | v]` (spec §2.3).
    pub fn load(w: &mut Weights, prefix: &str, cfg: &TextConfig) -> Result<Attention> {
        let (h, q_dim, kv_dim) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
        let b = cfg.use_bias;
        let fused = format!("{prefix}.qkv_proj.weight");
        let (q_proj, k_proj, v_proj, q_bias, k_bias, v_bias) = if w.contains(&fused) {
            let qkv = w.take(&fused, &[q_dim + 2 * kv_dim, h])?;
            let bb = bias(w, &format!("{prefix}.qkv_proj.bias"), q_dim + 2 * kv_dim, b)?;
            let split = |v: &Option<Vec<f32>>, r: std::ops::Range<usize>| v.as_ref().map(|v| v[r].to_vec());
            (
                qkv.narrow0(0, q_dim)?,
                qkv.narrow0(q_dim, kv_dim)?,
                qkv.narrow0(q_dim + kv_dim, kv_dim)?,
                split(&bb, 0..q_dim),
                split(&bb, q_dim..q_dim + kv_dim),
                split(&bb, q_dim + kv_dim..q_dim + 2 * kv_dim),
            )
        } else {
            (
                w.take(&format!("{prefix}.q_proj.weight"), &[q_dim, h])?,
                w.take(&format!("{prefix}.k_proj.weight"), &[kv_dim, h])?,
                w.take(&format!("{prefix}.v_proj.weight"), &[kv_dim, h])?,
                bias(w, &format!("{prefix}.q_proj.bias"), q_dim, b)?,
                bias(w, &format!("{prefix}.k_proj.bias"), kv_dim, b)?,
                bias(w, &format!("{prefix}.v_proj.bias"), kv_dim, b)?,
            )
        };
        // Taken in this order so a report of missing tensors lists them as the checkpoint does.
        let o_weight = w.take(&format!("{prefix}.o_proj.weight"), &[h, q_dim])?;
        let o_bias = bias(w, &format!("{prefix}.o_proj.bias"), h, b)?;
        Ok(Attention {
            q_proj: Linear::of(q_proj, q_bias),
            k_proj: Linear::of(k_proj, k_bias),
            v_proj: Linear::of(v_proj, v_bias),
            o_proj: Linear::of(o_weight, o_bias),
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        })
    }

    /// `x`: `[t, h]` in cache slots `cache_len..cache_len+t`, rotated at `pos` → `[t, h]`. Writes
    /// this layer's K/V rows of those slots into `kv`; the caller advances the cache after the
    /// last layer. Errors: a position outside the RoPE table ([`rope_apply`]).
    pub fn forward(&self, x: &[f32], kv: &mut LayerKv, rope: &RopeTable, cache_len: usize, pos: RopePositions<'_>) -> Result<Vec<f32>> {
        self.forward_masked(x, kv, rope, cache_len, pos, Mask::Causal)
    }

    /// [`Attention::forward`] with the rows' [`Mask`]: causal, or block (the rows see each other).
    pub fn forward_masked(&self, x: &[f32], kv: &mut LayerKv, rope: &RopeTable, cache_len: usize, pos: RopePositions<'_>, mask: Mask) -> Result<Vec<f32>> {
        let (hd, nh, nkv) = (self.head_dim, self.n_heads, self.n_kv_heads);
        let h = self.o_proj.out_dim();
        let t = x.len() / h;
        let kv_dim = nkv * hd;
        let mut q = self.q_proj.forward(x)?; // [t, n_heads, head_dim]
        let mut k = self.k_proj.forward(x)?; // [t, n_kv_heads, head_dim]
        let v = self.v_proj.forward(x)?; // [t, n_kv_heads, head_dim]
        rope_apply(&mut q, nh, pos, rope)?; // q_rope
        rope_apply(&mut k, nkv, pos, rope)?; // k_rope
        kv.k[cache_len * kv_dim..(cache_len + t) * kv_dim].copy_from_slice(&k);
        kv.v[cache_len * kv_dim..(cache_len + t) * kv_dim].copy_from_slice(&v);

        let scale = 1.0 / (hd as f32).sqrt();
        let group = nh / nkv;
        let mut attn = vec![0.0f32; t * nh * hd]; // [t, n_heads, head_dim]
        let (kc, vc) = (&kv.k, &kv.v);
        attn.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (row, out)| {
            let (i, head) = (row / nh, row % nh);
            let kvh = head / group;
            let qv = &q[row * hd..(row + 1) * hd];
            let n_ctx = match mask {
                Mask::Causal => cache_len + i + 1, // positions 0..=cache_len+i
                Mask::Block => cache_len + t,      // the cache and the whole block
            };
            scores.clear();
            scores.extend((0..n_ctx).map(|p| {
                let kr = &kc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
                dot(qv, kr) * scale // vectorised: the prefill's causal attention is O(t²)
            }));
            softmax_in_place(scores);
            out.iter_mut().for_each(|o| *o = 0.0);
            for (p, &s) in scores.iter().enumerate() {
                let vr = &vc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
                out.iter_mut().zip(vr).for_each(|(o, v)| *o += s * v);
            }
        });
        self.o_proj.forward(&attn) // [t, h]
    }
}

//! Grouped-query self-attention with interleaved RoPE over the KV cache (spec §2.4):
//! q/k/v projections, RoPE on q and k, K (post-RoPE) and V appended to the cache, causal softmax
//! attention in f32 with scale `head_dim^-0.5`, query head `j` reading KV head
//! `j / (n_heads / n_kv_heads)`, then the output projection.

use rayon::prelude::*;

use super::kv_cache::LayerKv;
use super::linear::{load_bias as bias, Linear};
use crate::config::TextConfig;
use crate::ops::gemm::{gemm, Kernel, Precision, WeightRef};
use crate::ops::{dot, rope_apply, softmax_fast_in_place, softmax_in_place, RopePositions, RopeTable};
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

        let shape = AttnShape { t, cache_len, nh, nkv, hd, mask };
        let attn = if t >= GEMM_MIN_ROWS { attend_gemm(&q, &kv.k, &kv.v, shape)? } else { attend_rows(&q, &kv.k, &kv.v, shape) };
        self.o_proj.forward(&attn) // [t, h]
    }
}

/// Rows of one pass from which the attention runs as GEMMs ([`attend_gemm`]); fewer rows
/// (decode, drafts) take the per-row dots ([`attend_rows`]).
pub const GEMM_MIN_ROWS: usize = 32;
/// Query rows per GEMM task: a causal block of rows `i0..i0+64` only needs keys up to its last
/// row, so the masked-out upper triangle costs at most one block's width of extra work.
const ROW_BLOCK: usize = 64;

/// The sizes of one attention pass.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Rows of this pass.
    pub t: usize,
    /// Cached positions before them.
    pub cache_len: usize,
    /// Query heads.
    pub nh: usize,
    /// KV heads (`nh` a multiple).
    pub nkv: usize,
    /// `head_dim`.
    pub hd: usize,
    /// Which keys each row sees.
    pub mask: Mask,
}

impl AttnShape {
    /// Keys row `i` (0-based in the pass) attends to: positions `0..n`.
    fn n_ctx(&self, i: usize) -> usize {
        match self.mask {
            Mask::Causal => self.cache_len + i + 1, // positions 0..=cache_len+i
            Mask::Block => self.cache_len + self.t, // the cache and the whole block
        }
    }
}

/// Softmax attention of the pass's rows over the cache, one query row and head at a time: scores
/// by dot products, softmax, the weighted sum of V rows. `q`: `[t, nh, hd]` (post-RoPE); `kc`,
/// `vc`: the layer's cache `[slots, nkv, hd]` holding positions `0..cache_len+t` → `[t, nh, hd]`.
/// The twin of [`attend_gemm`], and the decode path.
pub fn attend_rows(q: &[f32], kc: &[f32], vc: &[f32], s: AttnShape) -> Vec<f32> {
    let (hd, nh) = (s.hd, s.nh);
    let kv_dim = s.nkv * hd;
    let group = nh / s.nkv.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut attn = vec![0.0f32; s.t * nh * hd]; // [t, n_heads, head_dim]
    attn.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (row, out)| {
        let (i, head) = (row / nh, row % nh);
        let kvh = head / group;
        let qv = &q[row * hd..(row + 1) * hd];
        scores.clear();
        scores.extend((0..s.n_ctx(i)).map(|p| {
            let kr = &kc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
            dot(qv, kr) * scale
        }));
        softmax_in_place(scores);
        out.iter_mut().for_each(|o| *o = 0.0);
        for (p, &w) in scores.iter().enumerate() {
            let vr = &vc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd];
            out.iter_mut().zip(vr).for_each(|(o, v)| *o += w * v);
        }
    });
    attn
}

/// [`attend_rows`] as two packed GEMMs per head and block of [`ROW_BLOCK`] query rows: scores
/// `S = Q·Kᵀ` `[m, n]` over the keys the block's last row sees, each row scaled and
/// softmaxed over its own keys (the rest zeroed), then `S·V` (as `S·(Vᵀ)ᵀ`). The prefill's
/// attention is `O(t²)`; per-row dot products ran it at a fraction of the GEMM rate.
///
/// Errors: those of [`gemm`] (none for consistent lengths).
pub fn attend_gemm(q: &[f32], kc: &[f32], vc: &[f32], s: AttnShape) -> Result<Vec<f32>> {
    let (hd, nh) = (s.hd, s.nh);
    let kv_dim = s.nkv * hd;
    let group = nh / s.nkv.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let kernel = Kernel::detect(Precision::Exact);
    let tasks: Vec<(usize, usize)> = (0..nh).flat_map(|h| (0..s.t).step_by(ROW_BLOCK).map(move |i0| (h, i0))).collect();
    let blocks = tasks
        .par_iter()
        .map(|&(head, i0)| -> Result<Vec<f32>> {
            let (m, kvh) = (ROW_BLOCK.min(s.t - i0), head / group);
            let n = s.n_ctx(i0 + m - 1);
            let qh: Vec<f32> = (i0..i0 + m).flat_map(|i| &q[(i * nh + head) * hd..(i * nh + head + 1) * hd]).copied().collect(); // [m, hd]
            let kh: Vec<f32> = (0..n).flat_map(|p| &kc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd]).copied().collect(); // [n, hd]
            let mut vt = vec![0.0f32; hd * n]; // [hd, n]
            for p in 0..n {
                for (c, &v) in vc[p * kv_dim + kvh * hd..p * kv_dim + (kvh + 1) * hd].iter().enumerate() {
                    vt[c * n + p] = v;
                }
            }
            let mut sc = vec![0.0f32; m * n]; // [m, n]
            gemm(&qh, WeightRef::F32(&kh), m, n, hd, &mut sc, kernel)?;
            for (r, row) in sc.chunks_mut(n).enumerate() {
                let valid = s.n_ctx(i0 + r);
                row[..valid].iter_mut().for_each(|x| *x *= scale);
                softmax_fast_in_place(&mut row[..valid]);
                row[valid..].fill(0.0);
            }
            let mut oh = vec![0.0f32; m * hd]; // [m, hd]
            gemm(&sc, WeightRef::F32(&vt), m, hd, n, &mut oh, kernel)?;
            Ok(oh)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut attn = vec![0.0f32; s.t * nh * hd]; // [t, n_heads, head_dim]
    for (&(head, i0), oh) in tasks.iter().zip(&blocks) {
        for (r, o) in oh.chunks(hd).enumerate() {
            let row = (i0 + r) * nh + head;
            attn[row * hd..(row + 1) * hd].copy_from_slice(o);
        }
    }
    Ok(attn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both masks, a cache prefix, GQA (2 query heads per KV head), ragged row blocks (70 rows):
    /// the GEMM path equals the per-row dots within f32 summation rounding.
    #[test]
    fn gemm_attention_matches_the_row_dots() {
        let (t, cache_len, nh, nkv, hd) = (70, 5, 4, 2, 24);
        let mut u = crate::test_util::uniform(0x9E37_79B9_7F4A_7C15);
        let mut rnd = move || u() * 4.0;
        let q: Vec<f32> = (0..t * nh * hd).map(|_| rnd()).collect();
        let kc: Vec<f32> = (0..(cache_len + t) * nkv * hd).map(|_| rnd()).collect();
        let vc: Vec<f32> = (0..(cache_len + t) * nkv * hd).map(|_| rnd()).collect();
        for mask in [Mask::Causal, Mask::Block] {
            let s = AttnShape { t, cache_len, nh, nkv, hd, mask };
            let (fast, slow) = (attend_gemm(&q, &kc, &vc, s).unwrap(), attend_rows(&q, &kc, &vc, s));
            let worst = fast.iter().zip(&slow).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            // Outputs are convex combinations of V (|v| ≤ 2): f32 rounding of sums over ≤ 75 keys.
            assert!(worst < 2e-5, "{mask:?}: max |Δ| {worst}");
        }
        // The causal mask holds: row 0 sees only the cache and itself (changing later keys moves
        // nothing there).
        let s = AttnShape { t, cache_len, nh, nkv, hd, mask: Mask::Causal };
        let mut vc2 = vc.clone();
        vc2[(cache_len + 1) * nkv * hd..].iter_mut().for_each(|v| *v += 1.0);
        let (a, b) = (attend_gemm(&q, &kc, &vc, s).unwrap(), attend_gemm(&q, &kc, &vc2, s).unwrap());
        assert_eq!(a[..nh * hd], b[..nh * hd]);
        assert_ne!(a[nh * hd..2 * nh * hd], b[nh * hd..2 * nh * hd]);
    }
}

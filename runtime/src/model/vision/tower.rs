//! The ERNIE-4.5-VL vision tower (spec §3.2; transformers
//! `Ernie4_5_VLMoeVisionTransformerPretrainedModel`): an adaptive-resolution ViT.
//!
//! ```text
//! pixel_values [n, 3·14·14] ─ patch_embed (Linear, no bias) ─▶ [n, d]
//!   depth × { x += proj(attn(LN1(x)))     attention within each frame, 2-D half-split RoPE
//!             x += fc2(quick_gelu(fc1(LN2(x)))) }
//! LN ─▶ [n, d]
//! ```
//! Patches arrive in merge-window order (block-row, block-col, inner-row, inner-col per frame,
//! frames one after another: tokenizers-mm's patchify), which is also the order of the RoPE
//! (row, col) ids, so the resampler can fold every 4 consecutive rows into one window.
//!
//! Checkpoint names (canonical = transformers 5.x, under `model.vision_tower.`):
//! `patch_embed.proj.weight [d, 588]`, `blocks.{i}.{norm1,norm2}.{weight,bias} [d]`,
//! `blocks.{i}.attn.qkv.{weight [3d, d], bias}`, `blocks.{i}.attn.proj.{weight [d, d], bias}`,
//! `blocks.{i}.mlp.fc1.{weight [i, d], bias}`, `blocks.{i}.mlp.fc2.{weight [d, i], bias}`,
//! `ln.{weight,bias}`.

use rayon::prelude::*;

use crate::config::VisionConfig;
use crate::nn::linear::Linear;
use crate::nn::norm::LayerNorm;
use crate::ops::gemm::{gemm, Kernel, Precision, WeightRef};
use crate::ops::{quick_gelu_fast_in_place, rope_vision, softmax_fast_in_place};
use crate::weights::Weights;
use crate::{Error, Result};

/// One pre-LN ViT block.
pub struct VisionBlock {
    /// Pre-attention LayerNorm.
    pub norm1: LayerNorm,
    /// `[3d, d]`: rows `[q | k | v]`, each `[heads, head_dim]`.
    pub qkv: Linear,
    /// `[d, d]` attention output projection.
    pub proj: Linear,
    /// Pre-MLP LayerNorm.
    pub norm2: LayerNorm,
    /// `[i, d]`
    pub fc1: Linear,
    /// `[d, i]`
    pub fc2: Linear,
}

/// The tower.
pub struct VisionTower {
    /// The tower's configuration.
    pub cfg: VisionConfig,
    /// `[d, 588]`, no bias.
    pub patch_embed: Linear,
    /// `depth` ViT blocks.
    pub blocks: Vec<VisionBlock>,
    /// Final LayerNorm.
    pub ln: LayerNorm,
}

impl VisionTower {
    /// Loads `{prefix}` (= `model.vision_tower`); names in the module docs.
    pub fn load(w: &mut Weights, prefix: &str, cfg: &VisionConfig) -> Result<VisionTower> {
        let (d, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let blocks = (0..cfg.depth)
            .map(|b| {
                let p = format!("{prefix}.blocks.{b}");
                Ok(VisionBlock {
                    norm1: LayerNorm::load(w, &format!("{p}.norm1"), d, eps)?,
                    qkv: Linear::load(w, &format!("{p}.attn.qkv"), 3 * d, d, true)?,
                    proj: Linear::load(w, &format!("{p}.attn.proj"), d, d, true)?,
                    norm2: LayerNorm::load(w, &format!("{p}.norm2"), d, eps)?,
                    fc1: Linear::load(w, &format!("{p}.mlp.fc1"), i, d, true)?,
                    fc2: Linear::load(w, &format!("{p}.mlp.fc2"), d, i, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VisionTower {
            cfg: cfg.clone(),
            patch_embed: Linear::load(w, &format!("{prefix}.patch_embed.proj"), d, cfg.patch_dim(), false)?,
            blocks,
            ln: LayerNorm::load(w, &format!("{prefix}.ln"), d, eps)?,
        })
    }

    /// Encodes one image or video. `pixels`: `[n, 588]` with `n = T·gh·gw` in merge-window
    /// order; `grid_thw = [T, gh, gw]` in patches → `[n, d]`.
    ///
    /// Errors: [`Error::ShapeMismatch`] when `pixels` is not `[T·gh·gw, patch_dim]` or gh / gw are
    /// not multiples of the spatial merge.
    pub fn forward(&self, pixels: &[f32], grid_thw: [usize; 3]) -> Result<Vec<f32>> {
        let [t, gh, gw] = grid_thw;
        let (m, pd) = (self.cfg.spatial_merge_size, self.cfg.patch_dim());
        let n = t * gh * gw;
        if n == 0 || pixels.len() != n * pd || gh % m != 0 || gw % m != 0 {
            return Err(Error::ShapeMismatch {
                op: "VisionTower::forward",
                expected: format!("pixels [T·gh·gw, {pd}] with gh, gw multiples of {m}"),
                got: format!("{} values for grid {grid_thw:?}", pixels.len()),
            });
        }
        let rc = patch_rows_cols(grid_thw, m); // [n] (row, col)
        let mut x = self.patch_embed.forward(pixels)?; // [n, d]
        for block in &self.blocks {
            self.block_forward(block, &mut x, &rc, gh * gw)?;
        }
        Ok(self.ln.forward(&x))
    }

    fn block_forward(&self, b: &VisionBlock, x: &mut [f32], rc: &[[u32; 2]], frame_len: usize) -> Result<()> {
        let (d, nh) = (self.cfg.hidden_size, self.cfg.num_heads);
        let hd = d / nh;
        let n = x.len() / d;
        let qkv = b.qkv.forward(&b.norm1.forward(x))?; // [n, 3d]
        let mut q = Vec::with_capacity(n * d); // [n, heads, hd]
        let mut k = Vec::with_capacity(n * d); // [n, heads, hd]
        let mut v = Vec::with_capacity(n * d); // [n, heads, hd]
        for row in qkv.chunks_exact(3 * d) {
            q.extend_from_slice(&row[..d]);
            k.extend_from_slice(&row[d..2 * d]);
            v.extend_from_slice(&row[2 * d..]);
        }
        rope_vision(&mut q, nh, hd, rc, self.cfg.rope_theta);
        rope_vision(&mut k, nh, hd, rc, self.cfg.rope_theta);
        let attn = frame_attention(&q, &k, &v, nh, hd, frame_len)?; // [n, d]
        let y = b.proj.forward(&attn)?; // [n, d]
        x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        let mut hmid = b.fc1.forward(&b.norm2.forward(x))?; // [n, i]
        quick_gelu_fast_in_place(&mut hmid);
        let y = b.fc2.forward(&hmid)?; // [n, d]
        x.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        Ok(())
    }
}

/// (row, col) of every patch in merge-window order: per frame, block-row, block-col, inner-row,
/// inner-col (transformers `get_vision_position_ids`).
pub fn patch_rows_cols(grid_thw: [usize; 3], m: usize) -> Vec<[u32; 2]> {
    let [t, gh, gw] = grid_thw;
    let mut rc = Vec::with_capacity(t * gh * gw);
    for _ in 0..t {
        for br in 0..gh / m {
            for bc in 0..gw / m {
                for ir in 0..m {
                    for ic in 0..m {
                        rc.push([(br * m + ir) as u32, (bc * m + ic) as u32]);
                    }
                }
            }
        }
    }
    rc
}

/// Bidirectional softmax attention restricted to consecutive runs of `frame_len` rows (one
/// frame each; transformers' `cu_seqlens`), scale `hd^-0.5`, f32. `q`, `k`, `v`: `[n, heads, hd]`
/// → `[n, heads·hd]`. Slow twin: [`frame_attention_slow`].
///
/// Per frame and head two packed GEMMs (`ops::gemm`): scores `S = Q·Kᵀ` `[m, m]`, softmax of
/// `S·scale` row by row, then `S·V` (as `S·(Vᵀ)ᵀ`). A 512×512 image is one frame of 1296
/// patches, so the 32 blocks × 16 heads of score and value products (≈ 140 GFLOP) were most
/// of a caption's prefill when each row ran its own dot products.
///
/// Errors: those of [`gemm`] (none for consistent lengths).
pub fn frame_attention(q: &[f32], k: &[f32], v: &[f32], nh: usize, hd: usize, frame_len: usize) -> Result<Vec<f32>> {
    let d = nh * hd;
    let n = q.len() / d.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let kernel = Kernel::detect(Precision::Exact);
    let mut out = vec![0.0f32; q.len()]; // [n, heads·hd]
    let f = frame_len.clamp(1, n.max(1));
    let (mut qh, mut kh, mut vt) = (vec![0.0f32; f * hd], vec![0.0f32; f * hd], vec![0.0f32; hd * f]);
    let (mut sc, mut oh) = (vec![0.0f32; f * f], vec![0.0f32; f * hd]);
    for f0 in (0..n).step_by(f) {
        let m = f.min(n - f0);
        for head in 0..nh {
            let col = |i: usize| (f0 + i) * d + head * hd..(f0 + i) * d + (head + 1) * hd;
            for i in 0..m {
                qh[i * hd..(i + 1) * hd].copy_from_slice(&q[col(i)]); // [m, hd]
                kh[i * hd..(i + 1) * hd].copy_from_slice(&k[col(i)]); // [m, hd]
                for (c, &x) in v[col(i)].iter().enumerate() {
                    vt[c * m + i] = x; // [hd, m]
                }
            }
            let s = &mut sc[..m * m]; // [m, m]
            gemm(&qh[..m * hd], WeightRef::F32(&kh[..m * hd]), m, m, hd, s, kernel)?;
            s.par_chunks_mut(m).for_each(|row| {
                row.iter_mut().for_each(|x| *x *= scale);
                softmax_fast_in_place(row);
            });
            gemm(s, WeightRef::F32(&vt[..hd * m]), m, hd, m, &mut oh[..m * hd], kernel)?; // [m, hd]
            for i in 0..m {
                out[col(i)].copy_from_slice(&oh[i * hd..(i + 1) * hd]);
            }
        }
    }
    Ok(out)
}

/// Slow twin of [`frame_attention`]: per frame, per head, the full score matrix in f64 with an
/// explicit mask-free softmax, as the formula reads.
pub fn frame_attention_slow(q: &[f32], k: &[f32], v: &[f32], nh: usize, hd: usize, frame_len: usize) -> Vec<f32> {
    let d = nh * hd;
    let n = q.len() / d;
    let mut out = vec![0.0f32; q.len()];
    for f0 in (0..n).step_by(frame_len) {
        for head in 0..nh {
            let at = |x: &[f32], i: usize, c: usize| x[i * d + head * hd + c] as f64;
            for i in f0..f0 + frame_len {
                let s: Vec<f64> = (f0..f0 + frame_len).map(|j| (0..hd).map(|c| at(q, i, c) * at(k, j, c)).sum::<f64>() / (hd as f64).sqrt()).collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for c in 0..hd {
                    let y: f64 = s.iter().enumerate().map(|(jj, x)| (x - m).exp() / z * at(v, f0 + jj, c)).sum();
                    out[i * d + head * hd + c] = y as f32;
                }
            }
        }
    }
    out
}

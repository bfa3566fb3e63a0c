//! Mimi's split residual vector quantizer (transformers 5.25.0 `MimiSplitResidualVectorQuantizer`,
//! `MimiResidualVectorQuantizer`, `MimiEuclideanCodebook`).
//!
//! Two RVQs read the SAME latent frames, each through its own 1x1 input projection `[D, H]`:
//! the semantic one gives levels `0..S`, the acoustic one levels `S..Q`. A level picks the code
//! nearest (Euclidean) to its residual, then subtracts that code vector. A codebook is
//! `embed = embed_sum / max(cluster_usage, 1e-5)` (`[V, D]`). Decoding sums the chosen vectors
//! per RVQ, applies its output projection `[H, D]`, and adds the two.
//!
//! Frames are rows: latents `[frames, H]`, codes `[levels][frames]`.

use super::config::MimiConfig;
use crate::ops::matmul_xwt;
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::Result;

/// `MimiEuclideanCodebook.epsilon`.
const USAGE_EPS: f32 = 1e-5;

struct Codebook {
    /// `[V, D]` f32.
    embed: Tensor,
    /// `‖embed[c]‖²`, `[V]`.
    norms: Vec<f32>,
}

impl Codebook {
    fn load(w: &mut Weights, name: &str, v: usize, d: usize) -> Result<Codebook> {
        let sum = w.take_f32(&format!("{name}.embed_sum"), &[v, d])?;
        let usage = w.take_f32(&format!("{name}.cluster_usage"), &[v])?;
        // `initialized` is a training flag: read (so `finish` accepts it) and ignored.
        w.take_opt(&format!("{name}.initialized"), &[1])?;
        let mut embed = sum;
        for (row, &u) in embed.chunks_mut(d).zip(&usage) {
            let u = u.max(USAGE_EPS);
            row.iter_mut().for_each(|x| *x /= u);
        }
        let norms: Vec<f32> = embed.chunks(d).map(|r| r.iter().map(|x| x * x).sum::<f32>()).collect();
        Ok(Codebook { embed: Tensor::from_f32(embed, vec![v, d])?, norms })
    }

    fn row(&self, c: usize) -> &[f32] {
        let d = self.embed.shape()[1];
        match self.embed.elems() {
            crate::tensor::Elems::F32(s) => &s[c * d..(c + 1) * d],
            _ => &[],
        }
    }

    /// Nearest code of each residual row (`[n, D]`): argmin of `‖e‖² − 2 r·e` (the first on a
    /// tie, as `torch.argmin`), with the dot products from one matrix product.
    fn nearest(&self, r: &[f32], n: usize) -> Result<Vec<u32>> {
        let v = self.norms.len();
        let mut dots = vec![0.0f32; n * v]; // [n, V]
        matmul_xwt(r, &self.embed, &mut dots)?;
        Ok(dots
            .chunks(v)
            .map(|row| {
                let mut best = (0usize, f32::INFINITY);
                for (c, (&dot, &norm)) in row.iter().zip(&self.norms).enumerate() {
                    let dist = norm - 2.0 * dot;
                    if dist < best.1 {
                        best = (c, dist);
                    }
                }
                best.0 as u32
            })
            .collect())
    }
}

/// Slow twin of the nearest-code search: the Euclidean distance from its definition in f64.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn nearest_slow(embed: &[f32], d: usize, r: &[f32]) -> u32 {
    let mut best = (0usize, f64::INFINITY);
    for (c, e) in embed.chunks(d).enumerate() {
        let dist: f64 = e.iter().zip(r).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
        if dist < best.1 {
            best = (c, dist);
        }
    }
    best.0 as u32
}

/// One `MimiResidualVectorQuantizer`.
struct Rvq {
    /// `[D, H]` (stored `[D, H, 1]`), present when D ≠ H.
    input_proj: Option<Tensor>,
    /// `[H, D]`.
    output_proj: Option<Tensor>,
    codebooks: Vec<Codebook>,
    dim: usize,
}

impl Rvq {
    fn load(w: &mut Weights, name: &str, levels: usize, cfg: &MimiConfig) -> Result<Rvq> {
        let (h, d) = (cfg.hidden_size, cfg.vector_quantization_hidden_dimension);
        let (input_proj, output_proj) = if d != h {
            let i = w.take(&format!("{name}.input_proj.weight"), &[d, h, 1])?.reshape(vec![d, h])?;
            let o = w.take(&format!("{name}.output_proj.weight"), &[h, d, 1])?.reshape(vec![h, d])?;
            (Some(i), Some(o))
        } else {
            (None, None)
        };
        let codebooks = (0..levels)
            .map(|l| Codebook::load(w, &format!("{name}.layers.{l}.codebook"), cfg.codebook_size, d))
            .collect::<Result<_>>()?;
        Ok(Rvq { input_proj, output_proj, codebooks, dim: d })
    }

    /// `latents`: `[n, H]` → codes of the first `levels` codebooks, `[levels][n]`.
    fn encode(&self, latents: &[f32], n: usize, levels: usize) -> Result<Vec<Vec<u32>>> {
        let mut residual = match &self.input_proj {
            Some(p) => {
                let mut y = vec![0.0f32; n * self.dim];
                matmul_xwt(latents, p, &mut y)?;
                y
            }
            None => latents.to_vec(),
        };
        let mut codes = Vec::with_capacity(levels);
        for cb in &self.codebooks[..levels] {
            let idx = cb.nearest(&residual, n)?;
            for (row, &c) in residual.chunks_mut(self.dim).zip(&idx) {
                row.iter_mut().zip(cb.row(c as usize)).for_each(|(r, e)| *r -= e);
            }
            codes.push(idx);
        }
        Ok(codes)
    }

    /// Codes `[levels][n]` (checked in range by the caller) → `[n, H]`.
    fn decode(&self, codes: &[Vec<u32>], n: usize) -> Result<Vec<f32>> {
        let mut q = vec![0.0f32; n * self.dim]; // [n, D]
        for (cb, level) in self.codebooks.iter().zip(codes) {
            for (row, &c) in q.chunks_mut(self.dim).zip(level) {
                row.iter_mut().zip(cb.row(c as usize)).for_each(|(a, e)| *a += e);
            }
        }
        match &self.output_proj {
            Some(p) => {
                let mut y = vec![0.0f32; n * p.shape()[0]];
                matmul_xwt(&q, p, &mut y)?;
                Ok(y)
            }
            None => Ok(q),
        }
    }
}

/// `MimiSplitResidualVectorQuantizer`: semantic levels first, then acoustic ones.
pub(crate) struct SplitRvq {
    semantic: Rvq,
    acoustic: Rvq,
    n_semantic: usize,
}

impl SplitRvq {
    /// Takes `quantizer.{semantic,acoustic}_residual_vector_quantizer.*`.
    pub(crate) fn load(w: &mut Weights, cfg: &MimiConfig) -> Result<SplitRvq> {
        let ns = cfg.num_semantic_quantizers;
        Ok(SplitRvq {
            semantic: Rvq::load(w, "quantizer.semantic_residual_vector_quantizer", ns, cfg)?,
            acoustic: Rvq::load(w, "quantizer.acoustic_residual_vector_quantizer", cfg.num_quantizers - ns, cfg)?,
            n_semantic: ns,
        })
    }

    /// `latents`: `[n, H]` → `[levels][n]`; `n_semantic ≤ levels ≤ Q` (checked by the caller).
    pub(crate) fn encode(&self, latents: &[f32], n: usize, levels: usize) -> Result<Vec<Vec<u32>>> {
        let mut codes = self.semantic.encode(latents, n, self.n_semantic)?;
        if levels > self.n_semantic {
            codes.extend(self.acoustic.encode(latents, n, levels - self.n_semantic)?);
        }
        Ok(codes)
    }

    /// Codes `[levels][n]`, `1 ≤ levels ≤ Q`, each `< V` (checked by the caller) → `[n, H]`.
    pub(crate) fn decode(&self, codes: &[Vec<u32>], n: usize) -> Result<Vec<f32>> {
        let split = self.n_semantic.min(codes.len());
        let mut out = self.semantic.decode(&codes[..split], n)?;
        if codes.len() > split {
            let a = self.acoustic.decode(&codes[split..], n)?;
            out.iter_mut().zip(&a).for_each(|(x, y)| *x += y);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_the_slow_twin() {
        let (v, d, n) = (37, 5, 50);
        let mut s = 12345u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let embed: Vec<f32> = (0..v * d).map(|_| rnd()).collect();
        let r: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
        let norms: Vec<f32> = embed.chunks(d).map(|e| e.iter().map(|x| x * x).sum::<f32>()).collect();
        let cb = Codebook { embed: Tensor::from_f32(embed.clone(), vec![v, d]).unwrap(), norms };
        let fast = cb.nearest(&r, n).unwrap();
        let slow: Vec<u32> = r.chunks(d).map(|row| nearest_slow(&embed, d, row)).collect();
        assert_eq!(fast, slow);
        assert!(slow.iter().collect::<std::collections::BTreeSet<_>>().len() > 10, "codes should vary");
    }
}

//! The MoE router (spec §2.4; transformers `Ernie4_5_MoeTopKRouter`), kept apart from the experts.
//!
//! Per token row `x` (`[h]`), all in f32 because the probabilities decide discrete choices:
//! ```text
//! logits = W_r · x                         [e]
//! p      = softmax(logits)                 over ALL experts
//! sel    = top_k(p + bias)                 the correction bias only selects ...
//! w      = p[sel] / max(Σ p[sel], norm_min) ... the weights renormalise the UNBIASED p
//! ```
//! Ties in `p + bias` go to the lower expert index (torch.topk's behaviour on CPU, and what the
//! CUDA kernel does).

use rayon::prelude::*;

use crate::ops::gemm::{gemm, Kernel, Precision, WeightRef};

use crate::ops::softmax_in_place;
use crate::{Error, Result};

/// The routing decision for `n_tokens` rows: `expert_ids` and `weights` are `[n_tokens, top_k]`,
/// slot order = descending biased score.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// Slots per token `k`.
    pub top_k: usize,
    /// `[t, k]` selected expert per (token, slot).
    pub expert_ids: Vec<u32>,
    /// `[t, k]` renormalised unbiased probability per (token, slot).
    pub weights: Vec<f32>,
}

impl Routing {
    /// Rows routed `t`.
    pub fn n_tokens(&self) -> usize {
        self.expert_ids.len() / self.top_k.max(1)
    }
}

/// Router weights of one MoE layer.
pub struct Router {
    /// `[e, h]` f32 (kept in f32 whatever the checkpoint dtype, as HF's `_keep_in_fp32_modules`).
    pub weight: Vec<f32>,
    /// `[e]` `e_score_correction_bias`; selection only.
    pub bias: Option<Vec<f32>>,
    /// Routed experts `e`.
    pub num_experts: usize,
    /// Hidden width `h`.
    pub hidden: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Clamp of the renormalisation denominator (`moe_norm_min`).
    pub norm_min: f32,
    /// `[e]` kept experts (elastic width); a masked expert's logit is −∞ before the softmax.
    pub expert_mask: Option<Vec<bool>>,
}

impl Router {
    /// Routes `x` (`[t, h]`).
    pub fn route(&self, x: &[f32]) -> Result<Routing> {
        let t = x.len() / self.hidden.max(1);
        let mut logits = vec![0.0f32; t * self.num_experts]; // [t, e]
        // f32 logits as transformers' `F.linear` in f32 (spec §6.8) through the exact packed GEMM
        // (one sequential sum per logit took 6 % of a 512-token prefill). The GEMM for every
        // row count, the GEMV never: its summation order differs, and a token's experts must
        // not depend on how many rows share its batch.
        gemm(x, WeightRef::F32(&self.weight), t, self.num_experts, self.hidden, &mut logits, Kernel::detect(Precision::Exact))?;
        if let Some(mask) = &self.expert_mask {
            for row in logits.chunks_exact_mut(self.num_experts) {
                row.iter_mut().zip(mask).filter(|(_, &keep)| !keep).for_each(|(l, _)| *l = f32::NEG_INFINITY);
            }
        }
        route_logits(&logits, self.num_experts, self.top_k, self.bias.as_deref(), self.norm_min)
    }
}

/// Softmax → biased top-k → renormalise, for router logits `[t, e]` (a −∞ logit marks an
/// expert that must not be selected) (the part of routing the CUDA
/// `moe_route` kernel implements; tests compare the two).
///
/// Errors: [`Error::ShapeMismatch`] when `logits` is not a whole number of rows, `bias` is not
/// `[e]`, or `top_k` is not in `1..=e`.
pub fn route_logits(logits: &[f32], n_experts: usize, top_k: usize, bias: Option<&[f32]>, norm_min: f32) -> Result<Routing> {
    if n_experts == 0 || logits.len() % n_experts != 0 || top_k == 0 || top_k > n_experts {
        return Err(Error::ShapeMismatch {
            op: "route_logits",
            expected: format!("logits [t, {n_experts}] and top_k in 1..={n_experts}"),
            got: format!("{} logits, top_k {top_k}", logits.len()),
        });
    }
    if let Some(b) = bias {
        if b.len() != n_experts {
            return Err(Error::ShapeMismatch { op: "route_logits", expected: format!("bias [{n_experts}]"), got: format!("[{}]", b.len()) });
        }
    }
    let t = logits.len() / n_experts;
    let mut expert_ids = vec![0u32; t * top_k];
    let mut weights = vec![0.0f32; t * top_k];
    expert_ids
        .par_chunks_mut(top_k)
        .zip(weights.par_chunks_mut(top_k))
        .zip(logits.par_chunks(n_experts))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, score): &mut (Vec<f32>, Vec<f32>), ((ids, ws), l)| {
                p.clear();
                p.extend_from_slice(l);
                softmax_in_place(p); // [e]
                score.clear();
                // A −∞ logit (masked expert) is never selectable, whatever its correction bias.
                score.extend(p.iter().enumerate().map(|(e, &v)| {
                    if l[e] == f32::NEG_INFINITY {
                        f32::NEG_INFINITY
                    } else {
                        v + bias.map_or(0.0, |b| b[e])
                    }
                }));
                top_k_lowest_index_ties(score, ids);
                let sum: f32 = ids.iter().map(|&e| p[e as usize]).sum();
                let denom = sum.max(norm_min);
                for (w, &e) in ws.iter_mut().zip(ids.iter()) {
                    *w = p[e as usize] / denom;
                }
            },
        );
    Ok(Routing { top_k, expert_ids, weights })
}

/// Writes the indices of the `ids.len()` largest `score`s in descending order; equal scores go to
/// the lower index. NaN scores rank below every number.
fn top_k_lowest_index_ties(score: &[f32], ids: &mut [u32]) {
    let better = |a: usize, b: usize| -> bool {
        // a ranks before b?
        match (score[a].is_nan(), score[b].is_nan()) {
            (false, true) => true,
            (true, false) => false,
            (true, true) => a < b,
            (false, false) => score[a] > score[b] || (score[a] == score[b] && a < b),
        }
    };
    let k = ids.len();
    let mut n = 0usize;
    for e in 0..score.len() {
        if n < k {
            ids[n] = e as u32;
            n += 1;
        } else if better(e, ids[k - 1] as usize) {
            ids[k - 1] = e as u32;
        } else {
            continue;
        }
        // Insertion step keeps ids sorted best-first.
        let mut i = n - 1;
        while i > 0 && better(ids[i] as usize, ids[i - 1] as usize) {
            ids.swap(i, i - 1);
            i -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch invariance: a token's logits, experts and weights are the same bits whether it is
    /// routed alone, in a decode-sized batch or in a prefill-sized one (`h` = 300 crosses a GEMM
    /// depth block), so batching requests never changes anyone's experts.
    #[test]
    fn routing_does_not_depend_on_the_batch() {
        let (e, h, t) = (8, 300, 13);
        let mut rnd = crate::test_util::uniform(0x2545_f491_4f6c_dd1d);
        let r = Router {
            weight: (0..e * h).map(|_| rnd()).collect(),
            bias: Some((0..e).map(|_| rnd() * 0.1).collect()),
            num_experts: e,
            hidden: h,
            top_k: 2,
            norm_min: 1e-12,
            expert_mask: None,
        };
        let x: Vec<f32> = (0..t * h).map(|_| rnd()).collect();
        let all = r.route(&x).unwrap();
        for (n0, n) in [(0, 1), (5, 1), (2, 3), (9, 4)] {
            let part = r.route(&x[n0 * h..(n0 + n) * h]).unwrap();
            assert_eq!(part.expert_ids, all.expert_ids[n0 * 2..(n0 + n) * 2]);
            let (a, b): (Vec<u32>, Vec<u32>) =
                (part.weights.iter().map(|v| v.to_bits()).collect(), all.weights[n0 * 2..(n0 + n) * 2].iter().map(|v| v.to_bits()).collect());
            assert_eq!(a, b, "rows {n0}..{}", n0 + n);
        }
        assert!(r.route(&x[..h + 1]).is_err(), "a partial row is a shape error");
    }
}

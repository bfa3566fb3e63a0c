//! The `moe_align` stage: (token, slot) pairs of a [`Routing`] grouped by expert, so each
//! expert runs one GEMM over all its rows (`moe_gemm`). The experts themselves are
//! [`crate::nn::mlp::SwiGlu`]s.

use super::router::Routing;

/// (token, slot) pairs grouped by expert: expert `e` owns `pairs[offsets[e]..offsets[e+1]]`,
/// in token order. A pair is `token * top_k + slot`.
///
/// Worked example, t = 3, k = 2, routing `[[2,0],[0,1],[2,1]]`, e = 4:
/// ```text
/// pairs by expert: e0: (t0,s1)=1, (t1,s0)=2 | e1: (t1,s1)=3, (t2,s1)=5 | e2: (t0,s0)=0, (t2,s0)=4 | e3: none
/// offsets = [0, 2, 4, 6, 6]   pairs = [1, 2, 3, 5, 0, 4]
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertGroups {
    /// `[e + 1]`
    pub offsets: Vec<usize>,
    /// `[t * k]`
    pub pairs: Vec<u32>,
}

/// Counting sort of the routing's pairs by expert (stable: token order within an expert).
pub fn group_by_expert(routing: &Routing, n_experts: usize) -> ExpertGroups {
    let mut offsets = vec![0usize; n_experts + 1];
    for &e in &routing.expert_ids {
        offsets[e as usize + 1] += 1;
    }
    for e in 0..n_experts {
        offsets[e + 1] += offsets[e];
    }
    let mut next = offsets.clone();
    let mut pairs = vec![0u32; routing.expert_ids.len()];
    for (p, &e) in routing.expert_ids.iter().enumerate() {
        pairs[next[e as usize]] = p as u32;
        next[e as usize] += 1;
    }
    ExpertGroups { offsets, pairs }
}


//! The sparse MoE feed-forward block (spec §2.4): router → experts → weighted sum, plus the
//! shared experts added with weight 1.
//!
//! Two paths compute it, tested against each other in `tests/moe_parity.rs`:
//! - [`MoeBlock::forward_slow`]: per token, per selected expert, the obvious loop. Kept forever.
//! - [`MoeBlock::forward`]: the stages GPU runtimes use — `moe_route` (router), `moe_align`
//!   ([`group_by_expert`]: (token, slot) pairs grouped by expert), `moe_gemm` (one gate/up/down
//!   product per active expert over all its rows), `moe_reduce` (weighted sum of the k slots back
//!   into token order).

mod grouped;
mod mlp;
mod router;

pub use grouped::{GroupRouting, GroupedMoe};
pub use mlp::SwiGlu;
pub(crate) use mlp::{add_bias, bias};
pub use router::{route_logits, Router, Routing};

use crate::config::MoeConfig;
use crate::weights::Weights;
use crate::{Error, Result};

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

/// One MoE layer: router, routed experts, optional shared experts.
pub struct MoeBlock {
    pub router: Router,
    /// `e` routed experts, each `SwiGlu` of width `moe_intermediate_size`.
    pub experts: Vec<SwiGlu>,
    /// One MLP of width `moe_intermediate_size * moe_num_shared_experts`.
    pub shared: Option<SwiGlu>,
}

impl MoeBlock {
    /// Loads `{prefix}` (= `model.layers.{l}.mlp`), accepting every layout of spec §2.3:
    /// per-expert `experts.{e}.{gate,up,down}_proj` (or fused `up_gate_proj`), or the
    /// transformers-5 stacked `experts.gate_up_proj [e, 2i, h]` (gate rows first) with
    /// `experts.down_proj [e, h, i]`; the correction bias under `moe_statics.` or `gate.moe_statics.`.
    pub fn load(w: &mut Weights, prefix: &str, hidden: usize, m: &MoeConfig, use_bias: bool) -> Result<MoeBlock> {
        let (e, i) = (m.num_experts, m.moe_intermediate_size);
        let weight = w.take_f32(&format!("{prefix}.gate.weight"), &[e, hidden])?;
        let mut bias = None;
        for name in [format!("{prefix}.moe_statics.e_score_correction_bias"), format!("{prefix}.gate.moe_statics.e_score_correction_bias")] {
            if w.contains(&name) {
                if bias.is_some() {
                    return Err(Error::TensorSet { missing: vec![], unused: vec![name] });
                }
                bias = Some(w.take_f32(&name, &[1, e])?);
            }
        }
        let router = Router { weight, bias, num_experts: e, hidden, top_k: m.top_k, norm_min: m.moe_norm_min, expert_mask: None };

        let stacked = format!("{prefix}.experts.gate_up_proj");
        let experts = if w.contains(&stacked) {
            let gate_up = w.take(&stacked, &[e, 2 * i, hidden])?; // [e, 2i, h]
            let down = w.take(&format!("{prefix}.experts.down_proj"), &[e, hidden, i])?; // [e, h, i]
            (0..e)
                .map(|x| {
                    let gu = gate_up.index0(x)?; // [2i, h]
                    Ok(SwiGlu {
                        gate: gu.narrow0(0, i)?,
                        up: gu.narrow0(i, i)?,
                        down: down.index0(x)?,
                        gate_bias: None,
                        up_bias: None,
                        down_bias: None,
                        hidden,
                        inter: i,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            (0..e).map(|x| SwiGlu::load(w, &format!("{prefix}.experts.{x}"), hidden, i, use_bias)).collect::<Result<Vec<_>>>()?
        };
        let shared = match m.moe_num_shared_experts {
            0 => None,
            s => Some(SwiGlu::load(w, &format!("{prefix}.shared_experts"), hidden, i * s, use_bias)?),
        };
        Ok(MoeBlock { router, experts, shared })
    }

    pub fn hidden(&self) -> usize {
        self.router.hidden
    }

    /// Fast path. `x`: `[t, h]` → (`[t, h]`, the routing used).
    pub fn forward(&self, x: &[f32]) -> Result<(Vec<f32>, Routing)> {
        let h = self.hidden();
        let t = x.len() / h;
        let routing = self.router.route(x)?; // moe_route: ids, weights [t, k]
        let k = routing.top_k;
        let groups = group_by_expert(&routing, self.experts.len()); // moe_align
        let mut slot_out = vec![0.0f32; t * k * h]; // [t, k, h]
        for (e, expert) in self.experts.iter().enumerate() {
            let pairs = &groups.pairs[groups.offsets[e]..groups.offsets[e + 1]];
            if pairs.is_empty() {
                continue;
            }
            let mut rows = Vec::with_capacity(pairs.len() * h); // [n_e, h]
            for &p in pairs {
                let tok = p as usize / k;
                rows.extend_from_slice(&x[tok * h..(tok + 1) * h]);
            }
            let y = expert.forward(&rows)?; // moe_gemm: [n_e, h]
            for (r, &p) in pairs.iter().enumerate() {
                let wgt = routing.weights[p as usize];
                let dst = &mut slot_out[p as usize * h..(p as usize + 1) * h];
                for (d, v) in dst.iter_mut().zip(&y[r * h..(r + 1) * h]) {
                    *d = v * wgt;
                }
            }
        }
        // moe_reduce: sum the k slots of each token, in slot order.
        let mut out = vec![0.0f32; t * h]; // [t, h]
        for (o, slots) in out.chunks_exact_mut(h).zip(slot_out.chunks_exact(k * h)) {
            for s in slots.chunks_exact(h) {
                o.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
        }
        if let Some(shared) = &self.shared {
            let y = shared.forward(x)?; // [t, h]
            out.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        Ok((out, routing))
    }

    /// Slow twin: for each token, for each selected expert, run that expert on that one row.
    pub fn forward_slow(&self, x: &[f32]) -> Result<(Vec<f32>, Routing)> {
        let h = self.hidden();
        let t = x.len() / h;
        let routing = self.router.route(x)?;
        let k = routing.top_k;
        let mut out = vec![0.0f32; t * h];
        for tok in 0..t {
            let row = &x[tok * h..(tok + 1) * h];
            for slot in 0..k {
                let e = routing.expert_ids[tok * k + slot] as usize;
                let wgt = routing.weights[tok * k + slot];
                let y = self.experts[e].forward_slow(row)?;
                for (o, v) in out[tok * h..(tok + 1) * h].iter_mut().zip(&y) {
                    *o += wgt * v;
                }
            }
            if let Some(shared) = &self.shared {
                let y = shared.forward_slow(row)?;
                out[tok * h..(tok + 1) * h].iter_mut().zip(&y).for_each(|(a, b)| *a += b);
            }
        }
        Ok((out, routing))
    }
}

//! One text-MoE layer: router → experts → weighted sum, plus the shared experts (spec §2.4).
//! Loading from a checkpoint (every layout) is `model/moe.rs`.

use super::experts::group_by_expert;
use super::router::{Router, Routing};
use crate::nn::mlp::SwiGlu;
use crate::Result;

/// One MoE layer: router, routed experts, optional shared experts.
pub struct MoeBlock {
    /// Picks `top_k` experts per token.
    pub router: Router,
    /// `e` routed experts, each `SwiGlu` of width `moe_intermediate_size`.
    pub experts: Vec<SwiGlu>,
    /// One MLP of width `moe_intermediate_size * moe_num_shared_experts`.
    pub shared: Option<SwiGlu>,
}

impl MoeBlock {
    /// Hidden width `h`.
    pub fn hidden(&self) -> usize {
        self.router.hidden
    }

    /// Fast path. `x`: `[t, h]` → (`[t, h]`, the routing used).
    pub fn forward(&self, x: &[f32]) -> Result<(Vec<f32>, Routing)> {
        self.forward_with(x, self.shared.as_ref())
    }

    /// [`MoeBlock::forward`] with `shared` in place of the block's own shared MLP (a
    /// [`super::GroupedMoe`] holds one for all its groups). A few rows (decode) take the two-pass
    /// streaming path of `fused.rs`; more rows the grouped GEMMs below.
    pub(super) fn forward_with(&self, x: &[f32], shared: Option<&SwiGlu>) -> Result<(Vec<f32>, Routing)> {
        let h = self.hidden();
        let t = x.len() / h;
        let routing = self.router.route(x)?; // moe_route: ids, weights [t, k]
        if let Some(out) = super::fused::forward_few(self, x, &routing, shared)? {
            return Ok((out, routing));
        }
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
        if let Some(shared) = shared {
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

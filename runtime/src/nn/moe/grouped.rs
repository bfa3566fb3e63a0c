//! MoE with routing groups as configuration (spec §3.4, §1.1): each token belongs to one group,
//! each group has its own router, correction bias, expert count and expert width, and one shared
//! MLP runs on every token.
//!
//! - ERNIE-4.5-VL: 2 groups, picked per token by modality — group 0 (text experts) for text,
//!   group 1 (vision experts) for image / video placeholders and their start / end tokens
//!   (transformers `Ernie4_5_VLMoeMoeBlock`, `moe_mm_token_type_ids`).
//! - ERNIE 5.0 unified: 1 group for every token, i.e. exactly the text MoE of §2.4.
//!
//! Each group is a [`MoeBlock`] without shared experts, so the grouped forward is "gather the
//! group's rows, run the text-MoE fast path, scatter back", and one group over all tokens is the
//! text MoE itself. [`GroupedMoe::forward_slow`] is the per-token twin.

use super::{MoeBlock, Routing};
use crate::nn::mlp::SwiGlu;
use crate::{Error, Result};

/// The routing of one group's tokens in one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRouting {
    /// Group index (0 text / unified, 1 vision).
    pub group: usize,
    /// `[n]` rows of the layer input routed in this group, ascending.
    pub tokens: Vec<u32>,
    /// `[n, k]` the group's routing of those rows.
    pub routing: Routing,
}

/// One MoE layer with routing groups.
pub struct GroupedMoe {
    /// Routed experts per group; each block's `shared` is `None`.
    pub groups: Vec<MoeBlock>,
    /// Shared experts, applied to every token with weight 1.
    pub shared: Option<SwiGlu>,
}

impl GroupedMoe {
    /// Hidden width `h`.
    pub fn hidden(&self) -> usize {
        self.groups.first().map_or(0, MoeBlock::hidden)
    }

    /// Row indices per group. Errors when `group_of` has the wrong length or names a group the
    /// layer does not have.
    fn partition(&self, t: usize, group_of: Option<&[u8]>) -> Result<Vec<Vec<u32>>> {
        let mut rows = vec![Vec::new(); self.groups.len()];
        match group_of {
            None => rows[0] = (0..t as u32).collect(),
            Some(g) => {
                if g.len() != t {
                    return Err(Error::ShapeMismatch { op: "GroupedMoe::forward", expected: format!("{t} group ids"), got: g.len().to_string() });
                }
                for (i, &gi) in g.iter().enumerate() {
                    let slot = rows.get_mut(gi as usize).ok_or_else(|| {
                        Error::Request(format!("token {i} is in routing group {gi}, but the layer has {} group(s)", self.groups.len()))
                    })?;
                    slot.push(i as u32);
                }
            }
        }
        Ok(rows)
    }

    /// Fast path. `x`: `[t, h]`; `group_of`: `[t]` group per row (`None` = all group 0) →
    /// (`[t, h]`, the routing of every non-empty group).
    pub fn forward(&self, x: &[f32], group_of: Option<&[u8]>) -> Result<(Vec<f32>, Vec<GroupRouting>)> {
        let h = self.hidden();
        let t = x.len() / h.max(1);
        let parts = self.partition(t, group_of)?;
        let mut out = vec![0.0f32; t * h]; // [t, h]
        let mut routings = Vec::new();
        let mut shared_done = false;
        for (g, (block, rows)) in self.groups.iter().zip(parts).enumerate() {
            if rows.is_empty() {
                continue;
            }
            let all = rows.len() == t;
            let gathered: Vec<f32>; // [n_g, h]
            let xs = if all {
                x
            } else {
                gathered = rows.iter().flat_map(|&r| &x[r as usize * h..(r as usize + 1) * h]).copied().collect();
                &gathered
            };
            // One group over every row (text, decode): the shared MLP joins that group's pass.
            let shared = if all { self.shared.as_ref() } else { None };
            shared_done |= shared.is_some();
            let (y, routing) = block.forward_with(xs, shared)?; // [n_g, h]
            for (i, &r) in rows.iter().enumerate() {
                out[r as usize * h..(r as usize + 1) * h].copy_from_slice(&y[i * h..(i + 1) * h]);
            }
            routings.push(GroupRouting { group: g, tokens: rows, routing });
        }
        if let (Some(shared), false) = (&self.shared, shared_done) {
            let y = shared.forward(x)?; // [t, h]
            out.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        }
        Ok((out, routings))
    }

    /// Slow twin: per token, its group's per-expert loop ([`MoeBlock::forward_slow`]) plus the
    /// shared MLP on that one row.
    pub fn forward_slow(&self, x: &[f32], group_of: Option<&[u8]>) -> Result<Vec<f32>> {
        let h = self.hidden();
        let t = x.len() / h.max(1);
        let parts = self.partition(t, group_of)?;
        let mut group = vec![0usize; t];
        for (g, rows) in parts.iter().enumerate() {
            rows.iter().for_each(|&r| group[r as usize] = g);
        }
        let mut out = Vec::with_capacity(t * h);
        for (i, row) in x.chunks_exact(h).enumerate() {
            let (mut y, _) = self.groups[group[i]].forward_slow(row)?; // [1, h]
            if let Some(shared) = &self.shared {
                let s = shared.forward_slow(row)?;
                y.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
            }
            out.extend_from_slice(&y);
        }
        Ok(out)
    }
}

//! Collecting [`RoutingStats`] from a generation's routing traces (grouped-MoE layers of a VL
//! model): the aggregation `ernie caption --routing-stats` writes.

use tokenizers_mm::TokenStream;

use super::RoutingStats;
use crate::infer::next_scale::ForwardRouting;
use crate::model::decoder::{Mlp, Transformer};
use crate::nn::trace::Trace;

impl RoutingStats {
    /// Expert load by modality of one generation: prompt tokens from the prefill trace (per stream
    /// modality), generated tokens (one [`Trace`] per decode forward) as text.
    pub fn collect(model: &Transformer, stream: &TokenStream, prefill: &Trace, decode: &[Trace]) -> RoutingStats {
        let mut stats = RoutingStats::new();
        for (&layer, groups) in &prefill.group_routing {
            for g in groups {
                let (k, e) = (g.routing.top_k, num_experts(model, layer, g.group));
                for modality in 0..4u8 {
                    let ids: Vec<u32> = g
                        .tokens
                        .iter()
                        .enumerate()
                        .filter(|(_, &tok)| stream.modality.get(tok as usize) == Some(&modality))
                        .flat_map(|(i, _)| g.routing.expert_ids[i * k..(i + 1) * k].iter().copied())
                        .collect();
                    if !ids.is_empty() {
                        stats.add(layer, modality, e, k, &ids);
                    }
                }
            }
        }
        for trace in decode {
            for (&layer, groups) in &trace.group_routing {
                for g in groups {
                    stats.add(layer, 0, num_experts(model, layer, g.group), g.routing.top_k, &g.routing.expert_ids);
                }
            }
        }
        stats
    }
}

/// Modality id of generated image tokens (the NFSP loop's slots and sum slot).
pub const IMAGE_GEN_MODALITY: u8 = 4;

impl RoutingStats {
    /// Expert load of one image generation ([`crate::infer::next_scale::NextScaleOutput::routing`],
    /// recorded with `trace_routing`): the prompt forward as text (its last row, BOI, included),
    /// every scale's slots and the sum slot as generated image tokens ([`IMAGE_GEN_MODALITY`]).
    pub fn collect_image_generation(model: &Transformer, forwards: &[ForwardRouting]) -> RoutingStats {
        let mut stats = RoutingStats::new();
        for f in forwards {
            let modality = if f.scale.is_some() { IMAGE_GEN_MODALITY } else { 0 };
            for (&layer, r) in &f.layers {
                let e = match num_experts(model, layer, 0) {
                    0 => r.expert_ids.iter().map(|&i| i as usize + 1).max().unwrap_or(0),
                    e => e,
                };
                stats.add(layer, modality, e, r.top_k, &r.expert_ids);
            }
        }
        stats
    }
}

/// Routed experts of `group` in checkpoint layer `layer`.
fn num_experts(model: &Transformer, layer: usize, group: usize) -> usize {
    model
        .layers
        .iter()
        .find(|l| l.index == layer)
        .and_then(|l| match &l.mlp {
            Mlp::Grouped(m) => m.groups.get(group).map(|b| b.router.num_experts),
            _ => None,
        })
        .unwrap_or(0)
}


//! Opt-in record of named intermediates of a forward pass, for parity debugging and for routing
//! statistics (llama.cpp's `cb` names: `ffn_moe_topk`, layer).

use std::collections::BTreeMap;

use super::moe::{GroupRouting, Routing};

/// What a traced forward pass recorded.
#[derive(Default, Debug, Clone)]
pub struct Trace {
    /// `ffn_moe_topk` per MoE layer index: expert ids and weights, `[t, k]` each.
    pub routing: BTreeMap<usize, Routing>,
    /// The same for grouped-MoE layers (VL): per layer, each group's rows and routing.
    pub group_routing: BTreeMap<usize, Vec<GroupRouting>>,
}

impl Trace {
    pub(crate) fn record_routing(&mut self, layer: usize, routing: Routing) {
        self.routing.insert(layer, routing);
    }

    pub(crate) fn record_group_routing(&mut self, layer: usize, routing: Vec<GroupRouting>) {
        self.group_routing.insert(layer, routing);
    }
}

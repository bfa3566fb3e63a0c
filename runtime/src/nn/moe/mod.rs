//! The sparse MoE feed-forward layers (spec §2.4): router → experts → weighted sum, plus the
//! shared experts added with weight 1.
//!
//! Two paths compute it, tested against each other in `tests/ops/moe_parity.rs`:
//! - [`MoeBlock::forward_slow`]: per token, per selected expert, the obvious loop. Kept forever.
//! - [`MoeBlock::forward`]: the stages GPU runtimes use — `moe_route` (router), `moe_align`
//!   ([`group_by_expert`]: (token, slot) pairs grouped by expert), `moe_gemm` (one gate/up/down
//!   product per active expert over all its rows), `moe_reduce` (weighted sum of the k slots back
//!   into token order).
//!
//! Files: `router.rs` (moe_route), `experts.rs` (moe_align), `block.rs` ([`MoeBlock`]: gemm and
//! reduce), `fused.rs` (decode: all active experts in two streaming passes), `grouped.rs`
//! ([`GroupedMoe`]: routing groups). Checkpoint reading is `model/moe.rs`.

mod block;
mod experts;
mod fused;
mod grouped;
mod router;

pub use block::MoeBlock;
pub use experts::{group_by_expert, ExpertGroups};
pub use grouped::{GroupRouting, GroupedMoe};
pub use router::{route_logits, Router, Routing};

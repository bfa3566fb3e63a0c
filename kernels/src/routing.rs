//! Launcher for `cuda/routing.cu`: router logits → top-k expert ids and renormalised weights.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "moe_route";
const KERNEL: &str = "moe_route_f32";

/// Largest expert count one warp handles (32 lanes x 8 registers).
pub const MAX_EXPERTS: usize = 256;
/// Tokens per block: one warp each.
pub const WARPS_PER_BLOCK: u32 = 4;

/// Shape of one routing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteDims {
    pub n_tokens: usize,
    pub n_experts: usize,
    pub top_k: usize,
}

impl RouteDims {
    /// 1 <= n_experts <= 256, 1 <= top_k <= n_experts, sizes within the kernel's ints.
    pub fn check(&self) -> Result<()> {
        if self.n_experts == 0 || self.n_experts > MAX_EXPERTS {
            bail!(
                OP,
                "n_experts = {} must be in 1..={MAX_EXPERTS}",
                self.n_experts
            );
        }
        if self.top_k == 0 || self.top_k > self.n_experts {
            bail!(
                OP,
                "top_k = {} must be in 1..={} (n_experts)",
                self.top_k,
                self.n_experts
            );
        }
        dim_i32(
            OP,
            "n_tokens * n_experts",
            mul(OP, self.n_tokens, self.n_experts)?,
        )?;
        dim_i32(OP, "n_tokens * top_k", mul(OP, self.n_tokens, self.top_k)?)?;
        Ok(())
    }

    /// One warp per token, [`WARPS_PER_BLOCK`] tokens per block.
    pub fn launch_config(&self) -> LaunchConfig {
        let blocks = self.n_tokens.div_ceil(WARPS_PER_BLOCK as usize).max(1);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (WARPS_PER_BLOCK * 32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Checks the four buffer lengths against the dims.
    pub fn check_buffers(
        &self,
        logits: usize,
        bias: usize,
        ids: usize,
        weights: usize,
    ) -> Result<()> {
        check_len(
            OP,
            "logits",
            logits,
            self.n_tokens.saturating_mul(self.n_experts),
        )?;
        check_len(OP, "bias", bias, self.n_experts)?;
        check_len(
            OP,
            "topk_ids",
            ids,
            self.n_tokens.saturating_mul(self.top_k),
        )?;
        check_len(
            OP,
            "topk_weights",
            weights,
            self.n_tokens.saturating_mul(self.top_k),
        )
    }
}

impl Kernels {
    /// ERNIE 4.5 routing for every token (spec §2.4): softmax over all experts, top-k by
    /// `p + bias`, ties to the LOWER expert index, weights = the unbiased `p` of the chosen
    /// experts divided by `max(sum, norm_min)`. All f32.
    ///
    /// - `logits` `[n_tokens, n_experts]` f32 (router matmul output)
    /// - `bias` `[n_experts]` f32 (`e_score_correction_bias`; zeros if the model has none)
    /// - `topk_ids` `[n_tokens, top_k]` u32 out, best first
    /// - `topk_weights` `[n_tokens, top_k]` f32 out
    ///
    /// Errors: [`crate::Error::InvalidArgument`] for n_experts outside 1..=256 or top_k outside
    /// 1..=n_experts, [`crate::Error::ShapeMismatch`] for buffer lengths, driver errors.
    /// `n_tokens == 0` launches nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_route(
        &self,
        stream: &CudaStream,
        logits: &CudaView<'_, f32>,
        bias: &CudaView<'_, f32>,
        topk_ids: &mut CudaViewMut<'_, u32>,
        topk_weights: &mut CudaViewMut<'_, f32>,
        dims: RouteDims,
        norm_min: f32,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        dims.check()?;
        dims.check_buffers(logits.len(), bias.len(), topk_ids.len(), topk_weights.len())?;
        if dims.n_tokens == 0 {
            return Ok(());
        }
        let n_tokens = dim_i32(OP, "n_tokens", dims.n_tokens)?;
        let n_experts = dim_i32(OP, "n_experts", dims.n_experts)?;
        let top_k = dim_i32(OP, "top_k", dims.top_k)?;
        let func = self.function(KERNEL)?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(logits)
            .arg(bias)
            .arg(topk_ids)
            .arg(topk_weights)
            .arg(&n_tokens)
            .arg(&n_experts)
            .arg(&top_k)
            .arg(&norm_min);
        // SAFETY: argument list and types match moe_route_f32's signature; logits holds
        // n_tokens * n_experts f32, bias n_experts, topk_ids / topk_weights n_tokens * top_k each
        // (checked above); n_experts <= 256 fits the kernel's per-lane registers, top_k <=
        // n_experts guarantees an untaken expert in every round; the grid covers n_tokens warps and
        // surplus warps exit before touching memory.
        unsafe { launch.launch(dims.launch_config()) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_checked() {
        let ok = RouteDims {
            n_tokens: 3,
            n_experts: 64,
            top_k: 6,
        };
        assert!(ok.check().is_ok());
        assert!(RouteDims {
            n_experts: 257,
            ..ok
        }
        .check()
        .is_err());
        assert!(RouteDims { top_k: 0, ..ok }.check().is_err());
        assert!(RouteDims { top_k: 65, ..ok }.check().is_err());
        assert!(ok.check_buffers(192, 64, 18, 18).is_ok());
        assert!(ok.check_buffers(192, 63, 18, 18).is_err());
        assert_eq!(
            RouteDims { n_tokens: 33, ..ok }.launch_config().grid_dim.0,
            9
        );
    }
}

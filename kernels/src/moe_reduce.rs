//! Launcher for `cuda/moe_reduce.cu`: sum each token's `top_k` expert rows back into token order.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "moe_reduce";

/// Upper bound on threads per block (one block per token, threads stride over hidden).
pub const MAX_THREADS: u32 = 256;

/// Shape of one reduce call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReduceDims {
    pub n_tokens: usize,
    pub top_k: usize,
    pub hidden: usize,
}

impl ReduceDims {
    /// Sizes within the kernel's ints.
    pub fn check(&self) -> Result<()> {
        dim_i32(OP, "n_tokens", self.n_tokens)?;
        dim_i32(OP, "top_k", self.top_k)?;
        dim_i32(OP, "hidden", self.hidden)?;
        mul(OP, mul(OP, self.n_tokens, self.top_k)?, self.hidden)?;
        Ok(())
    }

    /// One block per token; threads = hidden rounded up to a warp, at most [`MAX_THREADS`].
    pub fn launch_config(&self) -> LaunchConfig {
        let threads = (self.hidden.div_ceil(32) * 32).clamp(32, MAX_THREADS as usize) as u32;
        LaunchConfig {
            grid_dim: (self.n_tokens.max(1) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Checks buffer lengths; `shared` is `None` for the plain variant.
    pub fn check_buffers(&self, slot_out: usize, shared: Option<usize>, out: usize) -> Result<()> {
        let rows = self.n_tokens.saturating_mul(self.top_k);
        check_len(OP, "slot_out", slot_out, rows.saturating_mul(self.hidden))?;
        if let Some(shared) = shared {
            check_len(
                OP,
                "shared_out",
                shared,
                self.n_tokens.saturating_mul(self.hidden),
            )?;
        }
        check_len(OP, "out", out, self.n_tokens.saturating_mul(self.hidden))
    }
}

impl Kernels {
    /// `out[t] = sum_j slot_out[t * top_k + j] (+ shared_out[t])`, f32 sum in slot order, one
    /// bf16 rounding. The routing weights were already applied by [`Kernels::moe_gemm_down`].
    ///
    /// - `slot_out` `[n_tokens * top_k, hidden]` bf16
    /// - `shared_out` `[n_tokens, hidden]` bf16: the shared-expert output, added with weight 1
    ///   (ERNIE-4.5-21B has 2 shared experts' worth); `None` when the model has none
    /// - `out` `[n_tokens, hidden]` bf16
    ///
    /// Errors: [`crate::Error::ShapeMismatch`], [`crate::Error::InvalidArgument`], driver errors.
    pub fn moe_reduce(
        &self,
        stream: &CudaStream,
        slot_out: &CudaView<'_, half::bf16>,
        shared_out: Option<&CudaView<'_, half::bf16>>,
        out: &mut CudaViewMut<'_, half::bf16>,
        dims: ReduceDims,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        dims.check()?;
        dims.check_buffers(slot_out.len(), shared_out.map(|s| s.len()), out.len())?;
        if dims.n_tokens == 0 {
            return Ok(());
        }
        let n_tokens = dim_i32(OP, "n_tokens", dims.n_tokens)?;
        let top_k = dim_i32(OP, "top_k", dims.top_k)?;
        let hidden = dim_i32(OP, "hidden", dims.hidden)?;
        let cfg = dims.launch_config();
        let kernel = if shared_out.is_some() {
            "moe_reduce_add_bf16"
        } else {
            "moe_reduce_bf16"
        };
        let func = self.function(kernel)?;
        let mut launch = stream.launch_builder(func);
        launch.arg(slot_out);
        if let Some(shared) = shared_out {
            launch.arg(shared);
        }
        launch.arg(out).arg(&n_tokens).arg(&top_k).arg(&hidden);
        // SAFETY: the argument list matches the chosen kernel (moe_reduce_add_bf16 takes
        // shared_out, moe_reduce_bf16 does not); slot_out is [n_tokens * top_k, hidden], shared_out
        // and out [n_tokens, hidden] (checked above); one block per token, and threads stride
        // over hidden with a bound check.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_and_config() {
        let d = ReduceDims {
            n_tokens: 33,
            top_k: 6,
            hidden: 64,
        };
        assert!(d.check_buffers(33 * 6 * 64, Some(33 * 64), 33 * 64).is_ok());
        assert!(d.check_buffers(33 * 6 * 64, Some(1), 33 * 64).is_err());
        assert_eq!(d.launch_config().block_dim.0, 64);
        assert_eq!(
            ReduceDims { hidden: 2560, ..d }.launch_config().block_dim.0,
            256
        );
    }
}

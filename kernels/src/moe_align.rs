//! Launcher for `cuda/moe_align.cu`: group (token, slot) pairs by expert, padded to the GEMM tile.
//!
//! Worked example (the kernel's doc block in cuda/moe_align.cu derives it step by step):
//!
//! ```text
//! T = 4 tokens, k = 3, E = 5, block_m = 4; pair id = token * k + slot; sentinel 12 = T * k
//! topk_ids   = [[2, 3, 4], [1, 2, 4], [1, 3, 4], [1, 2, 3]]
//! sorted_ids = [3 6 9 12 | 0 4 10 12 | 1 7 11 12 | 2 5 8 12 | 12 x 12]   (capacity 28)
//! expert_ids = [1, 2, 3, 4, 5, 5, 5]     (5 = E marks tiles past the padded total)
//! n_padded   = 16                         (expert 0 got no pairs and no tile)
//! ```
//!
//! Within one expert the pair order is unspecified (atomic scatter); nothing downstream
//! depends on it.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "moe_align";
const KERNEL: &str = "moe_align_u32";

/// Shared-memory bound of the kernel's per-expert counters.
pub const MAX_EXPERTS: usize = 1024;
/// One block; its threads stride over experts and pairs.
pub const THREADS: u32 = 256;

/// Worst-case padded row count = length of `sorted_ids`:
/// `round_up(n_pairs + min(n_experts, n_pairs) * (block_m - 1), block_m)`: every expert that
/// receives at least one pair wastes at most `block_m - 1` rows.
pub fn capacity(n_pairs: usize, n_experts: usize, block_m: usize) -> Result<usize> {
    if block_m == 0 {
        bail!(OP, "block_m must be positive");
    }
    let waste = mul(OP, n_experts.min(n_pairs), block_m - 1)?;
    let Some(rows) = n_pairs.checked_add(waste) else {
        bail!(OP, "capacity overflows");
    };
    let cap = mul(OP, rows.div_ceil(block_m), block_m)?;
    dim_i32(OP, "capacity", cap)?;
    Ok(cap)
}

/// Shape of one align call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlignDims {
    /// `n_tokens * top_k`; also the padding sentinel in `sorted_ids`.
    pub n_pairs: usize,
    pub n_experts: usize,
    /// The GEMM tile height ([`crate::TileConfig::block_m`]).
    pub block_m: usize,
}

impl AlignDims {
    /// 1 <= n_experts <= 1024, block_m in 1..=256, sizes within the kernel's ints.
    pub fn check(&self) -> Result<()> {
        if self.n_experts == 0 || self.n_experts > MAX_EXPERTS {
            bail!(
                OP,
                "n_experts = {} must be in 1..={MAX_EXPERTS}",
                self.n_experts
            );
        }
        if self.block_m == 0 || self.block_m > 256 {
            bail!(OP, "block_m = {} must be in 1..=256", self.block_m);
        }
        dim_i32(OP, "n_pairs", self.n_pairs)?;
        capacity(self.n_pairs, self.n_experts, self.block_m).map(|_| ())
    }

    /// [`capacity`] for these dims.
    pub fn capacity(&self) -> Result<usize> {
        capacity(self.n_pairs, self.n_experts, self.block_m)
    }

    /// A single block of [`THREADS`] threads.
    pub fn launch_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Checks the four buffer lengths against the dims.
    pub fn check_buffers(
        &self,
        ids: usize,
        sorted: usize,
        experts: usize,
        n_padded: usize,
    ) -> Result<()> {
        let cap = self.capacity()?;
        check_len(OP, "topk_ids", ids, self.n_pairs)?;
        check_len(OP, "sorted_ids", sorted, cap)?;
        check_len(OP, "expert_ids", experts, cap / self.block_m)?;
        check_len(OP, "n_padded", n_padded, 1)
    }
}

impl Kernels {
    /// Sorts the routed pairs by expert into `block_m`-row tiles for the grouped GEMM.
    ///
    /// - `topk_ids` `[n_pairs]` u32 (routing output `[n_tokens, top_k]` flattened); ids must be
    ///   `< n_experts` (moe_route guarantees it; others are dropped)
    /// - `sorted_ids` `[capacity]` u32 out: pair ids by expert, padding = `n_pairs`
    /// - `expert_ids` `[capacity / block_m]` u32 out: expert per tile, `n_experts` past the end
    /// - `n_padded` `[1]` u32 out: rows the GEMM visits
    ///
    /// `capacity` comes from [`capacity`] (or [`crate::MoePlan`]). With `n_pairs == 0` the kernel
    /// still runs, so `n_padded` is written (0) and the GEMMs see an empty problem.
    /// Errors: [`crate::Error::InvalidArgument`], [`crate::Error::ShapeMismatch`], driver errors.
    pub fn moe_align(
        &self,
        stream: &CudaStream,
        topk_ids: &CudaView<'_, u32>,
        sorted_ids: &mut CudaViewMut<'_, u32>,
        expert_ids: &mut CudaViewMut<'_, u32>,
        n_padded: &mut CudaViewMut<'_, u32>,
        dims: AlignDims,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        dims.check()?;
        dims.check_buffers(
            topk_ids.len(),
            sorted_ids.len(),
            expert_ids.len(),
            n_padded.len(),
        )?;
        let n_pairs = dim_i32(OP, "n_pairs", dims.n_pairs)?;
        let n_experts = dim_i32(OP, "n_experts", dims.n_experts)?;
        let block_m = dim_i32(OP, "block_m", dims.block_m)?;
        let cap = dim_i32(OP, "capacity", dims.capacity()?)?;
        let func = self.function(KERNEL)?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(topk_ids)
            .arg(sorted_ids)
            .arg(expert_ids)
            .arg(n_padded)
            .arg(&n_pairs)
            .arg(&n_experts)
            .arg(&block_m)
            .arg(&cap);
        // SAFETY: arguments match moe_align_u32's signature; topk_ids has n_pairs elements,
        // sorted_ids exactly capacity, expert_ids capacity / block_m, n_padded 1 (checked above);
        // n_experts <= 1024 fits the shared counters; capacity bounds the padded total for any
        // ids, so every scatter position and tile index stays in range.
        unsafe { launch.launch(dims.launch_config()) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_matches_doc_example() {
        assert_eq!(capacity(12, 5, 4).unwrap(), 28);
        assert_eq!(capacity(0, 64, 16).unwrap(), 0);
        assert_eq!(capacity(1, 64, 64).unwrap(), 64);
        assert!(capacity(1, 1, 0).is_err());
    }

    #[test]
    fn dims_are_checked() {
        let ok = AlignDims {
            n_pairs: 12,
            n_experts: 5,
            block_m: 4,
        };
        assert!(ok.check().is_ok());
        assert!(ok.check_buffers(12, 28, 7, 1).is_ok());
        assert!(ok.check_buffers(12, 27, 7, 1).is_err());
        assert!(AlignDims {
            n_experts: 1025,
            ..ok
        }
        .check()
        .is_err());
        assert!(AlignDims { block_m: 0, ..ok }.check().is_err());
    }
}

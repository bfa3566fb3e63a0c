//! Launchers for `cuda/moe_gemm.cu`: the two grouped expert GEMMs on tensor cores.
//!
//! Both visit rows in `moe_align` order: tile `i` holds `block_m` pair ids of expert
//! `expert_ids[i]`, so each block multiplies by one expert's weights. The tile shape comes from
//! the [`MoePlan`] (see `tuning.rs`); `moe_align` must have been run with the plan's `block_m`.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_align, check_len, dim_i32, mul, Kernels, MoePlan, Result};

/// Vector loads are 16 bytes: K a multiple of 8 bf16, matrices 16-byte aligned.
const VECTOR_BYTES: u64 = 16;
const K_MULTIPLE: usize = 8;

/// Shape of one MoE layer's expert GEMMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDims {
    pub plan: MoePlan,
    /// Model width H (K of gemm1, N of gemm2).
    pub hidden: usize,
    /// Expert width I = `moe_intermediate_size` (N of gemm1, K of gemm2).
    pub inter: usize,
}

impl GemmDims {
    /// hidden and inter positive multiples of 8; every buffer size within the kernel's ints.
    pub fn check(&self, op: &'static str) -> Result<()> {
        for (name, v) in [("hidden", self.hidden), ("inter", self.inter)] {
            if v == 0 || v % K_MULTIPLE != 0 {
                bail!(
                    op,
                    "{name} = {v} must be a positive multiple of {K_MULTIPLE}"
                );
            }
        }
        let p = &self.plan;
        dim_i32(op, "n_pairs", p.n_pairs)?;
        dim_i32(op, "n_experts", p.n_experts)?;
        dim_i32(op, "2 * inter", mul(op, 2, self.inter)?)?;
        dim_i32(op, "hidden", self.hidden)?;
        // Row offsets are 64-bit in the kernel; only the element counts must fit usize.
        self.w_gate_up_len(op)?;
        self.w_down_len(op)?;
        mul(op, p.n_pairs, self.hidden.max(self.inter))?;
        if p.n_tiles > i32::MAX as usize {
            bail!(op, "{} tiles exceed grid.x", p.n_tiles);
        }
        Ok(())
    }

    fn w_gate_up_len(&self, op: &'static str) -> Result<usize> {
        mul(
            op,
            mul(op, self.plan.n_experts, 2 * self.inter)?,
            self.hidden,
        )
    }

    fn w_down_len(&self, op: &'static str) -> Result<usize> {
        mul(op, mul(op, self.plan.n_experts, self.hidden)?, self.inter)
    }

    /// Buffer lengths of gemm1: x `[n_tokens, hidden]`, w_gate_up `[E, 2I, H]`, act `[n_pairs, I]`.
    pub fn check_swiglu_buffers(&self, x: usize, w_gate_up: usize, act: usize) -> Result<()> {
        const OP: &str = "moe_gemm_swiglu";
        self.check(OP)?;
        check_len(OP, "x", x, mul(OP, self.plan.n_tokens, self.hidden)?)?;
        check_len(OP, "w_gate_up", w_gate_up, self.w_gate_up_len(OP)?)?;
        check_len(OP, "act", act, mul(OP, self.plan.n_pairs, self.inter)?)
    }

    /// Buffer lengths of gemm2: act `[n_pairs, I]`, w_down `[E, H, I]`, topk_weights `[n_pairs]`,
    /// out `[n_pairs, H]`.
    pub fn check_down_buffers(
        &self,
        act: usize,
        w_down: usize,
        weights: usize,
        out: usize,
    ) -> Result<()> {
        const OP: &str = "moe_gemm_down";
        self.check(OP)?;
        check_len(OP, "act", act, mul(OP, self.plan.n_pairs, self.inter)?)?;
        check_len(OP, "w_down", w_down, self.w_down_len(OP)?)?;
        check_len(OP, "topk_weights", weights, self.plan.n_pairs)?;
        check_len(OP, "out", out, mul(OP, self.plan.n_pairs, self.hidden)?)
    }

    /// Lengths of the moe_align outputs for this plan.
    pub fn check_rows(
        &self,
        op: &'static str,
        sorted: usize,
        experts: usize,
        n_padded: usize,
    ) -> Result<()> {
        check_len(op, "sorted_ids", sorted, self.plan.capacity)?;
        check_len(op, "expert_ids", experts, self.plan.n_tiles)?;
        check_len(op, "n_padded", n_padded, 1)
    }

    /// grid.x = tiles (those past `n_padded` exit at once), grid.y = column blocks of `n_cols`.
    pub fn launch_config(&self, op: &'static str, n_cols: usize) -> Result<LaunchConfig> {
        let tile = self.plan.tile;
        let col_blocks = n_cols.div_ceil(tile.block_n as usize);
        if col_blocks > 65_535 {
            bail!(
                op,
                "{n_cols} columns need {col_blocks} blocks along grid.y (max 65535)"
            );
        }
        Ok(LaunchConfig {
            grid_dim: (self.plan.n_tiles as u32, col_blocks as u32, 1),
            block_dim: (tile.threads(), 1, 1),
            shared_mem_bytes: 0,
        })
    }
}

/// The routing/align buffers both GEMMs read.
pub struct AlignedRows<'a, 'b> {
    /// `[capacity]` u32 from moe_align.
    pub sorted_ids: &'a CudaView<'b, u32>,
    /// `[n_tiles]` u32 from moe_align.
    pub expert_ids: &'a CudaView<'b, u32>,
    /// `[1]` u32 from moe_align.
    pub n_padded: &'a CudaView<'b, u32>,
}

impl AlignedRows<'_, '_> {
    fn check(&self, op: &'static str, dims: &GemmDims) -> Result<()> {
        dims.check_rows(
            op,
            self.sorted_ids.len(),
            self.expert_ids.len(),
            self.n_padded.len(),
        )
    }
}

impl Kernels {
    /// gemm1 + SwiGLU: `act[p] = silu(x[t] . W_gate[e]^T) * (x[t] . W_up[e]^T)` for every routed
    /// pair p = t * top_k + j of expert e, bf16 in, f32 accumulate, one bf16 rounding.
    ///
    /// - `x` `[n_tokens, hidden]` bf16
    /// - `w_gate_up` `[n_experts, 2 * inter, hidden]` bf16, gate rows first then up rows
    /// - `rows`: moe_align output for this plan
    /// - `act` `[n_pairs, inter]` bf16 out (row p = pair p; rows of padding are not written)
    ///
    /// Errors: [`crate::Error::InvalidArgument`] (hidden/inter not multiples of 8, sizes),
    /// [`crate::Error::ShapeMismatch`], [`crate::Error::Misaligned`] (16-byte loads), driver.
    pub fn moe_gemm_swiglu(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, half::bf16>,
        w_gate_up: &CudaView<'_, half::bf16>,
        rows: &AlignedRows<'_, '_>,
        act: &mut CudaViewMut<'_, half::bf16>,
        dims: GemmDims,
    ) -> Result<()> {
        const OP: &str = "moe_gemm_swiglu";
        self.check_stream(OP, stream)?;
        dims.check_swiglu_buffers(x.len(), w_gate_up.len(), act.len())?;
        rows.check(OP, &dims)?;
        let plan = dims.plan;
        check_align(OP, "x", x, stream, VECTOR_BYTES)?;
        check_align(OP, "w_gate_up", w_gate_up, stream, VECTOR_BYTES)?;
        if plan.n_tiles == 0 {
            return Ok(());
        }
        let cfg = dims.launch_config(OP, dims.inter)?;
        let n_pairs = dim_i32(OP, "n_pairs", plan.n_pairs)?;
        let top_k = dim_i32(OP, "top_k", plan.top_k)?;
        let n_experts = dim_i32(OP, "n_experts", plan.n_experts)?;
        let inter = dim_i32(OP, "inter", dims.inter)?;
        let hidden = dim_i32(OP, "hidden", dims.hidden)?;
        let func = self.function(plan.tile.swiglu_kernel)?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(x)
            .arg(w_gate_up)
            .arg(rows.sorted_ids)
            .arg(rows.expert_ids)
            .arg(rows.n_padded)
            .arg(act)
            .arg(&n_pairs)
            .arg(&top_k)
            .arg(&n_experts)
            .arg(&inter)
            .arg(&hidden);
        // SAFETY: arguments match moe_gemm_swiglu_bf16_<tile>'s signature (the name comes from
        // the same TileConfig as the grid); x is [n_tokens, hidden], w_gate_up [E, 2I, H], act
        // [n_pairs, I], sorted_ids [capacity], expert_ids [capacity / block_m] (checked above);
        // hidden % 8 == 0 and 16-byte aligned x / w make the uint4 loads in bounds and aligned;
        // the kernel skips sentinel rows (>= n_pairs), tiles past n_padded and expert ids >= E,
        // and bounds-checks every column against inter.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// gemm2: `out[p] = topk_weights[p] * (act[p] . W_down[e]^T)`, bf16 in, f32 accumulate.
    ///
    /// - `act` `[n_pairs, inter]` bf16 (moe_gemm_swiglu output)
    /// - `w_down` `[n_experts, hidden, inter]` bf16
    /// - `topk_weights` `[n_pairs]` f32 (moe_route output, flattened)
    /// - `out` `[n_pairs, hidden]` bf16 out, summed per token by [`Kernels::moe_reduce`]
    ///
    /// Errors as [`Kernels::moe_gemm_swiglu`].
    #[allow(clippy::too_many_arguments)]
    pub fn moe_gemm_down(
        &self,
        stream: &CudaStream,
        act: &CudaView<'_, half::bf16>,
        w_down: &CudaView<'_, half::bf16>,
        rows: &AlignedRows<'_, '_>,
        topk_weights: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, half::bf16>,
        dims: GemmDims,
    ) -> Result<()> {
        const OP: &str = "moe_gemm_down";
        self.check_stream(OP, stream)?;
        dims.check_down_buffers(act.len(), w_down.len(), topk_weights.len(), out.len())?;
        rows.check(OP, &dims)?;
        let plan = dims.plan;
        check_align(OP, "act", act, stream, VECTOR_BYTES)?;
        check_align(OP, "w_down", w_down, stream, VECTOR_BYTES)?;
        if plan.n_tiles == 0 {
            return Ok(());
        }
        let cfg = dims.launch_config(OP, dims.hidden)?;
        let n_pairs = dim_i32(OP, "n_pairs", plan.n_pairs)?;
        let n_experts = dim_i32(OP, "n_experts", plan.n_experts)?;
        let hidden = dim_i32(OP, "hidden", dims.hidden)?;
        let inter = dim_i32(OP, "inter", dims.inter)?;
        let func = self.function(plan.tile.down_kernel)?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(act)
            .arg(w_down)
            .arg(rows.sorted_ids)
            .arg(rows.expert_ids)
            .arg(rows.n_padded)
            .arg(topk_weights)
            .arg(out)
            .arg(&n_pairs)
            .arg(&n_experts)
            .arg(&hidden)
            .arg(&inter);
        // SAFETY: arguments match moe_gemm_down_bf16_<tile>'s signature; act is [n_pairs, I],
        // w_down [E, H, I], topk_weights [n_pairs], out [n_pairs, H], align buffers sized by the
        // plan (checked above); inter % 8 == 0 and 16-byte aligned act / w make the uint4 loads
        // in bounds and aligned; sentinel rows, tiles past n_padded and bad expert ids are
        // skipped, and columns are bounds-checked against hidden.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_and_grid() {
        let plan = MoePlan::new(33, 6, 64).unwrap();
        let dims = GemmDims {
            plan,
            hidden: 2560,
            inter: 1536,
        };
        assert!(dims.check("t").is_ok());
        let cfg = dims.launch_config("t", dims.inter).unwrap();
        assert_eq!(cfg.grid_dim, (plan.n_tiles as u32, 24, 1));
        assert_eq!(cfg.block_dim.0, 128);
        assert!(GemmDims {
            hidden: 2561,
            ..dims
        }
        .check("t")
        .is_err());
        assert!(GemmDims { inter: 0, ..dims }.check("t").is_err());
    }
}

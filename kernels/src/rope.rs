//! Launchers for `cuda/rope.cu`: interleaved (GPT-J) rotary embedding, 1-D and ERNIE-VL 3-D.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, grid_stride_blocks, mul, Kernels, Result};

const THREADS: u32 = 256;

/// Shape of the rotated tensor: `[n_tokens, n_heads, head_dim]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeDims {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    /// `rope_theta` (500000 for ERNIE 4.5).
    pub theta: f32,
}

impl RopeDims {
    /// Checks the dims against x's length; returns the number of rotary pairs.
    pub(crate) fn check(&self, op: &'static str, x_len: usize) -> Result<usize> {
        if self.head_dim == 0 || self.head_dim % 2 != 0 {
            bail!(op, "head_dim = {} must be positive and even", self.head_dim);
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            bail!(op, "theta = {} must be finite and positive", self.theta);
        }
        let n = mul(op, mul(op, self.n_tokens, self.n_heads)?, self.head_dim)?;
        check_len(op, "x", x_len, n)?;
        dim_i32(op, "n_tokens", self.n_tokens)?;
        dim_i32(op, "n_heads", self.n_heads)?;
        dim_i32(op, "head_dim", self.head_dim)?;
        Ok(n / 2)
    }

    /// Grid-stride launch over `n_pairs` rotary pairs.
    pub(crate) fn launch_config(n_pairs: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (grid_stride_blocks(n_pairs, THREADS), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

impl Kernels {
    /// 1-D RoPE in place, pairs (2m, 2m+1), angle `pos * theta^(-2m/head_dim)` in f64.
    ///
    /// - `x` `[n_tokens, n_heads, head_dim]` bf16 (q or k), rotated in place
    /// - `positions` `[n_tokens]` u32
    ///
    /// Errors: [`crate::Error::InvalidArgument`] (odd head_dim, bad theta, sizes),
    /// [`crate::Error::ShapeMismatch`], driver errors.
    pub fn rope(
        &self,
        stream: &CudaStream,
        x: &mut CudaViewMut<'_, half::bf16>,
        positions: &CudaView<'_, u32>,
        dims: RopeDims,
    ) -> Result<()> {
        const OP: &str = "rope";
        self.check_stream(OP, stream)?;
        let n_pairs = dims.check(OP, x.len())?;
        check_len(OP, "positions", positions.len(), dims.n_tokens)?;
        if n_pairs == 0 {
            return Ok(());
        }
        let (t, h, d) = (
            dims.n_tokens as i32,
            dims.n_heads as i32,
            dims.head_dim as i32,
        );
        let func = self.function("rope_bf16")?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(x)
            .arg(positions)
            .arg(&t)
            .arg(&h)
            .arg(&d)
            .arg(&dims.theta);
        // SAFETY: arguments match rope_bf16; x is [n_tokens, n_heads, head_dim] with even
        // head_dim and positions [n_tokens] (checked above, and the three dims fit i32 so the
        // casts are exact); the grid-stride loop is bounded by n_tokens * n_heads * head_dim / 2.
        unsafe { launch.launch(RopeDims::launch_config(n_pairs)) }?;
        Ok(())
    }

    /// ERNIE-4.5-VL 3-D RoPE in place (spec §3.5): with P = head_dim / 2 pairs and
    /// F = `n_t_pairs` (`freq_allocation`, 20 for the 28B), pair m < P - F rotates by h (m even) or
    /// w (m odd), pair m >= P - F by t. Text tokens have t = h = w, which equals [`Kernels::rope`].
    ///
    /// - `x` `[n_tokens, n_heads, head_dim]` bf16, rotated in place
    /// - `positions_thw` `[n_tokens, 3]` u32, (t, h, w) per token
    ///
    /// Errors as [`Kernels::rope`], plus `n_t_pairs > head_dim / 2`.
    pub fn rope_3d(
        &self,
        stream: &CudaStream,
        x: &mut CudaViewMut<'_, half::bf16>,
        positions_thw: &CudaView<'_, u32>,
        dims: RopeDims,
        n_t_pairs: usize,
    ) -> Result<()> {
        const OP: &str = "rope_3d";
        self.check_stream(OP, stream)?;
        let n_pairs = dims.check(OP, x.len())?;
        if n_t_pairs > dims.head_dim / 2 {
            bail!(
                OP,
                "n_t_pairs = {n_t_pairs} exceeds head_dim / 2 = {}",
                dims.head_dim / 2
            );
        }
        check_len(
            OP,
            "positions_thw",
            positions_thw.len(),
            mul(OP, dims.n_tokens, 3)?,
        )?;
        if n_pairs == 0 {
            return Ok(());
        }
        let (t, h, d) = (
            dims.n_tokens as i32,
            dims.n_heads as i32,
            dims.head_dim as i32,
        );
        let f = n_t_pairs as i32;
        let func = self.function("rope_3d_bf16")?;
        let mut launch = stream.launch_builder(func);
        launch
            .arg(x)
            .arg(positions_thw)
            .arg(&t)
            .arg(&h)
            .arg(&d)
            .arg(&dims.theta)
            .arg(&f);
        // SAFETY: arguments match rope_3d_bf16; x is [n_tokens, n_heads, head_dim] with even
        // head_dim, positions_thw [n_tokens, 3], n_t_pairs <= head_dim / 2 (checked above, so the
        // i32 casts are exact); the grid-stride loop is bounded by the pair count.
        unsafe { launch.launch(RopeDims::launch_config(n_pairs)) }?;
        Ok(())
    }
}

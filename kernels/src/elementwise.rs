//! Launchers for `cuda/elementwise.cu`: residual adds, SwiGLU gates and the bf16 -> f32 widening.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{check_len, dim_i32, grid_stride_blocks, mul, Kernels, Result};

const THREADS: u32 = 256;

fn config(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_stride_blocks(n, THREADS), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernels take the element count as a 64-bit int.
fn len_i64(n: usize) -> i64 {
    // usize -> i64 cannot fail for any real allocation (< 2^63 bytes).
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Kernels {
    /// `out = a + b`, all `[n]` bf16, sum in f32.
    /// Errors: [`crate::Error::ShapeMismatch`] when lengths differ, driver errors.
    pub fn add(
        &self,
        stream: &CudaStream,
        a: &CudaView<'_, half::bf16>,
        b: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, half::bf16>,
    ) -> Result<()> {
        const OP: &str = "add";
        self.check_stream(OP, stream)?;
        let n = a.len();
        check_len(OP, "b", b.len(), n)?;
        check_len(OP, "out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = len_i64(n);
        let mut launch = stream.launch_builder(self.function("add_bf16")?);
        launch.arg(a).arg(b).arg(out).arg(&n64);
        // SAFETY: arguments match add_bf16; a, b and out all hold n elements (checked above) and
        // the grid-stride loop stops at n.
        unsafe { launch.launch(config(n)) }?;
        Ok(())
    }

    /// `acc += b` (the residual stream update), `[n]` bf16, sum in f32.
    /// Errors: [`crate::Error::ShapeMismatch`], driver errors.
    pub fn add_inplace(
        &self,
        stream: &CudaStream,
        acc: &mut CudaViewMut<'_, half::bf16>,
        b: &CudaView<'_, half::bf16>,
    ) -> Result<()> {
        const OP: &str = "add_inplace";
        self.check_stream(OP, stream)?;
        let n = acc.len();
        check_len(OP, "b", b.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = len_i64(n);
        let mut launch = stream.launch_builder(self.function("add_inplace_bf16")?);
        launch.arg(acc).arg(b).arg(&n64);
        // SAFETY: arguments match add_inplace_bf16; acc and b hold n elements (checked above);
        // each element is read and written by one thread only.
        unsafe { launch.launch(config(n)) }?;
        Ok(())
    }

    /// `out = silu(gate) * up`, all `[n]` bf16, math in f32.
    /// Errors: [`crate::Error::ShapeMismatch`], driver errors.
    pub fn silu_mul(
        &self,
        stream: &CudaStream,
        gate: &CudaView<'_, half::bf16>,
        up: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, half::bf16>,
    ) -> Result<()> {
        const OP: &str = "silu_mul";
        self.check_stream(OP, stream)?;
        let n = gate.len();
        check_len(OP, "up", up.len(), n)?;
        check_len(OP, "out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = len_i64(n);
        let mut launch = stream.launch_builder(self.function("silu_mul_bf16")?);
        launch.arg(gate).arg(up).arg(out).arg(&n64);
        // SAFETY: arguments match silu_mul_bf16; gate, up and out hold n elements (checked above).
        unsafe { launch.launch(config(n)) }?;
        Ok(())
    }

    /// SwiGLU on a stacked projection: `out[t][j] = silu(gate_up[t][j]) * gate_up[t][inter + j]`.
    ///
    /// - `gate_up` `[n_rows, 2 * inter]` bf16 (gate columns first), `out` `[n_rows, inter]` bf16
    ///
    /// Errors: [`crate::Error::ShapeMismatch`], [`crate::Error::InvalidArgument`], driver errors.
    pub fn silu_mul_fused(
        &self,
        stream: &CudaStream,
        gate_up: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, half::bf16>,
        n_rows: usize,
        inter: usize,
    ) -> Result<()> {
        const OP: &str = "silu_mul_fused";
        self.check_stream(OP, stream)?;
        let n = mul(OP, n_rows, inter)?;
        check_len(OP, "gate_up", gate_up.len(), mul(OP, n, 2)?)?;
        check_len(OP, "out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let rows = dim_i32(OP, "n_rows", n_rows)?;
        let i = dim_i32(OP, "inter", inter)?;
        let mut launch = stream.launch_builder(self.function("silu_mul_fused_bf16")?);
        launch.arg(gate_up).arg(out).arg(&rows).arg(&i);
        // SAFETY: arguments match silu_mul_fused_bf16; gate_up is [n_rows, 2 * inter] and out
        // [n_rows, inter] (checked above); the grid-stride loop stops at n_rows * inter.
        unsafe { launch.launch(config(n)) }?;
        Ok(())
    }

    /// `out = f32(x)`, all `[n]`: exact widening (the MoE router multiplies in f32).
    /// Errors: [`crate::Error::ShapeMismatch`] when lengths differ, driver errors.
    pub fn to_f32(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        const OP: &str = "to_f32";
        self.check_stream(OP, stream)?;
        let n = x.len();
        check_len(OP, "out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = len_i64(n);
        let mut launch = stream.launch_builder(self.function("to_f32_bf16")?);
        launch.arg(x).arg(out).arg(&n64);
        // SAFETY: arguments match to_f32_bf16; x and out hold n elements (checked above) and the
        // grid-stride loop stops at n.
        unsafe { launch.launch(config(n)) }?;
        Ok(())
    }
}

//! Launcher for `cuda/rmsnorm.cu`.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "rms_norm";
const THREADS: u32 = 256;

/// Shape of one RMSNorm call: `n_rows` rows of `hidden`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormDims {
    pub n_rows: usize,
    pub hidden: usize,
    /// `rms_norm_eps` (1e-5 for ERNIE 4.5).
    pub eps: f32,
}

impl NormDims {
    /// hidden > 0, eps finite and >= 0, x / out `[n_rows, hidden]`, w `[hidden]`.
    pub fn check(&self, x: usize, w: usize, out: usize) -> Result<()> {
        if self.hidden == 0 {
            bail!(OP, "hidden must be positive");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!(OP, "eps = {} must be finite and >= 0", self.eps);
        }
        let n = mul(OP, self.n_rows, self.hidden)?;
        check_len(OP, "x", x, n)?;
        check_len(OP, "w", w, self.hidden)?;
        check_len(OP, "out", out, n)?;
        dim_i32(OP, "n_rows", self.n_rows)?;
        dim_i32(OP, "hidden", self.hidden).map(|_| ())
    }

    /// One block per row; a multiple of 32 threads, as block_sum needs.
    pub fn launch_config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.n_rows.max(1) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

impl Kernels {
    /// RMSNorm over the last dimension (spec §2.4): `out = bf16(bf16(x / rms(x)) * w)` with
    /// `rms = sqrt(mean(x^2) + eps)` in f32.
    ///
    /// - `x` `[n_rows, hidden]` bf16, `w` `[hidden]` bf16, `out` `[n_rows, hidden]` bf16
    ///
    /// Errors: [`crate::Error::ShapeMismatch`], [`crate::Error::InvalidArgument`] (hidden 0,
    /// sizes beyond the kernel's ints, eps not finite and >= 0), driver errors.
    pub fn rms_norm(
        &self,
        stream: &CudaStream,
        x: &CudaView<'_, half::bf16>,
        w: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, half::bf16>,
        dims: NormDims,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        dims.check(x.len(), w.len(), out.len())?;
        if dims.n_rows == 0 {
            return Ok(());
        }
        let rows = dim_i32(OP, "n_rows", dims.n_rows)?;
        let h = dim_i32(OP, "hidden", dims.hidden)?;
        let mut launch = stream.launch_builder(self.function("rmsnorm_bf16")?);
        launch
            .arg(x)
            .arg(w)
            .arg(out)
            .arg(&rows)
            .arg(&h)
            .arg(&dims.eps);
        // SAFETY: arguments match rmsnorm_bf16; x and out hold n_rows * hidden elements, w hidden
        // (checked above); one block per row with a multiple-of-32 block size, as block_sum needs.
        unsafe { launch.launch(dims.launch_config()) }?;
        Ok(())
    }
}

//! Launcher for `cuda/embedding.cu`.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "embedding";
const THREADS: u32 = 256;

impl Kernels {
    /// Row gather: `out[t] = table[ids[t]]`.
    ///
    /// - `table` `[vocab, hidden]` bf16, `ids` `[n_tokens]` u32, `out` `[n_tokens, hidden]` bf16
    ///
    /// Ids are device data and cannot be checked here: validate them on the host before upload.
    /// An id `>= vocab` yields a zero row rather than an out-of-bounds read.
    /// Errors: [`crate::Error::ShapeMismatch`], [`crate::Error::InvalidArgument`], driver errors.
    pub fn embedding(
        &self,
        stream: &CudaStream,
        table: &CudaView<'_, half::bf16>,
        ids: &CudaView<'_, u32>,
        out: &mut CudaViewMut<'_, half::bf16>,
        vocab: usize,
        hidden: usize,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        if hidden == 0 || vocab == 0 {
            bail!(OP, "vocab ({vocab}) and hidden ({hidden}) must be positive");
        }
        let n_tokens = ids.len();
        check_len(OP, "table", table.len(), mul(OP, vocab, hidden)?)?;
        check_len(OP, "out", out.len(), mul(OP, n_tokens, hidden)?)?;
        if n_tokens == 0 {
            return Ok(());
        }
        let t = dim_i32(OP, "n_tokens", n_tokens)?;
        let h = dim_i32(OP, "hidden", hidden)?;
        let v = dim_i32(OP, "vocab", vocab)?;
        let cfg = LaunchConfig {
            grid_dim: (t as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.function("embedding_bf16")?;
        let mut launch = stream.launch_builder(func);
        launch.arg(table).arg(ids).arg(out).arg(&t).arg(&h).arg(&v);
        // SAFETY: arguments match embedding_bf16; table is [vocab, hidden], ids [n_tokens], out
        // [n_tokens, hidden] (checked above); the kernel compares every id with vocab before
        // reading the table.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

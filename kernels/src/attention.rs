//! Launcher for `cuda/attention.cu`: GQA attention of the newest queries over the KV cache.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::{bail, check_len, dim_i32, mul, Kernels, Result};

const OP: &str = "attention";

/// Largest head_dim the kernel holds in registers (8 per lane).
pub const MAX_HEAD_DIM: usize = 256;

/// Shape of one attention call. The queries are the LAST `n_queries` positions of a sequence
/// whose first `kv_len` positions are in the cache (the new keys are appended before attending).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub n_queries: usize,
    pub kv_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Usually `head_dim^-0.5`.
    pub scale: f32,
    /// Causal mask (text); false for bidirectional attention (e.g. within one vision frame).
    pub causal: bool,
}

impl AttentionDims {
    /// Decode-shaped calls (a few queries over a long cache) split the keys over 8 warps;
    /// prefill uses 4 warps per (query, head) block and relies on many blocks instead.
    pub fn should_use_decode_kernel(&self) -> bool {
        self.n_queries <= 4
    }

    /// The kernel name and its warps per block (the kernel's WARPS template argument).
    pub(crate) fn kernel(&self) -> (&'static str, u32) {
        if self.should_use_decode_kernel() {
            ("attention_decode_bf16", 8)
        } else {
            ("attention_prefill_bf16", 4)
        }
    }

    /// Grid (n_queries, n_heads), one block per (query, head).
    pub fn launch_config(&self) -> LaunchConfig {
        let (_, warps) = self.kernel();
        LaunchConfig {
            grid_dim: (self.n_queries.max(1) as u32, self.n_heads as u32, 1),
            block_dim: (warps * 32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Checks the dims against the buffer lengths; the caches may be longer than `kv_len`
    /// (they are allocated for max_seq) but must be whole rows.
    pub fn check(&self, q: usize, k_cache: usize, v_cache: usize, out: usize) -> Result<()> {
        if self.n_kv_heads == 0 || self.n_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            bail!(
                OP,
                "n_heads = {} must be a positive multiple of n_kv_heads = {}",
                self.n_heads,
                self.n_kv_heads
            );
        }
        if self.head_dim == 0 || self.head_dim > MAX_HEAD_DIM {
            bail!(
                OP,
                "head_dim = {} must be in 1..={MAX_HEAD_DIM}",
                self.head_dim
            );
        }
        if self.n_queries > 0 && self.kv_len < self.n_queries {
            bail!(
                OP,
                "kv_len = {} < n_queries = {}: append the new keys first",
                self.kv_len,
                self.n_queries
            );
        }
        if !self.scale.is_finite() {
            bail!(OP, "scale = {} must be finite", self.scale);
        }
        if self.n_heads > 65_535 {
            bail!(OP, "n_heads = {} exceeds grid.y", self.n_heads);
        }
        let q_len = mul(OP, mul(OP, self.n_queries, self.n_heads)?, self.head_dim)?;
        check_len(OP, "q", q, q_len)?;
        check_len(OP, "out", out, q_len)?;
        let row = self.n_kv_heads * self.head_dim;
        for (arg, len) in [("k_cache", k_cache), ("v_cache", v_cache)] {
            if len % row != 0 || len / row < self.kv_len {
                bail!(
                    OP,
                    "{arg} has {len} elements: need whole [.., {}, {}] rows, at least {}",
                    self.n_kv_heads,
                    self.head_dim,
                    self.kv_len
                );
            }
        }
        dim_i32(OP, "n_queries", self.n_queries)?;
        dim_i32(OP, "kv_len", self.kv_len)?;
        Ok(())
    }
}

impl Kernels {
    /// `out = softmax(q k^T * scale + mask) v` per head, head h reading kv head
    /// `h / (n_heads / n_kv_heads)`; scores, softmax and accumulation in f32.
    ///
    /// - `q` `[n_queries, n_heads, head_dim]` bf16 (after RoPE)
    /// - `k_cache`, `v_cache` `[max_seq, n_kv_heads, head_dim]` bf16, rows `0..kv_len` valid
    /// - `out` `[n_queries, n_heads, head_dim]` bf16
    ///
    /// Query i sits at position `kv_len - n_queries + i`; with `causal` it sees keys up to and
    /// including that position. Errors: [`crate::Error::InvalidArgument`] (GQA ratio, head_dim >
    /// 256, kv_len < n_queries, ...), [`crate::Error::ShapeMismatch`], driver errors.
    pub fn attention(
        &self,
        stream: &CudaStream,
        q: &CudaView<'_, half::bf16>,
        k_cache: &CudaView<'_, half::bf16>,
        v_cache: &CudaView<'_, half::bf16>,
        out: &mut CudaViewMut<'_, half::bf16>,
        dims: AttentionDims,
    ) -> Result<()> {
        self.check_stream(OP, stream)?;
        dims.check(q.len(), k_cache.len(), v_cache.len(), out.len())?;
        if dims.n_queries == 0 {
            return Ok(());
        }
        let (kernel, _) = dims.kernel();
        let cfg = dims.launch_config();
        let n_queries = dim_i32(OP, "n_queries", dims.n_queries)?;
        let kv_len = dim_i32(OP, "kv_len", dims.kv_len)?;
        let n_heads = dim_i32(OP, "n_heads", dims.n_heads)?;
        let n_kv_heads = dim_i32(OP, "n_kv_heads", dims.n_kv_heads)?;
        let head_dim = dim_i32(OP, "head_dim", dims.head_dim)?;
        let causal = i32::from(dims.causal);
        let mut launch = stream.launch_builder(self.function(kernel)?);
        launch
            .arg(q)
            .arg(k_cache)
            .arg(v_cache)
            .arg(out)
            .arg(&n_queries)
            .arg(&kv_len)
            .arg(&n_heads)
            .arg(&n_kv_heads)
            .arg(&head_dim)
            .arg(&dims.scale)
            .arg(&causal);
        // SAFETY: arguments match attention_{decode,prefill}_bf16 (same signature); q and out are
        // [n_queries, n_heads, head_dim], the caches hold at least kv_len whole rows, head_dim <=
        // 256 fits the per-lane registers and shared scratch, n_heads is a multiple of n_kv_heads,
        // kv_len >= n_queries keeps every causal window non-empty (all checked above); the block
        // size matches the kernel's WARPS template argument.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_checked() {
        let d = AttentionDims {
            n_queries: 1,
            kv_len: 10,
            n_heads: 20,
            n_kv_heads: 4,
            head_dim: 128,
            scale: 0.088,
            causal: true,
        };
        let q = 20 * 128;
        let cache = 64 * 4 * 128;
        assert!(d.check(q, cache, cache, q).is_ok());
        assert!(d.should_use_decode_kernel());
        assert!(AttentionDims { n_kv_heads: 3, ..d }
            .check(q, cache, cache, q)
            .is_err());
        assert!(AttentionDims { kv_len: 65, ..d }
            .check(q, cache, cache, q)
            .is_err());
        assert!(AttentionDims { head_dim: 512, ..d }
            .check(q, cache, cache, q)
            .is_err());
        assert!(d.check(q, cache + 1, cache, q).is_err());
    }
}

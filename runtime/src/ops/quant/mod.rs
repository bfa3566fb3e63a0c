//! Weight-only quantisation in ggml's block formats (issue #13): `Q8_0`, `Q4_K`, `Q6_K` weights,
//! `Q8_K` / `Q8_0` activations, bit-compatible with ggml so GGUF files and our own quantised
//! weights share one kernel set.
//!
//! - [`blocks`]: byte layouts, ggml's reference quantizers (bit-exact) and dequantizers;
//! - [`dot`]: block dot products with scalar twins, SIMD kernels picked at run time ([`Path`]);
//! - [`QWeight`] + [`qmatmul_xwt`]: a quantised `[n, k]` weight matrix and `y = x·Wᵀ` over it, the
//!   activation rows quantised per block first (as llama.cpp's `ggml_compute_forward_mul_mat`
//!   does with `vec_dot_type`); [`qgemv_batch`]: many such products (decode: every active
//!   expert) in one parallel pass;
//! - [`igemm`]: prefill as an integer GEMM (`vpdpbusd` register tiles over unpacked weight panels
//!   and interleaved quantised activations), [`qmatmul_int8`]; `panel.rs`: the dequantised f32
//!   fallback for CPUs without AVX-512 VNNI.
//!
//! Goldens: `tests/reference/make_quant_reference.py` runs ggml's own quantize / dequantize /
//! vec_dot; `tests/quant_reference.rs` checks these against them.

mod batch;
pub mod blocks;
pub mod dot;
pub mod igemm;
#[cfg(target_arch = "x86_64")]
mod igemm_x86;
mod matmul;
mod panel;
mod search;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::sync::Arc;

use memmap2::Mmap;

pub use blocks::{
    dequantize_row_q4_k, dequantize_row_q6_k, dequantize_row_q8_0, dequantize_row_q8_k, quantize_row_q4_k, quantize_row_q6_k,
    quantize_row_q8_0, quantize_row_q8_k, BlockQ8K, Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, Q8_K_BYTES, QK8_0, QK_K,
};
pub use dot::{dot_q4_k_q8_k_scalar, dot_q6_k_q8_k_scalar, dot_q8_0_q8_0_scalar, Path, Q8_0_SUM_ULPS};
pub use batch::{qgemv_batch, qgemv_batch_on, QGemvJob};
pub use matmul::{qmatmul_xwt, qmatmul_xwt_on, qmatmul_xwt_slow, qmatmul_xwt_with, QScratch};
pub use igemm::{qmatmul_int8, qmatmul_int8_on, IKernel};
pub use panel::{qmatmul_dequant, DEQUANT_MIN_ROWS, PANEL_ROWS};

use crate::gguf::Gguf;
use crate::tensor::{Elems, Tensor};
use crate::{Error, Result};

/// A quantised weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// 8-bit, 32-element blocks, one f16 scale (8.5 bits per weight).
    Q8_0,
    /// 4-bit, 256-element super-blocks of 8 × 32 with 6-bit scales and mins (4.5 bpw).
    Q4K,
    /// 6-bit, 256-element super-blocks of 16 × 16 with 8-bit scales (6.5625 bpw).
    Q6K,
}

impl QType {
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            QType::Q8_0 => QK8_0,
            QType::Q4K | QType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::Q8_0 => Q8_0_BYTES,
            QType::Q4K => Q4_K_BYTES,
            QType::Q6K => Q6_K_BYTES,
        }
    }

    /// ggml's `enum ggml_type` value (GGUF tensor type): 8, 12, 14.
    pub fn ggml_type(self) -> u32 {
        match self {
            QType::Q8_0 => 8,
            QType::Q4K => 12,
            QType::Q6K => 14,
        }
    }

    /// The inverse of [`QType::ggml_type`]; `None` for any other ggml type.
    pub fn from_ggml_type(t: u32) -> Option<QType> {
        match t {
            8 => Some(QType::Q8_0),
            12 => Some(QType::Q4K),
            14 => Some(QType::Q6K),
            _ => None,
        }
    }

    /// Bytes of one row of `k` elements. Errors unless `k` is a multiple of the block size.
    pub fn row_bytes(self, k: usize) -> Result<usize> {
        if k % self.block_elems() != 0 {
            return Err(Error::ShapeMismatch {
                op: "quantized row",
                expected: format!("a multiple of {} columns for {self}", self.block_elems()),
                got: format!("{k}"),
            });
        }
        Ok(k / self.block_elems() * self.block_bytes())
    }

    /// Quantises `x` (`[k]` f32, `k` a multiple of the block size) into `out` (`row_bytes(k)`)
    /// with ggml's reference quantizer.
    pub fn quantize_row(self, x: &[f32], out: &mut [u8]) {
        match self {
            QType::Q8_0 => quantize_row_q8_0(x, out),
            QType::Q4K => quantize_row_q4_k(x, out),
            QType::Q6K => quantize_row_q6_k(x, out),
        }
    }

    /// Dequantises one row (`row_bytes(k)` bytes) into `out` (`[k]` f32).
    pub fn dequantize_row(self, x: &[u8], out: &mut [f32]) {
        match self {
            QType::Q8_0 => dequantize_row_q8_0(x, out),
            QType::Q4K => dequantize_row_q4_k(x, out),
            QType::Q6K => dequantize_row_q6_k(x, out),
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::Q8_0 => "Q8_0",
            QType::Q4K => "Q4_K",
            QType::Q6K => "Q6_K",
        })
    }
}

#[derive(Clone)]
enum QBytes {
    Owned(Arc<Vec<u8>>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize },
}

/// A quantised weight matrix `[rows, cols]` (PyTorch `Linear` layout `[out, in]`): `rows` rows of
/// `cols / block_elems` blocks each, row-major, in ggml's byte layout (a GGUF tensor's bytes as
/// they are in the file). Immutable and cheap to clone.
#[derive(Clone)]
pub struct QWeight {
    qtype: QType,
    rows: usize,
    cols: usize,
    data: QBytes,
}

impl fmt::Debug for QWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QWeight({}, [{}, {}])", self.qtype, self.rows, self.cols)
    }
}

impl QWeight {
    fn check_len(qtype: QType, rows: usize, cols: usize, len: usize) -> Result<()> {
        let want = rows.checked_mul(qtype.row_bytes(cols)?);
        if want != Some(len) {
            return Err(Error::ShapeMismatch {
                op: "QWeight",
                expected: format!("{want:?} bytes for {qtype} [{rows}, {cols}]"),
                got: format!("{len} bytes"),
            });
        }
        Ok(())
    }

    /// Wraps already-quantised bytes (`rows × row_bytes(cols)`). Errors when the length disagrees.
    pub fn from_bytes(qtype: QType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<QWeight> {
        QWeight::check_len(qtype, rows, cols, bytes.len())?;
        Ok(QWeight { qtype, rows, cols, data: QBytes::Owned(Arc::new(bytes)) })
    }

    /// A view of `rows × row_bytes(cols)` bytes at `start` of a mapped file (a GGUF tensor), no
    /// copy. Errors when the range leaves the map or the length disagrees with the shape.
    pub fn from_mmap(qtype: QType, rows: usize, cols: usize, map: Arc<Mmap>, start: usize) -> Result<QWeight> {
        let len = rows.checked_mul(qtype.row_bytes(cols)?).ok_or_else(|| overflow(rows, cols))?;
        if start.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(Error::ShapeMismatch {
                op: "QWeight::from_mmap",
                expected: format!("{len} bytes at {start} within the file"),
                got: format!("file of {} bytes", map.len()),
            });
        }
        Ok(QWeight { qtype, rows, cols, data: QBytes::Mapped { map, start, len } })
    }

    /// A 2-D Q8_0 / Q4_K / Q6_K tensor of a GGUF file as a `[n, k]` view of its mapping, no copy.
    ///
    /// Errors: those of [`Gguf::matrix`], [`Error::TensorDtype`] for another ggml type, and those
    /// of [`QWeight::from_mmap`].
    pub fn from_gguf(file: &Gguf, name: &str) -> Result<QWeight> {
        let m = file.matrix(name)?;
        let qtype = QType::from_ggml_type(m.ggml_type.0).ok_or_else(|| Error::TensorDtype {
            name: name.to_string(),
            expected: "Q8_0, Q4_K, Q6_K".to_string(),
            got: m.ggml_type.to_string(),
        })?;
        QWeight::from_mmap(qtype, m.rows, m.cols, m.map, m.start)
    }

    /// Quantises a 2-D f32/bf16/f16 weight `[rows, cols]` with ggml's reference quantizer, one row
    /// at a time in parallel (memory: the output plus one f32 row per thread).
    ///
    /// Errors: [`Error::ShapeMismatch`] when `w` is not 2-D or `cols` is not a multiple of the
    /// block size.
    pub fn quantize(w: &Tensor, qtype: QType) -> Result<QWeight> {
        use rayon::prelude::*;
        let (rows, cols) = w.dims2()?;
        let rb = qtype.row_bytes(cols)?;
        let mut out = vec![0u8; rows.checked_mul(rb).ok_or_else(|| overflow(rows, cols))?];
        if rb > 0 {
            let elems = w.elems();
            out.par_chunks_mut(rb).enumerate().for_each_init(
                || vec![0.0f32; cols],
                |row, (r, dst)| {
                    let src = r * cols..(r + 1) * cols;
                    match &elems {
                        Elems::F32(s) => row.copy_from_slice(&s[src]),
                        Elems::Bf16(s) => row.iter_mut().zip(&s[src]).for_each(|(o, v)| *o = v.to_f32()),
                        Elems::F16(s) => row.iter_mut().zip(&s[src]).for_each(|(o, v)| *o = v.to_f32()),
                    }
                    qtype.quantize_row(row, dst);
                },
            );
        }
        QWeight::from_bytes(qtype, rows, cols, out)
    }

    /// Quantises row-major f32 `w`: `[rows, cols]`.
    pub fn quantize_f32(w: &[f32], rows: usize, cols: usize, qtype: QType) -> Result<QWeight> {
        QWeight::quantize(&Tensor::from_f32(w.to_vec(), vec![rows, cols])?, qtype)
    }

    /// The block format.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// All bytes, `rows × row_bytes(cols)`.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            QBytes::Owned(v) => v,
            QBytes::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.qtype.block_elems() * self.qtype.block_bytes()
    }

    /// The whole matrix dequantised to f32 `[rows, cols]` (a copy; for tests and slow twins).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        let rb = self.row_bytes();
        if rb > 0 {
            for (src, dst) in self.bytes().chunks_exact(rb).zip(out.chunks_exact_mut(self.cols)) {
                self.qtype.dequantize_row(src, dst);
            }
        }
        out
    }
}

fn overflow(rows: usize, cols: usize) -> Error {
    Error::ShapeMismatch { op: "QWeight", expected: "a size that fits in memory".into(), got: format!("[{rows}, {cols}]") }
}

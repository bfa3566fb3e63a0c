//! `y = x · Wᵀ` with a quantised weight `W`: `[n, k]` ([`QWeight`]) and f32 activations `x`:
//! `[t, k]`, as llama.cpp's CPU `mul_mat` does it: each activation row is quantised once per call
//! to the weight's `vec_dot_type` (Q8_K for Q4_K / Q6_K, Q8_0 for Q8_0, ggml's reference
//! quantizers), then every output is one integer block dot product ([`super::dot`]).
//!
//! Work is split over weight rows (rayon), so each weight byte is streamed from memory once per
//! call; for `t > 1` a tile of weight rows stays in L1/L2 while it meets every activation row.

use rayon::prelude::*;

use super::blocks::{quantize_row_q8_0, quantize_row_q8_k, BlockQ8K, Q8_0_BYTES, QK8_0, QK_K};
use super::dot::{dot_q4_k_q8_k, dot_q6_k_q8_k, dot_q8_0_q8_0, Path};
use super::{QType, QWeight};
use crate::{Error, Result};

/// Activation rows handled together against one tile of weight rows (`t > 1`): 32 rows of a
/// 2560-wide Q8_K activation are 94 KB, which stays in L2.
const TILE_T: usize = 32;
/// Weight rows per rayon task are chosen so each thread gets about this many tasks.
const TASKS_PER_THREAD: usize = 8;

/// Reusable buffers of [`qmatmul_xwt_with`] (quantised activations, a transposed output), so a
/// decode loop allocates nothing per call.
#[derive(Default)]
pub struct QScratch {
    q8k: Vec<BlockQ8K>,
    q80: Vec<u8>,
    out_t: Vec<f32>,
}

/// `out[t, n] = Σ_k x[t, k] · W[n, k]` with `W` quantised, activations quantised per block.
///
/// Errors: [`Error::ShapeMismatch`] when `x` is not `[t, k]` or `out` is not `[t, n]`.
pub fn qmatmul_xwt(x: &[f32], w: &QWeight, out: &mut [f32]) -> Result<()> {
    qmatmul_xwt_with(x, w, out, &mut QScratch::default())
}

/// [`qmatmul_xwt`] on the fastest [`Path`] of this CPU, with caller-owned scratch buffers.
pub fn qmatmul_xwt_with(x: &[f32], w: &QWeight, out: &mut [f32], scratch: &mut QScratch) -> Result<()> {
    qmatmul_xwt_on(Path::detect(), x, w, out, scratch)
}

fn check_dims(x_len: usize, out_len: usize, n: usize, k: usize) -> Result<usize> {
    let t = if k > 0 { x_len / k } else { out_len / n.max(1) };
    if (k > 0 && x_len % k != 0) || Some(out_len) != t.checked_mul(n) {
        return Err(Error::ShapeMismatch {
            op: "qmatmul_xwt",
            expected: format!("x [t, {k}] and out [t, {n}]"),
            got: format!("x len {x_len}, out len {out_len}"),
        });
    }
    Ok(t)
}

/// Quantised activations of one call: `t` rows of `row_blocks` blocks.
enum Act<'a> {
    Q80(&'a [u8]),
    Q8K(&'a [BlockQ8K]),
}

/// [`qmatmul_xwt_with`] on a given kernel `path` (tests and benches run every one in
/// [`Path::available`]; a path the CPU lacks falls back to scalar).
pub fn qmatmul_xwt_on(path: Path, x: &[f32], w: &QWeight, out: &mut [f32], scratch: &mut QScratch) -> Result<()> {
    let (n, k) = w.dims();
    let t = check_dims(x.len(), out.len(), n, k)?;
    if t == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let path = if Path::available().contains(&path) { path } else { Path::Scalar };
    let qtype = w.qtype();
    let act = match qtype {
        QType::Q8_0 => {
            let rb = k / QK8_0 * Q8_0_BYTES;
            scratch.q80.resize(t * rb, 0);
            scratch.q80.par_chunks_mut(rb).zip(x.par_chunks(k)).for_each(|(q, xr)| quantize_row_q8_0(xr, q));
            Act::Q80(&scratch.q80)
        }
        QType::Q4K | QType::Q6K => {
            let kb = k / QK_K;
            scratch.q8k.resize(t * kb, BlockQ8K::default());
            scratch.q8k.par_chunks_mut(kb).zip(x.par_chunks(k)).for_each(|(q, xr)| quantize_row_q8_k(xr, q));
            Act::Q8K(&scratch.q8k)
        }
    };
    let wb = w.bytes();
    let wrb = w.row_bytes();
    let kb = k / qtype.block_elems();
    let dot = |row: usize, r: usize| -> f32 {
        let wr = &wb[row * wrb..(row + 1) * wrb];
        match (&act, qtype) {
            (Act::Q80(a), _) => dot_q8_0_q8_0(path, wr, &a[r * wrb..(r + 1) * wrb]),
            (Act::Q8K(a), QType::Q4K) => dot_q4_k_q8_k(path, wr, &a[r * kb..(r + 1) * kb]),
            (Act::Q8K(a), _) => dot_q6_k_q8_k(path, wr, &a[r * kb..(r + 1) * kb]),
        }
    };
    let tile = n.div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD).clamp(8, 256);
    if t == 1 {
        out.par_chunks_mut(tile).enumerate().for_each(|(ci, o)| {
            for (j, v) in o.iter_mut().enumerate() {
                *v = dot(ci * tile + j, 0);
            }
        });
        return Ok(());
    }
    // Column tiles of the transposed output [n, t]; written back transposed below.
    scratch.out_t.resize(n * t, 0.0);
    scratch.out_t.par_chunks_mut(tile * t).enumerate().for_each(|(ci, o)| {
        let rows = o.len() / t;
        for t0 in (0..t).step_by(TILE_T) {
            for j in 0..rows {
                for r in t0..(t0 + TILE_T).min(t) {
                    o[j * t + r] = dot(ci * tile + j, r);
                }
            }
        }
    });
    let out_t = &scratch.out_t;
    out.par_chunks_mut(n).enumerate().for_each(|(r, o)| {
        for (c, v) in o.iter_mut().enumerate() {
            *v = out_t[c * t + r];
        }
    });
    Ok(())
}

/// Slow twin of [`qmatmul_xwt`]: the weight dequantised to f32, the activations left in f32, the
/// triple loop accumulating in f64 ([`crate::ops::gemm::gemm_slow`]). It differs from the integer
/// path by the activation quantisation (ggml's Q8_K / Q8_0 rounding of `x`), which the tests bound,
/// and is also the twin of [`super::qmatmul_dequant`] (f32 activations).
pub fn qmatmul_xwt_slow(x: &[f32], w: &QWeight, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims();
    let t = check_dims(x.len(), out.len(), n, k)?;
    crate::ops::gemm::gemm_slow(x, crate::ops::gemm::WeightRef::F32(&w.dequantize()), t, n, k, out)
}

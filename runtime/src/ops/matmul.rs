//! `y = x · Wᵀ`, the one matrix product of the model (every projection, expert and the head).
//!
//! Weights are `[n, k]` (PyTorch `Linear` layout) in f32, bf16 or f16 and are never converted in
//! memory: bf16 checkpoints stay bf16. The CPU computes in f32:
//! - few rows (decode): a GEMV that streams each weight row once, upcasting in registers; this is
//!   memory-bound, so it is measured against the memory-bandwidth roofline in `benches/`.
//! - many rows (prefill, busy experts): blocks of weight rows are upcast into a per-thread f32
//!   scratch and multiplied with the `gemm` crate, so the upcast cost is amortised over all rows.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::tensor::{Elems, Tensor};
use crate::{Error, Result};

/// Up to this many rows of `x` take the GEMV path: each weight row is then read once for all rows.
const GEMV_MAX_ROWS: usize = 4;
/// Weight rows upcast per block on the GEMM path (block = 128 × k f32 stays in L2 for k ≤ 4096).
const GEMM_BLOCK_N: usize = 128;
/// Weight rows per rayon task on the GEMV path.
const GEMV_BLOCK_N: usize = 64;

/// `out[t, n] = Σ_k x[t, k] · w[n, k]`. `x`: `[t, k]` f32, `w`: `[n, k]`, `out`: `[t, n]`.
///
/// Errors: [`Error::ShapeMismatch`] when the slice lengths disagree with `w`'s shape.
pub fn matmul_xwt(x: &[f32], w: &Tensor, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims2()?;
    let t = check_dims("matmul_xwt", x.len(), out.len(), n, k)?;
    if t == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.iter_mut().for_each(|v| *v = 0.0);
        return Ok(());
    }
    if t <= GEMV_MAX_ROWS {
        gemv(x, t, w, n, k, out);
        return Ok(());
    }
    match w.elems() {
        Elems::F32(ws) => {
            // SAFETY: dims checked above: x is [t,k], ws is [n,k], out is [t,n], all row-major.
            unsafe { gemm_f32(x, t, ws, n, k, out, Parallelism::Rayon(rayon::current_num_threads())) };
        }
        _ => gemm_upcast_blocks(x, t, w, n, k, out),
    }
    Ok(())
}

/// Slow twin of [`matmul_xwt`]: the triple loop, accumulating in f64 ([`crate::ops::gemm::gemm_slow`]
/// on the weight upcast to f32).
pub fn matmul_xwt_slow(x: &[f32], w: &Tensor, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims2()?;
    let t = check_dims("matmul_xwt_slow", x.len(), out.len(), n, k)?;
    crate::ops::gemm::gemm_slow(x, crate::ops::gemm::WeightRef::F32(&w.to_f32_vec()), t, n, k, out)
}

fn check_dims(op: &'static str, x_len: usize, out_len: usize, n: usize, k: usize) -> Result<usize> {
    let t = x_len.checked_div(k).unwrap_or_else(|| out_len / n.max(1));
    if (k > 0 && x_len % k != 0) || out_len != t * n {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("x [t, {k}] and out [t, {n}]"),
            got: format!("x len {x_len}, out len {out_len}"),
        });
    }
    Ok(t)
}

/// Calls the `gemm` crate for row-major `out[t,n] = x[t,k] · w[n,k]ᵀ`.
///
/// # Safety
/// `x`, `w`, `out` must hold `t*k`, `n*k`, `t*n` elements.
unsafe fn gemm_f32(x: &[f32], t: usize, w: &[f32], n: usize, k: usize, out: &mut [f32], par: Parallelism) {
    debug_assert!(x.len() >= t * k && w.len() >= n * k && out.len() >= t * n);
    gemm::gemm(
        t,
        n,
        k,
        out.as_mut_ptr(),
        1,
        n as isize,
        false,
        x.as_ptr(),
        1,
        k as isize,
        // rhs is wᵀ: element (kk, nn) lives at w[nn*k + kk].
        w.as_ptr(),
        k as isize,
        1,
        0.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// bf16/f16 weights with many rows: upcast `GEMM_BLOCK_N` weight rows at a time, one block per
/// rayon task, then a single-threaded `gemm` on the block.
fn gemm_upcast_blocks(x: &[f32], t: usize, w: &Tensor, n: usize, k: usize, out: &mut [f32]) {
    let n_blocks = n.div_ceil(GEMM_BLOCK_N);
    // Each task writes out[:, block] which is strided in `out`; compute into a block-local buffer
    // and copy, so tasks never share output memory.
    let blocks: Vec<(usize, Vec<f32>)> = (0..n_blocks)
        .into_par_iter()
        .map_init(Vec::new, |scratch: &mut Vec<f32>, b| {
            let n0 = b * GEMM_BLOCK_N;
            let nb = GEMM_BLOCK_N.min(n - n0);
            scratch.resize(nb * k, 0.0);
            upcast_rows(w, n0, nb, k, scratch);
            let mut y = vec![0.0f32; t * nb];
            // SAFETY: scratch holds nb*k, x holds t*k, y holds t*nb elements.
            unsafe { gemm_f32(x, t, scratch, nb, k, &mut y, Parallelism::None) };
            (n0, y)
        })
        .collect();
    for (n0, y) in blocks {
        let nb = y.len() / t;
        for r in 0..t {
            out[r * n + n0..r * n + n0 + nb].copy_from_slice(&y[r * nb..(r + 1) * nb]);
        }
    }
}

/// Copies weight rows `n0..n0+nb` of `w` (`[n, k]`) into `dst` as f32.
fn upcast_rows(w: &Tensor, n0: usize, nb: usize, k: usize, dst: &mut [f32]) {
    let r = n0 * k..(n0 + nb) * k;
    match w.elems() {
        Elems::F32(s) => dst.copy_from_slice(&s[r]),
        Elems::Bf16(s) => {
            for (d, v) in dst.iter_mut().zip(&s[r]) {
                *d = bf16_bits_to_f32(v.to_bits());
            }
        }
        Elems::F16(s) => {
            use half::slice::HalfFloatSliceExt;
            s[r].convert_to_f32_slice(dst);
        }
    }
}

/// Few-row product: each rayon task owns `GEMV_BLOCK_N` weight rows and reads them once for all
/// `t` rows of `x`.
fn gemv(x: &[f32], t: usize, w: &Tensor, n: usize, k: usize, out: &mut [f32]) {
    let n_blocks = n.div_ceil(GEMV_BLOCK_N);
    let results: Vec<Vec<f32>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let n0 = b * GEMV_BLOCK_N;
            let nb = GEMV_BLOCK_N.min(n - n0);
            let mut y = vec![0.0f32; nb * t]; // [nb, t]
            let mut row = vec![0.0f32; k];
            for j in 0..nb {
                let r = (n0 + j) * k..(n0 + j + 1) * k;
                match w.elems() {
                    Elems::F32(s) => (0..t).for_each(|i| y[j * t + i] = dot(&x[i * k..(i + 1) * k], &s[r.clone()])),
                    // bf16 is upcast inside the dot product: the weight row is streamed once.
                    Elems::Bf16(s) => {
                        let wr: &[u16] = bytemuck::cast_slice(&s[r]);
                        (0..t).for_each(|i| y[j * t + i] = dot_bf16(&x[i * k..(i + 1) * k], wr));
                    }
                    Elems::F16(_) => {
                        upcast_rows(w, n0 + j, 1, k, &mut row);
                        (0..t).for_each(|i| y[j * t + i] = dot(&x[i * k..(i + 1) * k], &row));
                    }
                }
            }
            y
        })
        .collect();
    for (b, y) in results.into_iter().enumerate() {
        let n0 = b * GEMV_BLOCK_N;
        let nb = y.len() / t;
        for j in 0..nb {
            for r in 0..t {
                out[r * n + n0 + j] = y[j * t + r];
            }
        }
    }
}

/// `Σ a[i]·b[i]` over the shorter length, with 16 independent accumulators so the compiler
/// vectorises it (an iterator `sum` is a strict left-to-right chain it may not reorder);
/// dispatched to an AVX2+FMA build of the same code when the CPU has it. Attention scores use it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_generic(a, b, |v| v)
}

/// `Σ a[i] · bf16(b[i])` with the bf16 → f32 upcast (a 16-bit shift) fused into the loop, so the
/// weight row is streamed once.
fn dot_bf16(a: &[f32], b: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { dot_bf16_avx2(a, b) };
        }
    }
    dot_generic(a, b, bf16_bits_to_f32)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b, |v| v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_bf16_avx2(a: &[f32], b: &[u16]) -> f32 {
    dot_generic(a, b, bf16_bits_to_f32)
}

#[inline(always)]
fn bf16_bits_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// The shared loop: `Σ a[i] · load(b[i])` over 16 lanes plus a scalar tail.
#[inline(always)]
fn dot_generic<T: Copy>(a: &[f32], b: &[T], load: impl Fn(T) -> f32) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let (a_main, a_tail) = a.split_at(a.len() / L * L);
    let (b_main, b_tail) = b.split_at(a_main.len());
    for (ca, cb) in a_main.chunks_exact(L).zip(b_main.chunks_exact(L)) {
        for i in 0..L {
            acc[i] += ca[i] * load(cb[i]);
        }
    }
    let mut s = 0.0f32;
    for (x, &y) in a_tail.iter().zip(b_tail) {
        s += x * load(y);
    }
    acc.iter().sum::<f32>() + s
}

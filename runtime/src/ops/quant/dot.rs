//! Dot products of a quantized weight row with a quantized activation row, as llama.cpp computes
//! them (`ggml_vec_dot_q4_K_q8_K` etc. in `ggml/src/ggml-cpu/quants.c`): integer products per
//! block, one float multiply-add per block.
//!
//! Each dot has a scalar twin (`*_scalar`) and x86 SIMD kernels ([`super::x86`]) chosen once at
//! run time by [`Path::detect`]. For Q4_K and Q6_K every path computes the same exact i32 per
//! super-block and combines blocks with the same f32 operations in the same order, so all paths
//! agree bit for bit. For Q8_0 (32-element blocks) the SIMD paths keep 8 or 16 f32 partial sums
//! and reduce at the end: the per-block integers are exact, the float sum differs from the scalar
//! order by at most `Q8_0_SUM_ULPS` rounding errors of the sum of |block terms|.

use std::sync::OnceLock;

use super::blocks::{f16_at, scale_min_k4, BlockQ8K, Q4_K_BYTES, Q6_D, Q6_K_BYTES, Q6_SC, Q8_0_BYTES, q6_level};
#[cfg(target_arch = "x86_64")]
use super::x86;

/// Which kernel set the dot products use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Portable Rust, one element at a time.
    Scalar,
    /// AVX2 + FMA: `_mm256_maddubs_epi16` / `_mm256_madd_epi16`.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI: `_mm512_dpbusd_epi32` (Q8_0) and `maddubs` + `_mm512_dpwssd_epi32`
    /// / `_mm256_dpwssd_epi32` (K-quants, whose per-sub-block scales need the 16-bit step).
    Avx512Vnni,
}

impl Path {
    /// The best path this CPU supports (`is_x86_feature_detected!`), detected once per process.
    pub fn detect() -> Path {
        static PATH: OnceLock<Path> = OnceLock::new();
        *PATH.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
                {
                    return Path::Avx512Vnni;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                    return Path::Avx2;
                }
            }
            Path::Scalar
        })
    }

    /// Every path this CPU can run (for tests and benches), scalar first.
    pub fn available() -> Vec<Path> {
        let best = Path::detect();
        [Path::Scalar, Path::Avx2, Path::Avx512Vnni].into_iter().filter(|p| *p as u8 <= best as u8).collect()
    }
}

/// Bound between the SIMD and scalar Q8_0 dots, in units of `f32::EPSILON · Σ|block terms|`:
/// both sum `nb` rounded terms, in different orders, so each is within `nb·ε` of the exact sum;
/// we state the bound per block count: `|Δ| ≤ 2·nb·ε·Σ|terms|`.
pub const Q8_0_SUM_ULPS: f32 = 2.0;

/// Weight rows per group of the row kernels ([`dot_q8_0_rows`], [`dot_q4_k_rows`],
/// [`dot_q6_k_rows`]): the AVX-512 Q8_0 kernel loads each activation block once per group, and
/// every SIMD kernel prefetches the row this many rows on.
pub(crate) const ROW_GROUP: usize = 4;

/// Where a single-row dot prefetches: the next row (rows are contiguous in a weight).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn next_row(x: &[u8]) -> *const u8 {
    x.as_ptr().wrapping_add(x.len())
}

// ------------------------------------------------------------------------------------ Q8_0

/// `Σ x·y` of two Q8_0 rows of `nb` blocks each (`x`, `y`: `nb × 34` bytes), on `path`.
/// Callers guarantee equal lengths that are a multiple of 34 and that `path` is available.
#[inline]
pub(crate) fn dot_q8_0_q8_0(path: Path, x: &[u8], y: &[u8]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` came from `Path::detect`/`available`, so the CPU has these features;
        // both slices hold the same whole number of 34-byte blocks.
        Path::Avx512Vnni => unsafe { x86::dot_q8_0_avx512(x, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::dot_q8_0_avx2(x, y) },
        _ => dot_q8_0_q8_0_scalar(x, y),
    }
}

/// Scalar twin of the Q8_0 dot (`ggml_vec_dot_q8_0_q8_0_generic`).
pub fn dot_q8_0_q8_0_scalar(x: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.chunks_exact(Q8_0_BYTES).zip(y.chunks_exact(Q8_0_BYTES)) {
        let sumi: i32 = xb[2..].iter().zip(&yb[2..]).map(|(&a, &b)| a as i8 as i32 * b as i8 as i32).sum();
        sumf += sumi as f32 * (f16_at(xb, 0) * f16_at(yb, 0));
    }
    sumf
}

/// `out[r] = Σ w[r]·y` for the `out.len()` consecutive Q8_0 weight rows in `w` (`out.len() ×
/// y.len()` bytes) and one Q8_0 activation row `y`, on `path`. Each result equals
/// [`dot_q8_0_q8_0`] on the same path bit for bit (its twin: [`dot_q8_0_q8_0_scalar`] per row).
pub(crate) fn dot_q8_0_rows(path: Path, w: &[u8], y: &[u8], out: &mut [f32]) {
    let rb = y.len();
    debug_assert_eq!(w.len(), out.len() * rb);
    #[cfg(target_arch = "x86_64")]
    if path == Path::Avx512Vnni {
        for (g, o) in out.chunks_mut(ROW_GROUP).enumerate() {
            let wg = &w[g * ROW_GROUP * rb..(g * ROW_GROUP + o.len()) * rb];
            // SAFETY: features checked by `Path`; `wg` holds `o.len()` rows of `y`'s whole blocks.
            unsafe {
                match o {
                    [a, b, c, d] => {
                        let mut v = [0.0; 4];
                        x86::dot_q8_0_rows_avx512::<4>(wg, y, &mut v);
                        [*a, *b, *c, *d] = v;
                    }
                    [a, b, c] => {
                        let mut v = [0.0; 3];
                        x86::dot_q8_0_rows_avx512::<3>(wg, y, &mut v);
                        [*a, *b, *c] = v;
                    }
                    [a, b] => {
                        let mut v = [0.0; 2];
                        x86::dot_q8_0_rows_avx512::<2>(wg, y, &mut v);
                        [*a, *b] = v;
                    }
                    _ => o.iter_mut().enumerate().for_each(|(r, v)| *v = x86::dot_q8_0_avx512(&wg[r * rb..(r + 1) * rb], y)),
                }
            }
        }
        return;
    }
    for (r, v) in out.iter_mut().enumerate() {
        *v = dot_q8_0_q8_0(path, &w[r * rb..(r + 1) * rb], y);
    }
}

/// The K-quant row loop of [`dot_q4_k_rows`] / [`dot_q6_k_rows`]: `kernel(row, y, prefetch)`
/// per row, prefetching [`ROW_GROUP`] rows on.
#[inline(always)]
fn k_rows(w: &[u8], rb: usize, out: &mut [f32], kernel: impl Fn(&[u8], *const u8) -> f32) {
    for (r, v) in out.iter_mut().enumerate() {
        let row = &w[r * rb..(r + 1) * rb];
        *v = kernel(row, row.as_ptr().wrapping_add(ROW_GROUP * rb));
    }
}

// ------------------------------------------------------------------------------------ Q4_K

/// `Σ x·y` of a Q4_K row (`x`: `nb × 144` bytes) with a Q8_K row (`y`: `nb` blocks), on `path`.
#[inline]
pub(crate) fn dot_q4_k_q8_k(path: Path, x: &[u8], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len() * Q4_K_BYTES);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked by `Path`; `x` holds `y.len()` whole blocks.
        Path::Avx512Vnni => unsafe { x86::dot_q4_k_avx512(x, y, next_row(x)) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::dot_q4_k_avx2(x, y, next_row(x)) },
        _ => dot_q4_k_q8_k_scalar(x, y),
    }
}

/// `out[r] = Σ w[r]·y` for `out.len()` consecutive Q4_K weight rows (`w`: `out.len() × y.len()`
/// blocks of 144 bytes) and one Q8_K row `y`, on `path`; equals [`dot_q4_k_q8_k`] per row bit for
/// bit (the SIMD kernels only prefetch further ahead).
pub(crate) fn dot_q4_k_rows(path: Path, w: &[u8], y: &[BlockQ8K], out: &mut [f32]) {
    let rb = y.len() * Q4_K_BYTES;
    debug_assert_eq!(w.len(), out.len() * rb);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked by `Path`; each row holds `y.len()` whole blocks.
        Path::Avx512Vnni => k_rows(w, rb, out, |x, pf| unsafe { x86::dot_q4_k_avx512(x, y, pf) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => k_rows(w, rb, out, |x, pf| unsafe { x86::dot_q4_k_avx2(x, y, pf) }),
        _ => k_rows(w, rb, out, |x, _| dot_q4_k_q8_k_scalar(x, y)),
    }
}

/// The exact integer parts of one Q4_K·Q8_K super-block: `(Σ_j sc_j·Σ q4·q8, Σ_j m_j·Σ q8)`.
pub(crate) fn q4_k_block_ints_scalar(xb: &[u8], yb: &BlockQ8K) -> (i32, i32) {
    let scales = &xb[4..16];
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let (c, hi) = (j / 2, j % 2 == 1);
        let q = &xb[16 + 32 * c..16 + 32 * c + 32];
        let mut s = 0i32;
        for l in 0..32 {
            let v = if hi { q[l] >> 4 } else { q[l] & 0xF };
            s += v as i32 * yb.qs[32 * j + l] as i32;
        }
        sumi += sc as i32 * s;
        summ += m as i32 * (yb.bsums[2 * j] as i32 + yb.bsums[2 * j + 1] as i32);
    }
    (sumi, summ)
}

/// Combines one super-block's integers into the running sum; shared by every path so they agree
/// bit for bit.
#[inline(always)]
pub(crate) fn q4_k_accumulate(sumf: f32, xd: f32, xdmin: f32, yd: f32, sumi: i32, summ: i32) -> f32 {
    let d = xd * yd;
    let dmin = xdmin * yd;
    sumf + (d * sumi as f32 - dmin * summ as f32)
}

/// Scalar twin of the Q4_K·Q8_K dot.
pub fn dot_q4_k_q8_k_scalar(x: &[u8], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.chunks_exact(Q4_K_BYTES).zip(y) {
        let (sumi, summ) = q4_k_block_ints_scalar(xb, yb);
        sumf = q4_k_accumulate(sumf, f16_at(xb, 0), f16_at(xb, 2), yb.d, sumi, summ);
    }
    sumf
}

// ------------------------------------------------------------------------------------ Q6_K

/// `Σ x·y` of a Q6_K row (`x`: `nb × 210` bytes) with a Q8_K row (`y`: `nb` blocks), on `path`.
#[inline]
pub(crate) fn dot_q6_k_q8_k(path: Path, x: &[u8], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(x.len(), y.len() * Q6_K_BYTES);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked by `Path`; `x` holds `y.len()` whole blocks.
        Path::Avx512Vnni => unsafe { x86::dot_q6_k_avx512(x, y, next_row(x)) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::dot_q6_k_avx2(x, y, next_row(x)) },
        _ => dot_q6_k_q8_k_scalar(x, y),
    }
}

/// [`dot_q4_k_rows`] for Q6_K weight rows (210-byte blocks); equals [`dot_q6_k_q8_k`] per row.
pub(crate) fn dot_q6_k_rows(path: Path, w: &[u8], y: &[BlockQ8K], out: &mut [f32]) {
    let rb = y.len() * Q6_K_BYTES;
    debug_assert_eq!(w.len(), out.len() * rb);
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features checked by `Path`; each row holds `y.len()` whole blocks.
        Path::Avx512Vnni => k_rows(w, rb, out, |x, pf| unsafe { x86::dot_q6_k_avx512(x, y, pf) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => k_rows(w, rb, out, |x, pf| unsafe { x86::dot_q6_k_avx2(x, y, pf) }),
        _ => k_rows(w, rb, out, |x, _| dot_q6_k_q8_k_scalar(x, y)),
    }
}

/// The exact integer part of one Q6_K·Q8_K super-block: `Σ_g sc_g·Σ_{i∈g} (q_i − 32)·y_i`.
pub(crate) fn q6_k_block_int_scalar(xb: &[u8], yb: &BlockQ8K) -> i32 {
    let mut sumi = 0i32;
    for g in 0..16 {
        let mut s = 0i32;
        for i in 16 * g..16 * g + 16 {
            s += (q6_level(xb, i) as i32 - 32) * yb.qs[i] as i32;
        }
        sumi += xb[Q6_SC + g] as i8 as i32 * s;
    }
    sumi
}

#[inline(always)]
pub(crate) fn q6_k_accumulate(sumf: f32, xd: f32, yd: f32, sumi: i32) -> f32 {
    sumf + (xd * yd) * sumi as f32
}

/// Scalar twin of the Q6_K·Q8_K dot.
pub fn dot_q6_k_q8_k_scalar(x: &[u8], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0.0f32;
    for (xb, yb) in x.chunks_exact(Q6_K_BYTES).zip(y) {
        sumf = q6_k_accumulate(sumf, f16_at(xb, Q6_D), yb.d, q6_k_block_int_scalar(xb, yb));
    }
    sumf
}

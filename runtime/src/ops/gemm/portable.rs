//! Portable kernels in plain Rust (auto-vectorised for the build target): the fallback on CPUs
//! without AVX2 and on other architectures.

use std::ops::Range;

use super::WeightRef;

/// Register tile rows of the GEMM kernel.
pub(super) const MR: usize = 4;
/// Register tile columns.
pub(super) const NR: usize = 16;

/// `c[i, j] (+)= Σ_p a[p·MR + i] · b[p·NR + j]`: see `avx512::kernel_f32`.
///
/// # Safety
/// `a`, `b` hold `kc·MR`, `kc·NR` floats; `c` covers `rows × cols` at stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel_f32(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, rows: usize, cols: usize, accumulate: bool) {
    let a = std::slice::from_raw_parts(a, kc * MR);
    let b = std::slice::from_raw_parts(b, kc * NR);
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] += ap[i] * bp[j];
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (j, &v) in row.iter().enumerate().take(cols) {
            let p = c.add(i * ldc + j);
            *p = if accumulate { *p + v } else { v };
        }
    }
}

/// GEMV rows, as `avx512::gemv_rows`: 16 partial sums per (activation row, weight row).
///
/// # Safety
/// `x` holds `m·k`, `w` `rows.end·k`; `out` covers every written index `i·ldo + j`.
pub(super) unsafe fn gemv_rows(x: &[f32], m: usize, k: usize, w: WeightRef<'_>, rows: Range<usize>, out: *mut f32, ldo: usize) {
    const L: usize = 16;
    let mut wrow = [0.0f32; L];
    for j in rows {
        let mut acc = [[0.0f32; L]; super::GEMV_MAX_ROWS];
        let k16 = k / L * L;
        for kk in (0..k16).step_by(L) {
            for (t, v) in wrow.iter_mut().enumerate() {
                *v = w.get(j * k + kk + t);
            }
            for (i, a) in acc.iter_mut().enumerate().take(m) {
                let xs = &x[i * k + kk..i * k + kk + L];
                for t in 0..L {
                    a[t] += xs[t] * wrow[t];
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(m) {
            let mut s: f32 = a.iter().sum();
            for t in k16..k {
                s += x[i * k + t] * w.get(j * k + t);
            }
            *out.add(i * ldo + j) = s;
        }
    }
}

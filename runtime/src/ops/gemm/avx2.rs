//! AVX2 + FMA micro-kernels (Zen 3 and older Intel): the f32-FMA GEMM tile and the GEMV row
//! kernel (bf16 upcast in registers by a 16-bit shift, f16 by F16C `vcvtph2ps`).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::WeightRef;

/// Register tile rows of the GEMM kernel.
pub(super) const MR: usize = 6;
/// Register tile columns (two ymm of f32): 12 accumulators + 2 B + 1 broadcast of 16 ymm.
pub(super) const NR: usize = 16;

/// `c[i, j] (+)= Σ_p a[p·MR + i] · b[p·NR + j]`: see `avx512::kernel_f32`.
///
/// # Safety
/// avx2 + fma present; `a`, `b` hold `kc·MR`, `kc·NR` floats; `c` covers `rows × cols` at `ldc`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn kernel_f32(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, rows: usize, cols: usize, accumulate: bool) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * NR));
        let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
        let ap = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    if rows == MR && cols == NR {
        for (i, row) in acc.iter().enumerate() {
            let p = c.add(i * ldc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
        return;
    }
    let mut tile = [0.0f32; MR * NR];
    for (i, row) in acc.iter().enumerate() {
        _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
        _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + 8), row[1]);
    }
    for i in 0..rows {
        for j in 0..cols {
            let p = c.add(i * ldc + j);
            *p = if accumulate { *p + tile[i * NR + j] } else { tile[i * NR + j] };
        }
    }
}

/// Weight storage tags for the GEMV loads.
const F32: u8 = 0;
const BF16: u8 = 1;
const F16: u8 = 2;

/// 8 weights at element `i` of `w` (storage `DT`) as f32; bf16 by a 16-bit shift, f16 by F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load<const DT: u8>(w: *const u8, i: usize) -> __m256 {
    match DT {
        F32 => _mm256_loadu_ps((w as *const f32).add(i)),
        BF16 => {
            let h = _mm_loadu_si128((w as *const u16).add(i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
        _ => _mm256_cvtph_ps(_mm_loadu_si128((w as *const u16).add(i) as *const __m128i)),
    }
}

/// One weight at element `i` as f32 (the k tail).
#[inline(always)]
unsafe fn scalar<const DT: u8>(w: *const u8, i: usize) -> f32 {
    match DT {
        F32 => *(w as *const f32).add(i),
        BF16 => super::bf16_to_f32(*(w as *const u16).add(i)),
        _ => half::f16::from_bits(*(w as *const u16).add(i)).to_f32(),
    }
}

/// GEMV rows, as `avx512::gemv_rows`.
///
/// # Safety
/// avx2 + fma + f16c present; `x` holds `m·k`, `w` `rows.end·k`; `out` covers every written index.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv_rows(x: &[f32], m: usize, k: usize, w: WeightRef<'_>, rows: Range<usize>, out: *mut f32, ldo: usize) {
    match w {
        WeightRef::F32(s) => gemv_m::<F32>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
        WeightRef::Bf16(s) => gemv_m::<BF16>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
        WeightRef::F16(s) => gemv_m::<F16>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_m<const DT: u8>(x: &[f32], m: usize, k: usize, w: *const u8, rows: Range<usize>, out: *mut f32, ldo: usize) {
    // Accumulators M × R of 16 ymm: 4 weight rows at a time up to 2 activation rows, else 2.
    match m {
        1 => gemv_r::<DT, 1, 4>(x.as_ptr(), k, w, rows, out, ldo),
        2 => gemv_r::<DT, 2, 4>(x.as_ptr(), k, w, rows, out, ldo),
        3 => gemv_r::<DT, 3, 2>(x.as_ptr(), k, w, rows, out, ldo),
        _ => gemv_r::<DT, 4, 2>(x.as_ptr(), k, w, rows, out, ldo),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_r<const DT: u8, const M: usize, const R: usize>(x: *const f32, k: usize, w: *const u8, rows: Range<usize>, out: *mut f32, ldo: usize) {
    let mut j = rows.start;
    while j + R <= rows.end {
        gemv_block::<DT, M, R>(x, k, w, j, out, ldo);
        j += R;
    }
    while j < rows.end {
        gemv_block::<DT, M, 1>(x, k, w, j, out, ldo);
        j += 1;
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_block<const DT: u8, const M: usize, const R: usize>(x: *const f32, k: usize, w: *const u8, j: usize, out: *mut f32, ldo: usize) {
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    let k8 = k / 8 * 8;
    let mut kk = 0;
    let esize = if DT == F32 { 4 } else { 2 };
    while kk < k8 {
        let mut wv = [_mm256_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            let e = (j + r) * k + kk;
            if (e * esize) % 64 < 8 * esize {
                // Once per cache line: pull the line ahead (never faults).
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(e * esize + super::GEMV_PREFETCH_BYTES) as *const i8);
            }
            *v = load::<DT>(w, e);
        }
        for (i, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(x.add(i * k + kk));
            for r in 0..R {
                a[r] = _mm256_fmadd_ps(xv, wv[r], a[r]);
            }
        }
        kk += 8;
    }
    for (i, a) in acc.iter().enumerate() {
        for (r, &v) in a.iter().enumerate() {
            let mut s = hsum(v);
            for t in k8..k {
                s += *x.add(i * k + t) * scalar::<DT>(w, (j + r) * k + t);
            }
            *out.add(i * ldo + j + r) = s;
        }
    }
}

//! AVX-512 micro-kernels: the exact f32-FMA GEMM tile, the `vdpbf16ps` GEMM tile and the GEMV
//! row kernel (bf16 upcast in registers by a 16-bit shift, f16 by `vcvtph2ps`).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::WeightRef;

/// Register tile rows (activation rows) of the GEMM kernels.
pub(super) const MR: usize = 12;
/// Register tile columns (output columns = two zmm of f32).
pub(super) const NR: usize = 32;

/// Adds (or writes) the `MR × NR` register tile into `c` (`rows × cols` of it, row stride `ldc`).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile(acc: &[[__m512; 2]; MR], c: *mut f32, ldc: usize, rows: usize, cols: usize, accumulate: bool) {
    let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { ((1u32 << cols) - 1) as u16 };
    let m1: __mmask16 = if cols >= 32 { 0xFFFF } else if cols > 16 { ((1u32 << (cols - 16)) - 1) as u16 } else { 0 };
    for (i, row) in acc.iter().enumerate().take(rows) {
        let p = c.add(i * ldc);
        let (mut v0, mut v1) = (row[0], row[1]);
        if accumulate {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
        }
        _mm512_mask_storeu_ps(p, m0, v0);
        _mm512_mask_storeu_ps(p.add(16), m1, v1);
    }
}

/// `c[i, j] (+)= Σ_p a[p·MR + i] · b[p·NR + j]` over `kc` steps: `a` is `[kc][MR]` f32, `b`
/// `[kc][NR]` f32 (packed, zero-padded); the `rows × cols` corner of the tile is stored.
///
/// # Safety
/// avx512f present; `a`, `b` hold `kc·MR`, `kc·NR` floats; `c` covers `rows × cols` at stride `ldc`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn kernel_f32(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, rows: usize, cols: usize, accumulate: bool) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * NR));
        let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
        let ap = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
    store_tile(&acc, c, ldc, rows, cols, accumulate);
}

/// As [`kernel_f32`] over `kc` k-pairs with `vdpbf16ps`: `a` is `[kc][MR]` and `b` `[kc][NR]`
/// u32 words, each two bf16 (even k in the low half).
///
/// # Safety
/// avx512f + avx512bf16 present; sizes as [`kernel_f32`] in u32 words.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn kernel_dpbf16(kc: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, rows: usize, cols: usize, accumulate: bool) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
        let ap = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
            row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
        }
    }
    store_tile(&acc, c, ldc, rows, cols, accumulate);
}

/// Weight storage tags for the GEMV loads.
pub(super) const F32: u8 = 0;
pub(super) const BF16: u8 = 1;
pub(super) const F16: u8 = 2;

/// 16 weights at element `i` of `w` (storage `DT`) as f32; bf16 by a 16-bit shift.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load<const DT: u8>(w: *const u8, i: usize) -> __m512 {
    match DT {
        F32 => _mm512_loadu_ps((w as *const f32).add(i)),
        BF16 => {
            let h = _mm256_loadu_si256((w as *const u16).add(i) as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        _ => _mm512_cvtph_ps(_mm256_loadu_si256((w as *const u16).add(i) as *const __m256i)),
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

/// GEMV rows: `out[i·ldo + j] = Σ_kk x[i·k + kk] · w[j·k + kk]` for `i < m` (1..=4), `j ∈ rows`.
///
/// # Safety
/// avx512f present; `x` holds `m·k`, `w` `rows.end·k`; `out` covers every written index.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemv_rows(x: &[f32], m: usize, k: usize, w: WeightRef<'_>, rows: Range<usize>, out: *mut f32, ldo: usize) {
    match w {
        WeightRef::F32(s) => gemv_m::<F32>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
        WeightRef::Bf16(s) => gemv_m::<BF16>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
        WeightRef::F16(s) => gemv_m::<F16>(x, m, k, s.as_ptr() as *const u8, rows, out, ldo),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gemv_m<const DT: u8>(x: &[f32], m: usize, k: usize, w: *const u8, rows: Range<usize>, out: *mut f32, ldo: usize) {
    match m {
        1 => gemv_r::<DT, 1>(x.as_ptr(), k, w, rows, out, ldo),
        2 => gemv_r::<DT, 2>(x.as_ptr(), k, w, rows, out, ldo),
        3 => gemv_r::<DT, 3>(x.as_ptr(), k, w, rows, out, ldo),
        _ => gemv_r::<DT, 4>(x.as_ptr(), k, w, rows, out, ldo),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gemv_r<const DT: u8, const M: usize>(x: *const f32, k: usize, w: *const u8, rows: Range<usize>, out: *mut f32, ldo: usize) {
    let mut j = rows.start;
    while j + 4 <= rows.end {
        gemv_block::<DT, M, 4>(x, k, w, j, out, ldo);
        j += 4;
    }
    while j < rows.end {
        gemv_block::<DT, M, 1>(x, k, w, j, out, ldo);
        j += 1;
    }
}

/// `R` weight rows from `j` against `M` activation rows, 16 k at a time, scalar k tail.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gemv_block<const DT: u8, const M: usize, const R: usize>(x: *const f32, k: usize, w: *const u8, j: usize, out: *mut f32, ldo: usize) {
    let mut acc = [[_mm512_setzero_ps(); R]; M];
    let k16 = k / 16 * 16;
    let mut kk = 0;
    let esize = if DT == F32 { 4 } else { 2 };
    while kk < k16 {
        let mut wv = [_mm512_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            let e = (j + r) * k + kk;
            if super::GEMV_PREFETCH_BYTES > 0 && (e * esize) % 64 < 16 * esize {
                // Once per cache line: pull the line GEMV_PREFETCH_BYTES ahead (never faults).
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(e * esize + super::GEMV_PREFETCH_BYTES) as *const i8);
            }
            *v = load::<DT>(w, e);
        }
        for (i, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(x.add(i * k + kk));
            for r in 0..R {
                a[r] = _mm512_fmadd_ps(xv, wv[r], a[r]);
            }
        }
        kk += 16;
    }
    for (i, a) in acc.iter().enumerate() {
        for (r, &v) in a.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(v);
            for t in k16..k {
                s += *x.add(i * k + t) * scalar::<DT>(w, (j + r) * k + t);
            }
            *out.add(i * ldo + j + r) = s;
        }
    }
}

//! AVX-512 B packing: the same layouts as `pack.rs`'s [`super::pack::pack_b_f32`] and
//! [`super::pack::pack_b_bf16_pairs`] (their scalar twins, tested equal word for word), written
//! 16 weight rows × 16 depth steps at a time: 16 vector loads (bf16 / f16 upcast in registers),
//! one 16 × 16 32-bit transpose in registers, 16 vector stores. The scalar packs store one
//! element at a time at a stride of `NR` floats, which the profile of issue #13 showed costing
//! as much as the micro-kernel itself for the MoE experts' ~48-row GEMMs.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::avx512::{load as load_w, BF16, F16, F32};
use super::WeightRef;

/// Transposes the 16 × 16 32-bit matrix `r` (row `i` = `r[i]`) in place.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        let b = 4 * i;
        r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    // Now r[4q + j] holds, in each 128-bit lane L, rows 4L'..: element (row 4q + ·, col 4L + j).
    for h in 0..2 {
        let b = 8 * h;
        for j in 0..4 {
            t[b + j] = _mm512_shuffle_i32x4::<0x88>(r[b + j], r[b + 4 + j]);
            t[b + 4 + j] = _mm512_shuffle_i32x4::<0xDD>(r[b + j], r[b + 4 + j]);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_i32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j] = _mm512_shuffle_i32x4::<0xDD>(t[j], t[8 + j]);
    }
}

/// [`super::pack::pack_b_f32`] for `nr` = 32 (the AVX-512 tile): weight rows `n0..n0+nc` (zero
/// past `n`), depth `kb..kb+kc`, `dst[(p * kc + kk) * 32 + j] = w[n0 + 32p + j, kb + kk]` as f32.
///
/// # Safety
/// avx512f present; `nc` a multiple of 32; `dst` holds `nc · kc` floats; `w` is `[n, k]`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b_f32_nr32(w: WeightRef<'_>, n: usize, k: usize, n0: usize, nc: usize, kb: usize, kc: usize, dst: &mut [f32]) {
    match w {
        WeightRef::F32(s) => pack_f32::<F32>(s.as_ptr() as *const u8, n, k, n0, nc, kb, kc, dst, w),
        WeightRef::Bf16(s) => pack_f32::<BF16>(s.as_ptr() as *const u8, n, k, n0, nc, kb, kc, dst, w),
        WeightRef::F16(s) => pack_f32::<F16>(s.as_ptr() as *const u8, n, k, n0, nc, kb, kc, dst, w),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pack_f32<const DT: u8>(wp: *const u8, n: usize, k: usize, n0: usize, nc: usize, kb: usize, kc: usize, dst: &mut [f32], w: WeightRef<'_>) {
    const NR: usize = 32;
    let k16 = kc / 16 * 16;
    let d = dst.as_mut_ptr();
    for p in 0..nc / NR {
        for half in 0..2 {
            let r0 = n0 + p * NR + half * 16;
            let live = n.saturating_sub(r0).min(16); // rows of this half that exist
            for kk in (0..k16).step_by(16) {
                let mut v = [_mm512_setzero_si512(); 16];
                for (i, vi) in v.iter_mut().enumerate().take(live) {
                    *vi = _mm512_castps_si512(load_w::<DT>(wp, (r0 + i) * k + kb + kk));
                }
                transpose16(&mut v);
                for (c, vc) in v.iter().enumerate() {
                    // SAFETY: (p·kc + kk + c)·32 + half·16 + 16 ≤ nc·kc.
                    _mm512_storeu_si512(d.add((p * kc + kk + c) * NR + half * 16) as *mut _, *vc);
                }
            }
            for kk in k16..kc {
                for i in 0..16 {
                    let r = r0 + i;
                    *d.add((p * kc + kk) * NR + half * 16 + i) = if i < live { w.get(r * k + kb + kk) } else { 0.0 };
                }
            }
        }
    }
}

/// [`super::pack::pack_b_bf16_pairs`] for `nr` = 32: `dst[(p * kc + kp) * 32 + j] = w[row, 2(kb+kp)]
/// | w[row, 2(kb+kp)+1] << 16` (0 past `k` and past `n`). A bf16 pair is the 32-bit word at
/// element `2(kb+kp)` of the row, so this is a 32-bit transpose without any conversion.
///
/// # Safety
/// avx512f present; `nc` a multiple of 32; `dst` holds `nc · kc` words; `w` is `[n, k]`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack_b_bf16_pairs_nr32(w: &[u16], n: usize, k: usize, n0: usize, nc: usize, kb: usize, kc: usize, dst: &mut [u32]) {
    const NR: usize = 32;
    // Pair steps whose both halves lie inside k, in whole vectors of 16.
    let full = (k / 2).saturating_sub(kb).min(kc);
    let k16 = full / 16 * 16;
    let d = dst.as_mut_ptr();
    let wp = w.as_ptr();
    for p in 0..nc / NR {
        for half in 0..2 {
            let r0 = n0 + p * NR + half * 16;
            let live = n.saturating_sub(r0).min(16);
            for kp in (0..k16).step_by(16) {
                let mut v = [_mm512_setzero_si512(); 16];
                for (i, vi) in v.iter_mut().enumerate().take(live) {
                    // 16 pairs = 32 bf16 of row r0 + i from element 2(kb + kp): inside the row.
                    *vi = _mm512_loadu_si512(wp.add((r0 + i) * k + 2 * (kb + kp)) as *const _);
                }
                transpose16(&mut v);
                for (c, vc) in v.iter().enumerate() {
                    _mm512_storeu_si512(d.add((p * kc + kp + c) * NR + half * 16) as *mut _, *vc);
                }
            }
            for kp in k16..kc {
                let e = 2 * (kb + kp);
                for i in 0..16 {
                    let r = r0 + i;
                    let word = if i >= live || e >= k {
                        0
                    } else if e + 1 < k {
                        w[r * k + e] as u32 | (w[r * k + e + 1] as u32) << 16
                    } else {
                        w[r * k + e] as u32
                    };
                    *d.add((p * kc + kp) * NR + half * 16 + i) = word;
                }
            }
        }
    }
}

/// [`super::pack::pack_a_bf16_pairs`] with `vcvtne2ps2bf16`: 32 activations of a row rounded to
/// bf16 (round-to-nearest-even) per instruction, 16 pair words stored to the row's column of the
/// `[k2][mr]` panel. The instruction flushes f32 subnormals to 0 where the scalar twin keeps them
/// as bf16 subnormals; `vdpbf16ps` reads bf16 subnormals as 0, so the products are the same.
///
/// # Safety
/// avx512f + avx512bf16 present; `x` is `[m, k]` with `rows` inside it; `dst` holds `k2 · mr` words.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn pack_a_bf16_pairs_avx512(x: &[f32], k: usize, rows: std::ops::Range<usize>, mr: usize, dst: &mut [u32]) {
    let k2 = k.div_ceil(2);
    let chunks = k / 32; // whole 16-pair chunks
    let nrows = rows.len();
    let mut tmp = [0u32; 16];
    for (i, r) in rows.enumerate() {
        let src = &x[r * k..(r + 1) * k];
        for c in 0..chunks {
            let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
            let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
            // Word t = bf16(src[32c + 2t]) | bf16(src[32c + 2t + 1]) << 16 (lo fills words 0..8).
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(tmp.as_mut_ptr() as *mut _, v);
            for (t, &w) in tmp.iter().enumerate() {
                dst[(16 * c + t) * mr + i] = w;
            }
        }
        for kp in 16 * chunks..k2 {
            let lo = super::pack::f32_to_bf16_rne(src[2 * kp]) as u32;
            let hi = if 2 * kp + 1 < k { super::pack::f32_to_bf16_rne(src[2 * kp + 1]) as u32 } else { 0 };
            dst[kp * mr + i] = lo | hi << 16;
        }
    }
    for i in nrows..mr {
        for kp in 0..k2 {
            dst[kp * mr + i] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pack::{pack_a_bf16_pairs, pack_b_bf16_pairs, pack_b_f32};
    use super::super::{Kernel, WeightRef};
    use super::*;

    fn bits(len: usize, seed: u32) -> Vec<u16> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Finite bf16 / f16 patterns only (exponent below all-ones), so f16 compares by bits.
                (s as u16) & 0x3FFF
            })
            .collect()
    }

    #[test]
    fn vector_packs_equal_the_scalar_packs_word_for_word() {
        if !Kernel::Avx512.is_available() {
            return;
        }
        // (n, k, n0, kb, kc): row tails (n past n0), k tails (odd k, kc not a multiple of 16).
        for &(n, k, n0, kb, kc) in &[(64, 64, 0, 0, 32), (70, 300, 64, 16, 140), (33, 37, 0, 0, 37), (128, 2560, 0, 256, 256), (5, 17, 0, 0, 17)] {
            let nc = 64;
            let b = bits(n * k, (n * k) as u32);
            let f: Vec<f32> = b.iter().map(|&v| half::bf16::from_bits(v).to_f32()).collect();
            for wr in [WeightRef::Bf16(&b), WeightRef::F16(&b), WeightRef::F32(&f)] {
                let (mut want, mut got) = (vec![f32::NAN; nc * kc], vec![f32::NAN; nc * kc]);
                pack_b_f32(wr, n, k, n0, nc, kb, kc, 32, &mut want);
                // SAFETY: avx512f checked above; nc = 64; sizes as documented.
                unsafe { pack_b_f32_nr32(wr, n, k, n0, nc, kb, kc, &mut got) };
                let (wb, gb): (Vec<u32>, Vec<u32>) = (want.iter().map(|v| v.to_bits()).collect(), got.iter().map(|v| v.to_bits()).collect());
                assert_eq!(wb, gb, "f32 pack n{n} k{k} n0{n0} kb{kb} kc{kc}");
            }
            let (kb2, kc2) = (kb / 2, kc.min(k.div_ceil(2).saturating_sub(kb / 2)).max(1));
            let (mut want, mut got) = (vec![7u32; nc * kc2], vec![9u32; nc * kc2]);
            pack_b_bf16_pairs(&b, n, k, n0, nc, kb2, kc2, 32, &mut want);
            // SAFETY: as above.
            unsafe { pack_b_bf16_pairs_nr32(&b, n, k, n0, nc, kb2, kc2, &mut got) };
            assert_eq!(want, got, "pair pack n{n} k{k} n0{n0} kb{kb2} kc{kc2}");
        }
    }

    #[test]
    fn vector_a_pair_pack_equals_the_scalar_pack() {
        if !Kernel::Avx512Bf16Dot.is_available() {
            return;
        }
        // Normal values only (the two differ on f32 subnormals, which vdpbf16ps reads as 0), plus
        // exact halfway cases for round-to-nearest-even, ±0 and a NaN.
        for (m, k, rows) in [(5usize, 70usize, 1..4), (12, 2560, 0..12), (3, 31, 0..3), (2, 97, 1..2)] {
            let mut x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) * 0.37e-3).collect();
            x[0] = f32::from_bits(0x3F80_8000); // 1 + 2⁻⁸: ties to even (down)
            x[1] = f32::from_bits(0x3F81_8000); // ties to even (up)
            x[2] = -0.0;
            x[m * k - 1] = f32::NAN;
            let mr = 12;
            let (mut want, mut got) = (vec![7u32; k.div_ceil(2) * mr], vec![9u32; k.div_ceil(2) * mr]);
            pack_a_bf16_pairs(&x, k, rows.clone(), mr, &mut want);
            // SAFETY: avx512f + avx512bf16 checked above; sizes as documented.
            unsafe { pack_a_bf16_pairs_avx512(&x, k, rows.clone(), mr, &mut got) };
            assert_eq!(want, got, "m{m} k{k} rows {rows:?}");
        }
    }
}

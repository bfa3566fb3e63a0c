//! Packing into the micro-kernels' layouts (zero-padded, so kernels always run full tiles).
//!
//! - A (activations): `[depth][mr]`: for each k (or k pair) the `mr` rows side by side, broadcast
//!   one at a time by the kernel.
//! - B (weights): `[nc / nr][kc][nr]`: for each k (or k pair) `nr` consecutive output columns, one
//!   or two vector loads in the kernel. This transposes the `[n, k]` weight rows and upcasts them.

use std::ops::Range;

use super::{bf16_to_f32, WeightRef};

/// The f32 A panel of rows `rows` of `x` (`[m, k]`): `dst[kk * mr + i] = x[rows.start + i, kk]`.
pub(super) fn pack_a_f32(x: &[f32], k: usize, rows: Range<usize>, mr: usize, dst: &mut [f32]) {
    let nrows = rows.len();
    // In blocks of 64 columns: the block's `64 · mr` destination floats stay in L1 while every
    // row writes its strided share (row by row over all of k, each row swept the whole panel:
    // 8 % of a caption's prefill, whose score·V product packs [1296, 1296] per head).
    for k0 in (0..k).step_by(64) {
        let k1 = (k0 + 64).min(k);
        for (i, r) in rows.clone().enumerate() {
            for (kk, &v) in (k0..k1).zip(&x[r * k + k0..r * k + k1]) {
                dst[kk * mr + i] = v;
            }
        }
    }
    for i in nrows..mr {
        for kk in 0..k {
            dst[kk * mr + i] = 0.0;
        }
    }
}

/// Rounds f32 to bf16 bits, round-to-nearest-even (NaN stays a quiet NaN).
#[inline(always)]
pub(super) fn f32_to_bf16_rne(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// The bf16-pair A panel (the scalar twin of `pack512::pack_a_bf16_pairs_avx512`): `dst[kp * mr + i] = bf16(x[r, 2kp]) | bf16(x[r, 2kp+1]) << 16`, the
/// odd-k tail padded with 0.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn pack_a_bf16_pairs(x: &[f32], k: usize, rows: Range<usize>, mr: usize, dst: &mut [u32]) {
    let k2 = k.div_ceil(2);
    let nrows = rows.len();
    for (i, r) in rows.enumerate() {
        let src = &x[r * k..(r + 1) * k];
        for kp in 0..k2 {
            let lo = f32_to_bf16_rne(src[2 * kp]) as u32;
            let hi = if 2 * kp + 1 < k { f32_to_bf16_rne(src[2 * kp + 1]) as u32 } else { 0 };
            dst[kp * mr + i] = lo | hi << 16;
        }
    }
    for i in nrows..mr {
        for kp in 0..k2 {
            dst[kp * mr + i] = 0;
        }
    }
}

/// Upcast depth (on the stack) while packing one weight row segment.
const ROW_CHUNK: usize = 256;

/// The f32 B block of weight rows `n0..n0+nc` (zero past `n`), depth `kb..kb+kc`:
/// `dst[(p * kc + kk) * nr + j] = w[n0 + p*nr + j, kb + kk]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_f32(w: WeightRef<'_>, n: usize, k: usize, n0: usize, nc: usize, kb: usize, kc: usize, nr: usize, dst: &mut [f32]) {
    let mut tmp = [0.0f32; ROW_CHUNK];
    for jj in 0..nc.div_ceil(nr) * nr {
        let (p, j) = (jj / nr, jj % nr);
        let panel = &mut dst[p * kc * nr..(p + 1) * kc * nr];
        let row = n0 + jj;
        if row >= n {
            for kk in 0..kc {
                panel[kk * nr + j] = 0.0;
            }
            continue;
        }
        for c0 in (0..kc).step_by(ROW_CHUNK) {
            let len = ROW_CHUNK.min(kc - c0);
            let s = row * k + kb + c0;
            let t = &mut tmp[..len];
            match w {
                WeightRef::F32(ws) => t.copy_from_slice(&ws[s..s + len]),
                WeightRef::Bf16(ws) => t.iter_mut().zip(&ws[s..s + len]).for_each(|(d, &b)| *d = bf16_to_f32(b)),
                WeightRef::F16(ws) => {
                    use half::slice::HalfFloatSliceExt;
                    let h: &[half::f16] = bytemuck::cast_slice(&ws[s..s + len]);
                    h.convert_to_f32_slice(t);
                }
            }
            for (kk, &v) in t.iter().enumerate() {
                panel[(c0 + kk) * nr + j] = v;
            }
        }
    }
}

/// The bf16-pair B block (the scalar twin of `pack512::pack_b_bf16_pairs_nr32`, which the GEMM runs):
/// rows as [`pack_b_f32`], depth in pairs `kb..kb+kc` (of `⌈k/2⌉`):
/// `dst[(p * kc + kp) * nr + j] = w[row, 2kp] | w[row, 2kp+1] << 16` (0 past `k`).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) fn pack_b_bf16_pairs(w: &[u16], n: usize, k: usize, n0: usize, nc: usize, kb: usize, kc: usize, nr: usize, dst: &mut [u32]) {
    for jj in 0..nc.div_ceil(nr) * nr {
        let (p, j) = (jj / nr, jj % nr);
        let panel = &mut dst[p * kc * nr..(p + 1) * kc * nr];
        let row = n0 + jj;
        if row >= n {
            for kp in 0..kc {
                panel[kp * nr + j] = 0;
            }
            continue;
        }
        let src = &w[row * k..(row + 1) * k];
        let full = (k / 2).saturating_sub(kb).min(kc);
        for kp in 0..full {
            let e = 2 * (kb + kp);
            panel[kp * nr + j] = src[e] as u32 | (src[e + 1] as u32) << 16;
        }
        for kp in full..kc {
            let e = 2 * (kb + kp);
            panel[kp * nr + j] = if e < k { src[e] as u32 } else { 0 };
        }
    }
}

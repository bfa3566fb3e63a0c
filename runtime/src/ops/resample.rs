//! Image resampling on `[C, H, W]` f32, following PyTorch's CPU kernels
//! (`F.interpolate(mode="bilinear", align_corners=False)`, `mode="area"` =
//! `adaptive_avg_pool2d`, `mode="nearest"` with `scale_factor=2`), used by the NFSP accumulated
//! latent (spec ernie5-generation §3.2), the BSQ residual encoder (§4.2) and the decoder's
//! upsampler (§4.1).
//!
//! Bilinear arithmetic (torch 2.15 `UpSampleKernel.cpp` as compiled for x86-64 with FMA, probed
//! with one-hot inputs): scale = `in as f32 / out as f32`; source = `fma(scale, d + 0.5, −0.5)`
//! clamped at 0; `i0 = ⌊source⌋`, `i1 = i0 + (i0 < in − 1)`, `λ1 = source − i0`, `λ0 = 1 − λ1`
//! (all f32; an axis whose size does not change is copied: λ = (1, 0)). Along the width a value is
//! `fma(x0, λ0, x1·λ1)`, along the height `fma(t1, λ1, t0·λ0)`. Resizes along one axis match torch
//! bit for bit; resizes along both differ from torch by at most [`BILINEAR_2D_EPS`]·ε·max|x|
//! because torch's compiled 2-D loop rounds its products in an order we could not recover from
//! probing (none of the 27 FMA contractions of the nested formula, nor a separable two-pass
//! form, reproduces it); `tests/model/vision_decoder.rs` measures the bound.

use rayon::prelude::*;

use crate::{Error, Result};

/// Largest difference from torch of a bilinear resize along both axes, in units of
/// `f32::EPSILON · max|input|`: one rounding of a value bounded by the input (0.80 measured on
/// the torch 2.15 goldens).
pub const BILINEAR_2D_EPS: f32 = 1.0;

/// One output coordinate of a linear resize: source indices and weights.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    l0: f32,
    l1: f32,
}

/// Torch's `compute_source_index_and_lambda` for output index `d` of an `n_in → n_out` axis.
fn tap(n_in: usize, n_out: usize, d: usize) -> Tap {
    if n_in == n_out {
        return Tap { i0: d, i1: d, l0: 1.0, l1: 0.0 };
    }
    let scale = n_in as f32 / n_out as f32;
    let src = scale.mul_add(d as f32 + 0.5, -0.5).max(0.0);
    let i0 = (src as usize).min(n_in - 1);
    let i1 = i0 + usize::from(i0 < n_in - 1);
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    Tap { i0, i1, l0: 1.0 - l1, l1 }
}

fn check(op: &'static str, len: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<()> {
    if len != c * h * w || ((h == 0 || w == 0) && oh * ow > 0) {
        return Err(Error::ShapeMismatch { op, expected: format!("input [{c}, {h}, {w}] non-empty"), got: format!("{len} elements") });
    }
    Ok(())
}

/// Bilinear resize `[C, H, W] → [C, OH, OW]` (align_corners = false, no antialias).
///
/// Errors: [`Error::ShapeMismatch`] when `x.len() != c·h·w` or the input is empty.
pub fn resize_bilinear(x: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    check("resize_bilinear", x.len(), c, h, w, oh, ow)?;
    let ty: Vec<Tap> = (0..oh).map(|d| tap(h, oh, d)).collect();
    let tx: Vec<Tap> = (0..ow).map(|d| tap(w, ow, d)).collect();
    let mut out = vec![0.0f32; c * oh * ow];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ci, plane)| {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for (y, t) in ty.iter().enumerate() {
            let r0 = &src[t.i0 * w..(t.i0 + 1) * w];
            let r1 = &src[t.i1 * w..(t.i1 + 1) * w];
            for (o, s) in plane[y * ow..(y + 1) * ow].iter_mut().zip(&tx) {
                let a = r0[s.i0].mul_add(s.l0, r0[s.i1] * s.l1);
                let b = r1[s.i0].mul_add(s.l0, r1[s.i1] * s.l1);
                *o = b.mul_add(t.l1, a * t.l0);
            }
        }
    });
    Ok(out)
}

/// Slow twin of [`resize_bilinear`]: every output pixel recomputes its taps (same arithmetic,
/// so the two agree bit for bit).
pub fn resize_bilinear_slow(x: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    check("resize_bilinear", x.len(), c, h, w, oh, ow)?;
    let mut out = vec![0.0f32; c * oh * ow];
    for ci in 0..c {
        for y in 0..oh {
            for xo in 0..ow {
                let (t, s) = (tap(h, oh, y), tap(w, ow, xo));
                let at = |yy: usize, xx: usize| x[(ci * h + yy) * w + xx];
                let a = at(t.i0, s.i0).mul_add(s.l0, at(t.i0, s.i1) * s.l1);
                let b = at(t.i1, s.i0).mul_add(s.l0, at(t.i1, s.i1) * s.l1);
                out[(ci * oh + y) * ow + xo] = b.mul_add(t.l1, a * t.l0);
            }
        }
    }
    Ok(out)
}

/// Area resize `[C, H, W] → [C, OH, OW]` = `adaptive_avg_pool2d`: output cell `(i, j)` averages
/// rows `⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉` and the matching columns, summing row by row in f32 and
/// dividing by the row count, then by the column count (torch's CPU kernel). torch computes a
/// 1×1 output with `mean` (a vectorised cascade sum), so that case differs from it by up to
/// `f32::EPSILON · max|input|` (3 ulp of the mean measured); every other size is bit-exact.
///
/// Errors: [`Error::ShapeMismatch`] when `x.len() != c·h·w` or the input is empty.
pub fn resize_area(x: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    check("resize_area", x.len(), c, h, w, oh, ow)?;
    let ry: Vec<(usize, usize)> = (0..oh).map(|i| (i * h / oh, ((i + 1) * h).div_ceil(oh))).collect();
    let rx: Vec<(usize, usize)> = (0..ow).map(|j| (j * w / ow, ((j + 1) * w).div_ceil(ow))).collect();
    let mut out = vec![0.0f32; c * oh * ow];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ci, plane)| {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for (i, &(y0, y1)) in ry.iter().enumerate() {
            for (j, &(x0, x1)) in rx.iter().enumerate() {
                let mut sum = 0.0f32;
                for row in src[y0 * w..y1 * w].chunks(w) {
                    for &v in &row[x0..x1] {
                        sum += v;
                    }
                }
                plane[i * ow + j] = sum / (y1 - y0) as f32 / (x1 - x0) as f32;
            }
        }
    });
    Ok(out)
}

/// Slow twin of [`resize_area`]: the average from its definition, in f64 (agrees to an ulp or
/// two, not bitwise).
pub fn resize_area_slow(x: &[f32], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<Vec<f32>> {
    check("resize_area", x.len(), c, h, w, oh, ow)?;
    let mut out = vec![0.0f32; c * oh * ow];
    for ci in 0..c {
        for i in 0..oh {
            for j in 0..ow {
                let (y0, y1) = ((i * h) / oh, ((i + 1) * h).div_ceil(oh));
                let (x0, x1) = ((j * w) / ow, ((j + 1) * w).div_ceil(ow));
                let mut sum = 0.0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += x[(ci * h + yy) * w + xx] as f64;
                    }
                }
                out[(ci * oh + i) * ow + j] = (sum / ((y1 - y0) * (x1 - x0)) as f64) as f32;
            }
        }
    }
    Ok(out)
}

/// Nearest-neighbour 2× upsampling `[C, H, W] → [C, 2H, 2W]` (`F.interpolate(scale_factor=2,
/// mode="nearest")`: output `(y, x)` copies input `(y/2, x/2)`), the decoder's `Upsample2D`.
///
/// Errors: [`Error::ShapeMismatch`] when `x.len() != c·h·w`.
pub fn upsample_nearest2x(x: &[f32], c: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    check("upsample_nearest2x", x.len(), c, h, w, 2 * h, 2 * w)?;
    let (oh, ow) = (2 * h, 2 * w);
    let mut out = vec![0.0f32; c * oh * ow];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(ow).enumerate().for_each(|(r, orow)| {
        let (ci, y) = (r / oh, r % oh);
        let src = &x[(ci * h + y / 2) * w..(ci * h + y / 2 + 1) * w];
        for (pair, &v) in orow.chunks_mut(2).zip(src) {
            pair[0] = v;
            pair[1] = v;
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 263) as f32 - 131.0) / 37.0).collect()
    }

    #[test]
    fn bilinear_fast_equals_slow_bitwise() {
        for &(c, h, w, oh, ow) in &[(2, 4, 4, 8, 8), (3, 3, 5, 7, 11), (1, 8, 8, 3, 3), (2, 13, 9, 5, 6), (1, 1, 1, 4, 4), (2, 5, 3, 5, 3)]
        {
            let x = data(c * h * w);
            assert_eq!(resize_bilinear(&x, c, h, w, oh, ow).unwrap(), resize_bilinear_slow(&x, c, h, w, oh, ow).unwrap());
        }
    }

    #[test]
    fn bilinear_known_values() {
        // [0, 1] → 8 along the width: λ1 = 0, 0, 1/8, 3/8, 5/8, 7/8, 1, 1 (torch prints the same).
        let y = resize_bilinear(&[0.0, 1.0], 1, 1, 2, 1, 8).unwrap();
        assert_eq!(y, vec![0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0]);
        // Same size is a copy.
        let x = data(12);
        assert_eq!(resize_bilinear(&x, 1, 3, 4, 3, 4).unwrap(), x);
    }

    #[test]
    fn area_fast_matches_slow_and_known_values() {
        for &(c, h, w, oh, ow) in &[(2, 8, 8, 4, 4), (1, 7, 5, 3, 2), (2, 9, 13, 4, 5), (1, 6, 6, 1, 1), (1, 3, 3, 5, 4)] {
            let x = data(c * h * w);
            let a = resize_area(&x, c, h, w, oh, ow).unwrap();
            let b = resize_area_slow(&x, c, h, w, oh, ow).unwrap();
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-5 * q.abs().max(1.0), "{p} vs {q}");
            }
        }
        let y = resize_area(&[1.0, 2.0, 3.0, 4.0], 1, 2, 2, 1, 1).unwrap();
        assert_eq!(y, vec![2.5]);
    }

    #[test]
    fn nearest_doubles() {
        let y = upsample_nearest2x(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1, 2, 3).unwrap();
        assert_eq!(y, vec![1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3., 4., 4., 5., 5., 6., 6., 4., 4., 5., 5., 6., 6.]);
        assert!(upsample_nearest2x(&[0.0; 5], 1, 2, 3).is_err());
        assert!(resize_bilinear(&[0.0; 5], 1, 2, 3, 4, 4).is_err());
        assert!(resize_area(&[], 1, 0, 0, 1, 1).is_err());
    }
}

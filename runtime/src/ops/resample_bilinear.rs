//! Torch-exact bilinear resampling (`F.interpolate(mode="bilinear", align_corners=False)`, no
//! antialias) and the 1×1 area pool, for the NFSP loop's accumulated latent (spec
//! `ernie5-generation.md` §3.2). It sits beside `ops/resample.rs` (the image decoder's bilinear /
//! area family) because the two are exact in different places: this plain-f32 form reproduces
//! torch on the small grids of the NFSP schedule (the latent goldens are bit-equal), the FMA form
//! in `resample.rs` reproduces torch's one-axis resizes of larger planes. torch's compiled kernel
//! evidently rounds differently by path (scalar tail vs vectorised body); one op that picks the
//! form the way torch does would serve both and is the TODO below.
//!
//! torch's CPU kernel (`UpSampleKernel.cpp`, `HelperInterpLinear`), restated: with
//! `scale = in / out` in f32, source `x = max(scale·(dst + 0.5) − 0.5, 0)`, `i0 = min(⌊x⌋, in−1)`,
//! `i1 = i0 + (i0 < in−1)`, `λ1 = clamp(x − i0, 0, 1)`, `λ0 = 1 − λ1`; the output is
//! `λ0h·(λ0w·a + λ1w·b) + λ1h·(λ0w·c + λ1w·d)` evaluated in that order, in f32. This is
//! bit-exact to torch 2.15 on the NFSP grids (1..3 → 4 up, 4 → 2, 3 down: the latent goldens);
//! on some other sizes it is up to a few ulps off (`tests/model/nfsp.rs`).
// TODO(#15): bit-exact for every size (torch's weight / accumulation order in its CPU kernel).

use crate::{Error, Result};

/// Source indices and weights of one output axis: `(i0, i1, λ0, λ1)` per output index.
fn axis_weights(inp: usize, out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|dst| {
            let x = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (x.floor() as usize).min(inp - 1);
            let i1 = i0 + usize::from(i0 < inp - 1);
            let l1 = (x - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

fn check(x: &[f32], c: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Result<()> {
    if h == 0 || w == 0 || oh == 0 || ow == 0 || x.len() != c * h * w {
        return Err(Error::ShapeMismatch {
            op: "resample_bilinear",
            expected: format!("[{c}, {h}, {w}] → [{c}, {oh}, {ow}], every side > 0"),
            got: x.len().to_string(),
        });
    }
    Ok(())
}

/// Resamples `x` (`[c, h, w]` f32, row-major) to `[c, oh, ow]` as torch's bilinear
/// `F.interpolate(size=(oh, ow), align_corners=False)` does (module docs: exactness).
///
/// Errors: [`Error::ShapeMismatch`] when `x.len() != c·h·w` or a side is 0.
pub fn resample_bilinear(x: &[f32], c: usize, hw: (usize, usize), out: (usize, usize)) -> Result<Vec<f32>> {
    check(x, c, hw, out)?;
    let ((h, w), (oh, ow)) = (hw, out);
    let (wh, ww) = (axis_weights(h, oh), axis_weights(w, ow));
    let mut y = Vec::with_capacity(c * oh * ow); // [c, oh, ow]
    for plane in x.chunks_exact(h * w) {
        for &(h0, h1, a0, a1) in &wh {
            let (r0, r1) = (&plane[h0 * w..(h0 + 1) * w], &plane[h1 * w..(h1 + 1) * w]);
            for &(w0, w1, b0, b1) in &ww {
                let t0 = r0[w0] * b0 + r0[w1] * b1;
                let t1 = r1[w0] * b0 + r1[w1] * b1;
                y.push(t0 * a0 + t1 * a1);
            }
        }
    }
    Ok(y)
}

/// Slow twin of [`resample_bilinear`]: every output element from the formula, nothing shared
/// between elements (the same f32 operation order, so the twins agree exactly).
pub fn resample_bilinear_slow(x: &[f32], c: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let src = |dst: usize, inp: usize, out: usize| {
        let s = (inp as f32 / out as f32 * (dst as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(inp - 1);
        let l1 = (s - i0 as f32).clamp(0.0, 1.0);
        (i0, if i0 + 1 < inp { i0 + 1 } else { i0 }, 1.0 - l1, l1)
    };
    let mut y = vec![0.0f32; c * oh * ow];
    for ch in 0..c {
        for i in 0..oh {
            for j in 0..ow {
                let (h0, h1, a0, a1) = src(i, h, oh);
                let (w0, w1, b0, b1) = src(j, w, ow);
                let at = |r: usize, q: usize| x[(ch * h + r) * w + q];
                let top = at(h0, w0) * b0 + at(h0, w1) * b1;
                let bottom = at(h1, w0) * b0 + at(h1, w1) * b1;
                y[(ch * oh + i) * ow + j] = top * a0 + bottom * a1;
            }
        }
    }
    y
}

/// Area pooling of `x` (`[c, h, w]`) to 1×1 (`F.interpolate(mode="area", size=(1, 1))` =
/// adaptive average pooling): per channel the row-major f32 sum divided by `h·w` → `[c]`.
///
/// Errors: [`Error::ShapeMismatch`] when `x.len() != c·h·w` or a side is 0.
pub fn area_pool_1x1(x: &[f32], c: usize, hw: (usize, usize)) -> Result<Vec<f32>> {
    check(x, c, hw, (1, 1))?;
    let n = hw.0 * hw.1;
    Ok(x.chunks_exact(n).map(|p| p.iter().sum::<f32>() / n as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy_and_constant_stays_constant() {
        let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.37 - 1.0).collect();
        assert_eq!(resample_bilinear(&x, 2, (3, 4), (3, 4)).unwrap(), x);
        let c = vec![0.25f32; 9];
        assert!(resample_bilinear(&c, 1, (3, 3), (7, 5)).unwrap().iter().all(|&v| v == 0.25));
    }

    #[test]
    fn fast_matches_slow_twin() {
        let x: Vec<f32> = (0..3 * 5 * 7).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        for out in [(1, 1), (2, 3), (5, 7), (9, 13), (16, 4)] {
            assert_eq!(resample_bilinear(&x, 3, (5, 7), out).unwrap(), resample_bilinear_slow(&x, 3, (5, 7), out), "{out:?}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(resample_bilinear(&[1.0; 5], 1, (2, 3), (4, 4)).is_err());
        assert!(resample_bilinear(&[1.0; 6], 1, (2, 3), (0, 4)).is_err());
        assert!(area_pool_1x1(&[1.0; 5], 2, (1, 3)).is_err());
    }
}

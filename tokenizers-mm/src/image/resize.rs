//! Pillow's convolution resampling (`Image.resize` for 8-bit images), bit for bit.
//!
//! Re-implemented from the algorithm of Pillow 13.0.0 `src/libImaging/Resample.c` (sdist)
//! (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc`,
//! `ImagingResampleVertical_8bpc`, `ImagingResampleInner`):
//!
//! 1. Per output coordinate `xx` (per axis): `scale = in / out`, `filterscale = max(scale, 1)`,
//!    `support = filter_support · filterscale` (the kernel widens when downscaling: this is the
//!    antialiasing), `center = (xx + 0.5) · scale`, taps `xmin = trunc(center − support + 0.5)`
//!    clamped to ≥ 0 and `xmax = trunc(center + support + 0.5)` clamped to `in`; weight of tap
//!    `x` is `filter((x + xmin − center + 0.5) / filterscale)`, then all weights of `xx` are
//!    divided by their sum — all in f64.
//! 2. Weights become fixed point with `PRECISION_BITS = 32 − 8 − 2 = 22` fractional bits,
//!    rounding half away from zero: `trunc(w · 2²² ± 0.5)`.
//! 3. Two separable passes, each accumulating `2²¹ + Σ pixel · weight` in i32 and storing
//!    `clip(acc >> 22)` as **u8** — the intermediate image is 8-bit, which is why a float
//!    two-pass or single-pass resize differs by up to ~20 levels. Horizontal first (on just the
//!    rows the vertical pass will read), except when the height shrinks by more than twice as
//!    many pixels as the width (Pillow 13's speed rule in `ImagingResampleInner`; see
//!    [`resize`]).
//! 4. An axis whose size does not change is skipped; same size on both axes is a copy.
//!
//! Bicubic is Keys' cubic convolution with `a = −0.5`, support 2 (Pillow's `bicubic_filter`).
//! Worked example: 4 → 2 pixels bicubic: scale 2, support 4, output 0 has center 1.0, taps
//! 0..4 (xmin = trunc(−2.5) = −2 → 0, xmax = trunc(5.5) = 5 → 4), weights f((x − 0.5)/2) for
//! x = 0..3 = f(−0.25), f(0.25), f(0.75), f(1.25) = 0.8672, 0.8672, 0.2266, −0.0703, each divided
//! by their sum 1.8906, then ×2²² and rounded.

use super::decode::RgbImage;

/// Fractional bits of the fixed-point weights (Pillow `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter (the `resample` of `Image.resize`; `NEAREST` is not a
/// convolution and is not supported here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.Resampling.BOX` (4): support 0.5.
    Box,
    /// `Image.Resampling.BILINEAR` (2): triangle, support 1.
    Bilinear,
    /// `Image.Resampling.HAMMING` (5): Hamming-windowed sinc, support 1.
    Hamming,
    /// `Image.Resampling.BICUBIC` (3): Keys cubic, a = −0.5, support 2.
    Bicubic,
    /// `Image.Resampling.LANCZOS` (1): 3-lobe Lanczos, support 3.
    Lanczos,
}

impl Filter {
    /// From PIL's integer code (`resample` in preprocessor_config.json); `None` for NEAREST (0)
    /// and unknown codes.
    pub fn from_pil_code(code: i64) -> Option<Filter> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The kernel, evaluated with Pillow's exact operation order (f64).
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow multiplies by float constants 0.54f / 0.46f.
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let x = x * std::f64::consts::PI;
                        x.sin() / x
                    }
                };
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point taps of one axis: output `i` reads `n_i = bounds[i].1` inputs starting at
/// `bounds[i].0` with weights `weights[i * ksize ..][.. n_i]` (Q22).
struct Taps {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size` (both ≥ 1).
fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    // Pillow computes the box in f32 (`float in0, in1`): exact for any size below 2^24.
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero; Rust `as` does too (saturating).
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
        let n = xmax.min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..xx * ksize + n];
        for (dst, &w) in row.iter_mut().zip(&k[..n]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let scaled = w * f64::from(1u32 << PRECISION_BITS);
            *dst = if w < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
        }
        bounds.push((xmin, n));
    }
    Taps { ksize, bounds, weights }
}

/// Pillow's `clip8`: `acc >> 22` clamped to 0..=255 (the lookup table covers −640..639).
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize an RGB8 image to `out_w × out_h` exactly as Pillow 13's
/// `Image.resize((out_w, out_h), filter)` does for mode "RGB" (no `reducing_gap`, full box).
///
/// Input `[H, W, 3]` u8, output `[out_h, out_w, 3]` u8. A zero size returns an empty image.
/// Pass order follows `ImagingResampleInner`: horizontal first, unless the height shrinks by
/// more than twice as many pixels as the width does (`in_h − out_h > 0` and
/// `in_h − out_h > 2 · (in_w − out_w)`, signed) — then vertical first. The order matters
/// (the intermediate is u8): the 1000 × 40 → 1008 × 28 WebP strip of the corpus differs by up
/// to 2 levels between the two orders.
pub fn resize(img: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == 0 || oh == 0 || in_w == 0 || in_h == 0 || img.data.len() != in_w * in_h * 3 {
        return RgbImage { width: 0, height: 0, data: Vec::new() };
    }
    let need_h = ow != in_w;
    let need_v = oh != in_h;
    if !need_h && !need_v {
        return img.clone();
    }
    let dh = in_h as i64 - oh as i64;
    let dw = in_w as i64 - ow as i64;
    let horizontal_first = !(dh > 0 && dh > dw * 2);
    let data = if horizontal_first {
        let vert = need_v.then(|| taps(in_h, oh, filter));
        // Rows of the source the vertical pass reads (all of them without a vertical pass).
        let (y_first, y_last) = match &vert {
            Some(v) => (v.bounds.first().map_or(0, |b| b.0), v.bounds.last().map_or(in_h, |b| b.0 + b.1)),
            None => (0, in_h),
        };
        let tmp = if need_h {
            horizontal_pass(&img.data[y_first * in_w * 3..y_last * in_w * 3], in_w, &taps(in_w, ow, filter))
        } else {
            img.data.clone()
        };
        match vert {
            Some(v) => vertical_pass(&tmp, if need_h { ow } else { in_w }, &v, y_first),
            None => tmp,
        }
    } else {
        let tmp = vertical_pass(&img.data, in_w, &taps(in_h, oh, filter), 0);
        if need_h {
            horizontal_pass(&tmp, in_w, &taps(in_w, ow, filter))
        } else {
            tmp
        }
    };
    RgbImage { width: out_w, height: out_h, data }
}

/// One horizontal pass over whole rows: `[rows, in_w, 3]` → `[rows, out_w, 3]` u8.
fn horizontal_pass(src: &[u8], in_w: usize, hz: &Taps) -> Vec<u8> {
    let ow = hz.bounds.len();
    let rows = src.len() / (in_w * 3);
    let mut out = vec![0u8; rows * ow * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for (src_row, out_row) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(ow * 3)) {
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = hz.bounds[xx];
            let w = &hz.weights[xx * hz.ksize..xx * hz.ksize + n];
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (p, &k) in src_row[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(w) {
                s0 = s0.wrapping_add(i32::from(p[0]).wrapping_mul(k));
                s1 = s1.wrapping_add(i32::from(p[1]).wrapping_mul(k));
                s2 = s2.wrapping_add(i32::from(p[2]).wrapping_mul(k));
            }
            px.copy_from_slice(&[clip8(s0), clip8(s1), clip8(s2)]);
        }
    }
    out
}

/// One vertical pass: `src` holds rows `row0..` of a `width`-pixel-wide image; output
/// `[out_h, width, 3]` u8 with `out_h = vert.bounds.len()`.
fn vertical_pass(src: &[u8], width: usize, vert: &Taps, row0: usize) -> Vec<u8> {
    let stride = width * 3;
    let oh = vert.bounds.len();
    let mut out = vec![0u8; oh * stride];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, n) = vert.bounds[yy];
        let w = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        acc.fill(half);
        for (i, &k) in w.iter().enumerate() {
            let y = ymin + i - row0;
            for (a, &p) in acc.iter_mut().zip(&src[y * stride..(y + 1) * stride]) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(k));
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(1, 56), (512, 504), (4, 2), (1000, 28), (27, 56), (640, 28)] {
            let t = taps(i, o, Filter::Bicubic);
            for (xx, &(_, n)) in t.bounds.iter().enumerate() {
                let s: i32 = t.weights[xx * t.ksize..xx * t.ksize + n].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{i}->{o} at {xx}: {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_raw(7, 5, vec![77; 7 * 5 * 3]).unwrap();
        for (w, h) in [(28, 28), (3, 2), (7, 11), (1, 1)] {
            let r = resize(&img, w, h, Filter::Bicubic);
            assert_eq!((r.width, r.height), (w, h));
            assert!(r.data.iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn worked_example_four_to_two() {
        let t = taps(4, 2, Filter::Bicubic);
        assert_eq!(t.bounds, vec![(0, 4), (0, 4)]);
        let f = |x: f64| Filter::Bicubic.eval(x);
        let raw = [f(-0.25), f(0.25), f(0.75), f(1.25)];
        assert_eq!(raw, [0.8671875, 0.8671875, 0.2265625, -0.0703125]);
        let q: Vec<i32> = raw.iter().map(|w| ((w / 1.890625) * 4194304.0 + if *w < 0.0 { -0.5 } else { 0.5 }) as i32).collect();
        assert_eq!(&t.weights[..4], &q[..]);
    }
}

//! 2-D convolution on one image `[C, H, W]` f32 (PyTorch `nn.Conv2d` with `groups = 1`,
//! `dilation = 1`), the workhorse of the image decoder (spec ernie5-generation §4).
//!
//! Fast path: im2col into a `[C·kh·kw, rows·W_out]` column block (a band of output rows at a
//! time, so a 512² image never materialises a gigabyte of columns), then one `gemm` call
//! `out[O, rows·W_out] += W[O, C·kh·kw] · col`. A 1×1, stride-1, unpadded convolution skips
//! im2col: it is the plain GEMM `out[O, H·W] = W[O, C] · x[C, H·W]`. [`conv2d_slow`] is the
//! obvious seven-loop twin in f64.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::{Error, Result};

/// Upper bound on one im2col band, in f32 elements (16 MiB): bounds scratch memory at any size.
const COL_BAND_ELEMS: usize = 4 << 20;

/// Zero padding added on each side before the convolution, in pixels. PyTorch's symmetric
/// `padding=p` is `Padding::same(p)`; diffusers' `Downsample2D` pads `(0, 1, 0, 1)` =
/// (left, right, top, bottom).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    /// Columns of zeros before the first input column.
    pub left: usize,
    /// Columns of zeros after the last input column.
    pub right: usize,
    /// Rows of zeros above the first input row.
    pub top: usize,
    /// Rows of zeros below the last input row.
    pub bottom: usize,
}

impl Padding {
    /// `p` pixels on every side.
    pub const fn same(p: usize) -> Padding {
        Padding { left: p, right: p, top: p, bottom: p }
    }
}

/// The geometry of one convolution: weight `[out_channels, in_channels, kernel_h, kernel_w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Input channels C_in.
    pub in_channels: usize,
    /// Output channels C_out.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Same stride along both axes (≥ 1).
    pub stride: usize,
    /// Zero padding per side.
    pub pad: Padding,
}

impl Conv2dSpec {
    /// Output size for an `h × w` input: `(h + top + bottom − kh) / stride + 1` (floor), likewise
    /// for the width.
    ///
    /// Errors: [`Error::ShapeMismatch`] when the stride is 0, the kernel is empty, or the padded
    /// input is smaller than the kernel.
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let ph = h + self.pad.top + self.pad.bottom;
        let pw = w + self.pad.left + self.pad.right;
        if self.stride == 0 || self.kernel_h == 0 || self.kernel_w == 0 || ph < self.kernel_h || pw < self.kernel_w {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                expected: format!("stride ≥ 1 and padded input ≥ kernel {}×{}", self.kernel_h, self.kernel_w),
                got: format!("padded input {ph}×{pw}, stride {}", self.stride),
            });
        }
        Ok(((ph - self.kernel_h) / self.stride + 1, (pw - self.kernel_w) / self.stride + 1))
    }

    /// Elements of the weight, `O·C·kh·kw`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel_h * self.kernel_w
    }

    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.pad == Padding::default()
    }

    /// Checks the slice lengths against the spec; returns the output size.
    fn check(&self, x: &[f32], h: usize, w: usize, weight: &[f32], bias: Option<&[f32]>) -> Result<(usize, usize)> {
        let bad = |expected: String, got: String| Err(Error::ShapeMismatch { op: "conv2d", expected, got });
        if x.len() != self.in_channels * h * w {
            return bad(format!("input [{}, {h}, {w}]", self.in_channels), format!("{} elements", x.len()));
        }
        if weight.len() != self.weight_len() {
            return bad(
                format!("weight [{}, {}, {}, {}]", self.out_channels, self.in_channels, self.kernel_h, self.kernel_w),
                format!("{} elements", weight.len()),
            );
        }
        if let Some(b) = bias {
            if b.len() != self.out_channels {
                return bad(format!("bias [{}]", self.out_channels), format!("{} elements", b.len()));
            }
        }
        self.out_size(h, w)
    }
}

/// `out[o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · xpad[c, y·s + i, x·s + j]`.
///
/// `x`: `[C, H, W]`, `weight`: `[O, C, kh, kw]`, `bias`: `[O]`; returns `([O, H_out, W_out],
/// H_out, W_out)`. f32 with gemm's f32 accumulation (PyTorch's CPU conv differs in summation
/// order only: a few ulp).
///
/// Errors: [`Error::ShapeMismatch`] for slice lengths that disagree with `spec` or an input
/// smaller than the kernel.
pub fn conv2d(spec: &Conv2dSpec, x: &[f32], h: usize, w: usize, weight: &[f32], bias: Option<&[f32]>) -> Result<(Vec<f32>, usize, usize)> {
    let (oh, ow) = spec.check(x, h, w, weight, bias)?;
    let o = spec.out_channels;
    let np = oh * ow;
    let mut out = vec![0.0f32; o * np]; // [O, H_out·W_out]
    if let Some(b) = bias {
        out.par_chunks_mut(np.max(1)).zip(b.par_iter()).for_each(|(row, &bv)| row.iter_mut().for_each(|v| *v = bv));
    }
    if o == 0 || np == 0 {
        return Ok((out, oh, ow));
    }
    let k = spec.in_channels * spec.kernel_h * spec.kernel_w;
    if k == 0 {
        return Ok((out, oh, ow));
    }
    if spec.is_pointwise() {
        // SAFETY: weight is [O, K], x is [K, np], out is [O, np]: lengths checked in `check`.
        unsafe { gemm_acc(o, np, k, weight, x, np, out.as_mut_ptr(), np) };
        return Ok((out, oh, ow));
    }
    let band_rows = (COL_BAND_ELEMS / (k * ow)).clamp(1, oh);
    let mut col = vec![0.0f32; k * band_rows * ow]; // [K, band_rows·W_out]
    let mut y0 = 0;
    while y0 < oh {
        let rows = band_rows.min(oh - y0);
        let p = rows * ow;
        im2col_band(spec, x, h, w, ow, y0, rows, &mut col[..k * p]);
        // SAFETY: out has O rows of stride np; this band writes columns y0·ow .. y0·ow + p < np.
        unsafe { gemm_acc(o, p, k, weight, &col[..k * p], p, out.as_mut_ptr().add(y0 * ow), np) };
        y0 += rows;
    }
    Ok((out, oh, ow))
}

/// Fills `col[(c·kh + i)·kw + j, r·W_out + xo] = xpad[c, (y0 + r)·s + i, xo·s + j]` for output
/// rows `y0 .. y0 + rows`.
#[allow(clippy::too_many_arguments)] // the band geometry, spelled out
fn im2col_band(spec: &Conv2dSpec, x: &[f32], h: usize, w: usize, ow: usize, y0: usize, rows: usize, col: &mut [f32]) {
    let (kh, kw, s) = (spec.kernel_h, spec.kernel_w, spec.stride);
    let p = rows * ow;
    col.par_chunks_mut(p).enumerate().for_each(|(kk, dst)| {
        let c = kk / (kh * kw);
        let i = (kk / kw) % kh;
        let j = kk % kw;
        let plane = &x[c * h * w..(c + 1) * h * w];
        for r in 0..rows {
            let drow = &mut dst[r * ow..(r + 1) * ow];
            let yi = ((y0 + r) * s + i) as isize - spec.pad.top as isize;
            if yi < 0 || yi >= h as isize {
                drow.iter_mut().for_each(|v| *v = 0.0);
                continue;
            }
            let src = &plane[yi as usize * w..(yi as usize + 1) * w];
            for (xo, d) in drow.iter_mut().enumerate() {
                let xi = (xo * s + j) as isize - spec.pad.left as isize;
                *d = if xi < 0 || xi >= w as isize { 0.0 } else { src[xi as usize] };
            }
        }
    });
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]` with row strides `rhs_rs` and `dst_rs` (column stride 1).
///
/// # Safety
/// `lhs` holds `m·k`, `rhs` holds `(k−1)·rhs_rs + n`, and `dst` points to `(m−1)·dst_rs + n`
/// writable elements that nothing else touches during the call.
#[allow(clippy::too_many_arguments)] // a BLAS-style signature
unsafe fn gemm_acc(m: usize, n: usize, k: usize, lhs: &[f32], rhs: &[f32], rhs_rs: usize, dst: *mut f32, dst_rs: usize) {
    debug_assert!(lhs.len() >= m * k && rhs.len() >= (k - 1) * rhs_rs + n);
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        true,
        lhs.as_ptr(),
        1,
        k as isize,
        rhs.as_ptr(),
        1,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::Rayon(rayon::current_num_threads()),
    );
}

/// Slow twin of [`conv2d`]: the definition, one output at a time, accumulating in f64.
pub fn conv2d_slow(
    spec: &Conv2dSpec,
    x: &[f32],
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, usize, usize)> {
    let (oh, ow) = spec.check(x, h, w, weight, bias)?;
    let (c_in, kh, kw, s) = (spec.in_channels, spec.kernel_h, spec.kernel_w, spec.stride);
    let mut out = vec![0.0f32; spec.out_channels * oh * ow];
    for o in 0..spec.out_channels {
        for yo in 0..oh {
            for xo in 0..ow {
                let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                for c in 0..c_in {
                    for i in 0..kh {
                        for j in 0..kw {
                            let yi = (yo * s + i) as isize - spec.pad.top as isize;
                            let xi = (xo * s + j) as isize - spec.pad.left as isize;
                            if yi < 0 || xi < 0 || yi >= h as isize || xi >= w as isize {
                                continue;
                            }
                            let wv = weight[((o * c_in + c) * kh + i) * kw + j] as f64;
                            acc += wv * x[(c * h + yi as usize) * w + xi as usize] as f64;
                        }
                    }
                }
                out[(o * oh + yo) * ow + xo] = acc as f32;
            }
        }
    }
    Ok((out, oh, ow))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) from a seed (no RNG crate needed).
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// f32 accumulation of K products: rounding grows like √K·ε relative to the output scale
    /// (8× margin); an indexing bug shows up as an O(1) error.
    fn tol(k: usize, scale: f32) -> f32 {
        8.0 * f32::EPSILON * (k as f32).sqrt() * (1.0 + scale)
    }

    fn check(spec: Conv2dSpec, h: usize, w: usize, with_bias: bool) {
        let x = data(spec.in_channels * h * w, 1);
        let wt = data(spec.weight_len(), 2);
        let b = data(spec.out_channels, 3);
        let bias = with_bias.then_some(&b[..]);
        let (fast, oh, ow) = conv2d(&spec, &x, h, w, &wt, bias).unwrap();
        let (slow, oh2, ow2) = conv2d_slow(&spec, &x, h, w, &wt, bias).unwrap();
        assert_eq!((oh, ow), (oh2, ow2));
        assert_eq!(fast.len(), spec.out_channels * oh * ow);
        let max = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = slow.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let k = spec.in_channels * spec.kernel_h * spec.kernel_w;
        assert!(max < tol(k, scale), "{spec:?} on {h}×{w}: max |Δ| {max}");
    }

    fn spec(c: usize, o: usize, k: usize, stride: usize, pad: Padding) -> Conv2dSpec {
        Conv2dSpec { in_channels: c, out_channels: o, kernel_h: k, kernel_w: k, stride, pad }
    }

    #[test]
    fn fast_matches_slow_on_awkward_shapes() {
        check(spec(3, 5, 3, 1, Padding::same(1)), 7, 5, true);
        check(spec(4, 6, 3, 2, Padding { left: 0, right: 1, top: 0, bottom: 1 }), 9, 6, true);
        check(spec(5, 7, 1, 1, Padding::default()), 3, 11, true); // the pointwise GEMM
        check(spec(5, 7, 1, 1, Padding::default()), 1, 1, false);
        check(spec(2, 3, 1, 2, Padding::same(1)), 5, 4, true); // 1×1 but strided and padded: im2col
        check(spec(3, 2, 3, 1, Padding::same(0)), 3, 3, false); // output 1×1
        check(spec(1, 1, 3, 3, Padding { left: 2, right: 0, top: 1, bottom: 3 }), 4, 5, true);
        let rect = Conv2dSpec { in_channels: 3, out_channels: 4, kernel_h: 2, kernel_w: 3, stride: 1, pad: Padding::same(1) };
        check(rect, 6, 7, true);
    }

    #[test]
    fn bands_cover_tall_images() {
        // K·W_out large enough that a band holds fewer rows than the output: several gemm calls.
        let s = spec(64, 3, 3, 1, Padding::same(1));
        let rows = COL_BAND_ELEMS / (64 * 9 * 300);
        check(s, rows * 2 + 3, 300, true);
    }

    #[test]
    fn known_values() {
        // 1 channel 3×3 of 1..9, 2×2 kernel of ones, stride 1, no padding: window sums.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let s = Conv2dSpec { in_channels: 1, out_channels: 1, kernel_h: 2, kernel_w: 2, stride: 1, pad: Padding::default() };
        let (y, oh, ow) = conv2d(&s, &x, 3, 3, &[1.0; 4], Some(&[0.5])).unwrap();
        assert_eq!((oh, ow), (2, 2));
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = spec(2, 2, 3, 1, Padding::default());
        assert!(conv2d(&s, &[0.0; 8], 2, 2, &[0.0; 36], None).is_err()); // input smaller than kernel
        assert!(conv2d(&s, &[0.0; 7], 2, 2, &[0.0; 36], None).is_err()); // wrong input length
        assert!(conv2d(&s, &[0.0; 18], 3, 3, &[0.0; 35], None).is_err()); // wrong weight length
        assert!(conv2d(&s, &[0.0; 18], 3, 3, &[0.0; 36], Some(&[0.0])).is_err()); // wrong bias length
        let z = spec(2, 2, 3, 0, Padding::default());
        assert!(conv2d(&z, &[0.0; 18], 3, 3, &[0.0; 36], None).is_err()); // stride 0
    }
}

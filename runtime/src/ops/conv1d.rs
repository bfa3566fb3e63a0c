//! 1-D convolution and transposed convolution on channel-major `[C, T]` f32 slices (PyTorch
//! `nn.Conv1d` / `nn.ConvTranspose1d` with `padding = 0`: callers pad, as Mimi's causal /
//! replicate rules differ per layer).
//!
//! Fast path: im2col + the `gemm` crate, tiled over time so the column buffer stays bounded
//! (about [`COL_BUDGET`] floats) whatever the clip length; depthwise layers (one input and one
//! output channel per group) take a direct loop. Each op has a slow, obvious twin (`*_slow`,
//! f64 accumulation from the definition) tested against it below.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::{Error, Result};

/// Floats of im2col scratch per time tile (1 MiB): keeps memory flat on long clips.
const COL_BUDGET: usize = 1 << 18;
/// Work (multiply-adds) above which one gemm call uses rayon internally.
const PAR_MIN_FLOPS: usize = 1 << 20;

/// Shape of a 1-D (transposed) convolution.
///
/// Weights are PyTorch's layouts: conv `[c_out, c_in / groups, kernel]`, transposed conv
/// `[c_in, c_out / groups, kernel]`. `dilation` must be 1 for the transposed conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel length in samples.
    pub kernel: usize,
    /// Stride in samples (≥ 1).
    pub stride: usize,
    /// Dilation (≥ 1; 1 for the transposed conv).
    pub dilation: usize,
    /// Channel groups (`c_in` for a depthwise conv).
    pub groups: usize,
}

impl Conv1dSpec {
    /// Checks that every size is positive and the groups divide both channel counts.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming the bad field.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let s = self;
        if s.c_in == 0 || s.c_out == 0 || s.kernel == 0 || s.stride == 0 || s.dilation == 0 || s.groups == 0 {
            return Err(shape_err(op, "every size > 0", format!("{s:?}")));
        }
        if s.c_in % s.groups != 0 || s.c_out % s.groups != 0 {
            return Err(shape_err(op, "groups dividing c_in and c_out", format!("{s:?}")));
        }
        Ok(())
    }

    /// `dilation · (kernel − 1) + 1`: the span of input one output sample reads.
    pub fn effective_kernel(&self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// Output length of the (unpadded) convolution over `t_in` samples.
    ///
    /// Errors: [`Error::ShapeMismatch`] when `t_in` is shorter than the effective kernel.
    pub fn conv_out_len(&self, t_in: usize) -> Result<usize> {
        let eff = self.effective_kernel();
        if t_in < eff {
            return Err(shape_err("conv1d", format!("at least {eff} input samples"), format!("{t_in}")));
        }
        Ok((t_in - eff) / self.stride + 1)
    }

    /// Output length of the transposed convolution: `(t_in − 1) · stride + kernel` (0 for 0).
    pub fn conv_transpose_out_len(&self, t_in: usize) -> usize {
        if t_in == 0 {
            0
        } else {
            (t_in - 1) * self.stride + self.kernel
        }
    }
}

fn shape_err(op: &'static str, expected: impl Into<String>, got: impl Into<String>) -> Error {
    Error::ShapeMismatch { op, expected: expected.into(), got: got.into() }
}

fn check_lens(op: &'static str, x: usize, xe: usize, w: usize, we: usize, bias: Option<&[f32]>, c_out: usize) -> Result<()> {
    if x != xe {
        return Err(shape_err(op, format!("input of {xe} floats"), format!("{x}")));
    }
    if w != we {
        return Err(shape_err(op, format!("weight of {we} floats"), format!("{w}")));
    }
    if let Some(b) = bias {
        if b.len() != c_out {
            return Err(shape_err(op, format!("bias of {c_out} floats"), format!("{}", b.len())));
        }
    }
    Ok(())
}

/// `out[co, t] = bias[co] + Σ_{ci ∈ group(co), j} w[co, ci, j] · x[ci, t·stride + j·dilation]`.
///
/// `x`: `[c_in, t_in]`, `w`: `[c_out, c_in/groups, kernel]`, `bias`: `[c_out]`; returns
/// `[c_out, t_out]` with `t_out` = [`Conv1dSpec::conv_out_len`].
///
/// Errors: [`Error::ShapeMismatch`] for a bad spec, slice lengths that disagree with it, or an
/// input shorter than the effective kernel.
pub fn conv1d(x: &[f32], t_in: usize, w: &[f32], bias: Option<&[f32]>, spec: &Conv1dSpec) -> Result<Vec<f32>> {
    spec.validate("conv1d")?;
    let s = *spec;
    let (ci_g, co_g) = (s.c_in / s.groups, s.c_out / s.groups);
    check_lens("conv1d", x.len(), s.c_in * t_in, w.len(), s.c_out * ci_g * s.kernel, bias, s.c_out)?;
    let t_out = s.conv_out_len(t_in)?;
    let mut out = vec![0.0f32; s.c_out * t_out]; // [c_out, t_out]
    if ci_g == 1 && co_g == 1 {
        // Depthwise: one input channel per output channel; a direct loop per channel.
        out.par_chunks_mut(t_out).enumerate().for_each(|(c, o)| {
            let xr = &x[c * t_in..(c + 1) * t_in];
            let wr = &w[c * s.kernel..(c + 1) * s.kernel];
            for (t, v) in o.iter_mut().enumerate() {
                let base = t * s.stride;
                *v = wr.iter().enumerate().map(|(j, &wv)| wv * xr[base + j * s.dilation]).sum();
            }
        });
    } else {
        let kk = ci_g * s.kernel; // reduction length per group
        let tile = (COL_BUDGET / kk).clamp(16, 8192).min(t_out);
        let starts: Vec<usize> = (0..t_out).step_by(tile).collect();
        // Each tile computes into its own [c_out, n] buffer (disjoint output columns are strided
        // in `out`), then is copied in.
        let single = starts.len() == 1;
        let tiles: Vec<(usize, Vec<f32>)> = starts
            .into_par_iter()
            .map(|t0| {
                let n = tile.min(t_out - t0);
                let mut col = vec![0.0f32; kk * n]; // [ci_g * kernel, n]
                let mut y = vec![0.0f32; s.c_out * n]; // [c_out, n]
                let par = if single && co_g * n * kk >= PAR_MIN_FLOPS { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
                for g in 0..s.groups {
                    for ci in 0..ci_g {
                        let xr = &x[(g * ci_g + ci) * t_in..(g * ci_g + ci + 1) * t_in];
                        for j in 0..s.kernel {
                            let row = &mut col[(ci * s.kernel + j) * n..(ci * s.kernel + j + 1) * n];
                            let off = t0 * s.stride + j * s.dilation;
                            for (tt, c) in row.iter_mut().enumerate() {
                                *c = xr[off + tt * s.stride];
                            }
                        }
                    }
                    let wg = &w[g * co_g * kk..(g + 1) * co_g * kk]; // [co_g, kk]
                    let yg = &mut y[g * co_g * n..(g + 1) * co_g * n]; // [co_g, n]
                    // SAFETY: wg is [co_g, kk], col is [kk, n], yg is [co_g, n], all row-major.
                    unsafe { gemm_rm(co_g, n, kk, yg, n, wg, 1, kk, &col, 1, n, par) };
                }
                (t0, y)
            })
            .collect();
        for (t0, y) in tiles {
            let n = y.len() / s.c_out;
            for c in 0..s.c_out {
                out[c * t_out + t0..c * t_out + t0 + n].copy_from_slice(&y[c * n..(c + 1) * n]);
            }
        }
    }
    if let Some(b) = bias {
        for (o, &bv) in out.chunks_mut(t_out.max(1)).zip(b) {
            o.iter_mut().for_each(|v| *v += bv);
        }
    }
    Ok(out)
}

/// Slow twin of [`conv1d`]: the definition, one output at a time, accumulating in f64.
pub fn conv1d_slow(x: &[f32], t_in: usize, w: &[f32], bias: Option<&[f32]>, spec: &Conv1dSpec) -> Result<Vec<f32>> {
    spec.validate("conv1d_slow")?;
    let s = *spec;
    let (ci_g, co_g) = (s.c_in / s.groups, s.c_out / s.groups);
    check_lens("conv1d_slow", x.len(), s.c_in * t_in, w.len(), s.c_out * ci_g * s.kernel, bias, s.c_out)?;
    let t_out = s.conv_out_len(t_in)?;
    let mut out = vec![0.0f32; s.c_out * t_out];
    for co in 0..s.c_out {
        let g = co / co_g;
        for t in 0..t_out {
            let mut acc = bias.map_or(0.0, |b| b[co] as f64);
            for ci in 0..ci_g {
                for j in 0..s.kernel {
                    let xi = x[(g * ci_g + ci) * t_in + t * s.stride + j * s.dilation] as f64;
                    acc += w[(co * ci_g + ci) * s.kernel + j] as f64 * xi;
                }
            }
            out[co * t_out + t] = acc as f32;
        }
    }
    Ok(out)
}

/// `out[co, t·stride + j] += Σ_{ci ∈ group(co)} x[ci, t] · w[ci, co mod (c_out/groups), j]`, plus
/// `bias[co]`: PyTorch `conv_transpose1d` with no padding and `output_padding = 0`.
///
/// `x`: `[c_in, t_in]`, `w`: `[c_in, c_out/groups, kernel]`; returns `[c_out, (t_in−1)·stride +
/// kernel]` (callers trim, as `MimiConvTranspose1d` does).
///
/// Errors: [`Error::ShapeMismatch`] for a bad spec (including `dilation != 1`) or slice lengths
/// that disagree with it.
pub fn conv_transpose1d(x: &[f32], t_in: usize, w: &[f32], bias: Option<&[f32]>, spec: &Conv1dSpec) -> Result<Vec<f32>> {
    let s = check_transpose("conv_transpose1d", x, t_in, w, bias, spec)?;
    let (ci_g, co_g) = (s.c_in / s.groups, s.c_out / s.groups);
    let t_out = s.conv_transpose_out_len(t_in);
    let mut out = vec![0.0f32; s.c_out * t_out]; // [c_out, t_out]
    if t_in > 0 && ci_g == 1 && co_g == 1 {
        // Depthwise: a direct scatter per channel.
        out.par_chunks_mut(t_out).enumerate().for_each(|(c, o)| {
            let wr = &w[c * s.kernel..(c + 1) * s.kernel];
            for (t, &xv) in x[c * t_in..(c + 1) * t_in].iter().enumerate() {
                for (j, &wv) in wr.iter().enumerate() {
                    o[t * s.stride + j] += xv * wv;
                }
            }
        });
    } else if t_in > 0 {
        let m = co_g * s.kernel; // rows of the column buffer per group: (co, j)
        let tile = (COL_BUDGET / m).clamp(16, 8192).min(t_in);
        let mut col = vec![0.0f32; m * tile]; // [co_g * kernel, tile]
        for g in 0..s.groups {
            for t0 in (0..t_in).step_by(tile) {
                let n = tile.min(t_in - t0);
                let par = if m * n * ci_g >= PAR_MIN_FLOPS { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
                // lhs (r = co·kernel + j, c = ci) lives at w[(g·ci_g + ci)·m + r]; rhs (ci, tt) at
                // x[(g·ci_g + ci)·t_in + t0 + tt].
                let wg = &w[g * ci_g * m..(g + 1) * ci_g * m];
                let xg = &x[g * ci_g * t_in + t0..];
                // SAFETY: wg holds ci_g·m floats read with strides (m, 1); xg holds at least
                // (ci_g − 1)·t_in + n floats read with strides (t_in, 1); col holds m·n.
                unsafe { gemm_rm(m, n, ci_g, &mut col[..m * n], n, wg, m, 1, xg, 1, t_in, par) };
                for co in 0..co_g {
                    let o = &mut out[(g * co_g + co) * t_out..(g * co_g + co + 1) * t_out];
                    for j in 0..s.kernel {
                        let cr = &col[(co * s.kernel + j) * n..(co * s.kernel + j + 1) * n];
                        for (tt, &v) in cr.iter().enumerate() {
                            o[(t0 + tt) * s.stride + j] += v;
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = bias {
        for (o, &bv) in out.chunks_mut(t_out.max(1)).zip(b) {
            o.iter_mut().for_each(|v| *v += bv);
        }
    }
    Ok(out)
}

/// Slow twin of [`conv_transpose1d`]: gathers each output from the definition in f64.
pub fn conv_transpose1d_slow(x: &[f32], t_in: usize, w: &[f32], bias: Option<&[f32]>, spec: &Conv1dSpec) -> Result<Vec<f32>> {
    let s = check_transpose("conv_transpose1d_slow", x, t_in, w, bias, spec)?;
    let (ci_g, co_g) = (s.c_in / s.groups, s.c_out / s.groups);
    let t_out = s.conv_transpose_out_len(t_in);
    let mut out = vec![0.0f32; s.c_out * t_out];
    for co in 0..s.c_out {
        let (g, col) = (co / co_g, co % co_g);
        for to in 0..t_out {
            let mut acc = bias.map_or(0.0, |b| b[co] as f64);
            for j in 0..s.kernel {
                if to < j || (to - j) % s.stride != 0 || (to - j) / s.stride >= t_in {
                    continue;
                }
                let t = (to - j) / s.stride;
                for ci in g * ci_g..(g + 1) * ci_g {
                    acc += x[ci * t_in + t] as f64 * w[(ci * co_g + col) * s.kernel + j] as f64;
                }
            }
            out[co * t_out + to] = acc as f32;
        }
    }
    Ok(out)
}

fn check_transpose(op: &'static str, x: &[f32], t_in: usize, w: &[f32], bias: Option<&[f32]>, spec: &Conv1dSpec) -> Result<Conv1dSpec> {
    spec.validate(op)?;
    if spec.dilation != 1 {
        return Err(shape_err(op, "dilation 1", format!("{}", spec.dilation)));
    }
    check_lens(op, x.len(), spec.c_in * t_in, w.len(), spec.c_in * (spec.c_out / spec.groups) * spec.kernel, bias, spec.c_out)?;
    Ok(*spec)
}

/// Row-major-strided `dst[m, n] = lhs[m, k] · rhs[k, n]` through the `gemm` crate; strides are
/// (column, row) in elements.
///
/// # Safety
/// Every element addressed by the strides and sizes must lie inside the given slices.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    rhs_rs: usize,
    par: Parallelism,
) {
    debug_assert!(m == 0 || n == 0 || dst.len() > (m - 1) * dst_rs + n - 1);
    gemm::gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        dst_rs as isize,
        false,
        lhs.as_ptr(),
        lhs_cs as isize,
        lhs_rs as isize,
        rhs.as_ptr(),
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound on |fast − slow|: f32 sums of ≤ a few hundred O(1) products against f64.
    const TOL: f32 = 1e-4;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn spec(c_in: usize, c_out: usize, kernel: usize, stride: usize, dilation: usize, groups: usize) -> Conv1dSpec {
        Conv1dSpec { c_in, c_out, kernel, stride, dilation, groups }
    }

    #[test]
    fn conv1d_matches_slow_on_awkward_shapes() {
        let cases = [
            (spec(6, 4, 5, 3, 2, 2), 37),    // groups, stride, dilation
            (spec(5, 5, 3, 1, 3, 5), 29),    // depthwise with dilation
            (spec(5, 10, 4, 2, 1, 5), 23),   // grouped with channel multiplier 2
            (spec(3, 7, 1, 1, 1, 1), 11),    // 1x1
            (spec(2, 3, 2, 5, 1, 1), 24),    // stride > kernel
            (spec(64, 9, 7, 1, 1, 1), 1000), // several time tiles (kk = 448)
            (spec(1, 4, 7, 1, 1, 1), 7),     // exactly one output
        ];
        for (i, (s, t)) in cases.iter().enumerate() {
            let x = lcg(s.c_in * t, i as u64);
            let w = lcg(s.c_out * s.c_in / s.groups * s.kernel, 100 + i as u64);
            let b = lcg(s.c_out, 200 + i as u64);
            for bias in [None, Some(&b[..])] {
                let fast = conv1d(&x, *t, &w, bias, s).unwrap();
                let slow = conv1d_slow(&x, *t, &w, bias, s).unwrap();
                assert_eq!(fast.len(), s.c_out * s.conv_out_len(*t).unwrap());
                let d = max_diff(&fast, &slow);
                assert!(d < TOL, "case {i} {s:?}: max |Δ| {d}");
            }
        }
    }

    #[test]
    fn conv1d_slow_is_the_definition() {
        // 1 channel, kernel [1, 2], stride 2, dilation 2 over [1..=7]: out[t] = x[2t] + 2 x[2t+2].
        let x: Vec<f32> = (1..=7).map(|v| v as f32).collect();
        let s = spec(1, 1, 2, 2, 2, 1);
        let out = conv1d_slow(&x, 7, &[1.0, 2.0], Some(&[0.5]), &s).unwrap();
        assert_eq!(out, vec![1.0 + 6.0 + 0.5, 3.0 + 10.0 + 0.5, 5.0 + 14.0 + 0.5]);
        assert_eq!(conv1d(&x, 7, &[1.0, 2.0], Some(&[0.5]), &s).unwrap(), out);
    }

    #[test]
    fn conv_transpose1d_matches_slow_on_awkward_shapes() {
        let cases = [
            (spec(6, 9, 7, 3, 1, 3), 13),   // groups, kernel not a multiple of stride
            (spec(4, 4, 4, 2, 1, 4), 21),   // depthwise (Mimi's upsample)
            (spec(8, 4, 16, 8, 1, 1), 9),   // SEANet decoder stage
            (spec(3, 2, 2, 5, 1, 1), 6),    // stride > kernel: gaps stay zero
            (spec(2, 300, 3, 2, 1, 1), 700), // several time tiles (m = 900)
            (spec(5, 5, 3, 1, 1, 1), 1),    // one input step
        ];
        for (i, (s, t)) in cases.iter().enumerate() {
            let x = lcg(s.c_in * t, 300 + i as u64);
            let w = lcg(s.c_in * s.c_out / s.groups * s.kernel, 400 + i as u64);
            let b = lcg(s.c_out, 500 + i as u64);
            for bias in [None, Some(&b[..])] {
                let fast = conv_transpose1d(&x, *t, &w, bias, s).unwrap();
                let slow = conv_transpose1d_slow(&x, *t, &w, bias, s).unwrap();
                assert_eq!(fast.len(), s.c_out * ((t - 1) * s.stride + s.kernel));
                let d = max_diff(&fast, &slow);
                assert!(d < TOL, "case {i} {s:?}: max |Δ| {d}");
            }
        }
    }

    #[test]
    fn conv_transpose1d_slow_is_the_definition() {
        // x = [1, 2], w = [1, 10, 100], stride 2: [1, 10, 100+2, 20, 200].
        let s = spec(1, 1, 3, 2, 1, 1);
        let out = conv_transpose1d_slow(&[1.0, 2.0], 2, &[1.0, 10.0, 100.0], None, &s).unwrap();
        assert_eq!(out, vec![1.0, 10.0, 102.0, 20.0, 200.0]);
        assert_eq!(conv_transpose1d(&[1.0, 2.0], 2, &[1.0, 10.0, 100.0], None, &s).unwrap(), out);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = spec(2, 2, 3, 1, 2, 1);
        // effective kernel 5 > 4 samples
        assert!(matches!(conv1d(&[0.0; 8], 4, &[0.0; 12], None, &s), Err(Error::ShapeMismatch { .. })));
        assert!(conv1d(&[0.0; 7], 4, &[0.0; 12], None, &s).is_err());
        assert!(conv1d(&[0.0; 20], 10, &[0.0; 11], None, &s).is_err());
        assert!(conv1d(&[0.0; 20], 10, &[0.0; 12], Some(&[0.0; 3]), &s).is_err());
        assert!(conv1d(&[0.0; 20], 10, &[0.0; 12], None, &spec(2, 3, 3, 1, 1, 2)).is_err());
        assert!(conv1d(&[0.0; 20], 10, &[0.0; 12], None, &spec(2, 2, 3, 0, 1, 1)).is_err());
        assert!(conv_transpose1d(&[0.0; 20], 10, &[0.0; 12], None, &spec(2, 2, 3, 1, 2, 1)).is_err());
        assert!(conv_transpose1d(&[0.0; 20], 10, &[0.0; 11], None, &spec(2, 2, 3, 1, 1, 1)).is_err());
        assert_eq!(conv_transpose1d(&[], 0, &[0.0; 12], None, &spec(2, 2, 3, 1, 1, 1)).unwrap(), Vec::<f32>::new());
    }
}

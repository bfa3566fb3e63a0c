//! Elementwise activations and the softmax.

/// `silu(x) = x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU's middle step: `out[i] = silu(gate[i]) * up[i]`. All three are `[t, i]`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// [`silu_mul`] written over `gate` (`gate[i] = silu(gate[i]) * up[i]`, the same f32 numbers):
/// SwiGLU then needs no third `[t, i]` buffer, and `up` can be freed before the down projection
/// (for a 512-token prefill at intermediate 12288 each such buffer is 25 MB). Slow twin:
/// [`silu_mul_slow`].
pub fn silu_mul_in_place(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// Slow twin of [`silu_mul`], from the definition in f64.
pub fn silu_mul_slow(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for i in 0..out.len() {
        let g = gate[i] as f64;
        out[i] = (g / (1.0 + (-g).exp()) * up[i] as f64) as f32;
    }
}

/// Numerically stable softmax of one row, in place (max subtracted first; f32 throughout, as
/// `torch.softmax(dtype=float32)`).
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Every entry masked: leave zeros rather than NaN.
        row.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `quick_gelu(x) = x · sigmoid(1.702 x)` (the ERNIE-4.5-VL vision MLP; transformers
/// `QuickGELUActivation`), in place.
pub fn quick_gelu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + (-1.702 * *v).exp();
    }
}

/// Exact GELU `x · Φ(x) = x/2 · (1 + erf(x/√2))` (`torch.nn.GELU()`, the resampler MLPs), in place.
/// The error function is evaluated in f64 ([`erf`]), so the result is the f32 rounding of the
/// exact value to within ~1 ulp.
pub fn gelu_erf_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        let a = *v as f64;
        *v = (0.5 * a * (1.0 + erf(a * std::f64::consts::FRAC_1_SQRT_2))) as f32;
    }
}

/// The error function, |error| < 1.2e-7 relative (Numerical Recipes §6.2 `erfc` Chebyshev fit),
/// far below f32 resolution of `0.5 · x · (1 + erf)`.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

//! RMSNorm (spec §2.4): `x / sqrt(mean(x²) + eps) * w`, computed in f32, no bias, no `+1` offset.

use rayon::prelude::*;

/// Row-wise RMSNorm. `x`: `[t, h]`, `weight`: `[h]`, `out`: `[t, h]`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(o, row)| {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *o = w * (v * scale);
        }
    });
}

/// Slow twin of [`rms_norm`]: one row at a time, accumulating in f64.
pub fn rms_norm_slow(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    for t in 0..x.len() / h {
        let row = &x[t * h..(t + 1) * h];
        let ms: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / h as f64;
        let scale = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..h {
            out[t * h + i] = ((row[i] as f64 * scale) as f32) * weight[i];
        }
    }
}

/// Row-wise LayerNorm with affine weight and bias (the vision tower's `norm1`/`norm2`/`ln` and
/// the resampler's LayerNorms; `torch.nn.LayerNorm`): `(x − mean) / sqrt(var + eps) · w + b`,
/// population variance, f32. `x`, `out`: `[t, d]`; `weight`, `bias`: `[d]`.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(o, row)| {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for (((o, &v), &w), &b) in o.iter_mut().zip(row).zip(weight).zip(bias) {
            *o = (v - mean) * scale * w + b;
        }
    });
}

/// Slow twin of [`layer_norm`]: one row at a time in f64.
pub fn layer_norm_slow(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for t in 0..x.len() / d {
        let row = &x[t * d..(t + 1) * d];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let scale = 1.0 / (var + eps as f64).sqrt();
        for i in 0..d {
            out[t * d + i] = ((row[i] as f64 - mean) * scale * weight[i] as f64 + bias[i] as f64) as f32;
        }
    }
}

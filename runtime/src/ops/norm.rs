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

//! Quantised prefill through the packed f32 GEMM: `out[t, n] = Σ_k x[t, k] · deq(W)[n, k]` for
//! many activation rows, dequantising `W` [`PANEL_ROWS`] rows at a time ([`QType::dequantize_row`],
//! exact ggml dequantisation) and multiplying each panel with [`crate::ops::gemm::gemm`]. Its slow
//! twin is [`super::qmatmul_xwt_slow`] (the same `deq(W)` against f32 activations, in f64).
//!
//! Why: the integer dots of [`super::qmatmul_xwt`] stream every weight block once per activation
//! row, so prefill runs at GEMV speed (about 34 tok/s on the 21B-A3B-shaped bench against 135 for
//! bf16). Dequantising a panel costs `O(rows·in)` once per call and the GEMM reuses it for all `t`
//! rows in cache-sized tiles, as llama.cpp's own prefill reuses its repacked blocks. Numbers: the
//! activations stay f32 (no per-block Q8 rounding), so this is closer to `deq(W)·x` than the
//! integer path; decode (few rows) keeps the integer path, which reads half the bytes.

use rayon::prelude::*;

use super::QWeight;
use crate::ops::gemm::{gemm, Kernel, Precision, WeightRef};
use crate::Result;

/// Weight rows dequantised per panel: bounds the f32 copy to `PANEL_ROWS · in · 4` bytes
/// (5 MiB at `in` = 2560).
pub const PANEL_ROWS: usize = 512;

/// Fewest activation rows for which [`qmatmul_dequant`] beats the integer dots (at fewer rows the
/// panel's dequantisation is not amortised).
pub const DEQUANT_MIN_ROWS: usize = 16;

/// `out[t, n] = x[t, k] · deq(W)ᵀ` with `W` `[n, k]` quantised, `x` f32: panel by panel through
/// the packed GEMM (module docs).
///
/// Errors: [`crate::Error::ShapeMismatch`] when `x` is not `[t, k]` or `out` is not `[t, n]`.
pub fn qmatmul_dequant(x: &[f32], w: &QWeight, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims();
    let t = super::igemm::dims("qmatmul_dequant", x.len(), out.len(), n, k)?;
    if t == 0 || n == 0 {
        return Ok(());
    }
    let (qtype, rb) = (w.qtype(), w.row_bytes());
    let p_max = PANEL_ROWS.min(n);
    let mut panel = vec![0.0f32; p_max * k]; // [p, k] f32
    let mut part = vec![0.0f32; t * p_max]; // [t, p]
    let kernel = Kernel::detect(Precision::Exact);
    for r0 in (0..n).step_by(PANEL_ROWS) {
        let p = PANEL_ROWS.min(n - r0);
        let rows = &w.bytes()[r0 * rb..(r0 + p) * rb];
        panel[..p * k].par_chunks_mut(k).zip(rows.par_chunks(rb)).for_each(|(o, b)| qtype.dequantize_row(b, o));
        gemm(x, WeightRef::F32(&panel[..p * k]), t, p, k, &mut part[..t * p], kernel)?;
        for (o, s) in out.chunks_mut(n).zip(part.chunks(p)) {
            o[r0..r0 + p].copy_from_slice(s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::quant::QType;

    /// Panels (n = 600 crosses the 512-row boundary) and every format: the fast path equals the
    /// f64 twin (`qmatmul_xwt_slow`) within f32 summation noise, relative to `Σ|x·w|` per output.
    #[test]
    fn panels_match_the_dequantised_twin() {
        let (t, n, k) = (20, 600, 512);
        let mut rnd = crate::test_util::uniform(0x2545_f491_4f6c_dd1d);
        let x: Vec<f32> = (0..t * k).map(|_| rnd()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        for qt in [QType::Q8_0, QType::Q4K, QType::Q6K] {
            let q = QWeight::quantize_f32(&w, n, k, qt).unwrap();
            let (mut fast, mut slow) = (vec![0.0f32; t * n], vec![0.0f32; t * n]);
            qmatmul_dequant(&x, &q, &mut fast).unwrap();
            crate::ops::quant::qmatmul_xwt_slow(&x, &q, &mut slow).unwrap();
            let deq = q.dequantize();
            for i in 0..t {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|c| (x[i * k + c] * deq[j * k + c]).abs()).sum();
                    let d = (fast[i * n + j] - slow[i * n + j]).abs();
                    assert!(d <= 2e-6 * mag.max(1e-6), "{qt:?} [{i}, {j}]: {} vs {}", fast[i * n + j], slow[i * n + j]);
                }
            }
        }
        let mut bad = vec![0.0f32; 3];
        let q = QWeight::quantize_f32(&w, n, k, QType::Q8_0).unwrap();
        assert!(qmatmul_dequant(&x, &q, &mut bad).is_err());
    }
}

//! Binary spherical quantisation (BSQ) codes and the multi-scale accumulated latent of NFSP
//! generation (spec ernie5-generation §3.2, §4.2; after Infinity's `BSQ` quantiser).
//!
//! A code cell holds `d` bits; its latent vector is `(2·bit − 1)/√d` per channel, a point on the
//! unit sphere. Bits and latents are planar: bits `[d, h, w]` (0 or 1), latents `[d, h, w]` f32.
//! Scales are `(h_k, w_k)` grids, coarse to fine; the last one is the latent grid `(H_f, W_f)`.

use crate::ops::resample::{resize_area, resize_bilinear};
use crate::{Error, Result};

/// The code value of one bit in a `d`-bit cell: `(2·bit − 1)/√d` (±0.1768 for d = 32).
pub fn bsq_code(bit: u8, d: usize) -> f32 {
    let v = 1.0 / (d as f32).sqrt();
    if bit != 0 {
        v
    } else {
        -v
    }
}

/// Bits `[d, h, w]` → codes `[d, h, w]`.
///
/// Errors: [`Error::ShapeMismatch`] when `bits.len() != d·h·w`.
pub fn codes_from_bits(bits: &[u8], d: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    check("codes_from_bits", bits.len(), d, h, w)?;
    Ok(bits.iter().map(|&b| bsq_code(b, d)).collect())
}

/// Quantises a latent `[d, h, w]`: each cell's d-vector is L2-normalised, then `bit = (z > 0)`
/// (normalising keeps the signs; it is kept for parity with BSQ's definition and so a zero
/// vector yields all-zero bits rather than a NaN).
///
/// Errors: [`Error::ShapeMismatch`] when `z.len() != d·h·w`.
pub fn quantise(z: &[f32], d: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    check("bsq quantise", z.len(), d, h, w)?;
    let n = h * w;
    let mut bits = vec![0u8; z.len()];
    for cell in 0..n {
        let norm = (0..d).map(|k| (z[k * n + cell] as f64).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        for k in 0..d {
            bits[k * n + cell] = u8::from(z[k * n + cell] as f64 / norm > 0.0);
        }
    }
    Ok(bits)
}

/// One NFSP step of the accumulated latent: `summed += bilinear_up(codes(bits) → H_f × W_f)`.
/// `summed`: `[d, hf, wf]`, `bits`: `[d, h, w]`.
///
/// Errors: [`Error::ShapeMismatch`] for lengths that disagree with the shapes.
pub fn accumulate(summed: &mut [f32], d: usize, hf: usize, wf: usize, bits: &[u8], h: usize, w: usize) -> Result<()> {
    check("bsq accumulate (summed)", summed.len(), d, hf, wf)?;
    let codes = codes_from_bits(bits, d, h, w)?;
    let up = resize_bilinear(&codes, d, h, w, hf, wf)?;
    summed.iter_mut().zip(&up).for_each(|(s, u)| *s += u);
    Ok(())
}

/// Multi-scale residual encode (the round trip): `residual = latent`; per scale `(h_k, w_k)`:
/// area-down the residual to the grid, quantise, bilinear-up the codes to `H_f × W_f`, subtract.
/// Returns the bits of every scale (`[d, h_k, w_k]` each).
///
/// Errors: [`Error::ShapeMismatch`] for a latent that is not `[d, hf, wf]`, an empty schedule,
/// a last scale other than `(hf, wf)`, or a scale finer than the latent.
pub fn encode_multiscale(latent: &[f32], d: usize, hf: usize, wf: usize, scales: &[(usize, usize)]) -> Result<Vec<Vec<u8>>> {
    check("bsq encode_multiscale", latent.len(), d, hf, wf)?;
    check_schedule(scales, hf, wf)?;
    let mut residual = latent.to_vec();
    let mut out = Vec::with_capacity(scales.len());
    for &(h, w) in scales {
        let down = if (h, w) == (hf, wf) { residual.clone() } else { resize_area(&residual, d, hf, wf, h, w)? };
        let bits = quantise(&down, d, h, w)?;
        let codes = codes_from_bits(&bits, d, h, w)?;
        let up = resize_bilinear(&codes, d, h, w, hf, wf)?;
        residual.iter_mut().zip(&up).for_each(|(r, u)| *r -= u);
        out.push(bits);
    }
    Ok(out)
}

/// The accumulated latent `[d, hf, wf]` of a full schedule of bits (what the decoder receives):
/// `Σ_k bilinear_up(codes(bits_k))`, in schedule order.
///
/// Errors: as [`encode_multiscale`], and a bits list whose length or sizes disagree with `scales`.
pub fn decode_multiscale(bits: &[Vec<u8>], d: usize, hf: usize, wf: usize, scales: &[(usize, usize)]) -> Result<Vec<f32>> {
    check_schedule(scales, hf, wf)?;
    if bits.len() != scales.len() {
        return Err(Error::ShapeMismatch {
            op: "bsq decode_multiscale",
            expected: format!("{} scales of bits", scales.len()),
            got: format!("{}", bits.len()),
        });
    }
    let mut summed = vec![0.0f32; d * hf * wf];
    for (b, &(h, w)) in bits.iter().zip(scales) {
        accumulate(&mut summed, d, hf, wf, b, h, w)?;
    }
    Ok(summed)
}

fn check(op: &'static str, len: usize, d: usize, h: usize, w: usize) -> Result<()> {
    if len != d * h * w || d == 0 {
        return Err(Error::ShapeMismatch { op, expected: format!("[{d}, {h}, {w}] with d ≥ 1"), got: format!("{len} values") });
    }
    Ok(())
}

fn check_schedule(scales: &[(usize, usize)], hf: usize, wf: usize) -> Result<()> {
    let bad = |got: String| {
        Err(Error::ShapeMismatch { op: "bsq scale schedule", expected: format!("grids ending at {hf}×{wf}, none finer, none empty"), got })
    };
    match scales.last() {
        None => bad("an empty schedule".into()),
        Some(&last) if last != (hf, wf) => bad(format!("last scale {}×{}", last.0, last.1)),
        _ => match scales.iter().find(|&&(h, w)| h == 0 || w == 0 || h > hf || w > wf) {
            Some(&(h, w)) => bad(format!("scale {h}×{w}")),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_quantise() {
        assert!((bsq_code(1, 32) - 0.176_776_7).abs() < 1e-6);
        assert_eq!(bsq_code(0, 4), -0.5);
        // d = 2, one cell: (3, −4) → bits (1, 0); a zero vector → (0, 0).
        assert_eq!(quantise(&[3.0, -4.0], 2, 1, 1).unwrap(), vec![1, 0]);
        assert_eq!(quantise(&[0.0, 0.0], 2, 1, 1).unwrap(), vec![0, 0]);
        assert!(quantise(&[0.0; 3], 2, 1, 1).is_err());
    }

    #[test]
    fn multiscale_round_trip_reduces_the_residual() {
        let (d, hf, wf) = (4, 8, 8);
        let latent: Vec<f32> = (0..d * hf * wf).map(|i| ((i * 37 % 17) as f32 - 8.0) / 16.0).collect();
        let scales = [(1, 1), (2, 2), (4, 4), (8, 8)];
        let bits = encode_multiscale(&latent, d, hf, wf, &scales).unwrap();
        assert_eq!(bits.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 16, 64, 256]);
        let summed = decode_multiscale(&bits, d, hf, wf, &scales).unwrap();
        let err = |a: &[f32]| a.iter().zip(&latent).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
        // The reconstruction is closer to the latent than the zero latent is.
        assert!(err(&summed) < err(&vec![0.0; latent.len()]), "{} vs {}", err(&summed), err(&vec![0.0; latent.len()]));
        // The last scale's bits are the signs of what the coarser scales left over.
        let coarse = decode_multiscale(&bits[..3], d, hf, wf, &[(1, 1), (2, 2), (8, 8)]);
        assert!(coarse.is_err()); // bits [d,4,4] do not fit a (8, 8) scale
        let mut left = latent.clone();
        for (b, &(h, w)) in bits[..3].iter().zip(&scales[..3]) {
            let up = resize_bilinear(&codes_from_bits(b, d, h, w).unwrap(), d, h, w, hf, wf).unwrap();
            left.iter_mut().zip(&up).for_each(|(l, u)| *l -= u);
        }
        assert_eq!(bits[3], quantise(&left, d, hf, wf).unwrap());
        assert!(encode_multiscale(&latent, d, hf, wf, &[(2, 2), (4, 4)]).is_err()); // does not end at 8×8
        assert!(encode_multiscale(&latent, d, hf, wf, &[]).is_err());
    }
}

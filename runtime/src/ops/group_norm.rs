//! GroupNorm with affine weight and bias (PyTorch `nn.GroupNorm`), on one image `[C, H·W]` f32:
//! channels split into `groups` consecutive groups; each group is normalised by its own mean and
//! biased variance over `C/groups · H·W` values: `y = (x − μ) / √(σ² + eps) · γ[c] + β[c]`.

use rayon::prelude::*;

use crate::{Error, Result};

/// GroupNorm in place on `x`: `[C, hw]` with `C = gamma.len() = beta.len()`, `C % groups == 0`.
///
/// Statistics are two-pass (mean, then centred squares) accumulated in f64, so they do not lose
/// digits on large planes; the normalisation is f32 as in PyTorch
/// (`x · (rstd·γ) + (β − μ·rstd·γ)`). One rayon task per group.
///
/// Errors: [`Error::ShapeMismatch`] when `groups` is 0 or does not divide `C`, or the lengths
/// disagree.
pub fn group_norm(x: &mut [f32], hw: usize, groups: usize, eps: f32, gamma: &[f32], beta: &[f32]) -> Result<()> {
    let cpg = check(x.len(), hw, groups, gamma, beta)?;
    if cpg * hw == 0 {
        return Ok(());
    }
    x.par_chunks_mut(cpg * hw).enumerate().for_each(|(g, xs)| {
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (ci, plane) in xs.chunks_mut(hw).enumerate() {
            let c = g * cpg + ci;
            let scale = (rstd * gamma[c] as f64) as f32;
            let shift = (beta[c] as f64 - mean * rstd * gamma[c] as f64) as f32;
            plane.iter_mut().for_each(|v| *v = *v * scale + shift);
        }
    });
    Ok(())
}

/// Slow twin of [`group_norm`]: the definition, element by element in f64, into a new vector.
pub fn group_norm_slow(x: &[f32], hw: usize, groups: usize, eps: f32, gamma: &[f32], beta: &[f32]) -> Result<Vec<f32>> {
    let cpg = check(x.len(), hw, groups, gamma, beta)?;
    let mut out = vec![0.0f32; x.len()];
    for g in 0..groups {
        let range = g * cpg * hw..(g + 1) * cpg * hw;
        let n = range.len() as f64;
        let mut sum = 0.0f64;
        for i in range.clone() {
            sum += x[i] as f64;
        }
        let mean = sum / n;
        let mut sq = 0.0f64;
        for i in range.clone() {
            sq += (x[i] as f64 - mean).powi(2);
        }
        let var = sq / n;
        for i in range {
            let c = i / hw;
            out[i] = ((x[i] as f64 - mean) / (var + eps as f64).sqrt() * gamma[c] as f64 + beta[c] as f64) as f32;
        }
    }
    Ok(out)
}

fn check(len: usize, hw: usize, groups: usize, gamma: &[f32], beta: &[f32]) -> Result<usize> {
    let c = gamma.len();
    if groups == 0 || c % groups != 0 || beta.len() != c || len != c * hw {
        return Err(Error::ShapeMismatch {
            op: "group_norm",
            expected: format!("x [{c}, {hw}], beta [{c}], {groups} groups dividing {c}"),
            got: format!("x {len} elements, beta {}", beta.len()),
        });
    }
    Ok(c / groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 output rounding of values of size ~3 after an f64 computation: a few ulp.
    const TOL: f32 = 2e-6;

    #[test]
    fn fast_matches_slow_and_normalises() {
        let (c, hw, groups) = (6, 35, 3);
        let x: Vec<f32> = (0..c * hw).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3 + (i / hw) as f32).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.25).collect();
        let beta: Vec<f32> = (0..c).map(|i| i as f32 * -0.1).collect();
        let slow = group_norm_slow(&x, hw, groups, 1e-6, &gamma, &beta).unwrap();
        let mut fast = x.clone();
        group_norm(&mut fast, hw, groups, 1e-6, &gamma, &beta).unwrap();
        let max = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < TOL, "max |Δ| {max}");
        // With γ = 1, β = 0 every group has mean 0 and variance 1.
        let mut unit = x.clone();
        group_norm(&mut unit, hw, groups, 0.0, &[1.0; 6], &[0.0; 6]).unwrap();
        for g in unit.chunks(2 * hw) {
            let m = g.iter().map(|&v| v as f64).sum::<f64>() / g.len() as f64;
            let v = g.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / g.len() as f64;
            assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-5, "mean {m} var {v}");
        }
    }

    #[test]
    fn bad_groups_are_errors() {
        let mut x = vec![0.0; 12];
        assert!(group_norm(&mut x, 4, 2, 1e-6, &[1.0; 3], &[0.0; 3]).is_err()); // 2 ∤ 3
        assert!(group_norm(&mut x, 4, 0, 1e-6, &[1.0; 3], &[0.0; 3]).is_err());
        assert!(group_norm(&mut x, 5, 3, 1e-6, &[1.0; 3], &[0.0; 3]).is_err());
    }
}

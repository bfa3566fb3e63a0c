//! Vectorised `exp` for the wide activation passes of prefill (attention softmax over
//! `[rows, keys]` scores, QuickGELU over the vision MLP), where libm's scalar `expf` was 12 % of a
//! 512×512 caption's profile. Twins: [`super::softmax_in_place`], [`super::quick_gelu_in_place`]
//! (scalar `f32::exp`); the fast versions agree with them within [`EXP_FAST_ULPS`] per `exp`.
//!
//! Method (Cody-Waite reduction, as Cephes `expf`): `n = round(x·log₂e)`,
//! `r = x − n·ln2` in two steps (`ln2_hi` has 12 trailing zero bits so `n·ln2_hi` is exact),
//! `eʳ` by its degree-7 Taylor polynomial on `|r| ≤ ln2/2` (truncation `r⁸/8! < 6e-9`,
//! below f32 rounding), then `2ⁿ` by `vscalefps` (correct into the subnormal range and to 0).
//! `x` is clamped to `[−104, 88.7]` first, outside of which f32 `exp` is 0 or +∞ territory.

/// Bound between the fast and scalar `exp`, in f32 ulps of the result (measured ≤ 2 over the
/// whole normal range in the test; 4 leaves margin).
pub const EXP_FAST_ULPS: f32 = 4.0;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `exp` of 16 lanes (module doc).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0)), _mm512_set1_ps(88.7));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x); // ln2_hi = 0x3f318000
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r); // ln2_lo
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// Softmax of `row` (max subtracted, the sum of the 16 lane partial sums).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax(row: &mut [f32], max: f32) {
        let n = row.len();
        let p = row.as_mut_ptr();
        let vmax = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(i)), vmax));
            let e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(p.add(i), m, e);
            acc = _mm512_add_ps(acc, e);
            i += 16;
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(acc));
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
            _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), inv));
            i += 16;
        }
    }

    /// `x / (1 + exp(−1.702·x))` in place.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quick_gelu(x: &mut [f32]) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let (k, one) = (_mm512_set1_ps(-1.702), _mm512_set1_ps(1.0));
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
            let v = _mm512_maskz_loadu_ps(m, p.add(i));
            let d = _mm512_add_ps(one, exp16(_mm512_mul_ps(v, k)));
            _mm512_mask_storeu_ps(p.add(i), m, _mm512_div_ps(v, d));
            i += 16;
        }
    }

    /// `exp` of each element (for the test of [`exp16`]).
    #[cfg(test)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_slice(x: &mut [f32]) {
        for c in x.chunks_exact_mut(16) {
            _mm512_storeu_ps(c.as_mut_ptr(), exp16(_mm512_loadu_ps(c.as_ptr())));
        }
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`super::softmax_in_place`] with the vectorised `exp` (AVX-512; the scalar twin elsewhere).
/// An all-`−∞` row becomes zeros, as in the twin.
pub fn softmax_fast_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || !has_avx512() {
        return super::softmax_in_place(row);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: avx512f checked above.
    unsafe {
        x86::softmax(row, max)
    }
}

/// [`super::quick_gelu_in_place`] with the vectorised `exp` (AVX-512; the scalar twin elsewhere).
pub fn quick_gelu_fast_in_place(x: &mut [f32]) {
    if !has_avx512() {
        return super::quick_gelu_in_place(x);
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: avx512f checked above.
    unsafe {
        x86::quick_gelu(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> f32 {
        (a - b).abs() / (b.abs().max(f32::MIN_POSITIVE) * f32::EPSILON)
    }

    /// Over a dense grid of `[−87, 88]` (normal results) the vector `exp` is within
    /// [`EXP_FAST_ULPS`] of f64's `exp` rounded to f32; below, results go to 0 as they should.
    #[test]
    fn exp16_is_within_a_few_ulps() {
        if !has_avx512() {
            return;
        }
        let mut x: Vec<f32> = (0..175 * 1024).map(|i| -87.0 + i as f32 / 1024.0).collect();
        let want: Vec<f32> = x.iter().map(|&v| (v as f64).exp() as f32).collect();
        // SAFETY: avx512f checked above.
        unsafe { x86::exp_slice(&mut x) };
        let worst = x.iter().zip(&want).map(|(&a, &b)| ulps(a, b)).fold(0.0f32, f32::max);
        assert!(worst <= EXP_FAST_ULPS, "worst {worst} ulps");
        let mut tiny = [-1e9f32, -104.0, -120.0, f32::NEG_INFINITY, -110.0, -200.0, -105.0, -1000.0, 0.0, 1.0, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        // SAFETY: as above.
        unsafe { x86::exp_slice(&mut tiny) };
        assert!(tiny[..8].iter().all(|&v| v == 0.0), "{tiny:?}");
        assert_eq!(tiny[8], 1.0);
    }

    /// Ragged lengths (masked tails), a −∞ entry (a masked key) and an all-−∞ row: the fast
    /// softmax and QuickGELU agree with their scalar twins elementwise.
    #[test]
    fn fast_softmax_and_quick_gelu_match_the_twins() {
        for n in [1usize, 7, 16, 33, 1296] {
            let row: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 40.0 - 12.0).collect();
            let mut row = row;
            if n > 3 {
                row[2] = f32::NEG_INFINITY;
            }
            let (mut a, mut b) = (row.clone(), row.clone());
            softmax_fast_in_place(&mut a);
            crate::ops::softmax_in_place(&mut b);
            for (x, y) in a.iter().zip(&b) {
                // exp within 4 ulps, the sum within n·ε (different order), one rounding each.
                assert!((x - y).abs() <= (EXP_FAST_ULPS + 2.0 + n as f32) * f32::EPSILON * y.abs() + 1e-30, "n {n}: {x} vs {y}");
            }
            if n > 3 {
                assert_eq!(a[2], 0.0);
            }
            let (mut g, mut h) = (row.clone(), row.clone());
            g.iter_mut().chain(h.iter_mut()).for_each(|v| *v = v.max(-30.0));
            quick_gelu_fast_in_place(&mut g);
            crate::ops::quick_gelu_in_place(&mut h);
            for (x, y) in g.iter().zip(&h) {
                assert!((x - y).abs() <= (EXP_FAST_ULPS + 2.0) * f32::EPSILON * y.abs() + 1e-30, "gelu n {n}: {x} vs {y}");
            }
        }
        let mut masked = vec![f32::NEG_INFINITY; 5];
        softmax_fast_in_place(&mut masked);
        assert_eq!(masked, vec![0.0; 5]);
    }
}

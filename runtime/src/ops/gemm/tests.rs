//! Every kernel forced explicitly against the f64 twin on awkward shapes.

use super::*;

/// Exact kernels: f32 summation only; bound `γ_k · Σ|x·w|` with γ_k = k·2⁻²⁴ (worst case).
fn exact_bound(k: usize) -> f64 {
    k as f64 * f32::EPSILON as f64 / 2.0 + 1e-30
}
/// `vdpbf16ps`: x rounded to bf16 (unit roundoff 2⁻⁸ relative) plus the f32 summation.
fn bf16_dot_bound(k: usize) -> f64 {
    2f64.powi(-8) + exact_bound(k)
}

/// Deterministic values in ±1 (xorshift), some exactly zero to catch padding mixups.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

struct Weights {
    f32s: Vec<f32>,
    bf16: Vec<u16>,
    f16: Vec<u16>,
}

fn weights(n: usize, k: usize, seed: u64) -> Weights {
    let v = values(n * k, seed);
    Weights {
        bf16: v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect(),
        f16: v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect(),
        f32s: v,
    }
}

fn refs(w: &Weights) -> [WeightRef<'_>; 3] {
    [WeightRef::F32(&w.f32s), WeightRef::Bf16(&w.bf16), WeightRef::F16(&w.f16)]
}

const KERNELS: [Kernel; 4] = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512, Kernel::Avx512Bf16Dot];

/// Checks `got` against the f64 twin element by element: `|Δ| ≤ bound · Σ_k |x·w|`.
fn check(x: &[f32], w: WeightRef<'_>, m: usize, n: usize, k: usize, got: &[f32], bound: f64, what: &str) {
    let mut want = vec![0.0; m * n];
    gemm_slow(x, w, m, n, k, &mut want).unwrap();
    let mut worst = 0.0f64;
    for r in 0..m {
        for c in 0..n {
            let abs: f64 = (0..k).map(|i| (x[r * k + i] as f64 * w.get(c * k + i) as f64).abs()).sum();
            let d = (got[r * n + c] as f64 - want[r * n + c] as f64).abs();
            assert!(d <= bound * abs + 1e-30, "{what}: [{r}, {c}] got {} want {} (|Δ| {d:e}, Σ|xw| {abs})", got[r * n + c], want[r * n + c]);
            worst = worst.max(d / abs.max(1e-30));
        }
    }
    eprintln!("{what}: max |Δ|/Σ|xw| = {worst:.2e}");
}

#[test]
fn gemm_every_kernel_matches_twin_on_awkward_shapes() {
    // (m, n, k): tails in every dimension, several k blocks (KC = 256), several n blocks (NC = 128).
    let shapes = [(1, 7, 5), (2, 33, 17), (3, 129, 300), (33, 131, 37), (511, 45, 531), (13, 257, 1)];
    for &(m, n, k) in &shapes {
        let x = values(m * k, 1 + m as u64);
        let w = weights(n, k, 7 + n as u64);
        for kern in KERNELS.into_iter().filter(|k| k.is_available()) {
            for wr in refs(&w) {
                let mut got = vec![f32::NAN; m * n];
                gemm(&x, wr, m, n, k, &mut got, kern).unwrap();
                let dot = kern == Kernel::Avx512Bf16Dot && matches!(wr, WeightRef::Bf16(_));
                let bound = if dot { bf16_dot_bound(k) } else { exact_bound(k) };
                check(&x, wr, m, n, k, &got, bound, &format!("gemm {kern:?} {:?} m{m} n{n} k{k}", std::mem::discriminant(&wr)));
            }
        }
    }
}

#[test]
fn gemv_every_kernel_matches_twin() {
    for &(m, n, k) in &[(1usize, 7usize, 5usize), (2, 131, 2560 + 7), (3, 65, 33), (4, 129, 100), (9, 5, 19)] {
        let x = values(m * k, 3 + k as u64);
        let w = weights(n, k, 11 + n as u64);
        for kern in KERNELS.into_iter().filter(|k| k.is_available()) {
            for wr in refs(&w) {
                let mut got = vec![f32::NAN; m * n];
                gemv(&x, wr, m, n, k, &mut got, kern).unwrap();
                check(&x, wr, m, n, k, &got, exact_bound(k), &format!("gemv {kern:?} m{m} n{n} k{k}"));
            }
        }
    }
}

#[test]
fn gemv_pair_and_experts_match_single_calls() {
    let (n, k) = (77, 131);
    let x = values(2 * k, 5);
    let (wa, wb) = (weights(n, k, 1), weights(n, k, 2));
    for kern in KERNELS.into_iter().filter(|k| k.is_available()) {
        let (mut a, mut b) = (vec![0.0; 2 * n], vec![0.0; 2 * n]);
        gemv_pair(&x, WeightRef::Bf16(&wa.bf16), WeightRef::Bf16(&wb.bf16), 2, n, k, &mut a, &mut b, kern).unwrap();
        let (mut a1, mut b1) = (vec![0.0; 2 * n], vec![0.0; 2 * n]);
        gemv(&x, WeightRef::Bf16(&wa.bf16), 2, n, k, &mut a1, kern).unwrap();
        gemv(&x, WeightRef::Bf16(&wb.bf16), 2, n, k, &mut b1, kern).unwrap();
        assert_eq!((a.clone(), b.clone()), (a1.clone(), b1.clone()), "{kern:?}");

        // Experts: rows 1, 0 and 2 of the same x against the two weights and an f16 one.
        let jobs = [
            ExpertJob { w: WeightRef::Bf16(&wa.bf16), x: &x[..k], m: 1 },
            ExpertJob { w: WeightRef::F16(&wa.f16), x: &x[..0], m: 0 },
            ExpertJob { w: WeightRef::Bf16(&wb.bf16), x: &x, m: 2 },
        ];
        let mut out = vec![f32::NAN; 3 * n];
        gemv_experts(&jobs, n, k, &mut out, kern).unwrap();
        assert_eq!(&out[..n], &a1[..n], "{kern:?} expert 0");
        assert_eq!(&out[n..], &b1[..], "{kern:?} expert 2");
    }
}

#[test]
fn gemv_batch_matches_single_calls() {
    // Three matrices of different shapes and dtypes in one pass, one with no rows.
    let (k1, k2) = (131, 64);
    let x1 = values(3 * k1, 8);
    let x2 = values(k2, 9);
    let (wa, wb) = (weights(77, k1, 3), weights(40, k2, 4));
    for kern in KERNELS.into_iter().filter(|k| k.is_available()) {
        let (mut a, mut b, mut c) = (vec![f32::NAN; 3 * 77], vec![f32::NAN; 40], vec![0.0f32; 0]);
        let jobs = [
            GemvJob::new(WeightRef::Bf16(&wa.bf16), &x1, 3, 77, k1, &mut a),
            GemvJob::new(WeightRef::F16(&wb.f16), &x2, 1, 40, k2, &mut b),
            GemvJob::new(WeightRef::F32(&wa.f32s), &x1[..0], 0, 77, k1, &mut c),
        ];
        gemv_batch(&jobs, kern).unwrap();
        let (mut a1, mut b1) = (vec![0.0; 3 * 77], vec![0.0; 40]);
        gemv(&x1, WeightRef::Bf16(&wa.bf16), 3, 77, k1, &mut a1, kern).unwrap();
        gemv(&x2, WeightRef::F16(&wb.f16), 1, 40, k2, &mut b1, kern).unwrap();
        assert_eq!((&a, &b), (&a1, &b1), "{kern:?}");
        check(&x1, WeightRef::Bf16(&wa.bf16), 3, 77, k1, &a, exact_bound(k1), "gemv_batch");
    }
    let mut out = vec![0.0; 5];
    let bad = [GemvJob::new(WeightRef::Bf16(&wa.bf16), &x1[..k1], 1, 77, k1, &mut out)];
    assert!(matches!(gemv_batch(&bad, Kernel::Portable), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn shape_errors_are_typed() {
    let x = vec![0.0; 6];
    let w = vec![0u16; 6];
    let mut out = vec![0.0; 4];
    assert!(matches!(gemm(&x, WeightRef::Bf16(&w), 2, 2, 3, &mut out[..3], Kernel::Portable), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(gemv(&x, WeightRef::Bf16(&w), 2, 2, 2, &mut out, Kernel::Portable), Err(Error::ShapeMismatch { .. })));
    let jobs = [ExpertJob { w: WeightRef::Bf16(&w), x: &x[..3], m: 1 }];
    assert!(matches!(gemv_experts(&jobs, 2, 3, &mut out, Kernel::Portable), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn matmul_agrees_with_the_old_path() {
    let (n, k) = (70, 300);
    let w = weights(n, k, 9);
    let t = crate::Tensor::from_bf16(bytemuck::cast_slice::<u16, half::bf16>(&w.bf16), vec![n, k]).unwrap();
    for m in [1usize, 3, 40] {
        let x = values(m * k, 4);
        let (mut a, mut b) = (vec![0.0; m * n], vec![0.0; m * n]);
        matmul(&x, &t, &mut a).unwrap();
        crate::ops::matmul_xwt(&x, &t, &mut b).unwrap();
        check(&x, WeightRef::Bf16(&w.bf16), m, n, k, &a, exact_bound(k), "matmul");
        check(&x, WeightRef::Bf16(&w.bf16), m, n, k, &b, exact_bound(k), "matmul_xwt");
    }
}

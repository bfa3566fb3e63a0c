//! Kernel twins: every SIMD path against the scalar twin, quantise/dequantise round trips, and the
//! quantised matmul against its slow twin. (ggml goldens: `tests/quant_reference.rs`.)

use half::f16;

use super::blocks::*;
use super::dot::*;
use super::*;

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self) -> f32 {
        // Roughly normal: sum of 4 uniforms, centred.
        (0..4).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32).sum::<f32>() - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Rows with the awkward cases: zeros, constants, one sign only, outliers, tiny, mixed scales.
fn awkward(rng: &mut Rng, k: usize) -> Vec<Vec<f32>> {
    let mut rows = vec![vec![0.0; k], vec![0.75; k], rng.vec(k), rng.vec(k), rng.vec(k), rng.vec(k), rng.vec(k)];
    rows[3].iter_mut().for_each(|v| *v = -v.abs());
    rows[4][5] = 500.0;
    rows[5].iter_mut().for_each(|v| *v *= 1e-20);
    for (i, v) in rows[6].iter_mut().enumerate() {
        *v *= 10f32.powi((i / 32 % 7) as i32 - 3);
    }
    rows
}

fn q8k_row(x: &[f32]) -> Vec<BlockQ8K> {
    let mut y = vec![BlockQ8K::default(); x.len() / QK_K];
    quantize_row_q8_k(x, &mut y);
    y
}

/// Random weight blocks with every byte pattern in the quants and sane f16 scales at `d_at`.
fn random_blocks(rng: &mut Rng, nb: usize, bytes: usize, d_at: &[usize]) -> Vec<u8> {
    let mut b = rng.bytes(nb * bytes);
    for blk in b.chunks_exact_mut(bytes) {
        for &at in d_at {
            let d = f16::from_f32(rng.f32() * 0.01).to_bits().to_le_bytes();
            blk[at..at + 2].copy_from_slice(&d);
        }
    }
    b
}

#[test]
fn k_quant_dots_agree_bit_for_bit_on_every_path() {
    let mut rng = Rng(0x5EED_0013);
    let nb = 12;
    let paths = Path::available();
    eprintln!("quant paths on this CPU: {paths:?}");
    for trial in 0..20 {
        let act = if trial == 0 { vec![0.0; nb * QK_K] } else { rng.vec(nb * QK_K) };
        let y = q8k_row(&act);
        let x4 = random_blocks(&mut rng, nb, Q4_K_BYTES, &[0, 2]);
        let x6 = random_blocks(&mut rng, nb, Q6_K_BYTES, &[Q6_D]);
        let (r4, r6) = (dot_q4_k_q8_k_scalar(&x4, &y), dot_q6_k_q8_k_scalar(&x6, &y));
        for &p in &paths {
            assert_eq!(dot_q4_k_q8_k(p, &x4, &y).to_bits(), r4.to_bits(), "q4_K {p:?} trial {trial}");
            assert_eq!(dot_q6_k_q8_k(p, &x6, &y).to_bits(), r6.to_bits(), "q6_K {p:?} trial {trial}");
        }
    }
}

/// Blocks whose scales are all 1.0: every term is an integer below 2²⁴, so any summation order
/// is exact and the SIMD Q8_0 dot must equal the scalar one exactly.
#[test]
fn q8_0_dot_integer_part_is_exact_on_every_path() {
    let mut rng = Rng(7);
    for nb in [1, 2, 3, 17] {
        let mut x = rng.bytes(nb * Q8_0_BYTES);
        let mut y = rng.bytes(nb * Q8_0_BYTES);
        for b in x.chunks_exact_mut(Q8_0_BYTES).chain(y.chunks_exact_mut(Q8_0_BYTES)) {
            b[..2].copy_from_slice(&f16::ONE.to_bits().to_le_bytes());
            b[2..].iter_mut().for_each(|q| *q = (*q as i8).max(-127) as u8);
        }
        let r = dot_q8_0_q8_0_scalar(&x, &y);
        for p in Path::available() {
            assert_eq!(dot_q8_0_q8_0(p, &x, &y), r, "{p:?} nb {nb}");
        }
    }
}

#[test]
fn q8_0_dot_float_sum_within_stated_bound() {
    let mut rng = Rng(11);
    let nb = 40;
    for _ in 0..20 {
        let (xf, yf) = (rng.vec(nb * QK8_0), rng.vec(nb * QK8_0));
        let (mut x, mut y) = (vec![0u8; nb * Q8_0_BYTES], vec![0u8; nb * Q8_0_BYTES]);
        quantize_row_q8_0(&xf, &mut x);
        quantize_row_q8_0(&yf, &mut y);
        let r = dot_q8_0_q8_0_scalar(&x, &y);
        let mag: f32 = x
            .chunks_exact(Q8_0_BYTES)
            .zip(y.chunks_exact(Q8_0_BYTES))
            .map(|(a, b)| dot_q8_0_q8_0_scalar(a, b).abs())
            .sum();
        let bound = Q8_0_SUM_ULPS * nb as f32 * f32::EPSILON * mag;
        for p in Path::available() {
            let d = (dot_q8_0_q8_0(p, &x, &y) - r).abs();
            assert!(d <= bound, "{p:?}: |Δ| {d} > {bound}");
        }
    }
}

#[test]
fn q8_k_quantizer_sums_and_range() {
    let mut rng = Rng(3);
    for x in awkward(&mut rng, 2 * QK_K) {
        for b in q8k_row(&x) {
            assert!(b.qs.iter().all(|&q| q >= -127));
            for j in 0..16 {
                assert_eq!(b.bsums[j] as i32, b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>());
            }
            assert_eq!(BlockQ8K::from_bytes(&b.to_bytes()), Some(b));
        }
    }
}

/// Absolute reconstruction error allowed for f16 scales flushed to zero: 127 levels × 2⁻²⁴.
const F16_FLOOR: f32 = 127.0 / 16_777_216.0;

/// Round trips: the reconstruction error of each format is within its step size.
#[test]
fn quantize_dequantize_round_trip_within_step() {
    let mut rng = Rng(99);
    let k = 2 * QK_K;
    for x in awkward(&mut rng, k) {
        for qt in [QType::Q8_0, QType::Q4K, QType::Q6K] {
            let mut q = vec![0u8; qt.row_bytes(k).unwrap()];
            qt.quantize_row(&x, &mut q);
            let mut back = vec![0.0f32; k];
            qt.dequantize_row(&q, &mut back);
            // Per block (32 for Q8_0, 256 for the K-quants, whose sub-block scales are quantised
            // against the super-block's largest): the error is a fraction of the block's amax
            // (Q8_0: half a step of 2·amax/254; Q4_K: about one 4-bit step; Q6_K: about two 6-bit
            // steps). Loose by design: the exact bytes are checked against ggml in
            // tests/quant_reference.rs.
            let steps = match qt {
                QType::Q8_0 => 1.0 / 127.0,
                QType::Q4K => 2.0 / 15.0,
                QType::Q6K => 2.0 / 31.0,
            };
            let group = qt.block_elems();
            for (g, (a, b)) in x.chunks(group).zip(back.chunks(group)).enumerate() {
                let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = a.iter().zip(b).fold(0.0f32, |m, (u, v)| m.max((u - v).abs()));
                // Scales are f16: below its subnormal step 2⁻²⁴ they flush to 0 (tiny rows), so an
                // absolute 127·2⁻²⁴ ≈ 7.6e-6 is added.
                assert!(err <= amax * steps * 1.01 + F16_FLOOR, "{qt} group {g}: err {err} amax {amax}");
            }
        }
    }
}

/// `qmatmul` on every path and several row counts equals the per-row scalar dots with ggml's
/// activation quantisation (exactly for K-quants, within the Q8_0 bound), and the slow twin
/// within the activation-quantisation error.
#[test]
fn qmatmul_matches_scalar_dots_and_slow_twin() {
    let mut rng = Rng(1234);
    let (n, k) = (37, 3 * QK_K);
    let w = rng.vec(n * k);
    for qt in [QType::Q8_0, QType::Q4K, QType::Q6K] {
        let qw = QWeight::quantize_f32(&w, n, k, qt).unwrap();
        let wd = qw.dequantize();
        for t in [1, 3, 40] {
            let x = rng.vec(t * k);
            let mut slow = vec![0.0f32; t * n];
            qmatmul_xwt_slow(&x, &qw, &mut slow).unwrap();
            for p in Path::available() {
                let mut out = vec![f32::NAN; t * n];
                qmatmul_xwt_on(p, &x, &qw, &mut out, &mut QScratch::default()).unwrap();
                for r in 0..t {
                    let xr = &x[r * k..(r + 1) * k];
                    for c in 0..n {
                        let wr = &qw.bytes()[c * qw.row_bytes()..(c + 1) * qw.row_bytes()];
                        let want = match qt {
                            QType::Q8_0 => {
                                let mut a = vec![0u8; qt.row_bytes(k).unwrap()];
                                quantize_row_q8_0(xr, &mut a);
                                dot_q8_0_q8_0_scalar(wr, &a)
                            }
                            QType::Q4K => dot_q4_k_q8_k_scalar(wr, &q8k_row(xr)),
                            QType::Q6K => dot_q6_k_q8_k_scalar(wr, &q8k_row(xr)),
                        };
                        let got = out[r * n + c];
                        if qt == QType::Q8_0 {
                            assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{qt} {p:?} t{t} [{r},{c}]");
                        } else {
                            assert_eq!(got.to_bits(), want.to_bits(), "{qt} {p:?} t{t} [{r},{c}]");
                        }
                        // Activation quantisation: |x − x̂| ≤ amax/254 per element (Q8_0 per 32,
                        // Q8_K per 256), so |Δ| ≤ Σ|w|·amax(x)/254 (plus f32 rounding).
                        let wrow = &wd[c * k..(c + 1) * k];
                        let amax = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        let bound = wrow.iter().map(|v| v.abs()).sum::<f32>() * amax / 254.0 + 1e-4;
                        assert!((got - slow[r * n + c]).abs() <= bound, "{qt} {p:?} slow twin [{r},{c}]");
                    }
                }
            }
        }
    }
}

#[test]
fn qmatmul_rejects_bad_shapes() {
    let qw = QWeight::quantize_f32(&vec![0.5; 4 * 64], 4, 64, QType::Q8_0).unwrap();
    let mut out = vec![0.0; 4];
    assert!(matches!(qmatmul_xwt(&[0.0; 63], &qw, &mut out), Err(crate::Error::ShapeMismatch { .. })));
    assert!(matches!(qmatmul_xwt(&[0.0; 64], &qw, &mut out[..3]), Err(crate::Error::ShapeMismatch { .. })));
    assert!(QWeight::quantize_f32(&[0.0; 100], 1, 100, QType::Q4K).is_err());
    assert!(QWeight::from_bytes(QType::Q4K, 2, 256, vec![0; 287]).is_err());
}

#[test]
fn qgemv_batch_equals_qmatmul_per_job() {
    // Three formats, different shapes and row counts in one pass: bit-identical to one
    // qmatmul_xwt per job (same activation quantizer, same dots).
    let mut rng = Rng(0x5eed);
    let (k8, kk) = (96, 512);
    let wq8 = QWeight::quantize_f32(&rng.vec(70 * k8), 70, k8, QType::Q8_0).unwrap();
    let wq4 = QWeight::quantize_f32(&rng.vec(33 * kk), 33, kk, QType::Q4K).unwrap();
    let wq6 = QWeight::quantize_f32(&rng.vec(130 * kk), 130, kk, QType::Q6K).unwrap();
    let x8 = rng.vec(2 * k8);
    let xk = rng.vec(3 * kk);
    for p in Path::available() {
        let (mut a, mut b, mut c) = (vec![f32::NAN; 2 * 70], vec![f32::NAN; 3 * 33], vec![f32::NAN; 130]);
        let jobs = [QGemvJob::new(&wq8, &x8, 2, &mut a), QGemvJob::new(&wq4, &xk, 3, &mut b), QGemvJob::new(&wq6, &xk[kk..2 * kk], 1, &mut c)];
        qgemv_batch_on(p, &jobs).unwrap();
        let mut s = QScratch::default();
        let (mut a1, mut b1, mut c1) = (vec![0.0; 2 * 70], vec![0.0; 3 * 33], vec![0.0; 130]);
        qmatmul_xwt_on(p, &x8, &wq8, &mut a1, &mut s).unwrap();
        qmatmul_xwt_on(p, &xk, &wq4, &mut b1, &mut s).unwrap();
        qmatmul_xwt_on(p, &xk[kk..2 * kk], &wq6, &mut c1, &mut s).unwrap();
        assert_eq!((&a, &b, &c), (&a1, &b1, &c1), "{p:?}");
    }
    let mut out = vec![0.0; 69];
    assert!(matches!(qgemv_batch(&[QGemvJob::new(&wq8, &x8[..k8], 1, &mut out)]), Err(crate::Error::ShapeMismatch { .. })));
}

/// The row kernels (several weight rows per call, the decode path of `qgemv_batch`) against the
/// single-row dot on the same path (bit for bit) and the scalar twin (bit for bit for the
/// K-quants, within the stated bound for Q8_0), for ragged row counts around the group size.
#[test]
fn row_kernels_match_single_row_dots_on_every_path() {
    let mut rng = Rng(0x0013_0004);
    let nb = 5; // super-blocks per row (K-quants); Q8_0 rows get 8·nb + 1 blocks (an odd count)
    let y = q8k_row(&rng.vec(nb * QK_K));
    let nb8 = 8 * nb + 1;
    let mut y8 = vec![0u8; nb8 * Q8_0_BYTES];
    quantize_row_q8_0(&rng.vec(nb8 * QK8_0), &mut y8);
    for rows in [1, 2, 3, 4, 5, 6, 7, 9, 13] {
        let w4 = random_blocks(&mut rng, rows * nb, Q4_K_BYTES, &[0, 2]);
        let w6 = random_blocks(&mut rng, rows * nb, Q6_K_BYTES, &[Q6_D]);
        let w8 = random_blocks(&mut rng, rows * nb8, Q8_0_BYTES, &[0]);
        let (rb4, rb6) = (nb * Q4_K_BYTES, nb * Q6_K_BYTES);
        for p in Path::available() {
            let mut out = vec![f32::NAN; rows];
            dot_q4_k_rows(p, &w4, &y, &mut out);
            for (r, v) in out.iter().enumerate() {
                let row = &w4[r * rb4..(r + 1) * rb4];
                assert_eq!(v.to_bits(), dot_q4_k_q8_k_scalar(row, &y).to_bits(), "q4_K {p:?} rows {rows} r {r}");
            }
            dot_q6_k_rows(p, &w6, &y, &mut out);
            for (r, v) in out.iter().enumerate() {
                let row = &w6[r * rb6..(r + 1) * rb6];
                assert_eq!(v.to_bits(), dot_q6_k_q8_k_scalar(row, &y).to_bits(), "q6_K {p:?} rows {rows} r {r}");
            }
            dot_q8_0_rows(p, &w8, &y8, &mut out);
            for (r, v) in out.iter().enumerate() {
                let row = &w8[r * y8.len()..(r + 1) * y8.len()];
                assert_eq!(v.to_bits(), dot_q8_0_q8_0(p, row, &y8).to_bits(), "q8_0 {p:?} rows {rows} r {r}");
                let want = dot_q8_0_q8_0_scalar(row, &y8);
                let mag: f32 = row.chunks_exact(Q8_0_BYTES).zip(y8.chunks_exact(Q8_0_BYTES)).map(|(a, b)| dot_q8_0_q8_0_scalar(a, b).abs()).sum();
                let bound = Q8_0_SUM_ULPS * nb8 as f32 * f32::EPSILON * mag;
                assert!((v - want).abs() <= bound, "q8_0 {p:?} rows {rows} r {r}: {v} vs {want}");
            }
        }
    }
}

/// Q8_0 weight quants take every i8 value, −128 included (a GGUF may hold them); with unit
/// scales every path's row kernel is exact (activations in −127..=127, as the quantizer writes).
#[test]
fn q8_0_row_kernels_exact_for_every_weight_byte() {
    let mut rng = Rng(0x80);
    let nb = 9;
    let mut y = rng.bytes(nb * Q8_0_BYTES);
    for b in y.chunks_exact_mut(Q8_0_BYTES) {
        b[..2].copy_from_slice(&f16::ONE.to_bits().to_le_bytes());
        b[2..].iter_mut().for_each(|q| *q = (*q as i8).max(-127) as u8);
    }
    let rows = 6;
    let mut w = rng.bytes(rows * nb * Q8_0_BYTES);
    for (i, b) in w.chunks_exact_mut(Q8_0_BYTES).enumerate() {
        b[..2].copy_from_slice(&f16::ONE.to_bits().to_le_bytes());
        b[2 + i % 32] = 0x80; // a −128 in every block
    }
    let rb = y.len();
    for p in Path::available() {
        let mut out = vec![f32::NAN; rows];
        dot_q8_0_rows(p, &w, &y, &mut out);
        for (r, v) in out.iter().enumerate() {
            assert_eq!(*v, dot_q8_0_q8_0_scalar(&w[r * rb..(r + 1) * rb], &y), "{p:?} row {r}");
        }
    }
}

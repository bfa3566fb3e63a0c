//! Every fast CPU op against its slow twin, plus a RoPE test that fails under NeoX pairing.

use ernie_runtime::ops::*;
use ernie_runtime::config::MropeSection;
use ernie_runtime::Tensor;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn randv(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn matmul_fast_equals_slow_all_dtypes_and_row_counts() {
    let mut rng = StdRng::seed_from_u64(1);
    // k = 1000 is not a multiple of the 16-lane dot; n = 300 is not a multiple of either block.
    let (n, k) = (300, 1000);
    let wf = randv(&mut rng, n * k);
    let weights = [
        Tensor::from_f32(wf.clone(), vec![n, k]).unwrap(),
        Tensor::from_bf16(&wf.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(), vec![n, k]).unwrap(),
        Tensor::from_f16(&wf.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(), vec![n, k]).unwrap(),
    ];
    for w in &weights {
        for t in [1usize, 2, 4, 5, 33] {
            let x = randv(&mut rng, t * k);
            let mut fast = vec![0.0; t * n];
            let mut slow = vec![0.0; t * n];
            matmul_xwt(&x, w, &mut fast).unwrap();
            matmul_xwt_slow(&x, w, &mut slow).unwrap();
            let r = max_rel(&fast, &slow);
            assert!(r < 1e-5, "{:?} t={t}: rel diff {r}", w.dtype());
        }
    }
}

#[test]
fn matmul_rejects_mismatched_shapes() {
    let w = Tensor::from_f32(vec![0.0; 12], vec![3, 4]).unwrap();
    let mut out = vec![0.0; 3];
    assert!(matmul_xwt(&[0.0; 5], &w, &mut out).is_err());
    assert!(matmul_xwt(&[0.0; 8], &w, &mut out).is_err());
}

#[test]
fn rms_norm_fast_equals_slow() {
    let mut rng = StdRng::seed_from_u64(2);
    let (t, h) = (7, 130);
    let x = randv(&mut rng, t * h);
    let w = randv(&mut rng, h);
    let (mut a, mut b) = (vec![0.0; t * h], vec![0.0; t * h]);
    rms_norm(&x, &w, 1e-5, &mut a);
    rms_norm_slow(&x, &w, 1e-5, &mut b);
    assert!(max_rel(&a, &b) < 1e-5);
}

#[test]
fn rope_fast_equals_slow() {
    let mut rng = StdRng::seed_from_u64(3);
    let (heads, hd, theta) = (3, 24, 500000.0);
    let positions = [0usize, 1, 17, 200];
    let x = randv(&mut rng, positions.len() * heads * hd);
    let table = RopeTable::new(hd, theta, 256);
    let (mut a, mut b) = (x.clone(), x.clone());
    rope_interleaved(&mut a, heads, &positions, &table);
    rope_interleaved_slow(&mut b, heads, hd, &positions, theta);
    // The table forms the angle in f32 like transformers; the slow twin in f64: at position 200
    // the angle (≤ 200 rad) carries ~1e-5 absolute error in f32.
    assert!(max_rel(&a, &b) < 5e-5, "{}", max_rel(&a, &b));
}

#[test]
fn rope_pairs_adjacent_lanes_not_halves() {
    // x = e0 (lane 0 set) at position 1, head_dim 4: interleaved pairing rotates lanes (0, 1),
    // giving [cos 1, sin 1, 0, 0]. NeoX half-split would rotate lanes (0, 2): [cos 1, 0, sin 1, 0].
    let table = RopeTable::new(4, 10000.0, 4);
    let mut x = vec![1.0f32, 0.0, 0.0, 0.0];
    rope_interleaved(&mut x, 1, &[1], &table);
    let (c, s) = (1.0f32.cos(), 1.0f32.sin());
    assert!((x[0] - c).abs() < 1e-6 && (x[1] - s).abs() < 1e-6, "{x:?}");
    assert!(x[2].abs() < 1e-7 && x[3].abs() < 1e-7, "{x:?}");
    // Pair 1 (lanes 2, 3) turns at theta^(-2/4) = 1/100 rad per position.
    let mut y = vec![0.0f32, 0.0, 1.0, 0.0];
    rope_interleaved(&mut y, 1, &[1], &table);
    assert!((y[2] - 0.01f32.cos()).abs() < 1e-6 && (y[3] - 0.01f32.sin()).abs() < 1e-6, "{y:?}");
}

#[test]
fn silu_mul_fast_equals_slow() {
    let mut rng = StdRng::seed_from_u64(4);
    let g = randv(&mut rng, 100).iter().map(|v| v * 8.0).collect::<Vec<_>>();
    let u = randv(&mut rng, 100);
    let (mut a, mut b) = (vec![0.0; 100], vec![0.0; 100]);
    silu_mul(&g, &u, &mut a);
    silu_mul_slow(&g, &u, &mut b);
    assert!(max_rel(&a, &b) < 1e-6);
    // In place: the very same f32 numbers as the out-of-place op.
    let mut c = g.clone();
    silu_mul_in_place(&mut c, &u);
    assert_eq!(c, a);
    assert_ne!(c, g, "the gate was overwritten");
}

#[test]
fn softmax_handles_all_masked_rows() {
    let mut r = vec![f32::NEG_INFINITY; 4];
    softmax_in_place(&mut r);
    assert_eq!(r, vec![0.0; 4]);
    let mut r = vec![1.0f32, 1.0];
    softmax_in_place(&mut r);
    assert_eq!(r, vec![0.5, 0.5]);
}

#[test]
fn layer_norm_fast_equals_slow() {
    let mut rng = StdRng::seed_from_u64(3);
    let (t, d) = (9, 70);
    let x: Vec<f32> = randv(&mut rng, t * d).iter().map(|v| v * 3.0 + 0.5).collect();
    let (w, b) = (randv(&mut rng, d), randv(&mut rng, d));
    let (mut a, mut s) = (vec![0.0; t * d], vec![0.0; t * d]);
    layer_norm(&x, &w, &b, 1e-6, &mut a);
    layer_norm_slow(&x, &w, &b, 1e-6, &mut s);
    assert!(max_rel(&a, &s) < 1e-5, "{}", max_rel(&a, &s));
}

#[test]
fn erf_and_gelu_match_reference_values() {
    // Python's math.erf.
    for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (-2.0, -0.995_322_265_018_952_7), (3.5, 0.999_999_256_901_627_7)] {
        assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {} vs {want}", erf(x));
    }
    let mut g = vec![-3.0f32, -1.0, 0.0, 0.7, 2.5];
    gelu_erf_in_place(&mut g);
    // torch.nn.GELU()(tensor([-3., -1., 0., 0.7, 2.5])) in float32.
    let want = [-0.004_049_867_4_f32, -0.158_655_29, 0.0, 0.530_625_46, 2.484_475_9];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 2e-6, "{a} vs {b}");
    }
}

#[test]
fn mrope_fast_equals_slow_and_collapses_to_1d_for_text() {
    let mut rng = StdRng::seed_from_u64(4);
    let (nh, hd, theta) = (3, 16, 500_000.0f32);
    let section = MropeSection { hw_pairs: 6, t_pairs: 2 };
    let table = RopeTable::with_mrope(hd, theta, 64, section);
    let pos: Vec<[u32; 3]> = vec![[0, 0, 0], [5, 5, 9], [5, 6, 7], [12, 40, 3], [63, 1, 62]];
    let x = randv(&mut rng, pos.len() * nh * hd);
    let (mut fast, mut slow) = (x.clone(), x.clone());
    rope_apply(&mut fast, nh, RopePositions::ThreeD(&pos), &table).unwrap();
    rope_mrope_slow(&mut slow, nh, hd, &pos, theta, section);
    assert!(max_rel(&fast, &slow) < 1e-5);
    // spec §5 (d): t = h = w = i is exactly 1-D RoPE.
    let text: Vec<[u32; 3]> = (10..15).map(|i| [i, i, i]).collect();
    let (mut a, mut b) = (x.clone(), x.clone());
    rope_apply(&mut a, nh, RopePositions::ThreeD(&text), &table).unwrap();
    rope_apply(&mut b, nh, RopePositions::Sequential(10), &RopeTable::new(hd, theta, 64)).unwrap();
    assert_eq!(a, b);
    // And the axes matter: swapping h and w changes pair 0 (h) and pair 1 (w) only.
    let (mut hw, mut wh) = (x[..nh * hd].to_vec(), x[..nh * hd].to_vec());
    rope_apply(&mut hw, nh, RopePositions::ThreeD(&[[1, 2, 3]]), &table).unwrap();
    rope_apply(&mut wh, nh, RopePositions::ThreeD(&[[1, 3, 2]]), &table).unwrap();
    assert_ne!(hw[..4], wh[..4]);
    assert_eq!(hw[12..16], wh[12..16], "pairs 6, 7 use t");
    // A 3-D position past the table is an error, not a panic.
    assert!(rope_apply(&mut a, nh, RopePositions::ThreeD(&[[0, 64, 0]; 5]), &table).is_err());
    assert!(rope_apply(&mut a, nh, RopePositions::ThreeD(&text), &RopeTable::new(hd, theta, 64)).is_err());
}

#[test]
fn vision_rope_fast_equals_slow_and_pairs_halves() {
    let mut rng = StdRng::seed_from_u64(5);
    let (nh, hd) = (2, 16);
    let rc: Vec<[u32; 2]> = vec![[0, 0], [0, 1], [1, 0], [3, 7], [13, 2]];
    let x = randv(&mut rng, rc.len() * nh * hd);
    let (mut fast, mut slow) = (x.clone(), x.clone());
    rope_vision(&mut fast, nh, hd, &rc, 10_000.0);
    rope_vision_slow(&mut slow, nh, hd, &rc, 10_000.0);
    assert!(max_rel(&fast, &slow) < 1e-5);
    // Half-split pairing: at (row 1, col 0) lane 0 rotates with lane 8 by angle 1 (f_0 = 1).
    let mut v = vec![0.0f32; hd];
    v[0] = 1.0;
    rope_vision(&mut v, 1, hd, &[[1, 0]], 10_000.0);
    assert!((v[0] - 1f32.cos()).abs() < 1e-6 && (v[8] - 1f32.sin()).abs() < 1e-6 && v[1] == 0.0);
}

#[test]
fn vision_frame_attention_fast_equals_slow_and_stays_in_its_frame() {
    use ernie_runtime::model::vision::tower::{frame_attention, frame_attention_slow};
    let mut rng = StdRng::seed_from_u64(6);
    let (nh, hd, frame) = (2, 8, 6);
    let n = 3 * frame;
    let (q, k, mut v) = (randv(&mut rng, n * nh * hd), randv(&mut rng, n * nh * hd), randv(&mut rng, n * nh * hd));
    let fast = frame_attention(&q, &k, &v, nh, hd, frame).unwrap();
    let slow = frame_attention_slow(&q, &k, &v, nh, hd, frame);
    assert!(max_rel(&fast, &slow) < 1e-5);
    // Changing frame 2's values leaves frames 0 and 1 untouched.
    v[2 * frame * nh * hd..].iter_mut().for_each(|x| *x += 1.0);
    let moved = frame_attention(&q, &k, &v, nh, hd, frame).unwrap();
    assert_eq!(moved[..2 * frame * nh * hd], fast[..2 * frame * nh * hd]);
    assert_ne!(moved[2 * frame * nh * hd..], fast[2 * frame * nh * hd..]);
    // Frames wider than one 12×32 GEMM tile and a head size that is not a multiple of 16.
    let (nh, hd, frame) = (3, 20, 45);
    let n = 2 * frame;
    let (q, k, v) = (randv(&mut rng, n * nh * hd), randv(&mut rng, n * nh * hd), randv(&mut rng, n * nh * hd));
    let q: Vec<f32> = q.iter().map(|x| x * 4.0).collect(); // peaked softmax rows
    let fast = frame_attention(&q, &k, &v, nh, hd, frame).unwrap();
    assert!(max_rel(&fast, &frame_attention_slow(&q, &k, &v, nh, hd, frame)) < 1e-5);
}

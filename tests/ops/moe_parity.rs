//! The fast MoE path (route → group by expert → one GEMM pair per active expert → weighted
//! reduce; 1-4 rows: the two-pass streaming decode path) against the slow per-token loop, over
//! awkward shapes: 1, 3, 4, 33 and 511 rows, an expert with no rows, top_k = 1, expert counts that are not powers of two, bf16 and f32 weights.

use crate::common::randn;
use ernie_runtime::model::moe::load_moe_block;
use ernie_runtime::nn::moe::{group_by_expert, route_logits, MoeBlock};
use ernie_runtime::{MoeConfig, Tensor, Weights};
use half::bf16;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Both paths compute in f32 but sum in different orders (GEMM blocking vs f64 dot products):
/// relative differences stay near 1e-6; 1e-4 of the output scale is a generous bound.
const MOE_RTOL: f32 = 1e-4;


fn tensor(data: Vec<f32>, shape: Vec<usize>, bf: bool) -> Tensor {
    if bf {
        let b: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
        Tensor::from_bf16(&b, shape).unwrap()
    } else {
        Tensor::from_f32(data, shape).unwrap()
    }
}

struct Case {
    e: usize,
    k: usize,
    h: usize,
    i: usize,
    shared: usize,
    bf16: bool,
    /// Experts whose router row is pushed to -inf-ish so they receive no rows.
    starved: Vec<usize>,
}

fn build(c: &Case, seed: u64) -> MoeBlock {
    let mut rng = StdRng::seed_from_u64(seed);
    let p = "model.layers.1.mlp";
    let mut t: Vec<(String, Tensor)> = Vec::new();
    let mut router = randn(&mut rng, c.e * c.h, 0.5);
    for &s in &c.starved {
        router[s * c.h..(s + 1) * c.h].iter_mut().for_each(|v| *v = 0.0);
    }
    t.push((format!("{p}.gate.weight"), tensor(router, vec![c.e, c.h], false)));
    let mut bias = randn(&mut rng, c.e, 0.05);
    for &s in &c.starved {
        bias[s] = -1e3;
    }
    t.push((format!("{p}.moe_statics.e_score_correction_bias"), tensor(bias, vec![1, c.e], false)));
    for x in 0..c.e {
        t.push((format!("{p}.experts.{x}.gate_proj.weight"), tensor(randn(&mut rng, c.i * c.h, 0.3), vec![c.i, c.h], c.bf16)));
        t.push((format!("{p}.experts.{x}.up_proj.weight"), tensor(randn(&mut rng, c.i * c.h, 0.3), vec![c.i, c.h], c.bf16)));
        t.push((format!("{p}.experts.{x}.down_proj.weight"), tensor(randn(&mut rng, c.h * c.i, 0.3), vec![c.h, c.i], c.bf16)));
    }
    if c.shared > 0 {
        let si = c.i * c.shared;
        t.push((format!("{p}.shared_experts.gate_proj.weight"), tensor(randn(&mut rng, si * c.h, 0.3), vec![si, c.h], c.bf16)));
        t.push((format!("{p}.shared_experts.up_proj.weight"), tensor(randn(&mut rng, si * c.h, 0.3), vec![si, c.h], c.bf16)));
        t.push((format!("{p}.shared_experts.down_proj.weight"), tensor(randn(&mut rng, c.h * si, 0.3), vec![c.h, si], c.bf16)));
    }
    let mut w = Weights::from_tensors(t);
    let m = MoeConfig { num_experts: c.e, top_k: c.k, moe_intermediate_size: c.i, moe_num_shared_experts: c.shared, moe_norm_min: 1e-12 };
    let block = load_moe_block(&mut w, p, c.h, &m, false).unwrap();
    w.finish().unwrap();
    block
}

fn check(c: Case, rows: &[usize]) {
    let block = build(&c, 7 + c.e as u64 * 31 + c.k as u64);
    let mut rng = StdRng::seed_from_u64(99);
    for &t in rows {
        let x = randn(&mut rng, t * c.h, 1.0); // [t, h]
        let (fast, r_fast) = block.forward(&x).unwrap();
        let (slow, r_slow) = block.forward_slow(&x).unwrap();
        assert_eq!(r_fast, r_slow, "routing differs");
        let scale = slow.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let diff = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= MOE_RTOL * scale, "e={} k={} t={t} bf16={}: diff {diff} (scale {scale})", c.e, c.k, c.bf16);
        for &s in &c.starved {
            assert!(!r_fast.expert_ids.contains(&(s as u32)), "starved expert {s} was selected");
        }
    }
}

#[test]
fn fast_equals_slow_64_experts_top6_bf16() {
    check(Case { e: 64, k: 6, h: 48, i: 24, shared: 2, bf16: true, starved: vec![5] }, &[1, 3, 4, 33, 511]);
}

#[test]
fn fast_equals_slow_60_experts_top1_f32() {
    check(Case { e: 60, k: 1, h: 40, i: 16, shared: 0, bf16: false, starved: vec![0, 59] }, &[1, 33, 511]);
}

#[test]
fn fast_equals_slow_6_experts_all_selected() {
    check(Case { e: 6, k: 6, h: 32, i: 8, shared: 1, bf16: false, starved: vec![] }, &[1, 2, 33]);
}

#[test]
fn route_logits_worked_example() {
    // Two tokens, four experts. p = softmax(logits); bias changes token 0's pick but not weights.
    let logits = [0.0f32, 1.0, 2.0, 0.5, /* token 1 */ 1.0, 1.0, 0.0, 0.0];
    let bias = [0.0f32, 0.9, 0.0, 0.0];
    let r = route_logits(&logits, 4, 2, Some(&bias), 1e-12).unwrap();
    // token 0: p ∝ [1, e, e², e^0.5]; p+bias ranks expert 1 (0.23+0.9) above expert 2 (0.63).
    assert_eq!(&r.expert_ids[..2], &[1, 2]);
    let e = std::f32::consts::E;
    let (p1, p2) = (e, e * e);
    assert!((r.weights[0] - p1 / (p1 + p2)).abs() < 1e-6);
    assert!((r.weights[1] - p2 / (p1 + p2)).abs() < 1e-6);
    // token 1: experts 0 and 1 tie exactly: ties go to the lower index; weights 0.5/0.5... but
    // expert 1 carries +0.9 bias so it ranks first.
    assert_eq!(&r.expert_ids[2..], &[1, 0]);
    assert!((r.weights[2] - 0.5).abs() < 1e-6 && (r.weights[3] - 0.5).abs() < 1e-6);
    // Without bias, the exact tie of experts 0 and 1 resolves to the lower index first.
    let r = route_logits(&logits[4..], 4, 1, None, 1e-12).unwrap();
    assert_eq!(r.expert_ids, vec![0]);
    assert_eq!(r.weights, vec![1.0]);
}

#[test]
fn group_by_expert_worked_example() {
    let logits: Vec<f32> = [[2, 0], [0, 1], [2, 1]]
        .iter()
        .flat_map(|sel: &[usize; 2]| {
            let mut l = vec![-10.0f32; 4];
            l[sel[0]] = 2.0;
            l[sel[1]] = 1.0;
            l
        })
        .collect();
    let r = route_logits(&logits, 4, 2, None, 1e-12).unwrap();
    assert_eq!(r.expert_ids, vec![2, 0, 0, 1, 2, 1]);
    let g = group_by_expert(&r, 4);
    assert_eq!(g.offsets, vec![0, 2, 4, 6, 6]);
    assert_eq!(g.pairs, vec![1, 2, 3, 5, 0, 4]);
}

#[test]
fn route_rejects_bad_shapes() {
    assert!(route_logits(&[0.0; 7], 4, 2, None, 1e-12).is_err());
    assert!(route_logits(&[0.0; 8], 4, 0, None, 1e-12).is_err());
    assert!(route_logits(&[0.0; 8], 4, 5, None, 1e-12).is_err());
    assert!(route_logits(&[0.0; 8], 4, 2, Some(&[0.0; 3]), 1e-12).is_err());
}

#[test]
fn quantised_decode_pass_matches_the_grouped_path() {
    // q4_k_m-like mix (Q4_K gate/up, Q6_K down): the decode pass (1 row) must give each row what
    // the grouped path gives it inside a 9-row batch. Both use the same activation quantizer and
    // block dots, and the same slot order, so only the f32 reduce could differ: 1e-6 relative.
    use ernie_runtime::ops::quant::QType;
    let c = Case { e: 8, k: 2, h: 256, i: 256, shared: 1, bf16: true, starved: vec![] };
    let mut block = build(&c, 3);
    for m in block.experts.iter_mut().chain(block.shared.iter_mut()) {
        assert!(m.gate.quantize(QType::Q4K).unwrap() && m.up.quantize(QType::Q4K).unwrap() && m.down.quantize(QType::Q6K).unwrap());
    }
    let mut rng = StdRng::seed_from_u64(4);
    let x = randn(&mut rng, 9 * c.h, 1.0); // [9, h]
    let (all, _) = block.forward(&x).unwrap();
    for r in 0..9 {
        let (one, _) = block.forward(&x[r * c.h..(r + 1) * c.h]).unwrap();
        let want = &all[r * c.h..(r + 1) * c.h];
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let diff = one.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-6 * scale, "row {r}: diff {diff} (scale {scale})");
    }
}

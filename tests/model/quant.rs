//! Weight-only quantisation at load (`Engine::load_quant`, `model/quantize.rs`): quantised logits
//! against the same fixture's dense logits, greedy agreement, and option errors.
//!
//! The MoE fixtures have hidden 64 and expert width 32: Q8_0 (32-element blocks) quantises every
//! projection, while Q4_K / Q6_K (256-element super-blocks) find no row they can take, so under
//! `q4_k` / `q4_k_m` the fixtures stay dense (bit-identical logits). TODO(#13): a fixture with
//! hidden 256 to measure the K-quants end to end (their kernels are tested in `tests/ops/quant_reference.rs`).

use crate::common::*;
use ernie_runtime::model::quantize::quantize_model;
use ernie_runtime::{ElasticOptions, Engine, Error, GenerateRequest, Logits, QuantScheme, SamplingParams};

/// Q8_0 relative logit error bound. Measured 0.142 on moe-f32, 0.220 on moe-bf16-stacked:
/// far above a real model's ~1 %, because these random 3-layer fixtures amplify weight noise and
/// route on near-ties (a dequantised-Q8_0-weights dense run gives the same 0.132, so this is the
/// weights' rounding, not the Q8 activations or the kernels). 0.35: margin over 0.220.
const Q8_0_REL_ERR: f32 = 0.35;

/// Greedy tokens that must agree under Q8_0 on moe-f32: measured 7 of 16 (divergence at a
/// near-tie); 4 leaves margin. moe-bf16-stacked diverges at the first token (measured 0 of 16;
/// printed, not asserted). TODO(#13): investigate with a larger fixture whose logits are not
/// near-ties.
const Q8_0_GREEDY_PREFIX: usize = 4;

fn logits(engine: &Engine, ids: &[u32]) -> Vec<f32> {
    let mut cache = engine.new_cache(ids.len()).unwrap();
    engine.forward(ids, &mut cache, Logits::All).unwrap()
}

/// max |Δ| / max |dense logit|.
fn rel_err(dense: &[f32], q: &[f32]) -> f32 {
    let d = dense.iter().zip(q).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    d / dense.iter().fold(0.0f32, |m, a| m.max(a.abs()))
}

#[test]
fn quantised_logits_stay_close_to_dense() {
    for name in ["moe-f32", "moe-bf16-stacked"] {
        let exp = expected(name);
        let ids = u32s(&exp["prompt_ids"]);
        let dense = Engine::load(&fixture(name)).unwrap();
        let want = logits(&dense, &ids);
        for (scheme, bound) in [(QuantScheme::Q8_0, Q8_0_REL_ERR), (QuantScheme::Q4K, 0.0), (QuantScheme::Q4KM, 0.0)] {
            let q = Engine::load_quant(&fixture(name), &ElasticOptions::default(), Some(scheme)).unwrap();
            let got = logits(&q, &ids);
            let e = rel_err(&want, &got);
            eprintln!("{name} {scheme}: max|Δ|/max|logit| = {e:.5}");
            assert!(e <= bound, "{name} {scheme}: relative error {e} > {bound}");
            if scheme == QuantScheme::Q8_0 {
                assert!(e > 0.0, "{name}: q8_0 must change the logits (weights really quantised)");
            }
        }
    }
}

#[test]
fn q8_0_greedy_agrees_on_a_prefix_of_16_tokens() {
    for (name, prefix) in [("moe-f32", Q8_0_GREEDY_PREFIX), ("moe-bf16-stacked", 0)] {
        let exp = expected(name);
        let ids = u32s(&exp["prompt_ids"]);
        let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 16 };
        let dense = Engine::load(&fixture(name)).unwrap().generate(&ids, &req, &mut |_| {}).unwrap();
        let q = Engine::load_quant(&fixture(name), &ElasticOptions::default(), Some(QuantScheme::Q8_0)).unwrap();
        let got = q.generate(&ids, &req, &mut |_| {}).unwrap();
        let same = got.token_ids.iter().zip(&dense.token_ids).take_while(|(a, b)| a == b).count();
        eprintln!("{name} q8_0: greedy agrees on {same} of 16 tokens");
        assert!(same >= prefix, "{name}: q8_0 greedy {:?} vs dense {:?}", got.token_ids, dense.token_ids);
    }
}

#[test]
fn q8_0_quantises_every_projection_of_the_moe_fixture() {
    let mut engine = Engine::load(&fixture("moe-f32")).unwrap();
    let r = quantize_model(&mut engine.model, QuantScheme::Q8_0).unwrap();
    assert_eq!(r.dense, 0);
    assert!(r.quantised > 20, "{r:?}");
    // K-quants: no width of this fixture is a multiple of 256: everything stays dense.
    let mut engine = Engine::load(&fixture("moe-f32")).unwrap();
    let r = quantize_model(&mut engine.model, QuantScheme::Q4KM).unwrap();
    assert_eq!(r.quantised, 0, "{r:?}");
}

#[test]
fn bogus_scheme_is_a_clear_error() {
    match "bogus".parse::<QuantScheme>() {
        Err(Error::InvalidOption { option, reason }) => {
            assert_eq!(option, "quant");
            assert!(reason.contains("q4_k_m"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}


/// `--quant` drops each dense source's mmapped pages after quantising it: the bytes a released
/// tensor (or a neighbour sharing its pages) reads afterwards are the file's own.
#[test]
fn released_pages_read_back_the_same_values() {
    let mut w = ernie_runtime::Weights::open(&fixture("moe-f32")).unwrap();
    let all = w.take_prefix("model.layers.1.");
    assert!(all.len() > 4);
    let before: Vec<(String, Vec<f32>)> = all.iter().map(|(n, t)| (n.clone(), t.to_f32_vec())).collect();
    assert!(all.values().all(|t| t.is_mapped()), "fixture tensors are views of the map");
    for t in all.values() {
        t.release_pages();
    }
    for (name, want) in &before {
        assert_eq!(&all[name].to_f32_vec(), want, "{name}");
    }
}

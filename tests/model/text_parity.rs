//! The text models against transformers: logits for a ≥ 20-token chat prompt, each MoE layer's
//! selected experts, and the 32-token greedy continuation, on the fixtures written by
//! `tests/reference/generate.py` (transformers 5.24.0, torch 2.15.0).

use crate::common::*;
use ernie_runtime::{Engine, GenerateRequest, KvCache, Logits, Prompt, SamplingParams};
use tokenizers_mm::ChatMessage;

const FIXTURES: [&str; 4] = ["dense-f32", "dense-bias-f32", "moe-f32", "moe-bf16-stacked"];

fn messages(exp: &serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(exp["messages"].clone()).unwrap()
}

#[test]
fn chat_template_gives_reference_prompt_ids() {
    for name in FIXTURES {
        let exp = expected(name);
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = engine.encode_prompt(&Prompt::Chat(messages(&exp))).unwrap();
        assert_eq!(ids, u32s(&exp["prompt_ids"]), "{name}: prompt ids");
        assert!(ids.len() >= 20, "{name}: prompt must be >= 20 tokens");
    }
}

#[test]
fn logits_match_transformers() {
    for name in FIXTURES {
        let exp = expected(name);
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&exp["prompt_ids"]);
        let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
        let logits = engine.model.forward(&ids, &mut cache, Logits::All, None).unwrap(); // [t, v]
        let want: Vec<f32> = exp["logits"].as_array().unwrap().iter().flat_map(f32s).collect();
        let diff = max_abs_diff(&logits, &want);
        eprintln!("{name}: max |logit diff| = {diff:.2e} over {} values", want.len());
        assert!(diff <= F32_LOGITS_ATOL, "{name}: max abs logit diff {diff} > {F32_LOGITS_ATOL}");
    }
}

#[test]
fn incremental_decode_logits_match_full_prefill() {
    // Prefill t-1 tokens then decode the last one through the KV cache: its logits must equal the
    // last row of the reference (exercises cache offsets and RoPE positions of decode steps).
    for name in FIXTURES {
        let exp = expected(name);
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&exp["prompt_ids"]);
        let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
        engine.model.forward(&ids[..ids.len() - 5], &mut cache, Logits::Last, None).unwrap();
        for (j, &id) in ids[ids.len() - 5..].iter().enumerate() {
            let logits = engine.model.forward(&[id], &mut cache, Logits::Last, None).unwrap();
            let row = ids.len() - 5 + j;
            let want = f32s(&exp["logits"][row]);
            let diff = max_abs_diff(&logits, &want);
            assert!(diff <= F32_LOGITS_ATOL, "{name}: decode row {row}: diff {diff}");
        }
    }
}

#[test]
fn expert_selection_matches_transformers() {
    for name in ["moe-f32", "moe-bf16-stacked"] {
        let exp = expected(name);
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&exp["prompt_ids"]);
        let routing = engine.model.routing_of(&ids).unwrap();
        let want = exp["expert_ids"].as_object().unwrap();
        assert_eq!(routing.len(), want.len(), "{name}: number of MoE layers");
        for (layer, rows) in want {
            let l: usize = layer.parse().unwrap();
            let want_ids: Vec<u32> = rows.as_array().unwrap().iter().flat_map(u32s).collect();
            assert_eq!(routing[&l].expert_ids, want_ids, "{name}: layer {l} expert ids");
            let want_w: Vec<f32> = exp["routing_weights"][layer].as_array().unwrap().iter().flat_map(f32s).collect();
            let diff = max_abs_diff(&routing[&l].weights, &want_w);
            assert!(diff <= 1e-5, "{name}: layer {l} routing weights differ by {diff}");
        }
        // The fixture's correction bias must really change the selection, or this test proves
        // nothing about bias-for-selection-only.
        assert!(exp["bias_changes_selection_fraction"].as_f64().unwrap() >= 0.2);
    }
}

#[test]
fn greedy_continuation_matches_transformers() {
    for name in FIXTURES {
        let exp = expected(name);
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&exp["prompt_ids"]);
        let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: exp["max_new_tokens"].as_u64().unwrap() as usize };
        let gen = engine.generate(&ids, &req, &mut |_| {}).unwrap();
        assert_eq!(gen.token_ids, u32s(&exp["greedy_ids"]), "{name}: greedy ids");
    }
}

//! ERNIE 5.0 decoding knobs on the text side: MTP self-speculative decoding and elastic
//! sub-models (layers / experts / top-k).

use crate::common::*;
use ernie_runtime::model::elastic::parse_index_list;
use ernie_runtime::infer::speculative::{accept_or_resample, Drafter, MtpDrafter};
use ernie_runtime::{
    DraftMode, ElasticOptions, Engine, Error, ExpertSpec, GenerateRequest, KvCache, LayerSpec, Logits, Result, Sampler,
    SamplingParams, Transformer,
};

/// A drafter that knows the greedy answer and plants a wrong token at every `wrong_every`-th draft
/// (0 = never): random-weight MTP heads are almost never right, so this is what exercises the
/// accept-and-commit path.
struct Oracle {
    answer: Vec<u32>,
    prompt_len: usize,
    seen: usize,
    wrong_every: usize,
    calls: usize,
}

impl Drafter for Oracle {
    fn draft(&mut self, _: &Transformer, _: &[f32], tokens: &[u32], d: usize, _: &mut Sampler) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        self.seen += tokens.len();
        let g = self.seen - (self.prompt_len - 1); // generated tokens committed so far
        let mut drafts: Vec<u32> = self.answer.iter().skip(g).take(d).copied().collect();
        for (i, x) in drafts.iter_mut().enumerate() {
            self.calls += 1;
            if self.wrong_every > 0 && (self.calls + i) % self.wrong_every == 0 {
                *x = (*x + 1) % 1000;
            }
        }
        Ok((drafts, Vec::new()))
    }
}

fn oracle(answer: &[u32], prompt_len: usize, wrong_every: usize) -> Oracle {
    Oracle { answer: answer.to_vec(), prompt_len, seen: 0, wrong_every, calls: 0 }
}

#[test]
fn accepted_drafts_commit_exactly_like_plain_decoding() {
    let exp = expected("moe-f32");
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    let ids = u32s(&exp["prompt_ids"]);
    let want = u32s(&exp["greedy_ids"]);
    for (d, wrong_every) in [(1, 0), (3, 0), (4, 0), (2, 3), (3, 4), (5, 2)] {
        let mut cache = KvCache::new(&engine.model.cfg, ids.len() + 31).unwrap();
        let mut o = oracle(&want, ids.len(), wrong_every);
        let (gen, stats) = engine.generate_speculative_with(&ids, &greedy_req(32), DraftMode::Fixed(d), &mut o, &mut cache, &mut |_| {}).unwrap();
        assert_eq!(gen.token_ids, want, "d={d} wrong_every={wrong_every}");
        assert!(stats.accepted > 0, "d={d}: nothing accepted");
        if wrong_every == 0 {
            assert_eq!(stats.accepted, stats.drafted, "a perfect drafter is always accepted");
        } else {
            assert!(stats.accepted < stats.drafted);
        }
    }
}

fn greedy_req(n: usize) -> GenerateRequest {
    GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: n }
}

#[test]
fn speculative_greedy_equals_plain_greedy() {
    let exp = expected("moe-f32");
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    assert!(engine.mtp().unwrap().is_some(), "moe-f32 ships MTP tensors");
    let ids = u32s(&exp["prompt_ids"]);
    let want = u32s(&exp["greedy_ids"]); // transformers' greedy continuation
    for d in 1..=5 {
        let (gen, stats) = engine.generate_speculative(&ids, &greedy_req(32), DraftMode::Fixed(d), &mut |_| {}).unwrap();
        assert_eq!(gen.token_ids, want, "draft depth {d}");
        assert!(stats.drafted > 0, "depth {d} drafted nothing");
        eprintln!("d={d}: drafted {} accepted {} ({:.2})", stats.drafted, stats.accepted, stats.accepted_fraction());
    }
    let (gen, _) = engine.generate_speculative(&ids, &greedy_req(32), DraftMode::Auto, &mut |_| {}).unwrap();
    assert_eq!(gen.token_ids, want, "auto");
}

#[test]
fn rollback_leaves_the_kv_cache_as_a_plain_run_would() {
    let exp = expected("moe-f32");
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    let mtp = engine.mtp().unwrap().unwrap();
    let ids = u32s(&exp["prompt_ids"]);
    let want = u32s(&exp["greedy_ids"]);
    let n = 20;
    // Plain: prompt, then the first n-1 generated tokens fed back one at a time.
    let cfg = &engine.model.cfg;
    let mut plain = KvCache::new(cfg, ids.len() + n).unwrap();
    engine.model.forward(&ids, &mut plain, Logits::Last, None).unwrap();
    for &t in &want[..n - 1] {
        engine.model.forward(&[t], &mut plain, Logits::Last, None).unwrap();
    }
    for (d, wrong_every) in [(1, 0), (2, 3), (3, 2)] {
        let mut cache = KvCache::new(cfg, ids.len() + n - 1).unwrap();
        let mut o = oracle(&want, ids.len(), wrong_every);
        let (gen, stats) = engine.generate_speculative_with(&ids, &greedy_req(n), DraftMode::Fixed(d), &mut o, &mut cache, &mut |_| {}).unwrap();
        assert_eq!(gen.token_ids, want[..n].to_vec());
        assert!(stats.accepted > 0 && (wrong_every == 0 || stats.drafted > stats.accepted), "d={d}: needs accepts and rejections");
        assert_eq!(cache.len(), plain.len(), "d={d}: cache length");
        let kv = cfg.kv_dim() * cache.len();
        for (l, (a, b)) in cache.layers.iter().zip(&plain.layers).enumerate() {
            // Up to 4 rows per forward both paths run the same per-row GEMV code: bit-identical.
            assert!(a.k[..kv] == b.k[..kv] && a.v[..kv] == b.v[..kv], "d={d}: layer {l} K/V differ from the plain run");
        }
    }
    // The MTP drafter's own cache after a run holds one row per committed position but the last.
    let mut cache = KvCache::new(cfg, ids.len() + n - 1).unwrap();
    let mut drafter = MtpDrafter::new(&engine.model, &mtp, ids.len() + n + 4).unwrap();
    engine.generate_speculative_with(&ids, &greedy_req(n), DraftMode::Fixed(3), &mut drafter, &mut cache, &mut |_| {}).unwrap();
    assert!(drafter.cache.len() < cache.len() && drafter.cache.len() >= ids.len());
}

#[test]
fn speculative_sampling_keeps_the_target_distribution() {
    // Monte Carlo over the acceptance rule: x ~ q, accept or resample; the result must follow p.
    let p = [0.5f32, 0.2, 0.15, 0.1, 0.05];
    let q = [0.1f32, 0.1, 0.4, 0.3, 0.1];
    let mut sampler = Sampler::new(SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 11 }).unwrap();
    let n = 200_000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        let x = sampler.sample_from(&q);
        let out = match accept_or_resample(&p, &q, x, &mut sampler) {
            Ok(()) => x,
            Err(t) => t,
        };
        counts[out as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let f = c as f32 / n as f32;
        // 5 standard errors of a binomial proportion at n = 200k is below 0.006.
        assert!((f - p[i]).abs() < 0.006, "token {i}: {f} vs {}", p[i]);
    }
}

#[test]
fn speculative_sampling_is_seeded() {
    let exp = expected("moe-f32");
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    let ids = u32s(&exp["prompt_ids"]);
    let req = GenerateRequest { sampling: SamplingParams { temperature: 0.8, top_k: 50, top_p: 0.95, seed: 3 }, max_new_tokens: 24 };
    let a = engine.generate_speculative(&ids, &req, DraftMode::Fixed(2), &mut |_| {}).unwrap().0.token_ids;
    let b = engine.generate_speculative(&ids, &req, DraftMode::Fixed(2), &mut |_| {}).unwrap().0.token_ids;
    assert_eq!(a, b);
    assert_eq!(a.len(), 24);
}

#[test]
fn draft_tokens_without_mtp_is_an_error_and_auto_falls_back() {
    let exp = expected("moe-bf16-stacked");
    let engine = Engine::load(&fixture("moe-bf16-stacked")).unwrap();
    let ids = u32s(&exp["prompt_ids"]);
    assert!(matches!(engine.generate_speculative(&ids, &greedy_req(4), DraftMode::Fixed(2), &mut |_| {}), Err(Error::InvalidOption { option: "draft_tokens", .. })));
    let (gen, stats) = engine.generate_speculative(&ids, &greedy_req(8), DraftMode::Auto, &mut |_| {}).unwrap();
    assert_eq!(gen.token_ids, u32s(&exp["greedy_ids"])[..8].to_vec());
    assert_eq!(stats.drafted, 0);
}

fn all_logits(engine: &Engine, ids: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
    engine.model.forward(ids, &mut cache, Logits::All, None).unwrap()
}

#[test]
fn full_elastic_options_are_bit_identical_to_none() {
    let exp = expected("moe-f32");
    let ids = u32s(&exp["prompt_ids"]);
    let base = all_logits(&Engine::load(&fixture("moe-f32")).unwrap(), &ids);
    let full = ElasticOptions {
        layers: Some(LayerSpec::Keep(vec![0, 1, 2])),
        experts: Some("0-5".parse::<ExpertSpec>().unwrap()),
        top_k: Some(2),
    };
    let same = all_logits(&Engine::load_with(&fixture("moe-f32"), &full).unwrap(), &ids);
    assert!(base == same, "full options must not change a single bit");
}

#[test]
fn dropping_a_layer_equals_transformers_with_that_layer_removed() {
    let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("moe-f32").join("expected_drop_layer1.json")).unwrap()).unwrap();
    let ids = u32s(&exp["prompt_ids"]);
    let opts = ElasticOptions { layers: Some("0,2".parse().unwrap()), ..Default::default() };
    let engine = Engine::load_with(&fixture("moe-f32"), &opts).unwrap();
    let got = all_logits(&engine, &ids);
    let want: Vec<f32> = exp["logits"].as_array().unwrap().iter().flat_map(f32s).collect();
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= F32_LOGITS_ATOL, "dropped-layer logits differ by {diff}");
    let gen = engine.generate(&ids, &greedy_req(32), &mut |_| {}).unwrap();
    assert_eq!(gen.token_ids, u32s(&exp["greedy_ids"]));
}

#[test]
fn masked_experts_are_never_selected_and_weights_renormalise() {
    let exp = expected("moe-f32");
    let ids = u32s(&exp["prompt_ids"]);
    let opts = ElasticOptions { experts: Some("1:0,2,4;2:1-3".parse().unwrap()), ..Default::default() };
    let engine = Engine::load_with(&fixture("moe-f32"), &opts).unwrap();
    let routing = engine.model.routing_of(&ids).unwrap();
    for (layer, allowed) in [(1usize, vec![0u32, 2, 4]), (2, vec![1, 2, 3])] {
        let r = &routing[&layer];
        assert!(r.expert_ids.iter().all(|e| allowed.contains(e)), "layer {layer}: {:?}", r.expert_ids);
        for w in r.weights.chunks(r.top_k) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn top_k_override_keeps_the_best_slots_and_renormalises() {
    let exp = expected("moe-f32");
    let ids = u32s(&exp["prompt_ids"]);
    let engine = Engine::load_with(&fixture("moe-f32"), &ElasticOptions { top_k: Some(1), ..Default::default() }).unwrap();
    let routing = engine.model.routing_of(&ids).unwrap();
    // The first MoE layer sees the same input as in the reference run (later layers do not, since
    // its output changed): its top-1 must be the reference's first (highest-scoring) slot.
    let first: Vec<u32> = exp["expert_ids"]["1"].as_array().unwrap().iter().map(|r| u32s(r)[0]).collect();
    assert_eq!(routing[&1].expert_ids, first);
    for r in routing.values() {
        assert_eq!(r.top_k, 1);
        assert!(r.weights.iter().all(|&w| w == 1.0), "one slot renormalises to weight 1");
    }
}

#[test]
fn bad_elastic_options_are_clear_errors() {
    let dir = fixture("moe-f32");
    let load = |o: ElasticOptions| match Engine::load_with(&dir, &o) {
        Err(Error::InvalidOption { option, reason }) => format!("{option}: {reason}"),
        Err(e) => panic!("wrong error type: {e}"),
        Ok(_) => panic!("{o:?} should fail"),
    };
    assert!(load(ElasticOptions { layers: Some(LayerSpec::Keep(vec![7])), ..Default::default() }).contains("layer 7"));
    assert!(load(ElasticOptions { layers: Some(LayerSpec::Count(2)), ..Default::default() }).contains("layers: "));
    assert!(load(ElasticOptions { top_k: Some(0), ..Default::default() }).contains("top_k: "));
    assert!(load(ElasticOptions { top_k: Some(7), ..Default::default() }).contains("top_k: "));
    let two = ElasticOptions { experts: Some("0-1".parse().unwrap()), top_k: Some(3), ..Default::default() };
    assert!(load(two).contains("top_k: "));
    assert!(load(ElasticOptions { experts: Some("0,9".parse().unwrap()), ..Default::default() }).contains("expert 9"));
    assert!(load(ElasticOptions { experts: Some("0:0-3".parse().unwrap()), ..Default::default() }).contains("not a MoE layer"));
    let dense = Engine::load_with(&fixture("dense-f32"), &ElasticOptions { top_k: Some(1), ..Default::default() });
    assert!(matches!(dense, Err(Error::InvalidOption { option: "top_k", .. })));
    assert!("1-x".parse::<LayerSpec>().is_err());
    assert!("5-2".parse::<LayerSpec>().is_err());
    assert!("1:0;1:2".parse::<ExpertSpec>().is_err());
    assert_eq!(parse_index_list("3,1-2,2", "x").unwrap(), vec![1, 2, 3]);
    assert_eq!("12".parse::<LayerSpec>().unwrap(), LayerSpec::Count(12));
}

#[test]
fn layer_count_drops_evenly_from_the_middle() {
    // 28 layers (21B-A3B) kept to 21: 7 drops spread over layers 2..26.
    let cfg = ernie_runtime::TextConfig::from_json(&serde_json::json!({
        "model_type": "ernie4_5_moe", "hidden_size": 64, "num_hidden_layers": 28, "num_attention_heads": 4,
        "num_key_value_heads": 2, "moe_num_experts": 4, "moe_k": 2,
    }))
    .unwrap();
    let plan = ElasticOptions { layers: Some(LayerSpec::Count(21)), ..Default::default() }.resolve(&cfg).unwrap();
    let dropped: Vec<usize> = plan.keep_layer.iter().enumerate().filter(|(_, &k)| !k).map(|(i, _)| i).collect();
    // Drop j sits at candidate (2j+1)·24/14 of layers 2..=25 (centre of each of 7 equal bins).
    assert_eq!(dropped, vec![3, 7, 10, 14, 17, 20, 24]);
}

fn ernie_out(args: &[&str]) -> std::process::Output {
    ernie().args(args).output().unwrap()
}

#[test]
fn cli_exposes_draft_and_elastic_options() {
    let model = fixture("moe-f32");
    let model = model.to_str().unwrap();
    let exp = expected("moe-f32");
    let prompt = exp["messages"][0]["content"].as_str().unwrap();
    let out = ernie_out(&["generate", "--model", model, "--prompt", prompt, "--max-tokens", "32", "--draft-tokens", "2", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u32s(&v["token_ids"]), u32s(&exp["greedy_ids"]));
    assert!(v["accepted_draft_fraction"].is_number());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MTP drafts:"));

    let drop: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("moe-f32").join("expected_drop_layer1.json")).unwrap()).unwrap();
    let out = ernie_out(&["generate", "--model", model, "--prompt", prompt, "--max-tokens", "32", "--layers", "0,2", "--draft-tokens", "0", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u32s(&v["token_ids"]), u32s(&drop["greedy_ids"]));
    assert!(v["accepted_draft_fraction"].is_null());

    let out = ernie_out(&["generate", "--model", model, "--prompt", "x", "--top-k", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--top-k") && err.trim_end().lines().count() == 1, "{err}");

    let help = String::from_utf8_lossy(&ernie_out(&["generate", "--help"]).stdout).to_string();
    for flag in ["--draft-tokens", "--layers", "--experts", "--top-k"] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

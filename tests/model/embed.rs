//! `Engine::embed` against transformers (`tests/fixtures/embeddings.json`, written by
//! `tests/reference/embed_reference.py`): final normalised hidden states and pooled vectors;
//! plus the pooling rules against a manual computation, normalisation, truncation, errors, and
//! the step-wise `Generator` against `Engine::generate`.

use crate::common::*;
use ernie_runtime::{
    EmbedInput, EmbedOptions, Engine, Error, GenerateRequest, KvCache, Logits, Media, Pooling, SamplingParams, StopReason,
};
use serde_json::Value;

/// f32 weights and compute on both sides; final-norm outputs are O(5) (norm weight ~ N(5, 1)),
/// so summation-order noise is ~1e-6 and 1e-4 absolute leaves two orders of margin (as logits).
const HIDDEN_ATOL: f32 = 1e-4;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("embeddings.json")).expect("tests/fixtures/embeddings.json");
    serde_json::from_str(&text).expect("embeddings.json parses")
}

fn embed_one(engine: &Engine, input: EmbedInput, opts: &EmbedOptions) -> Vec<f32> {
    let mut out = engine.embed(&[input], opts).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0).vector
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn request_err(r: ernie_runtime::Result<Vec<ernie_runtime::Embedding>>) -> String {
    match r {
        Err(Error::Request(msg)) => msg,
        other => panic!("expected Error::Request, got {other:?}"),
    }
}

#[test]
fn final_hidden_states_match_transformers() {
    let refs = reference();
    assert_eq!(refs["versions"]["transformers"], "5.24.0");
    for (name, r) in refs["fixtures"].as_object().unwrap() {
        assert_eq!(r["hidden_states_last_is_normed"], true, "{name}: HF's last hidden state is after model.norm");
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&r["prompt_ids"]);
        let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
        let hidden = engine.model.forward(&ids, &mut cache, Logits::Hidden, None).unwrap(); // [t, h]
        let want: Vec<f32> = r["prompt_last_hidden_state"].as_array().unwrap().iter().flat_map(f32s).collect();
        let diff = max_abs_diff(&hidden, &want);
        eprintln!("{name}: max |hidden diff| = {diff:.2e} over {} values", want.len());
        assert!(diff <= HIDDEN_ATOL, "{name}: hidden diff {diff}");
    }
}

#[test]
fn pooled_embeddings_match_transformers() {
    let refs = reference();
    let cases = [
        ("last", EmbedOptions::default()),
        ("mean", EmbedOptions { pooling: Pooling::Mean, ..Default::default() }),
        ("eos", EmbedOptions { pooling: Pooling::EndOfSentence, ..Default::default() }),
        ("last_norm", EmbedOptions { normalize: true, ..Default::default() }),
        ("mean_d16_norm", EmbedOptions { pooling: Pooling::Mean, normalize: true, dimensions: Some(16), max_tokens: None }),
    ];
    for (name, r) in refs["fixtures"].as_object().unwrap() {
        let engine = Engine::load(&fixture(name)).unwrap();
        for t in r["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            let ids = u32s(&t["ids"]);
            assert_eq!(engine.tokenizer().unwrap().encode_plain(text).unwrap(), ids, "{name}: ids of {text:?}");
            for (key, opts) in &cases {
                let got = engine.embed(&[EmbedInput::Text(text.into())], opts).unwrap();
                let want = f32s(&t[*key]);
                let diff = max_abs_diff(&got[0].vector, &want);
                eprintln!("{name} {key:>13} {text:?}: max diff {diff:.2e}");
                assert!(diff <= HIDDEN_ATOL, "{name} {key}: diff {diff}");
                let extra = usize::from(opts.pooling == Pooling::EndOfSentence);
                assert_eq!(got[0].n_tokens, ids.len() + extra, "{name} {key}: n_tokens");
            }
        }
    }
}

#[test]
fn pooling_equals_manual_computation_from_hidden_states() {
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    let h = engine.model.cfg.hidden_size;
    let ids: Vec<u32> = vec![300, 301, 302, 5, 900, 77, 412];
    let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
    let hidden = engine.model.forward(&ids, &mut cache, Logits::Hidden, None).unwrap(); // [t, h]
    let t = ids.len();
    let last = &hidden[(t - 1) * h..];
    let mean: Vec<f32> = (0..h).map(|j| (0..t).map(|i| hidden[i * h + j]).sum::<f32>() / t as f32).collect();

    let got_last = embed_one(&engine, EmbedInput::Ids(ids.clone()), &EmbedOptions::default());
    assert_eq!(got_last, last, "last pooling is row t-1 exactly");
    let got_mean = embed_one(&engine, EmbedInput::Ids(ids.clone()), &EmbedOptions { pooling: Pooling::Mean, ..Default::default() });
    assert!(max_abs_diff(&got_mean, &mean) <= 1e-5, "mean pooling");

    // End-of-sentence pooling = last pooling over ids + [<|end_of_sentence|>].
    let eos = engine.tokenizer().unwrap().token_id("<|end_of_sentence|>").unwrap();
    let got_eos = embed_one(&engine, EmbedInput::Ids(ids.clone()), &EmbedOptions { pooling: Pooling::EndOfSentence, ..Default::default() });
    let with_eos: Vec<u32> = ids.iter().copied().chain([eos]).collect();
    assert_eq!(got_eos, embed_one(&engine, EmbedInput::Ids(with_eos), &EmbedOptions::default()));

    // Text input = its plain-text ids.
    let text = "Hello <|end_of_sentence|> world";
    let text_ids = engine.tokenizer().unwrap().encode_plain(text).unwrap();
    assert!(!text_ids.contains(&eos), "special-token text in user input stays literal");
    assert_eq!(
        embed_one(&engine, EmbedInput::Text(text.into()), &EmbedOptions::default()),
        embed_one(&engine, EmbedInput::Ids(text_ids), &EmbedOptions::default())
    );
}

#[test]
fn normalisation_truncation_and_batches() {
    let engine = Engine::load(&fixture("dense-f32")).unwrap();
    let h = engine.model.cfg.hidden_size;
    let inputs = vec![EmbedInput::Text("one".into()), EmbedInput::Text("two words".into()), EmbedInput::Ids(vec![400, 401])];
    let raw = engine.embed(&inputs, &EmbedOptions::default()).unwrap();
    let normed = engine.embed(&inputs, &EmbedOptions { normalize: true, ..Default::default() }).unwrap();
    let d8 = engine.embed(&inputs, &EmbedOptions { dimensions: Some(8), ..Default::default() }).unwrap();
    let d8n = engine.embed(&inputs, &EmbedOptions { dimensions: Some(8), normalize: true, ..Default::default() }).unwrap();
    assert_eq!(raw.len(), 3);
    for i in 0..3 {
        assert_eq!(raw[i].vector.len(), h);
        assert!((norm(&normed[i].vector) - 1.0).abs() < 1e-5, "unit norm");
        let n = norm(&raw[i].vector);
        assert!(max_abs_diff(&normed[i].vector, &raw[i].vector.iter().map(|x| x / n).collect::<Vec<_>>()) < 1e-6);
        assert_eq!(d8[i].vector, raw[i].vector[..8], "truncation keeps the first d components");
        assert!((norm(&d8n[i].vector) - 1.0).abs() < 1e-5, "normalised after truncation");
        // A batch gives what each input gives alone.
        assert_eq!(raw[i], engine.embed(&inputs[i..i + 1], &EmbedOptions::default()).unwrap()[0]);
    }
    assert_eq!(raw[2].n_tokens, 2);
    let full = engine.embed(&inputs[..1], &EmbedOptions { dimensions: Some(h), ..Default::default() }).unwrap();
    assert_eq!(full[0], raw[0]);
}

#[test]
fn embed_errors() {
    let engine = Engine::load(&fixture("dense-f32")).unwrap();
    let h = engine.model.cfg.hidden_size;
    let v = engine.model.cfg.vocab_size as u32;
    let text = || vec![EmbedInput::Text("fine".into())];
    let msg = request_err(engine.embed(&text(), &EmbedOptions { dimensions: Some(h + 1), ..Default::default() }));
    assert!(msg.contains("dimensions 65"), "{msg}");
    request_err(engine.embed(&text(), &EmbedOptions { dimensions: Some(0), ..Default::default() }));
    assert!(request_err(engine.embed(&[], &EmbedOptions::default())).contains("no inputs"));
    let two = [EmbedInput::Text("ok".into()), EmbedInput::Text(String::new())];
    let msg = request_err(engine.embed(&two, &EmbedOptions::default()));
    assert!(msg.starts_with("input 1:"), "{msg}");
    let msg = request_err(engine.embed(&[EmbedInput::Ids(vec![3, v])], &EmbedOptions::default()));
    assert!(msg.contains("outside the vocabulary"), "{msg}");
    let media = EmbedInput::Media { text: "a cat".into(), media: vec![Media::Image(vec![0x89, b'P', b'N', b'G'])] };
    // Media need a VL checkpoint (issue #12; the VL path is tested in `embed_media.rs`).
    let msg = request_err(engine.embed(&[media], &EmbedOptions::default()));
    assert!(msg.contains("vision-language checkpoint"), "{msg}");
    let long = EmbedInput::Ids(vec![400; 10]);
    let msg = request_err(engine.embed(&[long], &EmbedOptions { max_tokens: Some(9), ..Default::default() }));
    assert!(msg.contains("10 tokens exceed the limit of 9"), "{msg}");
    assert!("median".parse::<Pooling>().is_err());
    assert_eq!("eos".parse::<Pooling>().unwrap(), Pooling::EndOfSentence);
}

#[test]
fn generator_steps_equal_generate() {
    for name in ["dense-f32", "moe-f32"] {
        let engine = Engine::load(&fixture(name)).unwrap();
        let ids = u32s(&expected(name)["prompt_ids"]);
        let samplings = [
            SamplingParams::default(),
            SamplingParams { temperature: 0.9, top_k: 0, top_p: 0.95, seed: 7 },
            SamplingParams { temperature: 1.3, top_k: 50, top_p: 1.0, seed: 123 },
        ];
        for sampling in samplings {
            let req = GenerateRequest { sampling: sampling.clone(), max_new_tokens: 20 };
            let mut streamed = String::new();
            let want = engine.generate(&ids, &req, &mut |s| streamed.push_str(s)).unwrap();
            let mut gen = engine.start_generation(&ids, &req).unwrap();
            let (mut tokens, mut text) = (Vec::new(), String::new());
            while let Some(step) = gen.step().unwrap() {
                tokens.push(step.token);
                text.push_str(&step.text);
            }
            let got = gen.finish();
            assert_eq!((&tokens, &text), (&want.token_ids, &want.text), "{name} {sampling:?}");
            assert_eq!((got.token_ids, got.text, got.stop), (want.token_ids, want.text, want.stop));
            assert_eq!(streamed, text);
        }
    }
}

#[test]
fn cancellation_stops_between_steps() {
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    let ids = u32s(&expected("moe-f32")["prompt_ids"]);
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 30 };
    let full = engine.generate(&ids, &req, &mut |_| {}).unwrap();
    let calls = std::cell::Cell::new(0);
    let got = engine
        .generate_cancellable(&ids, &req, &mut |_| {}, &|| {
            calls.set(calls.get() + 1);
            calls.get() > 3
        })
        .unwrap();
    assert_eq!(got.stop, StopReason::Cancelled);
    assert_eq!(got.token_ids, full.token_ids[..3]);
    let never = engine.generate_cancellable(&ids, &req, &mut |_| {}, &|| false).unwrap();
    assert_eq!((never.token_ids, never.stop), (full.token_ids, full.stop));
    let zero = engine.start_generation(&ids, &GenerateRequest { max_new_tokens: 0, ..req }).unwrap();
    assert!(zero.is_done());
    assert_eq!(zero.finish().stop, StopReason::MaxTokens);
}

#[test]
fn generator_stops_at_the_context_like_generate() {
    // A copy of moe-f32 whose context (30) ends inside a 20-token budget after a 23-token prompt.
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("moe-f32")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let cfg_path = tmp.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = 30.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let engine = Engine::load(tmp.path()).unwrap();
    let ids = u32s(&expected("moe-f32")["prompt_ids"]);
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 20 };
    let want = engine.generate(&ids, &req, &mut |_| {}).unwrap();
    let mut gen = engine.start_generation(&ids, &req).unwrap();
    while gen.step().unwrap().is_some() {}
    let got = gen.finish();
    assert_eq!(want.stop, StopReason::ContextLength);
    assert_eq!((got.token_ids, got.text, got.stop), (want.token_ids, want.text, want.stop));
}

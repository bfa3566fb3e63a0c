//! ERNIE 5.0 audio on codec codes against the torch oracle `tests/reference/make_ncp_reference.py`
//! (transformers 5.25.0, torch 2.15.0; fixture `ernie5-audio-tiny`: 4 layers, Q = 3, V = 16):
//! greedy next-codec prediction, audio understanding, and one clear error per bad input.

use std::collections::BTreeMap;

use crate::common::*;
use ernie_runtime::infer::next_codec::{prefill_with_audio, AudioGenOptions};
use ernie_runtime::{Engine, Error, GenerateRequest, KvCache, Logits, Prompt, SamplingParams};
use tokenizers_mm::ChatMessage;

const FIXTURE: &str = "ernie5-audio-tiny";
/// Final hidden states are RMS-normalised (order-1 values): f32 summation-order noise through 4
/// layers stays ~1e-6; 1e-4 still catches any wrong row, position or missing frame embedding.
const HIDDEN_ATOL: f32 = 1e-4;

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(FIXTURE).join("ncp_reference.json")).unwrap()).unwrap()
}

fn codes(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(u32s).collect()
}

fn chat(text: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage { role: "user".into(), content: text.into() }])
}

fn greedy(max_frames: usize) -> AudioGenOptions {
    AudioGenOptions { sampling: SamplingParams::default(), max_frames, uniforms: None }
}

#[test]
fn ncp_greedy_codes_match_the_oracle() {
    let r = reference();
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let prompt = chat(r["ncp"]["user_text"].as_str().unwrap());
    assert_eq!(engine.encode_prompt(&prompt).unwrap(), u32s(&r["ncp"]["prompt_ids"]), "chat-templated prompt ids");
    let want = codes(&r["ncp"]["codes"]);
    let max_frames = r["ncp"]["max_frames"].as_u64().unwrap() as usize;
    let mut streamed = Vec::new();
    let out = engine.generate_audio_codes_with(&prompt, &greedy(max_frames), &mut |j, f| streamed.push((j, f.to_vec()))).unwrap();
    eprintln!("NCP codes {:?}, ended {}, {:.1} frames/s", out.codes, out.ended, out.frames_per_sec());
    assert_eq!(out.codes, want, "greedy codes [Q][frames]");
    assert_eq!(out.ended, r["ncp"]["ended_by_level0"].as_bool().unwrap(), "level 0's end class");
    assert!(out.ended && out.frames() < max_frames, "the fixture's seed makes level 0 end the audio early");
    assert_eq!(streamed.len(), out.frames());
    for (j, f) in &streamed {
        assert_eq!(f, &want.iter().map(|l| l[*j]).collect::<Vec<_>>(), "frame {j} streamed");
    }
    // A frame cap shorter than the audio: the first frames, not ended.
    let short = engine.generate_audio_codes(&prompt, &greedy(2)).unwrap();
    assert_eq!(short.codes, want.iter().map(|l| l[..2].to_vec()).collect::<Vec<_>>());
    assert!(!short.ended);
}

#[test]
fn injected_uniforms_with_top_k_1_are_greedy() {
    let r = reference();
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let prompt = chat(r["ncp"]["user_text"].as_str().unwrap());
    let sampling = SamplingParams { temperature: 0.7, top_k: 1, top_p: 1.0, seed: 0 };
    let opts = AudioGenOptions { sampling, max_frames: 8, uniforms: Some(vec![0.999; 64]) };
    assert_eq!(engine.generate_audio_codes(&prompt, &opts).unwrap().codes, codes(&r["ncp"]["codes"]));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let prompt = chat("Read the weather report.");
    let run = |seed| {
        // A high temperature: the fixture's heads are sharp (their norms scale logits ~5×).
        let sampling = SamplingParams { temperature: 8.0, top_k: 12, top_p: 0.98, seed };
        engine.generate_audio_codes(&prompt, &AudioGenOptions { sampling, max_frames: 6, uniforms: None }).unwrap()
    };
    let (a, b) = (run(7), run(7));
    assert_eq!(a.codes, b.codes);
    eprintln!("sampled codes (seed 7): {:?}", a.codes);
    assert!(a.codes.iter().flatten().all(|&c| c < 16));
    let others: Vec<_> = (8..12).map(|s| run(s).codes).collect();
    assert!(others.iter().any(|c| c != &a.codes), "the seed must matter");
}

#[test]
fn audio_understanding_matches_the_oracle() {
    let r = &reference()["understanding"];
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let clip = codes(&r["codes"]);
    let text = r["text"].as_str().unwrap();
    let (ids, start) = engine.audio_prompt_ids(clip[0].len(), text).unwrap();
    assert_eq!(ids, u32s(&r["input_ids"]), "prompt layout Audio 1:<|BOA|> frames <|EOA|> text");
    assert_eq!(start, r["audio_start"].as_u64().unwrap() as usize);
    let audio = engine.audio().unwrap();
    let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
    let logits = prefill_with_audio(&engine.model, audio, &ids, &[(start, &clip)], &mut cache, Logits::Last).unwrap();
    let diff = max_abs_diff(&logits, &f32s(&r["last_logits"]));
    eprintln!("audio understanding: max |logit diff| = {diff:.2e}");
    assert!(diff <= F32_LOGITS_ATOL, "max abs logit diff {diff} > {F32_LOGITS_ATOL}");
    let want = u32s(&r["greedy_ids"]);
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: want.len() };
    let got = engine.caption_audio_codes(&clip, text, &req).unwrap().token_ids;
    assert!(!got.is_empty() && want.starts_with(&got), "greedy ids {got:?} vs {want:?}");
}

fn request_error(e: Error, needle: &str) {
    match &e {
        Error::Request(m) if m.contains(needle) => {}
        other => panic!("expected a request error containing {needle:?}, got {other}"),
    }
}

#[test]
fn bad_codes_are_refused_with_one_clear_error_each() {
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 2 };
    let cases: [(Vec<Vec<u32>>, &str); 4] = [
        (vec![vec![1, 2], vec![3, 16], vec![0, 0]], "audio code 16 at level 1, frame 1 is outside the codebook of 16"),
        (vec![vec![1, 2], vec![3, 4]], "audio codes have 2 levels; this model uses 3"),
        (vec![vec![1, 2], vec![3], vec![0, 0]], "audio level 1 has 1 frames; level 0 has 2"),
        (vec![vec![], vec![], vec![]], "the audio clip has no frames"),
    ];
    for (c, needle) in cases {
        request_error(engine.caption_audio_codes(&c, "x", &req).unwrap_err(), needle);
    }
    request_error(engine.generate_audio_codes(&chat("x"), &greedy(0)).unwrap_err(), "max_frames");
}

/// A copy of the fixture with tensors dropped (`drop` prefixes) and config.json edited.
fn variant(drop: &[&str], edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = copy_fixture(FIXTURE);
    let tensors: BTreeMap<_, _> = read_checkpoint(dir.path()).into_iter().filter(|(n, _)| !drop.iter().any(|d| n.starts_with(d))).collect();
    write_checkpoint(&fixture(FIXTURE), dir.path(), &tensors);
    let p = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, cfg.to_string()).unwrap();
    dir
}

#[test]
fn missing_audio_parts_and_bad_audio_config_are_named() {
    // No heads: understanding works, generation is refused.
    let d = variant(&["audio.heads.", "audio.head_norms."], |_| {});
    let e = Engine::load(d.path()).unwrap();
    request_error(e.generate_audio_codes(&chat("x"), &greedy(2)).unwrap_err(), "this checkpoint has no audio heads");
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 1 };
    assert!(e.caption_audio_codes(&[vec![1], vec![2], vec![3]], "x", &req).is_ok());
    // No audio tensors at all: both refused.
    let d = variant(&["audio."], |_| {});
    let e = Engine::load(d.path()).unwrap();
    request_error(e.generate_audio_codes(&chat("x"), &greedy(2)).unwrap_err(), "has no audio parts");
    request_error(e.caption_audio_codes(&[vec![1], vec![2], vec![3]], "x", &req).unwrap_err(), "has no audio parts");
    // A partial set: a load error listing the missing tensor.
    let d = variant(&["audio.heads.1."], |_| {});
    let err = Engine::load(d.path()).err().expect("partial audio heads must not load").to_string();
    assert!(err.contains("missing") && err.contains("audio.heads.1.weight"), "{err}");
    // Audio tensors without an audio section: unused tensors.
    let d = variant(&[], |c| {
        c.as_object_mut().unwrap().remove("audio");
    });
    let err = Engine::load(d.path()).err().expect("audio tensors without a section").to_string();
    assert!(err.contains("unused") && err.contains("audio.embed_tokens.weight"), "{err}");
    // A bad audio section: the dotted key.
    let d = variant(&[], |c| c["audio"]["num_levels"] = serde_json::json!(5));
    let err = Engine::load(d.path()).err().expect("5 levels on 4 layers").to_string();
    assert!(err.contains("audio.num_levels"), "{err}");
    // A codebook size the tensors do not have: the shape error names the tensor.
    let d = variant(&[], |c| c["audio"]["codebook_size"] = serde_json::json!(32));
    let err = Engine::load(d.path()).err().expect("wrong codebook size").to_string();
    assert!(err.contains("audio.embed_tokens.weight"), "{err}");
}

#[test]
fn audio_embedding_hidden_states_match_the_oracle() {
    let r = &reference()["embedding"];
    let engine = Engine::load(&fixture(FIXTURE)).unwrap();
    let clip = codes(&reference()["understanding"]["codes"]);
    let h = engine.model.cfg.hidden_size;
    let hidden = engine.audio_hidden_states(&clip, r["text"].as_str().unwrap(), None).unwrap(); // [t, h]
    let t = u32s(&r["input_ids"]).len();
    assert_eq!(hidden.len(), t * h, "one row per token of BOA, frames, EOA and the text (no generation prompt)");
    let last = &hidden[(t - 1) * h..];
    let mean: Vec<f32> = (0..h).map(|j| (0..t).map(|i| hidden[i * h + j]).sum::<f32>() / t as f32).collect();
    let (dl, dm) = (max_abs_diff(last, &f32s(&r["last"])), max_abs_diff(&mean, &f32s(&r["mean"])));
    eprintln!("audio embedding rows: max |Δ| last {dl:.2e}, mean {dm:.2e}");
    assert!(dl <= HIDDEN_ATOL && dm <= HIDDEN_ATOL, "last {dl}, mean {dm} > {HIDDEN_ATOL}");
    // A token limit below the prompt is a request error naming it.
    let e = engine.audio_hidden_states(&clip, "x", Some(3)).unwrap_err();
    assert!(matches!(&e, Error::Request(m) if m.contains("limit of 3")), "{e}");
}

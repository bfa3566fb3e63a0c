//! `ernie generate` on a checkpoint that ships only SentencePiece's `tokenizer.model` (the
//! original ERNIE 4.5 release layout; issue #12 item 5): the text fixture `dense-f32`'s weights
//! and config with `tests/fixtures/spm/ernie/`'s tokenizer (700 pieces, inside the model's 1016).

use crate::common::*;
use ernie_runtime::{Engine, GenerateRequest, Prompt, SamplingParams};

/// `dense-f32` with its tokenizer files replaced by the SentencePiece-only fixture's.
fn spm_only_checkpoint() -> tempfile::TempDir {
    let dir = copy_fixture("dense-f32");
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    for f in ["tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(fixture("spm/ernie").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn generate_runs_on_a_tokenizer_model_only_checkpoint_with_golden_ids() {
    let dir = spm_only_checkpoint();
    assert!(!dir.path().join("tokenizer.json").exists());
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("spm/golden.json")).unwrap()).unwrap();
    let encodings = golden["fixtures"]["ernie"]["encodings"].as_array().unwrap();
    let engine = Engine::load(dir.path()).unwrap();
    assert_eq!(engine.tokenizer().unwrap().source(), tokenizers_mm::TokenizerSource::SentencePiece);
    // transformers' AutoTokenizer ids (no special tokens added) for every golden text.
    let mut checked = 0;
    for e in encodings {
        let text = e["text"].as_str().unwrap();
        if text.is_empty() {
            continue;
        }
        let ids = engine.encode_prompt(&Prompt::Raw(text.into())).unwrap();
        assert_eq!(ids, u32s(&e["ids"]), "{text:?}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} golden texts");

    // The CLI on the same checkpoint: `--raw` encodes as the golden, so its greedy ids equal the
    // library's from the golden ids.
    let text = encodings[0]["text"].as_str().unwrap();
    let out = ernie()
        .args(["generate", "--model"])
        .arg(dir.path())
        .args(["--raw", "--prompt", text, "--max-tokens", "8", "--temperature", "0", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let req = GenerateRequest { sampling: SamplingParams { temperature: 0.0, ..Default::default() }, max_new_tokens: 8 };
    let lib = engine.generate(&u32s(&encodings[0]["ids"]), &req, &mut |_| {}).unwrap();
    assert!(!lib.token_ids.is_empty());
    assert_eq!(u32s(&v["token_ids"]), lib.token_ids);
    assert_eq!(v["text"].as_str().unwrap(), lib.text);

    // And the chat path (the built-in / config template) renders and generates.
    let out = ernie().args(["generate", "--model"]).arg(dir.path()).args(["--prompt", "Hello world", "--max-tokens", "4"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

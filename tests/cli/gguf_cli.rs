//! `ernie quantize` and `ernie generate --model FILE.gguf` on the GGUF fixtures
//! (`tests/reference/make_gguf_reference.py`): the file we write generates what llama.cpp's own
//! file of the same checkpoint generates, and bad requests are one error line.

use std::path::PathBuf;

use crate::common::*;

fn gguf(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/gguf").join(name)
}

/// `ernie generate --format json` greedy token ids (fails the test on a non-zero exit).
fn greedy_ids(model: &std::path::Path) -> serde_json::Value {
    let out = ernie()
        .args(["generate", "--prompt", "Hello world", "--max-tokens", "6", "--temperature", "0", "--format", "json", "--model"])
        .arg(model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token_ids"].clone()
}

#[test]
fn quantize_writes_a_file_that_generates_like_llama_cpps_own() {
    let tmp = tempdir();
    for (ckpt, ty, theirs) in [("dense", "q4_k_m", "dense-q4_k_m.gguf"), ("moe", "q8_0", "moe-q8_0.gguf")] {
        let out = tmp.path().join(format!("{ckpt}.gguf"));
        let run = ernie().args(["quantize", "--type", ty, "--model"]).arg(gguf(ckpt)).arg("--out").arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success() && err.contains("wrote"), "{err}");
        assert!(!out.with_extension("gguf.partial").exists());
        let ids = greedy_ids(&out);
        assert_eq!(ids.as_array().map(Vec::len), Some(6), "{ids}");
        assert_eq!(ids, greedy_ids(&gguf(theirs)), "{ckpt} {ty}");
    }
}

#[test]
fn inspect_reads_the_tokenizer_stored_in_a_gguf_file() {
    let run = |model: PathBuf| {
        let out = ernie().args(["inspect", "--prompt", "Hello world", "--format", "json", "--model"]).arg(model).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["segments"][0]["ids"].clone()
    };
    // The same ids as from the checkpoint folder the file was converted from.
    let ids = run(gguf("dense-q8_0.gguf"));
    assert!(ids.as_array().is_some_and(|a| a.len() > 4), "{ids}");
    assert_eq!(ids, run(gguf("dense")));
}

#[test]
fn gguf_requests_that_cannot_work_are_one_error_line() {
    let out = ernie()
        .args(["generate", "--prompt", "Hi", "--max-tokens", "2", "--draft-tokens", "2", "--model"])
        .arg(gguf("moe-q8_0.gguf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--draft-tokens") && err.contains("MTP"), "{err}");

    // A checkpoint with only tokenizer.json: llama.cpp's layout needs the SentencePiece model.
    let tmp = tempdir();
    let out = ernie().args(["quantize", "--type", "q8_0", "--model"]).arg(fixture("moe-f32")).arg("--out").arg(tmp.path().join("x.gguf")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tokenizer.model"), "{err}");
    assert!(!tmp.path().join("x.gguf").exists());

    let out = ernie().args(["quantize", "--type", "q5_k", "--model"]).arg(gguf("dense")).arg("--out").arg(tmp.path().join("y.gguf")).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("q5_k"));
}

//! Checkpoint loading: every tensor-name layout of spec §2.3 gives the same logits as the fixture
//! it was rewritten from, and every malformed checkpoint gives a typed error, never a panic.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use ernie_runtime::{Engine, Error, KvCache, Logits};

fn prompt_logits(dir: &Path, ids: &[u32]) -> Vec<f32> {
    let engine = Engine::load(dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let mut cache = KvCache::new(&engine.model.cfg, ids.len()).unwrap();
    engine.model.forward(ids, &mut cache, Logits::All, None).unwrap()
}

fn reference_logits(name: &str) -> (Vec<u32>, Vec<f32>) {
    let exp = expected(name);
    let want = exp["logits"].as_array().unwrap().iter().flat_map(f32s).collect();
    (u32s(&exp["prompt_ids"]), want)
}

/// Rewrites fixture `name` through `edit` and checks the logits are unchanged.
fn assert_layout_equivalent(name: &str, edit: impl Fn(&mut BTreeMap<String, RawTensor>)) {
    let (ids, want) = reference_logits(name);
    let mut tensors = read_checkpoint(&fixture(name));
    edit(&mut tensors);
    let dir = tempdir();
    write_checkpoint(&fixture(name), dir.path(), &tensors);
    let got = prompt_logits(dir.path(), &ids);
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= F32_LOGITS_ATOL, "{name}: rewritten layout changes logits by {diff}");
}

fn layers(t: &BTreeMap<String, RawTensor>) -> usize {
    t.keys().filter(|k| k.ends_with("input_layernorm.weight") && k.starts_with("model.layers.")).count()
}

#[test]
fn fused_qkv_and_up_gate_proj() {
    assert_layout_equivalent("dense-bias-f32", |t| {
        for l in 0..layers(t) {
            let p = format!("model.layers.{l}");
            for kind in ["weight", "bias"] {
                let q = t.remove(&format!("{p}.self_attn.q_proj.{kind}")).unwrap();
                let k = t.remove(&format!("{p}.self_attn.k_proj.{kind}")).unwrap();
                let v = t.remove(&format!("{p}.self_attn.v_proj.{kind}")).unwrap();
                t.insert(format!("{p}.self_attn.qkv_proj.{kind}"), cat0(&[&q, &k, &v]));
                // up_gate_proj holds gate rows first despite its name (spec §2.3).
                let g = t.remove(&format!("{p}.mlp.gate_proj.{kind}")).unwrap();
                let u = t.remove(&format!("{p}.mlp.up_proj.{kind}")).unwrap();
                t.insert(format!("{p}.mlp.up_gate_proj.{kind}"), cat0(&[&g, &u]));
            }
        }
    });
}

#[test]
fn ernie_prefix_instead_of_model() {
    assert_layout_equivalent("dense-f32", |t| {
        let renamed: BTreeMap<String, RawTensor> =
            std::mem::take(t).into_iter().map(|(k, v)| (k.replacen("model.", "ernie.", 1), v)).collect();
        *t = renamed;
    });
}

#[test]
fn per_expert_layout_equals_stacked_v5_layout() {
    // moe-f32 is stored per expert; restack it the transformers-5 way and move the bias under gate.
    assert_layout_equivalent("moe-f32", |t| {
        for l in 1..layers(t) {
            let p = format!("model.layers.{l}.mlp");
            let n_experts = t.keys().filter(|k| k.starts_with(&format!("{p}.experts.")) && k.ends_with("down_proj.weight")).count();
            let mut gate_up = Vec::new();
            let mut down = Vec::new();
            for e in 0..n_experts {
                let g = t.remove(&format!("{p}.experts.{e}.gate_proj.weight")).unwrap();
                let u = t.remove(&format!("{p}.experts.{e}.up_proj.weight")).unwrap();
                gate_up.push(cat0(&[&g, &u]));
                down.push(t.remove(&format!("{p}.experts.{e}.down_proj.weight")).unwrap());
            }
            t.insert(format!("{p}.experts.gate_up_proj"), stack0(&gate_up.iter().collect::<Vec<_>>()));
            t.insert(format!("{p}.experts.down_proj"), stack0(&down.iter().collect::<Vec<_>>()));
            let b = t.remove(&format!("{p}.moe_statics.e_score_correction_bias")).unwrap();
            t.insert(format!("{p}.gate.moe_statics.e_score_correction_bias"), b);
        }
    });
}

#[test]
fn tied_model_with_stored_lm_head_is_accepted() {
    // A tied checkpoint that also stores lm_head.weight: transformers ignores the stored copy.
    assert_layout_equivalent("dense-f32", |t| {
        let mut e = t["model.embed_tokens.weight"].clone();
        e.data.iter_mut().for_each(|b| *b = 0); // a different head that must NOT be used
        t.insert("lm_head.weight".into(), e);
    });
}

#[test]
fn mtp_tensors_are_kept() {
    let engine = Engine::load(&fixture("moe-f32")).unwrap();
    assert_eq!(engine.model.cfg.num_nextn_predict_layers, 1);
    assert!(engine.model.mtp.contains_key("model.mtp_linear_proj.0.weight"));
    assert!(engine.model.mtp.keys().any(|k| k.starts_with("model.mtp_block.0.self_attn.")));
}

// ---------- malformed checkpoints: typed errors, never panics ----------


fn load_err(dir: &Path) -> Error {
    match Engine::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_tensors_are_all_listed() {
    let mut t = read_checkpoint(&fixture("dense-f32"));
    t.remove("model.layers.0.self_attn.k_proj.weight");
    t.remove("model.norm.weight");
    t.insert("model.layers.0.extra.weight".into(), t["model.layers.1.input_layernorm.weight"].clone());
    let dir = tempdir();
    write_checkpoint(&fixture("dense-f32"), dir.path(), &t);
    match load_err(dir.path()) {
        Error::TensorSet { missing, unused } => {
            assert_eq!(missing, vec!["model.layers.0.self_attn.k_proj.weight".to_string(), "model.norm.weight".to_string()]);
            assert_eq!(unused, vec!["model.layers.0.extra.weight".to_string()]);
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn wrong_shape_is_named() {
    let mut t = read_checkpoint(&fixture("dense-f32"));
    let mut q = t["model.layers.1.self_attn.q_proj.weight"].clone();
    q.shape = vec![q.shape[1], q.shape[0]]; // transposed
    t.insert("model.layers.1.self_attn.q_proj.weight".into(), q);
    let dir = tempdir();
    write_checkpoint(&fixture("dense-f32"), dir.path(), &t);
    match load_err(dir.path()) {
        Error::TensorShape { name, expected, got } => {
            assert_eq!(name, "model.layers.1.self_attn.q_proj.weight");
            assert_eq!(expected, vec![96, 64]);
            assert_eq!(got, vec![64, 96]);
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn unknown_model_type() {
    let dir = copy_fixture("dense-f32");
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("\"ernie4_5\"", "\"llama\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    assert!(matches!(load_err(dir.path()), Error::UnknownModelType(t) if t == "llama"));
}

#[test]
fn invalid_json_config() {
    let dir = copy_fixture("dense-f32");
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"ernie4_5\",").unwrap();
    assert!(matches!(load_err(dir.path()), Error::Json { .. }));
}

#[test]
fn bad_config_values_are_named() {
    for (key, value, expect_key) in [
        ("num_key_value_heads", "3", "num_key_value_heads"),
        ("head_dim", "\"big\"", "head_dim"),
        ("hidden_act", "\"gelu\"", "hidden_act"),
        ("vocab_size", "0", "vocab_size"),
    ] {
        let dir = copy_fixture("dense-f32");
        let path = dir.path().join("config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        std::fs::write(&path, v.to_string()).unwrap();
        match load_err(dir.path()) {
            Error::Config { key: k, .. } => assert_eq!(k, expect_key),
            e => panic!("{key}={value}: wrong error: {e}"),
        }
    }
}

#[test]
fn truncated_safetensors() {
    let dir = copy_fixture("dense-f32");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }), "cut at {cut}");
    }
}

#[test]
fn header_length_larger_than_file() {
    let dir = copy_fixture("dense-f32");
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let too_long = bytes.len() as u64 * 4;
    bytes[..8].copy_from_slice(&too_long.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }));
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }));
}

#[test]
fn bit_flipped_headers_never_panic() {
    let dir = copy_fixture("moe-f32");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Flip one bit at a spread of offsets inside the JSON header: each load must return (Ok or
    // a typed error), never panic.
    for i in (8..8 + header_len).step_by(header_len / 97 + 1) {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        std::fs::write(&path, &b).unwrap();
        let _ = Engine::load(dir.path());
    }
}

#[test]
fn missing_directory_and_shards() {
    assert!(matches!(Engine::load(Path::new("/nonexistent/model")), Err(Error::Io { .. })));
    let dir = copy_fixture("moe-bf16-stacked");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert!(matches!(load_err(dir.path()), Error::Io { .. }));
    let dir = copy_fixture("moe-bf16-stacked");
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{\"weight_map\": {\"x\": \"../escape.safetensors\"}}").unwrap();
    assert!(matches!(load_err(dir.path()), Error::Safetensors { .. }));
}

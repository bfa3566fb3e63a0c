//! GGUF files (`Engine::load` on a `.gguf`, `model/gguf_load.rs`, `tools/gguf_export.rs`) against
//! the fixtures of `tests/reference/make_gguf_reference.py`: tiny ERNIE 4.5 dense and MoE
//! checkpoints (hidden 256, bf16 safetensors) converted by llama.cpp's own converter and
//! `llama-quantize`, with llama.cpp's last-row logits and the HF tokenizer's ids as goldens.

use std::path::{Path, PathBuf};

use ernie_runtime::gguf::{GgmlType, Gguf, GgufWriter, Value};
use ernie_runtime::model::decoder::Mlp;
use ernie_runtime::nn::linear::{Linear, LinearWeight};
use ernie_runtime::nn::mlp::SwiGlu;
use ernie_runtime::tools::gguf_export::export_gguf;
use ernie_runtime::{DraftMode, ElasticOptions, Engine, Error, GenerateRequest, Logits, QuantScheme, SamplingParams};
use serde_json::Value as Json;

use crate::common::*;

/// GGUF bf16 vs the same checkpoint's safetensors: the same bf16 bytes through the same kernels,
/// so the logits must agree to float noise (measured: 0, bit-identical).
const BF16_ABS: f32 = 1e-5;

/// Ours vs llama.cpp on the same file, max |Δ| / max |logit| over the last rows of the prompt set.
/// Different kernels (both quantise the activations per block for the quantised dots, but the
/// f32 / bf16 paths, softmax and RoPE round differently; llama.cpp runs flash attention with an
/// f16 mask): measured 0.0057 (dense-bf16), 0.0100-0.0165 over the quantised files. 0.03: margin,
/// with the top token also required to match on every prompt.
const LLAMA_CPP_REL: f32 = 0.03;

/// llama-quantize's file vs our `--quant` of the same safetensors: every projection's blocks are
/// byte-identical (checked below); only the embedding differs (llama.cpp quantises it, `--quant`
/// keeps it bf16), so the bound is that of an embedding in the file's format. Measured max |Δ| /
/// max |logit|: Q8_0 0.022 (dense), 0.014 (MoE); Q4_K_M 0.125 (dense: a Q4_K embedding), 0.030 (MoE: Q6_K, tied).
const QUANT_VS_OURS_REL_Q8_0: f32 = 0.05;
/// See [`QUANT_VS_OURS_REL_Q8_0`]: a Q4_K / Q6_K embedding.
const QUANT_VS_OURS_REL_Q4_K_M: f32 = 0.2;

fn dir() -> PathBuf {
    repo_root().join("tests/fixtures/gguf")
}

fn goldens() -> Json {
    serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap()).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    goldens()["prompts"].as_array().unwrap().iter().map(u32s).collect()
}

fn last_logits(engine: &Engine, ids: &[u32]) -> Vec<f32> {
    let mut cache = engine.new_cache(ids.len()).unwrap();
    engine.forward(ids, &mut cache, Logits::Last).unwrap()
}

fn all_logits(engine: &Engine, ids: &[u32]) -> Vec<f32> {
    let mut cache = engine.new_cache(ids.len()).unwrap();
    engine.forward(ids, &mut cache, Logits::All).unwrap()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    max_abs_diff(a, b) / a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::MIN), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}

#[test]
fn bf16_gguf_matches_the_safetensors_checkpoint() {
    let st = Engine::load(&dir().join("dense")).unwrap();
    let gg = Engine::load(&dir().join("dense-bf16.gguf")).unwrap();
    assert!(gg.is_gguf());
    assert_eq!(gg.model.cfg.vocab_size, st.model.cfg.vocab_size);
    for ids in prompts() {
        let d = max_abs_diff(&all_logits(&st, &ids), &all_logits(&gg, &ids));
        eprintln!("dense-bf16.gguf vs safetensors {ids:?}: max |Δ| = {d:e}");
        assert!(d <= BF16_ABS, "{ids:?}: max |Δ| {d}");
    }
}

#[test]
fn logits_match_llama_cpp_on_every_fixture_file() {
    let g = goldens();
    for (file, want) in g["files"].as_object().unwrap() {
        let engine = Engine::load(&dir().join(file)).unwrap();
        let mut worst = 0.0f32;
        for (p, ids) in prompts().iter().enumerate() {
            let ours = last_logits(&engine, ids);
            let theirs = f32s(&want["logits"][p]);
            assert_eq!(argmax(&ours), want["top"][p].as_u64().unwrap() as usize, "{file} prompt {p}: top token");
            worst = worst.max(rel(&theirs, &ours));
        }
        eprintln!("{file}: max|Δ|/max|logit| vs llama.cpp = {worst:.5}");
        assert!(worst <= LLAMA_CPP_REL, "{file}: {worst}");
    }
}

fn push_swiglu<'a>(out: &mut Vec<(String, &'a Linear)>, p: String, m: &'a SwiGlu) {
    out.push((format!("{p}.gate"), &m.gate));
    out.push((format!("{p}.up"), &m.up));
    out.push((format!("{p}.down"), &m.down));
}

/// Every projection of the decoder with a readable name, in a fixed order.
fn linears(engine: &Engine) -> Vec<(String, &Linear)> {
    let mut out = vec![("lm_head".to_string(), &engine.model.lm_head)];
    for l in &engine.model.layers {
        let a = &l.self_attn;
        for (n, x) in [("q", &a.q_proj), ("k", &a.k_proj), ("v", &a.v_proj), ("o", &a.o_proj)] {
            out.push((format!("{}.{n}", l.index), x));
        }
        match &l.mlp {
            Mlp::Dense(m) => push_swiglu(&mut out, format!("{}.mlp", l.index), m),
            Mlp::Moe(b) => {
                for (x, e) in b.experts.iter().enumerate() {
                    push_swiglu(&mut out, format!("{}.expert{x}", l.index), e);
                }
                if let Some(s) = &b.shared {
                    push_swiglu(&mut out, format!("{}.shared", l.index), s);
                }
            }
            Mlp::Grouped(_) => panic!("no routing groups in an ERNIE 4.5 GGUF"),
        }
    }
    out
}

#[test]
fn llama_quantize_blocks_equal_our_quantiser_and_logits_stay_close() {
    for (file, ckpt, scheme) in [
        ("dense-q8_0.gguf", "dense", QuantScheme::Q8_0),
        ("dense-q4_k_m.gguf", "dense", QuantScheme::Q4KM),
        ("moe-q8_0.gguf", "moe", QuantScheme::Q8_0),
        ("moe-q4_k_m.gguf", "moe", QuantScheme::Q4KM),
    ] {
        let theirs = Engine::load(&dir().join(file)).unwrap();
        let ours = Engine::load_quant(&dir().join(ckpt), &ElasticOptions::default(), Some(scheme)).unwrap();
        let (a, b) = (linears(&theirs), linears(&ours));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            match (&x.weight, &y.weight) {
                (LinearWeight::Quant(p), LinearWeight::Quant(q)) => {
                    assert_eq!(p.qtype(), q.qtype(), "{file} {name}: block format");
                    assert!(p.bytes() == q.bytes(), "{file} {name}: blocks differ from llama-quantize's");
                }
                _ => panic!("{file} {name}: expected both quantised"),
            }
        }
        assert!(theirs.model.embed_quant.is_some(), "{file}: llama-quantize quantises token_embd");
        let mut worst = 0.0f32;
        for ids in prompts() {
            worst = worst.max(rel(&all_logits(&ours, &ids), &all_logits(&theirs, &ids)));
        }
        eprintln!("{file}: max|Δ|/max|logit| vs --quant {scheme} = {worst:.5}");
        let bound = if scheme == QuantScheme::Q8_0 { QUANT_VS_OURS_REL_Q8_0 } else { QUANT_VS_OURS_REL_Q4_K_M };
        assert!(worst <= bound && worst > 0.0, "{file}: {worst}");
    }
}

#[test]
fn gguf_tokenizer_ids_equal_the_hf_tokenizer() {
    let g = goldens();
    let engine = Engine::load(&dir().join("dense-q8_0.gguf")).unwrap();
    let tok = engine.tokenizer().unwrap();
    assert_eq!(tok.source(), tokenizers_mm::TokenizerSource::Gguf);
    for (text, want) in g["texts"].as_array().unwrap().iter().zip(g["hf_ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        assert_eq!(tok.encode_with_specials(text).unwrap(), u32s(want), "{text:?}");
    }
    assert_eq!(g["hf_ids"], g["llama_cpp_ids"], "the goldens say llama.cpp agrees with HF here");
    // The chat template comes from tokenizer.chat_template, the eos ids from the vocabulary.
    let chat = tok.apply_chat_template(&[tokenizers_mm::ChatMessage { role: "user".into(), content: "Hello world".into() }], true).unwrap();
    let hf = Engine::load(&dir().join("dense")).unwrap();
    let want = hf.tokenizer().unwrap().apply_chat_template(&[tokenizers_mm::ChatMessage { role: "user".into(), content: "Hello world".into() }], true).unwrap();
    assert_eq!(chat, want);
    assert_eq!(engine.eos_ids(), hf.eos_ids());
}

#[test]
fn drafting_on_a_gguf_model_is_refused() {
    let engine = Engine::load(&dir().join("moe-q8_0.gguf")).unwrap();
    let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: 2 };
    let err = engine.generate_speculative(&[1, 300], &req, DraftMode::Fixed(1), &mut |_| {}).unwrap_err();
    assert!(matches!(&err, Error::InvalidOption { option: "draft_tokens", .. }) && err.to_string().contains("MTP"), "{err}");
    // Auto and off decode plainly.
    engine.generate_speculative(&[1, 300], &req, DraftMode::Auto, &mut |_| {}).unwrap();
}

#[test]
fn ernie_quantize_output_equals_converter_plus_llama_quantize() {
    let tmp = tempdir();
    for (ckpt, scheme, theirs) in [("moe", QuantScheme::Q4KM, "moe-q4_k_m.gguf"), ("dense", QuantScheme::Q8_0, "dense-q8_0.gguf")] {
        let out = tmp.path().join(format!("{ckpt}-{scheme}.gguf"));
        let r = export_gguf(&dir().join(ckpt), &out, scheme).unwrap();
        let (a, b) = (Gguf::open(&out).unwrap(), Gguf::open(&dir().join(theirs)).unwrap());
        assert_eq!(r.tensors, b.tensors().len());
        for t in b.tensors() {
            let o = a.tensor_info(&t.name).unwrap_or_else(|| panic!("{ckpt}: no {}", t.name));
            assert_eq!((o.ggml_type, &o.dims), (t.ggml_type, &t.dims), "{ckpt} {}", t.name);
            assert!(a.tensor_bytes(o) == b.tensor_bytes(t), "{ckpt} {}: bytes differ", t.name);
        }
        // Every key llama.cpp's tools read (architecture, hparams, tokenizer) is there, equal.
        for (k, v) in b.metadata() {
            if k.starts_with("general.name") || k.starts_with("general.size_label") {
                continue;
            }
            assert_eq!(a.get(k), Some(v), "{ckpt}: metadata {k}");
        }
        // And it loads and runs like their file.
        let (x, y) = (Engine::load(&out).unwrap(), Engine::load(&dir().join(theirs)).unwrap());
        for ids in prompts() {
            assert_eq!(max_abs_diff(&all_logits(&x, &ids), &all_logits(&y, &ids)), 0.0);
        }
    }
}

/// Rewrites GGUF `src` into `dst`, letting `meta` change the metadata and `tensor` each tensor
/// (name, ggml dims, type, bytes); `None` drops it.
fn rewrite(
    src: &Path,
    dst: &Path,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    tensor: impl Fn(&str, &[u64], GgmlType, &[u8]) -> Option<(Vec<u64>, GgmlType, Vec<u8>)>,
) {
    let g = Gguf::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in g.metadata() {
        if let Some(v) = meta(k, v) {
            w.add_metadata(k, v).unwrap();
        }
    }
    let mut data = Vec::new();
    for t in g.tensors() {
        if let Some((dims, ty, bytes)) = tensor(&t.name, &t.dims, t.ggml_type, g.tensor_bytes(t)) {
            w.add_tensor(&t.name, &dims, ty).unwrap();
            data.push(bytes);
        }
    }
    let mut f = std::fs::File::create(dst).unwrap();
    w.write_header(&mut f).unwrap();
    for d in data {
        w.write_tensor_data(&mut f, &d).unwrap();
    }
}

#[test]
fn malformed_gguf_files_fail_with_one_clear_error_each() {
    let tmp = tempdir();
    let src = dir().join("dense-q8_0.gguf");
    let keep = |_: &str, v: &Value| Some(v.clone());
    let same = |_: &str, d: &[u64], t: GgmlType, b: &[u8]| Some((d.to_vec(), t, b.to_vec()));
    let load = |name: &str| Engine::load(&tmp.path().join(name)).err().unwrap_or_else(|| panic!("{name} loaded"));

    rewrite(&src, &tmp.path().join("arch.gguf"), |k, v| Some(if k == "general.architecture" { Value::String("llama".into()) } else { v.clone() }), same);
    let e = load("arch.gguf");
    assert!(matches!(&e, Error::Config { key, .. } if key == "general.architecture") && e.to_string().contains("\"llama\""), "{e}");

    rewrite(&src, &tmp.path().join("key.gguf"), |k, v| (k != "ernie4_5.block_count").then(|| v.clone()), same);
    let e = load("key.gguf");
    assert!(matches!(&e, Error::Config { key, .. } if key == "ernie4_5.block_count"), "{e}");

    rewrite(&src, &tmp.path().join("missing.gguf"), keep, |n, d, t, b| (n != "blk.0.ffn_up.weight").then(|| (d.to_vec(), t, b.to_vec())));
    let e = load("missing.gguf");
    assert!(matches!(&e, Error::TensorSet { missing, unused } if missing == &["model.layers.0.mlp.up_proj.weight"] && unused.is_empty()), "{e}");

    // An unknown tensor name.
    let g = Gguf::open(&src).unwrap();
    let mut w = GgufWriter::new();
    g.metadata().iter().for_each(|(k, v)| w.add_metadata(k, v.clone()).unwrap());
    let mut data = vec![];
    for t in g.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ggml_type).unwrap();
        data.push(g.tensor_bytes(t).to_vec());
    }
    w.add_tensor("rope_freqs.weight", &[32], GgmlType::F32).unwrap();
    data.push(vec![0u8; 128]);
    let mut f = std::fs::File::create(tmp.path().join("extra.gguf")).unwrap();
    w.write_header(&mut f).unwrap();
    data.iter().for_each(|d| w.write_tensor_data(&mut f, d).unwrap());
    drop(f);
    let e = load("extra.gguf");
    assert!(matches!(&e, Error::TensorSet { missing, unused } if missing.is_empty() && unused == &["rope_freqs.weight"]), "{e}");

    // attn_q with half its rows: a shape error naming the canonical tensor.
    rewrite(&src, &tmp.path().join("shape.gguf"), keep, |n, d, t, b| {
        Some(if n == "blk.0.attn_q.weight" { (vec![d[0], d[1] / 2], t, b[..b.len() / 2].to_vec()) } else { (d.to_vec(), t, b.to_vec()) })
    });
    let e = load("shape.gguf");
    assert!(matches!(&e, Error::TensorShape { name, .. } if name == "model.layers.0.self_attn.q_proj.weight"), "{e}");

    // A block format we have no kernel for (Q4_0: 18-byte blocks of 32).
    rewrite(&src, &tmp.path().join("q4_0.gguf"), keep, |n, d, t, b| {
        Some(if n == "blk.0.attn_k.weight" { (d.to_vec(), GgmlType(2), vec![0u8; (d[0] / 32 * 18 * d[1]) as usize]) } else { (d.to_vec(), t, b.to_vec()) })
    });
    let e = load("q4_0.gguf");
    assert!(matches!(&e, Error::TensorDtype { name, got, .. } if name == "blk.0.attn_k.weight" && got == "Q4_0"), "{e}");

    // A quantised norm (norms stay f32: spec §6.8).
    rewrite(&src, &tmp.path().join("qnorm.gguf"), keep, |n, d, t, b| {
        Some(if n == "blk.0.attn_norm.weight" { (d.to_vec(), GgmlType::Q8_0, vec![0u8; (d[0] / 32 * 34) as usize]) } else { (d.to_vec(), t, b.to_vec()) })
    });
    let e = load("qnorm.gguf");
    assert!(matches!(&e, Error::TensorDtype { name, .. } if name == "blk.0.attn_norm.weight"), "{e}");

    // Tokenizer arrays that disagree in length, and a token type llama.cpp does not define.
    rewrite(&src, &tmp.path().join("scores.gguf"), |k, v| match (k, v) {
        ("tokenizer.ggml.scores", Value::Array { elem, items }) => Some(Value::Array { elem: *elem, items: items[..10].to_vec() }),
        _ => Some(v.clone()),
    }, same);
    let e = load("scores.gguf");
    assert!(matches!(&e, Error::Tokenizer(_)) && e.to_string().contains("10 scores"), "{e}");
    rewrite(&src, &tmp.path().join("types.gguf"), |k, v| match (k, v) {
        ("tokenizer.ggml.token_type", Value::Array { elem, items }) => {
            let mut items = items.clone();
            items[300] = Value::I32(9);
            Some(Value::Array { elem: *elem, items })
        }
        _ => Some(v.clone()),
    }, same);
    let e = load("types.gguf");
    assert!(matches!(&e, Error::Tokenizer(_)) && e.to_string().contains("token 300") && e.to_string().contains("type 9"), "{e}");

    // Not a GGUF at all, and a truncated one.
    std::fs::write(tmp.path().join("trunc.gguf"), &std::fs::read(&src).unwrap()[..4096]).unwrap();
    let e = load("trunc.gguf");
    assert!(matches!(&e, Error::Gguf { .. }), "{e}");
}

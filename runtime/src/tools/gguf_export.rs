//! `ernie quantize`: a safetensors ERNIE 4.5 text checkpoint → one GGUF file that llama.cpp's own
//! tools read, laid out as its `convert_hf_to_gguf.py` (`conversion/ernie.py`) + `llama-quantize`
//! write it: the same architecture names (`ernie4_5`, `ernie4_5-moe`), metadata keys, tensor names
//! (`names.rs` `GGUF_*`; experts stacked `[e, out, in]`) and SentencePiece tokenizer
//! (`tokenizer.ggml.*`, `tokenizer.chat_template`), projection weights in the scheme's block formats
//! (`model/quantize.rs`'s per-tensor rule), norms / routers / biases in F32. MTP tensors are
//! dropped, as the converter drops them.
//!
//! Streaming: the header is written from the shapes alone, then each tensor is read from the
//! safetensors map, quantised (one expert matrix at a time, one f32 row per thread) and written,
//! so the anonymous memory held is one output tensor's bytes (all experts of a stacked tensor:
//! ~140 MB for ERNIE-4.5-21B-A3B's `ffn_gate_exps` in Q4_K), whatever the checkpoint's size; the
//! source pages are the file's, mapped read-only. The file is written under a temporary name and
//! renamed when complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tokenizers_mm::SpmVocab;

use crate::config::{MlpKind, ModelConfig, TextConfig};
use crate::gguf::{GgmlType, GgufWriter, Value, ValueType};
use crate::model::gguf_load::GGUF_ARCHS;
use crate::model::names;
use crate::model::quantize::QuantScheme;
use crate::ops::quant::{QType, QWeight};
use crate::tensor::{DType, Elems, Tensor};
use crate::weights::Weights;
use crate::{Error, Result};

/// What [`export_gguf`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Tensors in the file.
    pub tensors: usize,
    /// Of them, stored in a block format.
    pub quantised: usize,
    /// Checkpoint tensors left out (the MTP module; a tied model's stored head).
    pub dropped: Vec<String>,
    /// File size in bytes.
    pub bytes: u64,
}

/// How one output tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Store {
    F32,
    Dense(DType),
    Quant(QType),
}

/// One output tensor: its GGUF name, PyTorch-order shape, and the 2-D (or 1-D) source pieces whose
/// rows it is, in order (one per expert for stacked experts).
struct Out {
    name: String,
    shape: Vec<usize>,
    parts: Vec<Tensor>,
    store: Store,
}

fn unsupported(what: String) -> Error {
    crate::error::unsupported(what, "ernie quantize writes ERNIE 4.5 text checkpoints (ernie4_5, ernie4_5_moe) in the layouts the loader reads")
}

/// Writes checkpoint `dir` (config.json, safetensors, tokenizer.model, tokenizer_config.json) to
/// `out` as a GGUF file with `scheme`'s block formats.
///
/// Errors: config and safetensors errors; [`Error::Unsupported`] for a VL / ERNIE 5 checkpoint, a
/// MoE layer pattern llama.cpp cannot express (`l >= leading && (l + 1) % step == 0`), a tensor
/// with no GGUF name, or a folder without `tokenizer.model` (llama.cpp's ERNIE converter reads
/// only that); [`Error::Io`] while writing.
pub fn export_gguf(dir: &Path, out: &Path, scheme: QuantScheme) -> Result<ExportReport> {
    let cfg = match ModelConfig::from_dir(dir)? {
        ModelConfig::Text(c) => c,
        _ => return Err(unsupported(format!("{}: a VL or ERNIE 5 checkpoint", dir.display()))),
    };
    let mut w = Weights::open(dir)?;
    w.rename(names::canonical_text_name)?;
    let mut report = ExportReport::default();
    let tensors = plan_tensors(&w, &cfg, scheme, &mut report.dropped)?;

    let mut gw = GgufWriter::new();
    for (k, v) in metadata(dir, &cfg, scheme)? {
        gw.add_metadata(&k, v).map_err(|source| Error::Gguf { path: out.to_path_buf(), source })?;
    }
    for t in &tensors {
        let ty = match t.store {
            Store::F32 => GgmlType::F32,
            Store::Dense(DType::F32) => GgmlType::F32,
            Store::Dense(DType::Bf16) => GgmlType::BF16,
            Store::Dense(DType::F16) => GgmlType::F16,
            Store::Quant(q) => GgmlType(q.ggml_type()),
        };
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        gw.add_tensor(&t.name, &dims, ty).map_err(|source| Error::Gguf { path: out.to_path_buf(), source })?;
    }
    let tmp = out.with_extension("gguf.partial");
    let io = |source| Error::Io { path: tmp.clone(), source };
    let mut f = BufWriter::new(File::create(&tmp).map_err(io)?);
    gw.write_header(&mut f).map_err(io)?;
    for t in &tensors {
        let mut bytes = Vec::new();
        for p in &t.parts {
            match t.store {
                Store::F32 => bytes.extend(p.to_f32_vec().iter().flat_map(|v| v.to_le_bytes())),
                Store::Dense(_) => bytes.extend_from_slice(raw_bytes(p)),
                Store::Quant(q) => bytes.extend_from_slice(QWeight::quantize(p, q)?.bytes()),
            }
        }
        gw.write_tensor_data(&mut f, &bytes).map_err(io)?;
        report.quantised += matches!(t.store, Store::Quant(_)) as usize;
    }
    f.flush().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    report.tensors = tensors.len();
    report.bytes = std::fs::metadata(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?.len();
    Ok(report)
}

fn raw_bytes(t: &Tensor) -> &[u8] {
    match t.elems() {
        Elems::F32(s) => bytemuck::cast_slice(s),
        Elems::Bf16(s) => bytemuck::cast_slice(s),
        Elems::F16(s) => bytemuck::cast_slice(s),
    }
}

/// The output tensors, in the order llama.cpp's loader lists them (embedding, layers, head).
fn plan_tensors(w: &Weights, cfg: &TextConfig, scheme: QuantScheme, dropped: &mut Vec<String>) -> Result<Vec<Out>> {
    let n = cfg.num_hidden_layers;
    let tied = cfg.tie_word_embeddings;
    let mut outs: Vec<Out> = Vec::new();
    let mut experts: BTreeMap<(usize, &'static str), BTreeMap<usize, Tensor>> = BTreeMap::new();
    let get = |name: &str| w.peek(name).cloned().ok_or_else(|| Error::TensorSet { missing: vec![name.to_string()], unused: vec![] });
    let names: Vec<String> = w.names_with_prefix("").map(str::to_string).collect();
    for name in &names {
        let t = get(name)?;
        if name.starts_with("model.mtp_") || (tied && name == "lm_head.weight") {
            dropped.push(name.clone());
            continue;
        }
        let canon = names::CORRECTION_BIAS
            .iter()
            .find_map(|b| name.strip_suffix(b).map(|p| format!("{p}{}", names::CORRECTION_BIAS[0])))
            .unwrap_or_else(|| name.clone());
        if let Some(g) = names::gguf_name(&canon) {
            outs.push(out(g, t, scheme, n, tied)?);
            continue;
        }
        let layer_of = |s: &str| s.strip_prefix("model.layers.").and_then(|r| r.split_once('.')).and_then(|(l, rest)| Some((l.parse::<usize>().ok()?, rest.to_string())));
        let Some((l, rest)) = layer_of(name) else { return Err(unsupported(format!("tensor {name} (no GGUF name)"))) };
        let p = format!("model.layers.{l}");
        if let Some(e) = rest.strip_prefix("mlp.experts.") {
            if let Some((x, suffix)) = e.split_once('.').and_then(|(x, s)| Some((x.parse::<usize>().ok()?, s))) {
                let Some((_, s)) = names::GGUF_EXPERTS.iter().find(|(_, c)| *c == suffix) else {
                    return Err(unsupported(format!("tensor {name} (no GGUF name)")));
                };
                experts.entry((l, s)).or_default().insert(x, t);
                continue;
            }
        }
        let i = cfg.moe.as_ref().map_or(0, |m| m.moe_intermediate_size);
        match rest.as_str() {
            // transformers 5.x stacked experts: gate_up [e, 2i, h] (gate rows first), down [e, h, i].
            r if r == format!("mlp.{}", names::STACKED_GATE_UP) => {
                for x in 0..t.shape()[0] {
                    let gu = t.index0(x)?;
                    experts.entry((l, "gate_proj.weight")).or_default().insert(x, gu.narrow0(0, i)?);
                    experts.entry((l, "up_proj.weight")).or_default().insert(x, gu.narrow0(i, i)?);
                }
            }
            r if r == format!("mlp.{}", names::STACKED_DOWN) => {
                for x in 0..t.shape()[0] {
                    experts.entry((l, "down_proj.weight")).or_default().insert(x, t.index0(x)?);
                }
            }
            // Fused projections, split as the converter splits them.
            "self_attn.qkv_proj.weight" => {
                let (q, kv) = (cfg.q_dim(), cfg.kv_dim());
                for (part, (start, len)) in ["q", "k", "v"].iter().zip([(0, q), (q, kv), (q + kv, kv)]) {
                    outs.push(out(format!("blk.{l}.attn_{part}.weight"), t.narrow0(start, len)?, scheme, n, tied)?);
                }
            }
            "mlp.up_gate_proj.weight" => {
                let half = t.shape()[0] / 2;
                outs.push(out(format!("blk.{l}.ffn_gate.weight"), t.narrow0(0, half)?, scheme, n, tied)?);
                outs.push(out(format!("blk.{l}.ffn_up.weight"), t.narrow0(half, half)?, scheme, n, tied)?);
            }
            _ => return Err(unsupported(format!("tensor {name} (no GGUF name; {p} is read by name)"))),
        }
    }
    for ((l, suffix), by_x) in experts {
        let gguf = names::GGUF_EXPERTS.iter().find(|(_, c)| *c == suffix).map_or("", |(g, _)| *g);
        let name = format!("blk.{l}.{gguf}");
        let parts: Vec<Tensor> = by_x.into_values().collect();
        let first = parts.first().map(|t| t.shape().to_vec()).unwrap_or_default();
        if parts.iter().any(|p| p.shape() != first.as_slice()) || first.len() != 2 {
            return Err(Error::TensorShape { name, expected: first.clone(), got: parts.iter().find(|p| p.shape() != first.as_slice()).map_or(vec![], |p| p.shape().to_vec()) });
        }
        let q = scheme.qtype_for_gguf(&name, n, tied);
        let store = if first[1].is_multiple_of(q.block_elems()) { Store::Quant(q) } else { Store::Dense(parts[0].dtype()) };
        outs.push(Out { shape: vec![parts.len(), first[0], first[1]], name, parts, store });
    }
    let rank = |n: &str| match n {
        "token_embd.weight" => (0, 0, String::new()),
        "output_norm.weight" => (2, 0, String::new()),
        "output.weight" => (3, 0, String::new()),
        other => {
            let l = other.strip_prefix("blk.").and_then(|r| r.split_once('.')).and_then(|(l, _)| l.parse().ok()).unwrap_or(usize::MAX);
            (1, l, other.to_string())
        }
    };
    outs.sort_by_key(|o| rank(&o.name));
    Ok(outs)
}

/// One non-expert output tensor: projection weights, the embedding and the head in the scheme's
/// format when their rows are whole blocks (else their own dtype); everything else F32.
fn out(name: String, t: Tensor, scheme: QuantScheme, n: usize, tied: bool) -> Result<Out> {
    let projection = name.ends_with(".weight") && t.shape().len() == 2 && !name.ends_with("ffn_gate_inp.weight");
    let store = if projection {
        let q = scheme.qtype_for_gguf(&name, n, tied);
        if t.shape()[1].is_multiple_of(q.block_elems()) { Store::Quant(q) } else { Store::Dense(t.dtype()) }
    } else {
        Store::F32
    };
    // The correction bias is `[1, e]` in checkpoints, `[e]` for llama.cpp.
    let shape = if name.ends_with("exp_probs_b.bias") { vec![t.numel()] } else { t.shape().to_vec() };
    Ok(Out { name, shape, parts: vec![t], store })
}

fn u32v(v: usize) -> Value {
    Value::U32(v as u32)
}

/// The metadata the converter writes for this config and folder (module docs).
fn metadata(dir: &Path, cfg: &TextConfig, scheme: QuantScheme) -> Result<Vec<(String, Value)>> {
    let moe = cfg.moe.as_ref();
    let arch = GGUF_ARCHS[moe.is_some() as usize].0;
    let k = |s: &str| format!("{arch}.{s}");
    let name = dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        (k("block_count"), u32v(cfg.num_hidden_layers)),
        (k("context_length"), u32v(cfg.max_position_embeddings)),
        (k("embedding_length"), u32v(cfg.hidden_size)),
        (k("feed_forward_length"), u32v(cfg.intermediate_size)),
        (k("attention.head_count"), u32v(cfg.num_attention_heads)),
        (k("attention.head_count_kv"), u32v(cfg.num_key_value_heads)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps)),
        (k("attention.key_length"), u32v(cfg.head_dim)),
        (k("attention.value_length"), u32v(cfg.head_dim)),
    ];
    if let Some(moe) = moe {
        let types = &cfg.mlp_layer_types;
        let lead = types.iter().position(|t| *t == MlpKind::Moe).unwrap_or(types.len());
        let step = types.iter().enumerate().skip(lead + 1).find(|(_, t)| **t == MlpKind::Moe).map_or(1, |(l, _)| l - lead);
        let expressible = step > 0 && types.iter().enumerate().all(|(l, t)| (*t == MlpKind::Moe) == (l >= lead && (l + 1) % step == 0));
        if !expressible {
            return Err(unsupported(format!("MoE layer pattern {types:?} (llama.cpp's ernie4_5-moe has leading dense layers, then every step-th)")));
        }
        m.extend([
            (k("expert_count"), u32v(moe.num_experts)),
            (k("expert_used_count"), u32v(moe.top_k)),
            (k("interleave_moe_layer_step"), u32v(step)),
            (k("leading_dense_block_count"), u32v(lead)),
            (k("expert_feed_forward_length"), u32v(moe.moe_intermediate_size)),
            (k("expert_shared_count"), u32v(moe.moe_num_shared_experts)),
        ]);
        if moe.moe_num_shared_experts > 0 {
            m.push((k("expert_shared_feed_forward_length"), u32v(moe.moe_intermediate_size * moe.moe_num_shared_experts)));
        }
    }
    m.extend(tokenizer_metadata(dir, cfg.vocab_size)?);
    m.push(("general.quantization_version".into(), Value::U32(2)));
    m.push(("general.file_type".into(), Value::U32(scheme.llama_ftype())));
    Ok(m)
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template` from `tokenizer.model` and
/// `tokenizer_config.json`, as the converter's `_set_vocab_sentencepiece` writes them.
fn tokenizer_metadata(dir: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let spm = dir.join("tokenizer.model");
    if !spm.is_file() {
        return Err(crate::error::unsupported(
            format!("{}: no tokenizer.model", dir.display()),
            "llama.cpp's ERNIE 4.5 GGUF layout stores the SentencePiece vocabulary; add the checkpoint's tokenizer.model",
        ));
    }
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg: Option<serde_json::Value> = if cfg_path.is_file() { Some(crate::io::read_json(&cfg_path)?) } else { None };
    let v = SpmVocab::from_model_file(&spm, vocab_size, cfg.as_ref().map(|c| (cfg_path.as_path(), c)))?;
    let strings = |items: &[String]| Value::Array { elem: ValueType::String, items: items.iter().map(|s| Value::String(s.clone())).collect() };
    let mut m = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".to_string(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".to_string(), strings(&v.pieces)),
        ("tokenizer.ggml.scores".to_string(), Value::Array { elem: ValueType::F32, items: v.scores.iter().map(|&s| Value::F32(s)).collect() }),
        ("tokenizer.ggml.token_type".to_string(), Value::Array { elem: ValueType::I32, items: v.types.iter().map(|&t| Value::I32(t)).collect() }),
    ];
    let named = |key: &str| -> Option<u32> {
        let c = cfg.as_ref()?.get(key)?;
        let text = c.as_str().or_else(|| c.get("content").and_then(|t| t.as_str()))?;
        v.pieces.iter().position(|p| p == text).map(|i| i as u32)
    };
    for (key, gguf) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")] {
        let id = named(key).or(match key {
            "bos_token" => v.bos_id,
            "eos_token" => v.eos_id,
            "unk_token" => v.unk_id,
            _ => None,
        });
        if let Some(id) = id {
            m.push((format!("tokenizer.ggml.{gguf}"), Value::U32(id)));
        }
    }
    let prefix = cfg.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(|b| b.as_bool()).unwrap_or(v.add_space_prefix);
    m.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(prefix)));
    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.is_file() {
        Some(std::fs::read_to_string(&jinja).map_err(|source| Error::Io { path: jinja.clone(), source })?)
    } else {
        cfg.as_ref().and_then(|c| c.get("chat_template")).and_then(|t| t.as_str()).map(str::to_string)
    };
    if let Some(t) = template {
        m.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(m)
}

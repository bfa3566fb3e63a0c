//! ERNIE 4.5 text models from GGUF files, as llama.cpp's `convert_hf_to_gguf.py`
//! (`conversion/ernie.py`) and `llama-quantize` write them: architectures `ernie4_5` (dense) and
//! `ernie4_5-moe`.
//!
//! - **Config** from the `{arch}.*` metadata (`llama_model_ernie4_5::load_arch_hparams`):
//!   `block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count(_kv)`,
//!   `attention.key_length` (head dim), `rope.freq_base`, `attention.layer_norm_rms_epsilon`,
//!   `context_length`, and for MoE `expert_count`, `expert_used_count`,
//!   `expert_feed_forward_length`, `expert_shared_count`, `leading_dense_block_count`,
//!   `interleave_moe_layer_step` — a layer is MoE iff `l >= leading && (l + 1) % step == 0`, as in
//!   llama.cpp's graph. Vocabulary size from `token_embd.weight`; tied iff `output.weight` is absent.
//! - **Tensors** through the one name table (`names.rs` `GGUF_*`) into the same [`Weights`] the
//!   safetensors loader fills, so [`Transformer::load_elastic`] and [`Weights::finish`] do the
//!   shape checks and report missing and unknown tensors: F32 / F16 / BF16 tensors are views of the
//!   map; Q8_0 / Q4_K / Q6_K projection weights (and the embedding) become [`QWeight`] views of the
//!   map (no copy), each stacked-expert tensor one view per expert, put into the loaded
//!   [`Linear`]s after the load (a shape-only stand-in holds their place in `Weights`).
//! - The MTP tensors are not in these files (the converter drops them).

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::decoder::{Mlp, Transformer};
use super::elastic::ElasticPlan;
use super::names::{self, GgufName};
use crate::config::TextConfig;
use crate::gguf::{GgmlType, Gguf, Value};
use crate::nn::linear::{Linear, LinearWeight};
use crate::nn::mlp::SwiGlu;
use crate::ops::quant::{QType, QWeight};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::{Error, Result};

/// The GGUF architectures this loader reads, with the `model_type` each stands for.
pub const GGUF_ARCHS: [(&str, &str); 2] = [("ernie4_5", "ernie4_5"), ("ernie4_5-moe", "ernie4_5_moe")];

fn cfg_err(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config { key: key.into(), reason: reason.into() }
}

/// An unsigned integer metadata value; `None` when absent. Errors: present but not an integer ≥ 0.
fn uint(g: &Gguf, key: &str) -> Result<Option<u64>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| cfg_err(key, format!("expected an unsigned integer, found {v:?}"))),
    }
}

fn need(g: &Gguf, key: &str) -> Result<u64> {
    uint(g, key)?.ok_or_else(|| cfg_err(key, "missing from the GGUF metadata"))
}

fn float(g: &Gguf, key: &str) -> Result<Option<f64>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| cfg_err(key, format!("expected a float, found {v:?}"))),
    }
}

/// The architecture (`general.architecture`). Errors: [`Error::Config`] when it is missing or not
/// one of [`GGUF_ARCHS`].
pub fn gguf_arch(g: &Gguf) -> Result<&'static str> {
    let key = "general.architecture";
    let arch = g.get(key).and_then(Value::as_str).ok_or_else(|| cfg_err(key, "missing (not a llama.cpp model file)"))?;
    GGUF_ARCHS.iter().find(|(a, _)| *a == arch).map(|(a, _)| *a).ok_or_else(|| {
        cfg_err(key, format!("{arch:?} is not supported (this runtime reads the ERNIE 4.5 GGUF architectures ernie4_5 and ernie4_5-moe)"))
    })
}

/// The config.json equivalent of a GGUF file's metadata (module docs), parsed and validated by
/// [`TextConfig::from_json`].
///
/// Errors: [`Error::Config`] naming the missing or mistyped key, [`Error::TensorSet`] without
/// `token_embd.weight`, and every [`TextConfig`] validation error.
pub fn gguf_config_json(g: &Gguf) -> Result<Json> {
    let arch = gguf_arch(g)?;
    let model_type = GGUF_ARCHS.iter().find(|(a, _)| *a == arch).map_or("ernie4_5", |(_, m)| *m);
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = need(g, &k("embedding_length"))?;
    let heads = need(g, &k("attention.head_count"))?;
    let layers = need(g, &k("block_count"))?;
    let embd = g.tensor_info("token_embd.weight").ok_or_else(|| Error::TensorSet { missing: vec!["token_embd.weight".into()], unused: vec![] })?;
    let vocab = match embd.dims[..] {
        [h, v] if h == hidden => v,
        _ => return Err(Error::TensorShape { name: "token_embd.weight".into(), expected: vec![0, hidden as usize], got: embd.shape() }),
    };
    let head_dim = uint(g, &k("attention.key_length"))?.unwrap_or(hidden / heads.max(1));
    if let Some(v) = uint(g, &k("attention.value_length"))? {
        if v != head_dim {
            return Err(cfg_err(k("attention.value_length"), format!("{v} differs from attention.key_length {head_dim}")));
        }
    }
    let mut c = json!({
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": need(g, &k("feed_forward_length"))?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": uint(g, &k("attention.head_count_kv"))?.unwrap_or(heads),
        "head_dim": head_dim,
        "rms_norm_eps": float(g, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        "rope_theta": float(g, &k("rope.freq_base"))?.unwrap_or(500000.0),
        "max_position_embeddings": uint(g, &k("context_length"))?.unwrap_or(131072),
        "vocab_size": vocab,
        "tie_word_embeddings": g.tensor_info("output.weight").is_none(),
        "use_bias": g.tensor_info("blk.0.attn_q.bias").is_some(),
        "eos_token_id": uint(g, "tokenizer.ggml.eos_token_id")?.unwrap_or(2),
        "num_nextn_predict_layers": 0,
    });
    if model_type == "ernie4_5_moe" {
        let lead = uint(g, &k("leading_dense_block_count"))?.unwrap_or(0);
        let step = need(g, &k("interleave_moe_layer_step"))?;
        if step == 0 {
            return Err(cfg_err(k("interleave_moe_layer_step"), "must be >= 1"));
        }
        let types: Vec<&str> = (0..layers).map(|l| if l >= lead && (l + 1) % step == 0 { "sparse" } else { "dense" }).collect();
        let extra = json!({
            "moe_num_experts": need(g, &k("expert_count"))?,
            "moe_k": need(g, &k("expert_used_count"))?,
            "moe_intermediate_size": need(g, &k("expert_feed_forward_length"))?,
            "moe_num_shared_experts": uint(g, &k("expert_shared_count"))?.unwrap_or(0),
            "mlp_layer_types": types,
        });
        if let (Some(o), Json::Object(e)) = (c.as_object_mut(), extra) {
            o.extend(e);
        }
    }
    Ok(c)
}

/// The parsed config of a GGUF file (see [`gguf_config_json`]).
pub fn gguf_config(g: &Gguf) -> Result<TextConfig> {
    TextConfig::from_json(&gguf_config_json(g)?)
}

/// Whether canonical tensor `name` may be stored quantised: a projection weight, the head or the
/// embedding (routers, norms, biases and the correction bias stay f32: spec §6.8).
fn may_be_quantised(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight" || name == "model.embed_tokens.weight"
}

/// The decoder of GGUF file `g` for `cfg` (from [`gguf_config`]) and elastic `plan`.
///
/// Errors: [`Error::TensorDtype`] for a ggml type other than F32 / F16 / BF16 / Q8_0 / Q4_K / Q6_K
/// (or a quantised norm, router or bias), [`Error::TensorShape`] for a stacked-expert tensor that
/// is not 3-D or a tensor whose shape disagrees with the config, and [`Error::TensorSet`] listing
/// every missing tensor and every tensor outside the name table at once.
pub fn load_gguf_model(g: &Gguf, cfg: &TextConfig, plan: &ElasticPlan) -> Result<Transformer> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut quant: BTreeMap<String, QWeight> = BTreeMap::new();
    for info in g.tensors() {
        let qtype = QType::from_ggml_type(info.ggml_type.0);
        let dense = matches!(info.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        if !dense && qtype.is_none() {
            return Err(Error::TensorDtype { name: info.name.clone(), expected: "F32, F16, BF16, Q8_0, Q4_K, Q6_K".into(), got: info.ggml_type.to_string() });
        }
        match names::canonical_gguf_name(&info.name) {
            // Unknown names go in under their own name: `Weights::finish` lists them as unused.
            None => tensors.push((info.name.clone(), if dense { g.tensor(&info.name)? } else { Tensor::placeholder(info.shape()) })),
            Some(GgufName::Plain(name)) => {
                if let Some(q) = qtype {
                    if !may_be_quantised(&name) {
                        return Err(Error::TensorDtype { name: info.name.clone(), expected: "F32, F16, BF16".into(), got: q.to_string() });
                    }
                    quant.insert(name.clone(), QWeight::from_gguf(g, &info.name)?);
                    tensors.push((name, Tensor::placeholder(info.shape())));
                } else {
                    let mut t = g.tensor(&info.name)?;
                    if name.ends_with("e_score_correction_bias") && t.shape().len() == 1 {
                        t = t.reshape(vec![1, t.numel()])?; // GGUF [e], checkpoints [1, e]
                    }
                    tensors.push((name, t));
                }
            }
            Some(GgufName::Experts { layer, suffix }) => {
                let [k, n, e] = info.dims[..] else {
                    return Err(Error::TensorShape { name: info.name.clone(), expected: vec![0, 0, 0], got: info.shape() });
                };
                let (k, n, e) = (k as usize, n as usize, e as usize);
                let name = |x: usize| format!("model.layers.{layer}.mlp.experts.{x}.{suffix}");
                match qtype {
                    Some(q) => {
                        let rb = q.row_bytes(k)?;
                        for x in 0..e {
                            let w = QWeight::from_mmap(q, n, k, g.map().clone(), info.start + x * n * rb)?;
                            quant.insert(name(x), w);
                            tensors.push((name(x), Tensor::placeholder(vec![n, k])));
                        }
                    }
                    None => {
                        let t = g.tensor(&info.name)?; // [e, n, k]
                        for x in 0..e {
                            tensors.push((name(x), t.index0(x)?));
                        }
                    }
                }
            }
        }
    }
    let mut w = Weights::from_tensors(tensors);
    let mut model = Transformer::load_elastic(cfg, &mut w, plan)?;
    w.finish()?;
    attach_quantised(&mut model, quant)?;
    Ok(model)
}

/// Puts each quantised view into the [`Linear`] that holds its stand-in (and the embedding into
/// [`Transformer::embed_quant`]). Views of layers an elastic plan dropped are let go.
fn attach_quantised(model: &mut Transformer, mut quant: BTreeMap<String, QWeight>) -> Result<()> {
    fn set(l: &mut Linear, quant: &mut BTreeMap<String, QWeight>, name: &str) {
        if let Some(q) = quant.remove(name) {
            l.weight = LinearWeight::Quant(q);
        }
    }
    fn swiglu(m: &mut SwiGlu, quant: &mut BTreeMap<String, QWeight>, p: &str) {
        set(&mut m.gate, quant, &format!("{p}.gate_proj.weight"));
        set(&mut m.up, quant, &format!("{p}.up_proj.weight"));
        set(&mut m.down, quant, &format!("{p}.down_proj.weight"));
    }
    let mut kept = Vec::new();
    for layer in &mut model.layers {
        let p = format!("model.layers.{}", layer.index);
        let a = &mut layer.self_attn;
        for (l, n) in [(&mut a.q_proj, "q"), (&mut a.k_proj, "k"), (&mut a.v_proj, "v"), (&mut a.o_proj, "o")] {
            set(l, &mut quant, &format!("{p}.self_attn.{n}_proj.weight"));
        }
        match &mut layer.mlp {
            Mlp::Dense(m) => swiglu(m, &mut quant, &format!("{p}.mlp")),
            Mlp::Moe(b) => {
                for (x, e) in b.experts.iter_mut().enumerate() {
                    swiglu(e, &mut quant, &format!("{p}.mlp.experts.{x}"));
                }
                if let Some(s) = &mut b.shared {
                    swiglu(s, &mut quant, &format!("{p}.mlp.shared_experts"));
                }
            }
            Mlp::Grouped(_) => return Err(crate::error::unsupported("routing groups in a GGUF file", "ERNIE 4.5 GGUF files are text models")),
        }
        kept.push(format!("{p}."));
    }
    let embed = quant.remove("model.embed_tokens.weight");
    if let Some(q) = &embed {
        if q.dims() != (model.cfg.vocab_size, model.cfg.hidden_size) {
            let (r, c) = q.dims();
            return Err(Error::TensorShape { name: "token_embd.weight".into(), expected: vec![model.cfg.vocab_size, model.cfg.hidden_size], got: vec![r, c] });
        }
    }
    if model.cfg.tie_word_embeddings {
        if let Some(q) = &embed {
            model.lm_head.weight = LinearWeight::Quant(q.clone());
        }
    } else {
        set(&mut model.lm_head, &mut quant, "lm_head.weight");
    }
    model.embed_quant = embed;
    let left: Vec<String> = quant.into_keys().filter(|n| kept.iter().any(|p| n.starts_with(p.as_str()))).collect();
    if !left.is_empty() {
        // A quantised tensor the decoder does not hold as a projection (its stand-in would be read).
        return Err(Error::TensorSet { missing: vec![], unused: left });
    }
    Ok(())
}

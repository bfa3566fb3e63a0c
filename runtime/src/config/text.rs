//! `config.json` of ERNIE 4.5 text checkpoints (`ernie4_5`, `ernie4_5_moe`), in both the
//! transformers 4.x and 5.x spellings. Field names are the HF config keys; defaults are the
//! transformers 5.x class defaults, so a config that omits a key means what it means there
//! (spec §2.1-2.2; `configuration_ernie4_5{,_moe}.py`).

use std::path::Path;

use serde_json::Value;

use super::keys::{ids, Keys};
use super::ModelType;
use crate::error::config_err;
use crate::io::read_json;
use crate::Result;

/// How the rotary pairs of a head split over the three position axes (spec §3.5; HF
/// `rope_parameters.mrope_section = [h, w, t]` in pairs, original `freq_allocation` = t):
/// pairs `0..hw` alternate h (even pair) and w (odd pair), the last `t` pairs use t.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MropeSection {
    /// `mrope_section[0] + mrope_section[1]` (the two must be equal: h and w interleave).
    pub hw_pairs: usize,
    /// `mrope_section[2]`.
    pub t_pairs: usize,
}

/// Per-layer feed-forward kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// A dense SwiGLU FFN.
    Dense,
    /// A MoE block.
    Moe,
}

/// MoE settings (spec §2.2). Present only for `ernie4_5_moe`.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Routed experts per layer (`moe_num_experts`, alias `num_experts`).
    pub num_experts: usize,
    /// Experts chosen per token (`moe_k`, alias `num_experts_per_tok`).
    pub top_k: usize,
    /// Width of one routed expert (`moe_intermediate_size`).
    pub moe_intermediate_size: usize,
    /// Shared MLP width is `moe_intermediate_size * moe_num_shared_experts`; 0 = none.
    pub moe_num_shared_experts: usize,
    /// Clamp of the renormalisation denominator (`moe_norm_min`).
    pub moe_norm_min: f32,
}

/// The text decoder's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// The architecture.
    pub model_type: ModelType,
    /// Vocabulary size `v`.
    pub vocab_size: usize,
    /// Hidden width `h`.
    pub hidden_size: usize,
    /// Width of the dense SwiGLU FFN.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA).
    pub num_key_value_heads: usize,
    /// Explicit in ERNIE configs (128), and not `hidden_size / num_attention_heads` for 0.3B.
    pub head_dim: usize,
    /// RMSNorm eps.
    pub rms_norm_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// Longest sequence (positions).
    pub max_position_embeddings: usize,
    /// Whether projections carry biases.
    pub use_bias: bool,
    /// Whether the LM head is the embedding.
    pub tie_word_embeddings: bool,
    /// `eos_token_id` of config.json (int or list).
    pub eos_token_id: Vec<u32>,
    /// Feed-forward kind per layer, from `mlp_layer_types` or the start/end/interval rule.
    pub mlp_layer_types: Vec<MlpKind>,
    /// MoE settings (MoE and VL checkpoints).
    pub moe: Option<MoeConfig>,
    /// MTP depth (`num_nextn_predict_layers`); the MTP tensors are kept when > 0.
    pub num_nextn_predict_layers: usize,
    /// 3-D RoPE split (VL only, spec §3.5): HF `rope_parameters.mrope_section`, or the original
    /// `freq_allocation` (t pairs; h and w share the rest).
    pub mrope_section: Option<MropeSection>,
    /// Routing groups of the MoE layers (VL only): `[text, vision]` for ERNIE-4.5-VL (from the
    /// list-valued `moe_intermediate_size` / `moe_num_experts`), one group for ERNIE 5.0 unified
    /// routing (scalar sizes, or `"moe_routing": "unified"`). Empty for text checkpoints; `moe`
    /// is then the only MoE config, and for VL it equals `moe_groups[0]`.
    pub moe_groups: Vec<MoeConfig>,
}

impl TextConfig {
    /// Reads `dir/config.json`. Errors: [`crate::Error::Io`], [`crate::Error::Json`], [`crate::Error::UnknownModelType`],
    /// [`crate::Error::Config`] naming the key that is missing, mistyped or out of range.
    pub fn from_dir(dir: &Path) -> Result<TextConfig> {
        let v: Value = read_json(&dir.join("config.json"))?;
        TextConfig::from_json(&v)
    }

    /// Parses a config.json value (see [`TextConfig::from_dir`]). For VL checkpoints this is the
    /// language model's config: HF 5.x `text_config`, or the original flat keys.
    pub fn from_json(v: &Value) -> Result<TextConfig> {
        let obj = v.as_object().ok_or_else(|| config_err("config.json", "is not a JSON object"))?;
        let c = Keys(obj);
        let model_type = ModelType::of_json(v)?;
        if model_type == ModelType::Ernie45VlMoe {
            if let Some(t) = c.get("text_config") {
                let t = t.as_object().ok_or_else(|| config_err("text_config", "is not a JSON object"))?;
                // Token ids live at the top level in HF 5.x; the text config may omit them.
                let mut merged = t.clone();
                for key in ["eos_token_id", "tie_word_embeddings"] {
                    if let (None, Some(v)) = (merged.get(key), obj.get(key)) {
                        merged.insert(key.into(), v.clone());
                    }
                }
                return TextConfig::from_keys(&Keys(&merged), model_type);
            }
        }
        TextConfig::from_keys(&c, model_type)
    }

    fn from_keys(c: &Keys<'_>, model_type: ModelType) -> Result<TextConfig> {
        let is_vl = model_type == ModelType::Ernie45VlMoe;
        let is_moe = model_type != ModelType::Ernie45;
        // Class defaults differ between the two transformers classes; mirror them.
        let (d_hidden, d_inter, d_layers, d_heads, d_kv) =
            if is_moe { (2560, 12288, 28, 20, 4) } else { (1024, 3072, 18, 16, 2) };
        let hidden_size = c.usize_or("hidden_size", d_hidden)?;
        let num_hidden_layers = c.usize_or("num_hidden_layers", d_layers)?;
        let num_attention_heads = c.usize_or("num_attention_heads", d_heads)?;
        let num_key_value_heads = match c.get("num_key_value_heads") {
            Some(Value::Null) => num_attention_heads,
            _ => c.usize_or("num_key_value_heads", d_kv)?,
        };
        // Ernie4_5Config defaults head_dim to 128; the MoE class has no such field and falls back
        // to hidden / heads (modeling_ernie4_5_moe.py: getattr(config, "head_dim", hidden // heads)).
        let head_dim = match c.get("head_dim") {
            None if !is_moe => 128,
            None | Some(Value::Null) => hidden_size / num_attention_heads.max(1),
            Some(_) => c.usize_or("head_dim", 0)?,
        };
        let hidden_act = c.str("hidden_act")?.unwrap_or_else(|| "silu".into());
        if hidden_act != "silu" {
            return Err(config_err("hidden_act", format!("{hidden_act:?} is not supported (ERNIE uses \"silu\")")));
        }
        let rope_theta = rope_theta(c)?;
        let eos_token_id = match c.get("eos_token_id") {
            None | Some(Value::Null) => vec![2],
            Some(v) => ids(v).ok_or_else(|| config_err("eos_token_id", "must be an id or a list of ids"))?,
        };

        let moe_groups = if is_vl { vl_moe_groups(c)? } else { Vec::new() };
        let moe = if is_vl {
            moe_groups.first().cloned()
        } else if is_moe {
            Some(MoeConfig {
                num_experts: c.usize_alias(&["moe_num_experts", "num_experts"], 64)?,
                top_k: c.usize_alias(&["moe_k", "num_experts_per_tok"], 6)?,
                moe_intermediate_size: c.usize_or("moe_intermediate_size", 1536)?,
                moe_num_shared_experts: c.usize_or("moe_num_shared_experts", 2)?,
                moe_norm_min: c.f32_or("moe_norm_min", 1e-12)?,
            })
        } else {
            None
        };
        let mlp_layer_types = if is_vl { vl_layer_types(c, num_hidden_layers, moe_groups.len())? } else { mlp_layer_types(c, is_moe, num_hidden_layers)? };
        // ERNIE 5.0 (`ernie5`) keeps ERNIE-4.5-VL's 3-D RoPE over one unified expert pool.
        let mrope_section = if is_vl || model_type == ModelType::Ernie5 { Some(vl_mrope_section(c, head_dim)?) } else { None };

        let cfg = TextConfig {
            model_type,
            vocab_size: c.usize_or("vocab_size", 103424)?,
            hidden_size,
            intermediate_size: c.usize_or("intermediate_size", d_inter)?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: c.f32_or("rms_norm_eps", 1e-5)?,
            rope_theta,
            max_position_embeddings: c.usize_or("max_position_embeddings", 131072)?,
            use_bias: c.bool_or("use_bias", false)?,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", true)?,
            eos_token_id,
            mlp_layer_types,
            moe,
            num_nextn_predict_layers: c.usize_or("num_nextn_predict_layers", 0)?,
            mrope_section,
            moe_groups,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values make a runnable model (no zero sizes, heads divisible into KV groups,
    /// even head_dim for RoPE pairs, top_k within the expert count).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(config_err(key, "must be > 0"));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(config_err(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.num_key_value_heads, self.num_attention_heads),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(config_err("head_dim", format!("{} is odd; RoPE rotates pairs", self.head_dim)));
        }
        if !(self.rms_norm_eps >= 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(config_err("rms_norm_eps", "must be a finite value >= 0"));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(config_err("rope_theta", "must be a finite value > 0"));
        }
        // Guard against configs whose sizes overflow memory arithmetic long before allocation.
        let too_big = |v: usize| v > (1 << 24);
        if [self.vocab_size, self.hidden_size, self.intermediate_size, self.head_dim * self.num_attention_heads]
            .into_iter()
            .any(too_big)
        {
            return Err(config_err("config.json", "a dimension exceeds 2^24"));
        }
        for (g, m) in self.moe_groups.iter().enumerate() {
            if m.num_experts == 0 || m.moe_intermediate_size == 0 || too_big(m.num_experts) || too_big(m.moe_intermediate_size) {
                return Err(config_err("moe_num_experts", format!("routing group {g}: MoE sizes must be in 1..=2^24")));
            }
            if m.top_k == 0 || m.top_k > m.num_experts {
                return Err(config_err("moe_k", format!("{} must be in 1..={} (routing group {g})", m.top_k, m.num_experts)));
            }
        }
        if let Some(m) = &self.moe {
            if m.num_experts == 0 || m.moe_intermediate_size == 0 {
                return Err(config_err("moe_num_experts", "MoE sizes must be > 0"));
            }
            if m.top_k == 0 || m.top_k > m.num_experts {
                return Err(config_err("moe_k", format!("{} must be in 1..={}", m.top_k, m.num_experts)));
            }
        }
        Ok(())
    }

    /// Query width `num_attention_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key/value width `num_key_value_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// VL routing groups (see [`TextConfig::moe_groups`]).
fn vl_moe_groups(c: &Keys<'_>) -> Result<Vec<MoeConfig>> {
    let list = |key: &str| -> Result<Option<Vec<usize>>> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| config_err(key, format!("entry {v} is not a non-negative integer"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Ok(Some(vec![c.usize_or(key, 0)?])),
        }
    };
    let widths = list("moe_intermediate_size")?.unwrap_or_else(|| vec![1536, 512]);
    let experts = list("moe_num_experts")?.or(list("num_experts")?).unwrap_or_else(|| vec![64]);
    let unified = match c.str("moe_routing")?.as_deref() {
        None | Some("modality") => false,
        Some("unified") => true,
        Some(other) => return Err(config_err("moe_routing", format!("{other:?} is not \"modality\" or \"unified\""))),
    };
    let n = if unified { 1 } else { widths.len().max(experts.len()) };
    if n == 0 || n > 2 {
        return Err(config_err("moe_intermediate_size", format!("gives {n} routing groups; 1 (unified) or 2 (text, vision) are supported")));
    }
    let pick = |v: &[usize], g: usize, key: &str| -> Result<usize> {
        match v {
            [one] => Ok(*one),
            _ => v.get(g).copied().ok_or_else(|| config_err(key, format!("has no entry for routing group {g}"))),
        }
    };
    (0..n)
        .map(|g| {
            Ok(MoeConfig {
                num_experts: pick(&experts, g, "moe_num_experts")?,
                top_k: c.usize_alias(&["moe_k", "num_experts_per_tok"], 6)?,
                moe_intermediate_size: pick(&widths, g, "moe_intermediate_size")?,
                moe_num_shared_experts: c.usize_or("moe_num_shared_experts", 2)?,
                moe_norm_min: c.f32_or("moe_norm_min", 1e-12)?,
            })
        })
        .collect()
}

/// VL layer kinds: HF `mlp_layer_types`, or the original per-group
/// `moe_layer_start_index` / `moe_layer_end_index` lists `[text, vision]` with
/// `moe_layer_interval`. vLLM gives each group its own range (a group outside its range falls back
/// to a dense FFN); no released checkpoint has ranges that differ inside the model, and that
/// fallback has no documented tensor names, so differing ranges are refused.
fn vl_layer_types(c: &Keys<'_>, n_layers: usize, n_groups: usize) -> Result<Vec<MlpKind>> {
    if let Some(Value::Array(_)) = c.get("mlp_layer_types") {
        return mlp_layer_types(c, true, n_layers);
    }
    let ends = |key: &str, default: i64| -> Result<Vec<i64>> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(vec![default]),
            Some(Value::Array(a)) => a.iter().map(|v| v.as_i64().ok_or_else(|| config_err(key, format!("entry {v} is not an integer")))).collect(),
            Some(_) => Ok(vec![c.i64_or(key, default)?]),
        }
    };
    let starts = ends("moe_layer_start_index", 1)?;
    let stops = ends("moe_layer_end_index", -1)?;
    let interval = c.i64_or("moe_layer_interval", 1)?;
    if interval <= 0 {
        return Err(config_err("moe_layer_interval", "must be >= 1"));
    }
    let last = n_layers as i64 - 1;
    let kinds_of = |g: usize| -> Vec<MlpKind> {
        let start = starts.get(g).or(starts.first()).copied().unwrap_or(1);
        let mut end = stops.get(g).or(stops.first()).copied().unwrap_or(-1);
        if end == -1 || end > last {
            end = last;
        }
        (0..n_layers as i64).map(|i| if (i + 1) % interval == 0 && i >= start && i <= end { MlpKind::Moe } else { MlpKind::Dense }).collect()
    };
    let kinds = kinds_of(0);
    if (1..n_groups).any(|g| kinds_of(g) != kinds) {
        return Err(config_err(
            "moe_layer_start_index",
            format!("per-group MoE layer ranges {starts:?}..{stops:?} differ inside the model's {n_layers} layers; a group's dense fallback is not supported"),
        ));
    }
    Ok(kinds)
}

/// The 3-D RoPE split in pairs (spec §3.5): `rope_parameters.mrope_section` `[h, w, t]`, or the
/// original `freq_allocation` = t with h = w = the rest / 2; default `[22, 22, 20]` scaled to
/// `head_dim` is not guessed — a config without either is taken as the 28B default only when
/// `head_dim` is 128.
fn vl_mrope_section(c: &Keys<'_>, head_dim: usize) -> Result<MropeSection> {
    let pairs = head_dim / 2;
    let section: [usize; 3] = if let Some(Value::Object(p)) = c.get("rope_parameters").or(c.get("rope_scaling")) {
        match p.get("mrope_section") {
            Some(Value::Array(a)) if a.len() == 3 => {
                let v: Vec<usize> = a.iter().filter_map(|x| x.as_u64().map(|n| n as usize)).collect();
                if v.len() != 3 {
                    return Err(config_err("rope_parameters.mrope_section", "must be three non-negative integers"));
                }
                [v[0], v[1], v[2]]
            }
            Some(other) => return Err(config_err("rope_parameters.mrope_section", format!("must be [h, w, t], found {other}"))),
            None => default_section(c, pairs)?,
        }
    } else {
        default_section(c, pairs)?
    };
    if section[0] != section[1] || section[0] + section[1] + section[2] != pairs {
        return Err(config_err(
            "rope_parameters.mrope_section",
            format!("{section:?} must have equal h and w parts and sum to head_dim / 2 = {pairs}"),
        ));
    }
    Ok(MropeSection { hw_pairs: section[0] + section[1], t_pairs: section[2] })
}

fn default_section(c: &Keys<'_>, pairs: usize) -> Result<[usize; 3]> {
    match c.get("freq_allocation") {
        Some(Value::Null) | None if pairs == 64 => Ok([22, 22, 20]),
        Some(Value::Null) | None => Err(config_err("rope_parameters.mrope_section", "missing (needed for 3-D RoPE)")),
        Some(_) => {
            let t = c.usize_or("freq_allocation", 0)?;
            if t > pairs || (pairs - t) % 2 != 0 {
                return Err(config_err("freq_allocation", format!("{t} does not split head_dim / 2 = {pairs} into t and equal h, w parts")));
            }
            Ok([(pairs - t) / 2, (pairs - t) / 2, t])
        }
    }
}

/// `rope_theta` (4.x) or `rope_parameters.rope_theta` (5.x); only the default RoPE type is used
/// by ERNIE releases.
fn rope_theta(c: &Keys<'_>) -> Result<f32> {
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(Value::Object(p)) = c.get(key) {
            if let Some(t) = p.get("rope_type").or_else(|| p.get("type")) {
                if t.as_str() != Some("default") {
                    return Err(config_err(key, format!("rope type {t} is not supported (only \"default\")")));
                }
            }
        }
    }
    if let Some(Value::Object(p)) = c.get("rope_parameters") {
        if let Some(t) = p.get("rope_theta") {
            return t.as_f64().map(|v| v as f32).ok_or_else(|| config_err("rope_parameters.rope_theta", "must be a number"));
        }
    }
    c.f32_or("rope_theta", 500000.0)
}

/// Layer kinds: an explicit `mlp_layer_types` list ("dense"/"sparse"), else the 4.x rule: layer
/// i is MoE iff `(i+1) % interval == 0 && start <= i <= end` (end -1 = last layer).
fn mlp_layer_types(c: &Keys<'_>, is_moe: bool, n_layers: usize) -> Result<Vec<MlpKind>> {
    if !is_moe {
        return Ok(vec![MlpKind::Dense; n_layers]);
    }
    if let Some(Value::Array(list)) = c.get("mlp_layer_types") {
        if list.len() != n_layers {
            return Err(config_err("mlp_layer_types", format!("has {} entries for {n_layers} layers", list.len())));
        }
        return list
            .iter()
            .map(|v| match v.as_str() {
                Some("dense") => Ok(MlpKind::Dense),
                Some("sparse") | Some("moe") => Ok(MlpKind::Moe),
                _ => Err(config_err("mlp_layer_types", format!("entry {v} is not \"dense\" or \"sparse\""))),
            })
            .collect();
    }
    let start = c.i64_or("moe_layer_start_index", 1)?;
    let mut end = c.i64_or("moe_layer_end_index", -1)?;
    if end == -1 {
        end = n_layers as i64 - 1;
    }
    let interval = c.i64_or("moe_layer_interval", 1)?;
    if interval <= 0 {
        return Err(config_err("moe_layer_interval", "must be >= 1"));
    }
    Ok((0..n_layers as i64)
        .map(|i| if (i + 1) % interval == 0 && i >= start && i <= end { MlpKind::Moe } else { MlpKind::Dense })
        .collect())
}

/// Reads eos ids from `dir/generation_config.json` when it exists; `Ok(None)` when absent.
pub fn generation_eos_ids(dir: &Path) -> Result<Option<Vec<u32>>> {
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let v: Value = read_json(&path)?;
    match v.get("eos_token_id") {
        None | Some(Value::Null) => Ok(None),
        Some(x) => ids(x).map(Some).ok_or_else(|| config_err("generation_config.eos_token_id", "must be an id or a list of ids")),
    }
}


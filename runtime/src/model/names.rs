//! Every checkpoint-spelling table of the runtime, in one file. Stored names are rewritten to the
//! canonical spelling when a checkpoint is opened (`load.rs`), so the layers read one set of
//! names; the MoE layouts that differ by more than a name (`moe.rs`) read their alternatives
//! from the constants here.
//!
//! Text checkpoints: older exports use `ernie.` where HF uses `model.` ([`canonical_text_name`]).
//!
//! ERNIE-4.5-VL (spec §3.4; the reverse of transformers' `conversion_mapping.py` entry
//! `ernie4_5_vl_moe`), [`canonical_vl_name`]:
//!
//! | canonical (what the loaders read)     | transformers 5.x                  | original remote code            |
//! |---------------------------------------|-----------------------------------|---------------------------------|
//! | `model.embed_tokens`, `model.layers.`, `model.norm` | `model.language_model.…` | `model.…` or `ernie.…` |
//! | `model.vision_tower.`                 | `model.vision_tower.`             | `vision_model.`, `model.vision_model.` |
//! | `model.resampler_model.`              | `model.resampler_model.`          | `resampler_model.`, `model.resampler_model.` |
//! | `….spatial_linear.{fc1,fc2,ln}`       | same                              | `….spatial_linear.{0,2,3}`      |
//! | `….temporal_linear.{fc1,fc2,ln}`      | same                              | `….temporal_linear.{0,2,3}`     |
//!
//! The MoE tensors differ by more than a prefix (transposed routers, one `[2, e]` bias, experts
//! `0..e` text and `e..2e` vision), so `moe.rs` reads both MoE layouts with the constants below;
//! the backbone's canonical `model.layers.{l}.mlp.` prefix is shared.

/// Spellings of a MoE layer's `e_score_correction_bias` under `{prefix}` (`model.layers.{l}.mlp`):
/// the original remote code's (`[1, e]`, or `[groups, e]` in the original VL layout) first, then
/// transformers 5.x's. A checkpoint holding both is refused.
pub const CORRECTION_BIAS: [&str; 2] = ["moe_statics.e_score_correction_bias", "gate.moe_statics.e_score_correction_bias"];

/// transformers 5.x stacked experts `[e, 2i, h]` (gate rows first) under `{prefix}`.
pub const STACKED_GATE_UP: &str = "experts.gate_up_proj";

/// transformers 5.x stacked experts `[e, h, i]` under `{prefix}`.
pub const STACKED_DOWN: &str = "experts.down_proj";

/// transformers 5.x routing-group sub-modules under `{prefix}`, in group order (text, vision).
pub const HF_GROUPS: [&str; 2] = ["text_moe", "vision_moe"];

/// GGUF tensor names (llama.cpp's gguf-py 0.19.0 `TENSOR_NAMES` for `ernie4_5` / `ernie4_5-moe`,
/// as `convert_hf_to_gguf.py`'s `conversion/ernie.py` writes them) ↔ canonical names, outside
/// the layers. GGUF stores dimensions fastest first (`token_embd.weight` is `[h, v]` there, our
/// `[v, h]`); the converter does not permute q/k rows for ERNIE (llama.cpp runs it with
/// `LLAMA_ROPE_TYPE_NORM`, ERNIE's interleaved pairs), so rows map one to one.
pub const GGUF_GLOBAL: &[(&str, &str)] =
    &[("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];

/// Per layer: `blk.{l}.{gguf}` ↔ `model.layers.{l}.{canonical}`.
pub const GGUF_LAYER: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_output.bias", "self_attn.o_proj.bias"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("ffn_gate_inp.weight", "mlp.gate.weight"),
    // `[e]` in GGUF, `[1, e]` in the original checkpoints (the loader reshapes).
    ("exp_probs_b.bias", "mlp.moe_statics.e_score_correction_bias"),
    ("ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"),
    ("ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"),
    ("ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"),
];

/// Per layer, the stacked experts: `blk.{l}.{gguf}` `[e, out, in]` ↔ one
/// `model.layers.{l}.mlp.experts.{x}.{canonical}` `[out, in]` per expert `x`.
pub const GGUF_EXPERTS: &[(&str, &str)] =
    &[("ffn_gate_exps.weight", "gate_proj.weight"), ("ffn_up_exps.weight", "up_proj.weight"), ("ffn_down_exps.weight", "down_proj.weight")];

/// What a GGUF tensor name is in canonical spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GgufName {
    /// One canonical tensor.
    Plain(String),
    /// Stacked experts of layer `layer`: expert `x` is `model.layers.{layer}.mlp.experts.{x}.{suffix}`.
    Experts {
        /// The layer index.
        layer: usize,
        /// `gate_proj.weight`, `up_proj.weight` or `down_proj.weight`.
        suffix: &'static str,
    },
}

/// The canonical spelling of GGUF tensor `name`; `None` for a name outside the tables.
pub fn canonical_gguf_name(name: &str) -> Option<GgufName> {
    if let Some((_, c)) = GGUF_GLOBAL.iter().find(|(g, _)| *g == name) {
        return Some(GgufName::Plain(c.to_string()));
    }
    let rest = name.strip_prefix("blk.")?;
    let (l, suffix) = rest.split_once('.')?;
    let layer: usize = l.parse().ok()?;
    if let Some((_, c)) = GGUF_LAYER.iter().find(|(g, _)| *g == suffix) {
        return Some(GgufName::Plain(format!("model.layers.{layer}.{c}")));
    }
    GGUF_EXPERTS.iter().find(|(g, _)| *g == suffix).map(|(_, c)| GgufName::Experts { layer, suffix: c })
}

/// The GGUF name of canonical tensor `name` (experts excluded: they are written stacked, see
/// [`GGUF_EXPERTS`]); `None` for a name outside the tables.
pub fn gguf_name(name: &str) -> Option<String> {
    if let Some((g, _)) = GGUF_GLOBAL.iter().find(|(_, c)| *c == name) {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (l, suffix) = rest.split_once('.')?;
    let layer: usize = l.parse().ok()?;
    GGUF_LAYER.iter().find(|(_, c)| *c == suffix).map(|(g, _)| format!("blk.{layer}.{g}"))
}

/// Older text exports name the decoder `ernie.` where HF uses `model.`.
const TEXT_PREFIXES: &[(&str, &str)] = &[("ernie.", "model.")];

/// `(stored prefix, canonical prefix)`, first match wins.
const PREFIXES: &[(&str, &str)] = &[
    ("model.language_model.", "model."),
    ("vision_model.", "model.vision_tower."),
    ("model.vision_model.", "model.vision_tower."),
    ("resampler_model.", "model.resampler_model."),
];

/// `(stored infix, canonical infix)` inside the resampler.
const RESAMPLER: &[(&str, &str)] = &[
    ("spatial_linear.0.", "spatial_linear.fc1."),
    ("spatial_linear.2.", "spatial_linear.fc2."),
    ("spatial_linear.3.", "spatial_linear.ln."),
    ("temporal_linear.0.", "temporal_linear.fc1."),
    ("temporal_linear.2.", "temporal_linear.fc2."),
    ("temporal_linear.3.", "temporal_linear.ln."),
];

/// The canonical spelling of a stored text-checkpoint tensor name (`ernie.` → `model.`).
pub fn canonical_text_name(name: &str) -> String {
    match TEXT_PREFIXES.iter().find(|(from, _)| name.starts_with(from)) {
        Some((from, to)) => format!("{to}{}", &name[from.len()..]),
        None => name.to_string(),
    }
}

/// The canonical spelling of a stored VL tensor name (tables above; the text table first).
pub fn canonical_vl_name(name: &str) -> String {
    let name = &canonical_text_name(name);
    let mut n = name.to_string();
    if let Some((from, to)) = PREFIXES.iter().find(|(from, _)| name.starts_with(from)) {
        n = format!("{to}{}", &name[from.len()..]);
    }
    if n.starts_with("model.resampler_model.") {
        for (from, to) in RESAMPLER {
            n = n.replace(from, to);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::canonical_vl_name as c;

    #[test]
    fn both_spellings_meet() {
        assert_eq!(c("model.language_model.layers.3.mlp.text_moe.gate.weight"), "model.layers.3.mlp.text_moe.gate.weight");
        assert_eq!(c("model.layers.3.mlp.gate.weight_1"), "model.layers.3.mlp.gate.weight_1");
        assert_eq!(c("vision_model.blocks.0.attn.qkv.weight"), "model.vision_tower.blocks.0.attn.qkv.weight");
        assert_eq!(c("model.vision_tower.ln.bias"), "model.vision_tower.ln.bias");
        assert_eq!(c("model.resampler_model.spatial_linear.3.weight"), "model.resampler_model.spatial_linear.ln.weight");
        assert_eq!(c("resampler_model.temporal_linear.0.bias"), "model.resampler_model.temporal_linear.fc1.bias");
        assert_eq!(c("model.resampler_model.mlp.weight"), "model.resampler_model.mlp.weight");
        assert_eq!(c("lm_head.weight"), "lm_head.weight");
        assert_eq!(c("ernie.layers.0.mlp.gate.weight"), "model.layers.0.mlp.gate.weight");
        assert_eq!(super::canonical_text_name("ernie.embed_tokens.weight"), "model.embed_tokens.weight");
        assert_eq!(super::canonical_text_name("lm_head.weight"), "lm_head.weight");
    }

    #[test]
    fn gguf_names_round_trip() {
        use super::{canonical_gguf_name as g, gguf_name, GgufName};
        assert_eq!(g("blk.3.attn_q.weight"), Some(GgufName::Plain("model.layers.3.self_attn.q_proj.weight".into())));
        assert_eq!(g("blk.0.exp_probs_b.bias"), Some(GgufName::Plain("model.layers.0.mlp.moe_statics.e_score_correction_bias".into())));
        assert_eq!(g("blk.12.ffn_down_exps.weight"), Some(GgufName::Experts { layer: 12, suffix: "down_proj.weight" }));
        assert_eq!(g("token_embd.weight"), Some(GgufName::Plain("model.embed_tokens.weight".into())));
        assert_eq!(g("blk.x.attn_q.weight"), None);
        assert_eq!(g("rope_freqs.weight"), None);
        for (gg, c) in super::GGUF_LAYER {
            assert_eq!(gguf_name(&format!("model.layers.7.{c}")), Some(format!("blk.7.{gg}")));
        }
        assert_eq!(gguf_name("lm_head.weight").as_deref(), Some("output.weight"));
    }
}

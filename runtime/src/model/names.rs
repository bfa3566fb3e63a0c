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
}

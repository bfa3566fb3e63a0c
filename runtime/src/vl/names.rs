//! The one spelling table of ERNIE-4.5-VL checkpoints (spec §3.4; the reverse of transformers'
//! `conversion_mapping.py` entry `ernie4_5_vl_moe`). Every stored name is rewritten to the
//! canonical spelling on open; the loaders then read one set of names.
//!
//! | canonical (what the loaders read)     | transformers 5.x                  | original remote code            |
//! |---------------------------------------|-----------------------------------|---------------------------------|
//! | `model.embed_tokens`, `model.layers.`, `model.norm` | `model.language_model.…` | `model.…` (`ernie.…` is renamed by `Weights::open`) |
//! | `model.vision_tower.`                 | `model.vision_tower.`             | `vision_model.`, `model.vision_model.` |
//! | `model.resampler_model.`              | `model.resampler_model.`          | `resampler_model.`, `model.resampler_model.` |
//! | `….spatial_linear.{fc1,fc2,ln}`       | same                              | `….spatial_linear.{0,2,3}`      |
//! | `….temporal_linear.{fc1,fc2,ln}`      | same                              | `….temporal_linear.{0,2,3}`     |
//!
//! The MoE tensors differ by more than a prefix (transposed routers, one `[2, e]` bias, experts
//! `0..e` text and `e..2e` vision), so [`crate::moe::GroupedMoe::load`] reads both MoE layouts
//! itself; the backbone's canonical `model.layers.{l}.mlp.` prefix is shared.

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

/// The canonical spelling of a stored VL tensor name (table above).
pub fn canonical_vl_name(name: &str) -> String {
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
    }
}

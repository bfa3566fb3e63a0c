//! Reading MoE layers from a checkpoint, in every layout the ERNIE releases use (spec §2.3,
//! §3.4): per-expert or stacked experts, two spellings of the correction bias, and for routing
//! groups the transformers 5.x `{text_moe, vision_moe}` layout or the original remote-code one
//! (transposed routers, one `[2, e]` bias, experts `0..e` text and `e..2e` vision). The names
//! come from `names.rs`; the layers themselves are `nn/moe/`.

use super::names;
use crate::config::MoeConfig;
use crate::nn::linear::Linear;
use crate::nn::mlp::SwiGlu;
use crate::nn::moe::{GroupedMoe, MoeBlock, Router};
use crate::weights::Weights;
use crate::{Error, Result};

/// Loads `{prefix}` (= `model.layers.{l}.mlp`), accepting every layout of spec §2.3:
/// per-expert `experts.{e}.{gate,up,down}_proj` (or fused `up_gate_proj`), or the
/// transformers-5 stacked `experts.gate_up_proj [e, 2i, h]` (gate rows first) with
/// `experts.down_proj [e, h, i]`; the correction bias under `moe_statics.` or `gate.moe_statics.`.
pub fn load_moe_block(w: &mut Weights, prefix: &str, hidden: usize, m: &MoeConfig, use_bias: bool) -> Result<MoeBlock> {
    let (e, i) = (m.num_experts, m.moe_intermediate_size);
    let weight = w.take_f32(&format!("{prefix}.gate.weight"), &[e, hidden])?;
    let mut bias = None;
    for name in names::CORRECTION_BIAS.map(|suffix| format!("{prefix}.{suffix}")) {
        if w.contains(&name) {
            if bias.is_some() {
                return Err(Error::TensorSet { missing: vec![], unused: vec![name] });
            }
            bias = Some(w.take_f32(&name, &[1, e])?);
        }
    }
    let router = Router { weight, bias, num_experts: e, hidden, top_k: m.top_k, norm_min: m.moe_norm_min, expert_mask: None };

    let stacked = format!("{prefix}.{}", names::STACKED_GATE_UP);
    let experts = if w.contains(&stacked) {
        let gate_up = w.take(&stacked, &[e, 2 * i, hidden])?; // [e, 2i, h]
        let down = w.take(&format!("{prefix}.{}", names::STACKED_DOWN), &[e, hidden, i])?; // [e, h, i]
        (0..e)
            .map(|x| {
                let gu = gate_up.index0(x)?; // [2i, h]
                Ok(SwiGlu {
                    gate: Linear::of(gu.narrow0(0, i)?, None),
                    up: Linear::of(gu.narrow0(i, i)?, None),
                    down: Linear::of(down.index0(x)?, None),
                    hidden,
                    inter: i,
                })
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        (0..e).map(|x| SwiGlu::load(w, &format!("{prefix}.experts.{x}"), hidden, i, use_bias)).collect::<Result<Vec<_>>>()?
    };
    let shared = match m.moe_num_shared_experts {
        0 => None,
        s => Some(SwiGlu::load(w, &format!("{prefix}.shared_experts"), hidden, i * s, use_bias)?),
    };
    Ok(MoeBlock { router, experts, shared })
}

/// Loads `{prefix}` (= `model.layers.{l}.mlp`) for `groups` routing groups, from whichever
/// layout the checkpoint has (spec §3.4):
/// - one group: the text-MoE names of [`load_moe_block`] (`gate.weight [e, h]`, experts, ...);
/// - transformers 5.x: `{text_moe, vision_moe}.{gate.weight [e, h],
///   gate.moe_statics.e_score_correction_bias [1, e], experts.gate_up_proj, experts.down_proj}`;
/// - original remote code: `gate.weight` / `gate.weight_1` stored transposed `[h, e]`,
///   `moe_statics.e_score_correction_bias [2, e]` (row per group), `experts.{0..e0}` text and
///   `experts.{e0..e0+e1}` vision, per expert `{gate,up,down}_proj`.
///
/// plus `shared_experts` of width `groups[0].moe_intermediate_size * moe_num_shared_experts`.
/// Errors: shape errors; missing tensors are recorded in `w` for [`Weights::finish`].
pub fn load_grouped_moe(w: &mut Weights, prefix: &str, hidden: usize, groups: &[MoeConfig], use_bias: bool) -> Result<GroupedMoe> {
    let first = groups.first().ok_or_else(|| Error::Config { key: "moe_num_experts".into(), reason: "no routing group".into() })?;
    let no_shared = |m: &MoeConfig| MoeConfig { moe_num_shared_experts: 0, ..m.clone() };
    let blocks = if groups.len() == 1 {
        vec![load_moe_block(w, prefix, hidden, &no_shared(first), use_bias)?]
    } else if w.contains(&format!("{prefix}.gate.weight_1")) || w.contains(&format!("{prefix}.moe_statics.e_score_correction_bias")) {
        load_original(w, prefix, hidden, groups, use_bias)?
    } else {
        if groups.len() > names::HF_GROUPS.len() {
            return Err(Error::Config { key: "moe_num_experts".into(), reason: format!("{} routing groups; at most 2 are supported", groups.len()) });
        }
        groups.iter().zip(names::HF_GROUPS).map(|(m, name)| load_moe_block(w, &format!("{prefix}.{name}"), hidden, &no_shared(m), use_bias)).collect::<Result<_>>()?
    };
    let shared = match first.moe_num_shared_experts {
        0 => None,
        s => Some(SwiGlu::load(w, &format!("{prefix}.shared_experts"), hidden, first.moe_intermediate_size * s, use_bias)?),
    };
    Ok(GroupedMoe { groups: blocks, shared })
}


/// The original remote-code layout of a two-group layer (see [`load_grouped_moe`]).
fn load_original(w: &mut Weights, prefix: &str, hidden: usize, groups: &[MoeConfig], use_bias: bool) -> Result<Vec<MoeBlock>> {
    let e0 = groups[0].num_experts;
    if groups.iter().any(|g| g.num_experts != e0) {
        return Err(Error::Config {
            key: "moe_num_experts".into(),
            reason: "the original layout stores one [groups, e] correction bias, so every group needs the same expert count".into(),
        });
    }
    let bias_name = format!("{prefix}.{}", names::CORRECTION_BIAS[0]);
    let bias = w.take_opt(&bias_name, &[groups.len(), e0])?.map(|t| t.to_f32_vec());
    let mut offset = 0;
    let mut blocks = Vec::with_capacity(groups.len());
    for (g, m) in groups.iter().enumerate() {
        let (e, i) = (m.num_experts, m.moe_intermediate_size);
        let gate_name = if g == 0 { format!("{prefix}.gate.weight") } else { format!("{prefix}.gate.weight_{g}") };
        let wt = w.take_f32(&gate_name, &[hidden, e])?; // [h, e], stored transposed
        let mut weight = vec![0.0f32; e * hidden]; // [e, h]
        for r in 0..hidden {
            for c in 0..e {
                weight[c * hidden + r] = wt[r * e + c];
            }
        }
        let router = Router {
            weight,
            bias: bias.as_ref().map(|b| b[g * e0..(g + 1) * e0].to_vec()),
            num_experts: e,
            hidden,
            top_k: m.top_k,
            norm_min: m.moe_norm_min,
            expert_mask: None,
        };
        let experts = (offset..offset + e).map(|x| SwiGlu::load(w, &format!("{prefix}.experts.{x}"), hidden, i, use_bias)).collect::<Result<Vec<_>>>()?;
        offset += e;
        blocks.push(MoeBlock { router, experts, shared: None });
    }
    Ok(blocks)
}

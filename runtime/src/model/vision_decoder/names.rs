//! The one spelling table of the image decoder's tensors (spec ernie5-generation §4.3): every
//! stored name is mapped to the diffusers `AutoencoderKL` spelling, which the loader then reads.
//!
//! Accepted spellings, in the order they are undone:
//! 1. a checkpoint prefix `first_stage_model.` or `vae.` (LDM / SD single files);
//! 2. Infinity's wrapper modules: `X.conv.weight` where `X` is itself a conv (`conv1`, `q`,
//!    `upsample.conv`, …) and `X.norm.weight` where `X` is a norm → `X.weight`;
//! 3. LDM / FLUX names, the inverse of diffusers' `convert_ldm_vae_checkpoint`
//!    (`loaders/single_file_utils.py`): `down.{i}.block.{j}` → `down_blocks.{i}.resnets.{j}`,
//!    `down.{i}.downsample` → `down_blocks.{i}.downsamplers.0`, `up.{i}.block.{j}` →
//!    `up_blocks.{n−1−i}.resnets.{j}` (LDM numbers the decoder levels finest first, diffusers
//!    coarsest first), `up.{i}.upsample` → `up_blocks.{n−1−i}.upsamplers.0`, `mid.block_{1,2}` →
//!    `mid_block.resnets.{0,1}`, `mid.attn_1.{norm,q,k,v,proj_out}` →
//!    `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`, `nin_shortcut` →
//!    `conv_shortcut`, `norm_out` → `conv_norm_out`;
//! 4. diffusers' pre-0.14 attention names `query`/`key`/`value`/`proj_attn`.
//!
//! Attention projections keep their stored shape: `[C, C, 1, 1]` (LDM 1×1 convs) or `[C, C]`
//! (diffusers linears); the loader accepts both.

/// Layer names that Infinity wraps in a module holding `.conv`.
const CONV_LAYERS: [&str; 11] = ["conv1", "conv2", "conv_in", "conv_out", "nin_shortcut", "q", "k", "v", "proj_out", "conv", "quant_conv"];
/// Layer names that Infinity wraps in a module holding `.norm`.
const NORM_LAYERS: [&str; 4] = ["norm1", "norm2", "norm_out", "norm"];

/// Maps a stored tensor name to its diffusers spelling. `levels` is the number of resolution
/// levels (`block_out_channels.len()`), needed to reverse the LDM decoder numbering. Names that
/// match no rule are returned unchanged (and then reported as unused by the loader).
pub fn canonical(name: &str, levels: usize) -> String {
    let name = name.strip_prefix("first_stage_model.").or_else(|| name.strip_prefix("vae.")).unwrap_or(name);
    let mut parts: Vec<String> = unwrap_infinity(name).split('.').map(str::to_string).collect();
    let Some(side) = parts.first().cloned() else { return name.to_string() };
    if side == "encoder" || side == "decoder" {
        ldm_to_diffusers(&mut parts, side == "decoder", levels);
    }
    for p in parts.iter_mut() {
        let new = match p.as_str() {
            "nin_shortcut" => "conv_shortcut",
            "norm_out" => "conv_norm_out",
            _ => continue,
        };
        *p = new.to_string();
    }
    parts.join(".")
}

/// Drops Infinity's `.conv` / `.norm` wrapper segment before a final `weight` / `bias`.
fn unwrap_infinity(name: &str) -> String {
    let segs: Vec<&str> = name.split('.').collect();
    let n = segs.len();
    if n >= 3 && matches!(segs[n - 1], "weight" | "bias") {
        let (wrapper, layer) = (segs[n - 2], segs[n - 3]);
        let wrapped = (wrapper == "conv" && CONV_LAYERS.contains(&layer)) || (wrapper == "norm" && NORM_LAYERS.contains(&layer));
        if wrapped {
            let mut out: Vec<&str> = segs[..n - 2].to_vec();
            out.push(segs[n - 1]);
            return out.join(".");
        }
    }
    name.to_string()
}

/// Segment `i` of `parts`, or "" past the end.
fn seg(parts: &[String], i: usize) -> &str {
    parts.get(i).map(String::as_str).unwrap_or("")
}

/// Rewrites the LDM structure segments of `parts` (`[side, …]`) in place.
fn ldm_to_diffusers(parts: &mut Vec<String>, decoder: bool, levels: usize) {
    match seg(parts, 1) {
        "down" | "up" => {
            let Ok(i) = seg(parts, 2).parse::<usize>() else { return };
            let up = seg(parts, 1) == "up";
            // The decoder's LDM levels run finest (0) to coarsest; diffusers' up_blocks coarsest first.
            let level = if up && decoder && i < levels { levels - 1 - i } else { i };
            let (blocks, sampler) = if up { ("up_blocks", "upsamplers") } else { ("down_blocks", "downsamplers") };
            let rest: Vec<String> = match seg(parts, 3) {
                "block" => [vec!["resnets".to_string()], parts[4..].to_vec()].concat(),
                "upsample" | "downsample" => [vec![sampler.to_string(), "0".to_string()], parts[4..].to_vec()].concat(),
                _ => return,
            };
            *parts = [vec![parts[0].clone(), blocks.to_string(), level.to_string()], rest].concat();
        }
        "mid" => {
            let sub = match seg(parts, 2) {
                "block_1" => vec!["resnets".to_string(), "0".to_string()],
                "block_2" => vec!["resnets".to_string(), "1".to_string()],
                "attn_1" => vec!["attentions".to_string(), "0".to_string()],
                _ => return,
            };
            let attn = seg(parts, 2) == "attn_1";
            let mut rest = parts[3..].to_vec();
            if attn {
                if let Some(layer) = rest.first_mut() {
                    let new = match layer.as_str() {
                        "norm" => "group_norm",
                        "q" => "to_q",
                        "k" => "to_k",
                        "v" => "to_v",
                        "proj_out" => "to_out.0",
                        _ => "",
                    };
                    if !new.is_empty() {
                        *layer = new.to_string();
                    }
                }
            }
            *parts = [vec![parts[0].clone(), "mid_block".to_string()], sub, rest].concat();
            *parts = parts.join(".").split('.').map(str::to_string).collect();
        }
        // diffusers before 0.14: query/key/value/proj_attn.
        "mid_block" if seg(parts, 2) == "attentions" => {
            if let Some(layer) = parts.get_mut(4) {
                let new = match layer.as_str() {
                    "query" => "to_q",
                    "key" => "to_k",
                    "value" => "to_v",
                    "proj_attn" => "to_out.0",
                    _ => "",
                };
                if !new.is_empty() {
                    *layer = new.to_string();
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn ldm_flux_and_infinity_names_map_to_diffusers() {
        let cases = [
            ("decoder.up.0.block.1.nin_shortcut.weight", "decoder.up_blocks.3.resnets.1.conv_shortcut.weight"),
            ("decoder.up.3.upsample.conv.bias", "decoder.up_blocks.0.upsamplers.0.conv.bias"),
            ("decoder.mid.attn_1.q.weight", "decoder.mid_block.attentions.0.to_q.weight"),
            ("decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias"),
            ("decoder.mid.attn_1.norm.weight", "decoder.mid_block.attentions.0.group_norm.weight"),
            ("decoder.mid.block_2.norm1.bias", "decoder.mid_block.resnets.1.norm1.bias"),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("encoder.down.1.block.0.conv2.weight", "encoder.down_blocks.1.resnets.0.conv2.weight"),
            ("encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight"),
            ("first_stage_model.post_quant_conv.weight", "post_quant_conv.weight"),
            // Infinity's wrappers.
            ("decoder.up.1.block.0.conv1.conv.weight", "decoder.up_blocks.2.resnets.0.conv1.weight"),
            ("decoder.up.1.upsample.conv.conv.weight", "decoder.up_blocks.2.upsamplers.0.conv.weight"),
            ("decoder.mid.attn_1.norm.norm.bias", "decoder.mid_block.attentions.0.group_norm.bias"),
            ("decoder.norm_out.norm.weight", "decoder.conv_norm_out.weight"),
            // diffusers spellings pass through; old attention names are renamed.
            ("decoder.up_blocks.0.resnets.2.conv_shortcut.weight", "decoder.up_blocks.0.resnets.2.conv_shortcut.weight"),
            ("decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
            ("encoder.mid_block.attentions.0.proj_attn.weight", "encoder.mid_block.attentions.0.to_out.0.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(canonical(ldm, 4), diffusers, "{ldm}");
        }
    }
}

//! Routing groups as configuration (spec §3.4, §1.1): the grouped MoE's fast path against its
//! per-token twin, token-to-group isolation, and one group equal to the text MoE on every token.

use crate::common::randn;
use ernie_runtime::model::moe::{load_grouped_moe, load_moe_block};
use ernie_runtime::{MoeConfig, Tensor, Weights};
use rand::rngs::StdRng;
use rand::SeedableRng;


fn t(data: Vec<f32>, shape: Vec<usize>) -> Tensor {
    Tensor::from_f32(data, shape).unwrap()
}

const H: usize = 24;

/// A two-group layer in the transformers 5.x layout: text 8 experts × width 16, vision 8 × 8.
fn hf_layer(rng: &mut StdRng, p: &str) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    for (name, e, i) in [("text_moe", 8, 16), ("vision_moe", 8, 8)] {
        v.push((format!("{p}.{name}.gate.weight"), t(randn(rng, e * H, 0.5), vec![e, H])));
        v.push((format!("{p}.{name}.gate.moe_statics.e_score_correction_bias"), t(randn(rng, e, 0.05), vec![1, e])));
        v.push((format!("{p}.{name}.experts.gate_up_proj"), t(randn(rng, e * 2 * i * H, 0.3), vec![e, 2 * i, H])));
        v.push((format!("{p}.{name}.experts.down_proj"), t(randn(rng, e * H * i, 0.3), vec![e, H, i])));
    }
    for (n, s) in [("gate_proj", [16, H]), ("up_proj", [16, H]), ("down_proj", [H, 16])] {
        v.push((format!("{p}.shared_experts.{n}.weight"), t(randn(rng, 16 * H, 0.3), s.to_vec())));
    }
    v
}

fn groups() -> Vec<MoeConfig> {
    [16, 8].iter().map(|&i| MoeConfig { num_experts: 8, top_k: 2, moe_intermediate_size: i, moe_num_shared_experts: 1, moe_norm_min: 1e-12 }).collect()
}

#[test]
fn two_groups_fast_equals_slow_and_isolate_tokens() {
    let mut rng = StdRng::seed_from_u64(11);
    let p = "model.layers.1.mlp";
    let mut w = Weights::from_tensors(hf_layer(&mut rng, p));
    let moe = load_grouped_moe(&mut w, p, H, &groups(), false).unwrap();
    w.finish().unwrap();
    let x = randn(&mut rng, 9 * H, 1.0);
    let g = [0u8, 1, 1, 0, 1, 0, 0, 1, 1];
    let (fast, routing) = moe.forward(&x, Some(&g)).unwrap();
    let slow = moe.forward_slow(&x, Some(&g)).unwrap();
    let diff = fast.iter().zip(&slow).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "fast vs slow {diff}");
    assert_eq!(routing.len(), 2);
    assert_eq!(routing[0].tokens, vec![0, 3, 5, 6]);
    assert_eq!(routing[1].tokens, vec![1, 2, 4, 7, 8]);
    // A row's output depends only on its own group's experts: moving token 1 to the text group
    // changes row 1 and nothing else.
    let mut g2 = g;
    g2[1] = 0;
    let (moved, _) = moe.forward(&x, Some(&g2)).unwrap();
    for r in 0..9 {
        let same = moved[r * H..(r + 1) * H] == fast[r * H..(r + 1) * H];
        assert_eq!(same, r != 1, "row {r}");
    }
    // Bad group ids are errors.
    assert!(moe.forward(&x, Some(&[2u8; 9])).is_err());
    assert!(moe.forward(&x, Some(&[0u8; 3])).is_err());
}

#[test]
fn one_group_is_the_text_moe_on_every_token() {
    let mut rng = StdRng::seed_from_u64(12);
    let p = "model.layers.2.mlp";
    let e = 6;
    let mut tensors = vec![
        (format!("{p}.gate.weight"), t(randn(&mut rng, e * H, 0.5), vec![e, H])),
        (format!("{p}.gate.moe_statics.e_score_correction_bias"), t(randn(&mut rng, e, 0.05), vec![1, e])),
        (format!("{p}.experts.gate_up_proj"), t(randn(&mut rng, e * 32 * H, 0.3), vec![e, 32, H])),
        (format!("{p}.experts.down_proj"), t(randn(&mut rng, e * H * 16, 0.3), vec![e, H, 16])),
    ];
    for (n, s) in [("gate_proj", [16, H]), ("up_proj", [16, H]), ("down_proj", [H, 16])] {
        tensors.push((format!("{p}.shared_experts.{n}.weight"), t(randn(&mut rng, 16 * H, 0.3), s.to_vec())));
    }
    let m = MoeConfig { num_experts: e, top_k: 3, moe_intermediate_size: 16, moe_num_shared_experts: 1, moe_norm_min: 1e-12 };
    let mut w1 = Weights::from_tensors(tensors.clone());
    let unified = load_grouped_moe(&mut w1, p, H, std::slice::from_ref(&m), false).unwrap();
    w1.finish().unwrap();
    let mut w2 = Weights::from_tensors(tensors);
    let text = load_moe_block(&mut w2, p, H, &m, false).unwrap();
    w2.finish().unwrap();
    let x = randn(&mut rng, 7 * H, 1.0);
    // Modality no longer matters: every token is in group 0.
    let (a, ra) = unified.forward(&x, Some(&[0u8; 7])).unwrap();
    let (b, rb) = text.forward(&x).unwrap();
    assert_eq!(a, b);
    assert_eq!(ra[0].routing, rb);
}

#[test]
fn original_layout_loads_the_same_layer() {
    // The remote-code spelling of the same weights: transposed routers, a [2, e] bias, experts
    // 0..8 text and 8..16 vision, one tensor per projection.
    let mut rng = StdRng::seed_from_u64(13);
    let p = "model.layers.1.mlp";
    let hf = hf_layer(&mut rng, p);
    let get = |n: &str| hf.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_f32_vec()).unwrap();
    let mut orig: Vec<(String, Tensor)> = Vec::new();
    let mut bias = Vec::new();
    for (g, (name, i)) in [("text_moe", 16usize), ("vision_moe", 8)].into_iter().enumerate() {
        let r = get(&format!("{p}.{name}.gate.weight")); // [8, H]
        let mut rt = vec![0.0; 8 * H];
        for e in 0..8 {
            for c in 0..H {
                rt[c * 8 + e] = r[e * H + c];
            }
        }
        let key = if g == 0 { format!("{p}.gate.weight") } else { format!("{p}.gate.weight_1") };
        orig.push((key, t(rt, vec![H, 8])));
        bias.extend(get(&format!("{p}.{name}.gate.moe_statics.e_score_correction_bias")));
        let gu = get(&format!("{p}.{name}.experts.gate_up_proj"));
        let dn = get(&format!("{p}.{name}.experts.down_proj"));
        for e in 0..8 {
            let base = e * 2 * i * H;
            let x = g * 8 + e;
            orig.push((format!("{p}.experts.{x}.gate_proj.weight"), t(gu[base..base + i * H].to_vec(), vec![i, H])));
            orig.push((format!("{p}.experts.{x}.up_proj.weight"), t(gu[base + i * H..base + 2 * i * H].to_vec(), vec![i, H])));
            orig.push((format!("{p}.experts.{x}.down_proj.weight"), t(dn[e * H * i..(e + 1) * H * i].to_vec(), vec![H, i])));
        }
    }
    orig.push((format!("{p}.moe_statics.e_score_correction_bias"), t(bias, vec![2, 8])));
    orig.extend(hf.iter().filter(|(k, _)| k.contains("shared_experts")).cloned());
    let mut w1 = Weights::from_tensors(hf.clone());
    let a = load_grouped_moe(&mut w1, p, H, &groups(), false).unwrap();
    w1.finish().unwrap();
    let mut w2 = Weights::from_tensors(orig);
    let b = load_grouped_moe(&mut w2, p, H, &groups(), false).unwrap();
    w2.finish().unwrap();
    let x = randn(&mut rng, 5 * H, 1.0);
    let g = [1u8, 0, 1, 1, 0];
    assert_eq!(a.forward(&x, Some(&g)).unwrap(), b.forward(&x, Some(&g)).unwrap());
}

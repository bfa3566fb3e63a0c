//! Malformed VL configs, checkpoints and streams: each gives a typed error naming what is wrong,
//! never a panic (the VL counterpart of `tests/model/loader.rs`).

use std::path::Path;

use crate::common::*;
use ernie_runtime::infer::prefill::prefill;
use ernie_runtime::{Engine, Error, KvCache, Logits, MediaInput};
use serde_json::{json, Value};
use tokenizers_mm::{MediaItem, MediaKind, MediaTensor, StreamPrompt, TokenLayout};


fn load_err(dir: &Path) -> Error {
    match Engine::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

fn edit_config(dir: &Path, f: impl Fn(&mut Value)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn bad_vl_config_values_are_named() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("mrope sum", Box::new(|v| v["text_config"]["rope_parameters"]["mrope_section"] = json!([3, 3, 3])), "rope_parameters.mrope_section"),
        ("mrope h != w", Box::new(|v| v["text_config"]["rope_parameters"]["mrope_section"] = json!([4, 2, 2])), "rope_parameters.mrope_section"),
        ("three groups", Box::new(|v| v["text_config"]["moe_intermediate_size"] = json!([32, 16, 8])), "moe_intermediate_size"),
        ("moe_k too big", Box::new(|v| v["text_config"]["moe_k"] = json!(9)), "moe_k"),
        ("vision heads", Box::new(|v| v["vision_config"]["num_heads"] = json!(3)), "vision_config.num_heads"),
        ("temporal merge", Box::new(|v| v["vision_config"]["temporal_merge_size"] = json!(3)), "vision_config.temporal_merge_size"),
        ("vision act", Box::new(|v| v["vision_config"]["hidden_act"] = json!("relu")), "vision_config.hidden_act"),
        ("token id", Box::new(|v| v["image_token_id"] = json!(5000)), "image_token_id"),
        ("routing", Box::new(|v| v["text_config"]["moe_routing"] = json!("random")), "moe_routing"),
        ("text_config type", Box::new(|v| v["text_config"] = json!([1])), "text_config"),
    ];
    for (what, edit, key) in cases {
        let dir = copy_fixture("vl-moe-f32");
        edit_config(dir.path(), edit);
        match load_err(dir.path()) {
            Error::Config { key: k, reason } => assert_eq!(k, key, "{what}: {reason}"),
            e => panic!("{what}: wrong error: {e}"),
        }
    }
}

#[test]
fn differing_per_group_layer_ranges_are_refused_not_guessed() {
    let dir = copy_fixture("vl-moe-orig-f32");
    edit_config(dir.path(), |v| v["moe_layer_start_index"] = json!([1, 2]));
    match load_err(dir.path()) {
        Error::Config { key, reason } => assert!(key == "moe_layer_start_index" && reason.contains("dense fallback"), "{key}: {reason}"),
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn missing_vision_and_expert_tensors_are_all_listed() {
    let mut t = read_checkpoint(&fixture("vl-moe-f32"));
    t.remove("model.vision_tower.blocks.1.attn.qkv.bias");
    t.remove("model.resampler_model.after_norm.weight");
    t.remove("model.language_model.layers.2.mlp.vision_moe.experts.down_proj");
    let dir = tempdir();
    write_checkpoint(&fixture("vl-moe-f32"), dir.path(), &t);
    match load_err(dir.path()) {
        Error::TensorSet { missing, unused } => {
            assert_eq!(
                missing,
                vec![
                    "model.layers.2.mlp.vision_moe.experts.down_proj".to_string(),
                    "model.vision_tower.blocks.1.attn.qkv.bias".to_string(),
                    "model.resampler_model.after_norm.weight".to_string(),
                ]
            );
            assert!(unused.is_empty());
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn wrong_vision_shape_is_named() {
    let mut t = read_checkpoint(&fixture("vl-moe-f32"));
    let mut p = t["model.vision_tower.patch_embed.proj.weight"].clone();
    p.shape = vec![p.shape[1], p.shape[0]];
    t.insert("model.vision_tower.patch_embed.proj.weight".into(), p);
    let dir = tempdir();
    write_checkpoint(&fixture("vl-moe-f32"), dir.path(), &t);
    assert!(matches!(load_err(dir.path()), Error::TensorShape { name, .. } if name == "model.vision_tower.patch_embed.proj.weight"));
}

#[test]
fn truncated_and_bit_flipped_vl_checkpoints_never_panic() {
    let bytes = std::fs::read(fixture("vl-moe-f32").join("model.safetensors")).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let dir = copy_fixture("vl-moe-f32");
        std::fs::write(dir.path().join("model.safetensors"), &bytes[..cut]).unwrap();
        assert!(matches!(load_err(dir.path()), Error::Safetensors { .. } | Error::Io { .. }), "cut at {cut}");
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for i in (8..8 + header_len).step_by(97) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let dir = copy_fixture("vl-moe-f32");
        std::fs::write(dir.path().join("model.safetensors"), &b).unwrap();
        // Any outcome but a panic: a flipped byte may land in a tensor name, a shape or a number.
        let _ = Engine::load(dir.path());
    }
}

#[test]
fn streams_that_do_not_fit_the_checkpoint_are_errors() {
    let engine = Engine::load(&fixture("vl-moe-f32")).unwrap();
    let vision = engine.vision().unwrap();
    let item = |kind, grid: [usize; 3], rows: usize, layout| MediaItem {
        kind,
        source: "synthetic".into(),
        tensor: MediaTensor { shape: vec![rows, 588], data: vec![0.1; rows * 588], channels: 3 },
        grid_thw: Some(grid),
        layout,
        details: serde_json::Map::new(),
    };
    let run = |m: MediaItem| -> Error {
        let kind = m.kind;
        let prompt = StreamPrompt::user("x", usize::from(kind == MediaKind::Image), usize::from(kind == MediaKind::Video), 0);
        let stream = match engine.build_stream(&prompt, vec![m]) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut cache = KvCache::new(&engine.model.cfg, stream.input_ids.len()).unwrap();
        prefill(&engine.model, vision, &stream, &mut cache, Logits::Last, None).expect_err("must fail")
    };
    // Pixels that do not cover the grid.
    assert!(matches!(run(item(MediaKind::Image, [1, 4, 4], 15, TokenLayout::Grid { t: 1, h: 2, w: 2 })), Error::ShapeMismatch { .. }));
    // A grid that is not a multiple of the merge size.
    assert!(matches!(run(item(MediaKind::Image, [1, 3, 4], 12, TokenLayout::Grid { t: 1, h: 1, w: 2 })), Error::ShapeMismatch { .. }));
    // A stream reserving more tokens than the resampler gives (an odd frame count).
    let e = run(item(MediaKind::Video, [3, 2, 2], 12, TokenLayout::Grid { t: 2, h: 1, w: 1 }));
    assert!(matches!(&e, Error::Request(m) if m.contains("resampler")), "{e}");
    // Media on a text-only checkpoint.
    let text = Engine::load(&fixture("moe-f32")).unwrap();
    assert!(matches!(text.load_media(&[MediaInput::Image("x.png".into())]), Err(Error::Request(_))));
}

#[test]
fn released_28b_original_config_parses_to_the_spec_values() {
    // The original ERNIE-4.5-VL-28B-A3B-PT config keys (spec §3.1): list-valued MoE keys with
    // end indices past the last layer ([29, 28] for 28 layers), freq_allocation, im_patch_id.
    let v = json!({
        "model_type": "ernie4_5_moe_vl", "hidden_size": 2560, "intermediate_size": 12288, "num_hidden_layers": 28,
        "num_attention_heads": 20, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 103424, "rms_norm_eps": 1e-5,
        "rope_theta": 500000, "max_position_embeddings": 131072, "tie_word_embeddings": true, "use_bias": false,
        "moe_num_experts": [64, 64], "moe_intermediate_size": [1536, 512], "moe_k": 6, "moe_num_shared_experts": 2,
        "moe_layer_start_index": [1, 1], "moe_layer_end_index": [29, 28], "moe_layer_interval": 1, "freq_allocation": 20,
        "spatial_conv_size": 2, "temporal_conv_size": 2, "im_patch_id": 100295,
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
                          "spatial_merge_size": 2, "in_channels": 3, "hidden_act": "quick_gelu"}
    });
    let c = ernie_runtime::VlConfig::from_json(&v).unwrap();
    let t = &c.text;
    assert_eq!(t.mrope_section, Some(ernie_runtime::config::MropeSection { hw_pairs: 44, t_pairs: 20 }));
    assert_eq!(t.moe_groups.iter().map(|g| (g.num_experts, g.moe_intermediate_size, g.top_k)).collect::<Vec<_>>(), vec![(64, 1536, 6), (64, 512, 6)]);
    assert_eq!(t.mlp_layer_types[0], ernie_runtime::MlpKind::Dense);
    assert!(t.mlp_layer_types[1..].iter().all(|&k| k == ernie_runtime::MlpKind::Moe));
    assert_eq!((c.vision.hidden_size, c.vision.intermediate_size, c.vision.depth, c.vision.head_dim()), (1280, 5120, 32, 80));
    assert_eq!(c.tokens.image, 100295);
    assert_eq!(c.tokens.video, 100295, "the original format reuses the image placeholder for video");
}

#[test]
fn elastic_top_k_reaches_every_routing_group_and_expert_masks_are_refused() {
    use ernie_runtime::model::Mlp;
    use ernie_runtime::ElasticOptions;
    let engine = Engine::load_with(&fixture("vl-moe-f32"), &ElasticOptions { top_k: Some(1), ..Default::default() }).unwrap();
    let ks: Vec<usize> = engine
        .model
        .layers
        .iter()
        .filter_map(|l| if let Mlp::Grouped(g) = &l.mlp { Some(g.groups.iter().map(|b| b.router.top_k).collect::<Vec<_>>()) } else { None })
        .flatten()
        .collect();
    assert_eq!(ks, vec![1; 4], "2 sparse layers × 2 groups, each top-1");
    let masked = ElasticOptions { experts: Some("0-3".parse().unwrap()), ..Default::default() };
    match Engine::load_with(&fixture("vl-moe-f32"), &masked) {
        Err(Error::Unsupported { what, hint }) => assert!(what.contains("experts") && !hint.is_empty(), "{what}: {hint}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expert masks must be refused for routing groups"),
    }
}

//! ERNIE-4.5-VL against transformers (spec §3): vision-tower output, resampler output, prefill
//! logits for every prompt row, the 32-token greedy continuation and each decode step's logits,
//! for (a) one image, (b) two images, (c) a video — plus the original (remote-code) layout of the
//! same weights and the ERNIE 5.0 unified-routing variant. Fixtures and goldens:
//! `tests/reference/make_vl_reference.py` (transformers 5.24.0, torch 2.15.0, Pillow 13.0.0).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use ernie_runtime::infer::prefill::{prefill, PrefillTrace};
use ernie_runtime::{Engine, KvCache, Logits, MediaInput};
use safetensors::{Dtype, SafeTensors};
use serde_json::Map;
use tokenizers_mm::{MediaItem, MediaKind, MediaTensor, PositionRule, StreamPrompt, TokenLayout, TokenStream};

/// Vision tower / resampler rows: f32 on both sides, a few hundred MACs per value, LayerNorms
/// rescaling; observed ≤ 1e-5.
const FEATURE_ATOL: f32 = 1e-4;

/// Logits: f32 on both sides, only summation order differs. The fixture's weights are scaled up
/// so greedy choices are well separated (logits reach ±37, vs ≤ 10 in the text fixtures), so the
/// bound is relative to the largest reference logit: 1e-5 of it (text parity's 1e-4 at ±10).
/// Observed: ≈ 5e-6 of it.
const LOGITS_RTOL: f32 = 1e-5;

fn logits_tol(reference: &[f32]) -> f32 {
    LOGITS_RTOL * reference.iter().fold(10.0f32, |m, v| m.max(v.abs()))
}

/// A reference file's tensors as f32 (floats) or i64 (ids), by name.
struct Golden {
    f: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    i: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
}

impl Golden {
    fn open(path: &Path) -> Golden {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (mut f, mut i) = (BTreeMap::new(), BTreeMap::new());
        for (name, v) in st.tensors() {
            let shape = v.shape().to_vec();
            match v.dtype() {
                Dtype::F32 => {
                    f.insert(name.to_string(), (shape, v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()));
                }
                Dtype::I64 => {
                    i.insert(name.to_string(), (shape, v.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()));
                }
                d => panic!("{name}: unexpected dtype {d:?}"),
            }
        }
        Golden { f, i }
    }

    fn f(&self, name: &str) -> &[f32] {
        &self.f.get(name).unwrap_or_else(|| panic!("golden has no {name}")).1
    }

    fn ids(&self, name: &str) -> Vec<u32> {
        self.i[name].1.iter().map(|&v| v as u32).collect()
    }

    /// `position_ids` `[3, T]` as one `(t, h, w)` per token.
    fn positions(&self) -> Vec<[u32; 3]> {
        let p = self.ids("position_ids");
        let n = p.len() / 3;
        (0..n).map(|i| [p[i], p[n + i], p[2 * n + i]]).collect()
    }

    fn grids(&self) -> Vec<[usize; 3]> {
        self.i["grid_thw"].1.chunks_exact(3).map(|g| [g[0] as usize, g[1] as usize, g[2] as usize]).collect()
    }
}


fn golden(fixture_name: &str, case: &str) -> Golden {
    Golden::open(&fixture(fixture_name).join("reference").join(format!("{case}.safetensors")))
}

/// The media items of a case: images through the real preprocessing (their pixels must equal the
/// reference's), the video from the reference pixels (its decoding is checked separately).
fn media(engine: &Engine, case: &str, g: &Golden) -> Vec<MediaItem> {
    match case {
        "image" | "image_unified" => engine.load_media(&[MediaInput::Image(repo_root().join("assets/media/astronaut_rgb_512x512.png"))]).unwrap(),
        "two_images" => engine
            .load_media(&[
                MediaInput::Image(repo_root().join("assets/media/astronaut_rgb_512x512.png")),
                MediaInput::Image(repo_root().join("assets/media/camera_gray8_512x512.png")),
            ])
            .unwrap(),
        "video" => {
            let [t, h, w] = g.grids()[0];
            let data = g.f("pixel_values_videos").to_vec();
            vec![MediaItem {
                kind: MediaKind::Video,
                source: "testsrc2 (reference pixels)".into(),
                tensor: MediaTensor { shape: vec![t * h * w, 588], data, channels: 3 },
                grid_thw: Some([t, h, w]),
                layout: TokenLayout::Grid { t: t / 2, h: h / 2, w: w / 2 },
                details: Map::new(),
            }]
        }
        other => panic!("unknown case {other}"),
    }
}

fn prompt(case: &str) -> StreamPrompt {
    match case {
        "image" | "image_unified" => StreamPrompt::user("Describe this image.", 1, 0, 0),
        "two_images" => StreamPrompt::user("What differs between these pictures?", 2, 0, 0),
        "video" => StreamPrompt::user("What happens in this video?", 0, 1, 0),
        other => panic!("unknown case {other}"),
    }
}

fn stream_for(engine: &Engine, case: &str, g: &Golden) -> TokenStream {
    let items = media(engine, case, g);
    if case != "video" {
        let want = g.f("pixel_values");
        let got: Vec<f32> = items.iter().flat_map(|m| m.tensor.data.iter().copied()).collect();
        assert_eq!(got.len(), want.len(), "{case}: pixel count");
        let d = max_abs_diff(&got, want);
        assert!(d <= 1e-6, "{case}: pixel values differ from the HF processor by {d}");
    }
    engine.build_stream(&prompt(case), items).unwrap()
}

/// Runs one case end to end and checks every recorded stage: checkpoint `fixture_name`, golden
/// `golden_fixture/reference/golden_case`.
fn check_case(fixture_name: &str, case: &str, golden_fixture: &str, golden_case: &str) {
    let engine = Engine::load(&fixture(fixture_name)).unwrap();
    let g = golden(golden_fixture, golden_case);
    let stream = stream_for(&engine, case, &g);
    let label = format!("{fixture_name}/{case}");

    assert_eq!(stream.input_ids, g.ids("input_ids"), "{label}: input ids");
    let n = stream.input_ids.len();
    assert_eq!(stream.positions, g.positions(), "{label}: 3-D positions");
    let moe_types = g.ids("moe_mm_token_type_ids");
    let vision_rows: Vec<bool> = stream.modality.iter().map(|&m| m != 0).collect();
    assert_eq!(vision_rows, moe_types.iter().map(|&m| m != 0).collect::<Vec<_>>(), "{label}: routing modality");

    let vision = engine.vision().unwrap();
    let mut cache = KvCache::new(&engine.model.cfg, n + 32).unwrap();
    let mut keep = PrefillTrace::default();
    let logits = prefill(&engine.model, vision, &stream, &mut cache, Logits::All, Some(&mut keep)).unwrap(); // [T, v]

    let tower: Vec<f32> = keep.vision_out.concat();
    let d_tower = max_abs_diff(&tower, g.f("vision_tower_out"));
    let resampled: Vec<f32> = keep.resampler_out.concat();
    let d_res = max_abs_diff(&resampled, g.f("resampler_out"));
    let d_logits = max_abs_diff(&logits, g.f("logits"));
    eprintln!("{label}: max |Δ| vision tower {d_tower:.2e}, resampler {d_res:.2e}, prefill logits {d_logits:.2e} ({n} rows)");
    assert!(d_tower <= FEATURE_ATOL, "{label}: vision tower diff {d_tower}");
    assert!(d_res <= FEATURE_ATOL, "{label}: resampler diff {d_res}");
    let tol = logits_tol(g.f("logits"));
    assert!(d_logits <= tol, "{label}: prefill logits diff {d_logits} > {tol}");

    // Greedy decode through the cache: each step's logits and the 32 ids (rope delta in decode).
    let want_ids = g.ids("greedy_ids");
    let want_steps = g.f("decode_logits"); // [32, v]
    let v = engine.model.cfg.vocab_size;
    let mut step_logits = logits[(n - 1) * v..].to_vec();
    let mut ids = Vec::new();
    let mut d_decode = 0.0f32;
    for s in 0..want_ids.len() {
        d_decode = d_decode.max(max_abs_diff(&step_logits, &want_steps[s * v..(s + 1) * v]));
        let next = argmax(&step_logits);
        ids.push(next);
        step_logits = engine.model.forward(&[next], &mut cache, Logits::Last, None).unwrap();
    }
    eprintln!("{label}: max |Δ| decode logits {d_decode:.2e} over {} steps", want_ids.len());
    let tol = logits_tol(want_steps);
    assert!(d_decode <= tol, "{label}: decode logits diff {d_decode} > {tol}");
    assert_eq!(ids, want_ids, "{label}: greedy ids");
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0 as u32
}

#[test]
fn one_image_matches_transformers() {
    check_case("vl-moe-f32", "image", "vl-moe-f32", "image");
}

#[test]
fn original_remote_code_layout_matches_the_same_reference() {
    // The same weights saved under the original names (vision_model.*, spatial_linear.0,
    // experts 0..7 text / 8..15 vision, transposed gate.weight / gate.weight_1, one [2, e]
    // bias) and an original-style config (list-valued MoE keys, freq_allocation, im_patch_id).
    check_case("vl-moe-orig-f32", "image", "vl-moe-f32", "image");
}

#[test]
fn unified_routing_matches_transformers_with_every_token_on_one_router() {
    // ERNIE 5.0's one routing group: the reference is transformers' VL model run without
    // moe_mm_token_type_ids, which sends image tokens through the text experts as well.
    check_case("vl-unified-f32", "image_unified", "vl-unified-f32", "image_unified");
}

#[test]
fn two_images_match_transformers() {
    check_case("vl-moe-f32", "two_images", "vl-moe-f32", "two_images");
}

#[test]
fn video_matches_transformers_with_the_original_position_rule() {
    check_case("vl-moe-f32", "video", "vl-moe-f32", "video");
}

#[test]
fn video_hf_position_rule_is_reproducible_too() {
    // transformers 5.24 advances by max(H', W') after a video (ignoring T'); the runtime defaults
    // to the original / vLLM rule but can follow HF's.
    let mut engine = Engine::load(&fixture("vl-moe-f32")).unwrap();
    engine.set_position_rule(PositionRule::Ernie45VlHf);
    let g = golden("vl-moe-f32", "video");
    let hf = golden("vl-moe-f32", "video_hf_rule");
    let stream = engine.build_stream(&prompt("video"), media(&engine, "video", &g)).unwrap();
    let n = stream.input_ids.len();
    assert_eq!(stream.positions, hf.positions(), "HF-rule positions");
    assert_ne!(stream.positions, g.positions(), "the two rules must differ for this video");
    let mut cache = KvCache::new(&engine.model.cfg, n).unwrap();
    let logits = prefill(&engine.model, engine.vision().unwrap(), &stream, &mut cache, Logits::All, None).unwrap();
    let d = max_abs_diff(&logits, hf.f("logits"));
    let tol = logits_tol(hf.f("logits"));
    assert!(d <= tol, "HF-rule logits diff {d} > {tol}");
}

#[test]
fn generate_stream_reproduces_greedy_ids() {
    // The Engine path the `caption` binary uses: same ids as the reference.
    let engine = Engine::load(&fixture("vl-moe-f32")).unwrap();
    let g = golden("vl-moe-f32", "image");
    let stream = stream_for(&engine, "image", &g);
    let req = ernie_runtime::GenerateRequest { sampling: Default::default(), max_new_tokens: 32 };
    let out = engine.generate_stream(&stream, &req, &mut |_| {}, None).unwrap();
    assert_eq!(out.token_ids, g.ids("greedy_ids"));
}

#[cfg(feature = "ffmpeg")]
#[test]
fn video_file_decodes_to_the_reference_frames() {
    // The whole path from the file: ffmpeg decode, HF frame sampling (15 frames → 16, the last
    // repeated), resize, normalise, patchify.
    let engine = Engine::load(&fixture("vl-moe-f32")).unwrap();
    let g = golden("vl-moe-f32", "video");
    let items = engine.load_media(&[MediaInput::Video(repo_root().join("assets/media/testsrc2_256x144_vp9_opus_15frames.webm"))]).unwrap();
    assert_eq!(items[0].grid_thw, Some(g.grids()[0]), "video grid");
    let want = g.f("pixel_values_videos");
    let got = &items[0].tensor.data;
    let d = max_abs_diff(got, want);
    let mean = got.iter().zip(want).map(|(a, b)| (a - b).abs()).sum::<f32>() / got.len() as f32;
    eprintln!("video pixels: max |Δ| {d:.3e}, mean |Δ| {mean:.3e}");
    // Observed: a few values one 8-bit level apart (1/255/std ≈ 0.015), mean 1.1e-5.
    assert!(d <= 0.031 && mean <= 1e-4, "video pixels: max {d}, mean {mean}");
    let stream = engine.build_stream(&prompt("video"), items).unwrap();
    assert_eq!(stream.input_ids, g.ids("input_ids"));
    let req = ernie_runtime::GenerateRequest { sampling: Default::default(), max_new_tokens: 32 };
    let out = engine.generate_stream(&stream, &req, &mut |_| {}, None).unwrap();
    assert_eq!(out.token_ids, g.ids("greedy_ids"), "greedy ids from the video file");
}

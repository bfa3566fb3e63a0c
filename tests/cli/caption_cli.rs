//! `ernie caption` end to end: the JSON output reproduces transformers' greedy ids, routing stats
//! and the heatmap are written, the demo checkpoint works from an empty cache, and every media
//! file we can find — bundled, the shared corpus, truncated and wrong-kind copies — gives a
//! caption or one clear error line, never a panic.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;



fn greedy_ids(case: &str) -> Vec<u32> {
    let bytes = std::fs::read(fixture("vl-moe-f32").join("reference").join(format!("{case}.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("greedy_ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
}

#[test]
fn caption_json_reproduces_transformers_greedy_ids_and_writes_routing_stats() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("routing.json");
    let out = ernie()
        .args(["caption", "--model"])
        .arg(fixture("vl-moe-f32"))
        .arg("--image")
        .arg(repo_root().join("assets/media/astronaut_rgb_512x512.png"))
        .arg("--image")
        .arg(repo_root().join("assets/media/camera_gray8_512x512.png"))
        .args(["--prompt", "What differs between these pictures?", "--max-tokens", "32", "--format", "json", "--routing-stats"])
        .arg(&stats)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u32s(&v["token_ids"]), greedy_ids("two_images"));
    assert!(v["text"].is_string());
    // The timings scripts/bench-caption.sh reads: 117 prompt tokens (counted below), and the first
    // token comes after load + preprocess + prefill.
    assert_eq!(v["prompt_tokens"], 117);
    let t = |k: &str| v["timings"][k].as_f64().unwrap_or_else(|| panic!("timings.{k} in {v}"));
    assert!(t("prefill_secs") > 0.0 && t("first_token_secs") >= t("preprocess_secs") + t("prefill_secs"), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prefill") && stderr.contains("tok/s"), "timing on stderr: {stderr}");

    // Load by modality: 117 prompt tokens = 45 text + 2 × (36 placeholders + start + end); the 32
    // generated tokens count as text (the last one is never fed back: 31 decode forwards).
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(s["layers"], serde_json::json!([1, 2]));
    assert_eq!(s["modalities"]["image"]["tokens"], 76);
    assert_eq!(s["modalities"]["text"]["tokens"], 41 + 31);
    for m in ["text", "image"] {
        let load = &s["modalities"][m]["load"];
        let per_layer: Vec<u64> = load.as_array().unwrap().iter().map(|l| l.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).sum()).collect();
        let tokens = s["modalities"][m]["tokens"].as_u64().unwrap();
        assert!(per_layer.iter().all(|&n| n == 2 * tokens), "{m}: every token picks top-2 in each layer: {per_layer:?}");
    }
    let png = image::open(stats.with_extension("png")).unwrap();
    assert!(png.width() > 50 && png.height() > 50);
}

/// Exit status of a run that must not crash: success, or failure with one `error:` line.
fn assert_clean(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panic: {stderr}");
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{what}: exit {:?}: {stderr}", out.status);
        assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{what}: no error line: {stderr}");
    }
}

fn caption(kind: &str, file: &Path) -> Output {
    ernie().args(["caption", "--model"]).arg(fixture("vl-moe-f32")).arg(kind).arg(file).args(["--max-tokens", "4"]).output().unwrap()
}

#[test]
fn every_media_file_captions_or_fails_cleanly() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("assets/media")).unwrap().map(|e| e.unwrap().path()).collect();
    let corpus = std::env::var_os("ERNIE_MEDIA_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/media"));
    for sub in ["images", "video", "audio"] {
        if let Ok(rd) = std::fs::read_dir(corpus.join(sub)) {
            files.extend(rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut ok = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let trunc = tmp.path().join(format!("trunc-{}", f.file_name().unwrap().to_string_lossy()));
        std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
        for path in [f.as_path(), trunc.as_path()] {
            // Each file as an image and as a video: the wrong kind must fail cleanly too.
            for kind in ["--image", "--video"] {
                let out = caption(kind, path);
                assert_clean(&out, &format!("{kind} {}", path.display()));
                ok += usize::from(out.status.success());
            }
        }
    }
    // The bundled images and (with the ffmpeg feature) the bundled video must caption.
    let min_ok = if cfg!(feature = "ffmpeg") { 4 } else { 3 };
    assert!(ok >= min_ok, "only {ok} of {} runs captioned", files.len() * 4);
}

#[test]
fn bad_arguments_and_text_checkpoints_fail_cleanly() {
    let missing = ernie().args(["caption", "--model"]).arg(fixture("vl-moe-f32")).args(["--image", "/nonexistent.png"]).output().unwrap();
    assert_clean(&missing, "missing file");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "the cause is said once: {stderr}");
    let text = ernie().args(["caption", "--model"]).arg(fixture("moe-f32")).args(["--prompt", "hi"]).output().unwrap();
    assert_clean(&text, "text checkpoint");
    assert!(String::from_utf8_lossy(&text.stderr).contains("text checkpoint"));
    let nodir = ernie().args(["caption", "--model"]).arg(fixture("vl-moe-f32")).args(["--prompt", "hi", "--routing-stats", "/nonexistent-dir/r.json"]).output().unwrap();
    assert_clean(&nodir, "routing stats folder");
    assert!(nodir.stdout.is_empty(), "fails before generating anything");
    let video_as_image = ernie().args(["caption", "--model"]).arg(fixture("vl-moe-f32")).arg("--image").arg(repo_root().join("assets/media/testsrc2_256x144_vp9_opus_15frames.webm")).output().unwrap();
    assert_clean(&video_as_image, "video as image");
    assert!(String::from_utf8_lossy(&video_as_image.stderr).contains("--video"));
    let negative = ernie().args(["caption", "--model"]).arg(fixture("vl-moe-f32")).args(["--prompt", "hi", "--temperature", "-1"]).output().unwrap();
    assert_clean(&negative, "negative temperature");
    assert!(String::from_utf8_lossy(&negative.stderr).contains("temperature -1"), "{}", String::from_utf8_lossy(&negative.stderr));
}

#[test]
fn routing_stats_path_ending_in_png_keeps_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("heat.png");
    let out = ernie()
        .args(["caption", "--model"])
        .arg(fixture("vl-moe-f32"))
        .arg("--image")
        .arg(repo_root().join("assets/media/camera_gray8_512x512.png"))
        .args(["--max-tokens", "3", "--routing-stats"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(image::open(&png).is_ok(), "the heatmap is a PNG");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("heat.json")).unwrap()).unwrap();
    assert_eq!(json["layers"], serde_json::json!([1, 2]));
}

#[test]
fn demo_checkpoint_is_created_on_first_use_and_captions() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        ernie()
            .env("ERNIE_CACHE_DIR", cache.path())
            .args(["caption", "--image"])
            .arg(repo_root().join("assets/media/coffee_progressive_600x400.jpg"))
            .args(["--max-tokens", "6", "--format", "json"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("created the demo checkpoint") && stderr.contains("demo"), "{stderr}");
    let second = run();
    assert!(second.status.success());
    let stderr2 = String::from_utf8_lossy(&second.stderr);
    assert!(!stderr2.contains("created the demo checkpoint"), "the second run reuses the cache: {stderr2}");
    assert!(stderr2.contains("random"), "the demo notice is printed: {stderr2}");
    // Deterministic weights and greedy decoding: the same ids and text both times (the JSON's
    // `timings` differ from run to run).
    let ids = |o: &Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (u32s(&v["token_ids"]), v["text"].clone())
    };
    assert_eq!(ids(&first), ids(&second));
    assert_eq!(ids(&first).0.len(), 6);
}

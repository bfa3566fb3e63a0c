//! `ernie inspect` end to end against the HF ERNIE-4.5-VL processor goldens
//! (`tests/fixtures/media_goldens.json`, from `tests/reference/make_media_goldens.py`):
//! every corpus image's sizes, grid and token count equal the reference; its statistics and
//! first values match (bit-exact through libjpeg-turbo, within the fallback tolerance for
//! JPEGs decoded by the `image` crate); a prompt's ids equal the HF processor's; bad inputs
//! fail with one clear line naming the file.

use std::path::{Path, PathBuf};

use crate::common::{ernie, repo_root};

use serde_json::Value as Json;



fn model() -> PathBuf {
    repo_root().join("tests/fixtures/vl-preprocess")
}

fn media_dir() -> PathBuf {
    std::env::var_os("ERNIE_MEDIA_DIR").map_or_else(|| repo_root().join("../shared/media"), PathBuf::from)
}

fn goldens() -> Json {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join("tests/fixtures/media_goldens.json")).unwrap()).unwrap()
}

fn inspect(args: &[&str], images: &[PathBuf]) -> std::process::Output {
    let mut cmd = ernie();
    cmd.arg("inspect").arg("--model").arg(model()).args(["--format", "json"]).args(args);
    for i in images {
        cmd.arg("--image").arg(i);
    }
    cmd.output().unwrap()
}

fn inspect_ok(args: &[&str], images: &[PathBuf]) -> Json {
    let out = inspect(args, images);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Levels of 255 a JPEG may differ by when decoded by zune-jpeg instead of libjpeg-turbo
/// (measured: 4), plus one of margin.
const FALLBACK_JPEG_LEVELS: f64 = 5.0;
const MIN_STD: f64 = 0.26130258; // smallest CLIP std: converts levels to normalised units

#[test]
fn inspect_reports_the_reference_sizes_for_every_corpus_image() {
    let g = goldens();
    for alpha in ["composite", "drop"] {
        let cases: Vec<&Json> = g["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("file").is_some())
            .filter(|c| c["alpha"] == alpha)
            .collect();
        let files: Vec<PathBuf> = cases.iter().map(|c| media_dir().join(c["file"].as_str().unwrap())).collect();
        let report = inspect_ok(&["--alpha", alpha], &files);
        let segments: Vec<&Json> = report["segments"].as_array().unwrap().iter().filter(|s| s["kind"] == "image").collect();
        assert_eq!(segments.len(), cases.len());
        for (case, seg) in cases.iter().zip(segments) {
            let name = case["name"].as_str().unwrap();
            let d = &case["decoded"];
            assert_eq!(seg["source_size"], serde_json::json!([d["height"], d["width"]]), "{name}");
            let r = &case["resized"];
            assert_eq!(seg["resized"], serde_json::json!([r["height"], r["width"]]), "{name}");
            assert_eq!(seg["grid_thw"], case["grid_thw"], "{name}");
            assert_eq!(seg["n_tokens"], case["n_tokens"], "{name}");
            assert_eq!(seg["tensor_shape"], case["pixel_values"]["shape"], "{name}");
            assert_eq!(seg["exif_orientation"], case["exif_orientation"], "{name}");
            let exact = seg["format"] != "jpeg" || seg["decoder"] == "libjpeg-turbo";
            let tol = if exact { 1e-6 } else { FALLBACK_JPEG_LEVELS / 255.0 / MIN_STD };
            let close = |a: &Json, b: &Json, what: &str| {
                for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    assert!((x - y).abs() <= tol, "{name}: {what} {x} vs reference {y} (tolerance {tol})");
                }
            };
            close(&seg["channel_mean"], &case["pixel_values"]["channel_mean"], "channel mean");
            close(&seg["channel_std"], &case["pixel_values"]["channel_std"], "channel std");
            close(&seg["first_values"], &case["pixel_values"]["first8"], "first values");
        }
    }
}

fn write_png(path: &Path, h: u32, w: u32) {
    // The generator's synthetic pattern, losslessly.
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (x, y) = (u64::from(x), u64::from(y));
        let v = |c: u64| ((7 * x + 13 * y + 101 * c + 3 * ((x * y) % 31)) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    img.save(path).unwrap();
}

#[test]
fn inspect_ids_equal_the_hf_processor_for_a_marked_prompt() {
    let case = goldens()["stream"].as_array().unwrap().iter().find(|c| c["name"] == "one_image_after_text").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("dog.png");
    write_png(&png, case["images"][0][0].as_u64().unwrap() as u32, case["images"][0][1].as_u64().unwrap() as u32);
    for rule in ["ernie45-vl", "ernie45-vl-hf", "uni-rope"] {
        let report = inspect_ok(&["--prompt", "What kind of dog is this?<image>", "--positions", rule], std::slice::from_ref(&png));
        let mut ids = Vec::new();
        for s in report["segments"].as_array().unwrap() {
            match s["kind"].as_str().unwrap() {
                "text" => ids.extend(s["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap())),
                _ => ids.extend(std::iter::repeat_n(s["placeholder_id"].as_u64().unwrap(), s["n_tokens"].as_u64().unwrap() as usize)),
            }
        }
        let want: Vec<u64> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, want);
        let n = want.len() as i64;
        let next = report["next_position"].as_i64().unwrap();
        if rule == "uni-rope" {
            assert_eq!(next, n);
        } else {
            assert_eq!(next - n, case["rope_delta_hf"].as_i64().unwrap(), "{rule}");
        }
    }
}

#[test]
fn inspect_errors_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let strip = dir.path().join("strip_1000x1.png");
    write_png(&strip, 1000, 1);
    let cases: Vec<(Vec<&str>, Vec<PathBuf>, &str)> = vec![
        (vec![], vec![strip.clone()], "aspect ratio"),
        (vec![], vec![dir.path().join("missing.png")], "missing.png"),
        (vec!["--prompt", "<image><image>"], vec![media_dir().join("images/chelsea_tiny_12x8.gif")], "more <image> markers"),
        (vec!["--max-image-pixels", "100"], vec![media_dir().join("images/astronaut_rgb_512x512.png")], "decoded pixels"),
    ];
    for (args, images, needle) in cases {
        let out = inspect(&args, &images);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "stderr {err:?} lacks {needle:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let text = std::fs::write(dir.path().join("notes.png"), b"plain text").map(|_| dir.path().join("notes.png")).unwrap();
    let out = inspect(&[], &[text]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("notes.png"));
}

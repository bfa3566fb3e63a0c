//! The built-in ERNIE 5.0 demo checkpoint through the binary: `ernie generate --output x.png` /
//! `x.wav` and `ernie caption --audio` without `--model` create it once in the cache directory,
//! reuse it, and write a valid PNG of the schedule's size / a 24 kHz WAV of the requested length /
//! a caption; same-seed runs are byte-identical.

use std::path::Path;
use std::process::Output;

use crate::common::*;

/// The demo's image: the final 16×16 grid through the 8× decoder.
const DEMO_IMAGE_SIDE: u32 = 128;
/// Mimi's output rate and samples per 12.5 Hz frame.
const SAMPLE_RATE: u32 = 24_000;
const SAMPLES_PER_FRAME: usize = 1920;

fn run(cache: &Path, args: &[&str], out: Option<&Path>) -> Output {
    let mut cmd = ernie();
    cmd.env("ERNIE_CACHE_DIR", cache).args(args);
    if let Some(out) = out {
        cmd.arg("--output").arg(out);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (channels, sample rate, bits per sample, data bytes) of a canonical 44-byte-header WAV.
fn wav_header(bytes: &[u8]) -> (u16, u32, u16, usize) {
    assert!(bytes.len() >= 44 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE", "not a WAV");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    assert_eq!(&bytes[36..40], b"data");
    (u16_at(22), u32_at(24), u16_at(34), u32_at(40) as usize)
}

#[test]
fn image_without_model_creates_the_demo_once_and_is_deterministic() {
    let cache = tempdir();
    let (a, b) = (cache.path().join("a.png"), cache.path().join("b.png"));
    let prompt = ["generate", "--prompt", "A red fox in the snow.", "--seed", "3"];
    let first = run(cache.path(), &prompt, Some(&a));
    assert!(first.status.success(), "{}", stderr(&first));
    let err = stderr(&first);
    assert!(err.contains("created the ERNIE 5.0 demo checkpoint"), "{err}");
    assert!(err.contains("random") && err.contains("--model"), "the notice says what runs: {err}");
    let second = run(cache.path(), &prompt, Some(&b));
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(!stderr(&second).contains("created"), "the second run reuses the cache: {}", stderr(&second));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, same PNG bytes");
    let img = image::open(&a).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (DEMO_IMAGE_SIDE, DEMO_IMAGE_SIDE));
    let first_px = img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| p != first_px), "the decoder output is not a flat image");
    // The demo folder and the two PNGs: no temp folders left.
    let names: Vec<String> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| !n.ends_with(".png")).collect::<Vec<_>>(), vec!["ernie5-demo-v1"], "{names:?}");
}

#[test]
fn image_flags_left_out_take_the_image_defaults() {
    let cache = tempdir();
    let png = |name: &str, extra: &[&str]| {
        let path = cache.path().join(name);
        let mut args = vec!["generate", "--prompt", "A cat.", "--seed", "5"];
        args.extend_from_slice(extra);
        let out = run(cache.path(), &args, Some(&path));
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(path).unwrap()
    };
    let default = png("default.png", &[]);
    assert_eq!(default, png("explicit.png", &["--temperature", "1", "--top-p", "0.97"]), "defaults = (1, 0.97)");
    assert_ne!(default, png("greedy.png", &["--temperature", "0"]), "a given flag wins");
}

#[test]
fn speech_without_model_is_a_24khz_wav_of_the_requested_length() {
    let cache = tempdir();
    let (a, b) = (cache.path().join("a.wav"), cache.path().join("b.wav"));
    let args = ["generate", "--prompt", "Say hello.", "--max-seconds", "2", "--temperature", "1", "--seed", "9", "--format", "json"];
    let first = run(cache.path(), &args, Some(&a));
    assert!(first.status.success(), "{}", stderr(&first));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let codes = v["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 4, "the demo's 4 code levels");
    // The end-of-audio class has a zero row: random weights run to --max-seconds (2 s = 25 frames).
    let frames = codes[0].as_array().unwrap().len();
    assert_eq!(frames, 25);
    let bytes = std::fs::read(&a).unwrap();
    let (channels, rate, bits, data) = wav_header(&bytes);
    assert_eq!((channels, rate, bits), (1, SAMPLE_RATE, 32));
    assert_eq!(data, frames * SAMPLES_PER_FRAME * 4, "one 80 ms frame of f32 samples per code frame");
    assert_eq!(v["samples"].as_u64(), Some((frames * SAMPLES_PER_FRAME) as u64));
    let second = run(cache.path(), &args, Some(&b));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(bytes, std::fs::read(&b).unwrap(), "same seed, same WAV bytes");
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn caption_audio_without_model_captions_the_bundled_clip() {
    let cache = tempdir();
    let clip = repo_root().join("assets/media/chirp_8k_f32_mono.wav");
    let caption = || {
        let out = ernie()
            .env("ERNIE_CACHE_DIR", cache.path())
            .args(["caption", "--audio"])
            .arg(&clip)
            .args(["--max-tokens", "8", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let first = caption();
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(!v["token_ids"].as_array().unwrap().is_empty(), "{v}");
    assert!(stderr(&first).contains("ERNIE 5.0 demo"), "{}", stderr(&first));
    // 2.0 s at 12.5 frames/s: 25 frames of codes in the prompt.
    assert!(stderr(&first).contains("audio: 25 frames"), "{}", stderr(&first));
    assert_eq!(first.stdout, caption().stdout, "greedy and seeded: the same caption");
}

#[test]
fn text_generation_still_needs_a_model() {
    let cache = tempdir();
    let out = run(cache.path(), &["generate", "--prompt", "hi"], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error:") && err.contains("--model"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "no demo was written");
}

#[test]
fn inspect_audio_shows_the_codec_codes_the_model_takes_in() {
    let cache = tempdir();
    let (dir, _) = ernie_runtime::tools::demo::ensure_ernie5_demo_checkpoint(cache.path()).unwrap();
    let clip = repo_root().join("assets/media/chirp_8k_f32_mono.wav");
    let out = ernie().arg("inspect").arg("--model").arg(&dir).arg("--audio").arg(&clip).args(["--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["audio_codes"]["clips"][0];
    assert_eq!((c["frames"].as_u64(), c["levels"].as_u64(), c["stream_tokens"].as_u64()), (Some(25), Some(4), Some(27)), "{c}");
    let codec = ernie_runtime::model::audio_codec::MimiCodec::load(&dir.join("audio_codec")).unwrap();
    let want = ernie_runtime::tools::codec::encode_audio_file(&codec, &clip, Some(4)).unwrap().codes;
    let head: Vec<Vec<u32>> = c["codes_head"].as_array().unwrap().iter().map(u32s).collect();
    assert_eq!(head, want.iter().map(|l| l[..8].to_vec()).collect::<Vec<_>>());
}

//! Audio and video preprocessing against the transformers reference.
//!
//! Goldens: `tests/fixtures/av_goldens.json` and `tests/fixtures/av/` at the workspace root,
//! written by `tests/reference/make_audio_video_goldens.py` (transformers 5.24.0, torch 2.15.0,
//! torchcodec 0.17.0 on Debian's FFmpeg 5.1, PyAV 18.1.0, Pillow 13.0.0). Corpus:
//! `../shared/media/` beside the repository (override with `ERNIE_MEDIA_DIR`).
//!
//! What must hold:
//! - log-mel (`WhisperFeatureExtractor`, torch path) from the *same* f32 waveform: every value
//!   within [`MEL_ATOL`]; shapes equal (80 and 128 bins, short clips, 30 s padding);
//! - the corpus FLAC decodes to exactly PyAV's int16 samples (checksums), so its mel is compared
//!   the same way;
//! - every corpus audio file, the edge-case WAVs included: sample rate and channel count equal to
//!   PyAV's, sample count equal (lossless) or within two codec frames (lossy), mono RMS within 2 %;
//!   the files FFmpeg refuses are refused too (except big-endian RIFX, which we decode);
//! - video (with `ffmpeg`): frame count, fps, displayed size, frame indices, timestamp strings,
//!   `video_grid_thw`, resized size and token count equal to the processor's (also with `fps=2`);
//!   decoded frames (8×8 thumbnails, rotation applied) within [`THUMB_ATOL`] levels;
//! - `sample_frames` on a grid of synthetic metadata: indices and timestamp strings equal;
//! - the GIF fixture (no ffmpeg needed): same as a video file;
//! - the timestamp overlay against Pillow's: within the `OVERLAY_*` bounds.

mod common;

use common::{media_dir, root};
use std::path::Path;

use base64::Engine as _;
use serde_json::Value as Json;
use tokenizers_mm::audio::{decode_audio_file, MelConfig, MelExtractor};
use tokenizers_mm::video::{
    draw_timestamp, format_timestamp, load_video, sample_frames, SamplingConfig, VideoConfig,
};
use tokenizers_mm::Limits;

/// Largest |Δ| of a normalised log-mel value (`(log10(power) + 4) / 4`). The reference runs its
/// STFT and filter matmul in f32, we run f64: measured max 1.1e-5 on the goldens (values span
/// about [-1.5, 1.5]); 2e-4 is ~1/5000 of a decade of power.
const MEL_ATOL: f32 = 2e-4;
/// Decoded-frame thumbnails (8×8 box means) may differ this many levels (swscale build/flags
/// between Debian's FFmpeg in torchcodec and ffmpeg-next; measured 0 on the corpus).
const THUMB_ATOL: f64 = 1.0;
/// Timestamp overlay vs Pillow on a mid-grey frame (crop around the text): mean |Δ| per channel
/// value, and share of pixels more than 96 levels apart. Measured (unhinted ab_glyph vs
/// FreeType's autohinter): mean 3.4 (72 px text) … 20.5 (14 px text); far share 1.0 % … 7.3 %.
const OVERLAY_MEAN_ABS: f64 = 24.0;
const OVERLAY_FAR_SHARE: f64 = 0.09;



fn goldens() -> Json {
    let path = root().join("tests/fixtures/av_goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn f32s(b64: &Json) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn usizes(v: &Json) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

/// Max |a - b| over `[n_mels, frames]` arrays, with `b` possibly a column subset (`stride`).
fn max_diff(ours: &[f32], n_frames: usize, theirs: &[f32], stride: usize, take: usize) -> f32 {
    let cols = if stride == 1 { take } else { n_frames.div_ceil(stride) };
    let n_mels = theirs.len() / cols;
    let mut worst = 0.0f32;
    for m in 0..n_mels {
        for c in 0..cols {
            let t = c * stride;
            worst = worst.max((ours[m * n_frames + t] - theirs[m * cols + c]).abs());
        }
    }
    worst
}

#[test]
fn mel_matches_whisper_feature_extractor() {
    let g = goldens();
    let waves = &g["audio"]["waveforms_f32_b64"];
    let mut report = Vec::new();
    for case in g["audio"]["mel_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let n_mels = case["n_mels"].as_u64().unwrap() as usize;
        let shape = usizes(&case["shape"]);
        let mut cfg = MelConfig::whisper(n_mels);
        if case["padding"] == "max_length" {
            cfg.pad_to_samples = Some(480_000);
        }
        let x: Vec<f32> = if let Some(src) = case["source"].as_str() {
            let dec = decode_audio_file(&media_dir().join(src), &Limits::default()).unwrap();
            // Decoded identically to PyAV: int16 checksums.
            let ints: Vec<i64> = dec.samples.iter().map(|&v| (v * 32768.0) as i64).collect();
            assert_eq!(ints.len() as u64, case["pcm_s16_count"].as_u64().unwrap(), "{name}: sample count");
            assert_eq!(ints.iter().sum::<i64>(), case["pcm_s16_sum"].as_i64().unwrap(), "{name}: sum");
            let ws: i64 = ints.iter().enumerate().map(|(i, &v)| v * (i as i64 % 997)).sum();
            assert_eq!(ws, case["pcm_s16_weighted_sum"].as_i64().unwrap(), "{name}: weighted sum");
            dec.samples
        } else {
            let wave = case["waveform"].as_str().unwrap();
            f32s(&waves[wave])
        };
        let mel = MelExtractor::new(&cfg).unwrap().compute(&x).unwrap();
        assert_eq!([mel.n_mels, mel.n_frames], [shape[0], shape[1]], "{name} ({n_mels} bins): shape");
        let worst = if let Some(b) = case.get("mel_f32_b64") {
            max_diff(&mel.data, mel.n_frames, &f32s(b), 1, mel.n_frames)
        } else if let Some(b) = case.get("mel_frames_f32_b64") {
            max_diff(&mel.data, mel.n_frames, &f32s(b), case["frame_stride"].as_u64().unwrap() as usize, 0)
        } else {
            let take = case["first_frames"].as_u64().unwrap() as usize;
            max_diff(&mel.data, mel.n_frames, &f32s(&case["mel_first_frames_f32_b64"]), 1, take)
        };
        if let Some(mean) = case["mean"].as_f64() {
            let ours = mel.data.iter().map(|&v| f64::from(v)).sum::<f64>() / mel.data.len() as f64;
            assert!((ours - mean).abs() < 1e-5, "{name}: mean {ours} vs {mean}");
        }
        report.push(format!("{name} [{n_mels}]: max |Δ| {worst:.2e}"));
        assert!(worst <= MEL_ATOL, "{name} ({n_mels} bins): max |Δ| {worst} > {MEL_ATOL}");
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn corpus_audio_decodes_like_pyav() {
    let g = goldens();
    for f in g["audio"]["decoded_files"].as_array().unwrap() {
        let rel = f["file"].as_str().unwrap();
        let res = decode_audio_file(&media_dir().join(rel), &Limits::default());
        if let Some(why) = f["pyav_error"].as_str() {
            // FFmpeg refuses these; we refuse the same broken ones and decode big-endian RIFX.
            eprintln!("{rel}: PyAV {why}; ours: {}", res.as_ref().map_or_else(|e| e.to_string(), |d| format!("ok {}", d.codec)));
            assert_eq!(res.is_ok(), rel.contains("float-be"), "{rel}");
            continue;
        }
        let dec = res.unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(u64::from(dec.sample_rate), f["sample_rate"].as_u64().unwrap(), "{rel}: rate");
        assert_eq!(dec.channels as u64, f["channels"].as_u64().unwrap(), "{rel}: channels");
        let want = f["frames"].as_u64().unwrap() as i64;
        let lossy = matches!(f["codec"].as_str().unwrap(), "mp3float" | "vorbis" | "aac");
        let slack = if lossy { 2 * 1152 } else { 0 };
        let got = dec.samples.len() as i64;
        assert!((got - want).abs() <= slack, "{rel}: {got} samples, PyAV {want}");
        let rms = (dec.samples.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / got as f64).sqrt();
        let want_rms = f["mono_rms"].as_f64().unwrap();
        assert!((rms - want_rms).abs() <= 0.02 * want_rms + 1e-6, "{rel}: RMS {rms} vs {want_rms}");
        eprintln!("{rel}: {} {} Hz x{} {got} samples (PyAV {want}), RMS {rms:.6} (PyAV {want_rms})", dec.codec, dec.sample_rate, dec.channels);
    }
}

#[test]
fn sample_frames_grid_matches_processor() {
    let g = goldens();
    for case in g["video"]["sample_frames"].as_array().unwrap() {
        let total = case["total"].as_u64().unwrap() as usize;
        let fps = case["video_fps"].as_f64().unwrap();
        let kw = &case["kwargs"];
        let mut cfg = SamplingConfig { fps: kw["fps"].as_f64(), ..Default::default() };
        cfg.num_frames = kw["num_frames"].as_u64().map(|v| v as usize);
        if let Some(v) = kw["min_frames"].as_u64() {
            cfg.min_frames = v as usize;
        }
        if let Some(v) = kw["max_frames"].as_u64() {
            cfg.max_frames = v as usize;
        }
        let s = sample_frames(total, fps, &cfg).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(s.indices, usizes(&case["indices"]), "{case}");
        let text: Vec<String> = s.timestamps_s.iter().map(|&t| format_timestamp(t)).collect();
        assert_eq!(text, strings(&case["timestamp_text"]), "{case}");
    }
}

fn check_video(entry: &Json, path: &Path) {
    let rel = entry["file"].as_str().unwrap();
    for (key, cfg) in [("default", VideoConfig::default()), ("fps2", {
        let mut c = VideoConfig::default();
        c.sampling.fps = Some(2.0);
        c
    })] {
        let want = &entry[key];
        let mut cfg = cfg;
        cfg.resize_frames = key == "default"; // pixels are checked once
        let v = load_video(path, &cfg, &Limits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let ctx = format!("{rel} [{key}]");
        assert_eq!(v.meta.total_frames as u64, want["total_num_frames"].as_u64().unwrap(), "{ctx}: frames");
        assert!((v.meta.fps - want["fps"].as_f64().unwrap()).abs() < 1e-6, "{ctx}: fps {}", v.meta.fps);
        assert_eq!(u64::from(v.meta.height), want["height"].as_u64().unwrap(), "{ctx}: height");
        assert_eq!(u64::from(v.meta.width), want["width"].as_u64().unwrap(), "{ctx}: width");
        assert_eq!(v.sampling.indices, usizes(&want["frame_indices"]), "{ctx}: indices");
        let text: Vec<String> = v.sampling.timestamps_s.iter().map(|&t| format_timestamp(t)).collect();
        assert_eq!(text, strings(&want["timestamp_text"]), "{ctx}: timestamps");
        assert_eq!(v.grid_thw.to_vec(), usizes(&want["video_grid_thw"]), "{ctx}: grid_thw");
        assert_eq!(vec![v.resized_height, v.resized_width], usizes(&want["resized"]), "{ctx}: resized");
        assert_eq!(v.n_tokens as u64, want["n_tokens"].as_u64().unwrap(), "{ctx}: tokens");
        assert_eq!(v.frames.len(), v.grid_thw[0], "{ctx}: frame count");
        if key == "default" {
            assert!(v.frames.iter().all(|f| f.width as usize == v.resized_width && f.height as usize == v.resized_height));
        }
    }
    // Decoded pixels (no overlay, no resize) against torchcodec's.
    let mut cfg = VideoConfig { draw_timestamps: false, resize_frames: false, ..Default::default() };
    cfg.sampling = SamplingConfig::default();
    let v = load_video(path, &cfg, &Limits::default()).unwrap();
    for (idx, thumb) in entry["thumbs8"].as_object().unwrap() {
        let idx: usize = idx.parse().unwrap();
        let pos = v.sampling.indices.iter().position(|&i| i == idx).unwrap();
        let ours = thumb8(&v.frames[pos]);
        let worst = ours
            .iter()
            .zip(thumb.as_array().unwrap())
            .map(|(a, b)| (a - b.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        eprintln!("{rel}: frame {idx} thumbnail max |Δ| {worst:.3}");
        assert!(worst <= THUMB_ATOL, "{rel}: frame {idx} thumbnail differs by {worst}");
    }
}

/// 8×8 box means, rows / columns split like `np.array_split`.
fn thumb8(f: &tokenizers_mm::image::RgbImage) -> Vec<f64> {
    let split = |n: usize, i: usize| {
        let (q, r) = (n / 8, n % 8);
        let start = i * q + i.min(r);
        start..start + q + usize::from(i < r)
    };
    let (w, h) = (f.width as usize, f.height as usize);
    let mut out = Vec::with_capacity(192);
    for i in 0..8 {
        for j in 0..8 {
            let mut acc = [0.0f64; 3];
            let (rows, cols) = (split(h, i), split(w, j));
            let n = (rows.len() * cols.len()) as f64;
            for y in rows {
                for x in cols.clone() {
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += f64::from(f.data[(y * w + x) * 3 + c]);
                    }
                }
            }
            out.extend(acc.iter().map(|a| a / n));
        }
    }
    out
}

#[test]
fn gif_video_matches_processor() {
    let g = goldens();
    let entry = g["video"]["files"].as_array().unwrap().iter().find(|e| e["file"] == "fixture:av/anim_7f.gif").unwrap();
    check_video(entry, &root().join("tests/fixtures/av/anim_7f.gif"));
}

#[cfg(feature = "ffmpeg")]
#[test]
fn corpus_videos_match_processor() {
    let g = goldens();
    for entry in g["video"]["files"].as_array().unwrap() {
        let rel = entry["file"].as_str().unwrap();
        if let Some(rel) = rel.strip_prefix("video/") {
            check_video(entry, &media_dir().join("video").join(rel));
        }
    }
}

#[cfg(not(feature = "ffmpeg"))]
#[test]
fn video_files_need_ffmpeg_feature() {
    let path = media_dir().join("video/slideshow_320x240_h264_aac.mp4");
    match load_video(&path, &VideoConfig::default(), &Limits::default()) {
        Err(tokenizers_mm::Error::VideoBackendMissing { path: p }) => assert_eq!(p, path),
        other => panic!("expected VideoBackendMissing, got {other:?}"),
    }
}

#[test]
fn overlay_close_to_pillow() {
    let g = goldens();
    for o in g["video"]["overlays"].as_array().unwrap() {
        let (w, h) = (o["width"].as_u64().unwrap() as usize, o["height"].as_u64().unwrap() as usize);
        let text = o["text"].as_str().unwrap();
        let png = root().join("tests/fixtures/av").join(o["crop"].as_str().unwrap());
        let pil = image::open(&png).unwrap().to_rgb8();
        let (cw, ch) = (pil.width() as usize, pil.height() as usize);
        let mut rgb = vec![128u8; w * h * 3];
        draw_timestamp(&mut rgb, w, h, text).unwrap();
        // Nothing outside the crop, like the reference.
        for y in 0..h {
            for x in 0..w {
                if y >= ch || x >= cw {
                    assert_eq!(&rgb[(y * w + x) * 3..(y * w + x) * 3 + 3], &[128, 128, 128], "{w}x{h}: drew at ({x},{y})");
                }
            }
        }
        if let Some(dir) = std::env::var_os("ERNIE_AV_DUMP") {
            let mut crop = image::RgbImage::new(cw as u32, ch as u32);
            for y in 0..ch {
                for x in 0..cw {
                    let p = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
                    crop.put_pixel(x as u32, y as u32, image::Rgb([p[0], p[1], p[2]]));
                }
            }
            crop.save(Path::new(&dir).join(format!("ours_{w}x{h}.png"))).unwrap();
        }
        let (mut sum, mut far, mut n) = (0.0f64, 0usize, 0usize);
        let (mut ink_both, mut ink_any) = (0usize, 0usize);
        for y in 0..ch {
            for x in 0..cw {
                let ours = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
                let theirs = pil.get_pixel(x as u32, y as u32).0;
                for c in 0..3 {
                    let d = (f64::from(ours[c]) - f64::from(theirs[c])).abs();
                    sum += d;
                    n += 1;
                    if c == 0 && d > 96.0 {
                        far += 1;
                    }
                }
                let (a, b) = (ours[0] < 64, theirs[0] < 64);
                ink_both += usize::from(a && b);
                ink_any += usize::from(a || b);
            }
        }
        let mean = sum / n as f64;
        let far_share = far as f64 / (n / 3) as f64;
        let iou = ink_both as f64 / ink_any.max(1) as f64;
        eprintln!("overlay {w}x{h} {text:?}: mean |Δ| {mean:.2}, >96 levels {:.2}%, black-ink IoU {iou:.3}", 100.0 * far_share);
        assert!(mean <= OVERLAY_MEAN_ABS, "{w}x{h}: mean |Δ| {mean}");
        assert!(far_share <= OVERLAY_FAR_SHARE, "{w}x{h}: {far_share} of pixels far off");
    }
}

#[test]
fn smart_resize_video_sizes() {
    let g = goldens();
    for case in g["video"]["smart_resize"].as_array().unwrap() {
        let (h, w) = (case["h"].as_u64().unwrap(), case["w"].as_u64().unwrap());
        let ours = tokenizers_mm::image::smart_resize(h, w, 28, 299 * 784, 1196 * 784);
        match case.get("resized") {
            Some(r) => assert_eq!(ours.map(|(a, b)| vec![a as usize, b as usize]).ok(), Some(usizes(r)), "{h}x{w}"),
            None => assert!(ours.is_err(), "{h}x{w} should fail"),
        }
    }
}

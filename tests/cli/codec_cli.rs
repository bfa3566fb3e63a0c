//! `ernie codec` end to end (issue #14 item 2, issue #15 item 2): audio → codes equal
//! transformers' `MimiModel` codes exactly, codes → WAV within the codec test's bound, latents →
//! PNG equal to diffusers' RGB8, the BSQ bits round trip, and every bad input one `error:` line.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use ernie_runtime::tools::codec::wav::WavWriter;
use ernie_runtime::tools::codec::WavFormat;
use safetensors::{Dtype, SafeTensors};

/// As `tests/model/audio_codec.rs`: f32 on both sides, summation order only; the clips peak at
/// |x| ≈ 10, so 2e-4 absolute is over an order of magnitude above the drift.
const WAVE_ATOL: f32 = 2e-4;
/// 16-bit output: one quantisation step (1/32767) plus the f32 bound.
const PCM16_ATOL: f32 = 1.0 / 32767.0 + WAVE_ATOL;

fn mimi() -> PathBuf {
    fixture("mimi/tiny")
}


/// Writes 24 kHz mono f32 samples as a WAV.
fn write_wav(path: &Path, pcm: &[f32]) {
    let mut w = WavWriter::create(path, 24000, WavFormat::F32, pcm.len()).unwrap();
    w.write(pcm).unwrap();
    w.finish().unwrap();
}

/// Reads a mono WAV written by `ernie codec decode` (44-byte header): (rate, format tag, samples).
fn read_wav(path: &Path) -> (u32, u16, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!((&b[0..4], &b[8..12], &b[36..40]), (&b"RIFF"[..], &b"WAVE"[..], &b"data"[..]));
    let tag = u16::from_le_bytes([b[20], b[21]]);
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let data = u32::from_le_bytes([b[40], b[41], b[42], b[43]]) as usize;
    assert_eq!(b.len(), 44 + data);
    let samples = match tag {
        3 => b[44..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        1 => b[44..].chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32767.0).collect(),
        t => panic!("format tag {t}"),
    };
    (rate, tag, samples)
}

fn run(args: &[&str]) -> Output {
    ernie().args(args).output().expect("running ernie")
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "ernie {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A failing run: non-zero exit, exactly one stderr line starting `error:` holding `needle`.
fn fails(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ernie {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "ernie {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "ernie {args:?}: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "ernie {args:?}: {err} (wanted {needle:?})");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn encode_reproduces_the_golden_codes() {
    let dir = tempdir();
    for clip in ["speech", "chirp", "short"] {
        let (pcm, _) = mimi_golden(&format!("{clip}.pcm")); // 24 kHz mono: passes through unchanged
        let wav = dir.path().join(format!("{clip}.wav"));
        write_wav(&wav, &pcm);
        let out = ok(&["codec", "encode", "--codec", s(&mimi()), "--audio", s(&wav), "--levels", "8", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<Vec<u32>> = v["codes"].as_array().unwrap().iter().map(u32s).collect();
        assert_eq!(got, mimi_golden_codes(&format!("{clip}.codes")), "{clip}: codes differ from transformers");
        // The timing line scripts/bench-generation.sh reads: seconds of audio = frames / 12.5.
        let err = String::from_utf8_lossy(&out.stderr);
        let line = format!("encode: {:.2} s of audio in ", got[0].len() as f64 / 12.5);
        assert!(err.contains(&line) && err.contains("(real-time factor "), "{clip}: no {line:?} in {err}");
        assert_eq!((v["frame_rate"].as_f64(), v["sample_rate"].as_u64()), (Some(12.5), Some(24000)));
    }
    // Fewer levels: the RVQ prefix.
    let wav = dir.path().join("short.wav");
    let out = ok(&["codec", "encode", "--codec", s(&mimi()), "--audio", s(&wav), "--levels", "3"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["codes"].as_array().unwrap().len(), 3);
    assert_eq!(u32s(&v["codes"][2]), mimi_golden_codes("short.codes")[2]);
}

/// A 16-bit PCM WAV with `channels` interleaved channels at `rate`.
fn write_pcm16(path: &Path, rate: u32, channels: u16, frames: &[Vec<i16>]) {
    let data = (frames.len() * channels as usize * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    frames.iter().flatten().for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, b).unwrap();
}

fn encode_codes(path: &Path) -> Vec<Vec<u32>> {
    let out = ok(&["codec", "encode", "--codec", s(&mimi()), "--audio", s(path)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["codes"].as_array().unwrap().iter().map(u32s).collect()
}

#[test]
fn stereo_and_other_rates_are_downmixed_and_resampled() {
    let dir = tempdir();
    let (pcm, _) = mimi_golden("short.pcm");
    let q: Vec<i16> = pcm.iter().map(|v| (v.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect();
    write_pcm16(&dir.path().join("mono.wav"), 24000, 1, &q.iter().map(|&v| vec![v]).collect::<Vec<_>>());
    write_pcm16(&dir.path().join("stereo.wav"), 24000, 2, &q.iter().map(|&v| vec![v, v]).collect::<Vec<_>>());
    // Equal channels: the mean is the channel itself, so the codes are the mono file's.
    let mono = encode_codes(&dir.path().join("mono.wav"));
    assert_eq!(mono.len(), 8, "all levels by default");
    assert_eq!(encode_codes(&dir.path().join("stereo.wav")), mono);
    // 16 kHz: resampled to 24 kHz, so the frame count follows the resampled length.
    let n16 = pcm.len() * 2 / 3;
    write_pcm16(&dir.path().join("16k.wav"), 16000, 1, &q[..n16].iter().map(|&v| vec![v]).collect::<Vec<_>>());
    let c16 = encode_codes(&dir.path().join("16k.wav"));
    assert_eq!(c16[0].len(), (n16 * 3 / 2).div_ceil(1920));
}

#[test]
fn decode_matches_the_golden_audio_and_round_trips() {
    let dir = tempdir();
    for clip in ["speech", "chirp"] {
        let codes = mimi_golden_codes(&format!("{clip}.codes"));
        let (want, _) = mimi_golden(&format!("{clip}.audio"));
        let json = dir.path().join(format!("{clip}.json"));
        std::fs::write(&json, serde_json::json!({"codes": codes, "frame_rate": 12.5, "sample_rate": 24000}).to_string()).unwrap();
        let wav = dir.path().join(format!("{clip}.wav"));
        let out = ok(&["codec", "decode", "--codec", s(&mimi()), "--codes", s(&json), "--out", s(&wav)]);
        let (rate, tag, got) = read_wav(&wav);
        assert_eq!((rate, tag), (24000, 3));
        let err = String::from_utf8_lossy(&out.stderr);
        let line = format!("decode: {:.2} s of audio in ", got.len() as f64 / 24000.0);
        assert!(err.contains(&line) && err.contains("(real-time factor "), "{clip}: no {line:?} in {err}");
        let d = max_abs_diff(&got, &want);
        eprintln!("{clip}: streamed decode → f32 WAV, max |Δ| vs transformers {d:.3e} over {} samples", got.len());
        assert!(d < WAVE_ATOL, "{clip}: max |Δ| {d} ≥ {WAVE_ATOL}");
        let wav16 = dir.path().join(format!("{clip}16.wav"));
        ok(&["codec", "decode", "--codec", s(&mimi()), "--codes", s(&json), "--out", s(&wav16), "--pcm16"]);
        let (_, tag, got16) = read_wav(&wav16);
        let clipped: Vec<f32> = want.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let d16 = max_abs_diff(&got16, &clipped);
        assert!(tag == 1 && d16 < PCM16_ATOL, "{clip}: 16-bit max |Δ| {d16}");
    }
    // The WAV decode writes is one encode reads: encode → decode → encode runs end to end.
    let codes = dir.path().join("again.json");
    let out = ok(&["codec", "encode", "--codec", s(&mimi()), "--audio", s(&dir.path().join("chirp.wav")), "--levels", "8"]);
    std::fs::write(&codes, &out.stdout).unwrap();
    ok(&["codec", "decode", "--codec", s(&mimi()), "--codes", s(&codes), "--out", s(&dir.path().join("again.wav"))]);
}

/// The f32 tensors of a VAE golden file, with shapes.
fn vae_golden(name: &str) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture("vae").join(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (n, (v.shape().to_vec(), data))
        })
        .collect()
}

fn write_latent(path: &Path, shape: &[usize], data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), &bytes).unwrap();
    safetensors::serialize_to_file([("latent", view)], None, path).unwrap();
}

#[test]
fn latent_decodes_to_the_diffusers_rgb8() {
    let dir = tempdir();
    for name in ["sd", "flux", "flux-ldm", "infinity"] {
        let g = vae_golden(name);
        let (ls, latent) = &g["latent"];
        let file = dir.path().join(format!("{name}.safetensors"));
        write_latent(&file, ls, latent);
        let png = dir.path().join(format!("{name}.png"));
        let out = ok(&["codec", "decode", "--codec", s(&fixture("vae").join(name)), "--latent", s(&file), "--out", s(&png)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(" RGB) in ") && err.contains(" s after loading"), "{name}: no decoder timing in {err}");
        let img = image::open(&png).unwrap();
        assert!(matches!(img, image::DynamicImage::ImageRgb8(_)), "{name}: not 8-bit RGB");
        let img = img.to_rgb8();
        let (rs, want) = &g["rgb8"];
        assert_eq!(rs.iter().product::<usize>(), img.as_raw().len(), "{name}: size {rs:?}");
        // diffusers' rgb8 is [H, W, 3] (PIL order), as the PNG bytes are.
        let worst = img.as_raw().iter().zip(want).map(|(&a, &b)| (i32::from(a) - b as i32).abs()).max().unwrap();
        let equal = img.as_raw().iter().zip(want).filter(|(&a, &b)| f32::from(a) == b).count();
        eprintln!("{name}: PNG {}×{}, {equal}/{} bytes equal to diffusers, max step {worst}", img.width(), img.height(), want.len());
        // Exact: the fixtures' pixels sit far enough from rounding boundaries (checked by
        // `tests/model/vision_decoder.rs`, which allows one step for arbitrary latents).
        assert_eq!(worst, 0, "{name}: rgb8 max step {worst}, {equal} bytes equal");
    }
}

#[test]
fn image_bits_round_trip() {
    let dir = tempdir();
    // A smooth test image from the sd fixture's own decode (it has an encoder).
    let g = vae_golden("sd");
    let (ls, latent) = &g["latent"];
    let file = dir.path().join("l.safetensors");
    write_latent(&file, ls, latent);
    let vae = fixture("vae/sd");
    let src = dir.path().join("src.png");
    ok(&["codec", "decode", "--codec", s(&vae), "--latent", s(&file), "--out", s(&src)]);
    let bits = dir.path().join("bits.json");
    ok(&["codec", "encode", "--codec", s(&vae), "--image", s(&src), "--out", s(&bits)]);
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&bits).unwrap()).unwrap();
    let scales = b["scales"].as_array().unwrap();
    assert_eq!(scales.last().unwrap(), &b["latent"], "schedule ends at the latent grid");
    assert_eq!(scales[0], serde_json::json!([1, 1]));
    let out = dir.path().join("back.png");
    let o = ok(&["codec", "decode", "--codec", s(&vae), "--bits", s(&bits), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    let psnr: f64 = err.split("PSNR vs ").nth(1).and_then(|t| t.split(": ").nth(1)).and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no PSNR in {err}"));
    eprintln!("BSQ round trip on vae/sd: PSNR {psnr:.2} dB");
    let (a, b) = (image::open(&src).unwrap().to_rgb8(), image::open(&out).unwrap().to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    // The printed PSNR is the two PNGs' (the bits themselves are pinned to the torch oracle in
    // model::vision_decoder::bsq_round_trip_matches_the_torch_oracle).
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.as_raw().len() as f64;
    let want = 10.0 * (255.0f64 * 255.0 / mse).log10();
    assert!((psnr - want).abs() < 0.01, "printed PSNR {psnr} vs {want} from the PNGs");
    // An explicit schedule is honoured; one that does not end at the latent grid is refused.
    fails(&["codec", "encode", "--codec", s(&vae), "--image", s(&src), "--out", s(&bits), "--scales", "1x1"], "scale");
}

#[test]
fn bad_inputs_are_one_error_line() {
    let dir = tempdir();
    let p = |n: &str| dir.path().join(n);
    let (pcm, _) = mimi_golden("short.pcm");
    write_wav(&p("a.wav"), &pcm);
    let codes = mimi_golden_codes("short.codes");
    let m = mimi();
    fails(&["codec", "encode", "--codec", s(&p("nope")), "--audio", s(&p("a.wav"))], "nope");
    fails(&["codec", "encode", "--codec", s(&m), "--audio", s(&p("a.wav")), "--levels", "99"], "--levels");
    std::fs::write(p("text.wav"), "this is not audio").unwrap();
    fails(&["codec", "encode", "--codec", s(&m), "--audio", s(&p("text.wav"))], "text.wav");
    let mut bad = codes.clone();
    bad[1][0] = 1 << 20;
    std::fs::write(p("range.json"), serde_json::json!({ "codes": bad }).to_string()).unwrap();
    fails(&["codec", "decode", "--codec", s(&m), "--codes", s(&p("range.json")), "--out", s(&p("o.wav"))], "out of range");
    assert!(!p("o.wav").exists(), "no partial WAV for a bad grid");
    let many: Vec<Vec<u32>> = (0..9).map(|_| codes[0].clone()).collect();
    std::fs::write(p("levels.json"), serde_json::json!({ "codes": many }).to_string()).unwrap();
    fails(&["codec", "decode", "--codec", s(&m), "--codes", s(&p("levels.json")), "--out", s(&p("o.wav"))], "9 levels");
    let mut ragged = codes.clone();
    ragged[2].pop();
    std::fs::write(p("ragged.json"), serde_json::json!({ "codes": ragged }).to_string()).unwrap();
    fails(&["codec", "decode", "--codec", s(&m), "--codes", s(&p("ragged.json")), "--out", s(&p("o.wav"))], "level 2");
    std::fs::write(p("bad.json"), "{\"codes\": [[1, 2,").unwrap();
    fails(&["codec", "decode", "--codec", s(&m), "--codes", s(&p("bad.json")), "--out", s(&p("o.wav"))], "not codes JSON");
    std::fs::write(p("neg.json"), "{\"codes\": [[1, -2]]}").unwrap();
    fails(&["codec", "decode", "--codec", s(&m), "--codes", s(&p("neg.json")), "--out", s(&p("o.wav"))], "not codes JSON");
    // Images: a latent with the wrong channel count, a file without `latent`, a decoder-only encode.
    let g = vae_golden("sd");
    let (ls, latent) = &g["latent"];
    let wrong = [ls[0] + 1, ls[1], ls[2]];
    let mut data = latent.clone();
    data.extend(std::iter::repeat_n(0.0, ls[1] * ls[2]));
    write_latent(&p("wrong.safetensors"), &wrong, &data);
    fails(&["codec", "decode", "--codec", s(&fixture("vae/sd")), "--latent", s(&p("wrong.safetensors")), "--out", s(&p("o.png"))], "shape mismatch");
    fails(&["codec", "decode", "--codec", s(&fixture("vae/sd")), "--latent", s(&p("a.wav")), "--out", s(&p("o.png"))], "a.wav");
    fails(&["codec", "encode", "--codec", s(&fixture("vae/sd")), "--image", s(&p("a.wav")), "--out", s(&p("b.json"))], "not a readable image");
    fails(&["codec", "decode", "--codec", s(&m), "--latent", s(&p("wrong.safetensors")), "--out", s(&p("o.png"))], "image decoder");
}

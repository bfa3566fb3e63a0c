//! `ernie generate --output x.wav` end to end (issue #14 items 4-5): a temp checkpoint =
//! `ernie5-audio-tiny` + `mimi/tiny` as `audio_codec/`; the CLI's codes equal the library's
//! greedy `generate_audio_codes` and its WAV equals `MimiCodec::decode` of those codes.

use std::path::{Path, PathBuf};

use crate::common::*;
use ernie_runtime::model::audio_codec::MimiCodec;
use ernie_runtime::{AudioGenOptions, Engine, Prompt, SamplingParams};
use tokenizers_mm::ChatMessage;

/// As the codec tests: f32 on both sides, streamed vs whole-clip decode differ in summation order.
const WAVE_ATOL: f32 = 2e-4;
const PROMPT: &str = "Say hello in a calm voice.";

/// Copies the audio LM fixture, plus the tiny Mimi codec as `audio_codec/` when `with_codec`.
fn checkpoint(root: &Path, with_codec: bool) -> PathBuf {
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixture("ernie5-audio-tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    if with_codec {
        let codec = dir.join("audio_codec");
        std::fs::create_dir_all(&codec).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture("mimi/tiny").join(f), codec.join(f)).unwrap();
        }
    }
    dir
}

/// Samples of an f32 mono WAV (44-byte header), checking the header's sizes.
fn read_wav(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    assert_eq!((&b[0..4], &b[8..12], &b[36..40]), (&b"RIFF"[..], &b"WAVE"[..], &b"data"[..]));
    assert_eq!(u16::from_le_bytes([b[20], b[21]]), 3, "IEEE float");
    assert_eq!(u32::from_le_bytes([b[24], b[25], b[26], b[27]]), 24000);
    let data = u32::from_le_bytes([b[40], b[41], b[42], b[43]]) as usize;
    assert_eq!(b.len(), 44 + data);
    b[44..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn generate_wav_equals_the_library_codes_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), true);
    let wav = tmp.path().join("x.wav");
    // 0.64 s = 8 frames at Mimi's 12.5 Hz.
    let out = ernie()
        .args(["generate", "--model"])
        .arg(&dir)
        .args(["--prompt", PROMPT, "--output"])
        .arg(&wav)
        .args(["--temperature", "0", "--max-seconds", "0.64", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("real-time factor") && stderr.contains("frames/s"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_codes: Vec<Vec<u32>> = v["codes"].as_array().unwrap().iter().map(u32s).collect();

    let engine = Engine::load(&dir).unwrap();
    let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: PROMPT.into() }]);
    let opts = AudioGenOptions { sampling: SamplingParams { temperature: 0.0, ..Default::default() }, max_frames: 8, uniforms: None };
    let lib = engine.generate_audio_codes(&prompt, &opts).unwrap();
    assert_eq!(cli_codes, lib.codes);
    assert_eq!(cli_codes.len(), 3, "Q = 3 levels");
    assert!(!cli_codes[0].is_empty() && cli_codes[0].len() <= 8);

    let codec = MimiCodec::load(&dir.join("audio_codec")).unwrap();
    let want = codec.decode(&lib.codes).unwrap();
    let got = read_wav(&wav);
    assert_eq!(got.len(), want.len());
    assert_eq!(v["samples"].as_u64(), Some(want.len() as u64));
    let d = max_abs_diff(&got, &want);
    assert!(d < WAVE_ATOL, "max |Δ| {d} ≥ {WAVE_ATOL}");
    eprintln!("frames {}, samples {}, max |Δ| {d:e}", cli_codes[0].len(), got.len());
}

#[test]
fn generate_wav_without_audio_codec_is_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), false);
    let wav = tmp.path().join("x.wav");
    let out = ernie().args(["generate", "--model"]).arg(&dir).args(["--prompt", PROMPT, "--output"]).arg(&wav).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("audio_codec/"), "{stderr}");
}

/// Writes a clip of the Mimi golden file (`speech` / `chirp`, 24 kHz f32) as a WAV.
fn golden_clip_wav(clip: &str, path: &Path) {
    use ernie_runtime::tools::codec::wav::{WavFormat, WavWriter};
    let mut g = ernie_runtime::Weights::from_files(&[fixture("mimi/golden.safetensors")]).unwrap();
    let name = format!("{clip}.audio");
    let all = g.take_prefix(&name);
    let pcm = all.get(&name).unwrap().to_f32_vec();
    let mut w = WavWriter::create(path, 24000, WavFormat::F32, pcm.len()).unwrap();
    w.write(&pcm).unwrap();
    w.finish().unwrap();
}

#[test]
fn caption_audio_equals_the_library_on_the_codec_codes() {
    use ernie_runtime::tools::codec::speech::encode_audio_for_model;
    use ernie_runtime::GenerateRequest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), true);
    let engine = Engine::load(&dir).unwrap();
    let codec = engine.load_audio_codec().unwrap();
    for clip in ["speech", "chirp"] {
        let wav = tmp.path().join(format!("{clip}.wav"));
        golden_clip_wav(clip, &wav);
        let codes = encode_audio_for_model(&engine, &codec, &wav).unwrap();
        assert_eq!(codes.len(), 3, "the model's Q = 3 levels of the codec's 8");
        let req = GenerateRequest { sampling: Default::default(), max_new_tokens: 6 };
        let lib = engine.caption_audio_codes(&codes, "What is said?", &req);
        let out = ernie()
            .args(["caption", "--model"])
            .arg(&dir)
            .arg("--audio")
            .arg(&wav)
            .args(["--prompt", "What is said?", "--max-tokens", "6", "--format", "json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match lib {
            Ok(gen) => {
                assert!(out.status.success(), "{clip}: {stderr}");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(u32s(&v["token_ids"]), gen.token_ids, "{clip}");
                eprintln!("{clip}: {} frames → ids {:?}", codes[0].len(), gen.token_ids);
            }
            // The tiny LM's codebook (V = 16) is smaller than the codec's (64): a clip whose codes
            // do not fit is refused the same way by the CLI, in one line.
            Err(e) => {
                assert!(!out.status.success(), "{clip}: the library refused ({e}) but the CLI ran");
                let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
                assert_eq!(errors.len(), 1, "{stderr}");
                assert!(errors[0].contains(&e.to_string()), "{clip}: {stderr} vs {e}");
                eprintln!("{clip}: refused as the library does: {e}");
            }
        }
    }
    let img = tmp.path().join("x.png");
    let out = ernie().args(["caption", "--model"]).arg(&dir).args(["--audio", "a.wav", "--image"]).arg(&img).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--audio cannot be mixed"));
}

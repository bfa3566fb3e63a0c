//! `ernie generate --output x.wav` end to end (issue #14 items 4-5): a temp checkpoint =
//! `ernie5-audio-tiny` + `mimi/tiny` as `audio_codec/`; the CLI's codes equal the library's
//! greedy `generate_audio_codes` and its WAV equals `MimiCodec::decode` of those codes.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::server::{agent, Server};
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

/// Cuts `dir/audio_codec` down to the first `v` codes of each codebook (config and tensors), so
/// the codec's codes fit the tiny LM's codebook (V = 16 < the fixture codec's 64).
fn shrink_codebooks(dir: &Path, v: usize) {
    let codec = dir.join("audio_codec");
    let mut tensors = read_checkpoint(&codec);
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("codebook.cluster_usage") || name.ends_with("codebook.embed_sum") {
            let row = t.data.len() / t.shape[0];
            t.shape[0] = v;
            t.data.truncate(v * row);
        }
    }
    let src = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(codec.join("config.json")).unwrap()).unwrap();
    cfg["codebook_size"] = v.into();
    std::fs::write(src.path().join("config.json"), cfg.to_string()).unwrap();
    write_checkpoint(src.path(), &codec, &tensors);
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
    let caption = |wav: &Path| {
        ernie()
            .args(["caption", "--model"])
            .arg(&dir)
            .arg("--audio")
            .arg(wav)
            .args(["--prompt", "What is said?", "--max-tokens", "6", "--format", "json"])
            .output()
            .unwrap()
    };
    let req = GenerateRequest { sampling: Default::default(), max_new_tokens: 6 };
    let speech = tmp.path().join("speech.wav");
    golden_clip_wav("speech", &speech);

    // The fixture codec's 64 codes do not fit the tiny LM's 16: refused in one line, as the
    // library refuses the same codes.
    {
        let engine = Engine::load(&dir).unwrap();
        let codes = encode_audio_for_model(&engine, &engine.load_audio_codec().unwrap(), &speech).unwrap();
        let e = engine.caption_audio_codes(&codes, "What is said?", &req).unwrap_err();
        let out = caption(&speech);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(!out.status.success() && errors.len() == 1 && errors[0].contains(&e.to_string()), "{stderr} vs {e}");
    }

    shrink_codebooks(&dir, 16);
    let engine = Engine::load(&dir).unwrap();
    let codec = engine.load_audio_codec().unwrap();
    assert_eq!((codec.num_levels(), codec.codebook_size()), (8, 16));
    for clip in ["speech", "chirp"] {
        let wav = tmp.path().join(format!("{clip}.wav"));
        golden_clip_wav(clip, &wav);
        let codes = encode_audio_for_model(&engine, &codec, &wav).unwrap();
        assert_eq!(codes.len(), 3, "the model's Q = 3 levels of the codec's 8");
        let lib = engine.caption_audio_codes(&codes, "What is said?", &req).unwrap();
        let out = caption(&wav);
        assert!(out.status.success(), "{clip}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(u32s(&v["token_ids"]), lib.token_ids, "{clip}");
        assert_eq!(lib.token_ids.len(), 6, "{clip}: a 6-token budget");
        eprintln!("{clip}: {} frames → ids {:?}", codes[0].len(), lib.token_ids);
    }
    let img = tmp.path().join("x.png");
    let out = ernie().args(["caption", "--model"]).arg(&dir).args(["--audio", "a.wav", "--image"]).arg(&img).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--audio cannot be mixed"));
}

/// `ernie serve` on `dir` (the server tests' helper), ready, with its base URL and a client.
fn serve(dir: &Path) -> (Server, String, ureq::Agent) {
    let server = Server::start_dir(dir, &[]);
    server.wait_ready();
    let base = server.base.clone();
    (server, base, agent())
}

#[test]
fn audio_speech_returns_the_cli_wav_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), true);
    let wav = tmp.path().join("cli.wav");
    let out = ernie()
        .args(["generate", "--model"])
        .arg(&dir)
        .args(["--prompt", PROMPT, "--output"])
        .arg(&wav)
        .args(["--temperature", "0", "--max-seconds", "0.64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli = std::fs::read(&wav).unwrap();

    let (_server, base, agent) = serve(&dir);
    let url = format!("{base}/v1/audio/speech");
    let post = |body: serde_json::Value| {
        let mut r = agent.post(&url).header("content-type", "application/json").send(body.to_string()).unwrap();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (r.status().as_u16(), ct, r.body_mut().read_to_vec().unwrap())
    };
    let (status, ct, bytes) = post(serde_json::json!({"input": PROMPT, "voice": "alloy", "response_format": "wav", "temperature": 0, "max_seconds": 0.64}));
    assert_eq!((status, ct.as_str()), (200, "audio/wav"), "{}", String::from_utf8_lossy(&bytes));
    assert!(bytes.len() > 44);
    assert_eq!(bytes, cli, "the server's WAV is the CLI's, byte for byte");
    let (status, _, body) = post(serde_json::json!({"input": PROMPT, "voice": "alloy", "response_format": "mp3"}));
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("response_format"));
}

#[test]
fn chat_input_audio_equals_caption_audio() {
    use base64::Engine as _;
    use ernie_runtime::tools::codec::speech::encode_audio_for_model;
    use ernie_runtime::GenerateRequest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), true);
    shrink_codebooks(&dir, 16);
    let wav = tmp.path().join("speech.wav");
    golden_clip_wav("speech", &wav);
    let engine = Engine::load(&dir).unwrap();
    let codes = encode_audio_for_model(&engine, &engine.load_audio_codec().unwrap(), &wav).unwrap();
    let lib = engine.caption_audio_codes(&codes, "What is said?", &GenerateRequest { sampling: Default::default(), max_new_tokens: 6 }).unwrap();

    let (_server, base, agent) = serve(&dir);
    let data = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&wav).unwrap());
    let body = serde_json::json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        {"type": "text", "text": "What is said?"}]}],
        "max_tokens": 6, "temperature": 0, "return_token_ids": true});
    let mut r = agent.post(&format!("{base}/v1/chat/completions")).header("content-type", "application/json").send(body.to_string()).unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = u32s(&v["choices"][0]["token_ids"]);
    assert_eq!(ids, lib.token_ids, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(lib.text.as_str()));
}

/// Issue #14 item 4: `Engine::embed` with an audio clip's bytes pools the rows of the audio
/// question's layout (codes from the checkpoint's codec; the rows themselves are pinned to the
/// torch oracle in `model::audio_ncp`), and `/v1/embeddings` takes the clip as an `input_audio`
/// content part.
#[test]
fn audio_embeddings_from_bytes_in_the_library_and_over_http() {
    use base64::Engine as _;
    use ernie_runtime::tools::codec::speech::encode_audio_for_model;
    use ernie_runtime::{EmbedInput, EmbedOptions, Error, Media, Pooling};
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkpoint(tmp.path(), true);
    shrink_codebooks(&dir, 16);
    let wav = tmp.path().join("speech.wav");
    golden_clip_wav("speech", &wav);
    let bytes = std::fs::read(&wav).unwrap();
    let engine = Engine::load(&dir).unwrap();
    let h = engine.model.cfg.hidden_size;
    let codes = encode_audio_for_model(&engine, &engine.load_audio_codec().unwrap(), &wav).unwrap();
    let hidden = engine.audio_hidden_states(&codes, "a clip", None).unwrap(); // [t, h]
    let t = hidden.len() / h;
    assert!(t > codes[0].len() + 2, "head + BOA + frames + EOA + text");
    let input = |media: Vec<Media>| EmbedInput::Media { text: "a clip".into(), media };
    let clip = || Media::Audio(bytes.clone());
    let mean = engine.embed(&[input(vec![clip()])], &EmbedOptions { pooling: Pooling::Mean, ..Default::default() }).unwrap();
    let want: Vec<f32> = (0..h).map(|j| (0..t).map(|i| hidden[i * h + j]).sum::<f32>() / t as f32).collect();
    assert_eq!((mean[0].n_tokens, mean[0].vector.len()), (t, h));
    assert!(max_abs_diff(&mean[0].vector, &want) <= 1e-6, "mean pooling of the same rows");
    let last = engine.embed(&[input(vec![clip()])], &EmbedOptions { normalize: true, ..Default::default() }).unwrap();
    let norm = hidden[(t - 1) * h..].iter().map(|x| x * x).sum::<f32>().sqrt();
    let want_last: Vec<f32> = hidden[(t - 1) * h..].iter().map(|x| x / norm).collect();
    assert!(max_abs_diff(&last[0].vector, &want_last) <= 1e-6, "last row, L2-normalised");

    // One clear error each.
    let two = engine.embed(&[input(vec![clip(), clip()])], &EmbedOptions::default()).unwrap_err();
    assert!(matches!(&two, Error::Unsupported { .. }), "{two}");
    let eos = engine.embed(&[input(vec![clip()])], &EmbedOptions { pooling: Pooling::EndOfSentence, ..Default::default() }).unwrap_err();
    assert!(eos.to_string().contains("end_of_sentence"), "{eos}");
    let junk = engine.embed(&[input(vec![Media::Audio(b"not audio at all".to_vec())])], &EmbedOptions::default()).unwrap_err();
    eprintln!("junk audio: {junk}");
    let no_codec = Engine::load(&checkpoint(&tmp.path().join("bare"), false)).unwrap();
    let e = no_codec.embed(&[input(vec![clip()])], &EmbedOptions::default()).unwrap_err();
    assert!(e.to_string().contains("audio_codec"), "{e}");

    // Over HTTP: the same vector (the server L2-normalises, last-token pooling by default).
    let (_server, base, agent) = serve(&dir);
    let part = serde_json::json!({"type": "input_audio", "input_audio": {"data": base64::engine::general_purpose::STANDARD.encode(&bytes), "format": "wav"}});
    let (status, v) = crate::server::post(&agent, &format!("{base}/v1/embeddings"), &serde_json::json!({"input": [part, {"type": "text", "text": "a clip"}]}));
    assert_eq!(status, 200, "{v}");
    let got: Vec<f32> = v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(max_abs_diff(&got, &want_last) <= 1e-5, "HTTP = library");
    let (status, v) = crate::server::post(&agent, &format!("{base}/v1/embeddings"), &serde_json::json!({"input": [part.clone(), part]}));
    assert_eq!(status, 400, "{v}");
}

//! The Mimi audio codec (issue #14) against transformers 5.25.0 `MimiModel`: codes exact and the
//! decoded waveform within a stated bound on a small random-weight checkpoint
//! (`tests/fixtures/mimi/`, written by `tests/reference/make_mimi_reference.py`), the published
//! shapes load, and every malformed checkpoint or request is one typed error, never a panic.

use std::path::PathBuf;

use crate::common::*;
use ernie_runtime::model::audio_codec::{MimiCodec, MimiConfig, MAX_AUDIO_SECONDS};
use ernie_runtime::{Error, Tensor, Weights};

/// f32 on both sides, only summation order differs; through ~20 conv layers and two transformers
/// the drift is ~1e-6 relative. The decoded clips peak at |x| ≈ 10, so 2e-4 absolute leaves well
/// over an order of magnitude of margin while any wrong formula moves samples by ≥ 1e-2.
const WAVE_ATOL: f32 = 2e-4;

fn tiny() -> PathBuf {
    fixture("mimi/tiny")
}

fn codec() -> MimiCodec {
    MimiCodec::load(&tiny()).unwrap_or_else(|e| panic!("loading the Mimi fixture: {e}"))
}


#[test]
fn codes_match_transformers_exactly() {
    let c = codec();
    for clip in ["speech", "chirp", "short"] {
        let (pcm, _) = mimi_golden(&format!("{clip}.pcm"));
        let want = mimi_golden_codes(&format!("{clip}.codes"));
        let got = c.encode(&pcm, 8).unwrap();
        assert_eq!(got, want, "{clip}: codes differ from transformers");
        // Fewer levels are the prefix (RVQ), and the semantic level comes first.
        assert_eq!(c.encode(&pcm, 3).unwrap(), want[..3].to_vec(), "{clip}: 3-level codes");
        assert_eq!(c.encode(&pcm, 1).unwrap(), want[..1].to_vec(), "{clip}: semantic level");
    }
    // The clips are longer than the sliding window (6 steps at 25 Hz): windowing is exercised.
    assert!(mimi_golden_codes("speech.codes")[0].len() * 2 > 6 && mimi_golden_codes("chirp.codes")[0].len() * 2 > 6);
}

#[test]
fn decoded_waveform_matches_transformers() {
    let c = codec();
    let mut worst = 0.0f32;
    for clip in ["speech", "chirp", "short", "free"] {
        let codes = mimi_golden_codes(&format!("{clip}.codes"));
        let (want, _) = mimi_golden(&format!("{clip}.audio"));
        let got = c.decode(&codes).unwrap();
        assert_eq!(got.len(), codes[0].len() * c.samples_per_frame(), "{clip}: length");
        let d = max_abs_diff(&got, &want);
        eprintln!("{clip}: max |Δ| waveform = {d:.3e} (peak {:.2})", want.iter().fold(0.0f32, |m, v| m.max(v.abs())));
        assert!(d < WAVE_ATOL, "{clip}: max |Δ| {d} ≥ {WAVE_ATOL}");
        worst = worst.max(d);
    }
    // Decoding only the first 3 levels.
    let codes = mimi_golden_codes("speech.codes");
    let (want, _) = mimi_golden("speech.audio_q3");
    let d = max_abs_diff(&c.decode(&codes[..3]).unwrap(), &want);
    assert!(d < WAVE_ATOL, "3-level decode: max |Δ| {d}");
    eprintln!("worst max |Δ| waveform over all clips: {:.3e}", worst.max(d));
}

#[test]
fn decode_then_encode_runs_end_to_end() {
    // Not a transformers property, a sanity one: decode then encode runs end to end on the
    // decoder's own output length (a multiple of the frame size: no extra padding).
    let c = codec();
    let codes = mimi_golden_codes("chirp.codes");
    let audio = c.decode(&codes).unwrap();
    let again = c.encode(&audio, 8).unwrap();
    assert_eq!(again[0].len(), codes[0].len());
}

#[test]
fn request_errors_are_typed() {
    let c = codec();
    let is_request = |r: Result<_, Error>, what: &str| match r {
        Err(Error::Request(msg)) => eprintln!("{what}: {msg}"),
        Err(e) => panic!("{what}: expected Error::Request, got {e}"),
        Ok(_) => panic!("{what}: expected an error"),
    };
    let codes = mimi_golden_codes("short.codes");
    let mut bad = codes.clone();
    bad[3][0] = 64; // codebook size 64
    is_request(c.decode(&bad).map(|_| ()), "code out of range");
    is_request(c.decode(&[]).map(|_| ()), "no levels");
    let mut nine = codes.clone();
    nine.push(vec![0]);
    is_request(c.decode(&nine).map(|_| ()), "9 levels of 8");
    let mut ragged = mimi_golden_codes("speech.codes");
    ragged[5].pop();
    is_request(c.decode(&ragged).map(|_| ()), "ragged levels");
    is_request(c.decode(&[vec![], vec![]]).map(|_| ()), "no frames");
    is_request(c.decode(&[vec![0; c.max_frames() + 1]]).map(|_| ()), "too many frames");

    let (pcm, _) = mimi_golden("short.pcm");
    is_request(c.encode(&[], 8).map(|_| ()), "empty audio");
    is_request(c.encode(&pcm, 0).map(|_| ()), "0 levels");
    is_request(c.encode(&pcm, 9).map(|_| ()), "9 levels");
    let mut nan = pcm.clone();
    nan[17] = f32::NAN;
    is_request(c.encode(&nan, 8).map(|_| ()), "NaN sample");
    let huge = vec![0.0f32; MAX_AUDIO_SECONDS * 24000 + 1];
    is_request(c.encode(&huge, 8).map(|_| ()), "longer than the limit");
    assert_eq!(c.max_samples(), MAX_AUDIO_SECONDS * 24000);
}

/// Rewrites the tiny checkpoint through `edit` into a temp dir.
fn edited(edit: impl Fn(&mut std::collections::BTreeMap<String, RawTensor>)) -> tempfile::TempDir {
    let mut t = read_checkpoint(&tiny());
    edit(&mut t);
    let dir = tempdir();
    write_checkpoint(&tiny(), dir.path(), &t);
    dir
}

#[test]
fn malformed_checkpoints_are_typed_errors() {
    // A missing tensor: listed by name.
    let dir = edited(|t| {
        t.remove("decoder.layers.6.conv.weight");
    });
    match MimiCodec::load(dir.path()) {
        Err(Error::TensorSet { missing, unused }) => {
            assert_eq!(missing, vec!["decoder.layers.6.conv.weight".to_string()]);
            assert!(unused.is_empty());
        }
        other => panic!("missing tensor: {:?}", other.err()),
    }
    // An extra tensor: listed as unused.
    let dir = edited(|t| {
        let x = t["upsample.conv.weight"].clone();
        t.insert("upsample.extra.weight".into(), x);
    });
    assert!(matches!(MimiCodec::load(dir.path()), Err(Error::TensorSet { unused, .. }) if unused == vec!["upsample.extra.weight".to_string()]));
    // A wrong shape.
    let dir = edited(|t| {
        let x = t.get_mut("quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum").unwrap();
        x.shape = vec![16, 64];
    });
    match MimiCodec::load(dir.path()) {
        Err(Error::TensorShape { name, expected, got }) => {
            assert_eq!(name, "quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum");
            assert_eq!((expected, got), (vec![64, 16], vec![16, 64]));
        }
        other => panic!("wrong shape: {:?}", other.err()),
    }
    // Bad config values: one error naming the key.
    for (key, value) in [("num_semantic_quantizers", "8"), ("pad_mode", "\"circular\""), ("hidden_size", "-3"), ("upsampling_ratios", "[8, 6, 5]")] {
        let dir = copy_fixture("mimi/tiny");
        let path = dir.path().join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg[key] = serde_json::from_str(value).unwrap();
        std::fs::write(&path, cfg.to_string()).unwrap();
        match MimiCodec::load(dir.path()) {
            Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
            // Dropping a ratio is a valid config that no longer matches the tensors.
            Err(Error::TensorShape { .. }) | Err(Error::TensorSet { .. }) if key == "upsampling_ratios" => {}
            other => panic!("{key} = {value}: {:?}", other.err()),
        }
    }
    // No config, a truncated safetensors file, invalid JSON.
    let dir = copy_fixture("mimi/tiny");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(matches!(MimiCodec::load(dir.path()), Err(Error::Io { .. })));
    let dir = copy_fixture("mimi/tiny");
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(MimiCodec::load(dir.path()), Err(Error::Safetensors { .. })));
    let dir = copy_fixture("mimi/tiny");
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": \"mimi\",").unwrap();
    assert!(matches!(MimiCodec::load(dir.path()), Err(Error::Json { .. })));
}

/// The published kyutai/mimi shapes (`MimiConfig()` defaults, 350 tensors, 96 M values): the
/// loader asks for exactly the names and shapes transformers writes, and a frame runs through.
#[test]
fn published_mimi_shapes_load_and_run() {
    let dir = fixture("mimi/real-shapes");
    let cfg_v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = MimiConfig::from_json(&cfg_v).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_quantizers, cfg.codebook_size, cfg.frame_rate), (512, 32, 2048, 12.5));
    let shapes: std::collections::BTreeMap<String, Vec<usize>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shapes.json")).unwrap()).unwrap();
    // bf16 zeros keep the test's memory near 200 MB; cluster_usage stays 0 (clamped to eps).
    let tensors = shapes.iter().map(|(n, s)| {
        let data = vec![half::bf16::ZERO; s.iter().product()];
        (n.clone(), Tensor::from_bf16(&data, s.clone()).unwrap())
    });
    let mut w = Weights::from_tensors(tensors);
    let codec = MimiCodec::from_weights(cfg, &mut w).unwrap();
    w.finish().expect("every published tensor is used, none is missing");
    assert_eq!((codec.samples_per_frame(), codec.num_levels()), (1920, 32));
    let codes = codec.encode(&[0.1f32; 1920], 32).unwrap();
    assert_eq!((codes.len(), codes[0].len()), (32, 1));
    let audio = codec.decode(&codes).unwrap();
    assert_eq!(audio.len(), 1920);
    assert!(audio.iter().all(|v| v.is_finite()));
}

/// Streaming is the whole-clip decode cut into pieces: only summation order may differ (the
/// one-row matrix products take the GEMV path), ~1e-6 relative on samples of magnitude ≤ 10.
const STREAM_ATOL: f32 = 5e-5;

#[test]
fn streaming_decode_equals_whole_clip_decode() {
    let c = codec();
    for clip in ["speech", "chirp"] {
        let codes = mimi_golden_codes(&format!("{clip}.codes"));
        let whole = c.decode(&codes).unwrap();
        let frames = codes[0].len();
        // Frame at a time, then uneven chunks (1, 3, 2, 4, ...), past the sliding window.
        for chunks in [vec![1usize; frames], [1, 3, 2, 4].iter().cycle().copied().take(frames).collect()] {
            let mut s = c.decode_stream().unwrap();
            let (mut out, mut f0) = (Vec::new(), 0);
            for n in chunks {
                if f0 >= frames {
                    break;
                }
                let n = n.min(frames - f0);
                let part: Vec<Vec<u32>> = codes.iter().map(|l| l[f0..f0 + n].to_vec()).collect();
                let pcm = s.push(&part).unwrap();
                assert_eq!(pcm.len(), n * c.samples_per_frame());
                out.extend(pcm);
                f0 += n;
            }
            assert_eq!(s.frames(), frames);
            let d = max_abs_diff(&out, &whole);
            eprintln!("{clip}: streaming vs whole-clip max |Δ| = {d:.3e}");
            assert!(d < STREAM_ATOL, "{clip}: streaming decode differs by {d}");
        }
        // A bad push is an error and does not panic.
        let mut s = c.decode_stream().unwrap();
        assert!(matches!(s.push(&[vec![999]]), Err(Error::Request(_))));
    }
}

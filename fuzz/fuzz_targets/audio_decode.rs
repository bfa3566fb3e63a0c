//! Fuzz the whole audio path on arbitrary bytes: container sniffing (WAV — RIFF/RIFX/RF64 — by our
//! reader; FLAC, MP3, Ogg/Vorbis, MP4/AAC, ADPCM WAV by Symphonia inside `catch_unwind`), the
//! header-based limit checks, decoding, mean downmix, rubato resampling to 16 kHz, the Whisper
//! log-mel and the token count. Errors are expected; a panic, abort or sanitizer report is a bug.
//! Limits keep each input fast: at most 1 MiB and 20 s of audio.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokenizers_mm::audio::{decode_audio_bytes, preprocess_decoded, AudioConfig};
use tokenizers_mm::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_file_bytes: 1 << 20, max_audio_seconds: 20.0, ..Limits::default() };
    if let Ok(decoded) = decode_audio_bytes(data, Path::new("fuzz-input"), &limits) {
        assert!(decoded.sample_rate > 0 && !decoded.samples.is_empty());
        // Very low or very high rates make the resampler slow, not wrong: skip them for speed.
        if (100..=384_000).contains(&decoded.sample_rate) {
            let cfg = AudioConfig::default();
            if let Ok(a) = preprocess_decoded(decoded, &cfg) {
                assert_eq!(a.mel.data.len(), a.mel.n_mels * a.mel.n_frames);
                assert!(a.mel.data.iter().all(|v| v.is_finite()));
            }
        }
    }
});

//! Fuzz our WAV reader specifically (`tokenizers-mm/src/audio/wav.rs`): the input's first byte
//! picks the container magic (RIFF, RIFX, RF64, BW64) and the rest becomes the body after
//! `<magic><size>WAVE`, so every run exercises chunk walking, `ds64` sizes, `fmt ` parsing
//! (extensible GUIDs, odd valid-bit counts, block alignments) and sample conversion rather than
//! format sniffing. Errors are expected; a panic is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokenizers_mm::audio::decode_audio_bytes;
use tokenizers_mm::Limits;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let magic: &[u8; 4] = match pick % 4 {
        0 => b"RIFF",
        1 => b"RIFX",
        2 => b"RF64",
        _ => b"BW64",
    };
    let mut file = Vec::with_capacity(body.len() + 12);
    file.extend_from_slice(magic);
    let size = if pick % 4 >= 2 { u32::MAX } else { body.len() as u32 + 4 };
    file.extend_from_slice(&if pick % 4 == 1 { size.to_be_bytes() } else { size.to_le_bytes() });
    file.extend_from_slice(b"WAVE");
    file.extend_from_slice(body);
    let limits = Limits { max_file_bytes: 1 << 20, max_audio_seconds: 600.0, ..Limits::default() };
    if let Ok(decoded) = decode_audio_bytes(&file, Path::new("fuzz.wav"), &limits) {
        assert!(!decoded.samples.is_empty() && decoded.sample_rate > 0);
    }
});

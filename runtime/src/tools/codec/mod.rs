//! `ernie codec`: audio ↔ Mimi codes and latent / BSQ bits → images, as library calls the binary
//! wraps (issue #14 item 2, issue #15 item 2).
//!
//! Audio ([`encode_audio_file`], [`decode_codes_to_wav`]): any file `tokenizers-mm` reads is
//! decoded, downmixed (channel mean) and resampled to the codec rate (identity at 24 kHz), then
//! [`MimiCodec::encode`]; codes JSON ([`CodesJson`]) is `{"codes": [[level 0 per frame], …],
//! "frame_rate", "sample_rate"}`. Decoding streams [`DECODE_CHUNK_FRAMES`] frames at a time
//! through [`MimiCodec::decode_stream`] into a WAV ([`wav`]), so memory stays bounded.
//! Images ([`image`]): a `latent` tensor `[C, h, w]` → [`VisionDecoder::decode`] → RGB8 PNG, and
//! the multi-scale BSQ round trip (image → encoder → residual bits over a scale schedule → PNG).

pub mod image;
pub mod speech;
pub mod wav;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::audio_codec::MimiCodec;
use crate::{Error, Result};
pub use crate::model::audio_codec::{read_audio, read_audio_bytes};
pub use wav::WavFormat;

/// Frames per streamed decode step (2 s at 12.5 Hz): bounds the decoder's activations.
pub const DECODE_CHUNK_FRAMES: usize = 25;

/// The codes file of `ernie codec encode --audio` / `decode --codes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodesJson {
    /// `[levels][frames]`, the semantic level first; every code `< codebook_size`.
    pub codes: Vec<Vec<u32>>,
    /// Code frames per second (12.5 for Mimi).
    pub frame_rate: f64,
    /// Sample rate of the audio the codes stand for, Hz (24000 for Mimi).
    pub sample_rate: usize,
}

/// Encodes an audio file into the first `levels` code levels (all of the codec's when `None`).
///
/// Errors: as [`read_audio`] and [`MimiCodec::encode`] (levels out of range, empty audio, …).
pub fn encode_audio_file(codec: &MimiCodec, path: &Path, levels: Option<usize>) -> Result<CodesJson> {
    let pcm = read_audio(codec, path)?; // [samples] at the codec rate
    let codes = codec.encode(&pcm, levels.unwrap_or(codec.num_levels()))?;
    Ok(CodesJson { codes, frame_rate: codec.frame_rate(), sample_rate: codec.sample_rate() })
}

/// Parses codes JSON: a [`CodesJson`] object (`frame_rate` / `sample_rate` optional) or a bare
/// `[[…], …]` array. `what` names the source in errors.
///
/// Errors ([`Error::Request`]): malformed JSON, a code that is not a non-negative integer below
/// 2³², or a `sample_rate` that is not this codec's.
pub fn parse_codes(codec: &MimiCodec, text: &str, what: &str) -> Result<Vec<Vec<u32>>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Object { codes: Vec<Vec<u32>>, sample_rate: Option<usize> },
        Bare(Vec<Vec<u32>>),
    }
    let parsed: Any = serde_json::from_str(text)
        .map_err(|e| Error::Request(format!("{what}: not codes JSON ({e}); expected {{\"codes\": [[level 0 codes], ...]}} with non-negative integer codes")))?;
    match parsed {
        Any::Object { codes, sample_rate } => {
            if let Some(sr) = sample_rate.filter(|&sr| sr != codec.sample_rate()) {
                return Err(Error::Request(format!("{what}: codes are for {sr} Hz audio, this codec runs at {} Hz", codec.sample_rate())));
            }
            Ok(codes)
        }
        Any::Bare(codes) => Ok(codes),
    }
}

/// Checks a code grid against the codec before any output is written: `1..=Q` levels of equal,
/// non-zero length, every code `< V` (named by level and frame).
fn check_grid(codec: &MimiCodec, codes: &[Vec<u32>]) -> Result<usize> {
    let q = codec.num_levels();
    if codes.is_empty() || codes.len() > q {
        return Err(Error::Request(format!("codes have {} levels; this codec decodes 1..={q}", codes.len())));
    }
    let frames = codes[0].len();
    if frames == 0 {
        return Err(Error::Request("codes to decode have no frames".into()));
    }
    if let Some((l, c)) = codes.iter().enumerate().find(|(_, c)| c.len() != frames) {
        return Err(Error::Request(format!("codec level {l} has {} frames, level 0 has {frames}", c.len())));
    }
    let v = codec.codebook_size();
    for (l, level) in codes.iter().enumerate() {
        if let Some((f, &c)) = level.iter().enumerate().find(|(_, &c)| c as usize >= v) {
            return Err(Error::Request(format!("code {c} at level {l}, frame {f} is out of range (codebook size {v})")));
        }
    }
    Ok(frames)
}

/// Decodes codes `[levels][frames]` into a mono WAV at the codec rate, streaming
/// [`DECODE_CHUNK_FRAMES`] frames at a time (a codec whose config cannot stream is decoded whole,
/// up to [`MimiCodec::max_frames`]). Returns the samples written (`frames · samples_per_frame`).
///
/// Errors: the grid checks of [`MimiCodec::decode`] (before the file is created),
/// [`Error::Io`] writing `out`.
pub fn decode_codes_to_wav(codec: &MimiCodec, codes: &[Vec<u32>], out: &Path, format: WavFormat) -> Result<usize> {
    let frames = check_grid(codec, codes)?;
    let total = frames
        .checked_mul(codec.samples_per_frame())
        .ok_or_else(|| Error::Request(format!("{frames} frames of audio overflow the sample count")))?;
    let rate = u32::try_from(codec.sample_rate()).map_err(|_| Error::Request("codec sample rate out of range".into()))?;
    match codec.decode_stream() {
        Ok(mut stream) => {
            let mut w = wav::WavWriter::create(out, rate, format, total)?;
            for start in (0..frames).step_by(DECODE_CHUNK_FRAMES) {
                let end = (start + DECODE_CHUNK_FRAMES).min(frames);
                let chunk: Vec<Vec<u32>> = codes.iter().map(|l| l[start..end].to_vec()).collect(); // [levels][n]
                w.write(&stream.push(&chunk)?)?;
            }
            w.finish()?;
        }
        Err(_) => {
            let pcm = codec.decode(codes)?; // [frames · samples_per_frame]
            let mut w = wav::WavWriter::create(out, rate, format, pcm.len())?;
            w.write(&pcm)?;
            w.finish()?;
        }
    }
    Ok(total)
}

//! Audio files as the codec's input: decoded by `tokenizers-mm` (WAV natively, other formats
//! through Symphonia), downmixed to mono (channel mean) and resampled to the codec's rate
//! (identity when the file is already at it). Shared by `ernie codec`, `ernie caption --audio`,
//! the server's `input_audio` parts and audio embeddings.

use std::path::Path;

use tokenizers_mm::audio::{decode_audio_bytes, decode_audio_file, resample, DecodedAudio};
use tokenizers_mm::Limits;

use super::{MimiCodec, MAX_AUDIO_SECONDS};
use crate::{Error, Result};

/// Reads an audio file as the codec's input: mono f32 `[samples]` at [`MimiCodec::sample_rate`]
/// (channel mean, then resampled; samples of a file already at that rate pass unchanged).
///
/// Errors: [`Error::Tokenizer`] for an unreadable or undecodable file or one longer than
/// [`MAX_AUDIO_SECONDS`] (refused from its header, before decoding).
pub fn read_audio(codec: &MimiCodec, path: &Path) -> Result<Vec<f32>> {
    to_codec_rate(codec, decode_audio_file(path, &limits())?)
}

/// [`read_audio`] on the bytes of an audio file (a server's upload); `name` (an extension such
/// as `clip.wav`, or none: the decoder then probes the bytes) is the decoder's format hint and
/// names the input in errors.
///
/// Errors: as [`read_audio`].
pub fn read_audio_bytes(codec: &MimiCodec, bytes: &[u8], name: &Path) -> Result<Vec<f32>> {
    to_codec_rate(codec, decode_audio_bytes(bytes, name, &limits())?)
}

/// The decoding limits: at most [`MAX_AUDIO_SECONDS`] of audio (whole-clip encoding holds the
/// clip's activations at once).
fn limits() -> Limits {
    Limits { max_audio_seconds: MAX_AUDIO_SECONDS as f64, ..Limits::default() }
}

/// Decoded (already downmixed) audio resampled to the codec rate.
fn to_codec_rate(codec: &MimiCodec, audio: DecodedAudio) -> Result<Vec<f32>> {
    let rate = u32::try_from(codec.sample_rate()).map_err(|_| Error::Request(format!("codec sample rate {} is out of range", codec.sample_rate())))?;
    Ok(resample(&audio.samples, audio.sample_rate, rate)?)
}

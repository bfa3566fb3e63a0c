//! Audio: file → mono 16 kHz waveform → Whisper log-mel `[n_mels, n_frames]` → token count.
//!
//! Pipeline ([`preprocess_audio`]):
//! 1. [`decode_audio_file`] (Symphonia; RF64/RIFX by `wav.rs`), caps from [`Limits`];
//! 2. downmix to mono by the **mean of the channels** ([`downmix_mean`]);
//! 3. [`resample`] to [`AudioConfig::sample_rate`] (rubato windowed sinc, anti-aliased;
//!    `ceil(n * to / from)` samples);
//! 4. [`MelExtractor`]: transformers `WhisperFeatureExtractor` log-mel (n_fft 400, hop 160,
//!    80 or 128 slaney bins, log10 clamp, 80 dB range, `(x + 4) / 4`);
//! 5. [`audio_token_count`]: how many audio tokens the clip costs at the codec's token rate.
//!
//! Spec: ERNIE 5.0 (`shared/spec/ernie-architecture.md` §1.5) tokenises audio with a 12.5 Hz
//! codec whose first RVQ level is distilled from Whisper-encoder outputs; the Whisper front end
//! here is the input such an encoder expects, and the token count is known before any encoder
//! runs.

mod decode;
mod mel;
mod resample;
mod wav;

use std::path::Path;

pub use crate::limits::MAX_AUDIO_CHANNELS as MAX_CHANNELS;
pub use decode::{decode_audio_bytes, decode_audio_file, downmix_mean, DecodedAudio};
pub use mel::{hertz_to_mel_slaney, log_mel, mel_filter_bank, mel_to_hertz_slaney, LogMel, MelConfig, MelExtractor};
pub use resample::{resample, resampled_len, MAX_EXACT_PHASES};

use serde_json::json;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::stream::{MediaItem, MediaKind, MediaTensor, TokenLayout};

/// ERNIE 5.0's audio codec token rate, Hz (spec §1.5).
pub const ERNIE5_AUDIO_TOKEN_RATE_HZ: f64 = 12.5;

/// Audio preprocessing parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioConfig {
    /// Model sample rate, Hz; every clip is resampled to it (Whisper / ERNIE: 16 000).
    pub sample_rate: u32,
    /// Log-mel front end; its `sample_rate` must equal [`AudioConfig::sample_rate`].
    pub mel: MelConfig,
    /// Audio tokens per second of the codec (ERNIE 5.0: 12.5). Resolved to 1 mHz.
    pub token_rate_hz: f64,
}

impl Default for AudioConfig {
    /// 16 kHz, Whisper 80-bin log-mel without padding, 12.5 tokens/s.
    fn default() -> Self {
        Self { sample_rate: 16_000, mel: MelConfig::whisper(80), token_rate_hz: ERNIE5_AUDIO_TOKEN_RATE_HZ }
    }
}

/// A preprocessed clip: what the audio encoder gets and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioInput {
    /// The file's own sample rate, Hz.
    pub source_sample_rate: u32,
    /// The file's channel count before the downmix.
    pub source_channels: usize,
    /// Codec short name (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`, …).
    pub codec: String,
    /// Mono waveform at [`AudioConfig::sample_rate`], `[n_samples]`, f32.
    pub samples: Vec<f32>,
    /// Rate of `samples`, Hz.
    pub sample_rate: u32,
    /// `samples.len() / sample_rate`, seconds.
    pub duration_s: f64,
    /// Whisper log-mel of `samples`, `[n_mels, n_samples / hop]`.
    pub mel: LogMel,
    /// Audio tokens at the configured token rate ([`audio_token_count`]).
    pub n_tokens: usize,
}

impl AudioInput {
    /// Moves into a stream [`MediaItem`]: tensor = the log-mel `[n_mels, n_frames]` (one
    /// "channel" for statistics), layout = a run of `n_tokens` tokens positioned like text, details
    /// for `ernie inspect` (`source` names the file).
    pub fn into_media_item(self, source: &str) -> MediaItem {
        let mut details = serde_json::Map::new();
        details.insert("codec".into(), json!(self.codec));
        details.insert("source_sample_rate".into(), json!(self.source_sample_rate));
        details.insert("source_channels".into(), json!(self.source_channels));
        details.insert("sample_rate".into(), json!(self.sample_rate));
        details.insert("n_samples".into(), json!(self.samples.len()));
        details.insert("duration_s".into(), json!(self.duration_s));
        details.insert("mel_shape".into(), json!([self.mel.n_mels, self.mel.n_frames]));
        let n = self.n_tokens;
        MediaItem {
            kind: MediaKind::Audio,
            source: source.to_string(),
            tensor: MediaTensor { shape: vec![self.mel.n_mels, self.mel.n_frames], data: self.mel.data, channels: 1 },
            grid_thw: None,
            layout: TokenLayout::Sequence { n },
            details,
        }
    }
}

/// Number of audio tokens a clip of `n_samples` samples at `sample_rate` Hz costs at
/// `token_rate_hz` tokens per second: `ceil(n_samples * rate / sample_rate)`, i.e. one token per
/// started codec frame (a partial last frame is padded by the codec, so it still costs a token).
///
/// Computed exactly in integers with the rate resolved to 1 mHz (`12.5 Hz → 12 500 mHz`), so no
/// float rounding can move an exact multiple to the next token. Returns 0 for an empty clip or a
/// zero rate.
///
/// Worked example (ERNIE 5.0, 12.5 Hz, 16 kHz → one token per 1280 samples = 80 ms = 8 mel
/// frames): the corpus clip `alsa_front_center_48k_s16_mono.wav` has 68 545 samples at 48 kHz
/// (1.428 s) → resampled to `ceil(68 545 · 16 000 / 48 000)` = 22 849 samples → 142 mel frames →
/// `ceil(22 849 · 12.5 / 16 000)` = `ceil(17.85)` = **18 tokens**. A clip of exactly 2.0 s
/// (32 000 samples) costs exactly 25 tokens; one more sample costs 26.
pub fn audio_token_count(n_samples: usize, sample_rate: u32, token_rate_hz: f64) -> usize {
    if n_samples == 0 || sample_rate == 0 || !token_rate_hz.is_finite() || token_rate_hz <= 0.0 {
        return 0;
    }
    let rate_mhz = (token_rate_hz * 1000.0).round() as u128;
    let num = n_samples as u128 * rate_mhz;
    let den = u128::from(sample_rate) * 1000;
    usize::try_from(num.div_ceil(den)).unwrap_or(usize::MAX)
}

/// Decode → mono → resample → log-mel → token count, for one file (see module docs).
///
/// Errors: [`Error::Io`], [`Error::LimitExceeded`], [`Error::AudioDecode`],
/// [`Error::InvalidConfig`] (mel sample rate ≠ model rate, zero rates).
pub fn preprocess_audio(path: &Path, cfg: &AudioConfig, limits: &Limits) -> Result<AudioInput> {
    let decoded = decode_audio_file(path, limits)?;
    preprocess_decoded(decoded, cfg)
}

/// Steps 3–5 of [`preprocess_audio`] on an already decoded clip.
pub fn preprocess_decoded(decoded: DecodedAudio, cfg: &AudioConfig) -> Result<AudioInput> {
    if cfg.mel.sample_rate != cfg.sample_rate {
        return Err(Error::InvalidConfig {
            field: "mel.sample_rate".into(),
            problem: format!("is {} but the model rate is {}", cfg.mel.sample_rate, cfg.sample_rate),
        });
    }
    let samples = resample(&decoded.samples, decoded.sample_rate, cfg.sample_rate)?;
    let mel = MelExtractor::new(&cfg.mel)?.compute(&samples)?;
    let n_tokens = audio_token_count(samples.len(), cfg.sample_rate, cfg.token_rate_hz);
    Ok(AudioInput {
        source_sample_rate: decoded.sample_rate,
        source_channels: decoded.channels,
        codec: decoded.codec,
        duration_s: samples.len() as f64 / f64::from(cfg.sample_rate),
        sample_rate: cfg.sample_rate,
        samples,
        mel,
        n_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_count_worked_example() {
        assert_eq!(audio_token_count(22_849, 16_000, 12.5), 18);
        assert_eq!(audio_token_count(32_000, 16_000, 12.5), 25);
        assert_eq!(audio_token_count(32_001, 16_000, 12.5), 26);
        assert_eq!(audio_token_count(1, 16_000, 12.5), 1);
        assert_eq!(audio_token_count(0, 16_000, 12.5), 0);
        assert_eq!(audio_token_count(16_000, 16_000, 25.0), 25);
        assert_eq!(audio_token_count(100, 16_000, f64::NAN), 0);
    }
}

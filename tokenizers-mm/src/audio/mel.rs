//! Whisper log-mel front end: transformers' `WhisperFeatureExtractor`, re-implemented.
//!
//! Source: transformers 5.24.0 `models/whisper/feature_extraction_whisper.py`
//! (`_torch_extract_fbank_features`, the path taken whenever torch is installed) and
//! `audio_utils.py` (`mel_filter_bank`, `hertz_to_mel`, `mel_to_hertz`,
//! `_create_triangular_filter_bank`). Step by step, for a mono waveform `x` of `n` samples at
//! 16 kHz (f32, nominally in [-1, 1]):
//!
//! 1. optional padding / truncation to `pad_to_samples` (the extractor's default call pads with
//!    zeros to 30 s = 480 000 samples; [`MelConfig::pad_to_samples`] = `None` keeps the clip's own
//!    length, like `padding="longest"` for one clip);
//! 2. `torch.stft(x, n_fft=400, hop_length=160, window=hann_window(400), center=True,
//!    pad_mode="reflect")`: reflect-pad 200 samples each side, `1 + n / 160` frames;
//! 3. power spectrum `|X|²` of bins `0..=200`, **dropping the last frame** (`stft[..., :-1]`), so
//!    `n_frames = n / 160` (integer division);
//! 4. `mel = filters.T @ power` with the slaney-scale, slaney-normalised triangular filter bank
//!    (0 – 8000 Hz, `n_mels` filters);
//! 5. `log10(max(mel, 1e-10))`, then `max(v, global_max - 8)` (80 dB dynamic range), then
//!    `(v + 4) / 4`.
//!
//! Worked example: 1.0 s at 16 kHz = 16 000 samples → reflect-padded to 16 400 → 101 STFT frames
//! → 100 mel frames (one per 10 ms hop) → output `[n_mels, 100]`.
//!
//! Numerics: everything here runs in f64 (filters, window, FFT, log) and is rounded to f32 once at
//! the end; the reference runs the STFT and matmul in f32. Measured difference against the
//! recorded goldens is stated in `tests/audio_video_parity.rs` (`MEL_ATOL`).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{Error, Result};

/// Parameters of the log-mel front end. [`MelConfig::whisper`] gives the Whisper values.
#[derive(Clone, Debug, PartialEq)]
pub struct MelConfig {
    /// Sample rate the waveform must already have, Hz (Whisper: 16 000).
    pub sample_rate: u32,
    /// FFT size and window length, samples (Whisper: 400 = 25 ms).
    pub n_fft: usize,
    /// Hop between frames, samples (Whisper: 160 = 10 ms).
    pub hop_length: usize,
    /// Number of mel filters (Whisper v1/v2: 80; large-v3: 128).
    pub n_mels: usize,
    /// Highest filter edge, Hz (Whisper: 8000 = Nyquist at 16 kHz).
    pub f_max: f64,
    /// Zero-pad / truncate the waveform to this many samples first (`Some(480_000)` reproduces the
    /// extractor's default 30 s call); `None` uses the clip as it is.
    pub pad_to_samples: Option<usize>,
}

impl MelConfig {
    /// Whisper's front end with `n_mels` bins (80 or 128), no padding.
    pub fn whisper(n_mels: usize) -> Self {
        Self { sample_rate: 16_000, n_fft: 400, hop_length: 160, n_mels, f_max: 8000.0, pad_to_samples: None }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, problem: &str| {
            Err(Error::InvalidConfig { field: field.to_string(), problem: problem.to_string() })
        };
        if self.n_fft < 2 || self.n_fft > 1 << 16 {
            return bad("n_fft", "must be in 2..=65536");
        }
        if self.hop_length == 0 {
            return bad("hop_length", "must be > 0");
        }
        if self.n_mels == 0 || self.n_mels > 1024 {
            return bad("n_mels", "must be in 1..=1024");
        }
        if self.sample_rate == 0 || self.f_max.is_nan() || self.f_max <= 0.0 {
            return bad("sample_rate/f_max", "must be > 0");
        }
        Ok(())
    }
}

/// A log-mel spectrogram, row-major `[n_mels, n_frames]`, f32, Whisper-normalised (typically in
/// about [-1.5, 1.5]; `(log10(power) + 4) / 4`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogMel {
    /// Number of mel bins (rows).
    pub n_mels: usize,
    /// Number of 10 ms frames (columns).
    pub n_frames: usize,
    /// `data[m * n_frames + t]`, length `n_mels * n_frames`.
    pub data: Vec<f32>,
}

impl LogMel {
    /// Value of bin `m` at frame `t`, or `None` out of range.
    pub fn get(&self, m: usize, t: usize) -> Option<f32> {
        if m < self.n_mels && t < self.n_frames {
            self.data.get(m * self.n_frames + t).copied()
        } else {
            None
        }
    }
}

/// The slaney mel scale (transformers `hertz_to_mel(.., "slaney")`, librosa `htk=False`): linear
/// below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4).
pub fn hertz_to_mel_slaney(hz: f64) -> f64 {
    const MIN_LOG_HERTZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 27.0 / 6.4f64.ln();
    if hz >= MIN_LOG_HERTZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HERTZ).ln() * logstep
    } else {
        3.0 * hz / 200.0
    }
}

/// Inverse of [`hertz_to_mel_slaney`].
pub fn mel_to_hertz_slaney(mel: f64) -> f64 {
    const MIN_LOG_HERTZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HERTZ * (logstep * (mel - MIN_LOG_MEL)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// numpy `linspace(start, stop, num)` (endpoint included): `start + i * step`, last = `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// Slaney mel filter bank, row-major `[n_mels, n_freq]` with `n_freq = n_fft / 2 + 1`, f64.
///
/// transformers `mel_filter_bank(num_frequency_bins=n_freq, num_mel_filters=n_mels,
/// min_frequency=0, max_frequency=f_max, sampling_rate, norm="slaney", mel_scale="slaney")`
/// (stored there transposed, `[n_freq, n_mels]`): `n_mels + 2` edges evenly spaced in mel, the
/// triangle `max(0, min(down, up))` evaluated at `linspace(0, sr // 2, n_freq)` Hz, each filter
/// scaled by `2 / (f[m+2] - f[m])` (constant energy per channel).
pub fn mel_filter_bank(n_freq: usize, n_mels: usize, sample_rate: u32, f_min: f64, f_max: f64) -> Vec<f64> {
    let mel_edges = linspace(hertz_to_mel_slaney(f_min), hertz_to_mel_slaney(f_max), n_mels + 2);
    let f: Vec<f64> = mel_edges.iter().map(|&m| mel_to_hertz_slaney(m)).collect(); // [n_mels + 2]
    let fft_freqs = linspace(0.0, f64::from(sample_rate / 2), n_freq); // [n_freq]
    let mut filters = vec![0.0f64; n_mels * n_freq]; // [n_mels, n_freq]
    for m in 0..n_mels {
        let enorm = 2.0 / (f[m + 2] - f[m]);
        for (k, &fk) in fft_freqs.iter().enumerate() {
            let down = -(f[m] - fk) / (f[m + 1] - f[m]);
            let up = (f[m + 2] - fk) / (f[m + 2] - f[m + 1]);
            filters[m * n_freq + k] = 0.0f64.max(down.min(up)) * enorm;
        }
    }
    filters
}

/// Reusable log-mel extractor: the filter bank, window and FFT plan are built once.
pub struct MelExtractor {
    cfg: MelConfig,
    /// `[n_mels, n_freq]`, f64.
    filters: Vec<f64>,
    /// Periodic Hann window, `[n_fft]` (`torch.hann_window(n_fft)`).
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl MelExtractor {
    /// Builds the filter bank, window and FFT plan.
    ///
    /// Errors: [`Error::InvalidConfig`] for a zero hop, `n_fft < 2`, absurd `n_mels`.
    pub fn new(cfg: &MelConfig) -> Result<Self> {
        cfg.validate()?;
        let n_freq = cfg.n_fft / 2 + 1;
        let filters = mel_filter_bank(n_freq, cfg.n_mels, cfg.sample_rate, 0.0, cfg.f_max);
        let n = cfg.n_fft as f64;
        let window =
            (0..cfg.n_fft).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos()).collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        Ok(Self { cfg: cfg.clone(), filters, window, fft })
    }

    /// The configuration this extractor was built with.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of output frames for `n_samples` input samples: `padded_len / hop_length`.
    pub fn n_frames(&self, n_samples: usize) -> usize {
        self.cfg.pad_to_samples.unwrap_or(n_samples) / self.cfg.hop_length
    }

    /// Log-mel spectrogram `[n_mels, n_samples / hop]` of a mono waveform at `cfg.sample_rate`.
    ///
    /// A waveform shorter than `n_fft / 2 + 1` samples cannot be reflect-padded (torch raises);
    /// here it is zero-extended to that length first, so even a 1-sample clip yields features.
    /// An empty waveform gives `n_frames = 0` (an empty `data`). Non-finite samples are treated as
    /// 0 (a corrupt float WAV must not poison the global max).
    pub fn compute(&self, samples: &[f32]) -> Result<LogMel> {
        let (n_fft, hop, n_mels) = (self.cfg.n_fft, self.cfg.hop_length, self.cfg.n_mels);
        let n_freq = n_fft / 2 + 1;
        // 1. pad / truncate.
        let mut x: Vec<f64> = samples.iter().map(|&s| if s.is_finite() { f64::from(s) } else { 0.0 }).collect();
        if let Some(len) = self.cfg.pad_to_samples {
            x.resize(len, 0.0);
        }
        let n_frames = x.len() / hop; // after dropping the last STFT frame
        if n_frames == 0 {
            return Ok(LogMel { n_mels, n_frames: 0, data: Vec::new() });
        }
        let half = n_fft / 2;
        if x.len() <= half {
            x.resize(half + 1, 0.0);
        }
        // 2. reflect padding (numpy/torch "reflect": the edge sample is not repeated).
        let n = x.len();
        let mut padded = Vec::with_capacity(n + 2 * half); // [n + n_fft]
        padded.extend((1..=half).rev().map(|i| x[i]));
        padded.extend_from_slice(&x);
        padded.extend((0..half).map(|i| x[n - 2 - i]));

        // 3. framewise power spectrum, 4. mel projection.
        let mut frame = self.fft.make_input_vec(); // [n_fft]
        let mut spectrum = self.fft.make_output_vec(); // [n_freq] complex
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; n_freq]; // [n_freq]
        let mut mel = vec![0.0f64; n_mels * n_frames]; // [n_mels, n_frames]
        for t in 0..n_frames {
            let start = t * hop;
            for (i, v) in frame.iter_mut().enumerate() {
                *v = padded[start + i] * self.window[i];
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .map_err(|e| Error::Internal { what: format!("real FFT: {e}") })?;
            for (p, c) in power.iter_mut().zip(spectrum.iter()) {
                *p = c.norm_sqr();
            }
            for m in 0..n_mels {
                let row = &self.filters[m * n_freq..(m + 1) * n_freq];
                mel[m * n_frames + t] = row.iter().zip(power.iter()).map(|(w, p)| w * p).sum();
            }
        }
        // 5. log10 with floor, 80 dB dynamic range, Whisper scaling.
        let mut max = f64::NEG_INFINITY;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            max = max.max(*v);
        }
        let floor = max - 8.0;
        let data = mel.iter().map(|&v| ((v.max(floor) + 4.0) / 4.0) as f32).collect();
        Ok(LogMel { n_mels, n_frames, data })
    }
}

/// One-shot [`MelExtractor::compute`].
pub fn log_mel(samples: &[f32], cfg: &MelConfig) -> Result<LogMel> {
    MelExtractor::new(cfg)?.compute(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hertz_slaney(hertz_to_mel_slaney(hz)) - hz).abs() < 1e-9);
        }
    }

    #[test]
    fn frame_count_and_tiny_inputs() {
        let ex = MelExtractor::new(&MelConfig::whisper(80)).unwrap();
        assert_eq!(ex.compute(&vec![0.1; 16_000]).unwrap().n_frames, 100);
        assert_eq!(ex.compute(&[]).unwrap().n_frames, 0);
        assert_eq!(ex.compute(&[0.5; 159]).unwrap().n_frames, 0);
        assert_eq!(ex.compute(&[0.5; 160]).unwrap().n_frames, 1);
        let silent = ex.compute(&[0.0; 1600]).unwrap();
        // all-zero input: log10(1e-10) everywhere → (-10 + 4) / 4
        assert!(silent.data.iter().all(|&v| (v + 1.5).abs() < 1e-6));
    }
}

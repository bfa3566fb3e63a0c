//! Kyutai's Mimi audio codec (24 kHz mono ↔ 12.5 Hz residual-vector-quantised codes), matching
//! transformers 5.25.0 `MimiModel` (`models/mimi/modeling_mimi.py`); ERNIE 5.0's audio tokens
//! (`shared/spec/ernie5-generation.md` §5, issue #14).
//!
//! Encode: PCM `[samples]` → SEANet encoder ([`seanet`], `[H, samples/960]` at 25 Hz) → encoder
//! transformer ([`transformer`]) → stride-2 downsample conv (replicate padding) → latents
//! `[H, frames]` at 12.5 Hz → split RVQ ([`quantizer`]) → codes `[levels][frames]`.
//! Decode: codes → quantizer → depthwise transposed-conv upsample (25 Hz) → decoder transformer
//! → SEANet decoder → PCM `[frames · 1920]` (not trimmed: as `MimiModel.decode` without a
//! padding mask).
//!
//! The checkpoint is a directory with transformers' `config.json` and the flat
//! `model.safetensors` that `save_pretrained` writes (the `kyutai/mimi` layout: `encoder.layers.*`,
//! `encoder_transformer.*`, `downsample.*`, `quantizer.*`, `upsample.*`, `decoder_transformer.*`,
//! `decoder.layers.*`). Every tensor is shape-checked and must be used.

pub mod config;
mod pcm;
mod quantizer;
mod seanet;
mod stream;
mod transformer;

use std::path::Path;

pub use config::{MimiConfig, PadMode};
pub use pcm::{read_audio, read_audio_bytes};
pub use stream::MimiDecodeStream;
use quantizer::SplitRvq;
use seanet::{Conv, ConvTr, Seanet};
use transformer::CodecTransformer;

use crate::ops::conv1d::Conv1dSpec;
use crate::weights::Weights;
use crate::{Error, Result};

/// Longest clip [`MimiCodec::encode`] and [`MimiCodec::decode`] accept, in seconds of audio
/// (60 s = 1 440 000 samples = 750 frames for the published Mimi). Whole-clip processing holds a
/// few `[channels, samples]` activations at once (about 1 GiB at the published sizes for 60 s);
/// longer audio must be cut by the caller.
pub const MAX_AUDIO_SECONDS: usize = 60;

/// The encoder half: SEANet encoder, encoder transformer, downsample.
struct EncoderHalf {
    seanet: Seanet,
    transformer: CodecTransformer,
    downsample: Option<Conv>,
}

/// The decoder half: upsample, decoder transformer, SEANet decoder.
struct DecoderHalf {
    upsample: Option<ConvTr>,
    transformer: CodecTransformer,
    seanet: Seanet,
}

/// A loaded Mimi codec. Immutable after loading; `encode` / `decode` may run concurrently.
pub struct MimiCodec {
    cfg: MimiConfig,
    encoder: Option<EncoderHalf>,
    decoder: Option<DecoderHalf>,
    quantizer: SplitRvq,
}

impl MimiCodec {
    /// Loads `dir/config.json` and `dir/model.safetensors` (or a sharded index).
    ///
    /// Errors: [`Error::Io`] / [`Error::Json`] for the files, [`Error::Config`] naming a bad
    /// config key, [`Error::Safetensors`] for a malformed file, [`Error::TensorShape`] for a tensor
    /// of the wrong shape, [`Error::TensorSet`] listing every missing and unused tensor.
    pub fn load(dir: &Path) -> Result<MimiCodec> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json { path, source })?;
        let cfg = MimiConfig::from_json(&value)?;
        let mut w = Weights::open(dir)?;
        let codec = MimiCodec::from_weights(cfg, &mut w)?;
        w.finish()?;
        Ok(codec)
    }

    /// Builds the codec from parsed config and opened weights (the caller runs
    /// [`Weights::finish`]; a unified checkpoint may hold other parts).
    ///
    /// Errors: as [`MimiCodec::load`], without the file errors.
    pub fn from_weights(cfg: MimiConfig, w: &mut Weights) -> Result<MimiCodec> {
        let h = cfg.hidden_size;
        let ls = cfg.latent_stride();
        let resample = cfg.has_latent_resample();
        let encoder = if cfg.has_encoder {
            let downsample = if resample {
                let spec = Conv1dSpec { c_in: h, c_out: h, kernel: 2 * ls, stride: ls, dilation: 1, groups: 1 };
                Some(Conv::load(w, "downsample", spec, false, cfg.use_causal_conv, PadMode::Replicate)?)
            } else {
                None
            };
            Some(EncoderHalf {
                seanet: Seanet::load_encoder(w, &cfg)?,
                transformer: CodecTransformer::load(w, "encoder_transformer", &cfg)?,
                downsample,
            })
        } else {
            None
        };
        let decoder = if cfg.has_decoder {
            let upsample = if resample {
                let spec = Conv1dSpec { c_in: h, c_out: h, kernel: 2 * ls, stride: ls, dilation: 1, groups: cfg.upsample_groups };
                Some(ConvTr::load(w, "upsample", spec, false, &cfg)?)
            } else {
                None
            };
            Some(DecoderHalf {
                upsample,
                transformer: CodecTransformer::load(w, "decoder_transformer", &cfg)?,
                seanet: Seanet::load_decoder(w, &cfg)?,
            })
        } else {
            None
        };
        let quantizer = SplitRvq::load(w, &cfg)?;
        Ok(MimiCodec { cfg, encoder, decoder, quantizer })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &MimiConfig {
        &self.cfg
    }

    /// Sample rate of the PCM this codec reads and writes (24000).
    pub fn sample_rate(&self) -> usize {
        self.cfg.sampling_rate
    }

    /// Code frames per second (12.5).
    pub fn frame_rate(&self) -> f64 {
        self.cfg.frame_rate
    }

    /// Audio samples per code frame (1920): `decode` returns `frames · samples_per_frame()`.
    pub fn samples_per_frame(&self) -> usize {
        self.cfg.samples_per_frame()
    }

    /// Quantizer levels Q available (32); `encode` takes `num_semantic_quantizers..=Q`.
    pub fn num_levels(&self) -> usize {
        self.cfg.num_quantizers
    }

    /// Codes per level V (2048): every code is `< V`.
    pub fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    /// The longest input `encode` accepts, in samples ([`MAX_AUDIO_SECONDS`] of audio).
    pub fn max_samples(&self) -> usize {
        MAX_AUDIO_SECONDS * self.cfg.sampling_rate
    }

    /// The most frames `decode` accepts (the frames of [`MimiCodec::max_samples`]).
    pub fn max_frames(&self) -> usize {
        self.max_samples().div_ceil(self.samples_per_frame())
    }

    /// Encodes mono PCM at [`MimiCodec::sample_rate`] (floats, nominally in [-1, 1]) into the codes
    /// of the first `n_levels` quantizers: `[n_levels][ceil(samples / samples_per_frame)]`, the
    /// semantic level(s) first. Equals `MimiModel.encode(pcm[None, None], num_quantizers=n_levels)`.
    ///
    /// Errors ([`Error::Request`]): empty input, more than [`MimiCodec::max_samples`] samples, a
    /// non-finite sample, `n_levels` outside `num_semantic_quantizers..=Q`, or a checkpoint
    /// without the encoder half.
    pub fn encode(&self, pcm: &[f32], n_levels: usize) -> Result<Vec<Vec<u32>>> {
        let enc = self.encoder.as_ref().ok_or_else(|| Error::Request("this Mimi checkpoint has no encoder (encoder_config is null): it cannot encode audio".into()))?;
        let (ns, q) = (self.cfg.num_semantic_quantizers, self.cfg.num_quantizers);
        if n_levels < ns.max(1) || n_levels > q {
            return Err(Error::Request(format!("codec levels: asked for {n_levels}, this codec has {}..={q}", ns.max(1))));
        }
        if pcm.is_empty() {
            return Err(Error::Request("audio to encode is empty".into()));
        }
        if pcm.len() > self.max_samples() {
            return Err(Error::Request(format!(
                "audio to encode has {} samples ({:.1} s); the codec takes at most {MAX_AUDIO_SECONDS} s ({} samples) per call",
                pcm.len(),
                pcm.len() as f64 / self.cfg.sampling_rate as f64,
                self.max_samples()
            )));
        }
        if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
            return Err(Error::Request(format!("audio sample {i} is not finite ({})", pcm[i])));
        }
        let h = self.cfg.hidden_size;
        let (x, t) = enc.seanet.forward(pcm, pcm.len())?; // [H, t] at 25 Hz
        let mut state = enc.transformer.new_state();
        let y = enc.transformer.forward(&transpose(&x, h, t), t, &mut state)?; // [t, H]
        let x = transpose(&y, t, h); // [H, t]
        let (lat, frames) = match &enc.downsample {
            Some(d) => d.forward(&x, t)?, // [H, frames]
            None => (x, t),
        };
        self.quantizer.encode(&transpose(&lat, h, frames), frames, n_levels)
    }

    /// Decodes codes `[levels][frames]` (levels `1..=Q`, the semantic level first, every level the
    /// same length) into mono PCM `[frames · samples_per_frame]` at [`MimiCodec::sample_rate`].
    /// Equals `MimiModel.decode(codes[None]).audio_values`.
    ///
    /// Errors ([`Error::Request`]): no levels or more than Q, no frames, levels of different
    /// lengths, more than [`MimiCodec::max_frames`] frames, a code `≥ V` (named by level and
    /// frame), or a checkpoint without the decoder half.
    pub fn decode(&self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        let dec = self.decoder.as_ref().ok_or_else(|| Error::Request("this Mimi checkpoint has no decoder (decoder_config is null): it cannot decode codes".into()))?;
        let frames = self.check_codes(codes)?;
        let h = self.cfg.hidden_size;
        let q = self.quantizer.decode(codes, frames)?; // [frames, H]
        let x = transpose(&q, frames, h); // [H, frames]
        let (x, t) = match &dec.upsample {
            Some(u) => u.forward(&x, frames)?, // [H, 2·frames]
            None => (x, frames),
        };
        let mut state = dec.transformer.new_state();
        let y = dec.transformer.forward(&transpose(&x, h, t), t, &mut state)?; // [t, H]
        let (audio, _) = dec.seanet.forward(&transpose(&y, t, h), t)?; // [1, samples]
        Ok(audio)
    }

    /// Validates a code grid; returns its frame count.
    fn check_codes(&self, codes: &[Vec<u32>]) -> Result<usize> {
        let q = self.cfg.num_quantizers;
        if codes.is_empty() || codes.len() > q {
            return Err(Error::Request(format!("codec levels: got {}, this codec decodes 1..={q}", codes.len())));
        }
        let frames = codes[0].len();
        if frames == 0 {
            return Err(Error::Request("codes to decode have no frames".into()));
        }
        if let Some((l, c)) = codes.iter().enumerate().find(|(_, c)| c.len() != frames) {
            return Err(Error::Request(format!("codec level {l} has {} frames, level 0 has {frames}", c.len())));
        }
        if frames > self.max_frames() {
            return Err(Error::Request(format!(
                "codes have {frames} frames; the codec decodes at most {} ({MAX_AUDIO_SECONDS} s) per call",
                self.max_frames()
            )));
        }
        let v = self.cfg.codebook_size;
        for (l, level) in codes.iter().enumerate() {
            if let Some((f, &c)) = level.iter().enumerate().find(|(_, &c)| c as usize >= v) {
                return Err(Error::Request(format!("code {c} at level {l}, frame {f} is out of range (codebook size {v})")));
            }
        }
        Ok(frames)
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

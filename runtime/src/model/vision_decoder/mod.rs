//! The image decoder of ERNIE 5.0 generation (spec ernie5-generation §4): the latent-diffusion /
//! FLUX / Infinity convolutional VAE, with diffusers `AutoencoderKL` as the reference, its encoder
//! for round trips, and the BSQ bit codes ([`bsq`]) that NFSP generation accumulates.
//!
//! A `vision_decoder/` directory holds `config.json` ([`VisionDecoderConfig`]) and exactly one of
//! `diffusion_pytorch_model.safetensors`, `model.safetensors`, `ae.safetensors` in LDM, FLUX,
//! Infinity or diffusers spelling ([`names`]).
//!
//! Scaling, as diffusers' pipelines do it (FLUX `pipeline_flux.py`, SD `pipeline_stable_diffusion.py`):
//! - [`VisionDecoder::decode`] takes a *pipeline latent* and computes
//!   `z = latent / scaling_factor + shift_factor`, then `AutoencoderKL.decode(z)` (post_quant_conv →
//!   decoder), then clamps to [−1, 1] (what `VaeImageProcessor.postprocess` does before mapping to
//!   [0, 1]). [`VisionDecoder::decode_raw`] is `AutoencoderKL.decode` alone (unscaled, unclamped).
//! - [`VisionDecoder::encode`] returns `(mean − shift_factor) · scaling_factor` where `mean` is the
//!   first half of `quant_conv(encoder(x))` (the posterior mode, as `latent_dist.mode()`);
//!   [`VisionDecoder::encode_raw`] returns `mean` alone.
//! - [`to_rgb8`] is `VaeImageProcessor.postprocess(output_type="pil")`:
//!   `round_half_even(clamp(x/2 + 0.5, 0, 1) · 255)`.
//!
//! An Infinity-style checkpoint stores `scaling_factor: 1.0` (and no shift), so the NFSP loop's
//! accumulated BSQ latent goes to [`VisionDecoder::decode`] unchanged.

pub mod bsq;
pub mod config;
mod decoder;
mod encoder;
pub mod names;

use std::path::{Path, PathBuf};

pub use config::VisionDecoderConfig;
pub use decoder::Decoder;
pub use encoder::Encoder;

use crate::ops::conv2d::Padding;
use crate::weights::Weights;
use crate::{Error, Result};
use decoder::{Conv, Planes};

/// The weights file names accepted in a `vision_decoder/` directory, in diffusers, HF and FLUX
/// convention.
pub const WEIGHT_FILES: [&str; 3] = ["diffusion_pytorch_model.safetensors", "model.safetensors", "ae.safetensors"];

/// A loaded image decoder (and encoder, when the checkpoint has one).
pub struct VisionDecoder {
    cfg: VisionDecoderConfig,
    post_quant_conv: Option<Conv>,
    decoder: Decoder,
    /// `quant_conv` (if configured) and the encoder; `None` for decoder-only checkpoints.
    encoder: Option<(Option<Conv>, Encoder)>,
}

impl VisionDecoder {
    /// Loads `dir/config.json` and the one weights file of `dir` (see [`WEIGHT_FILES`]).
    ///
    /// The encoder is loaded when any `encoder.*` tensor is present. `quant_conv` without an
    /// encoder is ignored.
    ///
    /// Errors: [`Error::Config`] (bad config, or zero or several weights files), [`Error::Io`],
    /// [`Error::Safetensors`] (malformed file, or two stored names with one meaning),
    /// [`Error::TensorShape`], and [`Error::TensorSet`] listing every missing and unused tensor.
    pub fn load(dir: &Path) -> Result<VisionDecoder> {
        let cfg = VisionDecoderConfig::from_file(&dir.join("config.json"))?;
        let file = weights_file(dir)?;
        let mut w = Weights::from_files(&[file])?;
        let levels = cfg.levels();
        w.rename(|n| names::canonical(n, levels))?;
        let model = VisionDecoder::from_weights(&mut w, cfg)?;
        w.finish()?;
        Ok(model)
    }

    /// Builds the model from tensors already in diffusers spelling (the caller calls
    /// [`Weights::finish`]).
    pub fn from_weights(w: &mut Weights, cfg: VisionDecoderConfig) -> Result<VisionDecoder> {
        let z = cfg.latent_channels;
        let pointwise = |w: &mut Weights, name: &str, c: usize| Conv::load(w, name, c, c, 1, 1, Padding::default());
        let post_quant_conv = if cfg.use_post_quant_conv { Some(pointwise(w, "post_quant_conv", z)?) } else { None };
        let decoder = Decoder::load(w, &cfg)?;
        let has_encoder = w.names_with_prefix("encoder.").next().is_some();
        let encoder = if has_encoder {
            let quant = if cfg.use_quant_conv { Some(pointwise(w, "quant_conv", 2 * z)?) } else { None };
            Some((quant, Encoder::load(w, &cfg)?))
        } else {
            w.take_prefix("quant_conv.");
            None
        };
        Ok(VisionDecoder { cfg, post_quant_conv, decoder, encoder })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &VisionDecoderConfig {
        &self.cfg
    }

    /// `config.scaling_factor`.
    pub fn scaling_factor(&self) -> f32 {
        self.cfg.scaling_factor
    }

    /// `config.shift_factor` (0 when absent).
    pub fn shift_factor(&self) -> f32 {
        self.cfg.shift_factor
    }

    /// Whether [`VisionDecoder::encode`] is available.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Pipeline decode: `latent` `[c, h, w]` f32 (c = `latent_channels`) → pixels `[3, H, W]` in
    /// [−1, 1] (clamped), with `H = h·2^(L−1)`. See the module doc for the scaling.
    ///
    /// Errors: [`Error::ShapeMismatch`] for a wrong channel count or `latent.len() != c·h·w`, or
    /// an empty latent.
    pub fn decode(&self, latent: &[f32], c: usize, h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let (s, t) = (self.cfg.scaling_factor, self.cfg.shift_factor);
        let z: Vec<f32> = latent.iter().map(|&v| v / s + t).collect();
        let (mut x, oh, ow) = self.decode_raw(&z, c, h, w)?;
        x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        Ok((x, oh, ow))
    }

    /// `AutoencoderKL.decode`: `z` `[c, h, w]` → `post_quant_conv` → decoder, unscaled and
    /// unclamped. Errors as [`VisionDecoder::decode`].
    pub fn decode_raw(&self, z: &[f32], c: usize, h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        check_input("vision decoder latent", z.len(), c, h, w, self.cfg.latent_channels)?;
        let mut x = Planes { data: z.to_vec(), c, h, w };
        if let Some(pq) = &self.post_quant_conv {
            x = pq.forward(&x)?;
        }
        let y = self.decoder.forward(&x)?;
        Ok((y.data, y.h, y.w))
    }

    /// Pipeline encode: image `[in_channels, H, W]` in [−1, 1] → latent `[z, h, w]` scaled as a
    /// pipeline stores it, `(mean − shift_factor) · scaling_factor`. Returns `(latent, h, w)`.
    ///
    /// Errors: [`Error::Request`] for a decoder-only checkpoint; [`Error::ShapeMismatch`] for a
    /// wrong channel count or length, or an image smaller than the downsampling convolutions.
    pub fn encode(&self, image: &[f32], c: usize, h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let (mut mean, lh, lw) = self.encode_raw(image, c, h, w)?;
        let (s, t) = (self.cfg.scaling_factor, self.cfg.shift_factor);
        mean.iter_mut().for_each(|v| *v = (*v - t) * s);
        Ok((mean, lh, lw))
    }

    /// `AutoencoderKL.encode(x).latent_dist.mode()`: the posterior mean `[z, h, w]`, unscaled.
    /// Errors as [`VisionDecoder::encode`].
    pub fn encode_raw(&self, image: &[f32], c: usize, h: usize, w: usize) -> Result<(Vec<f32>, usize, usize)> {
        let Some((quant, enc)) = &self.encoder else {
            return Err(Error::Request("this vision_decoder checkpoint has no encoder (no encoder.* tensors)".into()));
        };
        check_input("vision encoder image", image.len(), c, h, w, self.cfg.in_channels)?;
        let mut m = enc.forward(&Planes { data: image.to_vec(), c, h, w })?;
        if let Some(q) = quant {
            m = q.forward(&m)?;
        }
        let n = self.cfg.latent_channels * m.h * m.w;
        m.data.truncate(n); // moments = [mean; logvar]: keep the mean
        Ok((m.data, m.h, m.w))
    }
}

/// `pixels` `[3, H, W]` f32 → interleaved RGB8 `[H, W, 3]`:
/// `round_half_even(clamp(x/2 + 0.5, 0, 1) · 255)` (diffusers `VaeImageProcessor.postprocess`,
/// whose numpy `round` ties to even).
///
/// Errors: [`Error::ShapeMismatch`] when `pixels.len() != 3·h·w`.
pub fn to_rgb8(pixels: &[f32], h: usize, w: usize) -> Result<Vec<u8>> {
    if pixels.len() != 3 * h * w {
        return Err(Error::ShapeMismatch { op: "to_rgb8", expected: format!("[3, {h}, {w}]"), got: format!("{} elements", pixels.len()) });
    }
    let n = h * w;
    let mut out = vec![0u8; 3 * n];
    for (i, px) in out.chunks_mut(3).enumerate() {
        for (ch, o) in px.iter_mut().enumerate() {
            let v = (pixels[ch * n + i] * 0.5 + 0.5).clamp(0.0, 1.0);
            *o = (v * 255.0).round_ties_even() as u8;
        }
    }
    Ok(out)
}

fn check_input(what: &'static str, len: usize, c: usize, h: usize, w: usize, want_c: usize) -> Result<()> {
    if c != want_c || len != c * h * w || h == 0 || w == 0 {
        return Err(Error::ShapeMismatch {
            op: what,
            expected: format!("[{want_c}, h, w] with h, w ≥ 1"),
            got: format!("[{c}, {h}, {w}] holding {len} values"),
        });
    }
    Ok(())
}

/// The one weights file of `dir`.
fn weights_file(dir: &Path) -> Result<PathBuf> {
    let found: Vec<PathBuf> = WEIGHT_FILES.iter().map(|f| dir.join(f)).filter(|p| p.is_file()).collect();
    match found.len() {
        1 => Ok(found[0].clone()),
        0 => Err(Error::Config {
            key: "vision_decoder".into(),
            reason: format!("{} holds none of {}", dir.display(), WEIGHT_FILES.join(", ")),
        }),
        _ => Err(Error::Config {
            key: "vision_decoder".into(),
            reason: format!(
                "{} holds several weights files ({}); keep one",
                dir.display(),
                found.iter().filter_map(|p| p.file_name()).map(|f| f.to_string_lossy().into_owned()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

//! Image generation on an `ernie5` checkpoint (spec `ernie5-generation.md` §3): the prompt, the
//! BOI / unconditional sequences and the visual-generation head around the NFSP loop
//! (`infer/next_scale.rs`). The result is the accumulated latent; the image decoder
//! (`model/vision_decoder/`) turns it into pixels.

use super::{Engine, Prompt};
use crate::config::{ModelConfig, VisualGenConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use crate::error::option_err;
use crate::infer::next_scale::{generate_latent_with, ImageGenOptions, NextScaleOutput};
use crate::model::vision_decoder::{to_rgb8, VisionDecoder, VisionDecoderConfig};
use crate::model::visual_gen::VisualGenHead;
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::{Error, Result};

/// The unconditional sequence's first token (spec §3.5).
const UNCOND_START: &str = "<|begin_of_sentence|>";

impl Engine {
    /// The `visual_generation` section of this checkpoint's config.json.
    ///
    /// Errors: [`Error::Request`] naming the missing part when the checkpoint is not `ernie5` or
    /// has no `visual_generation` section (a property of the checkpoint, not of this build or
    /// device); config errors.
    pub fn visual_generation(&self) -> Result<VisualGenConfig> {
        // TODO(#15): keep the parsed config in the engine (it is read once at load today).
        match ModelConfig::from_dir(self.dir())? {
            ModelConfig::Ernie5(c) => c.visual_generation.ok_or_else(|| {
                Error::Request("this checkpoint's config.json has no visual_generation section: it cannot generate images".into())
            }),
            _ => Err(Error::Request(format!(
                "{} is not an ernie5 checkpoint: it cannot generate images (image generation needs model_type ernie5 with a visual_generation section)",
                self.dir().display()
            ))),
        }
    }

    /// Generates one image latent for `prompt` (chat messages are templated with the generation
    /// prompt; the engine appends BOI): per-scale bits and the final latent `[d, H_f, W_f]`.
    /// Runs on the CPU decoder.
    ///
    /// Errors: as [`Engine::visual_generation`], [`VisualGenHead::load`] and
    /// [`generate_latent`]; [`Error::Request`] when the tokenizer lacks the BOI token or
    /// `<|begin_of_sentence|>` (needed with cfg ≠ 1).
    pub fn generate_image_latent(&self, prompt: &Prompt, opts: &ImageGenOptions) -> Result<NextScaleOutput> {
        self.generate_image_latent_with(prompt, opts, &mut |_, _, _| {})
    }

    /// [`Engine::generate_image_latent`] calling `on_scale(k, scales, seconds)` after each scale
    /// ([`generate_latent_with`]).
    pub fn generate_image_latent_with(&self, prompt: &Prompt, opts: &ImageGenOptions, on_scale: &mut dyn FnMut(usize, usize, f64)) -> Result<NextScaleOutput> {
        let vg = self.visual_generation()?;
        let head = self.visual_gen_head(&vg)?;
        let tok = self.tokenizer()?;
        let id = |t: &str| tok.token_id(t).ok_or_else(|| Error::Request(format!("the tokenizer has no {t} token (visual_generation needs it)")));
        let boi = id(&vg.boi_token)?;
        let mut ids = self.encode_prompt(prompt)?;
        ids.push(boi);
        let uncond = if opts.cfg != 1.0 { vec![id(UNCOND_START)?, boi] } else { vec![] };
        generate_latent_with(&self.model, head, &vg, &ids, &uncond, opts, on_scale)
    }

    /// The visual-generation head, built from the loader's `visual_gen.*` tensors at the first
    /// call and kept. A failed build is not kept (it fails the same way each time).
    ///
    /// Errors: as [`VisualGenHead::load`] (no head, a partial set, a shape that disagrees with
    /// `vg`).
    fn visual_gen_head(&self, vg: &VisualGenConfig) -> Result<&VisualGenHead> {
        if let Some(head) = self.parts.visual_gen_head.get() {
            return Ok(head);
        }
        let mut w = Weights::from_tensors(self.parts.visual_gen_tensors.clone());
        let head = VisualGenHead::load(&mut w, &self.model.cfg, vg)?;
        Ok(self.parts.visual_gen_head.get_or_init(|| head))
    }
}

/// The `vision_decoder/` subdirectory of a checkpoint (spec `ernie5-generation.md` §1).
pub const VISION_DECODER_DIR: &str = "vision_decoder";
/// The `audio_codec/` subdirectory of a checkpoint (spec `ernie5-generation.md` §1).
pub const AUDIO_CODEC_DIR: &str = "audio_codec";

/// The image parts of an `ernie5` checkpoint, each built once and kept (a server builds them at
/// its first image request): the visual-generation head from the tensors the loader handed over,
/// and the image decoder from its folder (the checkpoint's [`VISION_DECODER_DIR`] unless set with
/// [`Engine::set_external_parts`]); and where the audio codec is read from.
#[derive(Default)]
pub(super) struct ExternalParts {
    /// `visual_gen.*` as the loader handed them over (`model::ernie5::load_ernie5`).
    pub(super) visual_gen_tensors: BTreeMap<String, Tensor>,
    /// The head built from them at the first image request.
    visual_gen_head: OnceLock<VisualGenHead>,
    vision_decoder_dir: Option<PathBuf>,
    audio_codec_dir: Option<PathBuf>,
    vision_decoder: OnceLock<VisionDecoder>,
}

impl Engine {
    /// Reads the image decoder from `vision_decoder` and the audio codec from `audio_codec`
    /// instead of the checkpoint's own subfolders (`None` keeps that one): e.g. a real Mimi or
    /// VAE with the demo's language model. Drops an image decoder already loaded. The folders are
    /// read and checked against the config at first use, as the checkpoint's own.
    pub fn set_external_parts(&mut self, vision_decoder: Option<PathBuf>, audio_codec: Option<PathBuf>) {
        if vision_decoder.is_some() {
            self.parts.vision_decoder_dir = vision_decoder;
            self.parts.vision_decoder = OnceLock::new();
        }
        if audio_codec.is_some() {
            self.parts.audio_codec_dir = audio_codec;
        }
    }

    /// The audio codec folder: the one set with [`Engine::set_external_parts`], else the
    /// checkpoint's `audio_codec/`.
    pub fn audio_codec_dir(&self) -> PathBuf {
        self.parts.audio_codec_dir.clone().unwrap_or_else(|| self.dir().join(AUDIO_CODEC_DIR))
    }
}

/// One generated image: 8-bit RGB pixels and the NFSP run that produced them.
#[derive(Clone, Debug)]
pub struct GeneratedImage {
    /// Interleaved RGB `[height, width, 3]` bytes ([`crate::model::vision_decoder::to_rgb8`]).
    pub rgb8: Vec<u8>,
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The NFSP loop's bits, latent `[d, H_f, W_f]`, per-scale seconds and routing.
    pub latent: NextScaleOutput,
    /// Wall seconds of the image decoder (loading excluded).
    pub decoder_seconds: f64,
}

impl Engine {
    /// This checkpoint's image decoder (`vision_decoder/`, or the folder set with
    /// [`Engine::set_external_parts`]), checked against `visual_generation` (`latent_channels ==
    /// bits`). Loaded at the first call and kept: later calls (server requests) reuse it. Two
    /// threads racing on the first call may both load it; one copy is kept.
    ///
    /// Errors: [`Error::Request`] when there is no `vision_decoder/` directory;
    /// [`Error::Config`] for `latent_channels != visual_generation.bits`; as
    /// [`VisionDecoder::load`]. A failed load is not kept: the next call tries again.
    pub fn vision_decoder(&self) -> Result<&VisionDecoder> {
        if let Some(dec) = self.parts.vision_decoder.get() {
            return Ok(dec);
        }
        let vg = self.visual_generation()?;
        let dir = self.vision_decoder_dir()?;
        // The config first: a channel mismatch is named before the weights are read.
        check_decoder(&VisionDecoderConfig::from_file(&dir.join("config.json"))?, &vg)?;
        let dec = VisionDecoder::load(&dir)?;
        Ok(self.parts.vision_decoder.get_or_init(|| dec))
    }

    /// The image sizes this checkpoint generates, `(width, height)` in pixels: the schedule's
    /// final grid times the decoder's downsampling `2^(len(block_out_channels) − 1)`.
    ///
    /// Errors: as [`Engine::vision_decoder`] (config only: the weights are not read).
    pub fn image_sizes(&self) -> Result<Vec<(usize, usize)>> {
        let vg = self.visual_generation()?;
        let cfg = VisionDecoderConfig::from_file(&self.vision_decoder_dir()?.join("config.json"))?;
        check_decoder(&cfg, &vg)?;
        let (h, w) = vg.final_grid();
        let f = cfg.downscale();
        Ok(vec![(w * f, h * f)])
    }

    /// The token grid `(H_f, W_f)` of an image of `width × height` pixels (for
    /// [`ImageGenOptions::grid`]).
    ///
    /// Errors: [`Error::InvalidOption`] (`size`) naming the valid sizes when it is not one;
    /// as [`Engine::image_sizes`].
    pub fn image_grid(&self, width: usize, height: usize) -> Result<(usize, usize)> {
        let sizes = self.image_sizes()?;
        if !sizes.contains(&(width, height)) {
            let valid: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
            return Err(option_err("size", format!("{width}x{height} is not a size this checkpoint generates (valid: {})", valid.join(", "))));
        }
        Ok(self.visual_generation()?.final_grid())
    }

    /// Generates one image: [`Engine::generate_image_latent`], then the image decoder on the
    /// latent as a diffusers pipeline would ([`VisionDecoder::decode`]:
    /// `latent / scaling_factor + shift_factor`, clamp to [−1, 1]), then [`to_rgb8`]. The loop's latent is the unscaled
    /// BSQ sum; Infinity-style decoders store `scaling_factor` 1 and no shift, so it reaches the
    /// decoder unchanged there, and a decoder storing other factors gets the pipeline's scaling.
    ///
    /// Errors: as [`Engine::vision_decoder`] (checked before the loop runs) and
    /// [`Engine::generate_image_latent`]; decoder shape errors.
    pub fn generate_image(&self, prompt: &Prompt, opts: &ImageGenOptions) -> Result<GeneratedImage> {
        self.generate_image_with(prompt, opts, &mut |_, _, _| {})
    }

    /// [`Engine::generate_image`] calling `on_scale(k, scales, seconds)` after each scale.
    pub fn generate_image_with(&self, prompt: &Prompt, opts: &ImageGenOptions, on_scale: &mut dyn FnMut(usize, usize, f64)) -> Result<GeneratedImage> {
        let dec = self.vision_decoder()?;
        let latent = self.generate_image_latent_with(prompt, opts, on_scale)?;
        let t0 = Instant::now();
        let (hf, wf) = latent.grid;
        let (pix, h, w) = dec.decode(&latent.latent, latent.channels, hf, wf)?; // [3, H, W] in [-1, 1]
        let rgb8 = to_rgb8(&pix, h, w)?;
        Ok(GeneratedImage { rgb8, width: w, height: h, latent, decoder_seconds: t0.elapsed().as_secs_f64() })
    }

    fn vision_decoder_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.parts.vision_decoder_dir {
            return existing_dir(dir);
        }
        let dir = self.dir().join(VISION_DECODER_DIR);
        if !dir.is_dir() {
            return Err(Error::Request(
                "this checkpoint has no vision_decoder/: it cannot generate images (add the image decoder, a diffusers AutoencoderKL config.json and weights, as vision_decoder/)".into(),
            ));
        }
        Ok(dir)
    }
}

/// `dir` itself when it is a directory, else [`Error::Io`] naming it.
fn existing_dir(dir: &Path) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    Err(Error::Io { path: dir.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory") })
}

/// `latent_channels` must equal the bits per token (spec §4).
fn check_decoder(cfg: &VisionDecoderConfig, vg: &VisualGenConfig) -> Result<()> {
    if cfg.latent_channels != vg.bits {
        return Err(Error::Config {
            key: "vision_decoder/config.json: latent_channels".into(),
            reason: format!("is {}, but visual_generation.bits is {}: the decoder must take one channel per bit", cfg.latent_channels, vg.bits),
        });
    }
    Ok(())
}

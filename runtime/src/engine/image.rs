//! Image generation on an `ernie5` checkpoint (spec `ernie5-generation.md` §3): the prompt, the
//! BOI / unconditional sequences and the visual-generation head around the NFSP loop
//! (`infer/next_scale.rs`). The result is the accumulated latent; the image decoder
//! (`model/vision_decoder/`) turns it into pixels.

use super::{Engine, Prompt};
use crate::config::{ModelConfig, VisualGenConfig};
use crate::error::unsupported;
use crate::infer::next_scale::{generate_latent, ImageGenOptions, NextScaleOutput};
use crate::model::visual_gen::VisualGenHead;
use crate::{Error, Result};

/// The unconditional sequence's first token (spec §3.5).
const UNCOND_START: &str = "<|begin_of_sentence|>";

impl Engine {
    /// The `visual_generation` section of this checkpoint's config.json.
    ///
    /// Errors: [`Error::Unsupported`] naming the missing part when the checkpoint is not `ernie5`
    /// or has no `visual_generation` section; config errors.
    pub fn visual_generation(&self) -> Result<VisualGenConfig> {
        // TODO(#15): keep the parsed config in the engine (it is read once at load today).
        match ModelConfig::from_dir(self.dir())? {
            ModelConfig::Ernie5(c) => c.visual_generation.ok_or_else(|| {
                unsupported("this checkpoint has no visual_generation section in config.json: it cannot generate images", "use an ernie5 checkpoint with one")
            }),
            _ => Err(unsupported("image generation needs an ernie5 checkpoint", "use an ernie5 checkpoint with a visual_generation section")),
        }
    }

    /// Generates one image latent for `prompt` (chat messages are templated with the generation
    /// prompt; the engine appends BOI): per-scale bits and the final latent `[d, H_f, W_f]`.
    /// Runs on the CPU decoder.
    ///
    /// Errors: as [`Engine::visual_generation`], [`VisualGenHead::open`] and
    /// [`generate_latent`]; [`Error::Request`] when the tokenizer lacks the BOI token or
    /// `<|begin_of_sentence|>` (needed with cfg ≠ 1).
    pub fn generate_image_latent(&self, prompt: &Prompt, opts: &ImageGenOptions) -> Result<NextScaleOutput> {
        let vg = self.visual_generation()?;
        let head = VisualGenHead::open(self.dir(), &self.model.cfg, &vg)?;
        let tok = self.tokenizer()?;
        let id = |t: &str| tok.token_id(t).ok_or_else(|| Error::Request(format!("the tokenizer has no {t} token (visual_generation needs it)")));
        let boi = id(&vg.boi_token)?;
        let mut ids = self.encode_prompt(prompt)?;
        ids.push(boi);
        let uncond = if opts.cfg != 1.0 { vec![id(UNCOND_START)?, boi] } else { vec![] };
        generate_latent(&self.model, &head, &vg, &ids, &uncond, opts)
    }
}

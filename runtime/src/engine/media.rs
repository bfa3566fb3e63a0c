//! The multimodal half of [`Engine`]: media files → [`MediaItem`]s (tokenizers-mm, with the
//! checkpoint's processor configs) → [`TokenStream`] → VL prefill → the ordinary decode loop.
//!
//! ```no_run
//! # use ernie_runtime::{Engine, GenerateRequest, MediaInput};
//! # fn main() -> ernie_runtime::Result<()> {
//! let engine = Engine::load(std::path::Path::new("ERNIE-4.5-VL-28B-A3B-PT"))?;
//! let media = engine.load_media(&[MediaInput::Image("cat.jpg".into())])?;
//! let stream = engine.build_stream(&tokenizers_mm::StreamPrompt::user("Describe the image.", 1, 0, 0), media)?;
//! let out = engine.generate_stream(&stream, &GenerateRequest { sampling: Default::default(), max_new_tokens: 64 }, &mut |t| print!("{t}"), None)?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use tokenizers_mm::image::{ImageProcessor, ImageProcessorConfig};
use tokenizers_mm::video::{load_video, VideoConfig};
use serde_json::{Map, Value as Json};
use tokenizers_mm::{Limits, MediaItem, MmChatTemplate, PositionRule, StreamConfig, StreamPrompt, TemplateSource, TextTokenizer, TokenStream, VideoPlaceholder};

use super::Engine;
use crate::config::{ModelConfig, VlTokenIds};
use crate::infer::prefill::PrefillTrace;
use crate::infer::{GenerateRequest, Generation, Generator};
use crate::model::decoder::Logits;
use crate::model::vision::VisionStack;
use crate::{Error, Result};

/// A media file for a multimodal prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaInput {
    /// An image file (PNG, JPEG, WebP, GIF, BMP, TIFF).
    Image(PathBuf),
    /// A video file (libav formats with the `ffmpeg` feature; GIF always).
    Video(PathBuf),
}

/// What a VL engine holds besides the decoder.
pub struct VlParts {
    /// Vision tower + resampler.
    pub vision: VisionStack,
    /// Image preprocessing from `preprocessor_config.json`.
    pub image: ImageProcessor,
    /// Video preprocessing from `video_preprocessor_config.json`.
    pub video: VideoConfig,
    /// Caps on input files (bytes, pixels, frames), checked before decoding.
    pub limits: Limits,
    /// How the stream lays out video placeholders and 3-D positions.
    pub stream: StreamConfig,
    /// The checkpoint's multimodal chat template (`processor_config.json`, `chat_template.json`,
    /// `chat_template.jinja`, in the processor's order), or the built-in ERNIE-4.5-VL format
    /// when it has none (or has no tokenizer to compile it with).
    pub template: MmChatTemplate,
}

/// How [`Engine::build_stream_with`] renders a chat prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamOptions {
    /// Variables passed to the chat template, as transformers'
    /// `processor.apply_chat_template(..., **kwargs)` and vLLM's `chat_template_kwargs` do
    /// (`{"enable_thinking": true}`). The built-in format reads only `enable_thinking`.
    pub template_kwargs: Map<String, Json>,
}

/// The stream layout a VL checkpoint with these token ids expects: the vLLM / original position
/// rule (spec §3.6), and the HF video placeholder when the config has a distinct `video_token_id`,
/// else the image placeholder (original format).
fn stream_config(tokens: &VlTokenIds) -> StreamConfig {
    let video_placeholder = if tokens.video != tokens.image { VideoPlaceholder::Hf } else { VideoPlaceholder::Original };
    StreamConfig { rule: PositionRule::Ernie45Vl, video_placeholder }
}

/// The stream layout [`Engine::build_stream`] uses for checkpoint `dir`, read from its
/// config.json alone (no weights): what `ernie inspect` shows by default. A directory without a
/// VL config.json (a tokenizer folder, a text checkpoint) gets the transformers 5.x layout (HF
/// placeholder, vLLM / original positions).
///
/// Errors: those of [`ModelConfig::from_dir`] for a config.json that exists but is malformed.
pub fn stream_config_for(dir: &Path) -> Result<StreamConfig> {
    if !dir.join("config.json").exists() {
        return Ok(StreamConfig { rule: PositionRule::Ernie45Vl, video_placeholder: VideoPlaceholder::Hf });
    }
    Ok(match ModelConfig::from_dir(dir)? {
        ModelConfig::Vl(cfg) => stream_config(&cfg.tokens),
        ModelConfig::Text(_) => StreamConfig { rule: PositionRule::Ernie45Vl, video_placeholder: VideoPlaceholder::Hf },
        // ERNIE 5.0: Uni-RoPE positions (spec §1.4), the HF placeholder layout.
        ModelConfig::Ernie5(_) => StreamConfig { rule: PositionRule::UniRope, video_placeholder: VideoPlaceholder::Hf },
    })
}

impl VlParts {
    /// Processor configs from `dir` (`preprocessor_config.json` must exist for a VL checkpoint;
    /// `video_preprocessor_config.json` defaults to the HF processor's values). The stream uses
    /// the vLLM / original position rule (spec §3.6) and the HF video placeholder when the
    /// config has a distinct `video_token_id`, else the image placeholder (original format).
    ///
    /// The chat template is read and compiled once here (with `tok`'s special-token strings).
    /// Errors: processor config errors; [`Error::Tokenizer`] for a template that does not compile.
    pub fn load(dir: &Path, vision: VisionStack, tok: Option<&TextTokenizer>) -> Result<VlParts> {
        let image = ImageProcessor::new(ImageProcessorConfig::from_dir(dir)?);
        let video = VideoConfig::from_dir(dir)?;
        let stream = stream_config(&vision.cfg.tokens);
        let template = match tok {
            Some(tok) => MmChatTemplate::from_dir(dir, tok)?,
            None => MmChatTemplate::builtin(),
        };
        Ok(VlParts { vision, image, video, limits: Limits::default(), stream, template })
    }
}

impl Engine {
    /// Whether the checkpoint reads images and video.
    pub fn is_multimodal(&self) -> bool {
        self.vl.is_some()
    }

    /// The vision side, for a VL checkpoint.
    pub fn vision(&self) -> Option<&VisionStack> {
        self.vl.as_ref().map(|v| &v.vision)
    }

    /// Sets the 3-D position rule of streams built by [`Engine::build_stream`] (default: the
    /// vLLM / original rule; `Ernie45VlHf` reproduces transformers 5.x after videos).
    pub fn set_position_rule(&mut self, rule: PositionRule) {
        if let Some(v) = self.vl.as_mut() {
            v.stream.rule = rule;
        }
    }

    /// The VL parts; [`Error::Request`] for a text-only checkpoint.
    fn vl(&self) -> Result<&VlParts> {
        self.vl.as_ref().ok_or_else(|| Error::Request(format!("{} is a text-only checkpoint; images and video need an ERNIE-4.5-VL checkpoint", self.dir().display())))
    }

    /// Decodes and preprocesses media files with the checkpoint's processor settings.
    ///
    /// Errors: [`Error::Request`] for a text-only checkpoint; [`Error::Tokenizer`] naming the file
    /// for unreadable, malformed, oversized or unsupported media (video files need the `ffmpeg`
    /// feature; GIFs do not).
    pub fn load_media(&self, inputs: &[MediaInput]) -> Result<Vec<MediaItem>> {
        let vl = self.vl()?;
        inputs
            .iter()
            .map(|input| match input {
                MediaInput::Image(p) => Ok(vl.image.process_file(p)?.into_media_item()),
                MediaInput::Video(p) => Ok(load_video(p, &vl.video, &vl.limits)?.into_media_item(&vl.video)?),
            })
            .collect()
    }

    /// Preprocesses an image held in memory (a server's inline `data:` URI); `name` labels it in
    /// errors. Errors: as [`Engine::load_media`].
    pub fn load_image_bytes(&self, bytes: &[u8], name: &str) -> Result<MediaItem> {
        Ok(self.vl()?.image.process_bytes(bytes, Path::new(name))?.into_media_item())
    }

    /// Where the multimodal chat template came from (`TemplateSource::BuiltIn` when the
    /// checkpoint has none); `None` for a text-only checkpoint.
    pub fn template_source(&self) -> Option<&TemplateSource> {
        self.vl.as_ref().map(|v| v.template.source())
    }

    /// [`Engine::build_stream_with`] with no template variables.
    pub fn build_stream(&self, prompt: &StreamPrompt, media: Vec<MediaItem>) -> Result<TokenStream> {
        self.build_stream_with(prompt, &StreamOptions::default(), media)
    }

    /// Lays out a prompt and its media as one token stream (ids, 3-D positions, modality). A
    /// chat prompt is rendered with the checkpoint's chat template and `opts.template_kwargs`,
    /// as transformers' `processor.apply_chat_template(messages, add_generation_prompt=True,
    /// **kwargs)` renders it, each media placeholder then expanded to its token run
    /// (`tokenizers_mm::MmChatTemplate::build_stream`); without a template, the built-in
    /// ERNIE-4.5-VL format.
    ///
    /// Errors: [`Error::Request`] for a text-only checkpoint or one without a tokenizer;
    /// [`Error::Tokenizer`] for a template that fails to render (unknown variable) and for
    /// marker / media count mismatches.
    pub fn build_stream_with(&self, prompt: &StreamPrompt, opts: &StreamOptions, media: Vec<MediaItem>) -> Result<TokenStream> {
        let vl = self.vl()?;
        Ok(vl.template.build_stream(self.tokenizer()?, prompt, &opts.template_kwargs, media, &vl.stream)?)
    }

    /// [`Engine::start_generation`] for a multimodal stream: the VL prefill (vision tower,
    /// resampler, 3-D positions, routing groups), then decode steps as for text. With `keep`,
    /// the prefill's intermediates and routing are recorded there.
    ///
    /// Errors: [`Error::Request`] for a text-only checkpoint or no room for the prompt;
    /// [`Error::Unsupported`] on a CUDA engine (the VL model runs on the CPU); the errors of
    /// [`crate::infer::prefill::prefill`].
    pub fn start_generation_stream<'e>(&'e self, stream: &TokenStream, req: &GenerateRequest, mut keep: Option<&mut PrefillTrace>) -> Result<Generator<'e>> {
        let vl = self.vl()?;
        Generator::start(self.session(), stream.input_ids.len(), req, &mut |runner, cache| {
            runner.prefill_stream(&vl.vision, stream, cache, Logits::Last, keep.as_deref_mut())
        })
    }

    /// Generates from a multimodal stream (see [`Engine::start_generation_stream`]); `on_text`
    /// receives text deltas as they become valid UTF-8.
    pub fn generate_stream(&self, stream: &TokenStream, req: &GenerateRequest, on_text: &mut dyn FnMut(&str), keep: Option<&mut PrefillTrace>) -> Result<Generation> {
        self.start_generation_stream(stream, req, keep)?.run(on_text, &|| false)
    }
}

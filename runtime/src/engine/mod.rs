//! `Engine`: the one API the binaries, the server and the tests use. It owns a loaded model, its
//! GPU copy when there is one, and its tokenizer, turns prompts into ids, and hands requests to
//! `infer/` (which never sees the engine). Every `impl Engine` lives in this folder:
//! `mod.rs` (loading, tokenizer, prompts), `text.rs` (device, generation, speculative decoding),
//! `media.rs` (images and video), `embed.rs` (embeddings), `gguf.rs` (GGUF files).

mod audio;
mod embed;
mod gguf;
mod image;
mod media;
mod text;

use std::path::{Path, PathBuf};

use tokenizers_mm::{ChatMessage, TextTokenizer};

use image::ExternalParts;
pub use image::{GeneratedImage, AUDIO_CODEC_DIR, VISION_DECODER_DIR};
pub use gguf::{gguf_tokenizer, is_gguf_file};
pub use embed::{EmbedInput, EmbedOptions, Embedding, Media, END_OF_SENTENCE};
pub use media::{stream_config_for, MediaInput, StreamOptions, VlParts};

use crate::config::{generation_eos_ids, ModelConfig};
use crate::infer::{Runner, Session};
use crate::model::audio_lm::AudioLm;
use crate::model::ernie5::load_ernie5;
use crate::model::cuda::CudaModel;
use crate::model::decoder::Transformer;
use crate::model::elastic::ElasticOptions;
use crate::{Error, Result};

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Chat messages, rendered with the checkpoint's chat template (generation prompt appended);
    /// message content can never become special-token ids.
    Chat(Vec<ChatMessage>),
    /// Text used as is, special-token text included (`--raw`).
    Raw(String),
    /// Token ids used as is.
    Ids(Vec<u32>),
}

/// A loaded checkpoint ready to generate.
pub struct Engine {
    /// The decoder (the language model of a VL checkpoint).
    pub model: Transformer,
    /// Vision tower, resampler and media preprocessing of a VL checkpoint (`media.rs`).
    vl: Option<VlParts>,
    tokenizer: Option<TextTokenizer>,
    eos_ids: Vec<u32>,
    dir: PathBuf,
    /// GPU copy of `model` after [`Engine::to_device`] (`text.rs`); requests then run there.
    gpu: Option<CudaModel>,
    /// Audio level embeddings and NCP heads of an `ernie5` checkpoint (`audio.rs`).
    audio: Option<AudioLm>,
    /// The visual-generation head's tensors and the head once built, where the image decoder and
    /// the audio codec are read from, and the decoder once loaded (`image.rs`).
    parts: ExternalParts,
    /// Loaded from a GGUF file (`gguf.rs`; `dir` is then the file).
    gguf: bool,
}

impl Engine {
    /// Loads `dir`: config.json, safetensors, and tokenizer files when present; or a GGUF file
    /// ([`Engine::load_gguf`]).
    ///
    /// Errors: every config, checkpoint and tokenizer error, each naming the file and problem.
    pub fn load(dir: &Path) -> Result<Engine> {
        Engine::load_with(dir, &ElasticOptions::default())
    }

    /// [`Engine::load`] as an elastic sub-model (ERNIE 5.0 layers / experts / top-k selection).
    pub fn load_with(dir: &Path, elastic: &ElasticOptions) -> Result<Engine> {
        Engine::load_quant(dir, elastic, None)
    }

    /// [`Engine::load_with`], then, when `quant` is set, weight-only quantisation of the decoder's
    /// projections and LM head (`model/quantize.rs`; CPU only: [`Engine::to_device`] then fails
    /// with [`Error::Unsupported`]).
    ///
    /// A GGUF file instead of a folder is loaded by [`Engine::load_gguf`].
    pub fn load_quant(dir: &Path, elastic: &ElasticOptions, quant: Option<crate::model::quantize::QuantScheme>) -> Result<Engine> {
        if is_gguf_file(dir) {
            return Engine::load_gguf(dir, elastic, quant);
        }
        if !dir.is_dir() {
            let what = if dir.exists() { "not a directory" } else { "no such checkpoint directory" };
            return Err(Error::Io { path: dir.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, what) });
        }
        // config.json is read once (it may be a pipe that a deployment fills late).
        let config = ModelConfig::from_dir(dir)?;
        let mut parts = ExternalParts::default();
        let (mut model, vision, audio) = match &config {
            ModelConfig::Ernie5(c) => {
                let loaded = load_ernie5(dir, c, elastic)?;
                parts.visual_gen_tensors = loaded.visual_gen;
                (loaded.model, None, loaded.audio)
            }
            _ => crate::model::load(dir, &config, elastic).map(|(m, v)| (m, v, None))?,
        };
        if let Some(scheme) = quant {
            crate::model::quantize::quantize_model(&mut model, scheme)?;
        }
        // tokenizer.json, or SentencePiece's tokenizer.model converted in process (issue #12).
        let tokenizer = if TextTokenizer::exists_in(dir) { Some(TextTokenizer::from_dir(dir)?) } else { None };
        let vl = vision.map(|v| VlParts::load(dir, v, tokenizer.as_ref())).transpose()?;
        let mut eos_ids = generation_eos_ids(dir)?.unwrap_or_else(|| model.cfg.eos_token_id.clone());
        if let Some(t) = &tokenizer {
            for id in t.eos_token_ids() {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Engine { model, vl, tokenizer, eos_ids, dir: dir.to_path_buf(), gpu: None, audio, parts, gguf: false })
    }

    /// The text tokenizer. Errors when the checkpoint has neither tokenizer.json nor tokenizer.model.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::Request(format!("{} has no tokenizer (neither tokenizer.json nor tokenizer.model)", self.dir.display())))
    }

    /// The text tokenizer, if the checkpoint has one.
    pub fn tokenizer_opt(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    /// Ids that stop generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Turns a prompt into token ids.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let ids = match prompt {
            Prompt::Chat(messages) => self.tokenizer()?.apply_chat_template(messages, true)?,
            Prompt::Raw(text) => self.tokenizer()?.encode_with_specials(text)?,
            Prompt::Ids(ids) => ids.clone(),
        };
        if ids.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        Ok(ids)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The decoder on the device requests run on: the CPU model, or its GPU copy after
    /// [`Engine::to_device`].
    pub fn runner(&self) -> Runner<'_> {
        match &self.gpu {
            None => Runner::Cpu(&self.model),
            Some(m) => Runner::Cuda(m),
        }
    }

    /// What a request needs from the engine: the runner, the tokenizer, the eos ids.
    pub fn session(&self) -> Session<'_> {
        Session { runner: self.runner(), tokenizer: self.tokenizer.as_ref(), eos_ids: &self.eos_ids }
    }
}

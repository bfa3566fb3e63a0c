//! `Engine`: the one API the binaries, the server and the tests use. It owns a loaded model and
//! its tokenizer, turns prompts into ids, and runs prefill + decode with sampling and stop rules.

use std::path::{Path, PathBuf};

use tokenizers_mm::{ChatMessage, TextTokenizer};

use crate::config::generation_eos_ids;
use crate::decode::{SamplingParams, StopReason};
use crate::elastic::ElasticOptions;
use crate::model::{load_text_model, Transformer};
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

/// A generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub sampling: SamplingParams,
    /// Token budget for new tokens.
    pub max_new_tokens: usize,
}

impl GenerateRequest {
    /// KV-cache positions a generation from a `prompt_len`-token prompt needs: the prompt plus
    /// every generated token but the last (it is never fed back), capped at `max_positions`
    /// (`max_position_embeddings`). Below `prompt_len` means the prompt does not fit.
    pub fn cache_len(&self, prompt_len: usize, max_positions: usize) -> usize {
        prompt_len.saturating_add(self.max_new_tokens.saturating_sub(1)).min(max_positions)
    }
}

/// The result of [`Engine::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// The generated ids only (an eos id that stopped generation included).
    pub token_ids: Vec<u32>,
    /// Detokenised `token_ids`, special tokens skipped (empty without a tokenizer).
    pub text: String,
    pub stop: StopReason,
    /// Wall time of the prompt forward pass, seconds.
    pub prefill_secs: f64,
    /// Wall time of all decode steps, seconds.
    pub decode_secs: f64,
}

/// A loaded checkpoint ready to generate.
pub struct Engine {
    /// The decoder (the language model of a VL checkpoint).
    pub model: Transformer,
    /// Vision tower, resampler and media preprocessing of a VL checkpoint (`vl/engine.rs`).
    pub(crate) vl: Option<crate::vl::engine::VlParts>,
    tokenizer: Option<TextTokenizer>,
    eos_ids: Vec<u32>,
    pub(crate) dir: PathBuf,
    /// GPU copy of `model` after [`Engine::to_device`] (device.rs); `generate` then runs there.
    pub(crate) gpu: Option<crate::cuda::CudaModel>,
}

impl Engine {
    /// Loads `dir`: config.json, safetensors, and tokenizer files when present.
    ///
    /// Errors: every config, checkpoint and tokenizer error, each naming the file and problem.
    pub fn load(dir: &Path) -> Result<Engine> {
        Engine::load_with(dir, &ElasticOptions::default())
    }

    /// [`Engine::load`] as an elastic sub-model (ERNIE 5.0 layers / experts / top-k selection).
    pub fn load_with(dir: &Path, elastic: &ElasticOptions) -> Result<Engine> {
        if !dir.is_dir() {
            let what = if dir.exists() { "not a directory" } else { "no such checkpoint directory" };
            return Err(Error::Io { path: dir.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, what) });
        }
        // config.json is read once (it may be a pipe that a deployment fills late).
        let config: serde_json::Value = crate::weights::read_json(&dir.join("config.json"))?;
        let (model, vl) = if crate::vl::engine::is_vl_config(&config) {
            let (model, vision) = crate::vl::load_vl_model(dir, crate::vl::VlConfig::from_json(&config)?, elastic)?;
            (model, Some(crate::vl::engine::VlParts::load(dir, vision)?))
        } else {
            (load_text_model(dir, &crate::config::TextConfig::from_json(&config)?, elastic)?, None)
        };
        let tokenizer = if dir.join("tokenizer.json").exists() { Some(TextTokenizer::from_dir(dir)?) } else { None };
        let mut eos_ids = generation_eos_ids(dir)?.unwrap_or_else(|| model.cfg.eos_token_id.clone());
        if let Some(t) = &tokenizer {
            for id in t.eos_token_ids() {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Engine { model, vl, tokenizer, eos_ids, dir: dir.to_path_buf(), gpu: None })
    }

    /// The text tokenizer. Errors when the checkpoint has no tokenizer.json.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| Error::Request(format!("{} has no tokenizer.json", self.dir.display())))
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

    /// Generates from `prompt_ids`: one prefill forward over the whole prompt, then one decode
    /// step per token until an eos id or the budget. `on_text` receives text deltas as they become
    /// valid UTF-8 (never when the checkpoint has no tokenizer).
    ///
    /// The steps are [`Engine::start_generation`] and [`crate::Generator::step`], the one decode
    /// loop of the crate (the server drives the same steps itself).
    ///
    /// Errors: [`Error::Request`] for an empty prompt, a prompt with no room under
    /// `max_position_embeddings`, bad sampling values or an id outside the vocabulary.
    pub fn generate(&self, prompt_ids: &[u32], req: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation> {
        self.generate_cancellable(prompt_ids, req, on_text, &|| false)
    }
}

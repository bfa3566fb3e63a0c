//! `Engine`: the one API the binaries, the server and the tests use. It owns a loaded model and
//! its tokenizer, turns prompts into ids, and runs prefill + decode with sampling and stop rules.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokenizers_mm::{ChatMessage, IncrementalDecoder, TextTokenizer};

use crate::config::generation_eos_ids;
use crate::decode::{Sampler, SamplingParams, StopReason};
use crate::elastic::ElasticOptions;
use crate::model::{load_text_model, Logits, Transformer};
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
    pub model: Transformer,
    tokenizer: Option<TextTokenizer>,
    eos_ids: Vec<u32>,
    dir: PathBuf,
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
            return Err(Error::Io { path: dir.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory") });
        }
        let model = load_text_model(dir, elastic)?;
        let tokenizer = if dir.join("tokenizer.json").exists() { Some(TextTokenizer::from_dir(dir)?) } else { None };
        let mut eos_ids = generation_eos_ids(dir)?.unwrap_or_else(|| model.cfg.eos_token_id.clone());
        if let Some(t) = &tokenizer {
            for id in t.eos_token_ids() {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Engine { model, tokenizer, eos_ids, dir: dir.to_path_buf(), gpu: None })
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
    pub fn generate(&self, prompt_ids: &[u32], req: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<Generation> {
        if prompt_ids.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        let cfg = &self.model.cfg;
        // The cache holds the prompt and every generated token but the last (it is never fed back).
        let max_seq = prompt_ids.len().saturating_add(req.max_new_tokens.saturating_sub(1)).min(cfg.max_position_embeddings);
        if prompt_ids.len() > max_seq {
            return Err(Error::Request(format!(
                "prompt of {} tokens leaves no room under max_position_embeddings {}",
                prompt_ids.len(),
                cfg.max_position_embeddings
            )));
        }
        let mut cache = self.new_cache(max_seq)?; // on the engine's device (device.rs)
        let mut sampler = Sampler::new(req.sampling.clone())?;
        let mut detok = match &self.tokenizer {
            Some(t) => Some(IncrementalDecoder::new(t, true)),
            None => None,
        };
        let mut token_ids = Vec::new();
        let mut text = String::new();
        let mut emit = |s: &str, text: &mut String| {
            if !s.is_empty() {
                text.push_str(s);
                on_text(s);
            }
        };

        let t0 = Instant::now();
        let mut logits = if req.max_new_tokens > 0 {
            self.forward(prompt_ids, &mut cache, Logits::Last)?
        } else {
            Vec::new()
        };
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut stop = StopReason::MaxTokens;
        while token_ids.len() < req.max_new_tokens {
            let next = sampler.sample(&logits);
            token_ids.push(next);
            if let Some(d) = detok.as_mut() {
                if let Some(s) = d.push(next)? {
                    emit(&s, &mut text);
                }
            }
            if self.eos_ids.contains(&next) {
                stop = StopReason::Eos;
                break;
            }
            if token_ids.len() == req.max_new_tokens {
                break;
            }
            if cache.len() == cache.capacity() {
                stop = StopReason::ContextLength;
                break;
            }
            logits = self.forward(&[next], &mut cache, Logits::Last)?;
        }
        if let Some(d) = detok.as_mut() {
            let rest = d.finish()?;
            emit(&rest, &mut text);
        }
        Ok(Generation {
            prompt_tokens: prompt_ids.len(),
            token_ids,
            text,
            stop,
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

//! Step-at-a-time generation: [`Generator`] is [`Engine::generate`] cut into its decode steps, so
//! a scheduler can interleave several generations, and a caller can stop one between steps
//! (client gone, stop string seen) without waiting for the token budget.
//!
//! Given the same prompt ids and [`GenerateRequest`], the tokens and text equal
//! [`Engine::generate`]'s (same prefill, same seeded [`Sampler`], same stop rules); the tests in
//! `tests/embed.rs` hold the two to that.

use std::time::Instant;

use tokenizers_mm::IncrementalDecoder;

use crate::decode::{Sampler, StopReason};
use crate::device::DeviceCache;
use crate::engine::{Engine, GenerateRequest, Generation};
use crate::model::Logits;
use crate::trace::Trace;
use crate::{Error, Result};

/// One decode step: the sampled token and the text it completed (may be empty while a multi-byte
/// character is still partial; the final step also carries the decoder's flushed remainder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub token: u32,
    pub text: String,
    /// `Some` on the last step: why generation ended.
    pub stop: Option<StopReason>,
}

/// A generation in progress; created by [`Engine::start_generation`] (which runs the prefill).
pub struct Generator<'e> {
    engine: &'e Engine,
    /// On the engine's device (CPU, or CUDA after `Engine::to_device`).
    cache: DeviceCache,
    sampler: Sampler,
    detok: Option<IncrementalDecoder<'e>>,
    /// `[v]` logits for the next token.
    logits: Vec<f32>,
    token_ids: Vec<u32>,
    text: String,
    max_new_tokens: usize,
    stop: Option<StopReason>,
    prompt_tokens: usize,
    prefill_secs: f64,
    decode_secs: f64,
    /// Routing of every decode step, when [`Generator::record_routing`] asked for it (CPU only).
    routing: Option<Vec<Trace>>,
}

impl Engine {
    /// Validates the request and runs the prefill forward; the returned [`Generator`] yields the
    /// new tokens one [`Generator::step`] at a time.
    ///
    /// Errors: as [`Engine::generate`] (empty prompt, no room under `max_position_embeddings`,
    /// bad sampling values, token ids out of range).
    pub fn start_generation(&self, prompt_ids: &[u32], req: &GenerateRequest) -> Result<Generator<'_>> {
        self.start_with_prefill(prompt_ids.len(), req, &mut |engine, cache| engine.forward(prompt_ids, cache, Logits::Last))
    }

    /// The one way a [`Generator`] starts: checks the budget, makes the cache, runs `prefill`
    /// (which must return the last row's logits `[v]`) unless the budget is 0. Text prompts pass
    /// a token forward; multimodal prompts the VL prefill (`vl/engine.rs`).
    pub(crate) fn start_with_prefill(
        &self,
        prompt_len: usize,
        req: &GenerateRequest,
        prefill: &mut dyn FnMut(&Engine, &mut DeviceCache) -> Result<Vec<f32>>,
    ) -> Result<Generator<'_>> {
        if prompt_len == 0 {
            return Err(Error::Request("the prompt is empty".into()));
        }
        let cfg = &self.model.cfg;
        let max_seq = req.cache_len(prompt_len, cfg.max_position_embeddings);
        if prompt_len > max_seq {
            return Err(Error::Request(format!(
                "prompt of {} tokens leaves no room under max_position_embeddings {}",
                prompt_len, cfg.max_position_embeddings
            )));
        }
        let mut cache = self.new_cache(max_seq)?;
        let sampler = Sampler::new(req.sampling.clone())?;
        let detok = self.tokenizer_opt().map(|t| IncrementalDecoder::new(t, true));
        let t0 = Instant::now();
        let logits = if req.max_new_tokens > 0 {
            prefill(self, &mut cache)? // [v]
        } else {
            Vec::new()
        };
        Ok(Generator {
            engine: self,
            cache,
            sampler,
            detok,
            logits,
            token_ids: Vec::new(),
            text: String::new(),
            max_new_tokens: req.max_new_tokens,
            // A zero budget is finished before it starts, as in `generate`.
            stop: (req.max_new_tokens == 0).then_some(StopReason::MaxTokens),
            prompt_tokens: prompt_len,
            prefill_secs: t0.elapsed().as_secs_f64(),
            decode_secs: 0.0,
            routing: None,
        })
    }

    /// [`Engine::generate`] that asks `should_stop` before every decode step and ends with
    /// [`StopReason::Cancelled`] when it says yes (the tokens so far are kept).
    pub fn generate_cancellable(
        &self,
        prompt_ids: &[u32],
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str),
        should_stop: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        let gen = self.start_generation(prompt_ids, req)?;
        gen.run(on_text, should_stop)
    }
}

impl Generator<'_> {
    /// Steps to the end (or until `should_stop` says yes before a step: [`StopReason::Cancelled`]),
    /// handing each text delta to `on_text`.
    pub fn run(mut self, on_text: &mut dyn FnMut(&str), should_stop: &dyn Fn() -> bool) -> Result<Generation> {
        let gen = &mut self;
        while !gen.is_done() {
            if should_stop() {
                gen.cancel();
                break;
            }
            if let Some(step) = gen.step()? {
                if !step.text.is_empty() {
                    on_text(&step.text);
                }
            }
        }
        Ok(self.finish())
    }
}

impl Generator<'_> {
    /// Samples the next token, detokenises it, and (unless that ended generation) runs its decode
    /// forward. Returns `None` once generation has ended.
    pub fn step(&mut self) -> Result<Option<Step>> {
        if self.stop.is_some() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let next = self.sampler.sample(&self.logits);
        self.token_ids.push(next);
        let mut text = match self.detok.as_mut() {
            Some(d) => d.push(next)?.unwrap_or_default(),
            None => String::new(),
        };
        if self.engine.eos_ids().contains(&next) {
            self.stop = Some(StopReason::Eos);
        } else if self.token_ids.len() >= self.max_new_tokens {
            self.stop = Some(StopReason::MaxTokens);
        } else if self.cache.len() == self.cache.capacity() {
            self.stop = Some(StopReason::ContextLength);
        } else {
            self.logits = match (&mut self.routing, &mut self.cache) {
                (Some(log), DeviceCache::Cpu(c)) => {
                    let mut trace = Trace::default();
                    let logits = self.engine.model.forward(&[next], c, Logits::Last, Some(&mut trace))?;
                    log.push(trace);
                    logits
                }
                _ => self.engine.forward(&[next], &mut self.cache, Logits::Last)?, // [v]
            };
        }
        if self.stop.is_some() {
            // Flush bytes the incremental decoder still holds, as `generate` does after its loop.
            if let Some(d) = self.detok.as_mut() {
                text.push_str(&d.finish()?);
            }
        }
        self.text.push_str(&text);
        self.decode_secs += t0.elapsed().as_secs_f64();
        Ok(Some(Step { token: next, text, stop: self.stop }))
    }

    /// Records the MoE routing of every following decode step (CPU engines; a CUDA engine
    /// records nothing) for [`Generator::take_routing`].
    pub fn record_routing(&mut self) {
        self.routing.get_or_insert_with(Vec::new);
    }

    /// The routing recorded so far, one [`Trace`] per decode forward (each fed token).
    pub fn take_routing(&mut self) -> Vec<Trace> {
        self.routing.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Ends generation now with [`StopReason::Cancelled`] (no-op if it already ended).
    pub fn cancel(&mut self) {
        if self.stop.is_none() {
            self.stop = Some(StopReason::Cancelled);
        }
    }

    /// Whether generation has ended (eos, budget, or [`Generator::cancel`]).
    pub fn is_done(&self) -> bool {
        self.stop.is_some()
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// New tokens so far.
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    /// The result so far; `stop` is `Cancelled` if generation had not ended.
    pub fn finish(self) -> Generation {
        Generation {
            prompt_tokens: self.prompt_tokens,
            token_ids: self.token_ids,
            text: self.text,
            stop: self.stop.unwrap_or(StopReason::Cancelled),
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_secs,
        }
    }
}

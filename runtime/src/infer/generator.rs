//! Step-at-a-time generation: [`Generator`] is one generation cut into its decode steps, so a
//! scheduler can interleave several generations, and a caller can stop one between steps (client
//! gone, stop string seen) without waiting for the token budget.
//!
//! A generator holds what decoding needs, not the engine: a [`Session`] (the [`Runner`], the
//! tokenizer, the eos ids). Given the same prompt ids and [`GenerateRequest`], the tokens and text
//! equal `Engine::generate`'s (it is this loop); the tests in `tests/model/embed.rs` hold the server's
//! step-wise use to that.

use std::time::Instant;

use tokenizers_mm::{IncrementalDecoder, TextTokenizer};

use super::runner::{DeviceCache, Runner};
use super::sample::{Sampler, SamplingParams, StopMatcher, StopReason, StopRule};
use crate::model::decoder::Logits;
use crate::nn::trace::Trace;
use crate::{Error, Result};

/// What a request runs on: the decoder on its device, the tokenizer (for text deltas), the ids
/// that end generation. Cheap to copy; borrowed from the engine.
#[derive(Clone, Copy)]
pub struct Session<'e> {
    /// The decoder on its device.
    pub runner: Runner<'e>,
    /// The text tokenizer, if the checkpoint has one.
    pub tokenizer: Option<&'e TextTokenizer>,
    /// Ids that stop generation.
    pub eos_ids: &'e [u32],
}

impl Session<'_> {
    /// The stop rule of a request with budget `max_new_tokens`.
    pub fn stop_rule(&self, max_new_tokens: usize) -> StopRule {
        StopRule { eos_ids: self.eos_ids.to_vec(), max_new_tokens, stop_strings: Vec::new() }
    }
}

/// A generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// How tokens are picked.
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

/// The result of a generation (`Engine::generate`, [`Generator::finish`]).
#[derive(Clone, Debug)]
pub struct Generation {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// The generated ids only (an eos id that stopped generation included).
    pub token_ids: Vec<u32>,
    /// Detokenised `token_ids`, special tokens skipped (empty without a tokenizer).
    pub text: String,
    /// Why generation ended.
    pub stop: StopReason,
    /// Wall time of the prompt forward pass, seconds.
    pub prefill_secs: f64,
    /// Wall time of all decode steps, seconds.
    pub decode_secs: f64,
}

/// One decode step: the sampled token and the text it completed (may be empty while a multi-byte
/// character is still partial; the final step also carries the decoder's flushed remainder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The sampled token.
    pub token: u32,
    /// Text it completed.
    pub text: String,
    /// `Some` on the last step: why generation ended.
    pub stop: Option<StopReason>,
}

/// A generation in progress; created by [`Generator::start`] (`Engine::start_generation`), which
/// runs the prefill.
pub struct Generator<'e> {
    runner: Runner<'e>,
    rule: StopRule,
    /// The stop strings' matcher (`None` without stop strings: text is never held back).
    matcher: Option<StopMatcher>,
    /// On the runner's device (CPU, or CUDA after `Engine::to_device`).
    cache: DeviceCache,
    sampler: Sampler,
    detok: Option<IncrementalDecoder<'e>>,
    /// `[v]` logits for the next token.
    logits: Vec<f32>,
    token_ids: Vec<u32>,
    text: String,
    stop: Option<StopReason>,
    prompt_tokens: usize,
    prefill_secs: f64,
    decode_secs: f64,
    /// Routing of every decode step, when [`Generator::record_routing`] asked for it.
    routing: Option<Vec<Trace>>,
}

impl<'e> Generator<'e> {
    /// The one way a [`Generator`] starts: checks the budget, makes the cache, runs `prefill`
    /// (which must return the last row's logits `[v]`) unless the budget is 0. Text prompts pass
    /// a token forward; multimodal prompts the VL prefill (`Runner::prefill_stream`).
    ///
    /// Errors: [`Error::Request`] for an empty prompt, no room under `max_position_embeddings`,
    /// bad sampling values; those of `prefill`.
    pub fn start(
        session: Session<'e>,
        prompt_len: usize,
        req: &GenerateRequest,
        prefill: &mut dyn FnMut(&Runner<'e>, &mut DeviceCache) -> Result<Vec<f32>>,
    ) -> Result<Generator<'e>> {
        if prompt_len == 0 {
            return Err(Error::Request("the prompt is empty".into()));
        }
        let cfg = session.runner.cfg();
        let max_seq = req.cache_len(prompt_len, cfg.max_position_embeddings);
        if prompt_len > max_seq {
            return Err(Error::Request(format!(
                "prompt of {} tokens leaves no room under max_position_embeddings {}",
                prompt_len, cfg.max_position_embeddings
            )));
        }
        let mut cache = session.runner.new_cache(max_seq)?;
        let sampler = Sampler::new(req.sampling.clone())?;
        let detok = session.tokenizer.map(|t| IncrementalDecoder::new(t, true));
        let t0 = Instant::now();
        let logits = if req.max_new_tokens > 0 {
            prefill(&session.runner, &mut cache)? // [v]
        } else {
            Vec::new()
        };
        Ok(Generator {
            runner: session.runner,
            rule: session.stop_rule(req.max_new_tokens),
            matcher: None,
            cache,
            sampler,
            detok,
            logits,
            token_ids: Vec::new(),
            text: String::new(),
            // A zero budget is finished before it starts, as in `generate`.
            stop: (req.max_new_tokens == 0).then_some(StopReason::MaxTokens),
            prompt_tokens: prompt_len,
            prefill_secs: t0.elapsed().as_secs_f64(),
            decode_secs: 0.0,
            routing: None,
        })
    }
}

/// Plain generation of `prompt_ids` through the session's runner: one prefill forward over the
/// whole prompt, then [`Generator::step`] until a stop, asking `should_stop` before every step
/// ([`StopReason::Cancelled`] when it says yes; the tokens so far are kept).
///
/// Errors: as [`Generator::start`] and the forward passes.
pub fn generate(
    session: Session<'_>,
    prompt_ids: &[u32],
    req: &GenerateRequest,
    on_text: &mut dyn FnMut(&str),
    should_stop: &dyn Fn() -> bool,
) -> Result<Generation> {
    let gen = Generator::start(session, prompt_ids.len(), req, &mut |runner, cache| runner.forward(prompt_ids, cache, Logits::Last, None))?;
    gen.run(on_text, should_stop)
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
        self.stop = self.rule.after_token(next, self.token_ids.len(), self.cache.len(), self.cache.capacity());
        if self.stop.is_some() {
            // Flush bytes the incremental decoder still holds, as `generate` does after its loop.
            if let Some(d) = self.detok.as_mut() {
                text.push_str(&d.finish()?);
            }
        }
        if let Some(m) = self.matcher.as_mut() {
            // Stop strings: release only text no later delta can turn into one.
            let (safe, hit) = m.push(&text);
            text = safe;
            if hit {
                self.stop = Some(StopReason::StopString);
            } else if self.stop.is_some() {
                text.push_str(&m.finish());
            }
        }
        if self.stop.is_none() {
            self.logits = match &mut self.routing {
                Some(log) => {
                    let mut trace = Trace::default();
                    let logits = self.runner.forward(&[next], &mut self.cache, Logits::Last, Some(&mut trace))?; // [v]
                    log.push(trace);
                    logits
                }
                None => self.runner.forward(&[next], &mut self.cache, Logits::Last, None)?, // [v]
            };
        }
        self.text.push_str(&text);
        self.decode_secs += t0.elapsed().as_secs_f64();
        Ok(Some(Step { token: next, text, stop: self.stop }))
    }

    /// Ends generation just before the first occurrence of any of `stops` in the text (OpenAI's
    /// `stop`; [`StopReason::StopString`]): from now on each step releases only text that no later
    /// delta can turn into a stop string. Empty strings are ignored.
    pub fn stop_at(&mut self, stops: Vec<String>) {
        self.rule.stop_strings = stops;
        self.matcher = self.rule.text_matcher();
    }

    /// Records the MoE routing of every following decode step for [`Generator::take_routing`].
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

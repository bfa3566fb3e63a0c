//! Self-speculative decoding with the checkpoint's MTP head (ERNIE 5.0's "next-group-of-tokens"
//! for text, spec §1.2/§2.5): draft `d` tokens with the MTP module, verify them in one batched
//! forward of the main model, keep the longest accepted prefix plus one token from the main model,
//! and roll both KV caches back past what was rejected.
//!
//! Greedy: a draft is accepted iff it equals the main model's argmax, so the output equals plain
//! greedy decoding token for token. Sampling: the standard speculative-sampling rule (Leviathan et
//! al. 2023; Chen et al. 2023): accept draft `x ~ q` with probability `min(1, p(x)/q(x))`, else
//! draw from `norm(max(0, p − q))`; the output distribution is exactly `p`'s.
//!
//! Device: the draft head and the verify loop run on the CPU decoder. [`generate_speculative`]
//! asks the session's [`super::Runner`] for it; on a GPU runner, [`DraftMode::Auto`] decodes
//! plainly on the GPU and a fixed depth is refused with [`Error::Unsupported`], so a CUDA request
//! never runs on the CPU unasked.

use std::time::Instant;

use tokenizers_mm::IncrementalDecoder;

use super::generator::{generate, GenerateRequest, Generation, Session};
use super::sample::{argmax, Sampler, StopReason};
use crate::error::{option_err, unsupported};
use crate::model::decoder::{Logits, Transformer};
use crate::model::mtp::Mtp;
use crate::nn::kv_cache::KvCache;
use crate::{Error, Result};

/// How many tokens the MTP head drafts per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftMode {
    /// Plain decoding.
    Off,
    /// Always draft this many (≥ 1).
    Fixed(usize),
    /// Draft 1 while it pays: stop drafting once, after [`AUTO_WINDOW`] drafts, fewer than
    /// [`AUTO_MIN_ACCEPT`] of them were accepted (a verify step plus the MTP layer and head cost
    /// more than they save below that on a memory-bound CPU).
    Auto,
}

impl std::str::FromStr for DraftMode {
    type Err = Error;

    /// `auto`, `0` (off) or a depth `N`.
    fn from_str(s: &str) -> Result<DraftMode> {
        match s.trim() {
            "auto" => Ok(DraftMode::Auto),
            "0" | "off" => Ok(DraftMode::Off),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|&d| d <= 16)
                .map(DraftMode::Fixed)
                .ok_or_else(|| option_err("draft_tokens", format!("{n:?} is not auto, 0 or a depth up to 16"))),
        }
    }
}

/// Drafts before `Auto` judges the acceptance rate.
pub const AUTO_WINDOW: usize = 16;
/// Acceptance rate below which `Auto` turns drafting off.
pub const AUTO_MIN_ACCEPT: f64 = 0.3;

/// Draft statistics of a speculative generation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DraftStats {
    /// Tokens the drafter proposed.
    pub drafted: usize,
    /// Of those, tokens the main model accepted.
    pub accepted: usize,
}

impl DraftStats {
    /// `accepted / drafted` (0 when nothing was drafted).
    pub fn accepted_fraction(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// Speculative acceptance of one draft token: `Ok(())` to accept `x`, or `Err(token)` with the
/// replacement drawn from `norm(max(0, p − q))`. `p`, `q`: `[v]` target and draft distributions.
pub fn accept_or_resample(p: &[f32], q: &[f32], x: u32, sampler: &mut Sampler) -> std::result::Result<(), u32> {
    let (px, qx) = (p[x as usize], q[x as usize]);
    if qx > 0.0 && sampler.uniform() * qx < px {
        return Ok(());
    }
    let residual: Vec<f32> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
    if residual.iter().sum::<f32>() <= 0.0 {
        // p == q up to rounding: any draw from p is exact.
        return Err(sampler.sample_from(p));
    }
    Err(sampler.sample_from(&residual))
}

/// A source of draft tokens for [`generate_speculative_with`].
///
/// The main model commits positions in order; before each draft the drafter is told the pairs
/// committed since its last call: `hidden[i]` (`[h]`, main-model hidden after the final norm at
/// position p) with `tokens[i]` (the token at p + 1, the last one not yet run by the main model).
pub trait Drafter {
    /// Consumes the new pairs (`hidden`: `[m, h]`, `tokens`: `[m]`) and drafts up to `d` tokens
    /// that follow the last of `tokens`. Returns the drafts and, when `sampler` is not greedy, the
    /// distribution each was drawn from (`[v]` each). `d` may be 0: then only consume the pairs.
    /// `model` is the main (CPU) decoder: its embedding and head are shared with the MTP head.
    fn draft(&mut self, model: &Transformer, hidden: &[f32], tokens: &[u32], d: usize, sampler: &mut Sampler) -> Result<(Vec<u32>, Vec<Vec<f32>>)>;

    /// Drafting has been turned off for the rest of the generation (pairs may be dropped).
    fn stop_drafting(&mut self) {}
}

/// The MTP head as a [`Drafter`], with its own one-layer KV cache.
pub struct MtpDrafter<'m> {
    /// The draft head.
    pub mtp: &'m Mtp,
    /// Its one-layer KV cache.
    pub cache: KvCache,
    pend_hidden: Vec<f32>,
    pend_tokens: Vec<u32>,
    off: bool,
}

impl<'m> MtpDrafter<'m> {
    /// A drafter over `mtp` with room for `max_seq` positions (the main cache's length plus the
    /// draft depth).
    pub fn new(model: &Transformer, mtp: &'m Mtp, max_seq: usize) -> Result<MtpDrafter<'m>> {
        Ok(MtpDrafter { mtp, cache: mtp.new_cache(model, max_seq)?, pend_hidden: Vec::new(), pend_tokens: Vec::new(), off: false })
    }
}

impl Drafter for MtpDrafter<'_> {
    fn draft(&mut self, model: &Transformer, hidden: &[f32], tokens: &[u32], d: usize, sampler: &mut Sampler) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        if self.off {
            return Ok((Vec::new(), Vec::new()));
        }
        self.pend_hidden.extend_from_slice(hidden);
        self.pend_tokens.extend_from_slice(tokens);
        if d == 0 || self.pend_tokens.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let h = model.cfg.hidden_size;
        let keep = self.cache.len() + self.pend_tokens.len();
        let g = self.mtp.forward(model, &self.pend_hidden, &self.pend_tokens, &mut self.cache)?; // [m, h]
        self.pend_hidden.clear();
        self.pend_tokens.clear();
        let mut g_last = g[g.len() - h..].to_vec(); // [h]
        let (mut drafts, mut dists) = (Vec::with_capacity(d), Vec::new());
        for i in 0..d {
            let q_logits = model.head(&g_last)?; // [v]
            let x = if sampler.is_greedy() {
                argmax(&q_logits)
            } else {
                let q = sampler.distribution(&q_logits);
                let x = sampler.sample_from(&q);
                dists.push(q);
                x
            };
            drafts.push(x);
            if i + 1 < d {
                g_last = self.mtp.forward(model, &g_last, &[x], &mut self.cache)?;
            }
        }
        // Rows written from drafted hiddens are not the plain MTP sequence: drop them.
        self.cache.truncate(keep)?;
        Ok((drafts, dists))
    }

    fn stop_drafting(&mut self) {
        self.off = true;
        self.pend_hidden = Vec::new();
        self.pend_tokens = Vec::new();
    }
}

/// Plain decoding through the session's runner, as a speculative result with no drafts.
fn plain(session: Session<'_>, prompt_ids: &[u32], req: &GenerateRequest, on_text: &mut dyn FnMut(&str)) -> Result<(Generation, DraftStats)> {
    Ok((generate(session, prompt_ids, req, on_text, &|| false)?, DraftStats::default()))
}

/// Generation with MTP self-speculative decoding. `mtp` is the checkpoint's draft head (`None`
/// when it ships none). With [`DraftMode::Off`], or `Auto` without a head or on a GPU runner, it is
/// plain decoding through the session's runner.
///
/// Errors: as plain generation; [`Error::InvalidOption`] (`draft_tokens`) for `Fixed(0)` or
/// `Fixed(d)` without an MTP head; [`Error::Unsupported`] for `Fixed(d)` on a GPU runner (the
/// draft head runs on the CPU only).
pub fn generate_speculative(
    session: Session<'_>,
    mtp: Option<&Mtp>,
    prompt_ids: &[u32],
    req: &GenerateRequest,
    mode: DraftMode,
    on_text: &mut dyn FnMut(&str),
) -> Result<(Generation, DraftStats)> {
    let mtp = match (mode, mtp) {
        (DraftMode::Off, _) | (DraftMode::Auto, None) => return plain(session, prompt_ids, req, on_text),
        (DraftMode::Fixed(0), _) => return Err(option_err("draft_tokens", "0 means off; use Off")),
        (DraftMode::Fixed(_), None) => {
            return Err(option_err("draft_tokens", "drafting needs a checkpoint with MTP tensors (num_nextn_predict_layers > 0)"))
        }
        (_, Some(m)) => m,
    };
    let Some(model) = session.runner.cpu() else {
        return match mode {
            DraftMode::Fixed(_) => Err(unsupported(
                format!("speculative decoding with MTP drafts on {}", session.runner.device()),
                "set draft tokens to auto (plain decoding on the GPU) or 0, or run on the cpu device",
            )),
            _ => plain(session, prompt_ids, req, on_text),
        };
    };
    let depth = match mode {
        DraftMode::Fixed(d) => d,
        _ => 1,
    };
    let cfg = &model.cfg;
    let max_seq = req.cache_len(prompt_ids.len(), cfg.max_position_embeddings);
    if prompt_ids.is_empty() || prompt_ids.len() > max_seq || req.max_new_tokens == 0 {
        return plain(session, prompt_ids, req, on_text);
}
let mut cache = KvCache::new(cfg, max_seq)?;
let mut drafter = MtpDrafter::new(model, mtp, max_seq + depth + 1)?;
generate_speculative_with(session, model, prompt_ids, req, mode, &mut drafter, &mut cache, on_text)
}

/// The speculative loop over any [`Drafter`] and a caller-owned main cache (tests inspect it
/// afterwards) of the CPU decoder `model`: `cache` must be empty with room for the prompt plus
/// `max_new_tokens - 1`. `DraftMode::Off` drafts nothing (plain decoding through this loop).
/// The session gives the tokenizer and the eos ids.
#[allow(clippy::too_many_arguments)]
pub fn generate_speculative_with(
    session: Session<'_>,
    model: &Transformer,
    prompt_ids: &[u32],
    req: &GenerateRequest,
    mode: DraftMode,
    drafter: &mut dyn Drafter,
    cache: &mut KvCache,
    on_text: &mut dyn FnMut(&str),
) -> Result<(Generation, DraftStats)> {
    let cfg = &model.cfg;
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let mut depth = match mode {
        DraftMode::Fixed(d) => d,
        DraftMode::Auto => 1,
        DraftMode::Off => 0,
    };
    if prompt_ids.is_empty() || !cache.is_empty() {
        return Err(Error::Request("speculative decoding needs a prompt and an empty cache".into()));
    }
    let mut sampler = Sampler::new(req.sampling.clone())?;
    let mut detok = session.tokenizer.map(|t| IncrementalDecoder::new(t, true));
    let rule = session.stop_rule(req.max_new_tokens);
    let mut stats = DraftStats::default();
    let (mut token_ids, mut text) = (Vec::new(), String::new());
    let mut emit = |x: u32, token_ids: &mut Vec<u32>, text: &mut String| -> Result<()> {
        token_ids.push(x);
        if let Some(d) = detok.as_mut() {
            if let Some(s) = d.push(x)? {
                text.push_str(&s);
                on_text(&s);
            }
        }
        Ok(())
    };

    let t0 = Instant::now();
    let hidden = model.forward(prompt_ids, cache, Logits::Hidden, None)?; // [n, h]
    let mut next = sampler.sample(&model.head(&hidden[hidden.len() - h..])?);
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // Pairs committed but not yet shown to the drafter: (hidden_p, token_{p+1}).
    let mut new_hidden = hidden;
    let mut new_tokens: Vec<u32> = prompt_ids[1..].iter().copied().chain([next]).collect();

    let stop;
    'outer: loop {
        emit(next, &mut token_ids, &mut text)?;
        if let Some(reason) = rule.after_token(next, token_ids.len(), cache.len(), cache.capacity()) {
            stop = reason;
            break;
        }
        if mode == DraftMode::Auto && depth > 0 && stats.drafted >= AUTO_WINDOW && stats.accepted_fraction() < AUTO_MIN_ACCEPT {
            depth = 0;
            drafter.stop_drafting();
        }
        // Never draft past the token budget or the cache.
        let room = (cache.capacity() - cache.len()).min(req.max_new_tokens - token_ids.len());
        let d = depth.min(room.saturating_sub(1));
        let (drafts, dists) = drafter.draft(model, &new_hidden, &new_tokens, d, &mut sampler)?;
        let drafts = &drafts[..drafts.len().min(d)];

        // Verify `next` and the drafts in one forward of the main model.
        let start = cache.len();
        let inputs: Vec<u32> = [next].into_iter().chain(drafts.iter().copied()).collect();
        let ver_hidden = model.forward(&inputs, cache, Logits::Hidden, None)?; // [d+1, h]
        let ver_logits = model.head(&ver_hidden)?; // [d+1, v]
        let mut accepted = 0;
        let mut correction = None;
        for (i, &x) in drafts.iter().enumerate() {
            let row = &ver_logits[i * v..(i + 1) * v];
            let verdict = if sampler.is_greedy() {
                let best = argmax(row);
                if best == x { Ok(()) } else { Err(best) }
            } else {
                let q = dists.get(i).ok_or_else(|| Error::Request("drafter returned no distribution while sampling".into()))?;
                accept_or_resample(&sampler.distribution(row), q, x, &mut sampler)
            };
            match verdict {
                Ok(()) => accepted += 1,
                Err(t) => {
                    correction = Some(t);
                    break;
                }
            }
        }
        stats.drafted += drafts.len();
        stats.accepted += accepted;
        // All accepted: the last verify row gives a bonus token from the main model.
        let new_token = match correction {
            Some(t) => t,
            None => sampler.sample(&ver_logits[drafts.len() * v..(drafts.len() + 1) * v]),
        };
        // Keep `next` and the accepted drafts in the main cache; roll back the rest.
        cache.truncate(start + 1 + accepted)?;
        new_hidden = ver_hidden[..(accepted + 1) * h].to_vec();
        new_tokens = drafts[..accepted].iter().copied().chain([new_token]).collect();
        for &x in &drafts[..accepted] {
            emit(x, &mut token_ids, &mut text)?;
            // Accepted drafts never reach the budget or fill the cache (the depth is capped by
            // both), so only eos can end generation inside a run of drafts.
            if rule.is_eos(x) {
                stop = StopReason::Eos;
                break 'outer;
            }
        }
        next = new_token;
    }
    if let Some(d) = detok.as_mut() {
        let rest = d.finish()?;
        text.push_str(&rest);
        on_text(&rest);
    }
    let gen = Generation {
        prompt_tokens: prompt_ids.len(),
        token_ids,
        text,
        stop,
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
    };
    Ok((gen, stats))
}

//! Sampling (greedy, temperature, top-k, top-p, seeded) and stopping: the one [`StopRule`] both
//! decode loops (`generator.rs`, `speculative.rs`) apply after every token, and the
//! [`StopMatcher`] that applies stop strings to streamed text (the server).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::{Error, Result};

/// How the next token is picked. `temperature == 0` is greedy (argmax, lowest id on ties).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1.0 = off).
    pub top_p: f32,
    /// Seed of the sampler's random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Errors: [`Error::Request`] for a negative or non-finite temperature, or `top_p` outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::Request(format!("temperature {} must be a finite value >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Request(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        Ok(())
    }
}

/// A seeded sampler: the same params, seed and logits give the same tokens.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `params.seed`. Errors: as [`SamplingParams::validate`].
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// Whether this sampler is greedy (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0
    }

    /// The distribution [`Sampler::sample`] draws from, after temperature, top-k and top-p: `[v]`
    /// probabilities (zero outside the kept set). Greedy: one-hot at the argmax.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f32> {
        let mut dist = vec![0.0f32; logits.len()];
        if self.is_greedy() {
            if !logits.is_empty() {
                dist[argmax(logits) as usize] = 1.0;
            }
            return dist;
        }
        let (idx, probs) = self.kept(logits);
        for (i, p) in idx.into_iter().zip(probs) {
            dist[i as usize] = p;
        }
        dist
    }

    /// Draws an index from `dist` (non-negative weights, not necessarily normalised); the last
    /// positive entry absorbs rounding.
    pub fn sample_from(&mut self, dist: &[f32]) -> u32 {
        let total: f32 = dist.iter().sum();
        let r = self.uniform() * total;
        let mut cum = 0.0;
        let mut last = 0u32;
        for (i, &p) in dist.iter().enumerate() {
            if p > 0.0 {
                cum += p;
                last = i as u32;
                if r < cum {
                    return i as u32;
                }
            }
        }
        last
    }

    /// A uniform draw in [0, 1) from the seeded generator.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    /// Candidate ids (descending logit) and their probabilities after temperature/top-k/top-p.
    fn kept(&self, logits: &[f32]) -> (Vec<u32>, Vec<f32>) {
        let mut idx: Vec<u32> = (0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()).collect();
        if idx.is_empty() {
            return (vec![0], vec![1.0]);
        }
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if self.params.top_k > 0 {
            idx.truncate(self.params.top_k);
        }
        let inv_t = 1.0 / self.params.temperature;
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i as usize] - max) * inv_t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (j, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.params.top_p {
                    keep = j + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        (idx, probs)
    }

    /// Picks a token from `logits` (`[v]`).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let (idx, probs) = self.kept(logits);
        let r: f32 = self.rng.random::<f32>();
        let mut cum = 0.0;
        for (j, p) in probs.iter().enumerate() {
            cum += p;
            if r < cum {
                return idx[j];
            }
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest logit; the lowest index wins ties; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// When generation stops: an eos id, the token budget, or a full KV cache, checked in that order
/// after each emitted token ([`StopRule::after_token`]), and stop strings on the emitted text
/// ([`StopRule::text_matcher`]). Both decode loops use it, so plain and speculative decoding stop
/// at the same token for the same reason; the server's stop strings go through it too
/// (`Generator::stop_at`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRule {
    /// Ids that end generation (config/generation_config eos ids and `<|end_of_sentence|>`).
    pub eos_ids: Vec<u32>,
    /// Token budget.
    pub max_new_tokens: usize,
    /// Strings that end generation just before their first occurrence in the text (OpenAI's
    /// `stop`); empty strings are ignored.
    pub stop_strings: Vec<String>,
}

impl StopRule {
    /// Whether `token` ends generation by itself.
    pub fn is_eos(&self, token: u32) -> bool {
        self.eos_ids.contains(&token)
    }

    /// Why generation ends after emitting `token` as the `n_generated`-th new token with the cache
    /// at `cache_len` of `cache_capacity` positions (a full cache cannot take the token back in);
    /// `None` to go on.
    pub fn after_token(&self, token: u32, n_generated: usize, cache_len: usize, cache_capacity: usize) -> Option<StopReason> {
        if self.is_eos(token) {
            Some(StopReason::Eos)
        } else if n_generated >= self.max_new_tokens {
            Some(StopReason::MaxTokens)
        } else if cache_len >= cache_capacity {
            Some(StopReason::ContextLength)
        } else {
            None
        }
    }

    /// The matcher for the stop strings; `None` when there are none (text is then never held).
    pub fn text_matcher(&self) -> Option<StopMatcher> {
        let stops: Vec<String> = self.stop_strings.iter().filter(|s| !s.is_empty()).cloned().collect();
        (!stops.is_empty()).then(|| StopMatcher::new(stops))
    }
}

/// Stop strings over streamed text: OpenAI semantics (the output ends just before the first
/// occurrence of any stop string, which is not included), without ever releasing text that a
/// later delta could turn into a stop string. The text half of [`StopRule`]
/// ([`StopRule::text_matcher`]); the generator feeds it every text delta.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds `delta`; returns the text that is now safe to emit and whether a stop string matched
    /// (then generation should end and nothing after the match is ever emitted).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.held.push_str(delta);
        // Everything before `held` was checked already, so a match can only start inside `held`.
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep_from = self.partial_match_start();
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, false)
    }

    /// Generation ended without a match: the held tail is ordinary text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_match_start(&self) -> usize {
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An eos id was generated (it is the last id returned).
    Eos,
    /// The token budget was reached.
    MaxTokens,
    /// The sequence reached `max_position_embeddings`.
    ContextLength,
    /// A stop string matched (the text ends just before it): see [`StopRule::stop_strings`].
    StopString,
    /// The caller asked to stop (a client disconnected): see `Engine::generate_cancellable` and
    /// `Generator`.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            let (s, hit) = m.push(d);
            out.push_str(&s);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_rule_order() {
        let rule = StopRule { eos_ids: vec![2], max_new_tokens: 3, stop_strings: vec![] };
        assert_eq!(rule.after_token(2, 3, 9, 9), Some(StopReason::Eos), "eos wins over budget and context");
        assert_eq!(rule.after_token(5, 3, 9, 9), Some(StopReason::MaxTokens), "budget before context");
        assert_eq!(rule.after_token(5, 2, 9, 9), Some(StopReason::ContextLength));
        assert_eq!(rule.after_token(5, 2, 8, 9), None);
        assert!(rule.is_eos(2) && !rule.is_eos(5));
        assert!(rule.text_matcher().is_none(), "no stop strings: no text is held");
        let with = StopRule { stop_strings: vec![String::new(), "END".into()], ..rule };
        let mut m = with.text_matcher().expect("a matcher for \"END\"");
        assert_eq!(m.push("aEN"), ("a".into(), false));
        assert_eq!(m.push("D!"), ("".into(), true));
    }

    #[test]
    fn stop_strings() {
        assert_eq!(run(&[], &["ab", "cd"]), ("abcd".into(), false));
        assert_eq!(run(&["cd"], &["ab", "c", "de"]), ("ab".into(), true));
        assert_eq!(run(&["xyz"], &["ab", "xy", "q"]), ("abxyq".into(), false));
        assert_eq!(run(&["xyz"], &["ab", "xy"]), ("abxy".into(), false));
        assert_eq!(run(&["b", "abc"], &["zab", "c"]), ("za".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "!", "more"]), ("caf".into(), true));
    }

    #[test]
    fn held_text_is_never_emitted_early() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("go ST"), ("go ".into(), false));
        assert_eq!(m.push("O"), ("".into(), false));
        assert_eq!(m.push("p"), ("STOp".into(), false));
    }
}

//! `ernie bench`: llama-bench's two tests on a loaded [`Engine`], so the numbers pair with
//! llama.cpp's in the same run (issue #13, item 6):
//!
//! - `pp{N}`: one forward pass over `N` prompt tokens into an empty cache (llama-bench
//!   `-p N`: prompt processing), tokens/s = `N / time`;
//! - `tg{N}`: `N` one-token forward passes, each appending to the cache (llama-bench `-n N`:
//!   text generation from an empty context), tokens/s = `N / time`.
//!
//! Token ids are drawn uniformly from the vocabulary by a fixed xorshift (llama-bench uses random
//! ids too): routing, hence which experts are read, depends on them, not the timing method.
//! Before the timed repetitions one untimed warm-up of each test runs (as llama-bench's), and
//! the very first pass of the process is timed apart as the first-token latency: a 1-token
//! prompt right after load, which pays whatever page faults the load left (see
//! [`crate::set_prefault`]).

use std::time::Instant;

use crate::engine::Engine;
use crate::model::Logits;
use crate::{Error, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Prompt tokens of the prefill test (0 = skip).
    pub prompt: usize,
    /// Decode steps of the generation test (0 = skip).
    pub generate: usize,
    /// Timed repetitions of each test.
    pub repetitions: usize,
}

/// One test's timings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestTimes {
    /// `pp512`, `tg128`.
    pub name: String,
    /// Tokens per repetition.
    pub tokens: usize,
    /// Seconds of each repetition.
    pub secs: Vec<f64>,
    /// Median tokens/s.
    pub median_tok_s: f64,
}

/// Weight counts of a text config: all of them, and those one decode step reads.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ParamCounts {
    /// Every weight of the decoder and head (embedding counted once when tied).
    pub total: u64,
    /// Read per decoded token: attention, dense FFNs, `top_k` routed + the shared experts of each
    /// MoE layer, routers, the LM head (norms and the one embedding row are negligible and left out).
    pub active: u64,
}

/// [`ParamCounts`] from the config's shapes (spec §2.1). Decode bytes per token at a format of
/// `b` bits per weight are `active · b / 8`: the roofline is bandwidth ÷ that.
pub fn param_counts(cfg: &crate::TextConfig) -> ParamCounts {
    use crate::config::MlpKind;
    let (h, hd) = (cfg.hidden_size as u64, cfg.head_dim as u64);
    let attn = 2 * h * cfg.num_attention_heads as u64 * hd + 2 * h * cfg.num_key_value_heads as u64 * hd;
    let head = cfg.vocab_size as u64 * h;
    let (mut total, mut active) = (head * if cfg.tie_word_embeddings { 1 } else { 2 }, head);
    for kind in &cfg.mlp_layer_types {
        total += attn;
        active += attn;
        match (kind, &cfg.moe) {
            (MlpKind::Moe, Some(m)) => {
                let expert = 3 * h * m.moe_intermediate_size as u64;
                let fixed = expert * m.moe_num_shared_experts as u64 + m.num_experts as u64 * h;
                total += fixed + expert * m.num_experts as u64;
                active += fixed + expert * m.top_k as u64;
            }
            _ => {
                total += 3 * h * cfg.intermediate_size as u64;
                active += 3 * h * cfg.intermediate_size as u64;
            }
        }
    }
    ParamCounts { total, active }
}

/// Read bandwidth of this machine, bytes/s: a parallel sum over 1 GiB, median of 5 (the ceiling a
/// decode step that streams its weights can reach; `benches/` use the same measure).
pub fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let buf: Vec<u64> = (0..(1usize << 27)).into_par_iter().map(|i| i as u64).collect();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let s: u64 = buf.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b))).sum();
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (buf.len() * 8) as f64 / times[2]
}

/// Starts the worker pool with `n` threads (llama-bench `-t`); call before any parallel work.
/// Errors: [`Error::Request`] when the pool already runs.
pub fn set_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| Error::Request(format!("bench: cannot set the thread count: {e}")))
}

/// Worker threads of the pool the kernels run on.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Everything `ernie bench` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// First forward pass after load: a 1-token prompt, seconds.
    pub first_token_secs: f64,
    /// The prefill and decode tests (those asked for).
    pub tests: Vec<TestTimes>,
    /// Weight counts of the model's config.
    pub params: ParamCounts,
}

/// Deterministic ids in `0..vocab` (xorshift64).
fn token_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab.max(1) as u64) as u32
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs the first-token pass, then `pp` and `tg` (warm-up + `repetitions` each) on `engine`.
///
/// Errors: [`Error::Request`] for 0 repetitions or a test longer than the model's positions;
/// those of the forward pass.
pub fn run(engine: &Engine, opt: &BenchOptions) -> Result<BenchReport> {
    let cfg = &engine.model.cfg;
    if opt.repetitions == 0 {
        return Err(Error::Request("bench: repetitions must be at least 1".into()));
    }
    let longest = opt.prompt.max(opt.generate).max(1);
    if longest > cfg.max_position_embeddings {
        return Err(Error::Request(format!("bench: {longest} tokens exceed max_position_embeddings {}", cfg.max_position_embeddings)));
    }
    let vocab = cfg.vocab_size;
    let t0 = Instant::now();
    let mut cache = engine.new_cache(1)?;
    engine.forward(&token_ids(1, vocab, 7), &mut cache, Logits::Last)?;
    let first_token_secs = t0.elapsed().as_secs_f64();

    let mut tests = Vec::new();
    if opt.prompt > 0 {
        let ids = token_ids(opt.prompt, vocab, 11);
        let pass = || -> Result<f64> {
            let mut cache = engine.new_cache(ids.len())?;
            let t = Instant::now();
            engine.forward(&ids, &mut cache, Logits::Last)?;
            Ok(t.elapsed().as_secs_f64())
        };
        pass()?; // warm-up
        let secs = (0..opt.repetitions).map(|_| pass()).collect::<Result<Vec<_>>>()?;
        let median_tok_s = opt.prompt as f64 / median(&secs).max(1e-12);
        tests.push(TestTimes { name: format!("pp{}", opt.prompt), tokens: opt.prompt, secs, median_tok_s });
    }
    if opt.generate > 0 {
        let ids = token_ids(opt.generate, vocab, 13);
        let pass = || -> Result<f64> {
            let mut cache = engine.new_cache(ids.len())?;
            let t = Instant::now();
            for id in &ids {
                engine.forward(std::slice::from_ref(id), &mut cache, Logits::Last)?;
            }
            Ok(t.elapsed().as_secs_f64())
        };
        pass()?; // warm-up
        let secs = (0..opt.repetitions).map(|_| pass()).collect::<Result<Vec<_>>>()?;
        let median_tok_s = opt.generate as f64 / median(&secs).max(1e-12);
        tests.push(TestTimes { name: format!("tg{}", opt.generate), tokens: opt.generate, secs, median_tok_s });
    }
    Ok(BenchReport { first_token_secs, tests, params: param_counts(cfg) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_the_vocabulary_and_repeat() {
        let a = token_ids(1000, 37, 5);
        assert!(a.iter().all(|&t| t < 37));
        assert_eq!(a, token_ids(1000, 37, 5));
        assert!(a.iter().any(|&t| t != a[0]));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

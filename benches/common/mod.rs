//! Helpers shared by the CPU benches (`moe`, `gemm`, `quant`, `codec`): the same-run baselines their
//! ratios are taken against, and seeded weights. Each bench includes this one copy and uses part of it.
#![allow(dead_code)]

use std::time::Instant;

use half::bf16;
use rayon::prelude::*;

/// Sustained read bandwidth, bytes/s: median of 5 parallel sums over 1 GiB. The roofline every
/// weight-streaming bench (decode GEMV, MoE decode, quantised GEMV) is reported against.
pub fn memory_bandwidth() -> f64 {
    ernie_runtime::tools::bench::read_bandwidth()
}

/// Median wall seconds of `n` calls of `f` (the figure a bench's SUMMARY line reports next to
/// criterion's own estimate).
pub fn median_secs(mut f: impl FnMut(), n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

/// Deterministic pseudo-random bf16 values in about ±0.05, filled in parallel (xorshift per chunk).
pub fn rand_bf16(n: usize, seed: u64) -> Vec<bf16> {
    let mut v = vec![bf16::ZERO; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut s = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for x in chunk {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *x = bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1);
        }
    });
    v
}

//! Helpers shared by the CPU benches (`moe`, `gemm`, `quant`): the same-run baselines their
//! ratios are taken against.

use std::time::Instant;

use rayon::prelude::*;

/// Sustained read bandwidth, bytes/s: median of 5 parallel sums over 1 GiB. The roofline every
/// weight-streaming bench (decode GEMV, MoE decode, quantised GEMV) is reported against.
pub fn memory_bandwidth() -> f64 {
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

//! `ernie bench --model DIR`: llama-bench's pp/tg tests (prefill of `-p` tokens, `-n` decode
//! steps, `-r` repetitions, medians) plus the load time and first-token latency; the engine work
//! is `ernie_runtime::tools::bench`. `scripts/bench-llama.sh` runs it beside llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ernie_runtime::tools::bench::{self, BenchOptions};
use ernie_runtime::{ElasticOptions, Engine, QuantScheme};

use crate::args::{Format, Kernels, Prefault};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory in Hugging Face layout (optional with --bandwidth).
    #[arg(long, required_unless_present = "bandwidth")]
    model: Option<PathBuf>,
    /// Measure the machine's read bandwidth (1 GiB parallel sum, median of 5) and print it in
    /// GB/s; alone (no --model) that is all it does.
    #[arg(long)]
    bandwidth: bool,
    /// Weight-only quantisation at load: q8_0, q4_k, or q4_k_m.
    #[arg(long)]
    quant: Option<QuantScheme>,
    /// Prompt tokens of the prefill test (llama-bench -p); 0 skips it.
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Decode steps of the generation test (llama-bench -n); 0 skips it.
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions of each test (llama-bench -r).
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Worker threads (llama-bench -t); default: one per core.
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Populate the mapped weights at load.
    #[arg(long, value_enum, default_value_t = Prefault::Off)]
    prefault: Prefault,
    #[command(flatten)]
    kernels: Kernels,
    /// Output format (json: one object).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        bench::set_threads(t)?;
    }
    let bandwidth_gbs = args.bandwidth.then(|| bench::read_bandwidth() / 1e9);
    let Some(model) = &args.model else {
        match args.format {
            Format::Json => println!("{}", serde_json::json!({ "bandwidth_gbs": bandwidth_gbs })),
            Format::Text => println!("read bandwidth {:.2} GB/s", bandwidth_gbs.unwrap_or(0.0)),
        }
        return Ok(());
    };
    args.prefault.apply(model, args.quant.is_some());
    let start = Instant::now();
    let mut engine = Engine::load_quant(model, &ElasticOptions::default(), args.quant).with_context(|| format!("loading {}", model.display()))?;
    let kernel = args.kernels.apply(&mut engine);
    let load_secs = start.elapsed().as_secs_f64();
    // Which GEMM ran the dense bf16 prefill projections (quantised weights have their own).
    let rounded = kernel == ernie_runtime::ops::gemm::Kernel::Avx512Bf16Dot;
    let gemm = format!("{kernel:?} ({})", if rounded { "bf16 activations" } else { "exact" });
    let opt = BenchOptions { prompt: args.n_prompt, generate: args.n_gen, repetitions: args.repetitions };
    let report = bench::run(&engine, &opt)?;
    let rss_mib = crate::peak_rss_kib().map(|k| k as f64 / 1024.0);
    let threads = bench::threads();
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "model": model, "quant": args.quant.map(|q| q.to_string()), "threads": threads, "gemm_kernel": gemm,
                "load_secs": load_secs, "first_token_secs": report.first_token_secs,
                "time_to_first_token_secs": load_secs + report.first_token_secs,
                "tests": report.tests, "peak_rss_mib": rss_mib, "params": report.params,
                "bandwidth_gbs": bandwidth_gbs,
            });
            println!("{out}");
        }
        Format::Text => {
            println!("gemm kernel: {gemm}");
            println!("threads {threads}; load {load_secs:.3} s; first token {:.3} s (process start to first logits {:.3} s)", report.first_token_secs, load_secs + report.first_token_secs);
            for t in &report.tests {
                println!("{}: {:.2} tok/s (median of {})", t.name, t.median_tok_s, t.secs.len());
            }
            let p = report.params;
            println!("weights: {:.3} G, {:.3} G read per decoded token", p.total as f64 / 1e9, p.active as f64 / 1e9);
            if let Some(b) = bandwidth_gbs {
                println!("read bandwidth {b:.2} GB/s");
            }
            if let Some(m) = rss_mib {
                println!("peak RSS: {m:.1} MiB");
            }
        }
    }
    Ok(())
}

//! CPU benchmarks of the generation codecs (issues #14 and #15, item 9):
//!
//! - the Mimi audio codec at the published kyutai/mimi sizes (`MimiConfig()` defaults: 8 + 8
//!   transformer layers of 512, SEANet 64 filters, 32 levels of 2048; 96 M f32 values, built in
//!   memory from `tests/fixtures/mimi/real-shapes` with seeded random weights and filled
//!   codebooks): encode 10 s of 24 kHz audio to 32 levels and decode it back, reported as the
//!   real-time factor (wall seconds per second of audio);
//! - the image decoder of the generation benchmark checkpoint (Infinity-like, block_out_channels
//!   128/256/512/512, z 32; `tests/reference/make_generation_bench_checkpoint.py`, read from
//!   `$ERNIE_BENCH_VAE` or `~/.cache/ernie-bench-ernie5-21b-a3b-4layer/vision_decoder`; skipped with a
//!   note when absent): a 32×32 latent → 256² under criterion, and 64×64 → 512² as a median of 3.
//!
//! Same-run baselines on the SUMMARY lines: the f32 throughput of one plain conv1d of the codec's
//! widest layer (1024 × 512 × 7 over 250 steps; im2col + `gemm`, what every codec conv runs on) and
//! the machine's read bandwidth. Run: `cargo bench --bench codec` (about 1.5 GB of RAM; a few
//! minutes on 2 cores).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ernie_runtime::model::audio_codec::{MimiCodec, MimiConfig};
use ernie_runtime::model::vision_decoder::VisionDecoder;
use ernie_runtime::ops::conv1d::{conv1d, Conv1dSpec};
use ernie_runtime::tensor::Tensor;
use ernie_runtime::weights::Weights;

#[path = "common/mod.rs"]
mod common;
use common::{median_secs, memory_bandwidth, rand_bf16};

/// Seconds of audio per encode / decode.
const CLIP_SECS: usize = 10;
/// Standard deviation of `rand_bf16`'s uniform ±0.05 values (0.1 / √12).
const RAND_STD: f32 = 0.028_867;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `n` seeded values with standard deviation `std`.
fn randn(n: usize, seed: u64, std: f32) -> Vec<f32> {
    rand_bf16(n, seed).iter().map(|v| v.to_f32() * (std / RAND_STD)).collect()
}

/// The published-size Mimi with the values `make_bench_mimi.py` gives (std 1/√fan-in, norms 1,
/// layer scales 0.01, filled codebooks).
fn published_mimi() -> MimiCodec {
    let dir = repo().join("tests/fixtures/mimi/real-shapes");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("fixture");
    let cfg = MimiConfig::from_json(&serde_json::from_str(&read("config.json")).expect("json")).expect("config");
    let shapes: BTreeMap<String, Vec<usize>> = serde_json::from_str(&read("shapes.json")).expect("json");
    let tensors = shapes.into_iter().enumerate().map(|(i, (name, shape))| {
        let n: usize = shape.iter().product();
        let data = if name.ends_with("cluster_usage") || name.ends_with("initialized") || (shape.len() == 1 && name.contains("layernorm.weight")) {
            vec![1.0; n]
        } else if name.ends_with("layer_scale.scale") {
            vec![0.01; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.ends_with("embed_sum") {
            randn(n, i as u64 + 1, 1.0)
        } else {
            let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
            randn(n, i as u64 + 1, 1.0 / (fan_in as f32).sqrt())
        };
        (name, Tensor::from_f32(data, shape).expect("shape"))
    });
    let mut w = Weights::from_tensors(tensors);
    let codec = MimiCodec::from_weights(cfg, &mut w).expect("published shapes");
    w.finish().expect("every tensor used");
    codec
}

/// A 10 s chirp with a little noise, 24 kHz mono.
fn clip(rate: usize) -> Vec<f32> {
    let noise = randn(rate * CLIP_SECS, 99, 0.03);
    (0..rate * CLIP_SECS)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.25 * (2.0 * std::f32::consts::PI * (200.0 + 40.0 * t) * t).sin() + noise[i]
        })
        .collect()
}

/// GFLOP/s of one 1024 × 512 × 7 conv1d over 250 steps (the SEANet decoder's input conv at 25 Hz).
fn conv_gflops() -> f64 {
    let spec = Conv1dSpec { c_in: 512, c_out: 1024, kernel: 7, stride: 1, dilation: 1, groups: 1 };
    let (x, w) = (randn(512 * 256, 7, 1.0), randn(1024 * 512 * 7, 8, 0.02));
    let secs = median_secs(|| drop(conv1d(&x, 256, &w, None, &spec).expect("conv")), 7);
    2.0 * (1024 * 512 * 7 * 250) as f64 / secs / 1e9
}

fn bench_mimi(c: &mut Criterion) {
    let codec = published_mimi();
    let pcm = clip(codec.sample_rate());
    let levels = codec.num_levels();
    let codes = codec.encode(&pcm, levels).expect("encode");
    let (gflops, bw) = (conv_gflops(), memory_bandwidth());
    let mut group = c.benchmark_group("mimi_published_10s");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("encode_32_levels", |b| b.iter(|| codec.encode(&pcm, levels).expect("encode")));
    group.bench_function("decode_32_levels", |b| b.iter(|| codec.decode(&codes).expect("decode")));
    group.finish();
    let enc = median_secs(|| drop(codec.encode(&pcm, levels).expect("encode")), 3);
    let dec = median_secs(|| drop(codec.decode(&codes).expect("decode")), 3);
    eprintln!(
        "SUMMARY mimi 10 s: encode {enc:.3} s (real-time factor {:.3}), decode {dec:.3} s (real-time factor {:.3}); \
         baselines: conv1d 1024x512x7 at {gflops:.1} GFLOP/s, read bandwidth {:.1} GB/s",
        enc / CLIP_SECS as f64,
        dec / CLIP_SECS as f64,
        bw / 1e9
    );
}

fn vae_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ERNIE_BENCH_VAE").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ernie-bench-ernie5-21b-a3b-4layer/vision_decoder"))
    })?;
    dir.join("config.json").exists().then_some(dir)
}

fn bench_image_decoder(c: &mut Criterion) {
    let Some(dir) = vae_dir() else {
        eprintln!("SUMMARY image decoder: skipped (no checkpoint; run tests/reference/make_generation_bench_checkpoint.py or set ERNIE_BENCH_VAE)");
        return;
    };
    let vae = VisionDecoder::load(&dir).expect("vision decoder");
    let cfg = vae.config();
    let (z, f) = (cfg.latent_channels, 1usize << (cfg.block_out_channels.len() - 1));
    let latent = |side: usize| randn(z * side * side, 5, 1.0);
    let small = latent(256 / f);
    let mut group = c.benchmark_group("image_decoder");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("256x256", |b| b.iter(|| vae.decode(&small, z, 256 / f, 256 / f).expect("decode")));
    group.finish();
    let large = latent(512 / f);
    let s256 = median_secs(|| drop(vae.decode(&small, z, 256 / f, 256 / f).expect("decode")), 3);
    let s512 = median_secs(|| drop(vae.decode(&large, z, 512 / f, 512 / f).expect("decode")), 3);
    eprintln!(
        "SUMMARY image decoder ({}, z {z}): 256x256 {s256:.3} s, 512x512 {s512:.3} s; baseline conv1d 1024x512x7 at {:.1} GFLOP/s",
        dir.display(),
        conv_gflops()
    );
}

criterion_group!(benches, bench_mimi, bench_image_decoder);
criterion_main!(benches);

//! CPU benchmarks at ERNIE-4.5-21B-A3B layer shapes with random bf16 weights:
//! one MoE layer (decode- and prefill-shaped) and one full decode step of a 1-layer model
//! (attention + MoE + head), reported as tokens/s and as a fraction of the memory-bandwidth
//! roofline measured in the same run (a parallel read of a 1 GiB buffer).
//!
//! | shape                | value                     |
//! |----------------------|---------------------------|
//! | hidden_size          | 2560                      |
//! | experts / top_k      | 64 / 6                    |
//! | moe_intermediate     | 1536                      |
//! | shared experts       | 2 (width 3072)            |
//! | heads / kv / head_dim| 20 / 4 / 128              |
//! | vocab                | 103424                    |
//!
//! Run: `cargo bench --bench moe` (needs ~3 GB of RAM; takes a few minutes on 2 cores).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ernie_runtime::model::moe::load_moe_block;
use ernie_runtime::{KvCache, Logits, MoeConfig, Tensor, TextConfig, Transformer, Weights};

#[path = "common/mod.rs"]
mod common;
use common::{median_secs, memory_bandwidth, rand_bf16};

const H: usize = 2560;
const E: usize = 64;
const K: usize = 6;
const I: usize = 1536;
const SHARED: usize = 2;
const VOCAB: usize = 103424;

fn t_bf16(shape: Vec<usize>, seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_bf16(&rand_bf16(n, seed), shape).expect("shape")
}

fn t_f32(shape: Vec<usize>, seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(rand_bf16(n, seed).iter().map(|v| v.to_f32() * 10.0).collect(), shape).expect("shape")
}

/// Tensors of one MoE layer in the transformers-5 stacked layout.
fn moe_tensors(p: &str) -> Vec<(String, Tensor)> {
    vec![
        (format!("{p}.gate.weight"), t_f32(vec![E, H], 1)),
        (format!("{p}.experts.gate_up_proj"), t_bf16(vec![E, 2 * I, H], 2)),
        (format!("{p}.experts.down_proj"), t_bf16(vec![E, H, I], 3)),
        (format!("{p}.shared_experts.gate_proj.weight"), t_bf16(vec![I * SHARED, H], 4)),
        (format!("{p}.shared_experts.up_proj.weight"), t_bf16(vec![I * SHARED, H], 5)),
        (format!("{p}.shared_experts.down_proj.weight"), t_bf16(vec![H, I * SHARED], 6)),
    ]
}

fn moe_config() -> MoeConfig {
    MoeConfig { num_experts: E, top_k: K, moe_intermediate_size: I, moe_num_shared_experts: SHARED, moe_norm_min: 1e-12 }
}


fn bench_moe_layer(c: &mut Criterion) {
    let p = "model.layers.1.mlp";
    let mut w = Weights::from_tensors(moe_tensors(p));
    let block = load_moe_block(&mut w, p, H, &moe_config(), false).expect("load");
    let bw = memory_bandwidth();
    // Bytes a decode token must read: k experts + the shared MLP (bf16) + the f32 router.
    let decode_bytes = (K * 3 * H * I + 3 * H * I * SHARED) * 2 + E * H * 4;
    let mut group = c.benchmark_group("moe_layer_21b_a3b_bf16");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for t in [1usize, 16, 128] {
        let x: Vec<f32> = rand_bf16(t * H, 9).iter().map(|v| v.to_f32() * 20.0).collect();
        group.throughput(Throughput::Elements(t as u64));
        group.bench_with_input(BenchmarkId::new("tokens", t), &x, |b, x| b.iter(|| block.forward(x).expect("forward")));
        let secs = median_secs(|| drop(block.forward(&x).expect("forward")), 7);
        let extra = if t == 1 {
            format!(", {:.1} GB/s = {:.0}% of the measured {:.1} GB/s read roofline", decode_bytes as f64 / secs / 1e9, 100.0 * decode_bytes as f64 / secs / bw, bw / 1e9)
        } else {
            String::new()
        };
        eprintln!("SUMMARY moe_layer t={t}: median {:.2} ms, {:.1} tokens/s{extra}", secs * 1e3, t as f64 / secs);
    }
    group.finish();
}

/// A 1-layer ernie4_5_moe model (MoE layer 0) at 21B-A3B shapes.
fn one_layer_model() -> Transformer {
    let cfg = TextConfig::from_json(&serde_json::json!({
        "model_type": "ernie4_5_moe", "hidden_size": H, "intermediate_size": 12288, "num_hidden_layers": 1,
        "num_attention_heads": 20, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": VOCAB,
        "moe_num_experts": E, "moe_k": K, "moe_intermediate_size": I, "moe_num_shared_experts": SHARED,
        "moe_layer_start_index": 0, "tie_word_embeddings": true,
    }))
    .expect("config");
    let a = "model.layers.0.self_attn";
    let mut t = moe_tensors("model.layers.0.mlp");
    t.extend([
        ("model.embed_tokens.weight".to_string(), t_bf16(vec![VOCAB, H], 10)),
        (format!("{a}.q_proj.weight"), t_bf16(vec![20 * 128, H], 11)),
        (format!("{a}.k_proj.weight"), t_bf16(vec![4 * 128, H], 12)),
        (format!("{a}.v_proj.weight"), t_bf16(vec![4 * 128, H], 13)),
        (format!("{a}.o_proj.weight"), t_bf16(vec![H, 20 * 128], 14)),
        ("model.layers.0.input_layernorm.weight".to_string(), t_f32(vec![H], 15)),
        ("model.layers.0.post_attention_layernorm.weight".to_string(), t_f32(vec![H], 16)),
        ("model.norm.weight".to_string(), t_f32(vec![H], 17)),
    ]);
    let mut w = Weights::from_tensors(t);
    let m = Transformer::load(&cfg, &mut w).expect("load");
    w.finish().expect("all tensors used");
    m
}

fn bench_decode_step(c: &mut Criterion) {
    let model = one_layer_model();
    let bw = memory_bandwidth();
    const CTX: usize = 512;
    let mut cache = KvCache::new(&model.cfg, CTX + 64).expect("cache");
    let prompt: Vec<u32> = (0..CTX as u32).map(|i| 1000 + i).collect();
    model.forward(&prompt, &mut cache, Logits::Last, None).expect("prefill");
    // Bytes per decode step: attention + k experts + shared + router + head (tied embedding).
    let step_bytes = (H * (20 + 4 + 4) * 128 + 20 * 128 * H + K * 3 * H * I + 3 * H * I * SHARED + VOCAB * H) * 2 + E * H * 4;
    let mut group = c.benchmark_group("decode_step_21b_a3b_1layer_bf16");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    group.bench_function("ctx512", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                cache.truncate(CTX).expect("truncate");
                let t = Instant::now();
                std::hint::black_box(model.forward(&[42], &mut cache, Logits::Last, None).expect("step"));
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
    let secs = median_secs(
        || {
            cache.truncate(CTX).expect("truncate");
            drop(model.forward(&[42], &mut cache, Logits::Last, None).expect("step"));
        },
        9,
    );
    eprintln!(
        "SUMMARY decode_step ctx={CTX}: median {:.2} ms, {:.1} tokens/s, {:.1} GB/s = {:.0}% of the measured {:.1} GB/s read roofline",
        secs * 1e3,
        1.0 / secs,
        step_bytes as f64 / secs / 1e9,
        100.0 * step_bytes as f64 / secs / bw,
        bw / 1e9
    );
}

criterion_group!(benches, bench_moe_layer, bench_decode_step);
criterion_main!(benches);

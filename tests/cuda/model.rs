//! The GPU blocks against their CPU structs, and the tiny checkpoints end to end on the GPU.
//!
//! Limits:
//! - `BLOCK_NMSE` 1e-4: a block rounds several intermediates to bf16 (q, k, v, scores-weighted
//!   sum; gate/up, activation; expert slots), each ≈ 1.3e-6; 1e-4 leaves room for their growth.
//! - `MODEL_LOGITS_NMSE` 5e-3 against the transformers f32 logits: transformers itself, run in
//!   bf16 on the `moe-bf16-stacked` fixture, lands at 1.7e-4 (its `logits_last_bf16_compute`);
//!   the f32 fixtures also round their weights to bf16 here. A layout or indexing bug gives > 1e-1.
//! - `ARGMAX_MARGIN` 0.5: transformers' own bf16 run moves logits by up to 0.16 and flips the
//!   argmax of a row whose margin is 0.14, so only rows with a margin above 0.5 must agree.

use ernie_runtime::model::cuda::layers::{GpuAttention, GpuLayerKv, GpuMoe, GpuSwiGlu, Scratch, ScratchDims};
use ernie_runtime::backend::cuda::CudaDevice;
use ernie_runtime::model::cuda::{CudaKvCache, CudaModel};
use ernie_runtime::model::moe::load_moe_block;
use ernie_runtime::nn::mlp::SwiGlu;
use ernie_runtime::nn::moe::MoeBlock;
use ernie_runtime::nn::trace::Trace;
use ernie_runtime::nn::attention::Attention;
use ernie_runtime::{
    Device, Engine, Error, GenerateRequest, KvCache, Logits, MoeConfig, SamplingParams, Tensor, TextConfig, Weights,
};
use half::bf16;
use serde_json::{json, Value};

use crate::common::{f32s, u32s};
use crate::{check_nmse, fixture, gpu, nmse, rand_bf16, rng, to_bf16, to_f32};

const BLOCK_NMSE: f64 = 1e-4;
const MODEL_LOGITS_NMSE: f64 = 5e-3;
const ARGMAX_MARGIN: f32 = 0.5;
/// Fraction of (token, layer) routing rows allowed to differ from transformers' (bf16 activations
/// move near-tied router scores); each difference is printed.
const ROUTING_MISMATCH_MAX: f64 = 0.1;
const FIXTURES: [&str; 4] = ["dense-f32", "dense-bias-f32", "moe-f32", "moe-bf16-stacked"];

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn tensor(v: Vec<f32>, shape: Vec<usize>) -> Tensor {
    Tensor::from_f32(v, shape).unwrap()
}

fn scratch(d: &CudaDevice, dims: ScratchDims, t: usize) -> Scratch {
    Scratch::new(d, dims, t).unwrap()
}

#[test]
fn block_swiglu_with_bias() {
    let Some(d) = gpu() else { return };
    let (h, i) = (64, 96);
    let mut r = rng(100);
    let p = "mlp";
    let mut w = Weights::from_tensors([
        (format!("{p}.gate_proj.weight"), tensor(rand_bf16(&mut r, i * h, 0.2), vec![i, h])),
        (format!("{p}.up_proj.weight"), tensor(rand_bf16(&mut r, i * h, 0.2), vec![i, h])),
        (format!("{p}.down_proj.weight"), tensor(rand_bf16(&mut r, h * i, 0.2), vec![h, i])),
        (format!("{p}.gate_proj.bias"), tensor(rand_bf16(&mut r, i, 0.1), vec![i])),
        (format!("{p}.up_proj.bias"), tensor(rand_bf16(&mut r, i, 0.1), vec![i])),
        (format!("{p}.down_proj.bias"), tensor(rand_bf16(&mut r, h, 0.1), vec![h])),
    ]);
    let m = SwiGlu::load(&mut w, p, h, i, true).unwrap();
    let g = GpuSwiGlu::upload(&d, &m).unwrap();
    for t in [1, 33, 511] {
        let x = rand_bf16(&mut r, t * h, 1.0);
        let want = m.forward(&x).unwrap();
        let (mut gu, mut act, mut out) =
            (d.zeros::<bf16>(t * 2 * i).unwrap(), d.zeros::<bf16>(t * i).unwrap(), d.zeros::<bf16>(t * h).unwrap());
        g.forward(
            &d,
            &d.upload(&to_bf16(&x)).unwrap().as_view(),
            &mut gu.as_view_mut(),
            &mut act.as_view_mut(),
            &mut out.as_view_mut(),
            false,
        )
        .unwrap();
        check_nmse(&format!("SwiGlu (bias) t={t}"), &to_f32(&d.download(&out).unwrap()), &want, BLOCK_NMSE);
    }
}

#[test]
fn block_attention_prefill_then_decode() {
    let Some(d) = gpu() else { return };
    for (h, heads, kv_heads, hd) in [(64usize, 4usize, 2usize, 24usize), (256, 4, 1, 128)] {
        let cfg = TextConfig::from_json(&json!({
            "model_type": "ernie4_5", "hidden_size": h, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": hd, "intermediate_size": 96, "num_hidden_layers": 1, "vocab_size": 1016, "rope_theta": 500000.0
        }))
        .unwrap();
        let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
        let mut r = rng(200 + hd as u64);
        let p = "attn";
        let mut w = Weights::from_tensors([
            (format!("{p}.q_proj.weight"), tensor(rand_bf16(&mut r, q_dim * h, 0.15), vec![q_dim, h])),
            (format!("{p}.k_proj.weight"), tensor(rand_bf16(&mut r, kv_dim * h, 0.15), vec![kv_dim, h])),
            (format!("{p}.v_proj.weight"), tensor(rand_bf16(&mut r, kv_dim * h, 0.15), vec![kv_dim, h])),
            (format!("{p}.o_proj.weight"), tensor(rand_bf16(&mut r, h * q_dim, 0.15), vec![h, q_dim])),
        ]);
        let a = Attention::load(&mut w, p, &cfg).unwrap();
        let g = GpuAttention::upload(&d, &a).unwrap();
        let max_seq = 64;
        let mut cpu_cache = KvCache::new(&cfg, max_seq).unwrap();
        let mut kv = GpuLayerKv { k: d.zeros(max_seq * kv_dim).unwrap(), v: d.zeros(max_seq * kv_dim).unwrap() };
        let mut start = 0;
        for t in [33usize, 1, 5, 1] {
            let x = rand_bf16(&mut r, t * h, 1.0);
            let want = a.forward(&x, &mut cpu_cache.layers[0], &cpu_cache.rope, start, ernie_runtime::ops::RopePositions::Sequential(start)).unwrap();
            let positions: Vec<u32> = (start..start + t).map(|p| p as u32).collect();
            let (mut q, mut attn, mut out) =
                (d.zeros::<bf16>(t * q_dim).unwrap(), d.zeros::<bf16>(t * q_dim).unwrap(), d.zeros::<bf16>(t * h).unwrap());
            let x_d = d.upload(&to_bf16(&x)).unwrap();
            let pos_d = d.upload(&positions).unwrap();
            g.forward(
                &d,
                &x_d.as_view(),
                &mut q.as_view_mut(),
                &mut attn.as_view_mut(),
                &mut kv,
                start,
                &pos_d.as_view(),
                cfg.rope_theta,
                &mut out.as_view_mut(),
            )
            .unwrap();
            check_nmse(&format!("Attention hd={hd} t={t} start={start}"), &to_f32(&d.download(&out).unwrap()), &want, BLOCK_NMSE);
            start += t;
        }
    }
}

/// A MoE block with random bf16-exact weights; `starved` experts never win the routing.
fn moe_block(e: usize, k: usize, h: usize, i: usize, shared: usize, seed: u64) -> MoeBlock {
    let mut r = rng(seed);
    let p = "mlp";
    let mut router = rand_bf16(&mut r, e * h, 0.5);
    router[..h].iter_mut().for_each(|v| *v = 0.0);
    let mut bias = rand_bf16(&mut r, e, 0.05);
    bias[0] = -1e3; // expert 0 receives no tokens
    let mut t = vec![
        (format!("{p}.gate.weight"), tensor(router, vec![e, h])),
        (format!("{p}.moe_statics.e_score_correction_bias"), tensor(bias, vec![1, e])),
    ];
    // transformers-5 stacked layout: [e, 2i, h] and [e, h, i].
    t.push((
        format!("{p}.experts.gate_up_proj"),
        Tensor::from_bf16(&to_bf16(&rand_bf16(&mut r, e * 2 * i * h, 0.2)), vec![e, 2 * i, h]).unwrap(),
    ));
    t.push((format!("{p}.experts.down_proj"), Tensor::from_bf16(&to_bf16(&rand_bf16(&mut r, e * h * i, 0.2)), vec![e, h, i]).unwrap()));
    if shared > 0 {
        let si = i * shared;
        t.push((format!("{p}.shared_experts.gate_proj.weight"), tensor(rand_bf16(&mut r, si * h, 0.2), vec![si, h])));
        t.push((format!("{p}.shared_experts.up_proj.weight"), tensor(rand_bf16(&mut r, si * h, 0.2), vec![si, h])));
        t.push((format!("{p}.shared_experts.down_proj.weight"), tensor(rand_bf16(&mut r, h * si, 0.2), vec![h, si])));
    }
    let mut w = Weights::from_tensors(t);
    let cfg = MoeConfig { num_experts: e, top_k: k, moe_intermediate_size: i, moe_num_shared_experts: shared, moe_norm_min: 1e-12 };
    let block = load_moe_block(&mut w, p, h, &cfg, false).unwrap();
    w.finish().unwrap();
    block
}

#[test]
fn block_moe_route_align_gemm_reduce() {
    let Some(d) = gpu() else { return };
    for (e, k, h, i, shared) in [(64usize, 6usize, 64usize, 32usize, 2usize), (60, 1, 64, 16, 0), (64, 6, 256, 128, 2), (6, 2, 64, 32, 2)] {
        let block = moe_block(e, k, h, i, shared, 300 + e as u64 + h as u64);
        let g = GpuMoe::upload(&d, &block).unwrap();
        let dims = ScratchDims { hidden: h, q_dim: 0, ffn_inter: i * shared, n_experts: e, top_k: k, moe_inter: i };
        for t in [1usize, 33, 511] {
            let mut r = rng(400 + t as u64 + e as u64);
            let x = rand_bf16(&mut r, t * h, 1.0);
            let (want, want_routing) = block.forward(&x).unwrap();
            let mut s = scratch(&d, dims, t);
            d.stream().memcpy_htod(&to_bf16(&x), &mut s.normed.slice_mut(0..t * h)).unwrap();
            let routing = g.forward(&d, &mut s, t, true).unwrap().expect("routing requested");
            let got = to_f32(&d.download(&s.x.slice(0..t * h)).unwrap());
            // Both sides route the same f32 inputs with the same f32 weights: only summation order
            // differs, so rows may differ only at exact near-ties; those rows are left out.
            let same: Vec<usize> = (0..t)
                .filter(|&row| routing.expert_ids[row * k..(row + 1) * k] == want_routing.expert_ids[row * k..(row + 1) * k])
                .collect();
            assert!(same.len() * 100 >= t * 99, "e={e} k={k} t={t}: {} of {t} rows routed differently", t - same.len());
            assert!(!routing.expert_ids.contains(&0), "starved expert 0 was selected");
            let pick = |v: &[f32]| same.iter().flat_map(|&row| v[row * h..(row + 1) * h].to_vec()).collect::<Vec<f32>>();
            let tag = format!("MoE e={e} k={k} h={h} i={i} shared={shared} t={t}");
            check_nmse(&tag, &pick(&got), &pick(&want), BLOCK_NMSE);
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let max_diff = pick(&got).iter().zip(pick(&want)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            // 8-bit mantissa: matches vLLM's MoE tests.
            assert!(max_diff <= 2e-2 * scale, "{tag}: max |diff| {max_diff} (scale {scale})");
        }
    }
}

fn gpu_engine(d: &CudaDevice, name: &str) -> Engine {
    let mut engine = Engine::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    engine.to_device(&Device::Cuda(d.clone())).unwrap();
    engine
}

#[test]
fn tiny_checkpoints_match_transformers_logits() {
    let Some(d) = gpu() else { return };
    for name in FIXTURES {
        let exp = expected(name);
        let ids = u32s(&exp["prompt_ids"]);
        let want: Vec<f32> = exp["logits"].as_array().unwrap().iter().flat_map(f32s).collect();
        let engine = gpu_engine(&d, name);
        let mut cache = engine.new_cache(ids.len()).unwrap();
        let got = engine.forward(&ids, &mut cache, Logits::All).unwrap();
        check_nmse(&format!("{name} logits vs transformers f32"), &got, &want, MODEL_LOGITS_NMSE);
        let v = engine.model.cfg.vocab_size;
        let argmax = |row: &[f32]| row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
        let mut checked = 0;
        for (pos, (g, w)) in got.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
            let mut sorted = w.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > ARGMAX_MARGIN {
                assert_eq!(argmax(g), argmax(w), "{name}: argmax at position {pos} (margin {})", sorted[0] - sorted[1]);
                checked += 1;
            }
        }
        eprintln!("{name}: argmax agrees at all {checked} positions with a margin > {ARGMAX_MARGIN}");
    }
}

#[test]
fn tiny_moe_routing_on_gpu() {
    let Some(d) = gpu() else { return };
    for name in ["moe-f32", "moe-bf16-stacked"] {
        let exp = expected(name);
        let ids = u32s(&exp["prompt_ids"]);
        let engine = Engine::load(&fixture(name)).unwrap();
        let model = CudaModel::upload(&engine.model, &d).unwrap();
        let mut cache = CudaKvCache::new(&model, ids.len()).unwrap();
        let mut trace = Trace::default();
        model.forward(&ids, &mut cache, Logits::Last, Some(&mut trace)).unwrap();
        let (mut rows, mut differ) = (0, 0);
        for (layer, want) in exp["expert_ids"].as_object().unwrap() {
            let l: usize = layer.parse().unwrap();
            let got = &trace.routing[&l];
            for (pos, want_row) in want.as_array().unwrap().iter().enumerate() {
                let mut w = u32s(want_row);
                let mut g = got.expert_ids[pos * got.top_k..(pos + 1) * got.top_k].to_vec();
                w.sort_unstable();
                g.sort_unstable();
                rows += 1;
                if w != g {
                    differ += 1;
                    eprintln!("{name}: layer {l} token {pos}: GPU experts {g:?}, transformers {w:?}");
                }
            }
        }
        let frac = differ as f64 / rows as f64;
        eprintln!("{name}: {differ} of {rows} routing rows differ from transformers");
        assert!(frac <= ROUTING_MISMATCH_MAX, "{name}: {differ} of {rows} routing rows differ");
    }
}

#[test]
fn gpu_decode_matches_gpu_prefill() {
    let Some(d) = gpu() else { return };
    for name in ["dense-f32", "moe-bf16-stacked"] {
        let ids = u32s(&expected(name)["prompt_ids"]);
        let engine = gpu_engine(&d, name);
        let v = engine.model.cfg.vocab_size;
        let mut full = engine.new_cache(ids.len()).unwrap();
        let all = engine.forward(&ids, &mut full, Logits::All).unwrap(); // [n, v]
        let split = ids.len() - 5;
        let mut step = engine.new_cache(ids.len()).unwrap();
        let mut got = engine.forward(&ids[..split], &mut step, Logits::All).unwrap();
        for &id in &ids[split..] {
            got.extend(engine.forward(&[id], &mut step, Logits::Last).unwrap());
        }
        assert_eq!(step.len(), ids.len());
        check_nmse(&format!("{name} decode steps vs one prefill"), &got[split * v..], &all[split * v..], BLOCK_NMSE);
    }
}

#[test]
fn gpu_greedy_generation_through_engine() {
    let Some(d) = gpu() else { return };
    for name in FIXTURES {
        let exp = expected(name);
        let (ids, want) = (u32s(&exp["prompt_ids"]), u32s(&exp["greedy_ids"]));
        let engine = gpu_engine(&d, name);
        let req = GenerateRequest { sampling: SamplingParams::default(), max_new_tokens: want.len() };
        let got = engine.generate(&ids, &req, &mut |_| {}).unwrap().token_ids;
        let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        eprintln!("{name}: GPU greedy agrees with transformers for {agree} of {} tokens", want.len());
        let last: Vec<f32> = f32s(exp["logits"].as_array().unwrap().last().unwrap());
        let mut sorted = last.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > ARGMAX_MARGIN {
            assert!(agree >= 1, "{name}: first greedy token {:?} vs {}", got.first(), want[0]);
        }
    }
}

#[test]
fn gpu_forward_rejects_bad_input() {
    let Some(d) = gpu() else { return };
    let engine = gpu_engine(&d, "moe-bf16-stacked");
    let mut cache = engine.new_cache(4).unwrap();
    let v = engine.model.cfg.vocab_size as u32;
    assert!(matches!(engine.forward(&[v], &mut cache, Logits::Last), Err(Error::Request(_))));
    assert!(matches!(engine.forward(&[], &mut cache, Logits::Last), Err(Error::Request(_))));
    assert!(matches!(engine.forward(&[1, 2, 3, 4, 5], &mut cache, Logits::Last), Err(Error::Request(_))));
    assert_eq!(cache.len(), 0, "failed calls leave the cache unchanged");
    engine.forward(&[1, 2, 3, 4], &mut cache, Logits::Last).unwrap();
    assert!(matches!(engine.forward(&[1], &mut cache, Logits::Last), Err(Error::Request(_))));
    // A CPU cache on a GPU engine is refused, not silently mixed.
    let mut cpu = ernie_runtime::DeviceCache::Cpu(KvCache::new(&engine.model.cfg, 4).unwrap());
    assert!(matches!(engine.forward(&[1], &mut cpu, Logits::Last), Err(Error::Request(_))));
    let hidden = engine.forward(&[1, 2], &mut engine.new_cache(2).unwrap(), Logits::Hidden).unwrap();
    let mut cpu_cache = KvCache::new(&engine.model.cfg, 2).unwrap();
    let want = engine.model.forward(&[1, 2], &mut cpu_cache, Logits::Hidden, None).unwrap();
    assert!(nmse(&hidden, &want) < MODEL_LOGITS_NMSE, "hidden states {}", nmse(&hidden, &want));
}

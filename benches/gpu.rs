//! GPU benches of the CUDA backend, run by `scripts/gpu-check.sh` on a lent GPU machine (never in
//! CI: GPU numbers come only from that script). A plain timed `main` (CUDA events around the
//! region, warm-up first, median of repeats) rather than criterion, so the whole run fits a
//! short lease.
//!
//! | section  | shapes (ERNIE-4.5-21B-A3B: H 2560, expert I 1536, E 64, top-6)     | reports            |
//! |----------|--------------------------------------------------------------------|--------------------|
//! | ceiling  | device copy 1 GiB; cuBLAS bf16 8192³                               | GB/s, TFLOP/s      |
//! | route    | moe_route (+ moe_align), T = 1, 2, 4, ..., 4096 tokens × 64 experts | µs per call        |
//! | gemm     | moe_gemm_swiglu + moe_gemm_down, T = 1 .. 8192; cuBLAS dense GEMMs of the same FLOPs | TFLOP/s, GB/s |
//! | decode   | 4-layer 21B-A3B-shaped model (layer 0 dense), prompt 128, 64 steps  | tokens/s vs roofline |
//!
//! Usage: `gpu [ceiling] [route] [gemm] [decode] [--quick]` (no section = all). Writes
//! `bench.csv` (section, case, metric, value, unit) to `$ERNIE_BENCH_OUT` when set. Without a GPU
//! it prints why and exits 0, or 1 when `ERNIE_REQUIRE_GPU=1`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use ernie_runtime::backend::cuda::cudarc::driver::sys::CUevent_flags;
use ernie_runtime::backend::cuda::kernels::moe_gemm::{AlignedRows, GemmDims};
use ernie_runtime::backend::cuda::kernels::MoePlan;
use ernie_runtime::backend::cuda::{ops, CudaDevice};
use ernie_runtime::model::cuda::{CudaKvCache, CudaModel};
use ernie_runtime::{Error, Logits, Result, Tensor, TextConfig, Transformer, Weights};
use half::bf16;
use rayon::prelude::*;

const H: usize = 2560;
const I: usize = 1536;
const E: usize = 64;
const K: usize = 6;
const ROUTE_TOKENS: [usize; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
const GEMM_TOKENS: [usize; 10] = [1, 2, 4, 16, 64, 256, 1024, 2048, 4096, 8192];
const DECODE_LAYERS: usize = 4;
const DECODE_PROMPT: usize = 128;
const DECODE_STEPS: usize = 64;

/// Deterministic fast random values (splitmix64), uniform in (-scale, scale).
fn random_f32(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut z = (i as u64 ^ seed.rotate_left(17)).wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn random_bf16(n: usize, scale: f32, seed: u64) -> Vec<bf16> {
    random_f32(n, scale, seed).into_par_iter().map(bf16::from_f32).collect()
}

struct Report {
    csv: Vec<String>,
}

impl Report {
    fn row(&mut self, section: &str, case: &str, metric: &str, value: f64, unit: &str) {
        self.csv.push(format!("{section},{case},{metric},{value:.6},{unit}"));
    }
}

/// Median milliseconds per call of `f`: `batch` calls between two events, `reps` times, after a
/// warm-up batch (module load, cuBLAS heuristics and allocations stay out of the numbers).
fn time_ms(d: &CudaDevice, reps: usize, batch: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let err = |e: ernie_runtime::backend::cuda::cudarc::driver::DriverError| Error::Cuda { op: "event", message: e.to_string() };
    let (start, end) = (
        d.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err)?,
        d.context().new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err)?,
    );
    for _ in 0..batch {
        f()?;
    }
    d.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        start.record(d.stream()).map_err(err)?;
        for _ in 0..batch {
            f()?;
        }
        end.record(d.stream()).map_err(err)?;
        times.push(start.elapsed_ms(&end).map_err(err)? as f64 / batch as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Copy bandwidth (bytes read + written) and the cuBLAS bf16 rate: the two ceilings.
fn ceilings(d: &CudaDevice, r: &mut Report, reps: usize) -> Result<(f64, f64)> {
    let n = 1usize << 29; // 1 GiB of bf16
    let src = d.upload(&random_bf16(n, 1.0, 1))?;
    let mut dst = d.zeros::<bf16>(n)?;
    let ms =
        time_ms(d, reps, 1, || d.stream().memcpy_dtod(&src, &mut dst).map_err(|e| Error::Cuda { op: "memcpy", message: e.to_string() }))?;
    let gbs = 2.0 * (n * 2) as f64 / (ms * 1e-3) / 1e9;
    println!("ceiling  device copy 1 GiB: {ms:.3} ms, {gbs:.0} GB/s (read + write)");
    r.row("ceiling", "copy_1GiB", "bandwidth", gbs, "GB/s");
    drop((src, dst));
    let m = 8192;
    let (a, b) = (d.upload(&random_bf16(m * m, 1.0, 2))?, d.upload(&random_bf16(m * m, 1.0, 3))?);
    let mut c = d.zeros::<bf16>(m * m)?;
    let ms = time_ms(d, reps, 1, || ops::matmul_xwt(d, &a, &b, &mut c, m, m, false))?;
    let tflops = 2.0 * (m as f64).powi(3) / (ms * 1e-3) / 1e12;
    println!("ceiling  cuBLAS bf16 8192^3: {ms:.3} ms, {tflops:.0} TFLOP/s");
    r.row("ceiling", "cublas_bf16_8192", "rate", tflops, "TFLOP/s");
    Ok((gbs, tflops))
}

fn route(d: &CudaDevice, r: &mut Report, reps: usize) -> Result<()> {
    println!("route    T tokens x {E} experts, top-{K}: moe_route alone, and moe_route + moe_align");
    let bias = d.upload(&random_f32(E, 0.05, 9))?;
    for t in ROUTE_TOKENS {
        let logits = d.upload(&random_f32(t * E, 3.0, 10 + t as u64))?;
        let plan = MoePlan::new(t, K, E).map_err(|e| Error::Cuda { op: "plan", message: e.to_string() })?;
        let (mut ids, mut w) = (d.zeros::<u32>(t * K)?, d.zeros::<f32>(t * K)?);
        let (mut sorted, mut tiles, mut n_pad) = (d.zeros::<u32>(plan.capacity)?, d.zeros::<u32>(plan.n_tiles)?, d.zeros::<u32>(1)?);
        let route_ms = time_ms(d, reps, 20, || {
            ops::route_logits(d, &logits.as_view(), E, K, &bias.as_view(), 1e-12, &mut ids.as_view_mut(), &mut w.as_view_mut())
        })?;
        let both_ms = time_ms(d, reps, 20, || {
            ops::route_logits(d, &logits.as_view(), E, K, &bias.as_view(), 1e-12, &mut ids.as_view_mut(), &mut w.as_view_mut())?;
            ops::moe_align(
                d,
                &ids.as_view(),
                E,
                plan.tile.block_m as usize,
                &mut sorted.as_view_mut(),
                &mut tiles.as_view_mut(),
                &mut n_pad.as_view_mut(),
            )
        })?;
        println!("route    T={t:5}: route {:8.2} us   route+align {:8.2} us", route_ms * 1e3, both_ms * 1e3);
        r.row("route", &format!("T={t}"), "moe_route", route_ms * 1e3, "us");
        r.row("route", &format!("T={t}"), "moe_route+moe_align", both_ms * 1e3, "us");
    }
    Ok(())
}

fn gemm(d: &CudaDevice, r: &mut Report, reps: usize, peak_gbs: f64) -> Result<()> {
    println!("gemm     grouped GEMM pair (gate/up+SwiGLU, down) at E {E} top-{K} H {H} I {I} vs cuBLAS dense GEMMs of the same FLOPs");
    let w_gate_up = d.upload(&random_bf16(E * 2 * I * H, 0.02, 20))?;
    let w_down = d.upload(&random_bf16(E * H * I, 0.02, 21))?;
    let w1 = d.upload(&random_bf16(2 * I * H, 0.02, 22))?; // dense twin: one expert's weights
    let w2 = d.upload(&random_bf16(H * I, 0.02, 23))?;
    let bias = d.upload(&vec![0.0f32; E])?;
    for t in GEMM_TOKENS {
        let plan = MoePlan::new(t, K, E).map_err(|e| Error::Cuda { op: "plan", message: e.to_string() })?;
        let np = plan.n_pairs;
        let x = d.upload(&random_bf16(t * H, 1.0, 30 + t as u64))?;
        let logits = d.upload(&random_f32(t * E, 3.0, 40 + t as u64))?;
        let (mut ids, mut w) = (d.zeros::<u32>(np)?, d.zeros::<f32>(np)?);
        let (mut sorted, mut tiles, mut n_pad) = (d.zeros::<u32>(plan.capacity)?, d.zeros::<u32>(plan.n_tiles)?, d.zeros::<u32>(1)?);
        ops::route_logits(d, &logits.as_view(), E, K, &bias.as_view(), 1e-12, &mut ids.as_view_mut(), &mut w.as_view_mut())?;
        ops::moe_align(
            d,
            &ids.as_view(),
            E,
            plan.tile.block_m as usize,
            &mut sorted.as_view_mut(),
            &mut tiles.as_view_mut(),
            &mut n_pad.as_view_mut(),
        )?;
        let host_ids = d.download(&ids)?;
        let mut active = host_ids.clone();
        active.sort_unstable();
        active.dedup();
        let (mut act, mut slot) = (d.zeros::<bf16>(np * I)?, d.zeros::<bf16>(np * H)?);
        let (sv, tv, nv) = (sorted.as_view(), tiles.as_view(), n_pad.as_view());
        let rows = AlignedRows { sorted_ids: &sv, expert_ids: &tv, n_padded: &nv };
        let dims = GemmDims { plan, hidden: H, inter: I };
        let reps_t = if t >= 4096 { reps.min(10) } else { reps };
        let grouped_ms = time_ms(d, reps_t, 1, || {
            ops::moe_gemm_swiglu(d, &x.as_view(), &w_gate_up.as_view(), &rows, &mut act.as_view_mut(), dims)?;
            ops::moe_gemm_down(d, &act.as_view(), &w_down.as_view(), &rows, &w.as_view(), &mut slot.as_view_mut(), dims)
        })?;
        // Dense twin: [T*k, H] x [H, 2I] then [T*k, I] x [I, H] — the same multiply-adds.
        let xd = d.upload(&random_bf16(np * H, 1.0, 50 + t as u64))?;
        let (mut y1, mut y2) = (d.zeros::<bf16>(np * 2 * I)?, d.zeros::<bf16>(np * H)?);
        let dense_ms = time_ms(d, reps_t, 1, || {
            ops::matmul_xwt(d, &xd, &w1, &mut y1, 2 * I, H, false)?;
            ops::matmul_xwt(d, &act, &w2, &mut y2, H, I, false)
        })?;
        let flops = 2.0 * np as f64 * (3 * H * I) as f64;
        let bytes = (active.len() * 3 * H * I * 2 + t * H * 2 + np * (I * 4 + H * 2)) as f64;
        let (g_tf, d_tf) = (flops / (grouped_ms * 1e-3) / 1e12, flops / (dense_ms * 1e-3) / 1e12);
        let g_gbs = bytes / (grouped_ms * 1e-3) / 1e9;
        println!(
            "gemm     T={t:5} pairs {np:6} experts {:2}: grouped {:9.3} ms {g_tf:7.1} TFLOP/s {g_gbs:6.0} GB/s ({:4.1}% of copy bw) | cuBLAS dense {:9.3} ms {d_tf:7.1} TFLOP/s | grouped/dense {:.2}",
            active.len(),
            grouped_ms,
            100.0 * g_gbs / peak_gbs,
            dense_ms,
            g_tf / d_tf
        );
        let case = format!("T={t}");
        r.row("gemm", &case, "grouped_ms", grouped_ms, "ms");
        r.row("gemm", &case, "grouped_tflops", g_tf, "TFLOP/s");
        r.row("gemm", &case, "grouped_gbs", g_gbs, "GB/s");
        r.row("gemm", &case, "cublas_dense_ms", dense_ms, "ms");
        r.row("gemm", &case, "cublas_dense_tflops", d_tf, "TFLOP/s");
    }
    Ok(())
}

/// 21B-A3B config with `DECODE_LAYERS` layers (layer 0 dense, the rest MoE), tied head.
fn decode_config() -> Result<TextConfig> {
    TextConfig::from_json(&serde_json::json!({
        "model_type": "ernie4_5_moe", "hidden_size": H, "intermediate_size": 12288, "num_hidden_layers": DECODE_LAYERS,
        "num_attention_heads": 20, "num_key_value_heads": 4, "vocab_size": 103424, "max_position_embeddings": 131072,
        "moe_num_experts": E, "moe_k": K, "moe_intermediate_size": I, "moe_num_shared_experts": 2,
        "moe_layer_start_index": 1, "moe_layer_interval": 1, "tie_word_embeddings": true, "rope_theta": 500000.0
    }))
}

/// Random bf16 weights in the layout of `tests/reference/make_bench_checkpoint.py`.
fn decode_model(cfg: &TextConfig) -> Result<Transformer> {
    let (h, v, q, kv, i, si) = (H, cfg.vocab_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size, I * 2);
    let mut seed = 100;
    let mut t = |name: String, shape: Vec<usize>, scale: f32| -> Result<(String, Tensor)> {
        seed += 1;
        let n = shape.iter().product();
        Ok((name, Tensor::from_bf16(&random_bf16(n, scale, seed), shape)?))
    };
    let mut all = vec![t("model.embed_tokens.weight".into(), vec![v, h], 0.02)?, t("model.norm.weight".into(), vec![h], 1.0)?];
    for l in 0..DECODE_LAYERS {
        let p = format!("model.layers.{l}");
        all.push(t(format!("{p}.input_layernorm.weight"), vec![h], 1.0)?);
        all.push(t(format!("{p}.post_attention_layernorm.weight"), vec![h], 1.0)?);
        for (n, s) in [("q_proj", vec![q, h]), ("k_proj", vec![kv, h]), ("v_proj", vec![kv, h]), ("o_proj", vec![h, q])] {
            all.push(t(format!("{p}.self_attn.{n}.weight"), s, 0.02)?);
        }
        if l == 0 {
            for (n, s) in [("gate_proj", vec![i, h]), ("up_proj", vec![i, h]), ("down_proj", vec![h, i])] {
                all.push(t(format!("{p}.mlp.{n}.weight"), s, 0.02)?);
            }
        } else {
            all.push((format!("{p}.mlp.gate.weight"), Tensor::from_f32(random_f32(E * h, 0.05, 7 + l as u64), vec![E, h])?));
            all.push((
                format!("{p}.mlp.gate.moe_statics.e_score_correction_bias"),
                Tensor::from_f32(random_f32(E, 0.01, 8 + l as u64), vec![1, E])?,
            ));
            all.push(t(format!("{p}.mlp.experts.gate_up_proj"), vec![E, 2 * I, h], 0.02)?);
            all.push(t(format!("{p}.mlp.experts.down_proj"), vec![E, h, I], 0.02)?);
            for (n, s) in [("gate_proj", vec![si, h]), ("up_proj", vec![si, h]), ("down_proj", vec![h, si])] {
                all.push(t(format!("{p}.mlp.shared_experts.{n}.weight"), s, 0.02)?);
            }
        }
    }
    let mut w = Weights::from_tensors(all);
    let model = Transformer::load(cfg, &mut w)?;
    w.finish()?;
    Ok(model)
}

/// Bytes one decode step must read at least: every weight it multiplies by once (k experts per
/// MoE layer), the KV cache up to `kv_len`, the head; activations are negligible.
fn decode_bytes(cfg: &TextConfig, kv_len: usize) -> f64 {
    let (h, q, kv) = (H, cfg.q_dim(), cfg.kv_dim());
    let attn = (2 * q * h + 2 * kv * h) * 2 + 2 * kv_len * kv * 2;
    let mut total = cfg.vocab_size * h * 2 + h * 2;
    for l in 0..DECODE_LAYERS {
        total += attn;
        total += if l == 0 { 3 * h * cfg.intermediate_size * 2 } else { E * h * 4 + K * 3 * h * I * 2 + 3 * h * 2 * I * 2 };
    }
    total as f64
}

fn decode(d: &CudaDevice, r: &mut Report, peak_gbs: f64) -> Result<()> {
    let cfg = decode_config()?;
    let t0 = Instant::now();
    let model = decode_model(&cfg)?;
    let gpu = CudaModel::upload(&model, d)?;
    drop(model);
    println!("decode   {DECODE_LAYERS}-layer 21B-A3B-shaped model built and uploaded in {:.1} s", t0.elapsed().as_secs_f64());
    let prompt: Vec<u32> = (0..DECODE_PROMPT as u32).map(|i| (i * 7919) % 100_000).collect();
    let mut cache = CudaKvCache::new(&gpu, DECODE_PROMPT + DECODE_STEPS + 8)?;
    let argmax = |l: &[f32]| l.iter().enumerate().fold((0u32, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i as u32, x) } else { b }).0;
    gpu.forward(&prompt[..8], &mut cache, Logits::Last, None)?; // warm-up: scratch, cuBLAS
    cache.reset();
    let t_prefill = Instant::now();
    let mut logits = gpu.forward(&prompt, &mut cache, Logits::Last, None)?;
    let prefill_s = t_prefill.elapsed().as_secs_f64();
    let t_decode = Instant::now();
    for _ in 0..DECODE_STEPS {
        let next = argmax(&logits);
        logits = gpu.forward(&[next], &mut cache, Logits::Last, None)?;
    }
    let step_s = t_decode.elapsed().as_secs_f64() / DECODE_STEPS as f64;
    let bytes = decode_bytes(&cfg, DECODE_PROMPT + DECODE_STEPS / 2);
    let roofline = peak_gbs * 1e9 / bytes;
    let tok_s = 1.0 / step_s;
    println!(
        "decode   prefill {DECODE_PROMPT} tokens {:.1} ms ({:.0} tok/s); decode {:.3} ms/token = {tok_s:.0} tok/s; {:.0} MB/token -> roofline {roofline:.0} tok/s at {peak_gbs:.0} GB/s: {:.1}% of roofline",
        prefill_s * 1e3,
        DECODE_PROMPT as f64 / prefill_s,
        step_s * 1e3,
        bytes / 1e6,
        100.0 * tok_s / roofline
    );
    r.row("decode", "prefill_128", "tokens_per_s", DECODE_PROMPT as f64 / prefill_s, "tok/s");
    r.row("decode", "batch1", "tokens_per_s", tok_s, "tok/s");
    r.row("decode", "batch1", "bytes_per_token", bytes, "B");
    r.row("decode", "batch1", "roofline_tokens_per_s", roofline, "tok/s");
    r.row("decode", "batch1", "fraction_of_roofline", tok_s / roofline, "");
    Ok(())
}

fn run(sections: &[String], quick: bool) -> Result<Report> {
    let d = CudaDevice::open(0)?;
    println!("device   {} ({}), {:?}", d.name(), d.arch(), d);
    let reps = if quick { 5 } else { 25 };
    let mut r = Report { csv: vec!["section,case,metric,value,unit".into()] };
    let want = |s: &str| sections.is_empty() || sections.iter().any(|x| x == s);
    // The ceilings are needed by the other sections; measured unless only route is asked for.
    let (gbs, _) = if want("ceiling") || want("gemm") || want("decode") { ceilings(&d, &mut r, reps)? } else { (0.0, 0.0) };
    if want("route") {
        route(&d, &mut r, reps)?;
    }
    if want("gemm") {
        gemm(&d, &mut r, reps, gbs)?;
    }
    if want("decode") {
        decode(&d, &mut r, gbs)?;
    }
    Ok(r)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sections: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let report = match run(&sections, quick) {
        Ok(r) => r,
        Err(Error::CudaUnavailable { reason }) => {
            let required = std::env::var("ERNIE_REQUIRE_GPU").is_ok_and(|v| v == "1");
            eprintln!("gpu bench skipped: {reason}");
            return if required { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
        Err(e) => {
            eprintln!("gpu bench failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = std::env::var_os("ERNIE_BENCH_OUT") {
        let path = std::path::Path::new(&dir).join("bench.csv");
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all((report.csv.join("\n") + "\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

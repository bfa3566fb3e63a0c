//! The 16-bit GEMM / GEMV kernels of `ops::gemm` (issue #13, item 1) at ERNIE-4.5-21B-A3B shapes,
//! with the old `ops::matmul_xwt` path as the baseline in the same run.
//!
//! | projection        | n × k        |
//! |-------------------|--------------|
//! | q / o             | 2560 × 2560  |
//! | k / v             | 512 × 2560   |
//! | expert gate / up  | 1536 × 2560  |
//! | expert down       | 2560 × 1536  |
//!
//! Prefill is m = 512 rows (GFLOP/s, and the fraction of this machine's FMA peak measured in the
//! same run by independent FMA chains on every thread); decode is m = 1 (GB/s of weights, and the
//! fraction of the read bandwidth measured in the same run). Decode weights rotate through
//! ≥ 1 GiB of copies so they come from DRAM, not the (here 300 MiB) L3. The summary table printed
//! first gives medians of interleaved rounds; criterion then times each variant on its own.
//!
//! Run: `cargo bench --bench gemm` (needs ~2.5 GB of RAM).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ernie_runtime::ops::gemm::{self, ExpertJob, Kernel, WeightRef};
use ernie_runtime::ops::matmul_xwt;
use ernie_runtime::Tensor;
use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::{memory_bandwidth, rand_bf16};

const PREFILL_M: usize = 512;
const SHAPES: [(&str, usize, usize); 4] = [("q_o", 2560, 2560), ("k_v", 512, 2560), ("gate_up", 1536, 2560), ("down", 2560, 1536)];
/// Decode weights cycle through at least this many bytes of copies (beyond the L3).
const DECODE_POOL_BYTES: usize = 1 << 30;
const ROUNDS: usize = 7;

fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    rand_bf16(n, seed).iter().map(|v| v.to_f32() * 10.0).collect()
}


/// FMA peak, flop/s over all rayon threads: 16 (AVX-512) or 12 (AVX2) independent FMA chains per
/// thread, all in registers (hides the FMA latency on two ports), median of 5. AVX-512 where present, else AVX2, else 0.
fn fma_peak() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn chains512(iters: usize) -> f32 {
            let mut acc = [_mm512_set1_ps(1.0); 16];
            let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, m, c);
                }
            }
            let mut s = 0.0;
            for a in acc {
                s += _mm512_reduce_add_ps(a);
            }
            s
        }
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iters: usize) -> f32 {
            let mut acc = [_mm256_set1_ps(1.0); 12];
            let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, m, c);
                }
            }
            let mut s = _mm256_setzero_ps();
            for a in acc {
                s = _mm256_add_ps(s, a);
            }
            let mut o = [0.0f32; 8];
            // SAFETY: o holds 8 floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), s) };
            o.iter().sum()
        }
        let threads = rayon::current_num_threads();
        let iters = 20_000_000;
        let (flops, name, f): (f64, &str, fn(usize) -> f32) = if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: avx512f detected.
            ((iters * 16 * 16 * 2) as f64, "AVX-512 FMA", |n| unsafe { chains512(n) })
        } else if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: avx2 + fma detected.
            ((iters * 12 * 8 * 2) as f64, "AVX2 FMA", |n| unsafe { chains256(n) })
        } else {
            return (0.0, "none");
        };
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                let r: f32 = (0..threads).into_par_iter().map(|_| f(iters)).sum();
                std::hint::black_box(r);
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        (flops * threads as f64 / t[2], name)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (0.0, "none")
}

/// Median seconds per call over `ROUNDS` interleaved rounds of all `fs` (one call each per round).
fn interleaved_medians(fs: &mut [(&str, Box<dyn FnMut() + '_>)]) -> Vec<f64> {
    for (_, f) in fs.iter_mut() {
        f();
    }
    let mut t = vec![Vec::new(); fs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            f();
            t[i].push(s.elapsed().as_secs_f64());
        }
    }
    t.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn kernels() -> Vec<Kernel> {
    [Kernel::Avx512, Kernel::Avx512Bf16Dot, Kernel::Avx2, Kernel::Portable].into_iter().filter(|k| k.is_available()).collect()
}

fn bench_prefill(c: &mut Criterion, peak: f64) {
    let mut group = c.benchmark_group("gemm_prefill_m512");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for (si, &(name, n, k)) in SHAPES.iter().enumerate() {
        let w = rand_bf16(n * k, 10 + si as u64);
        let wf16: Vec<half::f16> = w.iter().map(|v| half::f16::from_f32(v.to_f32())).collect();
        let t = Tensor::from_bf16(&w, vec![n, k]).expect("shape");
        let t16 = Tensor::from_f16(&wf16, vec![n, k]).expect("shape");
        let x = rand_f32(PREFILL_M * k, 20 + si as u64);
        let flops = (2 * PREFILL_M * n * k) as f64;
        let wr = WeightRef::of(&t);
        let wr16 = WeightRef::of(&t16);
        let mut outs = vec![vec![0.0f32; PREFILL_M * n]; 8];
        let mut fs: Vec<(String, Box<dyn FnMut() + '_>)> = Vec::new();
        let mut it = outs.iter_mut();
        let (x, t, t16) = (&x, &t, &t16);
        let o = it.next().expect("buf");
        fs.push(("old bf16 matmul_xwt".into(), Box::new(move || matmul_xwt(x, t, o).expect("old"))));
        let o = it.next().expect("buf");
        fs.push(("old f16 matmul_xwt".into(), Box::new(move || matmul_xwt(x, t16, o).expect("old"))));
        for kern in kernels() {
            let o = it.next().expect("buf");
            fs.push((format!("new bf16 {kern:?}"), Box::new(move || gemm::gemm(x, wr, PREFILL_M, n, k, o, kern).expect("new"))));
        }
        let o = it.next().expect("buf");
        let k16 = Kernel::detect(gemm::Precision::Exact);
        fs.push((format!("new f16 {k16:?}"), Box::new(move || gemm::gemm(x, wr16, PREFILL_M, n, k, o, k16).expect("new"))));
        let mut named: Vec<(&str, Box<dyn FnMut() + '_>)> = fs.iter_mut().map(|(s, f)| (s.as_str(), std::mem::replace(f, Box::new(|| ())))).collect();
        let med = interleaved_medians(&mut named);
        eprintln!("\nprefill {name}: m {PREFILL_M} × n {n} × k {k}, medians of {ROUNDS} interleaved rounds");
        for (i, (label, _)) in named.iter().enumerate() {
            let base = if label.contains("f16 ") && !label.contains("bf16") { med[1] } else { med[0] };
            eprintln!(
                "  {label:<28} {:8.2} ms {:7.1} GFLOP/s  {:5.2}× old  {:5.1} % of peak",
                med[i] * 1e3,
                flops / med[i] / 1e9,
                base / med[i],
                100.0 * flops / med[i] / peak
            );
        }
        group.throughput(Throughput::Elements(flops as u64));
        for (label, f) in named.iter_mut() {
            group.bench_function(format!("{name}/{label}"), |b| b.iter(&mut *f));
        }
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion, bw: f64) {
    let mut group = c.benchmark_group("gemv_decode_m1");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for (si, &(name, n, k)) in SHAPES.iter().enumerate() {
        let bytes = n * k * 2;
        let copies = DECODE_POOL_BYTES.div_ceil(bytes);
        let pool: Vec<Tensor> = (0..copies).map(|i| Tensor::from_bf16(&rand_bf16(n * k, 100 * si as u64 + i as u64), vec![n, k]).expect("shape")).collect();
        let x = rand_f32(k, 30 + si as u64);
        let mut outs = vec![vec![0.0f32; n]; 8];
        let mut it = outs.iter_mut();
        let mut fs: Vec<(String, Box<dyn FnMut() + '_>)> = Vec::new();
        let (pool, x) = (&pool, &x);
        let o = it.next().expect("buf");
        let mut i = 0usize;
        fs.push((
            "old matmul_xwt".into(),
            Box::new(move || {
                i = (i + 1) % copies;
                matmul_xwt(x, &pool[i], o).expect("old")
            }),
        ));
        for kern in kernels().into_iter().filter(|&k| k != Kernel::Avx512Bf16Dot) {
            let o = it.next().expect("buf");
            let mut i = 0usize;
            fs.push((
                format!("new gemv {kern:?}"),
                Box::new(move || {
                    i = (i + 1) % copies;
                    gemm::gemv(x, WeightRef::of(&pool[i]), 1, n, k, o, kern).expect("new")
                }),
            ));
        }
        let mut named: Vec<(&str, Box<dyn FnMut() + '_>)> = fs.iter_mut().map(|(s, f)| (s.as_str(), std::mem::replace(f, Box::new(|| ())))).collect();
        let med = interleaved_decode(&mut named);
        eprintln!("\ndecode {name}: m 1 × n {n} × k {k} ({:.1} MB of bf16 weights, pool of {copies})", bytes as f64 / 1e6);
        for (i, (label, _)) in named.iter().enumerate() {
            eprintln!(
                "  {label:<28} {:8.1} µs {:6.1} GB/s  {:5.2}× old  {:5.1} % of bandwidth",
                med[i] * 1e6,
                bytes as f64 / med[i] / 1e9,
                med[0] / med[i],
                100.0 * bytes as f64 / med[i] / bw
            );
        }
        group.throughput(Throughput::Bytes(bytes as u64));
        for (label, f) in named.iter_mut() {
            group.bench_function(format!("{name}/{label}"), |b| b.iter(&mut *f));
        }
    }
    group.finish();
}

/// Decode calls are short: median over rounds of `copies`-long sweeps per variant.
fn interleaved_decode(fs: &mut [(&str, Box<dyn FnMut() + '_>)]) -> Vec<f64> {
    const CALLS: usize = 64;
    let mut t = vec![Vec::new(); fs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in fs.iter_mut().enumerate() {
            let s = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            t[i].push(s.elapsed().as_secs_f64() / CALLS as f64);
        }
    }
    t.into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

/// One decode token's MoE experts: 6 experts × (gate, up [1536, 2560], down [2560, 1536]) of 64.
fn bench_experts(c: &mut Criterion, bw: f64) {
    const E: usize = 64;
    const TOPK: usize = 6;
    const H: usize = 2560;
    const I: usize = 1536;
    let gate: Vec<Tensor> = (0..E).map(|e| Tensor::from_bf16(&rand_bf16(I * H, 1000 + e as u64), vec![I, H]).expect("shape")).collect();
    let up: Vec<Tensor> = (0..E).map(|e| Tensor::from_bf16(&rand_bf16(I * H, 2000 + e as u64), vec![I, H]).expect("shape")).collect();
    let x = rand_f32(H, 5);
    let bytes = TOPK * 2 * I * H * 2;
    let mut step = 0usize;
    let mut pick = move || {
        step += 1;
        (0..TOPK).map(|j| (step * 7 + j * 11) % E).collect::<Vec<_>>()
    };
    let mut o_old = vec![0.0f32; TOPK * 2 * I];
    let mut o_new = vec![0.0f32; TOPK * 2 * I];
    let kern = Kernel::detect(gemm::Precision::Exact);
    let mut old = |ids: &[usize]| {
        for (j, &e) in ids.iter().enumerate() {
            matmul_xwt(&x, &gate[e], &mut o_old[2 * j * I..(2 * j + 1) * I]).expect("old");
            matmul_xwt(&x, &up[e], &mut o_old[(2 * j + 1) * I..(2 * j + 2) * I]).expect("old");
        }
    };
    let mut new = |ids: &[usize]| {
        let jobs: Vec<ExpertJob> =
            ids.iter().flat_map(|&e| [WeightRef::of(&gate[e]), WeightRef::of(&up[e])]).map(|w| ExpertJob { w, x: &x, m: 1 }).collect();
        gemm::gemv_experts(&jobs, I, H, &mut o_new, kern).expect("new");
    };
    let mut t = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (v, tv) in t.iter_mut().enumerate() {
            let s = Instant::now();
            for _ in 0..32 {
                let ids = pick();
                if v == 0 {
                    old(&ids)
                } else {
                    new(&ids)
                }
            }
            tv.push(s.elapsed().as_secs_f64() / 32.0);
        }
    }
    let med: Vec<f64> = t
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    eprintln!("\ndecode experts: {TOPK} of {E} experts' gate+up [{I}, {H}] bf16 ({:.1} MB per token)", bytes as f64 / 1e6);
    for (i, label) in ["old 12 × matmul_xwt", &format!("new gemv_experts {kern:?}")].iter().enumerate() {
        eprintln!(
            "  {label:<28} {:8.1} µs {:6.1} GB/s  {:5.2}× old  {:5.1} % of bandwidth",
            med[i] * 1e6,
            bytes as f64 / med[i] / 1e9,
            med[0] / med[i],
            100.0 * bytes as f64 / med[i] / bw
        );
    }
    let mut group = c.benchmark_group("gemv_experts_decode");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("old", |b| b.iter(|| old(&pick())));
    group.bench_function("new", |b| b.iter(|| new(&pick())));
    group.finish();
}

fn bench_all(c: &mut Criterion) {
    let bw = memory_bandwidth();
    let (peak, peak_name) = fma_peak();
    eprintln!(
        "{} threads; read bandwidth {:.1} GB/s; {peak_name} peak {:.1} GFLOP/s; kernels available {:?}",
        rayon::current_num_threads(),
        bw / 1e9,
        peak / 1e9,
        kernels()
    );
    bench_prefill(c, peak);
    bench_decode(c, bw);
    bench_experts(c, bw);
    eprintln!("\nread bandwidth after: {:.1} GB/s", memory_bandwidth() / 1e9);
}

criterion_group!(benches, bench_all);
criterion_main!(benches);

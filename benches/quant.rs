//! Quantised GEMV (one activation row, the decode case, through `qgemv_batch`) over an ERNIE-4.5-21B-A3B expert-shaped
//! weight stack, Q4_K / Q6_K / Q8_0 against the bf16 GEMV, reported as GB/s of weight streamed
//! (criterion's throughput), plus the machine's read bandwidth measured in the same run.
//!
//! The weight is a stack of expert matrices `[E·1536, 2560]` (moe_intermediate × hidden) sized to
//! about 512 MB per format so it streams from DRAM rather than L3; quantised bytes are random
//! (valid for every format, with sane f16 scales), since speed does not depend on the values.
//! Every kernel path this CPU has is timed (scalar, AVX2, AVX-512 VNNI).
//!
//! `prefill`: the integer GEMM of quantised prefill against the dequantised f32 GEMM and bf16 on
//! expert- and projection-shaped products.
//!
//! Run: `cargo bench --bench quant` (needs ~1.2 GB of RAM); `cargo bench --bench quant prefill`
//! for the prefill group alone.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ernie_runtime::ops::{gemm, matmul_xwt};
use ernie_runtime::ops::quant::{qgemv_batch_on, qmatmul_dequant, qmatmul_int8, qmatmul_xwt_on, Path, QGemvJob, QScratch, QType, QWeight};
use ernie_runtime::Tensor;
use half::{bf16, f16};
use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::memory_bandwidth;

/// hidden_size (k) of ERNIE-4.5-21B-A3B.
const H: usize = 2560;
/// moe_intermediate_size: rows of one expert's gate or up projection.
const I: usize = 1536;
/// Target bytes per weight stack.
const TARGET_BYTES: usize = 512 << 20;

fn xorshift_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut s = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for b in chunk.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let w = s.to_le_bytes();
            b.copy_from_slice(&w[..b.len()]);
        }
    });
    v
}

/// Experts in a stack of about [`TARGET_BYTES`] for `bytes_per_elem`.
fn experts_for(bytes_per_elem: f64) -> usize {
    ((TARGET_BYTES as f64 / (I as f64 * H as f64 * bytes_per_elem)).ceil() as usize).max(1)
}

fn random_qweight(qt: QType) -> QWeight {
    let rows = experts_for(qt.block_bytes() as f64 / qt.block_elems() as f64) * I;
    let rb = qt.row_bytes(H).expect("H is whole blocks");
    let mut b = xorshift_bytes(rows * rb, qt.ggml_type() as u64);
    let d_at: &[usize] = match qt {
        QType::Q8_0 => &[0],
        QType::Q4K => &[0, 2],
        QType::Q6K => &[208],
    };
    let d = f16::from_f32(0.001).to_bits().to_le_bytes();
    b.par_chunks_mut(qt.block_bytes()).for_each(|blk| d_at.iter().for_each(|&at| blk[at..at + 2].copy_from_slice(&d)));
    QWeight::from_bytes(qt, rows, H, b).expect("sizes")
}


fn bench_gemv(c: &mut Criterion) {
    eprintln!("read bandwidth (parallel sum over 1 GiB): {:.1} GB/s", memory_bandwidth() / 1e9);
    eprintln!("quant kernel path detected: {:?}; threads: {}", Path::detect(), rayon::current_num_threads());
    let x: Vec<f32> = xorshift_bytes(H, 5).iter().map(|&b| b as f32 / 128.0 - 1.0).collect();
    let mut g = c.benchmark_group("gemv_expert_stack");
    g.sample_size(10);

    {
        let rows = experts_for(2.0) * I;
        let raw = xorshift_bytes(rows * H * 2, 1);
        let w: Vec<bf16> = raw.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]]) & 0xBFFF)).collect();
        let t = Tensor::from_bf16(&w, vec![rows, H]).expect("shape");
        drop(w);
        let mut out = vec![0.0f32; rows];
        g.throughput(Throughput::Bytes((rows * H * 2) as u64));
        g.bench_function(BenchmarkId::new("bf16", format!("{rows}x{H}")), |b| b.iter(|| matmul_xwt(&x, &t, &mut out).expect("gemv")));
    }
    for qt in [QType::Q4K, QType::Q6K, QType::Q8_0] {
        let w = random_qweight(qt);
        let (rows, _) = w.dims();
        let mut out = vec![0.0f32; rows];
        g.throughput(Throughput::Bytes(w.bytes().len() as u64));
        for p in Path::available() {
            if p == Path::Scalar && rows > 4 * I * 16 {
                // The scalar twin is for correctness; time it on a slice so the run stays short.
                let part = QWeight::from_bytes(qt, 16 * I, H, w.bytes()[..16 * I * w.row_bytes()].to_vec()).expect("slice");
                let mut o = vec![0.0f32; 16 * I];
                g.throughput(Throughput::Bytes(part.bytes().len() as u64));
                g.bench_function(BenchmarkId::new(format!("{qt}/{p:?}"), format!("{}x{H}", 16 * I)), |b| {
                    b.iter(|| qgemv_batch_on(p, &[QGemvJob::new(&part, &x, 1, &mut o)]).expect("gemv"))
                });
                g.throughput(Throughput::Bytes(w.bytes().len() as u64));
                continue;
            }
            g.bench_function(BenchmarkId::new(format!("{qt}/{p:?}"), format!("{rows}x{H}")), |b| {
                b.iter(|| qgemv_batch_on(p, &[QGemvJob::new(&w, &x, 1, &mut out)]).expect("gemv"))
            });
        }
    }
    g.finish();
}

/// Prefill (many activation rows): the integer GEMM (`qmatmul_int8`, VNNI) against the
/// dequantised-panel f32 GEMM (`qmatmul_dequant`, its predecessor and the fallback) and the bf16
/// packed GEMM on the same shape, all in this run; throughput in multiply-adds (`t·n·k`).
/// Shapes: one expert's gate projection at 8 rows and at pp512 with 64 experts top-6 (48 rows),
/// and a hidden × hidden projection over 512 rows.
fn bench_prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("prefill");
    g.sample_size(10);
    for &(t, n) in &[(8usize, I), (48, I), (512, H)] {
        let x: Vec<f32> = xorshift_bytes(t * H, 9).iter().map(|&b| b as f32 / 128.0 - 1.0).collect();
        let mut out = vec![0.0f32; t * n];
        g.throughput(Throughput::Elements((t * n * H) as u64));
        let shape = format!("{t}x{n}x{H}");
        {
            // Values of a trained layer's size (random bit patterns would hit subnormals).
            let w: Vec<bf16> = xorshift_bytes(n * H, 3).iter().map(|&b| bf16::from_f32((b as f32 - 127.5) / 2048.0)).collect();
            let w = Tensor::from_bf16(&w, vec![n, H]).expect("shape");
            g.bench_function(BenchmarkId::new("bf16/gemm", &shape), |b| b.iter(|| gemm::matmul(&x, &w, &mut out).expect("gemm")));
        }
        for qt in [QType::Q4K, QType::Q6K, QType::Q8_0] {
            let full = random_qweight(qt);
            let w = QWeight::from_bytes(qt, n, H, full.bytes()[..n * full.row_bytes()].to_vec()).expect("slice");
            drop(full);
            g.bench_function(BenchmarkId::new(format!("{qt}/int8"), &shape), |b| {
                b.iter(|| qmatmul_int8(&x, &w, &mut out).expect("int8"))
            });
            g.bench_function(BenchmarkId::new(format!("{qt}/dequant"), &shape), |b| {
                b.iter(|| qmatmul_dequant(&x, &w, &mut out).expect("dequant"))
            });
            if t <= 48 {
                // The block dots (decode's kernels) that took 5..15 rows before.
                let mut scratch = QScratch::default();
                g.bench_function(BenchmarkId::new(format!("{qt}/dots"), &shape), |b| {
                    b.iter(|| qmatmul_xwt_on(Path::detect(), &x, &w, &mut out, &mut scratch).expect("dots"))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench_gemv, bench_prefill);
criterion_main!(benches);

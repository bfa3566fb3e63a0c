//! Quantised GEMV (one activation row, the decode case, through `qgemv_batch`) over an ERNIE-4.5-21B-A3B expert-shaped
//! weight stack, Q4_K / Q6_K / Q8_0 against the bf16 GEMV, reported as GB/s of weight streamed
//! (criterion's throughput), plus the machine's read bandwidth measured in the same run.
//!
//! The weight is a stack of expert matrices `[E·1536, 2560]` (moe_intermediate × hidden) sized to
//! about 512 MB per format so it streams from DRAM rather than L3; quantised bytes are random
//! (valid for every format, with sane f16 scales), since speed does not depend on the values.
//! Every kernel path this CPU has is timed (scalar, AVX2, AVX-512 VNNI).
//!
//! Run: `cargo bench --bench quant` (needs ~1.2 GB of RAM).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ernie_runtime::ops::matmul_xwt;
use ernie_runtime::ops::quant::{qgemv_batch_on, Path, QGemvJob, QType, QWeight};
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

criterion_group!(benches, bench_gemv);
criterion_main!(benches);

//! Every CUDA op against the CPU op of the same name, on bf16-rounded random inputs, over the
//! awkward row counts 1, 33 and 511.
//!
//! Limits (NMSE, per op). One bf16 rounding of a result has relative error <= 2^-9, so its NMSE
//! is about 2^-18 / 3 ≈ 1.3e-6; the limits allow a few roundings plus f32 summation-order noise:
//! - `ONE_ROUNDING_NMSE` 1e-5: elementwise ops, rmsnorm, rope, a bf16-output GEMM;
//! - `F32_NMSE` 1e-9: f32-output GEMMs of bf16-exact inputs (only the summation order differs);
//! - `BLOCK_NMSE` 1e-4: blocks with several bf16 intermediates (model.rs).

use ernie_runtime::backend::cuda::cudarc::driver::CudaSlice;
use ernie_runtime::backend::cuda::{ops, CudaDevice, Linear};
use ernie_runtime::nn::moe::{group_by_expert, route_logits};
use ernie_runtime::ops::{matmul_xwt, rms_norm, rope_interleaved, silu_mul, RopeTable};
use ernie_runtime::Tensor;
use half::bf16;

use crate::{check_nmse, gpu, rand_bf16, rng, to_bf16, to_f32};

pub const ONE_ROUNDING_NMSE: f64 = 1e-5;
pub const F32_NMSE: f64 = 1e-9;
/// Rows whose k-th and (k+1)-th biased scores are this close may legitimately pick either expert
/// (f32 summation order); they are reported, not failed.
pub const TIE_EPS: f32 = 1e-6;
/// Routing weights are f32 softmax ratios: a few ulps apart at most.
pub const ROUTE_RTOL: f32 = 1e-5;
const ROWS: [usize; 3] = [1, 33, 511];
const THETA: f32 = 500_000.0;

fn up<T: ernie_runtime::backend::cuda::cudarc::driver::DeviceRepr>(d: &CudaDevice, v: &[T]) -> CudaSlice<T> {
    d.upload(v).unwrap()
}

fn down_bf16(d: &CudaDevice, s: &CudaSlice<bf16>) -> Vec<f32> {
    to_f32(&d.download(s).unwrap())
}

#[test]
fn op_embedding_is_an_exact_gather() {
    let Some(d) = gpu() else { return };
    let (v, h) = (1016, 64);
    let mut r = rng(1);
    let table = rand_bf16(&mut r, v * h, 1.0);
    let ids: Vec<u32> = vec![0, 1015, 7, 7, 512, 3];
    let mut out = d.zeros::<bf16>(ids.len() * h).unwrap();
    ops::embedding(&d, &up(&d, &to_bf16(&table)).as_view(), &up(&d, &ids).as_view(), &mut out.as_view_mut(), v, h).unwrap();
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * h..(i as usize + 1) * h].to_vec()).collect();
    assert_eq!(down_bf16(&d, &out), want);
}

#[test]
fn op_rms_norm() {
    let Some(d) = gpu() else { return };
    for (i, h) in [64usize, 2560].into_iter().enumerate() {
        for t in ROWS {
            let mut r = rng(10 + i as u64 * 7 + t as u64);
            let (x, w) = (rand_bf16(&mut r, t * h, 2.0), rand_bf16(&mut r, h, 1.5));
            let mut out = d.zeros::<bf16>(t * h).unwrap();
            ops::rms_norm(&d, &up(&d, &to_bf16(&x)).as_view(), &up(&d, &to_bf16(&w)).as_view(), 1e-5, &mut out.as_view_mut()).unwrap();
            let mut want = vec![0.0; t * h];
            rms_norm(&x, &w, 1e-5, &mut want);
            check_nmse(&format!("rms_norm t={t} h={h}"), &down_bf16(&d, &out), &want, ONE_ROUNDING_NMSE);
        }
    }
}

#[test]
fn op_matmul_xwt_bf16_f32_and_accumulate() {
    let Some(d) = gpu() else { return };
    for (i, (n, k)) in [(96usize, 64usize), (512, 2560), (1016, 64)].into_iter().enumerate() {
        for t in ROWS {
            let mut r = rng(20 + i as u64 * 7 + t as u64);
            let (x, w, c0) = (rand_bf16(&mut r, t * k, 1.0), rand_bf16(&mut r, n * k, 0.1), rand_bf16(&mut r, t * n, 1.0));
            let wt = Tensor::from_bf16(&to_bf16(&w), vec![n, k]).unwrap();
            let mut want = vec![0.0; t * n];
            matmul_xwt(&x, &wt, &mut want).unwrap();
            let (x_d, w_d) = (up(&d, &to_bf16(&x)), up(&d, &to_bf16(&w)));
            let mut y16 = d.zeros::<bf16>(t * n).unwrap();
            ops::matmul_xwt(&d, &x_d, &w_d, &mut y16, n, k, false).unwrap();
            check_nmse(&format!("matmul_xwt bf16 t={t} n={n} k={k}"), &down_bf16(&d, &y16), &want, ONE_ROUNDING_NMSE);
            let mut y32 = d.zeros::<f32>(t * n).unwrap();
            ops::matmul_xwt(&d, &x_d, &w_d, &mut y32, n, k, false).unwrap();
            check_nmse(&format!("matmul_xwt f32-out t={t} n={n} k={k}"), &d.download(&y32).unwrap(), &want, F32_NMSE);
            // beta = 1: the residual update folded into the projection.
            let mut acc = up(&d, &to_bf16(&c0));
            ops::matmul_xwt(&d, &x_d, &w_d, &mut acc, n, k, true).unwrap();
            let want_acc: Vec<f32> = want.iter().zip(&c0).map(|(a, b)| a + b).collect();
            check_nmse(&format!("matmul_xwt accumulate t={t} n={n}"), &down_bf16(&d, &acc), &want_acc, ONE_ROUNDING_NMSE);
        }
    }
}

#[test]
fn op_matmul_xwt_f32_router() {
    let Some(d) = gpu() else { return };
    let (n, k) = (64, 2560);
    for t in ROWS {
        let mut r = rng(30 + t as u64);
        let (x, w) = (rand_bf16(&mut r, t * k, 1.0), rand_bf16(&mut r, n * k, 0.05));
        let mut out = d.zeros::<f32>(t * n).unwrap();
        ops::matmul_xwt(&d, &up(&d, &x), &up(&d, &w), &mut out, n, k, false).unwrap();
        let mut want = vec![0.0; t * n];
        matmul_xwt(&x, &Tensor::from_f32(w.clone(), vec![n, k]).unwrap(), &mut want).unwrap();
        check_nmse(&format!("matmul_xwt f32 (router) t={t}"), &d.download(&out).unwrap(), &want, F32_NMSE);
    }
}

#[test]
fn op_linear_with_bias_accumulates() {
    let Some(d) = gpu() else { return };
    let (n, k) = (96, 64);
    for t in ROWS {
        let mut r = rng(40 + t as u64);
        let (x, w, b, c0) =
            (rand_bf16(&mut r, t * k, 1.0), rand_bf16(&mut r, n * k, 0.2), rand_bf16(&mut r, n, 0.5), rand_bf16(&mut r, t * n, 1.0));
        let lin = Linear::upload(&d, &Tensor::from_f32(w.clone(), vec![n, k]).unwrap(), Some(&b)).unwrap();
        let mut acc = up(&d, &to_bf16(&c0));
        lin.forward(&d, &up(&d, &to_bf16(&x)), &mut acc, true).unwrap();
        let mut want = vec![0.0; t * n];
        matmul_xwt(&x, &Tensor::from_f32(w.clone(), vec![n, k]).unwrap(), &mut want).unwrap();
        for (row, c) in want.chunks_exact_mut(n).zip(c0.chunks_exact(n)) {
            row.iter_mut().zip(&b).zip(c).for_each(|((y, b), c)| *y += b + c);
        }
        check_nmse(&format!("Linear + bias + residual t={t}"), &down_bf16(&d, &acc), &want, ONE_ROUNDING_NMSE);
    }
}

#[test]
fn op_rope_interleaved() {
    let Some(d) = gpu() else { return };
    for (n_heads, hd) in [(4usize, 24usize), (20, 128)] {
        for t in ROWS {
            for start in [0usize, 1000] {
                let mut r = rng(50 + t as u64 + start as u64 + hd as u64);
                let x = rand_bf16(&mut r, t * n_heads * hd, 1.0);
                let pos: Vec<u32> = (start..start + t).map(|p| p as u32).collect();
                let mut x_d = up(&d, &to_bf16(&x));
                ops::rope_interleaved(&d, &mut x_d.as_view_mut(), n_heads, hd, &up(&d, &pos).as_view(), THETA).unwrap();
                let mut want = x.clone();
                let positions: Vec<usize> = (start..start + t).collect();
                rope_interleaved(&mut want, n_heads, &positions, &RopeTable::new(hd, THETA, start + t));
                check_nmse(&format!("rope t={t} heads={n_heads} hd={hd} start={start}"), &down_bf16(&d, &x_d), &want, ONE_ROUNDING_NMSE);
            }
        }
    }
}

#[test]
fn op_silu_mul_add_and_to_f32() {
    let Some(d) = gpu() else { return };
    let inter = 96;
    for t in ROWS {
        let mut r = rng(60 + t as u64);
        let (g, u, b) = (rand_bf16(&mut r, t * inter, 4.0), rand_bf16(&mut r, t * inter, 2.0), rand_bf16(&mut r, t * inter, 1.0));
        let mut want = vec![0.0; t * inter];
        silu_mul(&g, &u, &mut want);
        let (g_d, u_d) = (up(&d, &to_bf16(&g)), up(&d, &to_bf16(&u)));
        let mut out = d.zeros::<bf16>(t * inter).unwrap();
        ops::silu_mul(&d, &g_d.as_view(), &u_d.as_view(), &mut out.as_view_mut()).unwrap();
        check_nmse(&format!("silu_mul t={t}"), &down_bf16(&d, &out), &want, ONE_ROUNDING_NMSE);
        // The stacked [t, 2i] layout the dense FFN's single gate_up GEMM produces.
        let gu: Vec<f32> =
            g.chunks_exact(inter).zip(u.chunks_exact(inter)).flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<_>>()).collect();
        let mut fused = d.zeros::<bf16>(t * inter).unwrap();
        ops::silu_mul_fused(&d, &up(&d, &to_bf16(&gu)).as_view(), &mut fused.as_view_mut(), inter).unwrap();
        check_nmse(&format!("silu_mul_fused t={t}"), &down_bf16(&d, &fused), &want, ONE_ROUNDING_NMSE);
        let mut acc = up(&d, &to_bf16(&g));
        ops::add_inplace(&d, &mut acc.as_view_mut(), &up(&d, &to_bf16(&b)).as_view()).unwrap();
        let sum: Vec<f32> = g.iter().zip(&b).map(|(a, b)| a + b).collect();
        check_nmse(&format!("add_inplace t={t}"), &down_bf16(&d, &acc), &sum, ONE_ROUNDING_NMSE);
        let mut wide = d.zeros::<f32>(t * inter).unwrap();
        ops::to_f32(&d, &g_d.as_view(), &mut wide.as_view_mut()).unwrap();
        assert_eq!(d.download(&wide).unwrap(), g, "to_f32 must be exact");
    }
}

/// Route on both sides; ids must agree except near-tie rows (reported), weights to ROUTE_RTOL.
/// Returns the GPU ids.
fn route_both(d: &CudaDevice, logits: &[f32], bias: &[f32], e: usize, k: usize, tag: &str) -> Vec<u32> {
    let t = logits.len() / e;
    let (mut ids, mut w) = (d.zeros::<u32>(t * k).unwrap(), d.zeros::<f32>(t * k).unwrap());
    ops::route_logits(d, &up(d, logits).as_view(), e, k, &up(d, bias).as_view(), 1e-12, &mut ids.as_view_mut(), &mut w.as_view_mut())
        .unwrap();
    let (ids, w) = (d.download(&ids).unwrap(), d.download(&w).unwrap());
    let want = route_logits(logits, e, k, Some(bias), 1e-12).unwrap();
    let mut ties = 0;
    for row in 0..t {
        let r = row * k..(row + 1) * k;
        if ids[r.clone()] == want.expert_ids[r.clone()] {
            for (a, b) in w[r.clone()].iter().zip(&want.weights[r.clone()]) {
                assert!((a - b).abs() <= ROUTE_RTOL * b.abs() + 1e-30, "{tag}: row {row} weight {a} vs {b}");
            }
            continue;
        }
        // Biased scores of the CPU's k-th pick and the best unpicked expert.
        let mut p = logits[row * e..(row + 1) * e].to_vec();
        ernie_runtime::ops::softmax_in_place(&mut p);
        let score: Vec<f32> = p.iter().zip(bias).map(|(a, b)| a + b).collect();
        let kth = score[want.expert_ids[r.end - 1] as usize];
        let next =
            (0..e).filter(|x| !want.expert_ids[r.clone()].contains(&(*x as u32))).map(|x| score[x]).fold(f32::NEG_INFINITY, f32::max);
        assert!((kth - next).abs() <= TIE_EPS, "{tag}: row {row} ids {:?} vs CPU {:?}", &ids[r.clone()], &want.expert_ids[r]);
        ties += 1;
    }
    if ties > 0 {
        eprintln!("{tag}: {ties} near-tie rows differ (allowed)");
    }
    ids
}

#[test]
fn op_route_logits_and_moe_align() {
    let Some(d) = gpu() else { return };
    for (e, k) in [(64usize, 6usize), (60, 1), (60, 8), (4, 2)] {
        for t in ROWS {
            let mut r = rng(70 + t as u64 * 3 + e as u64 * 11 + k as u64);
            let logits = rand_bf16(&mut r, t * e, 3.0);
            let mut bias = rand_bf16(&mut r, e, 0.05);
            bias[e - 1] = -1e30; // an expert that receives nothing
            let tag = format!("route t={t} e={e} k={k}");
            let ids = route_both(&d, &logits, &bias, e, k, &tag);
            // moe_align against group_by_expert: the same pairs per expert (order within an expert
            // is unspecified on the GPU), padding = the pair count.
            let plan = ernie_runtime::backend::cuda::kernels::MoePlan::new(t, k, e).unwrap();
            let bm = plan.tile.block_m as usize;
            let (mut sorted, mut tiles, mut n_pad) =
                (d.zeros::<u32>(plan.capacity).unwrap(), d.zeros::<u32>(plan.n_tiles).unwrap(), d.zeros::<u32>(1).unwrap());
            ops::moe_align(
                &d,
                &up(&d, &ids).as_view(),
                e,
                bm,
                &mut sorted.as_view_mut(),
                &mut tiles.as_view_mut(),
                &mut n_pad.as_view_mut(),
            )
            .unwrap();
            let (sorted, tiles, n_pad) =
                (d.download(&sorted).unwrap(), d.download(&tiles).unwrap(), d.download(&n_pad).unwrap()[0] as usize);
            let routing = ernie_runtime::nn::moe::Routing { top_k: k, expert_ids: ids.clone(), weights: vec![0.0; ids.len()] };
            let groups = group_by_expert(&routing, e);
            let mut got: Vec<Vec<u32>> = vec![Vec::new(); e];
            for (tile, &ex) in tiles.iter().enumerate().take(n_pad / bm) {
                for &p in &sorted[tile * bm..(tile + 1) * bm] {
                    if (p as usize) < t * k {
                        got[ex as usize].push(p);
                    }
                }
            }
            for (x, g) in got.iter_mut().enumerate() {
                g.sort_unstable();
                assert_eq!(g.as_slice(), &groups.pairs[groups.offsets[x]..groups.offsets[x + 1]], "moe_align expert {x} t={t} e={e} k={k}");
            }
        }
    }
}

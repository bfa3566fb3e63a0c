//! The MoE kernels' own CUDA source (routing.cu, moe_align.cu, moe_gemm.cu, moe_reduce.cu), run on
//! the CPU through cuda/host_emu.h, against plain Rust references written from spec §2.4.
//! Awkward shapes throughout: 1, 33 and 511 tokens; an expert that receives nothing; top_k = 1;
//! 64 and 60 experts (and 256, 5, 1); exact ties.
//!
//! Run: cargo test -p ernie-kernels --features host-emu --test host_emu
#![cfg(feature = "host-emu")]

mod layers;
mod reference;

use ernie_kernels::host_emu::{self, AlignOutput};
use ernie_kernels::moe_align::AlignDims;
use ernie_kernels::moe_gemm::GemmDims;
use ernie_kernels::moe_reduce::ReduceDims;
use ernie_kernels::routing::RouteDims;
use ernie_kernels::MoePlan;
use half::bf16;
use reference::*;

/// ERNIE's moe_norm_min: only a guard against a zero denominator.
const NORM_MIN: f32 = 1e-12;
/// Routing weights: the kernel's softmax sums in a warp tree, the reference sequentially; both
/// are f32, so a few ulps of difference is all there may be.
const ROUTE_RTOL: f32 = 1e-5;
/// One GEMM output in bf16: accumulation order differs (tensor-core fragments vs a sequential
/// loop), which can move the final rounding by one bf16 ulp (2^-8 relative).
const GEMM_RTOL: f32 = 1e-2;
const GEMM_ATOL: f32 = 1e-3;
/// Whole MoE block: 8-bit mantissa; matches vLLM's MoE tests (conventions §2.6).
const BF16_ATOL: f32 = 2e-2;

// ---- routing ----

fn check_route(n_tokens: usize, n_experts: usize, top_k: usize, seed: u64) {
    let mut rng = XorShift(seed);
    let logits = rng.vec(n_tokens * n_experts, 3.0);
    let mut bias = rng.vec(n_experts, 0.05);
    if n_experts > 3 {
        bias[3] = -1e30; // expert 3 is never chosen: the "empty expert" downstream
    }
    let dims = RouteDims {
        n_tokens,
        n_experts,
        top_k,
    };
    let (ids, weights) = host_emu::moe_route(&logits, &bias, dims, NORM_MIN).unwrap();
    let (want_ids, want_w) = reference_route(&logits, &bias, n_experts, top_k, NORM_MIN);
    assert_eq!(ids, want_ids, "ids T={n_tokens} E={n_experts} k={top_k}");
    for (i, (g, w)) in weights.iter().zip(&want_w).enumerate() {
        assert!(
            (g - w).abs() <= ROUTE_RTOL * w.abs() + 1e-30,
            "weight {i}: {g} vs {w}"
        );
    }
    if n_experts > 3 && top_k < n_experts {
        assert!(
            !ids.contains(&3),
            "expert 3 has bias -1e30 and must stay empty"
        );
    }
}

#[test]
fn route_matches_reference_on_shape_grid() {
    let cases = [
        (1, 64, 6),
        (33, 64, 6),
        (511, 64, 8),
        (1, 60, 1),
        (33, 60, 6),
        (511, 60, 1),
        (33, 256, 8),
        (33, 5, 5),
        (1, 1, 1),
        (33, 64, 64),
    ];
    for (i, &(t, e, k)) in cases.iter().enumerate() {
        check_route(t, e, k, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
    }
}

#[test]
fn route_ties_go_to_the_lower_expert_index() {
    // All 60 logits equal: every expert ties; the top-6 must be 0..6 with equal weights.
    let dims = RouteDims {
        n_tokens: 2,
        n_experts: 60,
        top_k: 6,
    };
    let (ids, w) = host_emu::moe_route(&[0.5; 120], &[0.0; 60], dims, NORM_MIN).unwrap();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
    assert!(w.iter().all(|&w| (w - 1.0 / 6.0).abs() < 1e-6));

    // Ties between experts in the same lane (7 and 39) and across lanes (10 vs 42, 41).
    let mut logits = vec![-1.0f32; 64];
    for e in [7, 39, 10, 41, 42] {
        logits[e] = 2.0;
    }
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 64,
        top_k: 4,
    };
    let (ids, _) = host_emu::moe_route(&logits, &[0.0; 64], dims, NORM_MIN).unwrap();
    assert_eq!(ids, [7, 10, 39, 41]);
    assert_eq!(reference_route(&logits, &[0.0; 64], 64, 4, NORM_MIN).0, ids);

    // Ties created by the bias: equal logits and equal biases give bit-identical scores for
    // experts 2 and 50 (both boosted above the rest); 2 must come first.
    let mut logits = vec![0.0f32; 60];
    let mut bias = vec![0.0f32; 60];
    for e in [2, 50] {
        logits[e] = 1.0;
        bias[e] = 0.25;
    }
    logits[30] = 1.0; // same p as 2 and 50, but no bias: third
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 60,
        top_k: 3,
    };
    let (ids, _) = host_emu::moe_route(&logits, &bias, dims, NORM_MIN).unwrap();
    assert_eq!(ids, [2, 50, 30]);
    assert_eq!(reference_route(&logits, &bias, 60, 3, NORM_MIN).0, ids);
}

#[test]
fn route_bias_selects_but_weights_stay_unbiased() {
    // p = softmax([2, 1, 0, 0]); the bias lifts expert 2 to the top, but weights use p.
    let logits = [2.0f32, 1.0, 0.0, 0.0];
    let bias = [0.0f32, 0.0, 10.0, 0.0];
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 4,
        top_k: 2,
    };
    let (ids, w) = host_emu::moe_route(&logits, &bias, dims, NORM_MIN).unwrap();
    assert_eq!(ids, [2, 0]);
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
    let want = [e[2] / (e[2] + e[0]), e[0] / (e[2] + e[0])];
    for (g, w) in w.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
    }
}

#[test]
fn route_renorm_denominator_is_clamped_by_norm_min() {
    // The bias forces two experts whose probabilities are ~e^-80: their sum is below norm_min.
    let mut logits = vec![-80.0f32; 8];
    logits[0] = 0.0;
    let mut bias = vec![0.0f32; 8];
    bias[0] = -1e9;
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 8,
        top_k: 2,
    };
    let (ids, w) = host_emu::moe_route(&logits, &bias, dims, NORM_MIN).unwrap();
    assert_eq!(ids, [1, 2]);
    let p = (-80.0f32).exp() / (1.0 + 7.0 * (-80.0f32).exp());
    for g in w {
        assert!(
            (g - p / NORM_MIN).abs() <= 1e-5 * (p / NORM_MIN),
            "{g} vs {}",
            p / NORM_MIN
        );
    }
}

#[test]
fn route_rejects_bad_dims() {
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 257,
        top_k: 1,
    };
    assert!(host_emu::moe_route(&[0.0; 257], &[0.0; 257], dims, NORM_MIN).is_err());
    let dims = RouteDims {
        n_tokens: 1,
        n_experts: 4,
        top_k: 5,
    };
    assert!(host_emu::moe_route(&[0.0; 4], &[0.0; 4], dims, NORM_MIN).is_err());
    let dims = RouteDims {
        n_tokens: 2,
        n_experts: 4,
        top_k: 1,
    };
    assert!(host_emu::moe_route(&[0.0; 4], &[0.0; 4], dims, NORM_MIN).is_err());
}

// ---- align ----

fn check_align(topk_ids: &[u32], n_experts: usize, block_m: usize, out: &AlignOutput) {
    check_align_parts(
        topk_ids,
        n_experts,
        block_m,
        &out.sorted_ids,
        &out.expert_ids,
        out.n_padded,
    );
}

#[test]
fn align_reproduces_the_worked_example() {
    let ids = [2, 3, 4, 1, 2, 4, 1, 3, 4, 1, 2, 3];
    let dims = AlignDims {
        n_pairs: 12,
        n_experts: 5,
        block_m: 4,
    };
    let mut out = host_emu::moe_align(&ids, dims).unwrap();
    for group in out.sorted_ids.chunks_mut(4) {
        group.sort_unstable(); // the doc shows each expert's ids sorted
    }
    let mut want = vec![3, 6, 9, 12, 0, 4, 10, 12, 1, 7, 11, 12, 2, 5, 8, 12];
    want.extend([12; 12]);
    assert_eq!(out.sorted_ids, want);
    assert_eq!(out.expert_ids, [1, 2, 3, 4, 5, 5, 5]);
    assert_eq!(out.n_padded, 16);
}

#[test]
fn align_matches_reference_on_shape_grid() {
    let mut rng = XorShift(0x1234_5678);
    for n_tokens in [1, 33, 511] {
        for top_k in [1, 6] {
            for n_experts in [64, 60] {
                for block_m in [16, 64] {
                    // distinct experts per token, never expert 3 (an empty expert)
                    let mut ids = Vec::new();
                    for _ in 0..n_tokens {
                        let mut row: Vec<u32> = Vec::new();
                        while row.len() < top_k {
                            let e = rng.next_u32() % n_experts as u32;
                            if e != 3 && !row.contains(&e) {
                                row.push(e);
                            }
                        }
                        ids.extend(row);
                    }
                    let dims = AlignDims {
                        n_pairs: ids.len(),
                        n_experts,
                        block_m,
                    };
                    let out = host_emu::moe_align(&ids, dims).unwrap();
                    check_align(&ids, n_experts, block_m, &out);
                }
            }
        }
    }
    // Everything on one expert; and no pairs at all.
    let ids = vec![59u32; 33];
    let dims = AlignDims {
        n_pairs: 33,
        n_experts: 60,
        block_m: 16,
    };
    check_align(&ids, 60, 16, &host_emu::moe_align(&ids, dims).unwrap());
    let dims = AlignDims {
        n_pairs: 0,
        n_experts: 60,
        block_m: 16,
    };
    let out = host_emu::moe_align(&[], dims).unwrap();
    assert_eq!((out.n_padded, out.sorted_ids.len()), (0, 0));
}

// ---- reduce ----

#[test]
fn reduce_matches_reference_exactly() {
    let mut rng = XorShift(0xfeed);
    for n_tokens in [1, 33, 511] {
        for top_k in [1, 6] {
            for hidden in [64, 200] {
                let slot = rng.bf16s(n_tokens * top_k * hidden, 2.0);
                let shared = rng.bf16s(n_tokens * hidden, 2.0);
                let dims = ReduceDims {
                    n_tokens,
                    top_k,
                    hidden,
                };
                for shared in [None, Some(&shared[..])] {
                    let got = host_emu::moe_reduce(&slot, shared, dims).unwrap();
                    // Same f32 adds in the same order and one RNE rounding: bit-identical.
                    let want = reference_reduce(&slot, shared, n_tokens, top_k, hidden);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(g, w)| g.to_bits() == w.to_bits()),
                        "T={n_tokens} k={top_k} H={hidden} shared={}",
                        shared.is_some()
                    );
                }
            }
        }
    }
}

// ---- grouped GEMM (tensor-core kernels, mma emulated warp-collectively) ----

/// Runs route -> align -> gemm1 -> gemm2 -> reduce(+shared) through the emulated kernels and
/// checks every stage against the references.
fn check_moe(case: &MoeCase, seed: u64) {
    let MoeCase {
        n_tokens,
        top_k,
        n_experts,
        hidden,
        inter,
    } = *case;
    let MoeInputs { logits, bias, x, w_gate_up, w_down, shared } = MoeInputs::random(case, seed);

    let plan = MoePlan::new(n_tokens, top_k, n_experts).unwrap();
    let route = RouteDims {
        n_tokens,
        n_experts,
        top_k,
    };
    let (ids, weights) = host_emu::moe_route(&logits, &bias, route, NORM_MIN).unwrap();
    let align = AlignDims {
        n_pairs: plan.n_pairs,
        n_experts,
        block_m: plan.tile.block_m as usize,
    };
    let rows = host_emu::moe_align(&ids, align).unwrap();
    check_align(&ids, n_experts, align.block_m, &rows);

    let dims = GemmDims {
        plan,
        hidden,
        inter,
    };
    let act = host_emu::moe_gemm_swiglu(&x, &w_gate_up, &rows, dims).unwrap();
    let want_act = reference_swiglu(&x, &w_gate_up, &ids, top_k, hidden, inter);
    let tag = format!(
        "T={n_tokens} k={top_k} E={n_experts} H={hidden} I={inter} tile m{}",
        plan.tile.block_m
    );
    assert_close(&format!("act {tag}"), &act, &want_act, GEMM_ATOL, GEMM_RTOL);

    // gemm2 from the kernel's own act, so this stage is checked on its own.
    let slot = host_emu::moe_gemm_down(&act, &w_down, &rows, &weights, dims).unwrap();
    let want_slot = reference_down(&act, &w_down, &ids, &weights, hidden, inter);
    assert_close(
        &format!("slot {tag}"),
        &slot,
        &want_slot,
        GEMM_ATOL,
        GEMM_RTOL,
    );

    let reduce = ReduceDims {
        n_tokens,
        top_k,
        hidden,
    };
    let out = host_emu::moe_reduce(&slot, Some(&shared), reduce).unwrap();
    // End to end against the all-reference pipeline (reference act fed to reference down).
    let ref_slot = reference_down(&want_act, &w_down, &ids, &weights, hidden, inter);
    let want_out = reference_reduce(&ref_slot, Some(&shared), n_tokens, top_k, hidden);
    assert_close(&format!("moe out {tag}"), &out, &want_out, BF16_ATOL, 0.0);
}

#[test]
fn moe_gemm_decode_tile_matches_reference() {
    // Few rows per expert -> the m16 tile. inter 40: a partial N block and a partial K slice.
    check_moe(
        &MoeCase {
            n_tokens: 1,
            top_k: 6,
            n_experts: 64,
            hidden: 64,
            inter: 40,
        },
        1,
    );
    check_moe(
        &MoeCase {
            n_tokens: 33,
            top_k: 6,
            n_experts: 60,
            hidden: 72,
            inter: 40,
        },
        2,
    );
    check_moe(
        &MoeCase {
            n_tokens: 1,
            top_k: 1,
            n_experts: 60,
            hidden: 64,
            inter: 8,
        },
        3,
    );
}

#[test]
fn moe_gemm_prefill_tile_matches_reference() {
    // Many rows per expert -> the m64 tile; hidden 72 is not a multiple of BK = 32.
    let case = MoeCase {
        n_tokens: 33,
        top_k: 2,
        n_experts: 4,
        hidden: 72,
        inter: 24,
    };
    assert_eq!(MoePlan::new(33, 2, 4).unwrap().tile.block_m, 64);
    check_moe(&case, 4);
    check_moe(
        &MoeCase {
            n_tokens: 511,
            top_k: 2,
            n_experts: 8,
            hidden: 64,
            inter: 40,
        },
        5,
    );
}

#[test]
fn moe_gemm_rejects_unaligned_k() {
    let plan = MoePlan::new(1, 1, 4).unwrap();
    let rows = host_emu::moe_align(
        &[0],
        AlignDims {
            n_pairs: 1,
            n_experts: 4,
            block_m: 16,
        },
    )
    .unwrap();
    let dims = GemmDims {
        plan,
        hidden: 60,
        inter: 8,
    };
    let err = host_emu::moe_gemm_swiglu(&[bf16::ZERO; 60], &[bf16::ZERO; 4 * 16 * 60], &rows, dims);
    assert!(err.is_err());
}

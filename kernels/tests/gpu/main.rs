//! Every kernel on a real GPU against the CPU references that tests/host_emu also uses. This is
//! the check a GPU machine runs (prebuilt: `cargo test -p ernie-kernels --test gpu --no-run`);
//! it is the only test that can confirm the mma.sync fragment layout the emulation assumes.
//!
//! Without libcuda or a device it skips loudly; ERNIE_REQUIRE_GPU=1 turns that into a failure.
//! NVRTC must be loadable there (LD_LIBRARY_PATH), or Kernels::new fails with CudaUnavailable.

mod layers;
#[allow(dead_code)]
#[path = "../host_emu/reference.rs"]
mod reference;

use std::io::Write;
use std::sync::Arc;

use ernie_kernels::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use ernie_kernels::moe_align::AlignDims;
use ernie_kernels::moe_gemm::{AlignedRows, GemmDims};
use ernie_kernels::moe_reduce::ReduceDims;
use ernie_kernels::routing::RouteDims;
use ernie_kernels::{library_available, open_device, CudaLibrary, Kernels, MoePlan};
use half::bf16;
use reference::*;

const NORM_MIN: f32 = 1e-12;
/// Same tolerances as tests/host_emu (see there for the reasoning).
const ROUTE_RTOL: f32 = 1e-5;
const GEMM_RTOL: f32 = 1e-2;
const GEMM_ATOL: f32 = 1e-3;
const BF16_ATOL: f32 = 2e-2;

pub struct Gpu {
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
}

impl Gpu {
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> CudaSlice<T> {
        self.stream
            .clone_htod(host)
            .unwrap_or_else(|e| panic!("upload: {e}"))
    }
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> CudaSlice<T> {
        self.stream
            .alloc_zeros(n)
            .unwrap_or_else(|e| panic!("alloc: {e}"))
    }
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Vec<T> {
        self.stream
            .clone_dtoh(dev)
            .unwrap_or_else(|e| panic!("download: {e}"))
    }
}

/// The device, or None (after a loud message) when this machine has none.
pub fn gpu() -> Option<Gpu> {
    let required = std::env::var("ERNIE_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(
            !required,
            "{why} (ERNIE_REQUIRE_GPU=1 makes this a failure)"
        );
        let bar = "!".repeat(78);
        let _ = writeln!(
            std::io::stderr(),
            "\n{bar}\n!!! SKIPPED gpu test: {why}\n{bar}\n"
        );
        None
    };
    if !library_available(CudaLibrary::Driver) {
        return skip("libcuda is not loadable on this machine".to_string());
    }
    let ctx = match open_device(0) {
        Ok(ctx) => ctx,
        Err(e) => return skip(format!("no CUDA device: {e}")),
    };
    // A device exists from here on: failing to build the kernels is a real failure.
    let kernels = Kernels::new(&ctx).unwrap_or_else(|e| panic!("Kernels::new: {e}"));
    Some(Gpu {
        stream: ctx.default_stream(),
        kernels,
    })
}

/// route -> align -> gemm1 -> gemm2 -> reduce(+shared) on the device, each stage checked.
fn check_moe(g: &Gpu, case: &MoeCase, seed: u64) {
    let MoeCase {
        n_tokens,
        top_k,
        n_experts,
        hidden,
        inter,
    } = *case;
    let (s, k) = (&g.stream, &g.kernels);
    let MoeInputs { logits, bias, x, w_gate_up, w_down, shared } = MoeInputs::random(case, seed);
    let plan = MoePlan::new(n_tokens, top_k, n_experts).unwrap();
    let tag = format!(
        "T={n_tokens} k={top_k} E={n_experts} H={hidden} I={inter} m{}",
        plan.tile.block_m
    );

    let (logits_d, bias_d) = (g.upload(&logits), g.upload(&bias));
    let mut ids_d = g.zeros::<u32>(plan.n_pairs);
    let mut weights_d = g.zeros::<f32>(plan.n_pairs);
    let route = RouteDims {
        n_tokens,
        n_experts,
        top_k,
    };
    k.moe_route(
        s,
        &logits_d.as_view(),
        &bias_d.as_view(),
        &mut ids_d.as_view_mut(),
        &mut weights_d.as_view_mut(),
        route,
        NORM_MIN,
    )
    .unwrap();
    let (ids, weights) = (g.download(&ids_d), g.download(&weights_d));
    let (want_ids, want_w) = reference_route(&logits, &bias, n_experts, top_k, NORM_MIN);
    assert_eq!(ids, want_ids, "route ids {tag}");
    for (got, want) in weights.iter().zip(&want_w) {
        assert!(
            (got - want).abs() <= ROUTE_RTOL * want.abs() + 1e-30,
            "route weight {tag}"
        );
    }

    let align = AlignDims {
        n_pairs: plan.n_pairs,
        n_experts,
        block_m: plan.tile.block_m as usize,
    };
    let mut sorted_d = g.zeros::<u32>(plan.capacity);
    let mut experts_d = g.zeros::<u32>(plan.n_tiles);
    let mut n_padded_d = g.zeros::<u32>(1);
    k.moe_align(
        s,
        &ids_d.as_view(),
        &mut sorted_d.as_view_mut(),
        &mut experts_d.as_view_mut(),
        &mut n_padded_d.as_view_mut(),
        align,
    )
    .unwrap();
    let n_padded = g.download(&n_padded_d)[0];
    check_align_parts(
        &ids,
        n_experts,
        align.block_m,
        &g.download(&sorted_d),
        &g.download(&experts_d),
        n_padded,
    );

    let (sorted_v, experts_v, n_padded_v) = (
        sorted_d.as_view(),
        experts_d.as_view(),
        n_padded_d.as_view(),
    );
    let rows = AlignedRows {
        sorted_ids: &sorted_v,
        expert_ids: &experts_v,
        n_padded: &n_padded_v,
    };
    let dims = GemmDims {
        plan,
        hidden,
        inter,
    };
    let (x_d, wgu_d, wd_d) = (g.upload(&x), g.upload(&w_gate_up), g.upload(&w_down));
    let mut act_d = g.zeros::<bf16>(plan.n_pairs * inter);
    k.moe_gemm_swiglu(
        s,
        &x_d.as_view(),
        &wgu_d.as_view(),
        &rows,
        &mut act_d.as_view_mut(),
        dims,
    )
    .unwrap();
    let act = g.download(&act_d);
    let want_act = reference_swiglu(&x, &w_gate_up, &ids, top_k, hidden, inter);
    assert_close(&format!("act {tag}"), &act, &want_act, GEMM_ATOL, GEMM_RTOL);

    let mut slot_d = g.zeros::<bf16>(plan.n_pairs * hidden);
    k.moe_gemm_down(
        s,
        &act_d.as_view(),
        &wd_d.as_view(),
        &rows,
        &weights_d.as_view(),
        &mut slot_d.as_view_mut(),
        dims,
    )
    .unwrap();
    let slot = g.download(&slot_d);
    let want_slot = reference_down(&act, &w_down, &ids, &weights, hidden, inter);
    assert_close(
        &format!("slot {tag}"),
        &slot,
        &want_slot,
        GEMM_ATOL,
        GEMM_RTOL,
    );

    let shared_d = g.upload(&shared);
    let mut out_d = g.zeros::<bf16>(n_tokens * hidden);
    let reduce = ReduceDims {
        n_tokens,
        top_k,
        hidden,
    };
    k.moe_reduce(
        s,
        &slot_d.as_view(),
        Some(&shared_d.as_view()),
        &mut out_d.as_view_mut(),
        reduce,
    )
    .unwrap();
    let out = g.download(&out_d);
    assert_eq!(
        out,
        reference_reduce(&slot, Some(&shared), n_tokens, top_k, hidden),
        "reduce {tag}"
    );
    let ref_slot = reference_down(&want_act, &w_down, &ids, &weights, hidden, inter);
    let want_out = reference_reduce(&ref_slot, Some(&shared), n_tokens, top_k, hidden);
    assert_close(&format!("moe out {tag}"), &out, &want_out, BF16_ATOL, 0.0);
}

#[test]
fn gpu_moe_pipeline_matches_reference() {
    let Some(g) = gpu() else { return };
    let cases = [
        MoeCase {
            n_tokens: 1,
            top_k: 6,
            n_experts: 64,
            hidden: 64,
            inter: 40,
        },
        MoeCase {
            n_tokens: 33,
            top_k: 6,
            n_experts: 60,
            hidden: 72,
            inter: 40,
        },
        MoeCase {
            n_tokens: 33,
            top_k: 2,
            n_experts: 4,
            hidden: 72,
            inter: 24,
        },
        MoeCase {
            n_tokens: 511,
            top_k: 2,
            n_experts: 8,
            hidden: 64,
            inter: 40,
        },
        // ERNIE-4.5-21B-A3B expert shapes: decode and a short prefill
        MoeCase {
            n_tokens: 1,
            top_k: 6,
            n_experts: 64,
            hidden: 2560,
            inter: 1536,
        },
        MoeCase {
            n_tokens: 33,
            top_k: 6,
            n_experts: 64,
            hidden: 2560,
            inter: 1536,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check_moe(&g, case, 100 + i as u64);
    }
}

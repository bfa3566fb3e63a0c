//! The runtime's CUDA backend on a real GPU (feature `cuda`):
//! - `ops.rs`: every CUDA op against the CPU op it mirrors, on random inputs rounded to bf16 first
//!   (so both sides see the same values and only kernel error is measured), NMSE per op;
//! - `model.rs`: the attention / SwiGLU / MoE blocks against their CPU structs, and the tiny
//!   checkpoints of tests/fixtures end to end (logits vs transformers, routing, decode vs prefill,
//!   greedy generation through `Engine` on the GPU).
//!
//! Without libcuda or a device every GPU test skips loudly; `ERNIE_REQUIRE_GPU=1` (set by
//! scripts/gpu-check.sh on the GPU machine) turns that into a failure. `ERNIE_GPU_SEED` picks the
//! random inputs (printed on every run; the script passes a fresh one), `ERNIE_FIXTURES_DIR` the
//! fixture folder when the binary runs away from this checkout.
#![cfg(feature = "cuda")]

#[path = "../common/mod.rs"]
mod common;
mod model;
mod ops;

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use ernie_runtime::backend::cuda::CudaDevice;
use ernie_runtime::Error;
use half::bf16;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The device, opened once per process, or None after a loud message when this machine has none.
pub fn gpu() -> Option<CudaDevice> {
    static DEVICE: OnceLock<Option<CudaDevice>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let required = std::env::var("ERNIE_REQUIRE_GPU").is_ok_and(|v| v == "1");
            match CudaDevice::open(0) {
                Ok(dev) => {
                    let _ = writeln!(std::io::stderr(), "cuda tests on {dev:?}, seed {}", seed());
                    Some(dev)
                }
                // No driver / no device: a skip here, a failure where a GPU is promised.
                Err(Error::CudaUnavailable { reason }) if !required => {
                    let bar = "!".repeat(78);
                    let _ = writeln!(std::io::stderr(), "\n{bar}\n!!! SKIPPED cuda tests: {reason}\n{bar}\n");
                    None
                }
                Err(e) if required => panic!("opening cuda:0 failed and ERNIE_REQUIRE_GPU=1: {e}"),
                Err(e) => panic!("opening cuda:0 failed: {e}"),
            }
        })
        .clone()
}

/// Base seed of the random inputs: `ERNIE_GPU_SEED` or a fixed default.
pub fn seed() -> u64 {
    std::env::var("ERNIE_GPU_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026)
}

/// A generator for one check: the base seed mixed with a per-check salt.
pub fn rng(salt: u64) -> StdRng {
    StdRng::seed_from_u64(seed() ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Uniform in (-scale, scale), already rounded to bf16 (what the GPU will see).
pub fn rand_bf16(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| bf16::from_f32((rng.random::<f32>() * 2.0 - 1.0) * scale).to_f32()).collect()
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

pub fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// ‖got − want‖² / ‖want‖² in f64 (llama.cpp test-backend-ops' metric); NaN anywhere fails.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    assert!(got.iter().all(|v| v.is_finite()), "non-finite GPU output");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    num / den.max(f64::MIN_POSITIVE)
}

/// Asserts `nmse(got, want) <= limit`, printing the value either way (the GPU log keeps it).
pub fn check_nmse(what: &str, got: &[f32], want: &[f32], limit: f64) {
    let e = nmse(got, want);
    let _ = writeln!(std::io::stderr(), "nmse {what:<48} {e:.3e} (limit {limit:.0e})");
    assert!(e <= limit, "{what}: NMSE {e:.3e} > {limit:.0e}");
}

/// Fixture folder: `ERNIE_FIXTURES_DIR`, else this checkout's tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("ERNIE_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => common::fixture(name),
    }
}

/// Runs anywhere: opening CUDA never panics; without a GPU it is a typed error.
#[test]
fn no_gpu_is_a_typed_error() {
    match CudaDevice::open(0) {
        Ok(dev) => assert!(!dev.name().is_empty()),
        Err(Error::CudaUnavailable { reason }) => assert!(!reason.is_empty()),
        Err(e) => panic!("expected CudaUnavailable, got {e}"),
    }
    assert!(matches!(CudaDevice::open(usize::MAX >> 1), Err(Error::CudaUnavailable { .. })));
}

//! `ernie generate --device`: `cpu` (the default) runs as before; `cuda` either runs (a build with
//! the `cuda` feature on a machine with a GPU) or fails with one clear `error:` line and a non-zero
//! exit: "no CUDA support" without the feature, "CUDA is unavailable" without a driver or GPU.

use std::process::Output;

use crate::common::*;
use ernie_runtime::{Device, Error};

fn generate(device: Option<&str>) -> Output {
    generate_with("dense-f32", device, &[])
}

fn generate_with(model: &str, device: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = ernie();
    cmd.args(["generate", "--model"]).arg(fixture(model)).args(["--prompt", "Hello", "--max-tokens", "4", "--format", "json"]);
    if let Some(d) = device {
        cmd.args(["--device", d]);
    }
    cmd.args(extra).output().expect("runs the ernie binary")
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure, got success: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn cpu_is_the_default() {
    let (plain, cpu) = (generate(None), generate(Some("cpu")));
    assert!(plain.status.success() && cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    assert_eq!(plain.stdout, cpu.stdout);
}

#[test]
fn cuda_runs_or_fails_cleanly() {
    // What this process can open decides what the binary must do.
    let built = cfg!(feature = "cuda");
    let here = Device::parse("cuda");
    let out = generate(Some("cuda"));
    match here {
        Ok(_) => {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
            assert_eq!(v["token_ids"].as_array().map(Vec::len), Some(4));
        }
        Err(Error::CudaNotCompiled) => {
            assert!(!built);
            let line = one_error_line(&out);
            assert!(line.contains("no CUDA support") && line.contains("--features cuda"), "{line}");
        }
        Err(Error::CudaUnavailable { .. }) => {
            assert!(built);
            let line = one_error_line(&out);
            assert!(line.contains("CUDA is unavailable") && line.contains("cuda:0"), "{line}");
        }
        Err(other) => panic!("opening cuda here failed unexpectedly: {other}"),
    }
}

/// MTP drafting on a CUDA device (moe-f32 ships an MTP head, so `auto` would draft on the CPU):
/// a fixed draft depth is one clear error wherever CUDA cannot run it, never a silent CPU run;
/// `auto` decodes plainly on the GPU when there is one.
#[test]
fn speculative_on_cuda_never_falls_back_to_the_cpu() {
    let drafted = generate_with("moe-f32", Some("cuda"), &["--draft-tokens", "2"]);
    match Device::parse("cuda") {
        Ok(_) => {
            let line = one_error_line(&drafted);
            assert!(line.contains("speculative decoding") && line.contains("not supported by this build or device"), "{line}");
            let auto = generate_with("moe-f32", Some("cuda"), &["--draft-tokens", "auto"]);
            assert!(auto.status.success(), "{}", String::from_utf8_lossy(&auto.stderr));
            assert!(!String::from_utf8_lossy(&auto.stderr).contains("MTP drafts:"), "auto must not draft on the CPU");
        }
        Err(Error::CudaNotCompiled) => {
            let line = one_error_line(&drafted);
            assert!(line.contains("no CUDA support") && line.contains("--features cuda"), "{line}");
            assert!(drafted.stdout.is_empty(), "nothing may be generated on the CPU");
        }
        Err(Error::CudaUnavailable { .. }) => {
            let line = one_error_line(&drafted);
            assert!(line.contains("CUDA is unavailable") && line.contains("cuda:0"), "{line}");
            assert!(drafted.stdout.is_empty(), "nothing may be generated on the CPU");
        }
        Err(other) => panic!("opening cuda here failed unexpectedly: {other}"),
    }
}

#[test]
fn unknown_device_is_rejected() {
    let out = generate(Some("tpu"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cpu, cuda or cuda:N"), "{stderr}");
}

#[test]
fn quant_q4_k_m_runs_on_the_moe_fixture() {
    let out = generate_with("moe-f32", None, &["--quant", "q4_k_m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token_ids"].as_array().map(Vec::len), Some(4));
    let out = generate_with("moe-f32", None, &["--quant", "q8_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn quant_bogus_and_quant_on_cuda_are_one_clear_error() {
    // clap's own usage error: one `error:` line plus its "For more information" hint.
    let out = generate_with("moe-f32", None, &["--quant", "bogus"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    let first = e.lines().next().unwrap_or("");
    assert!(first.starts_with("error: ") && first.contains("bogus") && first.contains("q4_k_m"), "{e}");
    let e = one_error_line(&generate_with("moe-f32", Some("cuda"), &["--quant", "q8_0"]));
    assert!(e.contains("--quant q8_0"), "{e}");
}

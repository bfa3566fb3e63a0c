//! Shared test helpers: the repository root, the `ernie` binary, seeded random inputs, fixture
//! paths, expected values, tolerances, and a checkpoint rewriter that produces the other
//! tensor-name layouts of spec §2.3 from a fixture. Every test binary includes this one copy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::RngExt;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// f32 weights, f32 compute on both sides: only summation order differs (≈1e-6 relative on
/// logits of magnitude ≤ 10), so 1e-4 absolute leaves two orders of margin (issue #2's bound).
pub const F32_LOGITS_ATOL: f32 = 1e-4;

/// The repository root (the `ernie` package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command running this package's `ernie` binary (Cargo builds it for the integration tests).
pub fn ernie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ernie"))
}

/// `n` values uniform in `[-scale, scale)` from `rng` (seeded by the caller).
pub fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("float") as f32).collect()
}

/// Max |a - b| over two equal-length slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A tensor read out of a safetensors file, owned.
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Every tensor of a checkpoint dir (single file or sharded).
pub fn read_checkpoint(dir: &Path) -> BTreeMap<String, RawTensor> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            out.insert(name.to_string(), RawTensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() });
        }
    }
    out
}

/// Writes `tensors` as `dir/model.safetensors` and copies the JSON/tokenizer files of `src`.
pub fn write_checkpoint(src: &Path, dir: &Path, tensors: &BTreeMap<String, RawTensor>) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".json") && name != "model.safetensors.index.json" {
            std::fs::copy(&p, dir.join(&name)).unwrap();
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

/// Concatenates tensors along dim 0 (same dtype and trailing dims).
pub fn cat0(parts: &[&RawTensor]) -> RawTensor {
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    RawTensor { dtype: parts[0].dtype, shape, data: parts.iter().flat_map(|p| p.data.clone()).collect() }
}

/// Stacks equal-shape tensors along a new dim 0.
pub fn stack0(parts: &[&RawTensor]) -> RawTensor {
    let mut shape = vec![parts.len()];
    shape.extend_from_slice(&parts[0].shape);
    RawTensor { dtype: parts[0].dtype, shape, data: parts.iter().flat_map(|p| p.data.clone()).collect() }
}

/// A temporary copy of fixture `name` (its files; subfolders such as `reference/` are skipped).
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempdir();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// A temporary directory that lives as long as the value.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Golden tensor `name` of `tests/fixtures/mimi/golden.safetensors` (all f32, written by
/// `make_mimi_reference.py`) and its shape.
pub fn mimi_golden(name: &str) -> (Vec<f32>, Vec<usize>) {
    let mut g = ernie_runtime::Weights::from_files(&[fixture("mimi/golden.safetensors")]).expect("golden file");
    let all = g.take_prefix(name);
    let t = all.get(name).unwrap_or_else(|| panic!("golden {name} missing"));
    (t.to_f32_vec(), t.shape().to_vec())
}

/// Golden Mimi codes `[levels, frames]` (stored as f32).
pub fn mimi_golden_codes(name: &str) -> Vec<Vec<u32>> {
    let (v, shape) = mimi_golden(name);
    v.chunks(shape[1]).map(|r| r.iter().map(|&c| c as u32).collect()).collect()
}

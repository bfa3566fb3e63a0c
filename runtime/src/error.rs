//! The runtime's one error type. Every malformed file, config, checkpoint or request becomes one of
//! these variants, naming what is wrong; library code never panics on input.

use std::path::PathBuf;

/// Errors returned by `ernie-runtime`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A JSON file (config.json, generation_config.json, an index) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },

    /// config.json parsed but holds a value we cannot run.
    #[error("config {key}: {reason}")]
    Config { key: String, reason: String },

    /// `model_type` names an architecture this runtime does not implement.
    #[error("unknown model_type {0:?} (supported: ernie4_5, ernie4_5_moe)")]
    UnknownModelType(String),

    /// A safetensors file is malformed (truncated, bad header, header longer than the file...).
    #[error("{path}: malformed safetensors: {reason}")]
    Safetensors { path: PathBuf, reason: String },

    /// The checkpoint's tensors do not match what the config asks for.
    #[error("checkpoint tensors do not match the config:{}{}",
        fmt_list("\n  missing", missing), fmt_list("\n  unused", unused))]
    TensorSet { missing: Vec<String>, unused: Vec<String> },

    /// A GGUF file is malformed (see [`crate::gguf::GgufError`]).
    #[error("{path}: malformed GGUF: {source}")]
    Gguf { path: PathBuf, source: crate::gguf::GgufError },

    /// A tensor exists but has the wrong shape.
    #[error("tensor {name}: expected shape {expected:?}, found {got:?}")]
    TensorShape { name: String, expected: Vec<usize>, got: Vec<usize> },

    /// A tensor exists but has a dtype we do not accept for it.
    #[error("tensor {name}: dtype {got} not supported here (expected one of {expected})")]
    TensorDtype { name: String, expected: String, got: String },

    /// Two arguments of an op disagree on a dimension.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch { op: &'static str, expected: String, got: String },

    /// A request asks for something out of range (empty prompt, too many tokens, bad sampling value).
    #[error("invalid request: {0}")]
    Request(String),

    /// `--device cuda` in a build without the `cuda` cargo feature.
    #[error("this build has no CUDA support: rebuild with `--features cuda` to use a CUDA device")]
    CudaNotCompiled,

    /// No usable CUDA device: libcuda is missing, no GPU is present, or the kernels / cuBLAS
    /// cannot be loaded for it.
    #[error("CUDA is unavailable: {reason}")]
    CudaUnavailable { reason: String },

    /// A CUDA operation failed on an open device (driver, cuBLAS or kernel launch error).
    #[error("CUDA {op}: {message}")]
    Cuda { op: &'static str, message: String },

    /// The text tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] tokenizers_mm::Error),
}

fn fmt_list(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    const SHOWN: usize = 40;
    let mut s = format!("{label} ({}): {}", items.len(), items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", "));
    if items.len() > SHOWN {
        s.push_str(&format!(", ... and {} more", items.len() - SHOWN));
    }
    s
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Return early with an [`Error::Request`] built from a format string.
#[macro_export]
macro_rules! bail_request {
    ($($arg:tt)*) => { return Err($crate::Error::Request(format!($($arg)*))) };
}

pub(crate) fn config_err(key: &str, reason: impl Into<String>) -> Error {
    Error::Config { key: key.to_string(), reason: reason.into() }
}

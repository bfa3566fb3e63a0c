//! The runtime's one error type. Every malformed file, config, checkpoint or request becomes one of
//! these variants, naming what is wrong; library code never panics on input.

use std::path::PathBuf;

/// Errors returned by `ernie-runtime`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// A JSON file (config.json, generation_config.json, an index) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (line and column).
        source: serde_json::Error,
    },

    /// config.json parsed but holds a value we cannot run.
    #[error("config {key}: {reason}")]
    Config {
        /// The config.json key (dotted for nested keys).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// `model_type` names an architecture this runtime does not implement.
    #[error("unknown model_type {0:?} (supported: ernie4_5, ernie4_5_moe, ernie4_5_vl_moe, ernie5)")]
    UnknownModelType(String),

    /// A safetensors file is malformed (truncated, bad header, header longer than the file...).
    #[error("{path}: malformed safetensors: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        reason: String,
    },

    /// The checkpoint's tensors do not match what the config asks for.
    #[error("checkpoint tensors do not match the config:{}{}",
        fmt_list("\n  missing", missing), fmt_list("\n  unused", unused))]
    TensorSet {
        /// Tensors the config implies that the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors the checkpoint holds that nothing used.
        unused: Vec<String>,
    },

    /// A GGUF file is malformed (see [`crate::gguf::GgufError`]).
    #[error("{path}: malformed GGUF: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        source: crate::gguf::GgufError,
    },

    /// A tensor exists but has the wrong shape.
    #[error("tensor {name}: expected shape {expected:?}, found {got:?}")]
    TensorShape {
        /// Canonical tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The stored shape.
        got: Vec<usize>,
    },

    /// A tensor exists but has a dtype we do not accept for it.
    #[error("tensor {name}: dtype {got} not supported here (expected one of {expected})")]
    TensorDtype {
        /// Canonical tensor name.
        name: String,
        /// Accepted dtypes.
        expected: String,
        /// The stored dtype.
        got: String,
    },

    /// Two arguments of an op disagree on a dimension.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The op that checked.
        op: &'static str,
        /// What it expected.
        expected: String,
        /// What it got.
        got: String,
    },

    /// A request asks for something out of range (empty prompt, too many tokens, bad sampling value).
    #[error("invalid request: {0}")]
    Request(String),

    /// A load or generation option has a value this model cannot take (a layer or expert that does
    /// not exist, a top-k above the kept experts, a malformed list). `option` is the option's name
    /// in the library (`layers`, `experts`, `top_k`, `draft_tokens`, `device`); a front end maps
    /// it to its own spelling (the `ernie` binary: `--top-k`).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option's library name.
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },

    /// The checkpoint format allows this, but this build or device cannot run it (VL layers on a
    /// CUDA device, expert masks on routing groups, MTP drafts on a GPU). `hint` says what does
    /// work.
    #[error("{what} is not supported by this build or device; {hint}")]
    Unsupported {
        /// What was asked for.
        what: String,
        /// What to do instead.
        hint: String,
    },

    /// A CUDA device asked for in a build without the `cuda` cargo feature.
    #[error("this build has no CUDA support: rebuild with `--features cuda` to use a CUDA device")]
    CudaNotCompiled,

    /// No usable CUDA device: libcuda is missing, no GPU is present, or the kernels / cuBLAS
    /// cannot be loaded for it.
    #[error("CUDA is unavailable: {reason}")]
    CudaUnavailable {
        /// Which library, driver or device is missing.
        reason: String,
    },

    /// A CUDA operation failed on an open device (driver, cuBLAS or kernel launch error).
    #[error("CUDA {op}: {message}")]
    Cuda {
        /// The operation that failed.
        op: &'static str,
        /// The driver's, cuBLAS's or the kernel launcher's message.
        message: String,
    },

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

/// An [`Error::InvalidOption`] for option `option`.
pub(crate) fn option_err(option: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption { option, reason: reason.into() }
}

/// An [`Error::Unsupported`].
pub(crate) fn unsupported(what: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Unsupported { what: what.into(), hint: hint.into() }
}

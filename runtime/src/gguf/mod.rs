//! GGUF v3 files (the format of llama.cpp / ggml, `ggml/docs/gguf.md`; reference reader
//! `ggml/src/gguf.cpp`): a header, typed metadata key/values, tensor infos, then the tensor data,
//! each tensor at an `alignment`-multiple offset (default 32, `general.alignment`).
//!
//! Our own reader and writer rather than a crate: of the crates.io GGUF readers checked (Dec 2026)
//! `gguf-rs-lib` 0.3.3 needs Rust 1.87 and `ggus` 0.5.1 pulls in its own ggml type crate; neither
//! promises to bound allocations against hostile counts, nor does either fit our mmap'd
//! [`QWeight`](crate::ops::quant::QWeight) / [`Tensor`](crate::Tensor) views; candle's reader
//! lives inside candle-core. The format is small: [`read`] is a checked parser over the memory
//! map (every count, length and offset is checked against the bytes left before anything is
//! allocated or sliced), [`write`] a streaming writer.
//!
//! Dimensions are in ggml order, fastest first: a PyTorch `[n, k]` weight is stored as `[k, n]`.

mod read;
mod write;

pub use read::{Gguf, TensorInfo};
pub use write::GgufWriter;

use std::fmt;

/// GGUF magic, the bytes `GGUF` read as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;
/// The version this reader and writer speak.
pub const VERSION: u32 = 3;
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;

/// Limits checked before allocating (on top of "no count larger than the bytes left").
pub mod limits {
    /// Tensors in one file (a 4.5 T-parameter MoE has < 10⁵).
    pub const MAX_TENSORS: u64 = 1 << 20;
    /// Metadata key/value pairs.
    pub const MAX_KV: u64 = 1 << 20;
    /// Bytes of one string (a chat template is a few KB; 64 MiB is generous).
    pub const MAX_STRING: u64 = 64 << 20;
    /// Elements of one metadata array (vocabularies and merges are < 10⁶).
    pub const MAX_ARRAY: u64 = 1 << 26;
    /// Nesting of arrays inside arrays.
    pub const MAX_DEPTH: usize = 4;
    /// Largest `general.alignment` accepted.
    pub const MAX_ALIGNMENT: u32 = 1 << 20;
}

/// What is wrong with a GGUF file. Offsets are byte positions in the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("GGUF version {0} is not supported (only 3)")]
    UnsupportedVersion(u32),
    #[error("truncated: {what} at offset {at} needs {need} bytes, {left} left")]
    Truncated { what: &'static str, at: usize, need: u64, left: usize },
    #[error("{what} count {count} exceeds the limit {limit}")]
    TooMany { what: &'static str, count: u64, limit: u64 },
    #[error("string at offset {at} is not valid UTF-8")]
    BadUtf8 { at: usize },
    #[error("metadata {key:?}: unknown value type {code}")]
    BadValueType { key: String, code: u32 },
    #[error("metadata {key:?}: arrays nested deeper than {}", limits::MAX_DEPTH)]
    TooDeep { key: String },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("general.alignment: {0}")]
    BadAlignment(String),
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: unknown ggml type {code}")]
    BadTensorType { name: String, code: u32 },
    #[error("tensor {name:?}: bad dimensions {dims:?}: {reason}")]
    BadDims { name: String, dims: Vec<u64>, reason: &'static str },
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned { name: String, offset: u64, alignment: usize },
    #[error("tensor {name:?}: bytes {start}..{end} lie past the end of the file ({len} bytes)")]
    PastEnd { name: String, start: u64, end: u64, len: usize },
    #[error("writer: {0}")]
    Write(String),
}

/// A metadata value type (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_code(code: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match code {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Fewest bytes a value of this type takes in the file (bounds array counts before
    /// allocating): a string is at least its 8-byte length, an array its type and count.
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all of `elem` type (kept so an empty array round-trips).
    Array { elem: ValueType, items: Vec<Value> },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array { .. } => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type as u64 (`None` for negatives and non-integers).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// F32 or F64 as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A ggml tensor type (`enum ggml_type`), any code; [`GgmlType::layout`] knows the sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const BF16: GgmlType = GgmlType(30);

    /// `(name, elements per block, bytes per block)` from ggml's type traits (gguf-py's
    /// `GGML_QUANT_SIZES`, gguf-py 0.19.0); `None` for codes ggml does not define.
    pub fn layout(self) -> Option<(&'static str, u64, u64)> {
        const K: u64 = 256;
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", K, 4 + K / 16 + K / 4),
            11 => ("Q3_K", K, 2 + K / 4 + K / 8 + 12),
            12 => ("Q4_K", K, 4 + K / 2 + 12),
            13 => ("Q5_K", K, 4 + K / 2 + K / 8 + 12),
            14 => ("Q6_K", K, 2 + K / 2 + K / 4 + K / 16),
            15 => ("Q8_K", K, 4 + K + K / 8),
            16 => ("IQ2_XXS", K, 2 + K / 4),
            17 => ("IQ2_XS", K, 2 + K / 4 + K / 32),
            18 => ("IQ3_XXS", K, 2 + K / 4 + K / 8),
            19 => ("IQ1_S", K, 2 + K / 8 + K / 16),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4),
            22 => ("IQ2_S", K, 2 + K / 4 + K / 16),
            23 => ("IQ4_XS", K, 4 + K / 2 + K / 64),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", K, K / 8 + K / 16 + K / 32),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", K, 2 + 4 * 13),
            35 => ("TQ2_0", K, 2 + 64),
            39 => ("MXFP4", 32, 17),
            40 => ("NVFP4", 64, 36),
            41 => ("Q1_0", 128, 18),
            42 => ("Q2_0", 64, 18),
            _ => return None,
        })
    }

    /// Bytes of a tensor with `dims` (ggml order); `None` if the type is unknown, `dims[0]` is not
    /// a whole number of blocks, or the size overflows.
    pub fn nbytes(self, dims: &[u64]) -> Option<u64> {
        let (_, blck, bytes) = self.layout()?;
        let ne0 = *dims.first().unwrap_or(&1);
        if ne0 % blck != 0 {
            return None;
        }
        dims.iter().skip(1).try_fold((ne0 / blck).checked_mul(bytes)?, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layout() {
            Some((name, _, _)) => f.write_str(name),
            None => write!(f, "ggml type {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests;

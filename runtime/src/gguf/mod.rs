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

pub use read::{Gguf, MappedMatrix, TensorInfo};
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
    /// The first four bytes are not `GGUF`; holds the little-endian u32 found instead.
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    /// The header's version is not 3; holds the version found.
    #[error("GGUF version {0} is not supported (only 3)")]
    UnsupportedVersion(u32),
    #[error("truncated: {what} at offset {at} needs {need} bytes, {left} left")]
    /// The file ends before a field (or the items a count promises) could be read.
    Truncated {
        /// The field being read, e.g. `"tensor name"`.
        what: &'static str,
        /// Byte offset where the read started.
        at: usize,
        /// Bytes the read needs.
        need: u64,
        /// Bytes left in the file after `at`.
        left: usize,
    },
    #[error("{what} count {count} exceeds the limit {limit}")]
    /// A count or string length exceeds its limit in [`limits`].
    TooMany {
        /// What was counted, e.g. `"tensor"` or `"string length"`.
        what: &'static str,
        /// The count as stored in the file.
        count: u64,
        /// The largest count accepted.
        limit: u64,
    },
    #[error("string at offset {at} is not valid UTF-8")]
    /// A string (metadata key or value, tensor name) is not valid UTF-8.
    BadUtf8 {
        /// Byte offset of the string's 8-byte length prefix.
        at: usize,
    },
    #[error("metadata {key:?}: unknown value type {code}")]
    /// A metadata value (or array element) type code is not a known `gguf_type` (0..=12).
    BadValueType {
        /// The metadata key whose value has the bad type.
        key: String,
        /// The type code found.
        code: u32,
    },
    #[error("metadata {key:?}: arrays nested deeper than {}", limits::MAX_DEPTH)]
    /// Arrays nested deeper than [`limits::MAX_DEPTH`].
    TooDeep {
        /// The metadata key holding the nested array.
        key: String,
    },
    /// A metadata key appears twice; holds the key.
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    /// `general.alignment` is not a U32 power of two ≤ [`limits::MAX_ALIGNMENT`]; holds a
    /// description of the value found.
    #[error("general.alignment: {0}")]
    BadAlignment(String),
    /// A tensor name appears twice; holds the name.
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: unknown ggml type {code}")]
    /// A tensor's ggml type code is not one [`GgmlType::layout`] knows.
    BadTensorType {
        /// The tensor's name.
        name: String,
        /// The ggml type code found.
        code: u32,
    },
    #[error("tensor {name:?}: bad dimensions {dims:?}: {reason}")]
    /// A tensor's dimensions are unusable: not 1..=4 of them, one exceeds `i64::MAX`, `ne[0]` is
    /// not a whole number of blocks, or the byte size overflows.
    BadDims {
        /// The tensor's name.
        name: String,
        /// The dimensions in ggml order (empty when their count was out of range).
        dims: Vec<u64>,
        /// Which check failed.
        reason: &'static str,
    },
    #[error("tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    /// A tensor's data offset is not a multiple of the file's alignment.
    Misaligned {
        /// The tensor's name.
        name: String,
        /// Offset from the start of the data section, as stored.
        offset: u64,
        /// The file's alignment in bytes.
        alignment: usize,
    },
    #[error("tensor {name:?}: bytes {start}..{end} lie past the end of the file ({len} bytes)")]
    /// A tensor's data extends past the end of the file.
    PastEnd {
        /// The tensor's name.
        name: String,
        /// Absolute start byte of the data (`u64::MAX` if it overflowed).
        start: u64,
        /// Absolute end byte, exclusive (`u64::MAX` if it overflowed).
        end: u64,
        /// The file's length in bytes.
        len: usize,
    },
    /// [`GgufWriter`] misuse (bad alignment, array element of the wrong type, call out of
    /// order); holds the message.
    #[error("writer: {0}")]
    Write(String),
}

/// A metadata value type (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    /// GGUF_TYPE_UINT8: one byte.
    U8 = 0,
    /// GGUF_TYPE_INT8: one byte.
    I8 = 1,
    /// GGUF_TYPE_UINT16: two bytes, little-endian.
    U16 = 2,
    /// GGUF_TYPE_INT16: two bytes, little-endian.
    I16 = 3,
    /// GGUF_TYPE_UINT32: four bytes, little-endian.
    U32 = 4,
    /// GGUF_TYPE_INT32: four bytes, little-endian.
    I32 = 5,
    /// GGUF_TYPE_FLOAT32: four bytes, IEEE 754 little-endian.
    F32 = 6,
    /// GGUF_TYPE_BOOL: one byte, nonzero is true.
    Bool = 7,
    /// GGUF_TYPE_STRING: a u64 byte length, then that many UTF-8 bytes.
    String = 8,
    /// GGUF_TYPE_ARRAY: a u32 element type, a u64 count, then the elements.
    Array = 9,
    /// GGUF_TYPE_UINT64: eight bytes, little-endian.
    U64 = 10,
    /// GGUF_TYPE_INT64: eight bytes, little-endian.
    I64 = 11,
    /// GGUF_TYPE_FLOAT64: eight bytes, IEEE 754 little-endian.
    F64 = 12,
}

impl ValueType {
    /// The type for a `gguf_type` code; `None` for codes above 12.
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
    /// A GGUF_TYPE_UINT8.
    U8(u8),
    /// A GGUF_TYPE_INT8.
    I8(i8),
    /// A GGUF_TYPE_UINT16.
    U16(u16),
    /// A GGUF_TYPE_INT16.
    I16(i16),
    /// A GGUF_TYPE_UINT32.
    U32(u32),
    /// A GGUF_TYPE_INT32.
    I32(i32),
    /// A GGUF_TYPE_FLOAT32.
    F32(f32),
    /// A GGUF_TYPE_BOOL.
    Bool(bool),
    /// A GGUF_TYPE_STRING.
    String(String),
    /// A GGUF_TYPE_ARRAY: elements all of `elem` type (kept so an empty array round-trips).
    Array {
        /// The element type (GGUF_TYPE_ARRAY's stored element type).
        elem: ValueType,
        /// The elements, each of type `elem`.
        items: Vec<Value>,
    },
    /// A GGUF_TYPE_UINT64.
    U64(u64),
    /// A GGUF_TYPE_INT64.
    I64(i64),
    /// A GGUF_TYPE_FLOAT64.
    F64(f64),
}

impl Value {
    /// This value's [`ValueType`] (the code written before it in the file).
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

    /// The text of a String value; `None` for any other type.
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
    /// GGML_TYPE_F32: 32-bit float, four bytes per element.
    pub const F32: GgmlType = GgmlType(0);
    /// GGML_TYPE_F16: IEEE half, two bytes per element.
    pub const F16: GgmlType = GgmlType(1);
    /// GGML_TYPE_Q8_0: blocks of 32 elements in 34 bytes (f16 scale, 32 i8).
    pub const Q8_0: GgmlType = GgmlType(8);
    /// GGML_TYPE_Q4_K: super-blocks of 256 elements in 144 bytes (4.5 bits per weight).
    pub const Q4_K: GgmlType = GgmlType(12);
    /// GGML_TYPE_Q6_K: super-blocks of 256 elements in 210 bytes (6.5625 bits per weight).
    pub const Q6_K: GgmlType = GgmlType(14);
    /// GGML_TYPE_BF16: bfloat16, two bytes per element.
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

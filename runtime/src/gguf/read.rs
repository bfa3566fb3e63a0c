//! The GGUF reader: parses header, metadata and tensor infos from a byte slice (the memory map),
//! checking every count, length and offset against the bytes left before allocating or slicing.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::{limits, GgmlType, GgufError, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, VERSION};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// A 2-D tensor's bytes inside the file's mapping (see [`Gguf::matrix`]).
#[derive(Clone, Debug)]
pub struct MappedMatrix {
    /// Its ggml type.
    pub ggml_type: GgmlType,
    /// Rows n (PyTorch's first dimension, ggml's second).
    pub rows: usize,
    /// Columns k (the contiguous dimension).
    pub cols: usize,
    /// The whole file's mapping.
    pub map: Arc<Mmap>,
    /// Byte offset of the tensor's data in `map`.
    pub start: usize,
}

/// One tensor's entry in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order (fastest first): a PyTorch `[n, k]` weight is `[k, n]`.
    pub dims: Vec<u64>,
    /// The element/block type of the data.
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section, as stored.
    pub offset: u64,
    /// Absolute byte offset of the data in the file (data section offset + `offset`).
    pub start: usize,
    /// Size of the data in bytes (without alignment padding); the range is `start..start + nbytes`.
    pub nbytes: usize,
}

impl TensorInfo {
    /// The shape in PyTorch order (slowest first), e.g. `[n, k]` for a weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file over its memory map.
pub struct Gguf {
    path: PathBuf,
    map: Arc<Mmap>,
    parsed: Parsed,
}

/// What [`parse`] finds in the bytes.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    pub data_offset: usize,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

impl Gguf {
    /// Maps and parses `path`.
    ///
    /// Errors: [`Error::Io`] when the file cannot be opened or mapped, [`Error::Gguf`] naming what
    /// is malformed (bad magic, truncation, absurd counts, offsets past the end, misalignment...).
    pub fn open(path: &Path) -> Result<Gguf> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap-based loader we assume the file is not
        // truncated or rewritten by another process while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let parsed = parse(&map).map_err(|source| Error::Gguf { path: path.to_path_buf(), source })?;
        Ok(Gguf { path: path.to_path_buf(), map: Arc::new(map), parsed })
    }

    /// The GGUF version from the header (always 3).
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// Tensor data alignment in bytes: `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> usize {
        self.parsed.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.parsed.data_offset
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.parsed.metadata
    }

    /// The metadata value under `key`; `None` if absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.parsed.by_key.get(key).map(|&i| &self.parsed.metadata[i].1)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }

    /// The info of the tensor called `name`; `None` if absent.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.parsed.by_name.get(name).map(|&i| &self.parsed.tensors[i])
    }

    /// A tensor's raw bytes (checked in bounds at parse time).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.nbytes]
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_info(name).ok_or_else(|| Error::TensorSet { missing: vec![name.to_string()], unused: vec![] })
    }

    /// An F32 / F16 / BF16 tensor as a [`Tensor`] view of the map, shape in PyTorch order.
    ///
    /// Errors: [`Error::TensorSet`] if absent, [`Error::TensorDtype`] for any other type.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.info(name)?;
        let dtype = match t.ggml_type {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::Bf16,
            other => return Err(dtype_err(name, "F32, F16, BF16", other)),
        };
        Ok(Tensor::from_mmap(&self.map, t.start, dtype, t.shape()))
    }

    /// A 2-D tensor's raw bytes as a shared view of the mapping: its ggml type, its PyTorch shape
    /// `[n, k]` (ggml stores `[k, n]`), the map and the byte offset of its data. The quantised
    /// weight type builds on this (`ops::quant::QWeight::from_gguf`): this base-layer reader knows
    /// only bytes and sizes, never the kernels.
    ///
    /// Errors: [`Error::TensorSet`] if absent, [`Error::TensorShape`] unless it is 2-D.
    pub fn matrix(&self, name: &str) -> Result<MappedMatrix> {
        let t = self.info(name)?;
        let [k, n] = t.dims[..] else {
            return Err(Error::TensorShape { name: name.to_string(), expected: vec![0, 0], got: t.shape() });
        };
        Ok(MappedMatrix { ggml_type: t.ggml_type, rows: n as usize, cols: k as usize, map: self.map.clone(), start: t.start })
    }

    /// The whole file's read-only mapping (for views of 3-D tensors such as stacked experts).
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn dtype_err(name: &str, expected: &str, got: GgmlType) -> Error {
    Error::TensorDtype { name: name.to_string(), expected: expected.to_string(), got: got.to_string() }
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &'static str) -> std::result::Result<&'a [u8], GgufError> {
        if n > self.left() as u64 {
            return Err(GgufError::Truncated { what, at: self.pos, need: n, left: self.left() });
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &'static str) -> std::result::Result<[u8; N], GgufError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &'static str) -> std::result::Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &'static str) -> std::result::Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    /// A count that must fit `limit` and, at `min_size` bytes per item, the bytes left.
    fn count(&mut self, what: &'static str, limit: u64, min_size: u64) -> std::result::Result<usize, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > limit {
            return Err(GgufError::TooMany { what, count: n, limit });
        }
        let need = n.saturating_mul(min_size);
        if need > self.left() as u64 {
            return Err(GgufError::Truncated { what, at, need, left: self.left() });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &'static str) -> std::result::Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > limits::MAX_STRING {
            return Err(GgufError::TooMany { what: "string length", count: len, limit: limits::MAX_STRING });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { at })
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> std::result::Result<Value, GgufError> {
        const W: &str = "metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(W)?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(W)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(W)?)),
            ValueType::U32 => Value::U32(self.u32(W)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(W)?)),
            ValueType::Bool => Value::Bool(self.arr::<1>(W)?[0] != 0),
            ValueType::String => Value::String(self.string(W)?),
            ValueType::U64 => Value::U64(self.u64(W)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(W)?)),
            ValueType::Array => {
                if depth >= limits::MAX_DEPTH {
                    return Err(GgufError::TooDeep { key: key.to_string() });
                }
                let code = self.u32("array element type")?;
                let elem = ValueType::from_code(code).ok_or_else(|| GgufError::BadValueType { key: key.to_string(), code })?;
                let n = self.count("array length", limits::MAX_ARRAY, elem.min_size())?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(key, elem, depth + 1)?);
                }
                Value::Array { elem, items }
            }
        })
    }
}

/// Parses a whole GGUF file held in `b`.
pub(crate) fn parse(b: &[u8]) -> std::result::Result<Parsed, GgufError> {
    let mut c = Cursor { b, pos: 0 };
    let magic = c.u32("magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = c.u32("version")?;
    if version != VERSION {
        return Err(GgufError::UnsupportedVersion(version));
    }
    // Smallest tensor info: name length 8 + n_dims 4 + one dim 8 + type 4 + offset 8.
    let n_tensors = c.u64("tensor count")?;
    if n_tensors > limits::MAX_TENSORS {
        return Err(GgufError::TooMany { what: "tensor", count: n_tensors, limit: limits::MAX_TENSORS });
    }
    // Smallest key/value: key length 8 + type 4 + a 1-byte value.
    let n_kv = c.count("metadata", limits::MAX_KV, 13)?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut by_key = HashMap::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let code = c.u32("metadata type")?;
        let ty = ValueType::from_code(code).ok_or_else(|| GgufError::BadValueType { key: key.clone(), code })?;
        let value = c.value(&key, ty, 0)?;
        if by_key.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }
    let alignment = match by_key.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() && *a <= limits::MAX_ALIGNMENT => *a as usize,
        Some(other) => return Err(GgufError::BadAlignment(format!("{other:?} (need a u32 power of two ≤ 2^20)"))),
    };

    if n_tensors.saturating_mul(32) > c.left() as u64 {
        return Err(GgufError::Truncated { what: "tensor infos", at: c.pos, need: n_tensors * 32, left: c.left() });
    }
    let n_tensors = n_tensors as usize;
    let mut raw = Vec::with_capacity(n_tensors);
    let mut by_name = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor n_dims")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDims { name, dims: vec![], reason: "n_dims must be 1..=4" });
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dim")?);
        }
        let ggml_type = GgmlType(c.u32("tensor type")?);
        let offset = c.u64("tensor offset")?;
        if by_name.insert(name.clone(), i).is_some() {
            return Err(GgufError::DuplicateTensor(name));
        }
        raw.push((name, dims, ggml_type, offset));
    }
    let data_offset = c.pos.div_ceil(alignment) * alignment;

    let mut tensors = Vec::with_capacity(n_tensors);
    for (name, dims, ggml_type, offset) in raw {
        let Some((_, blck, _)) = ggml_type.layout() else {
            return Err(GgufError::BadTensorType { name, code: ggml_type.0 });
        };
        if dims.iter().any(|&d| d > i64::MAX as u64) {
            return Err(GgufError::BadDims { name, dims, reason: "a dimension exceeds i64::MAX" });
        }
        if dims[0] % blck != 0 {
            return Err(GgufError::BadDims { name, dims, reason: "ne[0] is not a whole number of blocks" });
        }
        let Some(nbytes) = ggml_type.nbytes(&dims) else {
            return Err(GgufError::BadDims { name, dims, reason: "byte size overflows" });
        };
        if offset % alignment as u64 != 0 {
            return Err(GgufError::Misaligned { name, offset, alignment });
        }
        let start = (data_offset as u64).checked_add(offset);
        let end = start.and_then(|s| s.checked_add(nbytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= b.len() as u64 => {
                tensors.push(TensorInfo { name, dims, ggml_type, offset, start: s as usize, nbytes: nbytes as usize });
            }
            _ => {
                return Err(GgufError::PastEnd {
                    name,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len: b.len(),
                })
            }
        }
    }
    Ok(Parsed { version, metadata, tensors, alignment, data_offset, by_key, by_name })
}

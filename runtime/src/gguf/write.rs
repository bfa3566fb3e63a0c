//! The GGUF writer: metadata and tensor infos first, then tensor data streamed in order (so a
//! quantised 44 GB checkpoint is written one tensor at a time), each tensor padded to the
//! alignment as ggml's `gguf_write_to_file` does.

use std::io::Write;

use super::{limits, GgmlType, GgufError, Value, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, VERSION};

/// Builds a GGUF v3 file: [`GgufWriter::add_metadata`] / [`GgufWriter::add_tensor`], then
/// [`GgufWriter::write_header`] and one [`GgufWriter::write_tensor_data`] per tensor in the order
/// they were added.
pub struct GgufWriter {
    alignment: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, u64, u64)>,
    data_size: u64,
    next: usize,
    header_written: bool,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

fn werr(msg: impl Into<String>) -> GgufError {
    GgufError::Write(msg.into())
}

fn pad(n: u64, a: usize) -> u64 {
    n.div_ceil(a as u64) * a as u64
}

impl GgufWriter {
    /// An empty writer: no metadata, no tensors, alignment 32.
    pub fn new() -> GgufWriter {
        GgufWriter { alignment: DEFAULT_ALIGNMENT, metadata: vec![], tensors: vec![], data_size: 0, next: 0, header_written: false }
    }

    /// Sets `general.alignment` (a power of two); call before adding tensors.
    ///
    /// Errors: [`GgufError::Write`] if it is not a power of two ≤ 2^20 or a tensor was added.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        if !alignment.is_power_of_two() || alignment > limits::MAX_ALIGNMENT || !self.tensors.is_empty() {
            return Err(werr(format!("alignment {alignment}: need a power of two ≤ 2^20, set before any tensor")));
        }
        self.alignment = alignment as usize;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        self.metadata.push(("general.alignment".into(), Value::U32(alignment)));
        Ok(())
    }

    /// Adds one key/value (keys must be unique; arrays must hold only their `elem` type).
    ///
    /// Errors: [`GgufError::DuplicateKey`], [`GgufError::TooDeep`], or [`GgufError::Write`] for a
    /// mistyped array element or a bad `general.alignment`.
    pub fn add_metadata(&mut self, key: &str, value: Value) -> Result<(), GgufError> {
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(GgufError::DuplicateKey(key.to_string()));
        }
        if key == "general.alignment" {
            return match value {
                Value::U32(a) => self.set_alignment(a),
                other => Err(werr(format!("general.alignment must be U32, got {other:?}"))),
            };
        }
        check_array(key, &value, 0)?;
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Declares a tensor: `dims` in ggml order (fastest first), its data written later by
    /// [`GgufWriter::write_tensor_data`]. Returns its size in bytes (without padding).
    ///
    /// Errors: [`GgufError::Write`] after `write_header`, [`GgufError::DuplicateTensor`], or
    /// [`GgufError::BadDims`] for 0 or more than 4 dims, an unknown type, or partial blocks.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64, GgufError> {
        if self.header_written {
            return Err(werr("add_tensor after write_header"));
        }
        if self.tensors.iter().any(|t| t.0 == name) {
            return Err(GgufError::DuplicateTensor(name.to_string()));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(GgufError::BadDims { name: name.into(), dims: dims.to_vec(), reason: "n_dims must be 1..=4" });
        }
        let nbytes = ggml_type
            .nbytes(dims)
            .ok_or(GgufError::BadDims { name: name.into(), dims: dims.to_vec(), reason: "unknown type or not whole blocks" })?;
        let offset = self.data_size;
        self.data_size = pad(offset + nbytes, self.alignment);
        self.tensors.push((name.to_string(), dims.to_vec(), ggml_type, offset, nbytes));
        Ok(nbytes)
    }

    /// Writes header, metadata, tensor infos and the padding up to the data section. Returns the
    /// bytes written, i.e. the data section's offset.
    pub fn write_header<W: Write>(&mut self, w: &mut W) -> std::io::Result<u64> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut b, k);
            b.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut b, v);
        }
        for (name, dims, ty, offset, _) in &self.tensors {
            put_str(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.0.to_le_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
        }
        let padded = pad(b.len() as u64, self.alignment) as usize;
        b.resize(padded, 0);
        w.write_all(&b)?;
        self.header_written = true;
        Ok(padded as u64)
    }

    /// Writes the next tensor's bytes (exactly its size) and the padding after it.
    ///
    /// Errors: `InvalidInput` before `write_header`, past the last tensor, or on a size mismatch.
    pub fn write_tensor_data<W: Write>(&mut self, w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        if !self.header_written {
            return Err(invalid("write_tensor_data before write_header".into()));
        }
        let Some((name, _, _, _, nbytes)) = self.tensors.get(self.next) else {
            return Err(invalid("more tensor data than tensors".into()));
        };
        if bytes.len() as u64 != *nbytes {
            return Err(invalid(format!("tensor {name}: {} bytes given, {nbytes} declared", bytes.len())));
        }
        w.write_all(bytes)?;
        let padding = pad(*nbytes, self.alignment) - *nbytes;
        w.write_all(&vec![0u8; padding as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Whether every declared tensor's data has been written.
    pub fn is_complete(&self) -> bool {
        self.header_written && self.next == self.tensors.len()
    }
}

fn check_array(key: &str, v: &Value, depth: usize) -> Result<(), GgufError> {
    if let Value::Array { elem, items } = v {
        if depth >= limits::MAX_DEPTH {
            return Err(GgufError::TooDeep { key: key.into() });
        }
        for it in items {
            if it.value_type() != *elem {
                return Err(werr(format!("{key}: array of {elem:?} holds a {:?}", it.value_type())));
            }
            check_array(key, it, depth + 1)?;
        }
    }
    Ok(())
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::Array { elem, items } => {
            b.extend_from_slice(&(*elem as u32).to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|it| put_value(b, it));
        }
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}


//! A deliberately small weight tensor: contiguous, row-major, immutable, and usually a view into a
//! memory-mapped safetensors file, so bf16 weights stay bf16 in memory and pages that are never
//! touched are never read. Activations are plain `Vec<f32>` buffers with shape comments.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::{Error, Result};

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE f32.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE f16.
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "F32",
            DType::Bf16 => "BF16",
            DType::F16 => "F16",
        })
    }
}

/// Where a tensor's bytes live. Owned buffers are `u32`-backed so any 2- or 4-byte element view
/// of them is aligned.
#[derive(Clone)]
enum Bytes {
    Mapped(Arc<Mmap>),
    Owned(Arc<Vec<u32>>),
}

impl Bytes {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => bytemuck::cast_slice(v.as_slice()),
        }
    }
}

/// An immutable, contiguous, row-major tensor of f32, bf16 or f16 elements.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
    /// Byte offset of element 0; always a multiple of `dtype.size()`.
    start: usize,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {:?})", self.dtype, self.shape)
    }
}

/// Typed read-only view of a tensor's elements.
pub enum Elems<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// bf16 elements.
    Bf16(&'a [bf16]),
    /// f16 elements.
    F16(&'a [f16]),
}

impl Tensor {
    /// A view of `shape` elements of `dtype` at byte `start` of a mapped file. Copies the bytes
    /// into an aligned buffer when `start` is not aligned to the element size (safetensors does
    /// not promise alignment).
    pub(crate) fn from_mmap(map: &Arc<Mmap>, start: usize, dtype: DType, shape: Vec<usize>) -> Tensor {
        let nbytes = shape.iter().product::<usize>() * dtype.size();
        let ptr = map.as_ptr() as usize + start;
        if ptr % dtype.size() == 0 {
            return Tensor { dtype, shape, bytes: Bytes::Mapped(map.clone()), start };
        }
        Tensor::from_bytes(&map[start..start + nbytes], dtype, shape)
    }

    fn from_bytes(raw: &[u8], dtype: DType, shape: Vec<usize>) -> Tensor {
        let mut words = vec![0u32; raw.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..raw.len()].copy_from_slice(raw);
        Tensor { dtype, shape, bytes: Bytes::Owned(Arc::new(words)), start: 0 }
    }

    /// An owned f32 tensor. Errors if `data.len()` does not match `shape`.
    pub fn from_f32(data: Vec<f32>, shape: Vec<usize>) -> Result<Tensor> {
        check_len("Tensor::from_f32", data.len(), &shape)?;
        let words: Vec<u32> = data.into_iter().map(f32::to_bits).collect();
        Ok(Tensor { dtype: DType::F32, shape, bytes: Bytes::Owned(Arc::new(words)), start: 0 })
    }

    /// An owned bf16 tensor. Errors if `data.len()` does not match `shape`.
    pub fn from_bf16(data: &[bf16], shape: Vec<usize>) -> Result<Tensor> {
        check_len("Tensor::from_bf16", data.len(), &shape)?;
        Ok(Tensor::from_bytes(bytemuck::cast_slice(data), DType::Bf16, shape))
    }

    /// An owned f16 tensor. Errors if `data.len()` does not match `shape`.
    pub fn from_f16(data: &[f16], shape: Vec<usize>) -> Result<Tensor> {
        check_len("Tensor::from_f16", data.len(), &shape)?;
        Ok(Tensor::from_bytes(bytemuck::cast_slice(data), DType::F16, shape))
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element count (product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rows and columns of a 2-D tensor.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(Error::ShapeMismatch { op: "dims2", expected: "2-D".into(), got: format!("{:?}", self.shape) }),
        }
    }

    /// A tensor with `shape` but no data: the loader's stand-in for a missing tensor, which
    /// `Weights::finish` reports before any forward pass could read it.
    pub(crate) fn placeholder(shape: Vec<usize>) -> Tensor {
        Tensor { dtype: DType::F32, shape, bytes: Bytes::Owned(Arc::new(Vec::new())), start: 0 }
    }

    pub(crate) fn is_placeholder(&self) -> bool {
        matches!(&self.bytes, Bytes::Owned(v) if v.is_empty()) && self.numel() > 0
    }

    /// The typed elements (empty for a placeholder).
    pub fn elems(&self) -> Elems<'_> {
        let all = self.bytes.as_bytes();
        let raw = all.get(self.start..self.start + self.numel() * self.dtype.size()).unwrap_or(&[]);
        // Alignment of `start` is established at construction, so these casts cannot fail.
        match self.dtype {
            DType::F32 => Elems::F32(bytemuck::cast_slice(raw)),
            DType::Bf16 => Elems::Bf16(bytemuck::cast_slice(raw)),
            DType::F16 => Elems::F16(bytemuck::cast_slice(raw)),
        }
    }

    /// All elements converted to f32 (a copy).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.elems() {
            Elems::F32(s) => s.to_vec(),
            Elems::Bf16(s) => s.iter().map(|v| v.to_f32()).collect(),
            Elems::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
        }
    }

    /// Rows `start..start+len` of the outermost dimension, as a view (no copy).
    pub fn narrow0(&self, start: usize, len: usize) -> Result<Tensor> {
        let outer = self.shape.first().copied().unwrap_or(0);
        if start + len > outer {
            return Err(Error::ShapeMismatch {
                op: "narrow0",
                expected: format!("rows {start}..{} within {outer}", start + len),
                got: format!("{:?}", self.shape),
            });
        }
        let row_bytes = self.shape[1..].iter().product::<usize>() * self.dtype.size();
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Tensor { dtype: self.dtype, shape, bytes: self.bytes.clone(), start: self.start + start * row_bytes })
    }

    /// Index `i` of the outermost dimension with that dimension removed (`[E, N, K]` -> `[N, K]`).
    pub fn index0(&self, i: usize) -> Result<Tensor> {
        let mut t = self.narrow0(i, 1)?;
        t.shape.remove(0);
        Ok(t)
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(&self, shape: Vec<usize>) -> Result<Tensor> {
        check_len("reshape", self.numel(), &shape)?;
        Ok(Tensor { shape, ..self.clone() })
    }

    /// Maps this tensor's pages of the checkpoint file into the page tables now
    /// (`madvise(MADV_POPULATE_READ)`, Linux ≥ 5.14; else `MADV_WILLNEED` read-ahead), so the
    /// first forward pass does not take one minor fault per 4 KiB page (issue #13, item 5: ≈ 86 k
    /// faults inside the first 128 decode steps of the benchmark checkpoint). One `madvise`
    /// populates a whole range far cheaper than the faults it replaces. A no-op for owned tensors
    /// and off Unix; failures are ignored (the pages then fault in lazily, as before).
    pub fn prefault(&self) {
        #[cfg(unix)]
        if let Bytes::Mapped(m) = &self.bytes {
            let len = self.numel() * self.dtype.size();
            if m.advise_range(memmap2::Advice::PopulateRead, self.start, len).is_err() {
                let _ = m.advise_range(memmap2::Advice::WillNeed, self.start, len);
            }
        }
    }

    /// Drops this tensor's pages of the checkpoint file from the process's resident set
    /// (`madvise(MADV_DONTNEED)`): for a source that will not be read again, such as a dense
    /// weight just replaced by its quantisation at load (issue #13 item 2: quantising a 44 GB bf16
    /// checkpoint must not hold all of it resident). The pages stay in the page cache, and a later
    /// read of any byte of them faults it back in from the file, so the data seen never changes
    /// (the mapping is read-only). A no-op for owned tensors and off Unix; failures are ignored.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Bytes::Mapped(m) = &self.bytes {
            let len = self.numel() * self.dtype.size();
            // SAFETY: the map is read-only (`Mmap`, never written through), so MADV_DONTNEED
            // discards no modification: later reads re-fault the file's own bytes.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.start, len) };
        }
    }

    /// Whether the bytes are a view into a memory-mapped file (not a copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }
}

fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::ShapeMismatch { op, expected: format!("{n} elements for {shape:?}"), got: format!("{len}") });
    }
    Ok(())
}

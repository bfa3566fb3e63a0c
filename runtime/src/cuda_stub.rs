//! `crate::cuda` when the `cuda` feature is off (candle's dummy backend): the same public names as
//! `cuda/mod.rs` uses outside that module, so callers need no `#[cfg]`. Opening a device returns
//! [`Error::CudaNotCompiled`]; every other type holds an uninhabited value, so none can exist and
//! their methods are statically unreachable (no panics, no `unreachable!`).

use crate::config::TextConfig;
use crate::model::{Logits, Transformer};
use crate::trace::Trace;
use crate::{Error, Result};

/// No value of this type exists.
#[derive(Clone, Copy, Debug)]
enum Never {}

/// A CUDA device (stub: cannot be opened in this build).
#[derive(Clone, Debug)]
pub struct CudaDevice {
    never: Never,
}

impl CudaDevice {
    /// Always [`Error::CudaNotCompiled`]: this build has no CUDA backend.
    pub fn open(_ordinal: usize) -> Result<CudaDevice> {
        Err(Error::CudaNotCompiled)
    }

    pub fn ordinal(&self) -> usize {
        match self.never {}
    }

    /// Device name as the driver reports it.
    pub fn name(&self) -> &str {
        match self.never {}
    }
}

/// How many CUDA devices the driver sees: always 0 in this build.
pub fn device_count() -> usize {
    0
}

/// The text model's weights on a GPU (stub).
pub struct CudaModel {
    never: Never,
}

impl CudaModel {
    /// Unreachable: no [`CudaDevice`] can exist in this build.
    pub fn upload(_model: &Transformer, device: &CudaDevice) -> Result<CudaModel> {
        match device.never {}
    }

    pub fn device(&self) -> &CudaDevice {
        match self.never {}
    }

    pub fn cfg(&self) -> &TextConfig {
        match self.never {}
    }

    pub fn forward(&self, _tokens: &[u32], _cache: &mut CudaKvCache, _which: Logits, _trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        match self.never {}
    }
}

/// A KV cache in device memory (stub).
pub struct CudaKvCache {
    never: Never,
}

impl CudaKvCache {
    pub fn new(model: &CudaModel, _max_seq: usize) -> Result<CudaKvCache> {
        match model.never {}
    }

    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn capacity(&self) -> usize {
        match self.never {}
    }

    pub fn truncate(&mut self, _len: usize) -> Result<()> {
        match self.never {}
    }

    pub fn reset(&mut self) {
        match self.never {}
    }
}

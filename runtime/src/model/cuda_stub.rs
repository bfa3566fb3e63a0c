//! `model::cuda` when the `cuda` feature is off: the names of `model/cuda/` that code outside it
//! uses, so callers need no `#[cfg]`. [`CudaModel::upload`] returns [`Error::CudaNotCompiled`]
//! (no device can be opened in this build anyway: `backend/cuda_stub.rs`); the other types hold
//! an uninhabited value, so none can exist and their methods are statically unreachable.
//!
//! A `cuda` build compiles this file too under `cfg(test)` (`model/mod.rs`), so the one
//! all-features test pass checks that it still builds.

#![allow(dead_code)] // in a `cuda` test build nothing uses it: it is compiled as a check

use crate::backend::cuda::CudaDevice;
use crate::config::TextConfig;
use crate::model::decoder::{Logits, Transformer};
use crate::nn::trace::Trace;
use crate::{Error, Result};

/// No value of this type exists.
#[derive(Clone, Copy, Debug)]
enum Never {}

/// The text model's weights on a GPU (stub).
pub struct CudaModel {
    never: Never,
}

impl CudaModel {
    /// Always [`Error::CudaNotCompiled`]: this build has no CUDA backend.
    pub fn upload(_model: &Transformer, _device: &CudaDevice) -> Result<CudaModel> {
        Err(Error::CudaNotCompiled)
    }

    /// The device holding the weights (stub: unreachable).
    pub fn device(&self) -> &CudaDevice {
        match self.never {}
    }

    /// The decoder's configuration (stub: unreachable).
    pub fn cfg(&self) -> &TextConfig {
        match self.never {}
    }

    /// One forward pass (stub: unreachable).
    pub fn forward(&self, _tokens: &[u32], _cache: &mut CudaKvCache, _which: Logits, _trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        match self.never {}
    }
}

/// A KV cache in device memory (stub).
pub struct CudaKvCache {
    never: Never,
}

impl CudaKvCache {
    /// A cache for `model` (stub: unreachable, no model exists).
    pub fn new(model: &CudaModel, _max_seq: usize) -> Result<CudaKvCache> {
        match model.never {}
    }

    /// Positions filled so far (stub: unreachable).
    pub fn len(&self) -> usize {
        match self.never {}
    }

    /// Whether no position is filled (stub: unreachable).
    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    /// Positions it can hold (stub: unreachable).
    pub fn capacity(&self) -> usize {
        match self.never {}
    }

    /// Drops positions `len..` (stub: unreachable).
    pub fn truncate(&mut self, _len: usize) -> Result<()> {
        match self.never {}
    }

    /// Empties the cache (stub: unreachable).
    pub fn reset(&mut self) {
        match self.never {}
    }
}


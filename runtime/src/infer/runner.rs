//! Where one request's forward passes run: [`Runner::Cpu`] (the reference decoder) or
//! [`Runner::Cuda`] (its GPU mirror), chosen once per model by the engine. This file is the only
//! place that matches on the device; the decode loops, the prefill and the embeddings call a
//! [`Runner`] and never ask which one it is (except speculative decoding, which asks for the CPU
//! decoder by name because its draft head has no GPU path yet).

use tokenizers_mm::TokenStream;

use super::prefill::{prefill, PrefillTrace};
use crate::backend::DeviceSpec;
use crate::config::TextConfig;
use crate::error::unsupported;
use crate::model::cuda::{CudaKvCache, CudaModel};
use crate::model::decoder::{Logits, Transformer};
use crate::model::vision::VisionStack;
use crate::nn::kv_cache::KvCache;
use crate::nn::trace::Trace;
use crate::{Error, Result};

/// A loaded decoder on its device.
#[derive(Clone, Copy)]
pub enum Runner<'m> {
    /// The CPU reference decoder.
    Cpu(&'m Transformer),
    /// The decoder's weights on a CUDA device.
    Cuda(&'m CudaModel),
}

/// The KV cache of one sequence on a runner's device.
pub enum DeviceCache {
    /// Host memory.
    Cpu(KvCache),
    /// Device memory.
    Cuda(CudaKvCache),
}

impl DeviceCache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        match self {
            DeviceCache::Cpu(c) => c.len(),
            DeviceCache::Cuda(c) => c.len(),
        }
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        match self {
            DeviceCache::Cpu(c) => c.capacity(),
            DeviceCache::Cuda(c) => c.capacity(),
        }
    }

    /// Drops positions `len..` (speculative rollback). Errors when `len` exceeds the length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        match self {
            DeviceCache::Cpu(c) => c.truncate(len),
            DeviceCache::Cuda(c) => c.truncate(len),
        }
    }
}

fn other_device() -> Error {
    Error::Request("the KV cache was made for another device than the engine's".into())
}

impl<'m> Runner<'m> {
    /// Where it runs.
    pub fn device(&self) -> DeviceSpec {
        match self {
            Runner::Cpu(_) => DeviceSpec::Cpu,
            Runner::Cuda(m) => DeviceSpec::Cuda(m.device().ordinal()),
        }
    }

    /// The decoder's configuration.
    pub fn cfg(&self) -> &'m TextConfig {
        match *self {
            Runner::Cpu(m) => &m.cfg,
            Runner::Cuda(m) => m.cfg(),
        }
    }

    /// The CPU decoder, when this runner is the CPU one.
    pub fn cpu(&self) -> Option<&'m Transformer> {
        match *self {
            Runner::Cpu(m) => Some(m),
            Runner::Cuda(_) => None,
        }
    }

    /// A KV cache for `max_seq` positions on this device.
    /// Errors: as [`KvCache::new`] (0 or more than `max_position_embeddings`), device allocation.
    pub fn new_cache(&self, max_seq: usize) -> Result<DeviceCache> {
        match self {
            Runner::Cpu(m) => KvCache::new(&m.cfg, max_seq).map(DeviceCache::Cpu),
            Runner::Cuda(m) => CudaKvCache::new(m, max_seq).map(DeviceCache::Cuda),
        }
    }

    /// One forward pass of `tokens`, appending them to `cache`; returns what
    /// [`Transformer::forward`] returns for `which` (f32, on the host). With `trace`, each MoE
    /// layer's routing is recorded there.
    ///
    /// Errors: those of the forward pass, and [`Error::Request`] when `cache` belongs to another
    /// device.
    pub fn forward(&self, tokens: &[u32], cache: &mut DeviceCache, which: Logits, trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        match (self, cache) {
            (Runner::Cpu(m), DeviceCache::Cpu(c)) => m.forward(tokens, c, which, trace),
            (Runner::Cuda(m), DeviceCache::Cuda(c)) => m.forward(tokens, c, which, trace),
            _ => Err(other_device()),
        }
    }

    /// The multimodal prefill of `stream` ([`prefill`]) into an empty `cache`.
    ///
    /// Errors: [`Error::Unsupported`] on a CUDA runner (the vision tower and the routing-group
    /// layers run on the CPU only); those of [`prefill`].
    pub fn prefill_stream(
        &self,
        vision: &VisionStack,
        stream: &TokenStream,
        cache: &mut DeviceCache,
        which: Logits,
        keep: Option<&mut PrefillTrace>,
    ) -> Result<Vec<f32>> {
        match (self, cache) {
            (Runner::Cpu(m), DeviceCache::Cpu(c)) => prefill(m, vision, stream, c, which, keep),
            (Runner::Cuda(_), _) => Err(unsupported("a multimodal (VL) model on a CUDA device", "run it on the cpu device")),
            _ => Err(other_device()),
        }
    }
}

//! Where a model runs: [`Device::Cpu`] (the reference path, always built) or [`Device::Cuda`]
//! (feature `cuda`; without it [`crate::cuda`] is a stub whose constructors return
//! [`Error::CudaNotCompiled`], so this file has no `#[cfg]`).
//!
//! The [`Engine`] keeps its CPU [`crate::Transformer`] either way; [`Engine::to_device`] adds a
//! GPU copy of the weights ([`CudaModel`]) that generation then runs on, and [`DeviceCache`] is the
//! KV cache of whichever device that is.
//!
//! ```text
//! "cpu"     -> DeviceSpec::Cpu      -> Device::Cpu
//! "cuda"    -> DeviceSpec::Cuda(0)  -> Device::Cuda(CudaDevice on ordinal 0)
//! "cuda:1"  -> DeviceSpec::Cuda(1)  -> Device::Cuda(CudaDevice on ordinal 1)
//! ```

use std::fmt;
use std::str::FromStr;

use crate::cuda::{CudaDevice, CudaKvCache, CudaModel};
use crate::engine::Engine;
use crate::kv_cache::KvCache;
use crate::model::Logits;
use crate::{Error, Result};

/// A parsed `--device` value; nothing is opened yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// CUDA device ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, case-insensitive.
    /// Errors: [`Error::Request`] naming the accepted spellings.
    fn from_str(s: &str) -> Result<DeviceSpec> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" => return Ok(DeviceSpec::Cuda(0)),
            _ => {}
        }
        if let Some(n) = lower.strip_prefix("cuda:") {
            if let Ok(ordinal) = n.parse::<usize>() {
                return Ok(DeviceSpec::Cuda(ordinal));
            }
        }
        Err(Error::Request(format!("unknown device {s:?}: expected cpu, cuda or cuda:N")))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// An opened device.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(CudaDevice),
}

impl Device {
    /// Parses `cpu` / `cuda` / `cuda:N` and opens it.
    ///
    /// Errors: [`Error::Request`] for an unknown spelling; for CUDA, [`Error::CudaNotCompiled`]
    /// (build without the `cuda` feature), [`Error::CudaUnavailable`] (no libcuda, no such device,
    /// no kernels or cuBLAS for it), [`Error::Cuda`] (a driver call failed).
    pub fn parse(s: &str) -> Result<Device> {
        Device::open(s.parse()?)
    }

    /// Opens `spec`; see [`Device::parse`] for the errors. CUDA opening loads the kernels
    /// (NVRTC or precompiled PTX) and a cuBLAS handle, so it takes a moment once per process.
    pub fn open(spec: DeviceSpec) -> Result<Device> {
        match spec {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => CudaDevice::open(ordinal).map(Device::Cuda),
        }
    }

    /// What [`Device::open`] was given.
    pub fn spec(&self) -> DeviceSpec {
        match self {
            Device::Cpu => DeviceSpec::Cpu,
            Device::Cuda(d) => DeviceSpec::Cuda(d.ordinal()),
        }
    }
}

/// The KV cache of one sequence on the engine's device.
pub enum DeviceCache {
    Cpu(KvCache),
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
}

impl Engine {
    /// Moves generation to `device`: for CUDA, uploads the weights once (bf16) and keeps them
    /// beside the CPU model; for CPU, drops any GPU copy. [`Engine::generate`] then runs there.
    ///
    /// Errors: [`Error::CudaUnavailable`] / [`Error::Cuda`] when the upload fails (out of memory,
    /// a shape the kernels do not support, such as expert biases), [`Error::Config`] for those.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        self.gpu = match device {
            Device::Cpu => None,
            Device::Cuda(dev) => Some(CudaModel::upload(&self.model, dev)?),
        };
        Ok(())
    }

    /// Where generation runs.
    pub fn device(&self) -> DeviceSpec {
        match &self.gpu {
            None => DeviceSpec::Cpu,
            Some(m) => DeviceSpec::Cuda(m.device().ordinal()),
        }
    }

    /// A KV cache for `max_seq` positions on the engine's device.
    /// Errors: as [`KvCache::new`] (0 or more than `max_position_embeddings`), device allocation.
    pub fn new_cache(&self, max_seq: usize) -> Result<DeviceCache> {
        match &self.gpu {
            None => KvCache::new(&self.model.cfg, max_seq).map(DeviceCache::Cpu),
            Some(m) => CudaKvCache::new(m, max_seq).map(DeviceCache::Cuda),
        }
    }

    /// One forward pass of `tokens` on the engine's device, appending them to `cache`; returns what
    /// [`crate::Transformer::forward`] returns for `which` (f32, on the host).
    ///
    /// Errors: those of the forward pass, and [`Error::Request`] when `cache` belongs to another
    /// device than the engine's (made before [`Engine::to_device`]).
    pub fn forward(&self, tokens: &[u32], cache: &mut DeviceCache, which: Logits) -> Result<Vec<f32>> {
        match (cache, &self.gpu) {
            (DeviceCache::Cpu(c), None) => self.model.forward(tokens, c, which, None),
            (DeviceCache::Cuda(c), Some(m)) => m.forward(tokens, c, which, None),
            _ => Err(Error::Request("the KV cache was made for another device than the engine's".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda:1:2"] {
            assert!(matches!(bad.parse::<DeviceSpec>(), Err(Error::Request(_))), "{bad:?}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert!(matches!(Device::parse("cpu"), Ok(Device::Cpu)));
    }

    /// Without the feature the error is CudaNotCompiled; with it, on a machine without a driver or
    /// GPU, a typed CudaUnavailable (never a panic). With a GPU this opens it.
    #[test]
    fn cuda_fails_cleanly_or_opens() {
        let built = cfg!(feature = "cuda");
        match Device::parse("cuda") {
            Ok(d) => assert!(built && d.spec() == DeviceSpec::Cuda(0)),
            Err(Error::CudaNotCompiled) => assert!(!built),
            Err(Error::CudaUnavailable { reason }) => assert!(built && !reason.is_empty()),
            Err(other) => panic!("unexpected error: {other}"),
        }
        // An ordinal far past any machine's device count is unavailable, never a panic.
        assert!(Device::parse("cuda:4096").is_err());
    }
}

//! Where a model runs: [`Device::Cpu`] (the reference path, always built) or [`Device::Cuda`]
//! (feature `cuda`; without it [`cuda`] is `cuda_stub.rs`, whose constructors return
//! [`Error::CudaNotCompiled`], so no other file needs a `#[cfg]`).
//!
//! This layer owns device plumbing only (contexts, streams, cuBLAS, device ops on buffers); it
//! knows no model. The device is chosen once per model (`infer::Runner`), not per op.
//!
//! ```text
//! "cpu"     -> DeviceSpec::Cpu      -> Device::Cpu
//! "cuda"    -> DeviceSpec::Cuda(0)  -> Device::Cuda(CudaDevice on ordinal 0)
//! "cuda:1"  -> DeviceSpec::Cuda(1)  -> Device::Cuda(CudaDevice on ordinal 1)
//! ```

use std::fmt;
use std::str::FromStr;

// The CUDA plumbing; without the `cuda` feature a stub with the same names (CudaNotCompiled).
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
// The stub is also compiled (and its tests run) in a `cuda` build's unit tests, so the one
// all-features `cargo test` checks it without rebuilding every dependency without features.
#[cfg(all(test, feature = "cuda"))]
#[path = "cuda_stub.rs"]
mod cuda_stub;

use cuda::CudaDevice;

use crate::{Error, Result};

/// A parsed `--device` value; nothing is opened yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The host CPU.
    Cpu,
    /// CUDA device ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, case-insensitive.
    /// Errors: [`Error::InvalidOption`] (`device`) naming the accepted spellings.
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
        Err(crate::error::option_err("device", format!("unknown device {s:?}: expected cpu, cuda or cuda:N")))
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
    /// The host CPU (nothing to open).
    Cpu,
    /// An open CUDA device.
    Cuda(CudaDevice),
}

impl Device {
    /// Parses `cpu` / `cuda` / `cuda:N` and opens it.
    ///
    /// Errors: [`Error::InvalidOption`] for an unknown spelling; for CUDA, [`Error::CudaNotCompiled`]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda:1:2"] {
            assert!(matches!(bad.parse::<DeviceSpec>(), Err(Error::InvalidOption { option: "device", .. })), "{bad:?}");
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

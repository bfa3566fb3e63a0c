//! `backend::cuda` when the `cuda` feature is off (candle's dummy backend): the names of
//! `backend/cuda/mod.rs` that code outside it uses, so callers need no `#[cfg]`. Opening a device
//! returns [`Error::CudaNotCompiled`]; [`CudaDevice`] holds an uninhabited value, so none can exist
//! and its methods are statically unreachable (no panics, no `unreachable!`). The model-side stub
//! is `model/cuda_stub.rs`.
//!
//! A `cuda` build compiles this file too under `cfg(test)` (`backend/mod.rs`), so its tests run in
//! the one all-features test pass.

#![allow(dead_code)] // in a `cuda` test build only the tests below use it

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

    /// Device ordinal (stub: unreachable).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stub refuses every device with the one error whose message tells how to get CUDA.
    #[test]
    fn stub_refuses_with_the_rebuild_hint() {
        assert_eq!(device_count(), 0);
        for ordinal in [0, 1, 4096] {
            match CudaDevice::open(ordinal) {
                Err(e @ Error::CudaNotCompiled) => {
                    let msg = e.to_string();
                    assert!(msg.contains("no CUDA support") && msg.contains("--features cuda"), "{msg}");
                }
                other => panic!("cuda:{ordinal}: expected CudaNotCompiled, got {:?}", other.map(|_| ())),
            }
        }
    }
}

//! The CUDA plumbing (feature `cuda`): device, stream, kernels, cuBLAS and one function per op on
//! device buffers. The decoder's GPU mirror built on it lives in `model/cuda/`.
//!
//! - [`CudaDevice`]: context, the (default) stream, the kernels of `ernie-kernels` (NVRTC or
//!   precompiled PTX) and a cuBLAS handle, opened once per process. Every entry first checks that
//!   libcuda / libcublas load (cudarc would panic instead) and turns absence into
//!   [`Error::CudaUnavailable`].
//! - [`ops`]: one function per op, named like the CPU op it mirrors (`rms_norm`, `matmul_xwt`,
//!   `rope_interleaved`, `route_logits`, ...), on device buffers; the GPU tests compare each with
//!   its CPU twin.
//! - [`Linear`]: a weight (and optional bias) in device memory, the GPU side of `nn::Linear`.
//!
//! Numerics: weights and activations bf16 (the CPU `Transformer`'s weights are converted once at
//! upload), every reduction and GEMM accumulates in f32, the residual stream is bf16 (as
//! transformers in bf16), the router multiplies in f32 with f32 weights, and the head writes f32.
//! A single stream is used throughout, so cudarc's cross-stream event tracking never engages.
//!
//! Without the feature, `backend/cuda_stub.rs` provides the names used outside this module.

mod gemm;
pub mod ops;

use std::fmt;
use std::sync::{Arc, Mutex};

use ernie_kernels::cudarc::cublas::CudaBlas;
use ernie_kernels::cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits};
use ernie_kernels::{CudaLibrary, Kernels};
use half::bf16;

pub use ernie_kernels as kernels;
pub use ernie_kernels::cudarc;
pub use gemm::Linear;
pub(crate) use gemm::{extend_bf16, upload_bf16};

use crate::{Error, Result};

/// An open CUDA device: cheap to clone (shared handle).
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<Inner>,
}

struct Inner {
    ordinal: usize,
    name: String,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    blas: CudaBlas,
    /// `[n]` bf16 ones, grown on demand: the left factor of the rank-1 GEMM that broadcasts a bias.
    ones: Mutex<Option<CudaSlice<bf16>>>,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {}, {})", self.inner.ordinal, self.inner.name, self.inner.kernels.arch())
    }
}

/// How many CUDA devices the driver sees; 0 when libcuda is missing or the driver does not start.
pub fn device_count() -> usize {
    if !ernie_kernels::library_available(CudaLibrary::Driver) {
        return 0;
    }
    CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
}

impl CudaDevice {
    /// Opens device `ordinal`: context, stream, kernels ([`Kernels::new`]: NVRTC, or the PTX folder
    /// named by `ERNIE_KERNELS_PTX_DIR`) and cuBLAS.
    ///
    /// Errors: [`Error::CudaUnavailable`] when libcuda, libcublas or libnvrtc cannot be loaded, the
    /// driver finds no device `ordinal`, or the GPU is older than sm_80; [`Error::Cuda`] when a
    /// kernel fails to compile or load, or cuBLAS fails to start.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        let unavailable = |reason: String| Error::CudaUnavailable { reason };
        ernie_kernels::ensure_library(CudaLibrary::Driver).map_err(|e| unavailable(e.to_string()))?;
        let count = CudaContext::device_count().map_err(|e| unavailable(format!("the CUDA driver did not start ({e})")))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(format!("no device cuda:{ordinal} (the driver sees {count})")));
        }
        let ctx = ernie_kernels::open_device(ordinal).map_err(|e| unavailable(format!("cuda:{ordinal}: {e}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".to_string());
        ernie_kernels::ensure_library(CudaLibrary::Cublas).map_err(|e| unavailable(e.to_string()))?;
        let kernels = Kernels::new(&ctx).map_err(|e| match e {
            ernie_kernels::Error::CudaUnavailable { .. } | ernie_kernels::Error::UnsupportedArch { .. } => unavailable(e.to_string()),
            other => cuda_err("loading kernels")(other),
        })?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(cuda_err("creating the cuBLAS handle"))?;
        Ok(CudaDevice { inner: Arc::new(Inner { ordinal, name, ctx, stream, kernels, blas, ones: Mutex::new(None) }) })
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// Device name as the driver reports it, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The arch the kernels were built for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        self.inner.kernels.arch()
    }

    /// The driver context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The one stream all work of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// The loaded kernels.
    pub fn kernels(&self) -> &Kernels {
        &self.inner.kernels
    }

    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.inner.blas
    }

    /// Copies `host` to a new device buffer. Errors: [`Error::Cuda`] (allocation, copy).
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.inner.stream.clone_htod(host).map_err(cuda_err("upload"))
    }

    /// A zeroed device buffer of `n` elements. Errors: [`Error::Cuda`] (out of memory).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.inner.stream.alloc_zeros(n).map_err(cuda_err("alloc"))
    }

    /// Copies a device buffer or view to the host (waits for the stream).
    /// Errors: [`Error::Cuda`], including any earlier asynchronous kernel fault.
    pub fn download<T: DeviceRepr, S: DevicePtr<T>>(&self, src: &S) -> Result<Vec<T>> {
        let host = self.inner.stream.clone_dtoh(src).map_err(cuda_err("download"))?;
        // A copy into pageable memory already waits, but say so explicitly: the Vec is complete
        // and any fault of the queued kernels surfaces here, named.
        self.synchronize()?;
        Ok(host)
    }

    /// Waits for all queued work. Errors: [`Error::Cuda`] (an asynchronous kernel fault).
    pub fn synchronize(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    /// Runs `f` with a `[n]` bf16 view of ones (grown and kept for the process).
    pub(crate) fn with_ones<R>(&self, n: usize, f: impl FnOnce(&CudaSlice<bf16>) -> Result<R>) -> Result<R> {
        // A panic inside `f` cannot leave the buffer half-updated, so a poisoned lock is usable.
        let mut guard = self.inner.ones.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|o| o.len() < n) {
            *guard = Some(self.upload(&vec![bf16::ONE; n.max(1)])?);
        }
        match guard.as_ref() {
            Some(ones) => f(ones),
            None => Err(Error::Cuda { op: "ones", message: "buffer missing after allocation".into() }),
        }
    }
}

/// Maps any CUDA-side error (driver, cuBLAS, kernels) to [`Error::Cuda`] for `op`.
pub(crate) fn cuda_err<E: fmt::Display>(op: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Cuda { op, message: e.to_string() }
}

/// Host f32 values rounded to bf16 (round to nearest even): what every upload of weights and test
/// input goes through.
pub fn to_bf16(values: &[f32]) -> Vec<bf16> {
    values.iter().map(|&v| bf16::from_f32(v)).collect()
}

//! The crate's one error type. Launchers check every dimension before touching the device, so a
//! wrong shape comes back as a value instead of a kernel reading out of bounds.

use cudarc::driver::DriverError;

/// Everything that can go wrong compiling, loading or launching a kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CUDA shared library could not be loaded. cudarc would panic on first use; we check first.
    #[error(
        "CUDA library `{library}` could not be loaded; put the directory holding it on \
         LD_LIBRARY_PATH (for NVRTC: eval \"$(scripts/cuda-toolchain.sh)\")"
    )]
    CudaUnavailable {
        /// cudarc's short name: "cuda" (driver), "nvrtc", "cublas", "cublasLt".
        library: &'static str,
    },

    /// A buffer length does not match what the dimensions imply.
    #[error("{op}: `{arg}` has {got} elements, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        arg: &'static str,
        expected: usize,
        got: usize,
    },

    /// A dimension or parameter is outside what the kernel supports.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// A device pointer is not aligned enough for the kernel's vector loads.
    #[error("{op}: `{arg}` must be {align}-byte aligned (device address {addr:#x})")]
    Misaligned {
        op: &'static str,
        arg: &'static str,
        align: u64,
        addr: u64,
    },

    /// The device is older than the kernels support (mma.sync bf16 needs sm_80).
    #[error("GPU architecture {arch} is not supported; ernie-kernels needs sm_80 or newer")]
    UnsupportedArch { arch: String },

    /// The stream belongs to another CUDA context than the one the kernels were loaded into.
    #[error("{op}: the stream belongs to a different CUDA context than these Kernels")]
    WrongContext { op: &'static str },

    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile {module} for {arch}:\n{log}")]
    Compile {
        module: &'static str,
        arch: String,
        log: String,
    },

    /// The compiled PTX lacks an entry point the launchers expect (source and list out of sync).
    #[error("module {module} compiled for {arch} has no kernel `{kernel}`")]
    MissingKernel {
        module: &'static str,
        arch: String,
        kernel: &'static str,
    },

    /// The driver refused the PTX: almost always an NVRTC newer than the driver.
    #[error(
        "the CUDA driver rejected the PTX of {module} ({source}); the NVRTC in use is newer than \
         the driver supports: use the CUDA 13.0 NVRTC (scripts/cuda-toolchain.sh)"
    )]
    PtxRejected {
        module: &'static str,
        source: DriverError,
    },

    /// A precompiled PTX file ([`crate::Kernels::from_ptx_dir`]) is missing or unreadable, or
    /// writing one ([`crate::write_ptx_dir`]) failed.
    #[error("PTX file {}: {source}", path.display())]
    PtxFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The CPU emulation of a kernel failed (divergent barriers; see cuda/host_emu.h).
    #[cfg(feature = "host-emu")]
    #[error("{op}: host emulation of the kernel failed (barrier divergence or bad launch shape)")]
    EmulationFailed { op: &'static str },

    /// Any other CUDA driver error.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns early with [`Error::InvalidArgument`]: `bail!(op, "format {}", args)`.
#[macro_export]
macro_rules! bail {
    ($op:expr, $($fmt:tt)+) => {
        return Err($crate::Error::InvalidArgument { op: $op, msg: format!($($fmt)+) })
    };
}

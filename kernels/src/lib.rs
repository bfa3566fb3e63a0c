//! CUDA kernels for the ERNIE 4.5 MoE runtime, compiled at run time with NVRTC, and their typed
//! launchers.
//!
//! This crate launches CUDA and nothing else: a launcher takes a `&CudaStream`, device views and
//! plain dimensions, checks the dimensions, and returns [`Result`]. It knows nothing of tensors or
//! models (conventions §2.2). bf16 activations and weights, f32 accumulation, routing in f32.
//!
//! The MoE path is four stages, each in its own `.cu` / `.rs` pair:
//! [`Kernels::moe_route`] → [`Kernels::moe_align`] → [`Kernels::moe_gemm_swiglu`] /
//! [`Kernels::moe_gemm_down`] → [`Kernels::moe_reduce`]; [`MoePlan`] sizes their buffers.
//!
//! Nothing here needs CUDA to build: cudarc loads libcuda / libnvrtc at run time, and every entry
//! point checks the library is present first ([`Error::CudaUnavailable`]) instead of letting
//! cudarc panic.
//!
//! Tests, none of which needs a GPU except the last:
//! - unit tests (`cargo test -p ernie-kernels`): dimension checks, tile table, preprocessing;
//! - `tests/nvrtc_compile.rs`: [`compile_all_for_arch`] for sm_80 / sm_90 / sm_90a plus `ptxas -v`
//!   (needs `eval "$(scripts/cuda-toolchain.sh)"`; skips loudly without it unless
//!   `ERNIE_REQUIRE_CUDA_TOOLCHAIN=1`);
//! - `tests/host_emu/` (feature `host-emu`): the kernels' own `.cu` source compiled as host C++
//!   and run on the CPU through `cuda/host_emu.h` (fibers per CUDA thread, collective shuffles,
//!   barriers and mma.sync), against plain Rust references;
//! - `tests/gpu/`: every launcher on device 0 against the same references; skips loudly without
//!   a GPU unless `ERNIE_REQUIRE_GPU=1`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DriverError};

mod error;
pub mod module;
pub mod tuning;

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod moe_align;
pub mod moe_gemm;
pub mod moe_reduce;
pub mod rmsnorm;
pub mod rope;
pub mod routing;

#[cfg(feature = "host-emu")]
pub mod host_emu;

pub use cudarc;
pub use error::{Error, Result};
pub use module::{compile_all_for_arch, write_ptx_dir, CompileReport, ModuleId};

/// Environment variable naming a folder of precompiled PTX ([`module::write_ptx_dir`]) that
/// [`Kernels::new`] loads instead of running NVRTC.
pub const PTX_DIR_ENV: &str = "ERNIE_KERNELS_PTX_DIR";
pub use tuning::{MoePlan, TileConfig};

/// The CUDA libraries this crate and the runtime load dynamically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaLibrary {
    /// libcuda (the driver): contexts, memory, launches.
    Driver,
    /// libnvrtc: run-time compilation of the kernels.
    Nvrtc,
    /// libcublas: the runtime's dense projections.
    Cublas,
    /// libcublasLt.
    CublasLt,
}

impl CudaLibrary {
    /// cudarc's short library name.
    pub fn name(self) -> &'static str {
        match self {
            CudaLibrary::Driver => "cuda",
            CudaLibrary::Nvrtc => "nvrtc",
            CudaLibrary::Cublas => "cublas",
            CudaLibrary::CublasLt => "cublasLt",
        }
    }
}

/// Whether `library` can be loaded. cudarc panics on first use of a missing library, so call this
/// (or [`ensure_library`]) before any cudarc entry point. The answer is cached for the process:
/// the dynamic loader's search path does not change after start-up.
pub fn library_available(library: CudaLibrary) -> bool {
    static CACHE: [OnceLock<bool>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let slot = match library {
        CudaLibrary::Driver => &CACHE[0],
        CudaLibrary::Nvrtc => &CACHE[1],
        CudaLibrary::Cublas => &CACHE[2],
        CudaLibrary::CublasLt => &CACHE[3],
    };
    *slot.get_or_init(|| {
        // SAFETY: each probe dlopens cudarc's candidate file names and closes them again; the
        // only code that runs is the library's own initialisers, which we trust as we trust the
        // library itself when we later call into it.
        unsafe {
            match library {
                CudaLibrary::Driver => cudarc::driver::sys::is_culib_present(),
                CudaLibrary::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                CudaLibrary::Cublas => cudarc::cublas::sys::is_culib_present(),
                CudaLibrary::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
            }
        }
    })
}

/// `Ok(())` if `library` loads, else [`Error::CudaUnavailable`].
pub fn ensure_library(library: CudaLibrary) -> Result<()> {
    if library_available(library) {
        Ok(())
    } else {
        Err(Error::CudaUnavailable {
            library: library.name(),
        })
    }
}

/// Opens device `ordinal` without cudarc's panic when libcuda is missing.
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    ensure_library(CudaLibrary::Driver)?;
    Ok(CudaContext::new(ordinal)?)
}

/// The NVRTC arch for a device: `sm_{major}{minor}`, e.g. `sm_90` on an H100/H200.
/// Errors with [`Error::UnsupportedArch`] below sm_80 (mma.sync bf16 needs Ampere).
pub fn device_arch(ctx: &Arc<CudaContext>) -> Result<String> {
    let (major, minor) = ctx.compute_capability()?;
    let arch = format!("sm_{major}{minor}");
    if major < 8 {
        return Err(Error::UnsupportedArch { arch });
    }
    Ok(arch)
}

/// Every kernel, compiled for one device and loaded into its context.
pub struct Kernels {
    ctx: Arc<CudaContext>,
    arch: String,
    functions: HashMap<&'static str, CudaFunction>,
    // The functions keep their module alive too; holding them here makes the ownership explicit.
    _modules: Vec<Arc<CudaModule>>,
}

impl Kernels {
    /// Compiles every module for `ctx`'s device (NVRTC, cached per arch for the process), loads
    /// them and looks up every entry point. The first call per arch takes the NVRTC time (seconds);
    /// later calls only load.
    ///
    /// When the environment variable [`PTX_DIR_ENV`] (`ERNIE_KERNELS_PTX_DIR`) names a folder, the
    /// PTX is read from there instead ([`Kernels::from_ptx_dir`]) and NVRTC is never loaded: this is
    /// how the GPU check runs on a machine without libnvrtc (see `scripts/gpu-check.sh`).
    ///
    /// Errors: [`Error::CudaUnavailable`] (libcuda / libnvrtc), [`Error::UnsupportedArch`],
    /// [`Error::Compile`], [`Error::PtxRejected`] (NVRTC newer than the driver), [`Error::PtxFile`],
    /// [`Error::Driver`].
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        if let Some(dir) = std::env::var_os(PTX_DIR_ENV).filter(|d| !d.is_empty()) {
            return Self::from_ptx_dir(ctx, std::path::Path::new(&dir));
        }
        ensure_library(CudaLibrary::Driver)?;
        ensure_library(CudaLibrary::Nvrtc)?;
        let arch = device_arch(ctx)?;
        let mut ptx = Vec::new();
        for report in compile_all_for_arch(&arch)? {
            ptx.push((report.module, module::compiled_ptx(report.module, &arch)?.0));
        }
        Self::load(ctx, arch, ptx)
    }

    /// Loads PTX written earlier by [`module::write_ptx_dir`]: `dir/<arch>/<module>.ptx` for the
    /// device's arch (e.g. `dir/sm_90/moe_gemm.ptx`). Needs libcuda only; the driver JIT-compiles
    /// the PTX, so it must come from an NVRTC no newer than the driver (13.0 for driver 580).
    ///
    /// Errors: [`Error::CudaUnavailable`] (libcuda), [`Error::UnsupportedArch`], [`Error::PtxFile`]
    /// (a missing or unreadable file names the path), [`Error::PtxRejected`], [`Error::MissingKernel`],
    /// [`Error::Driver`].
    pub fn from_ptx_dir(ctx: &Arc<CudaContext>, dir: &std::path::Path) -> Result<Self> {
        ensure_library(CudaLibrary::Driver)?;
        let arch = device_arch(ctx)?;
        let mut ptx = Vec::new();
        for id in ModuleId::ALL {
            let path = module::ptx_path(dir, id, &arch);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::PtxFile {
                path: path.clone(),
                source,
            })?;
            // cudarc hands the text to the driver as a C string: no interior NUL may remain.
            let text = text.trim_end_matches('\0').to_string();
            if text.contains('\0') {
                return Err(Error::PtxFile {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "NUL byte in PTX"),
                });
            }
            ptx.push((id, cudarc::nvrtc::Ptx::from_src(text)));
        }
        Self::load(ctx, arch, ptx)
    }

    fn load(
        ctx: &Arc<CudaContext>,
        arch: String,
        ptx: Vec<(ModuleId, cudarc::nvrtc::Ptx)>,
    ) -> Result<Self> {
        let mut functions = HashMap::new();
        let mut modules = Vec::new();
        for (id, ptx) in ptx {
            let loaded = ctx.load_module(ptx).map_err(|source| match source {
                DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION) => {
                    Error::PtxRejected {
                        module: id.file_name(),
                        source,
                    }
                }
                other => Error::Driver(other),
            })?;
            for &name in id.kernel_names() {
                let function = loaded
                    .load_function(name)
                    .map_err(|_| Error::MissingKernel {
                        module: id.file_name(),
                        arch: arch.clone(),
                        kernel: name,
                    })?;
                functions.insert(name, function);
            }
            modules.push(loaded);
        }
        Ok(Self {
            ctx: ctx.clone(),
            arch,
            functions,
            _modules: modules,
        })
    }

    /// The arch the kernels were compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The context the kernels are loaded into; launch only on its streams.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub(crate) fn function(&self, name: &'static str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::MissingKernel {
                module: "(loaded modules)",
                arch: self.arch.clone(),
                kernel: name,
            })
    }

    /// Launching a function of one context on another context's stream is a driver error at
    /// best; catch it with a clear message.
    pub(crate) fn check_stream(&self, op: &'static str, stream: &CudaStream) -> Result<()> {
        if Arc::ptr_eq(stream.context(), &self.ctx) {
            Ok(())
        } else {
            Err(Error::WrongContext { op })
        }
    }
}

// ---- argument checks shared by the launchers (pure: also used by host_emu and unit tests) ----

/// `value` as the kernel's `int` parameter, or [`Error::InvalidArgument`].
pub(crate) fn dim_i32(op: &'static str, name: &str, value: usize) -> Result<i32> {
    match i32::try_from(value) {
        Ok(v) => Ok(v),
        Err(_) => bail!(op, "{name} = {value} does not fit the kernel's 32-bit int"),
    }
}

/// `a * b` without overflow, or [`Error::InvalidArgument`].
pub(crate) fn mul(op: &'static str, a: usize, b: usize) -> Result<usize> {
    match a.checked_mul(b) {
        Some(v) => Ok(v),
        None => bail!(op, "{a} x {b} overflows"),
    }
}

/// Buffer length check.
pub(crate) fn check_len(
    op: &'static str,
    arg: &'static str,
    got: usize,
    expected: usize,
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            arg,
            expected,
            got,
        })
    }
}

/// Device address alignment check for kernels that use 16-byte vector loads.
pub(crate) fn check_align<T, S: DevicePtr<T>>(
    op: &'static str,
    arg: &'static str,
    slice: &S,
    stream: &CudaStream,
    align: u64,
) -> Result<()> {
    let (addr, _record) = slice.device_ptr(stream);
    if addr % align == 0 {
        Ok(())
    } else {
        Err(Error::Misaligned {
            op,
            arg,
            align,
            addr,
        })
    }
}

/// Blocks for a grid-stride elementwise kernel: enough to fill the GPU, capped so huge tensors
/// reuse threads instead of overflowing grid.x.
pub(crate) fn grid_stride_blocks(n: usize, threads: u32) -> u32 {
    const MAX_BLOCKS: usize = 65_535;
    n.div_ceil(threads as usize).clamp(1, MAX_BLOCKS) as u32
}

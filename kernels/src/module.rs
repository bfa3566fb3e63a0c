//! The kernel sources, their NVRTC compilation, and the per-(module, arch) PTX cache.
//!
//! Every `.cu` file under `kernels/cuda/` is embedded with `include_str!`. Before NVRTC sees a
//! source, [`preprocess`] replaces its `#include "common.cuh"` line with the header's text (NVRTC
//! gets no include paths at run time: the GPU machine has only the driver and libnvrtc). The PTX
//! is cached per (module, arch) for the life of the process, so a second `Kernels` on another
//! device of the same arch costs only the module load.
//!
//! [`compile_all_for_arch`] is the one compile path: [`crate::Kernels::new`] uses it with the
//! device's arch, and the GPU-less compile check (tests/nvrtc_compile.rs) with sm_80 / sm_90a.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cudarc::nvrtc::{self, CompileError, CompileOptions, Ptx};

use crate::{ensure_library, CudaLibrary, Error, Result};

const COMMON_CUH: &str = include_str!("../cuda/common.cuh");
const COMMON_INCLUDE: &str = "#include \"common.cuh\"";

/// One `.cu` file = one CUDA module = one launcher file in `src/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleId {
    Routing,
    MoeAlign,
    MoeGemm,
    MoeReduce,
    RmsNorm,
    Rope,
    Attention,
    Embedding,
    Elementwise,
}

impl ModuleId {
    /// Every module, in the order they are compiled and reported.
    pub const ALL: [ModuleId; 9] = [
        ModuleId::Routing,
        ModuleId::MoeAlign,
        ModuleId::MoeGemm,
        ModuleId::MoeReduce,
        ModuleId::RmsNorm,
        ModuleId::Rope,
        ModuleId::Attention,
        ModuleId::Embedding,
        ModuleId::Elementwise,
    ];

    /// The source file name under `kernels/cuda/` (also NVRTC's program name, so logs cite it).
    pub fn file_name(self) -> &'static str {
        match self {
            ModuleId::Routing => "routing.cu",
            ModuleId::MoeAlign => "moe_align.cu",
            ModuleId::MoeGemm => "moe_gemm.cu",
            ModuleId::MoeReduce => "moe_reduce.cu",
            ModuleId::RmsNorm => "rmsnorm.cu",
            ModuleId::Rope => "rope.cu",
            ModuleId::Attention => "attention.cu",
            ModuleId::Embedding => "embedding.cu",
            ModuleId::Elementwise => "elementwise.cu",
        }
    }

    /// The raw source, before `#include` resolution.
    pub fn source(self) -> &'static str {
        match self {
            ModuleId::Routing => include_str!("../cuda/routing.cu"),
            ModuleId::MoeAlign => include_str!("../cuda/moe_align.cu"),
            ModuleId::MoeGemm => include_str!("../cuda/moe_gemm.cu"),
            ModuleId::MoeReduce => include_str!("../cuda/moe_reduce.cu"),
            ModuleId::RmsNorm => include_str!("../cuda/rmsnorm.cu"),
            ModuleId::Rope => include_str!("../cuda/rope.cu"),
            ModuleId::Attention => include_str!("../cuda/attention.cu"),
            ModuleId::Embedding => include_str!("../cuda/embedding.cu"),
            ModuleId::Elementwise => include_str!("../cuda/elementwise.cu"),
        }
    }

    /// The `extern "C"` entry points the launchers call; each must appear in the compiled PTX.
    pub fn kernel_names(self) -> &'static [&'static str] {
        match self {
            ModuleId::Routing => &["moe_route_f32"],
            ModuleId::MoeAlign => &["moe_align_u32"],
            // Kept equal to the names in tuning::MOE_GEMM_TILES (a unit test checks).
            ModuleId::MoeGemm => &[
                "moe_gemm_swiglu_bf16_m64n64k32",
                "moe_gemm_down_bf16_m64n64k32",
                "moe_gemm_swiglu_bf16_m16n64k64",
                "moe_gemm_down_bf16_m16n64k64",
            ],
            ModuleId::MoeReduce => &["moe_reduce_bf16", "moe_reduce_add_bf16"],
            ModuleId::RmsNorm => &["rmsnorm_bf16"],
            ModuleId::Rope => &["rope_bf16", "rope_3d_bf16"],
            ModuleId::Attention => &["attention_decode_bf16", "attention_prefill_bf16"],
            ModuleId::Embedding => &["embedding_bf16"],
            ModuleId::Elementwise => &[
                "add_bf16",
                "add_inplace_bf16",
                "silu_mul_bf16",
                "silu_mul_fused_bf16",
                "to_f32_bf16",
            ],
        }
    }
}

/// Resolves `#include "common.cuh"` textually (once per source) and wraps the inlined text in
/// `#line` directives so NVRTC diagnostics name the right file and line. Other includes are left
/// alone: the only other one, `host_emu.h`, sits in a branch NVRTC never takes.
pub fn preprocess(id: ModuleId) -> String {
    let source = id.source();
    let mut out = String::with_capacity(source.len() + COMMON_CUH.len() + 128);
    let mut included = false;
    for (index, line) in source.lines().enumerate() {
        if line.trim() == COMMON_INCLUDE {
            if !included {
                out.push_str("#line 1 \"common.cuh\"\n");
                for common_line in COMMON_CUH.lines() {
                    // `#pragma once` in what is now the main file only draws a warning.
                    if common_line.trim() != "#pragma once" {
                        out.push_str(common_line);
                    }
                    out.push('\n');
                }
                out.push_str(&format!("#line {} \"{}\"\n", index + 2, id.file_name()));
                included = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// NVRTC flags. No fast-math: outputs are compared against the CPU reference, and the kernels
/// are memory-bound where it would matter.
fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-lineinfo".to_string(),
    ]
}

/// `sm_80`, `sm_90a`, `compute_90`, ...: refuse anything else before it reaches NVRTC's flags.
fn check_arch(arch: &str) -> Result<()> {
    let digits = arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"));
    let ok = digits.is_some_and(|d| {
        let d = d.trim_end_matches(['a', 'f']);
        !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(Error::UnsupportedArch {
            arch: arch.to_string(),
        })
    }
}

fn compile_module(id: ModuleId, arch: &str) -> Result<Ptx> {
    let options = CompileOptions {
        options: nvrtc_options(arch),
        name: Some(id.file_name().to_string()),
        ..Default::default()
    };
    nvrtc::compile_ptx_with_opts(preprocess(id), options).map_err(|err| {
        let log = match err {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        };
        Error::Compile {
            module: id.file_name(),
            arch: arch.to_string(),
            log,
        }
    })
}

type PtxCache = Mutex<HashMap<(ModuleId, String), Ptx>>;

fn ptx_cache() -> MutexGuard<'static, HashMap<(ModuleId, String), Ptx>> {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    // A panic while holding the lock cannot leave the map half-written (insert is atomic from
    // our side), so a poisoned lock is still safe to use.
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The PTX of `id` for `arch`, compiled on first use and cached for the process.
/// Returns the PTX and whether it came from the cache.
pub fn compiled_ptx(id: ModuleId, arch: &str) -> Result<(Ptx, bool)> {
    check_arch(arch)?;
    if let Some(ptx) = ptx_cache().get(&(id, arch.to_string())) {
        return Ok((ptx.clone(), true));
    }
    ensure_library(CudaLibrary::Nvrtc)?;
    // Compile outside the lock so modules compile in parallel; a racing duplicate is harmless.
    let ptx = compile_module(id, arch)?;
    let mut cache = ptx_cache();
    let entry = cache.entry((id, arch.to_string())).or_insert(ptx);
    Ok((entry.clone(), false))
}

/// `dir/<arch>/<module stem>.ptx`, e.g. `dir/sm_90/moe_gemm.ptx`: where [`write_ptx_dir`] puts a
/// module and [`crate::Kernels::from_ptx_dir`] looks for it.
pub fn ptx_path(dir: &Path, id: ModuleId, arch: &str) -> PathBuf {
    let stem = id.file_name().trim_end_matches(".cu");
    dir.join(arch).join(format!("{stem}.ptx"))
}

/// Compiles every module for `arch` ([`compile_all_for_arch`]: same NVRTC, options and entry-point
/// check) and writes the PTX text to [`ptx_path`], for a machine that has a driver but no NVRTC.
/// Returns the files written.
///
/// Errors: those of [`compile_all_for_arch`], and [`Error::PtxFile`] when a file cannot be written.
pub fn write_ptx_dir(arch: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for report in compile_all_for_arch(arch)? {
        let path = ptx_path(dir, report.module, arch);
        let io = |source| Error::PtxFile {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, report.ptx.as_bytes()).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

/// What one module's compilation produced.
#[derive(Clone, Debug)]
pub struct CompileReport {
    pub module: ModuleId,
    pub arch: String,
    /// PTX text, e.g. for `ptxas -v` in the compile check.
    pub ptx: String,
    /// The entry points found in the PTX (all of [`ModuleId::kernel_names`]).
    pub kernels: Vec<&'static str>,
    /// Wall time of the NVRTC call (near zero when `cached`).
    pub compile_time: Duration,
    pub cached: bool,
}

/// Compiles every module for `arch` (e.g. `"sm_90"`) through the same NVRTC path, options and
/// cache that [`crate::Kernels::new`] uses, and checks that every expected `extern "C"` entry
/// point is in the PTX. Modules compile on parallel threads.
///
/// Errors: [`Error::CudaUnavailable`] when libnvrtc cannot be loaded, [`Error::UnsupportedArch`]
/// for a malformed arch, [`Error::Compile`] with NVRTC's log, [`Error::MissingKernel`].
pub fn compile_all_for_arch(arch: &str) -> Result<Vec<CompileReport>> {
    check_arch(arch)?;
    ensure_library(CudaLibrary::Nvrtc)?;
    let results: Vec<Result<CompileReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ModuleId::ALL
            .iter()
            .map(|&id| scope.spawn(move || compile_report(id, arch)))
            .collect();
        handles
            .into_iter()
            .zip(ModuleId::ALL)
            .map(|(handle, id)| {
                handle.join().unwrap_or_else(|_| {
                    Err(Error::Compile {
                        module: id.file_name(),
                        arch: arch.to_string(),
                        log: "the compile thread panicked".to_string(),
                    })
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

fn compile_report(id: ModuleId, arch: &str) -> Result<CompileReport> {
    let start = Instant::now();
    let (ptx, cached) = compiled_ptx(id, arch)?;
    let compile_time = start.elapsed();
    let text = ptx_text(&ptx);
    let mut kernels = Vec::new();
    for &name in id.kernel_names() {
        if !ptx_has_entry(&text, name) {
            return Err(Error::MissingKernel {
                module: id.file_name(),
                arch: arch.to_string(),
                kernel: name,
            });
        }
        kernels.push(name);
    }
    Ok(CompileReport {
        module: id,
        arch: arch.to_string(),
        ptx: text,
        kernels,
        compile_time,
        cached,
    })
}

/// PTX bytes from NVRTC end with a NUL; `Ptx::to_src` would panic on non-UTF-8, this does not.
fn ptx_text(ptx: &Ptx) -> String {
    match ptx.as_bytes() {
        Some(bytes) => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        }
        None => String::new(),
    }
}

/// `.entry name(` or `.entry name (`: how PTX declares a kernel.
fn ptx_has_entry(ptx: &str, name: &str) -> bool {
    ptx.lines().any(|line| {
        line.split(".entry ").nth(1).is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix(name)
                .is_some_and(|tail| tail.trim_start().starts_with('(') || tail.trim().is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_inlines_common_once_with_line_markers() {
        for id in ModuleId::ALL {
            let text = preprocess(id);
            let still_included = text.lines().any(|l| l.trim() == COMMON_INCLUDE);
            assert!(!still_included, "{}", id.file_name());
            assert_eq!(text.matches("bf16_to_f32(bf16_t h)").count(), 1);
            assert!(text.contains(&format!("\"{}\"", id.file_name())));
            assert!(!text.lines().any(|l| l.trim() == "#pragma once"));
        }
    }

    #[test]
    fn every_kernel_name_is_defined_in_its_source() {
        for id in ModuleId::ALL {
            for name in id.kernel_names() {
                assert!(
                    id.source().contains(&format!("{name}(")),
                    "{name} not in {}",
                    id.file_name()
                );
            }
        }
    }

    #[test]
    fn arch_strings_are_validated() {
        for ok in ["sm_80", "sm_90a", "sm_100f", "compute_90"] {
            assert!(check_arch(ok).is_ok(), "{ok}");
        }
        for bad in ["", "sm_", "sm_9x", "--x", "sm_90 -G"] {
            assert!(check_arch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_detection() {
        let ptx = ".visible .entry moe_route_f32(\n.visible .entry moe_reduce_add_bf16(";
        assert!(ptx_has_entry(ptx, "moe_route_f32"));
        assert!(ptx_has_entry(ptx, "moe_reduce_add_bf16"));
        assert!(!ptx_has_entry(ptx, "moe_reduce_bf16"));
    }
}

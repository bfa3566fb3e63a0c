//! GPU-less compile check: every kernel module through the runtime's own NVRTC path
//! (`compile_all_for_arch`, the function `Kernels::new` calls), for sm_80, sm_90 and sm_90a, then
//! `ptxas -v` on each PTX to catch what NVRTC leaves to the assembler and to print register and
//! spill counts.
//!
//! Needs the toolchain from `scripts/cuda-toolchain.sh`:
//!   eval "$(scripts/cuda-toolchain.sh)"   # ERNIE_CUDA_HOME + LD_LIBRARY_PATH for libnvrtc
//! Without ERNIE_CUDA_HOME the test skips loudly, unless ERNIE_REQUIRE_CUDA_TOOLCHAIN=1 (set by
//! `make test`), where it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ernie_kernels::{compile_all_for_arch, CompileReport};

/// sm_80 (A100, the mma.sync floor), sm_90 (what `Kernels::new` picks on an H100/H200) and
/// sm_90a (arch-specific Hopper features, for a later wgmma path).
const ARCHS: [&str; 3] = ["sm_80", "sm_90", "sm_90a"];

/// The GPU machine runs driver 580 (CUDA 13.0), whose JIT accepts PTX ISA up to 9.0. A newer
/// NVRTC would emit a higher `.version` and every module load would fail there, so catch it here.
const MAX_PTX_VERSION: (u32, u32) = (9, 0);

/// `.version major.minor` from the PTX header.
fn ptx_version(ptx: &str) -> Option<(u32, u32)> {
    let line = ptx
        .lines()
        .find(|l| l.trim_start().starts_with(".version"))?;
    let (major, minor) = line
        .trim()
        .trim_start_matches(".version")
        .trim()
        .split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn toolchain_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("ERNIE_CUDA_HOME") {
        return Some(PathBuf::from(home));
    }
    let required = std::env::var("ERNIE_REQUIRE_CUDA_TOOLCHAIN").is_ok_and(|v| v == "1");
    let msg = "ERNIE_CUDA_HOME is not set: run `eval \"$(scripts/cuda-toolchain.sh)\"` first";
    assert!(
        !required,
        "{msg} (ERNIE_REQUIRE_CUDA_TOOLCHAIN=1 makes this a failure)"
    );
    // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a skip
    // nobody sees is no warning at all.
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED nvrtc_compile: {msg}\n{bar}\n"
    );
    None
}

/// One kernel's line from `ptxas -v`.
#[derive(Debug, Default)]
struct KernelStats {
    name: String,
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    smem_bytes: u32,
    stack_bytes: u32,
}

/// Number just before `unit` in a `ptxas info` line, e.g. ("Used 40 registers", "registers").
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())?
        .parse()
        .ok()
}

fn parse_ptxas(log: &str) -> Vec<KernelStats> {
    let mut stats: Vec<KernelStats> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            stats.push(KernelStats {
                name,
                ..Default::default()
            });
        } else if let Some(current) = stats.last_mut() {
            if line.contains("spill stores") {
                current.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                current.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                current.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                current.registers = number_before(line, "registers").unwrap_or(0);
                current.smem_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    stats
}

fn run_ptxas(ptxas: &Path, dir: &Path, report: &CompileReport) -> Vec<KernelStats> {
    let version = ptx_version(&report.ptx);
    assert!(
        version.is_some_and(|v| v <= MAX_PTX_VERSION),
        "{} for {}: PTX .version {version:?} is newer than driver 580 accepts ({MAX_PTX_VERSION:?}); \
         use the CUDA 13.0 NVRTC from scripts/cuda-toolchain.sh",
        report.module.file_name(),
        report.arch
    );
    let stem = report.module.file_name().trim_end_matches(".cu");
    let ptx_path = dir.join(format!("{stem}.{}.ptx", report.arch));
    std::fs::write(&ptx_path, &report.ptx)
        .unwrap_or_else(|e| panic!("writing {}: {e}", ptx_path.display()));
    let output = Command::new(ptxas)
        .arg(format!("-arch={}", report.arch))
        .arg("-v")
        .arg("-o")
        .arg(dir.join(format!("{stem}.{}.cubin", report.arch)))
        .arg(&ptx_path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ptxas rejected {} for {}:\n{log}",
        report.module.file_name(),
        report.arch
    );
    let stats = parse_ptxas(&log);
    for &kernel in &report.kernels {
        assert!(
            stats.iter().any(|s| s.name == kernel),
            "ptxas output lacks {kernel} ({}):\n{log}",
            report.arch
        );
    }
    stats
}

#[test]
fn every_module_compiles_with_nvrtc_and_assembles_with_ptxas() {
    let Some(home) = toolchain_home() else {
        return;
    };
    let ptxas = home.join("bin").join("ptxas");
    assert!(
        ptxas.is_file(),
        "no ptxas at {} (re-run scripts/cuda-toolchain.sh)",
        ptxas.display()
    );
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nvrtc_compile");
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("{}: {e}", out_dir.display()));

    let start = Instant::now();
    let mut summary = String::new();
    let mut spilling = Vec::new();
    for arch in ARCHS {
        let t0 = Instant::now();
        let reports = compile_all_for_arch(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let nvrtc_time = t0.elapsed();
        summary += &format!(
            "\n{arch}: NVRTC {:.2?} (modules compiled in parallel)\n",
            nvrtc_time
        );
        summary += &format!(
            "  {:<14} {:<34} {:>5} {:>7} {:>7} {:>6} {:>8}\n",
            "module", "kernel", "regs", "spill-st", "spill-ld", "stack", "smem"
        );
        for report in &reports {
            for s in run_ptxas(&ptxas, &out_dir, report) {
                summary += &format!(
                    "  {:<14} {:<34} {:>5} {:>7} {:>7} {:>6} {:>8}   (NVRTC {:.0?})\n",
                    report.module.file_name(),
                    s.name,
                    s.registers,
                    s.spill_stores,
                    s.spill_loads,
                    s.stack_bytes,
                    s.smem_bytes,
                    report.compile_time
                );
                if s.spill_stores > 0 || s.spill_loads > 0 {
                    spilling.push(format!("{arch} {}", s.name));
                }
            }
        }
    }
    summary += &format!(
        "\ncompile check total (NVRTC + ptxas, {} archs): {:.2?}\n",
        ARCHS.len(),
        start.elapsed()
    );
    if !spilling.is_empty() {
        summary += &format!("WARNING: register spills in {spilling:?}\n");
    }
    // Direct to stderr so the table shows in `make test` logs without --nocapture.
    let _ = writeln!(std::io::stderr(), "{summary}");
    // Also keep it next to the PTX, for reading without --nocapture.
    let _ = std::fs::write(out_dir.join("summary.txt"), &summary);
}

/// The precompiled-PTX path `scripts/gpu-check.sh` ships (no NVRTC on the GPU machine):
/// `write_ptx_dir` writes one file per module at `ptx_path`, each holding every entry point the
/// launchers look up and a PTX version driver 580 accepts; `Kernels::from_ptx_dir` reads exactly
/// these paths.
#[test]
fn precompiled_ptx_dir_has_every_module_and_entry() {
    if toolchain_home().is_none() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptx_dir");
    let _ = std::fs::remove_dir_all(&dir);
    let written = ernie_kernels::write_ptx_dir("sm_90", &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.len(), ernie_kernels::ModuleId::ALL.len());
    for id in ernie_kernels::ModuleId::ALL {
        let path = ernie_kernels::module::ptx_path(&dir, id, "sm_90");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!text.contains('\0'), "{}: NUL in PTX text", path.display());
        assert!(
            ptx_version(&text).is_some_and(|v| v <= MAX_PTX_VERSION),
            "{}",
            path.display()
        );
        for name in id.kernel_names() {
            assert!(
                text.contains(&format!(".entry {name}(")),
                "{name} missing from {}",
                path.display()
            );
        }
    }
}

//! Writes the PTX of every kernel module for one or more archs, for a GPU machine that has a
//! driver but no libnvrtc (`Kernels::new` loads it when `ERNIE_KERNELS_PTX_DIR` names the folder).
//!
//! ```text
//! eval "$(scripts/cuda-toolchain.sh)"      # the pinned CUDA 13.0 NVRTC
//! cargo run -p ernie-kernels --example dump_ptx -- OUT_DIR sm_90 [sm_80 ...]
//! ```
//! Writes `OUT_DIR/<arch>/<module>.ptx` through the same NVRTC path and options as `Kernels::new`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: dump_ptx OUT_DIR ARCH [ARCH ...]   (e.g. dump_ptx ptx sm_90)");
        return ExitCode::FAILURE;
    };
    let archs: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    if archs.is_empty() {
        eprintln!("dump_ptx: name at least one arch, e.g. sm_90");
        return ExitCode::FAILURE;
    }
    for arch in &archs {
        match ernie_kernels::write_ptx_dir(arch, &dir) {
            Ok(files) => {
                for f in files {
                    let bytes = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                    println!("{} ({bytes} bytes)", f.display());
                }
            }
            Err(e) => {
                eprintln!("dump_ptx: {arch}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

//! Build script. Without the `host-emu` feature it only registers the CUDA sources for rebuilds
//! (they are embedded with include_str!, which cargo already tracks) and compiles nothing: plain
//! `cargo build` needs no C++ compiler and no CUDA.
//!
//! With `host-emu`, it compiles cuda/host_emu_entry.cpp (which #includes the kernel .cu files)
//! with the host C++ compiler into a static library for tests/host_emu.rs.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=cuda");
    #[cfg(feature = "host-emu")]
    host_emu();
}

#[cfg(feature = "host-emu")]
fn host_emu() {
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("cuda/host_emu_entry.cpp")
        .include("cuda")
        .opt_level(2)
        // The kernels reinterpret bf16 arrays as uint4 / u32 as CUDA code does; keep g++ from
        // exploiting strict aliasing on that.
        .flag("-fno-strict-aliasing")
        // `#pragma unroll` is an nvcc/NVRTC pragma; g++ ignores it.
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-unused-parameter")
        .compile("ernie_kernels_host_emu");
}

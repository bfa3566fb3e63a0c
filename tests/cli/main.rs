//! The `ernie` binary end to end: `caption`, `generate` (devices, errors), `inspect`, `serve`.
//!
//! One test binary per group (each module was its own binary before): on 2 cores, linking the
//! runtime into fewer binaries is most of the saving. Run one module with
//! `cargo test --test cli <module>::`.

#[path = "../common/mod.rs"]
mod common;

mod caption_cli;
mod codec_cli;
mod caption_template_cli;
mod device_cli;
mod ernie5_demo_cli;
mod generate_cli;
mod gguf_cli;
mod generate_image_cli;
mod inspect_cli;
mod server;
mod server_vl;
mod spm_cli;
mod speech_cli;

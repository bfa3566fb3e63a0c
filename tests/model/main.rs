//! Whole models against the committed transformers fixtures: loading, text and VL parity, malformed input, MTP and elastic options, embeddings, the Mimi audio codec and the image decoder.
//!
//! One test binary per group (each module was its own binary before): on 2 cores, linking the
//! runtime into fewer binaries is most of the saving. Run one module with
//! `cargo test --test model <module>::`.

#[path = "../common/mod.rs"]
mod common;

mod audio_codec;
mod loader;
mod text_parity;
mod vl_parity;
mod vl_robustness;
mod elastic_mtp;
mod embed;
mod nfsp;
mod audio_ncp;
mod vision_decoder;
mod quant;
mod gguf;
mod embed_media;
mod bf16_activations;

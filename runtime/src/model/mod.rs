//! Networks that read top to bottom, built from `nn/` layers: the decoder (`decoder.rs`), the MTP
//! draft head (`mtp.rs`), the vision tower and resampler (`vision/`), their checkpoint loading
//! (`load.rs`, `moe.rs`, every spelling in `names.rs`; `ernie5.rs` for an ERNIE 5.0 checkpoint's
//! parts), elastic sub-model selection
//! (`elastic.rs`), and the decoder's GPU mirror (`cuda/`, a stub without the `cuda` feature).

pub mod audio_codec;
pub mod audio_lm;
pub mod decoder;
pub mod elastic;
pub mod ernie5;
pub mod gguf_load;
pub mod load;
pub mod moe;
pub mod mtp;
pub mod names;
pub mod precision;
pub mod quantize;
pub mod vision;
pub mod vision_decoder;
pub mod visual_gen;

// The decoder's GPU mirror; without the `cuda` feature a stub with the same names.
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
// Compiled (and its tests run) in a `cuda` build's unit tests too: see `backend/mod.rs`.
#[cfg(all(test, feature = "cuda"))]
#[path = "cuda_stub.rs"]
mod cuda_stub;

pub use decoder::{Layer, Logits, Mlp, Rows, Transformer};
pub use load::{load, load_text_model, load_vl_model};

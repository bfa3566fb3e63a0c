//! The decoder's GPU mirror (feature `cuda`): the CPU [`crate::model::Transformer`] uploaded once
//! and run with the ops of `backend::cuda`. Each file here depends on its CPU twin (`nn/`,
//! `model/decoder.rs`), never the reverse.
//!
//! - [`layers`]: attention, SwiGLU and MoE blocks uploaded from their CPU structs.
//! - [`CudaModel`] / [`CudaKvCache`]: the whole forward (embedding → layers → norm → head) with
//!   the KV cache in device memory, returning f32 logits to the host.
//!
//! Numerics: weights and activations bf16 (the CPU weights are converted once at upload), every
//! reduction and GEMM accumulates in f32, the residual stream is bf16, the router multiplies in
//! f32 with f32 weights, and the head writes f32.
//!
//! Without the feature, `model/cuda_stub.rs` provides the names used outside this module.

pub mod layers;
mod model;

pub use model::{CudaKvCache, CudaModel};

//! Layers built on `ops/`, each holding its weights and a `forward` on `Vec<f32>` activations:
//! the one projection [`linear::Linear`], [`norm`] (RMSNorm, LayerNorm), the SwiGLU [`mlp`],
//! grouped-query [`attention`] over the [`kv_cache`], the sparse [`moe`] layers, and the opt-in
//! [`trace`] of named intermediates. Nothing here knows a whole model or a checkpoint layout
//! beyond the one spelling each layer reads (`model/` owns the rest).

pub mod attention;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod trace;

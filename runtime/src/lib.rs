//! `ernie-runtime`: runs ERNIE 4.5 checkpoints (dense and MoE) in Hugging Face layout on CPU,
//! matching transformers (spec: `shared/spec/ernie-architecture.md` §2).
//!
//! The pieces, in forward order: [`config`] (config.json) → [`weights`] (mmapped safetensors) →
//! [`model::Transformer`] (embedding, [`attention`] with the [`kv_cache`], dense FFN or [`moe`]
//! block, final norm, head) → [`decode`] (sampling, stop rules) → [`Engine`].

pub mod attention;
pub mod config;
pub mod decode;
pub mod engine;
mod error;
pub mod kv_cache;
pub mod model;
pub mod moe;
pub mod ops;
pub mod tensor;
pub mod trace;
pub mod weights;

pub use config::{MlpKind, ModelType, MoeConfig, TextConfig};
pub use decode::{Sampler, SamplingParams, StopReason};
pub use engine::{Engine, GenerateRequest, Generation, Prompt};
pub use error::{Error, Result};
pub use kv_cache::KvCache;
pub use model::{Logits, Transformer};
pub use tensor::{DType, Tensor};
pub use weights::Weights;

//! `ernie-runtime`: runs ERNIE 4.5 checkpoints (dense and MoE) in Hugging Face layout on CPU,
//! matching transformers (spec: `shared/spec/ernie-architecture.md` §2).
//!
//! The pieces, in forward order: [`config`] (config.json) → [`weights`] (mmapped safetensors) →
//! [`model::Transformer`] (embedding, [`attention`] with the [`kv_cache`], dense FFN or [`moe`]
//! block, final norm, head) → [`decode`] (sampling, stop rules) → [`Engine`] (generation, step-wise
//! through [`generator`], and embeddings through [`embed`]).

pub mod attention;
pub mod config;
// The CUDA backend; without the `cuda` feature a stub with the same names (CudaNotCompiled).
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
pub mod decode;
pub mod device;
pub mod elastic;
pub mod embed;
pub mod engine;
mod error;
pub mod generator;
pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod ops;
pub mod speculative;
pub mod tensor;
pub mod trace;
pub mod vl;
pub mod weights;
pub mod demo;
pub mod routing_stats;

pub use config::{MlpKind, ModelType, MoeConfig, TextConfig};
pub use decode::{Sampler, SamplingParams, StopReason};
pub use device::{Device, DeviceCache, DeviceSpec};
pub use elastic::{ElasticOptions, ExpertSpec, LayerSpec};
pub use embed::{EmbedInput, EmbedOptions, Embedding, Media, Pooling};
pub use engine::{Engine, GenerateRequest, Generation, Prompt};
pub use error::{Error, Result};
pub use generator::{Generator, Step};
pub use kv_cache::KvCache;
pub use speculative::{DraftMode, DraftStats};
pub use model::{Logits, Transformer};
pub use tensor::{DType, Tensor};
pub use vl::engine::MediaInput;
pub use vl::{PrefillTrace, VlConfig};
pub use weights::Weights;
pub use demo::{default_cache_dir, ensure_demo_checkpoint, DEMO_NAME};
pub use routing_stats::RoutingStats;

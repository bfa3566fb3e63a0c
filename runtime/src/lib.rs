//! `ernie-runtime`: runs ERNIE 4.5 checkpoints (dense, MoE and VL) in Hugging Face layout on the
//! CPU, and text checkpoints on CUDA, matching transformers (spec:
//! `shared/spec/ernie-architecture.md` §2). `docs/architecture.md` is the map.
//!
//! The layers, each importing only from those before it:
//!
//! ```text
//! error io tensor weights config   base: errors, JSON, weight tensors, mmapped safetensors, config.json
//! ops                               CPU math on slices
//! backend                           Device / DeviceSpec, CUDA plumbing (a stub without `cuda`)
//! nn                                layers on ops: Linear, norms, MLP, attention, KV cache, MoE, trace
//! model                             networks: decoder, MTP head, vision, loading, elastic, GPU mirror
//! infer                             one request: runner, sampling + stop rule, generator, prefill, speculative
//! engine                            the Engine facade
//! tools                             routing statistics, the demo checkpoint
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod engine;
mod error;
pub mod gguf;
pub mod infer;
pub mod io;
pub mod model;
pub mod nn;
pub mod ops;
pub mod tensor;
#[cfg(test)]
mod test_util;
pub mod tools;
pub mod weights;

// The facade, in the order a caller meets it: the engine and its requests, what they return,
// devices, loading options, then the lower-level types tests and tools reach for.
pub use engine::{Engine, Prompt};
pub use infer::{GenerateRequest, Generation, Generator, SamplingParams, Step, StopReason};
pub use engine::{EmbedInput, EmbedOptions, Embedding, Media, MediaInput, StreamOptions};
pub use infer::pool::Pooling;
pub use infer::prefill::PrefillTrace;
pub use infer::speculative::{DraftMode, DraftStats};
pub use error::{Error, Result};
pub use backend::{Device, DeviceSpec};
pub use infer::{DeviceCache, Runner, Sampler, StopMatcher, StopRule};
pub use model::elastic::{ElasticOptions, ExpertSpec, LayerSpec};
pub use model::quantize::QuantScheme;
pub use config::{MlpKind, ModelConfig, ModelType, MoeConfig, TextConfig, VlConfig};
pub use model::{Logits, Transformer};
pub use nn::kv_cache::KvCache;
pub use infer::next_codec::{AudioCodes, AudioGenOptions};
pub use tensor::{DType, Tensor};
pub use weights::{set_prefault, Weights};
pub use tools::demo::{default_cache_dir, ensure_demo_checkpoint, DEMO_NAME};
pub use tools::routing_stats::RoutingStats;

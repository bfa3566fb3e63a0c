//! Tools built on the engine for the binaries: llama-bench-style timings ([`bench`]), per-layer
//! expert load by modality
//! ([`routing_stats`]: collection, JSON, heatmap PNG) and the built-in demo checkpoint ([`demo`]).

pub mod bench;
pub mod codec;
pub mod demo;
pub mod gguf_export;
pub mod routing_stats;

//! Tools built on the engine for the binaries: per-layer expert load by modality
//! ([`routing_stats`]: collection, JSON, heatmap PNG) and the built-in demo checkpoint ([`demo`]).

pub mod codec;
pub mod demo;
pub mod gguf_export;
pub mod routing_stats;

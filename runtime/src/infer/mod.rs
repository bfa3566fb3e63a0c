//! One request on a loaded model, never naming the engine: the [`Runner`] (the decoder on its
//! device, `runner.rs`, the only match on the device), sampling and the stop rule
//! (`sample.rs`), the step-wise decode loop (`generator.rs`), the multimodal prefill
//! (`prefill.rs`), speculative decoding with the MTP head (`speculative.rs`) and embedding pooling
//! (`pool.rs`).

pub mod generator;
pub mod next_scale;
pub mod next_codec;
pub mod pool;
pub mod prefill;
pub mod runner;
pub mod sample;
pub mod speculative;

pub use generator::{generate, GenerateRequest, Generation, Generator, Session, Step};
pub use runner::{DeviceCache, Runner};
pub use sample::{argmax, Sampler, SamplingParams, StopMatcher, StopReason, StopRule};

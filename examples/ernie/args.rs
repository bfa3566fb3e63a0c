//! Argument groups shared by the generating subcommands (`generate`, `caption`).

use ernie_runtime::{GenerateRequest, SamplingParams};

/// Token budget and sampling, flattened into a subcommand's arguments.
#[derive(clap::Args)]
pub struct Sampling {
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep the k most likely tokens when sampling (0 = all).
    #[arg(long, default_value_t = 0)]
    pub sample_top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Sampling {
    /// The runtime request these arguments describe.
    pub fn request(&self) -> GenerateRequest {
        GenerateRequest {
            sampling: SamplingParams { temperature: self.temperature, top_k: self.sample_top_k, top_p: self.top_p, seed: self.seed },
            max_new_tokens: self.max_tokens,
        }
    }
}

/// Output format of a generating subcommand.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Stream the text to stdout as it is generated.
    Text,
    /// One JSON object at the end.
    Json,
}

//! Argument groups shared by the generating subcommands (`generate`, `caption`).

use ernie_runtime::{GenerateRequest, SamplingParams};

/// Token budget and sampling, flattened into a subcommand's arguments.
#[derive(clap::Args)]
pub struct Sampling {
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy. Default 0 (greedy); 1 for an image (`--output x.png`).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens when sampling (0 = all).
    #[arg(long, default_value_t = 0)]
    pub sample_top_k: usize,
    /// Nucleus sampling threshold (1 = off). Default 1; 0.97 for an image (`--output x.png`).
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Text defaults of the flags left out: greedy, no nucleus cut.
const TEXT_TEMPERATURE: f32 = 0.0;
const TEXT_TOP_P: f32 = 1.0;

impl Sampling {
    /// The runtime request these arguments describe (text and speech: the flags left out are
    /// greedy, top-p 1).
    pub fn request(&self) -> GenerateRequest {
        let (temperature, top_p) = (self.temperature.unwrap_or(TEXT_TEMPERATURE), self.top_p.unwrap_or(TEXT_TOP_P));
        GenerateRequest { sampling: SamplingParams { temperature, top_k: self.sample_top_k, top_p, seed: self.seed }, max_new_tokens: self.max_tokens }
    }

    /// `(temperature, top_p)` for image generation: the flags given win; the ones left out take
    /// the image defaults `defaults` (`ImageGenOptions::default()`: Infinity's 1 and 0.97, as the
    /// server's `/v1/images/generations`).
    pub fn image(&self, defaults: (f32, f32)) -> (f32, f32) {
        (self.temperature.unwrap_or(defaults.0), self.top_p.unwrap_or(defaults.1))
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

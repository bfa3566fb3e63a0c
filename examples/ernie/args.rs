//! Argument groups shared by the subcommands (`generate`, `caption`, `bench`, `serve`).

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

/// Whether mapped weights are populated at load (`--prefault`). Off by default: measured on the
/// benchmark checkpoint (README, Benchmarks), populating every taken tensor made a 20-token
/// prompt's first token slower (0.86 s vs 0.64 s from process start) and doubled peak RSS, since
/// a short prompt touches only the experts it routes to; `on` suits servers that will touch
/// everything anyway.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Prefault {
    /// On unless the weights are quantised at load (their 16-bit source is read once and
    /// dropped) or the checkpoint's safetensors exceed 80 % of this machine's memory.
    Auto,
    /// Always populate the tensors the model takes.
    On,
    /// Fault pages in lazily during the first tokens.
    Off,
}

impl Prefault {
    /// Sets the runtime's process-wide switch ([`ernie_runtime::set_prefault`]) for loading
    /// `model`, quantised at load when `quantised`.
    pub fn apply(self, model: &std::path::Path, quantised: bool) {
        let on = match self {
            Prefault::On => true,
            Prefault::Off => false,
            Prefault::Auto => !quantised && checkpoint_bytes(model).is_some_and(|b| mem_total_bytes().is_some_and(|m| b <= m / 5 * 4)),
        };
        ernie_runtime::set_prefault(on);
    }
}

/// Total size of the `*.safetensors` files in `dir` (None when unreadable).
fn checkpoint_bytes(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        if e.path().extension().is_some_and(|x| x == "safetensors") {
            total += e.metadata().ok()?.len();
        }
    }
    Some(total)
}

/// `MemTotal` from /proc/meminfo in bytes (None off Linux).
fn mem_total_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// `--bf16-activations`: the CPU prefill GEMMs of bf16 weights round their activations to bf16
/// (`vdpbf16ps`, AVX-512 BF16 CPUs; elsewhere the exact kernel runs). Shared by `generate`,
/// `caption`, `bench` and `serve`.
#[derive(clap::Args, Clone, Copy)]
pub struct Kernels {
    /// Round the activations of bf16-weight prefill GEMMs to bf16 (`vdpbf16ps` on AVX-512 BF16
    /// CPUs; per-product error ≤ 2⁻⁸ relative; decode and quantised weights stay exact). Faster
    /// only where `vdpbf16ps` runs at full rate (on Intel Xeons without AMX it is slower: see
    /// `ernie bench`). Off by default.
    #[arg(long)]
    pub bf16_activations: bool,
}

impl Kernels {
    /// The precision the flag asks for.
    pub fn precision(self) -> ernie_runtime::ops::gemm::Precision {
        use ernie_runtime::ops::gemm::Precision;
        if self.bf16_activations {
            Precision::Bf16Activations
        } else {
            Precision::Exact
        }
    }

    /// Sets `engine`'s GEMM precision; returns the kernel its prefill GEMMs now run.
    pub fn apply(self, engine: &mut ernie_runtime::Engine) -> ernie_runtime::ops::gemm::Kernel {
        engine.set_precision(self.precision())
    }
}

//! `ernie`: the command-line front end. Each subcommand parses its arguments, calls the runtime's
//! `Engine`, and prints; no model logic lives here.

mod args;
mod bench;
mod caption;
mod caption_audio;
mod codec;
mod speech;
mod generate;
mod generate_image;
mod inspect;
mod quantize;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ernie", version, about = "Run ERNIE 4.5 and ERNIE-4.5-VL checkpoints (Hugging Face layout) on CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time prefill (pp) and decode (tg) like llama-bench, plus load and first-token latency.
    Bench(bench::Args),
    /// Caption images and videos with an ERNIE-4.5-VL checkpoint (or the built-in demo one).
    Caption(caption::Args),
    /// Audio ↔ Mimi codes (encode / decode WAV), latents and BSQ bits → PNG.
    Codec(codec::Args),
    /// Generate text from a prompt with a text checkpoint (dense or MoE).
    Generate(generate::Args),
    /// Serve the OpenAI-compatible HTTP API (embeddings, chat completions) on loopback.
    Serve(serve::Args),
    /// Show what the model will see: the token stream, media sizes, grids, positions, statistics.
    Inspect(inspect::Args),
    /// Write a text checkpoint as a quantised GGUF file (llama.cpp's layout) for `generate --model FILE.gguf`.
    Quantize(quantize::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Caption(args) => caption::run(args),
        Command::Codec(args) => codec::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Quantize(args) => quantize::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Peak resident set size of this process (`VmHWM` in /proc/self/status), KiB; None off Linux.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The flag that sets a runtime option: the library names options (`top_k`), the user typed
/// `--top-k`.
fn flag_of(option: &str) -> String {
    format!("--{}", option.replace('_', "-"))
}

/// One cause's text, with runtime option names given as this binary's flags.
fn cause_text(cause: &(dyn std::error::Error + 'static)) -> String {
    match cause.downcast_ref::<ernie_runtime::Error>() {
        Some(ernie_runtime::Error::InvalidOption { option, reason }) => format!("{}: {reason}", flag_of(option)),
        _ => cause.to_string(),
    }
}

/// One clear line: the error and its causes, joined with ": ", skipping a cause whose text the
/// line already holds (the runtime's errors print their source inside their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause_text(cause).replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

//! `ernie`: the command-line front end. Each subcommand parses its arguments, calls the runtime's
//! `Engine`, and prints; no model logic lives here.

mod generate;
mod inspect;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ernie", version, about = "Run ERNIE 4.5 checkpoints (Hugging Face layout) on CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt with a text checkpoint (dense or MoE).
    Generate(generate::Args),
    /// Serve the OpenAI-compatible HTTP API (embeddings, chat completions) on loopback.
    Serve(serve::Args),
    /// Show what the model will see: the token stream, media sizes, grids, positions, statistics.
    Inspect(inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes, joined.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

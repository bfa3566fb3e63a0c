//! `ernie generate --model DIR --prompt TEXT`: chat-templated (unless `--raw`) text generation,
//! streamed to stdout; `--format json` prints one object with the generated ids and text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ernie_runtime::{Engine, GenerateRequest, Prompt, SamplingParams};
use tokenizers_mm::ChatMessage;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory in Hugging Face layout (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The user's message (or the whole prompt with --raw).
    #[arg(long)]
    prompt: String,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens when sampling (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the prompt text as is: no chat template, special-token text allowed.
    #[arg(long)]
    raw: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> Result<()> {
    let engine = Engine::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let prompt = if args.raw {
        Prompt::Raw(args.prompt.clone())
    } else {
        Prompt::Chat(vec![ChatMessage { role: "user".into(), content: args.prompt.clone() }])
    };
    let ids = engine.encode_prompt(&prompt)?;
    let req = GenerateRequest {
        sampling: SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed },
        max_new_tokens: args.max_tokens,
    };
    let stream = matches!(args.format, Format::Text);
    let mut stdout = std::io::stdout().lock();
    let gen = engine.generate(&ids, &req, &mut |s| {
        if stream {
            // A closed pipe is not worth aborting generation for; the exit code reports success.
            let _ = stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush());
        }
    })?;
    if stream {
        writeln!(stdout)?;
    } else {
        let out = serde_json::json!({ "token_ids": gen.token_ids, "text": gen.text });
        writeln!(stdout, "{out}")?;
    }
    let n = gen.token_ids.len();
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tok/s); decode: {} tokens in {:.3} s ({:.1} tok/s)",
        gen.prompt_tokens,
        gen.prefill_secs,
        gen.prompt_tokens as f64 / gen.prefill_secs.max(1e-9),
        n,
        gen.decode_secs,
        n.saturating_sub(1) as f64 / gen.decode_secs.max(1e-9),
    );
    Ok(())
}

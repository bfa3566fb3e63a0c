//! `ernie quantize --model DIR --out FILE.gguf --type q8_0|q4_k|q4_k_m`: writes a safetensors ERNIE
//! 4.5 text checkpoint as a GGUF file in llama.cpp's layout (`tools::gguf_export`), tensor by
//! tensor, so later `ernie generate --model FILE.gguf` (or llama.cpp) maps it instead of
//! quantising at load.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ernie_runtime::tools::gguf_export::export_gguf;
use ernie_runtime::QuantScheme;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (config.json, safetensors, tokenizer.model, tokenizer_config.json).
    #[arg(long)]
    model: PathBuf,
    /// The GGUF file to write (replaced if it exists; written under a temporary name first).
    #[arg(long)]
    out: PathBuf,
    /// Block formats: q8_0, q4_k, or q4_k_m (llama.cpp's mix: Q4_K, Q6_K for the head and some
    /// attn_v / ffn_down).
    #[arg(long = "type")]
    qtype: QuantScheme,
}

pub fn run(args: Args) -> Result<()> {
    let t = std::time::Instant::now();
    let r = export_gguf(&args.model, &args.out, args.qtype).with_context(|| format!("writing {} from {}", args.out.display(), args.model.display()))?;
    eprintln!(
        "wrote {}: {} tensors ({} quantised, {}), {:.1} MiB in {:.1} s{}",
        args.out.display(),
        r.tensors,
        r.quantised,
        args.qtype,
        r.bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64(),
        if r.dropped.is_empty() { String::new() } else { format!("; left out {} (MTP / tied head), as llama.cpp's converter does", r.dropped.len()) },
    );
    Ok(())
}

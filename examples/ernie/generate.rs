//! `ernie generate --model DIR --prompt TEXT`: chat-templated (unless `--raw`) text generation,
//! streamed to stdout; `--format json` prints one object with the generated ids and text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use ernie_runtime::{Device, DeviceSpec, DraftMode, ElasticOptions, Engine, ExpertSpec, LayerSpec, Prompt, QuantScheme};
use tokenizers_mm::ChatMessage;

use crate::args::{Format, Kernels, Prefault, Sampling};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory in Hugging Face layout (config.json, *.safetensors, tokenizer.json).
    /// Required for text; with --output x.png / x.wav the default is the built-in ERNIE 5.0 demo
    /// checkpoint (random weights: the image and the speech are noise).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The user's message (or the whole prompt with --raw).
    #[arg(long)]
    prompt: String,
    #[command(flatten)]
    sampling: Sampling,
    /// Use the prompt text as is: no chat template, special-token text allowed.
    #[arg(long)]
    raw: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// MTP self-speculative decoding: tokens drafted per step. "auto" drafts 1 when the checkpoint
    /// ships an MTP head and stops once fewer than 30% of 16+ drafts were accepted; 0 is off.
    #[arg(long, default_value = "auto")]
    draft_tokens: DraftMode,
    /// Elastic depth: keep these decoder layers ("0,1,4-27"), or this many ("21": drops evenly
    /// spaced middle layers, never the first or last two). Dropped layers are never read.
    #[arg(long)]
    layers: Option<LayerSpec>,
    /// Elastic width: experts kept in every MoE layer ("0-31"), or per layer ("1:0-31;2:0-15").
    /// Others get router logit -inf before the softmax and are never read.
    #[arg(long)]
    experts: Option<ExpertSpec>,
    /// Elastic sparsity: experts per token, overriding moe_k (weights renormalise over the k).
    #[arg(long)]
    top_k: Option<usize>,
    /// Where to run: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Weight-only quantisation at load (CPU only): q8_0, q4_k, or q4_k_m (llama.cpp's mix: Q4_K
    /// with Q6_K for the LM head and some attn_v / ffn_down).
    #[arg(long)]
    quant: Option<QuantScheme>,
    /// Populate the mapped weights at load instead of faulting them in during the first tokens.
    #[arg(long, value_enum, default_value_t = Prefault::Off)]
    prefault: Prefault,
    #[command(flatten)]
    kernels: Kernels,
    /// Generate media instead of text, the kind from the extension (.png: an image; .wav: speech, on an ERNIE 5.0
    /// checkpoint with audio parts and `audio_codec/`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Image generation: classifier-free guidance scale (1 = off).
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    cfg: f32,
    /// Image generation: size in pixels, WxH (default: the checkpoint's size).
    #[arg(long)]
    size: Option<String>,
    /// Image generation: write expert load per layer (prompt as text, generated image tokens as
    /// `image_gen`) as JSON at PATH and a heatmap beside it (.png).
    #[arg(long)]
    routing_stats: Option<PathBuf>,
    /// Image generation: read the image decoder from this folder (a diffusers AutoencoderKL whose
    /// latent_channels equals the model's bits) instead of the checkpoint's vision_decoder/.
    #[arg(long)]
    vision_decoder: Option<PathBuf>,
    /// Speech: read the Mimi codec from this folder (a transformers Mimi checkpoint such as
    /// kyutai/mimi) instead of the checkpoint's audio_codec/.
    #[arg(long)]
    audio_codec: Option<PathBuf>,
    /// Longest audio to generate with `--output x.wav`, seconds (the model may end earlier).
    #[arg(long, default_value_t = 20.0)]
    max_seconds: f64,
}

/// What `--output` asks for, from its extension.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Png,
    Wav,
}

fn output_kind(out: &std::path::Path) -> Result<OutputKind> {
    match out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => Ok(OutputKind::Png),
        Some("wav") => Ok(OutputKind::Wav),
        _ => anyhow::bail!("--output {}: unknown output kind (use .png for an image or .wav for speech)", out.display()),
    }
}

pub fn run(args: Args) -> Result<()> {
    let kind = args.output.as_deref().map(output_kind).transpose()?;
    let model = match (&args.model, kind) {
        (Some(dir), _) => dir.clone(),
        (None, Some(OutputKind::Png)) => crate::caption::ernie5_demo_checkpoint("the image is noise")?,
        (None, Some(OutputKind::Wav)) => crate::caption::ernie5_demo_checkpoint("the speech is noise")?,
        (None, None) => anyhow::bail!("--model is required for text generation (without it, --output x.png / x.wav use the built-in ERNIE 5.0 demo)"),
    };
    if let (Some(out), Some(OutputKind::Png)) = (&args.output, kind) {
        let opts = crate::generate_image::CliImageOptions {
            cfg: args.cfg,
            size: args.size.as_deref(),
            routing_stats: args.routing_stats.as_deref(),
            vision_decoder: args.vision_decoder.as_deref(),
        };
        return crate::generate_image::run(&model, &args.prompt, out, &args.sampling, &opts);
    }
    if let (Some(q), DeviceSpec::Cuda(_)) = (args.quant, args.device) {
        let what = format!("--quant {q} with --device {}", args.device);
        return Err(ernie_runtime::Error::Unsupported { what, hint: "quantised weights run on the CPU: use --device cpu".into() }.into());
    }
    // Open the device first: a missing GPU or CUDA build fails before the weights are read.
    let device = Device::open(args.device).with_context(|| format!("opening device {}", args.device))?;
    args.prefault.apply(&model, args.quant.is_some());
    let elastic = ElasticOptions { layers: args.layers.clone(), experts: args.experts.clone(), top_k: args.top_k };
    let mut engine = Engine::load_quant(&model, &elastic, args.quant).with_context(|| format!("loading {}", model.display()))?;
    args.kernels.apply(&mut engine);
    engine.to_device(&device).with_context(|| format!("moving the model to {}", args.device))?;
    engine.set_external_parts(None, args.audio_codec.clone());
    let prompt = if args.raw {
        Prompt::Raw(args.prompt.clone())
    } else {
        Prompt::Chat(vec![ChatMessage { role: "user".into(), content: args.prompt.clone() }])
    };
    if let Some(out) = args.output.as_deref() {
        if crate::speech::is_wav(out) {
            return crate::speech::run(&engine, &prompt, out, args.max_seconds, &args.sampling, args.format);
        }
        anyhow::bail!("--output {}: unknown output type (use .wav for speech)", out.display());
    }
    let ids = engine.encode_prompt(&prompt)?;
    let req = args.sampling.request();
    let stream = matches!(args.format, Format::Text);
    let mut stdout = std::io::stdout().lock();
    let (gen, drafts) = engine.generate_speculative(&ids, &req, args.draft_tokens, &mut |s| {
        if stream {
            // A closed pipe is not worth aborting generation for; the exit code reports success.
            let _ = stdout.write_all(s.as_bytes()).and_then(|_| stdout.flush());
        }
    })?;
    if stream {
        writeln!(stdout)?;
    } else {
        let accepted = (drafts.drafted > 0).then(|| drafts.accepted_fraction());
        let out = serde_json::json!({ "token_ids": gen.token_ids, "text": gen.text, "accepted_draft_fraction": accepted });
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
    if drafts.drafted > 0 {
        eprintln!("MTP drafts: {} accepted of {} ({:.0}%)", drafts.accepted, drafts.drafted, 100.0 * drafts.accepted_fraction());
    }
    if let Some(kib) = crate::peak_rss_kib() {
        eprintln!("peak RSS: {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

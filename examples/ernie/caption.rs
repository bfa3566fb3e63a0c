//! `ernie caption [--model DIR] [--image F]... [--video F]... [--prompt TEXT]`: multimodal
//! captioning with an ERNIE-4.5-VL checkpoint, streamed to stdout. Without `--model` it uses the
//! built-in demo checkpoint (random weights, real tokenizer; created on first use in the cache
//! directory). `--routing-stats PATH` writes per-layer expert load by modality as JSON (PATH) and
//! a heatmap PNG (PATH with the extension `.png`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ernie_runtime::tools::demo::{default_cache_dir, ensure_demo_checkpoint, ensure_ernie5_demo_checkpoint};
use ernie_runtime::tools::routing_stats::RoutingStats;
use ernie_runtime::{ElasticOptions, Engine, LayerSpec, MediaInput, PrefillTrace, StreamOptions};
use indicatif::{ProgressBar, ProgressStyle};
use tokenizers_mm::StreamPrompt;

use crate::args::{Format, Kernels, Sampling};

#[derive(clap::Args)]
pub struct Args {
    /// ERNIE-4.5-VL checkpoint directory (Hugging Face 5.x or original layout). Default: the
    /// built-in demo checkpoint (random weights: the caption is gibberish by construction).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image to caption (repeatable; PNG, JPEG, WebP, GIF, BMP, TIFF).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A video to caption (repeatable; needs a build with `--features ffmpeg`, except GIFs).
    #[arg(long = "video")]
    videos: Vec<PathBuf>,
    /// An audio clip to caption (WAV, FLAC, MP3, …) with an ERNIE 5.0 checkpoint that has audio
    /// parts and `audio_codec/` (default: the built-in ERNIE 5.0 demo, random weights); alone,
    /// not with --image / --video.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// With --audio: read the Mimi codec from this folder (e.g. kyutai/mimi) instead of the
    /// checkpoint's audio_codec/.
    #[arg(long)]
    audio_codec: Option<PathBuf>,
    /// The instruction. `<image>` / `<video>` markers place the media inside it; without markers
    /// the media come first. Default: "Describe this image." / "Describe this video.".
    #[arg(long)]
    prompt: Option<String>,
    #[command(flatten)]
    sampling: Sampling,
    #[command(flatten)]
    kernels: Kernels,
    /// Output format: the caption streamed as text, or one JSON object at the end.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write per-layer expert load by modality (prompt and generated tokens) to this JSON file,
    /// and the experts × layers heatmap (one panel per modality) next to it as .png (a path
    /// ending in .png names the heatmap; the JSON then goes next to it as .json).
    #[arg(long)]
    routing_stats: Option<PathBuf>,
    /// Elastic depth: keep these decoder layers ("0,1,4-27") or this many.
    #[arg(long)]
    layers: Option<LayerSpec>,
    /// Elastic sparsity: experts per token in every routing group, overriding moe_k.
    #[arg(long)]
    top_k: Option<usize>,
    /// Pass `enable_thinking=True` to the checkpoint's chat template (the built-in format then
    /// opens a `<think>` block instead of the empty one).
    #[arg(long)]
    enable_thinking: bool,
}

pub fn run(args: Args) -> Result<()> {
    // Everything that can be checked before minutes of compute is checked first.
    let stats_paths = args.routing_stats.as_deref().map(routing_stats_paths).transpose()?;
    if stats_paths.is_some() && args.sampling.max_tokens == 0 {
        bail!("--routing-stats needs at least one token (--max-tokens 0 runs no forward pass)");
    }
    for image in &args.images {
        if looks_like_video(image) {
            bail!("{} looks like a video file; pass it with --video", image.display());
        }
    }
    if let Some(audio) = &args.audio {
        if !args.images.is_empty() || !args.videos.is_empty() {
            bail!("--audio cannot be mixed with --image / --video yet: caption the audio alone");
        }
        let model = match &args.model {
            Some(dir) => dir.clone(),
            None => ernie5_demo_checkpoint("the caption is gibberish")?,
        };
        return crate::caption_audio::run(&model, args.audio_codec.as_deref(), audio, args.prompt.as_deref(), &args.sampling, args.format);
    }
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => demo_checkpoint()?,
    };
    let progress = Progress::new();
    progress.stage("loading the checkpoint");
    let t0 = Instant::now();
    let elastic = ElasticOptions { layers: args.layers.clone(), experts: None, top_k: args.top_k };
    let mut engine = Engine::load_with(&model_dir, &elastic).with_context(|| match &args.model {
        Some(_) => format!("loading {}", model_dir.display()),
        None => format!("loading the demo checkpoint {} (delete that folder to rebuild it)", model_dir.display()),
    })?;
    args.kernels.apply(&mut engine);
    if !engine.is_multimodal() {
        bail!("{} is a text checkpoint; `ernie caption` needs ERNIE-4.5-VL (use `ernie generate` for text)", model_dir.display());
    }
    let load_secs = t0.elapsed().as_secs_f64();

    progress.stage("preprocessing media");
    let t1 = Instant::now();
    let inputs: Vec<MediaInput> =
        args.images.iter().cloned().map(MediaInput::Image).chain(args.videos.iter().cloned().map(MediaInput::Video)).collect();
    let media = engine.load_media(&inputs)?;
    let text = args.prompt.clone().unwrap_or_else(|| default_prompt(args.images.len(), args.videos.len()));
    let mut opts = StreamOptions::default();
    if args.enable_thinking {
        opts.template_kwargs.insert("enable_thinking".into(), serde_json::Value::Bool(true));
    }
    let stream = engine.build_stream_with(&StreamPrompt::user(&text, args.images.len(), args.videos.len(), 0), &opts, media)?;
    let prep_secs = t1.elapsed().as_secs_f64();

    progress.stage(&format!("prefill: vision encoder and {} prompt tokens", stream.input_ids.len()));
    let req = args.sampling.request();
    let mut keep = PrefillTrace::default();
    let want_stats = args.routing_stats.is_some();
    let mut gen = engine.start_generation_stream(&stream, &req, want_stats.then_some(&mut keep))?;
    if want_stats {
        gen.record_routing();
    }
    progress.decoding(args.sampling.max_tokens as u64);
    let streaming = args.format == Format::Text;
    let mut stdout = std::io::stdout().lock();
    // Load start → the first token sampled (JSON `timings`; scripts/bench-caption.sh).
    let mut first_token_secs = None;
    while let Some(step) = gen.step()? {
        first_token_secs.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        progress.inc();
        if streaming && !step.text.is_empty() {
            // A closed pipe is not worth aborting generation for.
            let _ = stdout.write_all(step.text.as_bytes()).and_then(|_| stdout.flush());
        }
    }
    progress.finish();
    let decode_routing = gen.take_routing();
    let out = gen.finish();
    // As while streaming, a reader that went away (`| head`) does not fail the run.
    let _ = if streaming {
        writeln!(stdout)
    } else {
        // Seconds; `prefill_secs` covers the vision tower and the decoder prefill.
        let timings = serde_json::json!({
            "load_secs": load_secs, "preprocess_secs": prep_secs, "prefill_secs": out.prefill_secs,
            "decode_secs": out.decode_secs, "first_token_secs": first_token_secs,
        });
        writeln!(stdout, "{}", serde_json::json!({ "token_ids": out.token_ids, "text": out.text, "prompt_tokens": out.prompt_tokens, "timings": timings }))
    };

    if let Some((json_path, png_path)) = &stats_paths {
        let stats = RoutingStats::collect(&engine.model, &stream, &keep.trace, &decode_routing);
        stats.write_json(json_path).with_context(|| format!("writing {}", json_path.display()))?;
        stats.write_heatmap_png(png_path).with_context(|| format!("writing {}", png_path.display()))?;
        eprintln!("routing stats: {} and {}", json_path.display(), png_path.display());
    }
    let n = out.token_ids.len();
    let prefill = if n == 0 {
        format!("prefill {} tokens: skipped (no tokens requested)", out.prompt_tokens)
    } else {
        format!("prefill {} tokens in {:.3} s ({:.1} tok/s)", out.prompt_tokens, out.prefill_secs, out.prompt_tokens as f64 / out.prefill_secs.max(1e-9))
    };
    eprintln!(
        "load {load_secs:.2} s; preprocess {prep_secs:.2} s; {prefill}; decode {n} tokens in {:.3} s ({:.1} tok/s); stop: {:?}",
        out.decode_secs,
        n.saturating_sub(1) as f64 / out.decode_secs.max(1e-9),
        out.stop,
    );
    if let Some(kib) = crate::peak_rss_kib() {
        eprintln!("peak RSS: {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

fn default_prompt(images: usize, videos: usize) -> String {
    match (images, videos) {
        (0, 0) => "Describe what you can do.".into(),
        (1, 0) => "Describe this image.".into(),
        (_, 0) => "Describe these images.".into(),
        (0, 1) => "Describe this video.".into(),
        (0, _) => "Describe these videos.".into(),
        _ => "Describe these images and videos.".into(),
    }
}

/// Where `--routing-stats PATH` writes: the JSON at PATH and the heatmap beside it as `.png`; a
/// PATH ending in `.png` names the heatmap and the JSON goes beside it as `.json`. The folder
/// must exist (checked before any compute).
pub(crate) fn routing_stats_paths(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let (json, png) = if is_png { (path.with_extension("json"), path.to_path_buf()) } else { (path.to_path_buf(), path.with_extension("png")) };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("--routing-stats {}: the folder {} does not exist", path.display(), dir.display());
    }
    if json.is_dir() || png.is_dir() {
        bail!("--routing-stats {}: a directory is in the way of {} / {}", path.display(), json.display(), png.display());
    }
    Ok((json, png))
}

/// Whether a file name has a common video extension (a likely `--image` / `--video` mix-up).
fn looks_like_video(path: &Path) -> bool {
    const VIDEO: [&str; 9] = ["mp4", "webm", "mkv", "mov", "avi", "m4v", "mpg", "mpeg", "ts"];
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| VIDEO.iter().any(|v| v.eq_ignore_ascii_case(e)))
}

/// The demo checkpoint, created on first use; says once, on stderr, what it is.
fn demo_checkpoint() -> Result<PathBuf> {
    let cache = default_cache_dir();
    let (dir, created) = ensure_demo_checkpoint(&cache).with_context(|| format!("creating the demo checkpoint under {}", cache.display()))?;
    if created {
        eprintln!("created the demo checkpoint at {}", dir.display());
    }
    eprintln!(
        "note: no --model given, so this runs the built-in demo checkpoint: the ERNIE-4.5-VL layout with seeded random \
         weights, so the caption is gibberish. For real captions pass --model /path/to/ERNIE-4.5-VL-28B-A3B-PT (a Hugging Face \
         checkpoint directory)."
    );
    Ok(dir)
}

/// The ERNIE 5.0 demo checkpoint (generation parts, image decoder, audio codec), created on first
/// use; says once, on stderr, what it is and that `outcome` (e.g. "the image is noise").
pub(crate) fn ernie5_demo_checkpoint(outcome: &str) -> Result<PathBuf> {
    let cache = default_cache_dir();
    let (dir, created) =
        ensure_ernie5_demo_checkpoint(&cache).with_context(|| format!("creating the ERNIE 5.0 demo checkpoint under {}", cache.display()))?;
    if created {
        eprintln!("created the ERNIE 5.0 demo checkpoint at {}", dir.display());
    }
    eprintln!(
        "note: no --model given, so this runs the built-in ERNIE 5.0 demo checkpoint (a small ernie5 model with an image \
         decoder and an audio codec) with seeded random weights, so {outcome}. For real output pass --model DIR: an ernie5 \
         checkpoint with vision_decoder/ and audio_codec/ inside."
    );
    Ok(dir)
}

/// A progress line on stderr, only when stderr is a terminal (indicatif).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress { bar }
    }

    fn stage(&self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(what.to_string());
        }
    }

    fn decoding(&self, max: u64) {
        if let Some(b) = &self.bar {
            b.set_length(max);
            b.set_position(0);
            b.set_style(ProgressStyle::with_template("{spinner} decoding {pos}/{len} tokens {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        }
    }

    fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

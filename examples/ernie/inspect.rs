//! `ernie inspect --model DIR [--image F]... [--video F]... [--audio F]... [--prompt TEXT] --format json`: what the model will
//! see and what it costs — per stream segment the kind, token count and position ranges, and for
//! media the source and resized sizes, `grid_thw`, per-channel mean / std of the normalised
//! tensor and its first 8 values. No model weights are loaded: only `tokenizer.json` and
//! `preprocessor_config.json` from DIR (or, for a GGUF file, its stored tokenizer). With
//! `--audio` and a Mimi codec (DIR's `audio_codec/`, or `--audio-codec`), each clip is also
//! encoded as an ERNIE 5.0 checkpoint takes it in (`audio_codes`: frames, levels, the tokens it
//! occupies, the first codes of each level).
//!
//! Media markers `<image>` (and `<video>`, `<audio>`) in the prompt place the inputs; without
//! markers the inputs go before the prompt text. Each modality adds its files in
//! [`load_media`]; everything else is shared.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokenizers_mm::audio::{preprocess_audio, AudioConfig, MelConfig};
use tokenizers_mm::image::{AlphaMode, ImageProcessor, ImageProcessorConfig};
use tokenizers_mm::video::{load_video, VideoConfig};
use ernie_runtime::engine::{stream_config_for, AUDIO_CODEC_DIR};
use ernie_runtime::model::audio_codec::MimiCodec;
use ernie_runtime::tools::codec::encode_audio_file;
use ernie_runtime::ModelConfig;
use tokenizers_mm::{Limits, MediaItem, MmChatTemplate, PositionRule, StreamPrompt, TextTokenizer, VideoPlaceholder};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (tokenizer.json, preprocessor_config.json).
    #[arg(long)]
    model: PathBuf,
    /// An image file (png, jpeg, webp, gif, bmp, tiff); repeat for several, in marker order.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// A video file (mp4, webm, mkv, mov with the `ffmpeg` feature; animated GIF always); repeat
    /// for several, in marker order.
    #[arg(long)]
    video: Vec<PathBuf>,
    /// An audio file (wav incl. RF64, flac, mp3, ogg/vorbis, m4a/aac); repeat for several.
    #[arg(long)]
    audio: Vec<PathBuf>,
    /// Encode --audio clips with the Mimi codec in this folder (default: DIR's audio_codec/ when
    /// it has one) and show the codes the model takes in.
    #[arg(long)]
    audio_codec: Option<PathBuf>,
    /// Sample videos at this many frames per second (default: the processor's, every frame
    /// within 16..=180).
    #[arg(long)]
    video_fps: Option<f64>,
    /// Do not draw the "time: HH:MM:SS.ss" stamp on video frames.
    #[arg(long)]
    no_timestamps: bool,
    /// Mel bins of the audio front end (Whisper: 80; large-v3: 128).
    #[arg(long, default_value_t = 80)]
    n_mels: usize,
    /// Audio tokens per second (ERNIE 5.0's codec: 12.5).
    #[arg(long, default_value_t = tokenizers_mm::audio::ERNIE5_AUDIO_TOKEN_RATE_HZ)]
    audio_token_rate: f64,
    /// Refuse audio clips longer than this many seconds.
    #[arg(long)]
    max_audio_seconds: Option<f64>,
    /// Refuse videos with more frames than this.
    #[arg(long)]
    max_video_frames: Option<u64>,
    /// The user's message; `<image>` marks where each image goes.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Use the prompt as is (trusted, special-token text parsed, no chat template).
    #[arg(long)]
    raw: bool,
    /// Position rule for the (t, h, w) ids. Default: the one `caption` uses for this checkpoint.
    #[arg(long, value_enum)]
    positions: Option<Rule>,
    /// Video placeholder id: HF's <|VIDEO_PLACEHOLDER|> or the original <|IMAGE_PLACEHOLDER|>.
    /// Default: the one `caption` uses for this checkpoint (from its config.json; HF without one).
    #[arg(long, value_enum)]
    video_placeholder: Option<VideoId>,
    /// Alpha handling: composite on white (HF processor on a PIL image) or drop (HF on a path).
    #[arg(long, value_enum, default_value_t = Alpha::Composite)]
    alpha: Alpha,
    /// Refuse images (and frames) with more pixels than this (checked from the header).
    #[arg(long)]
    max_image_pixels: Option<u64>,
    /// Refuse files larger than this many bytes.
    #[arg(long)]
    max_file_bytes: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Rule {
    #[value(name = "ernie45-vl")]
    Ernie45Vl,
    #[value(name = "ernie45-vl-hf")]
    Ernie45VlHf,
    #[value(name = "uni-rope")]
    UniRope,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VideoId {
    Hf,
    Original,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Alpha {
    Composite,
    Drop,
}

pub fn run(args: Args) -> Result<()> {
    let tok = if ernie_runtime::engine::is_gguf_file(&args.model) {
        // A GGUF file: its tokenizer.ggml.* vocabulary (the text stream only; no processors).
        let g = ernie_runtime::gguf::Gguf::open(&args.model)?;
        ernie_runtime::engine::gguf_tokenizer(&g)?.with_context(|| format!("{} stores no tokenizer", args.model.display()))?
    } else {
        TextTokenizer::from_dir(&args.model).with_context(|| format!("loading the tokenizer of {}", args.model.display()))?
    };
    let mut limits = Limits::default();
    if let Some(n) = args.max_image_pixels {
        limits.max_pixels = n;
    }
    if let Some(n) = args.max_file_bytes {
        limits.max_file_bytes = n;
    }
    if let Some(s) = args.max_audio_seconds {
        limits.max_audio_seconds = s;
    }
    if let Some(n) = args.max_video_frames {
        limits.max_video_frames = n;
    }
    let media = load_media(&args, &limits)?;
    let count = |k: tokenizers_mm::MediaKind| media.iter().filter(|m| m.kind == k).count();
    use tokenizers_mm::MediaKind::{Audio, Image, Video};
    let prompt = if args.raw {
        StreamPrompt::Raw(args.prompt.clone())
    } else {
        StreamPrompt::user(&args.prompt, count(Image), count(Video), count(Audio))
    };
    // The engine's stream layout for this checkpoint (no weights read), then the flags.
    let mut cfg = stream_config_for(&args.model).with_context(|| format!("reading the config of {}", args.model.display()))?;
    if let Some(rule) = args.positions {
        cfg.rule = match rule {
            Rule::Ernie45Vl => PositionRule::Ernie45Vl,
            Rule::Ernie45VlHf => PositionRule::Ernie45VlHf,
            Rule::UniRope => PositionRule::UniRope,
        };
    }
    if let Some(id) = args.video_placeholder {
        cfg.video_placeholder = match id {
            VideoId::Hf => VideoPlaceholder::Hf,
            VideoId::Original => VideoPlaceholder::Original,
        };
    }
    // The checkpoint's multimodal chat template, as the engine uses it (built-in format if none).
    let template = MmChatTemplate::from_dir(&args.model, &tok).with_context(|| format!("reading the chat template of {}", args.model.display()))?;
    let stream = template.build_stream(&tok, &prompt, &serde_json::Map::new(), media, &cfg)?;
    let mut report = stream.inspect_json();
    report["model"] = serde_json::json!(args.model.display().to_string());
    report["template"] = serde_json::json!(if args.raw { "none (--raw)".to_string() } else { template.source().to_string() });
    if let Some(codes) = audio_codes(&args)? {
        report["audio_codes"] = codes;
    }
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?).map_err(anyhow::Error::from),
        Format::Text => write_text(&mut out, &report),
    };
    match written {
        // `ernie inspect … | head` closing the pipe early is not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => Ok(()),
        other => other,
    }
}

/// Every media input, preprocessed, in the order the flags list them per kind.
fn load_media(args: &Args, limits: &Limits) -> Result<Vec<MediaItem>> {
    let mut media = Vec::new();
    if !args.image.is_empty() {
        let config = ImageProcessorConfig::from_dir(&args.model)
            .with_context(|| format!("reading the image processor config of {}", args.model.display()))?;
        let mut proc = ImageProcessor::new(config);
        proc.limits = *limits;
        proc.alpha = match args.alpha {
            Alpha::Composite => AlphaMode::CompositeOnWhite,
            Alpha::Drop => AlphaMode::Drop,
        };
        for path in &args.image {
            media.push(load_image(&proc, path)?);
        }
    }
    if !args.video.is_empty() {
        // The checkpoint's video processor settings (HF defaults when it has none), so the sizes
        // shown are what `caption` feeds the model; the flags override them.
        let mut cfg = VideoConfig::from_dir(&args.model)
            .with_context(|| format!("reading the video processor config of {}", args.model.display()))?;
        if args.no_timestamps {
            cfg.draw_timestamps = false;
        }
        if args.video_fps.is_some() {
            cfg.sampling.fps = args.video_fps;
        }
        for path in &args.video {
            let video = load_video(path, &cfg, limits)?; // its errors name the file
            media.push(video.into_media_item(&cfg)?);
        }
    }
    if !args.audio.is_empty() {
        let cfg = AudioConfig { mel: MelConfig::whisper(args.n_mels), token_rate_hz: args.audio_token_rate, ..AudioConfig::default() };
        for path in &args.audio {
            let audio = preprocess_audio(path, &cfg, limits)?;
            media.push(audio.into_media_item(&path.display().to_string()));
        }
    }
    Ok(media)
}

/// First codes shown per level.
const CODES_SHOWN: usize = 8;

/// Each `--audio` clip through the Mimi codec, as an ERNIE 5.0 checkpoint takes it in (spec
/// `ernie5-generation.md` §5.2: `<|BOA|>`, one row per frame summing its levels' embeddings,
/// `<|EOA|>`): the levels are the checkpoint's `audio.num_levels` (all of the codec's for a
/// checkpoint without an `audio` section). `None` without clips or without a codec.
fn audio_codes(args: &Args) -> Result<Option<serde_json::Value>> {
    let dir = args.audio_codec.clone().unwrap_or_else(|| args.model.join(AUDIO_CODEC_DIR));
    if args.audio.is_empty() || (args.audio_codec.is_none() && !dir.join("config.json").is_file()) {
        return Ok(None);
    }
    let codec = MimiCodec::load(&dir).with_context(|| format!("loading the audio codec {}", dir.display()))?;
    let levels = match ModelConfig::from_dir(&args.model) {
        Ok(ModelConfig::Ernie5(c)) => c.audio.map(|a| a.num_levels),
        _ => None,
    };
    let mut clips = Vec::new();
    for path in &args.audio {
        let codes = encode_audio_file(&codec, path, levels).with_context(|| format!("encoding {}", path.display()))?;
        let frames = codes.codes.first().map_or(0, Vec::len);
        let head: Vec<&[u32]> = codes.codes.iter().map(|l| &l[..l.len().min(CODES_SHOWN)]).collect();
        clips.push(serde_json::json!({
            "source": path.display().to_string(),
            "frames": frames,
            "levels": codes.codes.len(),
            "frame_rate": codes.frame_rate,
            "stream_tokens": frames + 2,
            "codes_head": head,
        }));
    }
    Ok(Some(serde_json::json!({ "codec": dir.display().to_string(), "clips": clips })))
}

fn load_image(proc: &ImageProcessor, path: &Path) -> Result<MediaItem> {
    Ok(proc.process_file(path)?.into_media_item())
}

/// A short human-readable rendering of the JSON report.
fn write_text(out: &mut impl Write, r: &serde_json::Value) -> Result<()> {
    writeln!(out, "template: {}", r["template"].as_str().unwrap_or(""))?;
    writeln!(out, "{} tokens, positions {} (next {})", r["n_tokens"], r["position_rule"].as_str().unwrap_or(""), r["next_position"])?;
    for (i, s) in r["segments"].as_array().into_iter().flatten().enumerate() {
        let pos = &s["positions"];
        write!(out, "#{i:<3} {:<6} {:>6} tokens  t {} h {} w {}", s["kind"].as_str().unwrap_or(""), s["n_tokens"], pos["t"], pos["h"], pos["w"])?;
        if s["kind"] != "text" {
            write!(out, "  {}  source {} resized {} grid_thw {}", s["source"].as_str().unwrap_or(""), s["source_size"], s["resized"], s["grid_thw"])?;
            write!(out, "\n      mean {} std {}", s["channel_mean"], s["channel_std"])?;
        }
        writeln!(out)?;
    }
    if let Some(codec) = r.get("audio_codes") {
        writeln!(out, "audio through the codec {}:", codec["codec"].as_str().unwrap_or(""))?;
        for c in codec["clips"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {}: {} frames x {} levels at {} frames/s = {} tokens with <|BOA|> / <|EOA|>; first codes {}",
                c["source"].as_str().unwrap_or(""),
                c["frames"],
                c["levels"],
                c["frame_rate"],
                c["stream_tokens"],
                c["codes_head"]
            )?;
        }
    }
    Ok(())
}

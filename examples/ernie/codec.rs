//! `ernie codec`: audio ↔ Mimi codes, and latents / BSQ bits → images, through
//! `ernie_runtime::tools::codec` (args → library → output).
//!
//! - `encode --codec DIR --audio FILE [--levels Q]` prints `{"codes", "frame_rate", "sample_rate"}`.
//! - `decode --codec DIR --codes FILE.json --out OUT.wav [--pcm16]` writes 24 kHz mono WAV.
//! - `decode --codec DIR --latent FILE.safetensors --out OUT.png` decodes tensor `latent`.
//! - `encode --codec DIR --image FILE --out bits.json [--scales 1x1,2x2,…]` and
//!   `decode --codec DIR --bits bits.json --out x.png [--reference FILE]` (PSNR on stderr).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ernie_runtime::model::audio_codec::MimiCodec;
use ernie_runtime::model::vision_decoder::VisionDecoder;
use ernie_runtime::tools::codec::image::{decode_bits, decode_latent_to_png, encode_image_bits, psnr_rgb8, read_rgb8, write_png, BitsJson};
use ernie_runtime::tools::codec::{decode_codes_to_wav, encode_audio_file, parse_codes, WavFormat};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Audio file → Mimi codes JSON (stdout or --out), or an image → multi-scale BSQ bits JSON.
    Encode(EncodeArgs),
    /// Codes JSON → WAV, a latent safetensors → PNG, or bits JSON → PNG.
    Decode(DecodeArgs),
}

/// Output format of `encode` (JSON only).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Json,
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// Codec directory: a Mimi checkpoint (with --audio) or a vision_decoder (with --image).
    #[arg(long)]
    codec: PathBuf,
    /// Audio file (WAV, FLAC, MP3, Ogg, M4A; any rate and channel count).
    #[arg(long, conflicts_with = "image", required_unless_present = "image")]
    audio: Option<PathBuf>,
    /// Image file to encode into BSQ bits (needs a checkpoint with an encoder).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Code levels to keep (default: all the codec has).
    #[arg(long, conflicts_with = "image")]
    levels: Option<usize>,
    /// BSQ scale schedule, coarse to fine, ending at the latent grid: "1x1,2x2,4x4".
    #[arg(long, conflicts_with = "audio")]
    scales: Option<String>,
    /// Write the JSON here instead of stdout (required with --image).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// Codec directory: a Mimi checkpoint (with --codes) or a vision_decoder (--latent, --bits).
    #[arg(long)]
    codec: PathBuf,
    /// Codes JSON from `ernie codec encode --audio`.
    #[arg(long, required_unless_present_any = ["latent", "bits"], conflicts_with_all = ["latent", "bits"])]
    codes: Option<PathBuf>,
    /// Safetensors file holding tensor `latent` [C, h, w] (f32).
    #[arg(long, conflicts_with = "bits")]
    latent: Option<PathBuf>,
    /// Bits JSON from `ernie codec encode --image`.
    #[arg(long)]
    bits: Option<PathBuf>,
    /// Output file: WAV for --codes, PNG otherwise.
    #[arg(long)]
    out: PathBuf,
    /// Write 16-bit PCM instead of 32-bit float.
    #[arg(long)]
    pcm16: bool,
    /// The original image, for the round trip's PSNR (default: the source stored in the bits).
    #[arg(long)]
    reference: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Encode(a) => encode(a),
        Command::Decode(a) => decode(a),
    }
}

fn load_mimi(dir: &Path) -> Result<MimiCodec> {
    MimiCodec::load(dir).with_context(|| format!("loading the audio codec {}", dir.display()))
}

fn load_vae(dir: &Path) -> Result<VisionDecoder> {
    VisionDecoder::load(dir).with_context(|| format!("loading the image decoder {}", dir.display()))
}

fn write_json(value: &impl serde::Serialize, out: Option<&Path>) -> Result<()> {
    let text = serde_json::to_string(value)?;
    match out {
        Some(p) => std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

/// "1x1,2x2" → [(1, 1), (2, 2)].
fn parse_scales(s: &str) -> Result<Vec<(usize, usize)>> {
    s.split(',')
        .map(|t| {
            let (h, w) = t.trim().split_once(['x', 'X']).with_context(|| format!("--scales: {t:?} is not HxW"))?;
            Ok((h.trim().parse().with_context(|| format!("--scales: {t:?}"))?, w.trim().parse().with_context(|| format!("--scales: {t:?}"))?))
        })
        .collect()
}

fn encode(a: EncodeArgs) -> Result<()> {
    let Format::Json = a.format;
    if let Some(image) = &a.image {
        let Some(out) = &a.out else { bail!("--out is required with --image") };
        let scales = a.scales.as_deref().map(parse_scales).transpose()?;
        let vae = load_vae(&a.codec)?;
        let bits = encode_image_bits(&vae, image, scales.as_deref()).with_context(|| format!("encoding {}", image.display()))?;
        return write_json(&bits, Some(out));
    }
    let Some(audio) = &a.audio else { bail!("give --audio FILE or --image FILE") };
    let codec = load_mimi(&a.codec)?;
    let t0 = Instant::now();
    let codes = encode_audio_file(&codec, audio, a.levels).map_err(|e| match e {
        ernie_runtime::Error::Request(m) if m.starts_with("codec levels") => anyhow::anyhow!("--levels: {m}"),
        e => anyhow::Error::new(e),
    });
    let codes = codes.with_context(|| format!("encoding {}", audio.display()))?;
    let frames = codes.codes.first().map_or(0, Vec::len);
    print_rtf("encode", frames as f64 / codes.frame_rate, t0.elapsed().as_secs_f64());
    write_json(&codes, a.out.as_deref())
}

/// The timing line scripts/bench-generation.sh reads: seconds of audio, wall seconds after
/// loading (file reading and writing included), and their ratio.
fn print_rtf(what: &str, audio_secs: f64, secs: f64) {
    eprintln!("{what}: {audio_secs:.2} s of audio in {secs:.3} s (real-time factor {:.3})", secs / audio_secs.max(f64::MIN_POSITIVE));
}

fn decode(a: DecodeArgs) -> Result<()> {
    if let Some(codes_path) = &a.codes {
        let codec = load_mimi(&a.codec)?;
        let text = std::fs::read_to_string(codes_path).with_context(|| format!("reading {}", codes_path.display()))?;
        let codes = parse_codes(&codec, &text, &codes_path.display().to_string())?;
        let format = if a.pcm16 { WavFormat::Pcm16 } else { WavFormat::F32 };
        let t0 = Instant::now();
        let n = decode_codes_to_wav(&codec, &codes, &a.out, format).with_context(|| format!("decoding {}", codes_path.display()))?;
        print_rtf("decode", n as f64 / codec.sample_rate() as f64, t0.elapsed().as_secs_f64());
        eprintln!("wrote {} ({n} samples, {:.2} s at {} Hz)", a.out.display(), n as f64 / codec.sample_rate() as f64, codec.sample_rate());
        return Ok(());
    }
    let vae = load_vae(&a.codec)?;
    let t0 = Instant::now();
    let img = if let Some(latent) = &a.latent {
        decode_latent_to_png(&vae, latent, &a.out).with_context(|| format!("decoding {}", latent.display()))?
    } else if let Some(bits_path) = &a.bits {
        let text = std::fs::read_to_string(bits_path).with_context(|| format!("reading {}", bits_path.display()))?;
        let bits: BitsJson = serde_json::from_str(&text).with_context(|| format!("{}: not bits JSON", bits_path.display()))?;
        let img = decode_bits(&vae, &bits).with_context(|| format!("decoding {}", bits_path.display()))?;
        write_png(&img, &a.out)?;
        if let Some(reference) = a.reference.as_ref().or(bits.source.as_ref()) {
            let r = read_rgb8(reference)?;
            match psnr_rgb8(&img, &r) {
                Ok(p) => eprintln!("round-trip PSNR vs {}: {p:.2} dB", reference.display()),
                Err(e) => eprintln!("no PSNR vs {}: {e}", reference.display()),
            }
        }
        img
    } else {
        bail!("give --codes, --latent or --bits");
    };
    eprintln!("wrote {} ({}×{} RGB) in {:.3} s after loading", a.out.display(), img.width, img.height, t0.elapsed().as_secs_f64());
    Ok(())
}

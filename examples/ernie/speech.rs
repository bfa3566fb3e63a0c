//! `ernie generate --output speech.wav`: text → speech on an ERNIE 5.0 checkpoint with audio
//! parts and `audio_codec/`; frames are decoded and written as they are generated
//! (`ernie_runtime::tools::codec::speech`). Progress on a terminal only; the real-time factor
//! and frames/s on stderr. `--format json` prints the generated codes.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use ernie_runtime::tools::codec::speech::{frames_for_seconds, generate_speech};
use ernie_runtime::{AudioGenOptions, Engine, Prompt};

use crate::args::{Format, Sampling};

/// Whether `out` asks for audio (a `.wav` extension, any case).
pub fn is_wav(out: &Path) -> bool {
    out.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Generates speech for `prompt` into `out`.
pub fn run(engine: &Engine, prompt: &Prompt, out: &Path, max_seconds: f64, sampling: &Sampling, format: Format) -> Result<()> {
    let codec = engine.load_audio_codec()?;
    let max_frames = frames_for_seconds(&codec, max_seconds).map_err(|e| anyhow::anyhow!("--max-seconds: {e}"))?;
    let opts = AudioGenOptions { sampling: sampling.request().sampling, max_frames, uniforms: None };
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?);
    let tty = std::io::stderr().is_terminal();
    let speech = generate_speech(engine, &codec, prompt, &opts, &mut file, out, &mut |n| {
        if tty {
            eprint!("\r{n}/{max_frames} frames");
        }
    })?;
    file.flush().with_context(|| format!("writing {}", out.display()))?;
    if tty {
        eprintln!();
    }
    if format == Format::Json {
        let v = serde_json::json!({ "codes": speech.codes.codes, "ended": speech.codes.ended, "samples": speech.samples, "sample_rate": speech.sample_rate });
        println!("{v}");
    }
    let frames = speech.codes.codes.first().map_or(0, Vec::len);
    eprintln!(
        "audio: {frames} frames, {:.2} s in {:.3} s (real-time factor {:.3}, {:.1} frames/s) → {}",
        speech.audio_secs(),
        speech.secs,
        speech.real_time_factor(),
        speech.frames_per_sec(),
        out.display()
    );
    Ok(())
}

//! `ernie caption --audio FILE [--prompt TEXT]` on an ERNIE 5.0 checkpoint with audio parts and
//! `audio_codec/`: file → decode / downmix / resample → Mimi encode (the model's `num_levels`
//! levels) → `Engine::start_audio_caption`, streamed to stdout (or one JSON object).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ernie_runtime::tools::codec::speech::encode_audio_for_model;
use ernie_runtime::Engine;

use crate::args::{Format, Sampling};

/// The instruction when `--prompt` is not given.
pub const DEFAULT_PROMPT: &str = "Describe this audio.";

/// Captions one audio clip; `codec` replaces the checkpoint's `audio_codec/` (`--audio-codec`).
pub fn run(model: &Path, codec: Option<&Path>, audio: &Path, prompt: Option<&str>, sampling: &Sampling, format: Format) -> Result<()> {
    let mut engine = Engine::load(model).with_context(|| format!("loading {}", model.display()))?;
    engine.set_external_parts(None, codec.map(Path::to_path_buf));
    let codec = engine.load_audio_codec()?;
    let codes = encode_audio_for_model(&engine, &codec, audio).with_context(|| format!("reading {}", audio.display()))?;
    let mut gen = engine.start_audio_caption(&codes, prompt.unwrap_or(DEFAULT_PROMPT), &sampling.request())?;
    let streaming = format == Format::Text;
    let mut stdout = std::io::stdout().lock();
    while let Some(step) = gen.step()? {
        if streaming && !step.text.is_empty() {
            // A closed pipe is not worth aborting generation for.
            let _ = stdout.write_all(step.text.as_bytes()).and_then(|_| stdout.flush());
        }
    }
    let out = gen.finish();
    let _ = if streaming {
        writeln!(stdout)
    } else {
        writeln!(stdout, "{}", serde_json::json!({ "token_ids": out.token_ids, "text": out.text }))
    };
    let n = out.token_ids.len();
    eprintln!(
        "audio: {} frames; prefill {} tokens in {:.3} s; decode {n} tokens in {:.3} s; stop: {:?}",
        codes.first().map_or(0, Vec::len),
        out.prompt_tokens,
        out.prefill_secs,
        out.decode_secs,
        out.stop
    );
    Ok(())
}

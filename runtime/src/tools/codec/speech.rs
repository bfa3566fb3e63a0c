//! Text → speech WAV (issue #14 items 4-5): [`Engine::generate_audio_codes_with`] hands each
//! frame's codes to the codec's streaming decoder ([`MimiCodec::decode_stream`]) and the samples
//! go to the WAV as they come. The length is unknown until level 0's end class (or the frame
//! budget) stops generation, so the header is written for zero samples and patched at the end.
//! `ernie generate --output x.wav` writes a file; the server's `/v1/audio/speech` a buffer.

use std::io::{Seek, SeekFrom, Write};
use std::time::Instant;

use super::wav::{header, WavFormat};
use crate::engine::{Engine, Prompt};
use crate::infer::next_codec::{AudioCodes, AudioGenOptions};
use crate::model::audio_codec::MimiCodec;
use crate::{Error, Result};

/// What one speech generation produced.
#[derive(Clone, Debug)]
pub struct Speech {
    /// The generated codes `[Q][frames]` and the loop's timings.
    pub codes: AudioCodes,
    /// Samples written (mono, [`MimiCodec::sample_rate`]).
    pub samples: usize,
    /// Sample rate of the WAV, Hz.
    pub sample_rate: usize,
    /// Wall time from the prompt's prefill to the last decoded sample, seconds.
    pub secs: f64,
}

impl Speech {
    /// Seconds of audio written.
    pub fn audio_secs(&self) -> f64 {
        self.samples as f64 / self.sample_rate.max(1) as f64
    }

    /// Real-time factor: wall seconds per second of audio (< 1 is faster than real time).
    pub fn real_time_factor(&self) -> f64 {
        self.secs / self.audio_secs().max(1e-9)
    }

    /// Code frames generated per wall second.
    pub fn frames_per_sec(&self) -> f64 {
        self.codes.codes.first().map_or(0, Vec::len) as f64 / self.secs.max(1e-9)
    }
}

/// Frames to generate for `seconds` of audio at the codec's frame rate (rounded up).
///
/// Errors ([`Error::Request`], naming `max_seconds`): a negative, non-finite or too long value
/// (over the codec's [`MimiCodec::max_frames`]).
pub fn frames_for_seconds(codec: &MimiCodec, seconds: f64) -> Result<usize> {
    let frames = (seconds * codec.frame_rate()).ceil();
    if !frames.is_finite() || frames < 1.0 || frames > codec.max_frames() as f64 {
        return Err(Error::Request(format!(
            "max_seconds {seconds} is out of range: 0 < max_seconds ≤ {:.1}",
            codec.max_frames() as f64 / codec.frame_rate()
        )));
    }
    Ok(frames as usize)
}

/// Generates speech for `prompt` into `out` as an f32 mono WAV, decoding each frame as it is
/// sampled; `on_frame(frames_so_far)` runs as each frame arrives (progress).
///
/// A codec whose config cannot stream is decoded whole at the end (same samples).
/// Errors: [`Engine::generate_audio_codes_with`]'s, the codec's decode errors, [`Error::Io`]
/// (reported as `what`) writing `out`.
pub fn generate_speech<W: Write + Seek>(
    engine: &Engine,
    codec: &MimiCodec,
    prompt: &Prompt,
    opts: &AudioGenOptions,
    out: &mut W,
    what: &std::path::Path,
    on_frame: &mut dyn FnMut(usize),
) -> Result<Speech> {
    let io = |source| Error::Io { path: what.to_path_buf(), source };
    let rate = u32::try_from(codec.sample_rate()).map_err(|_| Error::Request("codec sample rate out of range".into()))?;
    out.write_all(&header(rate, WavFormat::F32, 0)?).map_err(io)?;
    let t0 = Instant::now();
    let mut stream = codec.decode_stream().ok();
    let mut samples = 0usize;
    let mut failed: Option<Error> = None;
    let codes = engine.generate_audio_codes_with(prompt, opts, &mut |i, frame| {
        on_frame(i + 1);
        let Some(s) = stream.as_mut() else { return };
        if failed.is_some() {
            return;
        }
        let column: Vec<Vec<u32>> = frame.iter().map(|&c| vec![c]).collect(); // [Q][1]
        match s.push(&column).and_then(|pcm| write_f32(out, &pcm).map_err(io).map(|()| pcm.len())) {
            Ok(n) => samples += n,
            Err(e) => failed = Some(e),
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if stream.is_none() && codes.codes.first().is_some_and(|l| !l.is_empty()) {
        let pcm = codec.decode(&codes.codes)?; // [frames · samples_per_frame]
        write_f32(out, &pcm).map_err(io)?;
        samples = pcm.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    out.seek(SeekFrom::Start(0)).map_err(io)?;
    out.write_all(&header(rate, WavFormat::F32, samples)?).map_err(io)?;
    out.seek(SeekFrom::End(0)).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(Speech { codes, samples, sample_rate: codec.sample_rate(), secs })
}

/// Appends f32 little-endian samples.
fn write_f32<W: Write>(out: &mut W, pcm: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = pcm.iter().flat_map(|x| x.to_le_bytes()).collect();
    out.write_all(&bytes)
}

/// An audio file as the model's input codes `[num_levels][frames]`: [`super::read_audio`]
/// (decode, downmix, resample to the codec rate), then [`MimiCodec::encode`] keeping the first
/// `num_levels` levels of the checkpoint's `audio` config (the path of `ernie caption --audio`
/// and the server's `input_audio` parts).
///
/// Errors: no audio parts; [`super::read_audio`]'s and the codec's errors.
pub fn encode_audio_for_model(engine: &Engine, codec: &MimiCodec, path: &std::path::Path) -> Result<Vec<Vec<u32>>> {
    let levels = engine.audio()?.num_levels();
    Ok(super::encode_audio_file(codec, path, Some(levels))?.codes)
}

/// [`encode_audio_for_model`] on the bytes of an audio file ([`super::read_audio_bytes`]; `name`
/// is the format hint): the path of the server's `input_audio` parts.
///
/// Errors: as [`encode_audio_for_model`].
pub fn encode_audio_bytes_for_model(engine: &Engine, codec: &MimiCodec, bytes: &[u8], name: &std::path::Path) -> Result<Vec<Vec<u32>>> {
    let levels = engine.audio()?.num_levels();
    codec.encode(&super::read_audio_bytes(codec, bytes, name)?, levels)
}

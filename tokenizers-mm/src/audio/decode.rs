//! Audio file → mono f32 samples at the file's own rate.
//!
//! Containers / codecs: WAV — RIFF, RIFX (big-endian) and RF64/BW64 — with PCM 8/16/24/32-bit
//! (any valid-bit count inside those containers), float 32/64, WAVE_FORMAT_EXTENSIBLE, A-law and
//! µ-law through our reader (`wav.rs`); WAV ADPCM, AIFF, FLAC, MP3 (ID3v2/Xing skipped),
//! Ogg/Vorbis and AAC-LC in MP4/M4A (and ADTS) through Symphonia 0.6.1 (pure Rust). Symphonia
//! runs inside `catch_unwind`: a panic in a third-party demuxer on a corrupt file (0.6.1's RIFF
//! reader has an unchecked multiply) becomes an [`Error::AudioDecode`], never a crash.
//!
//! Downmix: the arithmetic **mean of all channels** per frame, f32 — what the reference loaders do
//! (`librosa.to_mono` = `np.mean(y, axis=0)`, used by transformers' `load_audio`; torchaudio
//! users write `wav.mean(0)`). A stereo file whose channels carry different speech keeps both
//! voices at half amplitude.
//!
//! Robustness: a packet the codec rejects is skipped (Symphonia's "skip this packet" class of
//! error); an unexpected end of file ends the stream with what was decoded (a truncated file
//! yields its intact prefix, as ffmpeg does); everything else — unknown container, unsupported
//! codec, no audio track, no decodable sample — is an [`Error::AudioDecode`] naming the file.
//! Caps ([`Limits`]) are checked from the file size and the header's frame count before decoding,
//! and again on the running sample count (headers can lie).

use std::io::Cursor;
use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use crate::audio::wav;
use crate::error::{Error, Result};
use crate::limits::{Limits, MAX_AUDIO_CHANNELS as MAX_CHANNELS};

/// A decoded, downmixed clip at its original rate.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples, `[n_frames]`, f32, nominally in [-1, 1] (mean of the channels).
    pub samples: Vec<f32>,
    /// The file's sample rate, Hz.
    pub sample_rate: u32,
    /// Channels in the file before the downmix.
    pub channels: usize,
    /// Codec short name as reported by the decoder (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`).
    pub codec: String,
    /// Packets the codec rejected and that were skipped (0 for an intact file).
    pub skipped_packets: usize,
}

impl DecodedAudio {
    /// Duration in seconds: `samples.len() / sample_rate`.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Reads and decodes an audio file (see module docs).
///
/// Errors: [`Error::Io`] (unreadable), [`Error::LimitExceeded`] (file bytes, seconds, channels),
/// [`Error::AudioDecode`] (anything malformed or unsupported).
pub fn decode_audio_file(path: &Path, limits: &Limits) -> Result<DecodedAudio> {
    let bytes = limits.read_file_capped(path)?;
    decode_audio_bytes(&bytes, path, limits)
}

/// Decodes an in-memory audio file; `path` is used for the format hint and for error messages.
pub fn decode_audio_bytes(bytes: &[u8], path: &Path, limits: &Limits) -> Result<DecodedAudio> {
    let fail = |reason: String| Error::AudioDecode { path: path.to_path_buf(), reason };
    limits.check_file_bytes(path, bytes.len() as u64)?;
    if wav::is_wav(bytes) {
        match wav::parse(bytes) {
            Ok(header) => {
                limits.check_audio_seconds(path, header.n_frames as f64 / f64::from(header.sample_rate))?;
                let pcm = wav::decode(bytes, &header).map_err(fail)?;
                return finish(path, pcm.planes, pcm.sample_rate, pcm.codec, 0);
            }
            Err(wav::WavError::Malformed(reason)) => return Err(fail(format!("malformed WAV: {reason}"))),
            Err(wav::WavError::Unsupported(_tag)) => {} // e.g. ADPCM (tag 2 / 0x11): Symphonia below
        }
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_symphonia(bytes, path, limits))) {
        Ok(result) => result,
        Err(_) => Err(fail("the decoder panicked on this input (corrupt stream)".into())),
    }
}

/// The Symphonia path of [`decode_audio_bytes`].
fn decode_symphonia(bytes: &[u8], path: &Path, limits: &Limits) -> Result<DecodedAudio> {
    let fail = |reason: String| Error::AudioDecode { path: path.to_path_buf(), reason };

    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let source = Box::new(Cursor::new(bytes));
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| fail(format!("unrecognised or malformed container: {e}")))?;
    let track = format.default_track(TrackType::Audio).ok_or_else(|| fail("no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or_else(|| fail("audio track without codec parameters".into()))?;
    let header_rate = params.sample_rate;
    let header_channels = params.channels.as_ref().map(|c| c.count());
    if let Some(ch) = header_channels {
        if ch > MAX_CHANNELS {
            return Err(fail(format!("{ch} channels (at most {MAX_CHANNELS} supported)")));
        }
    }
    // Cheap pre-decode check: the header's frame count.
    if let (Some(frames), Some(rate)) = (track.num_frames, header_rate) {
        if rate > 0 {
            limits.check_audio_seconds(path, frames as f64 / f64::from(rate))?;
        }
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| fail(format!("unsupported codec: {e}")))?;
    let codec = decoder.codec_info().short_name.to_string();

    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut scratch: Vec<Vec<f32>> = Vec::new();
    let mut rate = header_rate.unwrap_or(0);
    let mut skipped = 0usize;
    let mut decoded_packets = 0usize;
    let mut last_error: Option<String> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // Truncated file: keep what was decoded.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                last_error = Some(format!("demuxing failed: {e}"));
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                decoded_packets += 1;
                let spec_rate = buf.spec().rate();
                let n_ch = buf.num_planes();
                if n_ch == 0 || n_ch > MAX_CHANNELS {
                    return Err(fail(format!("decoder produced {n_ch} channels")));
                }
                if rate == 0 {
                    rate = spec_rate;
                }
                if spec_rate != rate {
                    return Err(fail(format!("sample rate changes mid-stream ({rate} → {spec_rate} Hz)")));
                }
                if planes.is_empty() {
                    planes = vec![Vec::new(); n_ch];
                } else if planes.len() != n_ch {
                    return Err(fail(format!("channel count changes mid-stream ({} → {n_ch})", planes.len())));
                }
                buf.copy_to_vecs_planar::<f32>(&mut scratch);
                for (dst, src) in planes.iter_mut().zip(scratch.iter()) {
                    dst.extend_from_slice(src);
                }
                if rate > 0 {
                    let secs = planes[0].len() as f64 / f64::from(rate);
                    limits.check_audio_seconds(path, secs)?;
                }
            }
            Err(SymError::DecodeError(msg)) => {
                skipped += 1;
                last_error = Some(format!("corrupt packet: {msg}"));
            }
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                last_error = Some(format!("decoding failed: {e}"));
                break;
            }
        }
    }
    if planes.first().is_none_or(Vec::is_empty) {
        let why = last_error.unwrap_or_else(|| "no audio samples in the file".into());
        return Err(fail(if decoded_packets == 0 { why } else { format!("no audio samples ({why})") }));
    }
    if rate == 0 {
        return Err(fail("sample rate unknown or 0".into()));
    }
    finish(path, planes, rate, codec, skipped)
}

/// Downmixes planar channels to their mean and builds the result.
fn finish(path: &Path, planes: Vec<Vec<f32>>, rate: u32, codec: String, skipped: usize) -> Result<DecodedAudio> {
    let channels = planes.len();
    let samples = downmix_mean(&planes);
    if samples.is_empty() {
        return Err(Error::AudioDecode { path: path.to_path_buf(), reason: "no audio samples in the file".into() });
    }
    if rate == 0 {
        return Err(Error::AudioDecode { path: path.to_path_buf(), reason: "sample rate 0".into() });
    }
    Ok(DecodedAudio { samples, sample_rate: rate, channels, codec, skipped_packets: skipped })
}

/// Mean of the channels per frame: `[C][n] → [min_c n]`, f32 (`np.mean(y, axis=0)`).
pub fn downmix_mean(planes: &[Vec<f32>]) -> Vec<f32> {
    let n = planes.iter().map(Vec::len).min().unwrap_or(0);
    match planes.len() {
        0 => Vec::new(),
        1 => planes[0][..n].to_vec(),
        c => {
            let inv = c as f32;
            (0..n).map(|i| planes.iter().map(|p| p[i]).sum::<f32>() / inv).collect()
        }
    }
}

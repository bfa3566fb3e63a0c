//! Resource caps for untrusted media: file bytes, decoded pixels, frames, audio seconds.
//!
//! Every cap is checked as early as the information exists, so a hostile file is refused before
//! the expensive step:
//!
//! | cap                 | checked where                                               | default     |
//! |---------------------|-------------------------------------------------------------|-------------|
//! | `max_file_bytes`    | file metadata, before reading (and again while reading)     | 256 MiB     |
//! | `max_pixels`        | image / frame header (width × height), before pixel decode  | 178,956,970 |
//! | `max_video_frames`  | video stream header / frame count, before decoding frames   | 36,000      |
//! | `max_audio_seconds` | audio stream header (n_frames / rate), before decoding      | 3,600 s     |
//!
//! Shared by all modalities: images call [`Limits::read_file_capped`] and
//! [`Limits::check_pixels`]; video adds [`Limits::check_video_frames`]; audio
//! [`Limits::check_audio_seconds`].
//!
//! `max_pixels` defaults to Pillow's own decompression-bomb threshold (`2 *
//! Image.MAX_IMAGE_PIXELS` = 2 × 89,478,485, where `Image.open` raises
//! `DecompressionBombError`), so anything the HF reference pipeline can open, we can too.
//! A 10,000 × 10,000 PNG that compresses to a few kB is refused from its 33-byte IHDR.
//!
//! Violations return [`Error::LimitExceeded`] naming the file, the cap and both numbers; nothing
//! here panics.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// `what` of [`Error::LimitExceeded`] for the file-size cap.
pub const WHAT_FILE_BYTES: &str = "file size (bytes)";
/// `what` of [`Error::LimitExceeded`] for the decoded-pixels cap.
pub const WHAT_PIXELS: &str = "decoded pixels";
/// `what` of [`Error::LimitExceeded`] for the frame cap.
pub const WHAT_FRAMES: &str = "video frames";
/// `what` of [`Error::LimitExceeded`] for the audio-duration cap.
pub const WHAT_AUDIO_SECONDS: &str = "audio duration (s)";

/// Most audio channels accepted by every audio decoder (a corrupt header claiming 60 000
/// channels must not allocate per channel). Re-exported as `audio::MAX_CHANNELS`.
pub const MAX_AUDIO_CHANNELS: usize = 64;

/// Caps on media inputs. `Limits::default()` is generous but finite; tighten per deployment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Largest accepted file (or buffer), in bytes.
    pub max_file_bytes: u64,
    /// Largest accepted image / video frame, in pixels (width × height), judged from the header.
    pub max_pixels: u64,
    /// Most frames a video may declare or yield.
    pub max_video_frames: u64,
    /// Longest accepted audio clip, in seconds.
    pub max_audio_seconds: f64,
}

/// Pillow's `Image.MAX_IMAGE_PIXELS` (PIL/Image.py): above it `Image.open` warns, above twice
/// it raises `DecompressionBombError`.
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_pixels: 2 * PILLOW_MAX_IMAGE_PIXELS,
            max_video_frames: 36_000,
            max_audio_seconds: 3_600.0,
        }
    }
}

impl Limits {
    /// No practical limits (tests, trusted inputs). Still never panics on huge headers: the
    /// decoders' own allocation checks remain.
    pub fn unlimited() -> Self {
        Limits { max_file_bytes: u64::MAX, max_pixels: u64::MAX, max_video_frames: u64::MAX, max_audio_seconds: f64::INFINITY }
    }

    /// Errors with [`Error::LimitExceeded`] if `bytes > max_file_bytes`.
    pub fn check_file_bytes(&self, path: &Path, bytes: u64) -> Result<()> {
        check(path, WHAT_FILE_BYTES, bytes as f64, self.max_file_bytes as f64)
    }

    /// Errors with [`Error::LimitExceeded`] if `width * height > max_pixels` (saturating: no
    /// overflow whatever a header claims).
    pub fn check_pixels(&self, path: &Path, width: u64, height: u64) -> Result<()> {
        let pixels = width.saturating_mul(height);
        check(path, WHAT_PIXELS, pixels as f64, self.max_pixels as f64)
    }

    /// Errors with [`Error::LimitExceeded`] if `frames > max_video_frames`.
    pub fn check_video_frames(&self, path: &Path, frames: u64) -> Result<()> {
        check(path, WHAT_FRAMES, frames as f64, self.max_video_frames as f64)
    }

    /// Errors with [`Error::LimitExceeded`] if `seconds > max_audio_seconds` (NaN is refused too).
    pub fn check_audio_seconds(&self, path: &Path, seconds: f64) -> Result<()> {
        if seconds.is_nan() {
            return Err(Error::LimitExceeded {
                path: path.to_path_buf(),
                what: WHAT_AUDIO_SECONDS,
                actual: seconds,
                limit: self.max_audio_seconds,
            });
        }
        check(path, WHAT_AUDIO_SECONDS, seconds, self.max_audio_seconds)
    }

    /// Read a whole file, refusing it from its metadata when it is larger than
    /// `max_file_bytes` — and again while reading, should it grow (or be a pipe/device whose
    /// metadata says 0).
    ///
    /// Errors: [`Error::Io`], [`Error::LimitExceeded`] (`what` = [`WHAT_FILE_BYTES`]).
    pub fn read_file_capped(&self, path: &Path) -> Result<Vec<u8>> {
        let io_err = |source| Error::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a directory")));
        }
        self.check_file_bytes(path, meta.len())?;
        let cap = self.max_file_bytes.saturating_add(1);
        let mut bytes = Vec::with_capacity(meta.len().min(self.max_file_bytes).min(1 << 30) as usize);
        file.take(cap).read_to_end(&mut bytes).map_err(io_err)?;
        self.check_file_bytes(path, bytes.len() as u64)?;
        Ok(bytes)
    }
}

fn check(path: &Path, what: &'static str, actual: f64, limit: f64) -> Result<()> {
    if actual > limit {
        Err(Error::LimitExceeded { path: path.to_path_buf(), what, actual, limit })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_name_the_file_and_the_numbers() {
        let lim = Limits { max_pixels: 100, ..Limits::default() };
        let p = Path::new("bomb.png");
        assert!(lim.check_pixels(p, 10, 10).is_ok());
        let err = lim.check_pixels(p, 11, 10).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bomb.png") && msg.contains("110") && msg.contains("100"), "{msg}");
        // u32 sides never overflow.
        assert!(lim.check_pixels(p, u64::MAX, u64::MAX).is_err());
        assert!(lim.check_audio_seconds(p, f64::NAN).is_err());
    }

    #[test]
    fn read_file_refuses_large_files_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.bin");
        std::fs::write(&f, vec![0u8; 1000]).unwrap();
        let lim = Limits { max_file_bytes: 999, ..Limits::default() };
        assert!(matches!(lim.read_file_capped(&f), Err(Error::LimitExceeded { what: WHAT_FILE_BYTES, .. })));
        let lim = Limits { max_file_bytes: 1000, ..Limits::default() };
        assert_eq!(lim.read_file_capped(&f).unwrap().len(), 1000);
        assert!(matches!(lim.read_file_capped(dir.path()), Err(Error::Io { .. })));
    }
}

//! A mono WAV writer: the canonical 44-byte RIFF header (`fmt ` chunk of 16 bytes, then `data`),
//! IEEE float 32-bit (format tag 3) or 16-bit PCM (tag 1). The sample count is declared up front,
//! so samples can be streamed to disk as they are decoded; [`WavWriter::finish`] checks that
//! exactly that many were written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Sample encoding of the written WAV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavFormat {
    /// IEEE float, 32-bit little-endian: the decoder's samples unchanged.
    F32,
    /// Signed 16-bit PCM: `round(clamp(x, −1, 1) · 32767)`.
    Pcm16,
}

impl WavFormat {
    fn bytes_per_sample(self) -> usize {
        match self {
            WavFormat::F32 => 4,
            WavFormat::Pcm16 => 2,
        }
    }
}

/// The 44-byte header of a mono WAV holding `samples` samples.
///
/// Errors ([`Error::Request`]): a data size over the RIFF limit (4 GiB).
pub fn header(rate: u32, format: WavFormat, samples: usize) -> Result<[u8; 44]> {
    let bps = format.bytes_per_sample();
    let data = samples
        .checked_mul(bps)
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| *d <= u32::MAX - 36)
        .ok_or_else(|| Error::Request(format!("{samples} samples do not fit a RIFF WAV (4 GiB)")))?;
    let tag: u16 = if format == WavFormat::F32 { 3 } else { 1 };
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&tag.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // channels
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * bps as u32).to_le_bytes()); // byte rate
    h[32..34].copy_from_slice(&(bps as u16).to_le_bytes()); // block align
    h[34..36].copy_from_slice(&(8 * bps as u16).to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    Ok(h)
}

/// Streams samples into a WAV file whose length was declared at creation.
pub struct WavWriter {
    path: PathBuf,
    out: BufWriter<File>,
    format: WavFormat,
    declared: usize,
    written: usize,
}

impl WavWriter {
    /// Creates `path` and writes the header for `samples` samples.
    ///
    /// Errors: [`Error::Io`], or [`header`]'s size error.
    pub fn create(path: &Path, rate: u32, format: WavFormat, samples: usize) -> Result<WavWriter> {
        let h = header(rate, format, samples)?;
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        out.write_all(&h).map_err(io)?;
        Ok(WavWriter { path: path.to_path_buf(), out, format, declared: samples, written: 0 })
    }

    /// Appends samples. Errors: [`Error::Io`]; more samples than declared ([`Error::Request`]).
    pub fn write(&mut self, samples: &[f32]) -> Result<()> {
        if self.written + samples.len() > self.declared {
            return Err(Error::Request(format!("{}: more samples than the {} declared", self.path.display(), self.declared)));
        }
        let mut bytes = Vec::with_capacity(samples.len() * self.format.bytes_per_sample());
        for &x in samples {
            match self.format {
                WavFormat::F32 => bytes.extend_from_slice(&x.to_le_bytes()),
                WavFormat::Pcm16 => bytes.extend_from_slice(&((x.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()),
            }
        }
        self.out.write_all(&bytes).map_err(|source| Error::Io { path: self.path.clone(), source })?;
        self.written += samples.len();
        Ok(())
    }

    /// Flushes the file. Errors: [`Error::Io`]; fewer samples than declared ([`Error::Request`]).
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.declared {
            return Err(Error::Request(format!("{}: wrote {} samples of the {} declared", self.path.display(), self.written, self.declared)));
        }
        self.out.flush().map_err(|source| Error::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let h = header(24000, WavFormat::Pcm16, 10).unwrap();
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 36 + 20);
        assert_eq!(u16::from_le_bytes([h[20], h[21]]), 1);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 24000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 48000);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 20);
        let f = header(24000, WavFormat::F32, 10).unwrap();
        assert_eq!(u16::from_le_bytes([f[20], f[21]]), 3);
        assert_eq!(u16::from_le_bytes([f[34], f[35]]), 32);
        assert!(header(24000, WavFormat::F32, usize::MAX / 2).is_err());
    }
}

//! Our WAV reader: `RIFF`, big-endian **RIFX** and **RF64 / BW64** (64-bit sizes in a `ds64`
//! chunk), which Symphonia 0.6 does not parse. All WAVs come here first: owning the parser keeps
//! header arithmetic checked (Symphonia 0.6.1's RIFF reader overflows on some corrupt headers),
//! accepts what ffmpeg accepts (valid bits below the container width such as 20-in-24, 12-in-16,
//! 5-in-8; µ-law with a short `fmt `) and decodes a truncated `data` chunk to its intact prefix.
//! Formats it does not decode (ADPCM, …) are handed to Symphonia.
//!
//! Supported sample formats (`fmt ` tag, or the first two bytes of the extensible sub-format
//! GUID): PCM 1 (8-bit unsigned, 16/24/32-bit signed, any `valid_bits` inside those containers),
//! IEEE float 3 (32/64-bit), A-law 6, µ-law 7. Scaling is the usual `int / 2^(bits-1)`
//! (8-bit: `(u - 128) / 128`), which is what Symphonia, libsndfile and scipy+`/ 2^(n-1)` give.
//! A `data` chunk that ends early (truncated file) yields the whole frames that are present, as
//! ffmpeg does; a missing `fmt ` or `data` chunk is an error.

/// Planar f32 samples and their rate, as read from a WAV body.
#[derive(Debug)]
pub(crate) struct WavPcm {
    /// `planes[c][i]`: channel `c`, frame `i`.
    pub planes: Vec<Vec<f32>>,
    /// Frames per second.
    pub sample_rate: u32,
    /// Short codec name for reports (`pcm_s24be`, `pcm_f32le`, …).
    pub codec: String,
}

/// Returns true when `bytes` start like a WAV file of any of the three containers.
pub(crate) fn is_wav(bytes: &[u8]) -> bool {
    matches!(bytes.get(0..4), Some(b"RIFF") | Some(b"RF64") | Some(b"BW64") | Some(b"RIFX"))
        && bytes.get(8..12) == Some(b"WAVE")
}

/// Why [`parse`] gave up.
#[derive(Debug)]
pub(crate) enum WavError {
    /// Broken or inconsistent headers; the reason is for the user.
    Malformed(String),
    /// A well-formed file whose sample format this reader does not decode (format tag).
    #[allow(dead_code)] // kept for debugging output (`{:?}`)
    Unsupported(u16),
}

impl From<&str> for WavError {
    fn from(s: &str) -> Self {
        WavError::Malformed(s.to_string())
    }
}

impl From<String> for WavError {
    fn from(s: String) -> Self {
        WavError::Malformed(s)
    }
}

struct Rd<'a> {
    b: &'a [u8],
    be: bool,
}

impl Rd<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let s: [u8; 2] = self.b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.be { u16::from_be_bytes(s) } else { u16::from_le_bytes(s) })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let s: [u8; 4] = self.b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.be { u32::from_be_bytes(s) } else { u32::from_le_bytes(s) })
    }
    fn u64(&self, at: usize) -> Option<u64> {
        let s: [u8; 8] = self.b.get(at..at + 8)?.try_into().ok()?;
        Some(if self.be { u64::from_be_bytes(s) } else { u64::from_le_bytes(s) })
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Pcm,
    Float,
    ALaw,
    MuLaw,
}

/// What the header says: enough to check limits before converting any sample.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WavHeader {
    kind: Kind,
    be: bool,
    channels: usize,
    /// Bytes per sample in the file.
    width: usize,
    /// Byte offset of the first sample.
    offset: usize,
    /// Whole frames present (declared length clipped to the bytes actually there).
    pub n_frames: u64,
    /// Frames per second.
    pub sample_rate: u32,
}

/// Parses the chunk headers of a RIFF/RIFX/RF64/BW64 WAV held in memory.
///
/// Errors: [`WavError`]; the caller wraps the reason with the path.
pub(crate) fn parse(bytes: &[u8]) -> std::result::Result<WavHeader, WavError> {
    let be = bytes.get(0..4) == Some(b"RIFX");
    let r = Rd { b: bytes, be };
    let mut pos = 12usize;
    let mut ds64_data: Option<u64> = None;
    let mut fmt: Option<(u16, u16, u32, u16, u16)> = None; // tag, channels, rate, block_align, bits
    let mut data: Option<(usize, u64)> = None; // offset, declared length
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size32 = r.u32(pos + 4).ok_or("chunk header cut")?;
        let body = pos + 8;
        match id {
            b"ds64" => {
                ds64_data = r.u64(body + 8);
            }
            b"fmt " => {
                let tag = r.u16(body).ok_or("fmt chunk cut")?;
                let channels = r.u16(body + 2).ok_or("fmt chunk cut")?;
                let rate = r.u32(body + 4).ok_or("fmt chunk cut")?;
                let align = r.u16(body + 12).ok_or("fmt chunk cut")?;
                let bits = r.u16(body + 14).ok_or("fmt chunk cut")?;
                let tag = if tag == 0xFFFE {
                    // WAVE_FORMAT_EXTENSIBLE: cbSize(2) validBits(2) mask(4) GUID(16), tag = GUID[0..2].
                    r.u16(body + 24).ok_or("extensible fmt chunk cut")?
                } else {
                    tag
                };
                fmt = Some((tag, channels, rate, align, bits));
            }
            b"data" => {
                let len = if size32 == u32::MAX { ds64_data.unwrap_or(u64::MAX) } else { u64::from(size32) };
                data = Some((body, len));
                break;
            }
            _ => {}
        }
        // Chunks are padded to even sizes. A 0xFFFFFFFF size outside `data` is corrupt.
        let step = u64::from(size32) + u64::from(size32 & 1);
        pos = usize::try_from(body as u64 + step).map_err(|_| "chunk size overflows")?;
    }
    let (tag, channels, rate, align, bits) = fmt.ok_or("no 'fmt ' chunk")?;
    let (offset, declared) = data.ok_or("no 'data' chunk")?;
    if channels == 0 || usize::from(channels) > crate::limits::MAX_AUDIO_CHANNELS {
        return Err(format!("{channels} channels").into());
    }
    if rate == 0 {
        return Err("sample rate 0".into());
    }
    let kind = match tag {
        1 => Kind::Pcm,
        3 => Kind::Float,
        6 => Kind::ALaw,
        7 => Kind::MuLaw,
        t => return Err(WavError::Unsupported(t)),
    };
    let ch = usize::from(channels);
    let width = if align > 0 && usize::from(align) % ch == 0 {
        usize::from(align) / ch
    } else {
        usize::from(bits).div_ceil(8)
    };
    match (kind, width) {
        (Kind::Pcm, 1..=4) | (Kind::Float, 4 | 8) | (Kind::ALaw | Kind::MuLaw, 1) => {}
        _ => return Err(format!("unsupported sample width {width} bytes for format tag {tag}").into()),
    }
    let available = (bytes.len() - offset.min(bytes.len())) as u64;
    let frame_bytes = (width * ch) as u64;
    let n_frames = declared.min(available) / frame_bytes;
    Ok(WavHeader { kind, be, channels: ch, width, offset, n_frames, sample_rate: rate })
}

/// Converts the samples described by `h` (from [`parse`] on the same `bytes`).
pub(crate) fn decode(bytes: &[u8], h: &WavHeader) -> std::result::Result<WavPcm, String> {
    let WavHeader { kind, be, channels: ch, width, offset, n_frames, sample_rate: rate } = *h;
    let n = usize::try_from(n_frames).map_err(|_| "too many frames")?;
    if offset + n * ch * width > bytes.len() {
        return Err("header does not match the data".into());
    }
    let mut planes = vec![Vec::with_capacity(n); ch];
    for i in 0..n {
        for (c, plane) in planes.iter_mut().enumerate() {
            let at = offset + (i * ch + c) * width;
            let s = &bytes[at..at + width];
            plane.push(sample(kind, s, be));
        }
    }
    let endian = if be { "be" } else { "le" };
    let codec = match kind {
        Kind::Pcm if width == 1 => "pcm_u8".to_string(),
        Kind::Pcm => format!("pcm_s{}{endian}", width * 8),
        Kind::Float => format!("pcm_f{}{endian}", width * 8),
        Kind::ALaw => "pcm_alaw".into(),
        Kind::MuLaw => "pcm_mulaw".into(),
    };
    Ok(WavPcm { planes, sample_rate: rate, codec })
}

/// One sample (`s.len()` = container width) to f32.
fn sample(kind: Kind, s: &[u8], be: bool) -> f32 {
    let mut b = [0u8; 8];
    // Normalise to little-endian.
    for (i, &v) in s.iter().enumerate() {
        b[if be { s.len() - 1 - i } else { i }] = v;
    }
    match (kind, s.len()) {
        (Kind::Pcm, 1) => (f32::from(b[0]) - 128.0) / 128.0,
        (Kind::Pcm, 2) => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0,
        (Kind::Pcm, 3) => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
        (Kind::Pcm, _) => (f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0) as f32,
        (Kind::Float, 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (Kind::Float, _) => f64::from_le_bytes(b) as f32,
        (Kind::MuLaw, _) => f32::from(mulaw(b[0])) / 32_768.0,
        (Kind::ALaw, _) => f32::from(alaw(b[0])) / 32_768.0,
    }
}

/// G.711 µ-law to linear 16-bit (the classic Sun `ulaw2linear`).
fn mulaw(u: u8) -> i16 {
    let u = !u;
    let t = ((i16::from(u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7);
    if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }
}

/// G.711 A-law to linear 16-bit (the classic Sun `alaw2linear`).
fn alaw(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = i16::from(a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 { t } else { -t }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_tables() {
        assert_eq!(mulaw(0xFF), 0);
        assert_eq!(mulaw(0x00), -32_124);
        assert_eq!(mulaw(0x80), 32_124);
        assert_eq!(alaw(0xD5), 8);
        assert_eq!(alaw(0x2A), -32_256);
    }

    #[test]
    fn rf64_minimal() {
        // RF64, ds64 (data size 4), fmt PCM 16-bit mono 8 kHz, data 0xFFFFFFFF with 2 samples.
        let mut f = Vec::new();
        f.extend_from_slice(b"RF64");
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(b"ds64");
        f.extend_from_slice(&28u32.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(b"fmt ");
        f.extend_from_slice(&16u32.to_le_bytes());
        for v in [1u16, 1] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&16000u32.to_le_bytes());
        for v in [2u16, 16] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(b"data");
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(&16384i16.to_le_bytes());
        f.extend_from_slice(&(-32768i16).to_le_bytes());
        assert!(is_wav(&f));
        let h = parse(&f).unwrap();
        assert_eq!((h.n_frames, h.sample_rate), (2, 8000));
        let pcm = decode(&f, &h).unwrap();
        assert_eq!(pcm.planes, vec![vec![0.5, -1.0]]);
        assert!(parse(&f[..40]).is_err());
    }
}

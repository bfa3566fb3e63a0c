//! JPEG specifics: libjpeg-turbo decoding (feature `turbojpeg`), the EXIF APP1 orientation
//! reader, and the Adobe CMYK/YCCK → RGB rule Pillow uses.
//!
//! Why libjpeg-turbo: Pillow decodes JPEG with libjpeg-turbo (13.0.0 wheels bundle 3.2.0; the
//! defaults are the ISLOW integer IDCT and "fancy" triangular chroma upsampling). TurboJPEG's
//! `tjDecompress2` with no flags uses the same IDCT and upsampling, so Debian's libturbojpeg
//! 2.1.5 reproduces Pillow's pixels exactly (measured on the corpus: 0 levels). The `image`
//! crate's zune-jpeg uses other IDCT / upsampling arithmetic and lands up to 4 levels off on
//! the corpus (baseline, progressive, EXIF-rotated); it is the fallback when the feature is off,
//! and its own CMYK/YCCK → RGB conversion lands within 2 levels of Pillow's on the YCCK file.
//!
//! CMYK: Pillow opens every 4-component JPEG as mode `CMYK` with rawmode `CMYK;I` ("assume
//! Adobe conventions": libjpeg's CMYK output — YCCK already converted to CMYK by libjpeg — is
//! inverted), then `convert("RGB")` applies `cmyk2rgb` (libImaging/Convert.c, no ICC):
//! `nk = 255 − K; X = clip(nk − muldiv255(C, nk))` with `muldiv255(a, b) = t = a·b + 128;
//! ((t >> 8) + t) >> 8`. Since C = 255 − c_raw and nk = k_raw this is ≈ `c_raw · k_raw / 255`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::limits::Limits;

use super::rgb::RgbImage;

/// Whether JPEGs go through libjpeg-turbo in this build.
pub(crate) const TURBOJPEG_ENABLED: bool = cfg!(feature = "turbojpeg");

/// Pillow's `cmyk2rgb` on one pixel given *as stored by an Adobe JPEG* (inverted CMYK, what
/// libjpeg outputs): returns RGB.
pub fn adobe_cmyk_to_rgb(c_raw: u8, m_raw: u8, y_raw: u8, k_raw: u8) -> [u8; 3] {
    // CMYK;I unpack inverts every band.
    let nk = 255 - i32::from(255 - k_raw); // = k_raw
    let one = |raw: u8| {
        let c = i32::from(255 - raw);
        let t = c * nk + 128;
        let muldiv = ((t >> 8) + t) >> 8;
        (nk - muldiv).clamp(0, 255) as u8
    };
    [one(c_raw), one(m_raw), one(y_raw)]
}

/// The TIFF-structured payload of the first APP1 `Exif\0\0` segment, if any (Pillow reads the
/// first one). Walks the marker segments up to SOS; never reads out of bounds.
pub fn exif_payload(jpeg: &[u8]) -> Option<&[u8]> {
    segments(jpeg).find_map(|(marker, payload)| (marker == 0xE1).then_some(payload)?.strip_prefix(b"Exif\0\0"))
}

/// Number of components declared by the first SOF segment.
pub fn sof_components(jpeg: &[u8]) -> Option<u8> {
    segments(jpeg).find_map(|(marker, payload)| is_sof(marker).then(|| payload.get(5).copied()).flatten())
}

fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF)
}

/// `(marker, payload)` of each length-carrying segment between SOI and the first SOS.
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    walk(jpeg).take_while(|&(m, _, _)| m != 0xDA && m != 0xD9).map(|(m, payload, _)| (m, payload))
}

/// `(marker, payload, offset after the segment)` from SOI up to and including the first SOS
/// or EOI (whose payload is empty); stops at anything malformed. Never reads out of bounds.
fn walk(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8], usize)> {
    let mut pos = if jpeg.starts_with(&[0xFF, 0xD8]) { 2 } else { jpeg.len() };
    let mut done = false;
    std::iter::from_fn(move || loop {
        if done || jpeg.get(pos) != Some(&0xFF) {
            return None;
        }
        while jpeg.get(pos) == Some(&0xFF) {
            pos += 1; // fill bytes
        }
        let marker = *jpeg.get(pos)?;
        pos += 1;
        match marker {
            0xD9 | 0xDA => {
                done = true; // EOI, SOS: the header is over
                return Some((marker, &jpeg[..0], pos));
            }
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = usize::from(u16::from_be_bytes([*jpeg.get(pos)?, *jpeg.get(pos + 1)?]));
                let payload = jpeg.get(pos + 2..pos + len.max(2))?;
                pos += len.max(2);
                return Some((marker, payload, pos));
            }
        }
    })
}

/// Whether an EOI marker (FF D9) follows the first SOS — Pillow raises "image file is
/// truncated" for a JPEG without one; zune-jpeg would silently fill the missing rows.
/// (Inside entropy-coded data an FF byte is always stuffed as FF 00, so FF D9 there is a marker.)
pub fn has_eoi_after_scan(jpeg: &[u8]) -> bool {
    let Some((_, _, scan)) = walk(jpeg).find(|&(m, _, _)| m == 0xDA) else { return false };
    jpeg.get(scan..).is_some_and(|rest| rest.windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// EXIF orientation of a JPEG (1 when absent or unreadable).
pub fn jpeg_orientation(jpeg: &[u8]) -> u8 {
    exif_payload(jpeg).and_then(image::metadata::Orientation::from_exif_chunk).map_or(1, |o| o.to_exif())
}

/// Decode with libjpeg-turbo: `(stored-orientation RGB, source layout name, EXIF orientation)`.
///
/// libjpeg *warnings* are told apart from fatal errors (TurboJPEG's `tjGetErrorCode`), to
/// accept exactly what Pillow accepts: Pillow ignores libjpeg warnings such as "extraneous bytes
/// before marker" (the pixels are complete) but raises "image file is truncated" when the data
/// ends early — libjpeg's "Premature end of JPEG file" warning.
///
/// Errors: [`Error::LimitExceeded`] (pixels, from the header), [`Error::ImageDecode`] (a fatal
/// libjpeg error, or a truncated file).
#[cfg(feature = "turbojpeg")]
pub(crate) fn decode_turbo(bytes: &[u8], path: &Path, limits: &Limits) -> Result<(RgbImage, &'static str, u8)> {
    use turbojpeg::raw;
    let fail = |reason: String| Error::ImageDecode { path: path.to_path_buf(), reason: format!("libjpeg-turbo: {reason}") };
    let mut tj = tj::Decompressor::new().ok_or_else(|| fail("cannot create a decompressor".into()))?;
    let (w, h, colorspace) = tj.header(bytes).map_err(fail)?;
    limits.check_pixels(path, w as u64, h as u64)?;
    if w == 0 || h == 0 {
        return Err(fail(format!("empty image ({w}x{h})")));
    }
    let cmyk = colorspace == raw::TJCS_TJCS_CMYK as i32 || colorspace == raw::TJCS_TJCS_YCCK as i32;
    let name = match colorspace {
        c if c == raw::TJCS_TJCS_CMYK as i32 => "cmyk8",
        c if c == raw::TJCS_TJCS_YCCK as i32 => "ycck8",
        c if c == raw::TJCS_TJCS_GRAY as i32 => "l8",
        _ => "rgb8",
    };
    let (format, bpp) = if cmyk { (raw::TJPF_TJPF_CMYK, 4) } else { (raw::TJPF_TJPF_RGB, 3) };
    let mut pixels = vec![0u8; w * h * bpp];
    match tj.decompress(bytes, &mut pixels, w, h, format) {
        Ok(()) => {}
        Err(tj::Failure::Warning(msg)) if msg.contains("Premature end of JPEG file") => {
            return Err(fail(format!("image file is truncated ({msg})")))
        }
        Err(tj::Failure::Warning(_)) => {} // complete pixels, as Pillow keeps them
        Err(tj::Failure::Fatal(msg)) => return Err(fail(msg)),
    }
    let data = if cmyk { pixels.chunks_exact(4).flat_map(|p| adobe_cmyk_to_rgb(p[0], p[1], p[2], p[3])).collect() } else { pixels };
    let rgb = RgbImage::from_raw(w as u32, h as u32, data).ok_or_else(|| fail("short buffer".into()))?;
    Ok((rgb, name, jpeg_orientation(bytes)))
}

/// A minimal safe wrapper over TurboJPEG 2's decompression calls (the `turbojpeg` crate's own
/// wrapper reports warnings and fatal errors alike).
#[cfg(feature = "turbojpeg")]
mod tj {
    use std::ffi::CStr;

    use turbojpeg::{libc, raw};

    /// How a TurboJPEG call failed (`tjGetErrorCode`).
    pub(super) enum Failure {
        /// `TJERR_WARNING`: libjpeg warned; the output is complete.
        Warning(String),
        /// `TJERR_FATAL`: nothing usable.
        Fatal(String),
    }

    /// An owned `tjhandle` for decompression.
    pub(super) struct Decompressor(raw::tjhandle);

    impl Decompressor {
        pub(super) fn new() -> Option<Self> {
            // SAFETY: no preconditions; a null handle (allocation failure) is checked.
            let h = unsafe { raw::tjInitDecompress() };
            (!h.is_null()).then_some(Decompressor(h))
        }

        fn failure(&self) -> Failure {
            // SAFETY: self.0 is a live handle; tjGetErrorStr2 returns a NUL-terminated string
            // owned by the handle (or a static one), valid until the next call on it, and we
            // copy it out immediately.
            let (code, msg) = unsafe {
                let msg = raw::tjGetErrorStr2(self.0);
                let msg = if msg.is_null() { String::from("unknown error") } else { CStr::from_ptr(msg).to_string_lossy().into_owned() };
                (raw::tjGetErrorCode(self.0), msg)
            };
            if code == raw::TJERR_TJERR_WARNING as i32 {
                Failure::Warning(msg)
            } else {
                Failure::Fatal(msg)
            }
        }

        /// `(width, height, TJCS colorspace)` from the header.
        pub(super) fn header(&mut self, jpeg: &[u8]) -> Result<(usize, usize, i32), String> {
            let (mut w, mut h, mut subsamp, mut cs): (libc::c_int, libc::c_int, libc::c_int, libc::c_int) = (0, 0, 0, 0);
            let len = libc::c_ulong::try_from(jpeg.len()).map_err(|_| "file too large".to_string())?;
            // SAFETY: the handle is live, `jpeg` is valid for `len` bytes, the out-pointers are
            // valid locals.
            let rc = unsafe { raw::tjDecompressHeader3(self.0, jpeg.as_ptr(), len, &mut w, &mut h, &mut subsamp, &mut cs) };
            if rc != 0 {
                return Err(match self.failure() {
                    Failure::Warning(m) | Failure::Fatal(m) => m,
                });
            }
            let (Ok(w), Ok(h)) = (usize::try_from(w), usize::try_from(h)) else {
                return Err(format!("bad dimensions {w}x{h}"));
            };
            Ok((w, h, cs))
        }

        /// Decode into `out` (`w * h * bpp` bytes, rows packed) as TJPF `format`, no flags
        /// (ISLOW IDCT, fancy upsampling: Pillow's defaults).
        pub(super) fn decompress(&mut self, jpeg: &[u8], out: &mut [u8], w: usize, h: usize, format: i32) -> Result<(), Failure> {
            let bpp = if format == raw::TJPF_TJPF_CMYK { 4 } else { 3 };
            let too_big = || Failure::Fatal("dimensions overflow".into());
            let len = libc::c_ulong::try_from(jpeg.len()).map_err(|_| too_big())?;
            let (ci, pitch, hi) = (libc::c_int::try_from(w), libc::c_int::try_from(w * bpp), libc::c_int::try_from(h));
            let (Ok(ci), Ok(pitch), Ok(hi)) = (ci, pitch, hi) else { return Err(too_big()) };
            if out.len() < w * bpp * h {
                return Err(too_big());
            }
            // SAFETY: the handle is live; `jpeg` is valid for `len` bytes; `out` holds at least
            // pitch * h bytes (checked above) and TurboJPEG writes only `h` rows of `pitch` bytes
            // for an image of these dimensions.
            let rc = unsafe { raw::tjDecompress2(self.0, jpeg.as_ptr(), len, out.as_mut_ptr(), ci, pitch, hi, format, 0) };
            if rc == 0 {
                Ok(())
            } else {
                Err(self.failure())
            }
        }
    }

    impl Drop for Decompressor {
        fn drop(&mut self) {
            // SAFETY: self.0 came from tjInitDecompress and is destroyed exactly once.
            unsafe {
                raw::tjDestroy(self.0);
            }
        }
    }
}

#[cfg(not(feature = "turbojpeg"))]
pub(crate) fn decode_turbo(_bytes: &[u8], path: &Path, _limits: &Limits) -> Result<(RgbImage, &'static str, u8)> {
    Err(Error::ImageDecode { path: path.to_path_buf(), reason: "built without the `turbojpeg` feature".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_formula_matches_pillow_examples() {
        // Raw (inverted) 255 = no ink: white.
        assert_eq!(adobe_cmyk_to_rgb(255, 255, 255, 255), [255, 255, 255]);
        // Full black ink (raw K = 0) gives black whatever C/M/Y say.
        assert_eq!(adobe_cmyk_to_rgb(10, 200, 255, 0), [0, 0, 0]);
        // Full cyan (raw C = 0), no black: R = 0, G = B = 255.
        assert_eq!(adobe_cmyk_to_rgb(0, 255, 255, 255), [0, 255, 255]);
    }

    #[test]
    fn truncation_rule() {
        let scan = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34];
        assert!(!has_eoi_after_scan(&scan));
        assert!(has_eoi_after_scan(&[&scan[..], &[0xFF, 0xD9]].concat()));
        assert!(!has_eoi_after_scan(&[0xFF, 0xD8, 0xFF, 0xD9]));
    }

    #[test]
    fn segment_walker_is_bounded() {
        assert_eq!(exif_payload(&[]), None);
        assert_eq!(exif_payload(&[0xFF, 0xD8, 0xFF]), None);
        assert_eq!(exif_payload(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, b'E']), None);
        let seg = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x0A, b'E', b'x', b'i', b'f', 0, 0, 1, 2, 0xFF, 0xDA];
        assert_eq!(exif_payload(&seg), Some(&[1u8, 2][..]));
        assert_eq!(jpeg_orientation(&seg), 1);
    }
}

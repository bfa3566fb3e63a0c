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

use super::decode::RgbImage;

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

/// `(marker, payload)` of each length-carrying segment between SOI and SOS.
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut pos = if jpeg.starts_with(&[0xFF, 0xD8]) { 2 } else { jpeg.len() };
    std::iter::from_fn(move || loop {
        if jpeg.get(pos) != Some(&0xFF) {
            return None;
        }
        while jpeg.get(pos) == Some(&0xFF) {
            pos += 1; // fill bytes
        }
        let marker = *jpeg.get(pos)?;
        pos += 1;
        match marker {
            0xD9 | 0xDA => return None, // EOI, SOS: metadata is over
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = usize::from(u16::from_be_bytes([*jpeg.get(pos)?, *jpeg.get(pos + 1)?]));
                let payload = jpeg.get(pos + 2..pos + len.max(2))?;
                pos += len.max(2);
                return Some((marker, payload));
            }
        }
    })
}

/// EXIF orientation of a JPEG (1 when absent or unreadable).
pub fn jpeg_orientation(jpeg: &[u8]) -> u8 {
    exif_payload(jpeg).and_then(image::metadata::Orientation::from_exif_chunk).map_or(1, |o| o.to_exif())
}

/// Decode with libjpeg-turbo: `(stored-orientation RGB, source layout name, EXIF orientation)`.
///
/// Errors: [`Error::LimitExceeded`] (pixels, from the header), [`Error::ImageDecode`] (any
/// libjpeg error or warning, e.g. a truncated file — Pillow raises "image file is truncated"
/// for those too).
#[cfg(feature = "turbojpeg")]
pub(crate) fn decode_turbo(bytes: &[u8], path: &Path, limits: &Limits) -> Result<(RgbImage, &'static str, u8)> {
    use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};
    let fail = |e: turbojpeg::Error| Error::ImageDecode { path: path.to_path_buf(), reason: format!("libjpeg-turbo: {e}") };
    let mut dec = Decompressor::new().map_err(fail)?;
    let header = dec.read_header(bytes).map_err(fail)?;
    let (w, h) = (header.width, header.height);
    limits.check_pixels(path, w as u64, h as u64)?;
    if w == 0 || h == 0 {
        return Err(Error::ImageDecode { path: path.to_path_buf(), reason: format!("empty image ({w}x{h})") });
    }
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let (format, bpp, name) = match header.colorspace {
        Colorspace::CMYK => (PixelFormat::CMYK, 4, "cmyk8"),
        Colorspace::YCCK => (PixelFormat::CMYK, 4, "ycck8"),
        Colorspace::Gray => (PixelFormat::RGB, 3, "l8"),
        _ => (PixelFormat::RGB, 3, "rgb8"),
    };
    let mut image = Image { pixels: vec![0u8; w * h * bpp], width: w, pitch: w * bpp, height: h, format };
    dec.decompress(bytes, image.as_deref_mut()).map_err(fail)?;
    let data = if cmyk {
        image.pixels.chunks_exact(4).flat_map(|p| adobe_cmyk_to_rgb(p[0], p[1], p[2], p[3])).collect()
    } else {
        image.pixels
    };
    let rgb = RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::ImageDecode { path: path.to_path_buf(), reason: "short buffer".into() })?;
    Ok((rgb, name, jpeg_orientation(bytes)))
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
    fn segment_walker_is_bounded() {
        assert_eq!(exif_payload(&[]), None);
        assert_eq!(exif_payload(&[0xFF, 0xD8, 0xFF]), None);
        assert_eq!(exif_payload(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, b'E']), None);
        let seg = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x0A, b'E', b'x', b'i', b'f', 0, 0, 1, 2, 0xFF, 0xDA];
        assert_eq!(exif_payload(&seg), Some(&[1u8, 2][..]));
        assert_eq!(jpeg_orientation(&seg), 1);
    }
}

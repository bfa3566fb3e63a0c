//! Image bytes → upright RGB8, exactly as the HF ERNIE-4.5-VL processor sees them through PIL.
//!
//! The reference is transformers 5.24 `Ernie4_5_VLMoeImageProcessorPil` fed with
//! `PIL.ImageOps.exif_transpose(PIL.Image.open(path))` (Pillow 13.0.0). Its `convert_to_rgb`
//! (transformers `image_transforms.convert_to_rgb`) composites any image that has an alpha band
//! or a `transparency` entry onto opaque white with `Image.alpha_composite`, and otherwise calls
//! `Image.convert("RGB")`. Per source layout:
//!
//! | source (Pillow mode)                      | what we do (= what Pillow does)                              |
//! |-------------------------------------------|--------------------------------------------------------------|
//! | RGB 8-bit (PNG, JPEG, WebP, BMP, TIFF)    | as is                                                        |
//! | L 8-bit (gray PNG/JPEG/…)                 | replicate to R = G = B                                       |
//! | 1/2/4-bit gray PNG (`1`, `L;2`, `L;4`)    | expanded by the decoder (×255, ×85, ×17), then replicated      |
//! | P (palette) without transparency          | palette lookup                                               |
//! | P with transparency, LA, RGBA, PA         | alpha-composite on white (Pillow's integer formula, below)   |
//! | I;16 (16-bit gray PNG/TIFF)               | **clamped**: `min(v, 255)` — Pillow's `I;16 → RGB` conversion clips, it does not scale (a 16-bit photo comes out almost white; see `shared/media/LICENSES.md`) |
//! | RGB/RGBA 16-bit PNG (`RGB;16B`)           | high byte (`v >> 8`): Pillow unpacks 16-bit PNG colour to 8-bit by truncation |
//! | LA 16-bit PNG                             | high byte, then composite                                    |
//! | CMYK / YCCK JPEG (Adobe, inverted)        | libjpeg → CMYK, inverted (`CMYK;I` rawmode), Pillow's `cmyk2rgb` with no ICC (feature `turbojpeg`; without it zune-jpeg's conversion, ≤ 2 levels off) |
//! | GIF                                       | first frame only                                             |
//! | float / 32-bit images (TIFF `F`, `I`)     | refused ([`Error::ImageDecode`]): Pillow's `convert("RGB")` of those is not a meaningful image either |
//!
//! **Alpha, and the alternative we support.** Passing a *path* to the HF processor instead of an
//! image goes through `transformers.image_utils.load_image`, which calls `image.convert("RGB")`
//! before the processor's own conversion and so *drops* alpha (RGB values under transparent
//! pixels come through as stored). [`AlphaMode::Drop`] reproduces that path;
//! [`AlphaMode::CompositeOnWhite`] (default) the image path, because transparent pixels' colour
//! is arbitrary (often black) and white is what the processor itself chose.
//!
//! **Alpha composite formula** (Pillow `libImaging/AlphaComposite.c`, destination opaque white):
//! with `a` the source alpha and `v` a colour value, `a == 0 → 255`, otherwise
//! `t = 128·(v·a + 255·(255 − a)) + 128·128; out = (((t >> 8) + t) >> 8) >> 7`
//! (Pillow's 7-bit-precision `coef1 = a·128`, `coef2 = (255 − a)·128`, rounded `÷255`).
//!
//! **EXIF orientation**: tag 0x0112 values 2–8 map to Pillow's `exif_transpose` methods
//! (FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90);
//! read from JPEG APP1 / PNG eXIf / WebP EXIF / TIFF IFD0. An unreadable EXIF block counts as
//! "no orientation" (Pillow likewise ignores a broken tag).

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat};

use crate::error::{Error, Result};
use crate::limits::Limits;

use super::jpeg;
pub use super::rgb::RgbImage;

/// What to do with an alpha channel (or a palette / gray `transparency` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlphaMode {
    /// Composite onto opaque white with Pillow's integer `alpha_composite` (HF processor given a
    /// PIL image: `convert_to_rgb`).
    #[default]
    CompositeOnWhite,
    /// Drop alpha, keep the stored colour (HF processor given a path: `load_image` → `convert("RGB")`).
    Drop,
}

/// Which decoder produced the pixels (reported by `ernie inspect`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderUsed {
    /// libjpeg-turbo through the `turbojpeg` crate (bit-exact with Pillow).
    TurboJpeg,
    /// The `image` crate (zune-jpeg for JPEG; png, image-webp, gif, bmp, tiff otherwise).
    ImageCrate,
}

/// A decoded, upright RGB8 image plus what was learned on the way.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// Upright pixels (EXIF orientation applied).
    pub rgb: RgbImage,
    /// Container format ("png", "jpeg", "webp", "gif", "bmp", "tiff").
    pub format: &'static str,
    /// Source pixel layout as found in the file ("rgb8", "l16", "cmyk8", …).
    pub source_color: &'static str,
    /// Stored size (width, height) before orientation.
    pub stored_size: (u32, u32),
    /// EXIF orientation tag value 1..=8 (1 when absent).
    pub exif_orientation: u8,
    /// Which decoder ran.
    pub decoder: DecoderUsed,
}

/// Formats accepted (everything `image` can sniff but these is refused).
const ACCEPTED: [(ImageFormat, &str); 6] = [
    (ImageFormat::Png, "png"),
    (ImageFormat::Jpeg, "jpeg"),
    (ImageFormat::WebP, "webp"),
    (ImageFormat::Gif, "gif"),
    (ImageFormat::Bmp, "bmp"),
    (ImageFormat::Tiff, "tiff"),
];

/// Decode an image file (format sniffed from its bytes) to upright RGB8.
///
/// Order of checks: file size (metadata, before reading) → format magic → header dimensions
/// against `limits.max_pixels` → pixel decode → conversion → orientation.
///
/// Errors: [`Error::Io`], [`Error::LimitExceeded`] (file bytes, pixels), [`Error::ImageDecode`].
pub fn decode_image_file(path: &Path, limits: &Limits, alpha: AlphaMode) -> Result<DecodedImage> {
    let bytes = limits.read_file_capped(path)?;
    decode_image_bytes(&bytes, path, limits, alpha)
}

/// [`decode_image_file`] on bytes already in memory; `path` only names the input in errors.
pub fn decode_image_bytes(bytes: &[u8], path: &Path, limits: &Limits, alpha: AlphaMode) -> Result<DecodedImage> {
    limits.check_file_bytes(path, bytes.len() as u64)?;
    let fail = |reason: String| Error::ImageDecode { path: path.to_path_buf(), reason };
    let format = image::guess_format(bytes).map_err(|_| fail("not a recognised image format".into()))?;
    let Some(&(format, format_name)) = ACCEPTED.iter().find(|(f, _)| *f == format) else {
        return Err(fail(format!("unsupported image format {format:?} (png, jpeg, webp, gif, bmp, tiff are)")));
    };

    if format == ImageFormat::Jpeg && jpeg::TURBOJPEG_ENABLED {
        let (rgb, source_color, orientation) = jpeg::decode_turbo(bytes, path, limits)?;
        return Ok(finish(rgb, format_name, source_color, orientation, DecoderUsed::TurboJpeg));
    }

    if format == ImageFormat::Jpeg && !jpeg::has_eoi_after_scan(bytes) {
        return Err(fail("image file is truncated (no end-of-image marker after the scan data)".into()));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image_crate_limits(limits));
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    limits.check_pixels(path, u64::from(w), u64::from(h))?;
    if w == 0 || h == 0 {
        return Err(fail(format!("empty image ({w}x{h})")));
    }
    // A broken EXIF block is not fatal (Pillow ignores it too).
    let orientation = decoder.orientation().map(|o| o.to_exif()).unwrap_or(1);
    let img = DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    let (rgb, source_color) = to_rgb8(img, alpha).map_err(fail)?;
    Ok(finish(rgb, format_name, source_color, orientation, DecoderUsed::ImageCrate))
}

fn finish(rgb: RgbImage, format: &'static str, source_color: &'static str, orientation: u8, decoder: DecoderUsed) -> DecodedImage {
    let stored_size = (rgb.width, rgb.height);
    let orientation = if (1..=8).contains(&orientation) { orientation } else { 1 };
    DecodedImage { rgb: apply_orientation(rgb, orientation), format, source_color, stored_size, exif_orientation: orientation, decoder }
}

/// The `image` crate's allocation guard, sized from our pixel cap: 16-bit RGBA is the widest
/// layout we accept (8 bytes per pixel), plus slack for decoder state.
pub(crate) fn image_crate_limits(limits: &Limits) -> image::Limits {
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    lim
}

/// `DynamicImage` → RGB8 with Pillow's per-mode rules (table in the module docs).
fn to_rgb8(img: DynamicImage, alpha: AlphaMode) -> std::result::Result<(RgbImage, &'static str), String> {
    let (w, h) = (img.width(), img.height());
    let n = w as usize * h as usize;
    let mut out = Vec::with_capacity(n * 3);
    let name = match img {
        DynamicImage::ImageRgb8(b) => {
            out = b.into_raw();
            "rgb8"
        }
        DynamicImage::ImageLuma8(b) => {
            out.extend(b.as_raw().iter().flat_map(|&v| [v, v, v]));
            "l8"
        }
        DynamicImage::ImageLumaA8(b) => {
            out.extend(b.as_raw().chunks_exact(2).flat_map(|p| gray_alpha(p[0], p[1], alpha)));
            "la8"
        }
        DynamicImage::ImageRgba8(b) => {
            out.extend(b.as_raw().chunks_exact(4).flat_map(|p| rgba(p[0], p[1], p[2], p[3], alpha)));
            "rgba8"
        }
        DynamicImage::ImageLuma16(b) => {
            // Pillow I;16 → L/RGB clips to 255 (Convert.c I16_L / I16_RGB), no scaling.
            out.extend(b.as_raw().iter().flat_map(|&v| {
                let g = v.min(255) as u8;
                [g, g, g]
            }));
            "l16"
        }
        DynamicImage::ImageLumaA16(b) => {
            out.extend(b.as_raw().chunks_exact(2).flat_map(|p| gray_alpha(hi(p[0]), hi(p[1]), alpha)));
            "la16"
        }
        DynamicImage::ImageRgb16(b) => {
            out.extend(b.as_raw().iter().map(|&v| hi(v)));
            "rgb16"
        }
        DynamicImage::ImageRgba16(b) => {
            out.extend(b.as_raw().chunks_exact(4).flat_map(|p| rgba(hi(p[0]), hi(p[1]), hi(p[2]), hi(p[3]), alpha)));
            "rgba16"
        }
        other => return Err(format!("unsupported pixel layout {:?} (float images are not accepted)", other.color())),
    };
    RgbImage::from_raw(w, h, out).map(|rgb| (rgb, name)).ok_or_else(|| "decoder returned a short buffer".to_string())
}

/// High byte of a 16-bit sample (Pillow's `;16B` unpackers keep the most significant byte).
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

fn gray_alpha(v: u8, a: u8, alpha: AlphaMode) -> [u8; 3] {
    let g = match alpha {
        AlphaMode::CompositeOnWhite => composite_on_white(v, a),
        AlphaMode::Drop => v,
    };
    [g, g, g]
}

fn rgba(r: u8, g: u8, b: u8, a: u8, alpha: AlphaMode) -> [u8; 3] {
    match alpha {
        AlphaMode::CompositeOnWhite => [composite_on_white(r, a), composite_on_white(g, a), composite_on_white(b, a)],
        AlphaMode::Drop => [r, g, b],
    }
}

/// One colour value of Pillow's `Image.alpha_composite(white, src)` (see module docs).
/// Checked against Pillow 13 for all 65,536 (v, a) pairs by `tests/image_parity.rs`.
pub fn composite_on_white(v: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const PRECISION_BITS: u32 = 7;
    let (v, a) = (u32::from(v), u32::from(a));
    // Opaque white destination: outa255 = 255*255, so coef1 = a << 7 and coef2 = (255 - a) << 7.
    let coef1 = a << PRECISION_BITS;
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let t = v * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    ((((t >> 8) + t) >> 8) >> PRECISION_BITS) as u8
}

/// Apply EXIF orientation `o` (1..=8) as Pillow's `ImageOps.exif_transpose` does.
///
/// Worked example: orientation 6 ("rotate 90° CW to view") on a stored 427 (W) × 640 (H) image
/// gives 640 × 427; the output's top-left pixel is the stored bottom-left one.
pub fn apply_orientation(img: RgbImage, o: u8) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    if !(2..=8).contains(&o) || img.data.len() != w * h * 3 {
        return img;
    }
    let swap = o >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; w * h * 3];
    for oy in 0..oh {
        for ox in 0..ow {
            // Source coordinates of output pixel (ox, oy).
            let (sx, sy) = match o {
                2 => (w - 1 - ox, oy),          // FLIP_LEFT_RIGHT
                3 => (w - 1 - ox, h - 1 - oy),  // ROTATE_180
                4 => (ox, h - 1 - oy),          // FLIP_TOP_BOTTOM
                5 => (oy, ox),                  // TRANSPOSE
                6 => (oy, h - 1 - ox),          // ROTATE_270 (90° clockwise)
                7 => (w - 1 - oy, h - 1 - ox),  // TRANSVERSE
                _ => (w - 1 - oy, ox),          // 8: ROTATE_90 (90° counter-clockwise)
            };
            let (s, d) = ((sy * w + sx) * 3, (oy * ow + ox) * 3);
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    RgbImage { width: ow as u32, height: oh as u32, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect();
        RgbImage::from_raw(w, h, data).unwrap()
    }

    fn at(img: &RgbImage, x: u32, y: u32) -> u8 {
        img.data[((y * img.width + x) * 3) as usize]
    }

    #[test]
    fn orientation_six_rotates_clockwise() {
        // 3 wide x 2 high:   0 1 2      rotated CW (2 wide x 3 high):  3 0
        //                    3 4 5                                      4 1
        //                                                               5 2
        let r = apply_orientation(numbered(3, 2), 6);
        assert_eq!((r.width, r.height), (2, 3));
        let got: Vec<u8> = (0..3).flat_map(|y| (0..2).map(move |x| (x, y))).map(|(x, y)| at(&r, x, y)).collect();
        assert_eq!(got, [3, 0, 4, 1, 5, 2]);
    }

    #[test]
    fn orientations_compose_like_their_names() {
        let img = numbered(4, 3);
        // 8 undoes 6; 3 twice is identity; 5 and 7 are their own inverses.
        assert_eq!(apply_orientation(apply_orientation(img.clone(), 6), 8), img);
        assert_eq!(apply_orientation(apply_orientation(img.clone(), 3), 3), img);
        assert_eq!(apply_orientation(apply_orientation(img.clone(), 5), 5), img);
        assert_eq!(apply_orientation(apply_orientation(img.clone(), 7), 7), img);
        assert_eq!(apply_orientation(img.clone(), 1), img);
    }

    #[test]
    fn composite_endpoints() {
        assert_eq!(composite_on_white(0, 0), 255);
        assert_eq!(composite_on_white(17, 255), 17);
        assert_eq!(composite_on_white(0, 128), 127);
    }
}

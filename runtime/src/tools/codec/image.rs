//! Latents and BSQ bits ↔ images for `ernie codec` (issue #15 item 2).
//!
//! - [`read_latent`]: the `latent` tensor `[C, h, w]` (or `[1, C, h, w]`) of a safetensors file;
//!   [`decode_latent_to_png`]: [`VisionDecoder::decode`] (pipeline scaling, clamp) → [`to_rgb8`] →
//!   an 8-bit RGB PNG.
//! - [`encode_image_bits`]: image → `[-1, 1]` planes → [`VisionDecoder::encode`] (pipeline latent)
//!   → [`encode_multiscale`] (residual BSQ bits, coarse to fine, ending at the latent grid) →
//!   [`BitsJson`]; [`decode_bits`] sums the scales ([`decode_multiscale`]) and decodes.
//! - [`psnr_rgb8`]: the round trip's PSNR in dB over 8-bit samples.

use std::io;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use serde::{Deserialize, Serialize};

use crate::model::vision_decoder::bsq::{decode_multiscale, encode_multiscale};
use crate::model::vision_decoder::{to_rgb8, VisionDecoder};
use crate::weights::Weights;
use crate::{Error, Result};

/// Largest decoded image side accepted, pixels (a 64 MP image holds 768 MiB of f32 planes).
pub const MAX_IMAGE_SIDE: usize = 8192;

/// An 8-bit RGB image, interleaved `[h, w, 3]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    /// `[height, width, 3]` bytes.
    pub data: Vec<u8>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// The bits file of `ernie codec encode --image` / `decode --bits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BitsJson {
    /// Bits per cell d (the latent channels).
    pub channels: usize,
    /// The latent grid `[h, w]` (the last scale).
    pub latent: [usize; 2],
    /// The scale schedule `[[h_k, w_k], …]`, coarse to fine.
    pub scales: Vec<[usize; 2]>,
    /// Per scale, the bits `[d, h_k, w_k]` (planar) as a string of `0` / `1`.
    pub bits: Vec<String>,
    /// The encoded image, when known (for the round trip's PSNR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

/// Reads tensor `latent` (f32, bf16 or f16) of a safetensors file as `(values, [C, h, w])`.
///
/// Errors: [`Error::Io`] / [`Error::Safetensors`] for the file, [`Error::Request`] for a missing
/// tensor or a shape that is not `[C, h, w]` / `[1, C, h, w]`.
pub fn read_latent(path: &Path) -> Result<(Vec<f32>, [usize; 3])> {
    let mut w = Weights::from_files(&[path.to_path_buf()])?;
    let all = w.take_prefix("latent");
    let t = all.get("latent").ok_or_else(|| Error::Request(format!("{}: no tensor named `latent`", path.display())))?;
    let shape = match *t.shape() {
        [c, h, w] | [1, c, h, w] => [c, h, w],
        ref s => return Err(Error::Request(format!("{}: latent has shape {s:?}, expected [C, h, w]", path.display()))),
    };
    Ok((t.to_f32_vec(), shape))
}

/// Pipeline decode of `latent` `[c, h, w]` to an 8-bit RGB image.
///
/// Errors: [`VisionDecoder::decode`]'s shape errors (wrong channel count, …).
pub fn decode_latent(vae: &VisionDecoder, latent: &[f32], [c, h, w]: [usize; 3]) -> Result<Rgb8> {
    let side = h.max(w).saturating_mul(vae.config().downscale());
    if side > MAX_IMAGE_SIDE {
        return Err(Error::Request(format!("latent {h}×{w} decodes to a {side}-pixel side; at most {MAX_IMAGE_SIDE} is accepted")));
    }
    let (pix, oh, ow) = vae.decode(latent, c, h, w)?; // [3, H, W] in [-1, 1]
    Ok(Rgb8 { data: to_rgb8(&pix, oh, ow)?, height: oh, width: ow })
}

/// `img` encoded as an 8-bit RGB PNG file's bytes.
///
/// Errors: [`Error::Request`] for sides beyond `u32` or a buffer that is not `[h, w, 3]`.
pub fn png_bytes(img: &Rgb8) -> Result<Vec<u8>> {
    let side = |v: usize| u32::try_from(v).map_err(|_| Error::Request(format!("image side {v} is too large for PNG")));
    let (w, h) = (side(img.width)?, side(img.height)?);
    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(&img.data, w, h, ExtendedColorType::Rgb8).map_err(|e| Error::Request(format!("PNG encoding: {e}")))?;
    Ok(png)
}

/// Writes `img` as an 8-bit RGB PNG ([`png_bytes`]). Errors: as [`png_bytes`]; [`Error::Io`]
/// naming `path`.
pub fn write_png(img: &Rgb8, path: &Path) -> Result<()> {
    std::fs::write(path, png_bytes(img)?).map_err(|e: io::Error| Error::Io { path: path.to_path_buf(), source: e })
}

/// `ernie codec decode --latent`: reads the latent, decodes, writes the PNG; returns the image.
///
/// Errors: as [`read_latent`], [`decode_latent`] and [`write_png`].
pub fn decode_latent_to_png(vae: &VisionDecoder, latent: &Path, out: &Path) -> Result<Rgb8> {
    let (z, shape) = read_latent(latent)?;
    let img = decode_latent(vae, &z, shape)?;
    write_png(&img, out)?;
    Ok(img)
}

/// Reads an image file as 8-bit RGB. Errors ([`Error::Request`]): unreadable or not an image.
pub fn read_rgb8(path: &Path) -> Result<Rgb8> {
    let img = image::open(path).map_err(|e| Error::Request(format!("{}: not a readable image ({e})", path.display())))?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if h.max(w) > MAX_IMAGE_SIDE {
        return Err(Error::Request(format!("{}: {w}×{h} image; at most {MAX_IMAGE_SIDE} pixels a side", path.display())));
    }
    Ok(Rgb8 { data: img.into_raw(), height: h, width: w })
}

/// The default scale schedule ending at the latent grid `(h, w)`: the grid halved (rounding up)
/// until 1×1, coarse to fine (`8×8` → `1×1, 2×2, 4×4, 8×8`).
pub fn default_scales(h: usize, w: usize) -> Vec<(usize, usize)> {
    let mut s = vec![(h, w)];
    while let Some(&(a, b)) = s.last().filter(|&&(a, b)| a > 1 || b > 1) {
        s.push((a.div_ceil(2), b.div_ceil(2)));
    }
    s.reverse();
    s
}

/// `ernie codec encode --image`: image → pipeline latent → residual BSQ bits over `scales`
/// (default [`default_scales`] of the latent grid).
///
/// Errors: as [`read_rgb8`], [`VisionDecoder::encode`] (decoder-only checkpoint, image channels),
/// and [`encode_multiscale`] (a schedule not ending at the latent grid, or finer than it).
pub fn encode_image_bits(vae: &VisionDecoder, path: &Path, scales: Option<&[(usize, usize)]>) -> Result<BitsJson> {
    let img = read_rgb8(path)?;
    let (h, w) = (img.height, img.width);
    let n = h * w;
    let mut planes = vec![0.0f32; 3 * n]; // [3, H, W] in [-1, 1]
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            planes[ch * n + i] = f32::from(v) / 127.5 - 1.0;
        }
    }
    let (latent, lh, lw) = vae.encode(&planes, 3, h, w)?; // [d, lh, lw]
    let d = vae.config().latent_channels;
    let scales = scales.map_or_else(|| default_scales(lh, lw), <[_]>::to_vec);
    let bits = encode_multiscale(&latent, d, lh, lw, &scales)?;
    Ok(BitsJson {
        channels: d,
        latent: [lh, lw],
        scales: scales.iter().map(|&(a, b)| [a, b]).collect(),
        bits: bits.iter().map(|b| b.iter().map(|&x| if x != 0 { '1' } else { '0' }).collect()).collect(),
        source: Some(path.to_path_buf()),
    })
}

/// `ernie codec decode --bits`: the summed latent of every scale, decoded to an image.
///
/// Errors ([`Error::Request`] / [`Error::ShapeMismatch`]): a bit that is not `0`/`1`, channels
/// other than the decoder's, scale sizes that disagree with the bits, a bad schedule.
pub fn decode_bits(vae: &VisionDecoder, b: &BitsJson) -> Result<Rgb8> {
    let [hf, wf] = b.latent;
    let d = b.channels;
    if d != vae.config().latent_channels {
        return Err(Error::Request(format!("bits have {d} channels, this decoder takes {}", vae.config().latent_channels)));
    }
    let scales: Vec<(usize, usize)> = b.scales.iter().map(|&[h, w]| (h, w)).collect();
    let mut bits = Vec::with_capacity(b.bits.len());
    for (k, s) in b.bits.iter().enumerate() {
        let v: Vec<u8> = s
            .bytes()
            .map(|c| match c {
                b'0' => Ok(0),
                b'1' => Ok(1),
                _ => Err(Error::Request(format!("bits of scale {k}: {:?} is not 0 or 1", c as char))),
            })
            .collect::<Result<_>>()?;
        bits.push(v);
    }
    let side = hf.max(wf).saturating_mul(vae.config().downscale());
    if side > MAX_IMAGE_SIDE || d.saturating_mul(hf).saturating_mul(wf) > MAX_IMAGE_SIDE * MAX_IMAGE_SIDE {
        return Err(Error::Request(format!("latent {hf}×{wf} decodes to a {side}-pixel side; at most {MAX_IMAGE_SIDE} is accepted")));
    }
    let latent = decode_multiscale(&bits, d, hf, wf, &scales)?; // [d, hf, wf]
    decode_latent(vae, &latent, [d, hf, wf])
}

/// PSNR in dB of two 8-bit images of one size: `10·log10(255² / MSE)` (∞ when equal).
///
/// Errors ([`Error::Request`]): different sizes.
pub fn psnr_rgb8(a: &Rgb8, b: &Rgb8) -> Result<f64> {
    if (a.height, a.width) != (b.height, b.width) || a.data.len() != b.data.len() {
        return Err(Error::Request(format!("PSNR: {}×{} vs {}×{} images", a.width, a.height, b.width, b.height)));
    }
    let mse = a.data.iter().zip(&b.data).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.data.len().max(1) as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_psnr() {
        assert_eq!(default_scales(8, 8), vec![(1, 1), (2, 2), (4, 4), (8, 8)]);
        assert_eq!(default_scales(3, 5), vec![(1, 1), (1, 2), (2, 3), (3, 5)]);
        assert_eq!(default_scales(1, 1), vec![(1, 1)]);
        let a = Rgb8 { data: vec![0, 0, 0, 10, 10, 10], height: 1, width: 2 };
        let b = Rgb8 { data: vec![0, 0, 0, 0, 10, 10], height: 1, width: 2 };
        // MSE = 100 / 6.
        assert!((psnr_rgb8(&a, &b).unwrap() - 10.0 * (255.0f64 * 255.0 * 6.0 / 100.0).log10()).abs() < 1e-9);
        assert_eq!(psnr_rgb8(&a, &a).unwrap(), f64::INFINITY);
    }
}

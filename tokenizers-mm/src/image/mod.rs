//! Images → `pixel_values [n_patches, 3·14·14]` + `grid_thw`, as the HF ERNIE-4.5-VL image
//! processor computes them.
//!
//! Reference: transformers 5.24.0 `Ernie4_5_VLMoeImageProcessorPil` (the PIL backend of
//! `models/ernie4_5_vl_moe/image_processing_pil_ernie4_5_vl_moe.py`) with Pillow 13.0.0, given
//! `ImageOps.exif_transpose(Image.open(path))`. (The default `Ernie4_5_VLMoeImageProcessor` is
//! the torchvision backend: same sizes, grids and layout, but its resize and fused
//! normalisation differ from the PIL backend's by up to 5 levels of 255 on the corpus (mean
//! < 0.2); we follow PIL because that is what the original ERNIE processor and PIL-based
//! servers use.) Stages, each public for testing:
//!
//! 1. [`decode_image_file`]: bytes → upright RGB8 with Pillow's mode conversions
//!    ([`decode`] module docs list every case: alpha on white, 16-bit gray clamped, CMYK, EXIF).
//! 2. [`smart_resize`]: target (height, width), multiples of `patch_size · merge_size` = 28
//!    within `[min_pixels, max_pixels]` (spec §3.7).
//! 3. [`resize()`]: Pillow's two-pass fixed-point bicubic, bit for bit ([`mod@resize`] module).
//! 4. [`normalize_patchify`]: `x / 255` (f64, then f32), `(x − mean) / std` (f32), then rows of
//!    `C · T · 14 · 14` in the 2×2 merge-window order of spec §3.2.
//!
//! Exactness (tests/image_parity.rs against tests/fixtures/media_goldens.json): sizes and grids
//! equal; resized u8 equal; normalised f32 bit-identical — for JPEG only with the `turbojpeg`
//! feature (otherwise JPEG pixels are within a few levels).

pub mod decode;
pub mod jpeg;
pub mod resize;
mod rgb;

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

pub use decode::{apply_orientation, decode_image_bytes, decode_image_file, AlphaMode, DecodedImage, DecoderUsed, RgbImage};
pub use resize::{resize, Filter};

use crate::config_fields::Fields;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::stream::{MediaItem, MediaKind, MediaTensor, TokenLayout};
use crate::text::read_json;

/// OpenAI CLIP mean (transformers `OPENAI_CLIP_MEAN`), the ERNIE-4.5-VL default.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP std (transformers `OPENAI_CLIP_STD`).
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// `smart_resize` refuses `max(h, w) / min(h, w)` above this (hard-coded in transformers).
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// The image half of a checkpoint's `preprocessor_config.json`.
///
/// Defaults are transformers' `Ernie4_5_VLMoeImageProcessor` class attributes; the keys read
/// are exactly the ones `save_pretrained` writes (`size.shortest_edge` = min_pixels,
/// `size.longest_edge` = max_pixels), plus the original checkpoints' top-level `min_pixels` /
/// `max_pixels` spelling.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessorConfig {
    /// ViT patch side, pixels (`patch_size`, 14).
    pub patch_size: usize,
    /// Spatial merge (`merge_size`, 2): tokens = patches / merge².
    pub merge_size: usize,
    /// Frames per patch (`temporal_patch_size`; 1 for ERNIE images — a single frame is not
    /// repeated; other processors use 2 and duplicate it).
    pub temporal_patch_size: usize,
    /// Lower area bound of `smart_resize` (`size.shortest_edge`, 56·56 = 3136).
    pub min_pixels: u64,
    /// Upper area bound of `smart_resize` (`size.longest_edge`, 28·28·6177 = 4,842,768).
    pub max_pixels: u64,
    /// `do_resize` (true).
    pub do_resize: bool,
    /// `do_rescale` (true).
    pub do_rescale: bool,
    /// `rescale_factor` (1/255 = 0.00392156862745098).
    pub rescale_factor: f64,
    /// `do_normalize` (true).
    pub do_normalize: bool,
    /// `image_mean` (CLIP).
    pub image_mean: [f64; 3],
    /// `image_std` (CLIP).
    pub image_std: [f64; 3],
    /// `resample` (PIL code 3 = bicubic).
    pub resample: Filter,
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        ImageProcessorConfig {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 1,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 6177,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            resample: Filter::Bicubic,
        }
    }
}

impl ImageProcessorConfig {
    /// Read `dir/preprocessor_config.json`.
    ///
    /// Errors: [`Error::Io`] (missing), [`Error::Json`], [`Error::ConfigField`] (a key of the
    /// wrong type or out of range, e.g. `resample: 0` (nearest) or `patch_size: 0`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let json = read_json(&path)?;
        Self::from_json(&path, &json)
    }

    /// Parse an already-loaded preprocessor config (`path` names it in errors).
    pub fn from_json(path: &Path, json: &Json) -> Result<Self> {
        let f = Fields::new(path, json)?;
        let d = Self::default();
        let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
            match f.get(key) {
                None => Ok(default),
                Some(Json::Number(n)) => n.as_f64().map(|x| [x; 3]).ok_or_else(|| f.err(key, "not a number".into())),
                Some(Json::Array(a)) if a.len() == 3 => {
                    let mut out = [0.0; 3];
                    for (o, v) in out.iter_mut().zip(a) {
                        *o = v.as_f64().ok_or_else(|| f.err(key, format!("expected numbers, got {v}")))?;
                    }
                    Ok(out)
                }
                Some(v) => Err(f.err(key, format!("expected a number or 3 numbers, got {v}"))),
            }
        };
        let (min_pixels, max_pixels) = f.pixel_bounds(d.min_pixels, d.max_pixels)?;
        let resample_code = match f.get("resample") {
            None => 3,
            Some(v) => v.as_i64().ok_or_else(|| f.err("resample", format!("expected a PIL filter code, got {v}")))?,
        };
        let resample = Filter::from_pil_code(resample_code)
            .ok_or_else(|| f.err("resample", format!("PIL filter {resample_code} is not supported (1-5 are)")))?;
        let rescale_factor = match f.get("rescale_factor") {
            None => d.rescale_factor,
            Some(v) => v.as_f64().ok_or_else(|| f.err("rescale_factor", format!("expected a number, got {v}")))?,
        };
        let cfg = ImageProcessorConfig {
            patch_size: f.uint("patch_size", d.patch_size as u64)? as usize,
            merge_size: f.uint("merge_size", d.merge_size as u64)? as usize,
            temporal_patch_size: f.uint("temporal_patch_size", d.temporal_patch_size as u64)? as usize,
            min_pixels,
            max_pixels,
            do_resize: f.boolean("do_resize", d.do_resize)?,
            do_rescale: f.boolean("do_rescale", d.do_rescale)?,
            rescale_factor,
            do_normalize: f.boolean("do_normalize", d.do_normalize)?,
            image_mean: triple("image_mean", d.image_mean)?,
            image_std: triple("image_std", d.image_std)?,
            resample,
        };
        for (name, v) in [("patch_size", cfg.patch_size), ("merge_size", cfg.merge_size), ("temporal_patch_size", cfg.temporal_patch_size)] {
            if v == 0 || v > 1024 {
                return Err(f.err(name, format!("{v} is out of range 1..=1024")));
            }
        }
        if cfg.image_std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(f.err("image_std", "must be finite and non-zero".into()));
        }
        Ok(cfg)
    }

    /// `patch_size · merge_size`: every resized side is a multiple of it (28).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Length of one `pixel_values` row: `3 · temporal_patch_size · patch_size²` (588).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// `(height, width)` after `smart_resize` for a source of `height × width`.
    ///
    /// Errors: [`Error::ImageSize`] (see [`smart_resize`]).
    pub fn target_size(&self, path: &Path, height: u64, width: u64) -> Result<(u64, u64)> {
        if !self.do_resize {
            return Ok((height, width));
        }
        smart_resize(height, width, self.factor() as u64, self.min_pixels, self.max_pixels)
            .map_err(|reason| Error::ImageSize { path: path.to_path_buf(), height, width, reason })
    }
}

/// transformers' `smart_resize` for ERNIE-4.5-VL (spec §3.7), in the same f64 arithmetic:
///
/// ```text
/// refuse max(h, w) / min(h, w) > 200
/// h' = round(h / f) · f,  w' = round(w / f) · f          (round half to even, like Python)
/// if h'·w' > max:  β = √(h·w / max); h' = max(f, ⌊h / β / f⌋ · f); w' likewise
/// elif h'·w' < min: β = √(min / (h·w)); h' = ⌈h · β / f⌉ · f;      w' likewise
/// ```
///
/// Worked examples (f = 28, defaults): 70 × 70 → round(2.5) = 2 → 56 × 56 (half to even);
/// 1 × 1 → 0 × 0 < 3136 → β = 56 → 56 × 56; 8 × 12 (the tiny GIF) → β = 5.715 → 56 × 84.
///
/// Errors (a reason string): a zero side, the aspect-ratio limit, or a zero-sized result
/// (only possible with `min_pixels = 0`).
pub fn smart_resize(height: u64, width: u64, factor: u64, min_pixels: u64, max_pixels: u64) -> std::result::Result<(u64, u64), String> {
    if height == 0 || width == 0 {
        return Err("image has a zero side".into());
    }
    if factor == 0 {
        return Err("resize factor is 0".into());
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_ASPECT_RATIO {
        return Err(format!("absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio}"));
    }
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    if !(h_bar >= f && w_bar >= f && h_bar.is_finite() && w_bar.is_finite() && h_bar * w_bar <= 1e15) {
        return Err(format!("resize target {h_bar}x{w_bar} is not usable"));
    }
    Ok((h_bar as u64, w_bar as u64))
}

/// Per-channel lookup `u8 → f32` of rescale + normalise, bit-identical to the PIL backend:
/// `rescale` computes `f32(f64(x) · rescale_factor)` and `normalize` `(x − f32(mean)) /
/// f32(std)` in f32 (transformers `image_transforms.rescale` / `normalize`).
pub fn normalization_lut(cfg: &ImageProcessorConfig) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        let (mean, std) = (cfg.image_mean[c] as f32, cfg.image_std[c] as f32);
        for (v, out) in table.iter_mut().enumerate() {
            let x = if cfg.do_rescale { (v as f64 * cfg.rescale_factor) as f32 } else { v as f32 };
            *out = if cfg.do_normalize { (x - mean) / std } else { x };
        }
    }
    lut
}

/// Rescale, normalise and patchify a resized `[H, W, 3]` u8 image.
///
/// Output `[gh · gw, C · T · p · p]` f32 (gh = H / p, gw = W / p, p = patch_size,
/// T = temporal_patch_size), rows in merge-window order `(gh/m, gw/m, m, m)` and each row
/// channel-major `(C, T, py, px)` — the transpose `(1, 4, 2, 5, 0, 3, 6)` of
/// `image.reshape(C, gh/m, m, p, gw/m, m, p)` in the reference `patchify`; T copies of the frame.
/// Returns `(pixel_values, [1, gh, gw])`.
///
/// Errors: [`Error::ImageSize`] if H or W is not a multiple of `p · m`.
pub fn normalize_patchify(path: &Path, img: &RgbImage, cfg: &ImageProcessorConfig) -> Result<(Vec<f32>, [usize; 3])> {
    let (h, w) = (img.height as usize, img.width as usize);
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    if img.data.len() != h * w * 3 {
        return Err(Error::ImageSize {
            path: path.to_path_buf(),
            height: h as u64,
            width: w as u64,
            reason: format!("pixel buffer holds {} bytes, not height x width x 3", img.data.len()),
        });
    }
    if h == 0 || w == 0 || h % (p * m) != 0 || w % (p * m) != 0 {
        return Err(Error::ImageSize {
            path: path.to_path_buf(),
            height: h as u64,
            width: w as u64,
            reason: format!("sides must be non-zero multiples of patch_size x merge_size = {}", p * m),
        });
    }
    let lut = normalization_lut(cfg);
    let (gh, gw) = (h / p, w / p);
    let dim = 3 * t * p * p;
    let mut out = vec![0f32; gh * gw * dim]; // [n_patches, C*T*p*p]
    let mut rows = out.chunks_exact_mut(dim);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let Some(row) = rows.next() else { break };
                    let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for c in 0..3 {
                        for tt in 0..t {
                            for py in 0..p {
                                let src = &img.data[((y0 + py) * w + x0) * 3..];
                                let dst = &mut row[((c * t + tt) * p + py) * p..][..p];
                                for (px, d) in dst.iter_mut().enumerate() {
                                    *d = lut[c][usize::from(src[px * 3 + c])];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((out, [1, gh, gw]))
}

/// One processed image: the tensor the vision encoder takes plus what `ernie inspect` reports.
#[derive(Clone, Debug)]
pub struct ProcessedImage {
    /// The file (or the name given to in-memory pixels).
    pub source: PathBuf,
    /// Decoder facts (`None` for pixels handed in directly).
    pub decoded: Option<DecodedInfo>,
    /// Upright source size `(height, width)`.
    pub source_size: (u64, u64),
    /// Size after `smart_resize` `(height, width)`.
    pub resized_size: (u64, u64),
    /// `[1, gh, gw]` in patches (gh = resized height / patch_size).
    pub grid_thw: [usize; 3],
    /// `[gh · gw, patch_dim]` f32, row-major.
    pub pixel_values: Vec<f32>,
    /// Row length (588).
    pub patch_dim: usize,
    /// Spatial merge (tokens = gh · gw / merge²).
    pub merge_size: usize,
}

/// Decoder facts kept for reporting.
#[derive(Clone, Debug)]
pub struct DecodedInfo {
    /// Container format.
    pub format: &'static str,
    /// Source pixel layout.
    pub source_color: &'static str,
    /// Stored (width, height), before EXIF orientation.
    pub stored_size: (u32, u32),
    /// EXIF orientation 1..=8.
    pub exif_orientation: u8,
    /// Which decoder ran.
    pub decoder: DecoderUsed,
}

impl ProcessedImage {
    /// LLM tokens of this image: `gh · gw / merge²`.
    pub fn n_tokens(&self) -> usize {
        self.grid_thw[1] * self.grid_thw[2] / (self.merge_size * self.merge_size)
    }

    /// Move into a stream [`MediaItem`] (kind image, layout `(1, gh/m, gw/m)`).
    pub fn into_media_item(self) -> MediaItem {
        let m = self.merge_size;
        let mut details = serde_json::Map::new();
        details.insert("source_size".into(), json!([self.source_size.0, self.source_size.1]));
        details.insert("resized".into(), json!([self.resized_size.0, self.resized_size.1]));
        if let Some(d) = &self.decoded {
            details.insert("format".into(), json!(d.format));
            details.insert("source_color".into(), json!(d.source_color));
            details.insert("stored_size".into(), json!([d.stored_size.1, d.stored_size.0]));
            details.insert("exif_orientation".into(), json!(d.exif_orientation));
            details.insert(
                "decoder".into(),
                json!(match d.decoder {
                    DecoderUsed::TurboJpeg => "libjpeg-turbo",
                    DecoderUsed::ImageCrate => "image",
                }),
            );
        }
        let n = self.grid_thw[1] * self.grid_thw[2];
        MediaItem {
            kind: MediaKind::Image,
            source: self.source.display().to_string(),
            tensor: MediaTensor { shape: vec![n, self.patch_dim], data: self.pixel_values, channels: 3 },
            grid_thw: Some(self.grid_thw),
            layout: TokenLayout::Grid { t: 1, h: self.grid_thw[1] / m, w: self.grid_thw[2] / m },
            details,
        }
    }
}

/// The whole image pipeline with its settings: config, limits, alpha handling.
#[derive(Clone, Debug)]
pub struct ImageProcessor {
    /// From preprocessor_config.json.
    pub config: ImageProcessorConfig,
    /// Input caps.
    pub limits: Limits,
    /// Alpha handling (default: composite on white).
    pub alpha: AlphaMode,
}

impl ImageProcessor {
    /// A processor with default limits and alpha handling.
    pub fn new(config: ImageProcessorConfig) -> Self {
        ImageProcessor { config, limits: Limits::default(), alpha: AlphaMode::default() }
    }

    /// Decode, resize, normalise and patchify one file.
    ///
    /// Errors: [`Error::Io`], [`Error::LimitExceeded`], [`Error::ImageDecode`], [`Error::ImageSize`].
    pub fn process_file(&self, path: &Path) -> Result<ProcessedImage> {
        let bytes = self.limits.read_file_capped(path)?;
        self.process_bytes(&bytes, path)
    }

    /// [`Self::process_file`] on bytes in memory (`name` is used in errors and reports).
    pub fn process_bytes(&self, bytes: &[u8], name: &Path) -> Result<ProcessedImage> {
        let d = decode_image_bytes(bytes, name, &self.limits, self.alpha)?;
        let info = DecodedInfo {
            format: d.format,
            source_color: d.source_color,
            stored_size: d.stored_size,
            exif_orientation: d.exif_orientation,
            decoder: d.decoder,
        };
        let mut p = self.process_rgb(&d.rgb, name)?;
        p.decoded = Some(info);
        Ok(p)
    }

    /// Resize (as configured) an already-decoded RGB8 image.
    ///
    /// Output `[H', W', 3]` u8. Errors: [`Error::ImageSize`].
    pub fn resize_rgb(&self, rgb: &RgbImage, name: &Path) -> Result<RgbImage> {
        let (h, w) = self.config.target_size(name, u64::from(rgb.height), u64::from(rgb.width))?;
        let (h, w) = (u32::try_from(h), u32::try_from(w));
        let (Ok(h), Ok(w)) = (h, w) else {
            return Err(Error::ImageSize {
                path: name.to_path_buf(),
                height: u64::from(rgb.height),
                width: u64::from(rgb.width),
                reason: "resize target does not fit in u32".into(),
            });
        };
        self.limits.check_pixels(name, u64::from(w), u64::from(h))?;
        Ok(resize(rgb, w, h, self.config.resample))
    }

    /// Resize + normalise + patchify an already-decoded RGB8 image.
    pub fn process_rgb(&self, rgb: &RgbImage, name: &Path) -> Result<ProcessedImage> {
        let resized = self.resize_rgb(rgb, name)?;
        let (pixel_values, grid_thw) = normalize_patchify(name, &resized, &self.config)?;
        Ok(ProcessedImage {
            source: name.to_path_buf(),
            decoded: None,
            source_size: (u64::from(rgb.height), u64::from(rgb.width)),
            resized_size: (u64::from(resized.height), u64::from(resized.width)),
            grid_thw,
            pixel_values,
            patch_dim: self.config.patch_dim(),
            merge_size: self.config.merge_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(h: u64, w: u64) -> (u64, u64) {
        smart_resize(h, w, 28, 3136, 4_842_768).unwrap()
    }

    #[test]
    fn smart_resize_examples() {
        assert_eq!(sr(70, 70), (56, 56)); // round(2.5) = 2: half to even
        assert_eq!(sr(98, 98), (112, 112)); // round(3.5) = 4
        assert_eq!(sr(1, 1), (56, 56));
        assert_eq!(sr(8, 12), (56, 84));
        assert_eq!(sr(512, 512), (504, 504));
        assert_eq!(sr(40, 1000), (28, 1008));
        assert_eq!(sr(1080, 1920), (1092, 1932));
        assert!(smart_resize(1, 1000, 28, 3136, 4_842_768).is_err()); // ratio 1000 > 200
        assert!(smart_resize(0, 10, 28, 3136, 4_842_768).is_err());
        // Small max_pixels: the downscale branch floors, but never below one factor.
        assert_eq!(smart_resize(31, 639, 28, 3136, 28 * 28 * 16).unwrap(), (28, 504));
    }

    #[test]
    fn patchify_order_is_merge_window_major() {
        // 56 x 56 image whose red value encodes the patch index (row-major over the 4x4 patch grid).
        let mut data = vec![0u8; 56 * 56 * 3];
        for y in 0..56 {
            for x in 0..56 {
                data[(y * 56 + x) * 3] = ((y / 14) * 4 + x / 14) as u8;
            }
        }
        let img = RgbImage::from_raw(56, 56, data).unwrap();
        let cfg = ImageProcessorConfig { do_normalize: false, do_rescale: false, ..Default::default() };
        let (pv, grid) = normalize_patchify(Path::new("t"), &img, &cfg).unwrap();
        assert_eq!(grid, [1, 4, 4]);
        let first_red: Vec<f32> = pv.chunks_exact(588).map(|r| r[0]).collect();
        // windows (0,0),(0,1),(1,0),(1,1); inside each: (0,0),(0,1),(1,0),(1,1)
        assert_eq!(first_red, [0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]);
    }

    #[test]
    fn config_defaults_and_errors() {
        let p = Path::new("preprocessor_config.json");
        let cfg = ImageProcessorConfig::from_json(p, &json!({"size": {"shortest_edge": 100, "longest_edge": 2000}})).unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels, cfg.patch_size), (100, 2000, 14));
        let cfg = ImageProcessorConfig::from_json(p, &json!({"min_pixels": 5, "max_pixels": 6})).unwrap();
        assert_eq!((cfg.min_pixels, cfg.max_pixels), (5, 6));
        assert!(ImageProcessorConfig::from_json(p, &json!({"resample": 0})).is_err());
        assert!(ImageProcessorConfig::from_json(p, &json!({"patch_size": "14"})).is_err());
        assert!(ImageProcessorConfig::from_json(p, &json!({"image_std": [1, 0, 1]})).is_err());
    }
}

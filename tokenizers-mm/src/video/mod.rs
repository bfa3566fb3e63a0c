//! Video: file → sampled frames (rotation applied, timestamp drawn, resized to the per-frame
//! pixel budget) → frame indices, timestamps, `grid_thw` and the token count.
//!
//! Reference: transformers 5.24.0 `Ernie4_5_VLMoeVideoProcessor` with its default decoder,
//! torchcodec (`seek_mode="exact"`), spec §3.7:
//! 1. metadata: frame count from a demux scan, `fps = n / (end − begin)` ([`VideoMeta`]);
//! 2. [`sample_frames`]: `min(max(n, 16), 180, total)` frames (or `fps`-based), evenly spaced by
//!    `torch.arange(0, total, total / n).int()`, never past the last decodable frame;
//! 3. decode those frames as RGB8, **display rotation applied** (the container's display
//!    matrix; torchcodec does the same, so a `rotate=90` phone video becomes portrait);
//! 4. draw `"time: HH:MM:SS.ss"` ([`format_timestamp`] of `index / fps`) on each frame at its
//!    decoded size ([`draw_timestamp`]);
//! 5. repeat the last frame if the count is odd (temporal patch 2);
//! 6. resize every frame to `smart_resize(h, w, 28, min_pixels = 299·28², max_pixels = 1196·28²)`
//!    with bicubic (the processor resizes uint8 tensors with torchvision's antialiased bicubic,
//!    the same separable algorithm as Pillow's; here the Pillow-exact `image::resize`);
//! 7. `grid_thw = (frames, h/14, w/14)`, tokens `= frames/2 · h/28 · w/28`.
//!
//! Sources: video files need the `ffmpeg` feature (ffmpeg-next on Debian's libav*); without it
//! they fail with [`Error::VideoBackendMissing`]. Animated GIFs always work (the `image` crate),
//! with frame times from the GIF delays.

#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod gif;
mod overlay;
mod sample;

use std::path::Path;

use serde_json::json;

pub use overlay::{draw_timestamp, overlay_sizes, ROBOTO_REGULAR};
pub use sample::{format_timestamp, frame_timestamp, sample_frames, video_grid_thw, FrameSampling, SamplingConfig};

use crate::config_fields::Fields;
use crate::error::{Error, Result};
use crate::image::{normalize_patchify, resize, smart_resize, Filter, ImageProcessorConfig, RgbImage};
use crate::stream::{MediaItem, MediaKind, MediaTensor, TokenLayout};
use crate::limits::Limits;

/// Video preprocessing parameters; [`Default`] is the ERNIE-4.5-VL video processor.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoConfig {
    /// Frame sampling (fps / num_frames / min / max / temporal patch).
    pub sampling: SamplingConfig,
    /// ViT patch side, px: 14.
    pub patch_size: usize,
    /// Spatial merge: 2 (so sizes are multiples of 28).
    pub merge_size: usize,
    /// Fewest pixels per resized frame (`size.shortest_edge`): 299·28·28.
    pub min_pixels: u64,
    /// Most pixels per resized frame (`size.longest_edge`): 1196·28·28.
    pub max_pixels: u64,
    /// Draw the timestamp overlay (`draw_on_frames`): true.
    pub draw_timestamps: bool,
    /// Resize frames (`do_resize`): true. When false, frames keep their decoded size (the sizes
    /// still report what `smart_resize` would give).
    pub resize_frames: bool,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingConfig::default(),
            patch_size: 14,
            merge_size: 2,
            min_pixels: 299 * 28 * 28,
            max_pixels: 1196 * 28 * 28,
            draw_timestamps: true,
            resize_frames: true,
        }
    }
}

impl VideoConfig {
    /// Reads `dir/video_preprocessor_config.json` (transformers' `Ernie4_5_VLMoeVideoProcessor`
    /// keys: `size.{shortest_edge,longest_edge}` (or `min_pixels` / `max_pixels`), `patch_size`,
    /// `merge_size`, `temporal_patch_size`, `min_frames`, `max_frames`, `fps`, `num_frames`,
    /// `draw_on_frames`, `do_resize`); a missing file gives the processor defaults ([`Default`]).
    ///
    /// Errors: [`Error::Json`], [`Error::ConfigField`] naming a key of the wrong type or range.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("video_preprocessor_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let json = crate::text::read_json(&path)?;
        Self::from_json(&path, &json)
    }

    /// Parses an already-loaded video preprocessor config (`path` names it in errors).
    pub fn from_json(path: &Path, json: &serde_json::Value) -> Result<Self> {
        let f = Fields::new(path, json)?;
        let d = Self::default();
        let (min_pixels, max_pixels) = f.pixel_bounds(d.min_pixels, d.max_pixels)?;
        let fps = match f.get("fps") {
            None => d.sampling.fps,
            Some(v) => Some(v.as_f64().filter(|x| *x > 0.0 && x.is_finite()).ok_or_else(|| f.err("fps", format!("expected a positive number, got {v}")))?),
        };
        let sampling = SamplingConfig {
            fps,
            num_frames: f.opt_uint("num_frames")?.map(|n| n as usize),
            min_frames: f.uint("min_frames", d.sampling.min_frames as u64)? as usize,
            max_frames: f.uint("max_frames", d.sampling.max_frames as u64)? as usize,
            temporal_patch_size: f.uint("temporal_patch_size", d.sampling.temporal_patch_size as u64)? as usize,
        };
        let cfg = VideoConfig {
            sampling,
            patch_size: f.uint("patch_size", d.patch_size as u64)? as usize,
            merge_size: f.uint("merge_size", d.merge_size as u64)? as usize,
            min_pixels,
            max_pixels,
            draw_timestamps: f.boolean("draw_on_frames", d.draw_timestamps)?,
            resize_frames: f.boolean("do_resize", d.resize_frames)?,
        };
        for (name, v) in [
            ("patch_size", cfg.patch_size),
            ("merge_size", cfg.merge_size),
            ("temporal_patch_size", cfg.sampling.temporal_patch_size),
            ("max_frames", cfg.sampling.max_frames),
        ] {
            if v == 0 || v > 100_000 {
                return Err(f.err(name, format!("{v} is out of range 1..=100000")));
            }
        }
        if cfg.sampling.min_frames > cfg.sampling.max_frames {
            return Err(f.err("min_frames", format!("{} exceeds max_frames {}", cfg.sampling.min_frames, cfg.sampling.max_frames)));
        }
        Ok(cfg)
    }
}

/// What the container says about the video stream (after a demux scan for files).
#[derive(Clone, Debug, PartialEq)]
pub struct VideoMeta {
    /// Frames in the stream (packets found by the scan; GIF: frames).
    pub total_frames: usize,
    /// Average frame rate, `total_frames / duration_s` (torchcodec's `average_fps`).
    pub fps: f64,
    /// `end − begin` of the stream, seconds.
    pub duration_s: f64,
    /// Displayed width, px (after rotation).
    pub width: u32,
    /// Displayed height, px (after rotation).
    pub height: u32,
    /// Counter-clockwise display rotation applied to decoded frames: 0, 90, 180 or 270.
    pub rotation_deg: u32,
    /// Codec name (`h264`, `vp9`, `gif`, …).
    pub codec: String,
    /// Which decoder read it: `"ffmpeg"` or `"gif"`.
    pub backend: &'static str,
    /// The file, for reports.
    pub source: String,
}

/// A preprocessed video: what the vision encoder gets and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInput {
    /// Stream metadata.
    pub meta: VideoMeta,
    /// Sampled indices, timestamps, padded indices.
    pub sampling: FrameSampling,
    /// One RGB8 frame per `sampling.padded_indices` entry, `[resized_height, resized_width, 3]`
    /// each (timestamps drawn when configured).
    pub frames: Vec<RgbImage>,
    /// Frame height after `smart_resize`, px (multiple of 28).
    pub resized_height: usize,
    /// Frame width after `smart_resize`, px (multiple of 28).
    pub resized_width: usize,
    /// `(t, h, w)` in patches: `(frames, resized_height / 14, resized_width / 14)`.
    pub grid_thw: [usize; 3],
    /// LLM tokens: `t/2 · h/2 · w/2` of `grid_thw`.
    pub n_tokens: usize,
}

impl VideoInput {
    /// Normalised patches of all frames, `[t · gh · gw, 3 · p · p]` f32: each frame rescaled and
    /// CLIP-normalised and cut into `p × p` patches in 2×2 merge-window order, frames one after
    /// another — the processor's `pixel_values_videos` (its temporal patching happens later, in
    /// the resampler, so a patch row holds one frame).
    ///
    /// Errors: [`Error::ImageSize`] if the frames were not resized to multiples of 28.
    pub fn pixel_values(&self, cfg: &VideoConfig) -> Result<Vec<f32>> {
        let img_cfg = ImageProcessorConfig {
            patch_size: cfg.patch_size,
            merge_size: cfg.merge_size,
            temporal_patch_size: 1,
            ..ImageProcessorConfig::default()
        };
        let path = Path::new(&self.meta.source);
        let mut out = Vec::new();
        for frame in &self.frames {
            out.extend(normalize_patchify(path, frame, &img_cfg)?.0);
        }
        Ok(out)
    }

    /// Moves into a stream [`MediaItem`]: tensor `[t · gh · gw, 588]`, layout
    /// `(t / 2, gh / 2, gw / 2)`, details for `ernie inspect` (source and resized size, fps,
    /// rotation, frame indices, timestamps).
    ///
    /// Errors: as [`VideoInput::pixel_values`].
    pub fn into_media_item(self, cfg: &VideoConfig) -> Result<MediaItem> {
        let data = self.pixel_values(cfg)?;
        let [t, gh, gw] = self.grid_thw;
        let (m, tm) = (cfg.merge_size.max(1), cfg.sampling.temporal_patch_size.max(1));
        let mut details = serde_json::Map::new();
        let m_ = &self.meta;
        details.insert("source_size".into(), json!([m_.height, m_.width]));
        details.insert("resized".into(), json!([self.resized_height, self.resized_width]));
        details.insert("backend".into(), json!(m_.backend));
        details.insert("codec".into(), json!(m_.codec));
        details.insert("rotation_deg".into(), json!(m_.rotation_deg));
        details.insert("total_frames".into(), json!(m_.total_frames));
        details.insert("fps".into(), json!(m_.fps));
        details.insert("frame_indices".into(), json!(self.sampling.indices));
        details.insert("padded_frame_indices".into(), json!(self.sampling.padded_indices));
        details.insert("timestamps".into(), json!(self.sampling.timestamps_s));
        details.insert(
            "timestamp_text".into(),
            json!(self.sampling.timestamps_s.iter().map(|&t| format_timestamp(t)).collect::<Vec<_>>()),
        );
        Ok(MediaItem {
            kind: MediaKind::Video,
            source: m_.source.clone(),
            tensor: MediaTensor { shape: vec![t * gh * gw, 3 * cfg.patch_size * cfg.patch_size], data, channels: 3 },
            grid_thw: Some(self.grid_thw),
            layout: TokenLayout::Grid { t: t / tm, h: gh / m, w: gw / m },
            details,
        })
    }
}

/// `smart_resize` with the video budget (the image side's implementation, spec §3.7), as a
/// typed error naming the file.
fn smart_resize_dims(path: &Path, height: usize, width: usize, factor: usize, min_pixels: u64, max_pixels: u64) -> Result<(usize, usize)> {
    smart_resize(height as u64, width as u64, factor as u64, min_pixels, max_pixels)
        .map(|(h, w)| (h as usize, w as usize))
        .map_err(|reason| Error::VideoDecode { path: path.to_path_buf(), reason: format!("{width}x{height} frames: {reason}") })
}

/// True when the bytes start like a GIF (`GIF87a` / `GIF89a`).
fn is_gif(head: &[u8]) -> bool {
    head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a")
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path).map_err(io)?.take(16).read_to_end(&mut head).map_err(io)?;
    Ok(head)
}

/// Reads the stream metadata only (a demux scan for files, a frame walk for GIFs): no pixel
/// decoding for files. Errors as [`load_video`].
pub fn probe_video(path: &Path, limits: &Limits) -> Result<VideoMeta> {
    let len = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?.len();
    limits.check_file_bytes(path, len)?;
    if is_gif(&read_head(path)?) {
        return Ok(gif::GifVideo::open(path, limits)?.meta);
    }
    probe_file(path, limits)
}

#[cfg(feature = "ffmpeg")]
fn probe_file(path: &Path, limits: &Limits) -> Result<VideoMeta> {
    ffmpeg::scan(path, limits)
}

#[cfg(not(feature = "ffmpeg"))]
fn probe_file(path: &Path, _limits: &Limits) -> Result<VideoMeta> {
    Err(Error::VideoBackendMissing { path: path.to_path_buf() })
}

/// Decodes the frames at `wanted` (strictly increasing) and hands each to `on_frame(index,
/// frame)` in order; returns how many frames the stream really had up to the point decoding
/// stopped (`> wanted.last()` on success).
fn decode_wanted(
    path: &Path,
    meta: &VideoMeta,
    wanted: &[usize],
    limits: &Limits,
    on_frame: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    if meta.backend == "gif" {
        return gif::GifVideo::open(path, limits)?.decode(wanted, on_frame);
    }
    decode_file(path, meta, wanted, limits, on_frame)
}

#[cfg(feature = "ffmpeg")]
fn decode_file(
    path: &Path,
    meta: &VideoMeta,
    wanted: &[usize],
    limits: &Limits,
    on_frame: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    ffmpeg::decode(path, meta, wanted, limits, on_frame)
}

#[cfg(not(feature = "ffmpeg"))]
fn decode_file(
    path: &Path,
    _meta: &VideoMeta,
    _wanted: &[usize],
    _limits: &Limits,
    _on_frame: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    Err(Error::VideoBackendMissing { path: path.to_path_buf() })
}

/// The whole video pipeline for one file (see module docs).
///
/// Errors: [`Error::Io`], [`Error::LimitExceeded`] (file bytes, frame count, pixels per frame —
/// all checked before decoding pixels), [`Error::VideoBackendMissing`] (a non-GIF file without
/// the `ffmpeg` feature), [`Error::VideoDecode`] (malformed, unsupported, no frames),
/// [`Error::InvalidConfig`] (impossible sampling parameters).
pub fn load_video(path: &Path, cfg: &VideoConfig, limits: &Limits) -> Result<VideoInput> {
    let meta = probe_video(path, limits)?;
    limits.check_video_frames(path, meta.total_frames as u64)?;
    limits.check_pixels(path, u64::from(meta.width), u64::from(meta.height))?;
    let factor = cfg.patch_size * cfg.merge_size;
    let (rh, rw) = smart_resize_dims(path, meta.height as usize, meta.width as usize, factor, cfg.min_pixels, cfg.max_pixels)?;

    let mut sampling = sample_frames(meta.total_frames, meta.fps, &cfg.sampling)?;
    let mut frames = decode_sampled(path, &meta, &sampling, cfg, (rh, rw), limits)?;
    if frames.len() < sampling.indices.len() {
        // The stream ended before the last sampled index (a packet that does not decode, a
        // truncated file): sample again from the frames that do exist, so no index points past
        // the last decodable frame.
        let decodable = frames.len_decoded;
        if decodable == 0 {
            return Err(Error::VideoDecode { path: path.to_path_buf(), reason: "no decodable frame".into() });
        }
        sampling = sample_frames(decodable, meta.fps, &cfg.sampling)?;
        frames = decode_sampled(path, &meta, &sampling, cfg, (rh, rw), limits)?;
        if frames.len() < sampling.indices.len() {
            return Err(Error::VideoDecode {
                path: path.to_path_buf(),
                reason: format!("decoded {} of {} frames on the second pass", frames.len(), sampling.indices.len()),
            });
        }
    }
    let mut frames = frames.frames;
    while frames.len() < sampling.padded_indices.len() {
        match frames.last() {
            Some(last) => frames.push(last.clone()),
            None => break,
        }
    }
    let grid_thw = video_grid_thw(frames.len(), rh, rw, cfg.patch_size, cfg.sampling.temporal_patch_size);
    let m = cfg.merge_size.max(1);
    let n_tokens = grid_thw[0] / cfg.sampling.temporal_patch_size.max(1) * (grid_thw[1] / m) * (grid_thw[2] / m);
    Ok(VideoInput { meta, sampling, frames, resized_height: rh, resized_width: rw, grid_thw, n_tokens })
}

struct Decoded {
    frames: Vec<RgbImage>,
    len_decoded: usize,
}

impl Decoded {
    fn len(&self) -> usize {
        self.frames.len()
    }
}

fn decode_sampled(
    path: &Path,
    meta: &VideoMeta,
    sampling: &FrameSampling,
    cfg: &VideoConfig,
    (rh, rw): (usize, usize),
    limits: &Limits,
) -> Result<Decoded> {
    let mut frames = Vec::with_capacity(sampling.padded_indices.len());
    let mut on_frame = |idx: usize, mut frame: RgbImage| -> Result<()> {
        let pos = sampling.indices.iter().position(|&i| i == idx);
        if cfg.draw_timestamps {
            if let Some(p) = pos {
                let text = format_timestamp(sampling.timestamps_s[p]);
                draw_timestamp(&mut frame.data, frame.width as usize, frame.height as usize, &text)?;
            }
        }
        if cfg.resize_frames && (frame.width as usize != rw || frame.height as usize != rh) {
            frame = resize(&frame, rw as u32, rh as u32, Filter::Bicubic);
        }
        frames.push(frame);
        Ok(())
    };
    let len_decoded = decode_wanted(path, meta, &sampling.indices, limits, &mut on_frame)?;
    Ok(Decoded { frames, len_decoded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_video_budget() {
        let p = Path::new("x");
        let (min, max) = (299 * 784, 1196 * 784);
        // 320x240 is below min_pixels (234 416): scaled up.
        assert_eq!(smart_resize_dims(p, 240, 320, 28, min, max).unwrap(), (420, 560));
        assert_eq!(smart_resize_dims(p, 320, 240, 28, min, max).unwrap(), (560, 420));
        assert_eq!(smart_resize_dims(p, 720, 1280, 28, min, max).unwrap(), (728, 1288));
        assert!(smart_resize_dims(p, 1, 300, 28, min, max).is_err());
    }
}

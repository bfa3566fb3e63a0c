//! Animated GIF as a video source (no ffmpeg needed), through the `image` crate's GIF decoder,
//! which composites each frame onto the logical screen (disposal methods applied).
//!
//! Timing follows ffmpeg's GIF demuxer (what torchcodec would report): a frame delay under 2 cs
//! counts as 10 cs; `fps = frames / Σ delays`. Alpha is dropped (RGB of the composited canvas;
//! never-painted pixels are black), as ffmpeg's `rgb24` conversion of its `bgra` GIF output does.
//! A still GIF is a one-frame video.

use std::io::Cursor;
use std::path::Path;

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, ImageDecoder};

use super::VideoMeta;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::limits::Limits;

/// Smallest GIF delay honoured, ms (ffmpeg `min_delay` = 2 cs); shorter delays become 100 ms.
const MIN_DELAY_MS: f64 = 20.0;
const DEFAULT_DELAY_MS: f64 = 100.0;

pub(crate) struct GifVideo {
    bytes: Vec<u8>,
    path: std::path::PathBuf,
    pub meta: VideoMeta,
}

impl GifVideo {
    /// Reads the file (size-capped) and walks its frames once for the count and delays.
    pub fn open(path: &Path, limits: &Limits) -> Result<GifVideo> {
        let bytes = limits.read_file_capped(path)?;
        let fail = |reason: String| Error::VideoDecode { path: path.to_path_buf(), reason };
        let decoder = decoder(&bytes, limits).map_err(&fail)?;
        let (w, h) = decoder.dimensions();
        limits.check_pixels(path, u64::from(w), u64::from(h))?;
        let mut n = 0usize;
        let mut total_ms = 0.0f64;
        for frame in decoder.into_frames() {
            let frame = frame.map_err(|e| fail(format!("frame {n}: {e}")))?;
            let (num, den) = frame.delay().numer_denom_ms();
            let ms = if den == 0 { 0.0 } else { f64::from(num) / f64::from(den) };
            total_ms += if ms < MIN_DELAY_MS { DEFAULT_DELAY_MS } else { ms };
            n += 1;
            limits.check_video_frames(path, n as u64)?;
        }
        if n == 0 {
            return Err(fail("GIF has no frames".into()));
        }
        let duration_s = total_ms / 1000.0;
        let meta = VideoMeta {
            total_frames: n,
            fps: n as f64 / duration_s,
            duration_s,
            width: w,
            height: h,
            rotation_deg: 0,
            codec: "gif".into(),
            backend: "gif",
            source: path.display().to_string(),
        };
        Ok(GifVideo { bytes, path: path.to_path_buf(), meta })
    }

    /// Decodes again and hands the frames at `wanted` (increasing) to `on_frame`; returns the
    /// number of frames walked.
    pub fn decode(&self, wanted: &[usize], on_frame: &mut dyn FnMut(usize, RgbImage) -> Result<()>) -> Result<usize> {
        let fail = |reason: String| Error::VideoDecode { path: self.path.clone(), reason };
        let Some(&last) = wanted.last() else { return Ok(0) };
        let decoder = decoder(&self.bytes, &Limits::default()).map_err(&fail)?;
        let mut next = 0usize;
        let mut walked = 0usize;
        for (i, frame) in decoder.into_frames().enumerate() {
            let frame = frame.map_err(|e| fail(format!("frame {i}: {e}")))?;
            walked = i + 1;
            if wanted.get(next) == Some(&i) {
                let rgba = frame.into_buffer();
                let (w, h) = rgba.dimensions();
                let data: Vec<u8> = rgba.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                let img = RgbImage::from_raw(w, h, data).ok_or_else(|| fail("frame buffer size mismatch".into()))?;
                on_frame(i, img)?;
                next += 1;
            }
            if i >= last {
                break;
            }
        }
        Ok(walked)
    }
}

fn decoder<'a>(bytes: &'a [u8], limits: &Limits) -> std::result::Result<GifDecoder<Cursor<&'a [u8]>>, String> {
    let mut d = GifDecoder::new(Cursor::new(bytes)).map_err(|e| format!("not a readable GIF: {e}"))?;
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(1 << 20));
    d.set_limits(l).map_err(|e| format!("GIF exceeds limits: {e}"))?;
    Ok(d)
}

//! Frame sampling, timestamps and the per-video token budget of the ERNIE-4.5-VL video processor.
//!
//! Source: transformers 5.24.0 `models/ernie4_5_vl_moe/video_processing_ernie4_5_vl_moe.py`
//! (`sample_frames`, `_convert_timestamp`, `_prepare_input_videos`, `get_num_of_video_patches`)
//! and `video_utils.py` (`VideoMetadata.timestamps`). Metadata (`total_num_frames`, `fps`) is what
//! the processor's default decoder, torchcodec in `seek_mode="exact"`, reports: the number of
//! video packets found by a demux scan, and `fps = n_frames / (end - begin)` with `begin` the
//! first pts and `end` the largest `pts + duration` (see `ffmpeg.rs`).

use crate::error::{Error, Result};

/// Frame-sampling parameters (the processor's defaults in [`Default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Frames per second to sample (`fps` kwarg). `None`: every frame, within the min/max.
    pub fps: Option<f64>,
    /// Exact number of frames (`num_frames` kwarg); exclusive with `fps`.
    pub num_frames: Option<usize>,
    /// Fewest frames sampled (unless the video has fewer): 16.
    pub min_frames: usize,
    /// Most frames sampled: 180.
    pub max_frames: usize,
    /// Frames merged in time by the resampler: 2. An odd sample count gets its last frame repeated.
    pub temporal_patch_size: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { fps: None, num_frames: None, min_frames: 16, max_frames: 180, temporal_patch_size: 2 }
    }
}

/// The processor's frame choice for one video.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameSampling {
    /// Decoded-frame indices (presentation order, 0-based) as the processor samples them,
    /// strictly increasing, each `< total_frames`.
    pub indices: Vec<usize>,
    /// `indices[i] / fps`, seconds (`VideoMetadata.timestamps`; not the stream pts).
    pub timestamps_s: Vec<f64>,
    /// `indices` padded to a multiple of `temporal_patch_size` by repeating the last index
    /// (`_prepare_input_videos` copies the last frame, timestamp overlay included).
    pub padded_indices: Vec<usize>,
}

/// `sample_frames` of the ERNIE-4.5-VL processor, exactly:
///
/// ```text
/// num_frames = total / video_fps * fps   if fps else total
/// num_frames = min(max(num_frames, min_frames), max_frames, total)
/// indices    = torch.arange(0, total, total / num_frames).int()
/// ```
///
/// `torch.arange` with a float step yields float32 values `f32(i · step)` (computed in f64) for
/// `i < ceil(total / step)`, then `.int()` truncates. With `fps` set, `num_frames` need not be an
/// integer and the count is `ceil(num_frames)`: e.g. 1000 frames at 30 fps sampled at 2 fps →
/// `num_frames = 66.67`, step 15.0, 67 indices `0, 15, …, 990` (then one repeated → 68).
///
/// Worked example (corpus `slideshow_320x240_h264_aac.mp4`, 48 frames at 12 fps, defaults):
/// `num_frames = min(max(48, 16), 180, 48) = 48`, step 1.0, indices `0..48`, timestamps `i/12`.
/// The 15-frame WebM: `min(max(15, 16), 180, 15) = 15` → `0..15`, padded with a second `14`.
///
/// Errors ([`Error::InvalidConfig`]): `total_frames == 0`, a non-positive `video_fps` when `fps`
/// is set, `num_frames` outside `[min_frames, max_frames]` or above `total_frames`, both `fps`
/// and `num_frames` given — the cases where the processor raises (or divides by zero).
pub fn sample_frames(total_frames: usize, video_fps: f64, cfg: &SamplingConfig) -> Result<FrameSampling> {
    let bad = |problem: String| Error::InvalidConfig { field: "video sampling".into(), problem };
    if total_frames == 0 {
        return Err(bad("the video has no frames".into()));
    }
    if cfg.temporal_patch_size == 0 {
        return Err(bad("temporal_patch_size must be > 0".into()));
    }
    let total = total_frames as f64;
    let num_frames: f64 = match (cfg.num_frames, cfg.fps) {
        (Some(_), Some(_)) => return Err(bad("`num_frames` and `fps` are mutually exclusive".into())),
        (Some(n), None) => {
            if n < cfg.min_frames || n > cfg.max_frames {
                return Err(bad(format!("num_frames {n} outside [{}, {}]", cfg.min_frames, cfg.max_frames)));
            }
            n as f64
        }
        (None, fps) => {
            let n = match fps {
                Some(fps) => {
                    if !video_fps.is_finite() || video_fps <= 0.0 || !fps.is_finite() || fps <= 0.0 {
                        return Err(bad(format!("cannot sample at {fps} fps from a {video_fps} fps video")));
                    }
                    total / video_fps * fps
                }
                None => total,
            };
            // Python's min(max(n, min_frames), max_frames, total) on int/float values.
            n.max(cfg.min_frames as f64).min(cfg.max_frames as f64).min(total)
        }
    };
    if num_frames > total {
        return Err(bad(format!("num_frames {num_frames} exceeds the video's {total_frames} frames")));
    }
    if num_frames.is_nan() || num_frames <= 0.0 {
        return Err(bad("sampling would pick no frame (max_frames = 0?)".into()));
    }
    let step = total / num_frames;
    let count = (total / step).ceil() as usize;
    let mut indices = Vec::with_capacity(count + 1);
    for i in 0..count {
        let v = (i as f64 * step) as f32; // torch.arange: float32 values computed in double
        let idx = v as i64; // .int(): truncation toward zero
        // Never past the last frame (f32 rounding could reach `total` for huge videos).
        let idx = idx.clamp(0, total_frames as i64 - 1) as usize;
        if indices.last().is_none_or(|&last| idx > last) {
            indices.push(idx);
        }
    }
    Ok(finish(indices, video_fps, cfg.temporal_patch_size))
}

/// Builds timestamps and the temporal padding for given indices.
fn finish(indices: Vec<usize>, video_fps: f64, temporal: usize) -> FrameSampling {
    let fps = if video_fps > 0.0 && video_fps.is_finite() { video_fps } else { 24.0 };
    let timestamps_s = indices.iter().map(|&i| frame_timestamp(i, fps)).collect();
    let mut padded_indices = indices.clone();
    while padded_indices.len() % temporal != 0 {
        if let Some(&last) = padded_indices.last() {
            padded_indices.push(last);
        } else {
            break;
        }
    }
    FrameSampling { indices, timestamps_s, padded_indices }
}

/// Timestamp of frame `index` in seconds as the processor computes it: `index / fps` where the
/// index is an int32 tensor element, so the division happens in **float32**
/// (`f32(index) / f32(fps)`); returned widened to f64.
pub fn frame_timestamp(index: usize, fps: f64) -> f64 {
    f64::from(index as f32 / fps as f32)
}

/// `_convert_timestamp`: `"time: HH:MM:SS.ss"`. The processor does this arithmetic on float32
/// tensors (`t // 3600`, `t % 3600` = fmod for t ≥ 0, …) and formats the float32 value with
/// Python's `:05.02f` (round-half-even on the exact binary value, which Rust's `{:.2}` also
/// does); so 59.999 s prints as `60.00`, like the reference. Negative or non-finite input
/// prints as zero.
pub fn format_timestamp(seconds: f64) -> String {
    let t = seconds as f32;
    let t = if t.is_finite() && t > 0.0 { t } else { 0.0 };
    let hours = ((t - t % 3600.0) / 3600.0).floor();
    let t = t % 3600.0;
    let mins = ((t - t % 60.0) / 60.0).floor();
    let secs = t % 60.0;
    format!("time: {:02}:{:02}:{:05.2}", hours as u64, mins as u64, f64::from(secs))
}

/// Number of ERNIE-4.5-VL tokens for a video of `n_frames` sampled frames resized to
/// `(height, width)`: `ceil_even(n_frames) / 2 · (height / 28) · (width / 28)` — patches are
/// 14 px, merged 2×2 spatially and 2 in time (spec §3.3, §3.6). `grid_thw` is
/// `(ceil_even(n_frames), height / 14, width / 14)`.
pub fn video_grid_thw(n_frames: usize, height: usize, width: usize, patch: usize, temporal: usize) -> [usize; 3] {
    let t = n_frames.div_ceil(temporal.max(1)) * temporal.max(1);
    [t, height / patch.max(1), width / patch.max(1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_python() {
        assert_eq!(format_timestamp(0.0), "time: 00:00:00.00");
        assert_eq!(format_timestamp(1.25), "time: 00:00:01.25");
        assert_eq!(format_timestamp(3725.5), "time: 01:02:05.50");
        assert_eq!(format_timestamp(59.999), "time: 00:00:60.00");
        assert_eq!(format_timestamp(1.125), "time: 00:00:01.12"); // exact tie: half to even
        assert_eq!(format_timestamp(frame_timestamp(13, 12.0)), "time: 00:00:01.08");
    }

    #[test]
    fn default_sampling_of_corpus_like_videos() {
        let s = sample_frames(48, 12.0, &SamplingConfig::default()).unwrap();
        assert_eq!(s.indices, (0..48).collect::<Vec<_>>());
        let s = sample_frames(15, 5.0, &SamplingConfig::default()).unwrap();
        assert_eq!(s.indices.len(), 15);
        assert_eq!(s.padded_indices.len(), 16);
        assert_eq!(s.padded_indices[15], 14);
        let cfg = SamplingConfig { fps: Some(2.0), ..Default::default() };
        let s = sample_frames(1000, 30.0, &cfg).unwrap();
        assert_eq!(s.indices.len(), 67);
        assert_eq!(*s.indices.last().unwrap(), 990);
        assert!(sample_frames(0, 30.0, &cfg).is_err());
    }
}

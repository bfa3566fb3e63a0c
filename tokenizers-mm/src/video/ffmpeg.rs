//! Video files through ffmpeg-next (Debian's libavformat / libavcodec / libswscale), feature
//! `ffmpeg`.
//!
//! - [`scan`] reproduces torchcodec's `seek_mode="exact"` metadata, which the transformers video
//!   processor reads: a demux-only pass over the best video stream counting packets (those
//!   flagged `AV_PKT_FLAG_DISCARD` excepted), `begin` = smallest pts, `end` = largest
//!   `pts + duration`, `fps = n / (end − begin)` (falls back to the header's average frame
//!   rate when the scan has no usable timing).
//! - Rotation: the stream's display matrix (`AV_PKT_DATA_DISPLAYMATRIX`) →
//!   `av_display_rotation_get` (counter-clockwise degrees) rounded to a multiple of 90; decoded
//!   frames are rotated by it, as torchcodec and the ffmpeg CLI (autorotate) do. Mirroring
//!   matrices are treated as their rotation part (ffmpeg 5.1's CLI does the same).
//! - [`decode`] decodes in presentation order, converts each wanted frame to RGB24 with
//!   swscale (bilinear flags, the frame's own size: the conversion torchcodec and PyAV use), and
//!   stops after the last wanted index. Packets the decoder rejects are skipped; a stream that
//!   ends early returns the count it reached, and the caller re-samples.

use std::path::Path;
use std::sync::Once;

use ffmpeg_next as ff;

use super::VideoMeta;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::limits::Limits;

/// `AV_PKT_FLAG_DISCARD`: packet to be dropped after decoding (not a frame).
const PKT_FLAG_DISCARD: i32 = 0x0004;
/// Consecutive demuxer errors after which a stream is treated as ended.
const MAX_READ_ERRORS: usize = 64;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        // Corrupt inputs are expected; errors are reported through our own types.
        ff::util::log::set_level(ff::util::log::Level::Quiet);
    });
}

fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::VideoDecode { path: path.to_path_buf(), reason: reason.to_string() }
}

/// `av_display_rotation_get` of a 3×3 16.16 fixed-point display matrix, in counter-clockwise
/// degrees, rounded to 0 / 90 / 180 / 270 (NaN or a degenerate matrix → 0).
fn rotation_from_display_matrix(bytes: &[u8]) -> u32 {
    let m: Vec<f64> = bytes
        .chunks_exact(4)
        .take(9)
        .map(|c| f64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])) / 65_536.0)
        .collect();
    if m.len() < 9 {
        return 0;
    }
    let s0 = m[0].hypot(m[3]);
    let s1 = m[1].hypot(m[4]);
    if s0 == 0.0 || s1 == 0.0 {
        return 0;
    }
    let ccw = -(m[1] / s1).atan2(m[0] / s0).to_degrees();
    if !ccw.is_finite() {
        return 0;
    }
    (((ccw / 90.0).round() as i64).rem_euclid(4) * 90) as u32
}

fn open(path: &Path) -> Result<(ff::format::context::Input, usize)> {
    init();
    let ictx = ff::format::input(&path).map_err(|e| fail(path, format!("cannot open container: {e}")))?;
    let idx = ictx
        .streams()
        .best(ff::media::Type::Video)
        .map(|s| s.index())
        .ok_or_else(|| fail(path, "no video stream"))?;
    Ok((ictx, idx))
}

/// Reads the next packet into `packet`; `false` at the end of the container, or after
/// `MAX_READ_ERRORS` consecutive demuxer errors (the stream is then treated as ended).
fn read_packet(ictx: &mut ff::format::context::Input, packet: &mut ff::Packet) -> bool {
    let mut errors = 0usize;
    loop {
        match packet.read(ictx) {
            Ok(()) => return true,
            Err(ff::Error::Eof) => return false,
            Err(_) => {
                errors += 1;
                if errors > MAX_READ_ERRORS {
                    return false;
                }
            }
        }
    }
}

fn open_decoder(path: &Path, ictx: &ff::format::context::Input, idx: usize) -> Result<ff::decoder::Video> {
    let stream = ictx.stream(idx).ok_or_else(|| fail(path, "video stream vanished"))?;
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| fail(path, format!("codec parameters: {e}")))?;
    ctx.decoder().video().map_err(|e| fail(path, format!("unsupported video codec: {e}")))
}

/// Demux-only metadata scan (see module docs). Errors: [`Error::VideoDecode`],
/// [`Error::LimitExceeded`] (frame count, frame pixels).
pub(super) fn scan(path: &Path, limits: &Limits) -> Result<VideoMeta> {
    let (mut ictx, idx) = open(path)?;
    let (tb, header_rate, rotation, codec) = {
        let stream = ictx.stream(idx).ok_or_else(|| fail(path, "video stream vanished"))?;
        let rotation = stream
            .side_data()
            .find(|sd| sd.kind() == ff::codec::packet::side_data::Type::DisplayMatrix)
            .map_or(0, |sd| rotation_from_display_matrix(sd.data()));
        let id = stream.parameters().id();
        let codec = ff::decoder::find(id).map_or_else(|| format!("{id:?}").to_lowercase(), |c| c.name().to_string());
        (f64::from(stream.time_base()), f64::from(stream.avg_frame_rate()), rotation, codec)
    };
    let decoder = open_decoder(path, &ictx, idx)?;
    let (cw, ch) = (decoder.width(), decoder.height());
    if cw == 0 || ch == 0 {
        return Err(fail(path, format!("frame size {cw}x{ch}")));
    }
    limits.check_pixels(path, u64::from(cw), u64::from(ch))?;

    let mut n: u64 = 0;
    let (mut begin, mut end) = (i64::MAX, i64::MIN);
    let mut packet = ff::Packet::empty();
    while read_packet(&mut ictx, &mut packet) {
        if packet.stream() != idx || packet.flags().bits() & PKT_FLAG_DISCARD != 0 {
            continue;
        }
        n += 1;
        limits.check_video_frames(path, n)?;
        if let Some(ts) = packet.pts().or_else(|| packet.dts()) {
            begin = begin.min(ts);
            end = end.max(ts.saturating_add(packet.duration().max(0)));
        }
    }
    if n == 0 {
        return Err(fail(path, "no video frames"));
    }
    let span = if end > begin && tb > 0.0 { (end - begin) as f64 * tb } else { 0.0 };
    let (fps, duration_s) = if span > 0.0 {
        (n as f64 / span, span)
    } else if header_rate > 0.0 && header_rate.is_finite() {
        (header_rate, n as f64 / header_rate)
    } else {
        (24.0, n as f64 / 24.0) // the processor's own fallback fps
    };
    let (width, height) = if rotation % 180 == 90 { (ch, cw) } else { (cw, ch) };
    Ok(VideoMeta {
        total_frames: usize::try_from(n).unwrap_or(usize::MAX),
        fps,
        duration_s,
        width,
        height,
        rotation_deg: rotation,
        codec,
        backend: "ffmpeg",
        source: path.display().to_string(),
    })
}

/// Decodes and hands over the frames at `wanted` (see module docs); returns the number of
/// frames decoded.
pub(super) fn decode(
    path: &Path,
    meta: &VideoMeta,
    wanted: &[usize],
    limits: &Limits,
    on_frame: &mut dyn FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    let Some(&last) = wanted.last() else { return Ok(0) };
    let (mut ictx, idx) = open(path)?;
    let mut decoder = open_decoder(path, &ictx, idx)?;
    let mut state = FrameSink { path, meta, wanted, next: 0, decoded: 0, last, limits, scaler: None, on_frame };
    let mut packet = ff::Packet::empty();
    let mut frame = ff::frame::Video::empty();
    while read_packet(&mut ictx, &mut packet) {
        if packet.stream() != idx {
            continue;
        }
        // A packet the decoder rejects (corrupt data) is skipped, like ffmpeg's CLI does.
        if decoder.send_packet(&packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut frame).is_ok() {
            if state.take(&frame)? {
                return Ok(state.decoded);
            }
        }
    }
    if decoder.send_eof().is_ok() {
        while decoder.receive_frame(&mut frame).is_ok() {
            if state.take(&frame)? {
                return Ok(state.decoded);
            }
        }
    }
    Ok(state.decoded)
}

struct FrameSink<'a> {
    path: &'a Path,
    meta: &'a VideoMeta,
    wanted: &'a [usize],
    next: usize,
    decoded: usize,
    last: usize,
    limits: &'a Limits,
    scaler: Option<(ff::software::scaling::Context, ff::format::Pixel, u32, u32)>,
    on_frame: &'a mut dyn FnMut(usize, RgbImage) -> Result<()>,
}

impl FrameSink<'_> {
    /// Handles decoded frame number `self.decoded`; returns true once the last wanted frame is done.
    fn take(&mut self, frame: &ff::frame::Video) -> Result<bool> {
        let i = self.decoded;
        self.decoded += 1;
        if self.wanted.get(self.next) == Some(&i) {
            let rgb = self.convert_rgb(frame)?;
            (self.on_frame)(i, rotate_ccw(rgb, self.meta.rotation_deg))?;
            self.next += 1;
        }
        Ok(i >= self.last)
    }

    fn convert_rgb(&mut self, frame: &ff::frame::Video) -> Result<RgbImage> {
        let (w, h, fmt) = (frame.width(), frame.height(), frame.format());
        if w == 0 || h == 0 {
            return Err(fail(self.path, "decoded an empty frame"));
        }
        self.limits.check_pixels(self.path, u64::from(w), u64::from(h))?;
        // Every frame keeps the stream's first size (HF stacks frames of one shape).
        let (ow, oh) = if self.meta.rotation_deg % 180 == 90 {
            (self.meta.height, self.meta.width)
        } else {
            (self.meta.width, self.meta.height)
        };
        let stale = !matches!(&self.scaler, Some((_, f, sw, sh)) if *f == fmt && *sw == w && *sh == h);
        if stale {
            let ctx = ff::software::scaling::Context::get(fmt, w, h, ff::format::Pixel::RGB24, ow, oh, ff::software::scaling::Flags::BILINEAR)
                .map_err(|e| fail(self.path, format!("pixel format {fmt:?} → RGB24: {e}")))?;
            self.scaler = Some((ctx, fmt, w, h));
        }
        let Some((scaler, ..)) = self.scaler.as_mut() else {
            return Err(fail(self.path, "no scaler"));
        };
        let mut out = ff::frame::Video::empty();
        scaler.run(frame, &mut out).map_err(|e| fail(self.path, format!("swscale: {e}")))?;
        let (stride, row) = (out.stride(0), ow as usize * 3);
        let src = out.data(0);
        let mut data = Vec::with_capacity(row * oh as usize);
        for y in 0..oh as usize {
            let line = src.get(y * stride..y * stride + row).ok_or_else(|| fail(self.path, "short RGB plane"))?;
            data.extend_from_slice(line);
        }
        RgbImage::from_raw(ow, oh, data).ok_or_else(|| fail(self.path, "RGB frame size mismatch"))
    }
}

/// Rotates an RGB8 image counter-clockwise by 0 / 90 / 180 / 270 degrees (`np.rot90(img, k)`).
fn rotate_ccw(img: RgbImage, deg: u32) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let px = |x: usize, y: usize| &img.data[(y * w + x) * 3..(y * w + x) * 3 + 3];
    match deg {
        90 => {
            // out[y'][x'] = in[x'][w - 1 - y'], out is h wide, w high.
            let mut data = Vec::with_capacity(img.data.len());
            for yo in 0..w {
                for xo in 0..h {
                    data.extend_from_slice(px(w - 1 - yo, xo));
                }
            }
            RgbImage { width: h as u32, height: w as u32, data }
        }
        180 => {
            let mut data = Vec::with_capacity(img.data.len());
            for yo in 0..h {
                for xo in 0..w {
                    data.extend_from_slice(px(w - 1 - xo, h - 1 - yo));
                }
            }
            RgbImage { width: w as u32, height: h as u32, data }
        }
        270 => {
            let mut data = Vec::with_capacity(img.data.len());
            for yo in 0..w {
                for xo in 0..h {
                    data.extend_from_slice(px(yo, h - 1 - xo));
                }
            }
            RgbImage { width: h as u32, height: w as u32, data }
        }
        _ => img,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matrix_rotation() {
        let m = |v: [i32; 9]| v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        let one = 1 << 16;
        assert_eq!(rotation_from_display_matrix(&m([one, 0, 0, 0, one, 0, 0, 0, 1 << 30])), 0);
        // the corpus rotate90 file: [0, -1, 0, 1, 0, 0, 0, 0, 1<<30]
        assert_eq!(rotation_from_display_matrix(&m([0, -one, 0, one, 0, 0, 0, 0, 1 << 30])), 90);
        assert_eq!(rotation_from_display_matrix(&m([0, one, 0, -one, 0, 0, 0, 0, 1 << 30])), 270);
        assert_eq!(rotation_from_display_matrix(&m([-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30])), 180);
        assert_eq!(rotation_from_display_matrix(&[0u8; 12]), 0);
    }

    #[test]
    fn rotation_matches_numpy_rot90() {
        // 2 wide x 1 high: [A B]; rot90 ccw → 1 wide x 2 high: [B; A]
        let img = RgbImage { width: 2, height: 1, data: vec![1, 1, 1, 2, 2, 2] };
        let r = rotate_ccw(img.clone(), 90);
        assert_eq!((r.width, r.height, r.data), (1, 2, vec![2, 2, 2, 1, 1, 1]));
        let r = rotate_ccw(img.clone(), 270);
        assert_eq!((r.width, r.height, r.data), (1, 2, vec![1, 1, 1, 2, 2, 2]));
        let r = rotate_ccw(img, 180);
        assert_eq!(r.data, vec![2, 2, 2, 1, 1, 1]);
    }
}

//! Media inputs as the stream sees them: modality, host tensor, token layout, and the segments
//! (text runs and media runs) a stream is made of.

use std::path::Path;

use serde_json::{Map, Value as Json};

/// Media modality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// A still image (one frame).
    Image,
    /// A video (frames, or an animated GIF).
    Video,
    /// An audio clip.
    Audio,
}

impl MediaKind {
    /// "image", "video", "audio".
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
    }

    /// Routing modality id (HF `moe_mm_token_type_ids`; audio is ours).
    pub fn modality_id(self) -> u8 {
        match self {
            MediaKind::Image => 1,
            MediaKind::Video => 2,
            MediaKind::Audio => 3,
        }
    }

    /// The prompt marker: `<image>`, `<video>`, `<audio>`.
    pub fn marker(self) -> &'static str {
        match self {
            MediaKind::Image => "<image>",
            MediaKind::Video => "<video>",
            MediaKind::Audio => "<audio>",
        }
    }

    /// Label in the chat format: "Picture", "Video", "Audio".
    pub(crate) fn label(self) -> &'static str {
        match self {
            MediaKind::Image => "Picture",
            MediaKind::Video => "Video",
            MediaKind::Audio => "Audio",
        }
    }

    /// Every kind, in marker-search order.
    pub(crate) const ALL: [MediaKind; 3] = [MediaKind::Image, MediaKind::Video, MediaKind::Audio];
}

/// A preprocessed tensor in host memory, f32, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MediaTensor {
    /// Shape, e.g. `[n_patches, 588]` for images / videos, `[n_mels, n_frames]` for audio.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
    /// Colour channels for statistics: each row is `channels` equal channel-major blocks (3 for
    /// patch rows `(C, T, py, px)`); 1 means "the whole tensor is one channel".
    pub channels: usize,
}

impl MediaTensor {
    /// Per-channel `(mean, std)` (population std, f64 accumulation), as `ernie inspect` prints.
    /// Empty when the shape does not split into `channels` blocks.
    pub fn channel_stats(&self) -> Vec<(f64, f64)> {
        let row = self.shape.last().copied().unwrap_or(0);
        let ch = self.channels.max(1);
        if self.data.is_empty() || row == 0 || row % ch != 0 || self.data.len() % row != 0 {
            return Vec::new();
        }
        let block = row / ch;
        (0..ch)
            .map(|c| {
                let vals = || self.data.chunks_exact(row).flat_map(move |r| &r[c * block..(c + 1) * block]);
                let n = (self.data.len() / ch) as f64;
                let mean = vals().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = vals().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
                (mean, var.sqrt())
            })
            .collect()
    }
}

/// How a media item's tokens occupy the LLM sequence; decides their positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenLayout {
    /// A merged visual grid of `t × h × w` tokens in row-major `(t, h, w)` order — an image is
    /// `(1, gh/2, gw/2)`, a video `(T/2, gh/2, gw/2)`.
    Grid {
        /// Temporal groups (frame pairs for video; 1 for images).
        t: usize,
        /// Token rows.
        h: usize,
        /// Token columns.
        w: usize,
    },
    /// A 1-D run of `n` tokens (audio): positioned like text.
    Sequence {
        /// Number of tokens.
        n: usize,
    },
}

impl TokenLayout {
    /// Tokens the item occupies.
    pub fn n_tokens(&self) -> usize {
        match *self {
            TokenLayout::Grid { t, h, w } => t * h * w,
            TokenLayout::Sequence { n } => n,
        }
    }
}

/// One preprocessed media input — the hook every modality fills.
///
/// Images come from [`crate::image::ProcessedImage::into_media_item`]; the video and audio
/// modules build theirs the same way (tensor + layout + details) and hand them to
/// [`super::build_stream`]. Nothing else about a modality is needed here.
#[derive(Clone, Debug)]
pub struct MediaItem {
    /// Modality.
    pub kind: MediaKind,
    /// Where it came from (path), for reports and errors.
    pub source: String,
    /// The encoder input (`pixel_values [n_patches, 588]`, mel features, …).
    pub tensor: MediaTensor,
    /// `[t, gh, gw]` in patches before merging (images and videos), as the HF processor's
    /// `image_grid_thw` / `video_grid_thw`.
    pub grid_thw: Option<[usize; 3]>,
    /// Token layout after merging (positions and `n_tokens` follow from it).
    pub layout: TokenLayout,
    /// Modality-specific facts for `ernie inspect` (source size, resized size, frame indices,
    /// timestamps, sample rate, …), printed verbatim.
    pub details: Map<String, Json>,
}

impl MediaItem {
    /// LLM tokens this item costs (its placeholder count).
    pub fn n_tokens(&self) -> usize {
        self.layout.n_tokens()
    }
}

/// A run of the stream.
#[derive(Clone, Debug)]
pub enum Segment {
    /// Text ids (template text, message text and the media start / end specials).
    Text {
        /// Token ids.
        ids: Vec<u32>,
    },
    /// One media item and its placeholder run.
    Media {
        /// The preprocessed input.
        item: MediaItem,
        /// Id repeated `item.n_tokens()` times in the stream.
        placeholder_id: u32,
    },
}

impl Segment {
    /// Tokens in this segment.
    pub fn n_tokens(&self) -> usize {
        match self {
            Segment::Text { ids } => ids.len(),
            Segment::Media { item, .. } => item.n_tokens(),
        }
    }
}

/// Convenience for callers that only name a file: `Path` → the `source` string of a [`MediaItem`].
pub fn source_name(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_stats_split_rows_into_blocks() {
        let t = MediaTensor { shape: vec![2, 6], data: vec![1., 1., 2., 2., 3., 5., 1., 1., 2., 2., 3., 5.], channels: 3 };
        let s = t.channel_stats();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], (1.0, 0.0));
        assert_eq!(s[2], (4.0, 1.0));
    }
}

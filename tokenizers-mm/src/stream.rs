//! The token stream: text ids interleaved with preprocessed media, plus per-token 3-D positions
//! and routing modality — everything the engine needs before any encoder runs.
//!
//! # Building
//! [`build_stream`] takes a [`StreamPrompt`] (chat messages whose parts are text or media
//! markers, or a raw prompt with `<image>` / `<video>` / `<audio>` markers) and the
//! preprocessed [`MediaItem`]s, and lays them out in ERNIE-4.5-VL's chat format (spec §3.8;
//! the HF converter's chat template, `convert_ernie4_5_vl_moe_to_hf.py`):
//!
//! ```text
//! <|begin_of_sentence|>[system text "\n"]User: <text>Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|>×n<|IMAGE_END|><text>
//! \nAssistant: <think>\n\n</think>\n\n                       (generation prompt, thinking off)
//! ```
//!
//! Videos render as `Video k:<|VIDEO_START|>…<|VIDEO_END|>`, audio as `Audio k:` plus the audio
//! start / placeholder / end tokens (ERNIE 5.0 names them only as BOA/EOA; we look up
//! `<|AUDIO_START|>`, `<|AUDIO_PLACEHOLDER|>`, `<|AUDIO_END|>` and fail cleanly without them).
//! Each placeholder is expanded to `n_tokens` copies as the HF processor's `replace_image_token`
//! does (`grid_thw.prod() / merge²`, video `/ (merge² · temporal_merge)`). Message text is
//! untrusted: it is tokenized with special parsing off (literal `<|IMAGE_START|>` typed by a user
//! stays text), joined with the neighbouring template text exactly where the HF tokenizer would
//! join it (runs between special tokens are encoded in one call, because ERNIE's BPE has no
//! pre-tokenizer and merges across the template/content boundary).
//!
//! # Segments
//! As in llama.cpp's mtmd chunks: [`Segment::Text`] holds ids (including the media start / end
//! specials), [`Segment::Media`] holds one media item and its placeholder run.
//!
//! # Positions (spec §3.6, §1.4)
//! Each token gets `(t, h, w)`. [`PositionRule::Ernie45Vl`] (vLLM / original ERNIE):
//! walk the stream with `next = 0`; a text (or audio) token takes `(next, next, next)` and
//! `next += 1`; a visual item with merged grid `(T', H', W')` gives its token `(tt, hh, ww)` the
//! triple `(next + tt, next + hh, next + ww)` in row-major `(tt, hh, ww)` order, then
//! `next += max(T', H', W')`. [`PositionRule::Ernie45VlHf`] is transformers'
//! `get_rope_index` (identical except `next += max(H', W')`, ignoring T' — they differ only
//! after videos). [`PositionRule::UniRope`] (ERNIE 5.0, §1.4): text and audio tokens take their
//! index in the whole sequence on all three axes; a visual item starting at sequence index `s`
//! takes `(s + tt, s + hh, s + ww)`. (§1.4 states the per-axis meaning, not the offset; "running
//! sequence index" is read literally, which keeps every axis monotone because an item's grid
//! never spans more positions than it has tokens.)
//!
//! Worked example (Ernie45Vl): `[bos, "User:", IMAGE_START, img×(1×2×3), IMAGE_END, "x"]`:
//! bos 0, "User:" 1, IMAGE_START 2, image tokens t = 3, h = 3..=4, w = 3..=5, next = 3 + 3 = 6;
//! IMAGE_END 6, "x" 7; decoding continues at 8.
//!
//! # Routing modality
//! Per token, HF's `moe_mm_token_type_ids`: 0 text, 1 image, 2 video — placeholder tokens
//! **and** their start / end tokens (spec §3.4) — plus 3 for audio (same rule).

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::text::TextTokenizer;

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
    fn label(self) -> &'static str {
        match self {
            MediaKind::Image => "Picture",
            MediaKind::Video => "Video",
            MediaKind::Audio => "Audio",
        }
    }

    const ALL: [MediaKind; 3] = [MediaKind::Image, MediaKind::Video, MediaKind::Audio];
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
/// [`build_stream`]. Nothing else about a modality is needed here.
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

/// Which 3-D position rule to apply (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionRule {
    /// ERNIE-4.5-VL as vLLM and the original code: after a visual item `next += max(T', H', W')`.
    #[default]
    Ernie45Vl,
    /// transformers 5.24 `get_rope_index`: `next += max(H', W')`.
    Ernie45VlHf,
    /// ERNIE 5.0 Uni-RoPE: text / audio at their sequence index, visual offset by their start.
    UniRope,
}

impl PositionRule {
    /// Name used by `ernie inspect`.
    pub fn name(self) -> &'static str {
        match self {
            PositionRule::Ernie45Vl => "ernie45-vl",
            PositionRule::Ernie45VlHf => "ernie45-vl-hf",
            PositionRule::UniRope => "uni-rope",
        }
    }
}

/// Which id fills a video's placeholder run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VideoPlaceholder {
    /// `<|VIDEO_PLACEHOLDER|>` (HF-only added token, 103367 in the real vocabulary).
    #[default]
    Hf,
    /// `<|IMAGE_PLACEHOLDER|>` (100295), as the original processor and vLLM do.
    Original,
}

/// Stream settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamConfig {
    /// Position rule.
    pub rule: PositionRule,
    /// Video placeholder id choice.
    pub video_placeholder: VideoPlaceholder,
}

/// One part of a chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text (untrusted: never becomes special ids).
    Text(String),
    /// The next media item of this kind.
    Media(MediaKind),
}

/// A chat message with media parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// Content parts, in order.
    pub parts: Vec<Part>,
}

impl MmMessage {
    /// A message whose text may contain `<image>` / `<video>` / `<audio>` markers.
    pub fn with_markers(role: impl Into<String>, text: &str) -> Self {
        MmMessage { role: role.into(), parts: parse_markers(text) }
    }
}

/// Split text at media markers: `"a<image>b"` → `[Text("a"), Media(Image), Text("b")]`
/// (empty texts are dropped).
pub fn parse_markers(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let next = MediaKind::ALL.iter().filter_map(|&k| rest.find(k.marker()).map(|i| (i, k))).min_by_key(|&(i, _)| i);
        match next {
            Some((i, kind)) => {
                if i > 0 {
                    parts.push(Part::Text(rest[..i].to_string()));
                }
                parts.push(Part::Media(kind));
                rest = &rest[i + kind.marker().len()..];
            }
            None => {
                if !rest.is_empty() {
                    parts.push(Part::Text(rest.to_string()));
                }
                return parts;
            }
        }
    }
}

/// What to build a stream from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamPrompt {
    /// ERNIE-4.5-VL chat format (module docs).
    Chat {
        /// The conversation.
        messages: Vec<MmMessage>,
        /// Append `"\nAssistant: "` (+ the empty think block unless `enable_thinking`).
        add_generation_prompt: bool,
        /// Open a `<think>` block instead of the empty `<think>\n\n</think>\n\n`.
        enable_thinking: bool,
    },
    /// Trusted raw text (special-token text is parsed) with media markers replaced by
    /// `start + placeholder×n + end`; no template, no "Picture k:" labels.
    Raw(String),
}

impl StreamPrompt {
    /// One user turn from marker text, with generation prompt, thinking off. If the text has no
    /// markers at all, the media counts given are placed before the text (images, then videos,
    /// then audio) — the common "image, then question" layout.
    pub fn user(text: &str, n_images: usize, n_videos: usize, n_audios: usize) -> Self {
        let mut parts = parse_markers(text);
        if !parts.iter().any(|p| matches!(p, Part::Media(_))) {
            let media = [(MediaKind::Image, n_images), (MediaKind::Video, n_videos), (MediaKind::Audio, n_audios)];
            let mut pre: Vec<Part> = media.iter().flat_map(|&(k, n)| std::iter::repeat_n(Part::Media(k), n)).collect();
            pre.append(&mut parts);
            parts = pre;
        }
        StreamPrompt::Chat {
            messages: vec![MmMessage { role: "user".into(), parts }],
            add_generation_prompt: true,
            enable_thinking: false,
        }
    }
}

/// Special-token ids the stream needs, looked up by their text in the tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaTokenIds {
    /// Start token.
    pub start: u32,
    /// Placeholder token.
    pub placeholder: u32,
    /// End token.
    pub end: u32,
}

fn token(tok: &TextTokenizer, text: &str) -> Result<u32> {
    tok.token_id(text).ok_or_else(|| Error::Prompt { reason: format!("the tokenizer has no {text} token") })
}

fn media_tokens(tok: &TextTokenizer, kind: MediaKind, video: VideoPlaceholder) -> Result<MediaTokenIds> {
    let (s, p, e) = match (kind, video) {
        (MediaKind::Image, _) => ("<|IMAGE_START|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_END|>"),
        (MediaKind::Video, VideoPlaceholder::Hf) => ("<|VIDEO_START|>", "<|VIDEO_PLACEHOLDER|>", "<|VIDEO_END|>"),
        (MediaKind::Video, VideoPlaceholder::Original) => ("<|VIDEO_START|>", "<|IMAGE_PLACEHOLDER|>", "<|VIDEO_END|>"),
        (MediaKind::Audio, _) => ("<|AUDIO_START|>", "<|AUDIO_PLACEHOLDER|>", "<|AUDIO_END|>"),
    };
    Ok(MediaTokenIds { start: token(tok, s)?, placeholder: token(tok, p)?, end: token(tok, e)? })
}

/// The stream: segments plus flat per-token arrays.
#[derive(Clone, Debug)]
pub struct TokenStream {
    /// Text and media runs, in order.
    pub segments: Vec<Segment>,
    /// `[T]` token ids (placeholders included).
    pub input_ids: Vec<u32>,
    /// `[T]` `(t, h, w)` positions.
    pub positions: Vec<[u32; 3]>,
    /// `[T]` routing modality: 0 text, 1 image, 2 video, 3 audio.
    pub modality: Vec<u8>,
    /// Position of the first generated token (all three axes); `rope delta = next_position − T`.
    pub next_position: u32,
    /// The rule `positions` follow.
    pub rule: PositionRule,
}

/// Stream under construction: tokens with their modality, segment by segment.
struct Builder {
    segments: Vec<Segment>,
    text: Vec<u32>,
    modality: Vec<u8>,
    /// Text waiting to be encoded (joined across template/content boundaries).
    pending: String,
}

impl Builder {
    fn flush(&mut self, tok: &TextTokenizer, trusted: bool) -> Result<()> {
        if !self.pending.is_empty() {
            let ids = if trusted { tok.encode_with_specials(&self.pending)? } else { tok.encode_plain(&self.pending)? };
            self.modality.extend(std::iter::repeat_n(0, ids.len()));
            self.text.extend(ids);
            self.pending.clear();
        }
        Ok(())
    }

    fn special(&mut self, tok: &TextTokenizer, id: u32, modality: u8, trusted: bool) -> Result<()> {
        self.flush(tok, trusted)?;
        self.text.push(id);
        self.modality.push(modality);
        Ok(())
    }

    fn media(&mut self, tok: &TextTokenizer, item: MediaItem, ids: MediaTokenIds, trusted: bool) -> Result<()> {
        let m = item.kind.modality_id();
        self.special(tok, ids.start, m, trusted)?;
        self.modality.extend(std::iter::repeat_n(m, item.n_tokens()));
        self.segments.push(Segment::Text { ids: std::mem::take(&mut self.text) });
        self.segments.push(Segment::Media { item, placeholder_id: ids.placeholder });
        self.special(tok, ids.end, m, trusted)
    }

    fn finish(mut self, tok: &TextTokenizer, trusted: bool) -> Result<(Vec<Segment>, Vec<u8>)> {
        self.flush(tok, trusted)?;
        if !self.text.is_empty() {
            self.segments.push(Segment::Text { ids: std::mem::take(&mut self.text) });
        }
        self.segments.retain(|s| s.n_tokens() > 0 || matches!(s, Segment::Media { .. }));
        Ok((self.segments, self.modality))
    }
}

/// Hands out media items of each kind in order.
struct MediaQueue {
    items: Vec<Option<MediaItem>>,
}

impl MediaQueue {
    fn take(&mut self, kind: MediaKind) -> Result<MediaItem> {
        let given = self.items.iter().flatten().filter(|m| m.kind == kind).count();
        self.items
            .iter_mut()
            .find(|m| m.as_ref().is_some_and(|m| m.kind == kind))
            .and_then(Option::take)
            .ok_or_else(|| Error::Prompt { reason: format!("more {} markers than {} inputs ({given} left)", kind.marker(), kind.name()) })
    }

    fn check_all_used(&self) -> Result<()> {
        match self.items.iter().flatten().next() {
            Some(m) => Err(Error::Prompt {
                reason: format!("{} input {} has no {} marker in the prompt", m.kind.name(), m.source, m.kind.marker()),
            }),
            None => Ok(()),
        }
    }
}

/// Build the token stream (module docs). `media` is consumed per kind in marker order.
///
/// Errors: [`Error::Prompt`] (marker / media count mismatch, missing special tokens, media in an
/// assistant turn, unknown role), [`Error::Encode`].
pub fn build_stream(tok: &TextTokenizer, prompt: &StreamPrompt, media: Vec<MediaItem>, cfg: &StreamConfig) -> Result<TokenStream> {
    let mut queue = MediaQueue { items: media.into_iter().map(Some).collect() };
    let mut b = Builder { segments: Vec::new(), text: Vec::new(), modality: Vec::new(), pending: String::new() };
    let ids_for = |kind: MediaKind| media_tokens(tok, kind, cfg.video_placeholder);
    let trusted = matches!(prompt, StreamPrompt::Raw(_));
    match prompt {
        StreamPrompt::Raw(text) => {
            for part in parse_markers(text) {
                match part {
                    Part::Text(t) => b.pending.push_str(&t),
                    Part::Media(kind) => {
                        let item = queue.take(kind)?;
                        b.media(tok, item, ids_for(kind)?, true)?;
                    }
                }
            }
        }
        StreamPrompt::Chat { messages, add_generation_prompt, enable_thinking } => {
            let mut counts = [0usize; 3];
            b.special(tok, token(tok, "<|begin_of_sentence|>")?, 0, false)?;
            for (i, msg) in messages.iter().enumerate() {
                match msg.role.as_str() {
                    "system" | "user" => {
                        if msg.role == "user" {
                            b.pending.push_str("User: ");
                        }
                        for part in &msg.parts {
                            match part {
                                Part::Text(t) => b.pending.push_str(t),
                                Part::Media(kind) => {
                                    let k = &mut counts[*kind as usize];
                                    *k += 1;
                                    b.pending.push_str(&format!("{} {}:", kind.label(), k));
                                    let item = queue.take(*kind)?;
                                    b.media(tok, item, ids_for(*kind)?, false)?;
                                }
                            }
                        }
                        if msg.role == "system" {
                            b.pending.push('\n');
                        }
                    }
                    "assistant" => {
                        b.pending.push_str("\nAssistant: ");
                        for part in &msg.parts {
                            match part {
                                Part::Text(t) => b.pending.push_str(t),
                                Part::Media(kind) => {
                                    return Err(Error::Prompt {
                                        reason: format!("message {i}: {} in an assistant turn (the chat format has none)", kind.marker()),
                                    })
                                }
                            }
                        }
                        b.special(tok, token(tok, "<|end_of_sentence|>")?, 0, false)?;
                    }
                    other => return Err(Error::Prompt { reason: format!("message {i}: unsupported role {other:?}") }),
                }
            }
            if *add_generation_prompt {
                b.pending.push_str("\nAssistant: ");
                let think = token(tok, "<think>")?;
                if *enable_thinking {
                    b.special(tok, think, 0, false)?;
                } else {
                    b.special(tok, think, 0, false)?;
                    b.pending.push_str("\n\n");
                    b.special(tok, token(tok, "</think>")?, 0, false)?;
                    b.pending.push_str("\n\n");
                }
            }
        }
    }
    queue.check_all_used()?;
    let (segments, mut modality) = b.finish(tok, trusted)?;
    if trusted {
        // A raw prompt may spell media start / end tokens itself: route them by id, as HF's
        // `create_moe_mm_token_type_ids` does.
        let by_id: Vec<(u32, u8)> = MediaKind::ALL
            .iter()
            .filter_map(|&k| media_tokens(tok, k, cfg.video_placeholder).ok().map(|t| (k, t)))
            .flat_map(|(k, t)| [(t.start, k.modality_id()), (t.end, k.modality_id())])
            .collect();
        let mut i = 0;
        for seg in &segments {
            if let Segment::Text { ids } = seg {
                for (id, m) in ids.iter().zip(&mut modality[i..]) {
                    if let Some(&(_, k)) = by_id.iter().find(|(t, _)| t == id) {
                        *m = k;
                    }
                }
            }
            i += seg.n_tokens();
        }
    }
    let input_ids: Vec<u32> = segments
        .iter()
        .flat_map(|s| -> Box<dyn Iterator<Item = u32> + '_> {
            match s {
                Segment::Text { ids } => Box::new(ids.iter().copied()),
                Segment::Media { item, placeholder_id } => Box::new(std::iter::repeat_n(*placeholder_id, item.n_tokens())),
            }
        })
        .collect();
    let (positions, next_position) = compute_positions(&segments, cfg.rule)?;
    debug_assert_eq!(input_ids.len(), modality.len());
    Ok(TokenStream { segments, input_ids, positions, modality, next_position, rule: cfg.rule })
}

/// Positions of every token (module docs). Errors only if a position overflows u32.
pub fn compute_positions(segments: &[Segment], rule: PositionRule) -> Result<(Vec<[u32; 3]>, u32)> {
    let overflow = || Error::Prompt { reason: "sequence positions overflow u32".into() };
    let to32 = |v: u64| u32::try_from(v).map_err(|_| overflow());
    let mut out = Vec::new();
    let mut next: u64 = 0; // next text position (Ernie45Vl*) — sequence index for UniRope
    for seg in segments {
        let seq = out.len() as u64;
        let layout = match seg {
            Segment::Text { ids } => TokenLayout::Sequence { n: ids.len() },
            Segment::Media { item, .. } => item.layout,
        };
        match layout {
            TokenLayout::Sequence { n } => {
                let base = if rule == PositionRule::UniRope { seq } else { next };
                for j in 0..n as u64 {
                    let p = to32(base + j)?;
                    out.push([p, p, p]);
                }
                next = base + n as u64;
            }
            TokenLayout::Grid { t, h, w } => {
                let base = if rule == PositionRule::UniRope { seq } else { next };
                for tt in 0..t as u64 {
                    for hh in 0..h as u64 {
                        for ww in 0..w as u64 {
                            out.push([to32(base + tt)?, to32(base + hh)?, to32(base + ww)?]);
                        }
                    }
                }
                next = match rule {
                    PositionRule::Ernie45Vl => base + t.max(h).max(w) as u64,
                    PositionRule::Ernie45VlHf => base + h.max(w) as u64,
                    PositionRule::UniRope => seq + (t * h * w) as u64,
                };
            }
        }
    }
    Ok((out, to32(next)?))
}

impl TokenStream {
    /// Total tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// No tokens at all.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// `[start, end)` token range of each segment.
    pub fn segment_ranges(&self) -> Vec<(usize, usize)> {
        let mut start = 0;
        self.segments
            .iter()
            .map(|s| {
                let r = (start, start + s.n_tokens());
                start = r.1;
                r
            })
            .collect()
    }

    /// The `ernie inspect --format json` object: per segment the kind, token count, id range
    /// (text) or media facts (source, `grid_thw`, `details`, tensor shape, per-channel mean / std
    /// and the first 8 values), and the `[min, max]` of each position axis.
    pub fn inspect_json(&self) -> Json {
        let segments: Vec<Json> = self
            .segments
            .iter()
            .zip(self.segment_ranges())
            .map(|(seg, (a, b))| {
                let pos = &self.positions[a..b];
                let range = |axis: usize| match (pos.iter().map(|p| p[axis]).min(), pos.iter().map(|p| p[axis]).max()) {
                    (Some(lo), Some(hi)) => json!([lo, hi]),
                    _ => Json::Null,
                };
                let mut o = Map::new();
                match seg {
                    Segment::Text { ids } => {
                        o.insert("kind".into(), json!("text"));
                        o.insert("ids".into(), json!(ids));
                    }
                    Segment::Media { item, placeholder_id } => {
                        o.insert("kind".into(), json!(item.kind.name()));
                        o.insert("source".into(), json!(item.source));
                        for (k, v) in &item.details {
                            o.insert(k.clone(), v.clone());
                        }
                        if let Some(g) = item.grid_thw {
                            o.insert("grid_thw".into(), json!(g));
                        }
                        o.insert("placeholder_id".into(), json!(placeholder_id));
                        o.insert("tensor_shape".into(), json!(item.tensor.shape));
                        let stats = item.tensor.channel_stats();
                        o.insert("channel_mean".into(), json!(stats.iter().map(|s| s.0).collect::<Vec<_>>()));
                        o.insert("channel_std".into(), json!(stats.iter().map(|s| s.1).collect::<Vec<_>>()));
                        o.insert("first_values".into(), json!(item.tensor.data.iter().take(8).collect::<Vec<_>>()));
                    }
                }
                o.insert("n_tokens".into(), json!(b - a));
                o.insert("token_range".into(), json!([a, b]));
                o.insert("positions".into(), json!({"t": range(0), "h": range(1), "w": range(2)}));
                Json::Object(o)
            })
            .collect();
        json!({
            "n_tokens": self.len(),
            "position_rule": self.rule.name(),
            "next_position": self.next_position,
            "segments": segments,
        })
    }
}

/// Convenience for callers that only name a file: `Path` → the `source` string of a [`MediaItem`].
pub fn source_name(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_item(kind: MediaKind, t: usize, h: usize, w: usize) -> MediaItem {
        MediaItem {
            kind,
            source: "x".into(),
            tensor: MediaTensor::default(),
            grid_thw: Some([t, 2 * h, 2 * w]),
            layout: TokenLayout::Grid { t, h, w },
            details: Map::new(),
        }
    }

    #[test]
    fn markers_split() {
        assert_eq!(
            parse_markers("a<image>b<video><audio>"),
            vec![
                Part::Text("a".into()),
                Part::Media(MediaKind::Image),
                Part::Text("b".into()),
                Part::Media(MediaKind::Video),
                Part::Media(MediaKind::Audio)
            ]
        );
        assert_eq!(parse_markers(""), vec![]);
    }

    #[test]
    fn worked_example_positions() {
        let segs = vec![
            Segment::Text { ids: vec![0, 1, 2] },
            Segment::Media { item: grid_item(MediaKind::Image, 1, 2, 3), placeholder_id: 9 },
            Segment::Text { ids: vec![3, 4] },
        ];
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45Vl).unwrap();
        assert_eq!(&pos[..3], &[[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
        assert_eq!(pos[3], [3, 3, 3]);
        assert_eq!(pos[8], [3, 4, 5]);
        assert_eq!(&pos[9..], &[[6, 6, 6], [7, 7, 7]]);
        assert_eq!(next, 8);
        let (pos, next) = compute_positions(&segs, PositionRule::UniRope).unwrap();
        assert_eq!(pos[3], [3, 3, 3]);
        assert_eq!(pos[8], [3, 4, 5]);
        assert_eq!(&pos[9..], &[[9, 9, 9], [10, 10, 10]]);
        assert_eq!(next, 11);
    }

    #[test]
    fn video_rules_differ_only_after_long_videos() {
        let segs = vec![
            Segment::Media { item: grid_item(MediaKind::Video, 8, 2, 3), placeholder_id: 9 },
            Segment::Text { ids: vec![1] },
        ];
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45Vl).unwrap();
        assert_eq!((pos[48], next), ([8, 8, 8], 9));
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45VlHf).unwrap();
        assert_eq!((pos[48], next), ([3, 3, 3], 4));
    }

    #[test]
    fn channel_stats_split_rows_into_blocks() {
        let t = MediaTensor { shape: vec![2, 6], data: vec![1., 1., 2., 2., 3., 5., 1., 1., 2., 2., 3., 5.], channels: 3 };
        let s = t.channel_stats();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], (1.0, 0.0));
        assert_eq!(s[2], (4.0, 1.0));
    }
}

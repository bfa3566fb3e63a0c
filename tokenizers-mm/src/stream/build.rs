//! Laying a prompt and its media out as a [`TokenStream`]: the compiled-in ERNIE-4.5-VL chat
//! format, media start / placeholder / end tokens, and the injection-safe text encoding
//! described in the [module docs](super).

use crate::error::{Error, Result};
use crate::text::TextTokenizer;

use super::media::{MediaItem, MediaKind, Segment};
use super::positions::PositionRule;
use super::prompt::{parse_markers, Part, StreamPrompt};
use super::tokens::TokenStream;

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

pub(crate) fn media_token_ids(tok: &TextTokenizer, kind: MediaKind, video: VideoPlaceholder) -> Result<MediaTokenIds> {
    let (s, p, e) = match (kind, video) {
        (MediaKind::Image, _) => ("<|IMAGE_START|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_END|>"),
        (MediaKind::Video, VideoPlaceholder::Hf) => ("<|VIDEO_START|>", "<|VIDEO_PLACEHOLDER|>", "<|VIDEO_END|>"),
        (MediaKind::Video, VideoPlaceholder::Original) => ("<|VIDEO_START|>", "<|IMAGE_PLACEHOLDER|>", "<|VIDEO_END|>"),
        (MediaKind::Audio, _) => ("<|AUDIO_START|>", "<|AUDIO_PLACEHOLDER|>", "<|AUDIO_END|>"),
    };
    Ok(MediaTokenIds { start: token(tok, s)?, placeholder: token(tok, p)?, end: token(tok, e)? })
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
pub(crate) struct MediaQueue {
    items: Vec<Option<MediaItem>>,
}

impl MediaQueue {
    pub(crate) fn new(media: Vec<MediaItem>) -> MediaQueue {
        MediaQueue { items: media.into_iter().map(Some).collect() }
    }

    pub(crate) fn take(&mut self, kind: MediaKind) -> Result<MediaItem> {
        let given = self.items.iter().flatten().filter(|m| m.kind == kind).count();
        self.items
            .iter_mut()
            .find(|m| m.as_ref().is_some_and(|m| m.kind == kind))
            .and_then(Option::take)
            .ok_or_else(|| Error::Prompt { reason: format!("more {} markers than {} inputs ({given} left)", kind.marker(), kind.name()) })
    }

    pub(crate) fn check_all_used(&self) -> Result<()> {
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
    let mut queue = MediaQueue::new(media);
    let mut b = Builder { segments: Vec::new(), text: Vec::new(), modality: Vec::new(), pending: String::new() };
    let ids_for = |kind: MediaKind| media_token_ids(tok, kind, cfg.video_placeholder);
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
            .filter_map(|&k| media_token_ids(tok, k, cfg.video_placeholder).ok().map(|t| (k, t)))
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
    TokenStream::from_segments(segments, modality, cfg.rule)
}

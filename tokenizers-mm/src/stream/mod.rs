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
//! The compiled-in format is the fallback for checkpoints without a chat template;
//! [`MmChatTemplate`] renders the checkpoint's own template instead (`template.rs`).
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

mod build;
mod media;
mod positions;
mod prompt;
mod template;
mod tokens;

pub use build::{build_stream, MediaTokenIds, StreamConfig, VideoPlaceholder};
pub use media::{source_name, MediaItem, MediaKind, MediaTensor, Segment, TokenLayout};
pub use positions::{compute_positions, PositionRule};
pub use prompt::{parse_markers, MmMessage, Part, StreamPrompt};
pub use template::{MmChatTemplate, TemplateSource};
pub use tokens::TokenStream;

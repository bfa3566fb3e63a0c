//! `tokenizers-mm`: deterministic CPU preprocessing for ERNIE models — text to ids and back,
//! chat templates (and, later, images / video / audio into one token stream). No weights, no
//! devices.
//!
//! Text side (spec §4, ERNIE 4.5 family):
//! - [`TextTokenizer::from_dir`] loads a checkpoint's `tokenizer.json` (+ `tokenizer_config.json`),
//!   or converts SentencePiece's `tokenizer.model` in process when that is all it ships.
//! - [`TextTokenizer::encode_plain`] for user text (special-token text stays text),
//!   [`TextTokenizer::encode_with_specials`] for trusted raw prompts.
//! - [`TextTokenizer::apply_chat_template`] renders the chat template (minijinja, transformers'
//!   jinja environment) and tokenizes it without letting message content inject special ids.
//! - [`TextTokenizer::decode`] and the streaming [`IncrementalDecoder`].
//!
//! Images and the stream (spec §3.2, §3.6-3.8, §1.4):
//! - [`image::ImageProcessor`]: file → upright RGB8 (Pillow's mode rules, EXIF) → `smart_resize`
//!   → Pillow's bicubic bit for bit → `pixel_values [n_patches, 588]` + `grid_thw`, as the HF
//!   ERNIE-4.5-VL image processor (PIL backend); [`Limits`] caps every input first.
//! - [`build_stream`]: a chat (or raw) prompt with `<image>` / `<video>` / `<audio>` markers plus
//!   the preprocessed [`MediaItem`]s → [`TokenStream`]: segments, ids, per-token (t, h, w)
//!   positions ([`PositionRule`]) and routing modality, in the compiled-in ERNIE-4.5-VL format.
//! - [`MmChatTemplate`]: the same stream rendered from the checkpoint's own chat template, as
//!   transformers' processor does (`from_dir` looks it up; [`TemplateSource`] says which was used;
//!   the compiled-in format is the fallback).
//!
//! ```no_run
//! use tokenizers_mm::{ChatMessage, IncrementalDecoder, TextTokenizer};
//! # fn main() -> tokenizers_mm::Result<()> {
//! let tok = TextTokenizer::from_dir(std::path::Path::new("ERNIE-4.5-0.3B-PT"))?;
//! let prompt = tok.apply_chat_template(&[ChatMessage::new("user", "Hello!")], true)?;
//! let mut stream = IncrementalDecoder::new(&tok, true);
//! for id in prompt {
//!     if let Some(text) = stream.push(id)? {
//!         print!("{text}");
//!     }
//! }
//! print!("{}", stream.finish()?);
//! # Ok(())
//! # }
//! ```
//!
//! Goldens: `tests/fixtures/tokenizer/` at the workspace root, produced by
//! `tests/reference/make_tokenizer.py` with transformers 5.24.0 / tokenizers 0.23.3.

#![warn(missing_docs)]

pub mod audio;
mod chat;
mod config_fields;
mod error;
pub mod image;
pub mod limits;
pub mod stream;
mod text;
pub mod video;

pub use chat::{ChatMessage, ERNIE_CHAT_TEMPLATE};
pub use error::{Error, Result};
pub use limits::Limits;
pub use stream::{
    build_stream, MediaItem, MediaKind, MediaTensor, MmChatTemplate, MmMessage, Part, PositionRule, Segment, StreamConfig,
    StreamPrompt, TemplateSource, TokenLayout, TokenStream, VideoPlaceholder,
};
pub use text::{IncrementalDecoder, SpmVocab, TextTokenizer, TokenizerSource};

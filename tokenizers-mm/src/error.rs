//! The crate's one error type.
//!
//! Every malformed input (a missing or unreadable file, invalid JSON, a tokenizer.json the
//! `tokenizers` crate rejects, a chat template that fails to compile or render, an id outside
//! the vocabulary) becomes a typed variant naming the file or item and the problem. Library code
//! never panics on input.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the text (and, later, media) preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, permissions, not a file).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is not valid JSON (syntax error, invalid UTF-8).
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The offending file.
        path: PathBuf,
        /// serde_json's error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// tokenizer.json is valid JSON but the `tokenizers` crate cannot build a tokenizer from it
    /// (unknown model/normalizer type, missing field, …).
    #[error("{}: not a usable tokenizers file: {message}", path.display())]
    TokenizerFile {
        /// The tokenizer.json path.
        path: PathBuf,
        /// The `tokenizers` error message.
        message: String,
    },

    /// A configuration field has the wrong type or an unusable value.
    #[error("{}: field `{field}`: {problem}", path.display())]
    ConfigField {
        /// The configuration file (tokenizer_config.json, …).
        path: PathBuf,
        /// The JSON key.
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The `tokenizers` crate failed while encoding text.
    #[error("encoding failed: {message}")]
    Encode {
        /// The `tokenizers` error message.
        message: String,
    },

    /// The `tokenizers` crate failed while decoding ids.
    #[error("decoding failed: {message}")]
    Decode {
        /// The `tokenizers` error message.
        message: String,
    },

    /// The chat template failed to compile or to render (syntax error, `raise_exception(...)`,
    /// an unsupported filter or method).
    #[error("chat template from {origin}: {message}")]
    Template {
        /// Where the template came from (a file path, or "built-in ERNIE 4.5 template").
        origin: String,
        /// minijinja's error, with its detail and line.
        message: String,
    },

    /// The template does not copy message content through verbatim (it strips or rewrites it),
    /// *and* some content contains special-token text, so the content's exact span in the rendered
    /// prompt cannot be found and special-token injection cannot be ruled out.
    #[error(
        "chat template from {origin} rewrites message content and message {message_index} contains special-token text {token:?}; refusing to tokenize"
    )]
    TemplateRewritesContent {
        /// Where the template came from.
        origin: String,
        /// Index of the message whose content holds special-token text.
        message_index: usize,
        /// The special-token text found in it.
        token: String,
    },

    /// Incremental detokenization saw text that does not extend what it already emitted
    /// (a decoder that is not prefix-stable).
    #[error("incremental decode: decoded text {actual:?} does not start with the already emitted {expected:?}")]
    IncrementalPrefix {
        /// Text emitted so far for the current window.
        expected: String,
        /// Text the decoder now produces for that window.
        actual: String,
    },

    // ---- media: images, preprocessor config, token stream ----
    /// An image file is malformed, truncated, or in an unsupported format / pixel layout.
    #[error("{}: cannot decode image: {reason}", path.display())]
    ImageDecode {
        /// The offending file (or the name given to an in-memory buffer).
        path: PathBuf,
        /// What is wrong (format not recognised, decoder error, unsupported color type, …).
        reason: String,
    },

    /// An image decodes but its size cannot be processed: a zero side, an aspect ratio above
    /// the processor's limit (200, as `smart_resize` raises), or a resize target that is not a
    /// multiple of the patch grid.
    #[error("{}: image size {height}x{width} (HxW): {reason}", path.display())]
    ImageSize {
        /// The offending file.
        path: PathBuf,
        /// Height in pixels (after EXIF orientation).
        height: u64,
        /// Width in pixels (after EXIF orientation).
        width: u64,
        /// Why it is refused.
        reason: String,
    },

    /// A prompt does not fit its media: a marker without a media item, a media item without a
    /// marker, or a media kind the tokenizer has no special tokens for.
    #[error("prompt: {reason}")]
    Prompt {
        /// What is wrong.
        reason: String,
    },

    // ---- media: audio / video (and limits shared with images) ----
    /// A media input is larger or longer than a configured cap ([`crate::Limits`]); checked from
    /// the file size and headers before a full decode where possible.
    #[error("{}: {what} {actual} exceeds the limit {limit}", path.display())]
    LimitExceeded {
        /// The offending file.
        path: PathBuf,
        /// Which cap: "file size (bytes)", "decoded pixels", "audio duration (s)", "video frames".
        what: &'static str,
        /// The value found (bytes, pixels, seconds or frames).
        actual: f64,
        /// The configured cap.
        limit: f64,
    },

    /// An audio file is malformed, truncated beyond use, or uses an unsupported container/codec.
    #[error("{}: cannot decode audio: {reason}", path.display())]
    AudioDecode {
        /// The offending file.
        path: PathBuf,
        /// What is wrong (container, codec, missing chunk, no samples, …).
        reason: String,
    },

    /// A video file (or animated GIF) is malformed, truncated beyond use, or unsupported.
    #[error("{}: cannot decode video: {reason}", path.display())]
    VideoDecode {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A video file needs the `ffmpeg` cargo feature, which this build does not have (only
    /// animated GIFs decode without it).
    #[error("{}: video files need tokenizers-mm built with the `ffmpeg` feature (this build has only GIF)", path.display())]
    VideoBackendMissing {
        /// The video file.
        path: PathBuf,
    },

    /// A preprocessing parameter is out of range (zero hop, zero sample rate, …).
    #[error("invalid preprocessing config: `{field}` {problem}")]
    InvalidConfig {
        /// The parameter.
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A library used internally failed where it should not (FFT plan, resampler buffers).
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },
}

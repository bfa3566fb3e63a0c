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

    /// A token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// Number of ids the tokenizer knows (largest id + 1).
        vocab_size: usize,
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
}

//! Text tokenizer: HF `tokenizer.json` (through the `tokenizers` crate) plus the pieces of
//! `tokenizer_config.json` the runtime needs, and an incremental detokenizer.
//!
//! ERNIE 4.5 ships a SentencePiece BPE converted by transformers' `LlamaConverter` with
//! `legacy=True, add_prefix_space=False` (spec §4; transformers
//! `models/ernie4_5/convert_ernie4_5_tokenizer.py`, `convert_slow_tokenizer.py`):
//!
//! | stage          | ERNIE 4.5 tokenizer.json                                   |
//! |----------------|------------------------------------------------------------|
//! | added tokens   | specials (`<s>`, `</s>`, ERNIE control tokens) matched first |
//! | normalizer     | `Replace(" " → "▁")` (no prefix "▁")                         |
//! | pre-tokenizer  | none: each stretch between added tokens is one BPE "word"  |
//! | model          | BPE, `byte_fallback` (`<0x00>`..`<0xFF>`), `fuse_unk`        |
//! | decoder        | `Replace("▁" → " ")`, `ByteFallback`, `Fuse` (no `Strip`)    |
//!
//! Nothing here is ERNIE-specific except the defaults documented on each item; any
//! `tokenizer.json` the `tokenizers` crate reads works.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::chat::{ChatTemplate, SpecialTokenStrings, ERNIE_CHAT_TEMPLATE};
use crate::error::{Error, Result};

mod config;
mod decoder;
mod spm;
mod spm_proto;
mod template;

pub use decoder::IncrementalDecoder;
pub use spm::SpmVocab;
pub(crate) use config::{read_json, read_to_string};
use config::{config_chat_template, special_token_strings};

/// Which file a [`TextTokenizer`] was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerSource {
    /// `tokenizer.json` (the `tokenizers` serialization).
    TokenizerJson,
    /// SentencePiece's `tokenizer.model`, converted in process as transformers converts it
    /// (`text/spm.rs`): checkpoints in the original ERNIE 4.5 / Paddle layout.
    SentencePiece,
    /// A GGUF file's `tokenizer.ggml.*` SentencePiece vocabulary ([`TextTokenizer::from_spm_vocab`]).
    Gguf,
}

impl TokenizerSource {
    /// `"tokenizer.json"` / `"tokenizer.model (converted)"`, for `ernie inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            TokenizerSource::TokenizerJson => "tokenizer.json",
            TokenizerSource::SentencePiece => "tokenizer.model (converted as transformers does)",
            TokenizerSource::Gguf => "the GGUF file's SentencePiece vocabulary (tokenizer.ggml.*)",
        }
    }
}

/// Stop tokens of the ERNIE 4.5 family: `</s>` (id 2) and `<|end_of_sentence|>` (spec §4).
const ERNIE_STOP_TOKENS: [&str; 2] = ["</s>", "<|end_of_sentence|>"];

/// A text tokenizer loaded from a checkpoint folder.
///
/// Holds two copies of the HF tokenizer: one that parses special-token text into special ids
/// (for trusted text such as a rendered chat template) and one with
/// `set_encode_special_tokens(true)` (for user text). Both share the same vocabulary.
#[derive(Clone)]
pub struct TextTokenizer {
    /// Parses literal special-token text (`"<|end_of_sentence|>"`) into its id.
    tokenizer: Tokenizer,
    /// Never produces a special id from text; non-special added tokens (ERNIE-VL digits) still split.
    plain: Tokenizer,
    /// Ids of added tokens flagged `special` (skipped by `decode(.., skip_special = true)`).
    special_ids: HashSet<u32>,
    /// Text of every special added token, longest first (used to look for injection).
    special_texts: Vec<String>,
    /// `is_byte_token[id]`: the piece is a byte-fallback piece `<0xNN>`.
    is_byte_token: Vec<bool>,
    /// Largest id + 1.
    vocab_size: usize,
    /// From tokenizer_config.json.
    pub(crate) special_strings: SpecialTokenStrings,
    /// Compiled chat template (config, chat_template.jinja, or the built-in ERNIE one).
    pub(crate) chat: ChatTemplate,
    /// The folder it was loaded from (for error messages).
    dir: PathBuf,
    /// tokenizer.json or tokenizer.model.
    source: TokenizerSource,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("dir", &self.dir)
            .field("vocab_size", &self.vocab_size)
            .field("chat_template", &self.chat.origin())
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Load `dir/tokenizer.json` — or, when the folder has none, SentencePiece's
    /// `dir/tokenizer.model`, converted in process exactly as transformers' `AutoTokenizer`
    /// converts it (`text/spm.rs`; the original ERNIE 4.5 release and Paddle exports ship only
    /// that) — and, when present, `dir/tokenizer_config.json` (special-token strings,
    /// `chat_template`) and `dir/chat_template.jinja` (transformers v5 layout; it wins over the
    /// config's template, as in transformers). Without any template the built-in ERNIE 4.5 text
    /// template is used.
    ///
    /// Errors: [`Error::Io`] (neither tokenizer file, or unreadable), [`Error::Json`] (a file is
    /// not JSON), [`Error::TokenizerFile`] (the `tokenizers` crate rejects tokenizer.json, or
    /// tokenizer.model is not a SentencePiece model), [`Error::ConfigField`] (a config key has
    /// the wrong type), [`Error::Template`] (the chat template does not compile).
    pub fn from_dir(dir: &Path) -> Result<TextTokenizer> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() { Some(read_json(&config_path)?) } else { None };
        let tokenizer_path = dir.join("tokenizer.json");
        let spm_path = dir.join("tokenizer.model");
        let (tokenizer, source) = if !tokenizer_path.exists() && spm_path.is_file() {
            let cfg = config.as_ref().map(|c| (config_path.as_path(), c));
            (spm::tokenizer_from_spm(&spm_path, cfg)?, TokenizerSource::SentencePiece)
        } else {
            (tokenizer_from_json(&tokenizer_path)?, TokenizerSource::TokenizerJson)
        };
        let mut special_strings = match &config {
            Some(cfg) => special_token_strings(&config_path, cfg)?,
            None => SpecialTokenStrings::default(),
        };
        if source == TokenizerSource::SentencePiece {
            // transformers' `setdefault` of bos / eos / unk from the proto.
            for (key, piece) in spm::proto_special_defaults(&spm_path)? {
                special_strings.named.entry(key.to_string()).or_insert(piece);
            }
        }

        let jinja_path = dir.join("chat_template.jinja");
        let (template, origin) = if jinja_path.is_file() {
            (read_to_string(&jinja_path)?, jinja_path.display().to_string())
        } else if let Some(t) = config.as_ref().map(|c| config_chat_template(&config_path, c)).transpose()?.flatten() {
            (t, config_path.display().to_string())
        } else {
            (ERNIE_CHAT_TEMPLATE.to_string(), "built-in ERNIE 4.5 template".to_string())
        };
        TextTokenizer::assemble(tokenizer, source, special_strings, template, origin, dir)
    }

    /// The tokenizer of a SentencePiece vocabulary given piece by piece — what a GGUF file stores
    /// under `tokenizer.ggml.*` for llama.cpp's `llama` (SentencePiece) tokenizer model — built as
    /// [`Self::from_dir`] builds one from `tokenizer.model` (`text/spm.rs`), with the
    /// normalisation llama.cpp applies to such a vocabulary: spaces escaped to `▁`, a `▁` prefix iff
    /// `add_space_prefix`, no whitespace collapsing, no precompiled charsmap. `chat_template`
    /// (`tokenizer.chat_template`) falls back to the built-in ERNIE 4.5 template; `origin` names
    /// the file for error messages.
    ///
    /// Special-token strings: `bos_token` / `eos_token` / `unk_token` / `pad_token` / `cls_token` /
    /// `sep_token` from the given ids; ERNIE 4.5's `cls_token` `<|begin_of_sentence|>` and
    /// `sep_token` `<|end_of_sentence|>` (which its chat template renders, and which llama.cpp's
    /// converter does not store) when the vocabulary has those pieces and no id says otherwise.
    ///
    /// Errors: [`Error::TokenizerFile`] when the vocabulary is empty, its lists disagree in length,
    /// an id is out of range, or the `tokenizers` crate rejects the result; [`Error::Template`].
    pub fn from_spm_vocab(vocab: &SpmVocab, chat_template: Option<String>, origin: &Path) -> Result<TextTokenizer> {
        let bad = |message: String| Error::TokenizerFile { path: origin.to_path_buf(), message };
        let (tokenizer, proto) = spm::tokenizer_from_vocab(vocab).map_err(bad)?;
        let mut special_strings = SpecialTokenStrings::default();
        let piece = |id: Option<u32>| id.and_then(|i| proto.pieces.get(i as usize)).map(|p| p.piece.clone());
        for (key, id) in [
            ("bos_token", vocab.bos_id),
            ("eos_token", vocab.eos_id),
            ("unk_token", vocab.unk_id),
            ("pad_token", vocab.pad_id),
            ("cls_token", vocab.cls_id),
            ("sep_token", vocab.sep_id),
        ] {
            if let Some(p) = piece(id) {
                special_strings.named.insert(key.to_string(), p);
            }
        }
        for (key, text) in [("cls_token", "<|begin_of_sentence|>"), ("sep_token", "<|end_of_sentence|>")] {
            if proto.pieces.iter().any(|p| p.piece == text) {
                special_strings.named.entry(key.to_string()).or_insert_with(|| text.to_string());
            }
        }
        let (template, template_origin) = match chat_template {
            Some(t) => (t, format!("{} (tokenizer.chat_template)", origin.display())),
            None => (ERNIE_CHAT_TEMPLATE.to_string(), "built-in ERNIE 4.5 template".to_string()),
        };
        TextTokenizer::assemble(tokenizer, TokenizerSource::Gguf, special_strings, template, template_origin, origin)
    }

    fn assemble(
        tokenizer: Tokenizer,
        source: TokenizerSource,
        special_strings: SpecialTokenStrings,
        template: String,
        origin: String,
        dir: &Path,
    ) -> Result<TextTokenizer> {
        let mut plain = tokenizer.clone();
        plain.set_encode_special_tokens(true);

        let added = tokenizer.get_added_tokens_decoder();
        let special_ids: HashSet<u32> =
            added.iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        let mut special_texts: Vec<String> =
            added.values().filter(|t| t.special).map(|t| t.content.clone()).collect();
        special_texts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));

        let vocab_size = tokenizer
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let is_byte_token = (0..vocab_size as u32)
            .map(|id| tokenizer.id_to_token(id).is_some_and(|t| byte_fallback_value(&t).is_some()))
            .collect();

        let chat = ChatTemplate::new(template, origin, &special_strings)?;

        Ok(TextTokenizer {
            tokenizer,
            plain,
            special_ids,
            special_texts,
            is_byte_token,
            vocab_size,
            special_strings,
            chat,
            dir: dir.to_path_buf(),
            source,
        })
    }

    /// Whether `dir` has a tokenizer [`Self::from_dir`] can load (`tokenizer.json` or
    /// `tokenizer.model`): what a loader checks before deciding a checkpoint has no tokenizer.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join("tokenizer.json").is_file() || dir.join("tokenizer.model").is_file()
    }

    /// Which file the tokenizer was built from.
    pub fn source(&self) -> TokenizerSource {
        self.source
    }

    /// Encode untrusted text: literal special-token text (`"<|end_of_sentence|>"`, `"<s>"`) is
    /// tokenized as ordinary characters and never becomes a special id. Non-special added tokens
    /// (the ERNIE-VL digits `0`..`9`) still split as in transformers with
    /// `split_special_tokens=True`. No BOS/EOS is added.
    ///
    /// Returns ids `[n_tokens]`. Errors: [`Error::Encode`].
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        encode_ids(&self.plain, text)
    }

    /// Encode trusted text (a raw prompt written with the model's control tokens): special-token
    /// text becomes the special id, exactly as transformers' `tokenizer.encode(text,
    /// add_special_tokens=False)`. No BOS/EOS is added.
    ///
    /// Returns ids `[n_tokens]`. Errors: [`Error::Encode`].
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        encode_ids(&self.tokenizer, text)
    }

    /// Decode ids to text (transformers `decode(ids, skip_special_tokens)` with
    /// `clean_up_tokenization_spaces=False`, ERNIE's setting). Byte-fallback pieces are joined
    /// into UTF-8; an invalid byte run decodes to one U+FFFD per byte.
    ///
    /// Ids with no token (≥ [`Self::vocab_size`]: a model's embedding matrix may have more rows
    /// than the tokenizer has tokens, as ERNIE's padded 103424) decode to no text, as in
    /// transformers (`decode([300, 1015, 301]) == decode([300, 301])` for the fixture).
    ///
    /// Errors: [`Error::Decode`].
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let known: Vec<u32>;
        let ids = if ids.iter().any(|&id| id as usize >= self.vocab_size) {
            known = ids.iter().copied().filter(|&id| (id as usize) < self.vocab_size).collect();
            &known
        } else {
            ids
        };
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| Error::Decode { message: e.to_string() })
    }

    /// Id of a token string (vocabulary piece or added token), `None` if unknown.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Number of ids: largest id + 1 (equals `len(tokenizer)` in transformers when ids are
    /// contiguous; the embedding matrix may be larger, e.g. ERNIE's 103424 rows).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Stop ids: those of `</s>` and `<|end_of_sentence|>` when present, plus the config's
    /// `eos_token` if it is something else. Sorted, without duplicates.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let eos = self.special_strings.named.get("eos_token").map(String::as_str);
        let mut ids: Vec<u32> =
            ERNIE_STOP_TOKENS.iter().copied().chain(eos).filter_map(|t| self.token_id(t)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether `id` is an added token flagged special.
    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Some special-token text contained in `text`, if any (longer tokens are tried first).
    pub(crate) fn find_special_text(&self, text: &str) -> Option<&str> {
        self.special_texts.iter().map(String::as_str).find(|t| !t.is_empty() && text.contains(t))
    }

    /// The tokenizer that parses special-token text (for the chat module).
    pub(crate) fn special_tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub(super) fn is_byte_token(&self, id: u32) -> bool {
        self.is_byte_token.get(id as usize).copied().unwrap_or(false)
    }

}

/// Read and parse a `tokenizer.json`.
fn tokenizer_from_json(path: &Path) -> Result<Tokenizer> {
    let text = read_to_string(path)?;
    // Parse once with serde_json first so a syntax error is reported as such (with line and
    // column) rather than as a generic tokenizers failure.
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    text.parse().map_err(|e: Box<dyn std::error::Error + Send + Sync>| Error::TokenizerFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `<0xNN>` → `NN`, mirroring the `ByteFallback` decoder's test.
fn byte_fallback_value(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn encode_ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer
        .encode(text, false)
        .map(|enc| enc.get_ids().to_vec())
        .map_err(|e| Error::Encode { message: e.to_string() })
}

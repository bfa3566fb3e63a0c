//! Multimodal prompts from the checkpoint's own chat template, as transformers' processor renders
//! them (issue #12 items 1-2).
//!
//! # Which template (transformers 5.25.0 `ProcessorMixin.get_processor_dict`)
//! 1. `processor_config.json`'s `chat_template` (transformers warns that it belongs in its own
//!    file, but uses it);
//! 2. `chat_template.json`'s `chat_template` (the legacy processor file);
//! 3. `chat_template.jinja`;
//! 4. none: the processor refuses `apply_chat_template`; we fall back to the compiled-in
//!    ERNIE-4.5-VL format of [`super::build_stream`] and say so ([`TemplateSource::BuiltIn`]).
//!
//! `tokenizer_config.json`'s `chat_template` is the *tokenizer's* template and the processor
//! never reads it (on ERNIE-4.5-VL checkpoints it is the text-only template, which cannot render
//! image parts); it is not used here.
//!
//! # Rendering (`processor.apply_chat_template(messages, add_generation_prompt=True, **kwargs)`)
//! Messages go to the template as `{"role", "content": [{"type": "text", "text"}, {"type":
//! "image"}, {"type": "video"}, {"type": "audio"}]}` with the tokenizer's special-token strings
//! and the caller's template variables (`enable_thinking`, vLLM's `chat_template_kwargs`), in
//! the same jinja environment as the text path ([`crate::chat`]), except that an undefined
//! variable used other than in `if` / `is defined` is an error ([`Error::Template`]), where
//! jinja2 would silently print "".
//!
//! # Tokens
//! The rendering is tokenized as the text path does (sentinel split: special tokens only from
//! template text, user text never becomes special ids, runs between specials encoded in one
//! call). Each media placeholder id the template emitted (`<|IMAGE_PLACEHOLDER|>`,
//! `<|VIDEO_PLACEHOLDER|>`, `<|AUDIO_PLACEHOLDER|>`: the processor's `image_token` /
//! `video_token`) takes the next media item of that kind and becomes a [`Segment::Media`] of
//! `n_tokens` placeholders — the processor's `replace_image_token` / `replace_video_token`.
//! Routing modality is by id as in the processor's `create_moe_mm_token_type_ids`: placeholders
//! and their start / end ids carry the media kind, everything else is text.

use std::path::{Path, PathBuf};

use minijinja::value::{Serde, Value};
use serde_json::{json, Map, Value as Json};

use crate::chat::{reassemble, sentinel, sentinel_marker, split_pieces, ChatTemplate};
use crate::error::{Error, Result};
use crate::text::{read_json, read_to_string, TextTokenizer};

use super::build::{build_stream, media_token_ids, MediaQueue, StreamConfig};
use super::media::{MediaItem, MediaKind, Segment};
use super::prompt::{MmMessage, Part, StreamPrompt};
use super::tokens::TokenStream;

/// Where a multimodal chat template came from (for `ernie inspect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `processor_config.json`'s `chat_template`.
    ProcessorConfig(PathBuf),
    /// `chat_template.json`'s `chat_template` (legacy processor file).
    ChatTemplateJson(PathBuf),
    /// `chat_template.jinja`.
    ChatTemplateJinja(PathBuf),
    /// Given by the caller (tests, overrides); the string names it.
    Given(String),
    /// No template in the checkpoint: the compiled-in ERNIE-4.5-VL format.
    BuiltIn,
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateSource::ProcessorConfig(p) => write!(f, "{} (chat_template)", p.display()),
            TemplateSource::ChatTemplateJson(p) => write!(f, "{} (chat_template)", p.display()),
            TemplateSource::ChatTemplateJinja(p) => write!(f, "{}", p.display()),
            TemplateSource::Given(name) => write!(f, "{name}"),
            TemplateSource::BuiltIn => write!(f, "built-in ERNIE-4.5-VL format (the checkpoint has no chat template)"),
        }
    }
}

/// A checkpoint's multimodal chat template (or the built-in fallback), ready to build streams.
#[derive(Clone)]
pub struct MmChatTemplate {
    compiled: Option<ChatTemplate>,
    source: TemplateSource,
}

impl std::fmt::Debug for MmChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmChatTemplate").field("source", &self.source).finish_non_exhaustive()
    }
}

impl MmChatTemplate {
    /// Look the template up in a checkpoint folder in the processor's order (module docs) and
    /// compile it with `tok`'s special-token variables.
    ///
    /// Errors: [`Error::Io`], [`Error::Json`] (a config file is not JSON), [`Error::ConfigField`]
    /// (`chat_template` is not a string), [`Error::Template`] (does not compile).
    pub fn from_dir(dir: &Path, tok: &TextTokenizer) -> Result<MmChatTemplate> {
        for (file, wrap) in [
            ("processor_config.json", TemplateSource::ProcessorConfig as fn(PathBuf) -> TemplateSource),
            ("chat_template.json", TemplateSource::ChatTemplateJson),
        ] {
            let path = dir.join(file);
            if path.is_file() {
                if let Some(t) = json_template(&path)? {
                    return MmChatTemplate::new(t, wrap(path), tok);
                }
            }
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let t = read_to_string(&jinja)?;
            return MmChatTemplate::new(t, TemplateSource::ChatTemplateJinja(jinja), tok);
        }
        Ok(MmChatTemplate::builtin())
    }

    /// Compile `template` (named by `source`).
    ///
    /// Errors: [`Error::Template`].
    pub fn new(template: String, source: TemplateSource, tok: &TextTokenizer) -> Result<MmChatTemplate> {
        let compiled = ChatTemplate::new(template, source.to_string(), &tok.special_strings)?.semi_strict();
        Ok(MmChatTemplate { compiled: Some(compiled), source })
    }

    /// No template: [`Self::build_stream`] uses the compiled-in ERNIE-4.5-VL format.
    pub fn builtin() -> MmChatTemplate {
        MmChatTemplate { compiled: None, source: TemplateSource::BuiltIn }
    }

    /// Where the template came from.
    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    /// The rendered prompt text, one placeholder per media item (transformers'
    /// `apply_chat_template(..., tokenize=False)`). `None` for the built-in format.
    ///
    /// Errors: [`Error::Template`].
    pub fn render(&self, messages: &[MmMessage], add_generation_prompt: bool, kwargs: &Map<String, Json>) -> Result<Option<String>> {
        let Some(t) = &self.compiled else { return Ok(None) };
        let texts = texts_of(messages);
        t.render_with(messages_value(messages, &texts), add_generation_prompt, kwargs).map(Some)
    }

    /// Build the token stream for `prompt` (module docs). A [`StreamPrompt::Chat`] goes through
    /// the template, with `enable_thinking = true` added to `kwargs` when the prompt asks for it
    /// (and nothing added otherwise, as when transformers is called without it);
    /// [`StreamPrompt::Raw`], and every prompt when there is no template, go to
    /// [`build_stream`] (the built-in format reads only `enable_thinking` from `kwargs`).
    /// `media` is consumed per kind in placeholder order.
    ///
    /// Errors: [`Error::Template`] (render failure, unknown variable), [`Error::Prompt`]
    /// (placeholder / media count mismatch, missing special tokens), [`Error::TemplateRewritesContent`],
    /// [`Error::Encode`].
    pub fn build_stream(
        &self,
        tok: &TextTokenizer,
        prompt: &StreamPrompt,
        kwargs: &Map<String, Json>,
        media: Vec<MediaItem>,
        cfg: &StreamConfig,
    ) -> Result<TokenStream> {
        let thinking_kwarg = kwargs.get("enable_thinking").is_some_and(truthy);
        match (prompt, &self.compiled) {
            (StreamPrompt::Chat { messages, add_generation_prompt, enable_thinking }, Some(t)) => {
                let mut kwargs = kwargs.clone();
                if *enable_thinking {
                    kwargs.entry("enable_thinking").or_insert(Json::Bool(true));
                }
                template_stream(tok, t, messages, *add_generation_prompt, &kwargs, media, cfg)
            }
            (StreamPrompt::Chat { messages, add_generation_prompt, enable_thinking }, None) if thinking_kwarg && !enable_thinking => {
                let prompt = StreamPrompt::Chat { messages: messages.clone(), add_generation_prompt: *add_generation_prompt, enable_thinking: true };
                build_stream(tok, &prompt, media, cfg)
            }
            _ => build_stream(tok, prompt, media, cfg),
        }
    }
}

/// Python truthiness of a JSON template variable.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// `chat_template` of a processor JSON file: a string, or `{"default": ...}`; absent / null → None.
fn json_template(path: &Path) -> Result<Option<String>> {
    let cfg = read_json(path)?;
    let bad = |problem: &str| Error::ConfigField { path: path.to_path_buf(), field: "chat_template".into(), problem: problem.into() };
    match cfg.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(m)) => match m.get("default") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(bad("a template map without a string \"default\" entry")),
        },
        Some(_) => Err(bad("expected a string")),
    }
}

/// Every text part, in message order.
fn texts_of(messages: &[MmMessage]) -> Vec<&str> {
    messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::Media(_) => None,
        })
        .collect()
}

/// Messages as the template sees them; text part `k` is `texts[k]`.
fn messages_value(messages: &[MmMessage], texts: &[impl AsRef<str>]) -> Value {
    let mut k = 0;
    let list: Vec<Json> = messages
        .iter()
        .map(|m| {
            let content: Vec<Json> = m
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text(_) => {
                        k += 1;
                        json!({"type": "text", "text": texts[k - 1].as_ref()})
                    }
                    Part::Media(kind) => json!({"type": kind.name()}),
                })
                .collect();
            json!({"role": m.role, "content": content})
        })
        .collect();
    Value::from(Serde(list))
}

/// The processor's placeholder text per kind (`image_token`, `video_token`, audio by analogy).
fn hf_placeholder(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "<|IMAGE_PLACEHOLDER|>",
        MediaKind::Video => "<|VIDEO_PLACEHOLDER|>",
        MediaKind::Audio => "<|AUDIO_PLACEHOLDER|>",
    }
}

fn template_stream(
    tok: &TextTokenizer,
    t: &ChatTemplate,
    messages: &[MmMessage],
    add_generation_prompt: bool,
    kwargs: &Map<String, Json>,
    media: Vec<MediaItem>,
    cfg: &StreamConfig,
) -> Result<TokenStream> {
    let texts = texts_of(messages);
    let rendered = t.render_with(messages_value(messages, &texts), add_generation_prompt, kwargs)?;
    let marker = sentinel_marker(&texts);
    let masked: Vec<String> = (0..texts.len()).map(|k| sentinel(&marker, k)).collect();
    let masked_render = t.render_with(messages_value(messages, &masked), add_generation_prompt, kwargs)?;
    let ids = match split_pieces(&masked_render, &marker, texts.len()) {
        Some(pieces) if reassemble(&pieces, &texts) == rendered => tok.encode_pieces(&pieces, &texts)?,
        _ => {
            // The template rewrote text parts: spans unknown. Safe only without special text in them.
            for (i, m) in messages.iter().enumerate() {
                for p in &m.parts {
                    if let Part::Text(text) = p {
                        if let Some(special) = tok.find_special_text(text) {
                            return Err(Error::TemplateRewritesContent {
                                origin: t.origin().to_string(),
                                message_index: i,
                                token: special.to_string(),
                            });
                        }
                    }
                }
            }
            tok.encode_with_specials(&rendered)?
        }
    };
    segments_from_ids(tok, ids, media, cfg)
}

/// Split template ids at media placeholders (module docs) and finish the stream.
fn segments_from_ids(tok: &TextTokenizer, ids: Vec<u32>, media: Vec<MediaItem>, cfg: &StreamConfig) -> Result<TokenStream> {
    let placeholders: Vec<(u32, MediaKind)> =
        MediaKind::ALL.iter().filter_map(|&k| tok.token_id(hf_placeholder(k)).map(|id| (id, k))).collect();
    let by_id: Vec<(u32, u8)> = MediaKind::ALL
        .iter()
        .filter_map(|&k| media_token_ids(tok, k, cfg.video_placeholder).ok().map(|t| (k, t)))
        .flat_map(|(k, t)| [(t.start, k.modality_id()), (t.end, k.modality_id())])
        .collect();
    let mut queue = MediaQueue::new(media);
    let mut segments = Vec::new();
    let mut text = Vec::new();
    let mut modality = Vec::new();
    for id in ids {
        if let Some(&(_, kind)) = placeholders.iter().find(|(p, _)| *p == id) {
            let item = queue.take(kind)?;
            let placeholder_id = media_token_ids(tok, kind, cfg.video_placeholder)?.placeholder;
            modality.extend(std::iter::repeat_n(kind.modality_id(), item.n_tokens()));
            if !text.is_empty() {
                segments.push(Segment::Text { ids: std::mem::take(&mut text) });
            }
            segments.push(Segment::Media { item, placeholder_id });
        } else {
            modality.push(by_id.iter().find(|(t, _)| *t == id).map_or(0, |&(_, m)| m));
            text.push(id);
        }
    }
    queue.check_all_used()?;
    if !text.is_empty() {
        segments.push(Segment::Text { ids: text });
    }
    TokenStream::from_segments(segments, modality, cfg.rule)
}

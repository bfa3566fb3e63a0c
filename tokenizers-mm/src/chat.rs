//! Chat templates: render with minijinja the way transformers renders with jinja2, then
//! tokenize so that message content can never inject special tokens.
//!
//! # Rendering
//! Same environment as transformers' `_compile_jinja_template` (utils/chat_template_utils.py):
//! `trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception(msg)`, a `tojson` filter
//! that writes Python's `json.dumps(ensure_ascii=False)` layout, Python string methods
//! (`.strip()`, `.startswith()`, … via minijinja-contrib's pycompat), and the context
//! `messages`, `add_generation_prompt`, `tools = none`, `documents = none` plus every special
//! token string of tokenizer_config.json (`bos_token`, `cls_token`, …). Not provided:
//! `strftime_now`, the `{% generation %}` tag.
//!
//! # Tokenizing without injection
//! The template is rendered a second time with each message's content replaced by a sentinel,
//! which splits the prompt into *template pieces* and *content pieces*. Special-token text is
//! parsed only in template pieces (with the tokenizer's own added-token matcher); everything
//! between two template special tokens — template text and content alike — is then encoded in
//! one call with special parsing off.
//!
//! Why not encode each piece on its own: ERNIE's tokenizer has no pre-tokenizer, so BPE runs
//! over the whole stretch between two added tokens and merges *across* a template/content
//! boundary (`"User: " + "What"` gives `▁What`, not `▁` + `What`). Splitting only where the
//! tokenizer itself splits — at special tokens — keeps those merges.
//!
//! Exactness: the ids equal transformers' `apply_chat_template(..., tokenize=True)` whenever
//! 1. no message content contains special-token text (otherwise transformers injects the
//!    special id and we deliberately do not), and
//! 2. no special-token match straddles a template/content boundary (content ending in `"<|end_of"`
//!    right before template text `"_sentence|>"` — impossible for the ERNIE template, whose
//!    specials are whole literals), and
//! 3. special tokens have no `lstrip`/`rstrip`/`single_word` flags reaching into content
//!    (none in ERNIE), and
//! 4. the normalizer works character by character (ERNIE: `Replace(" ", "▁")`), so normalizing
//!    a stretch equals normalizing it inside the whole prompt.
//!
//! The golden test checks this against transformers.
//!
//! If the template rewrites content (e.g. `message.content | trim`) the sentinel pieces do not
//! reassemble the real rendering; then the real rendering is encoded with special parsing if no
//! content holds special-token text, and [`Error::TemplateRewritesContent`] is returned otherwise.

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Serde, Value};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::{SpecialTokenStrings, TextTokenizer};

/// ERNIE 4.5 text chat template (0.3B / 21B-A3B), used when a checkpoint ships none.
///
/// Verbatim `DEFAULT_CHAT_TEMPLATE` of transformers
/// `src/transformers/models/ernie4_5/convert_ernie4_5_tokenizer.py`, which is the
/// `chat_template` of baidu/ERNIE-4.5-0.3B-PT's tokenizer_config.json. Renders
/// `<|begin_of_sentence|>` + system content + "\n", "User: …\n", "Assistant: …<|end_of_sentence|>",
/// and "Assistant: " as generation prompt (spec §4).
pub const ERNIE_CHAT_TEMPLATE: &str = concat!(
    "{%- if not add_generation_prompt is defined -%}\n",
    "    {%- set add_generation_prompt = true -%}\n",
    "{%- endif -%}\n",
    "{%- if not cls_token is defined -%}\n",
    "    {%- set cls_token = \"<|begin_of_sentence|>\" -%}\n",
    "{%- endif -%}\n",
    "{%- if not sep_token is defined -%}\n",
    "    {%- set sep_token = \"<|end_of_sentence|>\" -%}\n",
    "{%- endif -%}\n",
    "{{- cls_token -}}\n",
    "{%- for message in messages -%}\n",
    "    {%- if message[\"role\"] == \"user\" -%}\n",
    "        {{- \"User: \" + message[\"content\"] + \"\n\" -}}\n",
    "    {%- elif message[\"role\"] == \"assistant\" -%}\n",
    "        {{- \"Assistant: \" + message[\"content\"] + sep_token -}}\n",
    "    {%- elif message[\"role\"] == \"system\" -%}\n",
    "        {{- message[\"content\"] + \"\n\" -}}\n",
    "    {%- endif -%}\n",
    "{%- endfor -%}\n",
    "{%- if add_generation_prompt -%}\n",
    "    {{- \"Assistant: \" -}}\n",
    "{%- endif -%}",
);

const TEMPLATE_NAME: &str = "chat_template";
/// Sentinel delimiters: private-use code points no template emits on its own.
const SENTINEL_OPEN: char = '\u{E000}';
const SENTINEL_CLOSE: char = '\u{E001}';

/// One chat turn as the template sees it: `{"role": ..., "content": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant" (the ERNIE template ignores other roles).
    pub role: String,
    /// Message text; treated as untrusted (never becomes special ids).
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template plus the special-token variables it is rendered with.
#[derive(Clone)]
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    /// `bos_token` → "<s>", …, `additional_special_tokens` → [...]
    globals: BTreeMap<String, Value>,
}

impl ChatTemplate {
    /// Compile `source`; `origin` names where it came from, for errors.
    pub(crate) fn new(source: String, origin: String, specials: &SpecialTokenStrings) -> Result<Self> {
        let template_err = |e: minijinja::Error| Error::Template { origin: origin.clone(), message: format_minijinja(&e) };
        let mut env = Environment::new();
        // jinja2 defaults otherwise (keep_trailing_newline = false, `{{ }}`/`{% %}` delimiters).
        env.set_syntax(SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_err)?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source).map_err(template_err)?;
        let mut globals: BTreeMap<String, Value> =
            specials.named.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        if !specials.additional.is_empty() {
            globals.insert("additional_special_tokens".into(), Value::from(Serde(&specials.additional)));
        }
        Ok(ChatTemplate { env, origin, globals })
    }

    /// Where the template came from.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template { origin: self.origin.clone(), message: format_minijinja(&e) })?;
        let mut ctx = self.globals.clone();
        ctx.insert("messages".into(), Value::from(Serde(messages)));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        template
            .render(Value::from(Serde(&ctx)))
            .map_err(|e| Error::Template { origin: self.origin.clone(), message: format_minijinja(&e) })
    }
}

/// A stretch of the rendered prompt.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    /// Text the template produced: special-token text in it is trusted.
    Template(&'a str),
    /// Content of message `i`.
    Content(usize),
}

impl TextTokenizer {
    /// Render the chat template to the prompt string (transformers
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`).
    ///
    /// Errors: [`Error::Template`] (render failure, `raise_exception`).
    pub fn render_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat.render(messages, add_generation_prompt)
    }

    /// Render and tokenize a conversation: returns prompt ids `[n_tokens]`. Template text is
    /// parsed for special tokens; message content never becomes special ids (see the module
    /// docs for when this equals transformers' `apply_chat_template(tokenize=True)`).
    ///
    /// Errors: [`Error::Template`], [`Error::TemplateRewritesContent`], [`Error::Encode`].
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let rendered = self.render_chat_template(messages, add_generation_prompt)?;

        let marker = sentinel_marker(messages);
        let masked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage { role: m.role.clone(), content: sentinel(&marker, i) })
            .collect();
        let masked_render = self.chat.render(&masked, add_generation_prompt)?;

        match split_pieces(&masked_render, &marker, messages.len()) {
            Some(pieces) if reassemble(&pieces, messages) == rendered => self.encode_pieces(&pieces, messages),
            _ => {
                // The template rewrote content: spans unknown. Safe only without special text in content.
                for (i, m) in messages.iter().enumerate() {
                    if let Some(tok) = self.find_special_text(&m.content) {
                        return Err(Error::TemplateRewritesContent {
                            origin: self.chat.origin().to_string(),
                            message_index: i,
                            token: tok.to_string(),
                        });
                    }
                }
                self.encode_with_specials(&rendered)
            }
        }
    }

    /// Special tokens only from template pieces; every stretch between them encoded in one call
    /// with special parsing off (see module docs).
    fn encode_pieces(&self, pieces: &[Piece<'_>], messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut run = String::new();
        for piece in pieces {
            match *piece {
                Piece::Content(i) => run.push_str(&messages[i].content),
                Piece::Template(text) => {
                    let enc = self
                        .special_tokenizer()
                        .encode(text, false)
                        .map_err(|e| Error::Encode { message: e.to_string() })?;
                    let mut cursor = 0;
                    for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                        if self.is_special_id(id) && start >= cursor && end <= text.len() {
                            run.push_str(text.get(cursor..start).unwrap_or_default());
                            self.flush_run(&mut run, &mut ids)?;
                            ids.push(id);
                            cursor = end;
                        }
                    }
                    run.push_str(text.get(cursor..).unwrap_or_default());
                }
            }
        }
        self.flush_run(&mut run, &mut ids)?;
        Ok(ids)
    }

    fn flush_run(&self, run: &mut String, ids: &mut Vec<u32>) -> Result<()> {
        if !run.is_empty() {
            ids.extend(self.encode_plain(run)?);
            run.clear();
        }
        Ok(())
    }
}

/// A marker prefix that occurs in no message content: `\u{E000}ernie-msg-` (with more
/// `\u{E000}` if needed).
fn sentinel_marker(messages: &[ChatMessage]) -> String {
    let mut marker = format!("{SENTINEL_OPEN}ernie-msg-");
    while messages.iter().any(|m| m.content.contains(&marker)) {
        marker.insert(0, SENTINEL_OPEN);
    }
    marker
}

fn sentinel(marker: &str, i: usize) -> String {
    format!("{marker}{i}{SENTINEL_CLOSE}")
}

/// Split a sentinel rendering into pieces; `None` if a sentinel is damaged or out of range.
fn split_pieces<'a>(masked: &'a str, marker: &str, n_messages: usize) -> Option<Vec<Piece<'a>>> {
    let mut pieces = Vec::new();
    let mut rest = masked;
    while let Some(at) = rest.find(marker) {
        if at > 0 {
            pieces.push(Piece::Template(&rest[..at]));
        }
        let after = &rest[at + marker.len()..];
        let close = after.find(SENTINEL_CLOSE)?;
        let index: usize = after[..close].parse().ok()?;
        if index >= n_messages {
            return None;
        }
        pieces.push(Piece::Content(index));
        rest = &after[close + SENTINEL_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Template(rest));
    }
    Some(pieces)
}

fn reassemble(pieces: &[Piece<'_>], messages: &[ChatMessage]) -> String {
    pieces
        .iter()
        .map(|p| match *p {
            Piece::Template(t) => t,
            Piece::Content(i) => messages[i].content.as_str(),
        })
        .collect()
}

/// `raise_exception(message)`: abort rendering with the template's message (transformers global).
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)` — separators
/// `", "`/`": "` without indent, `","`/`": "` with it, no HTML escaping (minijinja's built-in
/// escapes `<`, `>`, `&`, `'`). Map keys come out sorted (minijinja maps are ordered by key).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    if ensure_ascii == Some(true) {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: ensure_ascii=True is not supported"));
    }
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let mut out = String::new();
    write_py_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_py_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (k, (key, item)) in map.iter().enumerate() {
                if k > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&J::String(key.clone()).to_string());
                out.push_str(": ");
                write_py_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        // Scalars and empty containers: serde_json's escaping matches Python's for ensure_ascii=False.
        other => out.push_str(&other.to_string()),
    }
}

fn format_minijinja(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    if let Some(detail) = e.detail() {
        if !msg.contains(detail) {
            msg.push_str(": ");
            msg.push_str(detail);
        }
    }
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pieces_roundtrip() {
        let marker = sentinel_marker(&[]);
        let masked = format!("A{}B{}", sentinel(&marker, 1), sentinel(&marker, 0));
        let pieces = split_pieces(&masked, &marker, 2).unwrap();
        assert_eq!(pieces, vec![Piece::Template("A"), Piece::Content(1), Piece::Template("B"), Piece::Content(0)]);
        assert!(split_pieces(&masked, &marker, 1).is_none());
        let damaged = format!("A{marker}1");
        assert!(split_pieces(&damaged, &marker, 2).is_none());
    }

    #[test]
    fn py_json_layout() {
        let v: serde_json::Value = serde_json::json!({"a": [1, "x<y"], "b": {}});
        let mut s = String::new();
        write_py_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, "x<y"], "b": {}}"#);
        let mut s = String::new();
        write_py_json(&v, Some(2), 0, &mut s);
        assert_eq!(s, "{\n  \"a\": [\n    1,\n    \"x<y\"\n  ],\n  \"b\": {}\n}");
    }
}

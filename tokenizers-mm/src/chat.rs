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
//! # Tokenizing
//! This module only renders; `TextTokenizer::apply_chat_template` (`text/template.rs`) turns a
//! rendering into ids without letting message content inject special tokens, using the sentinel
//! helpers here ([`sentinel_marker`], [`split_pieces`]).
//!
use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Serde, Value};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// Special-token strings read from `tokenizer_config.json` (`bos_token` → `"<s>"`, …).
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialTokenStrings {
    /// `bos_token`, `eos_token`, … → token text; only the keys the config sets.
    pub(crate) named: BTreeMap<String, String>,
    /// `additional_special_tokens` (token texts), empty when absent.
    pub(crate) additional: Vec<String>,
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

    pub(crate) fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(Value::from(Serde(messages)), add_generation_prompt, &serde_json::Map::new())
    }

    /// Make an undefined value an error wherever it is used other than in a test (`is defined`)
    /// or an `if` (minijinja's semi-strict mode). jinja2 in transformers prints an undefined
    /// value as "" — a silent prompt change; the multimodal path refuses it instead.
    pub(crate) fn semi_strict(mut self) -> Self {
        self.env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        self
    }

    /// Render with any messages value (`[{"role", "content": str | [parts]}]`) and extra template
    /// variables (`enable_thinking`, …; transformers' `**kwargs`, which override the special-token
    /// variables). `messages`, `add_generation_prompt`, `tools` and `documents` are reserved.
    ///
    /// Errors: [`Error::Template`] (render failure, strict-undefined use, a reserved kwarg).
    pub(crate) fn render_with(
        &self,
        messages: Value,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let fail = |message: String| Error::Template { origin: self.origin.clone(), message };
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| fail(format_minijinja(&e)))?;
        let mut ctx = self.globals.clone();
        for (k, v) in kwargs {
            if RESERVED_VARIABLES.contains(&k.as_str()) {
                return Err(fail(format!("template variable `{k}` is set by the renderer, not by the caller")));
            }
            ctx.insert(k.clone(), Value::from(Serde(v)));
        }
        ctx.insert("messages".into(), messages);
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        template.render(Value::from(Serde(&ctx))).map_err(|e| fail(format_minijinja(&e)))
    }
}

/// Variables the renderer sets itself.
const RESERVED_VARIABLES: [&str; 4] = ["messages", "add_generation_prompt", "tools", "documents"];

/// A stretch of the rendered prompt.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece<'a> {
    /// Text the template produced: special-token text in it is trusted.
    Template(&'a str),
    /// Content number `i` (a message's content, or a text part).
    Content(usize),
}

/// A marker prefix that occurs in no content: `\u{E000}ernie-msg-` (with more `\u{E000}` if
/// needed).
pub(crate) fn sentinel_marker(contents: &[&str]) -> String {
    let mut marker = format!("{SENTINEL_OPEN}ernie-msg-");
    while contents.iter().any(|c| c.contains(&marker)) {
        marker.insert(0, SENTINEL_OPEN);
    }
    marker
}

pub(crate) fn sentinel(marker: &str, i: usize) -> String {
    format!("{marker}{i}{SENTINEL_CLOSE}")
}

/// Split a sentinel rendering into pieces; `None` if a sentinel is damaged or out of range.
pub(crate) fn split_pieces<'a>(masked: &'a str, marker: &str, n_messages: usize) -> Option<Vec<Piece<'a>>> {
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

pub(crate) fn reassemble(pieces: &[Piece<'_>], contents: &[&str]) -> String {
    pieces
        .iter()
        .map(|p| match *p {
            Piece::Template(t) => t,
            Piece::Content(i) => contents[i],
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

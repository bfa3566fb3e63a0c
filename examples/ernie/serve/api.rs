//! The OpenAI wire format: request bodies (parsed leniently, validated strictly), response bodies,
//! and the error shape `{"error": {"message", "type", "param", "code"}}` with its HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ernie_runtime::{EmbedInput, Error as RuntimeError, Media};
use serde::Deserialize;
use serde_json::{json, Value};
use tokenizers_mm::{ChatMessage, MediaKind, MmMessage, Part};

/// An error response. `kind` is OpenAI's `type`; `code` a stable machine-readable name.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, code, param: None }
    }

    /// 400 for a request that cannot be served as written.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    /// 400 naming the offending request field.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        ApiError { param: Some(param), ..Self::bad_request(message) }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", Some(code), message)
    }

    pub fn loading() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", Some("model_loading"), "the model is still loading; retry shortly")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, message)
    }

    /// The JSON body (also sent as an SSE `data:` line when a stream fails midway).
    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    /// Request, option, unsupported-feature and tokenizer errors come from the client's input
    /// (400); anything else is ours.
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Request(msg) => ApiError::bad_request(msg),
            e @ (RuntimeError::InvalidOption { .. } | RuntimeError::Unsupported { .. }) => ApiError::bad_request(e.to_string()),
            e @ RuntimeError::Tokenizer(_) => ApiError::bad_request(e.to_string()),
            e => ApiError::internal(e.to_string()),
        }
    }
}

/// Parses a JSON body, turning serde's message (which names line and column) into a 400.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /v1/embeddings`.
#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    pub input: Value,
    pub model: Option<String>,
    pub encoding_format: Option<String>,
    pub dimensions: Option<usize>,
}

/// OpenAI's `input`: a string, an array of strings, an array of token ids, or an array of those.
pub fn embedding_inputs(input: &Value, max_inputs: usize) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = |m: &str| ApiError::bad_param("input", m.to_string());
    let one = |v: &Value| -> Result<EmbedInput, ApiError> {
        match v {
            Value::String(s) if s.is_empty() => Err(bad("input strings must not be empty")),
            Value::String(s) => Ok(EmbedInput::Text(s.clone())),
            Value::Array(ids) if ids.is_empty() => Err(bad("token arrays must not be empty")),
            // vLLM-style multimodal input: one item is a chat content-part array (text and
            // `image_url` data: URIs); images go where their parts are (`<image>` markers).
            Value::Array(parts) if parts.first().is_some_and(Value::is_object) => media_input(v),
            Value::Array(ids) => ids
                .iter()
                .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect::<Option<Vec<u32>>>()
                .map(EmbedInput::Ids)
                .ok_or_else(|| bad("token arrays must hold non-negative integers")),
            _ => Err(bad("input must be a string, an array of strings, or token id arrays")),
        }
    };
    let inputs = match input {
        Value::String(_) => vec![one(input)?],
        // An array of numbers (or of content parts) is one input; otherwise each element is an input.
        Value::Array(items) if items.first().is_some_and(|x| x.is_number() || x.is_object()) => vec![one(input)?],
        Value::Array(items) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("input must be a string, an array of strings, or token id arrays")),
    };
    if inputs.is_empty() {
        return Err(bad("input must not be empty"));
    }
    if inputs.len() > max_inputs {
        return Err(bad(&format!("{} inputs exceed the limit of {max_inputs} per request", inputs.len())));
    }
    Ok(inputs)
}

/// One embeddings input given as chat content parts: text parts joined with `<image>` markers
/// where the images were, and the images' bytes in order.
fn media_input(parts: &Value) -> Result<EmbedInput, ApiError> {
    if let Some(items) = parts.as_array().filter(|p| p.iter().any(|x| x.get("type").and_then(Value::as_str) == Some("input_audio"))) {
        return audio_input(items);
    }
    let mut images = Vec::new();
    let parsed = message_parts(0, parts, &mut images).map_err(|e| ApiError::bad_param("input", e.message.replace("messages[0]: ", "")))?;
    let mut text = String::new();
    for p in parsed {
        match p {
            Part::Text(t) => text.push_str(&t),
            Part::Media(k) => text.push_str(k.marker()),
        }
    }
    Ok(EmbedInput::Media { text, media: images.into_iter().map(Media::Image).collect() })
}

/// One embeddings input holding an `input_audio` part (OpenAI's `{"type": "input_audio",
/// "input_audio": {"data": base64, "format": "wav"}}`) and text parts: the clip's bytes and the
/// text parts joined. One clip per input; no images beside it.
fn audio_input(parts: &[Value]) -> Result<EmbedInput, ApiError> {
    let bad = |m: String| ApiError::bad_param("input", m);
    let (mut text, mut audio) = (String::new(), None);
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(part.get("text").and_then(Value::as_str).ok_or_else(|| bad("a text part needs a string `text`".into()))?),
            Some("input_audio") if audio.is_none() => {
                let data = part.pointer("/input_audio/data").and_then(Value::as_str).ok_or_else(|| bad("input_audio needs a base64 string `data`".into()))?;
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| bad(format!("input_audio.data is not valid base64: {e}")))?;
                audio = Some(bytes);
            }
            Some("input_audio") => return Err(bad("one input_audio part per input".into())),
            Some(t) => return Err(bad(format!("content part type {t:?} cannot be mixed with input_audio"))),
            None => return Err(bad("a content part needs a `type`".into())),
        }
    }
    let audio = audio.ok_or_else(|| bad("no input_audio part".into()))?;
    Ok(EmbedInput::Media { text, media: vec![Media::Audio(audio)] })
}

/// `POST /v1/chat/completions`. Fields we do not implement are rejected when set to anything
/// but their neutral value, so a client never silently gets different semantics.
#[derive(Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Extension (vLLM): keep the k most likely tokens.
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub logprobs: Option<bool>,
    pub tools: Option<Value>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Extension (vLLM): also return the prompt and generated token ids.
    #[serde(default)]
    pub return_token_ids: bool,
    /// Extension (vLLM): variables for the checkpoint's chat template (`{"enable_thinking":
    /// true}`); used by image chats (the multimodal template).
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

impl ChatRequest {
    /// Rejects set-but-unsupported options with a 400 naming the field.
    pub fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_param("n", "only n = 1 is supported"));
        }
        if self.logprobs == Some(true) {
            return Err(ApiError::bad_param("logprobs", "logprobs are not supported"));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(ApiError::bad_param("tools", "tool calling is not supported"));
        }
        if self.frequency_penalty.is_some_and(|p| p != 0.0) || self.presence_penalty.is_some_and(|p| p != 0.0) {
            return Err(ApiError::bad_param("frequency_penalty", "frequency and presence penalties are not supported"));
        }
        Ok(())
    }

    /// `stop`: absent, one string, or up to 4 non-empty strings (OpenAI's limit).
    pub fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        let bad = || ApiError::bad_param("stop", "stop must be a string or an array of up to 4 non-empty strings");
        let stops: Vec<String> = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(bad)).collect::<Result<_, _>>()?,
            Some(_) => return Err(bad()),
        };
        if stops.len() > 4 || stops.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(stops)
    }
}

/// A chat request's prompt: text messages for the chat template, or, when any message carries an
/// image, ERNIE-4.5-VL chat messages with their parts in order plus the images' bytes.
#[derive(Debug)]
pub enum ChatPrompt {
    Text(Vec<ChatMessage>),
    Media { messages: Vec<MmMessage>, images: Vec<Vec<u8>> },
    /// One user message with one `input_audio` clip (the file's bytes, its `format`) and text:
    /// an ERNIE 5.0 audio question (`ernie caption --audio`).
    Audio { text: String, audio: Vec<u8>, format: String },
}

/// Turns OpenAI messages into a [`ChatPrompt`]. Images come inline as `data:` URIs (base64);
/// remote URLs and local paths are refused outright, since this server never fetches anything on
/// a client's behalf. Audio and video parts get a 400 that says why.
pub fn chat_messages(messages: &[InMessage]) -> Result<ChatPrompt, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param("messages", "messages must not be empty"));
    }
    if let Some(audio) = super::speech::audio_chat(messages)? {
        return Ok(audio);
    }
    let mut images = Vec::new();
    let mut parsed = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" => m.role.clone(),
            // OpenAI's newer name for the system role.
            "developer" => "system".to_string(),
            other => return Err(ApiError::bad_param("messages", format!("messages[{i}]: role {other:?} is not supported"))),
        };
        parsed.push((role, message_parts(i, &m.content, &mut images)?));
    }
    if images.is_empty() {
        // vLLM joins text parts with newlines; the template then sees one string per message.
        let text = |parts: Vec<Part>| parts.into_iter().filter_map(|p| if let Part::Text(t) = p { Some(t) } else { None }).collect::<Vec<_>>().join("\n");
        return Ok(ChatPrompt::Text(parsed.into_iter().map(|(role, parts)| ChatMessage { role, content: text(parts) }).collect()));
    }
    Ok(ChatPrompt::Media { messages: parsed.into_iter().map(|(role, parts)| MmMessage { role, parts }).collect(), images })
}

fn message_parts(i: usize, content: &Value, images: &mut Vec<Vec<u8>>) -> Result<Vec<Part>, ApiError> {
    let bad = |m: String| ApiError::bad_param("messages", format!("messages[{i}]: {m}"));
    let parts = match content {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts,
        _ => return Err(bad("content must be a string or an array of content parts".into())),
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text").and_then(Value::as_str) {
                Some(t) => out.push(Part::Text(t.to_string())),
                None => return Err(bad("a text part needs a string `text`".into())),
            },
            Some("image_url") => {
                let url = part.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
                images.push(data_uri_bytes(url).map_err(|m| bad(format!("image_url: {m}")))?);
                out.push(Part::Media(MediaKind::Image));
            }
            Some("input_audio") => return Err(bad("an input_audio part must be the only media, in a single user message".into())),
            Some("video_url") => {
                let url = part.pointer("/video_url/url").and_then(Value::as_str).unwrap_or("");
                return Err(bad(media_refusal("video", url)));
            }
            Some(t) => return Err(bad(format!("content part type {t:?} is not supported"))),
            None => return Err(bad("a content part needs a `type`".into())),
        }
    }
    Ok(out)
}

/// The bytes of a base64 `data:` URI (`data:image/png;base64,...`); remote and local references
/// are refused with the reason.
fn data_uri_bytes(url: &str) -> Result<Vec<u8>, String> {
    let lower = url.trim_start().to_ascii_lowercase();
    if !lower.starts_with("data:") {
        return Err(media_refusal("image", url));
    }
    let (head, data) = url.trim_start().split_once(',').ok_or("a data: URI needs a comma before its payload")?;
    if !head.to_ascii_lowercase().ends_with(";base64") {
        return Err("only base64 data: URIs are accepted (data:image/png;base64,...)".into());
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| format!("the data: URI is not valid base64: {e}"))
}

/// Why a media reference is refused: remote and local references never; inline video not yet.
fn media_refusal(kind: &str, url: &str) -> String {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("ftp://") {
        format!("remote {kind} URLs are refused: this server never fetches URLs (send the bytes inline as a data: URI)")
    } else if !lower.starts_with("data:") {
        format!("local {kind} paths are refused: this server never reads files named by a request (send a data: URI)")
    } else {
        format!("{kind} inputs are not supported over HTTP yet (images are; for video use `ernie caption --video`)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_input_shapes() {
        let n = |v: Value| embedding_inputs(&v, 8).map(|x| x.len());
        assert_eq!(n(json!("a")).unwrap(), 1);
        assert_eq!(n(json!(["a", "b"])).unwrap(), 2);
        assert_eq!(n(json!([1, 2, 3])).unwrap(), 1);
        assert_eq!(n(json!([[1], [2, 3]])).unwrap(), 2);
        for bad in [json!(""), json!([]), json!(3), json!([-1]), json!([[]]), json!(["a", 1]), json!(vec!["x"; 9])] {
            assert_eq!(n(bad.clone()).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn media_is_refused_with_reasons() {
        let msg = |url: &str| {
            let m = InMessage { role: "user".into(), content: json!([{"type": "image_url", "image_url": {"url": url}}]) };
            chat_messages(&[m]).unwrap_err().message
        };
        assert!(msg("https://example.com/cat.png").contains("remote image URLs are refused"));
        assert!(msg("file:///etc/passwd").contains("local image paths are refused"));
        assert!(msg("/etc/passwd").contains("local image paths are refused"));
        assert!(msg("data:image/png,AAAA").contains("only base64"));
        assert!(msg("data:image/png;base64,@@@").contains("not valid base64"));
        let parts = InMessage { role: "user".into(), content: json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) };
        match chat_messages(&[parts]).unwrap() {
            ChatPrompt::Text(m) => assert_eq!(m[0].content, "a\nb"),
            ChatPrompt::Media { .. } | ChatPrompt::Audio { .. } => panic!("no media"),
        }
        let img = InMessage {
            role: "user".into(),
            content: json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC"}}, {"type": "text", "text": "What is it?"}]),
        };
        match chat_messages(&[img]).unwrap() {
            ChatPrompt::Media { messages, images } => {
                assert_eq!(images, vec![vec![0u8, 1, 2]]);
                assert_eq!(messages[0].parts, vec![Part::Media(MediaKind::Image), Part::Text("What is it?".into())]);
            }
            ChatPrompt::Text(_) | ChatPrompt::Audio { .. } => panic!("image media expected"),
        }
    }
}

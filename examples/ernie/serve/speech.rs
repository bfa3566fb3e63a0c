//! `POST /v1/audio/speech` (OpenAI's text-to-speech): `{"model", "input", "voice",
//! "response_format": "wav"}` → WAV bytes (`audio/wav`, 32-bit float mono at the codec rate),
//! on an ERNIE 5.0 checkpoint with audio parts and `audio_codec/`. The same library path as
//! `ernie generate --output x.wav` (`tools::codec::speech::generate_speech`), so equal settings
//! give equal bytes. Extensions: `temperature` (default 0 = greedy, as the CLI), `top_p`,
//! `top_k`, `seed`, `max_seconds` (default 20). `voice` is accepted and ignored (the model has
//! one voice); `speed` ≠ 1 and formats other than wav are refused (400).

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use ernie_runtime::tools::codec::speech::{encode_audio_bytes_for_model, frames_for_seconds, generate_speech};
use ernie_runtime::{AudioGenOptions, Prompt, SamplingParams};
use serde::Deserialize;
use tokenizers_mm::ChatMessage;

use super::api::{parse_body, ApiError, ChatPrompt, InMessage};
use super::scheduler::{run_task, PromptInput};
use super::AppState;

#[derive(Deserialize)]
struct SpeechRequest {
    model: Option<String>,
    input: String,
    #[allow(dead_code)]
    voice: Option<serde_json::Value>,
    response_format: Option<String>,
    speed: Option<f64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    max_seconds: Option<f64>,
}

/// The handler of `POST /v1/audio/speech`.
/// It runs as one task on the engine thread (`scheduler::run_task`): admitted like every other
/// request, and never beside another engine job.
pub async fn audio_speech(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|rej| ApiError::bad_request(format!("could not read the request body: {}", rej.body_text())))?;
    let ready = st.ready.get().ok_or_else(ApiError::loading)?;
    let req: SpeechRequest = parse_body(&body)?;
    if let Some(m) = req.model.as_deref().filter(|m| *m != st.model_id) {
        return Err(ApiError { param: Some("model"), ..ApiError::not_found("model_not_found", format!("model {m:?} is not served here (this server serves {:?})", st.model_id)) });
    }
    match req.response_format.as_deref() {
        None | Some("wav") => {}
        Some(other) => return Err(ApiError::bad_param("response_format", format!("response_format {other:?} is not supported: this server writes \"wav\""))),
    }
    if req.speed.is_some_and(|s| s != 1.0) {
        return Err(ApiError::bad_param("speed", "speed other than 1 is not supported"));
    }
    if req.input.is_empty() {
        return Err(ApiError::bad_param("input", "input is empty"));
    }
    let sampling = SamplingParams { temperature: req.temperature.unwrap_or(0.0), top_k: req.top_k.unwrap_or(0), top_p: req.top_p.unwrap_or(1.0), seed: req.seed.unwrap_or(0) };
    sampling.validate()?;
    let max_seconds = req.max_seconds.unwrap_or(20.0);
    let wav = run_task(&ready.scheduler, move |engine| -> Result<Vec<u8>, ApiError> {
        let codec = engine.load_audio_codec().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let max_frames = frames_for_seconds(&codec, max_seconds).map_err(|e| ApiError::bad_param("max_seconds", e.to_string()))?;
        let opts = AudioGenOptions { sampling, max_frames, uniforms: None };
        let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: req.input }]);
        let mut out = std::io::Cursor::new(Vec::new());
        generate_speech(engine, &codec, &prompt, &opts, &mut out, Path::new("response"), &mut |_| {})?;
        Ok(out.into_inner())
    })
    .await?;
    Ok(([(CONTENT_TYPE, "audio/wav")], wav).into_response())
}

/// An `input_audio` chat (OpenAI's `{"type": "input_audio", "input_audio": {"data": base64,
/// "format": "wav"}}`): `None` when no message has an audio part; else exactly one user message
/// holding one clip and text parts (joined with newlines), or a 400 saying what is allowed.
pub fn audio_chat(messages: &[InMessage]) -> Result<Option<ChatPrompt>, ApiError> {
    use base64::Engine as _;
    let is_audio = |p: &serde_json::Value| p.get("type").and_then(serde_json::Value::as_str) == Some("input_audio");
    let has_audio = |m: &InMessage| m.content.as_array().is_some_and(|parts| parts.iter().any(is_audio));
    if !messages.iter().any(has_audio) {
        return Ok(None);
    }
    let bad = |m: &str| ApiError::bad_param("messages", m.to_string());
    let [m] = messages else { return Err(bad("an input_audio part must come in a single user message (no other messages yet)")) };
    if m.role != "user" {
        return Err(bad("an input_audio part must be in a user message"));
    }
    let parts = m.content.as_array().map(Vec::as_slice).unwrap_or_default();
    let (mut text, mut audio) = (Vec::new(), None);
    for p in parts {
        match p.get("type").and_then(serde_json::Value::as_str) {
            Some("text") => text.push(p.get("text").and_then(serde_json::Value::as_str).ok_or_else(|| bad("a text part needs a string `text`"))?),
            Some("input_audio") if audio.is_none() => audio = Some(p),
            Some("input_audio") => return Err(bad("one input_audio part per request for now")),
            _ => return Err(bad("an input_audio part cannot be mixed with images or other media yet")),
        }
    }
    let Some(part) = audio else { return Err(bad("no input_audio part")) };
    let data = part.pointer("/input_audio/data").and_then(serde_json::Value::as_str).ok_or_else(|| bad("input_audio needs a base64 string `data`"))?;
    let format = part.pointer("/input_audio/format").and_then(serde_json::Value::as_str).unwrap_or("wav");
    if !format.chars().all(|c| c.is_ascii_alphanumeric()) || format.is_empty() {
        return Err(bad("input_audio.format must be a file extension such as \"wav\""));
    }
    let audio = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| bad(&format!("input_audio.data is not valid base64: {e}")))?;
    Ok(Some(ChatPrompt::Audio { text: text.join("\n"), audio, format: format.to_string() }))
}

/// The prompt of an [`ChatPrompt::Audio`] chat: the clip → codec codes (the model's levels) →
/// the audio question's ids, as `ernie caption --audio` builds them.
pub fn audio_prompt(engine: &ernie_runtime::Engine, text: String, audio: &[u8], format: &str) -> Result<PromptInput, ApiError> {
    if let Err(e) = engine.audio() {
        return Err(ApiError::bad_param("messages", format!("audio inputs are not supported: {e}")));
    }
    let codec = engine.load_audio_codec().map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
    let name = std::path::PathBuf::from(format!("input_audio.{format}"));
    let codes = encode_audio_bytes_for_model(engine, &codec, audio, &name).map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
    let frames = codes.first().map_or(0, Vec::len);
    let (ids, _) = engine.audio_prompt_ids(frames, &text)?;
    Ok(PromptInput::Audio { ids, codes, text })
}

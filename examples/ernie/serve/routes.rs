//! HTTP routes: `GET /health`, `GET /v1/models`, `POST /v1/embeddings`,
//! `POST /v1/chat/completions` (JSON or server-sent events). Handlers validate, tokenize, hand
//! engine work to the [`Scheduler`](super::scheduler::Scheduler) and shape the answer; they never
//! run the model themselves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ernie_runtime::{EmbedOptions, GenerateRequest, Prompt, SamplingParams, StopReason};
use serde_json::{json, Value};
use tokenizers_mm::StreamPrompt;
use tokio::sync::{mpsc, oneshot};

use super::api::{chat_messages, embedding_inputs, parse_body, ApiError, ChatPrompt, ChatRequest, EmbeddingsRequest};
use super::scheduler::{GenEvent, PromptInput, Work};
use super::{AppState, Ready};

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/images/generations", post(super::images::generations))
        .route("/v1/audio/speech", post(super::speech::audio_speech))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("unknown_route", format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", Some("method_not_allowed"), format!("{method} is not allowed on {}", uri.path()))
}

async fn health(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let ready = st.ready()?;
    Ok(Json(json!({ "status": "ok", "model": st.model_id, "in_flight": ready.scheduler.in_flight() })))
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": st.model_id, "object": "model", "created": st.created, "owned_by": "ernie" }],
    }))
}

/// The body, or 413 past `--max-body-bytes` (axum's limit), or 400 if it could not be read.
pub(super) fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rej| match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("the request body exceeds the limit of {limit} bytes"),
        ),
        _ => ApiError::bad_request(format!("could not read the request body: {}", rej.body_text())),
    })
}

impl AppState {
    pub(super) fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(ApiError::loading)
    }

    /// Requests name the model they want; only the served one exists (as vLLM answers: 404).
    pub(super) fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.model_id => {
                Err(ApiError { param: Some("model"), ..ApiError::not_found("model_not_found", format!("model {m:?} is not served here (this server serves {:?})", self.model_id)) })
            }
            _ => Ok(()),
        }
    }
}

async fn embeddings(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(body, st.limits.max_body_bytes)?;
    let ready = st.ready()?;
    let req: EmbeddingsRequest = parse_body(&body)?;
    st.check_model(req.model.as_deref())?;
    let inputs = embedding_inputs(&req.input, st.limits.max_embedding_inputs)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_param("encoding_format", format!("encoding_format {other:?} must be \"float\" or \"base64\""))),
    };
    // Unit vectors, as OpenAI's embeddings are: cosine similarity is then a dot product.
    let opts = EmbedOptions { pooling: st.pooling, normalize: true, dimensions: req.dimensions, max_tokens: Some(st.limits.max_prompt_tokens) };
    let (reply, result) = oneshot::channel();
    ready.scheduler.submit(Work::Embed { inputs, opts, reply })?;
    let embeddings = result.await.map_err(|_| ApiError::internal("the engine dropped the request"))??;
    let prompt_tokens: usize = embeddings.iter().map(|e| e.n_tokens).sum();
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                // OpenAI's base64 format: the little-endian f32 bytes (what the Python client asks for).
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": st.model_id,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })))
}

/// What every chunk or response of one completion repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    prompt_ids: Vec<u32>,
    return_token_ids: bool,
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body_bytes(body, st.limits.max_body_bytes)?;
    let ready = st.ready()?;
    let req: ChatRequest = parse_body(&body)?;
    st.check_model(req.model.as_deref())?;
    req.check_unsupported()?;
    let messages = chat_messages(&req.messages)?;
    let stream_opts = ernie_runtime::StreamOptions { template_kwargs: req.chat_template_kwargs.clone().unwrap_or_default() };
    let stops = req.stop_strings()?;
    let limit = st.limits.max_tokens;
    let max_new_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(limit);
    if max_new_tokens == 0 || max_new_tokens > limit {
        return Err(ApiError::bad_param("max_tokens", format!("max_tokens {max_new_tokens} must be in 1..={limit}")));
    }
    let sampling = SamplingParams {
        // OpenAI's defaults: temperature 1, top_p 1; an unseeded request gets a fresh seed.
        temperature: req.temperature.unwrap_or(1.0),
        top_k: req.top_k.unwrap_or(0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req.seed.unwrap_or_else(rand::random),
    };
    sampling.validate()?;

    // Tokenizing a large prompt (and decoding images) is CPU work: keep it off the async threads.
    let engine = ready.engine.clone();
    let prompt = tokio::task::spawn_blocking(move || -> Result<PromptInput, ApiError> {
        match messages {
            ChatPrompt::Text(messages) => {
                // TODO(#12): the text template does not take variables yet; refused, not ignored.
                if !stream_opts.template_kwargs.is_empty() {
                    return Err(ApiError::bad_param("chat_template_kwargs", "template variables are only supported for image chats on a vision-language checkpoint"));
                }
                Ok(PromptInput::Ids(engine.encode_prompt(&Prompt::Chat(messages))?))
            }
            ChatPrompt::Media { messages, images } => {
                if !engine.is_multimodal() {
                    return Err(ApiError::bad_param("messages", "image inputs need a vision-language checkpoint; this server runs a text model"));
                }
                let media = images
                    .iter()
                    .enumerate()
                    .map(|(i, bytes)| engine.load_image_bytes(bytes, &format!("image {}", i + 1)))
                    .collect::<Result<Vec<_>, _>>()?;
                // The checkpoint's multimodal chat template, as `ernie caption` renders it.
                let prompt = StreamPrompt::Chat { messages, add_generation_prompt: true, enable_thinking: false };
                let stream = engine.build_stream_with(&prompt, &stream_opts, media)?;
                Ok(PromptInput::Stream(Box::new(stream)))
            }
            ChatPrompt::Audio { text, audio, format } => super::speech::audio_prompt(&engine, text, &audio, &format),
        }
    })
    .await
    .map_err(|_| ApiError::internal("tokenization task failed"))??;
    let prompt_ids = prompt.ids().to_vec();
    if prompt_ids.len() > st.limits.max_prompt_tokens {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::bad_param("messages", format!("the prompt has {} tokens; the limit is {}", prompt_ids.len(), st.limits.max_prompt_tokens))
        });
    }
    let (events, rx) = mpsc::unbounded_channel();
    let gen_req = GenerateRequest { sampling, max_new_tokens };
    ready.scheduler.submit(Work::Generate { prompt, req: gen_req, stops, events })?;
    let meta = Meta { id: next_id(), created: now_secs(), model: st.model_id.clone(), prompt_ids, return_token_ids: req.return_token_ids };
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        Ok(stream_completion(meta, rx, include_usage).into_response())
    } else {
        Ok(Json(collect_completion(meta, rx).await?).into_response())
    }
}

/// Generation events → text, token ids, and the finish reason. Stop strings are the generator's
/// (its stop rule holds text back and ends with `StopReason::StopString`).
struct Completion {
    ids: Vec<u32>,
    finish: Option<&'static str>,
}

impl Completion {
    fn new() -> Self {
        Completion { ids: Vec::new(), finish: None }
    }

    /// The text this event makes safe to emit; sets `finish` when the completion is over.
    fn on_event(&mut self, ev: GenEvent) -> Result<String, ApiError> {
        match ev {
            GenEvent::Token { id, text } => {
                self.ids.push(id);
                Ok(text)
            }
            GenEvent::Done(reason) => {
                // OpenAI's reasons: "length" for any token limit, "stop" for eos and stop strings.
                let length = matches!(reason, StopReason::MaxTokens | StopReason::ContextLength);
                self.finish = Some(if length { "length" } else { "stop" });
                Ok(String::new())
            }
            GenEvent::Failed(e) => Err(e),
        }
    }

    fn usage(&self, prompt_tokens: usize) -> Value {
        let n = self.ids.len();
        json!({ "prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n })
    }
}

async fn collect_completion(meta: Meta, mut rx: mpsc::UnboundedReceiver<GenEvent>) -> Result<Value, ApiError> {
    let mut c = Completion::new();
    let mut text = String::new();
    while c.finish.is_none() {
        let ev = rx.recv().await.ok_or_else(|| ApiError::internal("generation ended unexpectedly"))?;
        text.push_str(&c.on_event(ev)?);
    }
    // The generation has ended (the finish came from its last event); close the channel.
    rx.close();
    let mut choice = json!({
        "index": 0,
        "message": { "role": "assistant", "content": text },
        "logprobs": null,
        "finish_reason": c.finish,
    });
    let mut out = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [],
        "usage": c.usage(meta.prompt_ids.len()),
    });
    if meta.return_token_ids {
        choice["token_ids"] = json!(c.ids);
        out["prompt_token_ids"] = json!(meta.prompt_ids);
    }
    out["choices"] = json!([choice]);
    Ok(out)
}

/// State of one SSE response: events waiting to be written, and the generation feeding them.
struct StreamState {
    meta: Meta,
    rx: mpsc::UnboundedReceiver<GenEvent>,
    completion: Completion,
    include_usage: bool,
    pending: VecDeque<Event>,
    over: bool,
}

impl StreamState {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        let mut c = json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        Event::default().data(c.to_string())
    }

    /// Queues the chunks for one generation event (and the closing ones when it is the last).
    fn on_event(&mut self, ev: Option<GenEvent>) {
        let result = match ev {
            Some(ev) => self.completion.on_event(ev),
            None => Err(ApiError::internal("generation ended unexpectedly")),
        };
        match result {
            Ok(text) => {
                if !text.is_empty() {
                    self.pending.push_back(self.chunk(json!({ "content": text }), None));
                }
                if let Some(finish) = self.completion.finish {
                    self.pending.push_back(self.chunk(json!({}), Some(finish)));
                    if self.include_usage {
                        let usage = self.completion.usage(self.meta.prompt_ids.len());
                        let c = json!({
                            "id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
                            "model": self.meta.model, "choices": [], "usage": usage,
                        });
                        self.pending.push_back(Event::default().data(c.to_string()));
                    }
                    self.close();
                }
            }
            // Headers are already sent: report the error in-stream, as vLLM does.
            Err(e) => {
                self.pending.push_back(Event::default().data(e.body().to_string()));
                self.close();
            }
        }
    }

    fn close(&mut self) {
        self.pending.push_back(Event::default().data("[DONE]"));
        self.over = true;
        // Tells the engine thread to stop this generation (after an error).
        self.rx.close();
    }
}

/// SSE in OpenAI's chunk format: a role chunk, content chunks, a finish chunk, an optional usage
/// chunk, then `data: [DONE]`. A client that goes away drops this stream, which drops `rx`, which
/// cancels the generation before its next decode step.
fn stream_completion(meta: Meta, rx: mpsc::UnboundedReceiver<GenEvent>, include_usage: bool) -> impl IntoResponse {
    let mut st = StreamState { meta, rx, completion: Completion::new(), include_usage, pending: VecDeque::new(), over: false };
    let first = st.chunk(json!({ "role": "assistant", "content": "" }), None);
    st.pending.push_back(first);
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(ev), st));
            }
            if st.over {
                return None;
            }
            let ev = st.rx.recv().await;
            st.on_event(ev);
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("chatcmpl-{:08x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed), rand::random::<u64>())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

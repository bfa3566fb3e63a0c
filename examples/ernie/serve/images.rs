//! `POST /v1/images/generations` (OpenAI's images API): `{"model", "prompt", "n", "size",
//! "response_format": "b64_json", "seed"?, "cfg"?, "temperature"?, "top_p"?}` →
//! `{"created", "data": [{"b64_json": PNG}]}`. Image `i` of `n` uses seed `seed + i`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use ernie_runtime::infer::next_scale::ImageGenOptions;
use ernie_runtime::tools::codec::image::{png_bytes, Rgb8};
use ernie_runtime::Prompt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokenizers_mm::ChatMessage;

use super::api::{parse_body, ApiError};
use super::scheduler::run_task;
use super::routes::{body_bytes, now_secs};
use super::AppState;

/// Most images one request may ask for.
pub const MAX_IMAGES: usize = 4;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesRequest {
    model: Option<String>,
    prompt: String,
    n: Option<usize>,
    size: Option<String>,
    response_format: Option<String>,
    seed: Option<u64>,
    cfg: Option<f32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
}

pub async fn generations(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
    let body = body_bytes(body, st.limits.max_body_bytes)?;
    let ready = st.ready()?;
    let req: ImagesRequest = parse_body(&body)?;
    st.check_model(req.model.as_deref())?;
    let n = req.n.unwrap_or(1);
    if n == 0 || n > MAX_IMAGES {
        return Err(ApiError::bad_param("n", format!("n must be 1 to {MAX_IMAGES}, got {n}")));
    }
    match req.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some(other) => return Err(ApiError::bad_param("response_format", format!("response_format {other:?} must be \"b64_json\" (this server keeps no image URLs)"))),
    }
    // One task on the engine thread: admitted through the queue, never beside other engine work.
    let data = run_task(&ready.scheduler, move |engine| -> Result<Vec<Value>, ApiError> {
        let grid = match req.size.as_deref() {
            None => None,
            Some(s) => {
                let (w, h) = s
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
                    .ok_or_else(|| ApiError::bad_param("size", format!("size {s:?} must be WIDTHxHEIGHT in pixels")))?;
                Some(engine.image_grid(w, h).map_err(|e| ApiError { param: Some("size"), ..ApiError::from(e) })?)
            }
        };
        let base = ImageGenOptions::default();
        let prompt = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: req.prompt.clone() }]);
        let mut data = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let opts = ImageGenOptions {
                cfg: req.cfg.unwrap_or(base.cfg),
                temperature: req.temperature.unwrap_or(base.temperature),
                top_p: req.top_p.unwrap_or(base.top_p),
                seed: req.seed.unwrap_or(0).wrapping_add(i),
                grid,
                ..base.clone()
            };
            let img = engine.generate_image(&prompt, &opts)?;
            let png = png_bytes(&Rgb8 { data: img.rgb8, height: img.height, width: img.width })?;
            data.push(json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(png) }));
        }
        Ok(data)
    })
    .await?;
    Ok(Json(json!({ "created": now_secs(), "data": data })))
}

//! `ernie serve` on the VL fixtures: inline images in chats and embeddings, against transformers'
//! goldens and `ernie caption` (split from `server.rs`, whose `Server` helper they use).

use base64::Engine as _;
use crate::common::{ernie, fixture, repo_root, u32s};
use crate::server::{agent, get, post, Server};
use serde_json::{json, Value};

/// The VL checkpoint over HTTP: an inline PNG gives the same prompt ids and greedy completion as
/// transformers (the `image` case of `tests/fixtures/vl-moe-f32/reference`).
#[test]
fn vl_chat_with_an_inline_image_matches_transformers() {
    let server = Server::start_dir(&fixture("vl-moe-f32"), &["--max-body-bytes", "4000000", "--max-prompt-tokens", "512"]);
    server.wait_ready();
    let png = std::fs::read(repo_root().join("assets/media/astronaut_rgb_512x512.png")).unwrap();
    let uri = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "Describe this image."}]}],
        "max_tokens": 32, "temperature": 0, "return_token_ids": true});
    let (status, v) = post(&agent(), &server.url("/v1/chat/completions"), &body);
    assert_eq!(status, 200, "{v}");
    let reference = std::fs::read(fixture("vl-moe-f32").join("reference/image.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let ids = |name: &str| -> Vec<u64> {
        st.tensor(name).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u64).collect()
    };
    let got = |key: &str| -> Vec<u64> { v[key].as_array().or_else(|| v["choices"][0][key].as_array()).unwrap().iter().map(|x| x.as_u64().unwrap()).collect() };
    assert_eq!(got("prompt_token_ids"), ids("input_ids"), "prompt ids");
    assert_eq!(got("token_ids"), ids("greedy_ids"), "greedy completion");
    // Corrupt image bytes are the client's fault: 400 naming the problem, and the server lives on.
    let bad = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAAA"}}]}]});
    let (status, v) = post(&agent(), &server.url("/v1/chat/completions"), &bad);
    assert_eq!(status, 400, "{v}");
    let (status, _) = get(&agent(), &server.url("/health"));
    assert_eq!(status, 200);
}

/// Issue #12: an image chat goes through the checkpoint's chat template exactly as `ernie
/// caption` renders it, `chat_template_kwargs` (vLLM) included.
#[test]
fn vl_chat_uses_the_checkpoint_template_and_chat_template_kwargs_like_caption() {
    let greedy: Value = serde_json::from_str(&std::fs::read_to_string(fixture("vl-template/greedy.json")).unwrap()).unwrap();
    let run = &greedy["runs"][0];
    assert_eq!(run["template"], "fixture");
    let prompt = run["prompt"].as_str().unwrap();
    let image = fixture("vl-template/image.png");
    let server = Server::start_dir(&fixture("vl-moe-f32"), &["--max-body-bytes", "4000000", "--max-prompt-tokens", "512"]);
    server.wait_ready();
    let uri = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(std::fs::read(&image).unwrap()));
    let ask = |kwargs: Option<Value>| {
        let mut body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}]}],
            "max_tokens": 8, "temperature": 0, "return_token_ids": true});
        if let Some(k) = kwargs {
            body["chat_template_kwargs"] = k;
        }
        let (status, v) = post(&agent(), &server.url("/v1/chat/completions"), &body);
        assert_eq!(status, 200, "{v}");
        let ids = v["token_ids"].as_array().or_else(|| v["choices"][0]["token_ids"].as_array()).unwrap().clone();
        ids.iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>()
    };
    let caption = |extra: &[&str]| {
        let out = ernie()
            .args(["caption", "--model"])
            .arg(fixture("vl-moe-f32"))
            .arg("--image")
            .arg(&image)
            .args(["--prompt", prompt, "--max-tokens", "8", "--temperature", "0", "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        u32s(&serde_json::from_slice::<Value>(&out.stdout).unwrap()["token_ids"])
    };
    let plain = ask(None);
    assert_eq!(plain, u32s(&run["greedy_ids"]), "transformers' greedy ids");
    assert_eq!(plain, caption(&[]));
    let thinking = ask(Some(json!({"enable_thinking": true})));
    assert_ne!(thinking, plain);
    assert_eq!(thinking, caption(&["--enable-thinking"]));
}

/// Issue #12 item 4: `/v1/embeddings` takes a chat content-part array as one `input` item (vLLM's
/// multimodal embeddings); the vector equals transformers' last hidden state (last-token pooling,
/// L2-normalised).
#[test]
fn embeddings_accept_a_content_part_array_with_an_image() {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture("vl-template/embed.json")).unwrap()).unwrap();
    let (t, h) = (r["shape"][0].as_u64().unwrap() as usize, r["shape"][1].as_u64().unwrap() as usize);
    let last: Vec<f64> = r["last_hidden_state"].as_array().unwrap()[(t - 1) * h..].iter().map(|x| x.as_f64().unwrap()).collect();
    // The server returns unit vectors (OpenAI's convention).
    let norm = last.iter().map(|x| x * x).sum::<f64>().sqrt();
    let want: Vec<f32> = last.iter().map(|x| (x / norm) as f32).collect();
    let png = std::fs::read(fixture("vl-template/image.png")).unwrap();
    let uri = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let server = Server::start_dir(&fixture("vl-moe-f32"), &["--max-body-bytes", "4000000"]);
    server.wait_ready();
    let parts = json!([{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": r["prompt"]}]);
    for input in [json!([parts.clone()]), parts] {
        let (status, v) = post(&agent(), &server.url("/v1/embeddings"), &json!({"input": input}));
        assert_eq!(status, 200, "{v}");
        let got: Vec<f32> = v["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert_eq!(got.len(), h);
        assert!(d < 1e-4, "max |Δ| {d}");
    }
}

//! `ernie generate --output x.png` and `POST /v1/images/generations` end to end, on
//! `ernie5-tiny` with the Infinity-like VAE fixture as its `vision_decoder/` (z = 16 = bits; the
//! 4×4 final grid × 2^3 downsampling = 32×32 pixels).

use std::path::Path;
use std::process::Output;

use base64::Engine as _;
use crate::common::{ernie, f32s, fixture, repo_root, tempdir};
use crate::server::Server;
use ernie_runtime::model::vision_decoder::{to_rgb8, VisionDecoder};
use ernie_runtime::tools::codec::image::read_rgb8;
use serde_json::{json, Value};

/// The golden run's latent is reproduced within 1e-6 (`tests/model/nfsp.rs`); on this fixture the
/// decoded 8-bit pixels then match exactly (a rounding boundary would need |Δ| ≈ 1e-6 at a tie).
const PIXEL_ATOL: i32 = 0;

/// `ernie5-tiny` + `vae/infinity` as `vision_decoder/`, in a temp dir.
fn image_checkpoint() -> tempfile::TempDir {
    let dir = tempdir();
    for (src, dst) in [(fixture("ernie5-tiny"), dir.path().to_path_buf()), (repo_root().join("tests/fixtures/vae/infinity"), dir.path().join("vision_decoder"))] {
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The VAE fixture's golden file is not a weights file of the decoder.
            if p.is_file() && name != "golden.safetensors" {
                std::fs::copy(&p, dst.join(&name)).unwrap();
            }
        }
    }
    dir
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("ernie5-tiny").join("nfsp_golden.json")).unwrap()).unwrap()
}

/// The golden run's latent through the library's decoder → 8-bit RGB.
fn golden_pixels(ckpt: &Path, run: &str) -> Vec<u8> {
    let g = golden();
    let r = g["runs"].as_array().unwrap().iter().find(|r| r["name"] == run).unwrap();
    let dec = VisionDecoder::load(&ckpt.join("vision_decoder")).unwrap();
    let (pix, h, w) = dec.decode(&f32s(&r["latent"]), 16, 4, 4).unwrap();
    assert_eq!((h, w), (32, 32));
    to_rgb8(&pix, h, w).unwrap()
}

fn generate(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    let g = golden();
    ernie()
        .args(["generate", "--model"])
        .arg(ckpt)
        .args(["--prompt", g["user_message"].as_str().unwrap(), "--output"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn max_pixel_diff(a: &[u8], b: &[u8]) -> i32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as i32 - y as i32).abs()).max().unwrap_or(0)
}

fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("error:")).map(str::to_string).collect()
}

#[test]
fn greedy_png_is_the_decoded_golden_latent() {
    let ckpt = image_checkpoint();
    for (run, cfg) in [("greedy_cfg1", "1"), ("greedy_cfg3", "3")] {
        let png = ckpt.path().join(format!("{run}.png"));
        let out = generate(ckpt.path(), &png, &["--temperature", "0", "--cfg", cfg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("scale 4/4") && stderr.contains("decoder:"), "timings on stderr: {stderr}");
        let img = read_rgb8(&png).unwrap();
        assert_eq!((img.width, img.height), (32, 32));
        let diff = max_pixel_diff(&img.data, &golden_pixels(ckpt.path(), run));
        eprintln!("{run}: max |Δ pixel| = {diff}");
        assert!(diff <= PIXEL_ATOL, "{run}: max |Δ pixel| {diff}");
    }
}

#[test]
fn size_on_the_schedule_is_accepted_and_off_it_is_one_error() {
    let ckpt = image_checkpoint();
    let png = ckpt.path().join("x.png");
    let ok = generate(ckpt.path(), &png, &["--temperature", "0", "--cfg", "1", "--size", "32x32"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = generate(ckpt.path(), &png, &["--size", "64x48"]);
    assert!(!bad.status.success());
    let errs = error_lines(&bad);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("--size") && errs[0].contains("64x48") && errs[0].contains("32x32"), "{}", errs[0]);
}

#[test]
fn checkpoint_without_vision_decoder_is_one_error() {
    let ckpt = image_checkpoint();
    std::fs::remove_dir_all(ckpt.path().join("vision_decoder")).unwrap();
    let out = generate(ckpt.path(), &ckpt.path().join("x.png"), &["--temperature", "0", "--cfg", "1"]);
    assert!(!out.status.success());
    let errs = error_lines(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("no vision_decoder/") && errs[0].contains("cannot generate images"), "{}", errs[0]);
    assert!(!ckpt.path().join("x.png").exists());
}

/// `ernie serve` on `dir`, ready (the server tests' helper).
fn serve(dir: &Path) -> Server {
    let s = Server::start_dir(dir, &[]);
    s.wait_ready();
    s
}

fn post(base: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.post(&format!("{base}/v1/images/generations")).header("content-type", "application/json").send(body.to_string()).unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn server_png_equals_the_cli_png() {
    let ckpt = image_checkpoint();
    let png = ckpt.path().join("cli.png");
    let out = generate(ckpt.path(), &png, &["--temperature", "0", "--cfg", "1", "--seed", "7"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = serve(ckpt.path());
    let prompt = golden()["user_message"].clone();
    let body = json!({ "prompt": prompt, "n": 1, "size": "32x32", "response_format": "b64_json", "seed": 7, "cfg": 1.0, "temperature": 0.0 });
    let (status, v) = post(&s.base, &body);
    assert_eq!(status, 200, "{v}");
    assert!(v["created"].as_u64().is_some());
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    let served = ckpt.path().join("served.png");
    std::fs::write(&served, bytes).unwrap();
    assert_eq!(read_rgb8(&served).unwrap(), read_rgb8(&png).unwrap());
    for bad in [json!({ "prompt": "x", "size": "64x48" }), json!({ "prompt": "x", "n": 99 }), json!({ "prompt": "x", "size": "big" })] {
        let (status, v) = post(&s.base, &bad);
        assert_eq!(status, 400, "{bad}: {v}");
    }
}

#[test]
fn routing_stats_count_prompt_as_text_and_slots_as_image_gen() {
    let ckpt = image_checkpoint();
    let stats = ckpt.path().join("routing.json");
    let out = ernie()
        .args(["generate", "--model"])
        .arg(ckpt.path())
        .args(["--prompt", golden()["user_message"].as_str().unwrap(), "--output"])
        .arg(ckpt.path().join("x.png"))
        .args(["--temperature", "0", "--cfg", "3", "--routing-stats"])
        .arg(&stats)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let prompt_len = golden()["prompt_ids"].as_array().unwrap().len() as u64; // ends with BOI
    let slots: u64 = [(2, 2), (3, 3), (4, 4)].iter().map(|(h, w)| h * w).sum::<u64>() + 1; // + the sum slot
    assert_eq!(v["modalities"]["text"]["tokens"], prompt_len);
    assert_eq!(v["modalities"]["image_gen"]["tokens"], slots);
    assert!(ckpt.path().join("routing.png").is_file());
}

#[test]
fn decoder_channels_must_equal_bits() {
    let ckpt = image_checkpoint();
    let cfg_path = ckpt.path().join("vision_decoder/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["latent_channels"] = json!(8);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = generate(ckpt.path(), &ckpt.path().join("x.png"), &["--temperature", "0", "--cfg", "1"]);
    let errs = error_lines(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("latent_channels") && errs[0].contains("bits is 16"), "{}", errs[0]);
}

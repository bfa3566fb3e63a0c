//! Image pipeline and token stream against the HF ERNIE-4.5-VL processor.
//!
//! Goldens: `tests/fixtures/media_goldens.json` and `tests/fixtures/vl-preprocess/` at the
//! workspace root, written by `tests/reference/make_media_goldens.py` (Pillow 13.0.0,
//! transformers 5.24.0, `Ernie4_5_VLMoeImageProcessorPil` on `exif_transpose(Image.open(f))`).
//! Inputs: the media corpus `../shared/media/images/` beside the repository (override with
//! `ERNIE_MEDIA_DIR`).
//!
//! What must hold:
//! - sizes, grids and token counts: equal, always;
//! - decoded RGB8, resized u8 and normalised f32: bit-identical (hash equality) — for JPEG only
//!   with the `turbojpeg` feature; without it JPEG pixels may differ by up to
//!   [`FALLBACK_JPEG_LEVELS`] levels (zune-jpeg's IDCT/upsampling vs libjpeg-turbo's);
//! - every sampled normalised value within 1/255 of the reference after undoing the
//!   normalisation scale (`|Δ| · std_c · 255 ≤ 1`), or within the fallback tolerance;
//! - the stream's ids, routing modality and positions equal the HF processor +
//!   `get_rope_index`.
//!
//! `ERNIE_MEDIA_DUMP=DIR` writes our decoded / resized / normalised arrays there (for measuring
//! per-stage differences with a script).

mod common;

use common::{media_dir, root};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value as Json;
use tokenizers_mm::image::{
    decode::composite_on_white, decode_image_file, normalize_patchify, AlphaMode, DecoderUsed, ImageProcessor,
    ImageProcessorConfig, RgbImage,
};
use tokenizers_mm::{
    build_stream, Error, Limits, MediaKind, MmMessage, Part, PositionRule, StreamConfig, StreamPrompt, TextTokenizer,
};

/// Largest JPEG difference (levels of 255) accepted from the `image`-crate fallback decoder;
/// measured on the corpus: 4 (baseline, progressive and EXIF JPEGs; 2 for the YCCK one), plus one
/// level of margin.
const FALLBACK_JPEG_LEVELS: f64 = 5.0;
/// Float slack on level comparisons (the f32 normalisation itself is exact).
const LEVEL_EPS: f64 = 1e-3;



fn goldens() -> Json {
    let path = root().join("tests/fixtures/media_goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The generator's hash: `h = h * 0x100000001B3 + (byte + 1)` mod 2^64.
fn poly64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(0x100000001B3).wrapping_add(u64::from(b) + 1));
    format!("{h:016x}")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn synthetic_rgb(h: u32, w: u32) -> RgbImage {
    let mut data = Vec::with_capacity((h * w * 3) as usize);
    for y in 0..h as u64 {
        for x in 0..w as u64 {
            for c in 0..3u64 {
                data.push(((7 * x + 13 * y + 101 * c + 3 * ((x * y) % 31)) % 256) as u8);
            }
        }
    }
    RgbImage::from_raw(w, h, data).unwrap()
}

fn processor_for(case: &Json) -> ImageProcessor {
    let mut cfg = ImageProcessorConfig::from_dir(&root().join("tests/fixtures/vl-preprocess")).unwrap();
    cfg.max_pixels = case["max_pixels"].as_u64().unwrap();
    cfg.min_pixels = case["min_pixels"].as_u64().unwrap();
    let mut p = ImageProcessor::new(cfg);
    p.limits = Limits::default();
    p.alpha = if case["alpha"] == "drop" { AlphaMode::Drop } else { AlphaMode::CompositeOnWhite };
    p
}

fn dump(name: &str, stage: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("ERNIE_MEDIA_DUMP") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.{stage}.bin")), bytes).unwrap();
    }
}

/// Outcome of one case, for the summary table.
struct Measured {
    name: String,
    decoded_exact: bool,
    resized_exact: bool,
    pixels_exact: bool,
    max_sample_levels: f64,
}

/// Compare our pipeline output against one golden case; returns what was measured.
fn check_case(case: &Json, decoded: &RgbImage, proc: &ImageProcessor, exact_expected: bool) -> Measured {
    let name = case["name"].as_str().unwrap().to_string();
    let d = &case["decoded"];
    assert_eq!((u64::from(decoded.height), u64::from(decoded.width)), (d["height"].as_u64().unwrap(), d["width"].as_u64().unwrap()), "{name}: decoded size");
    let decoded_exact = poly64(&decoded.data) == d["hash"];
    dump(&name, "decoded", &decoded.data);

    let path = Path::new(&name);
    if let Some(err) = case.get("error") {
        let got = proc.resize_rgb(decoded, path);
        assert!(matches!(got, Err(Error::ImageSize { .. })), "{name}: expected a size error like {err}, got {got:?}");
        return Measured { name, decoded_exact, resized_exact: true, pixels_exact: true, max_sample_levels: 0.0 };
    }
    let resized = proc.resize_rgb(decoded, path).unwrap();
    let r = &case["resized"];
    assert_eq!((u64::from(resized.height), u64::from(resized.width)), (r["height"].as_u64().unwrap(), r["width"].as_u64().unwrap()), "{name}: resized size");
    dump(&name, "resized", &resized.data);
    let resized_exact = poly64(&resized.data) == r["hash"];
    if let Some(b64) = r["u8_base64"].as_str() {
        let want = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let max = want.iter().zip(&resized.data).map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs()).max().unwrap_or(0);
        if decoded_exact {
            assert_eq!(max, 0, "{name}: resized u8 differs from Pillow's by up to {max} levels");
        }
    }
    if decoded_exact {
        assert!(resized_exact, "{name}: decoded input equal, but resized u8 differs from Pillow's");
    }

    let (pv, grid) = normalize_patchify(path, &resized, &proc.config).unwrap();
    let want_grid: Vec<usize> = case["grid_thw"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(grid.to_vec(), want_grid, "{name}: grid_thw");
    assert_eq!(grid[1] * grid[2] / 4, case["n_tokens"].as_u64().unwrap() as usize, "{name}: n_tokens");
    let p = &case["pixel_values"];
    let dim = p["shape"][1].as_u64().unwrap() as usize;
    assert_eq!(pv.len(), p["shape"][0].as_u64().unwrap() as usize * dim, "{name}: pixel_values shape");
    let bytes = f32_bytes(&pv);
    dump(&name, "pixel_values", &bytes);
    let pixels_exact = poly64(&bytes) == p["hash"];
    if resized_exact {
        assert!(pixels_exact, "{name}: resized u8 equal, but normalised f32 differ");
    }
    // Sampled values, in levels of 255 after undoing the per-channel std.
    let std = proc.config.image_std;
    let stride = p["stride"].as_u64().unwrap() as usize;
    let mut max_levels = 0f64;
    for (k, want) in p["samples"].as_array().unwrap().iter().enumerate() {
        let i = k * stride;
        let c = (i % dim) / (dim / 3);
        let levels = (f64::from(pv[i]) - want.as_f64().unwrap()).abs() * std[c] * 255.0;
        max_levels = max_levels.max(levels);
    }
    let tol = if exact_expected { 1.0 } else { FALLBACK_JPEG_LEVELS };
    assert!(max_levels <= tol + LEVEL_EPS, "{name}: sampled pixel_values off by {max_levels:.3} levels (tolerance {tol})");
    if exact_expected {
        assert!(decoded_exact && resized_exact && pixels_exact, "{name}: expected bit-exact decode, resize and normalisation");
    }
    Measured { name, decoded_exact, resized_exact, pixels_exact, max_sample_levels: max_levels }
}

fn report(rows: &[Measured]) {
    eprintln!("{:<44} {:>8} {:>8} {:>8} {:>10}", "case", "decoded", "resized", "f32", "max lvls");
    for m in rows {
        eprintln!(
            "{:<44} {:>8} {:>8} {:>8} {:>10.3}",
            m.name,
            if m.decoded_exact { "exact" } else { "DIFF" },
            if m.resized_exact { "exact" } else { "DIFF" },
            if m.pixels_exact { "exact" } else { "DIFF" },
            m.max_sample_levels
        );
    }
}

#[test]
fn composite_on_white_matches_pillow_for_every_value_and_alpha() {
    let table: Vec<u8> = (0..=255u8).flat_map(|a| (0..=255u8).map(move |v| composite_on_white(v, a))).collect();
    assert_eq!(poly64(&table), goldens()["composite_on_white_hash"]);
}

#[test]
fn corpus_images_match_the_reference_processor() {
    let g = goldens();
    let mut rows = Vec::new();
    for case in g["cases"].as_array().unwrap().iter().filter(|c| c.get("file").is_some()) {
        let file = media_dir().join(case["file"].as_str().unwrap());
        let proc = processor_for(case);
        let decoded = decode_image_file(&file, &proc.limits, proc.alpha).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.exif_orientation, case["exif_orientation"].as_u64().unwrap() as u8, "{}", file.display());
        // JPEG pixels are exact only through libjpeg-turbo (feature `turbojpeg`).
        let exact = decoded.format != "jpeg" || decoded.decoder == DecoderUsed::TurboJpeg;
        rows.push(check_case(case, &decoded.rgb, &proc, exact));
    }
    report(&rows);
    assert!(rows.len() >= 12, "corpus cases missing");
}

#[test]
fn synthetic_edge_sizes_match_the_reference_processor() {
    let g = goldens();
    let mut rows = Vec::new();
    for case in g["cases"].as_array().unwrap().iter().filter(|c| c.get("synthetic").is_some()) {
        let (h, w) = (case["synthetic"][0].as_u64().unwrap() as u32, case["synthetic"][1].as_u64().unwrap() as u32);
        rows.push(check_case(case, &synthetic_rgb(h, w), &processor_for(case), true));
    }
    report(&rows);
}

fn parts(msg: &Json) -> MmMessage {
    let parts = msg["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match p.as_str().unwrap() {
            "<image>" => Part::Media(MediaKind::Image),
            t => Part::Text(t.to_string()),
        })
        .collect();
    MmMessage { role: msg["role"].as_str().unwrap().to_string(), parts }
}

#[test]
fn stream_matches_the_hf_processor_and_get_rope_index() {
    let dir = root().join("tests/fixtures/vl-preprocess");
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let proc = ImageProcessor::new(ImageProcessorConfig::from_dir(&dir).unwrap());
    for case in goldens()["stream"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let media = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let img = synthetic_rgb(s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32);
                proc.process_rgb(&img, Path::new("synthetic")).unwrap().into_media_item()
            })
            .collect::<Vec<_>>();
        let grids: Vec<Vec<usize>> = media.iter().map(|m| m.grid_thw.unwrap().to_vec()).collect();
        let want_grids: Vec<Vec<usize>> = serde_json::from_value(case["image_grid_thw"].clone()).unwrap();
        assert_eq!(grids, want_grids, "{name}");
        let messages = case["messages"].as_array().unwrap().iter().map(parts).collect();
        let prompt = StreamPrompt::Chat { messages, add_generation_prompt: true, enable_thinking: false };
        for rule in [PositionRule::Ernie45VlHf, PositionRule::Ernie45Vl] {
            let s = build_stream(&tok, &prompt, media.clone(), &StreamConfig { rule, ..Default::default() }).unwrap();
            let want_ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            assert_eq!(s.input_ids, want_ids, "{name}: input_ids");
            let want_mod: Vec<u8> = serde_json::from_value(case["moe_mm_token_type_ids"].clone()).unwrap();
            assert_eq!(s.modality, want_mod, "{name}: moe_mm_token_type_ids");
            let want_pos: Vec<[u32; 3]> = serde_json::from_value(case["positions_hf"].clone()).unwrap();
            // Images only: the vLLM rule and HF's coincide.
            assert_eq!(s.positions, want_pos, "{name}: positions ({rule:?})");
            let delta = i64::from(s.next_position) - s.len() as i64;
            assert_eq!(delta, case["rope_delta_hf"].as_i64().unwrap(), "{name}: rope delta");
        }
    }
}

/// Every corpus image, truncated and bit-flipped, through decode + resize + patchify: `Ok` or a
/// typed error, never a panic.
#[test]
fn corrupted_images_never_panic() {
    let dir = media_dir().join("images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set ERNIE_MEDIA_DIR)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .collect();
    files.sort();
    let proc = ImageProcessor::new(ImageProcessorConfig::default());
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut ok, mut err) = (0, 0);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let n = bytes.len();
        let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
        for cut in [0, 1, 2, 8, 33, n / 8, n / 4, n / 2, 3 * n / 4, n - 1] {
            variants.push((format!("truncated to {cut}"), bytes[..cut.min(n)].to_vec()));
        }
        for k in 0..24 {
            let mut v = bytes.clone();
            let flips = if k < 16 { 1 } else { 16 };
            for _ in 0..flips {
                // Bias half the flips into the first 512 bytes, where the headers live.
                let pos = if next() % 2 == 0 { (next() % 512.min(n as u64)) as usize } else { (next() % n as u64) as usize };
                v[pos] ^= 1 << (next() % 8);
            }
            variants.push((format!("{flips} bit flips #{k}"), v));
        }
        for (what, v) in variants {
            let name = PathBuf::from(format!("{} ({what})", f.display()));
            let r = std::panic::catch_unwind(|| proc.process_bytes(&v, &name).map(|p| p.pixel_values.len()));
            match r {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    err += 1;
                    assert!(e.to_string().contains(&*name.to_string_lossy()), "error does not name the input: {e}");
                }
                Err(_) => panic!("panic on {}", name.display()),
            }
        }
    }
    eprintln!("corrupted variants: {ok} decoded, {err} refused with a typed error");
    assert!(err > 0 && ok > 0);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = (body.len() as u32).to_be_bytes().to_vec();
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(body);
    c.extend_from_slice(&crc_input);
    c.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    c
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    // A 60000 x 60000 RGB PNG header with a few bytes of (bogus) data: 10.8 GB if decoded.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 60_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(png_chunk(b"IEND", &[]));
    let proc = ImageProcessor::new(ImageProcessorConfig::default());
    let t = std::time::Instant::now();
    match proc.process_bytes(&png, Path::new("bomb.png")) {
        Err(Error::LimitExceeded { what, actual, .. }) => {
            assert_eq!(what, tokenizers_mm::limits::WHAT_PIXELS);
            assert_eq!(actual, 3.6e9);
        }
        other => panic!("expected a pixel-limit error, got {other:?}"),
    }
    assert!(t.elapsed().as_millis() < 500, "refusal should be instant");

    // Limits apply to real files too: file bytes before reading, pixels from the header.
    let file = media_dir().join("images/coffee_progressive_600x400.jpg");
    let mut p = ImageProcessor::new(ImageProcessorConfig::default());
    p.limits.max_file_bytes = 1000;
    assert!(matches!(p.process_file(&file), Err(Error::LimitExceeded { what: "file size (bytes)", .. })));
    p.limits = Limits { max_pixels: 600 * 400 - 1, ..Limits::default() };
    assert!(matches!(p.process_file(&file), Err(Error::LimitExceeded { what: "decoded pixels", .. })));
    p.limits.max_pixels = 600 * 400;
    assert!(p.process_file(&file).is_ok());
}

/// What Pillow accepts: libjpeg warnings such as junk bytes before a marker are ignored, but a
/// JPEG cut short (or missing its EOI marker) raises "image file is truncated".
#[test]
fn jpeg_truncation_and_warnings_follow_pillow() {
    let file = media_dir().join("images/rocket_exif_orient6_427x640.jpg");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[bytes.len() - 2..], &[0xFF, 0xD9]);
    let lim = Limits::default();
    let clean = tokenizers_mm::image::decode_image_bytes(&bytes, &file, &lim, AlphaMode::default()).unwrap();
    let mut junk = bytes[..bytes.len() - 2].to_vec();
    junk.extend_from_slice(&[0x12, 0x34, 0x56, 0xFF, 0xD9]);
    let j = tokenizers_mm::image::decode_image_bytes(&junk, Path::new("junk.jpg"), &lim, AlphaMode::default()).unwrap();
    assert!(j.rgb == clean.rgb, "extraneous bytes before EOI must not change the pixels");
    for (what, cut) in [("3/4", bytes[..bytes.len() * 3 / 4].to_vec()), ("no EOI", bytes[..bytes.len() - 2].to_vec())] {
        let e = tokenizers_mm::image::decode_image_bytes(&cut, Path::new("cut.jpg"), &lim, AlphaMode::default()).unwrap_err();
        assert!(matches!(e, Error::ImageDecode { .. }) && e.to_string().contains("truncated"), "{what}: {e}");
    }
}

#[test]
fn unsupported_and_missing_files_are_typed_errors() {
    let proc = ImageProcessor::new(ImageProcessorConfig::default());
    let e = proc.process_bytes(b"not an image at all", Path::new("notes.txt")).unwrap_err();
    assert!(matches!(e, Error::ImageDecode { .. }) && e.to_string().contains("notes.txt"), "{e}");
    let e = proc.process_file(Path::new("/nonexistent/x.png")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // A 16-bit gray PNG is clamped like Pillow's convert (camera x257 → almost all white).
    let d = decode_image_file(&media_dir().join("images/camera_gray16_512x512.png"), &Limits::default(), AlphaMode::default()).unwrap();
    assert_eq!(d.source_color, "l16");
    let white = d.rgb.data.iter().filter(|&&v| v == 255).count() as f64 / d.rgb.data.len() as f64;
    assert!(white > 0.9, "{white}");
}

//! The ERNIE 5.0 demo checkpoint (`ernie5-demo-v1`): a small `model_type: "ernie5"` model with
//! seeded random weights, the generation parts and their external codecs, so
//! `ernie generate --output x.png|x.wav` and `ernie caption --audio` run without `--model`.
//!
//! - `config.json`: decoder hidden 256, 4 layers (layer 0 dense, 1–3 MoE), 4 q / 2 kv heads of 64,
//!   vocab 1024, 3-D RoPE sections [11, 11, 10]; unified routing over 16 experts of width 128,
//!   top-4, 1 shared expert; `visual_generation` 16 bits on scales 1², 2², 4², 8², 16² (a 128×128
//!   image through the 8× decoder); `audio` 4 levels of 256 codes at 12.5 frames/s.
//! - `model.safetensors`: the decoder (ERNIE 4.5 text names), `visual_gen.*` and `audio.*`
//!   (`ernie5_weights.rs`), bf16 except routers and correction biases.
//! - `vision_decoder/`: a diffusers `AutoencoderKL` (`config.json`,
//!   `diffusion_pytorch_model.safetensors`; `codec_weights.rs`), latent_channels 16 = bits,
//!   scaling_factor 1 (Infinity-style: the loop's latent is decoded unchanged).
//! - `audio_codec/`: a transformers `MimiModel` (`config.json`, `model.safetensors`) at 24 kHz,
//!   12.5 frames/s, 8 quantizers of 256 codes (the model uses the first 4).
//! - `tokenizer.json`: the VL demo's tokenizer plus `<|BOI|>` 1013, `<|EOI|>` 1014, `<|BOA|>` 1015,
//!   `<|EOA|>` 1016; `tokenizer_config.json`, `special_tokens_map.json` and
//!   `generation_config.json` as the VL demo's (its text chat template).
//! - `README.md`: says the weights are random and how to use real parts.
//!
//! Weights are drawn as the VL demo's (SplitMix64 per tensor, seed `ERNIE5_DEMO_SEED ^
//! fnv1a64(name)`); the two codec files seed with their folder name folded in, so equal tensor
//! names in different parts differ.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::codec_weights::{mimi_tensors, vae_tensors};
use super::ernie5_weights::ernie5_tensors;
use super::weights::safetensors_bytes;
use super::{ensure, fnv1a64, write, Demo, DemoFiles};
use crate::{Error, Result};

/// Folder name of the ERNIE 5.0 demo inside the cache directory (bump with any byte change).
pub const ERNIE5_DEMO_NAME: &str = "ernie5-demo-v1";

/// Seed of every ERNIE 5.0 demo weight: the ASCII bytes of `"ERNIE5.0"`.
pub const ERNIE5_DEMO_SEED: u64 = 0x4552_4E49_4535_2E30;

/// The added tokens of the generation parts, with their ids (after the VL demo's 1013 tokens).
const GEN_TOKENS: [(u32, &str); 4] = [(1013, "<|BOI|>"), (1014, "<|EOI|>"), (1015, "<|BOA|>"), (1016, "<|EOA|>")];

/// Files embedded verbatim (path in the folder, text).
const TEXT_FILES: [(&str, &str); 6] = [
    ("config.json", include_str!("../../../assets/demo-ernie5/config.json")),
    ("generation_config.json", include_str!("../../../assets/demo/generation_config.json")),
    ("tokenizer_config.json", include_str!("../../../assets/demo/tokenizer_config.json")),
    ("special_tokens_map.json", include_str!("../../../assets/demo/special_tokens_map.json")),
    ("README.md", include_str!("../../../assets/demo-ernie5/README.md")),
    ("vision_decoder/config.json", include_str!("../../../assets/demo-ernie5/vision_decoder/config.json")),
];
/// The codec's config, embedded verbatim.
const MIMI_CONFIG: (&str, &str) = ("audio_codec/config.json", include_str!("../../../assets/demo-ernie5/audio_codec/config.json"));
/// The VL demo's tokenizer, which the ERNIE 5.0 one extends.
const VL_TOKENIZER: &str = include_str!("../../../assets/demo/tokenizer.json");

pub(super) const WEIGHTS_FILE: &str = "model.safetensors";
pub(super) const VAE_WEIGHTS_FILE: &str = "vision_decoder/diffusion_pytorch_model.safetensors";
pub(super) const MIMI_WEIGHTS_FILE: &str = "audio_codec/model.safetensors";

/// The ERNIE 5.0 demo: text files, tokenizer, Mimi config, three weights files.
pub(super) const ERNIE5_DEMO: Demo =
    Demo { name: ERNIE5_DEMO_NAME, marker_format: "ernie5-demo-v1 format 1", n_files: TEXT_FILES.len() + 5, files: ernie5_files };

/// Returns `(cache_dir/ERNIE5_DEMO_NAME, created_now)`, writing the ERNIE 5.0 demo first if the
/// folder is missing or incomplete; atomic and race-safe as [`super::ensure_demo_checkpoint`].
///
/// Errors: as [`super::ensure_demo_checkpoint`].
pub fn ensure_ernie5_demo_checkpoint(cache_dir: &Path) -> Result<(PathBuf, bool)> {
    ensure(cache_dir, &ERNIE5_DEMO)
}

/// Writes the ERNIE 5.0 demo into `dir` (deterministic: the same bytes on every call and
/// platform), the `.complete` marker last.
///
/// Errors: [`Error::Io`] naming the file that could not be written; [`Error::Safetensors`] /
/// [`Error::Json`]-like failures of serialising (not expected).
pub fn write_ernie5_demo_checkpoint(dir: &Path) -> Result<()> {
    write(dir, &ERNIE5_DEMO)
}

/// Every file of the ERNIE 5.0 demo but the marker.
fn ernie5_files(dir: &Path) -> Result<DemoFiles> {
    let mut files: DemoFiles = TEXT_FILES.iter().map(|(name, text)| (name.to_string(), text.as_bytes().to_vec())).collect();
    files.push(("tokenizer.json".into(), tokenizer_json(dir)?));
    files.push((MIMI_CONFIG.0.into(), MIMI_CONFIG.1.as_bytes().to_vec()));
    files.push((WEIGHTS_FILE.into(), safetensors_bytes(&ernie5_tensors(), ERNIE5_DEMO_SEED, &dir.join(WEIGHTS_FILE))?));
    let part_seed = |file: &str| ERNIE5_DEMO_SEED ^ fnv1a64(file.as_bytes()).rotate_left(17);
    files.push((VAE_WEIGHTS_FILE.into(), safetensors_bytes(&vae_tensors(), part_seed(VAE_WEIGHTS_FILE), &dir.join(VAE_WEIGHTS_FILE))?));
    files.push((MIMI_WEIGHTS_FILE.into(), safetensors_bytes(&mimi_tensors(), part_seed(MIMI_WEIGHTS_FILE), &dir.join(MIMI_WEIGHTS_FILE))?));
    Ok(files)
}

/// The VL demo's tokenizer.json with [`GEN_TOKENS`] appended to `added_tokens` (special, not
/// normalised, as the other control tokens), pretty-printed: the same bytes on every run.
fn tokenizer_json(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("tokenizer.json");
    let bad = |reason: String| Error::Io { path: path.clone(), source: std::io::Error::other(reason) };
    let mut v: Value = serde_json::from_str(VL_TOKENIZER).map_err(|e| bad(format!("the embedded VL tokenizer: {e}")))?;
    let Some(added) = v.get_mut("added_tokens").and_then(Value::as_array_mut) else {
        return Err(bad("the embedded VL tokenizer has no added_tokens list".into()));
    };
    for (id, content) in GEN_TOKENS {
        added.push(json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true }));
    }
    let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| bad(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

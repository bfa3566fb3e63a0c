//! The built-in demo checkpoints, written on first use into a cache folder so the CLI works without
//! `--model` (and without a download): a small ERNIE-4.5-VL model with seeded random weights and a
//! real small tokenizer (this file and `weights.rs`; `ernie caption` on images and video), and a
//! small ERNIE 5.0 generation checkpoint with an image decoder and an audio codec (`ernie5.rs`;
//! `ernie generate --output x.png|x.wav`, `ernie caption --audio`). Both are created the same
//! way: written into a temp sibling, renamed into place, checked by a `.complete` marker.
//!
//! The VL demo:
//!
//! The folder is an `Ernie4_5_VLMoeForConditionalGeneration` checkpoint (`model_type`
//! `ernie4_5_vl_moe`) exactly as transformers 5.x `save_pretrained` writes one — transformers loads
//! it with no missing or unexpected keys (`tests/reference/check_demo_checkpoint.py`):
//!
//! - `config.json`: text hidden 256, 4 layers (`["dense","sparse","sparse","sparse"]`), 4 q / 2 kv
//!   heads of 64, vocab 1024, M-RoPE sections [11, 11, 10]; 16 text experts of width 128 + 16
//!   vision experts of width 64, top-4, 1 shared expert; ViT 2 blocks of width 128.
//! - `model.safetensors`: 377 tensors, bf16 except routers and correction biases (f32), 21.6 MB.
//! - `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`: the 1010-piece
//!   ERNIE-style BPE of `tests/fixtures/vl-preprocess`, plus the named VL tokens (`image_token`,
//!   …) that transformers' processor asks the tokenizer for.
//! - `preprocessor_config.json`, `video_preprocessor_config.json`: images ≤ 28·28·64 px (≤ 64
//!   tokens); video frames 28·28·8 – 28·28·16 px with timestamps drawn.
//! - `chat_template.jinja`: the ERNIE-4.5-VL chat format (spec §3.8), as in
//!   `tests/fixtures/vl-moe-f32`.
//! - `generation_config.json`: bos 1, eos [2 `</s>`, 4 `<|end_of_sentence|>`], pad 0.
//! - `Roboto-Regular.ttf`: the timestamp font the video processor loads from the folder.
//! - `README.md`: says the weights are random and how to use a real checkpoint.
//! - `.complete`: written last; a format line, then name, size and FNV-1a 64 of every file.
//!
//! Tensor names are the on-disk (original Baidu) layout, which is what transformers 5.24
//! `save_pretrained` writes (it reverses its load-time conversion) and what the released
//! `baidu/ERNIE-4.5-VL-28B-A3B-PT` holds: `model.layers.{l}.mlp.experts.{0..E}` are the text
//! experts and `{E..2E}` the vision experts (each `{gate,up,down}_proj.weight`), routers
//! `mlp.gate.weight` (text) / `mlp.gate.weight_1` (vision) stored transposed `[H, E]`,
//! `mlp.moe_statics.e_score_correction_bias` `[2, E]` (row 0 text, row 1 vision),
//! `model.vision_model.*`, `model.resampler_model.{spatial,temporal}_linear.{0,2,3}`, no
//! `lm_head` (tied). The full table is `demo_tensors` in this file.
//!
//! Everything but the weights is embedded from `runtime/assets/demo/` (`include_str!`), and the
//! font from tokenizers-mm, so the binary works from any directory.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};


use crate::{Error, Result};

mod codec_weights;
mod ernie5;
mod ernie5_weights;
mod weights;

pub use ernie5::{ensure_ernie5_demo_checkpoint, write_ernie5_demo_checkpoint, ERNIE5_DEMO_NAME, ERNIE5_DEMO_SEED};
use weights::demo_safetensors;

/// Folder name of the demo checkpoint inside the cache directory. Bump the suffix whenever the
/// bytes written change, so an old cache is never mistaken for the new one.
pub const DEMO_NAME: &str = "ernie45-vl-demo-v1";

/// Seed of every demo weight: the ASCII bytes of `"ERNIE-VL"`. Tensor `name` draws from
/// SplitMix64 seeded with `DEMO_SEED ^ fnv1a64(name)`, so a tensor's values do not depend on the
/// order tensors are written in.
pub const DEMO_SEED: u64 = 0x4552_4E49_452D_564C;

/// Written last into a complete checkpoint folder.
const MARKER: &str = ".complete";
/// First line of the marker; a folder whose marker says anything else is rebuilt.
const MARKER_FORMAT: &str = "ernie45-vl-demo-v1 format 1";

/// A demo's files: (path relative to its folder, with `/` between folders; bytes).
type DemoFiles = Vec<(String, Vec<u8>)>;

/// One built-in demo checkpoint: how its folder is named and checked, and what it holds.
struct Demo {
    /// Folder name inside the cache directory.
    name: &'static str,
    /// First line of its `.complete` marker.
    marker_format: &'static str,
    /// How many files the marker lists.
    n_files: usize,
    /// Every file but the marker. The argument is the folder, for error messages only.
    files: fn(&Path) -> Result<DemoFiles>,
}

/// The ERNIE-4.5-VL demo.
const VL_DEMO: Demo = Demo { name: DEMO_NAME, marker_format: MARKER_FORMAT, n_files: TEXT_FILES.len() + 2, files: vl_files };

/// The VL demo's files: the embedded JSON/README files, the font, `model.safetensors`.
fn vl_files(dir: &Path) -> Result<DemoFiles> {
    let mut files: DemoFiles = TEXT_FILES.iter().map(|(name, text)| (name.to_string(), text.as_bytes().to_vec())).collect();
    files.push((FONT_FILE.into(), tokenizers_mm::video::ROBOTO_REGULAR.to_vec()));
    files.push((WEIGHTS_FILE.into(), demo_safetensors(&dir.join(WEIGHTS_FILE))?));
    Ok(files)
}

/// Leftover temp folders of crashed writers older than this are swept on the next build.
const STALE_AFTER: Duration = Duration::from_secs(3600);


/// Files embedded from runtime/assets/demo/, written verbatim.
const TEXT_FILES: [(&str, &str); 9] = [
    ("config.json", include_str!("../../../assets/demo/config.json")),
    ("generation_config.json", include_str!("../../../assets/demo/generation_config.json")),
    ("tokenizer.json", include_str!("../../../assets/demo/tokenizer.json")),
    ("tokenizer_config.json", include_str!("../../../assets/demo/tokenizer_config.json")),
    ("special_tokens_map.json", include_str!("../../../assets/demo/special_tokens_map.json")),
    ("preprocessor_config.json", include_str!("../../../assets/demo/preprocessor_config.json")),
    ("video_preprocessor_config.json", include_str!("../../../assets/demo/video_preprocessor_config.json")),
    ("chat_template.jinja", include_str!("../../../assets/demo/chat_template.jinja")),
    ("README.md", include_str!("../../../assets/demo/README.md")),
];
/// `font` of video_preprocessor_config.json; transformers refuses to load the processor without it.
const FONT_FILE: &str = "Roboto-Regular.ttf";
const WEIGHTS_FILE: &str = "model.safetensors";

/// The cache folder for downloaded-free artefacts such as the demo checkpoint: `$ERNIE_CACHE_DIR`
/// if set, else `$XDG_CACHE_HOME/ernie`, else `$HOME/.cache/ernie`, else `<temp dir>/ernie`.
/// Empty variables count as unset, and a relative `XDG_CACHE_HOME` is ignored (XDG spec).
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|key| std::env::var_os(key), std::env::temp_dir())
}

/// [`default_cache_dir`] with the environment passed in (testable without mutating it).
fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>, temp_dir: PathBuf) -> PathBuf {
    let var = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("ERNIE_CACHE_DIR") {
        return dir;
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("ernie");
    }
    if let Some(home) = var("HOME") {
        return home.join(".cache").join("ernie");
    }
    temp_dir.join("ernie")
}

/// Returns `(cache_dir/DEMO_NAME, created_now)`, writing the demo checkpoint first if the folder
/// is missing or incomplete.
///
/// Complete means: the `.complete` marker exists, has this version's format line, and every file
/// it lists exists with the listed size. Otherwise the checkpoint is written into a fresh temp
/// sibling (`cache_dir/.ernie45-vl-demo-v1.tmp-*`) and renamed into place, so a crash halfway or
/// two racing processes never leave a half checkpoint under the final name; if another process
/// installs a complete one first, that one is used (`created_now` false) and ours is deleted. An
/// incomplete folder under the final name (e.g. made by hand) is moved aside and deleted.
/// Temp folders of crashed writers older than an hour are swept, best effort.
///
/// Errors: [`Error::Io`] naming the path that could not be created, written or renamed (e.g. an
/// unwritable cache directory); [`Error::Safetensors`] if serialising the weights fails (not
/// expected).
pub fn ensure_demo_checkpoint(cache_dir: &Path) -> Result<(PathBuf, bool)> {
    ensure(cache_dir, &VL_DEMO)
}

/// [`ensure_demo_checkpoint`] for any [`Demo`].
fn ensure(cache_dir: &Path, demo: &Demo) -> Result<(PathBuf, bool)> {
    let target = cache_dir.join(demo.name);
    if is_complete(&target, demo) {
        return Ok((target, false));
    }
    fs::create_dir_all(cache_dir).map_err(|source| Error::Io { path: cache_dir.to_path_buf(), source })?;
    sweep_stale(cache_dir, demo.name);
    let tmp = unique_sibling(cache_dir, demo.name, "tmp");
    if let Err(e) = write(&tmp, demo) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Three rounds: rename fails only while an incomplete folder sits under the final name.
    for _ in 0..3 {
        match fs::rename(&tmp, &target) {
            Ok(()) => return Ok((target, true)),
            Err(source) if !target.exists() => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::Io { path: target, source });
            }
            Err(_) => {}
        }
        if is_complete(&target, demo) {
            // Another process finished first: use theirs (same bytes).
            let _ = fs::remove_dir_all(&tmp);
            return Ok((target, false));
        }
        // An incomplete folder: move it aside atomically, then delete it.
        let trash = unique_sibling(cache_dir, demo.name, "old");
        match fs::rename(&target, &trash) {
            Ok(()) => {
                let _ = fs::remove_dir_all(&trash);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::Io { path: target, source });
            }
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    Err(Error::Io { path: target, source: io::Error::other("an incomplete demo checkpoint kept reappearing under this name") })
}

/// Writes the demo checkpoint into `dir` (created if missing; existing files are overwritten):
/// the embedded JSON/README files, the font, `model.safetensors` (seeded with [`DEMO_SEED`]),
/// and last the `.complete` marker. Deterministic: the same bytes on every call and platform
/// (the weights use only integer arithmetic and one exact int→float conversion per value).
///
/// Errors: [`Error::Io`] naming the file that could not be written; [`Error::Safetensors`] if
/// serialising the weights fails (not expected).
pub fn write_demo_checkpoint(dir: &Path) -> Result<()> {
    write(dir, &VL_DEMO)
}

/// Writes `demo`'s files into `dir` (subfolders created as needed), then the `.complete` marker:
/// the format line, then `path size fnv1a64` per file.
fn write(dir: &Path, demo: &Demo) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let files = (demo.files)(dir)?;
    let mut marker = format!("{}\n", demo.marker_format);
    for (name, bytes) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.to_path_buf(), source })?;
        }
        write_synced(&path, bytes)?;
        marker.push_str(&format!("{name} {} {:016x}\n", bytes.len(), fnv1a64(bytes)));
    }
    write_synced(&dir.join(MARKER), marker.as_bytes())
}

/// Whether `dir` holds a complete demo checkpoint (see [`ensure_demo_checkpoint`]). Checks
/// metadata only (sizes), not contents, so it costs a few `stat` calls.
fn is_complete(dir: &Path, demo: &Demo) -> bool {
    let Ok(marker) = fs::read_to_string(dir.join(MARKER)) else { return false };
    let mut lines = marker.lines();
    if lines.next() != Some(demo.marker_format) {
        return false;
    }
    let mut n_files = 0;
    for line in lines {
        let mut parts = line.split(' ');
        let (Some(name), Some(size)) = (parts.next(), parts.next().and_then(|s| s.parse::<u64>().ok())) else {
            return false;
        };
        // Relative paths inside the folder only (`vision_decoder/config.json`), never `..`.
        let inside = !name.starts_with('/') && !name.contains('\\') && name.split('/').all(|p| !p.is_empty() && p != "..");
        if !inside || fs::metadata(dir.join(name)).map(|m| m.len()).ok() != Some(size) {
            return false;
        }
        n_files += 1;
    }
    n_files == demo.n_files
}

/// `cache_dir/.{name}.{kind}-{pid}-{nanos}-{n}`: unique across processes and threads.
fn unique_sibling(cache_dir: &Path, name: &str, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    cache_dir.join(format!(".{name}.{kind}-{}-{nanos}-{n}", std::process::id()))
}

/// Deletes `.{demo_name}.{tmp,old}-*` folders not modified for [`STALE_AFTER`] (crashed writers).
/// Best effort: errors are ignored; a live writer's folder is always younger than that.
fn sweep_stale(cache_dir: &Path, demo_name: &str) {
    let Ok(entries) = fs::read_dir(cache_dir) else { return };
    let prefixes = [format!(".{demo_name}.tmp-"), format!(".{demo_name}.old-")];
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > STALE_AFTER) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Writes `bytes` to `path` and flushes it to disk (so a renamed folder never holds torn files).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = File::create(path).map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}


/// FNV-1a, 64-bit: per-tensor seeds and the marker's file hashes.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[cfg(test)]
mod tests;

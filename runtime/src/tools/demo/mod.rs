//! The built-in demo checkpoint: a small ERNIE-4.5-VL model with seeded random weights and a real
//! small tokenizer, written on first use into a cache folder so `ernie caption` works without
//! `--model` (and without a download).
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

mod weights;

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
    let target = cache_dir.join(DEMO_NAME);
    if is_complete(&target) {
        return Ok((target, false));
    }
    fs::create_dir_all(cache_dir).map_err(|source| Error::Io { path: cache_dir.to_path_buf(), source })?;
    sweep_stale(cache_dir);
    let tmp = unique_sibling(cache_dir, "tmp");
    if let Err(e) = write_demo_checkpoint(&tmp) {
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
        if is_complete(&target) {
            // Another process finished first: use theirs (same bytes).
            let _ = fs::remove_dir_all(&tmp);
            return Ok((target, false));
        }
        // An incomplete folder: move it aside atomically, then delete it.
        let trash = unique_sibling(cache_dir, "old");
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
    fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let weights = demo_safetensors(&dir.join(WEIGHTS_FILE))?;
    let mut files: Vec<(&str, &[u8])> = TEXT_FILES.iter().map(|(name, text)| (*name, text.as_bytes())).collect();
    files.push((FONT_FILE, tokenizers_mm::video::ROBOTO_REGULAR));
    files.push((WEIGHTS_FILE, &weights));
    let mut marker = format!("{MARKER_FORMAT}\n");
    for (name, bytes) in &files {
        write_synced(&dir.join(name), bytes)?;
        marker.push_str(&format!("{name} {} {:016x}\n", bytes.len(), fnv1a64(bytes)));
    }
    write_synced(&dir.join(MARKER), marker.as_bytes())
}

/// Whether `dir` holds a complete demo checkpoint (see [`ensure_demo_checkpoint`]). Checks
/// metadata only (sizes), not contents, so it costs a few `stat` calls.
fn is_complete(dir: &Path) -> bool {
    let Ok(marker) = fs::read_to_string(dir.join(MARKER)) else { return false };
    let mut lines = marker.lines();
    if lines.next() != Some(MARKER_FORMAT) {
        return false;
    }
    let mut n_files = 0;
    for line in lines {
        let mut parts = line.split(' ');
        let (Some(name), Some(size)) = (parts.next(), parts.next().and_then(|s| s.parse::<u64>().ok())) else {
            return false;
        };
        if name.contains('/') || name.contains('\\') || fs::metadata(dir.join(name)).map(|m| m.len()).ok() != Some(size) {
            return false;
        }
        n_files += 1;
    }
    n_files == TEXT_FILES.len() + 2
}

/// `cache_dir/.DEMO_NAME.{kind}-{pid}-{nanos}-{n}`: unique across processes and threads.
fn unique_sibling(cache_dir: &Path, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    cache_dir.join(format!(".{DEMO_NAME}.{kind}-{}-{nanos}-{n}", std::process::id()))
}

/// Deletes `.DEMO_NAME.{tmp,old}-*` folders not modified for [`STALE_AFTER`] (crashed writers).
/// Best effort: errors are ignored; a live writer's folder is always younger than that.
fn sweep_stale(cache_dir: &Path) {
    let Ok(entries) = fs::read_dir(cache_dir) else { return };
    let prefixes = [format!(".{DEMO_NAME}.tmp-"), format!(".{DEMO_NAME}.old-")];
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
mod tests {
    use super::weights::*;
    use safetensors::tensor::Dtype;
    use super::*;
    use safetensors::SafeTensors;

    /// 4 layers: 9 attention/norm tensors each, 3 dense-FFN tensors in layer 0, and per MoE layer
    /// 2E experts × 3 + 2 routers + 1 bias + 3 shared; 1 embedding + 1 final norm; ViT 1 patch
    /// embed + 12 per block + 2 final LN; resampler 15.
    const EXPECTED_TENSORS: usize = 4 * 6 + 3 + 3 * (2 * N_EXPERTS * 3 + 3 + 3) + 2 + 1 + 12 * VIT_DEPTH + 2 + 15;

    fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn writer_is_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_demo_checkpoint(a.path()).unwrap();
        write_demo_checkpoint(b.path()).unwrap();
        let (fa, fb) = (read_all(a.path()), read_all(b.path()));
        assert_eq!(fa.len(), TEXT_FILES.len() + 3, "files + font + weights + marker");
        assert!(fa == fb, "two writes differ");
    }

    #[test]
    fn safetensors_and_config_are_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        write_demo_checkpoint(dir.path()).unwrap();
        let bytes = fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), EXPECTED_TENSORS);
        assert_eq!(st.len(), 377, "the count transformers 5.24 save_pretrained writes for this config");
        let t = st.tensor("model.layers.2.mlp.experts.20.down_proj.weight").unwrap();
        assert_eq!((t.dtype(), t.shape()), (Dtype::BF16, &[HIDDEN, MOE_INTER[1]][..]));
        let t = st.tensor("model.layers.1.mlp.gate.weight_1").unwrap();
        assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[HIDDEN, N_EXPERTS][..]));
        assert!(st.tensor("lm_head.weight").is_err(), "tied head is not stored");

        let cfg: serde_json::Value = serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["model_type"], "ernie4_5_vl_moe");
        let text = &cfg["text_config"];
        let vision = &cfg["vision_config"];
        for (key, want) in [
            (&text["vocab_size"], VOCAB),
            (&text["hidden_size"], HIDDEN),
            (&text["intermediate_size"], INTER),
            (&text["num_hidden_layers"], N_LAYERS),
            (&text["num_attention_heads"], N_HEADS),
            (&text["num_key_value_heads"], N_KV_HEADS),
            (&text["head_dim"], HEAD_DIM),
            (&text["moe_num_experts"], N_EXPERTS),
            (&text["moe_intermediate_size"][0], MOE_INTER[0]),
            (&text["moe_intermediate_size"][1], MOE_INTER[1]),
            (&text["moe_num_shared_experts"], N_SHARED),
            (&vision["depth"], VIT_DEPTH),
            (&vision["hidden_size"], VIT_HIDDEN),
            (&vision["intermediate_size"], VIT_INTER),
            (&vision["spatial_merge_size"], MERGE),
        ] {
            assert_eq!(key.as_u64(), Some(want as u64), "config.json disagrees with the tensor shapes");
        }
        assert_eq!(PATCH_DIM as u64, 3 * vision["patch_size"].as_u64().unwrap().pow(2));
    }

    #[test]
    fn weights_have_the_documented_scale() {
        let spec = TensorSpec { name: "x".into(), shape: vec![4096], dtype: Dtype::F32, init: Init::Normal(0.5) };
        let v: Vec<f32> = tensor_bytes(&spec).chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(mean.abs() < 0.03 && (std - 0.5).abs() < 0.03, "mean {mean} std {std}");
    }

    #[test]
    fn ensure_creates_once_then_reuses() {
        let cache = tempfile::tempdir().unwrap();
        let (dir, created) = ensure_demo_checkpoint(cache.path()).unwrap();
        assert!(created);
        assert_eq!(dir, cache.path().join(DEMO_NAME));
        assert!(is_complete(&dir));
        let (again, created) = ensure_demo_checkpoint(cache.path()).unwrap();
        assert_eq!((again, created), (dir, false));
        // No temp folders are left behind.
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1);
    }

    #[test]
    fn incomplete_folders_are_rebuilt() {
        let cache = tempfile::tempdir().unwrap();
        let target = cache.path().join(DEMO_NAME);
        // No marker at all.
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("config.json"), "{}").unwrap();
        let (dir, created) = ensure_demo_checkpoint(cache.path()).unwrap();
        assert!(created && is_complete(&dir));
        assert_ne!(fs::read(dir.join("config.json")).unwrap(), b"{}");
        // A truncated weights file behind a valid marker.
        let weights = dir.join(WEIGHTS_FILE);
        let len = fs::metadata(&weights).unwrap().len();
        File::options().write(true).open(&weights).unwrap().set_len(len / 2).unwrap();
        assert!(!is_complete(&dir));
        let (dir, created) = ensure_demo_checkpoint(cache.path()).unwrap();
        assert!(created && is_complete(&dir));
        assert_eq!(fs::metadata(dir.join(WEIGHTS_FILE)).unwrap().len(), len);
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1, "the stale folder was deleted");
    }

    #[test]
    fn racing_writers_agree() {
        let cache = tempfile::tempdir().unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2).map(|_| s.spawn(|| ensure_demo_checkpoint(cache.path()).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|(dir, _)| is_complete(dir)));
        assert!(results.iter().any(|(_, created)| *created));
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1);
    }

    #[test]
    fn unwritable_cache_dir_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        // A path below a regular file cannot be created, even by root.
        let cache = file.join("cache");
        match ensure_demo_checkpoint(&cache) {
            Err(Error::Io { path, .. }) => assert!(path.starts_with(&file), "{path:?}"),
            other => panic!("expected an Io error, got {other:?}"),
        }
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
        };
        let tmp = PathBuf::from("/tmp");
        let all = env(&[("ERNIE_CACHE_DIR", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(all, tmp.clone()), PathBuf::from("/c"));
        let xdg = env(&[("ERNIE_CACHE_DIR", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(xdg, tmp.clone()), PathBuf::from("/x/ernie"));
        let home = env(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/h")]);
        assert_eq!(cache_dir_from(home, tmp.clone()), PathBuf::from("/h/.cache/ernie"));
        assert_eq!(cache_dir_from(env(&[]), tmp), PathBuf::from("/tmp/ernie"));
    }

    /// Writes the demo checkpoint to `$ERNIE_DEMO_OUT` for tests/reference/check_demo_checkpoint.py:
    /// `ERNIE_DEMO_OUT=/tmp/demo cargo test -p ernie-runtime --lib demo::tests::write_to_env_dir -- --ignored`.
    #[test]
    #[ignore]
    fn write_to_env_dir() {
        let out = std::env::var_os("ERNIE_DEMO_OUT").expect("set ERNIE_DEMO_OUT");
        write_demo_checkpoint(Path::new(&out)).unwrap();
    }
}

//! Tests of the demo checkpoints: determinism, layout, the create-once cache and its races.

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
    assert!(is_complete(&dir, &VL_DEMO));
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
    assert!(created && is_complete(&dir, &VL_DEMO));
    assert_ne!(fs::read(dir.join("config.json")).unwrap(), b"{}");
    // A truncated weights file behind a valid marker.
    let weights = dir.join(WEIGHTS_FILE);
    let len = fs::metadata(&weights).unwrap().len();
    File::options().write(true).open(&weights).unwrap().set_len(len / 2).unwrap();
    assert!(!is_complete(&dir, &VL_DEMO));
    let (dir, created) = ensure_demo_checkpoint(cache.path()).unwrap();
    assert!(created && is_complete(&dir, &VL_DEMO));
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
    assert!(results.iter().all(|(dir, _)| is_complete(dir, &VL_DEMO)));
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

/// Writes the ERNIE 5.0 demo to `$ERNIE_DEMO_OUT` for `check_demo_checkpoint.py --ernie5`:
/// `ERNIE_DEMO_OUT=/tmp/demo5 cargo test -p ernie-runtime --lib demo::tests::write_ernie5_to_env_dir -- --ignored`.
#[test]
#[ignore]
fn write_ernie5_to_env_dir() {
    let out = std::env::var_os("ERNIE_DEMO_OUT").expect("set ERNIE_DEMO_OUT");
    write_ernie5_demo_checkpoint(Path::new(&out)).unwrap();
}

mod ernie5 {
    use super::super::codec_weights::*;
    use super::super::ernie5::{ERNIE5_DEMO, MIMI_WEIGHTS_FILE, VAE_WEIGHTS_FILE, WEIGHTS_FILE};
    use super::super::ernie5_weights::{AUDIO_CODEBOOK, AUDIO_LEVELS, BITS, HEAD_DIM, HIDDEN, N_HEADS, N_KV_HEADS, N_LAYERS, N_SCALES, VOCAB};
    use super::super::{ensure_ernie5_demo_checkpoint, is_complete, write_ernie5_demo_checkpoint, ERNIE5_DEMO_NAME, VL_DEMO};
    use crate::config::ModelConfig;
    use safetensors::SafeTensors;
    use std::fs::{self, File};
    use std::path::Path;

    /// Every file under `dir`, recursively, as (relative path, bytes), sorted.
    fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn writer_is_deterministic_and_complete() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_ernie5_demo_checkpoint(a.path()).unwrap();
        write_ernie5_demo_checkpoint(b.path()).unwrap();
        let (fa, fb) = (read_tree(a.path()), read_tree(b.path()));
        assert_eq!(fa.len(), ERNIE5_DEMO.n_files + 1, "files + marker");
        assert!(fa == fb, "two writes differ");
        assert!(is_complete(a.path(), &ERNIE5_DEMO));
        assert!(!is_complete(a.path(), &VL_DEMO), "the VL marker format differs");
    }

    #[test]
    fn ensure_creates_once_then_reuses_beside_the_vl_demo() {
        let cache = tempfile::tempdir().unwrap();
        let (dir, created) = ensure_ernie5_demo_checkpoint(cache.path()).unwrap();
        assert!(created);
        assert_eq!(dir, cache.path().join(ERNIE5_DEMO_NAME));
        let (again, created) = ensure_ernie5_demo_checkpoint(cache.path()).unwrap();
        assert_eq!((again, created), (dir.clone(), false));
        // A damaged codec weights file (in a subfolder) is noticed and rebuilt.
        let mimi = dir.join(MIMI_WEIGHTS_FILE);
        let len = fs::metadata(&mimi).unwrap().len();
        File::options().write(true).open(&mimi).unwrap().set_len(len / 2).unwrap();
        let (dir, created) = ensure_ernie5_demo_checkpoint(cache.path()).unwrap();
        assert!(created && fs::metadata(dir.join(MIMI_WEIGHTS_FILE)).unwrap().len() == len);
        assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 1, "no temp folders left");
    }

    #[test]
    fn config_agrees_with_the_tensors() {
        let dir = tempfile::tempdir().unwrap();
        write_ernie5_demo_checkpoint(dir.path()).unwrap();
        let ModelConfig::Ernie5(cfg) = ModelConfig::from_dir(dir.path()).unwrap() else { panic!("not ernie5") };
        let t = &cfg.text;
        assert_eq!(
            (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim),
            (VOCAB, HIDDEN, N_LAYERS, N_HEADS, N_KV_HEADS, HEAD_DIM)
        );
        let vg = cfg.visual_generation.unwrap();
        assert_eq!((vg.bits, vg.scales.len(), vg.final_grid()), (BITS, N_SCALES, (16, 16)));
        let audio = cfg.audio.unwrap();
        assert_eq!((audio.num_levels, audio.codebook_size), (AUDIO_LEVELS, AUDIO_CODEBOOK));
        let vae: serde_json::Value = serde_json::from_slice(&fs::read(dir.path().join("vision_decoder/config.json")).unwrap()).unwrap();
        assert_eq!(vae["latent_channels"].as_u64(), Some(BITS as u64), "one latent channel per bit");
        assert_eq!(vae["latent_channels"].as_u64(), Some(VAE_LATENT as u64));
        let blocks: Vec<u64> = vae["block_out_channels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(blocks, VAE_BLOCKS.map(|c| c as u64));
        assert_eq!(vae["layers_per_block"].as_u64(), Some(VAE_LAYERS_PER_BLOCK as u64));
        let mimi: serde_json::Value = serde_json::from_slice(&fs::read(dir.path().join("audio_codec/config.json")).unwrap()).unwrap();
        for (key, want) in [
            ("num_filters", MIMI_FILTERS),
            ("num_residual_layers", MIMI_RESIDUAL_LAYERS),
            ("compress", MIMI_COMPRESS),
            ("kernel_size", MIMI_KERNEL),
            ("residual_kernel_size", MIMI_RESIDUAL_KERNEL),
            ("last_kernel_size", MIMI_LAST_KERNEL),
            ("hidden_size", MIMI_HIDDEN),
            ("intermediate_size", MIMI_INTER),
            ("num_hidden_layers", MIMI_TRANSFORMER_LAYERS),
            ("codebook_size", MIMI_CODEBOOK),
            ("codebook_dim", MIMI_CODEBOOK_DIM),
            ("num_quantizers", MIMI_QUANTIZERS),
            ("num_semantic_quantizers", MIMI_SEMANTIC),
            ("upsample_groups", MIMI_HIDDEN),
        ] {
            assert_eq!(mimi[key].as_u64(), Some(want as u64), "audio_codec/config.json {key}");
        }
        let ratios: Vec<u64> = mimi["upsampling_ratios"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ratios, MIMI_RATIOS.map(|r| r as u64));
        const { assert!(AUDIO_CODEBOOK <= MIMI_CODEBOOK && AUDIO_LEVELS <= MIMI_QUANTIZERS, "the codec must hold the model's codes") };
        for file in [WEIGHTS_FILE, VAE_WEIGHTS_FILE, MIMI_WEIGHTS_FILE] {
            let bytes = fs::read(dir.path().join(file)).unwrap();
            SafeTensors::deserialize(&bytes).unwrap();
        }
    }

    #[test]
    fn the_engine_loads_every_part() {
        let dir = tempfile::tempdir().unwrap();
        write_ernie5_demo_checkpoint(dir.path()).unwrap();
        let engine = crate::Engine::load(dir.path()).unwrap();
        assert_eq!(engine.image_sizes().unwrap(), vec![(128, 128)]);
        engine.vision_decoder().unwrap();
        let codec = engine.load_audio_codec().unwrap();
        assert_eq!((codec.num_levels(), codec.codebook_size()), (MIMI_QUANTIZERS, MIMI_CODEBOOK));
        let tok = engine.tokenizer().unwrap();
        for (id, token) in [(1013, "<|BOI|>"), (1014, "<|EOI|>"), (1015, "<|BOA|>"), (1016, "<|EOA|>")] {
            assert_eq!(tok.token_id(token), Some(id), "{token}");
        }
    }

    /// The head's tensors come from the one load and the image decoder is loaded once: with the
    /// weights file and `vision_decoder/` deleted after the first use, images still generate.
    #[test]
    fn image_parts_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        write_ernie5_demo_checkpoint(dir.path()).unwrap();
        let engine = crate::Engine::load(dir.path()).unwrap();
        let first: *const _ = engine.vision_decoder().unwrap();
        fs::remove_dir_all(dir.path().join("vision_decoder")).unwrap();
        fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap(); // still mapped: the loader's views stay valid
        assert!(std::ptr::eq(first, engine.vision_decoder().unwrap()), "the same decoder, not a reload");
        let opts = crate::infer::next_scale::ImageGenOptions { cfg: 1.0, temperature: 0.0, ..Default::default() };
        let img = engine.generate_image(&crate::Prompt::Ids(vec![1, 2, 3]), &opts).unwrap();
        assert_eq!((img.width, img.height, img.rgb8.len()), (128, 128, 128 * 128 * 3));
    }
}

//! The image decoder and the resampling ops against diffusers 0.42.1 / torch 2.15.0 goldens
//! (`tests/reference/make_vae_reference.py` → `tests/fixtures/vae/`), plus the malformed-input
//! errors of issue #15.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ernie_runtime::model::vision_decoder::{to_rgb8, VisionDecoder};
use ernie_runtime::ops::resample::{resize_area, resize_bilinear, upsample_nearest2x, BILINEAR_2D_EPS};
use ernie_runtime::Error;
use safetensors::{Dtype, SafeTensors};

/// f32 on both sides through ~20 convolutions, GroupNorms and an attention of random weights:
/// only summation order differs (gemm vs oneDNN), ≈1e-6 relative per layer.
const PIXEL_F32_ATOL: f32 = 1e-4;
/// The encoder's mean: same reasoning as the pixels.
const MEAN_F32_ATOL: f32 = 1e-4;
/// Issue #15: decoded 8-bit pixels within 1/255 of diffusers' (a value at a rounding boundary may
/// round the other way after an f32 difference of 1e-6).
const RGB8_MAX_STEPS: f32 = 1.0;

fn vae_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae").join(name)
}

/// Every f32 tensor of a golden file, with its shape.
fn golden(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("golden parses");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Decodes the golden latent of fixture `name` and compares pixels (raw f32) and the RGB8 image.
fn check_decoder(name: &str) -> f32 {
    let vae = VisionDecoder::load(&vae_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = golden(&vae_dir(name).join("golden.safetensors"));
    let (zs, z) = &g["z"];
    let (ds, decoded) = &g["decoded"];
    let (raw, h, w) = vae.decode_raw(z, zs[0], zs[1], zs[2]).unwrap();
    assert_eq!((h, w), (ds[1], ds[2]), "{name}");
    let d_raw = max_abs(&raw, decoded);
    assert!(d_raw < PIXEL_F32_ATOL, "{name}: decode_raw max |Δ| {d_raw}");

    // The pipeline path: scaled latent → clamp → RGB8.
    let (ls, latent) = &g["latent"];
    let (pix, h, w) = vae.decode(latent, ls[0], ls[1], ls[2]).unwrap();
    assert!(pix.iter().all(|v| (-1.0..=1.0).contains(v)));
    let clamped: Vec<f32> = decoded.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let d_pix = max_abs(&pix, &clamped);
    assert!(d_pix < PIXEL_F32_ATOL, "{name}: decode max |Δ| {d_pix}");
    let rgb: Vec<f32> = to_rgb8(&pix, h, w).unwrap().into_iter().map(f32::from).collect();
    let (_, want) = &g["rgb8"];
    let d8 = max_abs(&rgb, want);
    assert!(d8 <= RGB8_MAX_STEPS, "{name}: rgb8 max |Δ| {d8}");
    let exact = rgb.iter().zip(want).filter(|(a, b)| a == b).count();
    eprintln!("{name}: decode_raw max |Δ| {d_raw:.3e}, pipeline max |Δ| {d_pix:.3e}, rgb8 max |Δ| {d8}, {exact}/{} bytes equal", rgb.len());
    d_raw
}

#[test]
fn infinity_like_ldm_with_wrappers_matches_diffusers() {
    check_decoder("infinity");
}

#[test]
fn flux_like_both_spellings_match_diffusers() {
    let a = check_decoder("flux");
    let b = check_decoder("flux-ldm");
    // Same weights in two spellings: identical computation.
    assert_eq!(a, b);
}

#[test]
fn sd_like_with_quant_convs_and_prefix_matches_diffusers() {
    check_decoder("sd");
}

#[test]
fn encoders_match_diffusers() {
    for name in ["infinity", "sd"] {
        let vae = VisionDecoder::load(&vae_dir(name)).unwrap();
        assert!(vae.has_encoder());
        let g = golden(&vae_dir(name).join("golden.safetensors"));
        let (is, image) = &g["image"];
        let (ms, mean) = &g["mean"];
        let (got, h, w) = vae.encode_raw(image, is[0], is[1], is[2]).unwrap();
        assert_eq!((h, w), (ms[1], ms[2]));
        let d = max_abs(&got, mean);
        assert!(d < MEAN_F32_ATOL, "{name}: encoder mean max |Δ| {d}");
        // The pipeline scaling: (mean − shift) · scaling.
        let (scaled, _, _) = vae.encode(image, is[0], is[1], is[2]).unwrap();
        let (s, t) = (vae.scaling_factor(), vae.shift_factor());
        for (a, m) in scaled.iter().zip(&got) {
            assert_eq!(*a, (m - t) * s);
        }
        eprintln!("{name}: encoder mean max |Δ| {d:.3e}");
    }
    let flux = VisionDecoder::load(&vae_dir("flux")).unwrap();
    assert!(!flux.has_encoder());
    assert!(matches!(flux.encode(&[0.0; 3 * 16], 3, 4, 4), Err(Error::Request(_))));
}

/// Largest distance in ulp between two f32 slices.
fn max_ulp(a: &[f32], b: &[f32]) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    a.iter().zip(b).map(|(x, y)| key(*x).abs_diff(key(*y))).max().unwrap_or(0)
}

/// Issue #15 item 2: the multi-scale BSQ round trip (image → encoder → residual bits per scale →
/// summed latent → decoder) against the torch oracle in `make_vae_reference.py` (F.interpolate
/// area / bilinear, diffusers' encoder and decoder) on the Infinity-like fixture.
#[test]
fn bsq_round_trip_matches_the_torch_oracle() {
    use ernie_runtime::model::vision_decoder::bsq::{decode_multiscale, encode_multiscale};
    let vae = VisionDecoder::load(&vae_dir("infinity")).unwrap();
    let g = golden(&vae_dir("infinity").join("golden.safetensors"));
    let b = golden(&vae_dir("infinity").join("bsq.safetensors"));
    let (is, image) = &g["image"];
    let (lat, lh, lw) = vae.encode(image, is[0], is[1], is[2]).unwrap(); // [d, lh, lw]
    let d = vae.config().latent_channels;
    let scales: Vec<(usize, usize)> = b["scales"].1.chunks(2).map(|p| (p[0] as usize, p[1] as usize)).collect();
    assert_eq!(scales, [(1, 1), (2, 3), (lh, lw)]);
    // Every quantised oracle value sits ≥ 1.7e-3 from zero, far beyond the encoder's ~1e-6 f32
    // noise: the bits must be identical.
    assert!(b["margin"].1[0] > 1e-4, "margin {}", b["margin"].1[0]);
    let bits = encode_multiscale(&lat, d, lh, lw, &scales).unwrap();
    for (k, got) in bits.iter().enumerate() {
        let want: Vec<u8> = b[&format!("bits_{k}")].1.iter().map(|&x| x as u8).collect();
        assert_eq!(got, &want, "bits of scale {k} {:?}", scales[k]);
    }
    let summed = decode_multiscale(&bits, d, lh, lw, &scales).unwrap();
    let ds = max_abs(&summed, &b["summed"].1);
    // Codes are ±1/4 (d = 16); the 2-D bilinear differs from torch by ≤ 1 ε·max|x| per scale.
    assert!(ds <= 3.0 * BILINEAR_2D_EPS * f32::EPSILON, "summed latent max |Δ| {ds}");
    let (pix, h, w) = vae.decode(&summed, d, lh, lw).unwrap();
    let rgb = to_rgb8(&pix, h, w).unwrap();
    let steps = rgb.iter().zip(&b["rgb8"].1).map(|(&a, &e)| (f32::from(a) - e).abs()).fold(0.0, f32::max);
    let equal = rgb.iter().zip(&b["rgb8"].1).filter(|(&a, &e)| f32::from(a) == e).count();
    eprintln!("BSQ round trip: bits identical on {} scales, summed latent max |Δ| {ds:.1e}, {equal}/{} RGB8 values equal", bits.len(), rgb.len());
    assert!(steps <= RGB8_MAX_STEPS, "RGB8 max step {steps}");
}

#[test]
fn resampling_matches_torch() {
    let g = golden(&vae_dir("").join("resample.safetensors"));
    let mut n_cases = [0usize; 3];
    let mut bad = Vec::new();
    for (name, (s, x)) in &g {
        let Some(i) = name.strip_prefix("bilinear_in_") else { continue };
        let (os, want) = &g[&format!("bilinear_out_{i}")];
        let got = resize_bilinear(x, s[0], s[1], s[2], os[1], os[2]).unwrap();
        let d = max_abs(&got, want);
        let scale = f32::EPSILON * x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
        eprintln!("bilinear {:?} → {:?}: max |Δ| {d:.3e} = {:.2} ε·max|x|, {differ} of {} differ", &s[1..], &os[1..], d / scale, got.len());
        // One-axis resizes (and copies) are bit-exact; two-axis ones within BILINEAR_2D_EPS.
        let one_axis = s[1] == os[1] || s[2] == os[2];
        if one_axis {
            assert_eq!(differ, 0, "bilinear {:?} → {:?}", &s[1..], &os[1..]);
        } else {
            bad.extend(
                (d > BILINEAR_2D_EPS * scale).then(|| format!("bilinear {:?} → {:?}: {:.2} ε·max|x|", &s[1..], &os[1..], d / scale)),
            );
        }
        n_cases[0] += 1;
    }
    for (name, (s, x)) in &g {
        let Some(i) = name.strip_prefix("area_in_") else { continue };
        let (os, want) = &g[&format!("area_out_{i}")];
        let got = resize_area(x, s[0], s[1], s[2], os[1], os[2]).unwrap();
        let ulp = max_ulp(&got, want);
        let d = max_abs(&got, want);
        let scale = f32::EPSILON * x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!("area {:?} → {:?}: max {ulp} ulp, |Δ| {:.2} ε·max|x|", &s[1..], &os[1..], d / scale);
        // torch computes a 1×1 output with `mean` (a vectorised cascade sum): one rounding of the
        // input scale allowed there; every other size bit-exact.
        let ok = if os[1] * os[2] == 1 { d <= scale } else { ulp == 0 };
        bad.extend((!ok).then(|| format!("area {:?} → {:?}: {ulp} ulp", &s[1..], &os[1..])));
        n_cases[1] += 1;
    }
    for (name, (s, x)) in &g {
        let Some(i) = name.strip_prefix("nearest_in_") else { continue };
        let (_, want) = &g[&format!("nearest_out_{i}")];
        assert_eq!(&upsample_nearest2x(x, s[0], s[1], s[2]).unwrap(), want, "nearest {s:?}");
        n_cases[2] += 1;
    }
    assert_eq!(n_cases, [13, 7, 3]);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Copies fixture `name` into a temp dir, letting `edit` change the config and tensors.
fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value, &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) -> tempfile::TempDir {
    let src = vae_dir(name);
    let file = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|f| f != "golden.safetensors" && f.ends_with(".safetensors"))
        .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let mut tensors = golden(&src.join(&file));
    edit(&mut cfg, &mut tensors);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.into_iter().map(|(n, (s, d))| (n, d.iter().flat_map(|v| v.to_le_bytes()).collect(), s)).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        bytes.iter().map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.path().join(&file)).unwrap();
    dir
}

#[test]
fn malformed_inputs_give_one_clear_error_each() {
    // A config that disagrees with itself: four levels, three block types.
    let d = edited("flux", |cfg, _| cfg["block_out_channels"] = serde_json::json!([8, 16, 16, 16]));
    assert!(matches!(VisionDecoder::load(d.path()), Err(Error::Config { key, .. }) if key == "down_block_types"));
    // A config that disagrees with the tensors: one resnet fewer per level leaves tensors unused.
    let d = edited("flux", |cfg, _| cfg["layers_per_block"] = serde_json::json!(1));
    match VisionDecoder::load(d.path()) {
        Err(Error::TensorSet { missing, unused }) => {
            assert!(missing.is_empty());
            assert!(!unused.is_empty() && unused.iter().all(|n| n.contains(".resnets.2.")), "{unused:?}");
        }
        other => panic!("expected unused tensors, got {:?}", other.err()),
    }
    let d = edited("flux", |cfg, _| cfg["norm_num_groups"] = serde_json::json!(3));
    assert!(matches!(VisionDecoder::load(d.path()), Err(Error::Config { key, .. }) if key == "norm_num_groups"));
    // A missing tensor.
    let d = edited("flux-ldm", |_, t| {
        t.remove("decoder.up.0.block.1.conv2.weight");
    });
    match VisionDecoder::load(d.path()) {
        Err(Error::TensorSet { missing, unused }) => {
            assert_eq!(missing, vec!["decoder.up_blocks.2.resnets.1.conv2.weight".to_string()]);
            assert!(unused.is_empty());
        }
        other => panic!("expected a missing tensor, got {:?}", other.err()),
    }
    // A tensor of the wrong shape.
    let d = edited("flux", |_, t| {
        t.insert("decoder.conv_in.bias".into(), (vec![3], vec![0.0; 3]));
    });
    assert!(matches!(VisionDecoder::load(d.path()), Err(Error::TensorShape { name, .. }) if name == "decoder.conv_in.bias"));
    // Two weights files, and none.
    let d = edited("flux", |_, _| {});
    std::fs::copy(d.path().join("diffusion_pytorch_model.safetensors"), d.path().join("ae.safetensors")).unwrap();
    assert!(
        matches!(VisionDecoder::load(d.path()), Err(Error::Config { key, reason }) if key == "vision_decoder" && reason.contains("several"))
    );
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(vae_dir("flux").join("config.json"), empty.path().join("config.json")).unwrap();
    assert!(matches!(VisionDecoder::load(empty.path()), Err(Error::Config { key, .. }) if key == "vision_decoder"));
    // A latent with the wrong channel count or length.
    let vae = VisionDecoder::load(&vae_dir("flux")).unwrap();
    assert!(matches!(vae.decode(&[0.0; 4 * 9], 4, 3, 3), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(vae.decode(&[0.0; 16 * 9 - 1], 16, 3, 3), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(vae.decode(&[], 16, 0, 3), Err(Error::ShapeMismatch { .. })));
    assert!(to_rgb8(&[0.0; 5], 1, 2).is_err());
}

#[test]
fn rgb8_rounds_like_numpy() {
    // x/2 + 0.5 = 0.5 → 127.5 → 128 (ties to even); −1 → 0; 1 → 255; out of range clamps.
    let px = [0.0, -1.0, 1.0, 7.0, -3.0, 1.0 / 255.0];
    let rgb = to_rgb8(&[px.to_vec(), px.to_vec(), px.to_vec()].concat(), 1, 6).unwrap();
    assert_eq!(&rgb[..6], &[128, 128, 128, 0, 0, 0]);
    assert_eq!(rgb.chunks(3).map(|c| c[0]).collect::<Vec<_>>(), vec![128, 0, 255, 255, 0, 128]);
}

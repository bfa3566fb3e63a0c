//! Quantised kernels and the GGUF reader against ggml itself: goldens written by
//! `tests/reference/make_quant_reference.py` (ggml from llama-cpp-python 0.3.36 through ctypes;
//! the GGUF file by that sdist's gguf-py 0.19.0).
//!
//! - quantize: our reference quantizers must produce ggml's bytes exactly (Q8_0, Q4_K, Q6_K, and
//!   the Q8_K / Q8_0 activations);
//! - dequantize: bit-identical f32;
//! - dot products: every kernel path against ggml's `vec_dot` (its native SIMD kernel), within
//!   [`DOT_REL`];
//! - GGUF: every metadata value and tensor of a file written by gguf-py.

use std::collections::HashMap;
use std::path::PathBuf;

use ernie_runtime::gguf::{GgmlType, Gguf, Value, ValueType};
use ernie_runtime::ops::quant::{
    blocks::{dequantize_row_q4_k, dequantize_row_q6_k, dequantize_row_q8_0, quantize_row_q8_0, quantize_row_q8_k, BlockQ8K},
    dot::{dot_q4_k_q8_k_scalar, dot_q6_k_q8_k_scalar, dot_q8_0_q8_0_scalar},
    qmatmul_xwt, QType, QWeight, Q8_K_BYTES, QK_K,
};
use safetensors::SafeTensors;

/// Our dots vs ggml's `vec_dot`: both sum the same exact block integers in f32, in different
/// orders (ggml keeps 8 f32 lanes per block), so they differ by a few rounding errors of the sum
/// of |products|: 1e-5 of Σ|x̂ᵢ·ŷᵢ| is ~50× the worst case seen.
const DOT_REL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

struct Goldens {
    bytes: Vec<u8>,
}

impl Goldens {
    fn load() -> Goldens {
        Goldens { bytes: std::fs::read(fixtures().join("quant_goldens.safetensors")).expect("fixture") }
    }
    fn get(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("safetensors")
    }
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (v, t.shape().to_vec())
}

fn u8s(st: &SafeTensors, name: &str) -> (Vec<u8>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
    (t.data().to_vec(), t.shape().to_vec())
}

const TYPES: [(&str, QType); 3] = [("q8_0", QType::Q8_0), ("q4_K", QType::Q4K), ("q6_K", QType::Q6K)];

#[test]
fn quantize_is_bit_exact_with_ggml() {
    let g = Goldens::load();
    let st = g.get();
    let (x, xs) = f32s(&st, "x");
    let (rows, k) = (xs[0], xs[1]);
    for (name, qt) in TYPES {
        let (want, _) = u8s(&st, &format!("q.{name}"));
        let rb = qt.row_bytes(k).unwrap();
        let mut bad = vec![];
        for r in 0..rows {
            let mut q = vec![0u8; rb];
            qt.quantize_row(&x[r * k..(r + 1) * k], &mut q);
            if q != want[r * rb..(r + 1) * rb] {
                bad.push(r);
            }
        }
        assert!(bad.is_empty(), "{name}: rows differing from ggml: {bad:?}");
    }
}

#[test]
fn activation_quantizers_are_bit_exact_with_ggml() {
    let g = Goldens::load();
    let st = g.get();
    let (a, s) = f32s(&st, "a");
    let (rows, k) = (s[0], s[1]);
    let (want80, _) = u8s(&st, "aq.q8_0");
    let (want8k, _) = u8s(&st, "aq.q4_K");
    for r in 0..rows {
        let ar = &a[r * k..(r + 1) * k];
        let mut q = vec![0u8; QType::Q8_0.row_bytes(k).unwrap()];
        quantize_row_q8_0(ar, &mut q);
        assert_eq!(q, want80[r * q.len()..(r + 1) * q.len()], "q8_0 activation row {r}");
        let mut b = vec![BlockQ8K::default(); k / QK_K];
        quantize_row_q8_k(ar, &mut b);
        let bytes: Vec<u8> = b.iter().flat_map(|b| b.to_bytes()).collect();
        assert_eq!(bytes, want8k[r * bytes.len()..(r + 1) * bytes.len()], "q8_K activation row {r}");
    }
}

#[test]
fn dequantize_is_bit_exact_with_ggml() {
    let g = Goldens::load();
    let st = g.get();
    for (name, qt) in TYPES {
        let (q, qs) = u8s(&st, &format!("q.{name}"));
        let (want, ws) = f32s(&st, &format!("deq.{name}"));
        let w = QWeight::from_bytes(qt, qs[0], ws[1], q.clone()).unwrap();
        let got = w.dequantize();
        let bad = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(bad, 0, "{name}: {bad} dequantized values differ from ggml");
        // The free functions agree with QType's dispatch.
        let mut one = vec![0.0f32; ws[1]];
        let row = &q[..w.row_bytes()];
        match qt {
            QType::Q8_0 => dequantize_row_q8_0(row, &mut one),
            QType::Q4K => dequantize_row_q4_k(row, &mut one),
            QType::Q6K => dequantize_row_q6_k(row, &mut one),
        }
        assert_eq!(one, got[..ws[1]]);
    }
}

#[test]
fn dots_match_ggml_vec_dot_on_every_path() {
    let g = Goldens::load();
    let st = g.get();
    let (a, s) = f32s(&st, "a");
    let (rows, k) = (s[0], s[1]);
    for (name, qt) in TYPES {
        let (q, _) = u8s(&st, &format!("q.{name}"));
        let (aq, _) = u8s(&st, &format!("aq.{name}"));
        let (want, _) = f32s(&st, &format!("dot.{name}"));
        let (deq, _) = f32s(&st, &format!("deq.{name}"));
        let w = QWeight::from_bytes(qt, rows, k, q.clone()).unwrap();
        let rb = w.row_bytes();
        // qmatmul row r · activation row r: ggml's vec_dot of the same pair.
        let mut worst = 0.0f32;
        for r in 0..rows {
            let wr = QWeight::from_bytes(qt, 1, k, q[r * rb..(r + 1) * rb].to_vec()).unwrap();
            let mut out = [0.0f32];
            qmatmul_xwt(&a[r * k..(r + 1) * k], &wr, &mut out).unwrap();
            let arow = &aq[r * aq.len() / rows..(r + 1) * aq.len() / rows];
            let scalar = match qt {
                QType::Q8_0 => dot_q8_0_q8_0_scalar(&q[r * rb..(r + 1) * rb], arow),
                _ => {
                    let blocks: Vec<BlockQ8K> = arow.chunks_exact(Q8_K_BYTES).map(|b| BlockQ8K::from_bytes(b).unwrap()).collect();
                    if qt == QType::Q4K {
                        dot_q4_k_q8_k_scalar(&q[r * rb..(r + 1) * rb], &blocks)
                    } else {
                        dot_q6_k_q8_k_scalar(&q[r * rb..(r + 1) * rb], &blocks)
                    }
                }
            };
            // Magnitude: Σ|ŵ|·|â| with â the dequantised ggml activation (≈ |a|).
            let mag: f32 = deq[r * k..(r + 1) * k].iter().zip(&a[r * k..(r + 1) * k]).map(|(x, y)| (x * y).abs()).sum();
            let tol = DOT_REL * mag + 1e-30;
            for (what, got) in [("scalar", scalar), ("qmatmul", out[0])] {
                let d = (got - want[r]).abs();
                assert!(d <= tol, "{name} {what} row {r}: ours {got} ggml {} (|Δ| {d} > {tol})", want[r]);
                worst = worst.max(d / mag.max(f32::MIN_POSITIVE));
            }
        }
        eprintln!("{name}: worst |Δ| vs ggml vec_dot = {worst:.2e} · Σ|x̂·â|");
    }
}

fn check_value(key: &str, v: &Value, types: &[u64], j: &serde_json::Value) {
    let code = types[0] as u32;
    assert_eq!(ValueType::from_code(code), Some(v.value_type()), "{key}: type");
    match v {
        Value::Array { elem, items } => {
            assert_eq!(*elem as u64, types[1], "{key}: element type");
            let arr = j.as_array().unwrap_or_else(|| panic!("{key}: json array"));
            assert_eq!(items.len(), arr.len(), "{key}: length");
            for (it, jv) in items.iter().zip(arr) {
                check_value(key, it, &types[1..], jv);
            }
        }
        Value::String(s) => assert_eq!(Some(s.as_str()), j.as_str(), "{key}"),
        Value::Bool(b) => assert_eq!(Some(*b), j.as_bool(), "{key}"),
        Value::F32(_) | Value::F64(_) => {
            // serde_json's default float parser (no `float_roundtrip`) may miss by an ulp on
            // extreme exponents such as the fixture's -2.25e-300.
            let (got, want) = (v.as_f64().unwrap_or(f64::NAN), j.as_f64().unwrap_or(f64::NAN));
            assert!((got - want).abs() <= 4.0 * f64::EPSILON * want.abs(), "{key}: {got} vs {want}");
        }
        Value::I8(_) | Value::I16(_) | Value::I32(_) | Value::I64(_) if j.as_i64().is_some_and(|x| x < 0) => {
            let got = match *v {
                Value::I8(x) => x as i64,
                Value::I16(x) => x as i64,
                Value::I32(x) => x as i64,
                Value::I64(x) => x,
                _ => unreachable!(),
            };
            assert_eq!(Some(got), j.as_i64(), "{key}");
        }
        _ => assert_eq!(v.as_u64(), j.as_u64(), "{key}"),
    }
}

#[test]
fn gguf_written_by_gguf_py_reads_back_exactly() {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny_gguf.json")).unwrap()).unwrap();
    let f = Gguf::open(&fixtures().join("tiny.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment() as u64, doc["alignment"].as_u64().unwrap());
    let meta = doc["metadata"].as_object().unwrap();
    assert_eq!(f.metadata().len(), meta.len());
    for (key, want) in meta {
        let v = f.get(key).unwrap_or_else(|| panic!("missing {key}"));
        let types: Vec<u64> = want["types"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
        check_value(key, v, &types, &want["value"]);
    }
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    let by_name: HashMap<_, _> = f.tensors().iter().map(|t| (t.name.clone(), t)).collect();
    for want in tensors {
        let t = by_name[want["name"].as_str().unwrap()];
        assert_eq!(t.ggml_type.0 as u64, want["ggml_type"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.start as u64, want["offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.nbytes as u64, want["nbytes"].as_u64().unwrap(), "{}", t.name);
        let hex: String = f.tensor_bytes(t).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want["hex"].as_str().unwrap(), "{} bytes", t.name);
        assert_eq!(t.start % f.alignment(), 0);
    }
    // Typed views: f32 / f16 / bf16 tensors and a Q4_K expert matrix.
    let t = f.tensor("t.f32").unwrap();
    assert_eq!(t.shape(), &[3, 4]);
    assert_eq!(t.to_f32_vec(), (0..12).map(|i| i as f32 - 5.5).collect::<Vec<_>>());
    assert_eq!(f.tensor("t.f16").unwrap().to_f32_vec()[3], half::f16::from_f32(1.0).to_f32());
    assert_eq!(f.tensor("t.bf16").unwrap().to_f32_vec(), vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    let info = f.tensor_info("blk.0.ffn_down_exps.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q4_K);
    let q = QWeight::from_gguf(&f, "blk.0.ffn_down_exps.weight").unwrap();
    assert_eq!(q.dims(), (2, 512));
    let g = Goldens::load();
    let (deq, _) = f32s(&g.get(), "deq.q4_K");
    assert_eq!(q.dequantize(), deq[..2 * 512]);
    assert!(QWeight::from_gguf(&f, "t.f32").is_err(), "an f32 tensor is not a QWeight");
    assert!(f.tensor("blk.0.ffn_down_exps.weight").is_err(), "a Q4_K tensor is not a Tensor");
    assert!(f.tensor("nope").is_err());
}

#[test]
fn gguf_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"GGML\x03\0\0\0").unwrap();
    let e = Gguf::open(&p).err().unwrap();
    assert!(matches!(e, ernie_runtime::Error::Gguf { .. }), "{e}");
    assert!(e.to_string().contains("bad.gguf") && e.to_string().contains("magic"), "{e}");
    assert!(matches!(Gguf::open(&dir.path().join("missing.gguf")), Err(ernie_runtime::Error::Io { .. })));
}

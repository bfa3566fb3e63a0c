//! Write → read round trip and malformed files: every corruption is a typed [`GgufError`], never
//! a panic. (The fixture written by gguf-py is checked in `tests/quant_reference.rs`.)

use super::read::parse;
use super::*;

fn sample() -> (Vec<u8>, Vec<(String, Value)>, Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)>) {
    let meta = vec![
        ("general.architecture".to_string(), Value::String("ernie4_5".into())),
        ("a.u8".into(), Value::U8(7)),
        ("a.i8".into(), Value::I8(-7)),
        ("a.u16".into(), Value::U16(65535)),
        ("a.i16".into(), Value::I16(-32768)),
        ("a.u32".into(), Value::U32(u32::MAX)),
        ("a.i32".into(), Value::I32(i32::MIN)),
        ("a.f32".into(), Value::F32(-0.125)),
        ("a.bool".into(), Value::Bool(false)),
        ("a.u64".into(), Value::U64(u64::MAX)),
        ("a.i64".into(), Value::I64(i64::MIN)),
        ("a.f64".into(), Value::F64(1e300)),
        ("a.empty".into(), Value::Array { elem: ValueType::String, items: vec![] }),
        (
            "a.nested".into(),
            Value::Array {
                elem: ValueType::Array,
                items: vec![Value::Array { elem: ValueType::I16, items: vec![Value::I16(1), Value::I16(-2)] }],
            },
        ),
    ];
    let tensors = vec![
        ("w.q8", vec![64, 2], GgmlType::Q8_0, (0..136).map(|i| i as u8).collect::<Vec<u8>>()),
        ("w.f32", vec![3], GgmlType::F32, vec![1u8; 12]),
        ("w.q4k", vec![256, 1], GgmlType::Q4_K, vec![9u8; 144]),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.add_metadata(k, v.clone()).unwrap();
    }
    for (n, d, t, b) in &tensors {
        assert_eq!(w.add_tensor(n, d, *t).unwrap(), b.len() as u64);
    }
    let mut out = Vec::new();
    w.write_header(&mut out).unwrap();
    for (_, _, _, b) in &tensors {
        w.write_tensor_data(&mut out, b).unwrap();
    }
    assert!(w.is_complete());
    (out, meta, tensors)
}

#[test]
fn write_then_read_round_trips_everything() {
    let (file, meta, tensors) = sample();
    let p = parse(&file).unwrap();
    assert_eq!(p.version, 3);
    assert_eq!(p.alignment, DEFAULT_ALIGNMENT);
    assert_eq!(p.data_offset % 32, 0);
    assert_eq!(p.metadata, meta);
    assert_eq!(p.tensors.len(), tensors.len());
    for (t, (n, d, ty, b)) in p.tensors.iter().zip(&tensors) {
        assert_eq!((t.name.as_str(), &t.dims, t.ggml_type), (*n, d, *ty));
        assert_eq!(t.start % 32, 0);
        assert_eq!(&file[t.start..t.start + t.nbytes], &b[..]);
    }
}

#[test]
fn custom_alignment_is_written_and_honoured() {
    let mut w = GgufWriter::new();
    w.set_alignment(128).unwrap();
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[5], GgmlType::F32).unwrap();
    let mut out = Vec::new();
    w.write_header(&mut out).unwrap();
    w.write_tensor_data(&mut out, &[1; 12]).unwrap();
    assert!(w.write_tensor_data(&mut out, &[2; 12]).is_err(), "wrong length refused");
    w.write_tensor_data(&mut out, &[2; 20]).unwrap();
    let p = parse(&out).unwrap();
    assert_eq!(p.alignment, 128);
    assert_eq!(p.tensors[1].offset, 128);
    assert!(p.tensors.iter().all(|t| t.start % 128 == 0));
    assert!(w.set_alignment(48).is_err());
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", Value::U8(1)).unwrap();
    assert_eq!(w.add_metadata("k", Value::U8(2)), Err(GgufError::DuplicateKey("k".into())));
    assert!(w.add_metadata("m", Value::Array { elem: ValueType::U8, items: vec![Value::I8(1)] }).is_err());
    assert!(w.add_tensor("q", &[100, 2], GgmlType::Q4_K).is_err(), "100 is not whole Q4_K blocks");
    assert!(w.add_tensor("x", &[1, 1, 1, 1, 1], GgmlType::F32).is_err());
    assert!(w.add_tensor("u", &[4], GgmlType(31)).is_err(), "unknown ggml type");
}

/// Every truncation of a valid file is an error (never a panic), and so are the named
/// corruptions, each with its own variant.
#[test]
fn malformed_files_are_typed_errors() {
    let (file, _, _) = sample();
    let end_of_data = parse(&file).unwrap().tensors.iter().map(|t| t.start + t.nbytes).max().unwrap();
    assert!(parse(&file[..end_of_data]).is_ok(), "trailing padding is optional");
    for cut in 0..end_of_data {
        // Cutting inside the last tensor's data or its padding: PastEnd; elsewhere: Truncated.
        match parse(&file[..cut]) {
            Err(GgufError::Truncated { .. } | GgufError::PastEnd { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let set = |at: usize, bytes: &[u8]| {
        let mut f = file.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        parse(&f)
    };
    assert_eq!(set(0, b"GGUG").unwrap_err(), GgufError::BadMagic(u32::from_le_bytes(*b"GGUG")));
    assert_eq!(set(4, &2u32.to_le_bytes()).unwrap_err(), GgufError::UnsupportedVersion(2));
    assert!(matches!(set(8, &u64::MAX.to_le_bytes()), Err(GgufError::TooMany { what: "tensor", .. })));
    assert!(matches!(set(16, &(1u64 << 19).to_le_bytes()), Err(GgufError::Truncated { what: "metadata", .. })));
    // First key's length: absurd, then past the end.
    assert!(matches!(set(24, &u64::MAX.to_le_bytes()), Err(GgufError::TooMany { what: "string length", .. })));
    assert!(matches!(set(24, &(1u64 << 20).to_le_bytes()), Err(GgufError::Truncated { .. })));
    // First value's type code (after the 8-byte length and the 20-byte key).
    let ty_at = 24 + 8 + "general.architecture".len();
    assert!(matches!(set(ty_at, &99u32.to_le_bytes()), Err(GgufError::BadValueType { code: 99, .. })));
    // Invalid UTF-8 in the first key.
    assert!(matches!(set(32, &[0xFF]), Err(GgufError::BadUtf8 { at: 24 })));

    // Tensor-info corruptions of the last tensor ("w.q4k", dims [256, 1]), located by its name:
    // name, n_dims u32, dims 2 × u64, type u32, offset u64.
    let p = parse(&file).unwrap();
    let last = &p.tensors[2];
    let name_at = file.windows(5).position(|w| w == b"w.q4k").unwrap();
    let (nd_at, dims_at) = (name_at + 5, name_at + 9);
    let (ty_at, off_at) = (dims_at + 16, dims_at + 20);
    assert_eq!(&file[off_at..off_at + 8], &last.offset.to_le_bytes());
    assert!(matches!(set(off_at, &(last.offset + 1).to_le_bytes()), Err(GgufError::Misaligned { .. })));
    assert!(matches!(set(off_at, &(1u64 << 40).to_le_bytes()), Err(GgufError::PastEnd { .. })));
    assert!(matches!(set(off_at, &(u64::MAX - 31).to_le_bytes()), Err(GgufError::PastEnd { .. })));
    assert!(matches!(set(ty_at, &31u32.to_le_bytes()), Err(GgufError::BadTensorType { code: 31, .. })));
    assert!(matches!(set(dims_at, &255u64.to_le_bytes()), Err(GgufError::BadDims { .. })));
    assert!(matches!(set(dims_at + 8, &(1u64 << 62).to_le_bytes()), Err(GgufError::BadDims { .. })));
    assert!(matches!(set(dims_at + 8, &(1u64 << 40).to_le_bytes()), Err(GgufError::PastEnd { .. })));
    assert!(matches!(set(nd_at, &9u32.to_le_bytes()), Err(GgufError::BadDims { .. })));
    assert!(matches!(set(name_at, b"w.f32"), Err(GgufError::DuplicateTensor(_))));
}

#[test]
fn bad_alignment_and_nesting_are_refused() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::U32(64)).unwrap();
    let mut out = Vec::new();
    w.write_header(&mut out).unwrap();
    // Rewrite the stored alignment value (last 4 bytes before padding) to 48.
    let at = out.windows(4).rposition(|b| b == 64u32.to_le_bytes()).unwrap();
    out[at..at + 4].copy_from_slice(&48u32.to_le_bytes());
    assert!(matches!(parse(&out), Err(GgufError::BadAlignment(_))));

    let mut deep = Value::U8(1);
    for _ in 0..6 {
        deep = Value::Array { elem: deep.value_type(), items: vec![deep] };
    }
    assert!(matches!(GgufWriter::new().add_metadata("d", deep.clone()), Err(GgufError::TooDeep { .. })));
    // Hand-build a file with that nesting: the reader refuses it too.
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'd');
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..6 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 64]);
    assert!(matches!(parse(&b), Err(GgufError::TooDeep { .. })));
}

//! A reader for the few fields of SentencePiece's `ModelProto` (`tokenizer.model`) that the
//! converter needs. Protocol-buffers wire format, proto2 defaults, hand-written: the file is a
//! handful of length-delimited messages and a small reader keeps the dependency list short.
//!
//! Field numbers and defaults: sentencepiece `src/sentencepiece_model.proto` (as compiled into
//! transformers' `utils/sentencepiece_model_pb2.py`):
//!
//! | message         | field                       | no. | wire | default |
//! |-----------------|-----------------------------|-----|------|---------|
//! | ModelProto      | pieces (repeated)           | 1   | LEN  |         |
//! |                 | trainer_spec                | 2   | LEN  |         |
//! |                 | normalizer_spec             | 3   | LEN  |         |
//! | SentencePiece   | piece                       | 1   | LEN  | ""      |
//! |                 | score                       | 2   | I32 (float) | 0 |
//! |                 | type                        | 3   | VARINT | NORMAL (1) |
//! | TrainerSpec     | model_type                  | 3   | VARINT | UNIGRAM (1) |
//! |                 | byte_fallback               | 35  | VARINT | false  |
//! |                 | unk_id / bos_id / eos_id    | 40 / 41 / 42 | VARINT | 0 / 1 / 2 |
//! |                 | unk_piece / bos_piece / eos_piece | 45 / 46 / 47 | LEN | `<unk>` / `<s>` / `</s>` |
//! | NormalizerSpec  | precompiled_charsmap        | 2   | LEN  | empty   |
//! |                 | add_dummy_prefix            | 3   | VARINT | true  |
//! |                 | remove_extra_whitespaces    | 4   | VARINT | true  |
//! |                 | escape_whitespaces          | 5   | VARINT | true  |
//!
//! Every other field is skipped by its wire type. Errors are plain strings; the caller wraps
//! them with the file path.

/// Piece type (`SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceType {
    /// 1: an ordinary piece, takes part in merges.
    Normal,
    /// 2: the unknown piece.
    Unknown,
    /// 3: a control symbol (`<s>`, ERNIE's `<|begin_of_sentence|>`): a special token.
    Control,
    /// 4: a user-defined symbol: always emitted whole, never merged.
    UserDefined,
    /// 5: unused.
    Unused,
    /// 6: a byte-fallback piece `<0xNN>`.
    Byte,
}

impl PieceType {
    /// The type of its numeric code (the `.proto` enum value, which llama.cpp's
    /// `tokenizer.ggml.token_type` stores too); `None` for an unknown code.
    pub(crate) fn from_code(code: u64) -> Option<PieceType> {
        Some(match code {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry; its id is its index.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    pub(crate) piece: String,
    pub(crate) score: f32,
    pub(crate) kind: PieceType,
}

/// The fields of `TrainerSpec` the converter reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TrainerSpec {
    /// 1 unigram, 2 BPE, 3 word, 4 char.
    pub(crate) model_type: u64,
    pub(crate) byte_fallback: bool,
    pub(crate) unk_id: i64,
    pub(crate) bos_id: i64,
    pub(crate) eos_id: i64,
    pub(crate) unk_piece: String,
    pub(crate) bos_piece: String,
    pub(crate) eos_piece: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: 1,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
        }
    }
}

/// The fields of `NormalizerSpec` the converter reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NormalizerSpec {
    pub(crate) precompiled_charsmap: Vec<u8>,
    pub(crate) add_dummy_prefix: bool,
    pub(crate) remove_extra_whitespaces: bool,
    pub(crate) escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A parsed `tokenizer.model`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ModelProto {
    pub(crate) pieces: Vec<Piece>,
    pub(crate) trainer: TrainerSpec,
    pub(crate) normalizer: NormalizerSpec,
}

/// Wire value of one field.
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8]),
    Fixed32(u32),
}

/// Iterates `(field number, value)` over one message's bytes.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let mut step = || -> Result<(u64, Wire<'a>), String> {
            let key = varint(&mut self.buf)?;
            let (field, wire) = (key >> 3, key & 7);
            let value = match wire {
                0 => Wire::Varint(varint(&mut self.buf)?),
                1 => {
                    self.buf = self.buf.get(8..).ok_or("truncated fixed64")?;
                    Wire::Fixed64
                }
                2 => {
                    let n = usize::try_from(varint(&mut self.buf)?).map_err(|_| "length overflows")?;
                    if n > self.buf.len() {
                        return Err(format!("field {field}: length {n} past the end ({} bytes left)", self.buf.len()));
                    }
                    let (body, rest) = self.buf.split_at(n);
                    self.buf = rest;
                    Wire::Len(body)
                }
                5 => {
                    let b = self.buf.get(..4).ok_or("truncated fixed32")?;
                    self.buf = &self.buf[4..];
                    Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                other => return Err(format!("field {field}: unsupported wire type {other}")),
            };
            Ok((field, value))
        };
        let r = step();
        if r.is_err() {
            self.buf = &[];
        }
        Some(r)
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

fn string(field: &str, body: &[u8]) -> Result<String, String> {
    String::from_utf8(body.to_vec()).map_err(|_| format!("{field} is not UTF-8"))
}

/// proto2 `int32` is sent as a sign-extended 64-bit varint.
fn int32(v: u64) -> i64 {
    i64::from(v as u32 as i32)
}

fn piece(buf: &[u8], index: usize) -> Result<Piece, String> {
    let mut p = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    for f in fields(buf) {
        match f? {
            (1, Wire::Len(b)) => p.piece = string(&format!("piece {index}"), b)?,
            (2, Wire::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Wire::Varint(t)) => {
                p.kind = PieceType::from_code(t).ok_or_else(|| format!("piece {index}: unknown type {t}"))?
            }
            _ => {}
        }
    }
    Ok(p)
}

fn trainer(buf: &[u8]) -> Result<TrainerSpec, String> {
    let mut t = TrainerSpec::default();
    for f in fields(buf) {
        match f? {
            (3, Wire::Varint(v)) => t.model_type = v,
            (35, Wire::Varint(v)) => t.byte_fallback = v != 0,
            (40, Wire::Varint(v)) => t.unk_id = int32(v),
            (41, Wire::Varint(v)) => t.bos_id = int32(v),
            (42, Wire::Varint(v)) => t.eos_id = int32(v),
            (45, Wire::Len(b)) => t.unk_piece = string("unk_piece", b)?,
            (46, Wire::Len(b)) => t.bos_piece = string("bos_piece", b)?,
            (47, Wire::Len(b)) => t.eos_piece = string("eos_piece", b)?,
            _ => {}
        }
    }
    Ok(t)
}

fn normalizer(buf: &[u8]) -> Result<NormalizerSpec, String> {
    let mut n = NormalizerSpec::default();
    for f in fields(buf) {
        match f? {
            (2, Wire::Len(b)) => n.precompiled_charsmap = b.to_vec(),
            (3, Wire::Varint(v)) => n.add_dummy_prefix = v != 0,
            (4, Wire::Varint(v)) => n.remove_extra_whitespaces = v != 0,
            (5, Wire::Varint(v)) => n.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(n)
}

/// Parse a serialized `ModelProto`. Errors name the broken field; a file with no pieces is an
/// error (nothing to tokenize with).
pub(crate) fn parse_model(bytes: &[u8]) -> Result<ModelProto, String> {
    let mut m = ModelProto::default();
    for f in fields(bytes) {
        match f? {
            (1, Wire::Len(b)) => {
                let index = m.pieces.len();
                m.pieces.push(piece(b, index)?);
            }
            (2, Wire::Len(b)) => m.trainer = trainer(b)?,
            (3, Wire::Len(b)) => m.normalizer = normalizer(b)?,
            (_, Wire::Varint(_) | Wire::Fixed64 | Wire::Fixed32(_) | Wire::Len(_)) => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces (not a SentencePiece model?)".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> u8 {
        (field << 3 | wire) as u8
    }

    #[test]
    fn reads_fields_and_defaults() {
        // piece { piece: "ab", score: -1.5, type: CONTROL }
        let mut p = vec![key(1, 2), 2, b'a', b'b', key(2, 5)];
        p.extend((-1.5f32).to_bits().to_le_bytes());
        p.extend([key(3, 0), 3]);
        let mut m = vec![key(1, 2), p.len() as u8];
        m.extend(&p);
        // normalizer_spec { add_dummy_prefix: false }
        m.extend([key(3, 2), 2, key(3, 0), 0]);
        let got = parse_model(&m).unwrap();
        assert_eq!(got.pieces, vec![Piece { piece: "ab".into(), score: -1.5, kind: PieceType::Control }]);
        assert!(!got.normalizer.add_dummy_prefix);
        assert!(got.normalizer.remove_extra_whitespaces && got.normalizer.escape_whitespaces);
        assert_eq!((got.trainer.model_type, got.trainer.unk_id, got.trainer.eos_id), (1, 0, 2));
    }

    #[test]
    fn negative_int32_and_truncation() {
        // trainer_spec { bos_id: -1 } (10-byte varint)
        let mut t = vec![0xc8, 0x02];
        t.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(trainer(&t).unwrap().bos_id, -1);
        assert!(parse_model(&[key(1, 2), 9, 1]).unwrap_err().contains("past the end"));
        assert!(parse_model(&[]).is_err());
        assert!(parse_model(&[0x80]).is_err());
    }
}

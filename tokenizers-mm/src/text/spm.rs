//! Checkpoints that ship only SentencePiece's `tokenizer.model` (the original ERNIE 4.5 release
//! layout, Paddle exports): build, in process, the tokenizer transformers builds for them.
//!
//! Reference: transformers 5.25.0 `TokenizersBackend._convert_from_sentencepiece`
//! (tokenization_utils_tokenizers.py) and `SpmConverter.build_tokenizer_from_spm_proto`
//! (convert_slow_tokenizer.py). `AutoTokenizer` takes that path for ERNIE 4.5 (`ernie4_5`,
//! `ernie4_5_moe` are in `MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS`, so the hub's remote-code
//! `Ernie4_5_Tokenizer` is not used). It follows the model's own settings:
//!
//! | stage          | built from the proto                                                      |
//! |----------------|---------------------------------------------------------------------------|
//! | model          | BPE (any `model_type` but unigram): vocab = every piece by id, merges regenerated from the *normal* pieces ranked by `(-score, id, left, right)`, `byte_fallback` from the trainer spec, `fuse_unk`, `ignore_merges` iff user-defined pieces exist; unigram: `(piece, score)` list |
//! | normalizer     | `Precompiled(charsmap)` if any; `remove_extra_whitespaces` → strip spaces at both ends and collapse runs of spaces; `escape_whitespaces` → `Replace(" ", "▁")`; `add_dummy_prefix` and `legacy` → `Replace(^▁, ▁▁)` |
//! | pre-tokenizer  | `add_dummy_prefix` → `Metaspace(prepend always (legacy) / first, no split)`; user-defined pieces → `Split(longest first, isolated)` |
//! | decoder        | `Replace("▁", " ")`, `ByteFallback` (if byte fallback), `Fuse`, `Strip(1 left)` (if dummy prefix) |
//! | added tokens   | control pieces (special), tokenizer_config.json's `added_tokens_decoder` (may rename pieces by id; `normalized` forced off with a dummy prefix), and the named special tokens (`bos_token` …, defaulting to the proto's unk / bos / eos pieces) |
//!
//! ERNIE 4.5's model (BPE, byte fallback, identity normalization, no dummy prefix, whitespace
//! runs kept) comes out as the converted hub `tokenizer.json` documented in [`super`]:
//! `Replace(" ", "▁")`, no pre-tokenizer, BPE with byte fallback. No post-processor: our
//! encoders never add BOS/EOS (transformers' default post-processor for these folders adds
//! nothing either unless `add_bos_token` is set).
//!
//! The result is handed to the `tokenizers` crate as a `tokenizer.json` document, so every stage
//! runs exactly the code transformers' backend runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Map, Value as Json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

use super::spm_proto::{parse_model, ModelProto, NormalizerSpec, Piece, PieceType, TrainerSpec};

/// `tokenizer_config.json` keys naming one special token (transformers' special attributes).
const NAMED_SPECIALS: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// The SentencePiece meta symbol for a space.
const META: &str = "\u{2581}";

/// One added token as tokenizer.json spells it.
#[derive(Clone, Debug)]
struct Added {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

impl Added {
    fn special(content: &str) -> Added {
        Added { content: content.to_string(), single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }
    }

    fn to_json(&self, id: u32) -> Json {
        json!({
            "id": id, "content": self.content, "single_word": self.single_word, "lstrip": self.lstrip,
            "rstrip": self.rstrip, "normalized": self.normalized, "special": self.special,
        })
    }
}

/// Read `path` (a `tokenizer.model`) and build the tokenizer transformers builds for it, with
/// `config` the folder's tokenizer_config.json (if any).
///
/// Errors: [`Error::Io`], [`Error::TokenizerFile`] (not a SentencePiece model, or the built
/// document is rejected by the `tokenizers` crate), [`Error::ConfigField`] (a malformed
/// `added_tokens_decoder`).
pub(crate) fn tokenizer_from_spm(path: &Path, config: Option<(&Path, &Json)>) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let proto = parse_model(&bytes).map_err(|message| Error::TokenizerFile { path: path.to_path_buf(), message })?;
    let doc = tokenizer_json(&proto, config)?;
    doc.to_string()
        .parse()
        .map_err(|e: Box<dyn std::error::Error + Send + Sync>| Error::TokenizerFile { path: path.to_path_buf(), message: e.to_string() })
}

/// The proto's unk / bos / eos pieces (those with an id ≥ 0), the defaults transformers gives the
/// named special tokens of a converted model.
pub(crate) fn proto_special_defaults(path: &Path) -> Result<Vec<(&'static str, String)>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let proto = parse_model(&bytes).map_err(|message| Error::TokenizerFile { path: path.to_path_buf(), message })?;
    Ok(special_defaults(&proto))
}

fn special_defaults(proto: &ModelProto) -> Vec<(&'static str, String)> {
    let t = &proto.trainer;
    let mut out = Vec::new();
    for (key, id, piece) in [("bos_token", t.bos_id, &t.bos_piece), ("eos_token", t.eos_id, &t.eos_piece), ("unk_token", t.unk_id, &t.unk_piece)] {
        if id >= 0 {
            out.push((key, piece.clone()));
        }
    }
    out
}

/// The tokenizer.json document (module docs).
fn tokenizer_json(proto: &ModelProto, config: Option<(&Path, &Json)>) -> Result<Json> {
    let norm = &proto.normalizer;
    let legacy = config.and_then(|(_, c)| c.get("legacy")).and_then(Json::as_bool).unwrap_or(true);
    let decoder_entries = match config {
        Some((path, cfg)) => added_tokens_decoder(path, cfg)?,
        None => BTreeMap::new(),
    };
    let unigram = proto.trainer.model_type == 1;

    // Vocabulary, with pieces renamed by `added_tokens_decoder` unless the new name is another
    // piece that keeps its own id.
    let mut vocab: Map<String, Json> = Map::new();
    if unigram {
        for (i, p) in proto.pieces.iter().enumerate() {
            vocab.insert(p.piece.clone(), json!(i));
        }
    } else {
        let kept: HashSet<&str> = proto
            .pieces
            .iter()
            .enumerate()
            .filter(|(i, _)| !decoder_entries.contains_key(&(*i as u32)))
            .map(|(_, p)| p.piece.as_str())
            .collect();
        for (i, p) in proto.pieces.iter().enumerate() {
            let name = match decoder_entries.get(&(i as u32)) {
                Some(a) if !kept.contains(a.content.as_str()) => a.content.clone(),
                _ => p.piece.clone(),
            };
            vocab.insert(name, json!(i));
        }
    }
    let id_to_token: HashMap<usize, &str> =
        vocab.iter().filter_map(|(t, id)| id.as_u64().map(|id| (id as usize, t.as_str()))).collect();
    let user_defined: Vec<&str> = proto
        .pieces
        .iter()
        .enumerate()
        .filter(|(i, p)| p.kind == PieceType::UserDefined && id_to_token.contains_key(i))
        .map(|(i, _)| id_to_token[&i])
        .collect();

    let model = if unigram {
        let pieces: Vec<Json> = proto.pieces.iter().map(|p| json!([p.piece, f64::from(p.score)])).collect();
        let unk = (proto.trainer.unk_id >= 0).then_some(proto.trainer.unk_id);
        json!({"type": "Unigram", "unk_id": unk, "vocab": pieces, "byte_fallback": proto.trainer.byte_fallback})
    } else {
        json!({
            "type": "BPE", "dropout": null, "unk_token": proto.trainer.unk_piece,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": proto.trainer.byte_fallback, "ignore_merges": !user_defined.is_empty(),
            "vocab": Json::Object(vocab.clone()), "merges": merges(proto, &id_to_token),
        })
    };

    let mut normalizers = Vec::new();
    if !norm.precompiled_charsmap.is_empty() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&norm.precompiled_charsmap);
        normalizers.push(json!({"type": "Precompiled", "precompiled_charsmap": b64}));
    }
    if norm.remove_extra_whitespaces {
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": r"\A +| +\z"}, "content": ""}));
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
    }
    if norm.escape_whitespaces {
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": META}));
    }
    if norm.add_dummy_prefix && legacy {
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": format!(r"\A{META}")}, "content": format!("{META}{META}")}));
    }

    let mut pre = Vec::new();
    if norm.add_dummy_prefix {
        let scheme = if legacy { "always" } else { "first" };
        pre.push(json!({"type": "Metaspace", "replacement": META, "prepend_scheme": scheme, "split": false}));
    }
    if !user_defined.is_empty() {
        let mut sorted = user_defined.clone();
        sorted.sort_by_key(|t| std::cmp::Reverse(t.chars().count())); // stable, as Python's sorted
        let pattern: Vec<String> = sorted.iter().map(|t| regex_escape(t)).collect();
        pre.push(json!({"type": "Split", "pattern": {"Regex": pattern.join("|")}, "behavior": "Isolated", "invert": false}));
    }

    let mut decoders = vec![json!({"type": "Replace", "pattern": {"String": META}, "content": " "})];
    if proto.trainer.byte_fallback {
        decoders.push(json!({"type": "ByteFallback"}));
    }
    if norm.add_dummy_prefix {
        decoders.push(json!({"type": "Fuse"}));
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    } else if proto.trainer.byte_fallback {
        decoders.push(json!({"type": "Fuse"}));
    }

    let added = added_tokens(proto, config, decoder_entries, &vocab);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added.iter().map(|(id, a)| a.to_json(*id)).collect::<Vec<_>>(),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": if pre.is_empty() { Json::Null } else { json!({"type": "Sequence", "pretokenizers": pre}) },
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model,
    }))
}

/// BPE merges from the normal pieces: every split `left + right` of a normal piece into two
/// normal pieces, ordered by `(-score, id, left, right)` (`build_tokenizer_from_spm_proto`).
/// Splits are at character boundaries (Python string indexing).
fn merges(proto: &ModelProto, id_to_token: &HashMap<usize, &str>) -> Vec<Json> {
    let normal: HashMap<&str, (f32, usize)> = proto
        .pieces
        .iter()
        .enumerate()
        .filter(|(i, p)| p.kind == PieceType::Normal && id_to_token.contains_key(i))
        .map(|(i, p)| (id_to_token[&i], (p.score, i)))
        .collect();
    let mut ranked: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (&token, &(score, id)) in &normal {
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if normal.contains_key(left) && normal.contains_key(right) {
                ranked.push((score, id, left, right));
            }
        }
    }
    ranked.sort_by(|a, b| {
        // Python sorts (-score, id, left, right); -score ascending = score descending.
        b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)).then(a.3.cmp(b.3))
    });
    ranked.into_iter().map(|(_, _, l, r)| json!([l, r])).collect()
}

/// Added tokens by id: control pieces, `added_tokens_decoder` entries as given (normalized off
/// with a dummy prefix), and the named special tokens (the unknown piece among them).
fn added_tokens(
    proto: &ModelProto,
    config: Option<(&Path, &Json)>,
    decoder_entries: BTreeMap<u32, Added>,
    vocab: &Map<String, Json>,
) -> BTreeMap<u32, Added> {
    let mut out: BTreeMap<u32, Added> = BTreeMap::new();
    for (i, p) in proto.pieces.iter().enumerate() {
        if p.kind == PieceType::Control {
            out.insert(i as u32, Added::special(&p.piece));
        }
    }
    let mut named: Vec<String> = Vec::new();
    let cfg = config.map(|(_, c)| c);
    for key in NAMED_SPECIALS {
        if let Some(text) = cfg.and_then(|c| c.get(key)).and_then(token_content) {
            named.push(text);
        }
    }
    for (key, piece) in special_defaults(proto) {
        if cfg.and_then(|c| c.get(key)).is_none_or(Json::is_null) {
            named.push(piece);
        }
    }
    for (id, mut a) in decoder_entries {
        if proto.normalizer.add_dummy_prefix {
            a.normalized = false;
        }
        out.insert(id, a);
    }
    // Named special tokens: their piece's id, or (not in the vocabulary) a new id after
    // everything else, as `TokenizersBackend.__init__`'s `add_tokens` does.
    for text in named {
        if out.values().any(|a| a.content == text) {
            continue;
        }
        let id = match vocab.get(&text).and_then(Json::as_u64) {
            Some(id) => id as u32,
            None => out.keys().next_back().map_or(0, |&k| k + 1).max(proto.pieces.len() as u32),
        };
        out.entry(id).or_insert_with(|| Added::special(&text));
    }
    out
}

/// `"<s>"` or `{"content": "<s>", ...}` → its text.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// tokenizer_config.json's `added_tokens_decoder`: `{"id": {"content", "lstrip", ...}}`.
fn added_tokens_decoder(path: &Path, cfg: &Json) -> Result<BTreeMap<u32, Added>> {
    let err = |problem: String| Error::ConfigField { path: path.to_path_buf(), field: "added_tokens_decoder".into(), problem };
    let mut out = BTreeMap::new();
    let map = match cfg.get("added_tokens_decoder") {
        None | Some(Json::Null) => return Ok(out),
        Some(Json::Object(m)) => m,
        Some(_) => return Err(err("expected an object {id: token}".into())),
    };
    for (id, tok) in map {
        let id: u32 = id.parse().map_err(|_| err(format!("key {id:?} is not a token id")))?;
        let content = tok.get("content").and_then(Json::as_str).ok_or_else(|| err(format!("entry {id} has no string \"content\"")))?;
        let flag = |k: &str, default: bool| tok.get(k).and_then(Json::as_bool).unwrap_or(default);
        out.insert(
            id,
            Added {
                content: content.to_string(),
                single_word: flag("single_word", false),
                lstrip: flag("lstrip", false),
                rstrip: flag("rstrip", false),
                normalized: flag("normalized", false),
                special: flag("special", false),
            },
        );
    }
    Ok(out)
}

/// A SentencePiece vocabulary given piece by piece: what a GGUF file stores for llama.cpp's
/// `llama` tokenizer model (`tokenizer.ggml.tokens`, `.scores`, `.token_type`, the special ids,
/// `.add_space_prefix`; gguf-py 0.19.0 `Keys.Tokenizer`). `types` are llama.cpp's token types, the
/// SentencePiece piece types by number: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
/// 6 byte.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpmVocab {
    /// Piece text by id (`▁` for a space).
    pub pieces: Vec<String>,
    /// Piece score by id (BPE merge priority: higher merges first).
    pub scores: Vec<f32>,
    /// Piece type by id (see the type doc).
    pub types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.cls_token_id`.
    pub cls_id: Option<u32>,
    /// `tokenizer.ggml.seperator_token_id` (sic).
    pub sep_id: Option<u32>,
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp's default for this model is true).
    pub add_space_prefix: bool,
}

impl SpmVocab {
    /// The vocabulary of a `tokenizer.model` file as llama.cpp's converter stores it
    /// (`_create_vocab_sentencepiece`): pieces, scores and types by id, padded with unused
    /// `[PAD{i}]` pieces up to `vocab_size`; ids named by `added_tokens_decoder` of
    /// `tokenizer_config` take its text, score -1000 and type control (special) or user-defined.
    ///
    /// Errors: [`Error::Io`], [`Error::TokenizerFile`] (not a SentencePiece model),
    /// [`Error::ConfigField`] (a malformed `added_tokens_decoder`).
    pub fn from_model_file(path: &Path, vocab_size: usize, tokenizer_config: Option<(&Path, &Json)>) -> Result<SpmVocab> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let proto = parse_model(&bytes).map_err(|message| Error::TokenizerFile { path: path.to_path_buf(), message })?;
        let n = vocab_size.max(proto.pieces.len());
        let mut v = SpmVocab {
            pieces: (0..n).map(|i| format!("[PAD{i}]")).collect(),
            scores: vec![-10000.0; n],
            types: vec![5; n],
            ..SpmVocab::default()
        };
        for (i, p) in proto.pieces.iter().enumerate() {
            v.pieces[i] = p.piece.clone();
            v.scores[i] = p.score;
            v.types[i] = match p.kind {
                PieceType::Normal => 1,
                PieceType::Unknown => 2,
                PieceType::Control => 3,
                PieceType::UserDefined => 4,
                PieceType::Unused => 5,
                PieceType::Byte => 6,
            };
        }
        if let Some((cfg_path, cfg)) = tokenizer_config {
            for (id, a) in added_tokens_decoder(cfg_path, cfg)? {
                if let Some(i) = Some(id as usize).filter(|&i| i < n) {
                    v.pieces[i] = if a.special { a.content.clone() } else { a.content.replace(META, " ") };
                    v.scores[i] = -1000.0;
                    v.types[i] = if a.special { 3 } else { 4 };
                }
            }
        }
        let id = |x: i64| u32::try_from(x).ok().filter(|&i| (i as usize) < n);
        v.bos_id = id(proto.trainer.bos_id);
        v.eos_id = id(proto.trainer.eos_id);
        v.unk_id = id(proto.trainer.unk_id);
        v.pad_id = None;
        v.add_space_prefix = proto.normalizer.add_dummy_prefix;
        Ok(v)
    }
}

/// The tokenizer [`tokenizer_from_spm`] builds, from a [`SpmVocab`] instead of a proto (module
/// docs): BPE with byte fallback iff the vocabulary has byte pieces; normalisation as llama.cpp
/// applies it (escape spaces, prefix iff `add_space_prefix`, nothing else). Returns the tokenizer
/// and the proto it was built from. Errors: a message naming the inconsistency.
pub(crate) fn tokenizer_from_vocab(v: &SpmVocab) -> std::result::Result<(Tokenizer, ModelProto), String> {
    let n = v.pieces.len();
    if n == 0 || v.scores.len() != n || v.types.len() != n {
        return Err(format!("vocabulary lists disagree: {n} pieces, {} scores, {} types", v.scores.len(), v.types.len()));
    }
    let mut pieces = Vec::with_capacity(n);
    for (i, ((p, &score), &t)) in v.pieces.iter().zip(&v.scores).zip(&v.types).enumerate() {
        // llama.cpp's converter stores user-defined spaces as " "; SentencePiece spells "▁".
        let kind = u64::try_from(t).ok().and_then(PieceType::from_code).ok_or_else(|| format!("token {i} ({p:?}): unknown token type {t}"))?;
        let piece = if kind == PieceType::UserDefined { p.replace(' ', META) } else { p.clone() };
        pieces.push(Piece { piece, score, kind });
    }
    for (what, id) in [("bos", v.bos_id), ("eos", v.eos_id), ("unk", v.unk_id), ("pad", v.pad_id), ("cls", v.cls_id), ("sep", v.sep_id)] {
        if id.is_some_and(|i| i as usize >= n) {
            return Err(format!("{what} token id {id:?} is outside the vocabulary of {n}"));
        }
    }
    let piece_of = |id: Option<u32>, default: &str| id.map_or(default.to_string(), |i| pieces[i as usize].piece.clone());
    let as_i64 = |id: Option<u32>| id.map_or(-1, i64::from);
    let trainer = TrainerSpec {
        model_type: 2,
        byte_fallback: pieces.iter().any(|p| p.kind == PieceType::Byte),
        unk_id: as_i64(v.unk_id.or_else(|| pieces.iter().position(|p| p.kind == PieceType::Unknown).map(|i| i as u32))),
        bos_id: as_i64(v.bos_id),
        eos_id: as_i64(v.eos_id),
        unk_piece: piece_of(v.unk_id.or_else(|| pieces.iter().position(|p| p.kind == PieceType::Unknown).map(|i| i as u32)), "<unk>"),
        bos_piece: piece_of(v.bos_id, "<s>"),
        eos_piece: piece_of(v.eos_id, "</s>"),
    };
    let normalizer = NormalizerSpec {
        precompiled_charsmap: Vec::new(),
        add_dummy_prefix: v.add_space_prefix,
        remove_extra_whitespaces: false,
        escape_whitespaces: true,
    };
    let proto = ModelProto { pieces, trainer, normalizer };
    let doc = tokenizer_json(&proto, None).map_err(|e| e.to_string())?;
    let tok: Tokenizer = doc.to_string().parse().map_err(|e: Box<dyn std::error::Error + Send + Sync>| e.to_string())?;
    Ok((tok, proto))
}

/// Escape regex metacharacters (the `regex` crate's set; the pattern only has to match the same
/// literal text as Python's `re.escape` output, not be spelled the same).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(p: &str, score: f32, kind: PieceType) -> Piece {
        Piece { piece: p.into(), score, kind }
    }

    #[test]
    fn merges_ranked_by_score_then_id() {
        let proto = ModelProto {
            pieces: vec![
                piece("<unk>", 0.0, PieceType::Unknown),
                piece("a", -1.0, PieceType::Normal),
                piece("b", -2.0, PieceType::Normal),
                piece("ab", -3.0, PieceType::Normal),
                piece("ba", -3.0, PieceType::Normal),
                piece("aab", -4.0, PieceType::Normal),
                piece("<c>", 0.0, PieceType::Control),
            ],
            trainer: TrainerSpec { model_type: 2, ..TrainerSpec::default() },
            normalizer: NormalizerSpec::default(),
        };
        let doc = tokenizer_json(&proto, None).unwrap();
        assert_eq!(doc["model"]["merges"], json!([["a", "b"], ["b", "a"], ["a", "ab"]]));
        assert_eq!(doc["added_tokens"][0]["content"], "<unk>");
        assert_eq!(doc["added_tokens"][1]["content"], "<c>");
        assert_eq!(doc["pre_tokenizer"]["pretokenizers"][0]["prepend_scheme"], "always");
        assert_eq!(regex_escape("<|A.B|>"), r"<\|A\.B\|>");
    }
}

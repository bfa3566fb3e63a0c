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

use super::spm_proto::{parse_model, ModelProto, PieceType};

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
    use super::super::spm_proto::{NormalizerSpec, Piece, TrainerSpec};
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

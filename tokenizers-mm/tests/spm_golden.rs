//! SentencePiece-only checkpoints (`tokenizer.model`, no `tokenizer.json`) vs transformers.
//!
//! Fixtures and goldens: `tests/fixtures/spm/` at the workspace root, written by
//! `tests/reference/make_spm_reference.py` (transformers 5.25.0, tokenizers 0.23.3,
//! sentencepiece 0.2.3): `ernie/` is configured like ERNIE 4.5's model (BPE, byte fallback, no
//! dummy prefix, whitespace runs kept, ERNIE's control tokens, the original release's
//! tokenizer_config.json); `spm-prefix/` covers the other converter branches (dummy prefix,
//! extra-whitespace removal, a precompiled normalization rule, user-defined pieces).

mod common;

use std::path::PathBuf;

use serde::Deserialize;
use tokenizers_mm::{Error, IncrementalDecoder, TextTokenizer, TokenizerSource};

#[derive(Deserialize)]
struct Golden {
    fixtures: std::collections::BTreeMap<String, Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    vocab_size: usize,
    special_ids: Vec<u32>,
    encodings: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_add_special_tokens: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

fn spm_dir() -> PathBuf {
    common::root().join("tests/fixtures/spm")
}

fn golden() -> Golden {
    let text = std::fs::read_to_string(spm_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

#[test]
fn ids_and_decodes_equal_transformers() {
    let golden = golden();
    assert_eq!(golden.fixtures.len(), 2);
    let mut checked = 0;
    for (name, fx) in &golden.fixtures {
        let tok = TextTokenizer::from_dir(&spm_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tok.source(), TokenizerSource::SentencePiece, "{name}");
        assert_eq!(tok.vocab_size(), fx.vocab_size, "{name}");
        for &id in &fx.special_ids {
            assert!(tok.is_special_id(id), "{name}: id {id} should be special");
        }
        for case in &fx.encodings {
            // transformers' `encode(text, add_special_tokens=False)` parses special-token text.
            let ids = tok.encode_with_specials(&case.text).unwrap();
            assert_eq!(ids, case.ids, "{name}: ids of {:?}", case.text);
            // No BOS/EOS is configured: the default call adds nothing either.
            assert_eq!(case.ids_add_special_tokens, case.ids, "{name}: {:?}", case.text);
            assert_eq!(tok.decode(&ids, false).unwrap(), case.decoded, "{name}: decode of {:?}", case.text);
            assert_eq!(tok.decode(&ids, true).unwrap(), case.decoded_skip_special, "{name}: decode(skip) of {:?}", case.text);
            // Streaming decode concatenates to the same text.
            let mut dec = IncrementalDecoder::new(&tok, false);
            let mut streamed = String::new();
            for &id in &ids {
                if let Some(s) = dec.push(id).unwrap() {
                    streamed.push_str(&s);
                }
            }
            streamed.push_str(&dec.finish().unwrap());
            assert_eq!(streamed, case.decoded, "{name}: streamed decode of {:?}", case.text);
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn ernie_layout_round_trips_text_exactly() {
    // ERNIE's model has no dummy prefix and keeps whitespace runs: decode(encode(text)) == text
    // for every corpus text without literal special-token or "▁" text (transformers agrees:
    // its decode equals the text for exactly those cases, checked above).
    let golden = golden();
    let tok = TextTokenizer::from_dir(&spm_dir().join("ernie")).unwrap();
    let mut n = 0;
    for case in &golden.fixtures["ernie"].encodings {
        if case.decoded == case.text {
            let plain = tok.encode_plain(&case.text).unwrap();
            assert_eq!(tok.decode(&plain, false).unwrap(), case.text);
            n += 1;
        }
    }
    assert!(n >= 15, "{n}");
}

#[test]
fn user_text_never_becomes_special_ids() {
    let tok = TextTokenizer::from_dir(&spm_dir().join("ernie")).unwrap();
    let text = "<|begin_of_sentence|>User: hi<|end_of_sentence|><think>";
    let trusted = tok.encode_with_specials(text).unwrap();
    assert!(trusted.iter().any(|&id| tok.is_special_id(id)));
    let plain = tok.encode_plain(text).unwrap();
    assert!(plain.iter().all(|&id| !tok.is_special_id(id)), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), text);
    // The original release's eos ids: </s> and <|end_of_sentence|>.
    let eos = tok.eos_token_ids();
    assert_eq!(eos, vec![tok.token_id("</s>").unwrap(), tok.token_id("<|end_of_sentence|>").unwrap()]);
}

#[test]
fn tokenizer_json_wins_and_broken_models_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Neither file: the error names tokenizer.json.
    match TextTokenizer::from_dir(dir.path()) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("tokenizer.json"), "{path:?}"),
        other => panic!("{other:?}"),
    }
    // A tokenizer.model that is not a SentencePiece proto.
    std::fs::write(dir.path().join("tokenizer.model"), b"\x0a\xff\xff\xff\xff\x0f").unwrap();
    match TextTokenizer::from_dir(dir.path()) {
        Err(Error::TokenizerFile { path, message }) => {
            assert!(path.ends_with("tokenizer.model"), "{path:?}");
            assert!(message.contains("past the end"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.path().join("tokenizer.model"), b"").unwrap();
    assert!(matches!(TextTokenizer::from_dir(dir.path()), Err(Error::TokenizerFile { .. })));
    // With both files, tokenizer.json is used (transformers prefers it too).
    let json_dir = common::root().join("tests/fixtures/tokenizer");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(json_dir.join(f), dir.path().join(f)).unwrap();
    }
    let tok = TextTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.source(), TokenizerSource::TokenizerJson);
}

//! Loading a GGUF file (llama.cpp's format) as an [`Engine`]: the decoder from
//! `model::gguf_load`, the tokenizer from the `tokenizer.ggml.*` vocabulary and
//! `tokenizer.chat_template` ([`TextTokenizer::from_spm_vocab`]).

use std::io::Read;
use std::path::Path;

use tokenizers_mm::{SpmVocab, TextTokenizer};

use super::Engine;
use crate::gguf::{Gguf, Value, MAGIC};
use crate::model::elastic::ElasticOptions;
use crate::model::gguf_load::{gguf_config, load_gguf_model};
use crate::model::quantize::{quantize_model, QuantScheme};
use crate::{Error, Result};

/// Whether `path` is a regular file starting with the GGUF magic (what [`Engine::load`] checks to
/// take a file instead of a checkpoint folder).
pub fn is_gguf_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && u32::from_le_bytes(magic) == MAGIC
}

fn tok_err(path: &Path, message: String) -> Error {
    Error::from(tokenizers_mm::Error::TokenizerFile { path: path.to_path_buf(), message })
}

/// The elements of array `key`, each through `f`; `None` when the key is absent.
fn array<T>(g: &Gguf, key: &str, f: impl Fn(&Value) -> Option<T>) -> Result<Option<Vec<T>>> {
    let bad = || tok_err(g.path(), format!("{key}: not an array of the expected type"));
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array { items, .. }) => items.iter().map(|v| f(v).ok_or_else(bad)).collect::<Result<Vec<T>>>().map(Some),
        Some(_) => Err(bad()),
    }
}

fn id(g: &Gguf, key: &str) -> Option<u32> {
    g.get(key).and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok())
}

/// The tokenizer a GGUF file stores; `None` when it stores none (`tokenizer.ggml.tokens` absent).
///
/// Errors: [`Error::Unsupported`] for a tokenizer model other than `llama` (SentencePiece: what the
/// ERNIE 4.5 converter writes); tokenizer errors for inconsistent arrays or ids.
pub fn gguf_tokenizer(g: &Gguf) -> Result<Option<TextTokenizer>> {
    let Some(pieces) = array(g, "tokenizer.ggml.tokens", |v| v.as_str().map(str::to_string))? else { return Ok(None) };
    let model = g.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("llama");
    if model != "llama" {
        return Err(crate::error::unsupported(
            format!("GGUF tokenizer model {model:?}"),
            "ERNIE 4.5 GGUF files carry a SentencePiece (\"llama\") vocabulary; tokenize elsewhere and pass ids",
        ));
    }
    let n = pieces.len();
    let scores = array(g, "tokenizer.ggml.scores", Value::as_f64)?.map(|s| s.into_iter().map(|x| x as f32).collect()).unwrap_or_else(|| vec![0.0; n]);
    let types = array(g, "tokenizer.ggml.token_type", |v| match *v {
        Value::I32(t) => Some(t),
        _ => v.as_u64().and_then(|t| i32::try_from(t).ok()),
    })?
    .unwrap_or_else(|| vec![1; n]);
    let vocab = SpmVocab {
        pieces,
        scores,
        types,
        bos_id: id(g, "tokenizer.ggml.bos_token_id"),
        eos_id: id(g, "tokenizer.ggml.eos_token_id"),
        unk_id: id(g, "tokenizer.ggml.unknown_token_id"),
        pad_id: id(g, "tokenizer.ggml.padding_token_id"),
        cls_id: id(g, "tokenizer.ggml.cls_token_id"),
        sep_id: id(g, "tokenizer.ggml.seperator_token_id"),
        // llama.cpp's default for a SentencePiece vocabulary without the key.
        add_space_prefix: !matches!(g.get("tokenizer.ggml.add_space_prefix"), Some(Value::Bool(false))),
    };
    let template = g.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);
    Ok(Some(TextTokenizer::from_spm_vocab(&vocab, template, g.path())?))
}

impl Engine {
    /// Loads GGUF file `path` (`ernie4_5` or `ernie4_5-moe`, as llama.cpp's converter and
    /// `llama-quantize` write them; `model/gguf_load.rs`): quantised tensors stay memory-mapped
    /// block views, and `quant` quantises what the file holds dense. No MTP module: the converter
    /// drops it ([`Engine::generate_speculative`] then refuses a fixed draft length).
    ///
    /// Errors: [`Error::Io`], [`Error::Gguf`] (malformed file), [`Error::Config`] (unknown
    /// architecture, missing or mistyped metadata), the tensor errors of
    /// [`load_gguf_model`], tokenizer errors.
    pub fn load_gguf(path: &Path, elastic: &ElasticOptions, quant: Option<QuantScheme>) -> Result<Engine> {
        let g = Gguf::open(path)?;
        let cfg = gguf_config(&g)?;
        let plan = elastic.resolve(&cfg)?;
        let mut model = load_gguf_model(&g, &cfg, &plan)?;
        if let Some(scheme) = quant {
            quantize_model(&mut model, scheme)?;
        }
        let tokenizer = gguf_tokenizer(&g)?;
        let mut eos_ids = model.cfg.eos_token_id.clone();
        if let Some(t) = &tokenizer {
            for id in t.eos_token_ids() {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Engine { model, vl: None, tokenizer, eos_ids, dir: path.to_path_buf(), gpu: None, audio: None, parts: Default::default(), gguf: true })
    }

    /// Whether the model came from a GGUF file.
    pub fn is_gguf(&self) -> bool {
        self.gguf
    }
}

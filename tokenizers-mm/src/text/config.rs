//! Reading `tokenizer_config.json`: special-token strings and the chat template.

use std::path::Path;

use serde_json::Value as Json;

use crate::chat::SpecialTokenStrings;
use crate::error::{Error, Result};

/// Keys of `tokenizer_config.json` that name one special token each. They are also handed to
/// the chat template as variables, as transformers does (`**tokenizer.special_tokens_map`).
const SPECIAL_TOKEN_KEYS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];



pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

/// A token given as `"<s>"` or as a serialized AddedToken `{"content": "<s>", ...}`; `null` → None.
fn token_text(path: &Path, field: &str, value: &Json) -> Result<Option<String>> {
    match value {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        Json::Object(map) => match map.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(config_err(path, field, "object without a string \"content\"")),
        },
        _ => Err(config_err(path, field, "expected a string, an AddedToken object or null")),
    }
}

pub(crate) fn special_token_strings(path: &Path, cfg: &Json) -> Result<SpecialTokenStrings> {
    let map = cfg.as_object().ok_or_else(|| config_err(path, "<root>", "expected a JSON object"))?;
    let mut out = SpecialTokenStrings::default();
    for key in SPECIAL_TOKEN_KEYS {
        if let Some(v) = map.get(key) {
            if let Some(text) = token_text(path, key, v)? {
                out.named.insert(key.to_string(), text);
            }
        }
    }
    if let Some(v) = map.get("additional_special_tokens") {
        let items = match v {
            Json::Null => &[][..],
            Json::Array(items) => items.as_slice(),
            _ => return Err(config_err(path, "additional_special_tokens", "expected an array")),
        };
        for item in items {
            if let Some(text) = token_text(path, "additional_special_tokens", item)? {
                out.additional.push(text);
            }
        }
    }
    Ok(out)
}

/// `chat_template` as a string, or transformers' list form `[{"name", "template"}, …]`
/// (the entry named "default" is used). Absent or null → None.
pub(crate) fn config_chat_template(path: &Path, cfg: &Json) -> Result<Option<String>> {
    match cfg.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(items)) => {
            for item in items {
                if item.get("name").and_then(Json::as_str) == Some("default") {
                    return match item.get("template") {
                        Some(Json::String(s)) => Ok(Some(s.clone())),
                        _ => Err(config_err(path, "chat_template", "\"default\" entry has no string \"template\"")),
                    };
                }
            }
            Err(config_err(path, "chat_template", "list form has no entry named \"default\""))
        }
        Some(_) => Err(config_err(path, "chat_template", "expected a string or a list of {name, template}")),
    }
}

fn config_err(path: &Path, field: &str, problem: &str) -> Error {
    Error::ConfigField { path: path.to_path_buf(), field: field.to_string(), problem: problem.to_string() }
}

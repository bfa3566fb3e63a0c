//! Typed access to config.json keys: every wrong type or missing value becomes an
//! [`crate::Error::Config`] naming the key.

use serde_json::{Map, Value};

use crate::error::config_err;
use crate::Result;

/// Typed access to config keys with errors that name the key.
pub(crate) struct Keys<'a>(pub(crate) &'a Map<String, Value>);

impl Keys<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(config_err(key, format!("expected a string, found {v}"))),
        }
    }

    pub(crate) fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| config_err(key, format!("expected an integer, found {v}"))),
        }
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| config_err(key, format!("expected a non-negative integer, found {v}"))),
        }
    }

    pub(crate) fn usize_alias(&self, keys: &[&str], default: usize) -> Result<usize> {
        match keys.iter().find(|k| !matches!(self.get(k), None | Some(Value::Null))) {
            Some(k) => {
                // The VL remote-code configs use lists ([text, vision]); the text MoE takes the first.
                if let Some(Value::Array(a)) = self.get(k) {
                    return a.first().and_then(Value::as_u64).map(|n| n as usize).ok_or_else(|| config_err(k, "empty or non-integer list"));
                }
                self.usize_or(k, default)
            }
            None => Ok(default),
        }
    }

    pub(crate) fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| config_err(key, format!("expected a number, found {v}"))),
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| config_err(key, format!("expected true/false, found {v}"))),
        }
    }
}

/// A token id or a list of ids (`eos_token_id`); `None` for anything else.
pub(crate) fn ids(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(|n| vec![n]),
        Value::Array(a) => a.iter().map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => None,
    }
}

//! Typed reads of processor config files (`preprocessor_config.json`,
//! `video_preprocessor_config.json`) with errors that name the file and the key; shared by the
//! image and video configs.

use std::path::Path;

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

/// The top-level object of one config file.
pub(crate) struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Json>,
}

impl<'a> Fields<'a> {
    /// Errors: [`Error::ConfigField`] `<root>` when `json` is not an object.
    pub(crate) fn new(path: &'a Path, json: &'a Json) -> Result<Self> {
        match json.as_object() {
            Some(obj) => Ok(Fields { path, obj }),
            None => Err(Error::ConfigField { path: path.to_path_buf(), field: "<root>".into(), problem: "expected a JSON object".into() }),
        }
    }

    /// An [`Error::ConfigField`] for `field` of this file.
    pub(crate) fn err(&self, field: &str, problem: String) -> Error {
        Error::ConfigField { path: self.path.to_path_buf(), field: field.into(), problem }
    }

    /// The raw value of `key`, `None` when absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Json> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A non-negative integer, `None` when absent or null.
    pub(crate) fn opt_uint(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    /// A non-negative integer, `default` when absent or null.
    pub(crate) fn uint(&self, key: &str, default: u64) -> Result<u64> {
        Ok(self.opt_uint(key)?.unwrap_or(default))
    }

    /// `true` / `false`, `default` when absent or null.
    pub(crate) fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, format!("expected true/false, got {v}"))),
        }
    }

    /// The pixel budget `(min_pixels, max_pixels)`: the flat keys, overridden by transformers 5.x's
    /// `size.shortest_edge` / `size.longest_edge` (which hold pixel counts for ERNIE-4.5-VL).
    pub(crate) fn pixel_bounds(&self, min_default: u64, max_default: u64) -> Result<(u64, u64)> {
        let (mut min_pixels, mut max_pixels) = (self.uint("min_pixels", min_default)?, self.uint("max_pixels", max_default)?);
        if let Some(size) = self.get("size") {
            let size = size.as_object().ok_or_else(|| self.err("size", "expected an object".into()))?;
            for (key, slot) in [("shortest_edge", &mut min_pixels), ("longest_edge", &mut max_pixels)] {
                if let Some(v) = size.get(key).filter(|v| !v.is_null()) {
                    *slot = v.as_u64().ok_or_else(|| self.err(&format!("size.{key}"), format!("expected an integer, got {v}")))?;
                }
            }
        }
        Ok((min_pixels, max_pixels))
    }
}

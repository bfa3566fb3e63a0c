//! Reading the small JSON files of a checkpoint (config.json, generation_config.json, the
//! safetensors index): every failure becomes an [`Error`] naming the file.

use std::path::Path;

use crate::{Error, Result};

/// Reads and parses a JSON file into `T`.
///
/// Errors: [`Error::Io`] when the file cannot be read, [`Error::Json`] when it is not valid JSON
/// for `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

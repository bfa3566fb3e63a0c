//! Shared by the parity and robustness tests: where the repository and the media corpus are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (the workspace above this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The licensed media corpus: `$ERNIE_MEDIA_DIR`, else `shared/media` beside the repository.
/// Panics with the reason when it is not there (the tests that use it cannot run without it).
pub fn media_dir() -> PathBuf {
    let dir = match std::env::var_os("ERNIE_MEDIA_DIR") {
        Some(d) => PathBuf::from(d),
        None => root().join("../shared/media"),
    };
    assert!(
        dir.join("LICENSES.md").is_file(),
        "media corpus not found at {} (expected shared/ beside the repository, or set ERNIE_MEDIA_DIR)",
        dir.display()
    );
    dir
}

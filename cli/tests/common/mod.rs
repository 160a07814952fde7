//! Helpers shared by the CLI test binaries.

use std::path::PathBuf;

/// The real model: `$STRATA_MODEL` or `<workspace>/models/gemma-3-270m-q4_k_m.gguf`.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "real model not found at {}: run `cargo xtask fetch-model` (or set STRATA_MODEL)",
        path.display()
    );
    path
}

//! `cargo xtask golden`: regenerates strata-quant's golden vectors with gguf-py.
//!
//! Runs `xtask/golden/gen_golden.py` (needs Python 3 with `gguf` and `numpy`:
//! `pip install gguf`), which writes `quant/tests/data/<format>.bin`, then runs the golden tests
//! against the fresh files. The files are committed, so `cargo test` never needs Python.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs the generator, then `cargo test -p strata-quant golden`.
pub fn run(args: &[String]) -> Result<()> {
    let root = workspace_root();
    let script = root.join("xtask/golden/gen_golden.py");
    let out = root.join("quant/tests/data");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let status = Command::new(&python)
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {python} {} (is Python 3 installed?)", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status}); it needs `pip install gguf numpy`", script.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["test", "-p", "strata-quant", "--test", "tests", "golden"])
        .current_dir(&root)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("golden tests failed against the regenerated vectors in {}", out.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

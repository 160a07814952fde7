//! `cargo xtask golden`: regenerates strata-quant's golden vectors with gguf-py.
//!
//! Runs `xtask/golden/gen_golden.py` (needs Python 3 with `gguf` and `numpy`:
//! `pip install gguf`), which writes `quant/tests/data/<format>.bin`, then runs the golden tests
//! against the fresh files. When the real model is present (`cargo xtask fetch-model`), it also
//! runs `xtask/golden/gen_tensor_fixture.py`, recording gguf-py's dequantization of a few of its
//! tensors in `cli/tests/data/tensor_golden.txt` for the `strata tensor` test. The files are
//! committed, so `cargo test` never needs Python.

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
        .with_context(|| {
            format!(
                "running {python} {} (is Python 3 installed?)",
                script.display()
            )
        })?;
    if !status.success() {
        bail!(
            "{} failed ({status}); it needs `pip install gguf numpy`",
            script.display()
        );
    }
    let model = std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/gemma-3-270m-q4_k_m.gguf"));
    if model.is_file() {
        let script = root.join("xtask/golden/gen_tensor_fixture.py");
        let status = Command::new(&python)
            .arg(&script)
            .arg(&model)
            .arg("--out")
            .arg(root.join("cli/tests/data/tensor_golden.txt"))
            .current_dir(&root)
            .status()
            .with_context(|| format!("running {python} {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
    } else {
        eprintln!(
            "note: {} not found; tensor fixture not regenerated (run `cargo xtask fetch-model`)",
            model.display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["test", "-p", "strata-quant", "--test", "tests", "golden"])
        .current_dir(&root)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!(
            "golden tests failed against the regenerated vectors in {}",
            out.display()
        );
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

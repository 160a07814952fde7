//! `cargo xtask test-serve`: `strata serve` against the official OpenAI Python client.
//!
//! ```text
//! cargo xtask test-serve [--strata BIN] [--model M] [-k NAME]
//! ```
//! 1. A virtual environment at `target/openai-venv` (`python3 -m venv`), reused when it
//!    already imports the `openai` version pinned in `server/tests/requirements.txt`;
//!    otherwise that file is pip-installed into it (PyPI).
//! 2. The release `strata` (`cargo build --release -p strata`), unless `--strata` names one.
//! 3. `python server/tests/openai_client_test.py --strata BIN --model M` with the default
//!    model (fetched first, as `cargo xtask test` does). The script starts and stops its own
//!    servers on 127.0.0.1 and bounds every request and loop in count and time; `-k NAME`
//!    runs only the tests whose name contains NAME. A failing test fails this command.
//!
//! `cargo xtask test` runs the same as its step "strata serve with the OpenAI client".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::{fetch_model, venv};

/// The test script, relative to the workspace root.
const SCRIPT: &str = "server/tests/openai_client_test.py";
/// Its pinned requirements, relative to the workspace root.
const REQUIREMENTS: &str = "server/tests/requirements.txt";

/// `cargo xtask test-serve [--strata BIN] [--model M] [-k NAME]`
pub fn run(args: &[String]) -> Result<()> {
    let mut strata = None;
    let mut model = None;
    let mut filter = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--strata" => strata = Some(PathBuf::from(value()?)),
            "--model" => model = Some(PathBuf::from(value()?)),
            "-k" => filter = Some(value()?.clone()),
            other => bail!("unknown flag `{other}`; accepted: --strata --model -k"),
        }
    }
    let model = match model {
        Some(m) => m,
        None => fetch_model::ensure_model()?,
    };
    let strata = match strata {
        Some(s) => s,
        None => build_strata_release()?,
    };
    run_client_tests(&strata, &model, filter.as_deref())
}

/// The step of `cargo xtask test`: the default model (already fetched by an earlier step),
/// the release `strata` built here.
pub fn run_step(model: &Path) -> Result<()> {
    let strata = build_strata_release()?;
    run_client_tests(&strata, model, None)
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fetch_model::workspace_root().join("target"))
}

/// Builds the release `strata` (`cargo build --release -p strata`) and returns its path.
pub(crate) fn build_strata_release() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("$ cargo build --release -p strata");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "strata"])
        .current_dir(fetch_model::workspace_root())
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "cargo build --release -p strata failed");
    let bin = target_dir().join("release/strata");
    ensure!(bin.is_file(), "built strata not found at {}", bin.display());
    Ok(bin)
}

/// Makes sure `target/openai-venv` exists and holds the pinned `openai`; returns its python.
pub(crate) fn ensure_venv() -> Result<PathBuf> {
    let root = fetch_model::workspace_root();
    venv::ensure(
        &target_dir().join("openai-venv"),
        &root.join(REQUIREMENTS),
        "openai",
    )
}

/// Runs the Python client tests against `strata`; fails when any test fails.
pub fn run_client_tests(strata: &Path, model: &Path, filter: Option<&str>) -> Result<()> {
    ensure!(
        model.is_file(),
        "model {} not found (cargo xtask fetch-model?)",
        model.display()
    );
    let python = ensure_venv()?;
    let root = fetch_model::workspace_root();
    let mut cmd = Command::new(&python);
    cmd.arg(root.join(SCRIPT))
        .arg("--strata")
        .arg(strata)
        .arg("--model")
        .arg(model)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .current_dir(&root);
    if let Some(k) = filter {
        cmd.args(["-k", k]);
    }
    println!(
        "$ {} {SCRIPT} --strata {} --model {}",
        python.display(),
        strata.display(),
        model.display()
    );
    let start = Instant::now();
    let status = cmd.status().context("running the OpenAI client tests")?;
    ensure!(
        status.success(),
        "{SCRIPT} failed ({status}) after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requirements_pin_openai() {
        let text = std::fs::read_to_string(fetch_model::workspace_root().join(REQUIREMENTS))
            .expect("requirements file");
        assert!(
            venv::pinned(&text, "openai").is_some(),
            "{REQUIREMENTS} must pin openai==VERSION"
        );
    }
}

//! `cargo xtask demo`: the main job. Fetches the real model if needed, then generates a greedy
//! continuation of a fixed prompt with `strata generate` (text on stdout, stats on stderr).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fetch_model;

/// The fixed demo prompt (the first reference prompt of `cargo xtask verify`).
const DEMO_PROMPT: &str = "The capital of France is";

/// Runs the demo; extra arguments are passed to `strata generate`.
pub fn run(args: &[String]) -> Result<()> {
    let model = fetch_model::ensure_model()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "strata",
        "--",
        "generate",
    ])
    .arg(&model)
    .args(["-p", DEMO_PROMPT, "-n", "64", "--temp", "0"])
    .args(args)
    .current_dir(fetch_model::workspace_root());
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("`strata generate {}` failed ({status})", model.display());
    }
    Ok(())
}

//! `cargo xtask demo`: the main job. Fetches the real model if needed, then shows it with
//! `strata inspect` (this becomes text generation when the engine lands).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fetch_model;

/// Runs the demo; extra arguments are passed to `strata`.
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
        "inspect",
    ])
    .arg(&model)
    .args(args)
    .current_dir(fetch_model::workspace_root());
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("`strata inspect {}` failed ({status})", model.display());
    }
    Ok(())
}

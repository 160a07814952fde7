//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the cargo-fuzz targets in `fuzz/` and
//! runs each for N seconds (default 5: CI keeps them alive; the 10-minute runs are in
//! fuzz/README.md). Each run starts from a copy of the target's committed seeds in
//! `target/fuzz-smoke/` (libFuzzer writes new inputs into its corpus), and a crash fails the
//! command with libFuzzer's report, the reproducing input left in `fuzz/artifacts/`.
//!
//! Needs the nightly toolchain (installed with rustup when missing) and cargo-fuzz (installed
//! with `cargo install` when missing).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::fetch_model::workspace_root;

/// Every target in fuzz/Cargo.toml.
const TARGETS: [&str; 5] = [
    "gguf_parse",
    "tokenizer",
    "config_toml",
    "budget",
    "model_header",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 5u64;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a value")?;
                seconds = v.parse().with_context(|| format!("--seconds {v}"))?;
            }
            t if TARGETS.contains(&t) => targets.push(t),
            other => bail!("unknown fuzz argument `{other}` (targets: {TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let root = workspace_root();
    ensure_tools()?;
    status(
        Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "build"]),
        "building the fuzz targets",
    )?;
    for t in targets {
        let corpus = root.join("target/fuzz-smoke").join(t);
        let _ = std::fs::remove_dir_all(&corpus);
        std::fs::create_dir_all(&corpus)?;
        copy_dir(&root.join("fuzz/seeds").join(t), &corpus)?;
        println!("fuzz {t}: {seconds} s");
        status(
            Command::new("cargo").current_dir(&root).args([
                "+nightly",
                "fuzz",
                "run",
                t,
                &corpus.to_string_lossy(),
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-timeout=10",
            ]),
            &format!("fuzzing {t}"),
        )?;
    }
    Ok(())
}

/// Nightly and cargo-fuzz, installed when missing.
fn ensure_tools() -> Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        status(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            "installing the nightly toolchain",
        )?;
    }
    let fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz {
        status(
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
            "installing cargo-fuzz",
        )?;
    }
    Ok(())
}

fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let s = cmd
        .status()
        .with_context(|| format!("{what}: starting {cmd:?}"))?;
    ensure!(s.success(), "{what}: {cmd:?} exited with {s}");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))
            .with_context(|| format!("copying {}", e.path().display()))?;
    }
    Ok(())
}

//! `cargo xtask miri`: the layer cache's slot hand-off under Miri, which checks the raw-pointer
//! protocol between the prefetch thread, loaders and readers for data races, use after free
//! and aliasing violations (the concurrent tests of `layer-cache/src/cache.rs`, arena backend
//! over in-memory bytes: Miri runs no mmap or O_DIRECT; `cache::` covers `cache::tests` and the
//! expert slots' `cache::experts::tests`). Installs the nightly `miri` and
//! `rust-src` components with rustup when missing.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::fetch_model::workspace_root;

pub fn run(args: &[String]) -> Result<()> {
    ensure!(args.is_empty(), "miri takes no arguments, got {args:?}");
    let has_miri = Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_miri {
        let s = Command::new("rustup")
            .args([
                "component",
                "add",
                "--toolchain",
                "nightly",
                "miri",
                "rust-src",
            ])
            .status()
            .context("running rustup")?;
        ensure!(s.success(), "rustup component add miri rust-src: {s}");
    }
    let s = Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "+nightly",
            "miri",
            "test",
            "-p",
            "strata-layer-cache",
            "--no-default-features",
            "--features",
            "arena,threads",
            "--lib",
            "cache::",
        ])
        .status()
        .context("running cargo miri")?;
    ensure!(
        s.success(),
        "the layer cache's tests under Miri failed: {s}"
    );
    Ok(())
}

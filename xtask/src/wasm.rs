//! `cargo xtask wasm build|run|verify|big|serve|test-browser`: Strata as a WebAssembly module.
//!
//! ```text
//! cargo xtask wasm build [--target wasm64|wasm32|all]
//! cargo xtask wasm run [MODEL] -p TEXT [-n 64] [--target wasm64|wasm32] [--budget all] [--ctx N]
//!                      [--temp 0] [--top-k 40] [--top-p 0.95] [--min-p 0.05] [--seed S]
//! cargo xtask wasm verify [--model PATH]
//! cargo xtask wasm big [--model PATH] [--steps 3]
//! cargo xtask wasm serve [--port 8000]
//! cargo xtask wasm test-browser [--model PATH]
//! ```
//! - `build`: the toolchain of ../shared/WASM.md — Debian's `rustc-web` and its std source,
//!   downloaded and unpacked into `target/wasm-toolchain` ([`crate::debs`]), nothing installed
//!   system-wide — drives rustup's cargo with `-Zbuild-std` to build `wasm/` (`strata-wasm`)
//!   into `target/wasm/<target>/release/strata_wasm.wasm`.
//! - `run`: the module under wasmtime (the PyPI package, in a venv at `target/wasmtime-venv`,
//!   `wasm/host/strata_host.py`), streaming the text, then a stats line.
//! - `verify`: `cargo xtask verify`'s checks against llama.cpp's reference outputs, run in the
//!   wasm64 module (the real model's six prompts at budget `all`, every synthetic model), plus
//!   logits bit-identical to the native build on its scalar kernels (`STRATA_SIMD=scalar`): at
//!   budget `all` and `min` in wasm64 and at `all` in wasm32 (prompts of at most 64 tokens).
//! - `big`: a model whose arena passes 4 GiB (`gen-model --preset 7b --type q8_0`, 7.2 GB,
//!   generated into `models/` when missing) opened in the wasm64 module at budget `all`, a few
//!   greedy steps with logits bit-identical to native; the wasm32 module must refuse it at open
//!   with a message naming the 4 GiB limit.
//! - `serve` / `test-browser`: the web page (`wasm/web/`), see `wasm_web.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use strata_engine::{Budget, CacheConfig, Engine, EngineConfig, GenerateOptions, SamplerConfig};

use crate::verify::{self, Evaluator, Native};
use crate::{debs, fetch_model, serve_test, venv, wasm_web};

/// A wasm target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `wasm64-unknown-unknown`: Memory64, 64-bit pointers.
    Wasm64,
    /// `wasm32-unknown-unknown`: 4 GiB of memory at most.
    Wasm32,
}

impl Target {
    fn triple(self) -> &'static str {
        match self {
            Target::Wasm64 => "wasm64-unknown-unknown",
            Target::Wasm32 => "wasm32-unknown-unknown",
        }
    }

    fn parse(s: &str) -> Result<Vec<Target>> {
        Ok(match s {
            "wasm64" => vec![Target::Wasm64],
            "wasm32" => vec![Target::Wasm32],
            "all" => vec![Target::Wasm64, Target::Wasm32],
            other => bail!("--target `{other}`: expected wasm64, wasm32 or all"),
        })
    }
}

/// Runs `cargo xtask wasm …`.
pub fn run(args: &[String]) -> Result<()> {
    let Some((sub, rest)) = args.split_first() else {
        bail!("usage: cargo xtask wasm <build|run|verify|big|serve|test-browser> [args]");
    };
    match sub.as_str() {
        "build" => {
            let mut targets = vec![Target::Wasm64, Target::Wasm32];
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--target" => {
                        targets = Target::parse(it.next().context("--target needs a value")?)?
                    }
                    other => bail!("wasm build: unknown argument `{other}`"),
                }
            }
            for t in targets {
                let m = build(t)?;
                println!("{}: {} ({:.1} MB)", t.triple(), m.display(), file_mb(&m));
            }
            Ok(())
        }
        "run" => run_cmd(rest),
        "verify" => verify_cmd(rest),
        "big" => big_cmd(rest),
        "serve" => {
            let mut port = 8000u16;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--port" => {
                        port = it
                            .next()
                            .context("--port needs a value")?
                            .parse()
                            .context("--port")?
                    }
                    other => bail!("wasm serve: unknown argument `{other}`"),
                }
            }
            let module = build(Target::Wasm64)?;
            wasm_web::serve(&module, port)
        }
        "test-browser" => {
            let mut model = fetch_model::model_path();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--model" => model = it.next().context("--model needs a path")?.into(),
                    other => bail!("wasm test-browser: unknown argument `{other}`"),
                }
            }
            browser_test(&model)
        }
        other => {
            bail!("unknown wasm command `{other}` (build, run, verify, big, serve, test-browser)")
        }
    }
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1e6)
}

// ---------------------------------------------------------------------------------------------
// Toolchain and build

/// Debian's `rustc-web` and its std source, unpacked into `target/wasm-toolchain`.
struct Toolchain {
    rustc: PathBuf,
    lib: PathBuf,
    linker: PathBuf,
}

fn toolchain() -> Result<Toolchain> {
    let dir = serve_test::target_dir().join("wasm-toolchain");
    let need = workspace_rust_version()?;
    let tc = unpack_toolchain(&dir)?;
    let have = rustc_version(&tc)?;
    if have >= need {
        return Ok(tc);
    }
    // Stale package lists (or an old unpacked copy) give an older `rustc-web` than the
    // workspace's `rust-version`; Debian's security updates carry newer ones.
    println!(
        "wasm: rustc-web {}.{} is older than the workspace's rust-version {}.{}: \
         refreshing the package lists",
        have.0, have.1, need.0, need.1
    );
    debs::apt_update()?;
    debs::forget(&dir)?;
    let tc = unpack_toolchain(&dir)?;
    let have = rustc_version(&tc)?;
    ensure!(
        have >= need,
        "Debian's rustc-web is {}.{} after `apt-get update`; the workspace needs rust-version {}.{}",
        have.0,
        have.1,
        need.0,
        need.1
    );
    Ok(tc)
}

/// `(major, minor)` of the workspace's `rust-version` (the root `Cargo.toml`).
fn workspace_rust_version() -> Result<(u32, u32)> {
    let path = fetch_model::workspace_root().join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("rust-version"))
        .with_context(|| format!("no rust-version in {}", path.display()))?;
    let value = line.split('"').nth(1).unwrap_or_default();
    parse_version(value).with_context(|| format!("rust-version `{value}` in {}", path.display()))
}

/// `(major, minor)` of `1.96` or `1.96.0` (anything after the minor is ignored).
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.trim().parse().ok()?;
    let minor = it.next()?.trim().parse().ok()?;
    Some((major, minor))
}

/// `(major, minor)` of the unpacked compiler (`rustc 1.96.0 (…)`).
fn rustc_version(tc: &Toolchain) -> Result<(u32, u32)> {
    let out = Command::new(&tc.rustc)
        .arg("--version")
        .env("LD_LIBRARY_PATH", &tc.lib)
        .output()
        .with_context(|| format!("running {} --version", tc.rustc.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed ({})",
        tc.rustc.display(),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(parse_version)
        .with_context(|| format!("unexpected `rustc --version` output: {}", text.trim()))
}

/// Debian's `rustc-web` and `rust-web-src` unpacked under `dir`, with rustup's `rust-lld`.
fn unpack_toolchain(dir: &Path) -> Result<Toolchain> {
    let unpacked = debs::ensure(dir, &["rustc-web", "rust-web-src"])?;
    let rustc = unpacked.root.join("usr/bin/rustc");
    ensure!(
        rustc.is_file(),
        "{} missing after unpacking rustc-web",
        rustc.display()
    );
    let std_src = unpacked.root.join("usr/lib/rustlib/src/rust/library");
    ensure!(
        std_src.exists(),
        "{} missing after unpacking rust-web-src",
        std_src.display()
    );
    // rust-lld from the rustup toolchain that runs cargo (Debian's rustc has none).
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .env_remove("RUSTC")
        .output()
        .context("running `rustc --print sysroot`")?;
    ensure!(out.status.success(), "`rustc --print sysroot` failed");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let linker = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    ensure!(
        linker.is_file(),
        "no rust-lld at {} (rustup's stable toolchain ships it)",
        linker.display()
    );
    Ok(Toolchain {
        rustc,
        lib: unpacked.root.join("usr/lib/x86_64-linux-gnu"),
        linker,
    })
}

/// Builds `strata-wasm` for `target`; returns the module's path.
pub(crate) fn build(target: Target) -> Result<PathBuf> {
    let tc = toolchain()?;
    let root = fetch_model::workspace_root();
    let target_dir = serve_test::target_dir().join("wasm");
    let triple = target.triple();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "$ cargo build -p strata-wasm --release -Zbuild-std=std,panic_abort --target {triple}"
    );
    let t = Instant::now();
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "strata-wasm",
            "--release",
            "-Zbuild-std=std,panic_abort",
        ])
        .args(["--target", triple, "--config"])
        .arg(format!("target.{triple}.linker='{}'", tc.linker.display()))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root)
        .env("RUSTC", &tc.rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("LD_LIBRARY_PATH", &tc.lib)
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo for the wasm build")?;
    ensure!(
        status.success(),
        "wasm build for {triple} failed ({status})"
    );
    let module = target_dir.join(triple).join("release/strata_wasm.wasm");
    ensure!(
        module.is_file(),
        "{} missing after the build",
        module.display()
    );
    println!(
        "built {} in {:.1} s",
        module.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(module)
}

// ---------------------------------------------------------------------------------------------
// The host process

/// The Python that runs the host (`target/wasmtime-venv`, wasmtime from PyPI).
fn host_python() -> Result<PathBuf> {
    venv::ensure(
        &serve_test::target_dir().join("wasmtime-venv"),
        &fetch_model::workspace_root().join("wasm/host/requirements.txt"),
        "wasmtime",
    )
}

fn host_script() -> PathBuf {
    fetch_model::workspace_root().join("wasm/host/strata_host.py")
}

/// The module in `strata_host.py serve`, answering requests on its stdin.
pub(crate) struct WasmHost {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    n_vocab: usize,
    target: Target,
}

impl Drop for WasmHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failed request: the module's error code and message.
#[derive(Debug)]
pub(crate) struct HostError {
    code: i64,
    message: String,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for HostError {}

impl WasmHost {
    /// Starts the host with `module` over `model` (nothing opened yet).
    pub(crate) fn spawn(module: &Path, model: &Path, target: Target) -> Result<WasmHost> {
        let python = host_python()?;
        let mut child = Command::new(&python)
            .arg(host_script())
            .args(["serve", "--module"])
            .arg(module)
            .arg("--model")
            .arg(model)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!("starting {} {}", python.display(), host_script().display())
            })?;
        let stdin = child.stdin.take().context("host stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("host stdout")?);
        Ok(WasmHost {
            child,
            stdin,
            stdout,
            n_vocab: 0,
            target,
        })
    }

    /// Sends one request; the answer's header and payload, or the module's error.
    fn request(&mut self, req: serde_json::Value) -> Result<(serde_json::Value, Vec<u8>)> {
        let cmd = req["cmd"].as_str().unwrap_or("?").to_string();
        writeln!(self.stdin, "{req}").context("writing to the wasm host")?;
        self.stdin.flush()?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading from the wasm host")?;
        ensure!(
            n > 0,
            "the wasm host exited during `{cmd}` (see its stderr above)"
        );
        let head: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("wasm host answer to `{cmd}`: {line:?}"))?;
        let len = head["bytes"].as_u64().context("answer without `bytes`")? as usize;
        let mut payload = vec![0u8; len];
        self.stdout
            .read_exact(&mut payload)
            .with_context(|| format!("reading {len} bytes of the `{cmd}` answer"))?;
        if head["ok"] != serde_json::Value::Bool(true) {
            return Err(HostError {
                code: head["code"].as_i64().unwrap_or(0),
                message: head["error"].as_str().unwrap_or("?").to_string(),
            })
            .with_context(|| format!("{} module, `{cmd}`", self.target.triple()));
        }
        Ok((head, payload))
    }

    /// Opens `model` (or the current one) with `budget`; returns the module's info JSON.
    pub(crate) fn open(&mut self, model: Option<&Path>, budget: &str) -> Result<serde_json::Value> {
        let mut req = serde_json::json!({"cmd": "open", "budget": budget, "n_ctx": 0});
        if let Some(m) = model {
            req["model"] = serde_json::Value::String(m.display().to_string());
        }
        self.request(req)?;
        let (_, info) = self.request(serde_json::json!({"cmd": "info"}))?;
        let info: serde_json::Value = serde_json::from_slice(&info)?;
        self.n_vocab = info["n_vocab"].as_u64().context("info without n_vocab")? as usize;
        Ok(info)
    }

    fn eval(&mut self, ids: &[u32], all: bool) -> Result<(usize, Vec<f32>)> {
        let (head, bytes) =
            self.request(serde_json::json!({"cmd": "eval", "ids": ids, "all": all}))?;
        let rows = head["rows"].as_u64().context("eval answer without rows")? as usize;
        ensure!(
            bytes.len() == rows * self.n_vocab * 4,
            "eval: {} bytes for {rows} rows of {} logits",
            bytes.len(),
            self.n_vocab
        );
        let logits = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((rows, logits))
    }
}

impl Evaluator for WasmHost {
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    fn tokenize(&mut self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        // strata_tokenize's flags: 1 = add BOS/EOS, 2 = parse special-token texts.
        let flags = 1 | if parse_special { 2 } else { 0 };
        let (_, bytes) =
            self.request(serde_json::json!({"cmd": "tokenize", "text": text, "flags": flags}))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn reset(&mut self) -> Result<()> {
        self.request(serde_json::json!({"cmd": "reset"}))?;
        Ok(())
    }

    fn eval_all(
        &mut self,
        ids: &[u32],
        sink: &mut (dyn FnMut(usize, &[f32]) + Send),
    ) -> Result<()> {
        let (rows, logits) = self.eval(ids, true)?;
        ensure!(rows == ids.len(), "eval: {rows} rows for {} ids", ids.len());
        for (i, row) in logits.chunks_exact(self.n_vocab).enumerate() {
            sink(i, row);
        }
        Ok(())
    }

    fn eval_last(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let (rows, logits) = self.eval(ids, false)?;
        ensure!(rows == 1, "eval: {rows} rows for the last position");
        Ok(logits)
    }
}

// ---------------------------------------------------------------------------------------------
// run

fn run_cmd(args: &[String]) -> Result<()> {
    let mut model = None;
    let mut target = Target::Wasm64;
    let mut pass: Vec<String> = Vec::new();
    let mut prompt = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--target" => {
                let t = Target::parse(it.next().context("--target needs a value")?)?;
                ensure!(t.len() == 1, "wasm run: --target wasm64 or wasm32");
                target = t[0];
            }
            "-p" | "--prompt" => prompt = Some(it.next().context("-p needs a text")?.clone()),
            "-n" | "--budget" | "--ctx" | "--temp" | "--top-k" | "--top-p" | "--min-p"
            | "--seed" => {
                pass.push(a.clone());
                pass.push(
                    it.next()
                        .with_context(|| format!("{a} needs a value"))?
                        .clone(),
                );
            }
            s if !s.starts_with('-') && model.is_none() => model = Some(PathBuf::from(s)),
            other => bail!("wasm run: unknown argument `{other}`"),
        }
    }
    let prompt = prompt.context("wasm run needs -p TEXT")?;
    let model = match model {
        Some(m) => m,
        None => fetch_model::ensure_model()?,
    };
    ensure!(model.is_file(), "model {} not found", model.display());
    let module = build(target)?;
    let python = host_python()?;
    let status = Command::new(python)
        .arg(host_script())
        .args(["run", "--module"])
        .arg(&module)
        .arg("--model")
        .arg(&model)
        .args(["-p", &prompt])
        .args(&pass)
        .env("PYTHONUNBUFFERED", "1")
        .status()
        .context("running the wasm host")?;
    ensure!(status.success(), "the wasm run failed ({status})");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// verify

/// Prompts up to this many tokens are compared with native by fingerprint, and rerun at budget
/// `min` and in wasm32.
const SHORT_PROMPT: usize = 64;

/// Makes the native engine use its scalar kernels: the ones the wasm build compiles.
fn force_scalar() {
    // Read once, at the first kernel call; nothing has run yet in this process.
    std::env::set_var("STRATA_SIMD", "scalar");
}

fn verify_cmd(args: &[String]) -> Result<()> {
    let mut model = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(it.next().context("--model needs a path")?)),
            other => bail!("wasm verify: unknown argument `{other}`"),
        }
    }
    force_scalar();
    let model = match model {
        Some(m) => m,
        None => fetch_model::ensure_model()?,
    };
    let root = fetch_model::workspace_root();
    let m64 = build(Target::Wasm64)?;
    let m32 = build(Target::Wasm32)?;
    let refs = verify::load_references(&root.join("xtask/data/reference/gemma3-270m"))?;
    ensure!(
        refs.len() == verify::REAL_PROMPTS,
        "found {} reference prompts, expected {}",
        refs.len(),
        verify::REAL_PROMPTS
    );
    let t0 = Instant::now();
    let mut failures = Vec::new();

    // Native scalar fingerprints: what every wasm run must reproduce bit for bit.
    let engine = Engine::open(&model, EngineConfig::default()).context("opening the model")?;
    let mut native = Native::new(&engine)?;
    // Fingerprints (all positions' logits and 8 greedy steps) of the short prompts: the long
    // one costs minutes of scalar prefill per run and is compared with llama.cpp below.
    let short = |r: &verify::Reference| r.file.token_ids.len() <= SHORT_PROMPT;
    let mut base = Vec::new();
    for r in &refs {
        base.push(if short(r) {
            Some(verify::fingerprint(&mut native, r)?)
        } else {
            None
        });
    }
    drop(native);
    drop(engine);
    println!(
        "native scalar fingerprints of {} prompts in {:.1} s",
        base.iter().flatten().count(),
        t0.elapsed().as_secs_f64()
    );

    println!(
        "\nwasm verify: {} in the wasm64 module against llama.cpp 0c1e57098, bit for bit",
        model.display()
    );
    let mut host = WasmHost::spawn(&m64, &model, Target::Wasm64)?;
    host.open(None, "all")?;
    verify::print_header("prompt");
    let mut total = verify::Totals::default();
    for (r, base) in refs.iter().zip(&base) {
        let row = verify::check_prompt(&mut host, r)?;
        total.add(&row);
        verify::print_row(&r.name, r.file.token_ids.len(), &row);
        if !row.problems.is_empty() {
            failures.push(format!("wasm64 {}: {}", r.name, row.problems.join("; ")));
        }
        if base.is_some() && verify::fingerprint(&mut host, r)? != base.unwrap() {
            failures.push(format!(
                "wasm64 {}: logits differ from the native scalar build",
                r.name
            ));
        }
        host.reset()?;
        let last_only = host.eval_last(&r.file.token_ids)?;
        let full = r
            .last_logits
            .as_ref()
            .context("real references have last logits")?;
        let bad = verify::count_bit_differences(&last_only, full);
        if bad > 0 {
            failures.push(format!(
                "wasm64 {}: last-only prefill: {bad} of {} logits differ from llama.cpp's",
                r.name,
                full.len()
            ));
        }
    }
    total.print(refs.len(), "prompts (wasm64)");

    // Other budgets and the wasm32 build: the same bits as native, on the short prompts.
    println!(
        "\n{} prompts of at most {SHORT_PROMPT} tokens:\n{:<8} {:<8} {:>9} {:>7}",
        refs.iter().filter(|r| short(r)).count(),
        "module",
        "budget",
        "time",
        "logits"
    );
    let mut runs: Vec<(Target, &str)> = vec![(Target::Wasm64, "min")];
    runs.push((Target::Wasm32, "all"));
    for (target, budget) in runs {
        let t = Instant::now();
        let module = if target == Target::Wasm64 { &m64 } else { &m32 };
        let mut h = WasmHost::spawn(module, &model, target)?;
        h.open(None, budget)?;
        let mut same = true;
        for (r, base) in refs.iter().zip(&base) {
            let Some(base) = base else { continue };
            if verify::fingerprint(&mut h, r)? != *base {
                same = false;
                failures.push(format!(
                    "{} {budget} {}: logits differ from the native scalar build",
                    target.triple(),
                    r.name
                ));
            }
        }
        println!(
            "{:<8} {:<8} {:>8.1}s {:>7}",
            format!("{target:?}").to_lowercase(),
            budget,
            t.elapsed().as_secs_f64(),
            if same { "same" } else { "DIFF" }
        );
    }

    // The synthetic models (every architecture; llama and qwen2 in every weight type), in the
    // wasm64 module.
    failures.extend(verify::check_synthetic(&root, &mut |path, check| {
        host.open(Some(path), "all")?;
        check(&mut host)
    })?);

    println!("\n{:.1} s", t0.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!("wasm verify: all checks passed (bit-identical to llama.cpp and to native)");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        bail!("wasm verify: {} check(s) failed", failures.len())
    }
}

// ---------------------------------------------------------------------------------------------
// big: past 4 GiB

/// Where `big` keeps its model.
fn big_model_path() -> PathBuf {
    fetch_model::workspace_root().join("models/synth-7b-llama-q8_0.gguf")
}

/// SHA-256 of the logits of the prompt's last position and of `steps` greedy steps, with the
/// greedy ids.
fn greedy_fingerprint(
    ev: &mut dyn Evaluator,
    ids: &[u32],
    steps: usize,
) -> Result<([u8; 32], Vec<u32>)> {
    let mut h = Sha256::new();
    ev.reset()?;
    let mut logits = ev.eval_last(ids)?;
    let mut out = Vec::new();
    for step in 0..steps {
        for v in &logits {
            h.update(v.to_le_bytes());
        }
        let id = strata_engine::sampler::argmax(&logits);
        out.push(id);
        if step + 1 < steps {
            logits = ev.eval_last(&[id])?;
        }
    }
    Ok((h.finalize().into(), out))
}

fn big_cmd(args: &[String]) -> Result<()> {
    let mut model = None;
    let mut steps = 3usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(it.next().context("--model needs a path")?)),
            "--steps" => {
                steps = it
                    .next()
                    .context("--steps needs a count")?
                    .parse()
                    .context("--steps")?
            }
            other => bail!("wasm big: unknown argument `{other}`"),
        }
    }
    force_scalar();
    let model = match model {
        Some(m) => m,
        None => {
            let p = big_model_path();
            if !p.is_file() {
                use crate::gen_model::{parse_type, write_model, Arch, ModelSpec};
                println!(
                    "generating {} (gen-model --preset 7b --type q8_0)",
                    p.display()
                );
                let t = Instant::now();
                let tmp = p.with_extension("gguf.partial");
                write_model(
                    &ModelSpec::preset("7b", Arch::Llama, parse_type("q8_0")?)?,
                    42,
                    &tmp,
                )?;
                std::fs::rename(&tmp, &p)?;
                println!("generated in {:.1} s", t.elapsed().as_secs_f64());
            }
            p
        }
    };
    let m64 = build(Target::Wasm64)?;
    let m32 = build(Target::Wasm32)?;
    let file_len = std::fs::metadata(&model)?.len();
    println!(
        "wasm big: {} ({:.2} GB), budget all, {steps} greedy steps",
        model.display(),
        file_len as f64 / 1e9
    );

    // The wasm32 module must refuse the model at budget `all`, naming the 4 GiB limit.
    let mut h32 = WasmHost::spawn(&m32, &model, Target::Wasm32)?;
    match h32.open(None, "all") {
        Ok(_) => bail!("the wasm32 module opened a {file_len}-byte model at budget all"),
        Err(e) => {
            let msg = format!("{e:#}");
            println!("wasm32 refuses it: {msg}");
            ensure!(
                msg.contains("4 GiB"),
                "the wasm32 refusal does not name the 4 GiB limit: {msg}"
            );
        }
    }
    drop(h32);

    let t = Instant::now();
    let engine = Engine::open(
        &model,
        EngineConfig {
            cache: CacheConfig {
                budget: Budget::All,
                ..CacheConfig::default()
            },
            ..EngineConfig::default()
        },
    )?;
    let prompt = "Once upon a time";
    let ids = engine.tokenizer().encode(prompt, true, false)?;
    let (native_print, native_ids) = greedy_fingerprint(&mut Native::new(&engine)?, &ids, steps)?;
    drop(engine);
    println!(
        "native (scalar): ids {native_ids:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut h = WasmHost::spawn(&m64, &model, Target::Wasm64)?;
    let info = h.open(None, "all")?;
    let arena = info["budget_bytes"].as_u64().unwrap_or(0);
    println!(
        "wasm64 opened it in {:.1} s: arena {:.2} GiB",
        t.elapsed().as_secs_f64(),
        arena as f64 / (1u64 << 30) as f64
    );
    ensure!(
        arena > 4 << 30,
        "the arena of {arena} bytes does not pass 4 GiB"
    );
    let t = Instant::now();
    let (wasm_print, wasm_ids) = greedy_fingerprint(&mut h, &ids, steps)?;
    println!(
        "wasm64: ids {wasm_ids:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    ensure!(
        wasm_print == native_print && wasm_ids == native_ids,
        "wasm64 logits differ from native on the model past 4 GiB"
    );
    println!("wasm big: logits of {steps} steps bit-identical to native");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// browser

/// The prompt and length of the browser test.
const BROWSER_PROMPT: &str = "The capital of France is";
const BROWSER_TOKENS: usize = 16;

fn browser_test(model: &Path) -> Result<()> {
    let model = if model.is_file() {
        model.to_path_buf()
    } else {
        fetch_model::ensure_model()?
    };
    // The native greedy text, as `strata generate --temp 0` prints it.
    let engine = Engine::open(&model, EngineConfig::default())?;
    let ids = engine.tokenizer().encode(BROWSER_PROMPT, true, false)?;
    let mut session = engine.session()?;
    let mut expected = String::new();
    let generation = session.generate(
        &ids,
        GenerateOptions {
            max_tokens: BROWSER_TOKENS,
            sampler: SamplerConfig::greedy(),
            ..GenerateOptions::default()
        },
    )?;
    for piece in generation {
        expected.push_str(&piece?);
    }
    drop(session);
    drop(engine);
    let module = build(Target::Wasm64)?;
    wasm_web::test_browser(&module, &model, BROWSER_PROMPT, BROWSER_TOKENS, &expected)
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_compare_by_major_then_minor() {
        assert_eq!(parse_version("1.89"), Some((1, 89)));
        assert_eq!(parse_version("1.96.0"), Some((1, 96)));
        assert_eq!(parse_version("1"), None);
        assert_eq!(parse_version("x.1"), None);
        // Debian's 1.85 is older than a workspace needing 1.89; 1.96 is not.
        assert!(parse_version("1.85.0") < parse_version("1.89"));
        assert!(parse_version("1.96.0") >= parse_version("1.89"));
        assert!(parse_version("1.100.0") > parse_version("1.99"));
    }
}

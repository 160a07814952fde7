//! `cargo xtask bench compare`: `strata bench` against a llama.cpp `llama-bench` built outside
//! the repository (see the README's "Benchmarking"), on the same model, sizes and threads.
//!
//! ```text
//! cargo xtask bench compare --llama-bench PATH [--model M] [-p 512] [-n 128] [-t 1,2] [-r 3]
//!                           [--rounds 2] [--llama-args "..."] [--strata-args "..."] [--strata BIN]
//! ```
//! Builds the release `strata` (unless `--strata` names a binary), then runs, per round,
//! `strata bench -o json` and `llama-bench -o json` one after the other, so slow drifts of a
//! shared machine hit both alike. Each test (pp/tg × threads) pools both tools' repetitions
//! over the rounds; the table shows the means ± sample standard deviations and the ratio of
//! the means. llama-bench runs with its defaults (CPU repack on, mmap) plus `--llama-args`.
//! Everything is also written to `bench-out/compare.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One test object of `llama-bench -o json` (the fields used here; llama.cpp 0c1e57098).
#[derive(Debug, Deserialize)]
pub(crate) struct LlamaRecord {
    /// llama.cpp's commit, e.g. `0c1e57098`.
    pub build_commit: String,
    /// The CPU backend's description (the CPU model).
    pub cpu_info: String,
    /// `llama_model_desc`, e.g. `gemma3 270M Q4_K - Medium`.
    pub model_type: String,
    /// Bytes of tensor data.
    pub model_size: u64,
    pub n_threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    pub avg_ts: f64,
    /// Tokens per second of each repetition.
    pub samples_ts: Vec<f64>,
}

/// One test object of `strata bench -o json` (the fields used here).
#[derive(Debug, Deserialize)]
pub(crate) struct StrataRecord {
    pub strata_version: String,
    /// `model name` of /proc/cpuinfo, if it could be read.
    pub cpu_info: Option<String>,
    pub simd_level: String,
    /// The one-token kernel levels calibrated so far in that process (empty where none).
    #[serde(default)]
    pub one_token_kernels: String,
    pub storage_backend: String,
    pub model_size: u64,
    pub n_threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub avg_ts: f64,
    pub samples_ts: Vec<f64>,
    pub bytes_read_per_token: f64,
    pub stall_share: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// A test as both tools name it: prompt tokens, generated tokens, threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    n_prompt: usize,
    n_gen: usize,
    n_threads: usize,
}

impl Key {
    fn name(&self) -> String {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        }
    }
}

struct Options {
    llama_bench: PathBuf,
    model: PathBuf,
    n_prompt: Vec<usize>,
    n_gen: Vec<usize>,
    threads: Vec<usize>,
    repetitions: usize,
    rounds: usize,
    llama_args: Vec<String>,
    strata_args: Vec<String>,
    strata: Option<PathBuf>,
}

/// A comma list of counts given to `flag` (`-p 128,512`).
pub(crate) fn list(flag: &str, v: &str) -> Result<Vec<usize>> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{flag} {v:?}: {s:?} is not a count"))
        })
        .collect()
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse(args: &[String]) -> Result<Options> {
    let root = workspace_root();
    let mut llama_bench = None;
    let mut o = Options {
        llama_bench: PathBuf::new(),
        model: root.join("models/gemma-3-270m-q4_k_m.gguf"),
        n_prompt: vec![512],
        n_gen: vec![128],
        threads: vec![std::thread::available_parallelism().map_or(1, |n| n.get())],
        repetitions: 3,
        rounds: 2,
        llama_args: Vec::new(),
        strata_args: Vec::new(),
        strata: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--llama-bench" => llama_bench = Some(PathBuf::from(value()?)),
            "--model" | "-m" => o.model = PathBuf::from(value()?),
            "-p" => o.n_prompt = list(flag, value()?)?,
            "-n" => o.n_gen = list(flag, value()?)?,
            "-t" => o.threads = list(flag, value()?)?,
            "-r" => o.repetitions = value()?.parse().context("-r")?,
            "--rounds" => o.rounds = value()?.parse().context("--rounds")?,
            "--llama-args" => {
                o.llama_args = value()?.split_whitespace().map(String::from).collect()
            }
            "--strata-args" => {
                o.strata_args = value()?.split_whitespace().map(String::from).collect()
            }
            "--strata" => o.strata = Some(PathBuf::from(value()?)),
            other => bail!(
                "unknown flag `{other}`; accepted: --llama-bench --model -p -n -t -r --rounds \
                 --llama-args --strata-args --strata (--help for details)"
            ),
        }
    }
    o.llama_bench = llama_bench.context(
        "--llama-bench PATH is required: a llama-bench built outside the repository \
         (README, \"Benchmarking\")",
    )?;
    ensure!(
        o.llama_bench.is_file(),
        "llama-bench {} not found",
        o.llama_bench.display()
    );
    ensure!(
        o.model.is_file(),
        "model {} not found (cargo xtask fetch-model?)",
        o.model.display()
    );
    ensure!(o.repetitions >= 1, "-r must be at least 1");
    ensure!(o.rounds >= 1, "--rounds must be at least 1");
    ensure!(
        o.threads.iter().all(|&t| t > 0),
        "-t: thread counts must be at least 1"
    );
    Ok(o)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Builds the release `strata` and returns its path.
fn build_strata() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    println!("building the release strata ...");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-q", "-p", "strata"])
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {cargo} build"))?;
    ensure!(status.success(), "cargo build --release -p strata failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/strata");
    ensure!(bin.is_file(), "built strata not found at {}", bin.display());
    Ok(bin)
}

/// Runs `cmd`, passing its stderr through, and returns its stdout; fails on a non-zero exit.
fn stdout_of(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    ensure!(out.status.success(), "{what} failed: {}", out.status);
    String::from_utf8(out.stdout).with_context(|| format!("{what}: output is not UTF-8"))
}

/// Parses llama-bench's `-o json` output.
pub(crate) fn parse_llama(json: &str) -> Result<Vec<LlamaRecord>> {
    serde_json::from_str(json).context("parsing llama-bench's JSON output")
}

/// Parses `strata bench -o json` output.
pub(crate) fn parse_strata(json: &str) -> Result<Vec<StrataRecord>> {
    serde_json::from_str(json).context("parsing strata bench's JSON output")
}

/// Both tools' results for one test, pooled over the rounds.
#[derive(Debug, Default, Serialize)]
struct Pair {
    test: String,
    n_prompt: usize,
    n_gen: usize,
    n_threads: usize,
    /// Every repetition's t/s, all rounds.
    strata_samples_ts: Vec<f64>,
    llama_samples_ts: Vec<f64>,
    /// Each round's mean t/s.
    strata_round_avg_ts: Vec<f64>,
    llama_round_avg_ts: Vec<f64>,
    strata_avg_ts: f64,
    strata_stddev_ts: f64,
    llama_avg_ts: f64,
    llama_stddev_ts: f64,
    /// `strata_avg_ts / llama_avg_ts`.
    ratio: f64,
    strata_bytes_read_per_token: f64,
    strata_stall_share: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Pairs the rounds' records test by test. Every test must appear once per round on both
/// sides, with the same tests on both: a missing one is an error, not a gap in the table.
fn pair(rounds: &[(Vec<StrataRecord>, Vec<LlamaRecord>)]) -> Result<Vec<Pair>> {
    let mut pairs: BTreeMap<Key, Pair> = BTreeMap::new();
    for (round, (strata, llama)) in rounds.iter().enumerate() {
        let mut seen: BTreeMap<Key, (bool, bool)> = BTreeMap::new();
        for s in strata {
            let key = Key {
                n_prompt: s.n_prompt,
                n_gen: s.n_gen,
                n_threads: s.n_threads,
            };
            let e = seen.entry(key).or_default();
            ensure!(!e.0, "round {}: strata reported {key:?} twice", round + 1);
            e.0 = true;
            let p = pairs.entry(key).or_default();
            p.strata_samples_ts.extend(&s.samples_ts);
            p.strata_round_avg_ts.push(s.avg_ts);
            p.strata_bytes_read_per_token = s.bytes_read_per_token;
            p.strata_stall_share = s.stall_share;
        }
        for l in llama {
            ensure!(
                l.n_depth == 0,
                "llama-bench ran at depth {} (pass no -d)",
                l.n_depth
            );
            let key = Key {
                n_prompt: l.n_prompt,
                n_gen: l.n_gen,
                n_threads: l.n_threads,
            };
            let e = seen.entry(key).or_default();
            ensure!(
                !e.1,
                "round {}: llama-bench reported {key:?} twice",
                round + 1
            );
            e.1 = true;
            let p = pairs.entry(key).or_default();
            p.llama_samples_ts.extend(&l.samples_ts);
            p.llama_round_avg_ts.push(l.avg_ts);
        }
        for (key, (s, l)) in &seen {
            ensure!(
                *s && *l,
                "round {}: {} with {} threads ran only in {}",
                round + 1,
                key.name(),
                key.n_threads,
                if *s { "strata" } else { "llama-bench" }
            );
        }
    }
    let mut out = Vec::new();
    for (key, mut p) in pairs {
        ensure!(
            p.strata_round_avg_ts.len() == rounds.len()
                && p.llama_round_avg_ts.len() == rounds.len(),
            "{} with {} threads is missing from some rounds",
            key.name(),
            key.n_threads
        );
        p.test = key.name();
        p.n_prompt = key.n_prompt;
        p.n_gen = key.n_gen;
        p.n_threads = key.n_threads;
        p.strata_avg_ts = mean(&p.strata_samples_ts);
        p.strata_stddev_ts = stddev(&p.strata_samples_ts);
        p.llama_avg_ts = mean(&p.llama_samples_ts);
        p.llama_stddev_ts = stddev(&p.llama_samples_ts);
        ensure!(
            p.llama_avg_ts > 0.0,
            "{}: llama-bench reported no speed",
            p.test
        );
        p.ratio = p.strata_avg_ts / p.llama_avg_ts;
        out.push(p);
    }
    // pp before tg, then by size and threads (llama-bench's order within a thread count).
    out.sort_by_key(|p| (p.n_prompt == 0, p.n_prompt, p.n_gen, p.n_threads));
    Ok(out)
}

/// The written report.
#[derive(Serialize)]
struct Report<'a> {
    model: String,
    cpu_info: &'a str,
    strata_version: &'a str,
    strata_simd_level: &'a str,
    strata_one_token_kernels: &'a str,
    strata_storage_backend: &'a str,
    strata_args: &'a [String],
    llama_build_commit: &'a str,
    llama_model_type: &'a str,
    llama_args: &'a [String],
    repetitions: usize,
    rounds: usize,
    tests: &'a [Pair],
}

/// `cargo xtask bench compare ...`
/// `--help`'s text.
const USAGE: &str = "\
cargo xtask bench compare --llama-bench PATH [--model M] [-p 512] [-n 128] [-t 1,2] [-r 3]
                          [--rounds 2] [--llama-args \"...\"] [--strata-args \"...\"] [--strata BIN]
  Runs `strata bench` and a llama-bench built outside the repository (README, \"Benchmarking\")
  on the same model, sizes and threads, alternating per round, and prints each ratio.
  --model: default models/gemma-3-270m-q4_k_m.gguf; -t: default all cores
  --strata BIN: a strata binary to run instead of building the release one";

pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let o = parse(args)?;
    let strata = match &o.strata {
        Some(p) => p.clone(),
        None => build_strata()?,
    };
    let (p, n, t, r) = (
        join(&o.n_prompt),
        join(&o.n_gen),
        join(&o.threads),
        o.repetitions.to_string(),
    );
    let mut rounds = Vec::new();
    for round in 1..=o.rounds {
        println!("round {round}/{}: strata bench ...", o.rounds);
        let mut cmd = Command::new(&strata);
        cmd.arg("bench")
            .arg(&o.model)
            .args(["-p", &p, "-n", &n, "-t", &t, "-r", &r, "-o", "json"])
            .args(&o.strata_args);
        let s = parse_strata(&stdout_of(cmd, "strata bench")?)?;
        println!("round {round}/{}: llama-bench ...", o.rounds);
        let mut cmd = Command::new(&o.llama_bench);
        cmd.arg("-m")
            .arg(&o.model)
            .args(["-p", &p, "-n", &n, "-t", &t, "-r", &r, "-o", "json"])
            .args(&o.llama_args);
        let l = parse_llama(&stdout_of(cmd, "llama-bench")?)?;
        rounds.push((s, l));
    }
    let pairs = pair(&rounds)?;
    let (s0, l0) = (&rounds[0].0[0], &rounds[0].1[0]);
    ensure!(
        s0.model_size == l0.model_size,
        "the tools disagree on the model's tensor bytes: strata {} vs llama.cpp {}",
        s0.model_size,
        l0.model_size
    );
    let cpu = s0.cpu_info.as_deref().unwrap_or(&l0.cpu_info);
    // The first round's last record: every calibration that round's process made.
    let kernels = rounds[0]
        .0
        .last()
        .map_or("", |r| r.one_token_kernels.as_str());

    println!();
    println!("model: {} ({})", o.model.display(), l0.model_type);
    println!("CPU: {cpu}");
    println!(
        "strata {} (SIMD {}, storage {}{}) vs llama.cpp {} ({}); {} rounds × {} repetitions, \
         alternating",
        s0.strata_version,
        s0.simd_level,
        s0.storage_backend,
        if o.strata_args.is_empty() {
            String::new()
        } else {
            format!(", {}", o.strata_args.join(" "))
        },
        l0.build_commit,
        if o.llama_args.is_empty() {
            "defaults".to_string()
        } else {
            o.llama_args.join(" ")
        },
        o.rounds,
        o.repetitions
    );
    if !kernels.is_empty() {
        println!("strata one-token kernels (calibrated, first round): {kernels}");
    }
    println!();
    println!("| test | threads | Strata t/s | llama.cpp t/s | Strata / llama.cpp |");
    println!("|---|--:|--:|--:|--:|");
    for p in &pairs {
        println!(
            "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2}× |",
            p.test,
            p.n_threads,
            p.strata_avg_ts,
            p.strata_stddev_ts,
            p.llama_avg_ts,
            p.llama_stddev_ts,
            p.ratio
        );
    }
    let report = Report {
        model: o.model.display().to_string(),
        cpu_info: cpu,
        strata_version: &s0.strata_version,
        strata_simd_level: &s0.simd_level,
        strata_one_token_kernels: kernels,
        strata_storage_backend: &s0.storage_backend,
        strata_args: &o.strata_args,
        llama_build_commit: &l0.build_commit,
        llama_model_type: &l0.model_type,
        llama_args: &o.llama_args,
        repetitions: o.repetitions,
        rounds: o.rounds,
        tests: &pairs,
    };
    let out = workspace_root().join("bench-out");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("compare.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {}", path.display());
    if let Some(rss) = s0.peak_rss_bytes {
        println!(
            "strata peak RSS (whole process, first round): {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of the real llama-bench (llama.cpp 0c1e57098, this repository's README build) on
    /// the Gemma 3 270M model: `-p 8 -n 4 -t 1,2 -r 2 -o json`.
    const LLAMA_SAMPLE: &str = include_str!("../data/llama-bench-sample.json");

    /// `--help` prints the usage and runs nothing (no llama-bench needed); unknown flags fail.
    #[test]
    fn help_runs_nothing() {
        assert!(run(&["--help".to_string()]).is_ok());
        assert!(run(&["-p".to_string(), "8".to_string(), "-h".to_string()]).is_ok());
        let err = match parse(&["--bogus".to_string()]) {
            Ok(_) => panic!("--bogus accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--help"), "{err}");
    }

    #[test]
    fn parses_llama_bench_json() {
        let recs = parse_llama(LLAMA_SAMPLE).unwrap();
        assert_eq!(recs.len(), 4);
        let keys: Vec<(usize, usize, usize)> = recs
            .iter()
            .map(|r| (r.n_prompt, r.n_gen, r.n_threads))
            .collect();
        assert_eq!(keys, vec![(8, 0, 1), (0, 4, 1), (8, 0, 2), (0, 4, 2)]);
        for r in &recs {
            assert_eq!(r.samples_ts.len(), 2);
            assert!(r.avg_ts > 0.0);
            assert!((mean(&r.samples_ts) - r.avg_ts).abs() < 1e-3 * r.avg_ts);
            assert!(!r.build_commit.is_empty());
            assert!(r.model_type.starts_with("gemma3"));
            assert!(r.model_size > 200 << 20);
        }
    }

    #[test]
    fn llama_bench_json_missing_a_field_is_an_error() {
        let broken = LLAMA_SAMPLE.replacen("\"avg_ts\"", "\"avg_ts_renamed\"", 1);
        assert!(parse_llama(&broken).is_err());
    }

    fn strata(n_prompt: usize, n_gen: usize, n_threads: usize, ts: &[f64]) -> StrataRecord {
        StrataRecord {
            strata_version: "0.1.0".into(),
            cpu_info: Some("cpu".into()),
            simd_level: "avx512".into(),
            one_token_kernels: String::new(),
            storage_backend: "mmap".into(),
            model_size: 1,
            n_threads,
            n_prompt,
            n_gen,
            avg_ts: mean(ts),
            samples_ts: ts.to_vec(),
            bytes_read_per_token: 0.0,
            stall_share: 0.0,
            peak_rss_bytes: None,
        }
    }

    fn llama(n_prompt: usize, n_gen: usize, n_threads: usize, ts: &[f64]) -> LlamaRecord {
        LlamaRecord {
            build_commit: "0c1e57098".into(),
            cpu_info: "cpu".into(),
            model_type: "m".into(),
            model_size: 1,
            n_threads,
            n_prompt,
            n_gen,
            n_depth: 0,
            avg_ts: mean(ts),
            samples_ts: ts.to_vec(),
        }
    }

    #[test]
    fn pairs_pool_rounds_and_take_the_ratio_of_means() {
        let rounds = vec![
            (
                vec![strata(0, 4, 1, &[30.0, 50.0]), strata(8, 0, 1, &[100.0])],
                vec![llama(8, 0, 1, &[50.0]), llama(0, 4, 1, &[20.0, 20.0])],
            ),
            (
                vec![strata(8, 0, 1, &[100.0]), strata(0, 4, 1, &[40.0, 40.0])],
                vec![llama(8, 0, 1, &[50.0]), llama(0, 4, 1, &[20.0, 20.0])],
            ),
        ];
        let p = pair(&rounds).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].test, "pp8");
        assert_eq!(p[0].ratio, 2.0);
        assert_eq!(p[1].test, "tg4");
        assert_eq!(p[1].strata_samples_ts, vec![30.0, 50.0, 40.0, 40.0]);
        assert_eq!(p[1].strata_round_avg_ts, vec![40.0, 40.0]);
        assert_eq!(p[1].ratio, 2.0);
    }

    #[test]
    fn a_test_missing_on_one_side_is_an_error() {
        let rounds = vec![(
            vec![strata(8, 0, 1, &[100.0]), strata(0, 4, 1, &[40.0])],
            vec![llama(8, 0, 1, &[50.0])],
        )];
        let e = pair(&rounds).unwrap_err().to_string();
        assert!(e.contains("tg4 with 1 threads ran only in strata"), "{e}");
    }
}

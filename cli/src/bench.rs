//! `strata bench`: prompt and generation throughput, shaped like llama.cpp's `llama-bench`
//! (same flags, test names, markdown columns and JSON/CSV field names where they mean the
//! same), plus Strata's own numbers: bytes read from storage per token, stall share, peak RSS,
//! CPU model and SIMD level.
//!
//! Glue only: the tests themselves are [`strata_engine::bench::run_test`]; this parses the
//! flags, opens one engine per thread count (the engine owns its thread pool; opening is not
//! measured), and prints the results as they come.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use strata_engine::bench::{self, BenchOptions, BenchResult, BenchStep, BenchTest};
use strata_engine::{CacheConfig, Engine, EngineConfig, KvType};
use strata_gguf::file_type_name;
use strata_layer_cache::human_bytes;
use strata_quant::SimdLevel;

use crate::model_opts::{model_path, open_engine, StorageOpts};

/// Output formats (llama-bench's `-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A markdown table, one row per test.
    Md,
    /// One JSON array of test objects.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line (every scalar field, quoted).
    Csv,
}

/// Flags of `strata bench` (llama-bench's names; several values make a cross product).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model file [default: models/gemma-3-270m-q4_k_m.gguf in the workspace].
    pub model: Option<PathBuf>,
    /// Storage backend, budget, prefetch window, config file.
    #[command(flatten)]
    pub storage: StorageOpts,
    /// Prompt sizes of the pp tests, comma-separated (0: no pp test).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generated tokens of the tg tests, comma-separated (0: no tg test).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// A prompt-then-generation test "PP,TG" (llama-bench's -pg); repeatable.
    #[arg(long = "pg", value_name = "PP,TG", value_parser = parse_pg)]
    pub pg: Vec<(usize, usize)>,
    /// Compute threads, comma-separated [default: all cores].
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Measured repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Output format on stdout.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: Format,
    /// Skip the unmeasured warmup run before each test.
    #[arg(long)]
    pub no_warmup: bool,
    /// KV cache element type: f16 (llama-bench's default) or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Seed of the pseudo-random prompt and generation token ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_pg(s: &str) -> Result<(usize, usize), String> {
    let (p, g) = s
        .split_once(',')
        .ok_or_else(|| format!("expected PP,TG (e.g. 512,128), got {s:?}"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|e| format!("{v:?} in {s:?}: {e}"))
    };
    Ok((num(p)?, num(g)?))
}

/// The tests in llama-bench's order: every prompt size, every generation length, every pair.
fn tests(args: &Args) -> Vec<BenchTest> {
    let pp = args
        .n_prompt
        .iter()
        .filter(|&&p| p > 0)
        .map(|&p| BenchTest::prompt(p));
    let tg = args
        .n_gen
        .iter()
        .filter(|&&g| g > 0)
        .map(|&g| BenchTest::gen(g));
    let pg = args
        .pg
        .iter()
        .filter(|&&(p, g)| p + g > 0)
        .map(|&(n_prompt, n_gen)| BenchTest { n_prompt, n_gen });
    pp.chain(tg).chain(pg).collect()
}

/// Runs `strata bench`.
pub fn run(args: Args) -> Result<()> {
    match run_tests(args) {
        // `strata bench | head` closes the pipe early: not an error.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn run_tests(args: Args) -> Result<()> {
    let path = model_path(args.model.as_deref())?;
    let cache = args.storage.cache_config(&path)?;
    let tests = tests(&args);
    if tests.is_empty() {
        bail!("no tests: every -p, -n and --pg value is 0");
    }
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism()
            .context("counting the CPUs for the default -t")?
            .get()]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t 0: the thread count must be at least 1");
    }
    // As llama-bench: a context just long enough for the longest test.
    let n_ctx = tests.iter().map(BenchTest::n_tokens).max().unwrap_or(1);
    let options = BenchOptions {
        repetitions: args.repetitions,
        warmup: !args.no_warmup,
        seed: args.seed,
    };
    let host = Host {
        cpu_info: cpu_model(),
        simd: simd_name(SimdLevel::active()),
    };

    let mut out = Printer::new(args.output);
    let progress = Progress::new(threads.len() * tests.len());
    // The header waits for the first result: a model that does not open prints nothing.
    let mut header_done = false;
    let mut done = 0;
    let mut last: Option<(Summary, Option<u64>)> = None;
    for &n_threads in &threads {
        let t0 = Instant::now();
        let config = EngineConfig {
            cache: cache.clone(),
            n_ctx: Some(n_ctx),
            kv_type: args.kv_type,
            threads: Some(n_threads),
            ..EngineConfig::default()
        };
        let engine = open_engine(&path, config)?;
        let load_s = t0.elapsed().as_secs_f64();
        let model = ModelInfo::new(&engine, &path)?;
        for &test in &tests {
            done += 1;
            let test_time = rfc3339_utc(SystemTime::now());
            let label = format!("{} with {n_threads} thread(s)", test.name());
            let result = bench::run_test(&engine, test, &options, &mut |step| {
                progress.show(done, &label, step)
            })
            .with_context(|| format!("{label} on {}", path.display()))?;
            let run = Run {
                host: &host,
                model: &model,
                engine: &engine,
                cache: &cache,
                kv_type: args.kv_type,
                n_threads,
                load_s,
                test_time,
                result,
                peak_rss: peak_rss_bytes(),
            };
            progress.clear();
            if !header_done {
                out.header()?;
                header_done = true;
            }
            out.test(&run)?;
            last = Some((run.summary(), run.peak_rss));
        }
    }
    progress.clear();
    out.footer(last.as_ref())?;
    Ok(())
}

/// The one-token kernel levels calibrated so far in this process (`strata_quant::calibrations`),
/// as `TYPE/cols level [avx2 T / avx512 T µs]` joined with `; ` (empty where nothing was
/// calibrated: no AVX-512, `STRATA_CALIBRATE=0`, or no one-token product yet).
fn one_token_kernels() -> String {
    strata_quant::calibrations()
        .iter()
        .map(|c| {
            format!(
                "{:?}/{} {} [avx2 {:.2} / avx512 {:.2} µs]",
                c.ty,
                c.cols,
                simd_name(c.chosen),
                c.avx2.as_secs_f64() * 1e6,
                c.avx512.as_secs_f64() * 1e6
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What describes the machine.
struct Host {
    /// `model name` of /proc/cpuinfo (`None` where it cannot be read).
    cpu_info: Option<String>,
    /// The kernels' SIMD level.
    simd: &'static str,
}

fn simd_name(level: SimdLevel) -> &'static str {
    match level {
        SimdLevel::Scalar => "scalar",
        SimdLevel::Neon => "neon",
        SimdLevel::Avx2 => "avx2",
        SimdLevel::Avx512 => "avx512",
    }
}

fn kv_name(t: KvType) -> &'static str {
    match t {
        KvType::F16 => "f16",
        KvType::F32 => "f32",
    }
}

/// The CPU's model name from /proc/cpuinfo (Linux; `None` elsewhere or if absent).
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
}

/// This process's peak resident set size (VmHWM of /proc/self/status) in bytes: the high-water
/// mark of the whole process so far, including engines opened for earlier tests.
fn peak_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// What describes the model, as llama-bench reports it.
struct ModelInfo {
    /// The path as given.
    filename: String,
    /// `<arch> [<size label>] <file type>`, e.g. `gemma3 268M Q4_K_M` (llama.cpp's
    /// `llama_model_desc` spells the size and type its own way).
    model_type: String,
    /// Bytes of tensor data (llama.cpp's `llama_model_size`).
    size: u64,
    /// Number of weights (`llama_model_n_params`).
    n_params: u64,
}

impl ModelInfo {
    fn new(engine: &Engine, path: &Path) -> Result<ModelInfo> {
        let g = engine.layer_cache().gguf();
        let md = g.metadata();
        let mut model_type = engine.config().arch.name().to_string();
        if let Ok(label) = md.get_str("general.size_label") {
            model_type.push(' ');
            model_type.push_str(label);
        }
        if let Ok(ft) = md.get_u32("general.file_type") {
            model_type.push(' ');
            match file_type_name(ft) {
                Some(name) => model_type.push_str(name),
                None => {
                    let _ = write!(model_type, "file type {ft}");
                }
            }
        }
        Ok(ModelInfo {
            filename: path.display().to_string(),
            model_type,
            size: g.tensors().iter().map(|t| t.n_bytes).sum(),
            n_params: g.tensors().iter().map(|t| t.n_elements()).sum(),
        })
    }
}

/// One finished test with everything reported about it.
struct Run<'a> {
    host: &'a Host,
    model: &'a ModelInfo,
    engine: &'a Engine,
    /// The cache configuration the engine was opened with.
    cache: &'a CacheConfig,
    kv_type: KvType,
    n_threads: usize,
    /// Seconds to open the engine that ran the test (and fill an arena).
    load_s: f64,
    test_time: String,
    result: BenchResult,
    peak_rss: Option<u64>,
}

/// A scalar field value.
enum Val {
    Str(String),
    Int(u64),
    Float(f64),
    Null,
}

impl Val {
    fn opt_str(v: Option<&str>) -> Val {
        v.map_or(Val::Null, |s| Val::Str(s.to_string()))
    }

    /// The CSV cell (unquoted).
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => format!("{f:.6}"),
            Val::Null => String::new(),
        }
    }
}

impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Str(v) => s.serialize_str(v),
            Val::Int(v) => s.serialize_u64(*v),
            Val::Float(v) => s.serialize_f64(*v),
            Val::Null => s.serialize_none(),
        }
    }
}

/// What the markdown footer says about the machine and the storage settings.
struct Summary {
    storage: String,
    cpu: String,
    simd: &'static str,
}

impl Run<'_> {
    /// Every scalar field in output order: llama-bench's names first (where they mean the
    /// same), then Strata's own.
    fn fields(&self) -> Vec<(&'static str, Val)> {
        let r = &self.result;
        let stats = self.engine.cache_stats();
        let plan = self.engine.layer_cache().plan();
        vec![
            ("strata_version", Val::Str(env!("CARGO_PKG_VERSION").into())),
            ("cpu_info", Val::opt_str(self.host.cpu_info.as_deref())),
            ("backends", Val::Str("CPU".into())),
            ("model_filename", Val::Str(self.model.filename.clone())),
            ("model_type", Val::Str(self.model.model_type.clone())),
            ("model_size", Val::Int(self.model.size)),
            ("model_n_params", Val::Int(self.model.n_params)),
            ("n_ubatch", Val::Int(strata_engine::DEFAULT_BATCH as u64)),
            ("n_threads", Val::Int(self.n_threads as u64)),
            ("type_k", Val::Str(kv_name(self.kv_type).into())),
            ("type_v", Val::Str(kv_name(self.kv_type).into())),
            ("n_prompt", Val::Int(r.test.n_prompt as u64)),
            ("n_gen", Val::Int(r.test.n_gen as u64)),
            ("n_depth", Val::Int(0)),
            ("test_time", Val::Str(self.test_time.clone())),
            ("avg_ns", Val::Int(r.avg_ns().round() as u64)),
            ("stddev_ns", Val::Int(r.stddev_ns().round() as u64)),
            ("avg_ts", Val::Float(r.avg_ts())),
            ("stddev_ts", Val::Float(r.stddev_ts())),
            // Strata's own.
            ("simd_level", Val::Str(self.host.simd.into())),
            ("one_token_kernels", Val::Str(one_token_kernels())),
            ("storage_backend", Val::Str(self.storage_backend().into())),
            ("budget_bytes", Val::Int(stats.budget_bytes)),
            ("prefetch", Val::Int(self.prefetch() as u64)),
            // How the budget was divided (see `CachePlan`).
            ("resident_layers", Val::Int(plan.resident_layers as u64)),
            ("resident_head_bytes", Val::Int(plan.head_bytes)),
            (
                "row_globals_in_storage_bytes",
                Val::Int(plan.row_globals_bytes),
            ),
            ("load_s", Val::Float(self.load_s)),
            ("bytes_read_per_token", Val::Float(r.bytes_read_per_token())),
            ("stall_share", Val::Float(r.stall_share())),
            ("expert_hit_ratio", Val::Float(r.expert_hit_ratio())),
            (
                "expert_bytes_read_per_token",
                Val::Float(r.expert_bytes_read_per_token()),
            ),
            ("expert_stall_share", Val::Float(r.expert_stall_share())),
            ("peak_rss_bytes", self.peak_rss.map_or(Val::Null, Val::Int)),
        ]
    }

    fn storage_backend(&self) -> &'static str {
        self.cache.backend.name()
    }

    fn prefetch(&self) -> usize {
        self.cache.prefetch
    }

    fn summary(&self) -> Summary {
        let stats = self.engine.cache_stats();
        Summary {
            storage: format!(
                "storage {}, budget {}, prefetch {}",
                self.storage_backend(),
                human_bytes(stats.budget_bytes),
                self.prefetch()
            ),
            cpu: self
                .host
                .cpu_info
                .clone()
                .unwrap_or_else(|| "CPU model unknown".into()),
            simd: self.host.simd,
        }
    }
}

impl Serialize for Run<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.fields();
        let mut map = s.serialize_map(Some(fields.len() + 2))?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("samples_ns", &self.result.samples_ns())?;
        map.serialize_entry("samples_ts", &self.result.samples_ts())?;
        map.end()
    }
}

/// llama-bench's markdown size: MiB below 1 GiB, else GiB.
fn md_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1 << 30 {
        format!("{:.2} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// llama-bench's markdown parameter count: M below a billion, else B.
fn md_params(n: u64) -> String {
    if n < 1_000_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.2} B", n as f64 / 1e9)
    }
}

/// Writes the results to stdout as they come.
struct Printer {
    format: Format,
    out: io::Stdout,
    first: bool,
}

/// The markdown columns: llama-bench's for a CPU run, then Strata's (name, width; negative =
/// left-aligned, as llama-bench's widths).
const MD_COLUMNS: [(&str, i32); 9] = [
    ("model", -30),
    ("size", 10),
    ("params", 10),
    ("backend", -10),
    ("threads", 7),
    ("test", 15),
    ("t/s", 20),
    ("read/token", 12),
    ("stall", 6),
];

/// One markdown table line of already padded cells.
fn md_line(cells: &[String]) -> String {
    let mut line = String::from("|");
    for c in cells {
        line.push(' ');
        line.push_str(c);
        line.push_str(" |");
    }
    line
}

impl Printer {
    fn new(format: Format) -> Printer {
        Printer {
            format,
            out: io::stdout(),
            first: true,
        }
    }

    fn header(&mut self) -> Result<()> {
        let mut o = self.out.lock();
        match self.format {
            Format::Md => {
                let names: Vec<String> = MD_COLUMNS.iter().map(|&(n, w)| pad(n, w)).collect();
                let rules: Vec<String> = MD_COLUMNS
                    .iter()
                    .map(|&(_, w)| {
                        let dashes = "-".repeat(w.unsigned_abs() as usize - 1);
                        format!("{dashes}{}", if w > 0 { ':' } else { '-' })
                    })
                    .collect();
                writeln!(o, "{}", md_line(&names))?;
                writeln!(o, "{}", md_line(&rules))?;
            }
            Format::Json => writeln!(o, "[")?,
            // The CSV header comes with the first test (the names of its fields).
            Format::Jsonl | Format::Csv => {}
        }
        o.flush()?;
        Ok(())
    }

    fn test(&mut self, run: &Run<'_>) -> Result<()> {
        let mut o = self.out.lock();
        match self.format {
            Format::Md => {
                let r = &run.result;
                let cells = [
                    run.model.model_type.clone(),
                    md_size(run.model.size),
                    md_params(run.model.n_params),
                    "CPU".to_string(),
                    run.n_threads.to_string(),
                    r.test.name(),
                    format!("{:.2} ± {:.2}", r.avg_ts(), r.stddev_ts()),
                    human_bytes(r.bytes_read_per_token().round() as u64),
                    format!("{:.1}%", 100.0 * r.stall_share()),
                ];
                let cells: Vec<String> = cells
                    .iter()
                    .zip(MD_COLUMNS)
                    .map(|(c, (_, w))| pad(c, w))
                    .collect();
                writeln!(o, "{}", md_line(&cells))?;
            }
            Format::Json => {
                if !self.first {
                    writeln!(o, ",")?;
                }
                write!(o, "{}", serde_json::to_string_pretty(run)?)?;
            }
            Format::Jsonl => writeln!(o, "{}", serde_json::to_string(run)?)?,
            Format::Csv => {
                let fields = run.fields();
                if self.first {
                    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
                    writeln!(o, "{}", names.join(","))?;
                }
                let cells: Vec<String> = fields.iter().map(|(_, v)| csv_cell(&v.text())).collect();
                writeln!(o, "{}", cells.join(","))?;
            }
        }
        self.first = false;
        o.flush()?;
        Ok(())
    }

    fn footer(&mut self, last: Option<&(Summary, Option<u64>)>) -> Result<()> {
        let mut o = self.out.lock();
        match self.format {
            Format::Md => {
                if let Some((s, rss)) = last {
                    let rss = rss.map_or("unknown".to_string(), human_bytes);
                    writeln!(
                        o,
                        "\nstrata {} | {} | SIMD {} | {} | peak RSS {rss} (whole process)",
                        env!("CARGO_PKG_VERSION"),
                        s.cpu,
                        s.simd,
                        s.storage
                    )?;
                    let kernels = one_token_kernels();
                    if !kernels.is_empty() {
                        writeln!(o, "one-token kernels (calibrated): {kernels}")?;
                    }
                }
            }
            Format::Json => writeln!(o, "\n]")?,
            Format::Jsonl | Format::Csv => {}
        }
        o.flush()?;
        Ok(())
    }
}

/// `s` padded to `|w|` characters, right-aligned for a positive width.
fn pad(s: &str, w: i32) -> String {
    let n = w.unsigned_abs() as usize;
    if w > 0 {
        format!("{s:>n$}")
    } else {
        format!("{s:<n$}")
    }
}

/// A CSV cell as llama-bench writes them: quoted, inner quotes doubled.
fn csv_cell(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The progress line on stderr: rewritten in place on a terminal, one line per step otherwise.
struct Progress {
    tests: usize,
    tty: bool,
}

impl Progress {
    fn new(tests: usize) -> Progress {
        Progress {
            tests,
            tty: io::stderr().is_terminal(),
        }
    }

    fn show(&self, index: usize, label: &str, step: BenchStep) {
        let what = match step {
            BenchStep::Warmup => "warmup".to_string(),
            BenchStep::Repetition { index, of } => format!("repetition {index}/{of}"),
        };
        let line = format!("strata bench: test {index}/{}: {label}: {what}", self.tests);
        let mut e = io::stderr().lock();
        // Progress is best effort: a closed stderr must not fail the benchmark.
        let _ = if self.tty {
            write!(e, "\r\x1b[K{line}")
        } else {
            writeln!(e, "{line}")
        };
        let _ = e.flush();
    }

    fn clear(&self) {
        if self.tty {
            let mut e = io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
        }
    }
}

/// `t` as an RFC 3339 UTC timestamp, `2026-12-03T07:47:07Z` (llama-bench's `test_time`).
fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2024-02-29 12:34:56 UTC (a leap day).
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_283_427);
        assert_eq!(rfc3339_utc(t), "2026-12-03T07:37:07Z");
        // 2100 is not a leap year.
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_400);
        assert_eq!(rfc3339_utc(t), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn markdown_sizes_follow_llama_bench() {
        assert_eq!(md_size(253 << 20), "253.00 MiB");
        assert_eq!(md_size(3 << 30), "3.00 GiB");
        assert_eq!(md_params(268_098_176), "268.10 M");
        assert_eq!(md_params(7_000_000_000), "7.00 B");
    }

    #[test]
    fn pg_pairs_parse() {
        assert_eq!(parse_pg("512,128"), Ok((512, 128)));
        assert!(parse_pg("512").is_err());
        assert!(parse_pg("a,1").is_err());
    }

    #[test]
    fn csv_cells_are_quoted() {
        assert_eq!(csv_cell("a\"b"), "\"a\"\"b\"");
    }
}

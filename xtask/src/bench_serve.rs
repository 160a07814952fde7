//! `cargo xtask bench serve`: aggregate generation throughput of `strata serve` against
//! llama.cpp's `llama-server` under concurrent clients.
//!
//! ```text
//! cargo xtask bench serve [--llama-server PATH] [--model M] [--big MODEL_7B]
//!                         [--clients 1,2,4,8] [--tokens 64] [--requests 2] [--ctx 512]
//!                         [--big-tokens 32] [--big-requests 1] [--big-ctx 256] [--budget 25%]
//!                         [--margin-mib 300] [--threads N] [--out target/bench-serve]
//!                         [--strata BIN] [--strata-args "..."] [--llama-args "..."]
//!                         [--strata-in-cgroup] [--big-only] [--timeout 900]
//! ```
//! For each model (`--model`, default the fetched Gemma 3 270M; then `--big`, e.g. the
//! `cargo xtask gen-model --preset 7b --type q4_k` model at models/synth-7b-llama-q4_k.gguf)
//! and each concurrency `c` of `--clients`, alternately (`--big-only` skips the small model):
//! 1. `strata serve MODEL --parallel c --ctx CTX --threads T --port 0` (the bound port is read
//!    from its `listening on` line), then, with `--llama-server`,
//!    `llama-server -m MODEL --parallel c -c c*CTX --host 127.0.0.1 --port P -t T -cram 0`
//!    (CTX positions per slot like strata's; `-cram 0`: no host-memory prompt cache, and each
//!    request says `cache_prompt: false`, since strata reuses no prompt either);
//! 2. wait for `GET /health`, warm up with one request, then `c` client threads each send
//!    `--requests` streamed `POST /v1/completions` (`stream: true`, `include_usage`) one after
//!    the other: a fixed prompt, greedy (temperature 0), `max_tokens` = `--tokens`. Strata has
//!    no `ignore_eos`, so the prompt is one the model continues for long (and the synthetic 7b,
//!    with random weights, hardly ever emits EOS); generated tokens are counted from the
//!    `usage` of each stream's last chunk;
//! 3. aggregate generated tok/s = sum of `completion_tokens` / wall time of the measured phase
//!    (prefill included); decode tok/s = the sum over clients of (tokens − 1) / (time from the
//!    first streamed chunk to the last), prefill excluded; the server's peak RSS (`VmHWM` of
//!    /proc/PID/status) is read before it is killed.
//!
//! The big model runs strata with `--budget 25%` (it streams with O_DIRECT reads by itself)
//! after dropping the page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`, root), and
//! llama-server (with `--no-repack`: repacked weights would have to be resident) inside a
//! cgroup v1 memory limit of budget + KV(c) + `--margin-mib`, also after dropping the page
//! cache; `--strata-in-cgroup` puts strata in the same limit too. KV(c) is what both
//! allocate: c × CTX positions × layers × (K + V widths) × 2 bytes (f16).
//!
//! Prints a markdown table (per model and c: both speeds, their ratio, strata's scaling over
//! one client, strata's peak RSS next to budget + KV, llama-server's peak), writes
//! `serve.json` and one SVG per model (tok/s against concurrency, both servers) into `--out`.
//! Every request has a time limit (`--timeout` seconds) and every loop a count.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use strata_engine::ModelConfig;
use strata_layer_cache::{human_bytes, Budget};

use crate::{fetch_model, serve_test};

/// A prompt the models continue for a long time (Gemma 270M loops on it without EOS).
const PROMPT: &str = "Once upon a time, in a small village by the sea,";
/// Lines of a server's output kept for error messages.
const LOG_LINES: usize = 200;

struct Options {
    llama_server: Option<PathBuf>,
    model: Option<PathBuf>,
    big: Option<PathBuf>,
    clients: Vec<usize>,
    tokens: usize,
    requests: usize,
    ctx: usize,
    big_tokens: usize,
    big_requests: usize,
    big_ctx: usize,
    budget: Budget,
    margin: u64,
    threads: usize,
    out: PathBuf,
    strata: Option<PathBuf>,
    strata_args: Vec<String>,
    llama_args: Vec<String>,
    strata_in_cgroup: bool,
    big_only: bool,
    timeout: Duration,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        llama_server: None,
        model: None,
        big: None,
        clients: vec![1, 2, 4, 8],
        tokens: 64,
        requests: 2,
        ctx: 512,
        big_tokens: 32,
        big_requests: 1,
        big_ctx: 256,
        budget: Budget::Percent(25.0),
        margin: 300 << 20,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        out: serve_test::target_dir().join("bench-serve"),
        strata: None,
        strata_args: Vec::new(),
        llama_args: Vec::new(),
        strata_in_cgroup: false,
        big_only: false,
        timeout: Duration::from_secs(900),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--strata-in-cgroup" => {
                o.strata_in_cgroup = true;
                continue;
            }
            "--big-only" => {
                o.big_only = true;
                continue;
            }
            _ => {}
        }
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--llama-server" => o.llama_server = Some(PathBuf::from(value()?)),
            "--model" | "-m" => o.model = Some(PathBuf::from(value()?)),
            "--big" => o.big = Some(PathBuf::from(value()?)),
            "--clients" => o.clients = crate::bench_compare::list(flag, value()?)?,
            "--tokens" => o.tokens = value()?.parse().context("--tokens")?,
            "--requests" => o.requests = value()?.parse().context("--requests")?,
            "--ctx" => o.ctx = value()?.parse().context("--ctx")?,
            "--big-tokens" => o.big_tokens = value()?.parse().context("--big-tokens")?,
            "--big-requests" => o.big_requests = value()?.parse().context("--big-requests")?,
            "--big-ctx" => o.big_ctx = value()?.parse().context("--big-ctx")?,
            "--budget" => o.budget = value()?.parse()?,
            "--margin-mib" => o.margin = value()?.parse::<u64>().context("--margin-mib")? << 20,
            "--threads" | "-t" => o.threads = value()?.parse().context("--threads")?,
            "--out" => o.out = PathBuf::from(value()?),
            "--strata" => o.strata = Some(PathBuf::from(value()?)),
            "--strata-args" => {
                o.strata_args = value()?.split_whitespace().map(String::from).collect()
            }
            "--llama-args" => {
                o.llama_args = value()?.split_whitespace().map(String::from).collect()
            }
            "--timeout" => o.timeout = Duration::from_secs(value()?.parse().context("--timeout")?),
            other => bail!(
                "unknown flag `{other}`; accepted: --llama-server --model --big --clients \
                 --tokens --requests --ctx --big-tokens --big-requests --big-ctx --budget \
                 --margin-mib --threads --out --strata --strata-args --llama-args \
                 --strata-in-cgroup --big-only --timeout"
            ),
        }
    }
    ensure!(
        !o.clients.is_empty() && o.clients.iter().all(|&c| c > 0),
        "--clients: counts must be at least 1"
    );
    ensure!(
        o.tokens > 0 && o.big_tokens > 0,
        "--tokens must be at least 1"
    );
    ensure!(
        o.requests > 0 && o.big_requests > 0,
        "--requests must be at least 1"
    );
    ensure!(o.threads > 0, "--threads must be at least 1");
    ensure!(
        !o.big_only || o.big.is_some(),
        "--big-only needs --big MODEL"
    );
    if let Some(l) = &o.llama_server {
        ensure!(l.is_file(), "llama-server {} not found", l.display());
    }
    if let Some(b) = &o.big {
        ensure!(
            b.is_file(),
            "big model {} not found (cargo xtask gen-model --preset 7b --type q4_k)",
            b.display()
        );
    }
    Ok(o)
}

/// One model's settings.
struct ModelRun {
    path: PathBuf,
    big: bool,
    tokens: usize,
    requests: usize,
    ctx: usize,
    /// Bytes of f16 KV one position takes (all layers, K and V).
    kv_per_position: u64,
    budget_bytes: Option<u64>,
    /// Size of the model file.
    model_bytes: u64,
}

/// f16 KV bytes per position of a model: layers × (K width + V width) × 2.
fn kv_per_position(path: &Path) -> Result<u64> {
    let gguf = strata_gguf::Gguf::open(path).with_context(|| format!("{}", path.display()))?;
    let cfg = ModelConfig::from_gguf(&gguf).with_context(|| format!("{}", path.display()))?;
    Ok((cfg.n_layer * (cfg.k_dim() + cfg.v_dim()) * 2) as u64)
}

fn budget_bytes(budget: Budget, file_len: u64) -> u64 {
    match budget {
        Budget::Bytes(b) => b.min(file_len),
        Budget::Percent(p) => (file_len as f64 * p / 100.0).floor() as u64,
        Budget::All | Budget::Min => file_len,
    }
}

/// A server child process with its output drained into a ring of recent lines; killed (and
/// reaped) when dropped, on every path.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .rev()
            .take(25)
            .rev()
            .map(|l| format!("    {l}\n"))
            .collect()
    }

    /// Fails if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its last output:\n{}",
                self.name,
                self.tail()
            );
        }
        Ok(())
    }

    /// The process's peak resident set (`VmHWM`), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Waits until `GET /health` answers 200 (llama-server answers 503 while loading).
    fn wait_healthy(&mut self, agent: &ureq::Agent, limit: Duration) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let deadline = Instant::now() + limit;
        for _ in 0..100_000 {
            self.check_alive()?;
            if let Ok(r) = agent.get(&url).call() {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{} did not answer /health within {:.0} s:\n{}",
            self.name,
            limit.as_secs_f64(),
            self.tail()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drains `r` line by line into `log`; sends the port of a `listening on http://H:P` line.
fn drain(
    r: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    port: Option<mpsc::Sender<u16>>,
) {
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), false) = (&port, sent) {
                if let Some(p) = listening_port(&line) {
                    let _ = tx.send(p);
                    sent = true;
                }
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// The port of strata's `strata serve: listening on http://HOST:PORT ...` line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Spawns `cmd` with both outputs drained; with `want_port`, waits (up to `limit`) for the
/// `listening on` line and returns the port it names, else returns `port`.
fn spawn(
    name: &'static str,
    mut cmd: Command,
    port: Option<u16>,
    limit: Duration,
) -> Result<Server> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let log = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel();
    let want = port.is_none();
    if let Some(out) = child.stdout.take() {
        drain(out, log.clone(), want.then(|| tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        drain(err, log.clone(), want.then(|| tx.clone()));
    }
    drop(tx);
    let mut server = Server {
        name,
        child,
        port: port.unwrap_or(0),
        log,
    };
    if want {
        let deadline = Instant::now() + limit;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => {
                    server.port = p;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    server.check_alive()?;
                    ensure!(
                        Instant::now() < deadline,
                        "{name} printed no `listening on` line within {:.0} s:\n{}",
                        limit.as_secs_f64(),
                        server.tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    server.check_alive()?;
                    bail!(
                        "{name} closed its output before listening:\n{}",
                        server.tail()
                    );
                }
            }
        }
    }
    Ok(server)
}

/// A free port on 127.0.0.1 (for llama-server, which has no `--port 0` report).
/// Prints one server's measurement (or its failure) and splits it into the row's two fields.
fn report(server: &str, result: Result<Measured>) -> (Option<Measured>, Option<String>) {
    match result {
        Ok(r) => {
            println!(
                "  {:.2} tok/s ({} tokens in {:.1} s), decode {:.2} tok/s, peak RSS {}",
                r.tok_s,
                r.completion_tokens,
                r.wall_s,
                r.decode_tok_s,
                r.peak_rss_bytes.map_or("?".into(), gib)
            );
            (Some(r), None)
        }
        Err(e) => {
            eprintln!("  {server} failed: {e:#}");
            (None, Some(format!("{e:#}")))
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Drops the page cache (root only); reports a failure.
fn drop_page_cache() {
    let _ = Command::new("sync").status();
    if std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_err() {
        eprintln!("note: could not drop the page cache (not root?); the run starts warm");
    }
}

/// A cgroup v1 memory limit, removed when dropped (after its processes are gone).
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Result<Cgroup> {
        let root = Path::new("/sys/fs/cgroup/memory");
        ensure!(
            root.join("memory.limit_in_bytes").exists(),
            "no cgroup v1 memory controller at {} (needed to limit llama-server)",
            root.display()
        );
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir(&dir)
                .with_context(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cg = Cgroup { dir };
        std::fs::write(cg.dir.join("memory.limit_in_bytes"), limit.to_string())
            .context("setting memory.limit_in_bytes")?;
        Ok(cg)
    }

    /// `program args...` run inside the cgroup: a shell moves itself in, then execs (same pid).
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
            .arg(&self.dir)
            .arg(program);
        cmd
    }

    fn max_usage(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("memory.max_usage_in_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("note: could not remove {}", self.dir.display());
    }
}

/// What one client request reported.
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Seconds from the first streamed chunk (the first token) to the last one.
    decode_s: f64,
}

/// `POST /v1/completions` with `body` (streamed); the usage from its last chunk and the time
/// its tokens took after the first.
fn complete(agent: &ureq::Agent, url: &str, body: &str) -> Result<Usage> {
    let mut r = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .with_context(|| format!("POST {url}"))?;
    let status = r.status().as_u16();
    if status != 200 {
        let text = r.body_mut().read_to_string().unwrap_or_default();
        bail!("POST {url}: {status}: {text}");
    }
    let reader = BufReader::new(r.body_mut().as_reader());
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut usage: Option<(u64, u64)> = None;
    let mut chunks = 0u64;
    let mut done = false;
    for line in reader.lines() {
        let line = line.context("reading the event stream")?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data.trim() == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(data).with_context(|| format!("event is not JSON: {data}"))?;
        if v.get("error").is_some() {
            bail!("POST {url}: error event: {data}");
        }
        if v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            chunks += 1;
        }
        if let (Some(p), Some(c)) = (
            v["usage"]["prompt_tokens"].as_u64(),
            v["usage"]["completion_tokens"].as_u64(),
        ) {
            usage = Some((p, c));
        }
    }
    ensure!(done, "POST {url}: the event stream ended without [DONE]");
    let (prompt_tokens, completion_tokens) = usage
        .with_context(|| format!("POST {url}: no usage in the event stream ({chunks} chunks)"))?;
    let decode_s = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Usage {
        prompt_tokens,
        completion_tokens,
        decode_s,
    })
}

/// One measured run of one server at one concurrency.
#[derive(Debug, Default, Serialize, Clone)]
struct Measured {
    /// Generated tokens per second over the measured phase, all clients together.
    tok_s: f64,
    /// Decode speed, all clients together: the sum over clients of (tokens after each
    /// request's first) / (time from its first token to its last). Prompt reading is left out.
    decode_tok_s: f64,
    wall_s: f64,
    requests: usize,
    completion_tokens: u64,
    prompt_tokens: u64,
    /// Mean seconds per request.
    mean_latency_s: f64,
    /// The server's `VmHWM`.
    peak_rss_bytes: Option<u64>,
    /// The cgroup's `memory.max_usage_in_bytes`, when it ran in one.
    cgroup_max_usage_bytes: Option<u64>,
    cgroup_limit_bytes: Option<u64>,
}

/// Warm-up, then `c` threads × `requests` requests; the aggregate numbers.
fn measure(
    server: &mut Server,
    agent: &ureq::Agent,
    c: usize,
    requests: usize,
    tokens: usize,
) -> Result<Measured> {
    let url = format!("http://127.0.0.1:{}/v1/completions", server.port);
    let body = |max_tokens: usize| {
        serde_json::json!({
            "model": "bench",
            "prompt": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 42,
            "stream": true,
            "stream_options": {"include_usage": true},
            // llama-server: no reuse of an earlier request's KV (strata has none).
            "cache_prompt": false,
        })
        .to_string()
    };
    complete(agent, &url, &body(tokens.min(4))).context("warm-up request")?;
    let body = body(tokens);
    let start = Instant::now();
    let per_client: Vec<Result<(Usage, f64, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|_| {
                s.spawn(|| -> Result<(Usage, f64, f64)> {
                    let mut sum = Usage {
                        prompt_tokens: 0,
                        completion_tokens: 0,
                        decode_s: 0.0,
                    };
                    let mut decode_tokens = 0.0;
                    let mut latency = 0.0;
                    for _ in 0..requests {
                        let t = Instant::now();
                        let u = complete(agent, &url, &body)?;
                        latency += t.elapsed().as_secs_f64();
                        ensure!(
                            u.completion_tokens as usize <= tokens,
                            "usage.completion_tokens {} > max_tokens {tokens}",
                            u.completion_tokens
                        );
                        sum.prompt_tokens += u.prompt_tokens;
                        sum.completion_tokens += u.completion_tokens;
                        sum.decode_s += u.decode_s;
                        decode_tokens += u.completion_tokens.saturating_sub(1) as f64;
                    }
                    Ok((sum, latency, decode_tokens))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut m = Measured {
        wall_s: wall,
        requests: c * requests,
        ..Measured::default()
    };
    let mut latency = 0.0;
    for r in per_client {
        let (u, l, decode_tokens) =
            r.with_context(|| format!("{} under {c} clients", server.name))?;
        if u.decode_s > 0.0 {
            m.decode_tok_s += decode_tokens / u.decode_s;
        }
        m.completion_tokens += u.completion_tokens;
        m.prompt_tokens += u.prompt_tokens;
        latency += l;
    }
    m.tok_s = m.completion_tokens as f64 / wall;
    m.mean_latency_s = latency / m.requests as f64;
    m.peak_rss_bytes = server.peak_rss();
    server.check_alive()?;
    Ok(m)
}

/// One row: one model at one concurrency.
#[derive(Debug, Serialize)]
struct Row {
    model: String,
    clients: usize,
    tokens: usize,
    requests_per_client: usize,
    ctx_per_slot: usize,
    budget_bytes: Option<u64>,
    model_bytes: u64,
    kv_bytes: u64,
    strata: Option<Measured>,
    strata_error: Option<String>,
    llama: Option<Measured>,
    llama_error: Option<String>,
}

fn run_strata(
    o: &Options,
    strata: &Path,
    m: &ModelRun,
    c: usize,
    agent: &ureq::Agent,
    limit: Option<u64>,
) -> Result<Measured> {
    let cgroup = match (limit, o.strata_in_cgroup) {
        (Some(limit), true) => Some(Cgroup::new(
            &format!("strata-bench-serve-{}-strata", std::process::id()),
            limit,
        )?),
        _ => None,
    };
    let mut cmd = match &cgroup {
        Some(cg) => cg.command(strata),
        None => Command::new(strata),
    };
    cmd.arg("serve")
        .arg(&m.path)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--parallel", &c.to_string(), "--ctx", &m.ctx.to_string()])
        .args(["--threads", &o.threads.to_string()]);
    if m.big {
        cmd.args(["--budget", &o.budget.to_string()]);
    }
    cmd.args(&o.strata_args);
    let mut server = spawn("strata serve", cmd, None, o.timeout)?;
    server.wait_healthy(agent, o.timeout)?;
    let mut r = measure(&mut server, agent, c, m.requests, m.tokens)?;
    r.cgroup_max_usage_bytes = cgroup.as_ref().and_then(Cgroup::max_usage);
    r.cgroup_limit_bytes = cgroup.as_ref().map(|_| limit.unwrap_or(0));
    drop(server);
    Ok(r)
}

fn run_llama(
    o: &Options,
    llama: &Path,
    m: &ModelRun,
    c: usize,
    agent: &ureq::Agent,
    limit: Option<u64>,
) -> Result<Measured> {
    let cgroup = match limit {
        Some(limit) => Some(Cgroup::new(
            &format!("strata-bench-serve-{}-llama", std::process::id()),
            limit,
        )?),
        None => None,
    };
    let mut cmd = match &cgroup {
        Some(cg) => cg.command(llama),
        None => Command::new(llama),
    };
    let port = free_port()?;
    cmd.arg("-m")
        .arg(&m.path)
        .args(["--parallel", &c.to_string(), "-c", &(c * m.ctx).to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-t", &o.threads.to_string(), "-cram", "0"]);
    if m.big {
        cmd.arg("--no-repack");
    }
    cmd.args(&o.llama_args);
    // Its shared libraries sit next to it.
    if let Some(dir) = llama.parent() {
        let mut path = std::ffi::OsString::from(dir);
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("LD_LIBRARY_PATH", path);
    }
    let mut server = spawn("llama-server", cmd, Some(port), o.timeout)?;
    server.wait_healthy(agent, o.timeout)?;
    let mut r = measure(&mut server, agent, c, m.requests, m.tokens)?;
    r.cgroup_max_usage_bytes = cgroup.as_ref().and_then(Cgroup::max_usage);
    r.cgroup_limit_bytes = limit;
    drop(server);
    Ok(r)
}

fn gib(b: u64) -> String {
    human_bytes(b)
}

/// `cargo xtask bench serve ...`
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let strata = match &o.strata {
        Some(p) => p.clone(),
        None => serve_test::build_strata_release()?,
    };
    let mut models = Vec::new();
    if !o.big_only {
        let model = match &o.model {
            Some(m) => m.clone(),
            None => fetch_model::ensure_model()?,
        };
        models.push(ModelRun {
            kv_per_position: kv_per_position(&model)?,
            model_bytes: std::fs::metadata(&model)?.len(),
            path: model,
            big: false,
            tokens: o.tokens,
            requests: o.requests,
            ctx: o.ctx,
            budget_bytes: None,
        });
    }
    if let Some(big) = &o.big {
        let len = std::fs::metadata(big)?.len();
        models.push(ModelRun {
            kv_per_position: kv_per_position(big)?,
            path: big.clone(),
            big: true,
            tokens: o.big_tokens,
            requests: o.big_requests,
            ctx: o.big_ctx,
            budget_bytes: Some(budget_bytes(o.budget, len)),
            model_bytes: len,
        });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(o.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;

    let mut rows = Vec::new();
    for m in &models {
        let name = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for &c in &o.clients {
            let kv = m.kv_per_position * (c * m.ctx) as u64;
            let limit = m.budget_bytes.map(|b| b + kv + o.margin);
            let mut row = Row {
                model: name.clone(),
                clients: c,
                tokens: m.tokens,
                requests_per_client: m.requests,
                ctx_per_slot: m.ctx,
                budget_bytes: m.budget_bytes,
                model_bytes: m.model_bytes,
                kv_bytes: kv,
                strata: None,
                strata_error: None,
                llama: None,
                llama_error: None,
            };
            if m.big {
                drop_page_cache();
            }
            println!("{name}, {c} client(s): strata serve ...");
            (row.strata, row.strata_error) =
                report("strata serve", run_strata(&o, &strata, m, c, &agent, limit));
            if let Some(llama) = &o.llama_server {
                if m.big {
                    drop_page_cache();
                }
                println!(
                    "{name}, {c} client(s): llama-server{} ...",
                    limit.map_or(String::new(), |l| format!(" (cgroup limit {})", gib(l)))
                );
                (row.llama, row.llama_error) =
                    report("llama-server", run_llama(&o, llama, m, c, &agent, limit));
            }
            rows.push(row);
        }
    }

    println!();
    print!("{}", table(&rows));
    for m in &models {
        let name = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mine: Vec<&Row> = rows.iter().filter(|r| r.model == name).collect();
        let stem = name.trim_end_matches(".gguf");
        let path = o.out.join(format!("serve-{stem}.svg"));
        plot(&path, &name, &mine, o.llama_server.is_some())?;
        println!("wrote {}", path.display());
    }
    let json = serde_json::json!({
        "prompt": PROMPT,
        "threads": o.threads,
        "budget": o.budget.to_string(),
        "margin_bytes": o.margin,
        "llama_server": o.llama_server.as_ref().map(|p| p.display().to_string()),
        "llama_args": o.llama_args,
        "strata_args": o.strata_args,
        "rows": rows,
    });
    let path = o.out.join("serve.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", path.display());
    let failed = rows.iter().filter(|r| r.strata_error.is_some()).count();
    ensure!(failed == 0, "strata serve failed in {failed} run(s)");
    Ok(())
}

/// The markdown table of all rows.
fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| model | clients | strata tok/s | llama-server tok/s | strata / llama | \
         strata decode tok/s | llama-server decode tok/s | decode strata / llama | \
         strata decode scaling vs 1 client | strata peak RSS | budget + KV | llama-server peak |\n",
    );
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    for r in rows {
        let one = rows
            .iter()
            .find(|x| x.model == r.model && x.clients == 1)
            .and_then(|x| x.strata.as_ref())
            .map(|m| m.decode_tok_s);
        let st = r.strata.as_ref().map(|m| m.tok_s);
        let ll = r.llama.as_ref().map(|m| m.tok_s);
        let st_d = r.strata.as_ref().map(|m| m.decode_tok_s);
        let ll_d = r.llama.as_ref().map(|m| m.decode_tok_s);
        let fmt = |v: Option<f64>, err: &Option<String>| match (v, err) {
            (Some(v), _) => format!("{v:.2}"),
            (None, Some(_)) => "failed".into(),
            (None, None) => "–".into(),
        };
        let rss = r
            .strata
            .as_ref()
            .and_then(|m| m.peak_rss_bytes)
            .map_or("–".into(), gib);
        let budget = match r.budget_bytes {
            Some(b) => format!("{} + {}", gib(b), gib(r.kv_bytes)),
            None => format!("all {} + {}", gib(r.model_bytes), gib(r.kv_bytes)),
        };
        let llama_peak = r.llama.as_ref().map_or("–".into(), |m| {
            match (m.cgroup_max_usage_bytes, m.cgroup_limit_bytes) {
                (Some(u), Some(l)) => format!(
                    "{} RSS, cgroup {} of {}",
                    m.peak_rss_bytes.map_or("?".into(), gib),
                    gib(u),
                    gib(l)
                ),
                _ => m.peak_rss_bytes.map_or("?".into(), gib),
            }
        });
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.clients,
            fmt(st, &r.strata_error),
            fmt(ll, &r.llama_error),
            ratio(st, ll),
            fmt(st_d, &r.strata_error),
            fmt(ll_d, &r.llama_error),
            ratio(st_d, ll_d),
            ratio(st_d, one),
            rss,
            budget,
            llama_peak
        ));
    }
    s
}

/// tok/s against concurrency, one line per server, as SVG.
fn plot(path: &Path, title: &str, rows: &[&Row], with_llama: bool) -> Result<()> {
    use plotters::prelude::*;

    let pts = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| f(r).map(|v| (r.clients as f64, v)))
            .collect()
    };
    let strata = pts(&|r| r.strata.as_ref().map(|m| m.tok_s));
    let strata_decode = pts(&|r| r.strata.as_ref().map(|m| m.decode_tok_s));
    let (llama, llama_decode) = if with_llama {
        (
            pts(&|r| r.llama.as_ref().map(|m| m.tok_s)),
            pts(&|r| r.llama.as_ref().map(|m| m.decode_tok_s)),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let x_max = rows.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    let y_max = strata
        .iter()
        .chain(&llama)
        .chain(&strata_decode)
        .chain(&llama_decode)
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: tok/s, all clients together"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max + 0.5, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (= --parallel)")
        .y_desc("tok/s")
        .x_labels((x_max as usize + 2).min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (points, color, width, label) in [
        (
            &strata,
            BLUE,
            3,
            "strata serve: generated tok/s (wall clock)",
        ),
        (&strata_decode, BLUE, 1, "strata serve: decode tok/s"),
        (&llama, RED, 3, "llama-server: generated tok/s (wall clock)"),
        (&llama_decode, RED, 1, "llama-server: decode tok/s"),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_port() {
        assert_eq!(
            listening_port("strata serve: listening on http://127.0.0.1:43121 (8 slots)"),
            Some(43121)
        );
        assert_eq!(
            listening_port("strata serve: listening on http://[::1]:8080/v1"),
            Some(8080)
        );
        assert_eq!(listening_port("loading model"), None);
    }

    #[test]
    fn budgets_in_bytes() {
        assert_eq!(budget_bytes(Budget::Percent(25.0), 1000), 250);
        assert_eq!(budget_bytes(Budget::Bytes(5000), 1000), 1000);
        assert_eq!(budget_bytes(Budget::All, 1000), 1000);
    }

    fn measured(tok_s: f64) -> Measured {
        Measured {
            tok_s,
            decode_tok_s: tok_s * 2.0,
            peak_rss_bytes: Some(300 << 20),
            ..Measured::default()
        }
    }

    fn row(clients: usize, s: f64, l: Option<f64>) -> Row {
        Row {
            model: "m.gguf".into(),
            clients,
            tokens: 8,
            requests_per_client: 1,
            ctx_per_slot: 64,
            budget_bytes: None,
            model_bytes: 2 << 20,
            kv_bytes: 1 << 20,
            strata: Some(measured(s)),
            strata_error: None,
            llama: l.map(measured),
            llama_error: None,
        }
    }

    #[test]
    fn table_has_ratio_and_scaling() {
        let rows = vec![row(1, 10.0, Some(20.0)), row(8, 40.0, Some(20.0))];
        let t = table(&rows);
        assert!(
            t.contains("| m.gguf | 1 | 10.00 | 20.00 | 0.50× | 20.00 | 40.00 | 0.50× | 1.00× |"),
            "{t}"
        );
        assert!(
            t.contains("| m.gguf | 8 | 40.00 | 20.00 | 2.00× | 80.00 | 40.00 | 2.00× | 4.00× |"),
            "{t}"
        );
    }

    #[test]
    fn plot_writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("xtask-serve-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let rows = [
            row(1, 10.0, Some(12.0)),
            row(2, 18.0, None),
            row(4, 30.0, Some(20.0)),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        plot(&path, "m.gguf", &refs, true).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("strata serve") && svg.contains("llama-server")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

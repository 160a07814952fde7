//! The web page of the wasm module (`wasm/web/`: `index.html`, `app.js`, `worker.js`).
//!
//! - [`serve`] copies the page and the module into `target/wasm-web/` and serves it on
//!   127.0.0.1 (Python's `http.server`) for a person with a browser.
//! - [`test_browser`] does what a person would in headless Chromium (unpacked from Debian's
//!   package by [`crate::debs`], nothing installed): opens the page, picks the model file in the
//!   file input (`DOM.setFileInputFiles`, so the page gets a real `File`), generates greedily
//!   and compares the text with the native one. It talks the Chrome DevTools Protocol over a
//!   websocket (`tungstenite`), saves a screenshot to `target/wasm-browser/screenshot.png` and
//!   prints the tok/s the page measured.
//!
//! Every child process (the HTTP server, the browser) sits in a guard that kills it on drop, so
//! errors never leave them running; every wait has a time limit.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::fetch_model::workspace_root;
use crate::serve_test::target_dir;

/// The page's files, in `wasm/web/`.
const PAGE_FILES: [&str; 3] = ["index.html", "app.js", "worker.js"];
/// The name the page loads the module under.
const MODULE_NAME: &str = "strata_wasm.wasm";
/// How long the page may take to open the model (`data-state=ready`).
const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// How long the generation may take (`data-state=done`).
const GENERATE_LIMIT: Duration = Duration::from_secs(300);
/// How long one DevTools call may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// How often the page's state is polled.
const POLL: Duration = Duration::from_millis(250);

/// Copies the page and `module` (as [`MODULE_NAME`]) into `dir`, emptied first.
fn stage(module: &Path, dir: &Path) -> Result<()> {
    ensure!(
        module.is_file(),
        "wasm module {} does not exist (build it with `cargo xtask wasm build`)",
        module.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let web = workspace_root().join("wasm").join("web");
    for name in PAGE_FILES {
        let (from, to) = (web.join(name), dir.join(name));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let to = dir.join(MODULE_NAME);
    std::fs::copy(module, &to)
        .with_context(|| format!("copying {} to {}", module.display(), to.display()))?;
    Ok(())
}

/// `python3 -m http.server` serving `dir` on 127.0.0.1:`port` (a static server; the page
/// loads the module with `fetch` + `arrayBuffer`, so the `.wasm` MIME type does not matter).
fn http_server(dir: &Path, port: u16) -> Command {
    let mut c = Command::new("python3");
    c.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(dir)
        .arg(port.to_string());
    c
}

/// Copies the page and `module` into `target/wasm-web/` and serves it on 127.0.0.1:`port`
/// until Ctrl-C.
pub(crate) fn serve(module: &Path, port: u16) -> Result<()> {
    let dir = target_dir().join("wasm-web");
    stage(module, &dir)?;
    println!(
        "wasm: serving {} at http://127.0.0.1:{port}/ (Ctrl-C stops; `?module=NAME.wasm` loads \
         another module copied there)",
        dir.display()
    );
    let status = http_server(&dir, port)
        .status()
        .with_context(|| format!("running python3 -m http.server on port {port}"))?;
    // Ctrl-C ends the server with SIGINT too: that is the normal way out.
    ensure!(
        status.success() || status.code().is_none() || status.code() == Some(130),
        "python3 -m http.server on port {port} failed ({status})"
    );
    Ok(())
}

/// A child process that is killed (with its process group, when it leads one) and reaped on
/// drop.
struct Guard {
    child: Child,
    /// Kill the whole process group (the child was started as its leader).
    group: bool,
    /// Already killed and reaped.
    stopped: bool,
}

impl Guard {
    /// Wraps a started child.
    fn new(child: Child, group: bool) -> Guard {
        Guard {
            child,
            group,
            stopped: false,
        }
    }

    /// Kills and reaps the child (once; later calls do nothing).
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if self.group {
            // Chromium's helpers (zygote, renderers, GPU process) are in the browser's group,
            // whose id is the browser's pid (still ours: it is not reaped yet).
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 for a free port")?;
    Ok(l.local_addr()
        .context("local address of the probe socket")?
        .port())
}

/// A blocking HTTP client for the local servers (no status-as-error, short timeouts).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GETs `url` and returns the body of a 200 answer.
fn get(agent: &ureq::Agent, url: &str) -> Result<String> {
    let mut r = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    ensure!(r.status().as_u16() == 200, "GET {url}: HTTP {}", r.status());
    r.body_mut()
        .read_to_string()
        .with_context(|| format!("reading the body of GET {url}"))
}

/// Starts the static server for `dir` on a free port and waits until it answers.
fn start_server(dir: &Path, agent: &ureq::Agent) -> Result<(Guard, u16)> {
    let port = free_port()?;
    let child = http_server(dir, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server")?;
    let mut guard = Guard::new(child, false);
    let url = format!("http://127.0.0.1:{port}/index.html");
    for _ in 0..100 {
        if let Some(status) = guard.child.try_wait().context("polling the http server")? {
            bail!("python3 -m http.server on port {port} exited at once ({status})");
        }
        if get(agent, &url).is_ok() {
            return Ok((guard, port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("python3 -m http.server on port {port} did not answer {url} within 10 s")
}

/// The last `n` lines of the file at `path` (for error messages; empty if unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Headless Chromium with a fresh profile and a DevTools port.
struct Browser {
    guard: Guard,
    /// The DevTools HTTP/websocket port.
    port: u16,
    /// Its stdout and stderr.
    log: PathBuf,
    /// The fresh profile, removed on drop.
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Kill first (the guard would only after this body), then remove the profile.
        self.guard.stop();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Unpacks Chromium if needed and starts it headless; waits for its DevTools port.
fn launch_browser(out: &Path) -> Result<Browser> {
    let target = target_dir();
    let chromium = crate::debs::ensure(&target.join("wasm-chromium"), &["chromium"])
        .context("unpacking Debian's chromium package")?;
    let root = &chromium.root;
    let bin = root.join("usr/lib/chromium/chromium");
    ensure!(bin.is_file(), "no chromium binary at {}", bin.display());
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    let ld = [
        lib.clone(),
        lib.join("pulseaudio"),
        root.join("usr/lib/chromium"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect::<Vec<_>>()
    .join(":");
    let profile = out.join(format!("profile-{}", std::process::id()));
    if profile.exists() {
        std::fs::remove_dir_all(&profile)
            .with_context(|| format!("clearing {}", profile.display()))?;
    }
    std::fs::create_dir_all(&profile).with_context(|| format!("creating {}", profile.display()))?;
    let log = out.join("chromium.log");
    let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(&bin)
        .env("LD_LIBRARY_PATH", &ld)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            // /dev/shm is small in many containers; Chromium then falls back to /tmp.
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // A hidden headless tab must not be throttled while the worker runs.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--window-size=1000,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .context("cloning the chromium log handle")?,
        )
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut browser = Browser {
        guard: Guard::new(child, true),
        port: 0,
        log,
        profile,
    };
    // Chromium writes the port it picked to DevToolsActivePort (port, then the browser path).
    let port_file = browser.profile.join("DevToolsActivePort");
    for _ in 0..600 {
        if let Some(status) = browser.guard.child.try_wait().context("polling chromium")? {
            bail!(
                "chromium exited at start ({status}); its log {}:\n{}",
                browser.log.display(),
                tail(&browser.log, 30)
            );
        }
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Some(Ok(port)) = text.lines().next().map(|l| l.trim().parse::<u16>()) {
                browser.port = port;
                return Ok(browser);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "chromium wrote no DevTools port to {} within 60 s; its log {}:\n{}",
        port_file.display(),
        browser.log.display(),
        tail(&browser.log, 30)
    )
}

/// A DevTools Protocol session with one page target over a websocket.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Console messages, exceptions and log entries of the page, as they came.
    console: Vec<String>,
}

impl Cdp {
    /// Connects to the first page target of the browser on DevTools port `port`.
    fn connect(agent: &ureq::Agent, port: u16) -> Result<Cdp> {
        let list_url = format!("http://127.0.0.1:{port}/json/list");
        let mut ws_url = None;
        for _ in 0..50 {
            let list: Value = serde_json::from_str(&get(agent, &list_url)?)
                .with_context(|| format!("parsing the JSON of {list_url}"))?;
            ws_url = list.as_array().and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .map(str::to_owned)
            });
            if ws_url.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ws_url = ws_url.with_context(|| format!("no page target in {list_url} within 5 s"))?;
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to the DevTools port {port}"))?;
        let (ws, _) = tungstenite::client::client(ws_url.as_str(), stream)
            .map_err(|e| anyhow::anyhow!("websocket handshake with {ws_url}: {e}"))?;
        // Reads wake up every 200 ms so every wait can check its deadline.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .context("setting the websocket read timeout")?;
        Ok(Cdp {
            ws,
            next_id: 1,
            console: Vec::new(),
        })
    }

    /// Calls `method` and returns its `result`; events that arrive meanwhile are recorded.
    fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .with_context(|| format!("sending DevTools {method}"))?;
        let deadline = Instant::now() + CALL_LIMIT;
        for _ in 0..1_000_000 {
            if Instant::now() > deadline {
                break;
            }
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(e).with_context(|| format!("waiting for DevTools {method}")),
            };
            let v: Value = serde_json::from_str(text.as_str())
                .with_context(|| format!("parsing a DevTools message: {}", text.as_str()))?;
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    bail!("DevTools {method} failed: {err}");
                }
                return Ok(v["result"].clone());
            }
            self.event(&v);
        }
        bail!(
            "DevTools {method} got no answer within {} s",
            CALL_LIMIT.as_secs()
        )
    }

    /// Records console output, exceptions and log entries.
    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        let line = match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| match &x["value"] {
                                Value::String(s) => s.clone(),
                                Value::Null => x["description"].as_str().unwrap_or("").to_owned(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "console.{}: {}",
                    p["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let what = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                format!("exception: {what}")
            }
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                format!(
                    "log.{}: {} {}",
                    e["level"].as_str().unwrap_or("?"),
                    e["text"].as_str().unwrap_or(""),
                    e["url"].as_str().unwrap_or("")
                )
            }
            _ => return,
        };
        self.console.push(line);
    }

    /// Evaluates `expr` in the page and returns its value (promises awaited).
    fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(d) = r.get("exceptionDetails") {
            let what = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("?");
            bail!("evaluating `{expr}` in the page threw: {what}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// The page's console so far, one message a line (or a note that there was none).
    fn console_log(&self) -> String {
        if self.console.is_empty() {
            "(the page logged nothing)".to_owned()
        } else {
            self.console.join("\n")
        }
    }
}

/// The page's `#status`: its `data-state` and text.
fn page_state(cdp: &mut Cdp) -> Result<(String, String)> {
    let v = cdp.eval(
        "(() => { const s = document.getElementById('status'); \
         return s ? [s.dataset.state, s.textContent] : ['', '']; })()",
    )?;
    let field = |i: usize| v[i].as_str().unwrap_or("").to_owned();
    Ok((field(0), field(1)))
}

/// Waits until `#status` says `want`; fails on `error` (with its text) or after `limit`.
fn wait_state(cdp: &mut Cdp, want: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = (String::new(), String::new());
    let polls = limit.as_millis() / POLL.as_millis() + 1;
    for _ in 0..polls {
        last = page_state(cdp)?;
        if last.0 == want {
            return Ok(());
        }
        if last.0 == "error" {
            bail!("the page reported an error: {}", last.1);
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    bail!(
        "the page did not reach state `{want}` within {} s; it is `{}`: {}",
        limit.as_secs(),
        last.0,
        last.1
    )
}

/// The page's steps: open, pick the model, generate; returns the output and the metrics lines.
fn drive(
    cdp: &mut Cdp,
    url: &str,
    model: &Path,
    prompt: &str,
    n: usize,
) -> Result<(String, String)> {
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        cdp.call(domain, json!({}))?;
    }
    cdp.call("Page.navigate", json!({"url": url}))?;
    let t_load = Instant::now();
    wait_state(cdp, "idle", Duration::from_secs(30)).with_context(|| format!("loading {url}"))?;
    // The real user path: a File from the file input (what a person's pick gives the page).
    let doc = cdp.call("DOM.getDocument", json!({}))?;
    let root = doc["root"]["nodeId"]
        .as_u64()
        .context("DOM.getDocument returned no root nodeId")?;
    let node = cdp.call(
        "DOM.querySelector",
        json!({"nodeId": root, "selector": "#file"}),
    )?;
    let node = node["nodeId"]
        .as_u64()
        .filter(|&id| id != 0)
        .context("no #file input on the page")?;
    cdp.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": node, "files": [model.display().to_string()]}),
    )?;
    wait_state(cdp, "ready", OPEN_LIMIT).context("opening the model in the page")?;
    println!(
        "wasm browser: model open after {:.1} s",
        t_load.elapsed().as_secs_f64()
    );
    let set = format!(
        "document.getElementById('prompt').value = {}; \
         document.getElementById('n').value = '{n}'; \
         document.getElementById('temp').value = '0'; \
         document.getElementById('generate').click(); true",
        serde_json::to_string(prompt).context("quoting the prompt")?
    );
    cdp.eval(&set)?;
    let t_gen = Instant::now();
    wait_state(cdp, "done", GENERATE_LIMIT).context("generating in the page")?;
    println!(
        "wasm browser: generated in {:.1} s",
        t_gen.elapsed().as_secs_f64()
    );
    let output = cdp.eval("document.getElementById('output').textContent")?;
    let output = output.as_str().context("#output has no text")?.to_owned();
    let metrics = cdp.eval(
        "document.getElementById('speed').textContent + '\\n' + \
         document.getElementById('stats').textContent",
    )?;
    Ok((output, metrics.as_str().unwrap_or("").to_owned()))
}

/// Saves a PNG screenshot of the page to `path`.
fn screenshot(cdp: &mut Cdp, path: &Path) -> Result<()> {
    let r = cdp.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    )?;
    let data = r["data"]
        .as_str()
        .context("Page.captureScreenshot returned no data")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .context("decoding the screenshot's base64")?;
    std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
}

/// Opens the page in headless Chromium, picks `model` in its file input, generates `n` tokens
/// of `prompt` greedily and checks that the page's output is exactly `expected`. Saves a
/// screenshot to `target/wasm-browser/screenshot.png` and prints the page's tok/s.
pub(crate) fn test_browser(
    module: &Path,
    model: &Path,
    prompt: &str,
    n: usize,
    expected: &str,
) -> Result<()> {
    let t0 = Instant::now();
    let model = model
        .canonicalize()
        .with_context(|| format!("model {}", model.display()))?;
    let out = target_dir().join("wasm-browser");
    let web = out.join("web");
    stage(module, &web)?;
    let agent = agent();
    let (_server, http_port) = start_server(&web, &agent)?;
    let url = format!("http://127.0.0.1:{http_port}/index.html");
    let browser = launch_browser(&out)?;
    println!(
        "wasm browser: chromium up (DevTools port {}), page {url}, model {}",
        browser.port,
        model.display()
    );
    let mut cdp = Cdp::connect(&agent, browser.port)?;
    let result = drive(&mut cdp, &url, &model, prompt, n);
    let shot = out.join("screenshot.png");
    match screenshot(&mut cdp, &shot) {
        Ok(()) => println!("wasm browser: screenshot {}", shot.display()),
        Err(e) => println!("wasm browser: no screenshot: {e:#}"),
    }
    let (output, metrics) = result.with_context(|| {
        format!(
            "browser test of {url}; the page's console:\n{}\nchromium's log {}",
            cdp.console_log(),
            browser.log.display()
        )
    })?;
    ensure!(
        output == expected,
        "the page generated a different text:\n  page:     {output:?}\n  expected: {expected:?}"
    );
    for line in metrics.lines() {
        println!("wasm browser: {line}");
    }
    println!(
        "wasm browser: output matches the native text ({} s in all)",
        t0.elapsed().as_secs()
    );
    let _ = cdp.call("Browser.close", json!({}));
    drop(browser);
    Ok(())
}

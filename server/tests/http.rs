//! The HTTP layer over a tiny synthetic model (engine/tests/common): error JSON and statuses,
//! the API key, body limit, whole and streamed completions, the wait queue's 503, metrics,
//! cancellation of abandoned requests, and shutdown. A plain HTTP/1.1 client over
//! `std::net::TcpStream` talks to a server bound to port 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_engine::{Engine, EngineConfig};
use strata_server::{Server, ServerConfig};

#[path = "../../engine/tests/common/mod.rs"]
mod common;

/// A server on its own thread and runtime; stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Serves the synthetic llama model (256 positions) with `cfg`.
fn start(cfg: ServerConfig) -> TestServer {
    // Written once: rewriting a file another test has mapped would fault that test.
    static MODEL: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let path = MODEL.get_or_init(|| common::write_model("llama", 11));
    let engine = Engine::open(path, EngineConfig::default()).unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(engine, cfg, "127.0.0.1:0").await.unwrap();
            addr_tx.send(server.local_addr()).unwrap();
            server
                .run_until(async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    TestServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        api_key: Some("sekrit".into()),
        ..ServerConfig::new("tiny")
    }
}

/// A response: status, lower-cased head, body (de-chunked).
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts an OpenAI error of `status` and returns its `error` object.
    fn error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(
            self.head.contains("content-type: application/json"),
            "{}",
            self.head
        );
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].is_string(), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e
    }

    /// The `data:` payloads of an SSE body.
    fn events(&self) -> Vec<String> {
        self.body
            .split("\n\n")
            .filter_map(|block| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// Writes one request on a fresh connection.
fn send(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Reads a whole response.
fn read(mut s: TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Resp { status, head, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &Value) -> Resp {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    read(send(addr, method, path, key, &body))
}

fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    call(addr, "POST", path, Some("sekrit"), &body)
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    call(addr, "GET", path, Some("sekrit"), &Value::Null)
}

/// A metric's value from `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// Polls `cond` for up to 20 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn errors_are_openai_json_with_the_right_status() {
    let srv = start(ServerConfig {
        body_limit: 4096,
        ..config()
    });
    let a = srv.addr;
    let chat = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "a b"}]);

    // Malformed JSON and wrong types: 400, never a plain-text 422.
    let r = read(send(a, "POST", chat, Some("sekrit"), b"{not json"));
    assert_eq!(r.error(400)["type"], "invalid_request_error");
    let e = post(a, chat, json!({"messages": "hi"})).error(400);
    assert_eq!(e["param"], "messages");
    let e = post(a, chat, json!({"messages": msgs, "temperature": "hot"})).error(400);
    assert_eq!(e["param"], "temperature");
    let e = post(a, chat, json!({"messages": msgs, "max_tokens": 1.5})).error(400);
    assert_eq!(e["param"], "max_tokens");
    // Out-of-range settings.
    for (field, value) in [
        ("temperature", json!(2.5)),
        ("temperature", json!(-0.1)),
        ("top_p", json!(0)),
        ("top_p", json!(1.5)),
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(0)),
        ("n", json!(2)),
    ] {
        let mut body = json!({"messages": msgs});
        body[field] = value.clone();
        let e = post(a, chat, body).error(400);
        assert_eq!(e["param"], field, "{field} = {value}");
    }
    let e = post(
        a,
        chat,
        json!({"messages": msgs, "stop": ["1", "2", "3", "4", "5"]}),
    )
    .error(400);
    assert_eq!(e["param"], "stop");
    let e = post(a, chat, json!({})).error(400);
    assert_eq!(e["param"], "messages");
    let e = post(
        a,
        chat,
        json!({"messages": [{"role": "tool", "content": "x"}]}),
    )
    .error(400);
    assert_eq!(e["param"], "messages[0].role");
    let e = post(
        a,
        chat,
        json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    )
    .error(400);
    assert_eq!(e["param"], "messages[0].content[0].type");
    let e = post(a, "/v1/completions", json!({"prompt": ["a", "b"]})).error(400);
    assert_eq!(e["param"], "prompt");
    let e = post(a, "/v1/completions", json!({"prompt": [1, 100000]})).error(400);
    assert_eq!(e["param"], "prompt");

    // A prompt that fills the 256 positions: context_length_exceeded, naming the limit.
    let long = ["a"; 300].join(" ");
    let e = post(a, "/v1/completions", json!({"prompt": long})).error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(e["message"].as_str().unwrap().contains("256"), "{e}");

    // Body over the limit: 413.
    let big = json!({"prompt": "a ".repeat(4000)});
    assert_eq!(
        post(a, "/v1/completions", big).error(413)["code"],
        "payload_too_large"
    );

    // Unknown route, wrong method.
    assert_eq!(
        get(a, "/v1/nothing").error(404)["type"],
        "invalid_request_error"
    );
    call(a, "DELETE", "/v1/models", Some("sekrit"), &Value::Null).error(405);
    get(a, chat).error(405);

    // API key: every endpoint but /health.
    let r = call(a, "GET", "/health", None, &Value::Null);
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    for path in ["/v1/models", "/metrics", "/nope"] {
        for key in [None, Some("wrong")] {
            let e = call(a, "GET", path, key, &Value::Null).error(401);
            assert_eq!(e["type"], "authentication_error");
            assert_eq!(e["code"], "invalid_api_key");
        }
    }
    let r = call(a, "POST", chat, Some("wrong"), &json!({"messages": msgs}));
    r.error(401);
}

#[test]
fn models_tokenize_detokenize() {
    let srv = start(config());
    let a = srv.addr;
    let m = get(a, "/v1/models").json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "tiny");
    assert_eq!(m["data"][0]["object"], "model");
    assert_eq!(m["data"][0]["owned_by"], "strata");
    assert!(m["data"][0]["created"].as_u64().unwrap() > 1_600_000_000);

    let t = post(a, "/tokenize", json!({"content": "a b"})).json();
    let ids: Vec<u32> = serde_json::from_value(t["tokens"].clone()).unwrap();
    assert_eq!(ids.len(), 2);
    let t = post(
        a,
        "/tokenize",
        json!({"content": "a b", "add_special": true}),
    )
    .json();
    assert_eq!(t["tokens"][0], 1, "BOS first: {t}");
    let t = post(a, "/tokenize", json!({"content": "a", "with_pieces": true})).json();
    assert_eq!(t["tokens"][0]["id"], ids[0]);
    assert_eq!(t["tokens"][0]["piece"], " a");
    let d = post(a, "/detokenize", json!({"tokens": ids})).json();
    assert_eq!(d["content"], " a b");
    post(a, "/detokenize", json!({"tokens": [1_000_000]})).error(400);
}

#[test]
fn completions_whole_and_streamed() {
    let srv = start(config());
    let a = srv.addr;
    let body = json!({"prompt": "a b c", "max_tokens": 6, "temperature": 0, "model": "x"});
    let r = post(a, "/v1/completions", body.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "x");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let choice = &v["choices"][0];
    let reason = choice["finish_reason"].as_str().unwrap();
    assert!(reason == "length" || reason == "stop", "{v}");
    let usage = &v["usage"];
    assert_eq!(usage["prompt_tokens"], 4); // BOS + 3 letters
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=6).contains(&completion), "{v}");
    assert_eq!(usage["total_tokens"], 4 + completion);
    if reason == "length" {
        assert_eq!(completion, 6);
    }

    // Streamed with the same settings: the same text, then usage, then [DONE].
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let r = post(a, "/v1/completions", sbody);
    assert_eq!(r.status, 200);
    assert!(
        r.head.contains("content-type: text/event-stream"),
        "{}",
        r.head
    );
    let events = r.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (usage_chunk, content) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], v["usage"]);
    let text: String = content
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, choice["text"].as_str().unwrap());
    assert_eq!(
        content.last().unwrap()["choices"][0]["finish_reason"],
        reason
    );
    assert!(content[..content.len() - 1]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert!(content.iter().all(|c| c["id"] == content[0]["id"]));

    // Token-id prompts are taken as they are; a seed makes sampling repeatable.
    let seeded = json!({"prompt": [1, 3, 4, 5], "max_tokens": 8, "seed": 7, "temperature": 1.0});
    let x = post(a, "/v1/completions", seeded.clone()).json();
    let y = post(a, "/v1/completions", seeded).json();
    assert_eq!(x["choices"], y["choices"]);
    assert_eq!(x["usage"]["prompt_tokens"], 4);

    // max_tokens above the room left is clamped; absent = the rest of the context.
    let r = post(
        a,
        "/v1/completions",
        json!({"prompt": (["a"; 250].join(" ")), "max_tokens": 100}),
    )
    .json();
    assert_eq!(r["usage"]["prompt_tokens"], 251, "{r}");
    assert!(
        r["usage"]["completion_tokens"].as_u64().unwrap() <= 256 - 251,
        "{r}"
    );
    // Text the vocabulary cannot encode (no byte tokens here) is the client's error.
    let e = post(a, "/v1/completions", json!({"prompt": "a\u{2603}"})).error(400);
    assert_eq!(e["param"], "prompt");
}

#[test]
fn a_full_queue_is_refused_and_abandoned_requests_are_cancelled() {
    let srv = start(ServerConfig {
        n_slots: 1,
        queue: 1,
        ..config()
    });
    let a = srv.addr;
    let long = json!({"prompt": "a", "stream": true, "temperature": 1.5, "seed": 1}).to_string();
    let long = long.as_bytes();
    // Each attempt: two long generations hold the slot and the queue place; a third request
    // gets 503 at once. (A generation may end early on EOS; then try again.)
    let mut refused = false;
    for attempt in 0..10 {
        let first = send(a, "POST", "/v1/completions", Some("sekrit"), long);
        let second = send(a, "POST", "/v1/completions", Some("sekrit"), long);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5)
            && !(metric(a, "strata_requests_active") == 1.0
                && metric(a, "strata_requests_queued") == 1.0)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = post(
            a,
            "/v1/completions",
            json!({"prompt": "a", "max_tokens": 1}),
        );
        drop((first, second));
        if r.status == 503 {
            let e = r.error(503);
            assert_eq!(e["type"], "server_error");
            assert_eq!(e["code"], "queue_full");
            assert!(r.head.contains("retry-after"), "{}", r.head);
            refused = true;
            break;
        }
        assert_eq!(r.status, 200, "attempt {attempt}: {}", r.body);
    }
    assert!(refused, "never saw the queue full");
    // The dropped connections cancel their sequences and free the slot and queue place.
    wait_for("the slot to be freed", || {
        metric(a, "strata_requests_active") == 0.0 && metric(a, "strata_requests_queued") == 0.0
    });
    assert!(metric(a, "strata_cancelled_total") >= 1.0);
    let r = post(
        a,
        "/v1/completions",
        json!({"prompt": "a", "max_tokens": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Metrics: Prometheus text with the request counters.
    let m = get(a, "/metrics");
    assert!(m.head.contains("content-type: text/plain"), "{}", m.head);
    assert!(m.body.contains("strata_slots_total 1"), "{}", m.body);
    assert!(
        m.body
            .contains("strata_requests_total{endpoint=\"/v1/completions\",status=\"503\"}"),
        "{}",
        m.body
    );
    assert!(metric(a, "strata_generated_tokens_total") > 0.0);
    assert!(metric(a, "strata_steps_total") > 0.0);
}

#[test]
fn shutdown_ends_running_streams_with_an_error_event() {
    let mut srv = start(ServerConfig {
        n_slots: 1,
        ..config()
    });
    let a = srv.addr;
    let body = json!({"prompt": "a", "stream": true, "temperature": 1.5, "seed": 3}).to_string();
    let stream = send(
        a,
        "POST",
        "/v1/completions",
        Some("sekrit"),
        body.as_bytes(),
    );
    wait_for("the request to start", || {
        metric(a, "strata_requests_active") == 1.0
            || metric(a, "strata_generated_tokens_total") > 0.0
    });
    let _ = srv.stop.take().unwrap().send(());
    let r = read(stream);
    let last = r.events().last().cloned().unwrap();
    // Either the generation ended just before the shutdown, or it was cut with an error event.
    if last != "[DONE]" {
        let v: Value = serde_json::from_str(&last).unwrap();
        assert_eq!(v["error"]["type"], "server_error", "{v}");
    }
    srv.thread.take().unwrap().join().unwrap();
}

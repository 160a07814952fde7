//! The axum router: OpenAI endpoints (chat and text completions, streamed as server-sent
//! events or whole), `/v1/models`, llama-server's `/health`, `/tokenize`, `/detokenize`, and
//! `/metrics`; with the API-key check, request logs and counters as middleware.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use strata_engine::{
    ChatMessage, ChatTemplate, Engine, EngineError, GenerateOptions, SamplerConfig, StopReason,
};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{
    ChatChoice, ChatChunk, ChatCompletion, ChatMessageOut, ChunkChoice, Content, Delta,
    DetokenizeRequest, GenerationRequest, ModelCard, ModelList, Piece, Prompt, TextChoice,
    TextCompletion, TokenPiece, TokenizeRequest, Usage,
};
use crate::errors::{ApiError, ApiJson};
use crate::metrics::Metrics;
use crate::worker::{chain, WorkerEvent, WorkerHandle};

/// Most stop strings a request may give (OpenAI's limit).
const MAX_STOP: usize = 4;

/// Top-k when a request gives none (llama-server's default).
const DEFAULT_TOP_K: i64 = 40;

/// What every handler shares.
pub(crate) struct AppState {
    /// The model (tokenizer; the engine thread runs the forward passes).
    pub engine: Arc<Engine>,
    /// The chat template, or why it cannot be used.
    pub template: Result<ChatTemplate, String>,
    /// The engine thread.
    pub worker: WorkerHandle,
    /// Request counters.
    pub metrics: Metrics,
    /// The id `/v1/models` lists.
    pub model_id: String,
    /// Unix seconds when the server started.
    pub created: u64,
    /// The key every endpoint but `/health` requires, if any.
    pub api_key: Option<String>,
}

type Shared = Arc<AppState>;

/// The router over `state`, with request bodies limited to `body_limit` bytes.
pub(crate) fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// Logs each request (method, path, status, latency to the response head) at `info` and
/// counts it by route and status.
async fn observe(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    st.metrics.record(&endpoint, status);
    tracing::info!(
        target: "strata_server::http",
        %method,
        %path,
        status,
        latency_ms = format_args!("{:.1}", t0.elapsed().as_secs_f64() * 1e3),
        "request"
    );
    resp
}

/// With an API key configured, every endpoint but `/health` requires
/// `Authorization: Bearer <key>`.
async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.api_key {
        if req.uri().path() != "/health" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, k)| k.trim());
            if !given.is_some_and(|k| same_key(k.as_bytes(), key.as_bytes())) {
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(req).await
}

/// Compares keys without stopping at the first different byte.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

// ---------------------------------------------------------------------------------------------
// Simple endpoints

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn models(State(st): State<Shared>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: st.model_id.clone(),
            object: "model",
            created: st.created,
            owned_by: "strata",
        }],
    })
}

async fn metrics(State(st): State<Shared>) -> Response {
    let text = st.metrics.render(
        &st.worker.snapshot(),
        st.worker.n_slots(),
        &st.engine.cache_stats(),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn tokenize(
    State(st): State<Shared>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = Arc::clone(&st.engine);
    let tokens = blocking(move || {
        engine
            .tokenizer()
            .encode(&req.content, req.add_special, req.parse_special)
            .map_err(|e| untokenizable(&e, "content"))
            .map(|ids| (ids, req.with_pieces))
    })
    .await?;
    let (ids, with_pieces) = tokens;
    if !with_pieces {
        return Ok(Json(serde_json::json!({ "tokens": ids })));
    }
    let tok = st.engine.tokenizer();
    let pieces: Vec<TokenPiece> = ids
        .iter()
        .map(|&id| {
            let bytes = tok.token_bytes(id);
            let piece = match std::str::from_utf8(bytes) {
                Ok(s) => Piece::Text(s.to_owned()),
                Err(_) => Piece::Bytes(bytes.to_vec()),
            };
            TokenPiece { id, piece }
        })
        .collect();
    Ok(Json(serde_json::json!({ "tokens": pieces })))
}

async fn detokenize(
    State(st): State<Shared>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tok = st.engine.tokenizer();
    check_ids(&req.tokens, tok.n_vocab(), "tokens")?;
    // llama-server's: the pieces of the tokens concatenated, special tokens as their text.
    let mut bytes = Vec::new();
    for &id in &req.tokens {
        bytes.extend_from_slice(tok.token_bytes(id));
    }
    Ok(Json(
        serde_json::json!({ "content": String::from_utf8_lossy(&bytes) }),
    ))
}

/// Text the tokenizer cannot encode (a character with no token and no byte fallback in this
/// vocabulary) is a 400 about `param`.
fn untokenizable(e: &dyn std::error::Error, param: &str) -> ApiError {
    ApiError::invalid(
        format!("The text cannot be tokenized: {}", chain(e)),
        Some(param),
    )
}

/// Ids outside the vocabulary are a 400 about `param`.
fn check_ids(ids: &[u32], n_vocab: usize, param: &str) -> Result<(), ApiError> {
    match ids.iter().find(|&&id| id as usize >= n_vocab) {
        Some(id) => Err(ApiError::invalid(
            format!("Token id {id} is out of range (the vocabulary has {n_vocab} tokens)."),
            Some(param),
        )),
        None => Ok(()),
    }
}

/// Runs CPU work (tokenizing, rendering a template) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::server(format!("A worker task failed: {e}")))?
}

// ---------------------------------------------------------------------------------------------
// Completions

/// The request's generation settings, checked.
#[derive(Debug)]
struct Settings {
    /// Requested completion limit (clamped to the context later).
    max_tokens: Option<usize>,
    sampler: SamplerConfig,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// The `model` echoed in responses.
    model: String,
}

/// Checks and defaults the sampling and output fields: OpenAI's defaults (temperature 1,
/// top-p 1, no min-p/penalty; a fresh seed when none is given) plus llama-server's top-k 40,
/// which keeps sampling to 40 candidates instead of sorting the whole vocabulary every token
/// (`top_k: 0` asks for the whole vocabulary).
fn settings(req: &GenerationRequest, default_model: &str) -> Result<Settings, ApiError> {
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::invalid(
                format!("Only n = 1 is supported (got {n})."),
                Some("n"),
            ));
        }
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            format!("temperature must be between 0 and 2 (got {temperature})."),
            Some("temperature"),
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            format!("top_p must be greater than 0 and at most 1 (got {top_p})."),
            Some("top_p"),
        ));
    }
    let top_k = req.top_k.unwrap_or(DEFAULT_TOP_K);
    if top_k < 0 {
        return Err(ApiError::invalid(
            format!("top_k must be at least 0 (got {top_k})."),
            Some("top_k"),
        ));
    }
    let min_p = req.min_p.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(ApiError::invalid(
            format!("min_p must be between 0 and 1 (got {min_p})."),
            Some("min_p"),
        ));
    }
    let repeat_penalty = req.repeat_penalty.unwrap_or(1.0);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
        return Err(ApiError::invalid(
            format!("repeat_penalty must be greater than 0 (got {repeat_penalty})."),
            Some("repeat_penalty"),
        ));
    }
    let seed = match &req.seed {
        None => random_u64(),
        Some(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|v| v as u64))
            .ok_or_else(|| {
                ApiError::invalid(format!("seed must be an integer (got {n})."), Some("seed"))
            })?,
    };
    let (max_tokens, max_tokens_param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_tokens = match max_tokens {
        None => None,
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                format!("{max_tokens_param} must be at least 1 (got {m})."),
                Some(max_tokens_param),
            ))
        }
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
    };
    let stop = req.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid(
            format!(
                "At most {MAX_STOP} stop sequences are supported (got {}).",
                stop.len()
            ),
            Some("stop"),
        ));
    }
    let sampler = SamplerConfig {
        temperature: temperature as f32,
        top_k: top_k as usize,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repeat_penalty: repeat_penalty as f32,
        repeat_last_n: 64,
        seed,
    };
    sampler
        .validate()
        .map_err(|e| ApiError::invalid(chain(&e), None))?;
    Ok(Settings {
        max_tokens,
        sampler,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        model: req
            .model
            .clone()
            .unwrap_or_else(|| default_model.to_owned()),
    })
}

/// The options for `prompt_len` prompt tokens: a prompt that fills the context is a 400
/// (`context_length_exceeded`); the completion limit is clamped to the room left.
fn options(
    s: &Settings,
    prompt_len: usize,
    n_ctx: usize,
    prompt_param: &str,
) -> Result<GenerateOptions, ApiError> {
    if prompt_len == 0 {
        return Err(ApiError::invalid(
            "The prompt is empty.",
            Some(prompt_param),
        ));
    }
    if prompt_len >= n_ctx {
        return Err(ApiError::context_length(prompt_len, n_ctx, prompt_param));
    }
    let room = n_ctx - prompt_len;
    Ok(GenerateOptions {
        max_tokens: s.max_tokens.map_or(room, |m| m.min(room)),
        sampler: s.sampler.clone(),
        stop: s.stop.clone(),
        stop_at_eog: true,
    })
}

/// `messages` in the template's terms: content parts joined, `developer` as `system`.
fn chat_messages(
    messages: Option<&[crate::api::ChatMessageIn]>,
) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(messages) = messages else {
        return Err(ApiError::invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
        ));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message.",
            Some("messages"),
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "Unsupported role '{other}' (supported: system, developer, user, \
                             assistant)."
                        ),
                        Some(&format!("messages[{i}].role")),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        if p.kind != "text" {
                            return Err(ApiError::invalid(
                                format!(
                                    "Unsupported content part type '{}': only text parts are \
                                     supported.",
                                    p.kind
                                ),
                                Some(&format!("messages[{i}].content[{j}].type")),
                            ));
                        }
                        text.push_str(p.text.as_deref().unwrap_or(""));
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Whether a response is a chat completion or a text completion.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// What every response of a request carries.
struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

async fn chat_completions(
    State(st): State<Shared>,
    ApiJson(req): ApiJson<GenerationRequest>,
) -> Result<Response, ApiError> {
    let s = settings(&req, &st.model_id)?;
    let messages = chat_messages(req.messages.as_deref())?;
    let state = Arc::clone(&st);
    let prompt = blocking(move || {
        let template = state.template.as_ref().map_err(|e| {
            ApiError::server(format!("The model's chat template cannot be used: {e}"))
        })?;
        template
            .encode(state.engine.tokenizer(), &messages, true)
            .map_err(|e| match e {
                EngineError::ChatTemplate { .. } => ApiError::invalid(chain(&e), Some("messages")),
                EngineError::Tokenizer(t) => untokenizable(&t, "messages"),
                _ => ApiError::server(chain(&e)),
            })
    })
    .await?;
    run(st, s, prompt, "messages", Kind::Chat).await
}

async fn completions(
    State(st): State<Shared>,
    ApiJson(req): ApiJson<GenerationRequest>,
) -> Result<Response, ApiError> {
    let s = settings(&req, &st.model_id)?;
    let text = match req.prompt {
        None => {
            return Err(ApiError::invalid(
                "Missing required parameter: 'prompt'.",
                Some("prompt"),
            ))
        }
        Some(Prompt::Text(t)) => t,
        Some(Prompt::Texts(mut v)) if v.len() == 1 => v.remove(0),
        Some(Prompt::Texts(v)) if v.is_empty() => {
            return Err(ApiError::invalid("The prompt is empty.", Some("prompt")))
        }
        Some(Prompt::Texts(v)) => {
            return Err(ApiError::invalid(
                format!(
                    "Only one prompt per request is supported (got {}).",
                    v.len()
                ),
                Some("prompt"),
            ))
        }
        Some(Prompt::Tokens(ids)) => {
            check_ids(&ids, st.engine.config().n_vocab, "prompt")?;
            return run(st, s, ids, "prompt", Kind::Text).await;
        }
    };
    let engine = Arc::clone(&st.engine);
    let prompt = blocking(move || {
        let tok = engine.tokenizer();
        tok.encode(&text, true, false)
            .map_err(|e| untokenizable(&e, "prompt"))
    })
    .await?;
    run(st, s, prompt, "prompt", Kind::Text).await
}

/// Submits `prompt` and answers: the whole completion, or a stream of chunks.
async fn run(
    st: Shared,
    s: Settings,
    prompt: Vec<u32>,
    prompt_param: &str,
    kind: Kind,
) -> Result<Response, ApiError> {
    let opts = options(&s, prompt.len(), st.worker.n_ctx(), prompt_param)?;
    let rx = st.worker.submit(prompt, opts)?;
    let meta = Meta {
        kind,
        id: format!(
            "{}-{:016x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            random_u64()
        ),
        created: unix_now(),
        model: s.model,
    };
    if s.stream {
        let stream = ChunkStream::new(meta, rx, s.include_usage);
        return Ok(Sse::new(stream.into_stream())
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let (text, reason, usage) = collect(rx).await?;
    let finish_reason = finish_reason(&reason);
    Ok(match kind {
        Kind::Chat => Json(ChatCompletion {
            id: meta.id,
            object: "chat.completion",
            created: meta.created,
            model: meta.model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessageOut {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason,
            }],
            usage,
        })
        .into_response(),
        Kind::Text => Json(TextCompletion {
            id: meta.id,
            object: "text_completion",
            created: meta.created,
            model: meta.model,
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: Some(finish_reason),
            }],
            usage: Some(usage),
        })
        .into_response(),
    })
}

/// The whole completion. Dropping this future (the client went away) drops `rx`, which the
/// engine thread notices and cancels the sequence.
async fn collect(
    mut rx: UnboundedReceiver<WorkerEvent>,
) -> Result<(String, StopReason, Usage), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            WorkerEvent::Update(u) => {
                text.push_str(&u.text);
                if let Some(reason) = u.finished {
                    return Ok((
                        text,
                        reason,
                        Usage::new(u.prompt_tokens, u.completion_tokens),
                    ));
                }
            }
            WorkerEvent::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::unavailable(
        "The engine stopped before the completion was done.",
    ))
}

/// OpenAI's `finish_reason`.
fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens => "length",
        StopReason::EndOfGeneration(_) | StopReason::StopString(_) => "stop",
    }
}

/// A streamed answer: engine updates in, SSE events out (`data: {chunk}` … `data: [DONE]`,
/// or `data: {"error": …}` and the end on failure). Dropping it (the client went away) drops
/// the receiver, and the engine thread cancels the sequence.
struct ChunkStream {
    meta: Meta,
    rx: UnboundedReceiver<WorkerEvent>,
    include_usage: bool,
    pending: VecDeque<Event>,
    done: bool,
}

impl ChunkStream {
    fn new(meta: Meta, rx: UnboundedReceiver<WorkerEvent>, include_usage: bool) -> ChunkStream {
        let mut s = ChunkStream {
            meta,
            rx,
            include_usage,
            pending: VecDeque::new(),
            done: false,
        };
        if s.meta.kind == Kind::Chat {
            let first = s.chat_chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                },
                None,
            );
            s.pending.push_back(first);
        }
        s
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(ev) = s.pending.pop_front() {
                    return Some((Ok(ev), s));
                }
                if s.done {
                    return None;
                }
                match s.rx.recv().await {
                    Some(WorkerEvent::Update(u)) => {
                        let usage = Usage::new(u.prompt_tokens, u.completion_tokens);
                        match u.finished {
                            Some(reason) => {
                                let fr = Some(finish_reason(&reason));
                                let ev = s.content_chunk(u.text, fr);
                                s.pending.push_back(ev);
                                if s.include_usage {
                                    let ev = s.usage_chunk(usage);
                                    s.pending.push_back(ev);
                                }
                                s.pending.push_back(Event::default().data("[DONE]"));
                                s.done = true;
                            }
                            None if !u.text.is_empty() => {
                                let ev = s.content_chunk(u.text, None);
                                s.pending.push_back(ev);
                            }
                            None => {}
                        }
                    }
                    Some(WorkerEvent::Failed(e)) => {
                        s.pending.push_back(Event::default().data(e.to_json()));
                        s.done = true;
                    }
                    None => {
                        let e = ApiError::unavailable(
                            "The engine stopped before the completion was done.",
                        );
                        s.pending.push_back(Event::default().data(e.to_json()));
                        s.done = true;
                    }
                }
            }
        })
    }

    /// A content chunk: the new `text`, and the finish reason on the last one (a chat chunk
    /// then has an empty delta when the last update brought no text).
    fn content_chunk(&self, text: String, finish_reason: Option<&'static str>) -> Event {
        match self.meta.kind {
            Kind::Chat => {
                let content = (!text.is_empty()).then_some(text);
                self.chat_chunk(
                    Delta {
                        role: None,
                        content,
                    },
                    finish_reason,
                )
            }
            Kind::Text => self.text_chunk(text, finish_reason),
        }
    }

    fn chat_chunk(&self, delta: Delta, finish_reason: Option<&'static str>) -> Event {
        json_event(&ChatChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        })
    }

    fn text_chunk(&self, text: String, finish_reason: Option<&'static str>) -> Event {
        json_event(&TextCompletion {
            id: self.meta.id.clone(),
            object: "text_completion",
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason,
            }],
            usage: None,
        })
    }

    fn usage_chunk(&self, usage: Usage) -> Event {
        match self.meta.kind {
            Kind::Chat => json_event(&ChatChunk {
                id: self.meta.id.clone(),
                object: "chat.completion.chunk",
                created: self.meta.created,
                model: self.meta.model.clone(),
                choices: vec![],
                usage: Some(usage),
            }),
            Kind::Text => json_event(&TextCompletion {
                id: self.meta.id.clone(),
                object: "text_completion",
                created: self.meta.created,
                model: self.meta.model.clone(),
                choices: vec![],
                usage: Some(usage),
            }),
        }
    }
}

/// An SSE event whose data is `value` as JSON.
fn json_event<T: serde::Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).expect("response JSON serializes"))
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh random number (request ids, seeds): the time and a counter hashed with this
/// process's random SipHash keys.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.get_or_init(RandomState::new).hash_one((nanos, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatMessageIn;

    #[test]
    fn content_parts_are_joined_and_other_parts_refused() {
        let msgs: Vec<ChatMessageIn> = serde_json::from_str(
            r#"[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null}]"#,
        )
        .unwrap();
        let out = chat_messages(Some(&msgs)).unwrap();
        assert_eq!(out[0], ChatMessage::new("system", "be brief"));
        assert_eq!(out[1], ChatMessage::new("user", "ab"));
        assert_eq!(out[2], ChatMessage::new("assistant", ""));
        let msgs: Vec<ChatMessageIn> = serde_json::from_str(
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]"#,
        )
        .unwrap();
        let e = chat_messages(Some(&msgs)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let msgs: Vec<ChatMessageIn> =
            serde_json::from_str(r#"[{"role":"tool","content":"x"}]"#).unwrap();
        assert!(chat_messages(Some(&msgs)).is_err());
        assert!(chat_messages(Some(&[])).is_err());
        assert!(chat_messages(None).is_err());
    }

    #[test]
    fn openai_defaults_and_the_completion_limit() {
        let req: GenerationRequest = serde_json::from_str(r#"{"prompt": "x"}"#).unwrap();
        let s = settings(&req, "m").unwrap();
        let c = &s.sampler;
        assert_eq!(
            (c.temperature, c.top_p, c.top_k, c.min_p),
            (1.0, 1.0, 40, 0.0)
        );
        assert_eq!(c.repeat_penalty, 1.0);
        assert_eq!(s.model, "m");
        assert!(!s.stream && !s.include_usage && s.stop.is_empty());
        // Absent: the rest of the context. Too many: clamped. A full context: refused.
        assert_eq!(options(&s, 10, 64, "prompt").unwrap().max_tokens, 54);
        let req: GenerationRequest = serde_json::from_str(
            r#"{"max_tokens": 5, "max_completion_tokens": 100, "stop": "x", "seed": -1}"#,
        )
        .unwrap();
        let s = settings(&req, "m").unwrap();
        assert_eq!(s.sampler.seed, u64::MAX);
        assert_eq!(s.stop, vec!["x".to_string()]);
        let o = options(&s, 10, 64, "prompt").unwrap();
        assert_eq!(o.max_tokens, 54);
        assert!(o.stop_at_eog);
        let e = options(&s, 64, 64, "prompt").unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        // Two requests without a seed get different seeds.
        let req = GenerationRequest::default();
        assert_ne!(
            settings(&req, "m").unwrap().sampler.seed,
            settings(&req, "m").unwrap().sampler.seed
        );
        let req: GenerationRequest = serde_json::from_str(r#"{"seed": 1.5}"#).unwrap();
        assert_eq!(
            settings(&req, "m").unwrap_err().param.as_deref(),
            Some("seed")
        );
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secret", b"secreT"));
        assert!(!same_key(b"secret", b"secret2"));
    }

    #[test]
    fn random_numbers_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}

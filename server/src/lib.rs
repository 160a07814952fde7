//! `strata-server`: an OpenAI-compatible HTTP server over Strata's continuous batching
//! (`strata serve`).
//!
//! Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (whole answers or
//! server-sent events), `GET /v1/models`, and llama-server's `GET /health`, `POST /tokenize`,
//! `POST /detokenize`, plus `GET /metrics` (Prometheus text). Errors are OpenAI's error JSON.
//!
//! One thread (`strata-engine`) owns the [`strata_engine::Batcher`] and runs every forward
//! pass: up to [`ServerConfig::n_slots`] requests are decoded together, the next
//! [`ServerConfig::queue`] wait in a FIFO queue, and beyond that requests are refused at once
//! with 503. A client that goes away has its sequence cancelled at the next step.
//!
//! ```no_run
//! use strata_engine::{Engine, EngineConfig};
//! use strata_server::{Server, ServerConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::open("models/gemma-3-270m-q4_k_m.gguf", EngineConfig::default())?;
//! let server = Server::bind(engine, ServerConfig::new("gemma-3-270m-q4_k_m"), "127.0.0.1:0").await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run().await?; // until Ctrl-C or SIGTERM
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use strata_engine::{BatchConfig, ChatTemplate, Engine, EngineError};
use thiserror::Error;
use tokio::net::{TcpListener, ToSocketAddrs};

pub mod api;
pub mod errors;
mod metrics;
mod routes;
mod worker;

pub use errors::ApiError;

/// Default request body limit: 8 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 8 << 20;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The model id `/v1/models` lists and responses name when a request gives none.
    pub model_id: String,
    /// Sequences decoded together (`--parallel`).
    pub n_slots: usize,
    /// Requests that may wait for a slot (`--queue`); more are refused with 503.
    pub queue: usize,
    /// KV positions per sequence; `None` = the engine's context length (`--ctx`).
    pub n_ctx: Option<usize>,
    /// Most tokens per forward pass; `None` = the engine's batch size.
    pub step_tokens: Option<usize>,
    /// When set, every endpoint but `/health` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body in bytes; larger ones get 413.
    pub body_limit: usize,
}

impl ServerConfig {
    /// The defaults (4 parallel sequences, a queue of 64, the engine's context, 8 MiB bodies,
    /// no API key) for the model `model_id`.
    pub fn new(model_id: impl Into<String>) -> ServerConfig {
        ServerConfig {
            model_id: model_id.into(),
            n_slots: 4,
            queue: 64,
            n_ctx: None,
            step_tokens: None,
            api_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The engine thread could not start (KV caches too large, bad settings).
    #[error("starting the engine")]
    Engine(#[source] EngineError),
    /// The async runtime could not be built.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// Accepting connections failed.
    #[error("serving HTTP")]
    Io(#[source] std::io::Error),
}

/// A bound server, not yet answering: [`Server::local_addr`] tells the port (useful after
/// binding port 0), [`Server::run`] serves.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<routes::AppState>,
    body_limit: usize,
}

impl Server {
    /// Binds `addr` and starts the engine thread (allocating every sequence's KV cache).
    pub async fn bind(
        engine: Engine,
        cfg: ServerConfig,
        addr: impl ToSocketAddrs + std::fmt::Display,
    ) -> Result<Server, ServerError> {
        let shown = addr.to_string();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: shown,
                source,
            })?;
        Server::from_listener(engine, cfg, listener)
    }

    /// Serves on `listener` (already bound) and starts the engine thread.
    pub fn from_listener(
        engine: Engine,
        cfg: ServerConfig,
        listener: TcpListener,
    ) -> Result<Server, ServerError> {
        let addr = listener.local_addr().map_err(ServerError::Io)?;
        let engine = Arc::new(engine);
        // A template that does not parse only breaks chat; completions still work.
        let template =
            ChatTemplate::for_tokenizer(engine.tokenizer()).map_err(|e| worker::chain(&e));
        if let Err(e) = &template {
            tracing::warn!("chat completions disabled: {e}");
        }
        let worker = worker::WorkerHandle::start(
            Arc::clone(&engine),
            BatchConfig {
                n_slots: cfg.n_slots,
                n_ctx: cfg.n_ctx,
                step_tokens: cfg.step_tokens,
            },
            cfg.queue,
        )
        .map_err(ServerError::Engine)?;
        let state = Arc::new(routes::AppState {
            engine,
            template,
            worker,
            metrics: metrics::Metrics::default(),
            model_id: cfg.model_id,
            created: routes::unix_now(),
            api_key: cfg.api_key.filter(|k| !k.is_empty()),
        });
        Ok(Server {
            listener,
            addr,
            state,
            body_limit: cfg.body_limit,
        })
    }

    /// The address the server listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// KV positions per sequence: prompts must be shorter.
    pub fn n_ctx(&self) -> usize {
        self.state.worker.n_ctx()
    }

    /// Sequences decoded together.
    pub fn n_slots(&self) -> usize {
        self.state.worker.n_slots()
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run(self) -> Result<(), ServerError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes. Then new connections are refused, running and queued
    /// requests fail with 503 (streams get an error event), and this returns once every
    /// connection has closed and the engine thread has stopped.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = Arc::clone(&self.state);
        let app = routes::router(Arc::clone(&self.state), self.body_limit);
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down");
                // Ends running generations so that their connections close.
                let _ = tokio::task::spawn_blocking(move || state.worker.shutdown()).await;
            })
            .await;
        tracing::debug!("every connection closed");
        let state = self.state;
        let _ = tokio::task::spawn_blocking(move || state.worker.shutdown()).await;
        tracing::debug!("engine thread stopped");
        result.map_err(ServerError::Io)
    }
}

/// Serves `engine` on `listener` until Ctrl-C or SIGTERM.
pub async fn serve(
    engine: Engine,
    cfg: ServerConfig,
    listener: TcpListener,
) -> Result<(), ServerError> {
    Server::from_listener(engine, cfg, listener)?.run().await
}

/// Builds a multi-threaded runtime, binds `host:port`, calls `on_listening` with the bound
/// server (to print its address), and serves until Ctrl-C or SIGTERM. For callers without a
/// runtime of their own (the CLI).
pub fn run_blocking(
    engine: Engine,
    cfg: ServerConfig,
    host: &str,
    port: u16,
    on_listening: impl FnOnce(&Server),
) -> Result<(), ServerError> {
    // Forward passes run on the engine thread and its compute pool; the async threads only
    // parse, tokenize and write, so two are plenty.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("strata-http")
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(async move {
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let server = Server::bind(engine, cfg, addr.as_str()).await?;
        on_listening(&server);
        server.run().await
    })
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

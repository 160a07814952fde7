//! `strata serve`: an OpenAI-compatible HTTP server (see the `strata-server` crate) over the
//! model, with `--parallel` sequences decoded together.

use anyhow::{Context, Result};
use strata_server::ServerConfig;

use crate::model_opts::ModelOpts;

/// Flags of `strata serve`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelOpts,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 = any free port; the line on stderr names it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together, each with its own KV cache of --ctx positions.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a free sequence; more are refused with 503.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Log filter, e.g. `info` for one line per request [default: $RUST_LOG, else `warn`].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

/// Runs `strata serve` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> Result<()> {
    let filter = match &args.log {
        Some(f) => tracing_subscriber::EnvFilter::try_new(f)
            .with_context(|| format!("invalid --log filter `{f}`"))?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let path = args.model.model_path()?;
    let model_id = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let engine = args.model.open()?;
    let cfg = ServerConfig {
        n_slots: args.parallel,
        queue: args.queue,
        api_key: args.api_key.clone(),
        ..ServerConfig::new(model_id.clone())
    };
    strata_server::run_blocking(engine, cfg, &args.host, args.port, |server| {
        eprintln!(
            "strata serve: listening on http://{} (model {model_id}, parallel {}, ctx {} per \
             sequence)",
            server.local_addr(),
            server.n_slots(),
            server.n_ctx()
        );
    })
    .context("strata serve")
}

//! Flags shared by the commands that run a model (`generate`, `chat`, `logits`, `bench`): which
//! model, which storage backend and budget, threads and context length.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, KvType};
use strata_layer_cache::ConfigOverrides;

/// The model used when none is named (fetched by `cargo xtask fetch-model`).
pub const DEFAULT_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// Storage and cache flags: shared by every command that opens a model (`generate`, `chat`,
/// `logits`, `bench`).
#[derive(clap::Args, Debug, Clone)]
pub struct StorageOpts {
    /// Storage backend: mmap, file or arena.
    #[arg(long)]
    pub backend: Option<Backend>,
    /// Memory budget for weights: bytes ("800MB", "1.5GiB"), a percentage of the file ("50%"),
    /// "all" or "min".
    #[arg(long)]
    pub budget: Option<Budget>,
    /// Prefetch window: layers read ahead in the background.
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// A TOML file with `[storage]` and `[cache]` settings (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl StorageOpts {
    /// The cache configuration: defaults, then the config file, then the flags.
    pub fn cache_config(&self) -> Result<CacheConfig> {
        let mut cache = CacheConfig::default();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let file = ConfigOverrides::from_toml_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            cache = cache.apply(&file);
        }
        if let Some(b) = self.backend {
            cache.backend = b;
        }
        if let Some(b) = self.budget {
            cache.budget = b;
        }
        if let Some(w) = self.prefetch {
            cache.prefetch = w;
        }
        Ok(cache)
    }
}

/// Model and engine flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelOpts {
    /// The GGUF model file [default: models/gemma-3-270m-q4_k_m.gguf in the workspace].
    pub model: Option<PathBuf>,
    /// Storage backend, budget, prefetch window, config file.
    #[command(flatten)]
    pub storage: StorageOpts,
    /// Compute threads [default: all cores]. Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// KV cache positions [default: 4096, or the model's context length if smaller].
    #[arg(long)]
    pub ctx: Option<usize>,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
}

impl ModelOpts {
    /// The model path: the argument, or the workspace default with a hint when it is missing.
    pub fn model_path(&self) -> Result<PathBuf> {
        model_path(self.model.as_deref())
    }

    /// The engine configuration: defaults, then the config file, then the flags.
    pub fn engine_config(&self) -> Result<EngineConfig> {
        Ok(EngineConfig {
            cache: self.storage.cache_config()?,
            n_ctx: self.ctx,
            kv_type: self.kv_type,
            threads: self.threads,
            ..EngineConfig::default()
        })
    }

    /// Opens the model, telling the user on stderr while an arena is filled.
    pub fn open(&self) -> Result<Engine> {
        open_engine(&self.model_path()?, self.engine_config()?)
    }
}

/// The model at `given`, or the workspace default with a hint when it is missing.
pub fn model_path(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.exists() {
            bail!("model file {} not found", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let candidates = [
        PathBuf::from(DEFAULT_MODEL),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DEFAULT_MODEL),
    ];
    match candidates.iter().find(|p| p.exists()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no model given and {DEFAULT_MODEL} is missing: run `cargo xtask fetch-model` \
             (or pass a GGUF path)"
        ),
    }
}

/// Opens the model at `path` with `cfg`, telling the user on stderr while an arena is filled
/// (and loading its resident layers up front, with a progress bar).
pub fn open_engine(path: &Path, cfg: EngineConfig) -> Result<Engine> {
    let arena = cfg.cache.backend == Backend::Arena;
    if arena {
        eprint!(
            "loading {} into an arena (budget {})… ",
            path.display(),
            cfg.cache.budget
        );
        let _ = std::io::stderr().flush();
    }
    let t = Instant::now();
    let engine = Engine::open(path, cfg).with_context(|| format!("opening {}", path.display()))?;
    if arena {
        eprintln!("globals read in {:.2} s", t.elapsed().as_secs_f64());
        // The resident layers now, with a progress bar, rather than silently during the
        // first token.
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "resident layers [{bar:30}] {pos}/{len} {elapsed}",
            )
            .context("progress bar template")?
            .progress_chars("=> "),
        );
        let n = engine
            .preload(&mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .with_context(|| format!("loading the layers of {}", path.display()))?;
        bar.finish_and_clear();
        eprintln!(
            "arena loaded: {n} resident layers in {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(engine)
}

/// One line of run statistics for stderr.
pub fn stats_line(engine: &Engine, stats: &strata_engine::RunStats) -> String {
    format!(
        "load {:.2} s | prefill {} tok {:.1} tok/s | decode {} tok {:.1} tok/s | cache: {}",
        engine.load_time().as_secs_f64(),
        stats.prefill_tokens,
        stats.prefill_tok_s(),
        stats.decode_tokens,
        stats.decode_tok_s(),
        engine.cache_stats()
    )
}

//! Flags shared by the commands that run a model (`generate`, `chat`, `logits`, `bench`): which
//! model, which storage backend and budget, threads and context length.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, KvType};
use strata_layer_cache::{human_bytes, ConfigOverrides};

/// The model used when none is named (fetched by `cargo xtask fetch-model`).
pub const DEFAULT_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// Storage and cache flags: shared by every command that opens a model (`generate`, `chat`,
/// `logits`, `bench`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StorageOpts {
    /// Storage backend: mmap, file or arena [default: mmap when the budget covers the model,
    /// file when it is below the model's size].
    #[arg(long)]
    pub backend: Option<Backend>,
    /// O_DIRECT reads for the file and arena backends: true or false [default: true exactly
    /// when the budget is below the model's size].
    #[arg(long)]
    pub direct_io: Option<bool>,
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
    /// The cache configuration for the model at `model`: the config file, then the flags, and
    /// for what neither sets the defaults for this budget and the model's size (O_DIRECT file
    /// reads when the budget is below it, see `CacheConfig::for_budget`).
    pub fn cache_config(&self, model: &Path) -> Result<CacheConfig> {
        let mut overrides = ConfigOverrides::default();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            overrides = ConfigOverrides::from_toml_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
        }
        let mut flags = ConfigOverrides::default();
        flags.storage.backend = self.backend;
        flags.storage.direct_io = self.direct_io;
        flags.cache.budget = self.budget;
        flags.cache.prefetch = self.prefetch;
        let file_len = std::fs::metadata(model)
            .with_context(|| format!("reading the size of {}", model.display()))?
            .len();
        Ok(overrides.merge(&flags).resolve(file_len))
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
    #[arg(long, value_parser = threads)]
    pub threads: Option<usize>,
    /// KV cache positions [default: 4096, or the model's context length if smaller].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub ctx: Option<usize>,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
}

/// `--threads`: 1 to [`strata_engine::MAX_THREADS`].
fn threads(s: &str) -> Result<usize, String> {
    let max = strata_engine::MAX_THREADS;
    match s.trim().parse::<usize>() {
        Ok(t) if (1..=max).contains(&t) => Ok(t),
        _ => Err(format!("expected a thread count from 1 to {max}")),
    }
}

impl ModelOpts {
    /// The model path: the argument, or the workspace default with a hint when it is missing.
    pub fn model_path(&self) -> Result<PathBuf> {
        model_path(self.model.as_deref())
    }

    /// The engine configuration for the model at `model` (see [`StorageOpts::cache_config`]).
    pub fn engine_config(&self, model: &Path) -> Result<EngineConfig> {
        Ok(EngineConfig {
            cache: self.storage.cache_config(model)?,
            n_ctx: self.ctx,
            kv_type: self.kv_type,
            threads: self.threads,
            ..EngineConfig::default()
        })
    }

    /// Opens the model (see [`open_engine`]).
    pub fn open(&self) -> Result<Engine> {
        let path = self.model_path()?;
        let cfg = self.engine_config(&path)?;
        open_engine(&path, cfg)
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

/// Opens the model at `path` with `cfg`. With a backend that reads into memory of its own
/// (file, arena) the resident layers are read now, with a progress bar in bytes on stderr,
/// rather than silently during the first token.
pub fn open_engine(path: &Path, cfg: EngineConfig) -> Result<Engine> {
    let backend = cfg.cache.backend;
    let owned = backend != Backend::Mmap;
    if owned {
        eprint!(
            "loading {} ({backend}{}, budget {})… ",
            path.display(),
            if cfg.cache.direct_io {
                ", O_DIRECT"
            } else {
                ""
            },
            cfg.cache.budget
        );
        let _ = std::io::stderr().flush();
    }
    let t = Instant::now();
    let engine = Engine::open(path, cfg).with_context(|| format!("opening {}", path.display()))?;
    if owned {
        let plan = engine.layer_cache().plan();
        let mut notes = Vec::new();
        if plan.row_globals_bytes > 0 {
            notes.push(format!(
                "embedding table ({}) left in storage: rows read per token",
                human_bytes(plan.row_globals_bytes)
            ));
        }
        if plan.head_bytes > 0 {
            notes.push(format!(
                "{} of layer {} resident with them",
                human_bytes(plan.head_bytes),
                plan.resident_layers
            ));
        }
        eprintln!(
            "globals read in {:.2} s{}",
            t.elapsed().as_secs_f64(),
            match notes.is_empty() {
                true => String::new(),
                false => format!(" ({})", notes.join("; ")),
            }
        );
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "resident layers [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}",
            )
            .context("progress bar template")?
            .progress_chars("=> "),
        );
        let t_layers = Instant::now();
        let done = engine
            .layer_cache()
            .preload_progress(&mut |p| {
                bar.set_length(p.total_bytes);
                bar.set_position(p.bytes);
            })
            .with_context(|| format!("loading the layers of {}", path.display()))?;
        bar.finish_and_clear();
        let secs = t_layers.elapsed().as_secs_f64();
        eprintln!(
            "loaded {} resident layers ({}) in {secs:.2} s ({:.2} GB/s)",
            done.layers,
            human_bytes(done.bytes),
            if secs > 0.0 {
                done.bytes as f64 / secs / 1e9
            } else {
                0.0
            },
        );
    }
    Ok(engine)
}

/// One line of run statistics for stderr.
pub fn stats_line(engine: &Engine, stats: &strata_engine::RunStats) -> String {
    format!(
        "load {:.2} s | prefill {} tok {:.1} tok/s | decode {} tok {:.2} tok/s | cache: {}",
        engine.load_time().as_secs_f64(),
        stats.prefill_tokens,
        stats.prefill_tok_s(),
        stats.decode_tokens,
        stats.decode_tok_s(),
        engine.cache_stats()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ModelOpts {
        ModelOpts {
            model: None,
            storage: StorageOpts::default(),
            threads: None,
            ctx: None,
            kv_type: KvType::F16,
        }
    }

    fn temp(tag: &str, contents: &[u8], len: u64) -> PathBuf {
        let p = std::env::temp_dir().join(format!("strata-opts-{}-{tag}", std::process::id()));
        std::fs::write(&p, contents).unwrap();
        if len > contents.len() as u64 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len)
                .unwrap();
        }
        p
    }

    #[test]
    fn defaults_follow_the_budget_against_the_model_size_and_explicit_keys_win() {
        // Only the model's size matters here (a sparse file of 1 GB).
        let model = temp("model", b"", 1_000_000_000);
        let cfg = |o: &ModelOpts| {
            let c = o.engine_config(&model).unwrap().cache;
            (c.backend, c.direct_io)
        };
        let mut o = opts();
        assert_eq!(cfg(&o), (Backend::Mmap, false));
        o.storage.budget = Some("25%".parse().unwrap());
        assert_eq!(cfg(&o), (Backend::File, true));
        o.storage.budget = Some("999MB".parse().unwrap());
        assert_eq!(cfg(&o), (Backend::File, true));
        o.storage.budget = Some("1GB".parse().unwrap());
        assert_eq!(cfg(&o), (Backend::Mmap, false));
        // A config file's `direct_io = false` is honoured below the model size, and a flag
        // overrides the file.
        let toml = temp("cfg.toml", b"[storage]\ndirect_io = false\n", 0);
        o.storage.budget = Some("25%".parse().unwrap());
        o.storage.config = Some(toml.clone());
        assert_eq!(cfg(&o), (Backend::File, false));
        o.storage.direct_io = Some(true);
        o.storage.backend = Some(Backend::Arena);
        assert_eq!(cfg(&o), (Backend::Arena, true));
        o.storage.config = None;
        o.storage.direct_io = None;
        o.storage.backend = Some(Backend::Mmap);
        assert_eq!(cfg(&o), (Backend::Mmap, false));
        let _ = std::fs::remove_file(model);
        let _ = std::fs::remove_file(toml);
    }
}

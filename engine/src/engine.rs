//! [`Engine`]: a model opened over the layer cache, with its tokenizer; [`Session`]: one
//! sequence's KV state, evaluation and generation, with per-run statistics.

#[cfg(feature = "file")]
use std::path::Path;
use std::time::Duration;

use strata_layer_cache::{CacheConfig, CacheStats, Clock, LayerCache};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::config::ModelConfig;
use crate::error::EngineError;
use crate::generate::{GenerateOptions, Generation};
use crate::kv_cache::{KvCache, KvType};
use crate::model::{LogitsFor, Model};
use crate::tokenizer::Tokenizer;

/// The context length used when none is configured (capped at the model's trained length).
pub const DEFAULT_N_CTX: usize = 4096;
/// Tokens per prefill batch when none is configured (llama.cpp's default ubatch).
pub const DEFAULT_BATCH: usize = 512;

/// The most compute threads an engine accepts (ggml's `GGML_MAX_N_THREADS`).
pub const MAX_THREADS: usize = 512;

/// How to open and run a model.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Storage backend, memory budget, prefetch window and policy of the layer cache.
    pub cache: CacheConfig,
    /// KV cache positions; `None` = [`DEFAULT_N_CTX`] or the model's limit if smaller.
    pub n_ctx: Option<usize>,
    /// KV cache element type (f16 like llama.cpp by default).
    pub kv_type: KvType,
    /// Compute threads; `None` = rayon's default (all cores). Results do not depend on it.
    pub threads: Option<usize>,
    /// Prompt tokens per forward batch.
    pub batch_size: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            cache: CacheConfig::default(),
            n_ctx: None,
            kv_type: KvType::F16,
            threads: None,
            batch_size: DEFAULT_BATCH,
        }
    }
}

/// A loaded model: configuration, layer cache, tokenizer and compute threads.
pub struct Engine {
    model: Model,
    tokenizer: Tokenizer,
    n_ctx: usize,
    kv_type: KvType,
    batch_size: usize,
    #[cfg(feature = "threads")]
    pool: Option<rayon::ThreadPool>,
    /// Held through every forward pass: sessions in several threads take turns (see
    /// [`Engine::install`]).
    turn: std::sync::Mutex<()>,
    load_time: Duration,
}

impl Engine {
    /// Opens the GGUF model at `path`: parses its header, reads its configuration and tokenizer,
    /// and sets up the layer cache (reading the globals; see [`Engine::preload`] for the layers).
    /// The cache is opened with [`Engine::row_globals`] of the file.
    #[cfg(feature = "file")]
    pub fn open(path: impl AsRef<Path>, config: EngineConfig) -> Result<Engine, EngineError> {
        let t0 = Clock::now();
        let path = path.as_ref();
        let gguf = strata_gguf::Gguf::open(path).map_err(strata_layer_cache::Error::from)?;
        let cache_config = CacheConfig {
            row_globals: Engine::row_globals(&gguf),
            ..config.cache.clone()
        };
        let storage = LayerCache::open_storage(path, &cache_config)?;
        let cache = LayerCache::open(storage, gguf, &cache_config)?;
        let mut engine = Engine::from_cache(cache, config)?;
        engine.load_time = t0.elapsed();
        Ok(engine)
    }

    /// The global tensors this engine reads only a row at a time, for
    /// [`CacheConfig::row_globals`]: `token_embd.weight` when the model has its own
    /// `output.weight` (a tied model multiplies by the whole embedding matrix for its logits).
    /// Left in storage when the budget is below the model, its rows are read per token.
    pub fn row_globals(gguf: &strata_gguf::Gguf) -> Vec<String> {
        match gguf.tensor("output.weight") {
            Some(_) => vec![String::from("token_embd.weight")],
            None => Vec::new(),
        }
    }

    /// Builds an engine over a layer cache opened by the caller (any [`strata_layer_cache::Storage`],
    /// e.g. an arena filled by a host without a filesystem). `config.cache` is not used again.
    pub fn from_cache(cache: LayerCache, config: EngineConfig) -> Result<Engine, EngineError> {
        let t0 = Clock::now();
        if config.batch_size == 0 {
            return Err(EngineError::InvalidSetting {
                what: "batch size 0".into(),
            });
        }
        if let Some(t) = config.threads.filter(|t| !(1..=MAX_THREADS).contains(t)) {
            return Err(EngineError::InvalidSetting {
                what: format!("{t} threads (expected 1 to {MAX_THREADS})"),
            });
        }
        let cfg = ModelConfig::from_gguf(cache.gguf())?;
        let tokenizer = Tokenizer::from_gguf(cache.gguf())?;
        // Every token must have an embedding row and every row a token (llama.cpp refuses a
        // mismatch at load: the tensor's shape disagrees with the vocabulary).
        if tokenizer.n_vocab() != cfg.n_vocab {
            return Err(crate::error::ConfigError::Invalid {
                what: format!(
                    "the vocabulary has {} tokens (tokenizer.ggml.tokens) but token_embd.weight \
                     has {} rows",
                    tokenizer.n_vocab(),
                    cfg.n_vocab
                ),
            }
            .into());
        }
        // The model's own chat template must work before anyone chats (llama.cpp would fail
        // only at the first chat request): render a short conversation now.
        if tokenizer.chat_template().is_some() {
            let messages = [
                ChatMessage::new("user", "Hello"),
                ChatMessage::new("assistant", "Hi!"),
                ChatMessage::new("user", "How are you?"),
            ];
            ChatTemplate::for_tokenizer(&tokenizer)?.render(&messages, true)?;
        }
        let n_ctx = config
            .n_ctx
            .unwrap_or_else(|| DEFAULT_N_CTX.min(cfg.n_ctx_train.max(1)));
        if n_ctx == 0 {
            return Err(EngineError::InvalidSetting {
                what: "context length 0".into(),
            });
        }
        let model = Model::new(cfg, cache, n_ctx)?;
        #[cfg(feature = "threads")]
        let pool = match config.threads {
            Some(threads) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| EngineError::ThreadPool {
                        threads,
                        message: e.to_string(),
                    })?,
            ),
            None => None,
        };
        Ok(Engine {
            model,
            tokenizer,
            n_ctx,
            kv_type: config.kv_type,
            batch_size: config.batch_size,
            #[cfg(feature = "threads")]
            pool,
            turn: std::sync::Mutex::new(()),
            load_time: t0.elapsed(),
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model (forward pass and layer cache).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// KV cache positions of each new session.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Prompt tokens per forward batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// KV cache element type of new sessions.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Time spent in [`Engine::open`].
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Layer cache counters (hits, misses, bytes streamed, resident peak).
    pub fn cache_stats(&self) -> CacheStats {
        self.model.cache().stats()
    }

    /// Loads the layers that stay resident for good now rather than during the first
    /// evaluation (what an arena backend spends its load time on), calling
    /// `progress(done, total)` after each layer; returns the number loaded.
    pub fn preload(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<usize, EngineError> {
        Ok(self.model.cache().preload(progress)?)
    }

    /// The layer cache.
    pub fn layer_cache(&self) -> &LayerCache {
        self.model.cache()
    }

    /// A new session with an empty KV cache of [`Engine::n_ctx`] positions.
    pub fn session(&self) -> Result<Session<'_>, EngineError> {
        Ok(Session {
            engine: self,
            kv: KvCache::new(self.model.config(), self.n_ctx, self.kv_type)?,
            tokens: Vec::new(),
            pending: None,
            stats: RunStats::default(),
        })
    }

    /// Runs `f` (a forward pass) on this engine's thread pool (or the global one), one at a
    /// time.
    ///
    /// Forward passes take turns because a pass can block inside the pool: at a small budget
    /// it waits for a layer slot that another pass holds. Two passes in the pool at once could
    /// deadlock: a worker waiting in one pass's parallel loop steals the other pass's job and
    /// blocks there on a slot that only the pass beneath it on its own stack would release.
    /// Taking turns costs nothing on memory-bound hardware (one pass already uses every core);
    /// [`crate::Batcher`] is the way to run many sequences at once.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        // A pass that panicked left nothing half-done that the next one reads.
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(feature = "threads")]
        if let Some(pool) = &self.pool {
            return pool.install(f);
        }
        f()
    }
}

/// Timings of a session's work since it was created or its stats were reset.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunStats {
    /// Tokens evaluated in batches of more than one (prompts).
    pub prefill_tokens: usize,
    /// Time spent evaluating them.
    pub prefill_time: Duration,
    /// Tokens evaluated one at a time (generation).
    pub decode_tokens: usize,
    /// Time spent evaluating them.
    pub decode_time: Duration,
    /// Tokens produced by generation (sampled).
    pub generated_tokens: usize,
}

impl RunStats {
    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_time)
    }

    /// Generated tokens evaluated per second.
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.decode_tokens, self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// One sequence: the tokens evaluated so far and their keys and values.
///
/// Sessions of one engine may run in different threads; their forward passes take turns.
/// Do not evaluate from inside a job of the engine's own thread pool (the pass would wait for
/// its turn in a worker the pass holding the turn may need).
pub struct Session<'e> {
    engine: &'e Engine,
    kv: KvCache,
    /// Tokens whose keys and values are in `kv`, in position order.
    tokens: Vec<u32>,
    /// A token sampled by generation but not yet evaluated; evaluated first by the next call.
    pending: Option<u32>,
    stats: RunStats,
}

impl<'e> Session<'e> {
    /// The engine this session runs on.
    pub fn engine(&self) -> &'e Engine {
        self.engine
    }

    /// Positions filled in the KV cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens evaluated so far, plus a generated token not evaluated yet.
    pub fn tokens(&self) -> Vec<u32> {
        let mut t = self.tokens.clone();
        t.extend(self.pending);
        t
    }

    /// Forgets every token (the KV cache is reused).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.pending = None;
    }

    /// Keeps the first `n_keep` tokens (as listed by [`Session::tokens`]) and forgets the rest;
    /// later tokens overwrite their KV positions. Used to reuse a shared prefix (chat turns).
    pub fn truncate(&mut self, n_keep: usize) {
        if n_keep <= self.tokens.len() {
            self.tokens.truncate(n_keep);
            self.pending = None;
        }
    }

    /// Timings so far.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Clears the timings.
    pub fn reset_stats(&mut self) {
        self.stats = RunStats::default();
    }

    /// Evaluates `tokens` after the ones already in the session, in batches, and hands the
    /// logits of the requested positions to `sink` as `(index in tokens, logits)`.
    pub fn eval_with(
        &mut self,
        tokens: &[u32],
        which: LogitsFor,
        sink: &mut (dyn FnMut(usize, &[f32]) + Send),
    ) -> Result<(), EngineError> {
        // A pending generated token goes first; its logits are never reported.
        let mut all = Vec::with_capacity(tokens.len() + 1);
        let offset = usize::from(self.pending.is_some());
        all.extend(self.pending);
        all.extend_from_slice(tokens);
        if all.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if tokens.is_empty() && which == LogitsFor::All {
            return Err(EngineError::EmptyInput);
        }
        self.check_fits(all.len())?;
        let n_vocab = self.engine.config().n_vocab;
        if let Some(&id) = all.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(EngineError::TokenOutOfRange { id, n_vocab });
        }

        let t0 = Clock::now();
        let batch = self.engine.batch_size;
        let n_all = all.len();
        let engine = self.engine;
        let kv = &mut self.kv;
        let pos_start = self.tokens.len();
        // One token, every layer resident: keep the pool's threads spinning for the step's few
        // hundred short products (`strata_quant::with_team`). A step that may wait for a
        // streamed layer or expert does not spin (the spinning thread would take the CPU
        // from the loads).
        let plan = engine.model.cache().plan();
        let team = n_all == 1 && plan.stream_slot_bytes == 0 && plan.experts_used == 0;
        let mut step = || -> Result<(), EngineError> {
            let mut start = 0;
            while start < n_all {
                let end = (start + batch).min(n_all);
                let is_last = end == n_all;
                let chunk_which = match which {
                    LogitsFor::All => Some(LogitsFor::All),
                    LogitsFor::Last if is_last => Some(LogitsFor::Last),
                    LogitsFor::Last => None,
                };
                let mut report = |i: usize, logits: &[f32]| {
                    let idx = start + i;
                    // With no new tokens, the pending token's logits are the ones asked for.
                    if idx >= offset || tokens.is_empty() {
                        sink(idx.saturating_sub(offset), logits);
                    }
                };
                match chunk_which {
                    Some(w) => engine.model.forward(
                        &all[start..end],
                        pos_start + start,
                        kv,
                        w,
                        &mut report,
                    )?,
                    // Middle chunks of a long prompt: logits of the last row are computed and
                    // dropped (the cost of one output row per 512 tokens).
                    None => engine.model.forward(
                        &all[start..end],
                        pos_start + start,
                        kv,
                        LogitsFor::Last,
                        &mut |_, _| {},
                    )?,
                }
                start = end;
            }
            Ok(())
        };
        engine.install(|| {
            if team {
                strata_quant::with_team(step)
            } else {
                step()
            }
        })?;
        let dt = t0.elapsed();
        if n_all > 1 {
            self.stats.prefill_tokens += n_all;
            self.stats.prefill_time += dt;
        } else {
            self.stats.decode_tokens += 1;
            self.stats.decode_time += dt;
        }
        self.tokens.extend_from_slice(&all);
        self.pending = None;
        Ok(())
    }

    /// Evaluates `tokens` and returns the logits after the last one (`[n_vocab]`).
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::new();
        self.eval_with(tokens, LogitsFor::Last, &mut |_, l| out = l.to_vec())?;
        Ok(out)
    }

    /// Starts generating after `prompt` (evaluated first; may be empty if the session already
    /// holds tokens). Fails before evaluating anything if the prompt plus
    /// `options.max_tokens` would overflow the KV cache.
    pub fn generate<'s>(
        &'s mut self,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<Generation<'s, 'e>, EngineError> {
        let pending = usize::from(self.pending.is_some());
        self.check_fits(pending + prompt.len() + options.max_tokens)?;
        Generation::start(self, prompt, options)
    }

    /// Marks `id` as generated but not yet evaluated.
    pub(crate) fn set_pending(&mut self, id: u32) {
        self.pending = Some(id);
    }

    pub(crate) fn stats_mut(&mut self) -> &mut RunStats {
        &mut self.stats
    }

    /// Errors unless `n_new` more positions fit the KV cache.
    fn check_fits(&self, n_new: usize) -> Result<(), EngineError> {
        let needed = self.tokens.len() + n_new;
        if needed > self.kv.n_ctx() {
            return Err(EngineError::ContextOverflow {
                needed,
                n_ctx: self.kv.n_ctx(),
                n_ctx_train: self.engine.config().n_ctx_train,
            });
        }
        Ok(())
    }
}

//! [`Runtime`]: one model opened over a [`Storage`], with one sequence, as the C ABI in
//! `lib.rs` exposes it. Plain Rust, so the native tests drive exactly what the module runs.

use std::sync::Arc;

use strata_engine::tokenizer::StreamDecoder;
use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, EngineError, LogitsFor, Sampler,
    SamplerConfig, Session,
};
use strata_gguf::{Gguf, Value};
use strata_layer_cache::{LayerCache, Storage, StorageReader};

/// What went wrong, as a code the host can branch on and a message it can show.
#[derive(Debug)]
pub struct Failure {
    /// One of the `STRATA_E*` codes (negative).
    pub code: i32,
    /// What failed, where, with which value.
    pub message: String,
}

/// A bad argument from the host: a null pointer, text that is not UTF-8, an unknown budget.
pub const STRATA_EINVAL: i32 = -1;
/// No model is open.
pub const STRATA_ENOTOPEN: i32 = -2;
/// The model or the engine refused: bad file, unsupported tensor, out-of-range token.
pub const STRATA_EMODEL: i32 = -3;
/// Reading the model's bytes from the host failed.
pub const STRATA_EIO: i32 = -4;
/// Memory: the arena or a buffer could not be allocated, or does not fit the address space.
pub const STRATA_ENOMEM: i32 = -5;
/// The sequence would outgrow its context.
pub const STRATA_ECTX: i32 = -6;

impl Failure {
    /// A bad argument.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: STRATA_EINVAL,
            message: message.into(),
        }
    }

    /// No model is open.
    pub fn not_open() -> Failure {
        Failure {
            code: STRATA_ENOTOPEN,
            message: "no model is open (call strata_open first)".into(),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        use strata_layer_cache::Error as CacheError;
        let code = match &e {
            EngineError::ContextOverflow { .. } => STRATA_ECTX,
            EngineError::Cache(c) => match cache_root(c) {
                CacheError::Io { .. }
                | CacheError::OutOfBounds { .. }
                | CacheError::Gguf(strata_gguf::Error::Io { .. }) => STRATA_EIO,
                CacheError::Alloc { .. } | CacheError::TooLarge { .. } => STRATA_ENOMEM,
                _ => STRATA_EMODEL,
            },
            _ => STRATA_EMODEL,
        };
        Failure {
            code,
            message: error_chain(&e),
        }
    }
}

impl From<strata_layer_cache::Error> for Failure {
    fn from(e: strata_layer_cache::Error) -> Failure {
        Failure::from(EngineError::Cache(e))
    }
}

/// The innermost cache error (a layer load wraps the storage's).
fn cache_root(e: &strata_layer_cache::Error) -> &strata_layer_cache::Error {
    match e {
        strata_layer_cache::Error::Layer { source, .. } => cache_root(source),
        other => other,
    }
}

/// `error: cause: cause …`, one line; a cause whose text the message already holds is not
/// repeated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// How a generation samples and when it ends.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Softmax temperature; `<= 0` is greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely (0 = all).
    pub top_k: usize,
    /// Nucleus threshold (1 = off).
    pub top_p: f32,
    /// Minimum probability relative to the top one (0 = off).
    pub min_p: f32,
    /// RNG seed.
    pub seed: u64,
}

/// One step of a generation.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A token was generated; its text (whole UTF-8 characters only, possibly empty).
    Token(u32, String),
    /// The generation is over; the text still held back (possibly empty).
    Done(String),
}

/// A running generation.
struct Generation {
    sampler: Sampler,
    decoder: StreamDecoder<'static>,
    /// Logits for the next token.
    logits: Vec<f32>,
    generated: usize,
    max_tokens: usize,
    done: bool,
}

/// A model and its one sequence.
pub struct Runtime {
    // Fields drop in declaration order: the generation and the session, which borrow the
    // engine, go before the engine itself.
    generation: Option<Generation>,
    session: Session<'static>,
    engine: OwnedEngine,
}

/// The engine, leaked for a `'static` borrow and freed when this is dropped.
struct OwnedEngine(&'static Engine);

impl Drop for OwnedEngine {
    fn drop(&mut self) {
        let ptr = self.0 as *const Engine as *mut Engine;
        // SAFETY: `ptr` came from `Box::leak` in `Runtime::open` and is freed only here, once.
        // The only borrows of it live in `Runtime`'s `generation` and `session` fields, which
        // are declared before `engine` and so already dropped, and in references handed out
        // by `Runtime::engine`, which borrow the `Runtime` and cannot outlive it.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Parses a budget string ("all", "min", "50%", "1.5GiB").
pub fn parse_budget(text: &str) -> Result<Budget, Failure> {
    text.parse::<Budget>()
        .map_err(|e| Failure::invalid(format!("budget `{text}`: {}", error_chain(&e))))
}

impl Runtime {
    /// Opens the model in `storage` with the arena backend: `budget` of memory for weights and
    /// `n_ctx` KV positions (0 = the engine's default).
    pub fn open(
        storage: Arc<dyn Storage>,
        budget: Budget,
        n_ctx: usize,
    ) -> Result<Runtime, Failure> {
        let gguf = Gguf::read(StorageReader::new(storage.as_ref()))
            .map_err(|e| Failure::from(strata_layer_cache::Error::from(e)))?;
        let cache = CacheConfig {
            backend: Backend::Arena,
            budget,
            // Loads are synchronous without threads; a window of 1 keeps the minimum budget at
            // globals + two layers.
            prefetch: 1,
            io_threads: 1,
            direct_io: false,
            // An untied model's embedding table stays in storage below a full budget.
            row_globals: Engine::row_globals(&gguf),
            ..CacheConfig::default()
        };
        let layer_cache = LayerCache::open(storage, gguf, &cache).map_err(|e| {
            let mut f = Failure::from(e);
            if f.code == STRATA_ENOMEM && usize::BITS < 64 {
                f.message.push_str(
                    " (this is the wasm32 module, whose memory ends at 4 GiB: use the wasm64 \
                     module, or a smaller budget to stream the model)",
                );
            }
            f
        })?;
        let config = EngineConfig {
            n_ctx: (n_ctx > 0).then_some(n_ctx),
            ..EngineConfig::default()
        };
        let engine = Engine::from_cache(layer_cache, config)?;
        // The engine lives until `Runtime::drop` frees it, after everything that borrows it.
        let engine: &'static Engine = Box::leak(Box::new(engine));
        let session = engine.session()?;
        Ok(Runtime {
            generation: None,
            session,
            engine: OwnedEngine(engine),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.engine.0
    }

    /// A JSON summary of the model and the cache plan (what `strata inspect` shows first).
    pub fn info_json(&self) -> String {
        let engine = self.engine.0;
        let gguf = engine.layer_cache().gguf();
        let cfg = engine.config();
        let plan = engine.layer_cache().plan();
        let meta = |key: &str| match gguf.metadata().get(key) {
            Some(Value::String(s)) => serde_json::Value::String(s.clone()),
            _ => serde_json::Value::Null,
        };
        let mut types = std::collections::BTreeMap::<String, u64>::new();
        for t in gguf.tensors() {
            *types.entry(t.ty.to_string()).or_default() += 1;
        }
        serde_json::json!({
            "name": meta("general.name"),
            "architecture": meta("general.architecture"),
            "file_bytes": gguf.file_len(),
            "gguf_version": gguf.version(),
            "tensors": gguf.tensors().len(),
            "tensor_types": types,
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "n_head": cfg.n_head,
            "n_head_kv": cfg.n_head_kv,
            "n_ff": cfg.n_ff,
            "n_vocab": cfg.n_vocab,
            "n_ctx_train": cfg.n_ctx_train,
            "n_ctx": engine.n_ctx(),
            "budget_bytes": plan.budget_bytes,
            "minimum_budget_bytes": plan.minimum_bytes,
            "globals_bytes": plan.globals_bytes,
            "resident_layers": plan.resident_layers,
            "streaming_slots": plan.streaming_slots,
        })
        .to_string()
    }

    /// Cache counters and sequence length as JSON.
    pub fn stats_json(&self) -> String {
        let s = self.engine.0.cache_stats();
        serde_json::json!({
            "n_past": self.session.n_past(),
            "gets": s.gets,
            "hits": s.hits,
            "prefetch_hits": s.prefetch_hits,
            "sync_loads": s.sync_loads,
            "bytes_read": s.bytes_read,
            "evictions": s.evictions,
            "read_errors": s.read_errors,
            "resident_bytes": s.resident_bytes,
            "peak_resident_bytes": s.peak_resident_bytes,
            "budget_bytes": s.budget_bytes,
        })
        .to_string()
    }

    /// Token ids of `text`.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, Failure> {
        Ok(self
            .engine
            .0
            .tokenizer()
            .encode(text, add_special, parse_special)
            .map_err(EngineError::from)?)
    }

    /// Text of `ids` (as `strata` prints a generation: pieces concatenated).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, Failure> {
        let n_vocab = self.engine.0.config().n_vocab;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(EngineError::TokenOutOfRange { id, n_vocab }.into());
        }
        let mut d = StreamDecoder::continuing(self.engine.0.tokenizer());
        let mut out: String = ids.iter().map(|&id| d.push(id)).collect();
        out.push_str(&d.finish());
        Ok(out)
    }

    /// Forgets the sequence (and any generation).
    pub fn reset(&mut self) {
        self.generation = None;
        self.session.reset();
    }

    /// Evaluates `ids` after the sequence so far; the logits of every position (`all`) or of
    /// the last, `n_vocab` floats each, appended to `out`. Returns the number of rows.
    pub fn eval(&mut self, ids: &[u32], all: bool, out: &mut Vec<f32>) -> Result<usize, Failure> {
        self.generation = None;
        let which = if all { LogitsFor::All } else { LogitsFor::Last };
        let mut rows = 0;
        self.session.eval_with(ids, which, &mut |_, l| {
            out.extend_from_slice(l);
            rows += 1;
        })?;
        Ok(rows)
    }

    /// Starts a generation after `prompt` (appended to the sequence; BOS added when the model
    /// asks for it and the sequence is empty). Returns the prompt's token count.
    pub fn generate_start(&mut self, prompt: &str, p: &GenerateParams) -> Result<usize, Failure> {
        self.generation = None;
        let first = self.session.n_past() == 0;
        let ids = self.tokenize(prompt, first, false)?;
        let sampler = Sampler::new(SamplerConfig {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            seed: p.seed,
            ..SamplerConfig::default()
        })?;
        let needed = self.session.n_past() + ids.len() + p.max_tokens;
        let engine = self.engine.0;
        if needed > engine.n_ctx() {
            return Err(EngineError::ContextOverflow {
                needed,
                n_ctx: engine.n_ctx(),
                n_ctx_train: engine.config().n_ctx_train,
            }
            .into());
        }
        let logits = self.session.eval(&ids)?;
        self.generation = Some(Generation {
            sampler,
            decoder: StreamDecoder::continuing(engine.tokenizer()),
            logits,
            generated: 0,
            max_tokens: p.max_tokens,
            done: p.max_tokens == 0,
        });
        Ok(ids.len())
    }

    /// The next token of the running generation (sampled, then evaluated unless it ends the
    /// generation), or [`Step::Done`] once it has ended: at an end-of-generation token (not
    /// emitted) or after `max_tokens`.
    pub fn generate_next(&mut self) -> Result<Step, Failure> {
        let engine = self.engine.0;
        let g = self.generation.as_mut().ok_or_else(|| {
            Failure::invalid("no generation is running (call strata_generate_start)")
        })?;
        if g.done {
            return Ok(Step::Done(g.decoder.finish()));
        }
        let history = self.session.tokens();
        let id = g.sampler.sample(&g.logits, &history);
        if engine.tokenizer().is_eog(id) {
            g.done = true;
            return Ok(Step::Done(g.decoder.finish()));
        }
        g.generated += 1;
        let text = g.decoder.push(id);
        if g.generated >= g.max_tokens {
            // Like `strata generate`, the last token is not evaluated: it is not part of the
            // sequence (the next `strata_eval` or generation continues before it).
            g.done = true;
            return Ok(Step::Token(id, text));
        }
        match self.session.eval(&[id]) {
            Ok(logits) => g.logits = logits,
            Err(e) => {
                self.generation = None;
                return Err(e.into());
            }
        }
        Ok(Step::Token(id, text))
    }
}

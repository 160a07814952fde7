//! Strata's engine: model configs, tokenizer, forward pass, KV cache, sampling and generation
//! over the bounded layer cache.
//!
//! - [`Engine::open`] opens a GGUF model through a [`strata_layer_cache::LayerCache`] (backend,
//!   budget and prefetch window in [`EngineConfig::cache`]) and reads its [`ModelConfig`] and
//!   [`tokenizer::Tokenizer`].
//! - [`Session`] holds one sequence's [`KvCache`]; [`Session::eval`] / [`Session::eval_with`]
//!   score tokens, [`Session::generate`] returns a [`Generation`], an iterator of text pieces.
//! - [`Model::forward`] is the transformer itself (gemma3, llama, qwen2), reading every weight
//!   in place through the layer cache with `strata_quant`'s kernels.
//! - [`Batcher`] decodes many sequences together (continuous batching): one forward pass per
//!   step over every running sequence, so each layer is fetched once per step for all of them.
//! - [`bench::run_test`] measures throughput with llama-bench's semantics (`strata bench`).
//! - [`Sampler`] picks tokens: greedy, temperature, top-k, top-p, min-p, repetition penalty,
//!   with a seeded RNG of its own so a seed gives the same text everywhere.
//!
//! ```no_run
//! use strata_engine::{Engine, EngineConfig, GenerateOptions, SamplerConfig};
//!
//! let engine = Engine::open("models/gemma-3-270m-q4_k_m.gguf", EngineConfig::default())?;
//! let prompt = engine.tokenizer().encode("The capital of France is", true, false)?;
//! let mut session = engine.session()?;
//! let opts = GenerateOptions { max_tokens: 16, sampler: SamplerConfig::greedy(), ..Default::default() };
//! for piece in session.generate(&prompt, opts)? {
//!     print!("{}", piece?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod argsort;
pub mod attention;
mod batch;
pub mod bench;
mod chat;
pub mod config;
mod engine;
mod error;
mod generate;
pub mod kv_cache;
pub mod mathf;
pub mod model;
pub mod ops;
pub mod sampler;
pub mod tokenizer;

pub use batch::{BatchConfig, BatchStats, Batcher, SeqId, SeqUpdate};
pub use chat::{ChatMessage, ChatTemplate, GEMMA_TEMPLATE};
pub use config::{Arch, FfnActivation, ModelConfig, RopeParams, RopeStyle};
pub use engine::{
    Engine, EngineConfig, RunStats, Session, DEFAULT_BATCH, DEFAULT_N_CTX, MAX_THREADS,
};
pub use error::{ConfigError, EngineError};
pub use generate::{GenerateOptions, Generation, StopReason};
pub use kv_cache::{KvCache, KvType};
pub use model::{LogitsFor, Model, SeqChunk};
pub use sampler::{Rng, Sampler, SamplerConfig};
pub use strata_layer_cache::{Backend, Budget, CacheConfig, CacheStats, ExpertPolicy};

//! Errors of the engine, each with the context needed to act on it.

use thiserror::Error;

/// A model's metadata cannot be turned into a [`crate::ModelConfig`].
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `general.architecture` names a family the engine does not implement.
    #[error("unsupported architecture `{arch}` (supported: gemma3, llama, qwen2)")]
    UnsupportedArch {
        /// The architecture named by the file.
        arch: String,
    },
    /// A required metadata key is absent.
    #[error("missing metadata key `{key}`")]
    MissingKey {
        /// The full key, e.g. `llama.embedding_length`.
        key: String,
    },
    /// A metadata key has the wrong type.
    #[error("metadata key `{key}`")]
    Metadata {
        /// The full key.
        key: String,
        /// What the GGUF reader reported.
        #[source]
        source: strata_gguf::Error,
    },
    /// A required tensor is absent.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// Values that cannot describe a working model.
    #[error("invalid model configuration: {what}")]
    Invalid {
        /// What is wrong, with the values.
        what: String,
    },
    /// A feature of the model that the engine does not implement.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What the model asks for.
        what: String,
    },
}

/// Any failure while loading a model or running it.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The model configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Opening the file or reading weights through the layer cache failed.
    #[error("layer cache")]
    Cache(#[from] strata_layer_cache::Error),
    /// A quantized kernel refused its inputs.
    #[error("kernel on tensor `{tensor}`")]
    Kernel {
        /// The weight tensor involved.
        tensor: String,
        /// What the kernel reported.
        #[source]
        source: strata_quant::QuantError,
    },
    /// The tokenizer could not be built or failed on the input.
    #[error("tokenizer")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// A tensor has a shape other than the configuration implies.
    #[error("tensor `{name}` has dims {dims:?}, expected {expected:?}")]
    Shape {
        /// The tensor name.
        name: String,
        /// Its dims as stored (ggml order).
        dims: Vec<u64>,
        /// The dims the configuration implies.
        expected: Vec<u64>,
    },
    /// A tensor's data type cannot be used where it appears.
    #[error("tensor `{name}` has unsupported type {ty} for {usage}")]
    TensorType {
        /// The tensor name.
        name: String,
        /// Its type.
        ty: strata_gguf::GgmlType,
        /// Where it was used.
        usage: &'static str,
    },
    /// The prompt plus the tokens to generate do not fit the KV cache.
    #[error(
        "context overflow: {needed} positions needed but the KV cache holds {n_ctx} \
         (raise the context length, up to the model's {n_ctx_train})"
    )]
    ContextOverflow {
        /// Positions the request needs.
        needed: usize,
        /// Positions the cache holds.
        n_ctx: usize,
        /// The model's trained context length.
        n_ctx_train: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} out of range (vocabulary has {n_vocab} tokens)")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// An empty input where at least one token is required.
    #[error("empty input: at least one token is required")]
    EmptyInput,
    /// The chat template does not parse or failed to render a conversation.
    #[error("chat template {what}")]
    ChatTemplate {
        /// What went wrong, with minijinja's message.
        what: String,
    },
    /// Every slot of a [`crate::Batcher`] holds a running sequence.
    #[error("no free slot: all {n_slots} parallel sequences are running")]
    NoFreeSlot {
        /// Slots of the batcher.
        n_slots: usize,
    },
    /// The thread pool could not be created.
    #[error("thread pool with {threads} threads: {message}")]
    ThreadPool {
        /// Requested threads.
        threads: usize,
        /// What rayon reported.
        message: String,
    },
    /// The KV cache could not be allocated.
    #[error(
        "the KV cache of {n_ctx} positions needs {bytes} bytes, which could not be allocated \
         (lower the context length)"
    )]
    KvAlloc {
        /// Positions asked for.
        n_ctx: usize,
        /// Bytes they need, all layers' keys and values.
        bytes: u128,
    },
    /// A setting outside its valid range (sampling, context length, batch size).
    #[error("invalid setting: {what}")]
    InvalidSetting {
        /// The setting and its value.
        what: String,
    },
}

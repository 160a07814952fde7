//! The error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong opening a cache, reading a layer or parsing a config.
///
/// Variants carry the context needed to act on them (which file, offset, key or value); tests
/// match on variants, not on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A positioned read failed at the operating-system level.
    #[error("reading {len} bytes at offset {offset} of {what}: {source}")]
    Io {
        /// The storage that failed (usually a path).
        what: String,
        /// Absolute byte offset of the read.
        offset: u64,
        /// Length of the read in bytes.
        len: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Opening (or mapping) a file failed.
    #[error("opening {path}: {source}", path = path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A read asked for bytes beyond the end of the storage (for example a file truncated after
    /// the cache was opened).
    #[error("{what}: read of {len} bytes at offset {offset} runs past the end ({available} bytes available)")]
    OutOfBounds {
        /// The storage (usually a path).
        what: String,
        /// Absolute byte offset of the read.
        offset: u64,
        /// Length of the read in bytes.
        len: u64,
        /// Bytes the storage holds now.
        available: u64,
    },
    /// The GGUF header or tensor table could not be parsed.
    #[error("parsing the GGUF header: {0}")]
    Gguf(#[from] strata_gguf::Error),
    /// The tensor table is inconsistent with the file (a tensor outside the file, a layer gap...).
    #[error("bad tensor layout: {0}")]
    Layout(String),
    /// The budget is below what the model needs to run with this prefetch window.
    #[error(
        "budget of {budget} bytes is below the minimum of {minimum} bytes for this model \
         (globals {globals} + ({slots} slots) x largest layer {largest_layer} + \
         {experts_used} routed experts x {expert_bytes}); \
         use `budget = \"min\"` or at least {minimum} bytes"
    )]
    BudgetTooSmall {
        /// The budget that was asked for, in bytes.
        budget: u64,
        /// The smallest budget that works, in bytes.
        minimum: u64,
        /// Bytes taken by the pinned globals.
        globals: u64,
        /// Bytes of one layer slot (the largest layer, rounded up to the read alignment).
        largest_layer: u64,
        /// Number of layer slots the minimum provides for (prefetch window + 1).
        slots: u64,
        /// Experts routed per token and layer (`<arch>.expert_used_count`; 0 without experts):
        /// the expert slots the minimum provides for.
        experts_used: u64,
        /// Bytes of one expert slot (0 without experts).
        expert_bytes: u64,
    },
    /// `experts` was asked for an expert the layer does not have.
    #[error("expert {expert} of layer {layer} does not exist (the layer has {n_experts} experts)")]
    NoSuchExpert {
        /// The layer.
        layer: usize,
        /// The requested expert.
        expert: usize,
        /// Experts of that layer (0 for a dense layer).
        n_experts: usize,
    },
    /// `experts` was asked for more distinct experts at once than there are expert slots.
    #[error(
        "asked for {asked} distinct experts of layer {layer} at once, but the budget pays for \
         {slots} expert slots"
    )]
    TooManyExperts {
        /// The layer.
        layer: usize,
        /// Distinct experts asked for.
        asked: usize,
        /// Expert slots of the plan.
        slots: usize,
    },
    /// Loading an expert failed; wraps the storage error with the layer and expert.
    #[error("loading expert {expert} of layer {layer}: {source}")]
    Expert {
        /// The layer.
        layer: usize,
        /// The expert.
        expert: usize,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// `get` was asked for a layer the model does not have.
    #[error("layer {layer} does not exist (the model has {n_layers} layers)")]
    NoSuchLayer {
        /// The requested layer.
        layer: usize,
        /// Number of layers in the model.
        n_layers: usize,
    },
    /// `LayerRef::tensor` was asked for a tensor the layer does not have.
    #[error("tensor `{name}` not found in {scope}")]
    NoSuchTensor {
        /// The requested name.
        name: String,
        /// `"globals"` or `"layer N"`.
        scope: String,
    },
    /// `LayerRef::tensor` was asked for a row global that the budget left in storage.
    #[error(
        "global tensor `{name}` is left in storage by the budget (a row global): read its rows \
         with LayerCache::read_global"
    )]
    NotPinned {
        /// The requested name.
        name: String,
    },
    /// A configuration value was rejected.
    #[error("config key `{key}`: invalid value `{value}`; accepted: {accepted}")]
    Config {
        /// The key, with its section (`cache.budget`).
        key: String,
        /// The value that was given.
        value: String,
        /// What the key accepts.
        accepted: String,
    },
    /// The configuration file is not valid TOML or has unknown keys.
    #[error("config: {0}")]
    ConfigToml(#[from] toml::de::Error),
    /// The chosen backend was compiled out (its cargo feature is off) or cannot serve this storage.
    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable {
        /// The backend's name.
        backend: String,
        /// Why.
        reason: String,
    },
    /// Allocating the arena or a layer buffer failed.
    #[error("allocating {bytes} bytes for {what} failed")]
    Alloc {
        /// What the memory was for.
        what: &'static str,
        /// Requested size.
        bytes: u64,
    },
    /// A value does not fit in this platform's address space.
    #[error("{what} of {value} bytes does not fit in this platform's address space")]
    TooLarge {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// Loading a layer failed; wraps the storage error with the layer number.
    #[error("loading layer {layer}: {source}")]
    Layer {
        /// The layer.
        layer: usize,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

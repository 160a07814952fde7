//! Storage backends and a budgeted, prefetching layer cache for GGUF models.
//!
//! A transformer reads its layers in a cycle, `0, 1, …, N−1`, once per token. This crate keeps
//! that scan inside a memory budget:
//!
//! - [`Storage`]: where the bytes come from — [`FileStorage`] (positioned reads, optional
//!   O_DIRECT), [`MmapStorage`] (zero-copy), [`MemStorage`] (bytes already in memory), or any
//!   host-provided implementation.
//! - [`LayerMap`]: the GGUF tensor table split into pinned globals and `blk.N` layers with byte
//!   extents.
//! - [`LayerCache`]: `get(layer)` returns a [`LayerRef`] whose [`TensorView`]s borrow the
//!   layer's bytes. The budget ([`Budget`]) is divided into globals and layer slots (below a
//!   full budget, the caller's row globals stay in storage and
//!   [`LayerCache::read_global`] reads their rows); the
//!   [`Policy::Cyclic`] policy keeps as many whole layers resident for good as fit beside w
//!   streaming slots (each resident layer at its own size) and streams the others through those
//!   slots while a background thread reads the next w layers; [`Policy::Lru`] is kept for
//!   comparison. [`CacheStats`] counts hits, loads, bytes, stalls and the peak resident
//!   bytes, which never exceed the budget.
//! - Mixture-of-experts models: a layer's slot holds its dense part only (its `*_exps` expert
//!   tensors are left out, [`LayerInfo::experts`]); [`LayerCache::experts`] pins the experts a
//!   token was routed to ([`ExpertSet`]: a 2-D [`TensorView`] per expert and expert tensor),
//!   reading the missing ones in parallel into budgeted expert slots of one expert each,
//!   evicted by [`ExpertPolicy`] (LFU with aging by default, or LRU). The budget pays for the
//!   globals, the dense slots, and at least the K routed experts of one layer
//!   ([`CachePlan`]).
//! - [`CacheConfig`]: backend, budget, window and policy, from TOML ([`ConfigOverrides`]) and
//!   flags; keys left unset default by the budget against the model's size
//!   ([`ConfigOverrides::resolve`]: below it, the file backend with O_DIRECT).
//!
//! Backends, by feature: `mmap` ([`Backend::Mmap`]), `file` ([`Backend::File`]), `arena`
//! ([`Backend::Arena`]: one allocation of exactly the budget, u64 offsets throughout, the native
//! model of a WebAssembly Memory64 heap). `threads` adds the background prefetcher. With all
//! features off the crate still builds: the arena backend over a host-provided [`Storage`], with
//! synchronous loads — no filesystem, no mmap, no threads.
//!
//! ```no_run
//! # fn main() -> Result<(), strata_layer_cache::Error> {
//! use strata_layer_cache::{Budget, CacheConfig, LayerCache};
//! let config = CacheConfig { budget: Budget::Percent(25.0), ..CacheConfig::default() };
//! let cache = LayerCache::open_path("model.gguf".as_ref(), &config)?;
//! for layer in 0..cache.n_layers() {
//!     let l = cache.get(layer)?;
//!     let q = l.tensor("attn_q.weight")?;
//!     println!("{} {:?} {} bytes", q.ty, q.dims, q.bytes.len());
//! }
//! println!("{}", cache.stats().summary());
//! # Ok(()) }
//! ```

mod aligned;
mod cache;
mod clock;
mod config;
mod error;
#[cfg(feature = "file")]
mod file;
mod layer_map;
#[cfg(feature = "mmap")]
mod mmap;
mod stats;
mod storage;
#[cfg(test)]
mod testing;

pub use cache::{CachePlan, ExpertSet, LayerCache, LayerRef, PreloadProgress, TensorView};
pub use clock::Clock;
pub use config::{
    Backend, Budget, CacheConfig, CacheSection, ConfigOverrides, ExpertPolicy, Policy,
    StorageSection, MAX_IO_THREADS, MAX_PREFETCH,
};
pub use error::Error;
#[cfg(feature = "file")]
pub use file::FileStorage;
pub use layer_map::{is_expert_tensor, ExpertTensor, LayerInfo, LayerMap, ReadRange, TensorEntry};
#[cfg(feature = "mmap")]
pub use mmap::MmapStorage;
pub use stats::{human_bytes, CacheStats};
pub use storage::{MemStorage, Storage, StorageReader};

/// Alignment of every read the cache issues and of every buffer it reads into (O_DIRECT needs
/// offsets, lengths and addresses aligned to the device's logical block; 4096 covers them).
pub const READ_ALIGN: u64 = 4096;

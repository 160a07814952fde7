//! A tiny valid model (engine/tests/common's synthetic llama, 3 layers) with its header
//! edited by the input — each 5-byte chunk is (u32 offset into the header, new byte) — opened
//! through the arena backend and, if it opens, run for one prompt and two greedy tokens.
//! Whatever the header says: an error, never a panic, a hang or an allocation the file
//! cannot back.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, GenerateOptions, SamplerConfig,
};
use strata_gguf::{Gguf, ReadOptions};
use strata_layer_cache::{LayerCache, MemStorage, Storage};

#[path = "../../engine/tests/common/mod.rs"]
mod common;

/// The model's bytes and its header length.
fn model() -> &'static (Vec<u8>, usize) {
    static M: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    M.get_or_init(|| {
        let bytes = std::fs::read(common::write_model("llama", 7)).unwrap();
        let header = Gguf::from_bytes(&bytes).unwrap().data_offset() as usize;
        (bytes, header)
    })
}

fuzz_target!(|data: &[u8]| {
    let (orig, header) = model();
    let mut bytes = orig.clone();
    for c in data.chunks_exact(5) {
        let at = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize % header;
        bytes[at] = c[4];
    }
    let opts = ReadOptions::new().max_memory(64 << 20);
    let Ok(gguf) = Gguf::from_bytes_with(&bytes, &opts) else {
        return;
    };
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes));
    let cfg = CacheConfig {
        backend: Backend::Arena,
        budget: Budget::All,
        ..CacheConfig::default()
    };
    let Ok(cache) = LayerCache::open(storage, gguf, &cfg) else {
        return;
    };
    // A context small enough that a hostile context length cannot make the KV cache large.
    let config = EngineConfig {
        n_ctx: Some(16),
        ..EngineConfig::default()
    };
    let Ok(engine) = Engine::from_cache(cache, config) else {
        return;
    };
    let Ok(mut session) = engine.session() else {
        return;
    };
    let opts = GenerateOptions {
        max_tokens: 2,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eog: false,
    };
    if let Ok(ids) = engine.tokenizer().encode("a b", true, false) {
        if let Ok(gen) = session.generate(&ids, opts) {
            for piece in gen {
                if piece.is_err() {
                    break;
                }
            }
        }
    }
});

//! The portable core as a WebAssembly module: the arena backend over bytes in the module's own
//! memory, no filesystem, no mmap, no threads (build with `--no-default-features --features
//! arena`; see `../shared/WASM.md` for the wasm64 toolchain). The host calls `smoke()`, which
//! writes a 12-layer model into memory, scans it three times through the smallest budget and
//! returns the number of tensors whose bytes matched a direct read, or 0 on any failure.
//! Natively it builds as a cdylib too.

use std::sync::Arc;

use strata_gguf::{GgmlType, Gguf, GgufWriter};
use strata_layer_cache::{Backend, Budget, CacheConfig, LayerCache, MemStorage, Storage};

const LAYERS: usize = 12;

fn scan() -> Option<u64> {
    let mut w = GgufWriter::new();
    let mut seed = 0x2545_f491_u64;
    let mut bytes = |n: usize| {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect::<Vec<u8>>()
    };
    w.add_tensor("token_embd.weight", GgmlType::Q8_0, &[64, 100], bytes(6800))
        .ok()?;
    for i in 0..LAYERS {
        w.add_tensor(
            format!("blk.{i}.attn_q.weight"),
            GgmlType::Q8_0,
            &[256, 256],
            bytes(69632),
        )
        .ok()?;
        w.add_tensor(
            format!("blk.{i}.ffn_up.weight"),
            GgmlType::F16,
            &[256, 300],
            bytes(153600),
        )
        .ok()?;
    }
    w.add_tensor("output_norm.weight", GgmlType::F32, &[64], bytes(256))
        .ok()?;
    let file = w.to_vec().ok()?;
    let gguf = Gguf::from_bytes(&file).ok()?;
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(file.clone()));
    let config = CacheConfig {
        backend: Backend::Arena,
        budget: Budget::Min,
        prefetch: 2,
        io_threads: 1,
        ..CacheConfig::default()
    };
    let cache = LayerCache::open(storage, gguf.clone(), &config).ok()?;
    let mut matched = 0;
    for _token in 0..3 {
        for layer in 0..LAYERS {
            let l = cache.get(layer).ok()?;
            for t in l.tensors() {
                let info = gguf.tensor(&format!("blk.{layer}.{}", t.name))?;
                if t.bytes != gguf.tensor_data(&file, info).ok()? {
                    return None;
                }
                matched += 1;
            }
        }
    }
    let s = cache.stats();
    (s.peak_resident_bytes <= s.budget_bytes && s.hits == 2).then_some(matched)
}

/// Entry point for the host: tensors verified (72 expected), or 0 on failure.
#[no_mangle]
pub extern "C" fn smoke() -> u64 {
    scan().unwrap_or(0)
}

//! Open → generate → fault, 100 times: every cycle's threads end and its memory is returned, so
//! the process's thread count and RSS come back to where they were. Its own test binary (one
//! test), so that no other test's threads are counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use strata_engine::SamplerConfig;
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, GenerateOptions};
use strata_gguf::Gguf;
use strata_layer_cache::{Error, LayerCache, MemStorage, Storage};

mod common;

/// Fails every read from the `fail_from`-th on.
struct FailingFrom {
    inner: MemStorage,
    reads: AtomicUsize,
    fail_from: usize,
}

impl Storage for FailingFrom {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if self.reads.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(Error::Io {
                what: "failing test storage".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other("injected failure"),
            });
        }
        self.inner.read_at(offset, buf)
    }

    fn describe(&self) -> String {
        "failing test storage".into()
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One cycle: open over a storage that fails from read `fail_from` on, generate until the
/// fault stops it, drop everything.
fn cycle(bytes: &[u8], backend: Backend, prefetch: usize, fail_from: usize) {
    let storage = Arc::new(FailingFrom {
        inner: MemStorage::new(bytes.to_vec()),
        reads: AtomicUsize::new(0),
        fail_from,
    });
    let cfg = CacheConfig {
        backend,
        budget: Budget::Min,
        prefetch,
        io_threads: 2,
        ..CacheConfig::default()
    };
    let gguf = Gguf::from_bytes(bytes).unwrap();
    let Ok(cache) = LayerCache::open(storage, gguf, &cfg) else {
        return;
    };
    let engine = Engine::from_cache(cache, EngineConfig::default()).unwrap();
    let mut session = engine.session().unwrap();
    let opts = GenerateOptions {
        max_tokens: 64,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eog: false,
    };
    let failed = match session.generate(&[1, 5, 9], opts) {
        Err(_) => true,
        Ok(gen) => gen.into_iter().any(|p| p.is_err()),
    };
    assert!(
        failed,
        "read {fail_from} on: no fault reached the generation"
    );
}

#[test]
fn a_hundred_open_generate_fault_cycles_leave_threads_and_memory_as_they_were() {
    let bytes = std::fs::read(common::write_model_layers("llama", 31, 8)).unwrap();
    let configs = [
        (Backend::File, 0),
        (Backend::File, 2),
        (Backend::Arena, 1),
        (Backend::Arena, 4),
    ];
    // Warm-up: the global thread pool and the allocator's arenas exist from here on.
    for &(backend, prefetch) in &configs {
        cycle(&bytes, backend, prefetch, 12);
    }
    let (threads0, rss0) = (threads(), rss_kib());
    for i in 0..100 {
        let (backend, prefetch) = configs[i % configs.len()];
        cycle(&bytes, backend, prefetch, 4 + i % 40);
    }
    let (threads1, rss1) = (threads(), rss_kib());
    eprintln!("threads {threads0} → {threads1}, RSS {rss0} KiB → {rss1} KiB");
    assert_eq!(threads1, threads0, "threads left running");
    // The model is 8 layers of ≈ 0.4 MB, 100 cycles of it would be 40 MB if kept.
    assert!(
        rss1 <= rss0 + 8 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}

//! One conformance suite, run against every backend (and O_DIRECT, budgets, windows, policies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use strata_layer_cache::{
    Backend, Budget, CacheConfig, Error, FileStorage, LayerCache, LayerRef, MemStorage, Policy,
    Storage,
};

use crate::common::{
    budget_for, mem_storage, random_bytes, FaultyStorage, SwitchedStorage, TestModel,
};

const N_LAYERS: usize = 7;

/// Every backend configuration the suite runs against.
fn backends() -> Vec<(Backend, bool)> {
    vec![
        (Backend::Mmap, false),
        (Backend::File, false),
        (Backend::File, true),
        (Backend::Arena, false),
        (Backend::Arena, true),
    ]
}

fn config(
    backend: Backend,
    direct_io: bool,
    budget: Budget,
    prefetch: usize,
    policy: Policy,
) -> CacheConfig {
    CacheConfig {
        backend,
        direct_io,
        budget,
        prefetch,
        policy,
        io_threads: 3,
        ..CacheConfig::default()
    }
}

/// Every tensor of `l` equals the file's bytes.
fn check_layer(model: &TestModel, layer: usize, l: &LayerRef) {
    assert_eq!(l.layer(), Some(layer));
    let mut n = 0;
    for t in model.gguf.tensors() {
        let prefix = format!("blk.{layer}.");
        if let Some(short) = t.name.strip_prefix(&prefix) {
            let v = l.tensor(short).unwrap();
            assert_eq!(v.ty, t.ty);
            assert_eq!(v.dims, &t.dims[..]);
            assert!(
                v.bytes == model.tensor_bytes(&t.name),
                "layer {layer} tensor {short}: bytes differ from the file"
            );
            n += 1;
        }
    }
    assert_eq!(n, l.tensors().count());
    assert!(l.get("no_such.weight").is_none());
    assert!(matches!(
        l.tensor("no_such.weight"),
        Err(Error::NoSuchTensor { .. })
    ));
}

fn check_globals(model: &TestModel, cache: &LayerCache) {
    let g = cache.globals();
    for name in ["token_embd.weight", "output_norm.weight", "output.weight"] {
        assert!(
            g.tensor(name).unwrap().bytes == model.tensor_bytes(name),
            "global {name}"
        );
    }
    assert_eq!(g.tensors().count(), 3);
    assert!(g.get("blk.0.attn_q.weight").is_none());
}

/// A scan order: three tokens' cyclic passes, then a scattered order.
fn scan_order() -> Vec<usize> {
    let mut order: Vec<usize> = (0..3).flat_map(|_| 0..N_LAYERS).collect();
    order.extend(random_bytes(77, 40).iter().map(|b| *b as usize % N_LAYERS));
    order
}

#[test]
fn every_tensor_matches_the_file_for_every_backend_budget_window_and_policy() {
    let model = TestModel::new("bytes", N_LAYERS);
    let budgets = [
        Budget::All,
        Budget::Min,
        budget_for(&model, 5),
        Budget::Percent(100.0),
    ];
    for (backend, direct) in backends() {
        for budget in budgets {
            for prefetch in [0, 1, 2] {
                for policy in [Policy::Cyclic, Policy::Lru] {
                    let cfg = config(backend, direct, budget, prefetch, policy);
                    let cache = LayerCache::open_path(model.path(), &cfg)
                        .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                    assert_eq!(cache.n_layers(), N_LAYERS);
                    check_globals(&model, &cache);
                    for layer in scan_order() {
                        let l = cache.get(layer).unwrap();
                        check_layer(&model, layer, &l);
                    }
                    let s = cache.stats();
                    assert!(
                        s.peak_resident_bytes <= s.budget_bytes,
                        "{cfg:?}: peak {} > budget {}",
                        s.peak_resident_bytes,
                        s.budget_bytes
                    );
                    assert_eq!(
                        s.hits + s.prefetch_hits + s.sync_loads,
                        s.gets,
                        "{cfg:?}: {s}"
                    );
                    assert_eq!(s.read_errors, 0);
                }
            }
        }
    }
}

#[test]
fn prefetch_on_and_off_give_identical_bytes() {
    let model = TestModel::new("prefetch", N_LAYERS);
    for (backend, direct) in backends() {
        let digest = |prefetch| {
            let cache = LayerCache::open_path(
                model.path(),
                &config(backend, direct, Budget::Min, prefetch, Policy::Cyclic),
            )
            .unwrap();
            let mut all = Vec::new();
            for layer in scan_order() {
                let l = cache.get(layer).unwrap();
                for t in l.tensors() {
                    all.extend_from_slice(t.bytes);
                }
            }
            all
        };
        let off = digest(0);
        assert!(
            off == digest(1) && off == digest(3),
            "{backend:?}: prefetch changed bytes"
        );
    }
}

#[test]
fn several_threads_reading_at_once() {
    let model = TestModel::new("threads", N_LAYERS);
    for (backend, direct) in backends() {
        for policy in [Policy::Cyclic, Policy::Lru] {
            // Budget for 6 slots: four threads each pin at most one layer at a time.
            let cache = LayerCache::open_path(
                model.path(),
                &config(backend, direct, budget_for(&model, 6), 2, policy),
            )
            .unwrap();
            std::thread::scope(|scope| {
                for t in 0..4u64 {
                    let (cache, model) = (&cache, &model);
                    scope.spawn(move || {
                        for &b in &random_bytes(100 + t, 60) {
                            let layer = b as usize % N_LAYERS;
                            let l = cache.get(layer).unwrap();
                            check_layer(model, layer, &l);
                        }
                    });
                }
            });
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
            assert_eq!(s.gets, 240);
        }
    }
}

#[test]
fn a_failing_read_surfaces_as_an_error_then_the_layer_loads_again() {
    let model = TestModel::new("faulty", N_LAYERS);
    // Reads the open itself issues (the globals).
    let open_reads = {
        let storage = Arc::new(FaultyStorage::new(mem_storage(&model), 0));
        let cfg = CacheConfig {
            backend: Backend::File,
            budget: Budget::Min,
            prefetch: 0,
            io_threads: 1,
            ..CacheConfig::default()
        };
        let _cache = LayerCache::open(storage.clone(), model.gguf.clone(), &cfg).unwrap();
        storage.reads.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert!(open_reads >= 1);
    for backend in [Backend::File, Backend::Arena] {
        for prefetch in [0, 2] {
            for fail_at in [1, 2, 5, 9] {
                let storage = Arc::new(FaultyStorage::new(mem_storage(&model), fail_at));
                let cfg = CacheConfig {
                    backend,
                    budget: Budget::Min,
                    prefetch,
                    io_threads: 1,
                    ..CacheConfig::default()
                };
                let opened = LayerCache::open(storage.clone(), model.gguf.clone(), &cfg);
                let cache = match opened {
                    // The globals are read at open: a failure there fails the open.
                    Err(e) => {
                        assert!(matches!(e, Error::Io { .. }), "{e}");
                        assert!(
                            fail_at <= open_reads,
                            "open failed on read {fail_at} of {open_reads}"
                        );
                        continue;
                    }
                    Ok(c) => c,
                };
                assert!(fail_at > open_reads);
                let mut errors = 0;
                for _token in 0..3 {
                    for layer in 0..N_LAYERS {
                        match cache.get(layer) {
                            Ok(l) => check_layer(&model, layer, &l),
                            Err(Error::Layer {
                                layer: failed,
                                source,
                            }) => {
                                assert_eq!(failed, layer);
                                assert!(matches!(*source, Error::Io { .. }), "{source}");
                                errors += 1;
                                // The next get retries and succeeds.
                                check_layer(&model, layer, &cache.get(layer).unwrap());
                            }
                            Err(e) => panic!("unexpected error {e}"),
                        }
                    }
                }
                // A demand read's failure reaches the caller; a prefetch's is read again by
                // the `get` (and succeeds, the fault being one-shot). Which read is the
                // `fail_at`-th one is up to timing when prefetching.
                let what = format!("{backend:?} prefetch {prefetch} fail_at {fail_at}");
                if prefetch == 0 {
                    assert_eq!(errors, 1, "{what}");
                } else {
                    assert!(errors <= 1, "{what}");
                }
                assert_eq!(cache.stats().read_errors, 1, "{what}");
            }
        }
    }
}

#[test]
fn prefetches_that_failed_while_the_storage_was_down_are_read_again_once_it_is_back() {
    let model = TestModel::new("switched", N_LAYERS);
    for backend in [Backend::File, Backend::Arena] {
        let storage = Arc::new(SwitchedStorage {
            inner: mem_storage(&model),
            failing: AtomicBool::new(false),
        });
        let cfg = CacheConfig {
            backend,
            budget: Budget::Min,
            prefetch: 2,
            io_threads: 1,
            ..CacheConfig::default()
        };
        let cache = LayerCache::open(storage.clone(), model.gguf.clone(), &cfg).unwrap();
        storage.failing.store(true, Ordering::SeqCst);
        // Layer 3 is beyond anything prefetched since the open: its get reads, and fails.
        assert!(cache.get(3).is_err());
        // The get started the prefetch of the next layers (as far as the budget allows): wait
        // until one of those has failed too.
        let mut spins = 0u64;
        while cache.stats().read_errors < 2 {
            spins += 1;
            assert!(spins < 10_000_000, "prefetch never ran: {}", cache.stats());
            std::thread::yield_now();
        }
        storage.failing.store(false, Ordering::SeqCst);
        for layer in 0..N_LAYERS {
            let l = cache.get(layer);
            let l = l.unwrap_or_else(|e| panic!("{backend:?} layer {layer}: {e}"));
            check_layer(&model, layer, &l);
        }
    }
}

#[test]
fn a_file_truncated_after_open_gives_errors_not_crashes() {
    let model = TestModel::new("trunc-src", N_LAYERS);
    for (backend, direct) in [
        (Backend::File, false),
        (Backend::File, true),
        (Backend::Arena, false),
        (Backend::Arena, true),
        // mmap too, as far as `get` goes: MADV_POPULATE_READ reports the missing pages as an
        // error where touching them would raise SIGBUS (bytes lent before the cut are another
        // matter: that is why `MmapStorage::open` is unsafe).
        (Backend::Mmap, false),
    ] {
        for prefetch in [0, 2] {
            let path = model.copy_to(&format!("trunc-{backend}-{direct}-{prefetch}"));
            let cache = LayerCache::open_path(
                &path,
                &config(backend, direct, Budget::Min, prefetch, Policy::Cyclic),
            )
            .unwrap();
            // Cut the file in the middle of the layers.
            let cut = cache.layer_map().layer(N_LAYERS / 2).unwrap().extent.start + 10;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(cut)
                .unwrap();
            let mut errors = 0;
            for _token in 0..2 {
                for layer in 0..N_LAYERS {
                    match cache.get(layer) {
                        Ok(l) => check_layer(&model, layer, &l),
                        Err(Error::Layer { source, .. }) => {
                            match backend {
                                Backend::Mmap => {
                                    assert!(matches!(*source, Error::Io { .. }), "{source}")
                                }
                                _ => assert!(
                                    matches!(*source, Error::OutOfBounds { .. }),
                                    "{source}"
                                ),
                            }
                            assert!(
                                source.to_string().contains(&*path.to_string_lossy()),
                                "{source}"
                            );
                            errors += 1;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
            assert!(
                errors >= N_LAYERS,
                "{backend:?}: layers past the cut must fail every time"
            );
            drop(cache);
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[test]
fn a_budget_below_the_minimum_is_refused_naming_it() {
    let model = TestModel::new("min", N_LAYERS);
    for (backend, direct) in backends() {
        for prefetch in [1, 2, 4] {
            let min = LayerCache::open_path(
                model.path(),
                &config(backend, direct, Budget::Min, prefetch, Policy::Cyclic),
            )
            .unwrap();
            let plan = min.plan().clone();
            assert_eq!(
                plan.minimum_bytes,
                plan.globals_bytes + (prefetch as u64 + 1) * plan.slot_bytes
            );
            assert_eq!(plan.budget_bytes, plan.minimum_bytes);
            let e = LayerCache::open_path(
                model.path(),
                &config(
                    backend,
                    direct,
                    Budget::Bytes(plan.minimum_bytes - 1),
                    prefetch,
                    Policy::Cyclic,
                ),
            )
            .unwrap_err();
            match &e {
                Error::BudgetTooSmall { minimum, .. } => assert_eq!(*minimum, plan.minimum_bytes),
                other => panic!("{other}"),
            }
            assert!(
                e.to_string().contains(&plan.minimum_bytes.to_string()),
                "{e}"
            );
        }
    }
}

#[test]
fn a_budget_above_everything_is_capped_at_room_for_every_layer() {
    let model = TestModel::new("cap", N_LAYERS);
    for (backend, direct) in backends() {
        let all = LayerCache::open_path(
            model.path(),
            &config(backend, direct, Budget::All, 2, Policy::Cyclic),
        )
        .unwrap();
        let huge = LayerCache::open_path(
            model.path(),
            &config(backend, direct, Budget::Bytes(1 << 50), 2, Policy::Cyclic),
        )
        .unwrap();
        assert_eq!(huge.plan(), all.plan());
        let plan = all.plan();
        assert_eq!(plan.slots, N_LAYERS);
        assert_eq!(plan.resident_layers, N_LAYERS);
        assert_eq!(plan.streaming_slots, 0);
        // Every layer at its own aligned size (they vary), not N × the largest.
        let sizes: u64 = (0..N_LAYERS)
            .map(|l| {
                let e = &all.layer_map().layer(l).unwrap().extent;
                strata_layer_cache::ReadRange::covering(e, model.bytes.len() as u64).footprint()
            })
            .sum();
        assert_eq!(plan.resident_bytes, sizes);
        assert!(sizes < N_LAYERS as u64 * plan.slot_bytes);
        assert_eq!(plan.budget_bytes, plan.globals_bytes + sizes);
    }
}

#[test]
fn out_of_range_layers_and_mmap_over_non_lending_storage_are_errors() {
    let model = TestModel::new("range", N_LAYERS);
    let cache = LayerCache::open_path(model.path(), &CacheConfig::default()).unwrap();
    assert!(matches!(
        cache.get(N_LAYERS),
        Err(Error::NoSuchLayer {
            layer: N_LAYERS,
            n_layers: N_LAYERS
        })
    ));
    let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(mem_storage(&model), 0));
    let e = LayerCache::open(faulty, model.gguf.clone(), &CacheConfig::default()).unwrap_err();
    assert!(matches!(e, Error::BackendUnavailable { .. }), "{e}");
    // A lending in-memory storage works with the zero-copy backend.
    let mem: Arc<dyn Storage> = Arc::new(MemStorage::new(model.bytes.clone()));
    let cache = LayerCache::open(mem, model.gguf.clone(), &CacheConfig::default()).unwrap();
    check_layer(&model, 3, &cache.get(3).unwrap());
}

#[test]
fn direct_io_reads_handle_unaligned_heads_and_tails() {
    let model = TestModel::new("odirect", 2);
    let f = FileStorage::open(model.path(), true).unwrap();
    let len = f.len() as usize;
    for (off, n) in [
        (0usize, 4096usize),
        (1, 10),
        (4095, 2),
        (100, 9000),
        (len - 7, 7),
        (0, len),
        (5000, len - 5000),
    ] {
        let mut buf = vec![0u8; n];
        f.read_at(off as u64, &mut buf).unwrap();
        assert!(
            buf == model.bytes[off..off + n],
            "O_DIRECT read at {off}+{n}"
        );
    }
    let mut buf = vec![0u8; 10];
    assert!(matches!(
        f.read_at(len as u64 - 5, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
}

//! Cyclic-optimal vs LRU on the per-token cyclic scan.

use std::sync::Arc;

use strata_layer_cache::{Backend, CacheConfig, Error, LayerCache, Policy, Storage};

use crate::common::{budget_for, mem_storage, FaultyStorage, TestModel};

/// Hits per token for `policy` with room for `k` of the largest layer and window `w`, measured
/// over tokens 2..=4 (token 1 fills the cache); with the evictions and the plan's resident
/// layers.
fn hits_per_token(
    model: &TestModel,
    backend: Backend,
    policy: Policy,
    k: u64,
    w: usize,
) -> (Vec<u64>, u64, usize) {
    let budget = budget_for(model, k);
    let cache = LayerCache::open_path(
        model.path(),
        &CacheConfig {
            backend,
            budget,
            prefetch: w,
            policy,
            ..CacheConfig::default()
        },
    )
    .unwrap();
    let plan = cache.plan().clone();
    match policy {
        Policy::Lru => assert_eq!(plan.slots as u64, k),
        // Resident layers take their own size, so at least K − w of them fit.
        Policy::Cyclic => assert_eq!(plan.slots, plan.resident_layers + plan.streaming_slots),
    }
    let n = cache.n_layers();
    for layer in 0..n {
        cache.get(layer).unwrap();
    }
    let mut per_token = Vec::new();
    for _ in 0..3 {
        let before = cache.stats();
        for layer in 0..n {
            cache.get(layer).unwrap();
        }
        let d = cache.stats().since(&before);
        assert_eq!(d.gets, n as u64);
        assert_eq!(d.hits + d.prefetch_hits + d.sync_loads, n as u64);
        per_token.push(d.hits);
    }
    let s = cache.stats();
    assert!(s.peak_resident_bytes <= s.budget_bytes);
    (per_token, s.evictions, plan.resident_layers)
}

#[test]
fn cyclic_hit_ratio_is_exactly_k_minus_w_over_n_and_lru_collapses() {
    const N: usize = 10;
    let model = TestModel::new("policy", N);
    for backend in [Backend::Mmap, Backend::File, Backend::Arena] {
        for (k, w) in [(5u64, 2usize), (3, 2), (8, 1), (9, 3), (6, 4)] {
            let (cyclic, _, resident) = hits_per_token(&model, backend, Policy::Cyclic, k, w);
            assert!(resident as u64 >= k - w as u64);
            for hits in &cyclic {
                // hit ratio per token = R / N exactly (R ≥ K − w: resident layers are packed
                // by their own sizes).
                assert_eq!(
                    *hits, resident as u64,
                    "{backend:?} cyclic K={k} w={w}: {cyclic:?}"
                );
            }
            let (lru, evictions, _) = hits_per_token(&model, backend, Policy::Lru, k, w);
            assert_eq!(
                lru,
                vec![0, 0, 0],
                "{backend:?} LRU K={k} w={w}: a cyclic scan larger than the cache never hits"
            );
            assert!(evictions > 0);
        }
        // With room for every layer both policies hit every time after the first token.
        let (all, _, _) = hits_per_token(&model, backend, Policy::Cyclic, N as u64, 2);
        assert_eq!(all, vec![N as u64; 3]);
        let (all, _, _) = hits_per_token(&model, backend, Policy::Lru, N as u64, 2);
        assert_eq!(all, vec![N as u64; 3]);
    }
}

#[test]
fn preload_reads_exactly_the_resident_layers_then_they_hit() {
    const N: usize = 6;
    let model = TestModel::new("preload", N);
    for (policy, k, w, expected) in [
        (Policy::Cyclic, 4u64, 1usize, 3usize),
        (Policy::Cyclic, 6, 2, 6),
        (Policy::Lru, 4, 1, 0),
    ] {
        let cache = LayerCache::open_path(
            model.path(),
            &CacheConfig {
                backend: Backend::Arena,
                budget: budget_for(&model, k),
                prefetch: w,
                policy,
                ..CacheConfig::default()
            },
        )
        .unwrap();
        let mut calls = Vec::new();
        let loaded = cache
            .preload(&mut |done, total| calls.push((done, total)))
            .unwrap();
        assert_eq!(loaded, expected, "{policy:?} k={k} w={w}");
        assert_eq!(
            calls,
            (1..=expected).map(|d| (d, expected)).collect::<Vec<_>>()
        );
        // The preloaded layers are now plain hits.
        let before = cache.stats();
        for layer in 0..expected {
            cache.get(layer).unwrap();
        }
        assert_eq!(cache.stats().since(&before).hits, expected as u64);
    }
}

#[test]
fn preload_reports_bytes_and_a_failed_read_leaves_the_layers_loadable() {
    use std::sync::atomic::Ordering;
    const N: usize = 9;
    let model = TestModel::new("preload-bytes", N);
    for backend in [Backend::File, Backend::Arena] {
        let config = CacheConfig {
            backend,
            budget: budget_for(&model, 6),
            prefetch: 0,
            io_threads: 3,
            ..CacheConfig::default()
        };
        let open = |fail_at| {
            let faulty = Arc::new(FaultyStorage::new(mem_storage(&model), fail_at));
            let storage = faulty.clone() as Arc<dyn Storage>;
            let cache = LayerCache::open(storage, model.gguf.clone(), &config).unwrap();
            (faulty, cache)
        };
        // Without failures: progress in bytes up to exactly the resident layers' sizes.
        let (faulty, cache) = open(0);
        let at_open = faulty.reads.load(Ordering::SeqCst);
        let plan = cache.plan().clone();
        assert!(plan.resident_layers >= 4, "{plan:?}");
        let mut seen = Vec::new();
        let done = cache.preload_progress(&mut |p| seen.push(*p)).unwrap();
        assert_eq!(done.layers, plan.resident_layers);
        assert_eq!(done.total_layers, plan.resident_layers);
        assert_eq!(done.bytes, plan.resident_bytes);
        assert_eq!(done.total_bytes, plan.resident_bytes);
        assert!(seen
            .windows(2)
            .all(|w| w[0].bytes < w[1].bytes && w[0].layers <= w[1].layers));
        assert_eq!(seen.last(), Some(&done));
        // One failing read: an error naming a layer; the next preload completes and every
        // resident layer holds the file's bytes.
        for fail_at in 1..=3 {
            let (faulty, cache) = open(at_open + fail_at);
            match cache.preload(&mut |_, _| {}) {
                Err(Error::Layer { layer, .. }) => assert!(layer < plan.resident_layers),
                other => panic!("{backend:?} fail_at {fail_at}: {other:?}"),
            }
            assert_eq!(cache.stats().read_errors, 1);
            assert_eq!(cache.preload(&mut |_, _| {}).unwrap(), plan.resident_layers);
            assert!(faulty.reads.load(Ordering::SeqCst) > at_open + fail_at);
            for layer in 0..N {
                let l = cache.get(layer).unwrap();
                let name = format!("blk.{layer}.attn_q.weight");
                assert_eq!(
                    l.tensor("attn_q.weight").unwrap().bytes,
                    model.tensor_bytes(&name)
                );
            }
            let s = cache.stats();
            assert!(s.peak_resident_bytes <= s.budget_bytes, "{s}");
        }
    }
}

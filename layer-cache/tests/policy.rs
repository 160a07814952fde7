//! Cyclic-optimal vs LRU on the per-token cyclic scan.

use strata_layer_cache::{Backend, CacheConfig, LayerCache, Policy};

use crate::common::{budget_for, TestModel};

/// Hits per token for `policy` with room for `k` layers and window `w`, measured over tokens
/// 2..=4 (token 1 fills the cache).
fn hits_per_token(
    model: &TestModel,
    backend: Backend,
    policy: Policy,
    k: u64,
    w: usize,
) -> (Vec<u64>, u64) {
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
    assert_eq!(cache.plan().slots as u64, k);
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
    (per_token, s.evictions)
}

#[test]
fn cyclic_hit_ratio_is_exactly_k_minus_w_over_n_and_lru_collapses() {
    const N: usize = 10;
    let model = TestModel::new("policy", N);
    for backend in [Backend::Mmap, Backend::File, Backend::Arena] {
        for (k, w) in [(5u64, 2usize), (3, 2), (8, 1), (9, 3), (6, 4)] {
            let (cyclic, _) = hits_per_token(&model, backend, Policy::Cyclic, k, w);
            for hits in &cyclic {
                // hit ratio per token = (K − w) / N exactly.
                assert_eq!(
                    *hits,
                    k - w as u64,
                    "{backend:?} cyclic K={k} w={w}: {cyclic:?}"
                );
            }
            let (lru, evictions) = hits_per_token(&model, backend, Policy::Lru, k, w);
            assert_eq!(
                lru,
                vec![0, 0, 0],
                "{backend:?} LRU K={k} w={w}: a cyclic scan larger than the cache never hits"
            );
            assert!(evictions > 0);
        }
        // With room for every layer both policies hit every time after the first token.
        let (all, _) = hits_per_token(&model, backend, Policy::Cyclic, N as u64, 2);
        assert_eq!(all, vec![N as u64; 3]);
        let (all, _) = hits_per_token(&model, backend, Policy::Lru, N as u64, 2);
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

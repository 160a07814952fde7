//! The same answer every time: seeded sampling gives the same text across runs, storage
//! backends, budgets, prefetch windows and thread counts; two sessions of one engine running in
//! two threads give what each gives alone. (Logits' bits across those settings: models.rs
//! and `cargo xtask verify`.)

use std::path::Path;

use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, GenerateOptions, SamplerConfig,
};

mod common;

fn sampled(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 12,
        sampler: SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplerConfig::default()
        },
        stop: Vec::new(),
        stop_at_eog: false,
    }
}

fn open(path: &Path, backend: Backend, budget: Budget, prefetch: usize, threads: usize) -> Engine {
    let cfg = EngineConfig {
        cache: CacheConfig {
            backend,
            budget,
            prefetch,
            ..CacheConfig::default()
        },
        threads: Some(threads),
        ..EngineConfig::default()
    };
    Engine::open(path, cfg).unwrap()
}

fn generate(engine: &Engine, prompt: &[u32], seed: u64) -> String {
    let mut s = engine.session().unwrap();
    let gen = s.generate(prompt, sampled(seed)).unwrap();
    gen.map(|p| p.unwrap()).collect()
}

#[test]
fn seeded_sampling_gives_the_same_text_across_runs_backends_budgets_and_threads() {
    let path = common::write_model_layers("llama", 41, 6);
    let prompt = [1u32, 7, 3, 30];
    let base = generate(&open(&path, Backend::Mmap, Budget::All, 2, 1), &prompt, 9);
    // The sampler really samples: other seeds give other texts.
    let others: Vec<String> = (10..14)
        .map(|seed| {
            generate(
                &open(&path, Backend::Mmap, Budget::All, 2, 1),
                &prompt,
                seed,
            )
        })
        .collect();
    assert!(others.iter().any(|t| *t != base), "{base:?} {others:?}");
    for backend in [Backend::Mmap, Backend::File, Backend::Arena] {
        for (budget, prefetch) in [(Budget::All, 0), (Budget::Min, 1), (Budget::Min, 4)] {
            for threads in [1, 2] {
                let e = open(&path, backend, budget, prefetch, threads);
                for run in 0..2 {
                    assert_eq!(
                        generate(&e, &prompt, 9),
                        base,
                        "{backend}/{budget}/prefetch {prefetch}/{threads} threads, run {run}"
                    );
                }
            }
        }
    }
}

#[test]
fn two_sessions_of_one_engine_in_two_threads_give_what_each_gives_alone() {
    let path = common::write_model_layers("llama", 42, 6);
    for (budget, prefetch) in [(Budget::All, 2), (Budget::Min, 1)] {
        let engine = open(&path, Backend::File, budget, prefetch, 2);
        let (pa, pb) = ([1u32, 4, 8, 15, 16], [1u32, 23, 42]);
        let alone_a = generate(&engine, &pa, 1);
        let alone_b = generate(&engine, &pb, 2);
        assert_ne!(alone_a, alone_b);
        for _ in 0..3 {
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| generate(&engine, &pa, 1));
                let b = s.spawn(|| generate(&engine, &pb, 2));
                (a.join().unwrap(), b.join().unwrap())
            });
            assert_eq!(a, alone_a, "{budget}");
            assert_eq!(b, alone_b, "{budget}");
        }
    }
}

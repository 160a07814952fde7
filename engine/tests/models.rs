//! End-to-end runs of tiny synthetic llama and qwen2 models written in the test with
//! `strata_gguf`'s writer and `strata_quant`'s quantizers: ids in range, finite logits, and
//! bit-identical logits across storage backends, budgets and thread counts.

use std::path::PathBuf;

use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, GenerateOptions, LogitsFor, SamplerConfig,
};
use strata_gguf::GgufWriter;

mod common;
use common::{write_model, N_VOCAB};

/// All-position logits of a fixed prompt plus 6 greedy decode steps, as one vector.
fn run(path: &PathBuf, cache: CacheConfig, threads: Option<usize>) -> (Vec<f32>, Vec<u32>) {
    let engine = Engine::open(
        path,
        EngineConfig {
            cache,
            threads,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    assert_eq!(engine.config().n_vocab, N_VOCAB);
    let prompt = [1u32, 5, 9, 20, 33, 7, 7, 40];
    let mut s = engine.session().unwrap();
    let mut all = Vec::new();
    s.eval_with(&prompt, LogitsFor::All, &mut |_, l| {
        all.extend_from_slice(l)
    })
    .unwrap();
    assert_eq!(all.len(), prompt.len() * N_VOCAB);
    let mut s = engine.session().unwrap();
    let opts = GenerateOptions {
        max_tokens: 6,
        sampler: SamplerConfig::greedy(),
        stop: vec![],
        stop_at_eog: false,
    };
    let ids = {
        let mut g = s.generate(&prompt, opts).unwrap();
        for piece in g.by_ref() {
            piece.unwrap();
        }
        g.ids().to_vec()
    };
    (all, ids)
}

fn check_arch(arch: &str) {
    let path = write_model(arch, 7);
    let base_cfg = CacheConfig::default();
    let (logits, ids) = run(&path, base_cfg.clone(), None);
    assert!(
        logits.iter().all(|v| v.is_finite()),
        "{arch}: non-finite logits"
    );
    assert!(
        logits.iter().any(|&v| v != logits[0]),
        "{arch}: constant logits"
    );
    assert_eq!(ids.len(), 6);
    assert!(
        ids.iter().all(|&id| (id as usize) < N_VOCAB),
        "{arch}: {ids:?}"
    );

    for (backend, budget, threads) in [
        (Backend::File, Budget::All, None),
        (Backend::Arena, Budget::All, None),
        (Backend::Mmap, Budget::Min, None),
        (Backend::File, Budget::Min, Some(1)),
        (Backend::Arena, Budget::Min, Some(2)),
        (Backend::Mmap, Budget::All, Some(1)),
    ] {
        let cfg = CacheConfig {
            backend,
            budget,
            ..base_cfg.clone()
        };
        let (l2, ids2) = run(&path, cfg, threads);
        assert!(
            l2.iter()
                .zip(&logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{arch}: logits on {backend}/{budget}/threads {threads:?} differ from mmap/all"
        );
        assert_eq!(ids2, ids, "{arch}: greedy ids on {backend}/{budget}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn synthetic_llama_runs_and_is_identical_across_backends_budgets_threads() {
    check_arch("llama");
}

#[test]
fn synthetic_qwen2_runs_and_is_identical_across_backends_budgets_threads() {
    check_arch("qwen2");
}

#[test]
fn context_overflow_is_an_error() {
    let path = write_model("llama", 11);
    let engine = Engine::open(
        &path,
        EngineConfig {
            n_ctx: Some(8),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut s = engine.session().unwrap();
    let opts = GenerateOptions {
        max_tokens: 5,
        sampler: SamplerConfig::greedy(),
        ..GenerateOptions::default()
    };
    let err = s
        .generate(&[1, 2, 3, 4], opts)
        .err()
        .expect("must overflow");
    assert!(err.to_string().contains("context overflow"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unsupported_architecture_is_named() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "mamba").unwrap();
    let g = strata_gguf::Gguf::from_bytes(&w.to_vec().unwrap()).unwrap();
    let err = strata_engine::ModelConfig::from_gguf(&g).unwrap_err();
    assert!(err.to_string().contains("mamba"), "{err}");

    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("llama.block_count", 2u32).unwrap();
    let g = strata_gguf::Gguf::from_bytes(&w.to_vec().unwrap()).unwrap();
    let err = strata_engine::ModelConfig::from_gguf(&g).unwrap_err();
    assert!(err.to_string().contains("llama.embedding_length"), "{err}");
}

#[test]
fn stop_string_ends_generation_before_it() {
    let path = write_model("qwen2", 13);
    let engine = Engine::open(&path, EngineConfig::default()).unwrap();
    let gen = |stop: Vec<String>| -> String {
        let mut s = engine.session().unwrap();
        let opts = GenerateOptions {
            max_tokens: 12,
            sampler: SamplerConfig::greedy(),
            stop,
            stop_at_eog: false,
        };
        s.generate(&[1, 4, 8], opts)
            .unwrap()
            .map(|p| p.unwrap())
            .collect()
    };
    let full = gen(vec![]);
    assert!(full.chars().count() >= 4, "{full:?}");
    // Stop at the text starting with the third character of the full continuation.
    let start = full.char_indices().nth(2).unwrap().0;
    let stop: String = full[start..].chars().take(2).collect();
    let cut = full.find(&stop).unwrap();
    assert_eq!(
        gen(vec![stop.clone()]),
        full[..cut],
        "stop {stop:?} in {full:?}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_vocabulary_shorter_than_the_embedding_is_refused_at_open() {
    // The synthetic model again, with its token list (and scores, types) one entry short.
    let path = write_model("llama", 3);
    let bytes = std::fs::read(&path).unwrap();
    let g = strata_gguf::Gguf::from_bytes(&bytes).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata().iter() {
        let short = match key {
            "tokenizer.ggml.tokens" => {
                let a = value.as_array().unwrap();
                let n = a.len() - 1;
                strata_gguf::Array::from_strings((0..n).map(|i| a.str_at(i).unwrap().unwrap()))
                    .into()
            }
            "tokenizer.ggml.scores" => {
                let v = g.metadata().get_f32_array(key).unwrap();
                strata_gguf::Array::from_f32(&v[..v.len() - 1]).into()
            }
            "tokenizer.ggml.token_type" => {
                let v = g.metadata().get_i32_array(key).unwrap();
                strata_gguf::Array::from_i32(&v[..v.len() - 1]).into()
            }
            _ => value.clone(),
        };
        w.add_metadata(key, short).unwrap();
    }
    for t in g.tensors() {
        let data = g.tensor_data(&bytes, t).unwrap().to_vec();
        w.add_tensor(t.name.clone(), t.ty, &t.dims, data).unwrap();
    }
    let broken = path.with_extension("short-vocab.gguf");
    w.write_file(&broken).unwrap();
    let err = Engine::open(&broken, EngineConfig::default())
        .err()
        .expect("refused");
    let msg = format!("{err}");
    assert!(
        msg.contains(&format!("{} tokens", N_VOCAB - 1))
            && msg.contains(&format!("{N_VOCAB} rows")),
        "{msg}"
    );
    // The model it came from opens.
    Engine::open(&path, EngineConfig::default()).unwrap();
}

#[test]
fn settings_out_of_range_are_errors_not_aborts() {
    let path = write_model("llama", 3);
    for threads in [0, strata_engine::MAX_THREADS + 1] {
        let config = EngineConfig {
            threads: Some(threads),
            ..EngineConfig::default()
        };
        let err = Engine::open(&path, config).err().expect("refused");
        assert!(
            err.to_string().contains(&format!("{threads} threads")),
            "{err}"
        );
    }
    // A KV cache beyond any memory: an error at the session, not an allocation abort.
    for n_ctx in [1usize << 40, usize::MAX / 2] {
        let config = EngineConfig {
            n_ctx: Some(n_ctx),
            ..EngineConfig::default()
        };
        let engine = Engine::open(&path, config).unwrap();
        let err = engine.session().err().expect("refused");
        assert!(
            err.to_string().contains(&format!("{n_ctx} positions")),
            "{err}"
        );
    }
}

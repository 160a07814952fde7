//! The batching loop ([`Batcher`]) on tiny synthetic models: a sequence alone gives exactly the
//! tokens of `Session::generate`; sequences batched together are computed as if alone (up to the
//! rounding of batched kernels) and never see each other's keys and values; prompts are read in
//! chunks while others keep generating; slots are freed by finishing and by cancelling.

use strata_engine::{
    BatchConfig, Batcher, Engine, EngineConfig, EngineError, GenerateOptions, KvCache, KvType,
    LogitsFor, SamplerConfig, SeqChunk, SeqId, SeqUpdate, StopReason,
};

mod common;
use common::{write_model, N_VOCAB};

fn engine(arch: &str, seed: u64, batch_size: usize) -> Engine {
    let path = write_model(arch, seed);
    Engine::open(
        &path,
        EngineConfig {
            batch_size,
            n_ctx: Some(128),
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn opts(max_tokens: usize, sampler: SamplerConfig) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler,
        stop: vec![],
        stop_at_eog: false,
    }
}

/// Token ids and text of one `Session::generate` run.
fn solo(engine: &Engine, prompt: &[u32], o: GenerateOptions) -> (Vec<u32>, String) {
    let mut s = engine.session().unwrap();
    let mut g = s.generate(prompt, o).unwrap();
    let text: String = g.by_ref().map(|p| p.unwrap()).collect();
    (g.ids().to_vec(), text)
}

/// Steps `b` until idle (at most `limit` steps), collecting every update per sequence.
fn drain(b: &mut Batcher<'_>, limit: usize) -> Vec<SeqUpdate> {
    let mut all = Vec::new();
    for _ in 0..limit {
        if b.is_idle() {
            return all;
        }
        all.extend(b.step().unwrap());
    }
    panic!("not idle after {limit} steps");
}

fn ids_of(updates: &[SeqUpdate], id: SeqId) -> Vec<u32> {
    updates
        .iter()
        .filter(|u| u.id == id)
        .map(|u| u.token)
        .collect()
}

fn text_of(updates: &[SeqUpdate], id: SeqId) -> String {
    updates
        .iter()
        .filter(|u| u.id == id)
        .map(|u| u.text.as_str())
        .collect()
}

#[test]
fn alone_in_the_batcher_equals_session_generate() {
    // Batch size 4: the 11-token prompt is read in chunks of 4, 4, 3 by both.
    let engine = engine("llama", 21, 4);
    let prompt = [1u32, 5, 9, 20, 33, 7, 7, 40, 12, 3, 50];
    for sampler in [
        SamplerConfig::greedy(),
        SamplerConfig {
            temperature: 0.9,
            seed: 77,
            ..SamplerConfig::default()
        },
    ] {
        let (want_ids, want_text) = solo(&engine, &prompt, opts(10, sampler.clone()));
        let mut b = Batcher::new(
            &engine,
            BatchConfig {
                n_slots: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let id = b.submit(prompt.to_vec(), opts(10, sampler)).unwrap();
        let updates = drain(&mut b, 100);
        assert_eq!(ids_of(&updates, id), want_ids);
        assert_eq!(text_of(&updates, id), want_text);
        let last = updates.last().unwrap();
        assert_eq!(last.finished, Some(StopReason::MaxTokens));
        assert_eq!((last.prompt_tokens, last.completion_tokens), (11, 10));
        assert_eq!(b.free_slots(), 3);
        let st = b.stats();
        assert_eq!((st.prompt_tokens, st.generated_tokens), (11, 10));
        // 3 prompt steps, then 9 decode steps (the 10th token is sampled, not evaluated).
        assert_eq!(st.steps, 3 + 9);
    }
}

#[test]
fn forward_batch_equals_separate_forwards_up_to_rounding() {
    let engine = engine("qwen2", 22, 512);
    let cfg = engine.config();
    let model = engine.model();
    let prompts: [&[u32]; 3] = [&[1, 4, 8, 15], &[1, 60], &[1, 30, 31, 32, 33, 34, 35]];
    // Alone: each prompt in its own cache.
    let mut alone = Vec::new();
    for p in prompts {
        let mut kv = KvCache::new(cfg, 64, KvType::F16).unwrap();
        let mut last = Vec::new();
        model
            .forward(p, 0, &mut kv, LogitsFor::Last, &mut |_, l| {
                last = l.to_vec()
            })
            .unwrap();
        alone.push(last);
    }
    // Together: one pass, one cache each; then a second pass continuing each sequence.
    let mut kvs: Vec<KvCache> = (0..3)
        .map(|_| KvCache::new(cfg, 64, KvType::F16).unwrap())
        .collect();
    let mut got = vec![Vec::new(); 3];
    {
        let mut chunks: Vec<SeqChunk<'_>> = kvs
            .iter_mut()
            .zip(prompts)
            .map(|(kv, p)| SeqChunk {
                tokens: p,
                pos0: 0,
                kv,
                logits: true,
            })
            .collect();
        model
            .forward_batch(&mut chunks, &mut |i, l| got[i] = l.to_vec())
            .unwrap();
    }
    // Batched kernels round differently (the tiled and repacked products depend on the batch
    // size), and this random model amplifies last-bit changes to ~0.3% of the largest logit
    // (the same as running one prompt with two extra tokens); a row from another sequence or
    // a wrong position moves logits by tens of percent.
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_eq!(b.len(), N_VOCAB);
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-2 * scale,
                "sequence {i}: batched {y} vs alone {x}"
            );
        }
    }
    // Only the middle sequence asks for logits: the others' rows are pruned, its are kept.
    let next: [u32; 3] = [9, 10, 11];
    let mut seen = Vec::new();
    let mut chunks: Vec<SeqChunk<'_>> = kvs
        .iter_mut()
        .zip(prompts)
        .zip(&next)
        .enumerate()
        .map(|(i, ((kv, p), t))| SeqChunk {
            tokens: std::slice::from_ref(t),
            pos0: p.len(),
            kv,
            logits: i == 1,
        })
        .collect();
    model
        .forward_batch(&mut chunks, &mut |i, l| seen.push((i, l.to_vec())))
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, 1);
    // The same continuation alone.
    let mut kv = KvCache::new(cfg, 64, KvType::F16).unwrap();
    let mut want = Vec::new();
    model
        .forward(&[1, 60, 10], 0, &mut kv, LogitsFor::Last, &mut |_, l| {
            want = l.to_vec()
        })
        .unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (x, y) in want.iter().zip(&seen[0].1) {
        assert!((x - y).abs() <= 1e-2 * scale, "{y} vs {x}");
    }
}

#[test]
fn concurrent_sequences_keep_their_own_state() {
    let engine = engine("llama", 23, 512);
    let prompts: [&[u32]; 4] = [&[1, 4, 8], &[1, 60, 61, 62, 63], &[1, 30], &[1, 4, 8]];
    let mut b = Batcher::new(
        &engine,
        BatchConfig {
            n_slots: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let ids: Vec<SeqId> = prompts
        .iter()
        .map(|p| {
            b.submit(p.to_vec(), opts(8, SamplerConfig::greedy()))
                .unwrap()
        })
        .collect();
    let updates = drain(&mut b, 50);
    assert_eq!(b.stats().max_batch_seqs, 4);
    for (id, p) in ids.iter().zip(prompts) {
        let (want, _) = solo(&engine, p, opts(8, SamplerConfig::greedy()));
        assert_eq!(ids_of(&updates, *id), want, "prompt {p:?}");
    }
    // Same prompt, same settings, same batch: same tokens.
    assert_eq!(ids_of(&updates, ids[0]), ids_of(&updates, ids[3]));
}

#[test]
fn long_prompts_are_read_in_chunks_while_others_generate() {
    let engine = engine("qwen2", 24, 512);
    let mut b = Batcher::new(
        &engine,
        BatchConfig {
            n_slots: 2,
            n_ctx: None,
            step_tokens: Some(4),
        },
    )
    .unwrap();
    let a = b
        .submit(vec![1, 5], opts(20, SamplerConfig::greedy()))
        .unwrap();
    // `a` reads its prompt and starts generating.
    let first = b.step().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, a);
    // `b2` joins between steps with a 10-token prompt: 3 tokens per step are left for it.
    let long: Vec<u32> = (1..=10).collect();
    let b2 = b
        .submit(long.clone(), opts(3, SamplerConfig::greedy()))
        .unwrap();
    for step in 0..3 {
        let u = b.step().unwrap();
        // `a` gets a token every step; `b2` only once its prompt is read (after 4 steps of 3,3,3,1).
        assert!(u.iter().any(|u| u.id == a), "step {step}: {u:?}");
        assert!(u.iter().all(|u| u.id != b2), "step {step}: {u:?}");
    }
    let u = b.step().unwrap();
    assert!(u.iter().any(|u| u.id == b2 && u.completion_tokens == 1));
    let rest = drain(&mut b, 50);
    let mut all = u;
    all.extend(rest);
    // The late joiner got what it would have got alone.
    let (want, _) = solo(&engine, &long, opts(3, SamplerConfig::greedy()));
    assert_eq!(ids_of(&all, b2), want);
    assert_eq!(b.stats().prompt_tokens, 12);
}

#[test]
fn slots_are_freed_by_finishing_and_by_cancelling() {
    let engine = engine("llama", 25, 512);
    let mut b = Batcher::new(
        &engine,
        BatchConfig {
            n_slots: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let o = || opts(4, SamplerConfig::greedy());
    let x = b.submit(vec![1, 2], o()).unwrap();
    let y = b.submit(vec![1, 3], o()).unwrap();
    assert_eq!(b.free_slots(), 0);
    let err = b.submit(vec![1, 4], o()).unwrap_err();
    assert!(
        matches!(err, EngineError::NoFreeSlot { n_slots: 2 }),
        "{err}"
    );
    b.step().unwrap();
    assert!(b.cancel(x));
    assert!(!b.cancel(x), "cancelling twice");
    assert_eq!(b.free_slots(), 1);
    let z = b.submit(vec![1, 4], o()).unwrap();
    let updates = drain(&mut b, 20);
    assert!(updates.iter().all(|u| u.id != x));
    assert_eq!(ids_of(&updates, z).len(), 4);
    assert_eq!(b.free_slots(), 2);
    let st = b.stats();
    assert_eq!((st.cancelled, st.finished), (1, 2));
    let _ = y;
}

#[test]
fn bad_requests_are_refused_without_taking_a_slot() {
    let engine = engine("llama", 26, 512);
    let mut b = Batcher::new(
        &engine,
        BatchConfig {
            n_slots: 1,
            n_ctx: Some(16),
            step_tokens: None,
        },
    )
    .unwrap();
    let g = SamplerConfig::greedy;
    assert!(matches!(
        b.submit(vec![], opts(4, g())),
        Err(EngineError::EmptyInput)
    ));
    assert!(matches!(
        b.submit(vec![1, N_VOCAB as u32], opts(4, g())),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        b.submit(vec![1; 10], opts(7, g())),
        Err(EngineError::ContextOverflow {
            needed: 17,
            n_ctx: 16,
            ..
        })
    ));
    assert!(b.submit(vec![1, 2], opts(0, g())).is_err());
    let bad = SamplerConfig {
        top_p: 0.0,
        ..SamplerConfig::default()
    };
    assert!(b.submit(vec![1, 2], opts(4, bad)).is_err());
    assert_eq!(b.free_slots(), 1);
    b.submit(vec![1; 10], opts(6, g())).unwrap();
    assert!(Batcher::new(
        &engine,
        BatchConfig {
            n_slots: 0,
            ..Default::default()
        }
    )
    .is_err());
}

//! Faults while streaming: a storage that fails on the n-th read (once, or from then on), or
//! stalls, and a model file truncated or replaced during a generation. The file and arena
//! backends stop the generation with an error; nothing made up is ever emitted (the text
//! before the error is a prefix of the fault-free text), nothing comes after the error, and the
//! engine works again once the storage does. (A mapped file cut short is another matter: see
//! ARCHITECTURE.md, Reliability.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, EngineError, GenerateOptions, SamplerConfig,
};
use strata_gguf::Gguf;
use strata_layer_cache::{Error, LayerCache, MemStorage, Storage};

mod common;

const PROMPT: [u32; 4] = [1, 5, 9, 20];
const N_TOKENS: usize = 8;

/// A storage over the model's bytes that can fail or stall on command.
struct Faulty {
    inner: MemStorage,
    reads: AtomicUsize,
    /// Fail the read with this number (1-based; 0 = none) …
    fail_at: AtomicUsize,
    /// … and every read after it while this is set.
    sticky: AtomicBool,
    stall: Duration,
}

impl Faulty {
    fn new(bytes: Vec<u8>) -> Faulty {
        Faulty {
            inner: MemStorage::new(bytes),
            reads: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(0),
            sticky: AtomicBool::new(false),
            stall: Duration::ZERO,
        }
    }
}

impl Storage for Faulty {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::sleep(self.stall);
        let at = self.fail_at.load(Ordering::SeqCst);
        if at != 0 && (n == at || (n > at && self.sticky.load(Ordering::SeqCst))) {
            return Err(Error::Io {
                what: "faulty test storage".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other(format!("injected failure on read {n}")),
            });
        }
        self.inner.read_at(offset, buf)
    }

    fn describe(&self) -> String {
        "faulty test storage".into()
    }
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(common::write_model_layers("llama", 21, 8)).unwrap()
}

fn cache_config(backend: Backend, prefetch: usize) -> CacheConfig {
    CacheConfig {
        backend,
        budget: Budget::Min,
        prefetch,
        io_threads: 2,
        ..CacheConfig::default()
    }
}

fn open(storage: Arc<Faulty>, bytes: &[u8], cfg: &CacheConfig) -> Result<Engine, EngineError> {
    let gguf = Gguf::from_bytes(bytes).unwrap();
    let cache = LayerCache::open(storage, gguf, cfg)?;
    Engine::from_cache(cache, EngineConfig::default())
}

fn options() -> GenerateOptions {
    GenerateOptions {
        max_tokens: N_TOKENS,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eog: false,
    }
}

/// The text generated before the generation ended, and the error that ended it. Checks that
/// nothing follows an error.
fn run(engine: &Engine) -> (String, Option<EngineError>) {
    let mut session = match engine.session() {
        Ok(s) => s,
        Err(e) => return (String::new(), Some(e)),
    };
    let mut gen = match session.generate(&PROMPT, options()) {
        Ok(g) => g,
        Err(e) => return (String::new(), Some(e)),
    };
    let mut text = String::new();
    for piece in gen.by_ref() {
        match piece {
            Ok(p) => text += &p,
            Err(e) => {
                assert!(gen.next().is_none(), "a piece after the error {e}");
                return (text, Some(e));
            }
        }
    }
    (text, None)
}

/// The fault-free text, from the whole model in memory.
fn reference(bytes: &[u8]) -> String {
    let cfg = CacheConfig {
        backend: Backend::Arena,
        budget: Budget::All,
        ..CacheConfig::default()
    };
    let engine = open(Arc::new(Faulty::new(bytes.to_vec())), bytes, &cfg).unwrap();
    let (text, err) = run(&engine);
    assert!(err.is_none(), "{err:?}");
    assert!(!text.is_empty());
    text
}

/// The error with its sources, as the CLI prints it.
fn chain(e: &EngineError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg += &format!(": {s}");
        source = s.source();
    }
    msg
}

/// The error is the injected one, reported as a read of the storage.
fn assert_injected(e: &EngineError) {
    let msg = chain(e);
    assert!(msg.contains("injected failure"), "{msg}");
}

#[test]
fn a_read_failing_anywhere_in_a_generation_stops_it_with_an_error_and_nothing_made_up() {
    let bytes = model_bytes();
    let expected = reference(&bytes);
    for backend in [Backend::File, Backend::Arena] {
        for prefetch in [0, 1, 2] {
            let cfg = cache_config(backend, prefetch);
            // Reads a whole fault-free run makes.
            let total = {
                let storage = Arc::new(Faulty::new(bytes.clone()));
                let engine = open(storage.clone(), &bytes, &cfg).unwrap();
                assert_eq!(run(&engine).0, expected, "{backend:?} prefetch {prefetch}");
                storage.reads.load(Ordering::SeqCst)
            };
            assert!(total > 20, "{total} reads: the layers do not stream");
            let mut stopped = 0;
            for fail_at in 1..=total {
                let what = format!("{backend:?} prefetch {prefetch} read {fail_at} of {total}");
                let storage = Arc::new(Faulty::new(bytes.clone()));
                storage.fail_at.store(fail_at, Ordering::SeqCst);
                let engine = match open(storage.clone(), &bytes, &cfg) {
                    Ok(e) => e,
                    Err(e) => {
                        assert_injected(&e);
                        continue;
                    }
                };
                let (text, err) = run(&engine);
                assert!(expected.starts_with(&text), "{what}: made up {text:?}");
                match err {
                    Some(e) => {
                        assert_injected(&e);
                        stopped += 1;
                    }
                    // The fault hit a prefetch, which the next get read again.
                    None => assert_eq!(text, expected, "{what}"),
                }
                // The fault was one read: the same engine generates the whole text again.
                let (again, err) = run(&engine);
                assert!(err.is_none(), "{what}: {err:?}");
                assert_eq!(again, expected, "{what}");
            }
            eprintln!(
                "{backend:?} prefetch {prefetch}: {stopped} of {total} failed reads stopped it"
            );
            // Without prefetch every read is the generation's own; with it, which reads a
            // get waits for is up to timing.
            if prefetch == 0 {
                assert!(stopped > total / 2, "{backend:?}: {stopped} of {total}");
            }
        }
    }
}

#[test]
fn a_storage_that_stays_down_stops_the_generation_and_the_engine_recovers_with_it() {
    let bytes = model_bytes();
    let expected = reference(&bytes);
    for backend in [Backend::File, Backend::Arena] {
        for prefetch in [0, 2] {
            let storage = Arc::new(Faulty::new(bytes.clone()));
            let engine = open(storage.clone(), &bytes, &cache_config(backend, prefetch)).unwrap();
            // Down from the 10th read after the open on.
            let base = storage.reads.load(Ordering::SeqCst);
            storage.sticky.store(true, Ordering::SeqCst);
            storage.fail_at.store(base + 10, Ordering::SeqCst);
            let (text, err) = run(&engine);
            assert_injected(&err.expect("the generation failed"));
            assert!(expected.starts_with(&text), "made up {text:?}");
            assert_ne!(text, expected);
            // Back up: the next generation is the whole text.
            storage.fail_at.store(0, Ordering::SeqCst);
            let (text, err) = run(&engine);
            assert!(err.is_none(), "{backend:?} prefetch {prefetch}: {err:?}");
            assert_eq!(text, expected);
        }
    }
}

#[test]
fn a_stalling_storage_only_slows_the_generation() {
    let bytes = model_bytes();
    let expected = reference(&bytes);
    for backend in [Backend::File, Backend::Arena] {
        let mut storage = Faulty::new(bytes.clone());
        storage.stall = Duration::from_millis(2);
        let engine = open(Arc::new(storage), &bytes, &cache_config(backend, 2)).unwrap();
        let (text, err) = run(&engine);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, expected);
    }
}

#[test]
fn a_model_file_cut_short_during_a_generation_stops_it_with_an_error() {
    let bytes = model_bytes();
    let expected = reference(&bytes);
    for (backend, direct_io) in [
        (Backend::File, false),
        (Backend::File, true),
        (Backend::Arena, false),
    ] {
        let path = std::env::temp_dir().join(format!(
            "strata-faults-{}-{backend}-{direct_io}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let cfg = EngineConfig {
            cache: CacheConfig {
                direct_io,
                ..cache_config(backend, 1)
            },
            ..EngineConfig::default()
        };
        let engine = Engine::open(&path, cfg).unwrap();
        let mut session = engine.session().unwrap();
        let mut gen = session.generate(&PROMPT, options()).unwrap();
        let mut text = gen.next().unwrap().unwrap();
        // Cut the file in the middle of the layers, with the generation under way.
        let cut = bytes.len() as u64 / 2;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let err = loop {
            match gen.next() {
                Some(Ok(p)) => text += &p,
                Some(Err(e)) => break e,
                None => panic!("{backend:?}: the generation ended without an error"),
            }
        };
        assert!(gen.next().is_none());
        assert!(expected.starts_with(&text), "made up {text:?}");
        let msg = chain(&err);
        assert!(
            msg.contains(&*path.to_string_lossy()),
            "the error names the file: {msg}"
        );
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn a_model_file_replaced_during_a_generation_does_not_change_it() {
    // A new file renamed over the path (how downloads and package managers replace files):
    // the open file is the old one, to the end.
    let bytes = model_bytes();
    let expected = reference(&bytes);
    let other = std::fs::read(common::write_model_layers("llama", 22, 8)).unwrap();
    assert_ne!(other, bytes);
    for backend in [Backend::Mmap, Backend::File, Backend::Arena] {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "strata-replaced-{}-{backend}.gguf",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let cfg = EngineConfig {
            cache: cache_config(backend, 1),
            ..EngineConfig::default()
        };
        let engine = Engine::open(&path, cfg).unwrap();
        let mut session = engine.session().unwrap();
        let mut gen = session.generate(&PROMPT, options()).unwrap();
        let mut text = gen.next().unwrap().unwrap();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, &other).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        for p in gen {
            text += &p.unwrap();
        }
        assert_eq!(text, expected, "{backend:?}");
        let _ = std::fs::remove_file(&path);
    }
}

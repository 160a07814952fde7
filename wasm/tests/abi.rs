//! The module's C ABI, natively, over a tiny synthetic model (engine/tests/common) in memory:
//! results equal to the engine's, and every kind of bad input an error code with a message,
//! never a panic. Each test runs on its own thread, so each has its own module state.

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use strata_engine::{
    Backend, Budget, CacheConfig, Engine, EngineConfig, GenerateOptions, SamplerConfig,
};
use strata_gguf::Gguf;
use strata_layer_cache::{Error, LayerCache, MemStorage, Storage};
use strata_wasm::abi::*;
use strata_wasm::runtime::{
    STRATA_ECTX, STRATA_EINVAL, STRATA_EIO, STRATA_EMODEL, STRATA_ENOTOPEN,
};
use strata_wasm::set_host_storage;

fn model_bytes() -> Vec<u8> {
    std::fs::read(common::write_model("llama", 5)).unwrap()
}

fn out() -> Vec<u8> {
    // SAFETY: the output buffer holds `strata_out_len()` bytes until the next call.
    unsafe { std::slice::from_raw_parts(strata_out_ptr(), strata_out_len()) }.to_vec()
}

fn error() -> String {
    // SAFETY: as `out`, for the error buffer.
    let b = unsafe { std::slice::from_raw_parts(strata_error_ptr(), strata_error_len()) };
    String::from_utf8(b.to_vec()).unwrap()
}

fn open(budget: &str, n_ctx: u32) -> i32 {
    // SAFETY: a valid slice.
    unsafe { strata_open(budget.as_ptr(), budget.len(), n_ctx) }
}

fn tokenize(text: &str) -> Vec<u32> {
    // SAFETY: a valid slice.
    let n = unsafe { strata_tokenize(text.as_ptr(), text.len(), 1) };
    assert!(n >= 0, "{}", error());
    out()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn eval(ids: &[u32], all: bool) -> Vec<f32> {
    // SAFETY: a valid slice.
    let rows = unsafe { strata_eval(ids.as_ptr(), ids.len(), all as i32) };
    assert!(rows >= 0, "{}", error());
    let v: Vec<f32> = out()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v.len(), rows as usize * common::N_VOCAB);
    v
}

/// The engine over the same bytes, for expected results.
fn native(bytes: Vec<u8>) -> Engine {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(bytes.clone()));
    let gguf = Gguf::from_bytes(&bytes).unwrap();
    let cfg = CacheConfig {
        backend: Backend::Arena,
        budget: Budget::All,
        ..CacheConfig::default()
    };
    let cache = LayerCache::open(storage, gguf, &cfg).unwrap();
    Engine::from_cache(cache, EngineConfig::default()).unwrap()
}

#[test]
fn eval_and_generate_equal_the_engine() {
    let bytes = model_bytes();
    set_host_storage(Arc::new(MemStorage::new(bytes.clone())));
    assert_eq!(open("all", 0), 0, "{}", error());
    assert_eq!(strata_info(), 0);
    let info: serde_json::Value = serde_json::from_slice(&out()).unwrap();
    assert_eq!(info["n_vocab"], common::N_VOCAB);
    assert_eq!(info["n_layer"], common::N_LAYER);
    assert_eq!(strata_n_vocab(), common::N_VOCAB as i32);

    let engine = native(bytes);
    let ids = tokenize("a b b a");
    assert_eq!(
        ids,
        engine.tokenizer().encode("a b b a", true, false).unwrap()
    );

    // Every position, then one more token after them.
    let mut expected = Vec::new();
    let mut s = engine.session().unwrap();
    s.eval_with(&ids, strata_engine::LogitsFor::All, &mut |_, l| {
        expected.extend_from_slice(l)
    })
    .unwrap();
    let got = eval(&ids, true);
    assert_eq!(bits(&got), bits(&expected));
    assert_eq!(bits(&eval(&[3], false)), bits(&s.eval(&[3]).unwrap()));
    drop(s);

    // Greedy generation after a reset: the text `Session::generate` gives.
    assert_eq!(strata_reset(), 0);
    let prompt = "a b a b";
    // SAFETY: a valid slice.
    let n =
        unsafe { strata_generate_start(prompt.as_ptr(), prompt.len(), 12, 0.0, 40, 0.95, 0.05, 1) };
    assert_eq!(n as usize, tokenize(prompt).len(), "{}", error());
    let (mut text, mut ids_out) = (String::new(), Vec::new());
    for _ in 0..20 {
        let r = strata_generate_next();
        assert!(r >= 0, "{}", error());
        text.push_str(std::str::from_utf8(&out()).unwrap());
        if r == 0 {
            break;
        }
        ids_out.push(strata_last_token());
    }
    let mut s = engine.session().unwrap();
    let prompt_ids = engine.tokenizer().encode(prompt, true, false).unwrap();
    let mut g = s
        .generate(
            &prompt_ids,
            GenerateOptions {
                max_tokens: 12,
                sampler: SamplerConfig::greedy(),
                ..GenerateOptions::default()
            },
        )
        .unwrap();
    let expected: String = g.by_ref().map(|p| p.unwrap()).collect();
    // `Generation::ids` includes the end-of-generation token; the ABI does not return it.
    let engine_ids = match g.stop_reason() {
        Some(strata_engine::StopReason::EndOfGeneration(_)) => &g.ids()[..g.ids().len() - 1],
        _ => g.ids(),
    };
    assert_eq!(ids_out, engine_ids);
    assert_eq!(text, expected);
    // After the end, more calls keep saying so.
    assert_eq!(strata_generate_next(), 0);

    assert_eq!(strata_stats(), 0);
    let stats: serde_json::Value = serde_json::from_slice(&out()).unwrap();
    assert!(stats["gets"].as_u64().unwrap() > 0);
    strata_close();
    assert_eq!(strata_info(), STRATA_ENOTOPEN);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn bad_input_is_an_error_code_with_a_message() {
    // Nothing open, no storage.
    assert_eq!(strata_info(), STRATA_ENOTOPEN);
    assert!(error().contains("strata_open"), "{}", error());
    assert_eq!(open("all", 0), STRATA_EINVAL);
    assert!(error().contains("no host storage"), "{}", error());

    set_host_storage(Arc::new(MemStorage::new(model_bytes())));
    assert_eq!(open("lots", 0), STRATA_EINVAL);
    assert!(error().contains("budget `lots`"), "{}", error());
    // SAFETY: a null pointer with a length is what is being tested; it is not read.
    let r = unsafe { strata_open(std::ptr::null(), 3, 0) };
    assert_eq!(r, STRATA_EINVAL);
    assert!(error().contains("null pointer"), "{}", error());
    assert_eq!(open("all", 16), 0, "{}", error());
    assert_eq!(strata_error_len(), 0);

    // Text that is not UTF-8.
    let bad = [0x61u8, 0xff, 0x62];
    // SAFETY: a valid slice.
    let r = unsafe { strata_tokenize(bad.as_ptr(), bad.len(), 1) };
    assert_eq!(r, STRATA_EINVAL);
    assert!(error().contains("not UTF-8"), "{}", error());
    // Misaligned ids.
    let words = [0u32; 4];
    let misaligned = (words.as_ptr() as *const u8).wrapping_add(1) as *const u32;
    // SAFETY: rejected before any read.
    assert_eq!(unsafe { strata_eval(misaligned, 2, 0) }, STRATA_EINVAL);
    assert!(error().contains("aligned"), "{}", error());
    // A token out of range.
    let ids = [1u32, common::N_VOCAB as u32];
    // SAFETY: a valid slice.
    assert_eq!(unsafe { strata_eval(ids.as_ptr(), 2, 0) }, STRATA_EMODEL);
    assert!(error().contains("out of range"), "{}", error());
    // No generation running.
    assert_eq!(strata_generate_next(), STRATA_EINVAL);
    // A prompt plus tokens beyond the 16-position context.
    let p = "a b a b a b a b";
    // SAFETY: a valid slice.
    let r = unsafe { strata_generate_start(p.as_ptr(), p.len(), 40, 0.0, 40, 0.95, 0.05, 1) };
    assert_eq!(r, STRATA_ECTX, "{}", error());
    assert!(error().contains("16"), "{}", error());
    // Sampling values out of range.
    // SAFETY: a valid slice.
    let r = unsafe { strata_generate_start(p.as_ptr(), p.len(), 4, 0.0, 40, 7.0, 0.05, 1) };
    assert!(r < 0, "top_p 7 accepted");
    // And the module still works.
    assert_eq!(eval(&[1, 2], false).len(), common::N_VOCAB);
}

/// A storage whose reads fail once `failing` is set.
struct Failing {
    inner: MemStorage,
    failing: Arc<AtomicBool>,
}

impl Storage for Failing {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Io {
                what: "failing test storage".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other("injected"),
            });
        }
        self.inner.read_at(offset, buf)
    }
}

#[test]
fn a_failing_host_read_is_an_io_error() {
    let failing = Arc::new(AtomicBool::new(false));
    set_host_storage(Arc::new(Failing {
        inner: MemStorage::new(model_bytes()),
        failing: failing.clone(),
    }));
    // At budget `min` the streamed layers are read while evaluating.
    assert_eq!(open("min", 0), 0, "{}", error());
    failing.store(true, Ordering::SeqCst);
    let ids = [1u32, 2];
    // SAFETY: a valid slice.
    assert_eq!(unsafe { strata_eval(ids.as_ptr(), 2, 0) }, STRATA_EIO);
    assert!(error().contains("injected"), "{}", error());
    // Reads work again: so does the module.
    failing.store(false, Ordering::SeqCst);
    assert_eq!(strata_reset(), 0);
    assert_eq!(eval(&ids, false).len(), common::N_VOCAB);
}

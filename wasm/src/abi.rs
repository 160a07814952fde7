//! The exported C ABI (see the crate docs for the table). Each export checks its arguments,
//! calls [`Runtime`], and turns the result into a code plus the output or error buffer.

use std::alloc::Layout;
use std::cell::RefCell;
use std::sync::Arc;

use strata_layer_cache::Storage;

use crate::runtime::{parse_budget, Failure, GenerateParams, Runtime, Step, STRATA_ENOMEM};

/// Everything the module keeps between calls. wasm modules here are single-threaded; natively
/// each thread has its own.
#[derive(Default)]
struct State {
    runtime: Option<Runtime>,
    out: Vec<u8>,
    error: Vec<u8>,
    last_token: u32,
    #[cfg(not(target_family = "wasm"))]
    storage: Option<Arc<dyn Storage>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Runs `f` on the state; an `Err` is recorded in the error buffer and becomes its code.
fn with_state(f: impl FnOnce(&mut State) -> Result<i32, Failure>) -> i32 {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.error.clear();
        match f(&mut s) {
            Ok(n) => n,
            Err(e) => {
                s.error = e.message.into_bytes();
                e.code
            }
        }
    })
}

fn runtime(s: &mut State) -> Result<&mut Runtime, Failure> {
    s.runtime.as_mut().ok_or_else(Failure::not_open)
}

/// A count as the `i32` result, or an error if it does not fit.
fn count(n: usize, what: &str) -> Result<i32, Failure> {
    i32::try_from(n).map_err(|_| Failure::invalid(format!("{what}: {n} does not fit an i32")))
}

/// # Safety
/// `ptr` must be null or point to `len` readable bytes that stay valid during the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!(
            "{what}: null pointer with length {len}"
        )));
    }
    // SAFETY: non-null, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As [`bytes`].
unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from the caller.
    let b = unsafe { bytes(ptr, len, what) }?;
    std::str::from_utf8(b).map_err(|e| Failure::invalid(format!("{what}: not UTF-8 ({e})")))
}

/// # Safety
/// `ptr` must be null or point to `n` readable u32 values that stay valid during the call.
unsafe fn ids<'a>(ptr: *const u32, n: usize) -> Result<&'a [u32], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!(
            "token ids: null pointer with {n} ids"
        )));
    }
    if !(ptr as usize).is_multiple_of(4) {
        return Err(Failure::invalid(format!(
            "token ids: pointer {:#x} is not 4-byte aligned",
            ptr as usize
        )));
    }
    // SAFETY: non-null, aligned, and the caller promises `n` readable u32s.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// The layout of a `strata_alloc` block (8-aligned, so ids and floats can live in it).
fn layout(len: usize) -> Option<Layout> {
    Layout::from_size_align(len.max(1), 8).ok()
}

/// Allocates `len` bytes (8-aligned) for the host to write inputs into; null if out of memory.
#[no_mangle]
pub extern "C" fn strata_alloc(len: usize) -> *mut u8 {
    match layout(len) {
        // SAFETY: the layout has a non-zero size.
        Some(l) => unsafe { std::alloc::alloc(l) },
        None => std::ptr::null_mut(),
    }
}

/// Frees a block from [`strata_alloc`].
///
/// # Safety
/// `ptr` must be null or come from `strata_alloc(len)` with the same `len`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn strata_free(ptr: *mut u8, len: usize) {
    if let (false, Some(l)) = (ptr.is_null(), layout(len)) {
        // SAFETY: the caller promises `ptr` came from `strata_alloc(len)`, i.e. this layout.
        unsafe { std::alloc::dealloc(ptr, l) }
    }
}

/// The output buffer of the last call.
#[no_mangle]
pub extern "C" fn strata_out_ptr() -> *const u8 {
    STATE.with(|s| s.borrow().out.as_ptr())
}

/// Length in bytes of the output buffer.
#[no_mangle]
pub extern "C" fn strata_out_len() -> usize {
    STATE.with(|s| s.borrow().out.len())
}

/// The message of the last error (UTF-8).
#[no_mangle]
pub extern "C" fn strata_error_ptr() -> *const u8 {
    STATE.with(|s| s.borrow().error.as_ptr())
}

/// Length in bytes of the last error message (0 after a successful call).
#[no_mangle]
pub extern "C" fn strata_error_len() -> usize {
    STATE.with(|s| s.borrow().error.len())
}

/// Sets the storage `strata_open` reads on native builds, which have no host imports.
#[cfg(not(target_family = "wasm"))]
pub fn set_host_storage(storage: Arc<dyn Storage>) {
    STATE.with(|s| s.borrow_mut().storage = Some(storage));
}

fn host_storage(_s: &State) -> Result<Arc<dyn Storage>, Failure> {
    #[cfg(target_family = "wasm")]
    return Ok(Arc::new(crate::host::HostStorage));
    #[cfg(not(target_family = "wasm"))]
    _s.storage.clone().ok_or_else(|| {
        Failure::invalid("no host storage: native builds need set_host_storage first")
    })
}

/// Opens the host's model with the arena backend (closing any open one first).
///
/// # Safety
/// `budget_ptr` must be null or point to `budget_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_open(budget_ptr: *const u8, budget_len: usize, n_ctx: u32) -> i32 {
    // SAFETY: forwarded from the caller.
    let budget = unsafe { text(budget_ptr, budget_len, "budget") };
    with_state(|s| {
        s.runtime = None;
        let budget = parse_budget(budget?)?;
        let storage = host_storage(s)?;
        s.runtime = Some(Runtime::open(storage, budget, n_ctx as usize)?);
        Ok(0)
    })
}

/// Frees the open model, if any.
#[no_mangle]
pub extern "C" fn strata_close() {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.runtime = None;
        s.out = Vec::new();
    });
}

/// JSON summary of the model and the cache plan → out.
#[no_mangle]
pub extern "C" fn strata_info() -> i32 {
    with_state(|s| {
        let json = runtime(s)?.info_json();
        s.out = json.into_bytes();
        Ok(0)
    })
}

/// JSON cache counters → out.
#[no_mangle]
pub extern "C" fn strata_stats() -> i32 {
    with_state(|s| {
        let json = runtime(s)?.stats_json();
        s.out = json.into_bytes();
        Ok(0)
    })
}

/// The vocabulary size.
#[no_mangle]
pub extern "C" fn strata_n_vocab() -> i32 {
    with_state(|s| count(runtime(s)?.engine().config().n_vocab, "n_vocab"))
}

/// Token ids of the text (u32 LE → out); returns the count. `flags`: 1 = add BOS/EOS as the
/// model says, 2 = parse special-token texts.
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_tokenize(ptr: *const u8, len: usize, flags: u32) -> i32 {
    // SAFETY: forwarded from the caller.
    let t = unsafe { text(ptr, len, "text") };
    with_state(|s| {
        let ids = runtime(s)?.tokenize(t?, flags & 1 != 0, flags & 2 != 0)?;
        s.out = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        count(ids.len(), "token count")
    })
}

/// Text of the ids → out.
///
/// # Safety
/// `ptr` must be null or point to `n` readable u32 values.
#[no_mangle]
pub unsafe extern "C" fn strata_detokenize(ptr: *const u32, n: usize) -> i32 {
    // SAFETY: forwarded from the caller.
    let ids = unsafe { ids(ptr, n) };
    with_state(|s| {
        let text = runtime(s)?.detokenize(ids?)?;
        s.out = text.into_bytes();
        Ok(0)
    })
}

/// Empties the sequence.
#[no_mangle]
pub extern "C" fn strata_reset() -> i32 {
    with_state(|s| {
        runtime(s)?.reset();
        Ok(0)
    })
}

/// Evaluates the ids after the sequence; logits of every position (`all` ≠ 0) or the last
/// (f32 LE, `n_vocab` per row) → out. Returns the number of rows.
///
/// # Safety
/// `ptr` must be null or point to `n` readable u32 values.
#[no_mangle]
pub unsafe extern "C" fn strata_eval(ptr: *const u32, n: usize, all: i32) -> i32 {
    // SAFETY: forwarded from the caller.
    let ids = unsafe { ids(ptr, n) };
    with_state(|s| {
        let ids = ids?;
        let mut logits = Vec::new();
        let rows = runtime(s)?.eval(ids, all != 0, &mut logits)?;
        let mut out = std::mem::take(&mut s.out);
        out.clear();
        out.try_reserve_exact(logits.len() * 4)
            .map_err(|_| Failure {
                code: STRATA_ENOMEM,
                message: format!("output buffer of {} logits", logits.len()),
            })?;
        out.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
        s.out = out;
        count(rows, "rows")
    })
}

/// Tokenizes the prompt (BOS on an empty sequence) and evaluates it, ready for
/// [`strata_generate_next`]; returns the prompt's token count.
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn strata_generate_start(
    ptr: *const u8,
    len: usize,
    max_tokens: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    seed: u64,
) -> i32 {
    // SAFETY: forwarded from the caller.
    let prompt = unsafe { text(ptr, len, "prompt") };
    with_state(|s| {
        let params = GenerateParams {
            max_tokens: max_tokens as usize,
            temperature,
            top_k: top_k as usize,
            top_p,
            min_p,
            seed,
        };
        let n = runtime(s)?.generate_start(prompt?, &params)?;
        s.out.clear();
        count(n, "prompt tokens")
    })
}

/// 1: one more token (its text → out; its id from [`strata_last_token`]); 0: the generation is
/// over (the text still held back → out).
#[no_mangle]
pub extern "C" fn strata_generate_next() -> i32 {
    with_state(|s| match runtime(s)?.generate_next()? {
        Step::Token(id, text) => {
            s.last_token = id;
            s.out = text.into_bytes();
            Ok(1)
        }
        Step::Done(text) => {
            s.out = text.into_bytes();
            Ok(0)
        }
    })
}

/// The id of the token the last successful [`strata_generate_next`] returned.
#[no_mangle]
pub extern "C" fn strata_last_token() -> u32 {
    STATE.with(|s| s.borrow().last_token)
}

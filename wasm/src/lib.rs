//! Strata as a WebAssembly module: the engine's portable core (arena backend, no threads, no
//! filesystem) behind a small C ABI, with the model's bytes read from the host.
//!
//! Built for `wasm64-unknown-unknown` (Memory64: the arena may pass 4 GiB) or
//! `wasm32-unknown-unknown` (`cargo xtask wasm build`). Natively it builds too, for tests.
//!
//! # Imports (module `strata_host`)
//! - `host_len() -> u64`: the model file's length in bytes.
//! - `host_read(offset: u64, len: u64, dst: ptr) -> i32`: copy `len` bytes of the file at
//!   `offset` into the module's memory at `dst`; 0 on success, any other value is an error
//!   code (it becomes a read error naming the offset, the length and the code).
//!
//! # Exports
//! Every call that can fail returns an `i32`: `>= 0` is success (a count where one is
//! documented), negative is one of the `STRATA_E*` codes of [`runtime`], with a message in the
//! error buffer (`strata_error_ptr`, `strata_error_len`). Results that are not a number go to
//! the output buffer (`strata_out_ptr`, `strata_out_len`), valid until the next call. Inputs
//! are passed by writing them into memory from `strata_alloc` (freed with `strata_free`). Bad
//! input never traps: null pointers, misaligned id arrays, non-UTF-8 text and out-of-range
//! tokens are errors.
//!
//! | export | does |
//! |---|---|
//! | `strata_alloc(len) -> ptr`, `strata_free(ptr, len)` | memory for inputs (null when out of memory) |
//! | `strata_open(budget_ptr, budget_len, n_ctx: u32) -> i32` | open the host's model; budget text as `strata --budget` ("all", "min", "50%", "1.5GiB"); `n_ctx` 0 = default |
//! | `strata_close()` | free the model |
//! | `strata_info() -> i32` | JSON summary of the model and cache plan → out |
//! | `strata_stats() -> i32` | JSON cache counters → out |
//! | `strata_n_vocab() -> i32` | vocabulary size |
//! | `strata_tokenize(text_ptr, len, flags: u32) -> i32` | ids (u32 LE) → out, returns the count; flags: 1 add BOS/EOS as the model says, 2 parse special tokens |
//! | `strata_detokenize(ids_ptr, n) -> i32` | text → out |
//! | `strata_reset() -> i32` | empty the sequence |
//! | `strata_eval(ids_ptr, n, all: i32) -> i32` | evaluate after the sequence; logits (f32 LE, `n_vocab` per row) of every position (`all` ≠ 0) or the last → out; returns the rows |
//! | `strata_generate_start(prompt_ptr, len, max_tokens: u32, temperature: f32, top_k: u32, top_p: f32, min_p: f32, seed: u64) -> i32` | tokenize (BOS on an empty sequence) and evaluate the prompt; returns its token count |
//! | `strata_generate_next() -> i32` | 1: one more token (its text → out, its id from `strata_last_token() -> u32`); 0: the generation is over (the text still held back → out) |

pub mod abi;
#[cfg(target_family = "wasm")]
mod host;
pub mod runtime;

#[cfg(not(target_family = "wasm"))]
pub use abi::set_host_storage;
#[cfg(target_family = "wasm")]
pub use host::HostStorage;
pub use runtime::{Failure, GenerateParams, Runtime, Step};

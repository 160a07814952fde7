//! Kernels for batches whose float order in llama.cpp differs from its one-token `vec_dot`.
//!
//! llama.cpp's x86 CPU backend (AVX-512 VNNI build) multiplies K-quant weights that it does not
//! repack (Q6_K always; the others where no repacked layout applies) by a batch of 8 or more
//! tokens with its tiled matmul (`ggml-cpu/tiled`, taken before llamafile and `vec_dot`). Per
//! output element that kernel forms each 256-block's exact integer sum `s`, then
//! `t = f32(s) · d_w` and `acc = fma(t, d_x, acc)` (the compiler contracts its `acc + t·d_x`
//! into one FMA), blocks in order from `acc = 0`. Fewer than 8 tokens go to `vec_dot`, one
//! element at a time, in that kernel's own order ([`super::kernel`]).
//!
//! F16 and BF16 weights: llama.cpp converts the activations to the weights' type
//! (`vec_dot_type`) and, for 2 or more tokens, tries llamafile's `sgemm` (tinyBLAS: one 16-lane
//! accumulator per output, AVX-512 FMAs for F16, `vdpbf16ps` for BF16) before its `vec_dot`
//! (F16: four accumulators over steps of 64; BF16: two `vdpbf16ps` accumulators; tails in
//! `f64`).
//!
//! So a product's bits may depend on the number of tokens `n` (and, for F16, on the shape), as
//! llama.cpp's do; they never depend on threads or on how rows are tiled.

use strata_gguf::GgmlType;

use super::{Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{view, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use crate::scalar;

/// The batch size from which llama.cpp takes its tiled K-quant matmul.
pub(crate) const TILED_MIN_TOKENS: usize = 8;

scalar_rows!(scalar_q6_k_tiled, BlockQ6_K, BlockQ8_K, scalar::q6_k_tiled);
scalar_rows!(scalar_q5_k_tiled, BlockQ5_K, BlockQ8_K, scalar::q5_k_tiled);

/// The batch size from which llama.cpp tries llamafile's `sgemm` (F16 weights here).
pub(crate) const SGEMM_MIN_TOKENS: usize = 2;

/// F16 × F16 in tinyBLAS order (`scalar::f16_sgemm`).
fn scalar_f16_sgemm(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::f16_sgemm(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}

/// BF16 × BF16 in tinyBLAS order (`scalar::bf16_sgemm`).
fn scalar_bf16_sgemm(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::bf16_sgemm(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}

/// The (one-token, four-token) kernels for a product of `n` tokens with `rows × cols` weights
/// of type `ty`, at most at `level`, when llama.cpp computes that batch in another float order
/// than its `vec_dot`'s; `None` where it does not (the caller then uses [`super::kernel`] and
/// [`super::kernel4`]).
///
/// - Q6_K and Q5_K (neither is repacked on x86), `n ≥ 8`: the tiled K-quant matmul (see the
///   module docs; Q5_K's block value is `fma(−dmin, f32(Σ m·bsum), f32(s)·d)`).
/// - F16, `n ≥ 2`, `cols % 16 == 0`, `rows % 4 == 0`: llamafile's tinyBLAS F16 × F16 (other
///   shapes it refuses, and llama.cpp falls back to `vec_dot`).
/// - BF16, `n ≥ 2`, `cols % 32 == 0`, `rows % 4 == 0`: tinyBLAS BF16 × BF16 (`vdpbf16ps`).
pub(crate) fn batch_kernels(
    level: SimdLevel,
    ty: GgmlType,
    n: usize,
    rows: usize,
    cols: usize,
) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if ty == GgmlType::F16 {
        if n < SGEMM_MIN_TOKENS || !cols.is_multiple_of(16) || !rows.is_multiple_of(4) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some((k, k4)) = super::f16::sgemm_kernels(level) {
            return Some((k, Some(k4)));
        }
        return Some((scalar_f16_sgemm, None));
    }
    if ty == GgmlType::BF16 {
        if n < SGEMM_MIN_TOKENS || !cols.is_multiple_of(32) || !rows.is_multiple_of(4) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some((k, k4)) = super::bf16::sgemm_kernels(level) {
            return Some((k, Some(k4)));
        }
        return Some((scalar_bf16_sgemm, None));
    }
    if n < TILED_MIN_TOKENS || !matches!(ty, GgmlType::Q6_K | GgmlType::Q5_K) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512 {
            if let Some((k, k4)) = super::avx512::tiled_kernels(ty) {
                return Some((k, Some(k4)));
            }
        }
        if level >= SimdLevel::Avx2 {
            if let Some(k) = super::avx2::tiled_kernel(ty) {
                return Some((k, None));
            }
        }
    }
    let _ = level;
    Some((
        if ty == GgmlType::Q6_K {
            scalar_q6_k_tiled
        } else {
            scalar_q5_k_tiled
        },
        None,
    ))
}

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
//! So a product's bits may depend on the number of tokens `n`, as llama.cpp's do; they never
//! depend on threads or on how rows are tiled.

use strata_gguf::GgmlType;

use super::{Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{view, BlockQ6_K, BlockQ8_K};
use crate::scalar;

/// The batch size from which llama.cpp takes its tiled K-quant matmul.
pub(crate) const TILED_MIN_TOKENS: usize = 8;

scalar_rows!(scalar_q6_k_tiled, BlockQ6_K, BlockQ8_K, scalar::q6_k_tiled);

/// The (one-token, four-token) kernels for `ty` at most at `level` when a product of `n`
/// tokens follows a batch order of llama.cpp's other than `vec_dot`'s; `None` where it does not
/// (the caller then uses [`super::kernel`] and [`super::kernel4`]).
pub(crate) fn batch_kernels(
    level: SimdLevel,
    ty: GgmlType,
    n: usize,
) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if n < TILED_MIN_TOKENS || ty != GgmlType::Q6_K {
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
    Some((scalar_q6_k_tiled, None))
}

//! MXFP4 × Q8_0 in `ggml_vec_dot_mxfp4_q8_0`'s x86 order (matrices whose row count is not a
//! multiple of 8; llama.cpp repacks the others, see `repacked_x86`): eight lanes in two sets,
//! even blocks in one and odd blocks in the other, over the pairs of blocks, then
//! `reduce8(even + odd)`, and for an odd block count `sum + scale · isum` (no FMA) for the last
//! block. See [`scalar::mxfp4::mxfp4`](crate::scalar::mxfp4::mxfp4). llama.cpp has an AVX2
//! kernel only (its AVX-512 build runs it), and so has this module.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, hsum_i32x8, nibbles, reduce8};
use super::{check_rows, RowsFn, SimdLevel};
use crate::blocks::{BlockMXFP4, BlockQ8_0, MXFP4_VALUES};
use crate::dequant::e8m0_to_f32_half;

/// The `vec_dot`-order kernel for `ty` at most at `level`, where there is one (MXFP4, AVX2).
pub(super) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    (ty == GgmlType::MXFP4 && level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available())
        .then_some(rows as RowsFn)
}

/// The 32 values `MXFP4_VALUES[code]` of `b`, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values(b: &BlockMXFP4) -> __m256i {
    // SAFETY: reads the 16 bytes of the table.
    let lut = unsafe { _mm_loadu_si128(MXFP4_VALUES.as_ptr().cast()) };
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(lut), nibbles(&b.qs))
}

/// The eight lane sums (elements `4l..4l+4`, `|v| · sign(y, v)` as llama.cpp forms them) of
/// block `b` · `a`, and the block's scale `f32(d_x) · e8m0_to_f32_half(e)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block(b: &BlockMXFP4, a: &BlockQ8_0) -> (__m256i, f32) {
    // SAFETY: reads the 32 bytes of `a.qs`.
    let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
    let v = values(b);
    // Pairs ≤ 2·12·128: no saturation.
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(y, v));
    (
        _mm256_madd_epi16(p, _mm256_set1_epi16(1)),
        h2f(a.d) * e8m0_to_f32_half(b.e),
    )
}

/// One row: `nb` blocks from `w` · `nb` blocks from `x`.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot(w: *const BlockMXFP4, x: *const BlockQ8_0, nb: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 2 <= nb {
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + h < nb` (caller).
            let (p, d) = block(unsafe { &*w.add(i + h) }, unsafe { &*x.add(i + h) });
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(p), *acc);
        }
        i += 2;
    }
    let mut sum = reduce8(_mm256_add_ps(acc[0], acc[1]));
    if i < nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        let d = h2f(a.d) * e8m0_to_f32_half(b.e);
        // The plain-C tail multiplies exactly (no sign trick): v · y widened to i16.
        let v = values(b);
        // SAFETY: reads the 32 bytes of `a.qs`.
        let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
        let (vlo, vhi) = (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)),
        );
        let ylo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y));
        let yhi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(y));
        let isum = hsum_i32x8(_mm256_add_epi32(
            _mm256_madd_epi16(vlo, ylo),
            _mm256_madd_epi16(vhi, yhi),
        ));
        sum += d * isum as f32;
    }
    sum
}

/// The [`RowsFn`]: every row of `w` · `x`, one row at a time.
fn rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockMXFP4, BlockQ8_0>(w, row_bytes, x, out.len());
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: `kernel` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified that row `r` holds `nb` blocks and `x` `nb` activation blocks.
        *o = unsafe { dot(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
    }
}

//! IQ4_NL × Q8_0 in `ggml_vec_dot_iq4_nl_q8_0`'s order (one token, a matrix llama.cpp does not
//! repack): eight lanes in two sets, even blocks in one and odd blocks in the other, over the
//! pairs of blocks, then `reduce8(even + odd)` and an FMA for an odd last block. See
//! [`scalar::iq4_nl_vec_dot`](crate::scalar::iq4_nl_vec_dot).

use std::arch::x86_64::*;

use super::avx2::{h2f, nibbles, reduce8};
use super::{check_rows, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ4_NL, BlockQ8_0, IQ4_NL_VALUES};

/// The kernel at most at `level`, where this CPU has one.
pub(crate) fn kernel(level: SimdLevel) -> Option<RowsFn> {
    (level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available()).then_some(rows as RowsFn)
}

/// The eight lane sums (elements `4l..4l+4`) of block `b` · `a`, and `f32(d_w) · f32(d_x)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block(b: &BlockIQ4_NL, a: &BlockQ8_0) -> (__m256i, f32) {
    // SAFETY: reads the 16 bytes of the table and the 32 of `a.qs`.
    let (lut, y) = unsafe {
        (
            _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()),
            _mm256_loadu_si256(a.qs.as_ptr().cast()),
        )
    };
    let q = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(lut), nibbles(&b.qs));
    // |q| · (y with the sign of q): pairs ≤ 2·127·128 < 2^15.
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
    (
        _mm256_madd_epi16(p, _mm256_set1_epi16(1)),
        h2f(b.d) * h2f(a.d),
    )
}

/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot(w: *const BlockIQ4_NL, x: *const BlockQ8_0, nb: usize) -> f32 {
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
        let (p, d) = block(unsafe { &*w.add(i) }, unsafe { &*x.add(i) });
        let mut l = [0i32; 8];
        // SAFETY: writes the 32 bytes of `l`.
        unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), p) };
        sum = d.mul_add(l.iter().sum::<i32>() as f32, sum);
    }
    sum
}

fn rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockIQ4_NL, BlockQ8_0>(w, row_bytes, x, out.len());
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: `kernel` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified that row `r` holds `nb` blocks and `x` `nb` activation blocks.
        *o = unsafe { dot(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
    }
}

//! IQ3_XXS and IQ3_S · Q8_K on x86 (AVX2): the `vec_dot` order of
//! `ggml_vec_dot_iq3_{xxs,s}_q8_K` and llama.cpp's tiled order, bit-identical to the
//! references in [`crate::scalar::iq3`].
//!
//! Every kernel works one 32-weight sub-block at a time: the eight grid rows (four magnitudes
//! each) looked up into one vector `g`, the signs expanded into ±1 bytes `s` (IQ3_XXS: 7-bit
//! indices through a table of `ksigns` patterns; IQ3_S: the sign bits spread with a byte
//! shuffle and compared), the scale `2s + 1` in every 16-bit lane.
//!
//! - `vec_dot` order: `madd(maddubs(g, sign(y, s)), scale)` per sub-block, as llama.cpp (the
//!   sign of the activations wraps at −128 there and here), summed exactly into eight i32 lanes,
//!   then per block `acc = fma(f16(d_w) · d_x, lanes, acc)`, and `0.25 · reduce8(acc)`
//!   (IQ3_XXS) or `reduce8(acc)` (IQ3_S).
//! - tiled order: the weights `w = sign(g, s)` and exact products `maddubs(|y|, sign(w, y))`
//!   (no wrap: pairs ≤ 2 · 128 · 62 < 2^15), the block total into [`AccTiled::add_no_min`]
//!   with `d_w = f16(d) · 0.25` (IQ3_XXS) or `f16(d)` (IQ3_S). The four-token kernel decodes
//!   each block once for four tokens.
//!
//! The work is dominated by the table look-ups. AVX-512 with VBMI and BITALG keeps the tables
//! of IQ3_XXS and IQ3_S in registers instead ([`super::iq_vbmi`], their one-token `vec_dot`
//! kernels, chosen by
//! the calibration against this one); otherwise `Avx512` gets these AVX2 kernels.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, hsum_i32x8, reduce8};
use super::iq_signs::SIGN7;
use super::{Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ3_S, BlockIQ3_XXS, BlockQ8_K};
use crate::grids::{IQ3S, IQ3XXS};
use crate::scalar::tiled::AccTiled;

/// One decoded sub-block of 32 weights: magnitudes, ±1 signs, 16-bit scales.
#[derive(Clone, Copy)]
struct Sub {
    /// Grid magnitudes (unsigned bytes ≤ 62).
    g: __m256i,
    /// Signs as ±1 bytes.
    s: __m256i,
    /// Scale `2s + 1` in every 16-bit lane.
    sc: __m256i,
}

/// Eight grid rows as one vector (row `i` in bytes `4i..4i+4`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows8(r: [u32; 8]) -> __m256i {
    _mm256_set_epi32(
        r[7] as i32,
        r[6] as i32,
        r[5] as i32,
        r[4] as i32,
        r[3] as i32,
        r[2] as i32,
        r[1] as i32,
        r[0] as i32,
    )
}

/// 32 sign bits (bit `k` of byte `l`: element `8l + k` negative) as 32 ±1 bytes: each byte
/// broadcast to its eight elements, tested against its bit, `−1` where set, else `1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn signs_bits(bits: u32) -> __m256i {
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    _mm256_or_si256(set, _mm256_set1_epi8(1))
}

/// Sub-block `j` of an IQ3_XXS block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_xxs(b: &BlockIQ3_XXS, j: usize) -> Sub {
    let q = &b.qs[8 * j..8 * j + 8];
    let aux = u32::from_le_bytes([
        b.qs[64 + 4 * j],
        b.qs[65 + 4 * j],
        b.qs[66 + 4 * j],
        b.qs[67 + 4 * j],
    ]);
    Sub {
        g: rows8(std::array::from_fn(|i| IQ3XXS[q[i] as usize])),
        s: _mm256_set_epi64x(
            SIGN7[(aux >> 21 & 127) as usize] as i64,
            SIGN7[(aux >> 14 & 127) as usize] as i64,
            SIGN7[(aux >> 7 & 127) as usize] as i64,
            SIGN7[(aux & 127) as usize] as i64,
        ),
        sc: _mm256_set1_epi16(2 * (aux >> 28) as i16 + 1),
    }
}

/// Sub-block `j` of an IQ3_S block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_s(b: &BlockIQ3_S, j: usize) -> Sub {
    let qh = b.qh[j] as usize;
    let q = &b.qs[8 * j..8 * j + 8];
    let s = (b.scales[j / 2] >> (4 * (j % 2)) & 15) as i16;
    Sub {
        g: rows8(std::array::from_fn(|i| {
            IQ3S[q[i] as usize | (qh >> i & 1) << 8]
        })),
        s: signs_bits(u32::from_le_bytes([
            b.signs[4 * j],
            b.signs[4 * j + 1],
            b.signs[4 * j + 2],
            b.signs[4 * j + 3],
        ])),
        sc: _mm256_set1_epi16(2 * s + 1),
    }
}

/// The 32 activation quants of sub-block `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_y(a: &BlockQ8_K, j: usize) -> __m256i {
    let y: &[i8; 32] = a.qs[32 * j..32 * j + 32].try_into().unwrap();
    // SAFETY: reads the 32 bytes of `y`.
    unsafe { _mm256_loadu_si256(y.as_ptr().cast()) }
}

/// `vec_dot` lanes of one sub-block: llama.cpp's `madd(maddubs(g, sign(y, s)), scale)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lanes_vec_dot(u: Sub, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u.g, _mm256_sign_epi8(y, u.s)), u.sc)
}

/// Exact lanes of one sub-block (`Σ scale · w · y`, no wrap): `w = sign(g, s)` (|w| ≤ 62),
/// `maddubs(|y|, sign(w, y))`, pairs ≤ 2 · 128 · 62 < 2^15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lanes_exact(w: __m256i, sc: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(w, y)),
        sc,
    )
}

/// Generates the three kernels of one format: `vec_dot` rows, tiled rows, tiled four tokens.
/// `$post` is the `vec_dot` order's final factor, `$factor` the tiled order's `d_w` factor.
macro_rules! iq3_kernels {
    ($block:ty, $sub:ident, $post:expr, $factor:expr, $rows:ident, $dot:ident, $tiled_dot:ident,
     $tiled_rows:ident, $tiled_rows4:ident) => {
        /// One row · `N` tokens in the tiled order, each block decoded once for all tokens.
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $tiled_dot<const N: usize>(w: &[$block], x: [&[BlockQ8_K]; N]) -> [f32; N] {
            let mut acc = [AccTiled::default(); N];
            for (i, b) in w.iter().enumerate() {
                let mut ws = [_mm256_setzero_si256(); 8];
                let mut sc = [_mm256_setzero_si256(); 8];
                for j in 0..8 {
                    let u = $sub(b, j);
                    ws[j] = _mm256_sign_epi8(u.g, u.s);
                    sc[j] = u.sc;
                }
                let dw = h2f(b.d) * $factor;
                for t in 0..N {
                    let a = &x[t][i];
                    let mut sum = _mm256_setzero_si256();
                    for j in 0..8 {
                        sum = _mm256_add_epi32(sum, lanes_exact(ws[j], sc[j], load_y(a, j)));
                    }
                    acc[t].add_no_min(dw, a.d(), hsum_i32x8(sum));
                }
            }
            acc.map(AccTiled::finish)
        }

        /// One row · one token in the `vec_dot` order.
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $dot(w: &[$block], x: &[BlockQ8_K]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            for (b, a) in w.iter().zip(x) {
                let mut sum = _mm256_setzero_si256();
                for j in 0..8 {
                    sum = _mm256_add_epi32(sum, lanes_vec_dot($sub(b, j), load_y(a, j)));
                }
                let d = h2f(b.d) * a.d();
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
            }
            $post(reduce8(acc))
        }

        super::iq_row_drivers!($block, $dot, $tiled_dot, $rows, $tiled_rows, $tiled_rows4);
    };
}

iq3_kernels!(
    BlockIQ3_XXS,
    sub_xxs,
    |s: f32| 0.25 * s,
    0.25,
    xxs_rows,
    xxs_dot,
    xxs_tiled_dot,
    xxs_tiled_rows,
    xxs_tiled_rows4
);
iq3_kernels!(
    BlockIQ3_S,
    sub_s,
    |s: f32| s,
    1.0,
    s_rows,
    s_dot,
    s_tiled_dot,
    s_tiled_rows,
    s_tiled_rows4
);

/// Whether the AVX2 kernels may run at `level` on this CPU.
fn avx2(level: SimdLevel) -> bool {
    level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available()
}

/// The `vec_dot`-order kernel for `ty` at most at `level`, where there is one.
pub(super) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    if !avx2(level) {
        return None;
    }
    Some(match ty {
        GgmlType::IQ3_XXS if level >= SimdLevel::Avx512 && super::iq_vbmi::available() => {
            super::iq_vbmi::xxs3_rows
        }
        GgmlType::IQ3_XXS => xxs_rows,
        GgmlType::IQ3_S if level >= SimdLevel::Avx512 && super::iq_vbmi::available() => {
            super::iq_vbmi::iq3s_rows
        }
        GgmlType::IQ3_S => s_rows,
        _ => return None,
    })
}

/// The tiled-order kernels (one token, four tokens) for `ty` at most at `level`, where there
/// are some.
pub(super) fn tiled_kernels(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if !avx2(level) {
        return None;
    }
    Some(match ty {
        GgmlType::IQ3_XXS => (xxs_tiled_rows, Some(xxs_tiled_rows4 as Rows4Fn)),
        GgmlType::IQ3_S => (s_tiled_rows, Some(s_tiled_rows4 as Rows4Fn)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::iq3 as reference;
    use crate::simd::test_util::check_iq_kernels as check;

    check!(
        xxs_wrap,
        BlockIQ3_XXS,
        xxs_dot,
        xxs_tiled_dot,
        reference::iq3_xxs,
        reference::iq3_xxs_tiled
    );
    check!(
        s_wrap,
        BlockIQ3_S,
        s_dot,
        s_tiled_dot,
        reference::iq3_s,
        reference::iq3_s_tiled
    );
}

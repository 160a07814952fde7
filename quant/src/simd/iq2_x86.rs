//! IQ2_XXS, IQ2_XS and IQ2_S · Q8_K on x86 (AVX2): the `vec_dot` order of
//! `ggml_vec_dot_iq2_{xxs,xs,s}_q8_K` and llama.cpp's tiled order, bit-identical to the
//! references in [`crate::scalar::iq2`].
//!
//! Every kernel works one 32-weight sub-block at a time: the four grid rows gathered from the
//! lattice table into one vector of magnitudes `g`, the signs expanded from a table into ±1
//! bytes `s`, the scale(s) `2s + 1` as 16-bit lanes (one per 32 weights for IQ2_XXS; for IQ2_XS
//! and IQ2_S the low 128-bit half holds the first 16 weights' scale and the high half the
//! second's).
//!
//! - `vec_dot` order: `madd(maddubs(g, sign(y, s)), scale)` per sub-block, as llama.cpp (the
//!   sign of the activations wraps at −128 there and here), summed exactly into eight i32 lanes,
//!   then per block `acc = fma(f16(d_w) · d_x, lanes, acc)` and `0.125 · reduce8(acc)`.
//! - tiled order: the weights `w = sign(g, s)` and exact products
//!   `maddubs(|y|, sign(w, y))` (no wrap), the block total into [`AccTiled::add_no_min`] with
//!   `d_w = f16(d) · 0.125`. The four-token kernel decodes each block once for four tokens.
//!
//! The work is dominated by the table look-ups. AVX-512 with VBMI and BITALG keeps the tables
//! of IQ2_XXS and IQ2_S in registers instead ([`super::iq_vbmi`], their one-token `vec_dot` kernels, chosen by
//! the calibration against this one); otherwise `Avx512` gets these AVX2 kernels. (Hardware
//! gathers of the grid rows measured 6× slower than these scalar loads on the Intel VM.)

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, hsum_i32x8, reduce8};
use super::iq_signs::{SIGN7, SIGN8};
use super::{Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ2_S, BlockIQ2_XS, BlockIQ2_XXS, BlockQ8_K};
use crate::grids::{IQ2S, IQ2XS, IQ2XXS};
use crate::scalar::tiled::AccTiled;

/// One decoded sub-block of 32 weights: magnitudes, ±1 signs, 16-bit scales.
#[derive(Clone, Copy)]
struct Sub {
    /// Grid magnitudes (unsigned bytes ≤ 43).
    g: __m256i,
    /// Signs as ±1 bytes.
    s: __m256i,
    /// Scales `2s + 1` per 16-bit lane.
    sc: __m256i,
}

/// Four grid rows as one vector (row `l` in bytes `8l..8l+8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows4(r: [u64; 4]) -> __m256i {
    _mm256_set_epi64x(r[3] as i64, r[2] as i64, r[1] as i64, r[0] as i64)
}

/// A block's sixteen scales `2s + 1` as i16 from its eight scale bytes (low nibble: first 16
/// weights of a sub-block, high nibble: last 16): the low nibbles in the low 128-bit half, the
/// high ones in the high half. Computed once per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_scales(scales: &[u8; 8]) -> __m256i {
    let v = u64::from_le_bytes(*scales) as i64;
    let nib = _mm_and_si128(_mm_set_epi64x(v >> 4, v), _mm_set1_epi8(0x0F));
    let s8 = _mm_add_epi8(_mm_add_epi8(nib, nib), _mm_set1_epi8(1));
    _mm256_cvtepi8_epi16(s8)
}

/// The scale vector of sub-block `j`: word `j` of each half of [`block_scales`] broadcast in
/// its half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales2(s16: __m256i, j: usize) -> __m256i {
    let pick = (2 * j as i16) | (2 * j as i16 + 1) << 8;
    _mm256_shuffle_epi8(s16, _mm256_set1_epi16(pick))
}

/// [`block_scales`] of an IQ2_XS block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pre_xs(b: &BlockIQ2_XS) -> __m256i {
    block_scales(&b.scales)
}

/// [`block_scales`] of an IQ2_S block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pre_s(b: &BlockIQ2_S) -> __m256i {
    block_scales(&b.scales)
}

/// IQ2_XXS needs no per-block precomputation (its scales sit with each sub-block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pre_xxs(_b: &BlockIQ2_XXS) -> __m256i {
    _mm256_setzero_si256()
}

/// Sub-block `j` of an IQ2_XXS block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_xxs(b: &BlockIQ2_XXS, j: usize, _pre: __m256i) -> Sub {
    let q: [u8; 8] = b.qs[8 * j..8 * j + 8].try_into().unwrap();
    let v = u64::from_le_bytes(q);
    let aux = (v >> 32) as u32;
    let sg = |l: u32| SIGN7[(aux >> (7 * l) & 127) as usize];
    Sub {
        g: rows4(std::array::from_fn(|l| {
            IQ2XXS[(v >> (8 * l) & 0xFF) as usize]
        })),
        s: rows4([sg(0), sg(1), sg(2), sg(3)]),
        sc: _mm256_set1_epi16(2 * (aux >> 28) as i16 + 1),
    }
}

/// Sub-block `j` of an IQ2_XS block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_xs(b: &BlockIQ2_XS, j: usize, pre: __m256i) -> Sub {
    let q: [u16; 4] =
        std::array::from_fn(|l| u16::from_le_bytes([b.qs[8 * j + 2 * l], b.qs[8 * j + 2 * l + 1]]));
    Sub {
        g: rows4(std::array::from_fn(|l| IQ2XS[(q[l] & 511) as usize])),
        s: rows4(std::array::from_fn(|l| SIGN7[(q[l] >> 9) as usize])),
        sc: scales2(pre, j),
    }
}

/// Sub-block `j` of an IQ2_S block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_s(b: &BlockIQ2_S, j: usize, pre: __m256i) -> Sub {
    let qh = b.qh[j] as usize;
    Sub {
        g: rows4(std::array::from_fn(|l| {
            IQ2S[b.qs[4 * j + l] as usize | (qh >> (2 * l) & 3) << 8]
        })),
        s: rows4(std::array::from_fn(|l| {
            SIGN8[b.qs[32 + 4 * j + l] as usize]
        })),
        sc: scales2(pre, j),
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

/// Exact lanes of one sub-block (`Σ scale · w · y`, no wrap): `w = sign(g, s)` (|w| ≤ 43),
/// `maddubs(|y|, sign(w, y))`, pairs ≤ 2 · 128 · 43 < 2^15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lanes_exact(w: __m256i, sc: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(w, y)),
        sc,
    )
}

/// Generates the three kernels of one format: `vec_dot` rows, tiled rows, tiled four tokens.
macro_rules! iq2_kernels {
    ($block:ty, $pre:ident, $sub:ident, $rows:ident, $dot:ident, $tiled_dot:ident, $tiled_rows:ident, $tiled_rows4:ident) => {
        /// One row · `N` tokens in the tiled order, each block decoded once for all tokens.
        #[target_feature(enable = "avx2,fma,f16c")]
        fn $tiled_dot<const N: usize>(w: &[$block], x: [&[BlockQ8_K]; N]) -> [f32; N] {
            let mut acc = [AccTiled::default(); N];
            for (i, b) in w.iter().enumerate() {
                let pre = $pre(b);
                let mut ws = [_mm256_setzero_si256(); 8];
                let mut sc = [_mm256_setzero_si256(); 8];
                for j in 0..8 {
                    let u = $sub(b, j, pre);
                    ws[j] = _mm256_sign_epi8(u.g, u.s);
                    sc[j] = u.sc;
                }
                let dw = h2f(b.d) * 0.125;
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
                let pre = $pre(b);
                let mut sum = _mm256_setzero_si256();
                for j in 0..8 {
                    sum = _mm256_add_epi32(sum, lanes_vec_dot($sub(b, j, pre), load_y(a, j)));
                }
                let d = h2f(b.d) * a.d();
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
            }
            0.125 * reduce8(acc)
        }

        super::iq_row_drivers!($block, $dot, $tiled_dot, $rows, $tiled_rows, $tiled_rows4);
    };
}

iq2_kernels!(
    BlockIQ2_XXS,
    pre_xxs,
    sub_xxs,
    xxs_rows,
    xxs_dot,
    xxs_tiled_dot,
    xxs_tiled_rows,
    xxs_tiled_rows4
);
iq2_kernels!(
    BlockIQ2_XS,
    pre_xs,
    sub_xs,
    xs_rows,
    xs_dot,
    xs_tiled_dot,
    xs_tiled_rows,
    xs_tiled_rows4
);
iq2_kernels!(
    BlockIQ2_S,
    pre_s,
    sub_s,
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
        GgmlType::IQ2_XXS if level >= SimdLevel::Avx512 && super::iq_vbmi::available() => {
            super::iq_vbmi::xxs2_rows
        }
        GgmlType::IQ2_XXS => xxs_rows,
        GgmlType::IQ2_S if level >= SimdLevel::Avx512 && super::iq_vbmi::iq2s_available() => {
            super::iq_vbmi::iq2s_rows
        }
        GgmlType::IQ2_XS => xs_rows,
        GgmlType::IQ2_S => s_rows,
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
        GgmlType::IQ2_XXS => (xxs_tiled_rows, Some(xxs_tiled_rows4 as Rows4Fn)),
        GgmlType::IQ2_XS => (xs_tiled_rows, Some(xs_tiled_rows4 as Rows4Fn)),
        GgmlType::IQ2_S => (s_tiled_rows, Some(s_tiled_rows4 as Rows4Fn)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    //! The kernels against the scalar references on inputs the public API cannot make.

    use super::*;
    use crate::scalar::iq2 as reference;
    use crate::simd::test_util::check_iq_kernels as check;

    check!(
        xxs_wrap,
        BlockIQ2_XXS,
        xxs_dot,
        xxs_tiled_dot,
        reference::iq2_xxs,
        reference::iq2_xxs_tiled
    );
    check!(
        xs_wrap,
        BlockIQ2_XS,
        xs_dot,
        xs_tiled_dot,
        reference::iq2_xs,
        reference::iq2_xs_tiled
    );
    check!(
        s_wrap,
        BlockIQ2_S,
        s_dot,
        s_tiled_dot,
        reference::iq2_s,
        reference::iq2_s_tiled
    );
}

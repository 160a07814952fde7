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
//! There is no AVX-512 version: the work is dominated by the table look-ups, which AVX-512 does
//! not make cheaper, so `Avx512` gets the AVX2 kernels.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, hsum_i32x8, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ3_S, BlockIQ3_XXS, BlockQ8_K};
use crate::grids::{IQ3S, IQ3XXS};
use crate::scalar::tiled::AccTiled;

/// Sign byte `b` as eight bytes (little-endian u64): `−1` where bit `k` is set, else `1`.
const SIGN8: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            let byte: u64 = if (b >> k) & 1 != 0 { 0xFF } else { 0x01 };
            t[b] |= byte << (8 * k);
            k += 1;
        }
        b += 1;
    }
    t
};

/// `i` with bit 7 set when `i` has an odd number of bits: ggml's `ksigns_iq2xs` (the same
/// values as [`crate::grids::KSIGNS`], computed here so [`SIGN7`] can be a constant).
const fn ksign(i: usize) -> u8 {
    (i as u8) | (((i as u32).count_ones() & 1) as u8) << 7
}

/// A 7-bit sign index as eight ±1 bytes: `SIGN8[ksign(i)]`.
const SIGN7: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = SIGN8[ksign(i) as usize];
        i += 1;
    }
    t
};

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

        /// Rows · one token in the `vec_dot` order.
        fn $rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            let x = crate::blocks::view::<BlockQ8_K>(x).expect("activation blocks");
            for (r, o) in out.iter_mut().enumerate() {
                let wr = crate::blocks::view::<$block>(&w[r * row_bytes..][..row_bytes])
                    .expect("weight blocks");
                // SAFETY: `kernel` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                *o = unsafe { $dot(wr, x) };
            }
        }

        /// Rows · one token in the tiled order.
        fn $tiled_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            let x = crate::blocks::view::<BlockQ8_K>(x).expect("activation blocks");
            for (r, o) in out.iter_mut().enumerate() {
                let wr = crate::blocks::view::<$block>(&w[r * row_bytes..][..row_bytes])
                    .expect("weight blocks");
                // SAFETY: `tiled_kernels` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                *o = unsafe { $tiled_dot::<1>(wr, [x])[0] };
            }
        }

        /// Rows · four tokens in the tiled order.
        fn $tiled_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
            let n = out[0].len();
            assert!(out.iter().all(|o| o.len() == n), "output lengths differ");
            let x = x.map(|x| {
                check_rows::<$block, BlockQ8_K>(w, row_bytes, x, n);
                crate::blocks::view::<BlockQ8_K>(x).expect("activation blocks")
            });
            for r in 0..n {
                let wr = crate::blocks::view::<$block>(&w[r * row_bytes..][..row_bytes])
                    .expect("weight blocks");
                // SAFETY: `tiled_kernels` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                let v = unsafe { $tiled_dot::<4>(wr, x) };
                for t in 0..4 {
                    out[t][r] = v[t];
                }
            }
        }
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
        GgmlType::IQ3_XXS => xxs_rows,
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
    use crate::blocks::view;
    use crate::scalar::iq3 as reference;

    /// Pseudo-random bytes (a 64-bit LCG's high bytes).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    /// `nb` Q8_K blocks with scale 1 whose quants are often −128 (which the public quantizer
    /// never makes): `vec_dot`'s sign wraps there and the tiled order's products do not.
    fn acts(nb: usize, seed: u64) -> Vec<u8> {
        let mut v = bytes(nb * 292, seed);
        for b in v.chunks_exact_mut(292) {
            b[..4].copy_from_slice(&1f32.to_le_bytes());
            for q in &mut b[4..260] {
                if *q % 3 == 0 {
                    *q = 0x80;
                }
            }
        }
        v
    }

    /// The constant sign tables agree with the shared `KSIGNS`.
    #[test]
    fn sign7_matches_ksigns() {
        for (i, &k) in crate::grids::KSIGNS.iter().enumerate() {
            assert_eq!(ksign(i), k, "index {i}");
            assert_eq!(SIGN7[i], SIGN8[k as usize], "index {i}");
        }
    }

    /// Direct kernel calls against the references, with −128 activations.
    macro_rules! check {
        ($name:ident, $block:ty, $dot:ident, $tiled_dot:ident, $vd:path, $td:path) => {
            #[test]
            fn $name() {
                if !SimdLevel::Avx2.is_available() {
                    return;
                }
                let nb = 3;
                let size = std::mem::size_of::<$block>();
                for seed in 0..20u64 {
                    let mut wb = bytes(nb * size, seed);
                    for b in wb.chunks_exact_mut(size) {
                        b[..2].copy_from_slice(&[0x00, 0x3C]); // f16 1.0
                    }
                    let w = view::<$block>(&wb).unwrap();
                    let xb: [Vec<u8>; 4] = std::array::from_fn(|t| acts(nb, 100 * seed + t as u64));
                    let x: [&[BlockQ8_K]; 4] = std::array::from_fn(|t| view(&xb[t]).unwrap());
                    // SAFETY: AVX2/FMA/F16C checked above.
                    let got = unsafe { $dot(w, x[0]) };
                    assert_eq!(got.to_bits(), $vd(w, x[0]).to_bits(), "vec_dot seed {seed}");
                    let want: [f32; 4] = std::array::from_fn(|t| $td(w, x[t]));
                    // SAFETY: as above.
                    let one = unsafe { $tiled_dot::<1>(w, [x[0]]) };
                    assert_eq!(one[0].to_bits(), want[0].to_bits(), "tiled seed {seed}");
                    // SAFETY: as above.
                    let four = unsafe { $tiled_dot::<4>(w, x) };
                    assert_eq!(
                        four.map(f32::to_bits),
                        want.map(f32::to_bits),
                        "tiled4 seed {seed}"
                    );
                }
            }
        };
    }

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

//! x86-64 AVX-512 (F, BW, VL, VNNI) kernels for Q3_K, Q5_K and Q6_K × Q8_K, for matvec (four rows per
//! pass) and for matmul (two rows × four tokens per pass); Q8_0, Q5_0, Q4_0 × Q8_0 are in
//! [`avx512_q0`](super::avx512_q0), Q4_K in `q4k_x86` (llama.cpp's float orders). Other formats
//! use the AVX2 kernels at this level.
//!
//! - Q6_K: quants are unpacked in element order 64 at a time so that one 64-byte activation
//!   load meets them; `vpmaddubsw` forms pair products and `vpdpwssd` (VNNI) multiplies by the
//!   sub-block scales (picked with `vpermw`) and accumulates in one instruction.
//! - Q5_K: each 32 bytes of `qs` broadcast to both 256-bit halves give 64 elements in element
//!   order (low nibbles below, high nibbles above); the fifth bits join with one `vpternlogd`,
//!   and the scales (picked with `vpshufb`) multiply in `vpdpwssd` as for Q6_K.
//! - Q3_K: the same element order from 32 bytes of `qs` (two bit pairs a vector); the quants
//!   take `vpmaddubsw` as `q + 4` (0..7), and four times each pair of activations (once per
//!   token and block) is subtracted from the pair products before the scales.
//! - Matmul: each weight block is unpacked once and used for four tokens; for a given (row,
//!   token) the operations are exactly those of the matvec kernel, so results are identical.
//! - Software prefetch of the blocks a few ahead in every row.
//!
//! Integer sums are exact; the float order is llama.cpp's and the scalar reference's exactly.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{bsums32, by_rows, h2f, hsum_i32x8, k_scales_mins, min_sum, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{q3k_scales, BlockQ3_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use crate::scalar::tiled::AccTiled;

/// The AVX-512 kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    if let Some(k) = super::avx512_q0::kernel(ty) {
        return Some(k);
    }
    Some(match ty {
        GgmlType::Q3_K => q3_k_rows,
        GgmlType::Q5_K => q5_k_rows,
        GgmlType::Q6_K => q6_k_rows,
        _ => return None,
    })
}

/// The AVX-512 four-token kernel for weight type `ty`, where one exists.
pub(super) fn kernel4(ty: GgmlType) -> Option<Rows4Fn> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    if let Some(k) = super::avx512_q0::kernel4(ty) {
        return Some(k);
    }
    Some(match ty {
        GgmlType::Q3_K => q3_k_rows4,
        GgmlType::Q5_K => q5_k_rows4,
        GgmlType::Q6_K => q6_k_rows4,
        _ => return None,
    })
}

/// The AVX-512 kernels (one token, four tokens) for `ty` in the float order of llama.cpp's
/// tiled matmul (see [`crate::tiled`]).
pub(super) fn tiled_kernels(ty: GgmlType) -> Option<(RowsFn, Rows4Fn)> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    Some(match ty {
        GgmlType::Q3_K => (q3_k_tiled_rows, q3_k_tiled_rows4),
        GgmlType::Q5_K => (q5_k_tiled_rows, q5_k_tiled_rows4),
        GgmlType::Q6_K => (q6_k_tiled_rows, q6_k_tiled_rows4),
        _ => return None,
    })
}

/// Defines the matvec kernel `$rows` (4 rows at a time, one token) and the 4-token kernel
/// `$rows4` (2 rows × 4 tokens at a time) over `$inner::<N, T>`.
macro_rules! mt_kernels {
    ($rows:ident, $rows4:ident, $inner:ident, $wb:ty, $ab:ty) => {
        fn $rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let nb = check_rows::<$wb, $ab>(w, row_bytes, x, out.len());
            let xp = [x.as_ptr().cast::<$ab>()];
            by_rows!(w, row_bytes, out,
                // SAFETY: `kernel` hands this function out only when the CPU has every feature
                // `$inner` enables; `check_rows` verified every row holds `nb` blocks and `x`
                // the matching activation blocks, which is all `$inner` reads.
                |p: [4]| unsafe { $inner::<4, 1>(p.map(|p| p.cast::<$wb>()), xp, nb) }.map(|v| v[0]),
                // SAFETY: as above.
                |p: [1]| unsafe { $inner::<1, 1>(p.map(|p| p.cast::<$wb>()), xp, nb) }.map(|v| v[0]))
        }

        fn $rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
            let rows = out[0].len();
            assert!(out.iter().all(|o| o.len() == rows), "output rows differ in length");
            let nb = check_rows::<$wb, $ab>(w, row_bytes, x[0], rows);
            for t in 1..4 {
                check_rows::<$wb, $ab>(w, row_bytes, x[t], rows);
            }
            let xp = x.map(|s| s.as_ptr().cast::<$ab>());
            let row = |r: usize| w[r * row_bytes..].as_ptr().cast::<$wb>();
            let mut r = 0;
            while r + 2 <= rows {
                // SAFETY: as in `$rows`, for each of the four activation rows.
                let res = unsafe { $inner::<2, 4>([row(r), row(r + 1)], xp, nb) };
                for (k, rr) in res.iter().enumerate() {
                    for t in 0..4 {
                        out[t][r + k] = rr[t];
                    }
                }
                r += 2;
            }
            if r < rows {
                // SAFETY: as above.
                let res = unsafe { $inner::<1, 4>([row(r)], xp, nb) };
                for t in 0..4 {
                    out[t][r] = res[0][t];
                }
            }
        }
    };
}

/// `vpermw` indices of the scale words for vector `v` of a block with sixteen 16-element
/// sub-blocks (Q6_K, Q3_K), from its sixteen scales as words: word `k` takes sub-block
/// `4v + k/8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sub16_picks() -> [__m512i; 4] {
    std::array::from_fn(|v| {
        let base = 4 * v as i16;
        let lanes: [i16; 32] = std::array::from_fn(|k| base + k as i16 / 8);
        // SAFETY: reads the 64 bytes of `lanes`.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    })
}

/// The two 256-bit halves of a 64-element vector's i32 sums added: with elements
/// `64v..64v+64` in element order, lane `k` then holds those with `(e mod 32)/4 == k`,
/// llama.cpp's eight lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fold_halves(isum: __m512i) -> __m256i {
    _mm256_add_epi32(
        _mm512_castsi512_si256(isum),
        _mm512_extracti64x4_epi64::<1>(isum),
    )
}

/// Q6_K · Q8_K for `N` weight rows and `T` tokens at once. Per half c of the
/// block, the 64 bytes `ql[64c..64c+64]` and `qh[32c..32c+32]` broadcast to both 256-bit halves
/// (the upper one shifted right by two) give the quants of elements `128c..128c+64` (low
/// nibbles) and `128c+64..128c+128` (high nibbles) in element order; the −32 offset is taken
/// out with the Q8_K `bsums`.
///
/// Float order is llama.cpp's (`ggml_vec_dot_q6_K_q8_K`, AVX2 branch) and the scalar
/// reference's: the two 256-bit halves of the integer sum are added (i32 lane `k` then holds
/// the elements with `(e mod 32)/4 == k`, as in llama.cpp's eight lanes), the offset term of
/// sub-blocks 2k, 2k+1 is subtracted in lane k, and one 8-lane FMA by `d_x·d_w` per block
/// accumulates; the lanes are reduced once at the end.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb` readable
/// blocks, each `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_mt<const N: usize, const T: usize>(
    w: [*const BlockQ6_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q6_k_any::<N, T, false>(w, x, nb) }
}

/// [`q6_k_mt`] in the float order of llama.cpp's tiled matmul (see [`crate::tiled`]): per block
/// the eight i32 lanes are added up (exact), then `acc = fma(f32(s)·d_w, d_x, acc)`.
///
/// # Safety
/// As [`q6_k_mt`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_tiled_mt<const N: usize, const T: usize>(
    w: [*const BlockQ6_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q6_k_any::<N, T, true>(w, x, nb) }
}

/// The Q6_K kernel body: `TILED` picks the float order (see [`q6_k_mt`], [`q6_k_tiled_mt`]).
///
/// # Safety
/// As [`q6_k_mt`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_any<const N: usize, const T: usize, const TILED: bool>(
    w: [*const BlockQ6_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm256_setzero_ps(); T]; N];
    let mut tiled = [[AccTiled::default(); T]; N];
    let m4 = _mm512_set1_epi8(0x0F);
    let m33 = _mm512_set1_epi8(0x33);
    let pick = sub16_picks();
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, super::avx2::PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            // SAFETY: reads the 16 bytes of `b.scales`.
            let sc16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) });
            let sc512 = _mm512_castsi256_si512(sc16);
            let mut q = [_mm512_setzero_si512(); 4];
            for c in 0..2 {
                // SAFETY: reads bytes 64c..64c+64 of the 128-byte `b.ql` and 32c..32c+32 of the
                // 64-byte `b.qh`.
                let (ql, qh) = unsafe {
                    (
                        _mm512_loadu_si512(b.ql.as_ptr().add(64 * c).cast()),
                        _mm512_broadcast_i64x4(_mm256_loadu_si256(
                            b.qh.as_ptr().add(32 * c).cast(),
                        )),
                    )
                };
                // Bits 0-1 and 4-5 of each `qh` byte (upper half: bits 2-3 and 6-7), the rest
                // cleared, so that neither shift below carries a stray bit into bits 4-7.
                let qh = _mm512_and_si512(_mm512_mask_srli_epi16(qh, 0xFFFF_0000, qh, 2), m33);
                // Bits 0-3 from the nibble, bits 4-7 from `qh` (bits 6-7 are zero there).
                q[2 * c] = _mm512_ternarylogic_epi32::<0xCA>(m4, ql, _mm512_slli_epi16::<4>(qh));
                q[2 * c + 1] =
                    _mm512_ternarylogic_epi32::<0xCA>(m4, _mm512_srli_epi16::<4>(ql), qh);
            }
            let scale: [__m512i; 4] =
                std::array::from_fn(|v| _mm512_permutexvar_epi16(pick[v], sc512));
            let d = h2f(b.d);
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut isum = _mm512_setzero_si512();
                for v in 0..4 {
                    // SAFETY: reads bytes 64v..64v+64 of the 256-byte `a.qs`.
                    let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * v).cast()) };
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[v], y), scale[v]);
                }
                // SAFETY: reads the 32 bytes of `a.bsums`.
                let bsums = unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) };
                let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, sc16));
                let isum8 = fold_halves(isum);
                let isum8 = _mm256_sub_epi32(isum8, corr);
                if TILED {
                    tiled[r][t].add_no_min(d, a.d(), hsum_i32x8(isum8));
                } else {
                    acc[r][t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(a.d() * d),
                        _mm256_cvtepi32_ps(isum8),
                        acc[r][t],
                    );
                }
            }
        }
    }
    if TILED {
        return tiled.map(|row| row.map(AccTiled::finish));
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce8(acc[r][t])))
}

mt_kernels!(q6_k_rows, q6_k_rows4, q6_k_mt, BlockQ6_K, BlockQ8_K);
mt_kernels!(
    q6_k_tiled_rows,
    q6_k_tiled_rows4,
    q6_k_tiled_mt,
    BlockQ6_K,
    BlockQ8_K
);

/// Q5_K · Q8_K for `N` weight rows and `T` tokens at once (as [`q6_k_mt`]). Vector `v` of a
/// block holds elements `64v..64v+64` in element order: the 32 bytes `qs[32v..32v+32]`
/// broadcast to both 256-bit halves give the low nibbles below (sub-block `2v`) and the high
/// nibbles above (sub-block `2v+1`); `qh` broadcast the same way, its upper half shifted right
/// by one, holds both halves' fifth bits at bit `2v` of each byte.
///
/// Float order is llama.cpp's (`ggml_vec_dot_q5_K_q8_K`, AVX2 branch) and the scalar
/// reference's: i32 lane `k` of the integer sum holds the elements with `(e mod 32)/4 == k`
/// (as [`q6_k_mt`]), one 8-lane FMA by `d_x·d_w` per block accumulates them, and the mins term
/// `Σ m_j · bsum_j` (exact) is a scalar FMA by `−d_x·dmin_w` per block, added after the lanes
/// are reduced.
///
/// # Safety
/// As [`q6_k_mt`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_k_mt<const N: usize, const T: usize>(
    w: [*const BlockQ5_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q5_k_any::<N, T, false>(w, x, nb) }
}

/// [`q5_k_mt`] in the float order of llama.cpp's tiled matmul (see [`crate::tiled`]): per block
/// `acc = fma(fma(−dmin_w, f32(m), f32(s)·d_w), d_x, acc)` with the exact sums `s` and `m`.
///
/// # Safety
/// As [`q6_k_mt`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_k_tiled_mt<const N: usize, const T: usize>(
    w: [*const BlockQ5_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q5_k_any::<N, T, true>(w, x, nb) }
}

/// The Q5_K kernel body: `TILED` picks the float order (see [`q5_k_mt`], [`q5_k_tiled_mt`]).
///
/// # Safety
/// As [`q6_k_mt`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_k_any<const N: usize, const T: usize, const TILED: bool>(
    w: [*const BlockQ5_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm256_setzero_ps(); T]; N];
    let mut summs = [[0f32; T]; N];
    let mut tiled = [[AccTiled::default(); T]; N];
    let m4 = _mm512_set1_epi8(0x0F);
    let m16 = _mm512_set1_epi8(0x10);
    // Scale words for vector v from the eight scale bytes (in every 128-bit lane): words of
    // the lower half take byte 2v, of the upper half byte 2v + 1 (index 0x80: a zero high byte).
    let pick: [__m512i; 4] = std::array::from_fn(|v| {
        let bytes: [u8; 64] = std::array::from_fn(|k| match k % 2 {
            0 => (2 * v + k / 32) as u8,
            _ => 0x80,
        });
        // SAFETY: reads the 64 bytes of `bytes`.
        unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
    });
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, super::avx2::PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let bs32: [__m128i; T] = std::array::from_fn(|t| bsums32(unsafe { &*x[t].add(i) }));
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            let sc8 = _mm512_broadcast_i32x4(sc);
            // SAFETY: reads the 32 bytes of `b.qh`.
            let qh = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(b.qh.as_ptr().cast()) });
            let qh = _mm512_mask_srli_epi16(qh, 0xFFFF_0000, qh, 1);
            // Bit 2v of each `qh` byte moved to bit 4 (16-bit shifts: a byte's bit 4 comes
            // from the same byte).
            let hb = [
                _mm512_slli_epi16::<4>(qh),
                _mm512_slli_epi16::<2>(qh),
                qh,
                _mm512_srli_epi16::<2>(qh),
            ];
            let q: [__m512i; 4] = std::array::from_fn(|v| {
                // SAFETY: reads bytes 32v..32v+32 of the 128-byte `b.qs`.
                let qs = _mm512_broadcast_i64x4(unsafe {
                    _mm256_loadu_si256(b.qs.as_ptr().add(32 * v).cast())
                });
                let nib = _mm512_and_si512(_mm512_mask_srli_epi16(qs, 0xFFFF_0000, qs, 4), m4);
                // nib | (hb & 0x10)
                _mm512_ternarylogic_epi32::<0xF8>(nib, hb[v], m16)
            });
            let scale: [__m512i; 4] = std::array::from_fn(|v| _mm512_shuffle_epi8(sc8, pick[v]));
            let (d, dmin) = (h2f(b.d), h2f(b.dmin));
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut isum = _mm512_setzero_si512();
                for v in 0..4 {
                    // SAFETY: reads bytes 64v..64v+64 of the 256-byte `a.qs`.
                    let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * v).cast()) };
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[v], y), scale[v]);
                }
                let isum8 = fold_halves(isum);
                let msum = min_sum(mins, bs32[t]);
                let dx = a.d();
                if TILED {
                    tiled[r][t].add(d, dmin, dx, hsum_i32x8(isum8), msum);
                } else {
                    acc[r][t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(dx * d),
                        _mm256_cvtepi32_ps(isum8),
                        acc[r][t],
                    );
                    summs[r][t] = (msum as f32).mul_add(-dx * dmin, summs[r][t]);
                }
            }
        }
    }
    if TILED {
        return tiled.map(|row| row.map(AccTiled::finish));
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce8(acc[r][t]) + summs[r][t]))
}

mt_kernels!(q5_k_rows, q5_k_rows4, q5_k_mt, BlockQ5_K, BlockQ8_K);
mt_kernels!(
    q5_k_tiled_rows,
    q5_k_tiled_rows4,
    q5_k_tiled_mt,
    BlockQ5_K,
    BlockQ8_K
);

/// Q3_K · Q8_K for `N` weight rows and `T` tokens at once (as [`q6_k_mt`]). Vector `v` of a
/// block holds elements `64v..64v+64` in element order: the 32 bytes `qs[32c..32c+32]`
/// (`c = v / 2`) broadcast to both 256-bit halves, the upper one shifted right by two, hold
/// bit pairs `2v` (below) and `2v + 1` (above) at bits `4(v mod 2)`; `hmask` broadcast the same
/// way, its upper half shifted right by one, holds both halves' high bits at bit `2v`.
///
/// Float order is llama.cpp's (`ggml_vec_dot_q3_K_q8_K`, AVX2 branch) and the scalar
/// reference's: i32 lane `k` of the integer sum holds the elements with `(e mod 32)/4 == k`
/// (as [`q6_k_mt`]); each pair product is `(q + 4)·y − 4·y` summed over the pair (exact, at
/// most 2·4·128 in magnitude), as llama.cpp's difference of two unsigned products; one 8-lane
/// FMA by `d_x·d_w` per block accumulates.
///
/// # Safety
/// As [`q6_k_mt`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3_k_mt<const N: usize, const T: usize>(
    w: [*const BlockQ3_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q3_k_any::<N, T, false>(w, x, nb) }
}

/// [`q3_k_mt`] in the float order of llama.cpp's tiled matmul (see [`crate::tiled`]): per block
/// the eight i32 lanes are added up (exact), then `acc = fma(f32(s)·d_w, d_x, acc)`.
///
/// # Safety
/// As [`q6_k_mt`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3_k_tiled_mt<const N: usize, const T: usize>(
    w: [*const BlockQ3_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q3_k_any::<N, T, true>(w, x, nb) }
}

/// The Q3_K kernel body: `TILED` picks the float order (see [`q3_k_mt`], [`q3_k_tiled_mt`]).
///
/// # Safety
/// As [`q6_k_mt`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q3_k_any<const N: usize, const T: usize, const TILED: bool>(
    w: [*const BlockQ3_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm256_setzero_ps(); T]; N];
    let mut tiled = [[AccTiled::default(); T]; N];
    let m3 = _mm512_set1_epi8(3);
    let m4 = _mm512_set1_epi8(4);
    let pick = sub16_picks();
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, super::avx2::PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // Four times each pair of activations, per token and vector (i16, at most 4·2·128).
        let y4: [[__m512i; 4]; T] = std::array::from_fn(|t| {
            std::array::from_fn(|v| {
                // SAFETY: `i < nb` (caller); reads bytes 64v..64v+64 of the 256-byte `qs`.
                let y =
                    unsafe { _mm512_loadu_si512((*x[t].add(i)).qs.as_ptr().add(64 * v).cast()) };
                _mm512_maddubs_epi16(m4, y)
            })
        });
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let sc = q3k_scales(&b.scales);
            // SAFETY: reads the 16 bytes of `sc`.
            let sc16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
            let sc512 = _mm512_castsi256_si512(sc16);
            // SAFETY: reads the 32 bytes of `b.hmask`.
            let hm = _mm512_broadcast_i64x4(unsafe { _mm256_loadu_si256(b.hmask.as_ptr().cast()) });
            let hm = _mm512_mask_srli_epi16(hm, 0xFFFF_0000, hm, 1);
            // Bit 2v of each `hmask` byte moved to bit 2 (16-bit shifts: a byte's bit 2 comes
            // from the same byte).
            let hb = [
                _mm512_slli_epi16::<2>(hm),
                hm,
                _mm512_srli_epi16::<2>(hm),
                _mm512_srli_epi16::<4>(hm),
            ];
            let mut q = [_mm512_setzero_si512(); 4];
            for c in 0..2 {
                // SAFETY: reads bytes 32c..32c+32 of the 64-byte `b.qs`.
                let qs = _mm512_broadcast_i64x4(unsafe {
                    _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast())
                });
                let qs = _mm512_mask_srli_epi16(qs, 0xFFFF_0000, qs, 2);
                let low = [
                    _mm512_and_si512(qs, m3),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(qs), m3),
                ];
                for h in 0..2 {
                    // q + 4 = low | (high bit · 4)
                    q[2 * c + h] = _mm512_ternarylogic_epi32::<0xF8>(low[h], hb[2 * c + h], m4);
                }
            }
            let scale: [__m512i; 4] =
                std::array::from_fn(|v| _mm512_permutexvar_epi16(pick[v], sc512));
            let d = h2f(b.d);
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut isum = _mm512_setzero_si512();
                for v in 0..4 {
                    // SAFETY: reads bytes 64v..64v+64 of the 256-byte `a.qs`.
                    let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * v).cast()) };
                    let p = _mm512_sub_epi16(_mm512_maddubs_epi16(q[v], y), y4[t][v]);
                    isum = _mm512_dpwssd_epi32(isum, p, scale[v]);
                }
                let isum8 = fold_halves(isum);
                if TILED {
                    tiled[r][t].add_no_min(d, a.d(), hsum_i32x8(isum8));
                } else {
                    acc[r][t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(a.d() * d),
                        _mm256_cvtepi32_ps(isum8),
                        acc[r][t],
                    );
                }
            }
        }
    }
    if TILED {
        return tiled.map(|row| row.map(AccTiled::finish));
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce8(acc[r][t])))
}

mt_kernels!(q3_k_rows, q3_k_rows4, q3_k_mt, BlockQ3_K, BlockQ8_K);
mt_kernels!(
    q3_k_tiled_rows,
    q3_k_tiled_rows4,
    q3_k_tiled_mt,
    BlockQ3_K,
    BlockQ8_K
);

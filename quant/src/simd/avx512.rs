//! x86-64 AVX-512 (F, BW, VL, VNNI) kernels: Q8_0, Q5_0, Q4_0 × Q8_0 and Q6_K × Q8_K, each for
//! matvec (four rows per pass) and for matmul (two rows × four tokens per pass). Other formats
//! use the AVX2 kernels at this level.
//!
//! Same plain algorithm as the scalar reference (exact integer block sums, then
//! `acc += (d_w · d_x) · isum`). Optimizations beyond the AVX2 kernels:
//! - Q8_0/Q5_0/Q4_0: two 32-byte blocks per 512-bit register; `vpdpbusd` (VNNI) multiplies |w| by y
//!   with the sign of w moved onto y (by mask: AVX-512 has no `vpsignb`) and sums four products
//!   per i32 lane in one instruction; both blocks' f16 scales converted by one `vcvtph2ps` and
//!   spread with `vpermps`; Q5_0's fifth bits become a byte mask directly (`kmov` of 64 bits).
//! - Q6_K: quants are unpacked in element order 64 at a time so that one 64-byte activation
//!   load meets them (Q4_K, in `q4k_x86`, likewise); `vpmaddubsw` forms pair products and `vpdpwssd` (VNNI) multiplies by the
//!   sub-block scales (picked with `vpermw`) and accumulates in one instruction.
//! - Matmul: each weight block is unpacked once and used for four tokens; for a given (row,
//!   token) the operations are exactly those of the matvec kernel, so results are identical.
//! - Software prefetch of the blocks a few ahead in every row.
//!
//! Integer sums are exact; float order differs from the scalar reference (lane-wise FMAs),
//! except for Q6_K, whose float order is llama.cpp's and the scalar reference's exactly.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{bits_to_bytes, by_rows, h2f, hsum_i32x8, nibbles, prefetch_ahead, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockQ4_0, BlockQ5_0, BlockQ6_K, BlockQ8_0, BlockQ8_K};
use crate::tiled::AccTiled;

/// Software prefetch distance, in pairs of blocks (Q8_0/Q5_0/Q4_0) ahead of the pair computed
/// (measured on cold 8192² matvec: 16 pairs ≈ 1 KiB ahead beat 6).
/// `wrapping_add` keeps the address computation defined past the end; a prefetch never faults.
const PF_BLOCKS: usize = 16;

/// The AVX-512 kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    Some(match ty {
        GgmlType::Q8_0 => q8_0_rows,
        GgmlType::Q5_0 => q5_0_rows,
        GgmlType::Q4_0 => q4_0_rows,
        GgmlType::Q6_K => q6_k_rows,
        _ => return None,
    })
}

/// The AVX-512 four-token kernel for weight type `ty`, where one exists.
pub(super) fn kernel4(ty: GgmlType) -> Option<Rows4Fn> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    Some(match ty {
        GgmlType::Q8_0 => q8_0_rows4,
        GgmlType::Q5_0 => q5_0_rows4,
        GgmlType::Q4_0 => q4_0_rows4,
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
        GgmlType::Q6_K => (q6_k_tiled_rows, q6_k_tiled_rows4),
        _ => return None,
    })
}

/// 16 f32 lanes → 8 (lane i + lane i+8), then the fixed 8-lane tree.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce16(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    reduce8(_mm256_add_ps(lo, hi))
}

/// Two f16 scales → `[a, b, 0, 0]` as f32 (one F16C conversion).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn h2f2(a: [u8; 2], b: [u8; 2]) -> __m128 {
    let bits = u32::from_le_bytes([a[0], a[1], b[0], b[1]]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Two 32-byte arrays as one 512-bit vector (`a` low, `b` high).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load2(a: &[i8; 32], b: &[i8; 32]) -> __m512i {
    // SAFETY: each load reads the 32 bytes of its array.
    unsafe {
        let lo = _mm256_loadu_si256(a.as_ptr().cast());
        let hi = _mm256_loadu_si256(b.as_ptr().cast());
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }
}

/// Q8_0-activation kernels over pairs of blocks, for `N` weight rows and `T` tokens at once:
/// `pair(b0, b1)` gives the 64 signed quants of two weight blocks as one vector, `one(b)` the 32
/// of a single (last, odd) block. Each weight pair is unpacked once for all `T` tokens; row r,
/// token t gets exactly the operations it gets with `N = T = 1`.
macro_rules! q8_0_family {
    ($fname:ident, $wb:ty, |$b0:ident, $b1:ident| $pair:expr, |$b:ident| $one:expr) => {
        /// # Safety
        /// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb`
        /// readable blocks, each `x[t]` to `nb` activation blocks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $fname<const N: usize, const T: usize>(
            w: [*const $wb; N],
            x: [*const BlockQ8_0; T],
            nb: usize,
        ) -> [[f32; T]; N] {
            let mut acc = [[_mm512_setzero_ps(); T]; N];
            let mut acc_tail = [[_mm256_setzero_ps(); T]; N];
            let zero = _mm512_setzero_si512();
            let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            let mut i = 0;
            while i + 2 <= nb {
                for r in 0..N {
                    // SAFETY: `i + 1 < nb` (caller).
                    let ($b0, $b1) = unsafe { (&*w[r].add(i), &*w[r].add(i + 1)) };
                    // The pair PF_BLOCKS ahead (at most 68 bytes: up to two cache lines).
                    let ahead = w[r].wrapping_add(i + 2 * PF_BLOCKS).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                    let q: __m512i = $pair;
                    // |q| · (y with the sign of q): u8 × i8 for `vpdpbusd`.
                    let (aq, neg) = (_mm512_abs_epi8(q), _mm512_movepi8_mask(q));
                    // Both blocks' scales converted at once: lanes [d0, d1, 0, 0].
                    let dw = h2f2($b0.d, $b1.d);
                    for t in 0..T {
                        // SAFETY: `i + 1 < nb` (caller).
                        let (a0, a1) = unsafe { (&*x[t].add(i), &*x[t].add(i + 1)) };
                        let y = load2(&a0.qs, &a1.qs);
                        let sy = _mm512_mask_sub_epi8(y, neg, zero, y);
                        let dp = _mm512_dpbusd_epi32(zero, aq, sy);
                        // d_w·d_x of block 0 in lanes 0..8, of block 1 in lanes 8..16.
                        let d = _mm_mul_ps(dw, h2f2(a0.d, a1.d));
                        let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
                        acc[r][t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dp), acc[r][t]);
                    }
                }
                i += 2;
            }
            if i < nb {
                for r in 0..N {
                    // SAFETY: `i < nb` (caller).
                    let $b = unsafe { &*w[r].add(i) };
                    let q: __m256i = $one;
                    let aq = _mm256_abs_epi8(q);
                    let dw = h2f($b.d);
                    for t in 0..T {
                        // SAFETY: `i < nb` (caller).
                        let a = unsafe { &*x[t].add(i) };
                        // SAFETY: reads the 32 bytes of `a.qs`.
                        let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
                        let p =
                            _mm256_dpbusd_epi32(_mm256_setzero_si256(), aq, _mm256_sign_epi8(y, q));
                        acc_tail[r][t] = _mm256_fmadd_ps(
                            _mm256_set1_ps(dw * h2f(a.d)),
                            _mm256_cvtepi32_ps(p),
                            acc_tail[r][t],
                        );
                    }
                }
            }
            std::array::from_fn(|r| {
                std::array::from_fn(|t| reduce16(acc[r][t]) + reduce8(acc_tail[r][t]))
            })
        }
    };
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

q8_0_family!(q8_0_dot, BlockQ8_0, |b0, b1| load2(&b0.qs, &b1.qs), |b| {
    // SAFETY: reads the 32 bytes of `b.qs`.
    unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) }
});

/// Two blocks' 16 packed nibble bytes → 64 bytes in element order: 128-bit lanes
/// [lo(a), hi(a), lo(b), hi(b)].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: each load reads the 16 bytes of its array.
    let (a, b) = unsafe {
        (
            _mm_loadu_si128(a.as_ptr().cast()),
            _mm_loadu_si128(b.as_ptr().cast()),
        )
    };
    let t = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(a)),
        _mm256_broadcastsi128_si256(b),
    );
    // Shift the odd 128-bit lanes (words 8..16 and 24..32) right by four, then keep nibbles.
    let t = _mm512_mask_srli_epi16(t, 0xFF00_FF00, t, 4);
    _mm512_and_si512(t, _mm512_set1_epi8(0x0F))
}

q8_0_family!(
    q4_0_dot,
    BlockQ4_0,
    |b0, b1| _mm512_sub_epi8(nibbles2(&b0.qs, &b1.qs), _mm512_set1_epi8(8)),
    |b| _mm256_sub_epi8(nibbles(&b.qs), _mm256_set1_epi8(8))
);

// q − 16 for the 5-bit quant q = nib | h·16: nib | 0xF0 where the fifth bit is clear.
q8_0_family!(
    q5_0_dot,
    BlockQ5_0,
    |b0, b1| {
        let h = u32::from_le_bytes(b0.qh) as u64 | (u32::from_le_bytes(b1.qh) as u64) << 32;
        // 0xF0 in the bytes whose fifth bit is clear, 0 elsewhere.
        let off = _mm512_maskz_mov_epi8(!h, _mm512_set1_epi8(0xF0u8 as i8));
        _mm512_or_si512(nibbles2(&b0.qs, &b1.qs), off)
    },
    |b| {
        let high = bits_to_bytes(u32::from_le_bytes(b.qh));
        _mm256_or_si256(
            nibbles(&b.qs),
            _mm256_andnot_si256(high, _mm256_set1_epi8(0xF0u8 as i8)),
        )
    }
);

/// Q6_K · Q8_K for `N` weight rows and `T` tokens at once (as [`q4_k_mt`]). Per half c of the
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
    let m2 = _mm512_set1_epi8(0x30);
    // Scale words for vector (c, h): word k takes sub-block 8c + 4h + k/8.
    let pick: [__m512i; 4] = std::array::from_fn(|v| {
        let base = 4 * v as i16;
        let lanes: [i16; 32] = std::array::from_fn(|k| base + k as i16 / 8);
        // SAFETY: reads the 64 bytes of `lanes`.
        unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
    });
    for i in 0..nb {
        for r in 0..N {
            prefetch_ahead(w[r], i);
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
                let qh = _mm512_mask_srli_epi16(qh, 0xFFFF_0000, qh, 2);
                q[2 * c] = _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m2),
                );
                q[2 * c + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_and_si512(qh, m2),
                );
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
                // Elements 32j + 4k..32j + 4k + 4 of every chunk j meet in i32 lane k.
                let isum8 = _mm256_add_epi32(
                    _mm512_castsi512_si256(isum),
                    _mm512_extracti64x4_epi64::<1>(isum),
                );
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

mt_kernels!(q8_0_rows, q8_0_rows4, q8_0_dot, BlockQ8_0, BlockQ8_0);
mt_kernels!(q5_0_rows, q5_0_rows4, q5_0_dot, BlockQ5_0, BlockQ8_0);
mt_kernels!(q4_0_rows, q4_0_rows4, q4_0_dot, BlockQ4_0, BlockQ8_0);
mt_kernels!(q6_k_rows, q6_k_rows4, q6_k_mt, BlockQ6_K, BlockQ8_K);
mt_kernels!(
    q6_k_tiled_rows,
    q6_k_tiled_rows4,
    q6_k_tiled_mt,
    BlockQ6_K,
    BlockQ8_K
);

//! x86-64 AVX-512 (F, BW, VL, VNNI) kernels: Q4_K, Q6_K × Q8_K, each for matvec (four rows per
//! pass) and for matmul (two rows × four tokens per pass); Q8_0, Q5_0, Q4_0 × Q8_0 are in
//! [`avx512_q0`](super::avx512_q0) (llama.cpp's float order). Other formats use the AVX2
//! kernels at this level.
//!
//! Same plain algorithm as the scalar reference (exact integer block sums, then
//! `acc += (d_w · d_x) · isum`). Optimizations beyond the AVX2 kernels:
//! - Q4_K/Q6_K: quants are unpacked in element order 64 at a time so that one 64-byte activation
//!   load meets them (Q4_K: 32 packed bytes broadcast to both halves, the upper half shifted by
//!   four under a mask); `vpmaddubsw` forms pair products and `vpdpwssd` (VNNI) multiplies by the
//!   sub-block scales (picked with `vpermw`) and accumulates in one instruction.
//! - Matmul: each weight block is unpacked once and used for four tokens; for a given (row,
//!   token) the operations are exactly those of the matvec kernel, so results are identical.
//! - Software prefetch of the blocks a few ahead in every row.
//!
//! Integer sums are exact; float order differs from the scalar reference (lane-wise FMAs).

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{by_rows, h2f, prefetch_ahead, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{k4_scales_mins_u64, BlockQ4_K, BlockQ6_K, BlockQ8_K};

/// Prefetch distance for the 144-byte Q4_K blocks (8 ≈ 1.1 KiB ahead beat 6 and 16).
const PF_BLOCKS_K: usize = 8;

/// The AVX-512 kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    if !SimdLevel::Avx512.is_available() {
        return None;
    }
    if let Some(k) = super::avx512_q0::kernel(ty) {
        return Some(k);
    }
    Some(match ty {
        GgmlType::Q4_K => q4_k_rows,
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
        GgmlType::Q4_K => q4_k_rows4,
        GgmlType::Q6_K => q6_k_rows4,
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

/// Q4_K · Q8_K for `N` weight rows and `T` activation rows (tokens) at once: each weight block
/// is unpacked once and used for every token. Row r, token t gets exactly the operations it gets
/// with `N = T = 1`, so results do not depend on `N` or `T`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb` readable
/// blocks, each `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_k_mt<const N: usize, const T: usize>(
    w: [*const BlockQ4_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm512_setzero_ps(); T]; N];
    let mut acc_m = [[_mm256_setzero_ps(); T]; N];
    let m4 = _mm512_set1_epi8(0x0F);
    // Scale words for chunk c: sub-block 2c in the low 16 words, 2c+1 in the high 16.
    let pick: [__m512i; 4] = std::array::from_fn(|c| {
        _mm512_mask_blend_epi16(
            0xFFFF_0000,
            _mm512_set1_epi16(2 * c as i16),
            _mm512_set1_epi16(2 * c as i16 + 1),
        )
    });
    for i in 0..nb {
        for r in 0..N {
            // Ask for the block PF_BLOCKS_K ahead (its three cache lines) while this one computes.
            let ahead = w[r].wrapping_add(i + PF_BLOCKS_K).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, m) = k4_scales_mins_u64(&b.scales);
            let sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
            let m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(m as i64));
            let mdup = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
            // The 256 quants in element order (64 per vector) and their scale words.
            let mut q = [_mm512_setzero_si512(); 4];
            let mut scale = [_mm512_setzero_si512(); 4];
            for c in 0..4 {
                // SAFETY: reads bytes 32c..32c+32 of the 128-byte `b.qs`.
                let v = unsafe {
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()))
                };
                q[c] = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF_0000, v, 4), m4);
                scale[c] = _mm512_permutexvar_epi16(pick[c], sc16);
            }
            let (d, dmin) = (h2f(b.d), h2f(b.dmin));
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut isum = _mm512_setzero_si512();
                for c in 0..4 {
                    // SAFETY: reads bytes 64c..64c+64 of the 256-byte `a.qs`.
                    let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * c).cast()) };
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[c], y), scale[c]);
                }
                // SAFETY: reads the 32 bytes of `a.bsums`.
                let bsums = unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) };
                let msum = _mm256_madd_epi16(bsums, mdup);
                let dx = a.d();
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(dx * d), _mm512_cvtepi32_ps(isum), acc[r][t]);
                acc_m[r][t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx * dmin),
                    _mm256_cvtepi32_ps(msum),
                    acc_m[r][t],
                );
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16(acc[r][t]) - reduce8(acc_m[r][t])))
}

/// Q6_K · Q8_K for `N` weight rows and `T` tokens at once (as [`q4_k_mt`]). Per half c of the
/// block, the 64 bytes `ql[64c..64c+64]` and `qh[32c..32c+32]` broadcast to both 256-bit halves
/// (the upper one shifted right by two) give the quants of elements `128c..128c+64` (low
/// nibbles) and `128c+64..128c+128` (high nibbles) in element order; the −32 offset is taken
/// out with the Q8_K `bsums`.
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
    let mut acc = [[_mm512_setzero_ps(); T]; N];
    let mut acc_m = [[_mm256_setzero_ps(); T]; N];
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
                let dd = _mm512_set1_ps(a.d() * d);
                acc[r][t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), acc[r][t]);
                acc_m[r][t] = _mm256_fmadd_ps(
                    _mm512_castps512_ps256(dd),
                    _mm256_cvtepi32_ps(corr),
                    acc_m[r][t],
                );
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16(acc[r][t]) - reduce8(acc_m[r][t])))
}

mt_kernels!(q4_k_rows, q4_k_rows4, q4_k_mt, BlockQ4_K, BlockQ8_K);
mt_kernels!(q6_k_rows, q6_k_rows4, q6_k_mt, BlockQ6_K, BlockQ8_K);

//! Q2_K · Q8_K on x86-64 (AVX2, also used at the AVX-512 level) in llama.cpp's three float
//! orders (see [`crate::q2k`]), bit-identical to the scalar reference of each order.
//!
//! Integer part, per weight block and activation block (exact): for each 128-element half `h`,
//! the four 2-bit planes of its 32 quant bytes meet four 32-byte activation vectors through
//! `vpmaddubsw`; `vpmaddwd` with the sub-block scales (picked per 16 elements) gives eight i32
//! lanes, the half's share of vec_dot's lanes. `vpmaddwd` of the 16 `bsums` with the 16 mins
//! gives vec_dot's eight min lanes; lanes `0..4` are half 0's, `4..8` half 1's.
//!
//! Float part: vec_dot adds the two halves' lanes and runs its two lane-wise FMAs per block;
//! gemv and gemm sum the lanes (exactly) into the totals their scalar FMAs take, one pair per
//! block (gemv) or per half (gemm), in the reference's order.

use std::arch::x86_64::*;

use super::avx2::{
    by_rows, h2f, hsum_i32x4, hsum_i32x8, load_y8, pick_pairs, prefetch_ahead, reduce8, PF_BLOCKS,
};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockQ2_K, BlockQ8_K};
use crate::scalar::q4k::Acc2;
use crate::scalar::tiled::AccTiled;

/// The x86 kernels for a Q2_K matrix at most at `level` (see
/// [`crate::q2k::kernels`]); `None` where the CPU lacks AVX2 or `level` is below it.
pub(super) fn kernels(level: SimdLevel, repacked: bool) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some(if repacked {
            (gemv_rows, Some(gemm_rows4))
        } else {
            (vec_dot_rows, None)
        });
    }
    None
}

/// One activation block, loaded once for every row it meets.
struct Acts {
    y: [__m256i; 8],
    bsums: __m256i,
    d: f32,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn acts(a: &BlockQ8_K) -> Acts {
    Acts {
        y: load_y8(&a.qs),
        // SAFETY: reads the 32 bytes of `a.bsums`.
        bsums: unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) },
        d: a.d(),
    }
}

/// The integer parts (see the module docs): each half's lanes, and the min lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_ints(b: &BlockQ2_K, a: &Acts) -> ([__m256i; 2], __m256i) {
    let m3 = _mm256_set1_epi8(3);
    let pick = pick_pairs();
    // SAFETY: reads the 16 bytes of `b.scales`.
    let sc8 = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
    let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0x0F)));
    let mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc8), _mm_set1_epi8(0x0F)));
    let half = |c: usize| {
        // SAFETY: reads bytes 32c..32c+32 of the 64-byte `b.qs` (`c < 2`).
        let qs = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()) };
        let scc = if c == 0 {
            _mm256_permute2x128_si256::<0x00>(sc16, sc16)
        } else {
            _mm256_permute2x128_si256::<0x11>(sc16, sc16)
        };
        let q = [
            _mm256_and_si256(qs, m3),
            _mm256_and_si256(_mm256_srli_epi16::<2>(qs), m3),
            _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m3),
            _mm256_and_si256(_mm256_srli_epi16::<6>(qs), m3),
        ];
        let mut isum = _mm256_setzero_si256();
        for s in 0..4 {
            let p = _mm256_maddubs_epi16(q[s], a.y[4 * c + s]);
            isum = _mm256_add_epi32(
                isum,
                _mm256_madd_epi16(p, _mm256_shuffle_epi8(scc, pick[s])),
            );
        }
        isum
    };
    ([half(0), half(1)], _mm256_madd_epi16(a.bsums, mn16))
}

/// vec_dot order, `N` rows, one token.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_256<const N: usize>(
    w: [*const BlockQ2_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = acts(unsafe { &*x.add(i) });
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (h, mins) = block_ints(b, &a);
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(-a.d * h2f(b.dmin)),
                _mm256_cvtepi32_ps(mins),
                acc[r],
            );
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(a.d * h2f(b.d)),
                _mm256_cvtepi32_ps(_mm256_add_epi32(h[0], h[1])),
                acc[r],
            );
        }
    }
    acc.map(|v| reduce8(v))
}

/// gemv order, `N` rows, one token.
///
/// # Safety
/// As [`vec_dot_256`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_256<const N: usize>(
    w: [*const BlockQ2_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [Acc2::default(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = acts(unsafe { &*x.add(i) });
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (h, mins) = block_ints(b, &a);
            acc[r].gemv(
                h2f(b.d) * a.d,
                h2f(b.dmin) * a.d,
                hsum_i32x8(_mm256_add_epi32(h[0], h[1])),
                hsum_i32x8(mins),
            );
        }
    }
    acc.map(Acc2::finish)
}

/// llama.cpp's tiled order (see [`crate::tiled`]), `N` rows, one token.
///
/// # Safety
/// As [`vec_dot_256`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiled_256<const N: usize>(
    w: [*const BlockQ2_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [AccTiled::default(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = acts(unsafe { &*x.add(i) });
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (h, mins) = block_ints(b, &a);
            acc[r].add(
                h2f(b.d),
                h2f(b.dmin),
                a.d,
                hsum_i32x8(_mm256_add_epi32(h[0], h[1])),
                hsum_i32x8(mins),
            );
        }
    }
    acc.map(AccTiled::finish)
}

/// gemm order: one row, four tokens.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` points to `nb` readable blocks, each `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_256(w: *const BlockQ2_K, x: [*const BlockQ8_K; 4], nb: usize) -> [f32; 4] {
    let mut acc = [Acc2::default(); 4];
    for i in 0..nb {
        prefetch_ahead(w, i);
        // SAFETY: `i < nb` (caller).
        let b = unsafe { &*w.add(i) };
        let (d, dmin) = (h2f(b.d), h2f(b.dmin));
        for t in 0..4 {
            // SAFETY: `i < nb` (caller).
            let a = acts(unsafe { &*x[t].add(i) });
            let (h, mins) = block_ints(b, &a);
            let m = [
                hsum_i32x4(_mm256_castsi256_si128(mins)),
                hsum_i32x4(_mm256_extracti128_si256::<1>(mins)),
            ];
            for k in 0..2 {
                acc[t].gemv(d * a.d, dmin * a.d, hsum_i32x8(h[k]), m[k]);
            }
        }
    }
    acc.map(Acc2::finish)
}

fn vec_dot_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ2_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: `kernels` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified every row holds `nb` blocks and `x` the matching activation
        // blocks, which is all the kernel reads.
        |p: [4]| unsafe { vec_dot_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { vec_dot_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

/// The tiled-order kernel (see [`crate::tiled`]).
pub(super) fn tiled_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ2_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: `super::tiled_x86` hands this function out only when the CPU has
        // AVX2/FMA/F16C; `check_rows` verified the sizes, as in `vec_dot_rows`.
        |p: [4]| unsafe { tiled_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { tiled_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

fn gemv_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ2_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: as in `vec_dot_rows`.
        |p: [4]| unsafe { gemv_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { gemv_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

fn gemm_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    let rows = out[0].len();
    assert!(
        out.iter().all(|o| o.len() == rows),
        "output rows differ in length"
    );
    let nb = check_rows::<BlockQ2_K, BlockQ8_K>(w, row_bytes, x[0], rows);
    for xt in &x[1..] {
        check_rows::<BlockQ2_K, BlockQ8_K>(w, row_bytes, xt, rows);
    }
    let xp = x.map(|s| s.as_ptr().cast::<BlockQ8_K>());
    for r in 0..rows {
        // SAFETY: as in `vec_dot_rows`, for each of the four activation rows.
        let res = unsafe { gemm_256(w[r * row_bytes..].as_ptr().cast(), xp, nb) };
        for t in 0..4 {
            out[t][r] = res[t];
        }
    }
}

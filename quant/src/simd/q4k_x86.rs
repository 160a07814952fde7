//! Q4_K · Q8_K on x86-64 (AVX2 and AVX-512) in llama.cpp's three float orders (see
//! [`crate::q4k`]), bit-identical to the scalar reference of each order.
//!
//! Integer part, per weight block and activation block (exact in every kernel):
//! - AVX2: per 64-element chunk `c`, `vpmaddubsw` on the 32 low and the 32 high nibbles and
//!   `vpmaddwd` with the broadcast sub-block scale give `D_c` (8 × i32), where lane `l` holds
//!   elements `64c+4l..+4` of sub-block `2c` and `64c+32+4l..+4` of sub-block `2c+1`, scaled.
//! - AVX-512: the 64 quants of chunk `c` in element order in one register; `vpmaddubsw` and
//!   `vpdpwssd` (VNNI) with the scale words give `E_c` (16 × i32: lanes 0..8 sub-block `2c`,
//!   8..16 sub-block `2c+1`); lanes `l` and `l + 8` together are `D_c`'s lane `l`.
//! - Mins: `vphaddw` of the Q8_K `bsums` gives the eight 32-element sums; `vpmaddwd` with the
//!   eight mins gives the four pair sums `M_p` of all three orders.
//! - Scales and mins are unpacked from their 12 packed bytes in vector registers
//!   ([`k_scales_mins`]; the AVX-512 gemv four blocks at once, [`scales_mins4`]), and each
//!   scale's words are one byte shuffle of them.
//!
//! Float part, per order:
//! - vec_dot: `Σ_c D_c` is exactly vec_dot's eight lanes; one FMA into eight f32 lanes and one
//!   into four min lanes per block, the final trees as in [`crate::scalar::q4k::AccDot`].
//! - gemv: four rows at once; the per-row totals `I_r` (all lanes of `Σ_c D_c`) and `M_r` are
//!   gathered by `vphaddd` into one vector `[I0, M0, I1, M1, I2, M2, I3, M3]`, converted, and
//!   multiplied-added with `[d_w·d_x, dmin_w·d_x]` of the four rows: one FMA for four rows.
//!   The AVX-512 gemv reads its four rows one after another (one linear stream through memory)
//!   and keeps the totals in a buffer until the float step; its activations are prepared once
//!   per call in the order of the weight nibbles ([`prepare_acts_512`]).
//! - gemm: four tokens of one row at once; each chunk's lanes are summed into `P_p` (AVX2:
//!   `vphaddd`; AVX-512: unpack-and-add within 128-bit lanes, then across them for the four
//!   tokens together); a 4 × 4 transpose puts the four tokens' `P_p` and `M_p` side by side,
//!   and four FMAs (`p = 0..4`, in order) update `[acc_t0..t3, accm_t0..t3]`. Groups of
//!   sixteen tokens ([`gemm_rows16_512`], [`gemm_rows16_256`]): four rows' blocks are decoded
//!   once for all the groups ([`decode4`]: element-order nibbles as dwords, float scales, min
//!   pairs), then two groups at a time run with the tokens in the lanes
//!   ([`gemm_lanes16_512`]: sixteen tokens per register, `vpdpbusd`; [`gemm_lanes16_256`]:
//!   eight, `vpmaddubsw` and word sums): `P_p` and `M_p` come out per lane without any summing
//!   across lanes, and the same four FMAs run per lane.
//!
//! Each lane runs exactly the scalar reference's sequence of FMAs for its (row, token), so the
//! results equal [`crate::scalar::q4k::dot`] bit for bit, whatever the grouping of rows.

use std::arch::x86_64::*;

use super::avx2::{
    bsums32, by_rows, h2f, hsum_i32x4, hsum_i32x8, k_scales_mins, min_sum, prefetch_ahead,
    PF_BLOCKS,
};
use super::{check_rows, Prep16, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockQ4_K, BlockQ8_K};
use crate::scalar::q4k::Acc2;
use crate::scalar::tiled::AccTiled;

/// The x86 kernels for a Q4_K matrix at most at `level` (see
/// [`crate::q4k::kernels`]); `None` where the CPU has neither AVX2 nor AVX-512 or `level` is
/// below both.
pub(super) fn kernels(level: SimdLevel, repacked: bool) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some(if repacked {
            (gemv_rows_512, Some(gemm_rows4_512))
        } else {
            (vec_dot_rows_512, Some(vec_dot_rows4_512))
        });
    }
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some(if repacked {
            (gemv_rows_256, Some(gemm_rows4_256))
        } else {
            (vec_dot_rows_256, None)
        });
    }
    None
}

/// Software prefetch distance for the 144-byte Q4_K blocks in the AVX-512 kernels.
const PF_BLOCKS_K: usize = 8;

/// `d` and `dmin` of a block as f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn d_dmin(b: &BlockQ4_K) -> (f32, f32) {
    (h2f(b.d), h2f(b.dmin))
}

/// gemv for four rows: totals `i[r]` (8 lanes each, summed here) and min pair sums `m[r]`
/// (4 lanes each) → `[I0, M0, I1, M1, I2, M2, I3, M3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gather_totals4(i: [__m256i; 4], m: [__m128i; 4]) -> __m256i {
    let z = _mm_setzero_si128();
    let h: [__m256i; 4] =
        std::array::from_fn(|r| _mm256_hadd_epi32(i[r], _mm256_set_m128i(z, m[r])));
    let g01 = _mm256_hadd_epi32(h[0], h[1]); // [I0lo, M0, I1lo, M1 | I0hi, 0, I1hi, 0]
    let g23 = _mm256_hadd_epi32(h[2], h[3]);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(g01, g23),
        _mm256_permute2x128_si256::<0x31>(g01, g23),
    )
}

/// `[d0, dmin0, d1, dmin1, …]` of four blocks as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn d_dmin4(b: [&BlockQ4_K; 4]) -> __m256 {
    let u = b.map(|b| i32::from_le_bytes([b.d[0], b.d[1], b.dmin[0], b.dmin[1]]));
    _mm256_cvtph_ps(_mm_setr_epi32(u[0], u[1], u[2], u[3]))
}

/// gemm's float step for one row and four tokens: `p[t]`, `m[t]` the four pair sums of token
/// `t`; `dd` = `[d_w·d_x(t) for t] ++ [dmin_w·d_x(t) for t]`; `acc` = `[acc_t…, accm_t…]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_step4(acc: __m256, dd: __m256, p: [__m128i; 4], m: [__m128i; 4]) -> __m256 {
    let x: [__m256i; 4] = std::array::from_fn(|t| _mm256_set_m128i(m[t], p[t]));
    let t01l = _mm256_unpacklo_epi32(x[0], x[1]);
    let t01h = _mm256_unpackhi_epi32(x[0], x[1]);
    let t23l = _mm256_unpacklo_epi32(x[2], x[3]);
    let t23h = _mm256_unpackhi_epi32(x[2], x[3]);
    // v[p] = [P_p of tokens 0..4 | M_p of tokens 0..4]
    let v = [
        _mm256_unpacklo_epi64(t01l, t23l),
        _mm256_unpackhi_epi64(t01l, t23l),
        _mm256_unpacklo_epi64(t01h, t23h),
        _mm256_unpackhi_epi64(t01h, t23h),
    ];
    let mut acc = acc;
    for vp in v {
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(vp), dd, acc);
    }
    acc
}

/// `[d_w, d_w, d_w, d_w, dmin_w, …] · [dx_0, dx_1, dx_2, dx_3, dx_0, …]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_dd(d: f32, dmin: f32, dx: __m256) -> __m256 {
    _mm256_mul_ps(_mm256_set_m128(_mm_set1_ps(dmin), _mm_set1_ps(d)), dx)
}

/// Results of gemm's accumulators `[acc_t…, accm_t…]`: `acc_t − accm_t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_finish(acc: __m256) -> [f32; 4] {
    let r = _mm_sub_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let mut o = [0f32; 4];
    // SAFETY: writes the 16 bytes of `o`.
    unsafe { _mm_storeu_ps(o.as_mut_ptr(), r) };
    o
}

// ---------------------------------------------------------------------------------------------
// AVX2

/// The 8 chunk vectors' inputs of a weight block: low and high nibbles of each 32-byte chunk.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles_256(b: &BlockQ4_K) -> [[__m256i; 2]; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    std::array::from_fn(|c| {
        // SAFETY: reads bytes 32c..32c+32 of the 128-byte `b.qs`.
        let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()) };
        [
            _mm256_and_si256(q, m4),
            _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
        ]
    })
}

/// `D_c` for the four chunks (see the module docs).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn chunks_256(q: &[[__m256i; 2]; 4], sc: __m128i, a: &BlockQ8_K) -> [__m256i; 4] {
    // Scale `j` in every word: byte `j` of each lane, zero-extended (control byte 0x80).
    let sc = _mm256_broadcastsi128_si256(sc);
    let pick = |j: usize| _mm256_shuffle_epi8(sc, _mm256_set1_epi16((0x8000 | j) as i16));
    std::array::from_fn(|c| {
        // SAFETY: reads bytes 64c..64c+64 of the 256-byte `a.qs`.
        let (ylo, yhi) = unsafe {
            let p = a.qs.as_ptr().add(64 * c);
            (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(32).cast()),
            )
        };
        let lo = _mm256_madd_epi16(_mm256_maddubs_epi16(q[c][0], ylo), pick(2 * c));
        let hi = _mm256_madd_epi16(_mm256_maddubs_epi16(q[c][1], yhi), pick(2 * c + 1));
        _mm256_add_epi32(lo, hi)
    })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum4(d: [__m256i; 4]) -> __m256i {
    _mm256_add_epi32(_mm256_add_epi32(d[0], d[1]), _mm256_add_epi32(d[2], d[3]))
}

/// vec_dot order, `N` rows, one token.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_256<const N: usize>(
    w: [*const BlockQ4_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm_setzero_ps(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        let bs = bsums32(a);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            let lanes = sum4(chunks_256(&nibbles_256(b), sc, a));
            let (d, dmin) = d_dmin(b);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * d), _mm256_cvtepi32_ps(lanes), acc[r]);
            acc_m[r] = _mm_fmadd_ps(
                _mm_set1_ps(-dx * dmin),
                _mm_cvtepi32_ps(_mm_madd_epi16(mins, bs)),
                acc_m[r],
            );
        }
    }
    std::array::from_fn(|r| finish_dot(acc[r], acc_m[r]))
}

/// vec_dot's end: the eight lanes' tree plus the four min lanes' tree.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finish_dot(acc: __m256, acc_m: __m128) -> f32 {
    let s = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    super::avx2::reduce8(acc) + m
}

/// gemv order, `N` rows, one token (used for single rows: four rows take [`gemv_lin_512`]).
///
/// # Safety
/// As [`vec_dot_256`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_256<const N: usize>(
    w: [*const BlockQ4_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc4 = _mm256_setzero_ps();
    let mut acc1 = [Acc2::default(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        let bs = bsums32(a);
        let mut tot = [_mm256_setzero_si256(); N];
        let mut mp = [_mm_setzero_si128(); N];
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            tot[r] = sum4(chunks_256(&nibbles_256(b), sc, a));
            mp[r] = _mm_madd_epi16(mins, bs);
        }
        // SAFETY: `i < nb` (caller).
        let blocks: [&BlockQ4_K; N] = std::array::from_fn(|r| unsafe { &*w[r].add(i) });
        gemv_float::<N>(&mut acc4, &mut acc1, blocks, dx, tot, mp);
    }
    gemv_finish::<N>(acc4, acc1)
}

/// gemv's float step for `N` rows (4: vectorized; otherwise one at a time).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemv_float<const N: usize>(
    acc4: &mut __m256,
    acc1: &mut [Acc2; N],
    b: [&BlockQ4_K; N],
    dx: f32,
    tot: [__m256i; N],
    mp: [__m128i; N],
) {
    if N == 4 {
        let v = gather_totals4(
            std::array::from_fn(|r| tot[r]),
            std::array::from_fn(|r| mp[r]),
        );
        let dd = _mm256_mul_ps(d_dmin4(std::array::from_fn(|r| b[r])), _mm256_set1_ps(dx));
        *acc4 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), dd, *acc4);
    } else {
        for r in 0..N {
            let (d, dmin) = d_dmin(b[r]);
            acc1[r].gemv(d * dx, dmin * dx, hsum_i32x8(tot[r]), hsum_i32x4(mp[r]));
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gemv_finish<const N: usize>(acc4: __m256, acc1: [Acc2; N]) -> [f32; N] {
    if N == 4 {
        let mut o = [0f32; 8];
        // SAFETY: writes the 32 bytes of `o`.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc4) };
        std::array::from_fn(|r| o[2 * r] - o[2 * r + 1])
    } else {
        acc1.map(Acc2::finish)
    }
}

/// llama.cpp's tiled order (see [`crate::tiled`]), `N` rows, one token: the lanes' total and the
/// min total `M` per block.
///
/// # Safety
/// As [`vec_dot_256`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiled_256<const N: usize>(
    w: [*const BlockQ4_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [AccTiled::default(); N];
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let bs = bsums32(a);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            let lanes = sum4(chunks_256(&nibbles_256(b), sc, a));
            let (d, dmin) = d_dmin(b);
            acc[r].add(d, dmin, a.d(), hsum_i32x8(lanes), min_sum(mins, bs));
        }
    }
    acc.map(AccTiled::finish)
}

/// The tiled-order kernel (see [`crate::tiled`]), for row counts that are not a multiple of 8.
pub(super) fn tiled_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: `super::tiled_x86` hands this function out only when the CPU has
        // AVX2/FMA/F16C; `check_rows` verified the sizes, as in `vec_dot_rows_256`.
        |p: [4]| unsafe { tiled_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { tiled_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

/// gemm order: one row, four tokens.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` points to `nb` readable blocks, each `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_256(w: *const BlockQ4_K, x: [*const BlockQ8_K; 4], nb: usize) -> [f32; 4] {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        prefetch_ahead(w, i);
        // SAFETY: `i < nb` (caller).
        let b = unsafe { &*w.add(i) };
        // SAFETY: `i < nb` (caller).
        let a: [&BlockQ8_K; 4] = std::array::from_fn(|t| unsafe { &*x[t].add(i) });
        let (sc, mins) = k_scales_mins(b);
        let q = nibbles_256(b);
        let p: [__m128i; 4] = std::array::from_fn(|t| {
            let d = chunks_256(&q, sc, a[t]);
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]));
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
        });
        let m: [__m128i; 4] = std::array::from_fn(|t| _mm_madd_epi16(mins, bsums32(a[t])));
        let dx = _mm_setr_ps(a[0].d(), a[1].d(), a[2].d(), a[3].d());
        let (d, dmin) = d_dmin(b);
        acc = gemm_step4(acc, gemm_dd(d, dmin, _mm256_set_m128(dx, dx)), p, m);
    }
    gemm_finish(acc)
}

fn vec_dot_rows_256(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: `kernels` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified every row holds `nb` blocks and `x` the matching activation
        // blocks, which is all the kernel reads.
        |p: [4]| unsafe { vec_dot_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { vec_dot_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

fn gemv_rows_256(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    by_rows!(w, row_bytes, out,
        // SAFETY: as in `vec_dot_rows_256`.
        |p: [4]| unsafe { gemv_256::<4>(p.map(|p| p.cast()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { gemv_256::<1>(p.map(|p| p.cast()), xp, nb) })
}

/// Checks the four activation rows and output slices of a four-token kernel; returns `nb`.
fn check4(w: &[u8], row_bytes: usize, x: &[&[u8]; 4], out: &[&mut [f32]; 4]) -> usize {
    let rows = out[0].len();
    assert!(
        out.iter().all(|o| o.len() == rows),
        "output rows differ in length"
    );
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x[0], rows);
    for xt in &x[1..] {
        check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, xt, rows);
    }
    nb
}

fn gemm_rows4_256(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    let nb = check4(w, row_bytes, &x, &out);
    let xp = x.map(|s| s.as_ptr().cast::<BlockQ8_K>());
    for r in 0..out[0].len() {
        // SAFETY: as in `vec_dot_rows_256`, for each of the four activation rows.
        let res = unsafe { gemm_256(w[r * row_bytes..].as_ptr().cast(), xp, nb) };
        for t in 0..4 {
            out[t][r] = res[t];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512

/// A weight block unpacked for AVX-512: the 64 quants of each chunk in element order, and the
/// scale words for `vpdpwssd`.
struct Unpacked512 {
    q: [__m512i; 4],
    scale: [__m512i; 4],
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn unpack_512(b: &BlockQ4_K, sc: __m128i) -> Unpacked512 {
    let m4 = _mm512_set1_epi8(0x0F);
    // The eight scale bytes at the start of every lane ([`k_scales_mins`]); an in-lane byte
    // shuffle makes the words.
    let sc8 = _mm512_broadcast_i32x4(sc);
    Unpacked512 {
        q: std::array::from_fn(|c| {
            // SAFETY: reads bytes 32c..32c+32 of the 128-byte `b.qs`.
            let v = unsafe {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()))
            };
            _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF_0000, v, 4), m4)
        }),
        scale: std::array::from_fn(|c| {
            // Words 0..16: scale of sub-block 2c; words 16..32: of 2c+1 (byte `k` of the
            // lane, zero-extended: control byte 0x80 gives zero).
            let (lo, hi) = (
                (0x8000 | (2 * c as u16)) as i16,
                (0x8000 | (2 * c as u16 + 1)) as i16,
            );
            let pick =
                _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(lo), _mm512_set1_epi16(hi));
            _mm512_shuffle_epi8(sc8, pick)
        }),
    }
}

/// `E_c` for chunk `c`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn chunk_512(u: &Unpacked512, a: &BlockQ8_K, c: usize, acc: __m512i) -> __m512i {
    // SAFETY: reads bytes 64c..64c+64 of the 256-byte `a.qs` (`c < 4`).
    let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * c).cast()) };
    _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u.q[c], y), u.scale[c])
}

/// `Σ_c D_c` (vec_dot's eight lanes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lanes_512(u: &Unpacked512, a: &BlockQ8_K) -> __m256i {
    let mut e = _mm512_setzero_si512();
    for c in 0..4 {
        e = chunk_512(u, a, c, e);
    }
    _mm256_add_epi32(_mm512_castsi512_si256(e), _mm512_extracti64x4_epi64::<1>(e))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn prefetch_512(p: *const BlockQ4_K, i: usize) {
    let ahead = p.wrapping_add(i + PF_BLOCKS_K).cast::<i8>();
    _mm_prefetch::<_MM_HINT_T0>(ahead);
    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
}

/// vec_dot order, `N` rows × `T` tokens (each weight block unpacked once for all tokens).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb` readable
/// blocks, each `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_512<const N: usize, const T: usize>(
    w: [*const BlockQ4_K; N],
    x: [*const BlockQ8_K; T],
    nb: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm256_setzero_ps(); T]; N];
    let mut acc_m = [[_mm_setzero_ps(); T]; N];
    // The rows of a pass are consecutive (`by_rows`, or two rows of a four-token pass).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS_K);
    for i in 0..nb {
        pf.step(&w, i);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            let u = unpack_512(b, sc);
            let (d, dmin) = d_dmin(b);
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let dx = a.d();
                acc[r][t] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx * d),
                    _mm256_cvtepi32_ps(lanes_512(&u, a)),
                    acc[r][t],
                );
                acc_m[r][t] = _mm_fmadd_ps(
                    _mm_set1_ps(-dx * dmin),
                    _mm_cvtepi32_ps(_mm_madd_epi16(mins, bsums32(a))),
                    acc_m[r][t],
                );
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|t| finish_dot(acc[r][t], acc_m[r][t])))
}

/// gemv order, `N` rows, one token (used for single rows: four rows take [`gemv_lin_512`]).
///
/// # Safety
/// As [`vec_dot_512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemv_512<const N: usize>(
    w: [*const BlockQ4_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc4 = _mm256_setzero_ps();
    let mut acc1 = [Acc2::default(); N];
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS_K);
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        let bs = bsums32(a);
        let mut tot = [_mm256_setzero_si256(); N];
        let mut mp = [_mm_setzero_si128(); N];
        pf.step(&w, i);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            tot[r] = lanes_512(&unpack_512(b, sc), a);
            mp[r] = _mm_madd_epi16(mins, bs);
        }
        // SAFETY: `i < nb` (caller).
        let blocks: [&BlockQ4_K; N] = std::array::from_fn(|r| unsafe { &*w[r].add(i) });
        gemv_float::<N>(&mut acc4, &mut acc1, blocks, dx, tot, mp);
    }
    gemv_finish::<N>(acc4, acc1)
}

/// The four pair sums `P_p` of each of four tokens, as the 128-bit lanes of one vector:
/// `e[t][c]` = `E_c` of token `t`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_sums4_512(e: [[__m512i; 4]; 4]) -> __m512i {
    // Within 128-bit lanes: [E0, E1, E2, E3] partial sums of the lane's four i32s.
    let z: [__m512i; 4] = e.map(|e| {
        let x = _mm512_add_epi32(
            _mm512_unpacklo_epi32(e[0], e[1]),
            _mm512_unpackhi_epi32(e[0], e[1]),
        );
        let y = _mm512_add_epi32(
            _mm512_unpacklo_epi32(e[2], e[3]),
            _mm512_unpackhi_epi32(e[2], e[3]),
        );
        _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y))
    });
    // Across 128-bit lanes, four tokens at once: lane t of the result is token t's total.
    let fold = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(a, b),
            _mm512_shuffle_i32x4::<0xDD>(a, b),
        )
    };
    fold(fold(z[0], z[1]), fold(z[2], z[3]))
}

/// gemm order: one row, four tokens.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; `w` points to `nb` readable blocks, each
/// `x[t]` to `nb` Q8_K blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm_512(w: *const BlockQ4_K, x: [*const BlockQ8_K; 4], nb: usize) -> [f32; 4] {
    let mut acc = _mm256_setzero_ps();
    let zero = _mm512_setzero_si512();
    for i in 0..nb {
        prefetch_512(w, i);
        // SAFETY: `i < nb` (caller).
        let b = unsafe { &*w.add(i) };
        let (sc, mins) = k_scales_mins(b);
        let u = unpack_512(b, sc);
        let (d, dmin) = d_dmin(b);
        // SAFETY: `i < nb` (caller).
        let a: [&BlockQ8_K; 4] = std::array::from_fn(|t| unsafe { &*x[t].add(i) });
        let e: [[__m512i; 4]; 4] =
            std::array::from_fn(|t| std::array::from_fn(|c| chunk_512(&u, a[t], c, zero)));
        let ps = pair_sums4_512(e);
        let p = [
            _mm512_castsi512_si128(ps),
            _mm512_extracti32x4_epi32::<1>(ps),
            _mm512_extracti32x4_epi32::<2>(ps),
            _mm512_extracti32x4_epi32::<3>(ps),
        ];
        let m: [__m128i; 4] = std::array::from_fn(|t| _mm_madd_epi16(mins, bsums32(a[t])));
        let dx = _mm_setr_ps(a[0].d(), a[1].d(), a[2].d(), a[3].d());
        acc = gemm_step4(acc, gemm_dd(d, dmin, _mm256_set_m128(dx, dx)), p, m);
    }
    gemm_finish(acc)
}

fn vec_dot_rows_512(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = [x.as_ptr().cast::<BlockQ8_K>()];
    by_rows!(w, row_bytes, out,
        // SAFETY: `kernels` hands this function out only when the CPU has every feature the
        // kernel enables; `check_rows` verified every row holds `nb` blocks and `x` the
        // matching activation blocks, which is all the kernel reads.
        |p: [4]| unsafe { vec_dot_512::<4, 1>(p.map(|p| p.cast()), xp, nb) }.map(|v| v[0]),
        // SAFETY: as above.
        |p: [1]| unsafe { vec_dot_512::<1, 1>(p.map(|p| p.cast()), xp, nb) }.map(|v| v[0]))
}

fn vec_dot_rows4_512(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    let nb = check4(w, row_bytes, &x, &out);
    let xp = x.map(|s| s.as_ptr().cast::<BlockQ8_K>());
    let rows = out[0].len();
    let row = |r: usize| w[r * row_bytes..].as_ptr().cast::<BlockQ4_K>();
    let mut r = 0;
    while r + 2 <= rows {
        // SAFETY: as in `vec_dot_rows_512`, for each of the four activation rows.
        let res = unsafe { vec_dot_512::<2, 4>([row(r), row(r + 1)], xp, nb) };
        for (k, rr) in res.iter().enumerate() {
            for t in 0..4 {
                out[t][r + k] = rr[t];
            }
        }
        r += 2;
    }
    if r < rows {
        // SAFETY: as above.
        let res = unsafe { vec_dot_512::<1, 4>([row(r)], xp, nb) };
        for t in 0..4 {
            out[t][r] = res[0][t];
        }
    }
}

fn gemv_rows_512(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_K>();
    // This thread's scratch, overwritten here (a token's product calls this once a tile).
    let mut prep = PREP.take();
    // SAFETY: `kernels` hands this function out only when the CPU has AVX-512 F/BW/VL and
    // AVX2; `check_rows` verified that `x` holds `nb` Q8_K blocks.
    unsafe { prepare_acts_512(xp, nb, &mut prep) };
    by_rows!(w, row_bytes, out,
        // SAFETY: as in `vec_dot_rows_512`; `prep` holds the `nb` prepared blocks of `x`.
        |p: [4]| unsafe { gemv_lin_512(p.map(|p| p.cast()), &prep) },
        // SAFETY: as in `vec_dot_rows_512`.
        |p: [1]| unsafe { gemv_512::<1>(p.map(|p| p.cast()), xp, nb) });
    PREP.set(prep);
}

thread_local! {
    /// [`gemv_rows_512`]'s prepared activations, kept between calls on this thread.
    static PREP: std::cell::Cell<PrepLin> = const {
        std::cell::Cell::new(PrepLin { blocks: Vec::new(), sums: Vec::new() })
    };
}

/// One row of Q8_K activations prepared for [`gemv_lin_512`] by [`prepare_acts_512`].
#[derive(Default)]
struct PrepLin {
    /// The blocks' quants in the order of a weight block's nibbles, and their scales.
    blocks: Vec<PrepQ8K>,
    /// The eight 32-element sums of each block, four blocks to a register
    /// (`sums[g]` lane `k` = block `4g + k`; a last, short group is padded with zeros).
    sums: Vec<[i16; 32]>,
}

/// A Q8_K block prepared for [`gemv_lin_512`]: the quants in the order of a weight block's
/// nibbles (see [`prepare_acts_512`]) and the scale.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PrepQ8K {
    q: [[i8; 64]; 4],
    d: f32,
}

/// Prepares the activation blocks of one row for [`gemv_lin_512`]. 64 bytes of a Q4_K block's
/// `qs` hold, in their low nibbles, elements `0..32` and `64..96` of a 128-element half and in
/// their high nibbles elements `32..64` and `96..128`; `q[2h]` and `q[2h + 1]` put half `h`'s
/// activations in those two orders, so the nibbles need no shuffle in the row loop.
///
/// They replace the contents of `out`.
///
/// # Safety
/// AVX-512 F/BW and AVX2 available; `x` points to `nb` Q8_K blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn prepare_acts_512(x: *const BlockQ8_K, nb: usize, out: &mut PrepLin) {
    // SAFETY: `x` points to `nb` blocks (caller).
    let x = unsafe { std::slice::from_raw_parts(x, nb) };
    out.blocks.clear();
    out.blocks.extend(x.iter().map(|a| {
        let mut p = PrepQ8K {
            q: [[0; 64]; 4],
            d: a.d(),
        };
        for (k, src) in [0, 64, 32, 96, 128, 192, 160, 224].into_iter().enumerate() {
            p.q[k / 2][32 * (k % 2)..32 * (k % 2) + 32].copy_from_slice(&a.qs[src..src + 32]);
        }
        p
    }));
    out.sums.clear();
    out.sums.extend(x.chunks(4).map(|g| {
        let mut s = [0i16; 32];
        for (k, a) in g.iter().enumerate() {
            // SAFETY: writes the 16 bytes of `s[8k..8k + 8]`, `k < 4`.
            unsafe { _mm_storeu_si128(s.as_mut_ptr().add(8 * k).cast(), bsums32(a)) };
        }
        s
    }));
}

/// Scale words for [`totals_lin_512`]'s two packed product vectors, as `vpshufb` indices into
/// a block's eight scale bytes, which every 128-bit lane holds in its low eight bytes (`0x80`:
/// a zero high byte). `vpackssdw` of the products of nibble vectors `2h` and `2h + 1` puts, in
/// 128-bit lanes 0 and 1, four words of sub-block `4h` then four of `4h + 1`, and in lanes 2
/// and 3 four of `4h + 2` then four of `4h + 3`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn lin_scale_picks() -> [__m512i; 2] {
    [0u16, 4].map(|h| {
        let word = |j: u16| (0x8000 | (h + j)) as i16;
        let lane = |a: u16, b: u16| {
            _mm_setr_epi16(
                word(a),
                word(a),
                word(a),
                word(a),
                word(b),
                word(b),
                word(b),
                word(b),
            )
        };
        let (l01, l23) = (lane(0, 1), lane(2, 3));
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set_m128i(l01, l01)),
            _mm256_set_m128i(l23, l23),
        )
    })
}

/// The scales and mins of four Q4_K blocks whose first 16 bytes (`d`, `dmin`, the 12 packed
/// scale bytes) are the 128-bit lanes of `h`: lane `k` becomes block `k`'s eight 6-bit scales
/// then its eight mins, as bytes. [`crate::blocks::k4_scales_mins_u64`]'s unpacking, four
/// blocks at once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn scales_mins4(h: __m512i) -> __m512i {
    // A lane's dwords: [d·dmin, w0, w1, w2]; the result's: [sc_lo, sc_hi, m_lo, m_hi] with
    // sc_lo = w0 & 0x3f…, sc_hi = (w2 & 0x0f…) | ((w0 >> 2) & 0x30…),
    // m_lo = w1 & 0x3f…,  m_hi = ((w2 >> 4) & 0x0f…) | ((w1 >> 2) & 0x30…).
    let (m6, m4, h2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x3030_3030);
    // [w0, w2, w1, w2 >> 4]
    let x = _mm512_srlv_epi32(
        _mm512_shuffle_epi32::<0b11_10_11_01>(h),
        _mm512_set4_epi32(4, 0, 0, 0),
    );
    // [w0 >> 2, w0 >> 2, w1 >> 2, w1 >> 2]
    let y = _mm512_srli_epi32::<2>(_mm512_shuffle_epi32::<0b10_10_01_01>(h));
    let lows = _mm512_and_si512(x, _mm512_set4_epi32(m4, m6, m4, m6));
    // lows | (y & [0, h2, 0, h2])
    _mm512_ternarylogic_epi32::<0xF8>(lows, y, _mm512_set4_epi32(h2, 0, h2, 0))
}

/// Lane `K` of `v` in every lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane_to_all<const K: usize>(v: __m512i) -> __m512i {
    match K {
        0 => _mm512_shuffle_i32x4::<0x00>(v, v),
        1 => _mm512_shuffle_i32x4::<0x55>(v, v),
        2 => _mm512_shuffle_i32x4::<0xAA>(v, v),
        _ => _mm512_shuffle_i32x4::<0xFF>(v, v),
    }
}

/// The integer total `I` (`Σ_j scale_j · Σ q·y` over sub-blocks `j`) of one weight block
/// against one prepared activation block, as sixteen lanes whose sum it is. Exact, so any lane
/// split gives the same totals; [`reduce_lin4`] sums them for four blocks at once. `sc` holds
/// the block's scale bytes in the low eight bytes of every 128-bit lane ([`scales_mins4`],
/// [`lane_to_all`]).
///
/// Each nibble vector meets its activations in one `vpdpbusd` (dwords of four products, at
/// most 4·15·128 in magnitude, so they fit in words); `vpackssdw` packs two such vectors into
/// words and `vpdpwssd` multiplies them by their sub-blocks' scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn totals_lin_512(b: &BlockQ4_K, a: &PrepQ8K, sc: __m512i, picks: &[__m512i; 2]) -> __m512i {
    let m4 = _mm512_set1_epi8(0x0F);
    // SAFETY: reads the 128 bytes of `b.qs` and the 256 of `a.q`.
    let (v, y) = unsafe {
        (
            [0, 1].map(|h| _mm512_loadu_si512(b.qs.as_ptr().add(64 * h).cast())),
            [0, 1, 2, 3].map(|k| _mm512_loadu_si512(a.q[k].as_ptr().cast())),
        )
    };
    let lo = |v: __m512i| _mm512_and_si512(v, m4);
    let hi = |v: __m512i| _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
    let q = [lo(v[0]), hi(v[0]), lo(v[1]), hi(v[1])];
    let z = _mm512_setzero_si512();
    let p: [__m512i; 4] = std::array::from_fn(|k| _mm512_dpbusd_epi32(z, q[k], y[k]));
    let w01 = _mm512_packs_epi32(p[0], p[1]);
    let w23 = _mm512_packs_epi32(p[2], p[3]);
    _mm512_dpwssd_epi32(
        _mm512_madd_epi16(w01, _mm512_shuffle_epi8(sc, picks[0])),
        w23,
        _mm512_shuffle_epi8(sc, picks[1]),
    )
}

/// `[I_0, M_0, I_1, M_1 | I_2, M_2, I_3, M_3]` from four blocks' [`totals_lin_512`] lanes `t`
/// and their mins terms `m` (lane `k`: four dwords whose sum is block `k`'s `M`): one tree for
/// the four blocks (each step adds two blocks' lanes side by side), where reducing each block
/// on its own took three more lane moves a block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn reduce_lin4(t: [__m512i; 4], m: __m512i) -> __m256i {
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (a, b) = (pair(t[0], t[1]), pair(t[2], t[3]));
    // Each 128-bit lane: [I_0, I_1, I_2, I_3] partial sums.
    let c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    let d = _mm256_add_epi32(_mm512_castsi512_si256(c), _mm512_extracti64x4_epi64::<1>(c));
    // Lane 0: [I_0, I_1, I_0, I_1] partials, lane 1 the same for blocks 2 and 3.
    let d = _mm256_permute4x64_epi64::<0xD8>(d);
    // `m`'s lanes [0, 2] and [1, 3].
    let x = _mm512_castsi512_si256(_mm512_shuffle_i32x4::<0b10_00>(m, m));
    let y = _mm512_castsi512_si256(_mm512_shuffle_i32x4::<0b11_01>(m, m));
    // Lane 0: [M_0, M_1, M_0, M_1] partials, lane 1 the same for blocks 2 and 3.
    let e = _mm256_add_epi32(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y));
    _mm256_add_epi32(_mm256_unpacklo_epi32(d, e), _mm256_unpackhi_epi32(d, e))
}

/// [`reduce_lin4`]'s totals of `n` (1 to 4) consecutive blocks of one row, `w` pointing to the
/// first, against prepared blocks `a` (at least `n`) and their sums `sums`; blocks past `n`
/// count zero and are not read. The scales and mins of the four blocks are unpacked together
/// ([`scales_mins4`]), and the mins terms are one `vpmaddwd` for all four.
///
/// # Safety
/// As [`gemv_lin_512`]'s; `w` points to `n` readable blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group_lin_512(
    w: *const BlockQ4_K,
    n: usize,
    a: &[PrepQ8K],
    sums: &[i16; 32],
    picks: &[__m512i; 2],
) -> __m256i {
    let head = |k: usize| {
        if k < n {
            // SAFETY: block `k < n` is readable (caller); its first 16 bytes are `d`, `dmin`,
            // `scales`.
            unsafe { _mm_loadu_si128(w.add(k).cast()) }
        } else {
            _mm_setzero_si128()
        }
    };
    let h = _mm512_inserti32x4::<3>(
        _mm512_inserti32x4::<2>(
            _mm512_inserti32x4::<1>(_mm512_castsi128_si512(head(0)), head(1)),
            head(2),
        ),
        head(3),
    );
    let sm = scales_mins4(h);
    let block = |k: usize, sc: __m512i| {
        if k >= n {
            return _mm512_setzero_si512();
        }
        let at = w.wrapping_add(k).cast::<i8>();
        // Prefetching has no memory effects and never faults.
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(LIN_PF_BYTES));
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(LIN_PF_BYTES + 64));
        // SAFETY: `k < n` (checked above, caller).
        totals_lin_512(unsafe { &*w.add(k) }, &a[k], sc, picks)
    };
    // Written out (not a loop) so the four vectors stay in registers.
    let t = [
        block(0, lane_to_all::<0>(sm)),
        block(1, lane_to_all::<1>(sm)),
        block(2, lane_to_all::<2>(sm)),
        block(3, lane_to_all::<3>(sm)),
    ];
    // Each lane's mins as words, bytes 8..16 of the lane.
    let (lo, hi) = (
        0x800b_800a_8009_8008_u64 as i64,
        0x800f_800e_800d_800c_u64 as i64,
    );
    let mins = _mm512_shuffle_epi8(sm, _mm512_set4_epi64(hi, lo, hi, lo));
    // SAFETY: reads the 64 bytes of `sums`.
    let s = unsafe { _mm512_loadu_si512(sums.as_ptr().cast()) };
    reduce_lin4(t, _mm512_madd_epi16(mins, s))
}

/// How far ahead of the block being read [`gemv_lin_512`] prefetches its stream (two lines a
/// block cover every line of consecutive 144-byte blocks). Zen 4, Q4_K 8192² from DRAM, one
/// thread: about 10% over the hardware prefetchers alone; 2–8 KiB measure alike. Zen 5 (one
/// core reads 31 GiB/s): the 7b's decode at one thread 8.3–8.6 tok/s with 4 KiB, 9.3–10.0
/// with 8 KiB, 9.7–9.8 with 12 KiB (alternating builds; two threads alike).
const LIN_PF_BYTES: usize = 8192;

/// Columns (blocks) per segment of [`gemv_lin_512`]: its totals buffer lives on the stack.
const LIN_SEGMENT: usize = 64;

/// gemv order for four rows, reading the rows one after another (one linear stream through
/// memory, which the hardware prefetchers follow at full speed, where four interleaved row
/// streams did not): the exact integer totals `I` and `M` of each (row, block) go to a buffer,
/// then the float step runs for the four rows together, block by block, exactly as in
/// [`gemv_512`]. Rows longer than [`LIN_SEGMENT`] blocks run in segments.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `x.blocks.len()`
/// readable blocks, and `x` was prepared by [`prepare_acts_512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemv_lin_512(w: [*const BlockQ4_K; 4], x: &PrepLin) -> [f32; 4] {
    let picks = lin_scale_picks();
    let mut acc4 = _mm256_setzero_ps();
    // `tot[r][g]` = `[I, M]` of row `r` and blocks `i0 + 4g .. + 4`, as [`reduce_lin4`] makes
    // them.
    let mut tot = std::mem::MaybeUninit::<[[__m256i; LIN_SEGMENT / 4]; 4]>::uninit();
    let tp = tot.as_mut_ptr().cast::<[__m256i; LIN_SEGMENT / 4]>();
    for (s, xs) in x.blocks.chunks(LIN_SEGMENT).enumerate() {
        let i0 = s * LIN_SEGMENT;
        let sums = &x.sums[i0 / 4..];
        for (r, &wr) in w.iter().enumerate() {
            for (g, xg) in xs.chunks(4).enumerate() {
                let at = wr.wrapping_add(i0 + 4 * g);
                // SAFETY: blocks `i0 + 4g .. + xg.len()` < `x.blocks.len()` (caller); a full
                // group passes a constant count, so its checks fold away.
                let v = unsafe {
                    if xg.len() == 4 {
                        group_lin_512(at, 4, xg, &sums[g], &picks)
                    } else {
                        group_lin_512(at, xg.len(), xg, &sums[g], &picks)
                    }
                };
                // SAFETY: `r < 4`, `g < LIN_SEGMENT / 4` (`xs.len()` ≤ LIN_SEGMENT).
                unsafe { (*tp.add(r))[g] = v };
            }
        }
        for (g, xg) in xs.chunks(4).enumerate() {
            // SAFETY: group `g` of every row was written above.
            let v = std::array::from_fn(|r| unsafe { (*tp.add(r))[g] });
            // Block `k`'s `[I_r0, M_r0, I_r1, M_r1, …]`.
            let v = transpose_i64x4(v);
            for (k, a) in xg.iter().enumerate() {
                let i = i0 + 4 * g + k;
                // SAFETY: block `i` < `x.blocks.len()` (caller).
                let b: [&BlockQ4_K; 4] = std::array::from_fn(|r| unsafe { &*w[r].add(i) });
                let dd = _mm256_mul_ps(d_dmin4(b), _mm256_set1_ps(a.d));
                acc4 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v[k]), dd, acc4);
            }
        }
    }
    gemv_finish::<4>(acc4, [Acc2::default(); 4])
}

/// The 4 × 4 transpose of 64-bit elements: `out[k]` holds element `k` of each `v[r]`, in
/// order of `r`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_i64x4(v: [__m256i; 4]) -> [__m256i; 4] {
    let (a0, a1) = (
        _mm256_unpacklo_epi64(v[0], v[1]),
        _mm256_unpackhi_epi64(v[0], v[1]),
    );
    let (a2, a3) = (
        _mm256_unpacklo_epi64(v[2], v[3]),
        _mm256_unpackhi_epi64(v[2], v[3]),
    );
    [
        _mm256_permute2x128_si256::<0x20>(a0, a2),
        _mm256_permute2x128_si256::<0x20>(a1, a3),
        _mm256_permute2x128_si256::<0x31>(a0, a2),
        _mm256_permute2x128_si256::<0x31>(a1, a3),
    ]
}

fn gemm_rows4_512(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    let nb = check4(w, row_bytes, &x, &out);
    let xp = x.map(|s| s.as_ptr().cast::<BlockQ8_K>());
    for r in 0..out[0].len() {
        // SAFETY: as in `vec_dot_rows_512`, for each of the four activation rows.
        let res = unsafe { gemm_512(w[r * row_bytes..].as_ptr().cast(), xp, nb) };
        for t in 0..4 {
            out[t][r] = res[t];
        }
    }
}

/// [`gemm_rows4_512`] for every group of sixteen tokens (each four groups of four) at once, with
/// the tokens in the sixteen lanes of a register ([`gemm_lanes16_512`]). Same bits as four calls
/// of [`gemm_rows4_512`] per group: every token's arithmetic is the gemm order's.
///
/// Four rows at a time, their blocks are decoded once ([`decode4`]) for all the groups; then
/// the groups go through the kernel two at a time (the last one alone where their count is
/// odd). `out[16 g + j]` is token `j` of group `g`.
pub(super) fn gemm_rows16_512(w: &[u8], row_bytes: usize, x: &[Prep16], out: &mut [&mut [f32]]) {
    assert!(
        SimdLevel::Avx512.is_available(),
        "gemm_rows16_512 needs AVX-512"
    );
    gemm_rows16::<true>(w, row_bytes, x, out);
}

/// [`gemm_rows16_512`] with AVX2 only ([`decode4_256`], [`gemm_lanes16_256`]): same bits.
pub(super) fn gemm_rows16_256(w: &[u8], row_bytes: usize, x: &[Prep16], out: &mut [&mut [f32]]) {
    assert!(
        SimdLevel::Avx2.is_available(),
        "gemm_rows16_256 needs AVX2, FMA and F16C"
    );
    gemm_rows16::<false>(w, row_bytes, x, out);
}

/// The driver of [`gemm_rows16_512`] (`WIDE`) and [`gemm_rows16_256`]; the caller checked that
/// the CPU has the features of the kernels `WIDE` picks.
fn gemm_rows16<const WIDE: bool>(w: &[u8], row_bytes: usize, x: &[Prep16], out: &mut [&mut [f32]]) {
    let nb = row_bytes / std::mem::size_of::<BlockQ4_K>();
    assert!(
        out.len() == 16 * x.len(),
        "not sixteen outputs per token group"
    );
    let rows = out.first().map_or(0, |o| o.len());
    assert!(
        row_bytes == nb * std::mem::size_of::<BlockQ4_K>() && w.len() >= rows * row_bytes,
        "weights are not {rows} rows of whole Q4_K blocks"
    );
    assert!(
        x.iter().all(|p| p.nb == nb),
        "activations are not rows of {nb} blocks"
    );
    assert!(
        out.iter().all(|o| o.len() == rows),
        "outputs differ in length"
    );
    let mut dec = DECODED.take();
    dec.resize(nb, Decoded4::ZERO);
    let mut r = 0;
    while r < rows {
        let k = (rows - r).min(4);
        // Rows past the last one repeat it (their results are dropped).
        let wp: [&[BlockQ4_K]; 4] = std::array::from_fn(|j| {
            let at = (r + j.min(k - 1)) * row_bytes;
            crate::blocks::view::<BlockQ4_K>(&w[at..at + row_bytes]).expect("whole Q4_K blocks")
        });
        for (i, d) in dec.iter_mut().enumerate() {
            let b = wp.map(|row| &row[i]);
            // SAFETY: the caller checked the features (AVX-512 for `WIDE`, else AVX2).
            unsafe {
                if WIDE {
                    decode4(b, d)
                } else {
                    decode4_256(b, d)
                }
            };
        }
        // The next four rows' weights, which the next decoding reads: fetched into L2 while
        // the token groups run (a burst of decoding alone would wait on DRAM for each line).
        let next = (r + 4) * row_bytes;
        for line in (next..w.len().min(next + 4 * row_bytes)).step_by(64) {
            // SAFETY: SSE is part of x86-64; `line` lies inside `w`, and prefetching has no
            // memory effects.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(w.as_ptr().add(line).cast()) };
        }
        let mut put = |g: usize, res: [[f32; 16]; 4]| {
            // Token `t`'s outputs of these rows are consecutive.
            for t in 0..16 {
                for (o, rj) in out[16 * g + t][r..r + k].iter_mut().zip(&res) {
                    *o = rj[t];
                }
            }
        };
        let mut g = 0;
        while g + 2 <= x.len() {
            let xg = [&x[g], &x[g + 1]];
            // SAFETY: the caller checked the features; `dec` and every `x[g]` hold `nb`
            // blocks.
            let res = unsafe {
                if WIDE {
                    gemm_lanes16_512::<2>(&dec, xg)
                } else {
                    gemm_lanes16_256::<2>(&dec, xg)
                }
            };
            put(g, res[0]);
            put(g + 1, res[1]);
            g += 2;
        }
        if g < x.len() {
            // SAFETY: as above.
            let res = unsafe {
                if WIDE {
                    gemm_lanes16_512::<1>(&dec, [&x[g]])
                } else {
                    gemm_lanes16_256::<1>(&dec, [&x[g]])
                }
            };
            put(g, res[0]);
        }
        r += k;
    }
    DECODED.set(dec);
}

thread_local! {
    /// [`gemm_rows16_512`]'s decoded blocks, kept between calls on this thread.
    static DECODED: std::cell::Cell<Vec<Decoded4>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Block `i` of four Q4_K rows, decoded for [`gemm_lanes16_512`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Decoded4 {
    /// Row `r`'s 256 quants in element order, four to a dword: sub-block `j` is dwords
    /// `8j..8j + 8`.
    q: [[i32; 64]; 4],
    /// Row `r`'s eight sub-block scales, as floats.
    sc: [[f32; 8]; 4],
    /// Row `r`'s mins in pairs, `m_2p | m_2p+1 << 16` (the words `vpmaddwd` multiplies with the
    /// activations' pair sums).
    mins: [[i32; 4]; 4],
    /// `d` and `dmin` of row `r` at `2r`, `2r + 1`.
    dd: [f32; 8],
}

impl Decoded4 {
    /// All zeros (overwritten by [`decode4`] before use).
    const ZERO: Decoded4 = Decoded4 {
        q: [[0; 64]; 4],
        sc: [[0.0; 8]; 4],
        mins: [[0; 4]; 4],
        dd: [0.0; 8],
    };

    /// Row `r`'s scales (as f32) and mins (as words: word 2p + h of the register is m_2p+h, so
    /// dword p is the pair) from block `b`; returns [`k_scales_mins`]' scale bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scales_mins(&mut self, r: usize, b: &BlockQ4_K) -> __m128i {
        let (sm, mins) = k_scales_mins(b);
        let sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
        // SAFETY: writes the 32 bytes of `self.sc[r]` and the 16 of `self.mins[r]`.
        unsafe {
            _mm256_storeu_ps(self.sc[r].as_mut_ptr(), sc);
            _mm_storeu_si128(self.mins[r].as_mut_ptr().cast(), mins);
        }
        sm
    }
}

/// [`Decoded4`] of one block of each of four rows.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode4(b: [&BlockQ4_K; 4], out: &mut Decoded4) {
    for (r, b) in b.into_iter().enumerate() {
        let sm = out.scales_mins(r, b);
        // Chunk `c`'s 64 quants in element order are sub-blocks 2c and 2c + 1 (the scale words
        // `unpack_512` also makes are not used here, and not computed once inlined).
        for (c, q) in unpack_512(b, sm).q.into_iter().enumerate() {
            // SAFETY: writes 64 bytes at dword 16c of `out.q[r]` (64-byte aligned).
            unsafe { _mm512_store_si512(out.q[r].as_mut_ptr().add(16 * c).cast(), q) };
        }
    }
    // SAFETY: writes the 32 bytes of `out.dd`.
    unsafe { _mm256_storeu_ps(out.dd.as_mut_ptr(), d_dmin4(b)) };
}

/// gemm order for four rows and `16·T` tokens (`T` groups of sixteen), the tokens in the lanes:
/// per block and row, the decoded weights are broadcast four at a time (the unsigned operand of
/// `vpdpbusd`) against the sixteen tokens' four signed quants, one register of sums per
/// (sub-block, group); `P_p = sc_2p·S_2p + sc_2p+1·S_2p+1` is an exact integer, and the four
/// FMAs of each of `acc` and `accm` run per lane in the order of [`gemm_step4`]. The `accm`
/// chain (the mins) does not depend on the sums, so it runs in a loop of its own after the
/// main one (fewer registers live at once; the same operations per lane).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; every `x[t]` has `w.len()` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm_lanes16_512<const T: usize>(w: &[Decoded4], x: [&Prep16; T]) -> [[[f32; 16]; 4]; T] {
    let mut acc = [[_mm512_setzero_ps(); T]; 4];
    for (i, b) in w.iter().enumerate() {
        // SAFETY: reads the 64 bytes of `x[t].d[i]` (`i < w.len()`, caller).
        let dx: [__m512; T] =
            std::array::from_fn(|t| unsafe { _mm512_load_ps(x[t].d.get_unchecked(i).0.as_ptr()) });
        // d_w·d_x, as the f32 product llama.cpp forms, once per block.
        let dd: [[__m512; T]; 4] =
            std::array::from_fn(|r| dx.map(|d| _mm512_mul_ps(_mm512_set1_ps(b.dd[2 * r]), d)));
        for pr in 0..4 {
            let mut s0 = [[_mm512_setzero_si512(); T]; 4];
            let mut s1 = [[_mm512_setzero_si512(); T]; 4];
            for k in 0..8 {
                for t in 0..T {
                    // SAFETY: groups 16p + k and 16p + 8 + k of block `i` (`i < w.len()`,
                    // caller); `Line`s are 64-byte aligned.
                    let (y0, y1) = unsafe {
                        (
                            _mm512_load_si512(
                                x[t].q.get_unchecked(64 * i + 16 * pr + k).0.as_ptr().cast(),
                            ),
                            _mm512_load_si512(
                                x[t].q
                                    .get_unchecked(64 * i + 16 * pr + 8 + k)
                                    .0
                                    .as_ptr()
                                    .cast(),
                            ),
                        )
                    };
                    for r in 0..4 {
                        s0[r][t] = _mm512_dpbusd_epi32(
                            s0[r][t],
                            _mm512_set1_epi32(b.q[r][16 * pr + k]),
                            y0,
                        );
                        s1[r][t] = _mm512_dpbusd_epi32(
                            s1[r][t],
                            _mm512_set1_epi32(b.q[r][16 * pr + 8 + k]),
                            y1,
                        );
                    }
                }
            }
            for r in 0..4 {
                for t in 0..T {
                    // `P_p` in float arithmetic, exact: |S| ≤ 32·15·128 < 2^16 and scales
                    // < 2^6, so each product, their sum and hence every rounding step is an
                    // integer below 2^24: the same float as converting the integer `P_p`, with
                    // no `vpmulld` (two uops each on Intel, on the ports `vpdpbusd` uses).
                    let p = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(s1[r][t]),
                        _mm512_set1_ps(b.sc[r][2 * pr + 1]),
                        _mm512_mul_ps(
                            _mm512_cvtepi32_ps(s0[r][t]),
                            _mm512_set1_ps(b.sc[r][2 * pr]),
                        ),
                    );
                    acc[r][t] = _mm512_fmadd_ps(p, dd[r][t], acc[r][t]);
                }
            }
        }
    }
    let mut accm = [[_mm512_setzero_ps(); T]; 4];
    for (i, b) in w.iter().enumerate() {
        // SAFETY: as above.
        let dx: [__m512; T] =
            std::array::from_fn(|t| unsafe { _mm512_load_ps(x[t].d.get_unchecked(i).0.as_ptr()) });
        // dmin_w·d_x, once per block.
        let ddm: [[__m512; T]; 4] =
            std::array::from_fn(|r| dx.map(|d| _mm512_mul_ps(_mm512_set1_ps(b.dd[2 * r + 1]), d)));
        for pr in 0..4 {
            for t in 0..T {
                // SAFETY: reads the 64 bytes of `x[t].bs[4i + p]` (`i < w.len()`, caller).
                let bs = unsafe {
                    _mm512_load_si512(x[t].bs.get_unchecked(4 * i + pr).0.as_ptr().cast())
                };
                for r in 0..4 {
                    let m = _mm512_madd_epi16(bs, _mm512_set1_epi32(b.mins[r][pr]));
                    accm[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), ddm[r][t], accm[r][t]);
                }
            }
        }
    }
    std::array::from_fn(|t| {
        std::array::from_fn(|r| {
            let mut o = [0f32; 16];
            // SAFETY: writes the 64 bytes of `o`.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_sub_ps(acc[r][t], accm[r][t])) };
            o
        })
    })
}

/// [`decode4`] with AVX2.
///
/// # Safety
/// AVX2/FMA/F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode4_256(b: [&BlockQ4_K; 4], out: &mut Decoded4) {
    let m4 = _mm256_set1_epi8(0x0F);
    for (r, b) in b.into_iter().enumerate() {
        out.scales_mins(r, b);
        // Chunk `c`'s 32 bytes: the low nibbles are sub-block 2c, the high ones 2c + 1.
        for c in 0..4 {
            // SAFETY: reads bytes 32c..32c+32 of the 128-byte `b.qs`; writes 32 bytes at
            // dwords 16c and 16c + 8 of `out.q[r]` (32-byte aligned: `Decoded4` is 64-byte
            // aligned and each row 256 bytes).
            unsafe {
                let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast());
                let at = out.q[r].as_mut_ptr().add(16 * c);
                _mm256_store_si256(at.cast(), _mm256_and_si256(q, m4));
                _mm256_store_si256(
                    at.add(8).cast(),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
                );
            }
        }
    }
    // SAFETY: writes the 32 bytes of `out.dd`.
    unsafe { _mm256_storeu_ps(out.dd.as_mut_ptr(), d_dmin4(b)) };
}

/// [`gemm_lanes16_512`] with AVX2: the same float operations per lane (so the same bits), a
/// group of sixteen tokens as two halves of eight lanes. Without `vpdpbusd`, each broadcast
/// weight dword meets a half's eight tokens through `vpmaddubsw` (word pairs of at most
/// 2·15·128), and a sub-block's eight such words are summed as words (at most 8·3840 < 2^15:
/// exact) before one `vpmaddwd` with ones widens them to the tokens' dword sums `S_j`. One row
/// at a time, so that the accumulators stay in registers.
///
/// # Safety
/// AVX2/FMA/F16C available; every `x[t]` has `w.len()` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_lanes16_256<const T: usize>(w: &[Decoded4], x: [&Prep16; T]) -> [[[f32; 16]; 4]; T] {
    let ones = _mm256_set1_epi16(1);
    // Token half `h` of group `t`'s scales of block `i` (a bounds-checked line, once per
    // block).
    let dx = |t: usize, h: usize, i: usize| {
        let line = &x[t].d[i].0[8 * h..8 * h + 8];
        // SAFETY: reads the 32 bytes of `line`, 32-byte aligned (half of a 64-byte `Line`).
        unsafe { _mm256_load_ps(line.as_ptr()) }
    };
    let mut res = [[[0f32; 16]; 4]; T];
    for r in 0..4 {
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for (i, b) in w.iter().enumerate() {
            // d_w·d_x, as the f32 product llama.cpp forms, once per block.
            let dw = _mm256_set1_ps(b.dd[2 * r]);
            let dd: [[__m256; 2]; T] =
                std::array::from_fn(|t| std::array::from_fn(|h| _mm256_mul_ps(dw, dx(t, h, i))));
            for pr in 0..4 {
                let mut s0 = [[_mm256_setzero_si256(); 2]; T];
                let mut s1 = [[_mm256_setzero_si256(); 2]; T];
                for k in 0..8 {
                    let w0 = _mm256_set1_epi32(b.q[r][16 * pr + k]);
                    let w1 = _mm256_set1_epi32(b.q[r][16 * pr + 8 + k]);
                    for t in 0..T {
                        // SAFETY: groups 16p + k and 16p + 8 + k of block `i` (`i < w.len()`,
                        // caller); `Line`s are 64-byte aligned, halves 32 bytes into them.
                        let (l0, l1) = unsafe {
                            (
                                x[t].q.get_unchecked(64 * i + 16 * pr + k).0.as_ptr(),
                                x[t].q.get_unchecked(64 * i + 16 * pr + 8 + k).0.as_ptr(),
                            )
                        };
                        for h in 0..2 {
                            // SAFETY: as above.
                            let (y0, y1) = unsafe {
                                (
                                    _mm256_load_si256(l0.add(32 * h).cast()),
                                    _mm256_load_si256(l1.add(32 * h).cast()),
                                )
                            };
                            s0[t][h] = _mm256_add_epi16(s0[t][h], _mm256_maddubs_epi16(w0, y0));
                            s1[t][h] = _mm256_add_epi16(s1[t][h], _mm256_maddubs_epi16(w1, y1));
                        }
                    }
                }
                let sc0 = _mm256_set1_ps(b.sc[r][2 * pr]);
                let sc1 = _mm256_set1_ps(b.sc[r][2 * pr + 1]);
                for t in 0..T {
                    for h in 0..2 {
                        // `P_p` exact in floats, as in `gemm_lanes16_512`.
                        let a0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(s0[t][h], ones));
                        let a1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(s1[t][h], ones));
                        let p = _mm256_fmadd_ps(a1, sc1, _mm256_mul_ps(a0, sc0));
                        acc[t][h] = _mm256_fmadd_ps(p, dd[t][h], acc[t][h]);
                    }
                }
            }
        }
        let mut accm = [[_mm256_setzero_ps(); 2]; T];
        for (i, b) in w.iter().enumerate() {
            // dmin_w·d_x, once per block.
            let dw = _mm256_set1_ps(b.dd[2 * r + 1]);
            for pr in 0..4 {
                let mv = _mm256_set1_epi32(b.mins[r][pr]);
                for t in 0..T {
                    for h in 0..2 {
                        // SAFETY: reads 32 bytes of the 64-byte-aligned `x[t].bs[4i + p]`
                        // (`i < w.len()`, caller).
                        let bs = unsafe {
                            _mm256_load_si256(
                                x[t].bs
                                    .get_unchecked(4 * i + pr)
                                    .0
                                    .as_ptr()
                                    .add(16 * h)
                                    .cast(),
                            )
                        };
                        let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mv));
                        accm[t][h] = _mm256_fmadd_ps(m, _mm256_mul_ps(dw, dx(t, h, i)), accm[t][h]);
                    }
                }
            }
        }
        for t in 0..T {
            for h in 0..2 {
                // SAFETY: writes 32 bytes of `res[t][r]`.
                unsafe {
                    _mm256_storeu_ps(
                        res[t][r].as_mut_ptr().add(8 * h),
                        _mm256_sub_ps(acc[t][h], accm[t][h]),
                    )
                };
            }
        }
    }
    res
}

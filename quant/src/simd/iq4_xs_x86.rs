//! IQ4_XS × Q8_K kernels for x86-64, bit-identical to [`scalar::iq4_xs`].
//!
//! **`vec_dot` order** (one token, batches of fewer than 8): the eight integer lanes of
//! `ggml_vec_dot_iq4_xs_q8_K` per block (lane `l`: `Σ_j ls_j · Σ q·y` over elements `4l..4l+4`
//! of every sub-block `j`, products by the sign trick), `acc_l = fma(d_w·d_x, L_l, acc_l)`,
//! then `hsum_float_8`'s tree.
//!
//! - AVX2 ([`rows_avx2`]): llama.cpp's own sequence, one row at a time: `vpshufb` of the nibbles
//!   on `IQ4_NL_VALUES`, `vpmaddubsw(|q|, sign(y, q))`, `vpmaddwd` by the sub-block scale.
//! - AVX-512 ([`rows_512`]): one row at a time, two blocks per step. The activations are laid
//!   out once per call in the order of a weight block's nibble vectors (64 bytes of `qs` give
//!   the low nibbles of four sub-blocks in one register and their high nibbles in another), so
//!   the weights are never shuffled across lanes. `vpsignb` has no 512-bit form: `|q|` is a
//!   `vpshufb` table and `sign(y, q)` a masked `0 − y` (the mask is the nibble's bit 3: the
//!   negative values are indices 0..8), which wraps for −128 exactly as `vpsignb` does.
//!   `vpmaddwd`/`vpdpwssd` apply the scales, and two blocks' lanes are folded together into one
//!   register, whose halves feed the two FMAs of the float step in block order. The two
//!   blocks' scales are unpacked together in one 256-bit register. Where the CPU has AVX-512
//!   VBMI ([`rows_512_vbmi`]), `vpermb` looks the nibbles up without masking them first (it
//!   reads six index bits and the table repeats every 16 bytes). No software prefetch: the row
//!   is one linear stream the hardware prefetchers follow (measured on this AMD EPYC, 8192 ×
//!   8192 from DRAM, one thread: ~8.5–9.4 ns per block with none, ~12–13 with a 4 KiB-ahead
//!   prefetch, and 0.5–2 KiB ahead slower too; the AVX2 kernel ~10.3). With VBMI and paired
//!   scales: weights in L2 7.8 ns per block (8.2 without the pairing, 9.1 without VBMI);
//!   criterion's `matvec_cold` 16.8 GiB/s against a 23.4 GiB/s read probe (72%; 61% before).
//!
//! **Tiled order** (batches of n ≥ 8; see [`scalar::iq4_xs::iq4_xs_tiled`]): per block the exact
//! integer total `S1 = Σ_j ls_j · (Σ (q+128)·y − 128·bsum_j)`, then `r = S1·d_w`,
//! `acc = fma(r, d_x, acc)`. With activations as [`quantize_acts`](crate::quantize_acts) makes
//! them (quants in −127..=127, `bsums` their sums) `S1 = Σ_j ls_j · Σ q·y`, which the sign-trick
//! products give exactly; the tiled kernels check that once per activation row ([`acts_plain`])
//! and otherwise run the scalar reference, so every input gives the reference's bits. Only the
//! total matters here, so the AVX-512 tiled kernels meet the activations in their own order
//! (the weights' 128-bit parts rearranged instead, [`unpack_t_512`]) and need no per-call
//! layout: one token × four rows per pass ([`tiled_rows_512`]) and one row × four tokens, each
//! weight block unpacked once for the four ([`tiled_rows4_512`]). AVX2: one row, one token, on
//! the AVX2 `vec_dot` lanes ([`tiled_rows_avx2`]).
//!
//! Rough speeds on this machine (AMD EPYC with AVX-512, one thread, 8192 columns, shared and
//! noisy; `tests/iq4_xs.rs`'s ignored `speed`): tiled, weights in cache, n = 16: AVX-512 ~6.8 ns
//! per block and token, AVX2 ~12, scalar ~300.
//!
//! [`crate::scalar::iq4_xs::iq4_xs_tiled`]: crate::scalar::iq4_xs::iq4_xs_tiled

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{view, BlockIQ4_XS, BlockQ8_K, IQ4_NL_VALUES};
use crate::scalar;

/// The `vec_dot`-order kernel for `ty` at most at `level`, where there is one.
pub(super) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    if ty != GgmlType::IQ4_XS {
        return None;
    }
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some(if is_x86_feature_detected!("avx512vbmi") {
            rows_512_vbmi
        } else {
            rows_512
        });
    }
    (level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available()).then_some(rows_avx2 as RowsFn)
}

/// The tiled-order kernels (one token, four tokens) for `ty` at most at `level`, where there
/// are some.
pub(super) fn tiled_kernels(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if ty != GgmlType::IQ4_XS {
        return None;
    }
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some((tiled_rows_512, Some(tiled_rows4_512)));
    }
    (level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available())
        .then_some((tiled_rows_avx2 as RowsFn, None))
}

/// The eight sub-block scales `ls_j − 32` of `b` as words.
#[inline]
#[target_feature(enable = "avx2")]
fn scale_words(b: &BlockIQ4_XS) -> __m128i {
    // Spread the eight low nibbles to bytes 0..8 …
    let mut lo = u32::from_le_bytes(b.scales_l) as u64;
    lo = (lo | lo << 16) & 0x0000_FFFF_0000_FFFF;
    lo = (lo | lo << 8) & 0x00FF_00FF_00FF_00FF;
    lo = (lo | lo << 4) & 0x0F0F_0F0F_0F0F_0F0F;
    // … and the eight 2-bit high parts to bits 4..6 of the same bytes.
    let mut hi = u16::from_le_bytes(b.scales_h) as u64;
    hi = (hi | hi << 24) & 0x0000_00FF_0000_00FF;
    hi = (hi | hi << 12) & 0x000F_000F_000F_000F;
    hi = (hi | hi << 6) & 0x0303_0303_0303_0303;
    let ls = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((lo | hi << 4) as i64));
    _mm_sub_epi16(ls, _mm_set1_epi16(32))
}

/// [`scale_words`] with AVX-512 BW/VL's variable word shifts: the block's first eight bytes
/// (`d`, `scales_h`, `scales_l`) spread to words and shifted into place.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn scale_words_512(b: &BlockIQ4_XS) -> __m128i {
    _mm256_castsi256_si128(scale_words_pair_512(b, b))
}

/// [`scale_words_512`] of two blocks at once: `b0`'s words, then `b1`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn scale_words_pair_512(b0: &BlockIQ4_XS, b1: &BlockIQ4_XS) -> __m256i {
    // SAFETY: reads the first 8 bytes of each block (`d`, `scales_h`, `scales_l`; a block has
    // 136).
    let raw = unsafe {
        _mm256_set_m128i(
            _mm_loadl_epi64((b1 as *const BlockIQ4_XS).cast()),
            _mm_loadl_epi64((b0 as *const BlockIQ4_XS).cast()),
        )
    };
    let lo = _mm256_shuffle_epi8(
        raw,
        _mm256_setr_epi8(
            4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1, //
            4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1,
        ),
    );
    let lo = _mm256_srlv_epi16(
        lo,
        _mm256_setr_epi16(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4),
    );
    let hi = _mm256_shuffle_epi8(
        raw,
        _mm256_setr_epi8(
            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, //
            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        ),
    );
    let hi = _mm256_srlv_epi16(
        hi,
        _mm256_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14),
    );
    let ls = _mm256_or_si256(
        _mm256_and_si256(lo, _mm256_set1_epi16(0x0F)),
        _mm256_slli_epi16::<4>(_mm256_and_si256(hi, _mm256_set1_epi16(3))),
    );
    _mm256_sub_epi16(ls, _mm256_set1_epi16(32))
}

/// Whether every block of `x` is as `quantize_acts` makes it: no quant is −128 and every
/// `bsums` entry is the sum of its 16 quants. Then the tiled order's `S1` equals the sign-trick
/// lanes' total. (Checked once per kernel call, so it must be cheap: `vpsadbw` of the quants
/// + 128 gives the sums of eight.)
pub(super) fn acts_plain(x: &[BlockQ8_K]) -> bool {
    // SAFETY: the tiled kernels that call this are handed out only when the CPU has AVX2.
    unsafe { acts_plain_avx2(x) }
}

/// [`acts_plain`].
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
unsafe fn acts_plain_avx2(x: &[BlockQ8_K]) -> bool {
    let m128 = _mm256_set1_epi8(-128);
    let zero = _mm256_setzero_si256();
    let mut bad = _mm256_setzero_si256();
    for a in x {
        let mut sums = [0i64; 32];
        for h in 0..8 {
            // SAFETY: bytes `32h..32h + 32` of `a.qs` (256 bytes).
            let v = unsafe { _mm256_loadu_si256(a.qs.as_ptr().add(32 * h).cast()) };
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(v, m128));
            let s = _mm256_sad_epu8(_mm256_xor_si256(v, m128), zero);
            // SAFETY: writes `sums[4h..4h + 4]`.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().add(4 * h).cast(), s) };
        }
        for k in 0..16 {
            if sums[2 * k] + sums[2 * k + 1] - 16 * 128 != a.bsum(k) as i64 {
                return false;
            }
        }
    }
    _mm256_testz_si256(bad, bad) == 1
}

// ---------------------------------------------------------------------------------------------
// AVX2

/// `vec_dot`'s eight integer lanes of block `b` · `a`, llama.cpp's AVX2 sequence.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lanes_avx2(b: &BlockIQ4_XS, a: &BlockQ8_K) -> __m256i {
    // SAFETY: reads the 16 bytes of the table.
    let lut =
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) });
    let m4 = _mm_set1_epi8(0x0F);
    let mut ls = [0i16; 8];
    // SAFETY: writes the 16 bytes of `ls`.
    unsafe { _mm_storeu_si128(ls.as_mut_ptr().cast(), scale_words(b)) };
    let mut sum = _mm256_setzero_si256();
    for (j, &l) in ls.iter().enumerate() {
        // SAFETY: sub-block `j < 8`: 16 bytes of `b.qs` and 32 of `a.qs`.
        let (v, y) = unsafe {
            (
                _mm_loadu_si128(b.qs.as_ptr().add(16 * j).cast()),
                _mm256_loadu_si256(a.qs.as_ptr().add(32 * j).cast()),
            )
        };
        let n = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
            _mm_and_si128(v, m4),
        );
        let q = _mm256_shuffle_epi8(lut, n);
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, _mm256_set1_epi16(l)));
    }
    sum
}

/// One row in the `vec_dot` order.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2(w: *const BlockIQ4_XS, x: *const BlockQ8_K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        let d = h2f(b.d) * a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_avx2(b, a)), acc);
    }
    reduce8(acc)
}

/// One row in the tiled order, for activations that pass [`acts_plain`].
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tiled_dot_avx2(w: *const BlockIQ4_XS, x: *const BlockQ8_K, nb: usize) -> f32 {
    let mut acc = scalar::tiled::AccTiled::default();
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        let l = lanes_avx2(b, a);
        let s = _mm_add_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256::<1>(l));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
        acc.add_no_min(h2f(b.d), a.d(), _mm_cvtsi128_si32(s));
    }
    acc.finish()
}

fn rows_avx2(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockIQ4_XS, BlockQ8_K>(w, row_bytes, x, out.len());
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: `kernel` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified that row `r` holds `nb` blocks and `x` `nb` activation blocks.
        *o = unsafe { dot_avx2(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
    }
}

/// The scalar tiled reference for every row (activations that fail [`acts_plain`]).
fn tiled_rows_scalar(w: &[u8], row_bytes: usize, xa: &[BlockQ8_K], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockIQ4_XS>(&w[r * row_bytes..(r + 1) * row_bytes])
            .expect("weight row is whole blocks");
        *o = scalar::iq4_xs::iq4_xs_tiled(wr, xa);
    }
}

fn tiled_rows_avx2(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<BlockIQ4_XS, BlockQ8_K>(w, row_bytes, x, out.len());
    let xa = view::<BlockQ8_K>(x).expect("activation row is whole blocks");
    if !acts_plain(xa) {
        return tiled_rows_scalar(w, row_bytes, xa, out);
    }
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: as in `rows_avx2` (`tiled_kernels` checks the same features).
        *o = unsafe { tiled_dot_avx2(w[r * row_bytes..].as_ptr().cast(), xa.as_ptr(), nb) };
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512

/// A Q8_K block laid out for the AVX-512 kernels: `y[k]`, 128-bit lane `j`, holds the 16
/// activations that meet nibble vector `k` there: sub-block `j + 4·(k / 2)`, elements `0..16`
/// for even `k` (low nibbles) and `16..32` for odd `k` (high nibbles).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Prep {
    y: [[i8; 64]; 4],
    d: f32,
}

/// Lays out the activation blocks `x` for the AVX-512 kernels.
fn prepare(x: &[BlockQ8_K]) -> Vec<Prep> {
    x.iter()
        .map(|a| {
            let mut p = Prep {
                y: [[0; 64]; 4],
                d: a.d(),
            };
            for (k, y) in p.y.iter_mut().enumerate() {
                for j in 0..4 {
                    let src = 32 * (j + 4 * (k / 2)) + 16 * (k % 2);
                    y[16 * j..16 * j + 16].copy_from_slice(&a.qs[src..src + 16]);
                }
            }
            p
        })
        .collect()
}

/// Constants of the AVX-512 block step.
#[derive(Clone, Copy)]
struct Consts512 {
    /// `|IQ4_NL_VALUES|` in every 128-bit lane.
    abs_lut: __m512i,
    /// `vpermw` indices into [`scale_words_pair_512`]'s words: word `j` (sub-blocks 0..4) /
    /// `4 + j` (4..8) in 128-bit lane `j`, of the first block (`picks[0..2]`) and of the
    /// second (`picks[2..4]`).
    picks: [__m512i; 4],
    /// `vpermw` indices of the tiled kernels: word `2p` in lanes 0, 1, `2p + 1` in 2, 3.
    picks_t: [__m512i; 4],
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn consts_512() -> Consts512 {
    let abs: [u8; 16] = IQ4_NL_VALUES.map(|v| v.unsigned_abs());
    let pick = |h: i16| {
        let idx: [i16; 32] = std::array::from_fn(|w| h + (w / 8) as i16);
        // SAFETY: reads the 64 bytes of `idx`.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    };
    Consts512 {
        // SAFETY: reads the 16 bytes of `abs`.
        abs_lut: _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(abs.as_ptr().cast()) }),
        picks: [pick(0), pick(4), pick(8), pick(12)],
        picks_t: [0, 2, 4, 6].map(|p| {
            let idx: [i16; 32] = std::array::from_fn(|w| p + (w / 16) as i16);
            // SAFETY: reads the 64 bytes of `idx`.
            unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
        }),
    }
}

/// A weight block unpacked for [`fold_512`]: per nibble vector `k` (see [`Prep`]) `|q|` and the
/// mask of its negative values, and the sub-block scales as words for vectors 0, 1 (`sa`:
/// sub-block `j` in 128-bit lane `j`) and 2, 3 (`sb`: sub-block `4 + j`).
#[derive(Clone, Copy)]
struct Unpacked {
    aq: [__m512i; 4],
    neg: [__mmask64; 4],
    sa: __m512i,
    sb: __m512i,
}

/// Unpacks block `b` for [`fold_512`]: the nibbles masked out and looked up by `vpshufb`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn unpack_512(b: &BlockIQ4_XS, c: &Consts512, sc: __m512i, h: usize) -> Unpacked {
    let m4 = _mm512_set1_epi8(0x0F);
    // SAFETY: reads the 128 bytes of `b.qs`.
    let v = [0, 1].map(|h| unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * h).cast()) });
    let n = [
        _mm512_and_si512(v[0], m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v[0]), m4),
        _mm512_and_si512(v[1], m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v[1]), m4),
    ];
    unpacked(c, sc, h, v, n.map(|n| _mm512_shuffle_epi8(c.abs_lut, n)))
}

/// [`unpack_512`] with AVX-512 VBMI's `vpermb`, which reads six index bits: the table repeats
/// every 16 bytes, so the bits above each nibble need no mask (two instructions fewer per
/// vector; one thread, 8192² from DRAM on Zen 4: ~7.5 ns per block against ~8.1).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2")]
fn unpack_512_vbmi(b: &BlockIQ4_XS, c: &Consts512, sc: __m512i, h: usize) -> Unpacked {
    // SAFETY: reads the 128 bytes of `b.qs`.
    let v = [0, 1].map(|h| unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * h).cast()) });
    let n = [
        v[0],
        _mm512_srli_epi16::<4>(v[0]),
        v[1],
        _mm512_srli_epi16::<4>(v[1]),
    ];
    unpacked(
        c,
        sc,
        h,
        v,
        n.map(|n| _mm512_permutexvar_epi8(n, c.abs_lut)),
    )
}

/// The rest of an [`Unpacked`] block: the negative values' masks from the raw bytes `v` of
/// its `qs` (indices 0..8: bit 3 of the low nibble, bit 7 of the byte for the high) and the
/// scales, from block `h` (0 or 1) of the [`scale_words_pair_512`] words `sc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn unpacked(c: &Consts512, sc: __m512i, h: usize, v: [__m512i; 2], aq: [__m512i; 4]) -> Unpacked {
    let (b3, b7) = (_mm512_set1_epi8(0x08), _mm512_set1_epi8(-128));
    Unpacked {
        aq,
        neg: [
            _mm512_testn_epi8_mask(v[0], b3),
            _mm512_testn_epi8_mask(v[0], b7),
            _mm512_testn_epi8_mask(v[1], b3),
            _mm512_testn_epi8_mask(v[1], b7),
        ],
        sa: _mm512_permutexvar_epi16(c.picks[2 * h], sc),
        sb: _mm512_permutexvar_epi16(c.picks[2 * h + 1], sc),
    }
}

/// The exact lanes of an unpacked block · `a` in the `vec_dot` layout, folded once:
/// `[L0+L2, L1+L3, H0+H2, H1+H3]` (128-bit parts), where the sum of the first two parts is
/// `vec_dot` lanes 0..4 and the sum of the last two lanes 4..8.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn fold_512(u: &Unpacked, a: &Prep) -> __m512i {
    // SAFETY: reads the 256 bytes of `a.y` (64-byte aligned: `Prep` is `align(64)`).
    let y = [0, 1, 2, 3].map(|k| unsafe { _mm512_load_si512(a.y[k].as_ptr().cast()) });
    let zero = _mm512_setzero_si512();
    let p: [__m512i; 4] = std::array::from_fn(|k| {
        let sy = _mm512_mask_sub_epi8(y[k], u.neg[k], zero, y[k]);
        _mm512_maddubs_epi16(u.aq[k], sy)
    });
    let l = _mm512_dpwssd_epi32(_mm512_madd_epi16(p[0], u.sa), p[2], u.sb);
    let h = _mm512_dpwssd_epi32(_mm512_madd_epi16(p[1], u.sa), p[3], u.sb);
    _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0x44>(l, h),
        _mm512_shuffle_i64x2::<0xEE>(l, h),
    )
}

/// Two blocks' [`fold_512`] vectors to `[lanes of the first | lanes of the second]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_512(t0: __m512i, t1: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0x88>(t0, t1),
        _mm512_shuffle_i64x2::<0xDD>(t0, t1),
    )
}

/// How far ahead of the block being read [`tiled4_512`] prefetches each of its four rows.
const PF_BYTES: usize = 4096;

/// Prefetches the lines of block `i` of `w`, [`PF_BYTES`] ahead.
#[inline(always)]
fn prefetch(w: *const BlockIQ4_XS, i: usize) {
    let at = w.wrapping_add(i).cast::<i8>().wrapping_add(PF_BYTES);
    for l in 0..3 {
        // SAFETY: prefetching has no memory effects and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64 * l)) };
    }
}

/// Defines one row's `vec_dot`-order kernel `$dot` over blocks unpacked by `$unpack` (two
/// blocks per step, each block's lanes accumulated into one eight-lane register in block
/// order), and `$rows`, its rows driver, compiled for the features `$feat`.
macro_rules! dot_512_with {
    ($dot:ident, $rows:ident, $unpack:ident, $feat:literal) => {
        /// One row in the `vec_dot` order (see [`dot_512_with`]).
        ///
        /// # Safety
        /// The CPU has the features this function is compiled for; `w` points to `x.len()`
        /// readable blocks.
        #[target_feature(enable = $feat)]
        unsafe fn $dot(w: *const BlockIQ4_XS, x: &[Prep], c: &Consts512) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let nb = x.len();
            let mut i = 0;
            while i < nb {
                // SAFETY: `i < nb` (caller).
                let b0 = unsafe { &*w.add(i) };
                // The pair's second block (the first again at an odd end).
                let b1 = if i + 1 < nb {
                    // SAFETY: `i + 1 < nb` (caller).
                    unsafe { &*w.add(i + 1) }
                } else {
                    b0
                };
                let sc = _mm512_castsi256_si512(scale_words_pair_512(b0, b1));
                let t0 = fold_512(&$unpack(b0, c, sc, 0), &x[i]);
                let d0 = h2f(b0.d) * x[i].d;
                if i + 1 < nb {
                    let p = pair_512(t0, fold_512(&$unpack(b1, c, sc, 1), &x[i + 1]));
                    let d1 = h2f(b1.d) * x[i + 1].d;
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(d0),
                        _mm256_cvtepi32_ps(_mm512_castsi512_si256(p)),
                        acc,
                    );
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(d1),
                        _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64::<1>(p)),
                        acc,
                    );
                } else {
                    let p = pair_512(t0, _mm512_setzero_si512());
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(d0),
                        _mm256_cvtepi32_ps(_mm512_castsi512_si256(p)),
                        acc,
                    );
                }
                i += 2;
            }
            reduce8(acc)
        }

        fn $rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            check_rows::<BlockIQ4_XS, BlockQ8_K>(w, row_bytes, x, out.len());
            let xa = view::<BlockQ8_K>(x).expect("activation row is whole blocks");
            let prep = prepare(xa);
            // SAFETY: `kernel` hands this function out only when the CPU has AVX-512 F/BW.
            let c = unsafe { consts_512() };
            for (r, o) in out.iter_mut().enumerate() {
                // SAFETY: `kernel` hands this function out only when the CPU has the features
                // `$dot` is compiled for; `check_rows` verified that every row holds
                // `prep.len()` blocks.
                *o = unsafe { $dot(w[r * row_bytes..].as_ptr().cast(), &prep, &c) };
            }
        }
    };
}

dot_512_with!(
    dot_512,
    rows_512,
    unpack_512,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
);
dot_512_with!(
    dot_512_vbmi,
    rows_512_vbmi,
    unpack_512_vbmi,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c"
);

/// Four little-endian u16 as the bytes of a u64.
#[inline(always)]
fn bytemuck_u16x4(d: [u16; 4]) -> [u8; 8] {
    let mut b = [0u8; 8];
    for (i, v) in d.iter().enumerate() {
        b[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Runs `f` on the rows of `out` four at a time; a last group of fewer rows repeats its last
/// row (those results are dropped).
#[inline(always)]
fn by_fours(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    mut f: impl FnMut(usize, [*const BlockIQ4_XS; 4], usize),
) {
    let mut r = 0;
    while r < rows {
        let k = (rows - r).min(4);
        let p = std::array::from_fn(|j| w[(r + j.min(k - 1)) * row_bytes..].as_ptr().cast());
        f(r, p, k);
        r += k;
    }
}

/// A weight block unpacked for the tiled kernels ([`total_vec_512`]), in the activations'
/// own order: vector `p` holds sub-blocks `2p` (128-bit lanes 0, 1: elements 0..16, 16..32) and
/// `2p + 1` (lanes 2, 3), as `|q|`, the mask of the negative values, and the scales as words.
#[derive(Clone, Copy)]
struct UnpackedT {
    aq: [__m512i; 4],
    neg: [__mmask64; 4],
    sc: [__m512i; 4],
}

/// Unpacks block `b` for [`total_vec_512`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn unpack_t_512(b: &BlockIQ4_XS, c: &Consts512) -> UnpackedT {
    let m4 = _mm512_set1_epi8(0x0F);
    let b3 = _mm512_set1_epi8(0x08);
    // SAFETY: reads the 128 bytes of `b.qs`.
    let v = [0, 1].map(|h| unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * h).cast()) });
    // `[qs_2p, qs_2p, qs_2p+1, qs_2p+1]`, the high nibbles shifted down in lanes 1 and 3.
    let z = [
        _mm512_shuffle_i64x2::<0x50>(v[0], v[0]),
        _mm512_shuffle_i64x2::<0xFA>(v[0], v[0]),
        _mm512_shuffle_i64x2::<0x50>(v[1], v[1]),
        _mm512_shuffle_i64x2::<0xFA>(v[1], v[1]),
    ];
    let n = z.map(|z| _mm512_and_si512(_mm512_mask_srli_epi16::<4>(z, 0xFF00_FF00, z), m4));
    let sw = _mm512_castsi128_si512(scale_words_512(b));
    UnpackedT {
        aq: n.map(|n| _mm512_shuffle_epi8(c.abs_lut, n)),
        neg: n.map(|n| _mm512_testn_epi8_mask(n, b3)),
        sc: c.picks_t.map(|p| _mm512_permutexvar_epi16(p, sw)),
    }
}

/// Sixteen i32 lanes whose sum is the tiled order's `S1` of an unpacked block · `a`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn total_vec_512(u: &UnpackedT, a: &BlockQ8_K) -> __m512i {
    let zero = _mm512_setzero_si512();
    let mut acc = zero;
    for k in 0..4 {
        // SAFETY: bytes `64k..64k + 64` of `a.qs` (256 bytes).
        let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * k).cast()) };
        let sy = _mm512_mask_sub_epi8(y, u.neg[k], zero, y);
        acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u.aq[k], sy), u.sc[k]);
    }
    acc
}

/// The sums of four vectors of sixteen i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn totals4_512(t: [__m512i; 4]) -> __m128i {
    let half =
        |v: __m512i| _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
    let pair = |a: __m256i, b: __m256i| {
        _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    let (a01, a23) = (pair(half(t[0]), half(t[1])), pair(half(t[2]), half(t[3])));
    let s = _mm256_add_epi32(
        _mm256_unpacklo_epi64(a01, a23),
        _mm256_unpackhi_epi64(a01, a23),
    );
    _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
}

/// Four rows in the tiled order for activations that pass [`acts_plain`], the four rows'
/// accumulators in the lanes of one register.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `x.len()` readable
/// blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tiled4_512(w: [*const BlockIQ4_XS; 4], x: &[BlockQ8_K]) -> [f32; 4] {
    let c = consts_512();
    let mut acc = _mm_setzero_ps();
    for (i, a) in x.iter().enumerate() {
        // SAFETY: block `i` < `x.len()` of each row (caller).
        let b: [&BlockIQ4_XS; 4] = std::array::from_fn(|r| unsafe { &*w[r].add(i) });
        for &wr in &w {
            prefetch(wr, i);
        }
        let s1 = totals4_512(std::array::from_fn(|r| {
            total_vec_512(&unpack_t_512(b[r], &c), a)
        }));
        let d = bytemuck_u16x4(b.map(|b| u16::from_le_bytes(b.d)));
        let dw = _mm_cvtph_ps(_mm_set_epi64x(0, i64::from_le_bytes(d)));
        let r = _mm_mul_ps(_mm_cvtepi32_ps(s1), dw);
        acc = _mm_fmadd_ps(r, _mm_set1_ps(a.d()), acc);
    }
    let mut out = [0f32; 4];
    // SAFETY: writes the 16 bytes of `out`.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

fn tiled_rows_512(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    check_rows::<BlockIQ4_XS, BlockQ8_K>(w, row_bytes, x, out.len());
    let xa = view::<BlockQ8_K>(x).expect("activation row is whole blocks");
    if !acts_plain(xa) {
        return tiled_rows_scalar(w, row_bytes, xa, out);
    }
    by_fours(w, row_bytes, out.len(), |r, p, k| {
        // SAFETY: `tiled_kernels` hands this function out only when the CPU has AVX-512
        // F/BW/VL/VNNI and AVX2/FMA/F16C; `check_rows` verified that every row holds
        // `xa.len()` blocks.
        let res = unsafe { tiled4_512(p, xa) };
        out[r..r + k].copy_from_slice(&res[..k]);
    });
}

/// One row, four tokens, in the tiled order: each weight block is unpacked once for the four
/// tokens.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; `w` points to `x[0].len()` readable
/// blocks and every `x[t]` has that length.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tiled_tokens4_512(w: *const BlockIQ4_XS, x: [&[BlockQ8_K]; 4]) -> [f32; 4] {
    let c = consts_512();
    let mut acc = _mm_setzero_ps();
    for i in 0..x[0].len() {
        // SAFETY: block `i` < `x[0].len()` of the row (caller).
        let b = unsafe { &*w.add(i) };
        let u = unpack_t_512(b, &c);
        let s1 = totals4_512(std::array::from_fn(|t| total_vec_512(&u, &x[t][i])));
        let r = _mm_mul_ps(_mm_cvtepi32_ps(s1), _mm_set1_ps(h2f(b.d)));
        let dx = _mm_setr_ps(x[0][i].d(), x[1][i].d(), x[2][i].d(), x[3][i].d());
        acc = _mm_fmadd_ps(r, dx, acc);
    }
    let mut out = [0f32; 4];
    // SAFETY: writes the 16 bytes of `out`.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), acc) };
    out
}

fn tiled_rows4_512(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    let rows = out[0].len();
    assert!(
        out.iter().all(|o| o.len() == rows),
        "outputs differ in length"
    );
    for xt in &x {
        check_rows::<BlockIQ4_XS, BlockQ8_K>(w, row_bytes, xt, rows);
    }
    let xa = x.map(|xt| view::<BlockQ8_K>(xt).expect("activation row is whole blocks"));
    let mut out = out;
    if !xa.iter().all(|a| acts_plain(a)) {
        for (t, o) in out.iter_mut().enumerate() {
            tiled_rows_scalar(w, row_bytes, xa[t], o);
        }
        return;
    }
    for r in 0..rows {
        // SAFETY: as in `tiled_rows_512`; `check_rows` verified row `r` and every token's row.
        let res = unsafe { tiled_tokens4_512(w[r * row_bytes..].as_ptr().cast(), xa) };
        for t in 0..4 {
            out[t][r] = res[t];
        }
    }
}

#[cfg(test)]
mod tests {
    //! Both AVX-512 `vec_dot` kernels (the public API takes one per CPU) against the scalar
    //! reference, on activations with many −128 quants (whose sign trick wraps).

    use super::*;
    use crate::simd::test_util::{acts, bytes};

    #[test]
    fn vec_dot_512_both_lookups() {
        if !SimdLevel::Avx512.is_available() {
            return;
        }
        let vbmi = is_x86_feature_detected!("avx512vbmi");
        let (nb, rows) = (3, 5);
        let size = std::mem::size_of::<BlockIQ4_XS>();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        for seed in 0..20u64 {
            let mut wb = bytes(rows * nb * size, seed);
            for b in wb.chunks_exact_mut(size) {
                b[..2].copy_from_slice(&[0x00, 0x3C]); // f16 1.0
            }
            let xb = acts(nb, 1000 + seed);
            let x = view::<BlockQ8_K>(&xb).unwrap();
            let want: Vec<u32> = wb
                .chunks_exact(nb * size)
                .map(|r| scalar::iq4_xs::iq4_xs(view(r).unwrap(), x).to_bits())
                .collect();
            let mut got = vec![0f32; rows];
            rows_512(&wb, nb * size, &xb, &mut got);
            assert_eq!(bits(&got), want, "vpshufb, seed {seed}");
            if vbmi {
                rows_512_vbmi(&wb, nb * size, &xb, &mut got);
                assert_eq!(bits(&got), want, "vpermb, seed {seed}");
            }
        }
    }
}

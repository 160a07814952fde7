//! IQ1_S and IQ1_M · Q8_K on x86 (AVX2/FMA/F16C), bit-identical to the scalar oracles in
//! [`scalar::iq1`](crate::scalar::iq1).
//!
//! - `vec_dot` order (`ggml_vec_dot_iq1_{s,m}_q8_K`, AVX2 branch): per 32-element sub-block
//!   four grid rows gathered into one vector, `vpmaddubsw(vpsignb(g, g), vpsignb(x, g))` (the
//!   same instructions as llama.cpp, so even an activation of `−128`, which llama.cpp's Q8_K
//!   quantizer never writes, gives llama.cpp's `−128 · (−1) = −128`), `vpmaddwd` by
//!   the sub-block scale, eight `i32` lanes per block, one FMA per lane and block; IQ1_S's `δ`
//!   term from the Q8_K block sums in one float, IQ1_M's from `vpsignb(x, δ)` in a second lane
//!   set. The AVX-512 level uses these kernels too (llama.cpp has no AVX-512 branch for them).
//! - tiled order (`n >= 8` tokens): each weight as the unsigned byte `u = 8g + δ + 9`
//!   (`0..=18`), `vpmaddubsw(u, x)` is exact, and `S1 = Σ_sub ls · (Σ u·x − 9 · Σ x)` with
//!   `Σ x` from the block sums; then [`AccTiled`] per block. One-token and four-token kernels
//!   (the four-token one unpacks each weight block once for all four tokens).

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, hsum_i32x8, reduce8};
use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ1_M, BlockIQ1_S, BlockQ8_K};
use crate::grids::IQ1S;
use crate::scalar::iq1::iq1m_scale_bits;
use crate::scalar::tiled::AccTiled;

/// Whether the AVX2 kernels may run at most at `level` on this CPU.
fn avx2_ok(level: SimdLevel) -> bool {
    level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available()
}

/// The `vec_dot`-order kernel for `ty` at most at `level`, where there is one.
pub(super) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    if !avx2_ok(level) {
        return None;
    }
    match ty {
        GgmlType::IQ1_S => Some(rows_s as RowsFn),
        GgmlType::IQ1_M => Some(rows_m as RowsFn),
        _ => None,
    }
}

/// The tiled-order kernels (one token, four tokens) for `ty` at most at `level`, where there
/// are some.
pub(super) fn tiled_kernels(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if !avx2_ok(level) {
        return None;
    }
    match ty {
        GgmlType::IQ1_S => Some((tiled_rows_s as RowsFn, Some(tiled_rows4_s as Rows4Fn))),
        GgmlType::IQ1_M => Some((tiled_rows_m as RowsFn, Some(tiled_rows4_m as Rows4Fn))),
        _ => None,
    }
}

/// The grid rows of indices `idx[0..4]` as one vector (row `k` in bytes `8k..8k + 8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grid4(idx: &[u32]) -> __m256i {
    let row = |k: usize| IQ1S[idx[k] as usize & 2047] as i64;
    _mm256_set_epi64x(row(3), row(2), row(1), row(0))
}

/// The 32 activations of sub-block `ib`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_x(a: &BlockQ8_K, ib: usize) -> __m256i {
    let q = &a.qs[32 * ib..32 * ib + 32];
    // SAFETY: `q` holds 32 bytes.
    unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
}

/// The 16 block sums of `a` as 16-bit lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_bsums(a: &BlockQ8_K) -> __m256i {
    // SAFETY: `bsums` holds 32 bytes.
    unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) }
}

/// llama.cpp's `mul_add_epi8`: `|g| · sign(x, g)` in 16-bit pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sign(g: __m256i, x: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(g, g), _mm256_sign_epi8(x, g))
}

/// Per sub-block `ib`, shuffle patterns loaded from memory (computing them in registers would
/// cost shuffle-port work in the inner loops): [`dword`]'s `vpermd` indices, [`m_scales`]' and
/// [`m_groups`]' `vpshufb` bytes.
struct Patterns {
    /// `ib` in every dword.
    dword: [[u32; 8]; 8],
    /// Bytes `2ib`, `2ib + 1` repeated.
    scales: [[u8; 32]; 8],
    /// Byte `2ib` 8 times, then `2ib + 1` 8 times, in each 128-bit half.
    groups: [[u8; 32]; 8],
}

/// The shuffle patterns.
static PATTERNS: Patterns = {
    let mut p = Patterns {
        dword: [[0; 8]; 8],
        scales: [[0; 32]; 8],
        groups: [[0; 32]; 8],
    };
    let mut ib = 0;
    while ib < 8 {
        let mut k = 0;
        while k < 32 {
            if k < 8 {
                p.dword[ib][k] = ib as u32;
            }
            p.scales[ib][k] = (2 * ib + k % 2) as u8;
            p.groups[ib][k] = (2 * ib + (k % 16) / 8) as u8;
            k += 1;
        }
        ib += 1;
    }
    p
};

/// Dword `ib` of `v` in every dword.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dword(v: __m256i, ib: usize) -> __m256i {
    // SAFETY: the pattern holds 32 bytes.
    let idx = unsafe { _mm256_loadu_si256(PATTERNS.dword[ib].as_ptr().cast()) };
    _mm256_permutevar8x32_epi32(v, idx)
}

/// The 16-bit scale lanes of IQ1_M sub-block `ib` from [`Unpacked::ls`] (IQ1_M layout): the
/// low 128 bits its first 16-group's scale, the high its second's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn m_scales(ls: __m256i, ib: usize) -> __m256i {
    // SAFETY: the pattern holds 32 bytes.
    let pat = unsafe { _mm256_loadu_si256(PATTERNS.scales[ib].as_ptr().cast()) };
    _mm256_shuffle_epi8(ls, pat)
}

/// One byte of [`Unpacked::neg`] (IQ1_M layout) per 8-group of sub-block `ib`, each repeated
/// 8 times.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn m_groups(v: __m256i, ib: usize) -> __m256i {
    // SAFETY: the pattern holds 32 bytes.
    let pat = unsafe { _mm256_loadu_si256(PATTERNS.groups[ib].as_ptr().cast()) };
    _mm256_shuffle_epi8(v, pat)
}

/// The 8 bytes at `p`, zero-extended to 8 dwords.
///
/// # Safety
/// `p` is readable for 8 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes8(p: *const u8) -> __m256i {
    // SAFETY: caller.
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast()) })
}

/// An IQ1 block's fields as vectors, laid out so that one shuffle gives a sub-block's lanes.
struct Unpacked {
    /// Grid indices, 8 weights each.
    idx: [u32; 32],
    /// The odd scales `2s + 1` as 16-bit words. IQ1_S: dword `ib` holds sub-block `ib`'s
    /// twice. IQ1_M: word `ib` of the low 128 bits the first 16-group of sub-block `ib`, of
    /// the high 128 bits the second (see [`m_scales`]).
    ls: __m256i,
    /// Negative-`δ` masks (0xff bytes). IQ1_S: dword `ib` for sub-block `ib`. IQ1_M: bytes
    /// `2ib`, `2ib + 1` of the low 128 bits the 8-groups `4ib`, `4ib + 1`, of the high 128
    /// bits `4ib + 2`, `4ib + 3` (see [`m_groups`]).
    neg: __m256i,
}

/// Unpacks an IQ1_S block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_s(b: &BlockIQ1_S) -> Unpacked {
    // SAFETY: `qh` holds 16 bytes.
    let h = _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(b.qh.as_ptr().cast()) });
    let mut idx = [0u32; 32];
    let shifts = _mm256_setr_epi32(0, 3, 6, 9, 0, 3, 6, 9);
    for k in 0..4 {
        let pick = _mm256_setr_epi32(
            2 * k,
            2 * k,
            2 * k,
            2 * k,
            2 * k + 1,
            2 * k + 1,
            2 * k + 1,
            2 * k + 1,
        );
        let hk = _mm256_permutevar8x32_epi32(h, pick);
        let hi = _mm256_and_si256(_mm256_srlv_epi32(hk, shifts), _mm256_set1_epi32(7));
        // SAFETY: `qs` holds 32 bytes, `8k + 8 <= 32`.
        let lo = unsafe { bytes8(b.qs.as_ptr().add(8 * k as usize)) };
        let v = _mm256_or_si256(lo, _mm256_slli_epi32::<8>(hi));
        // SAFETY: writes 32 bytes of `idx` from `8k`.
        unsafe { _mm256_storeu_si256(idx.as_mut_ptr().add(8 * k as usize).cast(), v) };
    }
    let s = _mm256_and_si256(_mm256_srli_epi32::<12>(h), _mm256_set1_epi32(7));
    let s = _mm256_add_epi32(_mm256_slli_epi32::<1>(s), _mm256_set1_epi32(1));
    Unpacked {
        idx,
        ls: _mm256_or_si256(s, _mm256_slli_epi32::<16>(s)),
        neg: _mm256_srai_epi32::<31>(_mm256_slli_epi32::<16>(h)),
    }
}

/// Unpacks an IQ1_M block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_m(b: &BlockIQ1_M) -> Unpacked {
    // SAFETY: `qh` holds 16 bytes.
    let qh = unsafe { _mm_loadu_si128(b.qh.as_ptr().cast()) };
    let dup = [
        _mm_shuffle_epi8(
            qh,
            _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
        ),
        _mm_shuffle_epi8(
            qh,
            _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15),
        ),
    ];
    let mut idx = [0u32; 32];
    let shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    for k in 0..4 {
        let src = dup[k / 2];
        let n = _mm256_cvtepu8_epi32(if k % 2 == 0 {
            src
        } else {
            _mm_srli_si128::<8>(src)
        });
        let hi = _mm256_and_si256(_mm256_srlv_epi32(n, shifts), _mm256_set1_epi32(7));
        // SAFETY: `qs` holds 32 bytes, `8k + 8 <= 32`.
        let lo = unsafe { bytes8(b.qs.as_ptr().add(8 * k)) };
        let v = _mm256_or_si256(lo, _mm256_slli_epi32::<8>(hi));
        // SAFETY: writes 32 bytes of `idx` from `8k`.
        unsafe { _mm256_storeu_si256(idx.as_mut_ptr().add(8 * k).cast(), v) };
    }
    // 8-groups 4ib, 4ib + 1 are the nibbles of qh byte 2ib; 4ib + 2, 4ib + 3 of byte 2ib + 1.
    let even = _mm_shuffle_epi8(
        qh,
        _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14),
    );
    let odd = _mm_shuffle_epi8(
        qh,
        _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15),
    );
    let bits = _mm256_and_si256(
        _mm256_set_m128i(odd, even),
        _mm256_set1_epi16(0x8008u16 as i16),
    );
    let zero = _mm256_cmpeq_epi8(bits, _mm256_setzero_si256());
    let neg = _mm256_xor_si256(zero, _mm256_set1_epi8(-1));
    // Scale words: sub-block ib reads word ib / 2 from bit 6(ib % 2).
    // SAFETY: `scales` holds 8 bytes.
    let sc = _mm256_cvtepu16_epi32(unsafe { _mm_loadl_epi64(b.scales.as_ptr().cast()) });
    let sc = _mm256_permutevar8x32_epi32(sc, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
    let sc = _mm256_srlv_epi32(sc, _mm256_setr_epi32(0, 6, 0, 6, 0, 6, 0, 6));
    let odd = |v: __m256i| {
        _mm256_add_epi32(
            _mm256_slli_epi32::<1>(_mm256_and_si256(v, _mm256_set1_epi32(7))),
            _mm256_set1_epi32(1),
        )
    };
    // Words: first groups of sub-blocks 0..4, second groups 0..4 | first 4..8, second 4..8.
    let packed = _mm256_packus_epi32(odd(sc), odd(_mm256_srli_epi32::<3>(sc)));
    Unpacked {
        idx,
        ls: _mm256_permute4x64_epi64::<0b11_01_10_00>(packed),
        neg,
    }
}

/// IQ1_S · Q8_K, `vec_dot` order.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_s(w: *const BlockIQ1_S, x: *const BlockQ8_K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc1 = 0f32;
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        let u = unpack_s(b);
        let mut sumi = _mm256_setzero_si256();
        for ib in 0..8 {
            let p = mul_sign(grid4(&u.idx[4 * ib..]), load_x(a, ib));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, dword(u.ls, ib)));
        }
        // ±(2s + 1) · (bsum_2ib + bsum_2ib+1), exact.
        let signed = _mm256_sub_epi16(_mm256_xor_si256(u.ls, u.neg), u.neg);
        let s1 = hsum_i32x8(_mm256_madd_epi16(load_bsums(a), signed));
        let d = a.d() * h2f(b.d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        acc1 = d.mul_add(s1 as f32, acc1);
    }
    reduce8(acc) + 0.125 * acc1
}

/// IQ1_M · Q8_K, `vec_dot` order.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_m(w: *const BlockIQ1_M, x: *const BlockQ8_K, nb: usize) -> f32 {
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let ones = _mm256_set1_epi8(1);
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        let u = unpack_m(b);
        // 0x01, or 0xff for a negative δ: `vpsignb`'s operand, as llama.cpp's.
        let delta = _mm256_or_si256(u.neg, ones);
        let mut sumi1 = _mm256_setzero_si256();
        let mut sumi2 = _mm256_setzero_si256();
        for ib in 0..8 {
            let y = load_x(a, ib);
            let sc = m_scales(u.ls, ib);
            let p1 = mul_sign(grid4(&u.idx[4 * ib..]), y);
            let p2 = _mm256_maddubs_epi16(ones, _mm256_sign_epi8(y, m_groups(delta, ib)));
            sumi1 = _mm256_add_epi32(sumi1, _mm256_madd_epi16(p1, sc));
            sumi2 = _mm256_add_epi32(sumi2, _mm256_madd_epi16(p2, sc));
        }
        let d = _mm256_set1_ps(a.d() * h2f(iq1m_scale_bits(b).to_le_bytes()));
        acc1 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi1), acc1);
        acc2 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi2), acc2);
    }
    reduce8(acc2).mul_add(0.125, reduce8(acc1))
}

/// A weight block unpacked for the tiled order: per 32-element sub-block the unsigned codes
/// `8g + δ + 9` and the 16-bit scale lanes (`2s + 1` for each element pair), the scales of
/// the 16 block sums times 9 (the bias correction), and `d_w = f16 · 0.125`.
struct Tiled {
    /// Codes per sub-block.
    u: [__m256i; 8],
    /// Scale per element pair, per sub-block.
    sc: [__m256i; 8],
    /// `9 · (2s + 1)` for each 16-element block sum.
    sc9: __m256i,
    /// The weight scale of the tiled order.
    d: f32,
}

/// IQ1_M's scales from [`Unpacked::ls`] as 16-bit words in group order (the layout of the
/// Q8_K block sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn m_pairs(ls: __m256i) -> __m256i {
    // [first 0..8 | second 0..8] → interleave within 128 bits after splitting the lanes.
    let first = _mm256_castsi256_si128(ls);
    let second = _mm256_extracti128_si256::<1>(ls);
    _mm256_set_m128i(
        _mm_unpackhi_epi16(first, second),
        _mm_unpacklo_epi16(first, second),
    )
}

/// The codes `8(g + 1) + (δ + 1)` of four grid rows, `dd` holding `δ + 1` per byte.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn codes(idx: &[u32], dd: __m256i) -> __m256i {
    let g1 = _mm256_add_epi8(grid4(idx), _mm256_set1_epi8(1)); // 0, 1, 2
    _mm256_add_epi8(_mm256_slli_epi16::<3>(g1), dd)
}

/// Unpacks an IQ1_S block for the tiled order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tiled_s(b: &BlockIQ1_S) -> Tiled {
    let u = unpack_s(b);
    let dd = _mm256_andnot_si256(u.neg, _mm256_set1_epi8(2));
    Tiled {
        u: std::array::from_fn(|ib| codes(&u.idx[4 * ib..], dword(dd, ib))),
        sc: std::array::from_fn(|ib| dword(u.ls, ib)),
        sc9: _mm256_mullo_epi16(u.ls, _mm256_set1_epi16(9)),
        d: h2f(b.d) * 0.125,
    }
}

/// Unpacks an IQ1_M block for the tiled order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tiled_m(b: &BlockIQ1_M) -> Tiled {
    let u = unpack_m(b);
    let dd = _mm256_andnot_si256(u.neg, _mm256_set1_epi8(2));
    Tiled {
        u: std::array::from_fn(|ib| codes(&u.idx[4 * ib..], m_groups(dd, ib))),
        sc: std::array::from_fn(|ib| m_scales(u.ls, ib)),
        sc9: _mm256_mullo_epi16(m_pairs(u.ls), _mm256_set1_epi16(9)),
        d: h2f(iq1m_scale_bits(b).to_le_bytes()) * 0.125,
    }
}

/// The exact tiled total `S1` of an unpacked block with one activation block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tiled_s1(t: &Tiled, a: &BlockQ8_K) -> i32 {
    // Σ ls·9·Σx per pair of 16-sums, subtracted lane by lane.
    let mut sumi = _mm256_sub_epi32(
        _mm256_setzero_si256(),
        _mm256_madd_epi16(load_bsums(a), t.sc9),
    );
    for ib in 0..8 {
        // u ≤ 18, |x| ≤ 128: pairs ≤ 4608, no saturation.
        let p = _mm256_maddubs_epi16(t.u[ib], load_x(a, ib));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, t.sc[ib]));
    }
    hsum_i32x8(sumi)
}

/// Defines the row drivers of one format.
macro_rules! rows {
    (
        $block:ty, $vec_dot:ident => $dot:ident,
        $tiled:ident => $tdot:ident, $tiled4:ident => $tdot4:ident, $unpack:ident
    ) => {
        /// One row, one token, tiled order.
        ///
        /// # Safety
        /// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $tdot(w: *const $block, x: *const BlockQ8_K, nb: usize) -> f32 {
            let mut acc = AccTiled::default();
            for i in 0..nb {
                // SAFETY: `i < nb` (caller).
                let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
                let t = $unpack(b);
                acc.add_no_min(t.d, a.d(), tiled_s1(&t, a));
            }
            acc.finish()
        }

        /// One row, four tokens, tiled order (each weight block unpacked once).
        ///
        /// # Safety
        /// AVX2/FMA/F16C available; `w` and each `x[k]` point to `nb` blocks.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $tdot4(w: *const $block, x: [*const BlockQ8_K; 4], nb: usize) -> [f32; 4] {
            let mut acc = [AccTiled::default(); 4];
            for i in 0..nb {
                // SAFETY: `i < nb` (caller).
                let t = $unpack(unsafe { &*w.add(i) });
                for (acc, x) in acc.iter_mut().zip(x) {
                    // SAFETY: `i < nb` (caller).
                    let a = unsafe { &*x.add(i) };
                    acc.add_no_min(t.d, a.d(), tiled_s1(&t, a));
                }
            }
            acc.map(AccTiled::finish)
        }

        /// `vec_dot`-order rows.
        fn $vec_dot(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let nb = check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            for (r, o) in out.iter_mut().enumerate() {
                // SAFETY: `kernel` hands this function out only when the CPU has
                // AVX2/FMA/F16C; `check_rows` verified that row `r` holds `nb` blocks and `x`
                // `nb` activation blocks.
                *o = unsafe { $dot(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
            }
        }

        /// Tiled-order rows, one token.
        fn $tiled(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let nb = check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            for (r, o) in out.iter_mut().enumerate() {
                // SAFETY: as in the `vec_dot` rows (`tiled_kernels` checks the CPU).
                *o = unsafe { $tdot(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
            }
        }

        /// Tiled-order rows, four tokens.
        fn $tiled4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
            let rows = out[0].len();
            let mut nb = 0;
            for (x, o) in x.iter().zip(&out) {
                assert_eq!(o.len(), rows, "four outputs of different lengths");
                nb = check_rows::<$block, BlockQ8_K>(w, row_bytes, x, rows);
            }
            let [o0, o1, o2, o3] = out;
            for r in 0..rows {
                // SAFETY: `tiled_kernels` checks the CPU; `check_rows` verified that row `r`
                // holds `nb` blocks and each `x[k]` `nb` activation blocks.
                let v = unsafe {
                    $tdot4(
                        w[r * row_bytes..].as_ptr().cast(),
                        x.map(|x| x.as_ptr().cast()),
                        nb,
                    )
                };
                (o0[r], o1[r], o2[r], o3[r]) = (v[0], v[1], v[2], v[3]);
            }
        }
    };
}

rows!(
    BlockIQ1_S, rows_s => dot_s,
    tiled_rows_s => tiled_dot_s, tiled_rows4_s => tiled_dot4_s, tiled_s
);
rows!(
    BlockIQ1_M, rows_m => dot_m,
    tiled_rows_m => tiled_dot_m, tiled_rows4_m => tiled_dot4_m, tiled_m
);

//! x86-64 AVX2 (+FMA, F16C) kernels: Q4_0, Q5_0, Q8_0 × Q8_0; Q3_K, Q5_K, Q6_K × Q8_K; F32 × F32
//! (Q4_K: `simd::q4k_x86`; Q2_K: `simd::q2k_x86`; F16 × F16 and BF16 × BF16: `simd::f16`,
//! `simd::bf16`).
//!
//! Plain algorithm (as the scalar reference): per block, the integer sum Σ q_w · q_x with the
//! sub-block scales, then `acc += (d_w · d_x) · isum` in floats.
//!
//! Optimizations, in order of effect:
//! 1. Four weight rows per pass over the activation row: each activation vector is loaded once
//!    per four rows, and the four row streams keep more memory requests in flight.
//! 2. Signed × signed bytes through `vpmaddubsw` (unsigned × signed): `|w|` times `y` with the
//!    sign of `w` moved onto `y` (`vpsignb`); pairs of i16 widened and summed by `vpmaddwd`.
//!    K-quant nibbles are unsigned already; their offsets are folded in with the Q8_K `bsums`.
//! 3. Integer sums stay per lane (8 × i32) until a block is done; one `cvt` and one FMA per
//!    block with the broadcast `d_w · d_x`; the eight float lanes are reduced once per row in
//!    the fixed tree of [`scalar::reduce8`](crate::scalar).
//!
//! Every integer sum is exact (no i16 saturation is possible for the value ranges of these
//! formats with activations in −127..=127); only the float summation order differs from the
//! scalar reference. Each row's arithmetic is the same whether it runs in a group of four or
//! alone, so results do not depend on how rows are grouped.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::{as_f32, check_rows, RowsFn, SimdLevel};
use crate::blocks::{
    q3k_scales, BlockIQ4_NL, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1,
    BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, IQ4_NL_VALUES,
};
use crate::scalar::tiled::AccTiled;

/// The AVX2 kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    if !SimdLevel::Avx2.is_available() {
        return None;
    }
    Some(match ty {
        GgmlType::Q8_0 => q0_rows::<BlockQ8_0>,
        GgmlType::Q4_0 => q0_rows::<BlockQ4_0>,
        GgmlType::Q5_0 => q0_rows::<BlockQ5_0>,
        GgmlType::IQ4_NL => q0_rows::<BlockIQ4_NL>,
        GgmlType::Q6_K => q6_k_rows,
        GgmlType::F32 => f32_rows,
        GgmlType::Q4_1 => q4_1_rows,
        GgmlType::Q5_1 => q5_1_rows,
        GgmlType::Q3_K => q3_k_rows,
        GgmlType::Q5_K => q5_k_rows,
        _ => return None,
    })
}

/// f16 bits → f32 with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn h2f(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32),
    ))
}

/// Sum of 8 f32 lanes in the fixed tree `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn reduce8(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)); // l0+l4 …
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4)); // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
    _mm_cvtss_f32(s1)
}

/// Sum of four i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_i32x4(v: __m128i) -> i32 {
    let s = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<1>(s)))
}

/// Sum of eight i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_i32x8(v: __m256i) -> i32 {
    hsum_i32x4(_mm_add_epi32(
        _mm256_castsi256_si128(v),
        _mm256_extracti128_si256::<1>(v),
    ))
}

/// Σ over the 32 bytes of signed `w` · signed `y`, as 8 × i32 (`|y| ≤ 127`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_i8(w: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Software prefetch distance in blocks: far enough ahead to cover DRAM latency at the rate a
/// row is consumed, near enough to stay in L1/L2.
pub(super) const PF_BLOCKS: usize = 8;

/// Prefetches block `i + PF_BLOCKS` of the row at `p` (every cache line it may touch).
/// `wrapping_add` keeps the address computation defined past the end; a prefetch never faults.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn prefetch_ahead<B>(p: *const B, i: usize) {
    let a = p.wrapping_add(i + PF_BLOCKS).cast::<i8>();
    let mut off = 0;
    while off < std::mem::size_of::<B>() + 63 {
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(off));
        off += 64;
    }
}

/// The 256 activation quants of a Q8_K block as eight vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_y8(qs: &[i8; 256]) -> [__m256i; 8] {
    let p = qs.as_ptr();
    // SAFETY: eight 32-byte loads at offsets 0, 32, …, 224 of the 256-byte array.
    unsafe {
        [
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(32).cast()),
            _mm256_loadu_si256(p.add(64).cast()),
            _mm256_loadu_si256(p.add(96).cast()),
            _mm256_loadu_si256(p.add(128).cast()),
            _mm256_loadu_si256(p.add(160).cast()),
            _mm256_loadu_si256(p.add(192).cast()),
            _mm256_loadu_si256(p.add(224).cast()),
        ]
    }
}

/// Runs `body` over the rows in groups of four, then one at a time.
macro_rules! by_rows {
    ($w:expr, $row_bytes:expr, $out:expr, |$ptrs:ident: [$n:literal]| $body:expr, |$ptr1:ident: [1]| $body1:expr) => {{
        let rows = $out.len();
        let mut r = 0;
        while r + 4 <= rows {
            let $ptrs: [*const u8; 4] =
                std::array::from_fn(|i| $w[(r + i) * $row_bytes..].as_ptr());
            let res: [f32; 4] = $body;
            $out[r..r + 4].copy_from_slice(&res);
            r += 4;
        }
        while r < rows {
            let $ptr1: [*const u8; 1] = [$w[r * $row_bytes..].as_ptr()];
            let res: [f32; 1] = $body1;
            $out[r] = res[0];
            r += 1;
        }
    }};
}

/// Defines the safe row kernel `$name` over `$inner::<N>` for weight blocks `$wb` and
/// activation blocks `$ab`.
macro_rules! rows_kernel {
    ($name:ident, $inner:ident, $wb:ty, $ab:ty) => {
        fn $name(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let nb = check_rows::<$wb, $ab>(w, row_bytes, x, out.len());
            by_rows!(w, row_bytes, out,
                // SAFETY: this module's `kernel` hands this function out only when the CPU has
                // every feature `$inner` enables; `check_rows` verified every row holds `nb` blocks and `x` the
                // matching activation blocks, which is all `$inner` reads.
                |p: [4]| unsafe { $inner::<4>(p.map(|p| p.cast::<$wb>()), x.as_ptr().cast::<$ab>(), nb) },
                // SAFETY: as above.
                |p: [1]| unsafe { $inner::<1>(p.map(|p| p.cast::<$wb>()), x.as_ptr().cast::<$ab>(), nb) })
        }
    };
}
pub(super) use by_rows;

rows_kernel!(q6_k_rows, q6_k_dot, BlockQ6_K, BlockQ8_K);
rows_kernel!(q6_k_tiled_rows, q6_k_tiled_dot, BlockQ6_K, BlockQ8_K);

/// A format multiplied with Q8_0 activations (Q8_0, Q5_0, Q4_0, IQ4_NL) as the AVX2-level
/// kernels unpack a block: its 32 quants as bytes, either the signed quants (`OFF = 0`, the
/// sign form) or the quants plus `OFF` as unsigned bytes of at most 31 (the offset form). The
/// one-token kernel here ([`q0_dot`]), the AVX2 batch kernel (`avx2_q0`) and the AVX-512
/// kernels' 256-bit paths (`avx512_q0`) all unpack through it.
pub(super) trait Q0Avx2: crate::blocks::Block {
    /// The offset form's `OFF`, or 0 for the sign form.
    const OFF: u8;
    /// The quants: `q + OFF` in the offset form, the signed `q` in the sign form.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available.
    unsafe fn quants(b: &Self) -> __m256i;
    /// The signed quants `q` whatever the form.
    ///
    /// # Safety
    /// As [`quants`](Q0Avx2::quants).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn signed(b: &Self) -> __m256i {
        // SAFETY: the features `quants` needs are enabled here.
        let q = unsafe { Self::quants(b) };
        if Self::OFF == 0 {
            q
        } else {
            _mm256_sub_epi8(q, _mm256_set1_epi8(Self::OFF as i8))
        }
    }
    /// The f16 scale.
    fn d(&self) -> [u8; 2];
}

impl Q0Avx2 for BlockQ8_0 {
    const OFF: u8 = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: &Self) -> __m256i {
        // SAFETY: reads the 32 bytes of `b.qs`.
        unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) }
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Q0Avx2 for BlockIQ4_NL {
    // The nibbles index the value table (`vpshufb`).
    const OFF: u8 = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: &Self) -> __m256i {
        // SAFETY: reads the 16 bytes of the table.
        let lut = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) };
        _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(lut), nibbles(&b.qs))
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Q0Avx2 for BlockQ4_0 {
    // The nibbles are the quants plus 8.
    const OFF: u8 = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: &Self) -> __m256i {
        nibbles(&b.qs)
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Q0Avx2 for BlockQ5_0 {
    // The 5-bit value nib | h·16 is the quant plus 16.
    const OFF: u8 = 16;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quants(b: &Self) -> __m256i {
        let high = bits_to_bytes(u32::from_le_bytes(b.qh));
        _mm256_or_si256(
            nibbles(&b.qs),
            _mm256_and_si256(high, _mm256_set1_epi8(0x10)),
        )
    }
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

/// 16 packed nibble bytes → 32 bytes (low nibbles = elements 0..16, high = 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `qs`.
    let q = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    // The bytes in both 128-bit lanes (a broadcast load), the high lane shifted right by four:
    // one shift and one mask, no lane insert.
    let v = _mm256_srlv_epi64(
        _mm256_broadcastsi128_si256(q),
        _mm256_setr_epi64x(0, 0, 4, 4),
    );
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// Expands 32 bits into 32 bytes: byte j = 0xFF where bit j is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bits_to_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    // Byte j takes byte j/8 of the word.
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    // Set every bit but bit j%8; the byte is all ones exactly when bit j%8 was set.
    let probe = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(probe, _mm256_set1_epi64x(-1))
}

/// The one-token row kernel of a [`Q0Avx2`] format: rows in groups of four, then one.
fn q0_rows<B: Q0Avx2>(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<B, BlockQ8_0>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_0>();
    by_rows!(w, row_bytes, out,
        // SAFETY: `kernel` hands this function out only when the CPU has every feature
        // `q0_dot` enables; `check_rows` verified every row holds `nb` blocks and `x` the
        // matching activation blocks, which is all `q0_dot` reads.
        |p: [4]| unsafe { q0_dot::<B, 4>(p.map(|p| p.cast::<B>()), xp, nb) },
        // SAFETY: as above.
        |p: [1]| unsafe { q0_dot::<B, 1>(p.map(|p| p.cast::<B>()), xp, nb) })
}

/// `N` rows of a [`Q0Avx2`] format × one token of Q8_0 activations. The sign form multiplies
/// `|q|` by `y` with the sign of `q`; the offset form takes `vpmaddubsw` directly (pairs of
/// products at most 2·31·128 in magnitude: no saturation) and subtracts `OFF · Σ y` over each
/// lane's four activation bytes: the same exact lane sums as the sign trick, in fewer
/// instructions.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb`
/// activation blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q0_dot<B: Q0Avx2, const N: usize>(
    w: [*const B; N],
    x: *const BlockQ8_0,
    nb: usize,
) -> [f32; N] {
    const { assert!(N <= 4) };
    let mut acc = [_mm256_setzero_ps(); N];
    // Row `r`'s scale product sits in lane `r` of `d` below.
    let lane: [__m256i; N] = std::array::from_fn(|r| _mm256_set1_epi32(r as i32));
    // The rows of a pass are consecutive (`by_rows`). Blocks are under 64 bytes: one line per
    // row and block covers every line of long rows.
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb`, so block `i` of `x` and of every row is in bounds (caller).
        let a = unsafe { &*x.add(i) };
        // SAFETY: reads the 32 bytes of `a.qs`.
        let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
        // The rows' f16 scales packed in one u64 (integer loads and shifts), converted with one
        // instruction and multiplied by the activation's scale: the same f32 products
        // `d_w · d_x` as one conversion and multiplication per row.
        let mut packed = 0u64;
        for r in 0..N {
            // SAFETY: as for `a`.
            let d = unsafe { (*w[r].add(i)).d() };
            packed |= (u16::from_le_bytes(d) as u64) << (16 * r);
        }
        let d = _mm_mul_ps(
            _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64)),
            _mm_set1_ps(h2f(a.d)),
        );
        let d = _mm256_castps128_ps256(d);
        let ones = _mm256_set1_epi16(1);
        // `OFF · Σ y` per lane (only read by the offset form).
        let y_off = if B::OFF == 0 {
            _mm256_setzero_si256()
        } else {
            // Word pairs `OFF · (y_a + y_b)`, at most 31·2·128 in magnitude.
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_set1_epi8(B::OFF as i8), y),
                ones,
            )
        };
        for r in 0..N {
            // SAFETY: as for `a`; the features `quants` needs are enabled here.
            let q = unsafe { B::quants(&*w[r].add(i)) };
            let lanes = if B::OFF == 0 {
                dot_i8(q, y)
            } else {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
                _mm256_sub_epi32(p, y_off)
            };
            let s = _mm256_cvtepi32_ps(lanes);
            let scale = _mm256_permutevar8x32_ps(d, lane[r]);
            acc[r] = _mm256_fmadd_ps(scale, s, acc[r]);
        }
    }
    acc.map(|v| reduce8(v))
}

/// Q6_K · Q8_K in llama.cpp's `ggml_vec_dot_q6_K_q8_K` (AVX2) order.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_dot<const N: usize>(
    w: [*const BlockQ6_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q6_k_any::<N, false>(w, x, nb) }
}

/// Q6_K · Q8_K in the float order of llama.cpp's tiled matmul (see [`crate::tiled`]): the
/// block's eight i32 lanes added up exactly, then `acc = fma(f32(s)·d_w, d_x, acc)`.
///
/// # Safety
/// As [`q6_k_dot`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tiled_dot<const N: usize>(
    w: [*const BlockQ6_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are this function's.
    unsafe { q6_k_any::<N, true>(w, x, nb) }
}

/// The Q6_K kernel body; `TILED` picks the float order.
///
/// # Safety
/// As [`q6_k_dot`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_any<const N: usize, const TILED: bool>(
    w: [*const BlockQ6_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut tiled = [AccTiled::default(); N];
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(0x30);
    // For chunk s of 32 elements: words 2s (low lane) and 2s+1 (high lane) of 8 scales.
    let pick: [__m256i; 4] = std::array::from_fn(|s| {
        let lo = (4 * s as i64) | ((4 * s as i64 + 1) << 8);
        let hi = lo + 0x0202;
        let lo8 = lo * 0x0001_0001_0001_0001;
        let hi8 = hi * 0x0001_0001_0001_0001;
        _mm256_setr_epi64x(lo8, lo8, hi8, hi8)
    });
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        // SAFETY: reads the 32 bytes of `a.bsums`.
        let bsums = unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) };
        let y: [__m256i; 8] = load_y8(&a.qs);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            // SAFETY: reads the 16 bytes of `b.scales`.
            let sc8 = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
            let sc16 = _mm256_cvtepi8_epi16(sc8); // 16 × i16
            let mut isum = _mm256_setzero_si256();
            for c in 0..2 {
                // SAFETY: reads bytes 64c..64c+64 of `b.ql` and 32c..32c+32 of `b.qh`.
                let (ql0, ql1, qh) = unsafe {
                    (
                        _mm256_loadu_si256(b.ql.as_ptr().add(64 * c).cast()),
                        _mm256_loadu_si256(b.ql.as_ptr().add(64 * c + 32).cast()),
                        _mm256_loadu_si256(b.qh.as_ptr().add(32 * c).cast()),
                    )
                };
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_and_si256(qh, m2),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                    ),
                ];
                // Scales 8c..8c+8 in both 128-bit lanes.
                let scc = if c == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for s in 0..4 {
                    let scale = _mm256_shuffle_epi8(scc, pick[s]);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[s], y[4 * c + s]), scale);
                    isum = _mm256_add_epi32(isum, p);
                }
            }
            // Offset −32: subtract 32 · Σ_j sc_j · bsum_j.
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, sc16));
            let isum = _mm256_sub_epi32(isum, corr);
            if TILED {
                tiled[r].add_no_min(h2f(b.d), dx, hsum_i32x8(isum));
            } else {
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx * h2f(b.d)),
                    _mm256_cvtepi32_ps(isum),
                    acc[r],
                );
            }
        }
    }
    if TILED {
        return tiled.map(AccTiled::finish);
    }
    acc.map(|v| reduce8(v))
}

/// Float weights: `load(ptr, k)` gives 8 weights at element `8k` as `__m256`.
macro_rules! float_kernel {
    ($name:ident, $inner:ident, $esize:literal, |$p:ident, $k:ident| $load:expr, $tail:expr) => {
        /// # Safety
        /// AVX2/FMA/F16C available; each `w[r]` points to `n` weights, `x` to `n` f32s.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $inner<const N: usize>(w: [*const u8; N], x: &[f32]) -> [f32; N] {
            let n = x.len();
            let mut acc = [_mm256_setzero_ps(); N];
            for k in 0..n / 8 {
                // SAFETY: elements 8k..8k+8 < n of `x`.
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) };
                for r in 0..N {
                    let ($p, $k) = (w[r], k);
                    // SAFETY: elements 8k..8k+8 < n of row r (caller).
                    let wv = unsafe { $load };
                    acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
                }
            }
            std::array::from_fn(|r| {
                let mut s = reduce8(acc[r]);
                for e in n / 8 * 8..n {
                    // SAFETY: `e < n` (caller).
                    let b = unsafe { std::slice::from_raw_parts(w[r].add($esize * e), $esize) };
                    s += ($tail)(b) * x[e];
                }
                s
            })
        }

        fn $name(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let x = as_f32(x);
            assert!(row_bytes == $esize * x.len() && w.len() >= out.len() * row_bytes, "float row size mismatch");
            by_rows!(w, row_bytes, out,
                // SAFETY: AVX2/FMA/F16C available (see `kernel`); sizes checked above.
                |p: [4]| unsafe { $inner::<4>(p, x) },
                // SAFETY: as above.
                |p: [1]| unsafe { $inner::<1>(p, x) })
        }
    };
}

float_kernel!(
    f32_rows,
    f32_dot,
    4,
    |p, k| _mm256_loadu_ps(p.add(32 * k).cast()),
    |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]])
);
rows_kernel!(q4_1_rows, q4_1_dot, BlockQ4_1, BlockQ8_1);
rows_kernel!(q5_1_rows, q5_1_dot, BlockQ5_1, BlockQ8_1);
rows_kernel!(q3_k_rows, q3_k_dot, BlockQ3_K, BlockQ8_K);
rows_kernel!(q5_k_rows, q5_k_dot, BlockQ5_K, BlockQ8_K);
rows_kernel!(q3_k_tiled_rows, q3_k_tiled, BlockQ3_K, BlockQ8_K);
rows_kernel!(q5_k_tiled_rows, q5_k_tiled, BlockQ5_K, BlockQ8_K);

/// The AVX2 kernel of llama.cpp's tiled order (see [`crate::tiled`]) for Q3_K, Q5_K or Q6_K.
pub(super) fn tiled_kernel(ty: GgmlType) -> Option<RowsFn> {
    if !SimdLevel::Avx2.is_available() {
        return None;
    }
    Some(match ty {
        GgmlType::Q3_K => q3_k_tiled_rows,
        GgmlType::Q5_K => q5_k_tiled_rows,
        GgmlType::Q6_K => q6_k_tiled_rows,
        _ => return None,
    })
}

/// Q5_K in the tiled order: [`q5_k_impl`] with `TILED`.
///
/// # Safety
/// As [`q5_k_impl`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_tiled<const N: usize>(
    w: [*const BlockQ5_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are `q5_k_impl`'s.
    unsafe { q5_k_impl::<N, true>(w, x, nb) }
}

/// Q5_K in the vec_dot order: [`q5_k_impl`] without `TILED`.
///
/// # Safety
/// As [`q5_k_impl`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_dot<const N: usize>(
    w: [*const BlockQ5_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are `q5_k_impl`'s.
    unsafe { q5_k_impl::<N, false>(w, x, nb) }
}

/// Q3_K in the tiled order: [`q3_k_impl`] with `TILED`.
///
/// # Safety
/// As [`q3_k_impl`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_tiled<const N: usize>(
    w: [*const BlockQ3_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are `q3_k_impl`'s.
    unsafe { q3_k_impl::<N, true>(w, x, nb) }
}

/// Q3_K in the vec_dot order: [`q3_k_impl`] without `TILED`.
///
/// # Safety
/// As [`q3_k_impl`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_dot<const N: usize>(
    w: [*const BlockQ3_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    // SAFETY: the caller's guarantees are `q3_k_impl`'s.
    unsafe { q3_k_impl::<N, false>(w, x, nb) }
}

/// Q8_1-activation kernels (offset formats): `unpack` turns weight block `b` into 32 unsigned
/// quants; the block adds `(d_w·d_x)·Σq·y` lane-wise and `m_w·s_x` to a scalar sum.
macro_rules! q8_1_family {
    ($fname:ident, $wb:ty, |$b:ident| $unpack:expr) => {
        /// # Safety
        /// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb`
        /// Q8_1 blocks.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $fname<const N: usize>(
            w: [*const $wb; N],
            x: *const BlockQ8_1,
            nb: usize,
        ) -> [f32; N] {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut acc_m = [0f32; N];
            // The rows of a pass are consecutive (`by_rows`).
            let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
            for i in 0..nb {
                pf.step(&w, i);
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x.add(i) };
                // SAFETY: reads the 32 bytes of `a.qs`.
                let y = unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) };
                let (dy, sy) = (h2f(a.d), h2f(a.s));
                for r in 0..N {
                    // SAFETY: `i < nb` (caller).
                    let $b = unsafe { &*w[r].add(i) };
                    let q: __m256i = $unpack;
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1));
                    acc[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(h2f($b.d) * dy),
                        _mm256_cvtepi32_ps(p),
                        acc[r],
                    );
                    acc_m[r] += h2f($b.m) * sy;
                }
            }
            std::array::from_fn(|r| reduce8(acc[r]) + acc_m[r])
        }
    };
}

q8_1_family!(q4_1_dot, BlockQ4_1, |b| nibbles(&b.qs));
q8_1_family!(q5_1_dot, BlockQ5_1, |b| {
    let high = bits_to_bytes(u32::from_le_bytes(b.qh));
    _mm256_or_si256(
        nibbles(&b.qs),
        _mm256_and_si256(high, _mm256_set1_epi8(0x10)),
    )
});

/// Q4_K and Q5_K blocks: both begin with `d`, `dmin` and the 12 packed bytes of eight 6-bit
/// scales and eight 6-bit mins.
///
/// # Safety
/// An implementing type's first 16 bytes are those fields, in that order ([`k_scales_mins`]
/// reads them through a pointer to the block).
pub(super) unsafe trait KHead {}
// SAFETY: `BlockQ4_K` is `repr(C)`: `d`, `dmin`, `scales`, then `qs` (144 bytes in all).
unsafe impl KHead for BlockQ4_K {}
// SAFETY: `BlockQ5_K` is `repr(C)`: `d`, `dmin`, `scales`, then `qh` and `qs` (176 bytes).
unsafe impl KHead for BlockQ5_K {}

/// A Q4_K/Q5_K block's eight scales as bytes `0..8` of a register (bytes `8..16`: its mins),
/// and its eight mins as i16 words (for [`min_sum`]): the unpacking of
/// [`crate::blocks::k4_scales_mins_u64`] done in vector registers (the scalar form took about
/// 20 instructions and a move a block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k_scales_mins<B: KHead>(b: &B) -> (__m128i, __m128i) {
    // SAFETY: `B: KHead`, so its first 16 bytes are `d`, `dmin` and the 12 of `scales`.
    let h = unsafe { _mm_loadu_si128((b as *const B).cast()) };
    // The dwords [d·dmin, w0, w1, w2] become [sc_lo, sc_hi, m_lo, m_hi]:
    // sc_lo = w0 & 0x3f…, sc_hi = (w2 & 0x0f…) | ((w0 >> 2) & 0x30…),
    // m_lo = w1 & 0x3f…,  m_hi = ((w2 >> 4) & 0x0f…) | ((w1 >> 2) & 0x30…).
    let (m6, m4, h2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x3030_3030);
    // [w0, w2, w1, w2 >> 4]
    let x = _mm_srlv_epi32(
        _mm_shuffle_epi32::<0b11_10_11_01>(h),
        _mm_set_epi32(4, 0, 0, 0),
    );
    // [w0 >> 2, w0 >> 2, w1 >> 2, w1 >> 2]
    let y = _mm_srli_epi32::<2>(_mm_shuffle_epi32::<0b10_10_01_01>(h));
    let sm = _mm_or_si128(
        _mm_and_si128(x, _mm_set_epi32(m4, m6, m4, m6)),
        _mm_and_si128(y, _mm_set_epi32(h2, 0, h2, 0)),
    );
    (sm, _mm_unpackhi_epi8(sm, _mm_setzero_si128()))
}

/// The eight 32-element sums of a Q8_K block's quants (from its sixteen `bsums`) as i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bsums32(a: &BlockQ8_K) -> __m128i {
    // SAFETY: reads the 32 bytes of `a.bsums`.
    let bsums = unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) };
    _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    )
}

/// `Σ_j m_j · s_j` over eight i16 mins and eight i16 32-element sums ([`bsums32`]): the mins
/// term of Q4_K/Q5_K, exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn min_sum(mins: __m128i, bs32: __m128i) -> i32 {
    hsum_i32x4(_mm_madd_epi16(mins, bs32))
}

/// Word-broadcast patterns for 16-element sub-blocks: for chunk `s` of 32 elements, words `2s`
/// (low 128-bit lane) and `2s + 1` (high lane) of a lane holding 8 scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn pick_pairs() -> [__m256i; 4] {
    let one = |s: i64| {
        let lo = (4 * s) | ((4 * s + 1) << 8);
        let hi = lo + 0x0202;
        let (lo8, hi8) = (lo * 0x0001_0001_0001_0001, hi * 0x0001_0001_0001_0001);
        _mm256_setr_epi64x(lo8, lo8, hi8, hi8)
    };
    [one(0), one(1), one(2), one(3)]
}

/// Q3_K in `ggml_vec_dot_q3_K_q8_K`'s order (see [`crate::scalar::q3k`]): lanes as the scalar
/// reference's, one FMA per block into eight f32 lanes; with `TILED`, llama.cpp's tiled order
/// (see [`crate::tiled`]) on the lanes' total.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_impl<const N: usize, const TILED: bool>(
    w: [*const BlockQ3_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut tiled = [AccTiled::default(); N];
    let m3 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let pick = pick_pairs();
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        let y = load_y8(&a.qs);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let sc = q3k_scales(&b.scales);
            // SAFETY: reads the 16 bytes of `sc`.
            let sc16 = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
            // SAFETY: reads the 32 bytes of `b.hmask`.
            let hm = unsafe { _mm256_loadu_si256(b.hmask.as_ptr().cast()) };
            let mut isum = _mm256_setzero_si256();
            for c in 0..2 {
                // SAFETY: reads bytes 32c..32c+32 of the 64-byte `b.qs`.
                let qs = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()) };
                let scc = if c == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc16, sc16)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc16, sc16)
                };
                for s in 0..4 {
                    // q = low two bits − (4 where the high bit is clear), as llama.cpp: two
                    // unsigned products subtracted, so each lane holds exactly its elements.
                    let low =
                        _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * s as i32)), m3);
                    let clear4 = _mm256_slli_epi16::<2>(_mm256_andnot_si256(
                        _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * c + s) as i32)),
                        one,
                    ));
                    let p = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(low, y[4 * c + s]),
                        _mm256_maddubs_epi16(clear4, y[4 * c + s]),
                    );
                    isum = _mm256_add_epi32(
                        isum,
                        _mm256_madd_epi16(p, _mm256_shuffle_epi8(scc, pick[s])),
                    );
                }
            }
            if TILED {
                tiled[r].add_no_min(h2f(b.d), dx, hsum_i32x8(isum));
            } else {
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx * h2f(b.d)),
                    _mm256_cvtepi32_ps(isum),
                    acc[r],
                );
            }
        }
    }
    if TILED {
        return tiled.map(AccTiled::finish);
    }
    acc.map(|v| reduce8(v))
}

/// Bit `bit` of every byte of `v`, moved to bit 4 (other bits cleared).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bit_to_4(v: __m256i, bit: i32) -> __m256i {
    let moved = if bit <= 4 {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128(4 - bit))
    } else {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(bit - 4))
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(0x10))
}

/// Q5_K in `ggml_vec_dot_q5_K_q8_K`'s order (see [`crate::scalar::q5k`]): lanes as the scalar
/// reference's, one FMA per block into eight f32 lanes, and the min total `M` into one scalar;
/// with `TILED`, llama.cpp's tiled order (see [`crate::tiled`]) on the lanes' total and `M`.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` readable blocks, `x` to `nb` Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_impl<const N: usize, const TILED: bool>(
    w: [*const BlockQ5_K; N],
    x: *const BlockQ8_K,
    nb: usize,
) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    let mut tiled = [AccTiled::default(); N];
    let m4 = _mm256_set1_epi8(0x0F);
    // Rows of a pass are consecutive (`by_rows`).
    let pf = super::Prefetch::for_pass(w[0], N, nb, PF_BLOCKS);
    for i in 0..nb {
        pf.step(&w, i);
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*x.add(i) };
        let dx = a.d();
        let bs32 = bsums32(a);
        let y = load_y8(&a.qs);
        for r in 0..N {
            // SAFETY: `i < nb` (caller).
            let b = unsafe { &*w[r].add(i) };
            let (sc, mins) = k_scales_mins(b);
            let sc = _mm256_broadcastsi128_si256(sc);
            // Scale `j` in every word (control byte 0x80: a zero high byte).
            let pick = |j: usize| _mm256_shuffle_epi8(sc, _mm256_set1_epi16((0x8000 | j) as i16));
            // SAFETY: reads the 32 bytes of `b.qh`.
            let qh = unsafe { _mm256_loadu_si256(b.qh.as_ptr().cast()) };
            let mut isum = _mm256_setzero_si256();
            for c in 0..4 {
                // SAFETY: reads bytes 32c..32c+32 of the 128-byte `b.qs`.
                let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast()) };
                // Fifth bits: bit 2c (low nibbles) and 2c+1 (high nibbles) of qh, at bit 4.
                let h_lo = bit_to_4(qh, 2 * c as i32);
                let h_hi = bit_to_4(qh, 2 * c as i32 + 1);
                let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h_lo);
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), m4), h_hi);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y[2 * c]), pick(2 * c));
                let p_hi =
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y[2 * c + 1]), pick(2 * c + 1));
                isum = _mm256_add_epi32(isum, _mm256_add_epi32(p_lo, p_hi));
            }
            let msum = min_sum(mins, bs32);
            if TILED {
                tiled[r].add(h2f(b.d), h2f(b.dmin), dx, hsum_i32x8(isum), msum);
            } else {
                acc[r] = _mm256_fmadd_ps(
                    _mm256_set1_ps(dx * h2f(b.d)),
                    _mm256_cvtepi32_ps(isum),
                    acc[r],
                );
                summs[r] = (msum as f32).mul_add(-dx * h2f(b.dmin), summs[r]);
            }
        }
    }
    if TILED {
        return tiled.map(AccTiled::finish);
    }
    std::array::from_fn(|r| reduce8(acc[r]) + summs[r])
}

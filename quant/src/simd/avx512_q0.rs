//! x86-64 AVX-512 (F, BW, VL, VNNI) kernels for the formats multiplied with Q8_0 activations:
//! Q8_0, Q5_0, Q4_0, IQ4_NL — in llama.cpp's float order (for IQ4_NL, the order of its batch
//! kernel; see [`scalar::iq4_nl`](crate::scalar::iq4_nl)).
//!
//! llama.cpp computes every output element of these formats the same way on an AVX2 machine,
//! whether through `tinyBLAS_Q0_AVX` (llamafile sgemm, batches of n ≥ 2 tokens, every tile
//! shape) or through `ggml_vec_dot_{q8_0,q5_0,q4_0}_q8_0` (one token): eight float lanes; for
//! each block in order, `p[l]` = the exact integer sum of the four products of bytes
//! `4l..4l+4`, `d = f32(d_w) · f32(d_x)`, `acc[l] = fma(d, p[l], acc[l])`; finally
//! `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`. [`scalar`](crate::scalar) spells this out lane by
//! lane; the AVX2 kernels are it with one `ymm` per row.
//!
//! The eight lanes of one row form a dependent chain of one FMA per block, so two consecutive
//! blocks may not share a 512-bit register (that would split the chain in two). Instead each
//! `zmm` holds the lanes of **two rows** (row `2p` in the low half, `2p + 1` in the high half):
//! one `vpdpbusd` forms the lane sums of both rows' blocks against the activation block
//! broadcast to both halves, and one FMA with `[d_a·d_x ×8, d_b·d_x ×8]` advances both chains.
//! Per lane the operations are exactly those above, so results equal the scalar reference bit
//! for bit whatever the grouping of rows and tokens. A row without a partner uses one `ymm`.
//!
//! One token goes through [`mv`]: eight rows per pass (four over short rows, see [`rows`]), with the unsigned-weight form of the
//! integer sums described below for the batch kernel (fewer vector instructions per block, so
//! that the kernel keeps up with memory when the weights stream from DRAM).
//!
//! Batches of tokens go through the batch kernel ([`batch_kernel`]): per row group of eight
//! rows, the weight blocks are unpacked once (unsigned quants plus f32 scales laid out for the
//! pair registers), then register tiles of four row pairs × four tokens run over all blocks,
//! and a shared shuffle tree reduces sixteen outputs at a time (same tree, same bits).

use std::arch::x86_64::*;

use super::avx2::{h2f, reduce8, Q0Avx2};
use super::{check_rows, Prefetch, Rows4Fn, RowsFn, PF_PASS_BLOCKS};
use crate::blocks::{BlockIQ4_NL, BlockQ4_0, BlockQ5_0, BlockQ8_0, IQ4_NL_VALUES};

/// Software prefetch distance in blocks ahead of the block computed, per row (~1 KiB of Q8_0,
/// as the kernels this replaced), for long rows.
const PF_BLOCKS: usize = 32;
/// What a pass of the one-token kernel over `rows` rows from `first_row` prefetches.
#[inline(always)]
fn ahead<B>(first_row: *const B, rows: usize, nb: usize) -> Prefetch {
    Prefetch::for_pass(first_row, rows, nb, PF_BLOCKS)
}

/// Row pairs per pass of the one-token kernel: four (eight rows) measured faster than two
/// (latency of the per-lane FMA chains) and than eight (more streams than the prefetchers
/// keep up with), on L2-resident and DRAM-resident matrices alike.
const G: usize = 4;
/// Row pairs per pass where rows are short enough for a linear prefetch ([`ahead`]).
const G_SHORT: usize = 2;

/// The kernel (`Some` for Q8_0, Q5_0, Q4_0); the caller checked that AVX-512 is available.
pub(super) fn kernel(ty: strata_gguf::GgmlType) -> Option<RowsFn> {
    use strata_gguf::GgmlType::*;
    Some(match ty {
        Q8_0 => q8_0_rows,
        Q5_0 => q5_0_rows,
        Q4_0 => q4_0_rows,
        IQ4_NL => iq4_nl_rows,
        _ => return None,
    })
}

/// The four-token kernel (`Some` for Q8_0, Q5_0, Q4_0); the caller checked AVX-512.
pub(super) fn kernel4(ty: strata_gguf::GgmlType) -> Option<Rows4Fn> {
    use strata_gguf::GgmlType::*;
    Some(match ty {
        Q8_0 => q8_0_rows4,
        Q5_0 => q5_0_rows4,
        Q4_0 => q4_0_rows4,
        IQ4_NL => iq4_nl_rows4,
        _ => return None,
    })
}

/// Two f16 scales → `[a, b, 0, 0]` as f32 (one F16C conversion; exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn h2f2(a: [u8; 2], b: [u8; 2]) -> __m128 {
    let bits = u32::from_le_bytes([a[0], a[1], b[0], b[1]]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Two 256-bit vectors as one 512-bit vector (`lo` low, `hi` high).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Two blocks' 16 packed nibble bytes → 64 bytes, each half in element order (low nibbles =
/// elements 0..16, high = 16..32): 128-bit lanes [lo(a), hi(a), lo(b), hi(b)].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    _mm512_and_si512(shifted2(a, b), _mm512_set1_epi8(0x0F))
}

/// [`nibbles2`] before its mask: each element's nibble in the low four bits of its byte, other
/// bits undefined.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn shifted2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    // SAFETY: each load reads the 16 bytes of its array.
    let (a, b) = unsafe {
        (
            _mm_loadu_si128(a.as_ptr().cast()),
            _mm_loadu_si128(b.as_ptr().cast()),
        )
    };
    let t = join(
        _mm256_broadcastsi128_si256(a),
        _mm256_broadcastsi128_si256(b),
    );
    // Shift the odd 128-bit lanes (words 8..16 and 24..32) right by four.
    _mm512_mask_srli_epi16(t, 0xFF00_FF00, t, 4)
}

/// A weight block whose 32 quants unpack to signed bytes (the values llama.cpp multiplies),
/// two blocks per 512-bit register; one block at a time, and the scale, come from
/// [`Q0Avx2`] ([`Q0Avx2::signed`], [`Q0Avx2::d`]).
trait Q0Block: Q0Avx2 {
    /// The 32 signed quants of `a` (low half) and `b` (high half).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available.
    unsafe fn pair(a: &Self, b: &Self) -> __m512i;
}

impl Q0Block for BlockQ8_0 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: the features `signed` needs are enabled here.
        unsafe { join(Self::signed(a), Self::signed(b)) }
    }
}

impl Q0Block for BlockQ4_0 {
    // Nibble − 8.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair(a: &Self, b: &Self) -> __m512i {
        _mm512_sub_epi8(nibbles2(&a.qs, &b.qs), _mm512_set1_epi8(8))
    }
}

impl Q0Block for BlockQ5_0 {
    // q − 16 for the 5-bit quant q = nib | h·16: nib − 16 (one masked subtraction) where the
    // fifth bit is clear.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair(a: &Self, b: &Self) -> __m512i {
        let h = u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
        let nib = nibbles2(&a.qs, &b.qs);
        _mm512_mask_sub_epi8(nib, !h, nib, _mm512_set1_epi8(16))
    }
}

impl Q0Block for BlockIQ4_NL {
    // The nibbles index the value table (`vpshufb` within each 128-bit lane).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair(a: &Self, b: &Self) -> __m512i {
        // SAFETY: reads the 16 bytes of the table.
        let lut = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) };
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(lut), nibbles2(&a.qs, &b.qs))
    }
}

/// `2P` weight rows (row pairs `(w[2p], w[2p+1])`) × `T` tokens, `nb` blocks each.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb` readable
/// blocks, each `x[t]` to `nb` Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pairs<B: Q0Block, const P: usize, const T: usize>(
    w: [[*const B; 2]; P],
    x: [*const BlockQ8_0; T],
    nb: usize,
    ahead: usize,
) -> [[[f32; T]; 2]; P] {
    let mut acc = [[_mm512_setzero_ps(); T]; P];
    let zero = _mm512_setzero_si512();
    // Lanes 0..8 take element 0 of a 4-vector, lanes 8..16 element 1.
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for i in 0..nb {
        for p in 0..P {
            for r in w[p] {
                _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(i + ahead).cast());
            }
            // SAFETY: `i < nb` (caller).
            let (a, b) = unsafe { (&*w[p][0].add(i), &*w[p][1].add(i)) };
            // SAFETY: the features are enabled here.
            let q = unsafe { B::pair(a, b) };
            // |q| · (y with the sign of q): u8 × i8 for `vpdpbusd` (llama.cpp's
            // `sign_epi8(y, q)`, which also zeroes y where q = 0; |q| = 0 there anyway).
            let (aq, neg) = (_mm512_abs_epi8(q), _mm512_movepi8_mask(q));
            let dw = h2f2(a.d(), b.d());
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let y = unsafe { &*x[t].add(i) };
                // SAFETY: reads the 32 bytes of `y.qs`.
                let yv =
                    unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(y.qs.as_ptr().cast())) };
                let sy = _mm512_mask_sub_epi8(yv, neg, zero, yv);
                let dp = _mm512_dpbusd_epi32(zero, aq, sy);
                // [d_a·d_x, d_b·d_x] (f32 products, as llama.cpp), eight lanes each.
                let d = _mm_mul_ps(dw, _mm_set1_ps(h2f(y.d)));
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
                acc[p][t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dp), acc[p][t]);
            }
        }
    }
    std::array::from_fn(|p| {
        let lo = acc[p].map(|v| reduce8(_mm512_castps512_ps256(v)));
        let hi = acc[p].map(|v| {
            reduce8(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(v),
            )))
        });
        [lo, hi]
    })
}

/// One weight row × `T` tokens, in one `ymm` per token (same per-lane operations as [`pairs`]).
///
/// # Safety
/// As [`pairs`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn single<B: Q0Block, const T: usize>(
    w: *const B,
    x: [*const BlockQ8_0; T],
    nb: usize,
    ahead: usize,
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let zero = _mm256_setzero_si256();
    for i in 0..nb {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(i + ahead).cast());
        // SAFETY: `i < nb` (caller).
        let a = unsafe { &*w.add(i) };
        // SAFETY: the features are enabled here.
        let q = unsafe { B::signed(a) };
        let aq = _mm256_abs_epi8(q);
        let dw = h2f(a.d());
        for t in 0..T {
            // SAFETY: `i < nb` (caller).
            let y = unsafe { &*x[t].add(i) };
            // SAFETY: reads the 32 bytes of `y.qs`.
            let yv = unsafe { _mm256_loadu_si256(y.qs.as_ptr().cast()) };
            let dp = _mm256_dpbusd_epi32(zero, aq, _mm256_sign_epi8(yv, q));
            let d = _mm256_set1_ps(dw * h2f(y.d));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dp), acc[t]);
        }
    }
    acc.map(|v| reduce8(v))
}

/// Rows `r0..` of `w` as block pointers, `row_bytes` apart.
#[inline(always)]
fn row_ptr<B>(w: &[u8], row_bytes: usize, r: usize) -> *const B {
    w[r * row_bytes..].as_ptr().cast()
}

/// The f16 scales of the `2P` rows' block `i` (row `2p + h` in lane `2p + h`) as f32, times
/// `dx` (lanes `0..2P`; f32 products, as llama.cpp). `P <= 4`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; block `i` of every row readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn row_scales<B: Q0Block, const P: usize>(
    w: &[[*const B; 2]; P],
    i: usize,
    dx: __m256,
) -> __m256 {
    const { assert!(P <= 4) };
    // The scales packed four per u64 in general-purpose registers (loads and integer ops, off
    // the vector ports), then converted at once.
    let mut q = [0u64; 2];
    for (p, pair) in w.iter().enumerate() {
        for (h, r) in pair.iter().enumerate() {
            let k = 2 * p + h;
            // SAFETY: block `i` is readable (caller).
            let d = unsafe { (*r.add(i)).d() };
            q[k / 4] |= (u16::from_le_bytes(d) as u64) << (16 * (k % 4));
        }
    }
    let h = if P <= 2 {
        _mm_cvtsi64_si128(q[0] as i64)
    } else {
        _mm_set_epi64x(q[1] as i64, q[0] as i64)
    };
    _mm256_mul_ps(_mm256_cvtph_ps(h), dx)
}

/// `2P` weight rows (row pairs `(w[2p], w[2p+1])`, two rows per register as in [`pairs`]) ×
/// one token, the one-token kernel. Per lane the same operations as [`pairs`], with fewer
/// instructions per block: the integer lane sums come from `vpdpbusd` with the weights as the
/// unsigned operand (`q + OFF`, as the batch kernel) and the accumulator starting at
/// `-OFF · Σ y` over the lane's four activation bytes (shared by all rows and passes, so
/// prepared once per product as the batch kernel's [`ActBlock`](super::ActBlock)s; the same
/// exact integers as the sign trick), and the `2P` rows' scales are converted with one
/// instruction.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[p][h]` points to `acts.len()`
/// readable blocks; `acts` and `dx` are one activation row's [`prepare_row`] for format `B`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn mv<B: Q0Unsigned, const P: usize>(
    w: [[*const B; 2]; P],
    acts: &[super::ActBlock],
    dx: &[f32],
    ahead: Prefetch,
) -> [[f32; 2]; P] {
    let nb = acts.len();
    let mut acc = [_mm512_setzero_ps(); P];
    // Pair `p` takes scale lane `2p` in its low half, `2p + 1` in its high half.
    let pick: [__m512i; P] = std::array::from_fn(|p| {
        let (a, b) = (2 * p as i32, 2 * p as i32 + 1);
        _mm512_setr_epi32(a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b)
    });
    for i in 0..nb {
        ahead.step(w.as_flattened(), i);
        let a = &acts[i];
        // SAFETY: each load reads the 32 bytes of `a.y` or of `a.init`.
        let (y, init) = unsafe {
            (
                _mm512_broadcast_i64x4(_mm256_loadu_si256(a.y.as_ptr().cast())),
                _mm512_broadcast_i64x4(_mm256_loadu_si256(a.init.as_ptr().cast())),
            )
        };
        // SAFETY: `i < nb` (caller); the features are enabled here.
        let d = unsafe { row_scales::<B, P>(&w, i, _mm256_set1_ps(dx[i])) };
        let d = _mm512_castps256_ps512(d);
        for p in 0..P {
            // SAFETY: `i < nb` (caller).
            let (a, b) = unsafe { (&*w[p][0].add(i), &*w[p][1].add(i)) };
            // SAFETY: the features are enabled here.
            let q = unsafe { B::pair_u(a, b) };
            let s = _mm512_dpbusd_epi32(init, q, y);
            let scale = _mm512_permutexvar_ps(pick[p], d);
            acc[p] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(s), acc[p]);
        }
    }
    fold_pairs(acc)
}

/// [`reduce8`] of both halves of each of `P` pair registers: `[row 2p, row 2p + 1]` from
/// `acc[p]` (low half, high half). The same three steps, `(l_i + l_{i+4})`, then pairs of
/// those, then the two left, for two rows per instruction (each add the one `reduce8` does).
#[inline]
#[target_feature(enable = "avx512f")]
fn fold_pairs<const P: usize>(acc: [__m512; P]) -> [[f32; 2]; P] {
    let fold = |v: __m512| {
        // Each 256-bit half: lanes 0..4 = l_i + l_{i+4}.
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10_11_00_01>(v, v));
        // Lanes 0, 1 = (l0+l4) + (l2+l6), (l1+l5) + (l3+l7).
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_00_11_10>(v));
        // Lane 0 of each half: the row's sum.
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b00_00_00_01>(v));
        [
            _mm512_cvtss_f32(v),
            _mm512_cvtss_f32(_mm512_shuffle_f32x4::<0b10>(v, v)),
        ]
    };
    acc.map(fold)
}

/// Passes of `2P` rows over the first rows of `out` (as many as whole passes cover); returns
/// the rows done.
fn passes<B: Q0Unsigned + crate::blocks::Block, const P: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &[super::ActBlock],
    dx: &[f32],
    out: &mut [f32],
) -> usize {
    let nb = acts.len();
    let ptr = |r: usize| row_ptr::<B>(w, row_bytes, r);
    let mut r = 0;
    while r + 2 * P <= out.len() {
        let wp: [[*const B; 2]; P] = std::array::from_fn(|p| [ptr(r + 2 * p), ptr(r + 2 * p + 1)]);
        // SAFETY: `kernel` hands `rows` (the only caller) out only when the CPU has every
        // feature `mv` enables; `rows` checked (`check_rows`) that every row holds `nb` blocks
        // and `x` the matching activation blocks (prepared into `acts`, `dx`), which is all
        // `mv` reads.
        let res = unsafe { mv::<B, P>(wp, acts, dx, ahead(wp[0][0], 2 * P, nb)) };
        for p in 0..P {
            out[r + 2 * p] = res[p][0];
            out[r + 2 * p + 1] = res[p][1];
        }
        r += 2 * P;
    }
    r
}

/// `out[r] = W[r] · x` for every row: eight rows (four pairs) per pass (four for short rows),
/// then pairs, then one.
fn rows<B: Q0Unsigned + crate::blocks::Block>(
    w: &[u8],
    row_bytes: usize,
    x: &[u8],
    out: &mut [f32],
) {
    let nb = check_rows::<B, BlockQ8_0>(w, row_bytes, x, out.len());
    let xp = x.as_ptr().cast::<BlockQ8_0>();
    // The prepared activations live in this thread's scratch (a tile of a token's product
    // calls this once; an output head has a thousand tiles a token), overwritten here.
    let (mut acts, mut dx) = ACTS.take();
    acts.resize(nb, super::ActBlock::default());
    dx.resize(nb, 0.0);
    prepare_row::<B>(x, &mut acts, &mut dx);
    let ptr = |r: usize| row_ptr::<B>(w, row_bytes, r);
    let rows = out.len();
    // Short rows make a pass one contiguous region: there four rows per pass keep up with memory
    // (measured on Zen 4: 22 GiB/s against 14 with eight, for an output head's rows).
    let mut r = if 2 * G_SHORT * nb <= PF_PASS_BLOCKS {
        passes::<B, G_SHORT>(w, row_bytes, &acts, &dx, out)
    } else {
        passes::<B, G>(w, row_bytes, &acts, &dx, out)
    };
    while r + 2 <= rows {
        // SAFETY: as above.
        let res = unsafe { mv::<B, 1>([[ptr(r), ptr(r + 1)]], &acts, &dx, ahead(ptr(r), 2, nb)) };
        out[r] = res[0][0];
        out[r + 1] = res[0][1];
        r += 2;
    }
    if r < rows {
        // SAFETY: as above (`single` enables the same features).
        out[r] = unsafe { single::<B, 1>(ptr(r), [xp], nb, PF_BLOCKS) }[0];
    }
    ACTS.set((acts, dx));
}

thread_local! {
    /// [`rows`]' prepared activations, kept between calls on this thread.
    static ACTS: std::cell::Cell<(Vec<super::ActBlock>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// `out[t][r] = W[r] · x[t]` for four tokens: two rows × four tokens per pass, then one row.
fn rows4<B: Q0Block + crate::blocks::Block>(
    w: &[u8],
    row_bytes: usize,
    x: [&[u8]; 4],
    out: [&mut [f32]; 4],
) {
    let rows = out[0].len();
    assert!(
        out.iter().all(|o| o.len() == rows),
        "output rows differ in length"
    );
    let nb = check_rows::<B, BlockQ8_0>(w, row_bytes, x[0], rows);
    for xt in &x[1..] {
        check_rows::<B, BlockQ8_0>(w, row_bytes, xt, rows);
    }
    let xp = x.map(|s| s.as_ptr().cast::<BlockQ8_0>());
    let ptr = |r: usize| row_ptr::<B>(w, row_bytes, r);
    let mut r = 0;
    while r + 2 <= rows {
        // SAFETY: as in `rows`, for each of the four activation rows.
        let res = unsafe { pairs::<B, 1, 4>([[ptr(r), ptr(r + 1)]], xp, nb, PF_BLOCKS) };
        for t in 0..4 {
            out[t][r] = res[0][0][t];
            out[t][r + 1] = res[0][1][t];
        }
        r += 2;
    }
    if r < rows {
        // SAFETY: as above.
        let res = unsafe { single::<B, 4>(ptr(r), xp, nb, PF_BLOCKS) };
        for t in 0..4 {
            out[t][r] = res[t];
        }
    }
}

fn q8_0_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockQ8_0>(w, row_bytes, x, out)
}
fn q5_0_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockQ5_0>(w, row_bytes, x, out)
}
fn q4_0_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockQ4_0>(w, row_bytes, x, out)
}
fn iq4_nl_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockIQ4_NL>(w, row_bytes, x, out)
}
fn iq4_nl_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    rows4::<BlockIQ4_NL>(w, row_bytes, x, out)
}
fn q8_0_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    rows4::<BlockQ8_0>(w, row_bytes, x, out)
}
fn q5_0_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    rows4::<BlockQ5_0>(w, row_bytes, x, out)
}
fn q4_0_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    rows4::<BlockQ4_0>(w, row_bytes, x, out)
}

// ---------------------------------------------------------------------------------------------
// Batch kernel: many tokens at once.
//
// The per-lane integer sums are formed with the weights as the unsigned operand of `vpdpbusd`:
// each format's quants `q` are stored once per row group as `q + OFF` (0..=255), and the
// accumulator starts at `-OFF · Σ y` over the lane's four activation bytes (prepared once per
// token and block), so the instruction yields `Σ q·y` exactly (|partial sums| < 2^17, no
// wrap). No per-token sign fix-up is needed, and the integers equal those of the sign trick.
// ---------------------------------------------------------------------------------------------

/// Row pairs per batch tile (eight rows).
const BP: usize = 4;
/// Rows per batch tile.
const BR: usize = 2 * BP;
/// Tokens per register tile (`BP × BT` accumulators of two outputs each).
const BT: usize = 4;

/// One row pair's block, unpacked for the batch kernel: the unsigned quants of row `2p`
/// (bytes 0..32) and `2p + 1` (32..64), and their scales as f32, eight lanes each.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct WBlock {
    q: [u8; 64],
    d: [f32; 16],
}

/// A weight format's quants as unsigned bytes `q + OFF` for the batch kernel.
trait Q0Unsigned: Q0Block {
    /// The offset added to every quant (for Q8_0 and IQ4_NL 128, where [`Q0Avx2::OFF`], the
    /// 256-bit kernels' form, is 0).
    const OFF: u8;
    /// `q + OFF` for the 32 quants of `a` (low half) and `b` (high half).
    ///
    /// # Safety
    /// As [`Q0Block::pair`].
    unsafe fn pair_u(a: &Self, b: &Self) -> __m512i;
}

impl Q0Unsigned for BlockQ8_0 {
    const OFF: u8 = 128;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair_u(a: &Self, b: &Self) -> __m512i {
        // SAFETY: the features `pair` needs are enabled here.
        let q = unsafe { Self::pair(a, b) };
        _mm512_xor_si512(q, _mm512_set1_epi8(0x80u8 as i8))
    }
}

impl Q0Unsigned for BlockQ4_0 {
    const OFF: u8 = 8;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair_u(a: &Self, b: &Self) -> __m512i {
        nibbles2(&a.qs, &b.qs)
    }
}

impl Q0Unsigned for BlockQ5_0 {
    const OFF: u8 = 16;
    // nib | h·16: the fifth bits as bytes 0x10 (a zero-masked move), merged with the nibbles by
    // one bitwise select that also does `nibbles2`'s mask (a masked add became an OR and a
    // blend, one instruction more).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair_u(a: &Self, b: &Self) -> __m512i {
        let h = u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
        let fifth = _mm512_maskz_mov_epi8(h, _mm512_set1_epi8(0x10));
        // 0xCA: `first ? second : third` bitwise, so bits of the shifted bytes where the
        // constant 0x0F is set and of `fifth` elsewhere.
        _mm512_ternarylogic_epi32::<0xCA>(_mm512_set1_epi8(0x0F), shifted2(&a.qs, &b.qs), fifth)
    }
}

impl Q0Unsigned for BlockIQ4_NL {
    const OFF: u8 = 128;
    // The table's values + 128 (the values lie in -127..=113).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn pair_u(a: &Self, b: &Self) -> __m512i {
        // SAFETY: reads the 16 bytes of the table.
        let lut = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr().cast()) };
        let lut = _mm_xor_si128(lut, _mm_set1_epi8(0x80u8 as i8));
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(lut), nibbles2(&a.qs, &b.qs))
    }
}

/// The batch kernel for `ty` (`Some` for Q8_0, Q5_0, Q4_0, IQ4_NL); the caller checked that
/// AVX-512 is available.
pub(super) fn batch_kernel(ty: strata_gguf::GgmlType) -> Option<super::BatchKernel> {
    use strata_gguf::GgmlType::*;
    fn make<B: Q0Unsigned + crate::blocks::Block>() -> super::BatchKernel {
        super::BatchKernel {
            prepare_row: prepare_row::<B>,
            run: batch::<B>,
        }
    }
    Some(match ty {
        Q8_0 => make::<BlockQ8_0>(),
        Q5_0 => make::<BlockQ5_0>(),
        Q4_0 => make::<BlockQ4_0>(),
        IQ4_NL => make::<BlockIQ4_NL>(),
        _ => return None,
    })
}

/// One token's Q8_0 row `x` → its [`ActBlock`](super::ActBlock)s and f32 scales for weights of
/// format `B`.
fn prepare_row<B: Q0Unsigned>(x: &[u8], out: &mut [super::ActBlock], d: &mut [f32]) {
    let xb = crate::blocks::view::<BlockQ8_0>(x).expect("activation row is whole blocks");
    assert!(
        out.len() == xb.len() && d.len() == xb.len(),
        "prepared activation size mismatch"
    );
    // SAFETY: `batch_kernel` hands this function out, and `kernel` the one-token `rows` that
    // calls it, only when the CPU has every feature `prepare_blocks` enables; the three slices
    // have the same length (checked above).
    unsafe { prepare_blocks::<B>(xb, out, d) }
}

/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn prepare_blocks<B: Q0Unsigned>(
    xb: &[BlockQ8_0],
    out: &mut [super::ActBlock],
    d: &mut [f32],
) {
    let off = _mm256_set1_epi8(<B as Q0Unsigned>::OFF as i8);
    let zero = _mm256_setzero_si256();
    for ((b, o), d) in xb.iter().zip(out.iter_mut()).zip(d.iter_mut()) {
        // SAFETY: reads the 32 bytes of `b.qs`.
        let y = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
        let s = _mm256_dpbusd_epi32(zero, off, y);
        // SAFETY: writes the 32 bytes of `o.y` and of `o.init`.
        unsafe {
            _mm256_storeu_si256(o.y.as_mut_ptr().cast(), y);
            _mm256_storeu_si256(o.init.as_mut_ptr().cast(), _mm256_sub_epi32(zero, s));
        }
        *d = h2f(b.d);
    }
}

/// Rows `0..BR` of a group (a row past the last, `rows`, repeats the last) → `ws[i * BP + p]`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[r]` points to `nb` blocks;
/// `ws.len() >= nb * BP`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack<B: Q0Unsigned>(w: [*const B; BR], nb: usize, ws: &mut [WBlock]) {
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (i, wsi) in ws.chunks_exact_mut(BP).take(nb).enumerate() {
        for (p, o) in wsi.iter_mut().enumerate() {
            // SAFETY: `i < nb` (the caller's bound).
            let (a, b) = unsafe { (&*w[2 * p].add(i), &*w[2 * p + 1].add(i)) };
            // SAFETY: the features are enabled here.
            let q = unsafe { B::pair_u(a, b) };
            let d = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h2f2(a.d(), b.d())));
            // SAFETY: `o` is 64-byte aligned (`WBlock`); each store writes one of its fields.
            unsafe {
                _mm512_store_si512(o.q.as_mut_ptr().cast(), q);
                _mm512_store_ps(o.d.as_mut_ptr(), d);
            }
        }
    }
}

/// The `BP` row pairs unpacked in `ws` × `T` tokens: the eight-lane accumulators (row pair `p`,
/// token `t`), two rows per register as in [`pairs`].
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; `ws` holds `nb * BP` blocks; each `x[t]`
/// and `d[t]` point to `nb` prepared blocks and scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const T: usize>(
    ws: &[WBlock],
    x: [*const super::ActBlock; T],
    d: [*const f32; T],
    nb: usize,
) -> [[__m512; T]; BP] {
    let mut acc = [[_mm512_setzero_ps(); T]; BP];
    for (i, wsi) in ws.chunks_exact(BP).take(nb).enumerate() {
        // SAFETY: aligned 64-byte loads of the fields of `wsi[p]`.
        let (q, dw): ([__m512i; BP], [__m512; BP]) = unsafe {
            (
                std::array::from_fn(|p| _mm512_load_si512(wsi[p].q.as_ptr().cast())),
                std::array::from_fn(|p| _mm512_load_ps(wsi[p].d.as_ptr())),
            )
        };
        for t in 0..T {
            // SAFETY: `i < nb` (the caller's bound); the loads read the block's fields.
            let (y, init, dx) = unsafe {
                let a = &*x[t].add(i);
                (
                    _mm512_broadcast_i64x4(_mm256_load_si256(a.y.as_ptr().cast())),
                    _mm512_broadcast_i64x4(_mm256_load_si256(a.init.as_ptr().cast())),
                    _mm512_set1_ps(*d[t].add(i)),
                )
            };
            for p in 0..BP {
                let s = _mm512_dpbusd_epi32(init, q[p], y);
                let scale = _mm512_mul_ps(dw[p], dx);
                acc[p][t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(s), acc[p][t]);
            }
        }
    }
    acc
}

/// The eight outputs of each of two tokens from their accumulators (`a[p]`, `b[p]`: row pair
/// `p`): `[a rows 0..8, b rows 0..8]`, each the tree `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`
/// of its eight lanes (as [`reduce8`]), computed for sixteen outputs at once.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce_tile(a: [__m512; BP], b: [__m512; BP]) -> __m512 {
    // 128-bit quarters [row 2p lanes 0..4, 4..8, row 2p+1 lanes 0..4, 4..8] of two pairs →
    // per row (four quarters, four rows) [l0+l4, l1+l5, l2+l6, l3+l7].
    let s = |u: __m512, v: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(u, v),
            _mm512_shuffle_f32x4::<0xDD>(u, v),
        )
    };
    // Rows 0..4 and 4..8 → per quarter j [u0(j), u1(j), u0(j+4), u1(j+4)], with
    // u0 = (l0+l4)+(l2+l6), u1 = (l1+l5)+(l3+l7).
    let u = |c: __m512, e: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(c, e),
            _mm512_shuffle_ps::<0xEE>(c, e),
        )
    };
    let ua = u(s(a[0], a[1]), s(a[2], a[3]));
    let ub = u(s(b[0], b[1]), s(b[2], b[3]));
    // u0 + u1 → per quarter j [a row j, a row j+4, b row j, b row j+4].
    let v = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(ua, ub),
        _mm512_shuffle_ps::<0xDD>(ua, ub),
    );
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, v)
}

/// [`tile`] for tokens `t..t + T`, written to rows `r..r + n_rows` (`n_rows <= BR`) of each
/// token's output.
///
/// # Safety
/// As [`tile`], for `x.blocks` and `x.d` from token `t` on.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_out<const T: usize>(
    ws: &[WBlock],
    x: &super::BatchActs,
    t: usize,
    r: usize,
    n_rows: usize,
    out: &mut super::OutRows,
) {
    let nb = x.nb;
    let xp = std::array::from_fn(|k| x.blocks[(t + k) * nb..].as_ptr());
    let dp = std::array::from_fn(|k| x.d[(t + k) * nb..].as_ptr());
    // SAFETY: the caller's contract.
    let acc = unsafe { tile::<T>(ws, xp, dp, nb) };
    let mut k = 0;
    while k < T {
        let k2 = (k + 1).min(T - 1);
        let v = reduce_tile(
            std::array::from_fn(|p| acc[p][k]),
            std::array::from_fn(|p| acc[p][k2]),
        );
        let mut res = [0f32; 2 * BR];
        // SAFETY: writes the 64 bytes of `res`.
        unsafe { _mm512_storeu_ps(res.as_mut_ptr(), v) };
        for (j, tok) in [(0, t + k), (1, t + k2)].into_iter().take(k2 - k + 1) {
            out.write(tok, r, &res[j * BR..j * BR + n_rows]);
        }
        k += 2;
    }
}

/// The batch kernel for format `B` (see [`super::BatchKernel`]).
fn batch<B: Q0Unsigned + crate::blocks::Block>(
    w: &[u8],
    row_bytes: usize,
    x: &super::BatchActs,
    tokens: std::ops::Range<usize>,
    out: &mut super::OutRows,
) {
    let (nb, rows) = x.check::<B>(w, row_bytes, &tokens);
    if rows == 0 {
        return;
    }
    let mut ws = vec![
        WBlock {
            q: [0; 64],
            d: [0.0; 16]
        };
        nb * BP
    ];
    let mut r = 0;
    while r < rows {
        let wp = std::array::from_fn(|k| row_ptr::<B>(w, row_bytes, (r + k).min(rows - 1)));
        // SAFETY: `batch_kernel` hands this function out only when the CPU has every feature
        // these functions enable; every row holds `nb` blocks (checked above) and `ws` has
        // `nb * BP` blocks.
        unsafe { unpack::<B>(wp, nb, &mut ws) };
        let n_rows = (rows - r).min(BR);
        let mut t = tokens.start;
        while t + BT <= tokens.end {
            // SAFETY: as above; `x` holds `nb` blocks for every token below
            // `tokens.end <= x.n` (checked above).
            unsafe { tile_out::<BT>(&ws, x, t, r, n_rows, out) };
            t += BT;
        }
        match tokens.end - t {
            // SAFETY: as above.
            3 => unsafe { tile_out::<3>(&ws, x, t, r, n_rows, out) },
            // SAFETY: as above.
            2 => unsafe { tile_out::<2>(&ws, x, t, r, n_rows, out) },
            // SAFETY: as above.
            1 => unsafe { tile_out::<1>(&ws, x, t, r, n_rows, out) },
            _ => {}
        }
        r += BR;
    }
}

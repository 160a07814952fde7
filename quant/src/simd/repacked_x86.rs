//! Q4_0, IQ4_NL and MXFP4 × Q8_0 in the order of llama.cpp's repacked x86 kernels, for matrices
//! whose row count is a multiple of 8 (llama.cpp repacks those into 8-row interleaved blocks,
//! `block_q4_0x8` / `block_iq4_nlx8` / `block_mxfp4x8`, and runs `ggml_gemv_*_8x8_q8_0` /
//! `ggml_gemm_*_8x8_q8_0`, which compute every output alike): one float per output,
//! `acc = fma(isum, scale_w · f32(d_x), acc)` block after block, `isum` the exact integer dot
//! product of the whole block and `scale_w` the weight block's scale (`f32(d_w)`; MXFP4:
//! `e8m0_to_f32_half(e)`). See [`scalar::q4_0_repacked`](crate::scalar::q4_0_repacked) and
//! [`scalar::mxfp4::mxfp4_repacked`](crate::scalar::mxfp4::mxfp4_repacked).
//!
//! One lane per weight row, so a vector holds 8 (AVX2) or 16 (AVX-512) rows. Per block, the
//! rows' 16 packed bytes are loaded one 128-bit lane per row (row `p + 4L` in lane `L` of
//! vector `p`) and transposed by dwords inside the 128-bit lanes (`unpack{lo,hi}_epi{32,64}`),
//! so that vector `j` holds packed bytes `4j..4j+4` of every row: the low nibbles are elements
//! `4j..4j+4`, the high ones `16+4j..`. Each meets one broadcast activation dword in an
//! unsigned × signed byte product (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd` on AVX2), which sums
//! to the row's whole-block dot product in its lane. The unsigned operand is the value plus a
//! bias (Q4_0: the nibble, value + 8; IQ4_NL and MXFP4 with VNNI: table value + 128; MXFP4 on
//! AVX2: table value + 12), taken out again as `bias · Σx`; IQ4_NL on AVX2 multiplies |value| by
//! x with the value's sign (its biased values would overflow `vpmaddubsw`'s i16 pairs). The
//! transposed weights serve every token of a batch.

use std::arch::x86_64::*;

use super::avx2::h2f;
use strata_gguf::GgmlType;

use super::{check_rows, Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::{BlockIQ4_NL, BlockMXFP4, BlockQ4_0, BlockQ8_0, IQ4_NL_VALUES, MXFP4_VALUES};
use crate::dequant::e8m0_to_f32_half;

/// Prefetch distance in blocks; a row's block `i + PF` is prefetched when `i % 3 == 0` (three
/// 18-byte blocks are 54 bytes, under a cache line, so no line is skipped).
const PF: usize = 24;

/// The SIMD kernels for a Q4_0, IQ4_NL or MXFP4 matrix whose row count is a multiple of 8, at most at
/// `level`, where this CPU has them.
pub(crate) fn kernels(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    let avx512 = level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available();
    let avx2 = level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available();
    Some(match ty {
        GgmlType::Q4_0 if avx512 => (rows_avx512::<BlockQ4_0>, Some(rows4_avx512::<BlockQ4_0>)),
        GgmlType::Q4_0 if avx2 => (rows_avx2::<BlockQ4_0>, None),
        GgmlType::IQ4_NL if avx512 => (
            rows_avx512::<BlockIQ4_NL>,
            Some(rows4_avx512::<BlockIQ4_NL>),
        ),
        GgmlType::IQ4_NL if avx2 => (rows_avx2::<BlockIQ4_NL>, None),
        GgmlType::MXFP4 if avx512 => (rows_avx512::<BlockMXFP4>, Some(rows4_avx512::<BlockMXFP4>)),
        GgmlType::MXFP4 if avx2 => (rows_avx2::<BlockMXFP4>, None),
        _ => return None,
    })
}

/// Q4_0, IQ4_NL and MXFP4 blocks: a scale and 16 bytes of packed 4-bit codes.
trait Nib: crate::blocks::Block {
    /// The table the codes index (IQ4_NL, MXFP4), or `None` (Q4_0: the codes are value + 8).
    const TABLE: Option<[i8; 16]>;
    /// Whether the AVX2 kernel multiplies |value| by x with the value's sign (IQ4_NL) rather
    /// than the unsigned value + 12 (MXFP4).
    const SIGNED: bool;
    /// The weight scales of eight blocks as floats.
    ///
    /// # Safety
    /// AVX2/F16C available.
    unsafe fn scales8(b: &[&Self]) -> __m256;
    /// The 16 packed codes.
    fn qs(&self) -> &[u8; 16];
}

/// The f16 scales `d` of eight blocks as floats.
///
/// # Safety
/// AVX2/F16C available.
#[inline(always)]
unsafe fn f16_scales8(d: impl Fn(usize) -> [u8; 2]) -> __m256 {
    let d: [i16; 8] = std::array::from_fn(|k| i16::from_le_bytes(d(k)));
    // SAFETY: reads the 16 bytes of `d`; F16C (caller).
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast())) }
}

impl Nib for BlockQ4_0 {
    const TABLE: Option<[i8; 16]> = None;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn scales8(b: &[&Self]) -> __m256 {
        // SAFETY: F16C (caller).
        unsafe { f16_scales8(|k| b[k].d) }
    }
    #[inline(always)]
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
}

impl Nib for BlockIQ4_NL {
    const TABLE: Option<[i8; 16]> = Some(IQ4_NL_VALUES);
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn scales8(b: &[&Self]) -> __m256 {
        // SAFETY: F16C (caller).
        unsafe { f16_scales8(|k| b[k].d) }
    }
    #[inline(always)]
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
}

impl Nib for BlockMXFP4 {
    const TABLE: Option<[i8; 16]> = Some(MXFP4_VALUES);
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn scales8(b: &[&Self]) -> __m256 {
        let s: [f32; 8] = std::array::from_fn(|k| e8m0_to_f32_half(b[k].e));
        // SAFETY: reads the 32 bytes of `s`; AVX (caller).
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn qs(&self) -> &[u8; 16] {
        &self.qs
    }
}

/// Σ of the 32 activation quants of a block.
#[inline(always)]
fn qsum(a: &BlockQ8_0) -> i32 {
    a.qs.iter().map(|&v| v as i32).sum()
}

/// Activation dword `j` (quants `4j..4j+4`) of `a`.
#[inline(always)]
fn xdword(a: &BlockQ8_0, j: usize) -> i32 {
    let q = &a.qs[4 * j..4 * j + 4];
    i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
}

/// The 16 packed quant bytes of a block.
///
/// # Safety
/// SSE2 (x86-64 baseline).
#[inline(always)]
unsafe fn load_qs<B: Nib>(b: &B) -> __m128i {
    // SAFETY: reads the 16 bytes of `b.qs()`.
    unsafe { _mm_loadu_si128(b.qs().as_ptr().cast()) }
}

/// The 16-byte value table `table` in every 128-bit lane of a 256-bit vector, plus `bias` per
/// byte.
///
/// # Safety
/// AVX2 available.
#[inline(always)]
unsafe fn table256(table: [i8; 16], bias: i8) -> __m256i {
    let t: [i8; 16] = std::array::from_fn(|k| table[k].wrapping_add(bias));
    // SAFETY: reads the 16 bytes of `t`; AVX2 (caller).
    unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast())) }
}

/// 8 rows × `T` tokens.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[k]` points to `nb` readable blocks, each `x[t]` to `nb`
/// Q8_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot8<B: Nib, const T: usize>(
    w: [*const B; 8],
    x: [*const BlockQ8_0; T],
    nb: usize,
) -> [[f32; 8]; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let m4 = _mm256_set1_epi8(0x0F);
    for i in 0..nb {
        if i % 3 == 0 {
            for p in w {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + PF).cast());
            }
        }
        // SAFETY: `i < nb` (caller).
        let b: [&B; 8] = std::array::from_fn(|k| unsafe { &*w[k].add(i) });
        // SAFETY: SSE2 is baseline.
        let p: [__m256i; 4] =
            std::array::from_fn(|r| unsafe { _mm256_set_m128i(load_qs(b[r + 4]), load_qs(b[r])) });
        let (t0, t1) = (
            _mm256_unpacklo_epi32(p[0], p[1]),
            _mm256_unpacklo_epi32(p[2], p[3]),
        );
        let (t2, t3) = (
            _mm256_unpackhi_epi32(p[0], p[1]),
            _mm256_unpackhi_epi32(p[2], p[3]),
        );
        let v = [
            _mm256_unpacklo_epi64(t0, t1),
            _mm256_unpackhi_epi64(t0, t1),
            _mm256_unpacklo_epi64(t2, t3),
            _mm256_unpackhi_epi64(t2, t3),
        ];
        let lo = v.map(|v| _mm256_and_si256(v, m4));
        let hi = v.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4));
        // SAFETY: AVX2/F16C are enabled here.
        let dw = unsafe { B::scales8(&b) };
        if let (Some(table), false) = (B::TABLE, B::SIGNED) {
            // Unsigned value + 12 (0..=24), pairs ≤ 2·24·128; each vector's pairs widened to
            // i32 at once; the bias taken out as 12·Σx.
            // SAFETY: AVX2 is enabled here.
            let lut = unsafe { table256(table, 12) };
            let vals: [__m256i; 8] = std::array::from_fn(|k| {
                _mm256_shuffle_epi8(lut, if k < 4 { lo[k] } else { hi[k - 4] })
            });
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut dot = _mm256_set1_epi32(-12 * qsum(a));
                for k in 0..8 {
                    let xb = _mm256_set1_epi32(xdword(a, k));
                    let p = _mm256_maddubs_epi16(vals[k], xb);
                    dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(h2f(a.d)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            }
            continue;
        }
        if let Some(table) = B::TABLE {
            // Signed values: |value| × (x with the value's sign), pairs ≤ 2·127·128 < 2^15.
            // SAFETY: AVX2 is enabled here.
            let lut = unsafe { table256(table, 0) };
            let vals: [__m256i; 8] = std::array::from_fn(|k| {
                _mm256_shuffle_epi8(lut, if k < 4 { lo[k] } else { hi[k - 4] })
            });
            let abs = vals.map(|v| _mm256_abs_epi8(v));
            for t in 0..T {
                // SAFETY: `i < nb` (caller).
                let a = unsafe { &*x[t].add(i) };
                let mut dot = _mm256_setzero_si256();
                for k in 0..8 {
                    let xb = _mm256_set1_epi32(xdword(a, k));
                    let p = _mm256_maddubs_epi16(abs[k], _mm256_sign_epi8(xb, vals[k]));
                    dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(h2f(a.d)));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[t]);
            }
            continue;
        }
        for t in 0..T {
            // SAFETY: `i < nb` (caller).
            let a = unsafe { &*x[t].add(i) };
            // Pair products ≤ 2·15·128 and eight of them summed stay below 2^15: exact in i16.
            let mut s = _mm256_setzero_si256();
            for j in 0..4 {
                s = _mm256_add_epi16(
                    s,
                    _mm256_maddubs_epi16(lo[j], _mm256_set1_epi32(xdword(a, j))),
                );
                s = _mm256_add_epi16(
                    s,
                    _mm256_maddubs_epi16(hi[j], _mm256_set1_epi32(xdword(a, 4 + j))),
                );
            }
            let dot = _mm256_madd_epi16(s, _mm256_set1_epi16(1));
            let isum = _mm256_sub_epi32(dot, _mm256_set1_epi32(8 * qsum(a)));
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(h2f(a.d)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[t]);
        }
    }
    acc.map(|v| {
        let mut o = [0f32; 8];
        // SAFETY: writes the 8 floats of `o`.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
        o
    })
}

/// 16 rows × `T` tokens.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA/F16C available; each `w[k]` points to `nb` readable
/// blocks, each `x[t]` to `nb` Q8_0 blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot16<B: Nib, const T: usize>(
    w: [*const B; 16],
    x: [*const BlockQ8_0; T],
    nb: usize,
) -> [[f32; 16]; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    let m4 = _mm512_set1_epi8(0x0F);
    for i in 0..nb {
        if i % 3 == 0 {
            for p in w {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i + PF).cast());
            }
        }
        // SAFETY: `i < nb` (caller).
        let b: [&B; 16] = std::array::from_fn(|k| unsafe { &*w[k].add(i) });
        // Vector r: rows r, r + 4, r + 8, r + 12 in its four 128-bit lanes.
        // SAFETY: SSE2 is baseline.
        let p: [__m512i; 4] = std::array::from_fn(|r| unsafe {
            let v = _mm512_castsi128_si512(load_qs(b[r]));
            let v = _mm512_inserti32x4::<1>(v, load_qs(b[r + 4]));
            let v = _mm512_inserti32x4::<2>(v, load_qs(b[r + 8]));
            _mm512_inserti32x4::<3>(v, load_qs(b[r + 12]))
        });
        let (t0, t1) = (
            _mm512_unpacklo_epi32(p[0], p[1]),
            _mm512_unpacklo_epi32(p[2], p[3]),
        );
        let (t2, t3) = (
            _mm512_unpackhi_epi32(p[0], p[1]),
            _mm512_unpackhi_epi32(p[2], p[3]),
        );
        let v = [
            _mm512_unpacklo_epi64(t0, t1),
            _mm512_unpackhi_epi64(t0, t1),
            _mm512_unpacklo_epi64(t2, t3),
            _mm512_unpackhi_epi64(t2, t3),
        ];
        let mut lo = v.map(|v| _mm512_and_si512(v, m4));
        let mut hi = v.map(|v| _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4));
        if let Some(table) = B::TABLE {
            // Table value + 128 (IQ4_NL: 1..=241, MXFP4: 116..=140; unsigned).
            // SAFETY: AVX2 is enabled here.
            let lut = _mm512_broadcast_i64x4(unsafe { table256(table, -128) });
            lo = lo.map(|v| _mm512_shuffle_epi8(lut, v));
            hi = hi.map(|v| _mm512_shuffle_epi8(lut, v));
        }
        let bias = if B::TABLE.is_some() { 128 } else { 8 };
        // SAFETY: AVX2/F16C are enabled here.
        let dw = unsafe {
            let (l, h) = (B::scales8(&b[..8]), B::scales8(&b[8..]));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(l)),
                _mm256_castps_pd(h),
            ))
        };
        for t in 0..T {
            // SAFETY: `i < nb` (caller).
            let a = unsafe { &*x[t].add(i) };
            let mut dot = _mm512_set1_epi32(-bias * qsum(a));
            for j in 0..4 {
                dot = _mm512_dpbusd_epi32(dot, lo[j], _mm512_set1_epi32(xdword(a, j)));
                dot = _mm512_dpbusd_epi32(dot, hi[j], _mm512_set1_epi32(xdword(a, 4 + j)));
            }
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(h2f(a.d)));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
        }
    }
    acc.map(|v| {
        let mut o = [0f32; 16];
        // SAFETY: writes the 16 floats of `o`.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
        o
    })
}

/// Row pointers `r..r + N`, the ones past `rows` repeating row `rows − 1` (their results are
/// dropped).
#[inline(always)]
fn ptrs<B, const N: usize>(w: &[u8], row_bytes: usize, r: usize, rows: usize) -> [*const B; N] {
    std::array::from_fn(|k| w[(r + k).min(rows - 1) * row_bytes..].as_ptr().cast())
}

/// Runs `dot8::<T>` over every row, eight at a time (the last group padded).
#[inline(always)]
fn by8<B: Nib, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    x: [*const BlockQ8_0; T],
    nb: usize,
    r0: usize,
    rows: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    let mut r = r0;
    while r < rows {
        // SAFETY: callers hand these functions out only when the CPU has AVX2/FMA/F16C, and
        // checked (`check_rows`) that every row holds `nb` blocks and each `x[t]` `nb` blocks.
        let res = unsafe { dot8::<B, T>(ptrs(w, row_bytes, r, rows), x, nb) };
        for (t, res) in res.iter().enumerate() {
            for (k, &v) in res.iter().enumerate().take(rows - r) {
                put(t, r + k, v);
            }
        }
        r += 8;
    }
}

fn rows_avx2<B: Nib>(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let rows = out.len();
    let nb = check_rows::<B, BlockQ8_0>(w, row_bytes, x, rows);
    by8::<B, 1>(w, row_bytes, [x.as_ptr().cast()], nb, 0, rows, |_, r, v| {
        out[r] = v
    });
}

/// Runs `dot16::<T>` over the rows sixteen at a time, the rest through [`by8`].
#[inline(always)]
fn by16<B: Nib, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    x: [*const BlockQ8_0; T],
    nb: usize,
    rows: usize,
    mut put: impl FnMut(usize, usize, f32),
) {
    let mut r = 0;
    while r + 16 <= rows {
        // SAFETY: callers hand these functions out only when the CPU has AVX-512 F/BW/VL/VNNI
        // and AVX2/FMA/F16C, and checked that every row holds `nb` blocks and each `x[t]` `nb`.
        let res = unsafe { dot16::<B, T>(ptrs(w, row_bytes, r, rows), x, nb) };
        for (t, res) in res.iter().enumerate() {
            for (k, &v) in res.iter().enumerate() {
                put(t, r + k, v);
            }
        }
        r += 16;
    }
    by8::<B, T>(w, row_bytes, x, nb, r, rows, put);
}

fn rows_avx512<B: Nib>(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let rows = out.len();
    let nb = check_rows::<B, BlockQ8_0>(w, row_bytes, x, rows);
    by16::<B, 1>(w, row_bytes, [x.as_ptr().cast()], nb, rows, |_, r, v| {
        out[r] = v
    });
}

fn rows4_avx512<B: Nib>(w: &[u8], row_bytes: usize, x: [&[u8]; 4], mut out: [&mut [f32]; 4]) {
    let rows = out[0].len();
    assert!(
        out.iter().all(|o| o.len() == rows),
        "output rows differ in length"
    );
    let mut nb = 0;
    for xt in x {
        nb = check_rows::<B, BlockQ8_0>(w, row_bytes, xt, rows);
    }
    by16::<B, 4>(
        w,
        row_bytes,
        x.map(|s| s.as_ptr().cast()),
        nb,
        rows,
        |t, r, v| out[t][r] = v,
    );
}

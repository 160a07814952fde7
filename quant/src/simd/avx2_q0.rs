//! The AVX2 batch kernel (see [`super::BatchKernel`]) for the formats multiplied with Q8_0
//! activations: Q8_0, Q5_0, Q4_0, IQ4_NL, in llama.cpp's `vec_dot`/`tinyBLAS_Q0_AVX` float order
//! (described in [`super::avx512_q0`]): per output eight f32 lanes, for each block in order
//! `acc[l] = fma(f32(d_w) · f32(d_x), p[l], acc[l])` with `p[l]` the exact integer sum of the
//! products of bytes `4l..4l+4`, then the tree `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
//!
//! The one-token AVX2 kernels ([`super::avx2`]) unpack a weight block for every token that
//! meets it. Here, per group of [`BR`] rows, every weight block is unpacked once into a
//! scratch buffer (32 quant bytes and the f32 scale broadcast to eight lanes), and register
//! tiles of [`BR`] rows × [`BT`] tokens run over all blocks of the group, for every token of the
//! call. Per (row, token, block) the tile spends six vector instructions: `vpmaddubsw`,
//! `vpmaddwd`, an integer add or a sign fix-up, `vcvtdq2ps`, the scale product and the FMA.
//!
//! Integer sums, two forms (both exact, so both give the lanes' `p[l]`):
//! - **Offset form** (Q4_0, Q5_0: quants in −16..=15): the weights are stored as `q + OFF`
//!   (0..=31), the unsigned operand of `vpmaddubsw` (pairs at most 2·31·127: no saturation),
//!   and each lane adds `−OFF · Σ y` over its four activation bytes, prepared once per token
//!   and block ([`super::ActBlock::init`]).
//! - **Sign form** (Q8_0, IQ4_NL: quants in −128..=127, where `q + 128` would saturate the
//!   i16 pairs): `|q| · (y with the sign of q)`, llama.cpp's own trick; `|q|` and `q` are both
//!   stored.
//!
//! Per lane the float operations are those of the one-token kernel, so every output equals
//! the scalar reference bit for bit whatever the grouping of rows and tokens.

use std::arch::x86_64::*;

use super::avx2::{h2f, Q0Avx2};
use super::{ActBlock, BatchActs, BatchKernel, OutRows};
use crate::blocks::{BlockIQ4_NL, BlockQ4_0, BlockQ5_0, BlockQ8_0};

/// Rows per register tile (and per unpacked row group).
const BR: usize = 4;
/// Tokens per register tile: `BR × BT` accumulators, with the `BR` weight vectors, fit the
/// sixteen `ymm` registers.
const BT: usize = 2;

/// One row's block unpacked for the batch kernel.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct WBlock {
    /// `q + OFF` (offset form) or `|q|` (sign form).
    q: [u8; 32],
    /// The signed quants (sign form only).
    s: [i8; 32],
    /// The block's scale, eight lanes.
    d: [f32; 8],
}

/// The batch kernel for `ty` (`Some` for Q8_0, Q5_0, Q4_0, IQ4_NL); the caller checked that
/// AVX2, FMA and F16C are available.
pub(super) fn batch_kernel(ty: strata_gguf::GgmlType) -> Option<BatchKernel> {
    use strata_gguf::GgmlType::*;
    fn make<B: Q0Avx2>() -> BatchKernel {
        BatchKernel {
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

/// One token's Q8_0 row `x` → its [`ActBlock`]s (`init` = `−OFF · Σ y` per lane) and f32
/// scales for weights of format `B`.
fn prepare_row<B: Q0Avx2>(x: &[u8], out: &mut [ActBlock], d: &mut [f32]) {
    let xb = crate::blocks::view::<BlockQ8_0>(x).expect("activation row is whole blocks");
    assert!(
        out.len() == xb.len() && d.len() == xb.len(),
        "prepared activation size mismatch"
    );
    // SAFETY: `batch_kernel` hands this function out only when the CPU has every feature
    // `prepare_blocks` enables; the three slices have the same length (checked above).
    unsafe { prepare_blocks::<B>(xb, out, d) }
}

/// # Safety
/// AVX2/FMA/F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prepare_blocks<B: Q0Avx2>(xb: &[BlockQ8_0], out: &mut [ActBlock], d: &mut [f32]) {
    let off = _mm256_set1_epi8(B::OFF as i8);
    let ones = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    for ((b, o), d) in xb.iter().zip(out.iter_mut()).zip(d.iter_mut()) {
        // SAFETY: reads the 32 bytes of `b.qs`.
        let y = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
        // `OFF · (y_a + y_b)` per byte pair (at most 16 · 254), then per lane of four.
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(off, y), ones);
        // SAFETY: writes the 32 bytes of `o.y` and of `o.init`.
        unsafe {
            _mm256_storeu_si256(o.y.as_mut_ptr().cast(), y);
            _mm256_storeu_si256(o.init.as_mut_ptr().cast(), _mm256_sub_epi32(zero, s));
        }
        *d = h2f(b.d);
    }
}

/// Rows `w[0..BR]`' blocks → `ws[i * BR + r]`.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` points to `nb` blocks; `ws.len() >= nb * BR`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack<B: Q0Avx2>(w: [*const B; BR], nb: usize, ws: &mut [WBlock]) {
    for (i, wsi) in ws.chunks_exact_mut(BR).take(nb).enumerate() {
        for (r, o) in wsi.iter_mut().enumerate() {
            // SAFETY: `i < nb` (the caller's bound).
            let b = unsafe { &*w[r].add(i) };
            // SAFETY: the features are enabled here.
            let q = unsafe { B::quants(b) };
            let d = _mm256_set1_ps(h2f(b.d()));
            // SAFETY: `o` is 32-byte aligned (`WBlock`); each store writes one of its fields.
            unsafe {
                if B::OFF == 0 {
                    _mm256_store_si256(o.q.as_mut_ptr().cast(), _mm256_abs_epi8(q));
                    _mm256_store_si256(o.s.as_mut_ptr().cast(), q);
                } else {
                    _mm256_store_si256(o.q.as_mut_ptr().cast(), q);
                }
                _mm256_store_ps(o.d.as_mut_ptr(), d);
            }
        }
    }
}

/// The `BR` rows unpacked in `ws` × `T` tokens: the eight-lane accumulators `[row][token]`.
///
/// # Safety
/// AVX2/FMA/F16C available; `ws` holds `nb * BR` blocks; each `x[t]` and `d[t]` point to `nb`
/// prepared blocks and scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const SIGNED: bool, const T: usize>(
    ws: &[WBlock],
    x: [*const ActBlock; T],
    d: [*const f32; T],
    nb: usize,
) -> [[__m256; T]; BR] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); T]; BR];
    for (i, wsi) in ws.chunks_exact(BR).take(nb).enumerate() {
        // SAFETY: `i < nb` (the caller's bound).
        let (a, dx): ([&ActBlock; T], [__m256; T]) = unsafe {
            (
                std::array::from_fn(|t| &*x[t].add(i)),
                std::array::from_fn(|t| _mm256_set1_ps(*d[t].add(i))),
            )
        };
        // Row by row (one weight vector live at a time: the accumulators, the tokens' scales
        // and the temporaries fill the sixteen registers without spilling).
        for (r, wr) in wsi.iter().enumerate() {
            // SAFETY: aligned 32-byte loads of `wr`'s fields.
            let (q, dw) = unsafe {
                (
                    _mm256_load_si256(wr.q.as_ptr().cast()),
                    _mm256_load_ps(wr.d.as_ptr()),
                )
            };
            for t in 0..T {
                // SAFETY: aligned 32-byte loads of `a[t]`'s fields and of `wr.s`.
                let (y, init, sg) = unsafe {
                    (
                        _mm256_load_si256(a[t].y.as_ptr().cast()),
                        _mm256_load_si256(a[t].init.as_ptr().cast()),
                        _mm256_load_si256(wr.s.as_ptr().cast()),
                    )
                };
                let s = if SIGNED {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_sign_epi8(y, sg)), ones)
                } else {
                    _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones), init)
                };
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_mul_ps(dw, dx[t]), _mm256_cvtepi32_ps(s), acc[r][t]);
            }
        }
    }
    acc
}

/// The four rows' outputs of one token from their accumulators, each the tree
/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))` of its eight lanes (as [`super::avx2::reduce8`]),
/// computed for the four at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(v: [__m256; BR]) -> __m128 {
    // Per row [l0+l4, l1+l5, l2+l6, l3+l7].
    let s = v.map(|v| _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)));
    // [u0(a), u1(a), u0(b), u1(b)], u0 = (l0+l4)+(l2+l6), u1 = (l1+l5)+(l3+l7).
    let u = |a: __m128, b: __m128| {
        _mm_add_ps(
            _mm_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    };
    let (ab, cd) = (u(s[0], s[1]), u(s[2], s[3]));
    _mm_add_ps(
        _mm_shuffle_ps::<0b10_00_10_00>(ab, cd),
        _mm_shuffle_ps::<0b11_01_11_01>(ab, cd),
    )
}

/// [`tile`] for tokens `t..t + T`, written to rows `r..r + n_rows` (`n_rows <= BR`) of each
/// token's output.
///
/// # Safety
/// As [`tile`], for `x.blocks` and `x.d` from token `t` on.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_out<const SIGNED: bool, const T: usize>(
    ws: &[WBlock],
    x: &BatchActs,
    t: usize,
    r: usize,
    n_rows: usize,
    out: &mut OutRows,
) {
    let nb = x.nb;
    let xp = std::array::from_fn(|k| x.blocks[(t + k) * nb..].as_ptr());
    let dp = std::array::from_fn(|k| x.d[(t + k) * nb..].as_ptr());
    // SAFETY: the caller's contract.
    let acc = unsafe { tile::<SIGNED, T>(ws, xp, dp, nb) };
    for k in 0..T {
        let mut res = [0f32; BR];
        // SAFETY: writes the 16 bytes of `res`.
        unsafe {
            _mm_storeu_ps(
                res.as_mut_ptr(),
                reduce4(std::array::from_fn(|r| acc[r][k])),
            )
        };
        out.write(t + k, r, &res[..n_rows]);
    }
}

/// Rows `r` of `w` as block pointers, `row_bytes` apart.
#[inline(always)]
fn row_ptr<B>(w: &[u8], row_bytes: usize, r: usize) -> *const B {
    w[r * row_bytes..].as_ptr().cast()
}

/// The batch kernel for format `B` (see [`BatchKernel`]).
fn batch<B: Q0Avx2>(
    w: &[u8],
    row_bytes: usize,
    x: &BatchActs,
    tokens: std::ops::Range<usize>,
    out: &mut OutRows,
) {
    let (nb, rows) = x.check::<B>(w, row_bytes, &tokens);
    if rows == 0 {
        return;
    }
    let blank = WBlock {
        q: [0; 32],
        s: [0; 32],
        d: [0.0; 8],
    };
    let mut ws = vec![blank; nb * BR];
    let mut r = 0;
    while r < rows {
        // A last group of fewer rows repeats its last row (computed, not written).
        let wp = std::array::from_fn(|k| row_ptr::<B>(w, row_bytes, (r + k).min(rows - 1)));
        // SAFETY: `batch_kernel` hands this function out only when the CPU has every feature
        // these functions enable; every row holds `nb` blocks (checked above) and `ws` has
        // `nb * BR` blocks.
        unsafe { unpack::<B>(wp, nb, &mut ws) };
        let n_rows = (rows - r).min(BR);
        let mut t = tokens.start;
        while t + BT <= tokens.end {
            // SAFETY: as above; `x` holds `nb` blocks for every token below
            // `tokens.end <= x.n` (checked above).
            unsafe { run_tile::<B, BT>(&ws, x, t, r, n_rows, out) };
            t += BT;
        }
        if t < tokens.end {
            // SAFETY: as above.
            unsafe { run_tile::<B, 1>(&ws, x, t, r, n_rows, out) };
        }
        r += BR;
    }
}

/// [`tile_out`] in the form `B` takes.
///
/// # Safety
/// As [`tile_out`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_tile<B: Q0Avx2, const T: usize>(
    ws: &[WBlock],
    x: &BatchActs,
    t: usize,
    r: usize,
    n_rows: usize,
    out: &mut OutRows,
) {
    // SAFETY: the caller's contract.
    unsafe {
        if B::OFF == 0 {
            tile_out::<true, T>(ws, x, t, r, n_rows, out)
        } else {
            tile_out::<false, T>(ws, x, t, r, n_rows, out)
        }
    }
}

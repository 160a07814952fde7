//! What the 16-bit float kernels (`f16`, `bf16`) share: size checks, the 16-lane reductions, and
//! macros that turn an inner kernel over `N` rows (× `T` tokens) into a
//! [`RowsFn`](super::RowsFn) and a [`Rows4Fn`](super::Rows4Fn). The inner kernels fix the float
//! order; these only group rows and reduce lanes.

use std::arch::x86_64::*;

use super::avx2::reduce8;

/// `_mm512_reduce_add_ps` (GCC's order) of a 16-lane accumulator held as halves (lanes 0..8,
/// 8..16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn reduce16_halves(lo: __m256, hi: __m256) -> f32 {
    reduce8(_mm256_add_ps(lo, hi))
}

/// `_mm512_reduce_add_ps` (GCC's order) of a 512-bit accumulator.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) fn reduce16_512(v: __m512) -> f32 {
    reduce16_halves(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    )
}

/// Checks the sizes of a product of 16-bit float weights and activations; returns the row
/// length in elements.
pub(super) fn check(w: &[u8], row_bytes: usize, x: &[u8], rows: usize) -> usize {
    assert!(
        row_bytes == x.len() && row_bytes.is_multiple_of(2),
        "16-bit float row size mismatch"
    );
    assert!(
        w.len() >= rows * row_bytes,
        "weights shorter than {rows} rows"
    );
    row_bytes / 2
}

/// Defines the one-token row kernel `$name` over `$inner::<N>(rows, x, n)` (rows in fours, then
/// single rows). The caller's module imports `by_rows`.
macro_rules! vec_dot_rows {
    ($name:ident, $inner:ident) => {
        fn $name(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let n = super::half_rows::check(w, row_bytes, x, out.len());
            let xp = x.as_ptr();
            by_rows!(w, row_bytes, out,
                // SAFETY: the selection functions hand this kernel out only when the CPU has the
                // features `$inner` enables; `check` verified every row and `x` hold `n` values.
                |p: [4]| unsafe { $inner::<4>(p, xp, n) },
                // SAFETY: as above.
                |p: [1]| unsafe { $inner::<1>(p, xp, n) })
        }
    };
}
pub(super) use vec_dot_rows;

/// Defines the tinyBLAS-order kernels over `$inner::<N, T>(rows, tokens, n)`, whose rows must be
/// a multiple of `$block` elements: `$rows` (rows in fours, one token) and `$rows4` (2 rows ×
/// 4 tokens at a time). The caller's module imports `by_rows`.
macro_rules! sgemm_rows {
    ($rows:ident, $rows4:ident, $inner:ident, $block:literal) => {
        fn $rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let n = super::half_rows::check(w, row_bytes, x, out.len());
            assert!(
                n.is_multiple_of($block),
                "tinyBLAS order needs rows of a multiple of {} elements",
                $block
            );
            let xp = [x.as_ptr()];
            by_rows!(w, row_bytes, out,
                // SAFETY: as in `vec_dot_rows`; `n % $block == 0` checked above.
                |p: [4]| unsafe { $inner::<4, 1>(p, xp, n) }.map(|v| v[0]),
                // SAFETY: as above.
                |p: [1]| unsafe { $inner::<1, 1>(p, xp, n) }.map(|v| v[0]))
        }

        fn $rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
            let rows = out[0].len();
            assert!(out.iter().all(|o| o.len() == rows), "output rows differ in length");
            let n = super::half_rows::check(w, row_bytes, x[0], rows);
            for xt in &x[1..] {
                super::half_rows::check(w, row_bytes, xt, rows);
            }
            assert!(
                n.is_multiple_of($block),
                "tinyBLAS order needs rows of a multiple of {} elements",
                $block
            );
            let xp = x.map(|s| s.as_ptr());
            let row = |r: usize| w[r * row_bytes..].as_ptr();
            let mut r = 0;
            while r + 2 <= rows {
                // SAFETY: as in `$rows`, for each of the four activation rows.
                let res = unsafe { $inner::<2, 4>([row(r), row(r + 1)], xp, n) };
                for (k, rr) in res.iter().enumerate() {
                    for t in 0..4 {
                        out[t][r + k] = rr[t];
                    }
                }
                r += 2;
            }
            if r < rows {
                // SAFETY: as above.
                let res = unsafe { $inner::<1, 4>([row(r)], xp, n) };
                for t in 0..4 {
                    out[t][r] = res[0][t];
                }
            }
        }
    };
}
pub(super) use sgemm_rows;

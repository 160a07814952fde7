//! F16 weights × F16 activations in llama.cpp's two float orders (see `scalar::f16` and
//! `scalar::f16_sgemm`), at the AVX-512 and AVX2 levels.
//!
//! - `ggml_vec_dot_f16` order (one token, or a shape tinyBLAS refuses): four 16-lane FMA
//!   accumulators over steps of 64 elements, combined `(s0 + s2) + (s1 + s3)`, reduced as
//!   `_mm512_reduce_add_ps`, the `n mod 64` tail added in `f64`.
//! - tinyBLAS order (2+ tokens, row length a multiple of 16, row count a multiple of 4): one
//!   16-lane FMA accumulator, the same reduction.
//!
//! AVX2 keeps each 16-lane accumulator as two 8-lane halves (lanes 0..8, 8..16): FMAs are lane
//! by lane, so the bits are those of the 16-lane code. Several rows (and, for the batch kernel,
//! tokens) share each load; every (row, token) keeps its own accumulators, so results do not
//! depend on the grouping.

use std::arch::x86_64::*;

use super::avx2::{by_rows, h2f};
use super::half_rows::{reduce16_512, reduce16_halves, sgemm_rows, vec_dot_rows};
use super::{Rows4Fn, RowsFn, SimdLevel};

/// The kernel in `ggml_vec_dot_f16` order at most at `level`, where one exists.
pub(super) fn vec_dot_kernel(level: SimdLevel) -> Option<RowsFn> {
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some(vec_dot_rows_512);
    }
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some(vec_dot_rows_256);
    }
    None
}

/// The (one-token, four-token) kernels in tinyBLAS order at most at `level`, where they exist.
pub(super) fn sgemm_kernels(level: SimdLevel) -> Option<(RowsFn, Rows4Fn)> {
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some((sgemm_rows_512, sgemm_rows4_512));
    }
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some((sgemm_rows_256, sgemm_rows4_256));
    }
    None
}

/// Element `e` of the f16 row at `p`, as f32.
///
/// # Safety
/// F16C available; `p` points to at least `e + 1` f16 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn elem(p: *const u8, e: usize) -> f32 {
    // SAFETY: the caller guarantees element `e` is in bounds.
    let b = unsafe { [*p.add(2 * e), *p.add(2 * e + 1)] };
    h2f(b)
}

/// 16 f16 values at `p` as f32 (AVX-512).
///
/// # Safety
/// `p` points to 32 readable bytes; AVX-512F available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load16(p: *const u8) -> __m512 {
    // SAFETY: the caller guarantees 32 readable bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// 8 f16 values at `p` as f32 (F16C).
///
/// # Safety
/// `p` points to 16 readable bytes; F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// `ggml_vec_dot_f16` order, `N` rows of `n` elements against one activation row.
///
/// # Safety
/// AVX-512 (as this module's `target_feature`) available; each `w[r]` and `x` point to `n`
/// f16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_512<const N: usize>(w: [*const u8; N], x: *const u8, n: usize) -> [f32; N] {
    let np = n / 64 * 64;
    let mut s = [[_mm512_setzero_ps(); 4]; N];
    let mut i = 0;
    while i < np {
        for j in 0..4 {
            let off = 2 * (i + 16 * j);
            // SAFETY: elements i + 16j .. +16 < np ≤ n of `x` and of every row (caller).
            let xv = unsafe { load16(x.add(off)) };
            for r in 0..N {
                // SAFETY: as above.
                let wv = unsafe { load16(w[r].add(off)) };
                s[r][j] = _mm512_fmadd_ps(wv, xv, s[r][j]);
            }
        }
        i += 64;
    }
    std::array::from_fn(|r| {
        let [s0, s1, s2, s3] = s[r];
        let t = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3));
        let mut sum = reduce16_512(t) as f64;
        for e in np..n {
            // SAFETY: `e < n` (caller).
            sum += unsafe { elem(w[r], e) * elem(x, e) } as f64;
        }
        sum as f32
    })
}

/// `ggml_vec_dot_f16` order with AVX2: each 16-lane accumulator as two 8-lane halves.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` and `x` point to `n` f16 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_256<const N: usize>(w: [*const u8; N], x: *const u8, n: usize) -> [f32; N] {
    let np = n / 64 * 64;
    // s[r][j][h]: accumulator j, half h (lanes 8h..8h+8).
    let mut s = [[[_mm256_setzero_ps(); 2]; 4]; N];
    let mut i = 0;
    while i < np {
        for j in 0..4 {
            for half in 0..2 {
                let off = 2 * (i + 16 * j + 8 * half);
                // SAFETY: elements i + 16j + 8h .. +8 < np ≤ n of `x` and every row (caller).
                let xv = unsafe { load8(x.add(off)) };
                for r in 0..N {
                    // SAFETY: as above.
                    let wv = unsafe { load8(w[r].add(off)) };
                    s[r][j][half] = _mm256_fmadd_ps(wv, xv, s[r][j][half]);
                }
            }
        }
        i += 64;
    }
    std::array::from_fn(|r| {
        let s = s[r];
        let t: [__m256; 2] = std::array::from_fn(|h| {
            _mm256_add_ps(
                _mm256_add_ps(s[0][h], s[2][h]),
                _mm256_add_ps(s[1][h], s[3][h]),
            )
        });
        let mut sum = reduce16_halves(t[0], t[1]) as f64;
        for e in np..n {
            // SAFETY: `e < n` (caller).
            sum += unsafe { elem(w[r], e) * elem(x, e) } as f64;
        }
        sum as f32
    })
}

/// tinyBLAS order, `N` rows × `T` tokens (`n` a multiple of 16).
///
/// # Safety
/// AVX-512 available; each `w[r]` and `x[t]` point to `n` f16 values; `n % 16 == 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn sgemm_512<const N: usize, const T: usize>(
    w: [*const u8; N],
    x: [*const u8; T],
    n: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm512_setzero_ps(); T]; N];
    let mut i = 0;
    while i < n {
        // SAFETY: elements i..i+16 ≤ n of every activation row (caller).
        let xv: [__m512; T] = std::array::from_fn(|t| unsafe { load16(x[t].add(2 * i)) });
        for r in 0..N {
            // SAFETY: as above, for weight row r.
            let wv = unsafe { load16(w[r].add(2 * i)) };
            for t in 0..T {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        i += 16;
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16_512(acc[r][t])))
}

/// tinyBLAS order with AVX2 (16-lane accumulators as halves).
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` and `x[t]` point to `n` f16 values; `n % 16 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sgemm_256<const N: usize, const T: usize>(
    w: [*const u8; N],
    x: [*const u8; T],
    n: usize,
) -> [[f32; T]; N] {
    let mut acc = [[[_mm256_setzero_ps(); 2]; T]; N];
    let mut i = 0;
    while i < n {
        for half in 0..2 {
            let off = 2 * (i + 8 * half);
            // SAFETY: elements i + 8h .. +8 ≤ n of every activation row (caller).
            let xv: [__m256; T] = std::array::from_fn(|t| unsafe { load8(x[t].add(off)) });
            for r in 0..N {
                // SAFETY: as above, for weight row r.
                let wv = unsafe { load8(w[r].add(off)) };
                for t in 0..T {
                    acc[r][t][half] = _mm256_fmadd_ps(wv, xv[t], acc[r][t][half]);
                }
            }
        }
        i += 16;
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16_halves(acc[r][t][0], acc[r][t][1])))
}

vec_dot_rows!(vec_dot_rows_512, vec_dot_512);
vec_dot_rows!(vec_dot_rows_256, vec_dot_256);
sgemm_rows!(sgemm_rows_512, sgemm_rows4_512, sgemm_512, 16);
sgemm_rows!(sgemm_rows_256, sgemm_rows4_256, sgemm_256, 16);

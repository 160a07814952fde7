//! BF16 weights × BF16 activations in llama.cpp's two float orders (see `scalar::bf16` and
//! `scalar::bf16_sgemm`): `vdpbf16ps` accumulators, reduced as `_mm512_reduce_add_ps`.
//!
//! - With AVX-512 BF16 the kernels run `vdpbf16ps` itself, as llama.cpp does.
//! - Otherwise (AVX2, or AVX-512 without BF16) they emulate it lane by lane: per 32-bit lane
//!   the odd element's product, then the even one's, each an FMA with subnormal inputs read as
//!   zero and a subnormal result flushed to zero; a 16-lane accumulator is two 8-lane halves.
//!
//! Every (row, token) keeps its own accumulators, so results do not depend on grouping.

use std::arch::x86_64::*;

use super::avx2::by_rows;
use super::half_rows::{reduce16_512, reduce16_halves, sgemm_rows, vec_dot_rows};
use super::{Rows4Fn, RowsFn, SimdLevel};
use crate::blocks::bf16_to_f32;

/// Whether this CPU has `vdpbf16ps` (and the rest of the AVX-512 level).
fn has_native() -> bool {
    SimdLevel::Avx512.is_available() && is_x86_feature_detected!("avx512bf16")
}

/// The kernel in `ggml_vec_dot_bf16` order at most at `level`, where one exists.
pub(super) fn vec_dot_kernel(level: SimdLevel) -> Option<RowsFn> {
    if level >= SimdLevel::Avx512 && has_native() {
        return Some(vec_dot_rows_native);
    }
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some(vec_dot_rows_emul);
    }
    None
}

/// The (one-token, four-token) kernels in tinyBLAS order at most at `level`, where they exist.
pub(super) fn sgemm_kernels(level: SimdLevel) -> Option<(RowsFn, Rows4Fn)> {
    if level >= SimdLevel::Avx512 && has_native() {
        return Some((sgemm_rows_native, sgemm_rows4_native));
    }
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some((sgemm_rows_emul, sgemm_rows4_emul));
    }
    None
}

/// Element `e` of the bf16 row at `p`, as f32.
///
/// # Safety
/// `p` points to at least `e + 1` bf16 values.
#[inline(always)]
unsafe fn elem(p: *const u8, e: usize) -> f32 {
    // SAFETY: the caller guarantees element `e` is in bounds.
    bf16_to_f32(unsafe { [*p.add(2 * e), *p.add(2 * e + 1)] })
}

/// The `f64` tail of `ggml_vec_dot_bf16`: `sum + Σ_{e in from..n} f32(w_e · x_e)`, as `f32`.
///
/// # Safety
/// `w` and `x` point to `n` bf16 values.
#[inline(always)]
unsafe fn tail(mut sum: f64, w: *const u8, x: *const u8, from: usize, n: usize) -> f32 {
    for e in from..n {
        // SAFETY: `e < n` (caller).
        sum += unsafe { elem(w, e) * elem(x, e) } as f64;
    }
    sum as f32
}

/// 32 bf16 values at `p` as a `vdpbf16ps` operand.
///
/// # Safety
/// `p` points to 64 readable bytes; AVX-512 BF16 available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")]
unsafe fn load32(p: *const u8) -> __m512bh {
    // SAFETY: the caller guarantees 64 readable bytes; `__m512bh` and `__m512i` are both 64
    // plain bytes, so the bit cast is valid.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
}

/// `ggml_vec_dot_bf16` order with `vdpbf16ps`, `N` rows against one activation row.
///
/// # Safety
/// AVX-512 BF16 (and this function's other features) available; each `w[r]` and `x` point to
/// `n` bf16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")]
unsafe fn vec_dot_native<const N: usize>(w: [*const u8; N], x: *const u8, n: usize) -> [f32; N] {
    let np = n / 64 * 64;
    let mut c = [[_mm512_setzero_ps(); 2]; N];
    let mut i = 0;
    while i < np {
        for (k, off) in [2 * i, 2 * i + 64].into_iter().enumerate() {
            // SAFETY: elements i + 32k .. +32 < np ≤ n of `x` and every row (caller).
            let xv = unsafe { load32(x.add(off)) };
            for r in 0..N {
                // SAFETY: as above.
                let wv = unsafe { load32(w[r].add(off)) };
                c[r][k] = _mm512_dpbf16_ps(c[r][k], wv, xv);
            }
        }
        i += 64;
    }
    std::array::from_fn(|r| {
        let mut sum = 0f64;
        sum += reduce16_512(c[r][0]) as f64;
        sum += reduce16_512(c[r][1]) as f64;
        // SAFETY: both rows hold `n` values (caller).
        unsafe { tail(sum, w[r], x, np, n) }
    })
}

/// tinyBLAS order with `vdpbf16ps`, `N` rows × `T` tokens (`n` a multiple of 32).
///
/// # Safety
/// AVX-512 BF16 available; each `w[r]` and `x[t]` point to `n` bf16 values; `n % 32 == 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")]
unsafe fn sgemm_native<const N: usize, const T: usize>(
    w: [*const u8; N],
    x: [*const u8; T],
    n: usize,
) -> [[f32; T]; N] {
    let mut acc = [[_mm512_setzero_ps(); T]; N];
    let mut i = 0;
    while i < n {
        // SAFETY: elements i..i+32 ≤ n of every activation row (caller).
        let xv: [__m512bh; T] = std::array::from_fn(|t| unsafe { load32(x[t].add(2 * i)) });
        for r in 0..N {
            // SAFETY: as above, for weight row r.
            let wv = unsafe { load32(w[r].add(2 * i)) };
            for t in 0..T {
                acc[r][t] = _mm512_dpbf16_ps(acc[r][t], wv, xv[t]);
            }
        }
        i += 32;
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16_512(acc[r][t])))
}

/// Subnormal lanes of `v` flushed to zero of the same sign.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn flush(v: __m256) -> __m256 {
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(
        _mm256_and_ps(v, magnitude),
        _mm256_set1_ps(f32::MIN_POSITIVE),
    );
    // Clear exponent and mantissa (keep the sign) where the lane is tiny.
    _mm256_andnot_ps(_mm256_and_ps(tiny, magnitude), v)
}

/// Eight lanes of `vdpbf16ps`: `a`, `b` hold 16 bf16 values each (lane l: elements 2l, 2l+1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dp8(acc: __m256, a: __m256i, b: __m256i) -> __m256 {
    let hi = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    let odd = |v: __m256i| flush(_mm256_castsi256_ps(_mm256_and_si256(v, hi)));
    let even = |v: __m256i| flush(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)));
    let acc = flush(_mm256_fmadd_ps(odd(a), odd(b), acc));
    flush(_mm256_fmadd_ps(even(a), even(b), acc))
}

/// 32 bytes at `p`.
///
/// # Safety
/// `p` points to 32 readable bytes; AVX available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// `ggml_vec_dot_bf16` order, `vdpbf16ps` emulated with AVX2.
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` and `x` point to `n` bf16 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_emul<const N: usize>(w: [*const u8; N], x: *const u8, n: usize) -> [f32; N] {
    let np = n / 64 * 64;
    // c[r][k][h]: accumulator k (elements 32k.. of each step), half h.
    let mut c = [[[_mm256_setzero_ps(); 2]; 2]; N];
    let mut i = 0;
    while i < np {
        for k in 0..2 {
            for h in 0..2 {
                let off = 2 * i + 64 * k + 32 * h;
                // SAFETY: elements i + 32k + 16h .. +16 < np ≤ n of `x` and every row (caller).
                let xv = unsafe { load(x.add(off)) };
                for r in 0..N {
                    // SAFETY: as above.
                    let wv = unsafe { load(w[r].add(off)) };
                    c[r][k][h] = dp8(c[r][k][h], wv, xv);
                }
            }
        }
        i += 64;
    }
    std::array::from_fn(|r| {
        let mut sum = 0f64;
        sum += reduce16_halves(c[r][0][0], c[r][0][1]) as f64;
        sum += reduce16_halves(c[r][1][0], c[r][1][1]) as f64;
        // SAFETY: both rows hold `n` values (caller).
        unsafe { tail(sum, w[r], x, np, n) }
    })
}

/// tinyBLAS order, `vdpbf16ps` emulated with AVX2 (`n` a multiple of 32).
///
/// # Safety
/// AVX2/FMA/F16C available; each `w[r]` and `x[t]` point to `n` bf16 values; `n % 32 == 0`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sgemm_emul<const N: usize, const T: usize>(
    w: [*const u8; N],
    x: [*const u8; T],
    n: usize,
) -> [[f32; T]; N] {
    let mut acc = [[[_mm256_setzero_ps(); 2]; T]; N];
    let mut i = 0;
    while i < n {
        for h in 0..2 {
            let off = 2 * i + 32 * h;
            // SAFETY: elements i + 16h .. +16 ≤ n of every activation row (caller).
            let xv: [__m256i; T] = std::array::from_fn(|t| unsafe { load(x[t].add(off)) });
            for r in 0..N {
                // SAFETY: as above, for weight row r.
                let wv = unsafe { load(w[r].add(off)) };
                for t in 0..T {
                    acc[r][t][h] = dp8(acc[r][t][h], wv, xv[t]);
                }
            }
        }
        i += 32;
    }
    std::array::from_fn(|r| std::array::from_fn(|t| reduce16_halves(acc[r][t][0], acc[r][t][1])))
}

vec_dot_rows!(vec_dot_rows_native, vec_dot_native);
vec_dot_rows!(vec_dot_rows_emul, vec_dot_emul);
sgemm_rows!(sgemm_rows_native, sgemm_rows4_native, sgemm_native, 32);
sgemm_rows!(sgemm_rows_emul, sgemm_rows4_emul, sgemm_emul, 32);

//! Accumulators for llama.cpp's tiled K-quant matmul order (see `simd::batch`): per block and
//! per (row, token) the exact integer sum `s` of eight i32 lanes, then
//! `acc = fma(f32(s) · d_w, d_x, acc)`.
//!
//! The kernels hand over one block's eight-lane integer vectors for all their (row, token)
//! pairs at once; the lanes are summed with a `vphaddd` transpose (exact integer adds) and the
//! float steps run on one vector whose lane `k` is pair `(k / T, k mod T)`. Each lane's
//! operations are exactly the scalar ones, so the bits equal `scalar::q6_k_tiled`'s.

use std::arch::x86_64::*;

use super::avx2::hsum_i32x8;

/// Lane `k` = the (wrapping) sum of the eight lanes of `v[k]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum4(v: [__m256i; 4]) -> __m128i {
    let b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    // b: [v0..v3 summed over lanes 0..4 | v0..v3 summed over lanes 4..8].
    _mm_add_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
}

/// Lane `k` = the (wrapping) sum of the eight lanes of `v[k]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum8(v: [__m256i; 8]) -> __m256i {
    let lo = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let hi = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// The running sums of `N` rows × `T` tokens in tiled order.
pub(super) struct TiledAcc<const N: usize, const T: usize> {
    /// Lane `r·T + t`, when `N·T == 8`.
    v8: __m256,
    /// Lane `r·T + t`, when `N·T == 4`.
    v4: __m128,
    /// Otherwise.
    s: [[f32; T]; N],
}

impl<const N: usize, const T: usize> TiledAcc<N, T> {
    /// All sums zero.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn new() -> Self {
        TiledAcc {
            v8: _mm256_setzero_ps(),
            v4: _mm_setzero_ps(),
            s: [[0.0; T]; N],
        }
    }

    /// Adds one block: `sums[r][t]` its eight integer lanes for row r and token t, `dw[r]` the
    /// row's block scale, `dx[t]` the token's.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn add(&mut self, sums: &[[__m256i; T]; N], dw: [f32; N], dx: [f32; T]) {
        if N * T == 8 {
            let s = hsum8(std::array::from_fn(|k| sums[k / T][k % T]));
            let dwv: [f32; 8] = std::array::from_fn(|k| dw[k / T]);
            let dxv: [f32; 8] = std::array::from_fn(|k| dx[k % T]);
            // SAFETY: each load reads the 32 bytes of an 8-element array.
            let (dwv, dxv) =
                unsafe { (_mm256_loadu_ps(dwv.as_ptr()), _mm256_loadu_ps(dxv.as_ptr())) };
            self.v8 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), dwv), dxv, self.v8);
        } else if N * T == 4 {
            let s = hsum4(std::array::from_fn(|k| sums[k / T][k % T]));
            let dwv: [f32; 4] = std::array::from_fn(|k| dw[k / T]);
            let dxv: [f32; 4] = std::array::from_fn(|k| dx[k % T]);
            // SAFETY: each load reads the 16 bytes of a 4-element array.
            let (dwv, dxv) = unsafe { (_mm_loadu_ps(dwv.as_ptr()), _mm_loadu_ps(dxv.as_ptr())) };
            self.v4 = _mm_fmadd_ps(_mm_mul_ps(_mm_cvtepi32_ps(s), dwv), dxv, self.v4);
        } else {
            for r in 0..N {
                for t in 0..T {
                    let s = hsum_i32x8(sums[r][t]) as f32;
                    self.s[r][t] = (s * dw[r]).mul_add(dx[t], self.s[r][t]);
                }
            }
        }
    }

    /// As [`add`](Self::add) for formats with mins (Q4_K/Q5_K): `msums[r][t]` the eight integer
    /// lanes of `Σ m·bsum`, `dmin[r]` the row's block min scale; per pair
    /// `r = f32(s)·d_w`, `r = fma(−dmin, f32(m), r)`, `acc = fma(r, d_x, acc)`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn add_min(
        &mut self,
        sums: &[[__m256i; T]; N],
        msums: &[[__m256i; T]; N],
        dw: [f32; N],
        dmin: [f32; N],
        dx: [f32; T],
    ) {
        if N * T == 8 {
            let s = hsum8(std::array::from_fn(|k| sums[k / T][k % T]));
            let m = hsum8(std::array::from_fn(|k| msums[k / T][k % T]));
            let dwv: [f32; 8] = std::array::from_fn(|k| dw[k / T]);
            let dmv: [f32; 8] = std::array::from_fn(|k| dmin[k / T]);
            let dxv: [f32; 8] = std::array::from_fn(|k| dx[k % T]);
            // SAFETY: each load reads the 32 bytes of an 8-element array.
            let (dwv, dmv, dxv) = unsafe {
                (
                    _mm256_loadu_ps(dwv.as_ptr()),
                    _mm256_loadu_ps(dmv.as_ptr()),
                    _mm256_loadu_ps(dxv.as_ptr()),
                )
            };
            let r = _mm256_mul_ps(_mm256_cvtepi32_ps(s), dwv);
            let r = _mm256_fnmadd_ps(dmv, _mm256_cvtepi32_ps(m), r);
            self.v8 = _mm256_fmadd_ps(r, dxv, self.v8);
        } else if N * T == 4 {
            let s = hsum4(std::array::from_fn(|k| sums[k / T][k % T]));
            let m = hsum4(std::array::from_fn(|k| msums[k / T][k % T]));
            let dwv: [f32; 4] = std::array::from_fn(|k| dw[k / T]);
            let dmv: [f32; 4] = std::array::from_fn(|k| dmin[k / T]);
            let dxv: [f32; 4] = std::array::from_fn(|k| dx[k % T]);
            // SAFETY: each load reads the 16 bytes of a 4-element array.
            let (dwv, dmv, dxv) = unsafe {
                (
                    _mm_loadu_ps(dwv.as_ptr()),
                    _mm_loadu_ps(dmv.as_ptr()),
                    _mm_loadu_ps(dxv.as_ptr()),
                )
            };
            let r = _mm_mul_ps(_mm_cvtepi32_ps(s), dwv);
            let r = _mm_fnmadd_ps(dmv, _mm_cvtepi32_ps(m), r);
            self.v4 = _mm_fmadd_ps(r, dxv, self.v4);
        } else {
            for r in 0..N {
                for t in 0..T {
                    let s = hsum_i32x8(sums[r][t]) as f32;
                    let m = hsum_i32x8(msums[r][t]) as f32;
                    let v = (-dmin[r]).mul_add(m, s * dw[r]);
                    self.s[r][t] = v.mul_add(dx[t], self.s[r][t]);
                }
            }
        }
    }

    /// The sums, `[row][token]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn finish(self) -> [[f32; T]; N] {
        let mut lanes = [0f32; 8];
        if N * T == 8 {
            // SAFETY: writes the 32 bytes of `lanes`.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), self.v8) };
        } else if N * T == 4 {
            // SAFETY: writes the first 16 bytes of `lanes`.
            unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), self.v4) };
        } else {
            return self.s;
        }
        std::array::from_fn(|r| std::array::from_fn(|t| lanes[r * T + t]))
    }
}

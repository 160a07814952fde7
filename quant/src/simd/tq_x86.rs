//! TQ1_0 and TQ2_0 × Q8_K in `ggml_vec_dot_tq1_0_q8_K` / `ggml_vec_dot_tq2_0_q8_K`'s x86 order
//! (llama.cpp's only kernels for these; AVX2, which its AVX-512 build runs too). See
//! [`scalar::tq`](crate::scalar::tq) for the lanes: per block the unsigned codes `u` meet the
//! activations in `vpmaddubsw` one 32-element chunk at a time, the 16-bit pair sums of all
//! chunks are added lane by lane, the Q8_K `bsums` subtracted, `vpmaddwd` by 1 makes eight i32
//! lanes, and each lane takes one FMA by `d_x · d_w`; the row ends in `hsum_float_8`'s tree.
//!
//! TQ2_0's codes are two-bit fields (shift and mask). TQ1_0's trits are
//! `((u8)(b · 3ⁿ) · 3) >> 8`, formed here per 16-bit lane for the even and the odd bytes apart:
//! with the byte in the high half of the lane, `vpmullw` by `3ⁿ` leaves `(b · 3ⁿ) mod 256` there
//! and `vpmulhuw` by 3 then gives the trit (a different order of instructions from llama.cpp's
//! byte tricks, the same integers).

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::avx2::{h2f, reduce8};
use super::{check_rows, RowsFn, SimdLevel};
use crate::blocks::{Block, BlockQ8_K, BlockTQ1_0, BlockTQ2_0};

/// The `vec_dot`-order kernel for `ty` at most at `level`, where there is one (TQ1_0 and TQ2_0,
/// AVX2).
pub(super) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    if level < SimdLevel::Avx2 || !SimdLevel::Avx2.is_available() {
        return None;
    }
    match ty {
        GgmlType::TQ1_0 => Some(rows::<BlockTQ1_0>),
        GgmlType::TQ2_0 => Some(rows::<BlockTQ2_0>),
        _ => None,
    }
}

/// A ternary block: its f16 scale and the i16 sum of its 8 chunks' `vpmaddubsw` pair sums.
trait Ternary: Block {
    /// The scale `d` (f16 bits).
    fn d(&self) -> [u8; 2];
    /// `Σ_c maddubs(u_c, y_c)`: 16 i16 lanes, lane `k` the codes × activations of bytes
    /// `2k, 2k + 1` of every 32-element chunk.
    ///
    /// # Safety
    /// AVX2 available.
    unsafe fn pair_sums(&self, y: &[i8; 256]) -> __m256i;
}

/// Chunk `c` (elements `32c..32c + 32`) of the activations.
///
/// # Safety
/// AVX2 available; `c < 8`.
#[inline(always)]
unsafe fn chunk(y: &[i8; 256], c: usize) -> __m256i {
    // SAFETY: reads bytes `32c..32c + 32` of `y` (`c < 8`, caller).
    unsafe { _mm256_loadu_si256(y.as_ptr().add(32 * c).cast()) }
}

impl Ternary for BlockTQ2_0 {
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }

    #[inline(always)]
    unsafe fn pair_sums(&self, y: &[i8; 256]) -> __m256i {
        // SAFETY: AVX2 (caller); the loads read `qs[0..64]` and the chunks `0..8` of `y`.
        unsafe {
            let m3 = _mm256_set1_epi8(3);
            let mut s = _mm256_setzero_si256();
            for c in 0..2 {
                let q = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c).cast());
                let u = [
                    _mm256_and_si256(q, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q), m3),
                ];
                for (k, u) in u.into_iter().enumerate() {
                    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u, chunk(y, 4 * c + k)));
                }
            }
            s
        }
    }
}

/// The trits `((u8)(b · m) · 3) >> 8` of the 32 bytes `b` of `v`, `m` the multiplier of each
/// byte's 16-bit lane.
///
/// # Safety
/// AVX2 available.
#[inline(always)]
unsafe fn trits(v: __m256i, m: __m256i) -> __m256i {
    // SAFETY: AVX2 (caller).
    unsafe {
        let three = _mm256_set1_epi16(3);
        let even = _mm256_slli_epi16::<8>(v);
        let odd = _mm256_and_si256(v, _mm256_set1_epi16(0xFF00u16 as i16));
        let te = _mm256_mulhi_epu16(_mm256_mullo_epi16(even, m), three);
        let to = _mm256_mulhi_epu16(_mm256_mullo_epi16(odd, m), three);
        _mm256_or_si256(te, _mm256_slli_epi16::<8>(to))
    }
}

impl Ternary for BlockTQ1_0 {
    #[inline(always)]
    fn d(&self) -> [u8; 2] {
        self.d
    }

    #[inline(always)]
    unsafe fn pair_sums(&self, y: &[i8; 256]) -> __m256i {
        // SAFETY: AVX2 (caller); the loads read `qs[0..48]`, `qh` and the chunks of `y`.
        unsafe {
            let mut s = _mm256_setzero_si256();
            // Chunks 0..5: trit n of qs[0..32].
            let q = _mm256_loadu_si256(self.qs.as_ptr().cast());
            for (n, p) in [1i16, 3, 9, 27, 81].into_iter().enumerate() {
                let u = trits(q, _mm256_set1_epi16(p));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u, chunk(y, n)));
            }
            // Chunks 5..8: trits n, n + 1 of qs[32..48] side by side; the last chunk's upper
            // half is trit n of qh[j] at byte 4n + j.
            let q2 = _mm_loadu_si128(self.qs.as_ptr().add(32).cast());
            let qh = _mm_set1_epi32(i32::from_le_bytes(self.qh));
            let v = [
                _mm256_set_m128i(q2, q2),
                _mm256_set_m128i(q2, q2),
                _mm256_set_m128i(qh, q2),
            ];
            let m = [
                _mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3),
                _mm256_setr_epi16(9, 9, 9, 9, 9, 9, 9, 9, 27, 27, 27, 27, 27, 27, 27, 27),
                _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27),
            ];
            for k in 0..3 {
                let u = trits(v[k], m[k]);
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(u, chunk(y, 5 + k)));
            }
            s
        }
    }
}

/// One row: `nb` blocks from `w` · `nb` Q8_K blocks from `x`.
///
/// # Safety
/// AVX2/FMA/F16C available; `w` and `x` point to `nb` blocks each.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<B: Ternary>(w: *const B, x: *const BlockQ8_K, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: `i < nb` (caller).
        let (b, a) = unsafe { (&*w.add(i), &*x.add(i)) };
        // SAFETY: AVX2 is enabled here; reads the 32 bytes of `a.bsums`.
        let (s, bsums) = unsafe {
            (
                b.pair_sums(&a.qs),
                _mm256_loadu_si256(a.bsums.as_ptr().cast()),
            )
        };
        let lanes = _mm256_madd_epi16(_mm256_sub_epi16(s, bsums), _mm256_set1_epi16(1));
        let d = _mm256_set1_ps(a.d() * h2f(b.d()));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), d, acc);
    }
    reduce8(acc)
}

/// The [`RowsFn`]: every row of `w` · `x`, one row at a time.
fn rows<B: Ternary>(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    let nb = check_rows::<B, BlockQ8_K>(w, row_bytes, x, out.len());
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: `kernel` hands this function out only when the CPU has AVX2/FMA/F16C;
        // `check_rows` verified that row `r` holds `nb` blocks and `x` `nb` activation blocks.
        *o = unsafe { dot::<B>(w[r * row_bytes..].as_ptr().cast(), x.as_ptr().cast(), nb) };
    }
}

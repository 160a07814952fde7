//! IQ2_XXS · Q8_K in the `vec_dot` order on AVX-512 with VBMI and BITALG: the grid and sign
//! tables live in registers, so a block needs no scalar look-ups.
//!
//! The AVX2 kernel ([`super::iq2_x86`]) reads each sub-block's four grid rows and four sign rows
//! from memory one 64-bit load at a time and assembles them into vectors: on the Intel VM about
//! 70 cycles a block, all of it in the look-ups and the moves between general-purpose and
//! vector registers. Here, per block of 256 weights:
//!
//! - **Grid.** Every IQ2_XXS grid value is one of 8, 25 and 43, so a grid row is eight 2-bit
//!   codes: 16 bits, a low byte (values 0..4) and a high byte (values 4..8). Both bytes of the
//!   32 rows a block names come from two 256-byte tables with `vpermi2b` (four of them, the
//!   index's bit 7 picking the table half). For each 64 weights a `vpermi2b` puts row `q`'s two
//!   code bytes in qword `q`, `vpmultishiftqb` moves value `k`'s code to the bottom of byte `k`,
//!   and `vpermb` turns codes into values.
//! - **Signs.** `vpmultishiftqb` cuts the four 7-bit sign indices of each sub-block out of its
//!   qword, a `vpermi2b` look-up in ggml's 128-byte `ksigns_iq2xs` table adds the parity bit,
//!   and `vpshufbitqmb` turns 64 sign bits into a mask that negates the activations
//!   (`0 − y` wraps at −128 exactly as llama.cpp's `vpsignb`).
//! - **Scales.** The same shift puts each sub-block's 4-bit scale in byte 4 of its qword;
//!   `vpermb` makes `2s + 1` of it and a zero-masked `vpermb` spreads it over 16-bit lanes.
//! - **Products.** `vpmaddubsw` (grid values ≤ 43 against signed activations: no saturation,
//!   as llama.cpp's) and `vpmaddwd` with the scales give sixteen i32 lanes per 64 weights; the
//!   block's sum of the four vectors, folded to eight lanes, is llama.cpp's eight lanes exactly
//!   (lane `l` holds weights `4l..4l+4` of every sub-block), and the float step is the AVX2
//!   kernel's: `acc = fma(f16(d_w)·d_x, lanes, acc)`, `0.125 · reduce8(acc)`.

use std::arch::x86_64::*;

use super::avx2::{h2f, reduce8};
use super::iq_signs::ksign;
use crate::blocks::{view, BlockIQ2_XXS, BlockQ8_K};
use crate::grids::IQ2XXS;

/// Whether this CPU has what [`xxs_rows`] needs (on top of the AVX-512 level).
pub(super) fn available() -> bool {
    super::SimdLevel::Avx512.is_available()
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512bitalg")
}

/// The three grid values of IQ2_XXS, by code.
const VALUES: [u8; 3] = [8, 25, 43];

/// `IQ2XXS` as 2-bit codes: `[low byte (values 0..4), high byte (values 4..8)]` of each row.
const CODES: [[u8; 256]; 2] = {
    let mut t = [[0u8; 256]; 2];
    let mut i = 0;
    while i < 256 {
        let row = IQ2XXS[i].to_le_bytes();
        let mut k = 0;
        while k < 8 {
            let code = if row[k] == VALUES[0] {
                0
            } else if row[k] == VALUES[1] {
                1
            } else if row[k] == VALUES[2] {
                2
            } else {
                panic!("IQ2_XXS grid value outside 8, 25, 43")
            };
            t[k / 4][i] |= code << (2 * (k % 4));
            k += 1;
        }
        i += 1;
    }
    t
};

/// ggml's `ksigns_iq2xs`: a 7-bit sign index with its parity as bit 7.
const KSIGNS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ksign(i);
        i += 1;
    }
    t
};

/// The loop-invariant vectors of [`xxs_dot`].
#[derive(Clone, Copy)]
struct Consts {
    /// [`CODES`] as eight 64-byte tables: low bytes 0..64, 64..128, 128..192, 192..256, then
    /// the same for the high bytes.
    codes: [__m512i; 8],
    /// [`KSIGNS`] as two 64-byte tables.
    ksigns: [__m512i; 2],
    /// Per qword: the code bytes' bit offsets `2k` for bytes `k = 0..8`.
    code_shift: __m512i,
    /// A code (the low two bits of a byte) → its grid value, repeated over 64 entries.
    values: __m512i,
    /// Per qword (sub-block): the four sign indices' bit offsets `32 + 7l`, then the scale's
    /// (60) in byte 4.
    sign_shift: __m512i,
    /// A byte whose low nibble is a scale `s` → `2s + 1`, over 64 entries.
    scale_lut: __m512i,
    /// For each 64 weights `m`: the byte indices that put row `q`'s low code byte in byte 0
    /// and its high one (from the second table) in byte 1 of qword `q`.
    expand: [__m512i; 4],
    /// For each `m`: qwords `2m` (four times) then `2m + 1` (four times).
    sign_rows: [__m512i; 4],
    /// Per qword `q`: the sign bit indices `8·(q % 4) + t`, `t = 0..8`.
    sign_bits: __m512i,
    /// For each `m`: byte indices of sub-block `2m`'s scale byte (words 0..16) and `2m + 1`'s
    /// (words 16..32), at even bytes.
    scale_words: [__m512i; 4],
}

/// A vector of 64 bytes.
#[inline]
#[target_feature(enable = "avx512f")]
fn bytes64(b: [u8; 64]) -> __m512i {
    // SAFETY: reads the 64 bytes of `b`.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

impl Consts {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new() -> Consts {
        let table = |t: &[u8], k: usize| bytes64(std::array::from_fn(|i| t[64 * k + i]));
        let per_qword =
            |f: &dyn Fn(usize, usize) -> u8| bytes64(std::array::from_fn(|i| f(i / 8, i % 8)));
        Consts {
            codes: std::array::from_fn(|k| table(&CODES[k / 4], k % 4)),
            ksigns: [table(&KSIGNS, 0), table(&KSIGNS, 1)],
            code_shift: per_qword(&|_, k| 2 * k as u8),
            values: bytes64(std::array::from_fn(|i| {
                VALUES.get(i % 4).copied().unwrap_or(0)
            })),
            sign_shift: per_qword(&|_, k| if k < 4 { 32 + 7 * k as u8 } else { 60 }),
            scale_lut: bytes64(std::array::from_fn(|i| 2 * (i as u8 & 15) + 1)),
            expand: std::array::from_fn(|m| {
                per_qword(&|q, k| {
                    // Row `q` of these 64 weights: sub-block `2m + q / 4`, its row `q % 4`.
                    let at = (8 * (2 * m + q / 4) + q % 4) as u8;
                    if k == 1 {
                        64 + at
                    } else {
                        at
                    }
                })
            }),
            sign_rows: std::array::from_fn(|m| {
                let (a, b) = (2 * m as i64, 2 * m as i64 + 1);
                _mm512_setr_epi64(a, a, a, a, b, b, b, b)
            }),
            sign_bits: per_qword(&|q, t| (8 * (q % 4) + t) as u8),
            scale_words: std::array::from_fn(|m| {
                bytes64(std::array::from_fn(|i| (8 * (2 * m + i / 32) + 4) as u8))
            }),
        }
    }
}

/// One row · one token in the `vec_dot` order.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI/BITALG and AVX2/FMA/F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn xxs_dot(w: &[BlockIQ2_XXS], x: &[BlockQ8_K], c: &Consts) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.iter().zip(x) {
        // SAFETY: reads the 64 bytes of `b.qs`.
        let q = unsafe { _mm512_loadu_si512(b.qs.as_ptr().cast()) };
        // Both code bytes of every byte of `q` read as a grid index (the grid indices are
        // bytes 0..4 of each qword; the others are not used).
        let high = _mm512_movepi8_mask(q);
        let look = |t: usize| {
            _mm512_mask_blend_epi8(
                high,
                _mm512_permutex2var_epi8(c.codes[t], q, c.codes[t + 1]),
                _mm512_permutex2var_epi8(c.codes[t + 2], q, c.codes[t + 3]),
            )
        };
        let (lo, hi) = (look(0), look(4));
        // Bytes 0..4 of qword j: sub-block j's sign indices; byte 4: its scale (low nibble).
        let cut = _mm512_multishift_epi64_epi8(c.sign_shift, q);
        let signs = _mm512_permutex2var_epi8(c.ksigns[0], cut, c.ksigns[1]);
        let scales = _mm512_permutexvar_epi8(cut, c.scale_lut);
        let mut sum = _mm512_setzero_si512();
        for m in 0..4 {
            let codes = _mm512_permutex2var_epi8(lo, c.expand[m], hi);
            let codes = _mm512_multishift_epi64_epi8(c.code_shift, codes);
            let g = _mm512_permutexvar_epi8(codes, c.values);
            let neg = _mm512_bitshuffle_epi64_mask(
                _mm512_permutexvar_epi64(c.sign_rows[m], signs),
                c.sign_bits,
            );
            // SAFETY: reads bytes `64m..64m + 64` of the 256 of `a.qs`.
            let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * m).cast()) };
            let y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            let sc = _mm512_maskz_permutexvar_epi8(0x5555_5555_5555_5555, c.scale_words[m], scales);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(g, y), sc));
        }
        let sum = _mm256_add_epi32(
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64::<1>(sum),
        );
        let d = h2f(b.d) * a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
    }
    0.125 * reduce8(acc)
}

/// Rows · one token in the `vec_dot` order.
pub(super) fn xxs_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    super::check_rows::<BlockIQ2_XXS, BlockQ8_K>(w, row_bytes, x, out.len());
    let x = view::<BlockQ8_K>(x).expect("activation blocks");
    assert!(available(), "IQ2_XXS AVX-512 kernel without VBMI/BITALG");
    // SAFETY: checked just above.
    let c = unsafe { Consts::new() };
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockIQ2_XXS>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
        // SAFETY: as above.
        *o = unsafe { xxs_dot(wr, x, &c) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar::iq2 as reference;
    use crate::simd::test_util::{acts, bytes};

    /// The kernel equals the scalar `vec_dot` reference bit for bit, on random blocks (f16
    /// scale 1.0: every grid, sign and scale index occurs) with many −128 activations.
    #[test]
    fn xxs_matches_reference() {
        if !available() {
            return;
        }
        let (nb, rows) = (3, 7);
        let size = std::mem::size_of::<BlockIQ2_XXS>();
        for seed in 0..40u64 {
            let mut wb = bytes(rows * nb * size, seed);
            for b in wb.chunks_exact_mut(size) {
                b[..2].copy_from_slice(&[0x00, 0x3C]);
            }
            let xb = acts(nb, 1000 + seed);
            let x = view::<BlockQ8_K>(&xb).unwrap();
            let want: Vec<u32> = wb
                .chunks_exact(nb * size)
                .map(|r| reference::iq2_xxs(view(r).unwrap(), x).to_bits())
                .collect();
            let mut got = vec![0f32; rows];
            xxs_rows(&wb, nb * size, &xb, &mut got);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }
}

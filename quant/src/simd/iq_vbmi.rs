//! IQ2_XXS, IQ3_XXS, IQ2_S and IQ3_S · Q8_K in the `vec_dot` order on AVX-512 with VBMI (and
//! BITALG for the 7-bit sign indices): the grid and sign tables live in registers, so a block
//! needs no scalar look-ups.
//!
//! IQ2_S and IQ3_S differ in the details ([`dot_iq2s`], [`dot_iq3s`]): 10- and 9-bit grid
//! indices (1024 and 512 rows: eight or four look-ups per code byte; two IQ2_S blocks share
//! them), explicit sign bits (a mask straight from memory), packed 4-bit scales.
//!
//! The AVX2 kernels ([`super::iq2_x86`], [`super::iq3_x86`]) read each sub-block's grid rows
//! and sign rows from memory one load at a time and assemble them into vectors: on the Intel VM
//! about 70 cycles an IQ2_XXS block, nearly all of it look-ups and moves between
//! general-purpose and vector registers. Here, per block of 256 weights:
//!
//! - **Grid.** Each format's grid values come from a small alphabet (IQ2_XXS: 8, 25, 43;
//!   IQ3_XXS: 4, 12, …, 52, 62), so a grid row is a string of 2- or 3-bit codes that fits in
//!   16 bits: a low and a high byte. Both bytes of every row a block names come from two
//!   256-byte tables with `vpermi2b` (four of them, the index's bit 7 picking the table half).
//!   For each 64 weights a `vpermi2b` puts the code bytes of the rows they need side by side in
//!   each qword, `vpmultishiftqb` moves every weight's code to the bottom of its byte, and
//!   `vpermb` turns codes into values.
//! - **Signs.** `vpmultishiftqb` cuts the four 7-bit sign indices of each sub-block out of its
//!   qword, a `vpermi2b` look-up in ggml's 128-byte `ksigns_iq2xs` table adds the parity bit,
//!   and `vpshufbitqmb` turns 64 sign bits into a mask that negates the activations
//!   (`0 − y` wraps at −128 exactly as llama.cpp's `vpsignb`).
//! - **Scales.** The same shift puts each sub-block's 4-bit scale in byte 4 of its qword;
//!   `vpermb` makes `2s + 1` of it and a zero-masked `vpermb` spreads it over 16-bit lanes.
//! - **Products.** `vpmaddubsw` (grid values ≤ 62 against signed activations: no saturation,
//!   as in llama.cpp) and `vpmaddwd` with the scales give sixteen i32 lanes per 64 weights; the
//!   block's sum of the four vectors, folded to eight lanes, is llama.cpp's eight lanes exactly
//!   (lane `l` holds weights `4l..4l+4` of every sub-block), and the float step is the AVX2
//!   kernels': `acc = fma(f16(d_w)·d_x, lanes, acc)`, then `0.125 · reduce8(acc)` (IQ2_XXS)
//!   or `0.25 · reduce8(acc)` (IQ3_XXS).
//!
//! The calibration ([`calibrate`](mod@crate::calibrate)) times these against the AVX2 kernels and keeps the
//! faster.

use std::arch::x86_64::*;

use super::avx2::{h2f, reduce8};
use super::iq_signs::ksign;
use crate::blocks::{view, Block, BlockIQ2_S, BlockIQ2_XXS, BlockIQ3_S, BlockIQ3_XXS, BlockQ8_K};
use crate::grids::{IQ2S, IQ2XXS, IQ3S, IQ3XXS};

/// Whether this CPU has what these kernels need (on top of the AVX-512 level).
pub(super) fn available() -> bool {
    super::SimdLevel::Avx512.is_available()
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512bitalg")
}

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

/// The code of grid value `v` in `values`, at compile time.
const fn code_of(values: &[u8], v: u8) -> u8 {
    let mut c = 0;
    while c < values.len() {
        if values[c] == v {
            return c as u8;
        }
        c += 1;
    }
    panic!("grid value outside the format's alphabet")
}

/// A lattice format whose grid rows fit in 16 bits of codes.
trait Lattice: Block {
    /// The grid values, by code.
    const VALUES: &'static [u8];
    /// `[low byte, high byte]` of each grid row's codes.
    const CODES: [[u8; 256]; 2];
    /// Per qword `q` and byte `k`: the byte indices (into the low code bytes, or 64 + into the
    /// high ones) that put, for the 64 weights `64m..64m + 64`, the code bytes of the grid rows
    /// of the weights of qword `q` in that qword (what [`Lattice::CODE_SHIFT`] expects).
    fn expand(m: usize, q: usize, k: usize) -> u8;
    /// Per qword byte `k`: the bit offset of weight `k`'s code among the bytes [`expand`]
    /// gathered.
    ///
    /// [`expand`]: Lattice::expand
    const CODE_SHIFT: [u8; 8];
    /// Per qword byte: the bit offsets of the four 7-bit sign indices (bytes 0..4) and of the
    /// 4-bit scale (byte 4) in the qword [`Lattice::split`] gives each sub-block.
    const SIGN_SHIFT: [u8; 8];
    /// The factor of the final sum (llama.cpp's `0.125` or `0.25`).
    const FINAL: f32;
    /// The block's 64 grid indices, or 32 of them at bytes `8j..8j + 4` (others unused), and
    /// its sub-blocks' sign-and-scale words, one per qword.
    ///
    /// # Safety
    /// AVX-512 F/BW available.
    unsafe fn split(&self) -> (__m512i, __m512i);
    /// The f16 scale.
    fn d(&self) -> [u8; 2];
}

/// Code tables of a grid of 64-bit rows (eight values, 2-bit codes): `[low byte (values
/// 0..4), high byte (values 4..8)]` of each row.
const fn codes64<const R: usize>(grid: &[u64; R], values: &[u8]) -> [[u8; R]; 2] {
    let mut t = [[0u8; R]; 2];
    let mut i = 0;
    while i < R {
        let row = grid[i].to_le_bytes();
        let mut k = 0;
        while k < 8 {
            t[k / 4][i] |= code_of(values, row[k]) << (2 * (k % 4));
            k += 1;
        }
        i += 1;
    }
    t
}

/// Code tables of a grid of 32-bit rows (four values, 3-bit codes): `[low byte (values 0, 1),
/// high byte (values 2, 3)]` of each row.
const fn codes32<const R: usize>(grid: &[u32; R], values: &[u8]) -> [[u8; R]; 2] {
    let mut t = [[0u8; R]; 2];
    let mut i = 0;
    while i < R {
        let row = grid[i].to_le_bytes();
        let mut k = 0;
        while k < 4 {
            t[k / 2][i] |= code_of(values, row[k]) << (3 * (k % 2));
            k += 1;
        }
        i += 1;
    }
    t
}

impl Lattice for BlockIQ2_XXS {
    const VALUES: &'static [u8] = &[8, 25, 43];
    const CODES: [[u8; 256]; 2] = codes64(&IQ2XXS, Self::VALUES);
    // Qword `q` of weights `64m..`: sub-block `2m + q / 4`, its grid row `q % 4` (bytes 0..4 of
    // the sub-block's qword hold its four row indices); its low code byte to byte 0, its high
    // one to byte 1.
    fn expand(m: usize, q: usize, k: usize) -> u8 {
        let at = (8 * (2 * m + q / 4) + q % 4) as u8;
        if k == 1 {
            64 + at
        } else {
            at
        }
    }
    const CODE_SHIFT: [u8; 8] = [0, 2, 4, 6, 8, 10, 12, 14];
    const SIGN_SHIFT: [u8; 8] = [32, 39, 46, 53, 60, 60, 60, 60];
    const FINAL: f32 = 0.125;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn split(&self) -> (__m512i, __m512i) {
        // SAFETY: reads the 64 bytes of `qs`; each qword is a sub-block's four row indices
        // then its sign-and-scale word.
        let q = unsafe { _mm512_loadu_si512(self.qs.as_ptr().cast()) };
        (q, q)
    }
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

impl Lattice for BlockIQ3_XXS {
    const VALUES: &'static [u8] = &[4, 12, 20, 28, 36, 44, 52, 62];
    const CODES: [[u8; 256]; 2] = codes32(&IQ3XXS, Self::VALUES);
    // Qword `q` of weights `64m..`: grid rows `16m + 2q` and `+ 1` (four weights each); their
    // code bytes as [low, high, low, high].
    fn expand(m: usize, q: usize, k: usize) -> u8 {
        let at = (16 * m + 2 * q + (k % 4) / 2) as u8;
        if k % 2 == 1 {
            64 + at
        } else {
            at
        }
    }
    const CODE_SHIFT: [u8; 8] = [0, 3, 8, 11, 16, 19, 24, 27];
    const SIGN_SHIFT: [u8; 8] = [0, 7, 14, 21, 28, 28, 28, 28];
    const FINAL: f32 = 0.25;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn split(&self) -> (__m512i, __m512i) {
        // SAFETY: reads the 96 bytes of `qs`: 64 row indices, then eight u32 sign-and-scale
        // words, each widened to a qword.
        unsafe {
            (
                _mm512_loadu_si512(self.qs.as_ptr().cast()),
                _mm512_cvtepu32_epi64(_mm256_loadu_si256(self.qs.as_ptr().add(64).cast())),
            )
        }
    }
    fn d(&self) -> [u8; 2] {
        self.d
    }
}

/// The loop-invariant vectors of [`dot`].
#[derive(Clone, Copy)]
struct Consts {
    /// The low code bytes as four 64-byte tables (rows 0..64, …, 192..256), then the high ones.
    codes: [__m512i; 8],
    /// [`KSIGNS`] as two 64-byte tables.
    ksigns: [__m512i; 2],
    /// [`Lattice::CODE_SHIFT`] in every qword.
    code_shift: __m512i,
    /// A code (the low bits of a byte) → its grid value, repeated over 64 entries.
    values: __m512i,
    /// [`Lattice::SIGN_SHIFT`] in every qword.
    sign_shift: __m512i,
    /// A byte whose low nibble is a scale `s` → `2s + 1`, over 64 entries.
    scale_lut: __m512i,
    /// [`Lattice::expand`] for each 64 weights `m`.
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
    fn new<L: Lattice>() -> Consts {
        let table = |t: &[u8], k: usize| bytes64(std::array::from_fn(|i| t[64 * k + i]));
        let per_qword =
            |f: &dyn Fn(usize, usize) -> u8| bytes64(std::array::from_fn(|i| f(i / 8, i % 8)));
        Consts {
            codes: std::array::from_fn(|k| table(&L::CODES[k / 4], k % 4)),
            ksigns: [table(&KSIGNS, 0), table(&KSIGNS, 1)],
            code_shift: per_qword(&|_, k| L::CODE_SHIFT[k]),
            // Codes use the low `log2` bits of the byte; the bits above are other codes.
            values: bytes64(std::array::from_fn(|i| {
                let code = i % L::VALUES.len().next_power_of_two();
                L::VALUES.get(code).copied().unwrap_or(0)
            })),
            sign_shift: per_qword(&|_, k| L::SIGN_SHIFT[k]),
            scale_lut: bytes64(std::array::from_fn(|i| 2 * (i as u8 & 15) + 1)),
            expand: std::array::from_fn(|m| per_qword(&|q, k| L::expand(m, q, k))),
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
/// AVX-512 F/BW/VL/VBMI/BITALG and AVX2/FMA/F16C available; `c` made for `L`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn dot<L: Lattice>(w: &[L], x: &[BlockQ8_K], c: &Consts) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.iter().zip(x) {
        // SAFETY: the features `split` needs are enabled here.
        let (idx, aux) = unsafe { b.split() };
        // Both code bytes of every byte of `idx` read as a grid index.
        let high = _mm512_movepi8_mask(idx);
        let look = |t: usize| {
            _mm512_mask_blend_epi8(
                high,
                _mm512_permutex2var_epi8(c.codes[t], idx, c.codes[t + 1]),
                _mm512_permutex2var_epi8(c.codes[t + 2], idx, c.codes[t + 3]),
            )
        };
        let (lo, hi) = (look(0), look(4));
        // Bytes 0..4 of qword j: sub-block j's sign indices; byte 4: its scale (low nibble).
        let cut = _mm512_multishift_epi64_epi8(c.sign_shift, aux);
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
        let d = h2f(b.d()) * a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
    }
    L::FINAL * reduce8(acc)
}

/// Rows · one token in the `vec_dot` order.
fn rows<L: Lattice>(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    super::check_rows::<L, BlockQ8_K>(w, row_bytes, x, out.len());
    let x = view::<BlockQ8_K>(x).expect("activation blocks");
    assert!(available(), "lattice AVX-512 kernel without VBMI/BITALG");
    // SAFETY: checked just above.
    let c = unsafe { Consts::new::<L>() };
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<L>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
        // SAFETY: as above; `c` was made for `L`.
        *o = unsafe { dot(wr, x, &c) };
    }
}

/// IQ2_XXS rows · one token in the `vec_dot` order (callers check [`available`]).
pub(super) fn xxs2_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockIQ2_XXS>(w, row_bytes, x, out)
}

/// IQ3_XXS rows · one token in the `vec_dot` order (callers check [`available`]).
pub(super) fn xxs3_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows::<BlockIQ3_XXS>(w, row_bytes, x, out)
}

/// IQ2_S's grid rows (1024, the same three values as IQ2_XXS) as `[low, high]` code bytes.
const IQ2S_CODES: [[u8; 1024]; 2] = codes64(&IQ2S, BlockIQ2_XXS::VALUES);

/// The loop-invariant vectors of [`dot_iq2s`] (`T` = 32, `E` = 8) and [`dot_iq3s`] (16, 4).
#[derive(Clone, Copy)]
struct WideConsts<const T: usize, const E: usize> {
    /// The grid's code tables, 64 rows a vector: the low code bytes, then the high ones.
    codes: [__m512i; T],
    /// Per qword: each weight's bit offset among the code bytes `expand` gathered.
    code_shift: __m512i,
    /// A code → its grid value, over 64 entries.
    values: __m512i,
    /// For each 64 weights `m` (IQ2_S: of the first block of a pair, then of the second): the
    /// byte indices that gather the code bytes of their rows into each qword.
    expand: [__m512i; E],
    /// For each `m`: byte indices of the `2s + 1` scale bytes ([`unpack_scales`]) of words
    /// `0..32` (weights `64m + 2w`), at even bytes.
    scale_words: [__m512i; 4],
}

/// The code tables `t` as `T` vectors of 64 bytes.
#[inline]
#[target_feature(enable = "avx512f")]
fn code_vectors<const R: usize, const T: usize>(t: &[[u8; R]; 2]) -> [__m512i; T] {
    std::array::from_fn(|k| {
        bytes64(std::array::from_fn(|i| {
            t[k / (T / 2)][64 * (k % (T / 2)) + i]
        }))
    })
}

impl WideConsts<32, 8> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn iq2s() -> Self {
        let xxs = Consts::new::<BlockIQ2_XXS>();
        let per_qword =
            |f: &dyn Fn(usize, usize) -> u8| bytes64(std::array::from_fn(|i| f(i / 8, i % 8)));
        WideConsts {
            codes: code_vectors(&IQ2S_CODES),
            code_shift: xxs.code_shift,
            values: xxs.values,
            // Row `8m + q` (`32 + 8m + q`)'s low code byte to byte 0 of qword `q`, its high one
            // (from the second table) to byte 1.
            expand: std::array::from_fn(|m| {
                per_qword(&|q, k| (8 * m + q) as u8 + if k == 1 { 64 } else { 0 })
            }),
            // Word `w` of weights `64m..`: sub-block `2m + w / 16`, its half `(w % 16) / 8`:
            // scale byte `2·(2m + w / 16) + half` of the unpacked nibbles.
            scale_words: std::array::from_fn(|m| {
                bytes64(std::array::from_fn(|i| {
                    let w = i / 2;
                    (2 * (2 * m + w / 16) + (w % 16) / 8) as u8
                }))
            }),
        }
    }
}

impl WideConsts<16, 4> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn iq3s() -> Self {
        let xxs = Consts::new::<BlockIQ3_XXS>();
        WideConsts {
            codes: code_vectors(&IQ3S_CODES),
            code_shift: xxs.code_shift,
            values: bytes64(std::array::from_fn(|i| 2 * (i % 8) as u8 + 1)),
            expand: xxs.expand,
            // Word `w` of weights `64m..`: sub-block `2m + w / 16`, scale byte `2m + w / 16`.
            scale_words: std::array::from_fn(|m| {
                bytes64(std::array::from_fn(|i| (2 * m + i / 32) as u8))
            }),
        }
    }
}

/// The `vec_dot` lanes of one IQ2_S block whose rows' code bytes are at `base..base + 32` of
/// `lo` and `hi` (see [`dot_iq2s`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bitalg,bmi2,avx2,fma,f16c")]
fn lanes_iq2s(
    b: &BlockIQ2_S,
    a: &BlockQ8_K,
    c: &WideConsts<32, 8>,
    (lo, hi): (__m512i, __m512i),
    base: usize,
) -> __m256i {
    // The sixteen scales `2s + 1` in bytes `2j` (first 16 weights of sub-block `j`) and
    // `2j + 1` (the other 16).
    let sc = unpack_scales(u64::from_le_bytes(b.scales));
    let mut sum = _mm512_setzero_si512();
    for m in 0..4 {
        let codes = _mm512_permutex2var_epi8(lo, c.expand[base / 8 + m], hi);
        let codes = _mm512_multishift_epi64_epi8(c.code_shift, codes);
        let g = _mm512_permutexvar_epi8(codes, c.values);
        // Sign bytes `8m..8m + 8`: bit `t` of byte `q` is weight `8q + t`'s.
        let neg = sign_mask(&b.qs[32 + 8 * m..][..8]);
        // SAFETY: reads bytes `64m..64m + 64` of the 256 of `a.qs`.
        let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * m).cast()) };
        let y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
        let s = _mm512_maskz_permutexvar_epi8(0x5555_5555_5555_5555, c.scale_words[m], sc);
        sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(g, y), s));
    }
    _mm256_add_epi32(
        _mm512_castsi512_si256(sum),
        _mm512_extracti64x4_epi64::<1>(sum),
    )
}

/// The code bytes `(low, high)` of the 64 grid rows whose indices' low bytes are `idx` and
/// whose bits 8 and 9 are the bits of `k8` and `k9`: eight `vpermi2b` look-ups per code byte,
/// picked by index bits 7, 8 and 9.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
fn look_iq2s(c: &WideConsts<32, 8>, idx: __m512i, k8: u64, k9: u64) -> (__m512i, __m512i) {
    let k7 = _mm512_movepi8_mask(idx);
    let look = |t: usize| {
        let p: [__m512i; 8] = std::array::from_fn(|h| {
            _mm512_permutex2var_epi8(c.codes[t + 2 * h], idx, c.codes[t + 2 * h + 1])
        });
        let a: [__m512i; 4] =
            std::array::from_fn(|r| _mm512_mask_blend_epi8(k7, p[2 * r], p[2 * r + 1]));
        let b0 = _mm512_mask_blend_epi8(k8, a[0], a[1]);
        let b1 = _mm512_mask_blend_epi8(k8, a[2], a[3]);
        _mm512_mask_blend_epi8(k9, b0, b1)
    };
    (look(0), look(16))
}

/// One IQ2_S row · one token in the `vec_dot` order: as [`dot`], with IQ2_S's 10-bit grid
/// indices, its explicit sign bytes and its scales per 16 weights. A block names 32 rows, so
/// two blocks share each look-up ([`look_iq2s`]); the float steps stay one block at a time.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI/BITALG, BMI2 and AVX2/FMA/F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bitalg,bmi2,avx2,fma,f16c")]
unsafe fn dot_iq2s(w: &[BlockIQ2_S], x: &[BlockQ8_K], c: &WideConsts<32, 8>) -> f32 {
    // A block's 32 low index bytes (row `l` of sub-block `j` at `4j + l`) and its index bits 8
    // and 9 (bit `4j + l`: bits `2l`, `2l + 1` of `qh[j]`).
    let index = |b: &BlockIQ2_S| {
        // SAFETY: reads the first 32 bytes of `qs`.
        let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
        let qh = u64::from_le_bytes(b.qh);
        (
            q,
            _pext_u64(qh, 0x5555_5555_5555_5555),
            _pext_u64(qh, 0xAAAA_AAAA_AAAA_AAAA),
        )
    };
    let mut acc = _mm256_setzero_ps();
    let mut step = |b: &BlockIQ2_S, a: &BlockQ8_K, lanes: __m256i| {
        let d = h2f(b.d) * a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
    };
    let pairs = w.len() / 2;
    for i in 0..pairs {
        let (b0, b1, a0, a1) = (&w[2 * i], &w[2 * i + 1], &x[2 * i], &x[2 * i + 1]);
        let ((q0, k80, k90), (q1, k81, k91)) = (index(b0), index(b1));
        let idx = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q0), q1);
        let codes = look_iq2s(c, idx, k80 | k81 << 32, k90 | k91 << 32);
        let l0 = lanes_iq2s(b0, a0, c, codes, 0);
        let l1 = lanes_iq2s(b1, a1, c, codes, 32);
        step(b0, a0, l0);
        step(b1, a1, l1);
    }
    if w.len() % 2 == 1 {
        let (b, a) = (&w[w.len() - 1], &x[w.len() - 1]);
        let (q, k8, k9) = index(b);
        let codes = look_iq2s(c, _mm512_castsi256_si512(q), k8, k9);
        step(b, a, lanes_iq2s(b, a, c, codes, 0));
    }
    0.125 * reduce8(acc)
}

/// The negation mask of 64 weights from their eight sign bytes (bit `t` of byte `q`: weight
/// `8q + t`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn sign_mask(bytes: &[u8]) -> __mmask64 {
    u64::from_le_bytes(bytes.try_into().expect("eight sign bytes"))
}

/// The sixteen IQ2_S scales (or the eight IQ3_S ones) `2s + 1` from their packed nibbles: byte
/// `2j` from the low nibble of `packed[j]`, `2j + 1` from its high one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn unpack_scales(packed: u64) -> __m512i {
    let sc = _mm_cvtsi64_si128(packed as i64);
    let sc = _mm_unpacklo_epi8(
        _mm_and_si128(sc, _mm_set1_epi8(0x0F)),
        _mm_and_si128(_mm_srli_epi16::<4>(sc), _mm_set1_epi8(0x0F)),
    );
    _mm512_castsi128_si512(_mm_add_epi8(_mm_add_epi8(sc, sc), _mm_set1_epi8(1)))
}

/// IQ3_S's grid rows (512, four of the magnitudes 1, 3, …, 15 each) as `[low, high]` code
/// bytes (3-bit codes, two per byte).
const IQ3S_CODES: [[u8; 512]; 2] = codes32(&IQ3S, &[1, 3, 5, 7, 9, 11, 13, 15]);

/// One IQ3_S row · one token in the `vec_dot` order: as [`dot`] for IQ3_XXS's four-weight
/// rows, with 9-bit grid indices (four `vpermi2b` look-ups per code byte, picked by index bits 7
/// and 8: bit 8 of the 64 rows is `qh` itself), explicit sign bits, packed scales and no final
/// factor.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI and AVX2/FMA/F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
unsafe fn dot_iq3s(w: &[BlockIQ3_S], x: &[BlockQ8_K], c: &WideConsts<16, 4>) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.iter().zip(x) {
        // SAFETY: reads the 64 bytes of `qs`: the low index bytes, row `l` of sub-block `j` at
        // `8j + l`, whose bit 8 is bit `8j + l` of `qh`.
        let idx = unsafe { _mm512_loadu_si512(b.qs.as_ptr().cast()) };
        let (k7, k8) = (_mm512_movepi8_mask(idx), u64::from_le_bytes(b.qh));
        let look = |t: usize| {
            let p: [__m512i; 4] = std::array::from_fn(|h| {
                _mm512_permutex2var_epi8(c.codes[t + 2 * h], idx, c.codes[t + 2 * h + 1])
            });
            _mm512_mask_blend_epi8(
                k8,
                _mm512_mask_blend_epi8(k7, p[0], p[1]),
                _mm512_mask_blend_epi8(k7, p[2], p[3]),
            )
        };
        let (lo, hi) = (look(0), look(8));
        let sc = unpack_scales(u32::from_le_bytes(b.scales) as u64);
        let mut sum = _mm512_setzero_si512();
        for m in 0..4 {
            let codes = _mm512_permutex2var_epi8(lo, c.expand[m], hi);
            let codes = _mm512_multishift_epi64_epi8(c.code_shift, codes);
            let g = _mm512_permutexvar_epi8(codes, c.values);
            let neg = sign_mask(&b.signs[8 * m..][..8]);
            // SAFETY: reads bytes `64m..64m + 64` of the 256 of `a.qs`.
            let y = unsafe { _mm512_loadu_si512(a.qs.as_ptr().add(64 * m).cast()) };
            let y = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
            let s = _mm512_maskz_permutexvar_epi8(0x5555_5555_5555_5555, c.scale_words[m], sc);
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(g, y), s));
        }
        let sum = _mm256_add_epi32(
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64::<1>(sum),
        );
        let d = h2f(b.d) * a.d();
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
    }
    reduce8(acc)
}

/// IQ3_S rows · one token in the `vec_dot` order (callers check [`available`]).
pub(super) fn iq3s_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    super::check_rows::<BlockIQ3_S, BlockQ8_K>(w, row_bytes, x, out.len());
    let x = view::<BlockQ8_K>(x).expect("activation blocks");
    assert!(available(), "IQ3_S AVX-512 kernel without VBMI/BITALG");
    // SAFETY: checked just above.
    let c = unsafe { WideConsts::iq3s() };
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockIQ3_S>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
        // SAFETY: as above.
        *o = unsafe { dot_iq3s(wr, x, &c) };
    }
}

/// Whether this CPU has what [`iq2s_rows`] needs.
pub(super) fn iq2s_available() -> bool {
    available() && is_x86_feature_detected!("bmi2")
}

/// IQ2_S rows · one token in the `vec_dot` order (callers check [`iq2s_available`]).
pub(super) fn iq2s_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    super::check_rows::<BlockIQ2_S, BlockQ8_K>(w, row_bytes, x, out.len());
    let x = view::<BlockQ8_K>(x).expect("activation blocks");
    assert!(
        iq2s_available(),
        "IQ2_S AVX-512 kernel without VBMI/BITALG/BMI2"
    );
    // SAFETY: checked just above.
    let c = unsafe { WideConsts::iq2s() };
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockIQ2_S>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
        // SAFETY: as above.
        *o = unsafe { dot_iq2s(wr, x, &c) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::test_util::{acts, bytes};

    /// `kernel` equals `reference` bit for bit, on random blocks (f16 scale 1.0: every grid,
    /// sign and scale index occurs) with many −128 activations.
    fn check<L: Block>(
        kernel: fn(&[u8], usize, &[u8], &mut [f32]),
        reference: fn(&[L], &[BlockQ8_K]) -> f32,
    ) {
        if !available() {
            return;
        }
        let (nb, rows) = (3, 7);
        let size = std::mem::size_of::<L>();
        for seed in 0..40u64 {
            let mut wb = bytes(rows * nb * size, seed);
            for b in wb.chunks_exact_mut(size) {
                b[..2].copy_from_slice(&[0x00, 0x3C]);
            }
            let xb = acts(nb, 1000 + seed);
            let x = view::<BlockQ8_K>(&xb).unwrap();
            let want: Vec<u32> = wb
                .chunks_exact(nb * size)
                .map(|r| reference(view(r).unwrap(), x).to_bits())
                .collect();
            let mut got = vec![0f32; rows];
            kernel(&wb, nb * size, &xb, &mut got);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn iq2_xxs_matches_reference() {
        check(xxs2_rows, crate::scalar::iq2::iq2_xxs);
    }

    #[test]
    fn iq2_s_matches_reference() {
        if iq2s_available() {
            check(iq2s_rows, crate::scalar::iq2::iq2_s);
        }
    }

    #[test]
    fn iq3_s_matches_reference() {
        check(iq3s_rows, crate::scalar::iq3::iq3_s);
    }

    #[test]
    fn iq3_xxs_matches_reference() {
        check(xxs3_rows, crate::scalar::iq3::iq3_xxs);
    }
}

//! The tiled order for many tokens at once with 8-bit codes (AVX-512 VNNI): Q2_K, Q3_K, Q4_K,
//! Q5_K, Q6_K, IQ4_XS and the lattice IQ formats (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
//! IQ3_XXS, IQ3_S).
//!
//! llama.cpp's tiled order (see [`crate::scalar::tiled`]) needs, per (row, token) and block,
//! only the exact integer totals `S1 = Σ_j sc_j · Σ_{e∈j} q_e·y_e` (sub-block scales times the
//! sub-block sums of weight quants times activation quants) and, for formats with mins,
//! `S2 = Σ_k m_k · bsum_k`; then the float steps of [`AccTiled`](crate::scalar::tiled::AccTiled).
//! Any order of an exact integer sum gives the same totals, so this kernel's results are the
//! scalar tiled references' bits, which the exactness sweep checks against llama.cpp.
//!
//! The layout is llama.cpp's own idea (its VNNI microkernel): sixteen weight rows sit in the
//! sixteen dword lanes of a register. A row group's block is unpacked once per task into a
//! [`WTile`]: the quants as unsigned codes `q + BIAS` (`BIAS` makes signed quants unsigned:
//! 4 for Q3_K, 32 for Q6_K, 128 for IQ4_XS, the largest magnitude for the lattice formats —
//! 43 for IQ2, 62 for IQ3_XXS, 15 for IQ3_S, 9 for IQ1's `8g ± 1` — and 0 for the formats
//! with mins), four consecutive codes of each of
//! the sixteen rows per 64-byte vector, plus the sub-block scales and mins per row. Each
//! token's four activation bytes are broadcast, so one `vpdpbusd` adds four products to each
//! of sixteen rows: no lane sums to shuffle, and the output lanes are sixteen consecutive rows
//! of one token. The bias comes back out through the activations' per-16 sums:
//! `S1 = Σ_j sc_j·raw_j − BIAS · Σ_k sc16_k · bsum_k` (`vpdpwssd` of the scale pairs with a
//! broadcast pair of `bsums`), exact when `bsums` are the quants' sums (checked once per product
//! for Q3_K, Q6_K and the lattice formats, whose references multiply the signed weights; IQ4_XS's
//! reference is defined with the `bsums`). The lattice formats' blocks are decoded by their
//! oracles' decoders (grid and sign look-ups) and turned into codes with masked byte ops.
//!
//! Per (16 rows, token, block): 64 `vpdpbusd` (eight tokens per code vector loaded) and one
//! `vpmulld` a sub-block. The per-token kernels this replaces for 8+ tokens decoded every weight
//! block again for each token: a 1b Q5_K prompt ran at a sixth of llama.cpp's speed.

use std::arch::x86_64::*;

use strata_gguf::GgmlType;

use super::{OutRows, SimdLevel};
use crate::blocks::{
    f16_to_f32, k4_scales_mins, q3k_scales, view, BlockIQ1_M, BlockIQ1_S, BlockIQ2_S, BlockIQ2_XS,
    BlockIQ2_XXS, BlockIQ3_S, BlockIQ3_XXS, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_K,
    BlockQ5_K, BlockQ6_K, BlockQ8_K, IQ4_NL_VALUES,
};

/// Fewest tokens for which this kernel takes a product (below, the per-token tiled kernels).
pub(crate) const MIN_TOKENS: usize = 8;

/// Rows per [`WTile`]: one per dword lane of a 512-bit register.
const LANES: usize = 16;

/// One weight block decoded: the 256 codes `q + BIAS`, per-sub-block scales, and per-16 scales
/// and mins (for the `bsums` terms).
struct Codes {
    q: [u8; 256],
    /// Scale of each sub-block of the format's size (`256 / SUB` used).
    sc: [i32; 16],
    /// Scale of each sixteen elements.
    sc16: [i16; 16],
    /// Min of each sixteen elements (formats with mins).
    mn16: [i16; 16],
    d: f32,
    dmin: f32,
}

impl Codes {
    const EMPTY: Codes = Codes {
        q: [0; 256],
        sc: [0; 16],
        sc16: [0; 16],
        mn16: [0; 16],
        d: 0.0,
        dmin: 0.0,
    };
}

/// Sixteen rows' block, laid out for the kernel.
#[repr(C, align(64))]
struct WTile {
    /// Step `s` (elements `4s..4s + 4`): row `r`'s four codes at bytes `4r..4r + 4`.
    q: [[u8; 64]; 64],
    /// Sub-block `j`: row `r`'s scale in lane `r`.
    sc: [[i32; 16]; 16],
    /// Pair `k` (elements `32k..32k + 32`): row `r`'s per-16 scales `2k`, `2k + 1` in words
    /// `2r`, `2r + 1`.
    scp: [[i16; 32]; 8],
    /// The same for the per-16 mins.
    mnp: [[i16; 32]; 8],
    d: [f32; 16],
    dmin: [f32; 16],
}

/// A format of this kernel: its block decoder and the kernel monomorphized for its constants.
#[derive(Clone, Copy)]
struct Format {
    decode: fn(&[u8], &mut Codes),
    block: BlockFn,
    /// Whether exactness needs `bsums` that are the quants' sums (a bias, and a reference
    /// with the signed quants).
    needs_plain: bool,
}

/// One [`WTile`] against block `i` of the tokens' rows `x`, adding to `acc` (one register of
/// sixteen rows per token).
type BlockFn = unsafe fn(&WTile, &[&[BlockQ8_K]], usize, &mut [__m512]);

fn format(ty: GgmlType) -> Option<Format> {
    let f = |decode, block, needs_plain| {
        Some(Format {
            decode,
            block,
            needs_plain,
        })
    };
    match ty {
        GgmlType::Q2_K => f(decode_q2_k, block_tokens::<16, 0, true>, false),
        GgmlType::Q3_K => f(decode_q3_k, block_tokens::<16, 4, false>, true),
        GgmlType::Q4_K => f(decode_q4_k, block_tokens::<32, 0, true>, false),
        GgmlType::Q5_K => f(decode_q5_k, block_tokens::<32, 0, true>, false),
        GgmlType::Q6_K => f(decode_q6_k, block_tokens::<16, 32, false>, true),
        GgmlType::IQ4_XS => f(decode_iq4_xs, block_tokens::<32, 128, false>, false),
        GgmlType::IQ2_XXS => f(decode_iq2_xxs, block_tokens::<32, 43, false>, true),
        GgmlType::IQ2_XS => f(decode_iq2_xs, block_tokens::<16, 43, false>, true),
        GgmlType::IQ2_S => f(decode_iq2_s, block_tokens::<16, 43, false>, true),
        GgmlType::IQ3_XXS => f(decode_iq3_xxs, block_tokens::<32, 62, false>, true),
        GgmlType::IQ3_S => f(decode_iq3_s, block_tokens::<32, 15, false>, true),
        GgmlType::IQ1_S => f(decode_iq1_s, block_tokens::<32, 9, false>, true),
        GgmlType::IQ1_M => f(decode_iq1_m, block_tokens::<16, 9, false>, true),
        _ => None,
    }
}

/// A decoder compiled with AVX-512 enabled (its intrinsics inline), as a plain
/// [`Format::decode`].
macro_rules! decoder {
    ($name:ident, |$bytes:ident, $c:ident| $body:block) => {
        fn $name(bytes: &[u8], c: &mut Codes) {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,bmi2")]
            fn d($bytes: &[u8], $c: &mut Codes) $body
            // SAFETY: `Tiles` (the only user of `Format`) exists only where the CPU has
            // these features.
            unsafe { d(bytes, c) }
        }
    };
}

/// Bit fields of 32 bytes, twice: bytes `0..32` of the result are `(v >> lo) & mask` of `v`'s
/// bytes, bytes `32..64` are `(v >> hi) & mask` (shifts below 8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn fields(v: __m256i, lo: u16, hi: u16, mask: i8) -> __m512i {
    let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), v);
    let counts =
        _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo as i16), _mm256_set1_epi16(hi as i16));
    // A word shift moves the high byte's bits into the low byte's top, which the mask drops.
    _mm512_and_si512(_mm512_srlv_epi16(both, counts), _mm512_set1_epi8(mask))
}

/// Loads the first 32 bytes of `p`.
#[inline]
#[target_feature(enable = "avx2")]
fn load32(p: &[u8]) -> __m256i {
    assert!(p.len() >= 32, "32 bytes to load");
    // SAFETY: `p` holds at least 32 bytes (checked).
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

/// Stores 64 codes at `c.q[64m..]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store64(c: &mut Codes, m: usize, v: __m512i) {
    let q = &mut c.q[64 * m..64 * m + 64];
    // SAFETY: writes the 64 bytes of `q`.
    unsafe { _mm512_storeu_si512(q.as_mut_ptr().cast(), v) }
}

decoder!(decode_q2_k, |bytes, c| {
    let b = &view::<BlockQ2_K>(bytes).expect("one whole block")[0];
    // Element `128h + 32s + l`: bits `2s..2s + 2` of `qs[32h + l]`; vector `m` holds
    // `h = m / 2`, `s = s0, s0 + 1` with `s0 = 2 (m % 2)`.
    for m in 0..4 {
        let (h, s0) = (m / 2, 2 * (m % 2) as u16);
        let q = load32(&b.qs[32 * h..]);
        store64(c, m, fields(q, 2 * s0, 2 * s0 + 2, 3));
    }
    for j in 0..16 {
        c.sc[j] = (b.scales[j] & 0x0F) as i32;
        c.sc16[j] = (b.scales[j] & 0x0F) as i16;
        c.mn16[j] = (b.scales[j] >> 4) as i16;
    }
    (c.d, c.dmin) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
});

decoder!(decode_q3_k, |bytes, c| {
    let b = &view::<BlockQ3_K>(bytes).expect("one whole block")[0];
    // The quant `q − 4·!h` plus the bias 4: the low two bits (as Q2_K) and bit `e / 32` of
    // `hmask[e % 32]` as bit 2.
    let hm = load32(&b.hmask);
    for m in 0..4 {
        let (h, s0) = (m / 2, 2 * (m % 2) as u16);
        let q = load32(&b.qs[32 * h..]);
        let bit = 4 * h as u16 + s0;
        let high = _mm512_slli_epi16::<2>(fields(hm, bit, bit + 1, 1));
        store64(
            c,
            m,
            _mm512_or_si512(fields(q, 2 * s0, 2 * s0 + 2, 3), high),
        );
    }
    let sc = q3k_scales(&b.scales);
    for j in 0..16 {
        c.sc[j] = sc[j] as i32;
        c.sc16[j] = sc[j] as i16;
    }
    c.d = f16_to_f32(b.d);
});

/// Q4_K/Q5_K scales and mins (sub-blocks of 32) and super-block scales.
#[inline(always)]
fn k4_scales(scales: &[u8; 12], d: [u8; 2], dmin: [u8; 2], c: &mut Codes) {
    let (sc, mn) = k4_scales_mins(scales);
    for k in 0..16 {
        c.sc16[k] = sc[k / 2] as i16;
        c.mn16[k] = mn[k / 2] as i16;
    }
    for j in 0..8 {
        c.sc[j] = sc[j] as i32;
    }
    (c.d, c.dmin) = (f16_to_f32(d), f16_to_f32(dmin));
}

/// Q4_K/Q5_K low nibbles: element `64h + 32n + l` is nibble `n` of `qs[32h + l]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
fn k4_nibbles(qs: &[u8; 128], c: &mut Codes) {
    for h in 0..4 {
        store64(c, h, fields(load32(&qs[32 * h..]), 0, 4, 0x0F));
    }
}

decoder!(decode_q4_k, |bytes, c| {
    let b = &view::<BlockQ4_K>(bytes).expect("one whole block")[0];
    k4_nibbles(&b.qs, c);
    k4_scales(&b.scales, b.d, b.dmin, c);
});

decoder!(decode_q5_k, |bytes, c| {
    let b = &view::<BlockQ5_K>(bytes).expect("one whole block")[0];
    k4_nibbles(&b.qs, c);
    // The fifth bit of element `32s + l`: bit `s` of `qh[l]`; vector `m` holds `s = 2m, 2m + 1`.
    let qh = load32(&b.qh);
    for m in 0..4 {
        let s = 2 * m as u16;
        let high = _mm512_slli_epi16::<4>(fields(qh, s, s + 1, 1));
        // SAFETY: bytes `64m..64m + 64` of the 256 of `c.q`.
        let q = unsafe { _mm512_loadu_si512(c.q[64 * m..].as_ptr().cast()) };
        store64(c, m, _mm512_or_si512(q, high));
    }
    k4_scales(&b.scales, b.d, b.dmin, c);
});

decoder!(decode_q6_k, |bytes, c| {
    let b = &view::<BlockQ6_K>(bytes).expect("one whole block")[0];
    // The six-bit quant is `q − 32` plus the bias 32. Element `128h + 32s + l`: nibble `s / 2`
    // of `ql[64h + 32(s % 2) + l]`, high bits `2s..2s + 2` of `qh[32h + l]`; vector `m` holds
    // `h = m / 2`, `s = s0, s0 + 1` with `s0 = 2 (m % 2)`.
    for m in 0..4 {
        let (h, s0) = (m / 2, 2 * (m % 2) as u16);
        let (l0, l1) = (load32(&b.ql[64 * h..]), load32(&b.ql[64 * h + 32..]));
        let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l0), l1);
        let both = if s0 == 0 {
            both
        } else {
            _mm512_srli_epi16::<4>(both)
        };
        let low = _mm512_and_si512(both, _mm512_set1_epi8(0x0F));
        let high = _mm512_slli_epi16::<4>(fields(load32(&b.qh[32 * h..]), 2 * s0, 2 * s0 + 2, 3));
        store64(c, m, _mm512_or_si512(low, high));
    }
    for j in 0..16 {
        c.sc[j] = b.scales[j] as i32;
        c.sc16[j] = b.scales[j] as i16;
    }
    c.d = f16_to_f32(b.d);
});

decoder!(decode_iq4_xs, |bytes, c| {
    let b = &view::<BlockIQ4_XS>(bytes).expect("one whole block")[0];
    // The value table plus 128, looked up with `vpshufb` for 64 index bytes (four sub-blocks:
    // low nibbles are a sub-block's elements 0..16, high nibbles 16..32).
    let table = IQ4_NL_VALUES.map(|v| (v as u8 ^ 0x80) as i8);
    // SAFETY: reads the sixteen bytes of `table`.
    let lut = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) });
    let m4 = _mm512_set1_epi8(0x0F);
    for h in 0..2 {
        // SAFETY: bytes `64h..64h + 64` of the 128 of `b.qs`.
        let v = unsafe { _mm512_loadu_si512(b.qs[64 * h..].as_ptr().cast()) };
        let lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, m4));
        let hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4));
        // Sub-block `j`'s lanes: `lo` lane `j`, then `hi` lane `j`.
        let first = _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), hi);
        let second =
            _mm512_permutex2var_epi64(lo, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), hi);
        store64(c, 2 * h, first);
        store64(c, 2 * h + 1, second);
    }
    let ls = crate::dequant::iq4_xs_scales(b);
    for k in 0..16 {
        c.sc16[k] = ls[k / 2] as i16;
    }
    c.sc[..8].copy_from_slice(&ls);
    c.d = f16_to_f32(b.d);
});

/// Codes `BIAS ± g` of 256 magnitudes `g` (element order) and their sign bits (bit `e % 8` of
/// `signs[e / 8]` set: element `e` negative), as the IQ2 and IQ3 formats store them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn signed_codes<const BIAS: i8>(g: &[u8; 256], signs: &[u8; 32], c: &mut Codes) {
    let bias = _mm512_set1_epi8(BIAS);
    for m in 0..4 {
        // SAFETY: bytes `64m..64m + 64` of the 256 of `g`.
        let gv = unsafe { _mm512_loadu_si512(g[64 * m..].as_ptr().cast()) };
        let neg = u64::from_le_bytes(signs[8 * m..8 * m + 8].try_into().expect("8 bytes"));
        let v = _mm512_mask_sub_epi8(_mm512_add_epi8(bias, gv), neg, bias, gv);
        store64(c, m, v);
    }
}

/// The per-sub-block and per-16 scales from one scale per `256 / N` elements.
#[inline(always)]
fn odd_scales<const N: usize>(ls: &[i32; N], c: &mut Codes) {
    c.sc[..N].copy_from_slice(ls);
    for k in 0..16 {
        c.sc16[k] = ls[k * N / 16] as i16;
    }
}

/// An IQ2 block decoded by its oracle: the grid rows are the magnitudes in element order.
#[inline(always)]
fn iq2_codes(d: &crate::scalar::iq2::Decoded, dw: [u8; 2], c: &mut Codes) {
    let mut g = [0u8; 256];
    for (k, row) in d.grid.iter().enumerate() {
        g[8 * k..8 * k + 8].copy_from_slice(&row.to_le_bytes());
    }
    // SAFETY: the decoders run only where `Tiles` found AVX-512 F/BW.
    unsafe { signed_codes::<43>(&g, &d.signs, c) };
    c.d = f16_to_f32(dw) * 0.125;
}

decoder!(decode_iq2_xxs, |bytes, c| {
    let b = &view::<BlockIQ2_XXS>(bytes).expect("one whole block")[0];
    let d = crate::scalar::iq2::decode_xxs(b);
    iq2_codes(&d, b.d, c);
    // One scale per 32 elements (the oracle repeats it per 16).
    odd_scales::<8>(&std::array::from_fn(|j| d.scales[2 * j]), c);
});

decoder!(decode_iq2_xs, |bytes, c| {
    let b = &view::<BlockIQ2_XS>(bytes).expect("one whole block")[0];
    let d = crate::scalar::iq2::decode_xs(b);
    iq2_codes(&d, b.d, c);
    odd_scales::<16>(&d.scales, c);
});

decoder!(decode_iq2_s, |bytes, c| {
    let b = &view::<BlockIQ2_S>(bytes).expect("one whole block")[0];
    let d = crate::scalar::iq2::decode_s(b);
    iq2_codes(&d, b.d, c);
    odd_scales::<16>(&d.scales, c);
});

decoder!(decode_iq3_xxs, |bytes, c| {
    let b = &view::<BlockIQ3_XXS>(bytes).expect("one whole block")[0];
    let d = crate::scalar::iq3::decode_xxs(b);
    signed_codes::<62>(&d.g, &d.signs, c);
    odd_scales::<8>(&d.scales, c);
    c.d = f16_to_f32(b.d) * 0.25;
});

decoder!(decode_iq3_s, |bytes, c| {
    let b = &view::<BlockIQ3_S>(bytes).expect("one whole block")[0];
    let d = crate::scalar::iq3::decode_s(b);
    signed_codes::<15>(&d.g, &d.signs, c);
    odd_scales::<8>(&d.scales, c);
    c.d = f16_to_f32(b.d);
});

/// The eight codes `8g + 9 ± 1` of IQ1 grid row `idx` (values `g ∈ {−1, 0, 1}` as bytes),
/// `−1` where `neg`. Byte-wise without carries: `g + 1 ∈ {0, 1, 2}`, times eight, plus 0 or 2.
#[inline(always)]
fn iq1_codes(idx: usize, neg: bool) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let g = crate::grids::IQ1S[idx];
    let g1 = ((g & !(ONES << 7)) + ONES) ^ (g & (ONES << 7));
    ((g1 << 3) + if neg { 0 } else { 2 * ONES }).to_le_bytes()
}

decoder!(decode_iq1_s, |bytes, c| {
    let b = &view::<BlockIQ1_S>(bytes).expect("one whole block")[0];
    // Per 32 elements: a u16 of `qh` with three high index bits per eight, the scale and the
    // sign of the shift.
    let mut ls = [0i32; 8];
    for (ib, ls) in ls.iter_mut().enumerate() {
        let h = u16::from_le_bytes([b.qh[2 * ib], b.qh[2 * ib + 1]]);
        *ls = 2 * ((h >> 12) & 7) as i32 + 1;
        for l in 0..4 {
            let idx = b.qs[4 * ib + l] as usize | (((h >> (3 * l)) & 7) as usize) << 8;
            let e = 32 * ib + 8 * l;
            c.q[e..e + 8].copy_from_slice(&iq1_codes(idx, h & 0x8000 != 0));
        }
    }
    odd_scales::<8>(&ls, c);
    c.d = f16_to_f32(b.d) * 0.125;
});

decoder!(decode_iq1_m, |bytes, c| {
    let b = &view::<BlockIQ1_M>(bytes).expect("one whole block")[0];
    // Per eight elements a nibble of `qh`: three high index bits and the shift's sign.
    for j in 0..32 {
        let n = (b.qh[j / 2] >> (4 * (j % 2))) & 0x0F;
        let idx = b.qs[j] as usize | ((n & 7) as usize) << 8;
        c.q[8 * j..8 * j + 8].copy_from_slice(&iq1_codes(idx, n & 8 != 0));
    }
    let ls = std::array::from_fn(|g| {
        let w = u16::from_le_bytes([b.scales[2 * (g / 4)], b.scales[2 * (g / 4) + 1]]);
        2 * ((w >> (3 * (g % 4))) & 7) as i32 + 1
    });
    odd_scales::<16>(&ls, c);
    c.d = f16_to_f32(crate::scalar::iq1::iq1m_scale_bits(b).to_le_bytes()) * 0.125;
});

/// The `n` tokens' activation rows `xrow(t)` as Q8_K blocks, `nb` each.
pub(super) fn token_rows<'x>(
    n: usize,
    nb: usize,
    xrow: impl Fn(usize) -> &'x [u8],
) -> Vec<&'x [BlockQ8_K]> {
    (0..n)
        .map(|t| {
            let row = view::<BlockQ8_K>(xrow(t)).expect("activation row is whole blocks");
            assert_eq!(row.len(), nb, "activation row of {nb} blocks");
            row
        })
        .collect()
}

/// The many-token kernel of one format for one product, holding the tokens' activation rows.
pub(crate) struct Tiles<'x> {
    format: Format,
    /// Each token's Q8_K row.
    x: Vec<&'x [BlockQ8_K]>,
}

impl<'x> Tiles<'x> {
    /// The kernel for `n` tokens of `ty` weights (`xrow(t)`: token `t`'s Q8_K row of `nb`
    /// blocks) at most at `level`, where there is one: AVX-512 VNNI, a format above, at least
    /// [`MIN_TOKENS`] tokens, and for Q3_K, Q6_K and the lattice IQ formats activations whose
    /// `bsums` are their sums.
    pub(crate) fn prepare(
        level: SimdLevel,
        ty: GgmlType,
        n: usize,
        nb: usize,
        xrow: impl Fn(usize) -> &'x [u8],
    ) -> Option<Tiles<'x>> {
        if level < SimdLevel::Avx512 || !SimdLevel::Avx512.is_available() || n < MIN_TOKENS {
            return None;
        }
        let format = format(ty)?;
        let x = token_rows(n, nb, xrow);
        if format.needs_plain && !x.iter().all(|row| super::iq4_xs_x86::acts_plain(row)) {
            return None;
        }
        Some(Tiles { format, x })
    }

    /// `out[t][r] = W[r] · x[t]` in the tiled order for every row `r` of `w` (rows of
    /// `row_bytes`) and every token `t` in `out`'s tokens.
    ///
    /// Per group of sixteen rows and per block: the rows' blocks are unpacked once into a
    /// [`WTile`], then every token's block meets it; the sixteen rows' accumulators of each
    /// token stay in one register per token between blocks (a buffer of the tokens').
    pub(crate) fn run(&self, w: &[u8], row_bytes: usize, out: &mut OutRows) {
        let rows = out.rows();
        let tokens = out.tokens();
        let nb = self.x.first().map_or(0, |x| x.len());
        let bs = row_bytes / nb.max(1);
        assert!(w.len() >= rows * row_bytes, "weight tile holds {rows} rows");
        assert!(tokens.end <= self.x.len(), "tokens were prepared");
        let mut tile = Box::new(WTile {
            q: [[0; 64]; 64],
            sc: [[0; 16]; 16],
            scp: [[0; 32]; 8],
            mnp: [[0; 32]; 8],
            d: [0.0; 16],
            dmin: [0.0; 16],
        });
        let mut codes: Box<[Codes; LANES]> = Box::new(std::array::from_fn(|_| Codes::EMPTY));
        // SAFETY: (each `_mm512_setzero_ps` below) `Tiles` exists only where `prepare` found
        // AVX-512 F (`SimdLevel::Avx512`).
        let zero = unsafe { zero512() };
        let mut acc = vec![zero; tokens.len()];
        let mut r0 = 0;
        while r0 < rows {
            let k = (rows - r0).min(LANES);
            acc.fill(zero);
            for i in 0..nb {
                for (r, c) in codes.iter_mut().enumerate() {
                    // Rows past the last repeat it (their results are dropped).
                    let at = (r0 + r.min(k - 1)) * row_bytes + i * bs;
                    // The row's next block, which the next step decodes: sixteen rows' blocks
                    // lie a row apart, a stride the hardware prefetchers do not follow.
                    let next = w.as_ptr().wrapping_add(at + bs).cast::<i8>();
                    for line in (0..bs).step_by(64) {
                        // SAFETY: SSE is part of x86-64; prefetching has no memory effects and
                        // never faults.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line)) };
                    }
                    (self.format.decode)(&w[at..at + bs], c);
                }
                // SAFETY: as below.
                unsafe { place(&codes, &mut tile) };
                // SAFETY: `Tiles` exists only where `prepare` found AVX-512 F/BW/VL/VNNI and
                // AVX2/FMA (`SimdLevel::Avx512`); `acc` has one register per token.
                unsafe { (self.format.block)(&tile, &self.x[tokens.clone()], i, &mut acc) };
            }
            for (t, a) in tokens.clone().zip(&acc) {
                // SAFETY: a 512-bit vector is sixteen floats, any bits valid.
                let v: [f32; LANES] = unsafe { std::mem::transmute(*a) };
                if k == LANES {
                    out.write(t, r0, &v);
                } else {
                    out.write(t, r0, &v[..k]);
                }
            }
            r0 += k;
        }
    }
}

/// Puts the sixteen rows' decoded blocks into the tile: the codes as four 16 × 16 transposes of
/// dwords (row `r`'s dword `s` to step `s`'s lane `r`), the scales and mins lane by lane.
///
/// # Safety
/// AVX-512 F available.
#[target_feature(enable = "avx512f")]
unsafe fn place(c: &[Codes; LANES], t: &mut WTile) {
    for g in 0..4 {
        // SAFETY: row `r`'s bytes `64g..64g + 64` of 256.
        let v: [__m512i; 16] = std::array::from_fn(|r| unsafe {
            _mm512_loadu_si512(c[r].q[64 * g..].as_ptr().cast())
        });
        for (s, v) in transpose16(v).into_iter().enumerate() {
            // SAFETY: writes the 64 bytes of step `16g + s` (64-byte aligned).
            unsafe { _mm512_store_si512(t.q[16 * g + s].as_mut_ptr().cast(), v) };
        }
    }
    for (r, c) in c.iter().enumerate() {
        for (j, sc) in t.sc.iter_mut().enumerate() {
            sc[r] = c.sc[j];
        }
        for k in 0..8 {
            t.scp[k][2 * r] = c.sc16[2 * k];
            t.scp[k][2 * r + 1] = c.sc16[2 * k + 1];
            t.mnp[k][2 * r] = c.mn16[2 * k];
            t.mnp[k][2 * r + 1] = c.mn16[2 * k + 1];
        }
        t.d[r] = c.d;
        t.dmin[r] = c.dmin;
    }
}

/// The 16 × 16 transpose of dwords: `out[s]` lane `r` = `v[r]` lane `s`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(v: [__m512i; 16]) -> [__m512i; 16] {
    // Pairs of rows interleaved by dwords, then by qwords: each 128-bit lane `l` of `b[4q + i]`
    // holds dword `4l + i` of rows `4q..4q + 4`.
    let a: [__m512i; 16] = std::array::from_fn(|i| {
        let (x, y) = (v[i & !1], v[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(x, y)
        } else {
            _mm512_unpackhi_epi32(x, y)
        }
    });
    let b: [__m512i; 16] = std::array::from_fn(|i| {
        let q = i / 4;
        let (lo, hi) = (a[4 * q + (i % 4) / 2], a[4 * q + 2 + (i % 4) / 2]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi64(lo, hi)
        } else {
            _mm512_unpackhi_epi64(lo, hi)
        }
    });
    // b[4q + i] lane l: dword 4l + i of rows 4q..4q + 4. Gather lane l of the four row quads.
    let c: [__m512i; 16] = std::array::from_fn(|i| {
        let (x, y) = if i < 8 {
            (b[i % 4], b[4 + i % 4])
        } else {
            (b[8 + i % 4], b[12 + i % 4])
        };
        if (i / 4) % 2 == 0 {
            _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y)
        } else {
            _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y)
        }
    });
    // c[4h + e]: lanes [b[e] l(h), b[e] l(h + 2), b[4 + e] l(h), b[4 + e] l(h + 2)] (quads 0
    // and 1); c[8 + 4h + e] the same for quads 2 and 3.
    std::array::from_fn(|s| {
        // Step s = 4l + e: lane l of b[e] for the four quads.
        let (l, e) = (s / 4, s % 4);
        let (h, second) = (l % 2, l / 2);
        let (x, y) = (c[4 * h + e], c[8 + 4 * h + e]);
        if second == 0 {
            _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y)
        } else {
            _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y)
        }
    })
}

/// # Safety
/// AVX-512 F available.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn zero512() -> __m512 {
    _mm512_setzero_ps()
}

/// Four activation bytes of `a` from element `4s`, as one dword broadcast to every lane.
#[inline(always)]
fn quad(a: &BlockQ8_K, s: usize) -> i32 {
    i32::from_le_bytes([
        a.qs[4 * s] as u8,
        a.qs[4 * s + 1] as u8,
        a.qs[4 * s + 2] as u8,
        a.qs[4 * s + 3] as u8,
    ])
}

/// The `bsums` pair `2k`, `2k + 1` of `a` as one dword (two words).
#[inline(always)]
fn bsum_pair(a: &BlockQ8_K, k: usize) -> i32 {
    i32::from_le_bytes([
        a.bsums[4 * k],
        a.bsums[4 * k + 1],
        a.bsums[4 * k + 2],
        a.bsums[4 * k + 3],
    ])
}

/// [`BlockFn`] for sub-blocks of `SUB` elements, codes biased by `BIAS`, with mins or
/// without: tokens [`TG`] at a time, then four, then one.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and AVX2/FMA available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn block_tokens<const SUB: usize, const BIAS: i32, const MIN: bool>(
    w: &WTile,
    x: &[&[BlockQ8_K]],
    i: usize,
    acc: &mut [__m512],
) {
    assert_eq!(acc.len(), x.len(), "one accumulator per token");
    let whole = x.len() / TG * TG;
    let quads = x.len() / 4 * 4;
    for t0 in (0..whole).step_by(TG) {
        let r = tokens::<SUB, BIAS, MIN, TG>(
            w,
            std::array::from_fn(|t| &x[t0 + t][i]),
            std::array::from_fn(|t| acc[t0 + t]),
        );
        acc[t0..t0 + TG].copy_from_slice(&r);
    }
    for t0 in (whole..quads).step_by(4) {
        let r = tokens::<SUB, BIAS, MIN, 4>(
            w,
            std::array::from_fn(|t| &x[t0 + t][i]),
            std::array::from_fn(|t| acc[t0 + t]),
        );
        acc[t0..t0 + 4].copy_from_slice(&r);
    }
    for t in quads..x.len() {
        acc[t] = tokens::<SUB, BIAS, MIN, 1>(w, [&x[t][i]], [acc[t]])[0];
    }
}

/// Tokens per pass of [`block_tokens`] (their chains interleaved, each code vector loaded once
/// for all of them).
const TG: usize = 8;

/// `T` tokens' blocks against the tile, returning the accumulators advanced by this block in
/// the tiled order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn tokens<const SUB: usize, const BIAS: i32, const MIN: bool, const T: usize>(
    w: &WTile,
    a: [&BlockQ8_K; T],
    acc: [__m512; T],
) -> [__m512; T] {
    let zero = _mm512_setzero_si512();
    // SAFETY: each load reads one 64-byte row of `w`'s arrays (64-byte aligned).
    let ld = |p: *const i32| unsafe { _mm512_load_si512(p.cast()) };
    let mut s1 = [zero; T];
    for j in 0..256 / SUB {
        let mut raw = [zero; T];
        for s in j * SUB / 4..(j + 1) * SUB / 4 {
            let c = ld(w.q[s].as_ptr().cast());
            for t in 0..T {
                raw[t] = _mm512_dpbusd_epi32(raw[t], c, _mm512_set1_epi32(quad(a[t], s)));
            }
        }
        let sc = ld(w.sc[j].as_ptr());
        for t in 0..T {
            s1[t] = _mm512_add_epi32(s1[t], _mm512_mullo_epi32(raw[t], sc));
        }
    }
    if BIAS != 0 {
        let mut c = [zero; T];
        for k in 0..8 {
            let p = ld(w.scp[k].as_ptr().cast());
            for t in 0..T {
                c[t] = _mm512_dpwssd_epi32(c[t], p, _mm512_set1_epi32(bsum_pair(a[t], k)));
            }
        }
        for t in 0..T {
            s1[t] = _mm512_sub_epi32(s1[t], _mm512_mullo_epi32(c[t], _mm512_set1_epi32(BIAS)));
        }
    }
    // SAFETY: reads the sixteen floats of `w.d` / `w.dmin`.
    let (d, dmin) = unsafe {
        (
            _mm512_load_ps(w.d.as_ptr()),
            _mm512_load_ps(w.dmin.as_ptr()),
        )
    };
    std::array::from_fn(|t| {
        let mut r = _mm512_mul_ps(_mm512_cvtepi32_ps(s1[t]), d);
        if MIN {
            let mut s2 = zero;
            for k in 0..8 {
                let p = ld(w.mnp[k].as_ptr().cast());
                s2 = _mm512_dpwssd_epi32(s2, p, _mm512_set1_epi32(bsum_pair(a[t], k)));
            }
            r = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(s2), r);
        }
        _mm512_fmadd_ps(r, _mm512_set1_ps(a[t].d()), acc[t])
    })
}

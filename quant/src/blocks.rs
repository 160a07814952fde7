//! Block layouts of the GGUF quantized formats, as `#[repr(C)]` records of bytes.
//!
//! Every field is a byte or a byte array, so every struct has alignment 1, no padding, and every
//! bit pattern is a valid value. That makes [`view`] (bytes → `&[Block]`) sound for any byte
//! slice whose length is a multiple of the block size, wherever it lies in memory (a tensor in a
//! memory-mapped file is aligned only to what the file says). Multi-byte scalars are stored
//! little-endian, as in GGUF; accessors decode them.
//!
//! Layouts are those of ggml (`ggml-common.h`) and gguf-py (`gguf/quants.py`); each struct's
//! comment gives elements per block and bits per weight, and a `const` assertion pins its size.
#![allow(non_camel_case_types)]

use half::{bf16, f16};
use strata_gguf::GgmlType;

use crate::QuantError;

/// Elements per K-quant super-block.
pub(crate) const QK_K: usize = 256;
/// Elements per block of the 32-element formats (Q4_0 … Q8_1).
pub(crate) const QK: usize = 32;

/// Decodes a little-endian IEEE half stored as two bytes.
#[inline(always)]
pub(crate) fn f16_to_f32(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// Encodes an `f32` as a little-endian IEEE half (round to nearest even).
#[inline(always)]
pub(crate) fn f32_to_f16(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// Decodes a little-endian bfloat16 stored as two bytes (exact: the top half of an `f32`).
#[inline(always)]
pub(crate) fn bf16_to_f32(b: [u8; 2]) -> f32 {
    bf16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// A block type: a plain record of bytes that any byte pattern may fill.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1, no padding, contain only byte
/// (`u8`/`i8`) fields or arrays of them, and have `size_of::<Self>() == Self::TYPE.type_size()`.
pub(crate) unsafe trait Block: Copy + 'static {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Elements (weights) per block.
    const ELEMS: usize;
}

/// Views `bytes` as a slice of blocks `B`.
///
/// Fails when the length is not a whole number of blocks.
pub(crate) fn view<B: Block>(bytes: &[u8]) -> Result<&[B], QuantError> {
    let size = std::mem::size_of::<B>();
    const { assert!(std::mem::align_of::<B>() == 1) };
    if !bytes.len().is_multiple_of(size) {
        return Err(QuantError::BadLength {
            ty: B::TYPE,
            len: bytes.len(),
            unit: size,
            what: "bytes (a whole number of blocks)",
        });
    }
    // SAFETY: `B: Block` guarantees alignment 1, no padding and validity for every bit pattern;
    // the length is a whole number of `B`s, so the new slice covers exactly `bytes`, with the
    // same lifetime and immutability.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Views a mutable byte slice as blocks `B` (used by quantizers writing into a `Vec<u8>`).
pub(crate) fn view_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = std::mem::size_of::<B>();
    const { assert!(std::mem::align_of::<B>() == 1) };
    assert!(
        bytes.len().is_multiple_of(size),
        "buffer is not a whole number of {} blocks",
        B::TYPE
    );
    // SAFETY: as in `view`; the slice is uniquely borrowed, and every bit pattern written through
    // the block view is a valid byte.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $elems:expr, $size:expr, { $($(#[$fdoc:meta])* $field:ident : $fty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name {
            $($(#[$fdoc])* pub(crate) $field: $fty,)*
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        const _: () = assert!(std::mem::align_of::<$name>() == 1);
        // SAFETY: `#[repr(C)]`, byte fields only (checked alignment 1), size asserted above and
        // equal to ggml's type size for this type (checked by a unit test against `strata_gguf`).
        unsafe impl Block for $name {
            const TYPE: GgmlType = GgmlType::$ty;
            const ELEMS: usize = $elems;
        }
    };
}

block!(
    /// Q4_0: 32 weights, 4.5 bits each. `w = d · (q − 8)`, q ∈ 0..16.
    /// `qs[j]` holds element j (low nibble) and j + 16 (high nibble).
    BlockQ4_0, Q4_0, QK, 18, {
    /// Scale (f16).
    d: [u8; 2],
    /// Packed 4-bit quants.
    qs: [u8; 16],
});

block!(
    /// Q4_1: 32 weights, 5 bits each. `w = d · q + m`, q ∈ 0..16.
    BlockQ4_1, Q4_1, QK, 20, {
    /// Scale (f16).
    d: [u8; 2],
    /// Offset, the block minimum (f16).
    m: [u8; 2],
    /// Packed 4-bit quants, nibble order as in Q4_0.
    qs: [u8; 16],
});

block!(
    /// Q5_0: 32 weights, 5.5 bits each. `w = d · (q − 16)`, q ∈ 0..32; bit 4 of element j is
    /// bit j of the little-endian `qh`.
    BlockQ5_0, Q5_0, QK, 22, {
    /// Scale (f16).
    d: [u8; 2],
    /// Fifth bits of the 32 quants (u32 little-endian).
    qh: [u8; 4],
    /// Low four bits, nibble order as in Q4_0.
    qs: [u8; 16],
});

block!(
    /// Q5_1: 32 weights, 6 bits each. `w = d · q + m`, q ∈ 0..32.
    BlockQ5_1, Q5_1, QK, 24, {
    /// Scale (f16).
    d: [u8; 2],
    /// Offset (f16).
    m: [u8; 2],
    /// Fifth bits (u32 little-endian).
    qh: [u8; 4],
    /// Low four bits.
    qs: [u8; 16],
});

block!(
    /// IQ4_NL: 32 weights, 4.5 bits each. `w = d · IQ4_NL_VALUES[q]`, q ∈ 0..16, nibble order as
    /// in Q4_0.
    BlockIQ4_NL, IQ4_NL, QK, 18, {
    /// Scale (f16).
    d: [u8; 2],
    /// Packed 4-bit indices into [`IQ4_NL_VALUES`].
    qs: [u8; 16],
});

block!(
    /// IQ4_XS: 256 weights, 4.25 bits each, in 8 sub-blocks of 32. `w = d · (ls − 32) ·
    /// IQ4_NL_VALUES[q]`, the 6-bit `ls` of sub-block `j` being `scales_l` nibble `j` (low bits)
    /// and bits `2j..2j+2` of `scales_h` (high bits); nibble order per sub-block as in Q4_0.
    BlockIQ4_XS, IQ4_XS, QK_K, 136, {
    /// Scale (f16).
    d: [u8; 2],
    /// High two bits of the eight sub-block scales (u16 little-endian).
    scales_h: [u8; 2],
    /// Low four bits of the eight sub-block scales.
    scales_l: [u8; 4],
    /// Packed 4-bit indices into [`IQ4_NL_VALUES`], 16 bytes per sub-block.
    qs: [u8; 128],
});

block!(
    /// IQ2_XXS: 256 weights, 2.0625 bits each, in 8 sub-blocks of 32. Per sub-block two u32:
    /// four 8-bit indices into `grids::IQ2XXS` (8 magnitudes each), then four 7-bit sign indices
    /// and a 4-bit scale (top bits).
    BlockIQ2_XXS, IQ2_XXS, QK_K, 66, {
    /// Scale (f16).
    d: [u8; 2],
    /// Grid indices, signs and scales (32 u16 little-endian).
    qs: [u8; 64],
});

block!(
    /// IQ2_XS: 256 weights, 2.3125 bits each. Per group of 8: a u16 of a 9-bit index into
    /// `grids::IQ2XS` and a 7-bit sign index; per 16 weights a 4-bit scale.
    BlockIQ2_XS, IQ2_XS, QK_K, 74, {
    /// Scale (f16).
    d: [u8; 2],
    /// Grid and sign indices (32 u16 little-endian).
    qs: [u8; 64],
    /// 4-bit scales, two per byte.
    scales: [u8; 8],
});

block!(
    /// IQ2_S: 256 weights, 2.5625 bits each. Per group of 8: a 10-bit index into
    /// `grids::IQ2S` (low 8 bits in `qs[0..32]`, high 2 in `qh`) and 8 explicit sign bits
    /// (`qs[32..64]`); per 16 weights a 4-bit scale.
    BlockIQ2_S, IQ2_S, QK_K, 82, {
    /// Scale (f16).
    d: [u8; 2],
    /// Low index bits (32 bytes), then sign bits (32 bytes).
    qs: [u8; 64],
    /// High index bits, two per group.
    qh: [u8; 8],
    /// 4-bit scales, two per byte.
    scales: [u8; 8],
});

block!(
    /// IQ3_XXS: 256 weights, 3.0625 bits each. 64 8-bit indices into `grids::IQ3XXS` (4
    /// magnitudes each), then per sub-block of 32 a u32 of four 7-bit sign indices and a 4-bit
    /// scale.
    BlockIQ3_XXS, IQ3_XXS, QK_K, 98, {
    /// Scale (f16).
    d: [u8; 2],
    /// Grid indices (64 bytes), then scales and signs (8 u32 little-endian).
    qs: [u8; 96],
});

block!(
    /// IQ3_S: 256 weights, 3.4375 bits each. 64 9-bit indices into `grids::IQ3S` (low 8 bits in
    /// `qs`, high bit in `qh`), explicit sign bits, a 4-bit scale per 32 weights.
    BlockIQ3_S, IQ3_S, QK_K, 110, {
    /// Scale (f16).
    d: [u8; 2],
    /// Low index bits.
    qs: [u8; 64],
    /// High index bits.
    qh: [u8; 8],
    /// Sign bits, one per weight.
    signs: [u8; 32],
    /// 4-bit scales, two per byte.
    scales: [u8; 4],
});

block!(
    /// IQ1_S: 256 weights, 1.5625 bits each. 32 11-bit indices into `grids::IQ1S` (8 ternary
    /// values each; low 8 bits in `qs`, high 3 in `qh`); per sub-block of 32 a 3-bit scale and
    /// the sign of a ±1/8 shift (`qh`'s top bits).
    BlockIQ1_S, IQ1_S, QK_K, 50, {
    /// Scale (f16).
    d: [u8; 2],
    /// Low index bits.
    qs: [u8; 32],
    /// High index bits, scale and shift sign per sub-block (8 u16 little-endian).
    qh: [u8; 16],
});

block!(
    /// IQ1_M: 256 weights, 1.75 bits each. As IQ1_S's grid, with a shift sign per 8 weights,
    /// a 3-bit scale per 16 weights, and the f16 super-block scale spread over the scales'
    /// top nibbles.
    BlockIQ1_M, IQ1_M, QK_K, 56, {
    /// Low index bits.
    qs: [u8; 32],
    /// High index bits and shift signs, two groups per byte.
    qh: [u8; 16],
    /// 3-bit scales (4 u16 little-endian; their top nibbles hold the f16 scale).
    scales: [u8; 8],
});

block!(
    /// TQ1_0: 256 ternary weights, 1.6875 bits each. `w = d · (t − 1)`, t ∈ 0..3, five trits per
    /// byte in `qs`, four per byte in `qh` (base-3 digits as fixed-point fractions).
    BlockTQ1_0, TQ1_0, QK_K, 54, {
    /// Five trits per byte.
    qs: [u8; 48],
    /// Four trits per byte.
    qh: [u8; 4],
    /// Scale (f16).
    d: [u8; 2],
});

block!(
    /// TQ2_0: 256 ternary weights, 2.0625 bits each. `w = d · (q − 1)`, q ∈ 0..4 (2 bits,
    /// element `128c + 32s + l` in bits `2s..2s+2` of `qs[32c + l]`).
    BlockTQ2_0, TQ2_0, QK_K, 66, {
    /// Packed 2-bit quants.
    qs: [u8; 64],
    /// Scale (f16).
    d: [u8; 2],
});

block!(
    /// MXFP4: 32 weights, 4.25 bits each. `w = 2^(e − 128) · MXFP4_VALUES[q]` (the E2M1 values
    /// doubled as integers, so the scale is halved: ggml's `ggml_e8m0_to_fp32_half`, which
    /// gives the subnormals `2^(e − 128)` too for `e < 2`); nibble order as in Q4_0.
    BlockMXFP4, MXFP4, QK, 17, {
    /// Shared exponent (E8M0).
    e: u8,
    /// Packed 4-bit E2M1 codes.
    qs: [u8; 16],
});

/// The E2M1 values doubled, per 4-bit code (ggml's `kvalues_mxfp4`).
pub(crate) const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// The 16 values an IQ4_NL index stands for (ggml's `kvalues_iq4nl`).
pub(crate) const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

block!(
    /// Q8_0: 32 weights, 8.5 bits each. `w = d · q`, q ∈ −128..128 (quantizers emit −127..=127).
    BlockQ8_0, Q8_0, QK, 34, {
    /// Scale (f16).
    d: [u8; 2],
    /// Quants.
    qs: [i8; 32],
});

block!(
    /// Q8_1: 32 weights, 9 bits each. `w = d · q`; `s = d · Σq` serves the Q4_1/Q5_1 dots.
    BlockQ8_1, Q8_1, QK, 36, {
    /// Scale (f16).
    d: [u8; 2],
    /// `d` times the sum of the quants (f16).
    s: [u8; 2],
    /// Quants.
    qs: [i8; 32],
});

block!(
    /// Q2_K: 256 weights, 2.625 bits each, in 16 sub-blocks of 16.
    /// `w = d · (scales[j] & 15) · q − dmin · (scales[j] >> 4)`, q ∈ 0..4.
    /// Element `128c + 32s + l` is bits `2s..2s+2` of `qs[32c + l]`.
    BlockQ2_K, Q2_K, QK_K, 84, {
    /// Per sub-block 4-bit scale (low) and 4-bit min (high).
    scales: [u8; 16],
    /// Packed 2-bit quants.
    qs: [u8; 64],
    /// Super-block scale for the scales (f16).
    d: [u8; 2],
    /// Super-block scale for the mins (f16).
    dmin: [u8; 2],
});

block!(
    /// Q3_K: 256 weights, 3.4375 bits each, in 16 sub-blocks of 16.
    /// `w = d · (sc[j] − 32) · (q − 4·!h)`: q the 2 low bits (packed as Q2_K), h bit `e / 32` of
    /// `hmask[e % 32]`; the 6-bit scales are packed in 12 bytes.
    BlockQ3_K, Q3_K, QK_K, 110, {
    /// High bits of the quants (set = no offset).
    hmask: [u8; 32],
    /// Low two bits of the quants.
    qs: [u8; 64],
    /// Sixteen 6-bit scales.
    scales: [u8; 12],
    /// Super-block scale (f16).
    d: [u8; 2],
});

block!(
    /// Q4_K: 256 weights, 4.5 bits each, in 8 sub-blocks of 32.
    /// `w = d · sc[j] · q − dmin · m[j]`, q ∈ 0..16, 6-bit `sc`/`m` packed in `scales`.
    /// Element `64c + 32h + l` is nibble h of `qs[32c + l]`.
    BlockQ4_K, Q4_K, QK_K, 144, {
    /// Super-block scale for the scales (f16).
    d: [u8; 2],
    /// Super-block scale for the mins (f16).
    dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins.
    scales: [u8; 12],
    /// Packed 4-bit quants.
    qs: [u8; 128],
});

block!(
    /// Q5_K: 256 weights, 5.5 bits each: Q4_K plus a fifth bit, bit `e / 32` of `qh[e % 32]`.
    BlockQ5_K, Q5_K, QK_K, 176, {
    /// Super-block scale for the scales (f16).
    d: [u8; 2],
    /// Super-block scale for the mins (f16).
    dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins (as Q4_K).
    scales: [u8; 12],
    /// Fifth bits.
    qh: [u8; 32],
    /// Low four bits (as Q4_K).
    qs: [u8; 128],
});

block!(
    /// Q6_K: 256 weights, 6.5625 bits each, in 16 sub-blocks of 16. `w = d · scales[j] · (q − 32)`.
    /// Element `128c + 32s + l`: low nibble from `ql[64c + l + 32(s & 1)]` (nibble `s >> 1`),
    /// high two bits from bits `2s..2s+2` of `qh[32c + l]`.
    BlockQ6_K, Q6_K, QK_K, 210, {
    /// Low four bits.
    ql: [u8; 128],
    /// High two bits.
    qh: [u8; 64],
    /// Signed 8-bit sub-block scales.
    scales: [i8; 16],
    /// Super-block scale (f16).
    d: [u8; 2],
});

block!(
    /// Q8_K: 256 activations, 9.125 bits each. `w = d · q`; `bsums[j]` = Σ of quants 16j..16j+16
    /// (i16 little-endian), used by the K-quant dots for the mins/offsets.
    BlockQ8_K, Q8_K, QK_K, 292, {
    /// Scale (f32 little-endian).
    d: [u8; 4],
    /// Quants.
    qs: [i8; 256],
    /// Sums of 16 quants (16 × i16 little-endian).
    bsums: [u8; 32],
});

impl BlockQ8_K {
    /// The scale as `f32`.
    #[inline(always)]
    pub(crate) fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    /// Sum of quants `16j .. 16j + 16`.
    #[inline(always)]
    pub(crate) fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes([self.bsums[2 * j], self.bsums[2 * j + 1]])
    }
}

/// Unpacks the eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block.
///
/// Bytes 0..4 hold scales 0..4 (low 6 bits) and the top two bits of scales 4..8; bytes 4..8 the
/// same for the mins; bytes 8..12 the low four bits of scales 4..8 (low nibble) and mins 4..8.
#[inline(always)]
pub(crate) fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (sc, m) = k4_scales_mins_u64(s);
    (sc.to_le_bytes(), m.to_le_bytes())
}

/// [`k4_scales_mins`] as two little-endian `u64`s (byte j = scale/min j), computed with four
/// bytes at a time: every mask keeps bits that stay inside their own byte.
#[inline(always)]
pub(crate) fn k4_scales_mins_u64(s: &[u8; 12]) -> (u64, u64) {
    let w0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let w1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let w2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const H2: u32 = 0x3030_3030;
    let sc_lo = w0 & M6;
    let m_lo = w1 & M6;
    let sc_hi = (w2 & M4) | ((w0 >> 2) & H2);
    let m_hi = ((w2 >> 4) & M4) | ((w1 >> 2) & H2);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        m_lo as u64 | (m_hi as u64) << 32,
    )
}

/// Packs eight 6-bit scales and mins (each < 64) into the Q4_K/Q5_K 12-byte layout.
pub(crate) fn k4_pack_scales_mins(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (sc[j] & 63) | ((sc[j + 4] & 0x30) << 2);
        s[j + 4] = (m[j] & 63) | ((m[j + 4] & 0x30) << 2);
        s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    s
}

/// Unpacks the sixteen 6-bit Q3_K scales, already offset to −32..32.
#[inline(always)]
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = (s[j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<B: Block>() {
        assert_eq!(std::mem::size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::ELEMS, B::TYPE.block_size(), "{}", B::TYPE);
    }

    #[test]
    fn sizes_match_gguf_type_table() {
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockIQ4_NL>();
        check::<BlockIQ4_XS>();
        check::<BlockIQ2_XXS>();
        check::<BlockIQ2_XS>();
        check::<BlockIQ2_S>();
        check::<BlockIQ3_XXS>();
        check::<BlockIQ3_S>();
        check::<BlockIQ1_S>();
        check::<BlockIQ1_M>();
        check::<BlockTQ1_0>();
        check::<BlockTQ2_0>();
        check::<BlockMXFP4>();
        check::<BlockQ8_1>();
        check::<BlockQ2_K>();
        check::<BlockQ3_K>();
        check::<BlockQ4_K>();
        check::<BlockQ5_K>();
        check::<BlockQ6_K>();
        check::<BlockQ8_K>();
    }

    #[test]
    fn k4_scale_packing_round_trips() {
        for seed in 0..64u8 {
            let sc: [u8; 8] =
                std::array::from_fn(|i| (seed.wrapping_mul(7).wrapping_add(i as u8 * 13)) & 63);
            let m: [u8; 8] =
                std::array::from_fn(|i| (seed.wrapping_mul(11).wrapping_add(i as u8 * 5)) & 63);
            assert_eq!(k4_scales_mins(&k4_pack_scales_mins(&sc, &m)), (sc, m));
        }
    }

    #[test]
    fn view_rejects_partial_blocks() {
        assert!(view::<BlockQ4_K>(&[0u8; 143]).is_err());
        assert_eq!(view::<BlockQ4_K>(&[0u8; 288]).unwrap().len(), 2);
    }
}

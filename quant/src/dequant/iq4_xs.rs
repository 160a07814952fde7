//! IQ4_XS dequantization, bit-identical to gguf-py's `IQ4_XS.dequantize_blocks`.
//!
//! A block holds 256 weights in eight sub-blocks of 32: an f16 scale `d`, eight 6-bit sub-block
//! scales `ls_j` (low four bits: nibble `j` of `scales_l`, low nibble first; high two bits:
//! bits `2j..2j+2` of the little-endian u16 `scales_h`), and 128 bytes of 4-bit indices into
//! [`IQ4_NL_VALUES`], 16 bytes per sub-block: the low nibbles are elements `0..16`, the high
//! nibbles elements `16..32`. gguf-py computes `dl = f32(d) · f32(ls_j − 32)`, then
//! `w = dl · f32(value)`; so does this module (two rounded `f32` multiplies, in that order).

use crate::blocks::*;

/// The eight signed sub-block scales `ls_j − 32` (each in `−32..32`) of an IQ4_XS block.
#[inline(always)]
pub(crate) fn iq4_xs_scales(b: &BlockIQ4_XS) -> [i32; 8] {
    let sh = u16::from_le_bytes(b.scales_h);
    std::array::from_fn(|j| {
        let lo = (b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
        let hi = ((sh >> (2 * j)) & 3) as u8;
        (lo | (hi << 4)) as i32 - 32
    })
}

/// The 256 quant values (`IQ4_NL_VALUES[index]`) of an IQ4_XS block, in element order (per
/// sub-block of 32: the 16 low nibbles, then the 16 high nibbles).
#[inline(always)]
pub(crate) fn iq4_xs_values(b: &BlockIQ4_XS) -> [i8; 256] {
    let mut q = [0i8; 256];
    for (q, qs) in q.chunks_exact_mut(32).zip(b.qs.chunks_exact(16)) {
        let (lo, hi) = q.split_at_mut(16);
        for ((lo, hi), &byte) in lo.iter_mut().zip(hi).zip(qs) {
            *lo = IQ4_NL_VALUES[(byte & 0x0F) as usize];
            *hi = IQ4_NL_VALUES[(byte >> 4) as usize];
        }
    }
    q
}

/// IQ4_XS → f32.
pub(crate) fn iq4_xs(blocks: &[BlockIQ4_XS], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let d = f16_to_f32(b.d);
        let ls = iq4_xs_scales(b);
        let q = iq4_xs_values(b);
        for (e, o) in o.iter_mut().enumerate() {
            let dl = d * ls[e / 32] as f32;
            *o = dl * q[e] as f32;
        }
    }
}

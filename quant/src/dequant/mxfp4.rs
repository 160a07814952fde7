//! MXFP4 dequantization, bit-identical to gguf-py's `MXFP4.dequantize_blocks` (and ggml's
//! `dequantize_row_mxfp4`).
//!
//! A block holds 32 weights: an E8M0 exponent byte `e` and 16 bytes of 4-bit E2M1 codes
//! (`qs[j]`: element `j` in the low nibble, `j + 16` in the high one). The codes index
//! [`MXFP4_VALUES`], the E2M1 values doubled, so the scale is halved: [`e8m0_to_f32_half`]
//! `= 2^(e − 128)` (ggml's `ggml_e8m0_to_fp32_half`). `w = scale · f32(value)`, one rounded
//! multiply.

use crate::blocks::*;

/// `2^(e − 128)` as an `f32`, built from its bits like ggml's `ggml_e8m0_to_fp32_half`:
/// `(e − 1) << 23` for `e ≥ 2`, the subnormals `0x0020_0000 << e` for `e < 2`. Exact for every
/// byte (`e = 255` gives `2^127`).
#[inline(always)]
pub(crate) fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// The 32 values (`MXFP4_VALUES[code]`) of an MXFP4 block, in element order.
#[inline(always)]
pub(crate) fn mxfp4_values(b: &BlockMXFP4) -> [i8; 32] {
    std::array::from_fn(|j| {
        let n = if j < 16 {
            b.qs[j] & 0x0F
        } else {
            b.qs[j - 16] >> 4
        };
        MXFP4_VALUES[n as usize]
    })
}

/// MXFP4 → f32. `out.len() == 32 · blocks.len()`.
pub(crate) fn mxfp4(blocks: &[BlockMXFP4], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = e8m0_to_f32_half(b.e);
        for (o, q) in o.iter_mut().zip(mxfp4_values(b)) {
            *o = d * q as f32;
        }
    }
}

//! IQ1_S and IQ1_M dequantization, bit-identical to gguf-py's `IQ1_S`/`IQ1_M`
//! `dequantize_blocks` (and to ggml's `dequantize_row_iq1_s`/`dequantize_row_iq1_m`).
//!
//! Both formats pick 8 ternary values `g ∈ {−1, 0, 1}` per 11-bit index from `grids::IQ1S`
//! and shift them by `δ = ±1/8`. Per group the weight is `dl · (g + δ)`, where
//! `dl = d · (2s + 1)` is rounded to `f32` first and `g + δ` is exact, so each element sees
//! exactly two roundings, as in numpy.
//!
//! - IQ1_S: `d` is the block's f16; sub-block `ib` of 32 has the little-endian `u16`
//!   `h = qh[ib]`: index `l` (of 4) is `qs[4ib + l] | ((h >> 3l) & 7) << 8`, the scale is
//!   `(h >> 12) & 7` and bit 15 is the sign of `δ`.
//! - IQ1_M: `d` is the f16 whose four nibbles are the top nibbles of the four `u16` scale
//!   words (word 0's is the lowest); group `g` of 16 has scale `(sc[g / 4] >> 3(g % 4)) & 7`;
//!   index `j` (of 32, 8 weights each) is `qs[j] | (n & 7) << 8` with `n` the nibble `j % 2` of
//!   `qh[j / 2]`, whose bit 3 is the sign of `δ`.

use crate::blocks::*;
use crate::grids::IQ1S;

/// The `δ` shift of IQ1_S and IQ1_M (`IQ1S_DELTA`, `IQ1M_DELTA`).
const DELTA: f32 = 0.125;

/// Writes `dl · (g + δ)` for the eight grid values of `idx` into `out`.
#[inline(always)]
fn put8(out: &mut [f32], idx: usize, dl: f32, neg: bool) {
    let delta = if neg { -DELTA } else { DELTA };
    let grid = IQ1S[idx].to_le_bytes();
    for (y, &g) in out.iter_mut().zip(&grid) {
        *y = dl * (g as i8 as f32 + delta);
    }
}

/// IQ1_S → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn iq1_s(blocks: &[BlockIQ1_S], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for ib in 0..8 {
            let h = u16::from_le_bytes([b.qh[2 * ib], b.qh[2 * ib + 1]]);
            let dl = d * (2 * ((h >> 12) & 7) + 1) as f32;
            for l in 0..4 {
                let idx = b.qs[4 * ib + l] as usize | (((h >> (3 * l)) & 7) as usize) << 8;
                let e = 32 * ib + 8 * l;
                put8(&mut y[e..e + 8], idx, dl, h & 0x8000 != 0);
            }
        }
    }
}

/// IQ1_M → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn iq1_m(blocks: &[BlockIQ1_M], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let sc: [u16; 4] =
            std::array::from_fn(|k| u16::from_le_bytes([b.scales[2 * k], b.scales[2 * k + 1]]));
        let bits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = f16_to_f32(bits.to_le_bytes());
        for j in 0..32 {
            let g = j / 2;
            let dl = d * (2 * ((sc[g / 4] >> (3 * (g % 4))) & 7) + 1) as f32;
            let n = (b.qh[j / 2] >> (4 * (j % 2))) & 0x0f;
            let idx = b.qs[j] as usize | ((n & 7) as usize) << 8;
            put8(&mut y[8 * j..8 * j + 8], idx, dl, n & 8 != 0);
        }
    }
}

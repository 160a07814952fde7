//! IQ3_XXS and IQ3_S dequantization, bit-identical to gguf-py (`quants.py`, `IQ3_XXS` and
//! `IQ3_S`) and to ggml's `dequantize_row_iq3_{xxs,s}`.
//!
//! Both formats hold 256 weights in eight sub-blocks of 32; each sub-block is eight rows of a
//! lattice table of four magnitudes (`grids::IQ3XXS`, `grids::IQ3S`), a sign per weight and a
//! 4-bit scale `s`:
//!
//! - IQ3_XXS: `qs[0..64]` are 8-bit grid indices; `qs[64..96]` are eight little-endian u32, one
//!   per sub-block, with four 7-bit sign indices (expanded through `KSIGNS`, bit `k` set:
//!   element `k` of the group of 8 negative) and the scale in the top four bits. Weight
//!   `= ((d · (0.5 + s)) · 0.5) · g · ±1`.
//! - IQ3_S: 9-bit grid indices (low bits in `qs`, bit 8 of index `i` is bit `i % 8` of
//!   `qh[i / 8]`), one sign bit per weight in `signs`, scales two per byte (low nibble first).
//!   Weight `= (d · (1 + 2s)) · g · ±1`.
//!
//! The multiplies are in gguf-py's order (the sign multiply is exact).

use crate::blocks::*;
use crate::grids::{IQ3S, IQ3XXS, KSIGNS};

/// The magnitude of element `k` (0..4) of grid row `row`.
#[inline(always)]
fn grid_elem(row: u32, k: usize) -> f32 {
    (row >> (8 * k) & 0xFF) as f32
}

/// IQ3_XXS → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn iq3_xxs(blocks: &[BlockIQ3_XXS], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let aux = u32::from_le_bytes(b.qs[64 + 4 * ib..68 + 4 * ib].try_into().unwrap());
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS[(aux >> (7 * l) & 127) as usize];
                for (k, y) in y.iter_mut().enumerate() {
                    let row = IQ3XXS[b.qs[8 * ib + 2 * l + k / 4] as usize];
                    let s = if signs >> k & 1 != 0 { -1.0 } else { 1.0 };
                    *y = db * grid_elem(row, k % 4) * s;
                }
            }
        }
    }
}

/// IQ3_S → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn iq3_s(blocks: &[BlockIQ3_S], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let s = b.scales[ib / 2] >> (4 * (ib % 2)) & 15;
            let db = d * (1 + 2 * s) as f32;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = b.signs[4 * ib + l];
                for (k, y) in y.iter_mut().enumerate() {
                    let i = 8 * ib + 2 * l + k / 4;
                    let idx = b.qs[i] as usize | ((b.qh[i / 8] >> (i % 8) & 1) as usize) << 8;
                    let sg = if signs >> k & 1 != 0 { -1.0 } else { 1.0 };
                    *y = db * grid_elem(IQ3S[idx], k % 4) * sg;
                }
            }
        }
    }
}

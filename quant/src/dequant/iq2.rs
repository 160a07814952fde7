//! Dequantization of the IQ2 formats (IQ2_XXS, IQ2_XS, IQ2_S), bit-identical to gguf-py.
//!
//! Every weight is `db · g · s`: `g` a magnitude (8, 25 or 43) from the format's lattice table
//! in [`crate::grids`], `s` a sign (from a 7-bit index into [`KSIGNS`] for IQ2_XXS and IQ2_XS,
//! an explicit bit for IQ2_S), and `db = (d · (0.5 + scale)) · 0.25` per sub-block (32 weights
//! for IQ2_XXS, 16 for the others). The multiplications happen in gguf-py's order,
//! `(db · g) · s`, in `f32`; the sign multiply is exact, so it is a negation here.

use crate::blocks::*;
use crate::grids::{IQ2S, IQ2XS, IQ2XXS, KSIGNS};

/// Writes the eight weights of one grid row: `(db · g[k])`, negated where `signs` bit `k` is set.
#[inline(always)]
fn put8(out: &mut [f32], db: f32, grid: u64, signs: u8) {
    for (k, y) in out[..8].iter_mut().enumerate() {
        let v = db * ((grid >> (8 * k)) & 0xFF) as f32;
        *y = if signs >> k & 1 != 0 { -v } else { v };
    }
}

/// The sub-block scale `(d · (0.5 + s)) · 0.25`, as gguf-py computes it.
#[inline(always)]
fn sub_scale(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

/// IQ2_XXS → f32. Per 32 weights, two little-endian u32: four grid indices (one per byte),
/// then four 7-bit sign indices and the 4-bit scale in the top bits.
pub(crate) fn iq2_xxs(blocks: &[BlockIQ2_XXS], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let q = &b.qs[8 * ib..8 * ib + 8];
            let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
            let db = sub_scale(d, aux1 >> 28);
            for l in 0..4 {
                let signs = KSIGNS[(aux1 >> (7 * l) & 127) as usize];
                put8(&mut y[8 * l..], db, IQ2XXS[q[l] as usize], signs);
            }
        }
    }
}

/// IQ2_XS → f32. Per 8 weights a little-endian u16: a 9-bit grid index and a 7-bit sign
/// index; per 16 weights a 4-bit scale.
pub(crate) fn iq2_xs(blocks: &[BlockIQ2_XS], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (g, y) in y.chunks_exact_mut(8).enumerate() {
            let q = u16::from_le_bytes([b.qs[2 * g], b.qs[2 * g + 1]]);
            let s = (b.scales[g / 4] >> (4 * (g / 2 % 2))) & 0x0F;
            let db = sub_scale(d, s as u32);
            put8(y, db, IQ2XS[(q & 511) as usize], KSIGNS[(q >> 9) as usize]);
        }
    }
}

/// IQ2_S → f32. Per 8 weights a 10-bit grid index (low byte in `qs[0..32]`, two high bits in
/// `qh`) and a sign byte (`qs[32..64]`); per 16 weights a 4-bit scale.
pub(crate) fn iq2_s(blocks: &[BlockIQ2_S], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (g, y) in y.chunks_exact_mut(8).enumerate() {
            let idx = b.qs[g] as usize | ((b.qh[g / 4] as usize >> (2 * (g % 4)) & 3) << 8);
            let s = (b.scales[g / 4] >> (4 * (g / 2 % 2))) & 0x0F;
            let db = sub_scale(d, s as u32);
            put8(y, db, IQ2S[idx], b.qs[32 + g]);
        }
    }
}

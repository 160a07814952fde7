//! TQ1_0 and TQ2_0 dequantization, bit-identical to gguf-py's `TQ1_0.dequantize_blocks` and
//! `TQ2_0.dequantize_blocks` (and ggml's `dequantize_row_tq*_0`).
//!
//! Both formats hold 256 ternary weights `w = d · t`, `t ∈ {−1, 0, 1}`, with one f16 scale `d`
//! at the end of the block; the result is `f32(d) · f32(t)`, one rounded multiply (exact, as
//! `t` is ternary).
//!
//! - TQ1_0 packs five trits per byte of `qs` and four per byte of `qh` as base-3 fixed-point
//!   fractions: trit `n` of byte `b` is `((u8)(b · 3ⁿ) · 3) >> 8` (the multiply wraps in 8
//!   bits). Elements `0..160` come from `qs[0..32]` (element `32n + j` is trit `n` of `qs[j]`),
//!   `160..240` from `qs[32..48]` (element `160 + 16n + j`, trit `n` of `qs[32 + j]`), and
//!   `240..256` from `qh` (element `240 + 4n + j`, trit `n` of `qh[j]`).
//! - TQ2_0 stores `t + 1` in two bits: element `128c + 32s + l` is bits `2s..2s+2` of
//!   `qs[32c + l]`.

use crate::blocks::*;

/// Powers of three that shift a TQ1_0 byte's trits to the top (ggml's `pow3`).
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Trit `n` (`0..5`) of a TQ1_0 byte, in `0..3`.
#[inline(always)]
fn trit(b: u8, n: usize) -> u8 {
    ((b.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as u8
}

/// The 256 unsigned codes `u = t + 1 ∈ 0..3` of a TQ1_0 block, in element order.
#[inline(always)]
pub(crate) fn tq1_0_codes(b: &BlockTQ1_0) -> [u8; 256] {
    let mut u = [0u8; 256];
    for n in 0..5 {
        for j in 0..32 {
            u[32 * n + j] = trit(b.qs[j], n);
        }
        for j in 0..16 {
            u[160 + 16 * n + j] = trit(b.qs[32 + j], n);
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            u[240 + 4 * n + j] = trit(b.qh[j], n);
        }
    }
    u
}

/// The 256 unsigned codes `u = t + 1 ∈ 0..4` of a TQ2_0 block, in element order (code 3
/// meaning `t = 2`).
#[inline(always)]
pub(crate) fn tq2_0_codes(b: &BlockTQ2_0) -> [u8; 256] {
    std::array::from_fn(|e| {
        let (c, s, l) = (e / 128, (e % 128) / 32, e % 32);
        (b.qs[32 * c + l] >> (2 * s)) & 3
    })
}

/// The 256 values `t ∈ {−1, 0, 1}` of a TQ1_0 block, in element order.
#[inline(always)]
fn tq1_0_values(b: &BlockTQ1_0) -> [i8; 256] {
    tq1_0_codes(b).map(|u| u as i8 - 1)
}

/// The 256 values `t ∈ {−1, 0, 1, 2}` of a TQ2_0 block, in element order.
#[inline(always)]
fn tq2_0_values(b: &BlockTQ2_0) -> [i8; 256] {
    tq2_0_codes(b).map(|u| u as i8 - 1)
}

/// TQ1_0 → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn tq1_0(blocks: &[BlockTQ1_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (o, q) in o.iter_mut().zip(tq1_0_values(b)) {
            *o = d * q as f32;
        }
    }
}

/// TQ2_0 → f32. `out.len() == 256 · blocks.len()`.
pub(crate) fn tq2_0(blocks: &[BlockTQ2_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (o, q) in o.iter_mut().zip(tq2_0_values(b)) {
            *o = d * q as f32;
        }
    }
}

//! IQ2_XXS, IQ2_XS and IQ2_S · Q8_K: the reference float orders of llama.cpp (0c1e57098, x86-64).
//!
//! Each 256-weight block decodes to magnitudes `g ∈ {8, 25, 43}` (lattice rows of
//! [`crate::grids`]), signs, and odd sub-block scales `2s + 1` (one per 32 weights for IQ2_XXS,
//! per 16 for IQ2_XS and IQ2_S); the block's value is `d_w · d_x · Σ (2s+1) · (±g) · q / 8`.
//!
//! **`vec_dot` order** (`ggml_vec_dot_iq2_{xxs,xs,s}_q8_K`, their `__AVX2__` branches: there is
//! no AVX-512 one). The signs are applied to the activations with `_mm256_sign_epi8` (or
//! `xor`/`sub`), which wraps: a quant of −128 stays −128 when negated. Each 32-weight sub-block
//! is one 256-bit vector; `maddubs` then `madd` by the scale put the products of elements
//! `4l..4l+4` into i32 lane `l`, and the lanes of all sub-blocks add up exactly. Per block,
//! `acc[l] = fma(f16(d_w) · d_x, lane[l], acc[l])`; the result is `0.125 · hsum_float_8(acc)`
//! ([`reduce8`]).
//!
//! **Tiled order** (`ggml-cpu/tiled`, batches of 8 tokens or more): `tiled_unpack_src0` stores
//! `d_w = f16(d) · 0.125` and the signed weights; the integer total `S1 = Σ (2s+1)·(±g)·q` is
//! exact (the act-bias trick has no wrap), and each block does [`AccTiled::add_no_min`].

use super::reduce8;
use super::tiled::AccTiled;
use crate::blocks::*;
use crate::grids::{IQ2S, IQ2XS, IQ2XXS, KSIGNS};

/// One block decoded: per 8 weights the grid row and its sign byte (bit `k` set: element `k`
/// negative), per 16 weights the odd scale `2s + 1`.
pub(crate) struct Decoded {
    /// Grid rows (byte `k` = magnitude of element `k`).
    pub(crate) grid: [u64; 32],
    /// Sign bytes.
    pub(crate) signs: [u8; 32],
    /// Scales per 16 weights.
    pub(crate) scales: [i32; 16],
}

/// Decodes an IQ2_XXS block.
#[inline(always)]
pub(crate) fn decode_xxs(b: &BlockIQ2_XXS) -> Decoded {
    let mut d = Decoded {
        grid: [0; 32],
        signs: [0; 32],
        scales: [0; 16],
    };
    for ib in 0..8 {
        let q = &b.qs[8 * ib..8 * ib + 8];
        let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
        let s = 2 * (aux1 >> 28) as i32 + 1;
        d.scales[2 * ib] = s;
        d.scales[2 * ib + 1] = s;
        for l in 0..4 {
            d.grid[4 * ib + l] = IQ2XXS[q[l] as usize];
            d.signs[4 * ib + l] = KSIGNS[(aux1 >> (7 * l) & 127) as usize];
        }
    }
    d
}

/// Decodes an IQ2_XS block.
#[inline(always)]
pub(crate) fn decode_xs(b: &BlockIQ2_XS) -> Decoded {
    let mut d = Decoded {
        grid: [0; 32],
        signs: [0; 32],
        scales: [0; 16],
    };
    for g in 0..32 {
        let q = u16::from_le_bytes([b.qs[2 * g], b.qs[2 * g + 1]]);
        d.grid[g] = IQ2XS[(q & 511) as usize];
        d.signs[g] = KSIGNS[(q >> 9) as usize];
    }
    for j in 0..8 {
        d.scales[2 * j] = 2 * (b.scales[j] & 15) as i32 + 1;
        d.scales[2 * j + 1] = 2 * (b.scales[j] >> 4) as i32 + 1;
    }
    d
}

/// Decodes an IQ2_S block.
#[inline(always)]
pub(crate) fn decode_s(b: &BlockIQ2_S) -> Decoded {
    let mut d = Decoded {
        grid: [0; 32],
        signs: [0; 32],
        scales: [0; 16],
    };
    for g in 0..32 {
        let idx = b.qs[g] as usize | ((b.qh[g / 4] as usize >> (2 * (g % 4)) & 3) << 8);
        d.grid[g] = IQ2S[idx];
        d.signs[g] = b.qs[32 + g];
    }
    for j in 0..8 {
        d.scales[2 * j] = 2 * (b.scales[j] & 15) as i32 + 1;
        d.scales[2 * j + 1] = 2 * (b.scales[j] >> 4) as i32 + 1;
    }
    d
}

/// Magnitude and sign of element `e`.
#[inline(always)]
fn elem(d: &Decoded, e: usize) -> (i32, bool) {
    let g = (d.grid[e / 8] >> (8 * (e % 8)) & 0xFF) as i32;
    (g, d.signs[e / 8] >> (e % 8) & 1 != 0)
}

/// The eight i32 lanes of one block in the `vec_dot` order: lane `l` sums, over the eight
/// sub-blocks, `scale · g · sign(q)` for elements `4l..4l+4`, the sign applied to the quant
/// with wrapping (as `_mm256_sign_epi8` does).
#[inline(always)]
pub(crate) fn block_lanes(d: &Decoded, a: &BlockQ8_K) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for e in 0..256 {
        let (g, neg) = elem(d, e);
        let q = if neg { a.qs[e].wrapping_neg() } else { a.qs[e] };
        lanes[(e % 32) / 4] += d.scales[e / 16] * g * q as i32;
    }
    lanes
}

/// The exact integer total of one block in the tiled order: `Σ scale · (±g) · q`.
#[inline(always)]
pub(crate) fn block_total(d: &Decoded, a: &BlockQ8_K) -> i32 {
    (0..256)
        .map(|e| {
            let (g, neg) = elem(d, e);
            let w = if neg { -g } else { g };
            d.scales[e / 16] * w * a.qs[e] as i32
        })
        .sum()
}

/// The `vec_dot` order over a row, given each block's `f16` scale and decoding.
#[inline(always)]
fn vec_dot<B>(w: &[B], x: &[BlockQ8_K], dec: impl Fn(&B) -> ([u8; 2], Decoded)) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let (dw, dd) = dec(b);
        let d = f16_to_f32(dw) * a.d();
        let lanes = block_lanes(&dd, a);
        for (acc, &p) in acc.iter_mut().zip(&lanes) {
            *acc = d.mul_add(p as f32, *acc);
        }
    }
    0.125 * reduce8(acc)
}

/// The tiled order over a row.
#[inline(always)]
fn tiled<B>(w: &[B], x: &[BlockQ8_K], dec: impl Fn(&B) -> ([u8; 2], Decoded)) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (dw, dd) = dec(b);
        acc.add_no_min(f16_to_f32(dw) * 0.125, a.d(), block_total(&dd, a));
    }
    acc.finish()
}

/// IQ2_XXS · Q8_K in `ggml_vec_dot_iq2_xxs_q8_K`'s x86 order.
pub(crate) fn iq2_xxs(w: &[BlockIQ2_XXS], x: &[BlockQ8_K]) -> f32 {
    vec_dot(w, x, |b| (b.d, decode_xxs(b)))
}

/// IQ2_XXS · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq2_xxs_tiled(w: &[BlockIQ2_XXS], x: &[BlockQ8_K]) -> f32 {
    tiled(w, x, |b| (b.d, decode_xxs(b)))
}

/// IQ2_XS · Q8_K in `ggml_vec_dot_iq2_xs_q8_K`'s x86 order.
pub(crate) fn iq2_xs(w: &[BlockIQ2_XS], x: &[BlockQ8_K]) -> f32 {
    vec_dot(w, x, |b| (b.d, decode_xs(b)))
}

/// IQ2_XS · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq2_xs_tiled(w: &[BlockIQ2_XS], x: &[BlockQ8_K]) -> f32 {
    tiled(w, x, |b| (b.d, decode_xs(b)))
}

/// IQ2_S · Q8_K in `ggml_vec_dot_iq2_s_q8_K`'s x86 order.
pub(crate) fn iq2_s(w: &[BlockIQ2_S], x: &[BlockQ8_K]) -> f32 {
    vec_dot(w, x, |b| (b.d, decode_s(b)))
}

/// IQ2_S · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq2_s_tiled(w: &[BlockIQ2_S], x: &[BlockQ8_K]) -> f32 {
    tiled(w, x, |b| (b.d, decode_s(b)))
}

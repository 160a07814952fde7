//! IQ3_XXS and IQ3_S · Q8_K: the scalar references of llama.cpp's two float orders (the format
//! is described in `crate::dequant`'s `iq3` module).
//!
//! Both orders use the same decoded block ([`Decoded`]): per weight its grid magnitude
//! `g ≤ 62` and whether it is negative, per 32 weights the odd scale `2s + 1`.
//!
//! **`vec_dot` order** (`ggml_vec_dot_iq3_{xxs,s}_q8_K`, its `__AVX2__` branch, which is the
//! one an AVX-512 build takes): per sub-block of 32 the activations are negated where the
//! weight is (in i8, so −128 stays −128), `maddubs(g, ±y)` and `madd` by the scale put the
//! products of elements `4l..4l+4` into i32 lane `l`; the eight sub-blocks add up exactly.
//! Per block `acc[l] = fma(f16(d_w) · d_x, lane[l], acc[l])`; the result is
//! `0.25 · reduce8(acc)` for IQ3_XXS and `reduce8(acc)` for IQ3_S.
//!
//! **Tiled order** (`ggml-cpu/tiled`, batches of 8 tokens or more): `tiled_unpack_src0` stores
//! `d_w = f16(d) · 0.25` (IQ3_XXS) or `f16(d)` (IQ3_S) and the signed weights; the integer
//! total `S1 = Σ (2s+1)·(±g)·y` is exact (the act-bias MAC cannot wrap: |w| ≤ 62), and each
//! block does [`AccTiled::add_no_min`].

use super::reduce8;
use super::tiled::AccTiled;
use crate::blocks::*;
use crate::grids::{IQ3S, IQ3XXS, KSIGNS};

/// One block decoded.
pub(crate) struct Decoded {
    /// Grid magnitude of each weight.
    pub(crate) g: [u8; 256],
    /// Sign bytes, one per 8 weights (bit `k` set: element `k` negative).
    pub(crate) signs: [u8; 32],
    /// Odd scales `2s + 1`, one per 32 weights.
    pub(crate) scales: [i32; 8],
}

/// Writes the four magnitudes of grid row `row` to `g[at..at + 4]`.
#[inline(always)]
fn put(g: &mut [u8; 256], at: usize, row: u32) {
    g[at..at + 4].copy_from_slice(&row.to_le_bytes());
}

/// Decodes an IQ3_XXS block.
#[inline(always)]
pub(crate) fn decode_xxs(b: &BlockIQ3_XXS) -> Decoded {
    let mut d = Decoded {
        g: [0; 256],
        signs: [0; 32],
        scales: [0; 8],
    };
    for ib in 0..8 {
        let aux = u32::from_le_bytes(b.qs[64 + 4 * ib..68 + 4 * ib].try_into().unwrap());
        d.scales[ib] = 2 * (aux >> 28) as i32 + 1;
        for l in 0..4 {
            d.signs[4 * ib + l] = KSIGNS[(aux >> (7 * l) & 127) as usize];
        }
        for i in 8 * ib..8 * ib + 8 {
            put(&mut d.g, 4 * i, IQ3XXS[b.qs[i] as usize]);
        }
    }
    d
}

/// Decodes an IQ3_S block.
#[inline(always)]
pub(crate) fn decode_s(b: &BlockIQ3_S) -> Decoded {
    let mut d = Decoded {
        g: [0; 256],
        signs: b.signs,
        scales: [0; 8],
    };
    for ib in 0..8 {
        d.scales[ib] = 2 * (b.scales[ib / 2] >> (4 * (ib % 2)) & 15) as i32 + 1;
    }
    for i in 0..64 {
        let idx = b.qs[i] as usize | ((b.qh[i / 8] >> (i % 8) & 1) as usize) << 8;
        put(&mut d.g, 4 * i, IQ3S[idx]);
    }
    d
}

/// Whether weight `e` is negative.
#[inline(always)]
fn neg(d: &Decoded, e: usize) -> bool {
    d.signs[e / 8] >> (e % 8) & 1 != 0
}

/// The eight `vec_dot` lanes of one block: lane `l` = Σ over sub-blocks of
/// `scale · Σ_{e in 4l..4l+4} g · (±y in i8)`.
#[inline(always)]
pub(crate) fn block_lanes(d: &Decoded, a: &BlockQ8_K) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for ib in 0..8 {
        for (l, lane) in lanes.iter_mut().enumerate() {
            let p: i32 = (32 * ib + 4 * l..32 * ib + 4 * l + 4)
                .map(|e| {
                    let y = a.qs[e];
                    let y = if neg(d, e) { y.wrapping_neg() } else { y };
                    d.g[e] as i32 * y as i32
                })
                .sum();
            *lane += d.scales[ib] * p;
        }
    }
    lanes
}

/// The exact integer total of one block in the tiled order: `Σ scale · (±g) · y`.
#[inline(always)]
pub(crate) fn block_total(d: &Decoded, a: &BlockQ8_K) -> i32 {
    (0..256)
        .map(|e| {
            let g = d.g[e] as i32;
            let w = if neg(d, e) { -g } else { g };
            d.scales[e / 32] * w * a.qs[e] as i32
        })
        .sum()
}

/// The `vec_dot` order over a row (before the final factor).
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
    reduce8(acc)
}

/// The tiled order over a row, the weight scale being `f16(d) · factor`.
#[inline(always)]
fn tiled<B>(w: &[B], x: &[BlockQ8_K], factor: f32, dec: impl Fn(&B) -> ([u8; 2], Decoded)) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (dw, dd) = dec(b);
        acc.add_no_min(f16_to_f32(dw) * factor, a.d(), block_total(&dd, a));
    }
    acc.finish()
}

/// IQ3_XXS · Q8_K in `ggml_vec_dot_iq3_xxs_q8_K`'s x86 order.
pub(crate) fn iq3_xxs(w: &[BlockIQ3_XXS], x: &[BlockQ8_K]) -> f32 {
    0.25 * vec_dot(w, x, |b| (b.d, decode_xxs(b)))
}

/// IQ3_XXS · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq3_xxs_tiled(w: &[BlockIQ3_XXS], x: &[BlockQ8_K]) -> f32 {
    tiled(w, x, 0.25, |b| (b.d, decode_xxs(b)))
}

/// IQ3_S · Q8_K in `ggml_vec_dot_iq3_s_q8_K`'s x86 order.
pub(crate) fn iq3_s(w: &[BlockIQ3_S], x: &[BlockQ8_K]) -> f32 {
    vec_dot(w, x, |b| (b.d, decode_s(b)))
}

/// IQ3_S · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq3_s_tiled(w: &[BlockIQ3_S], x: &[BlockQ8_K]) -> f32 {
    tiled(w, x, 1.0, |b| (b.d, decode_s(b)))
}

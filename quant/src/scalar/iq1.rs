//! IQ1_S and IQ1_M · Q8_K in llama.cpp's x86 float orders: `vec_dot` (`ggml_vec_dot_iq1_s_q8_K`,
//! `ggml_vec_dot_iq1_m_q8_K`, their `__AVX2__` branches, which the AVX-512 build runs) and the
//! tiled matrix product (`ggml-cpu/tiled`, `n >= 8` tokens).
//!
//! **vec_dot.** llama.cpp multiplies the grid bytes `g ∈ {−1, 0, 1}` with the activations by
//! `vpmaddubsw(vpsignb(g, g), vpsignb(x, g))`, so a product `(−1) · (−128)` comes out as
//! `−128`, not `128` ([`prod`]); IQ1_M's `δ` term does the same with `vpsignb(x, δ)`. (Q8_K
//! blocks from llama.cpp's quantizer, which scales by `−127 / max`, never hold `−128`; the
//! oracle follows the instructions anyway.) Integer lane `l` (of 8) of a block holds, over the
//! block's 32-element sub-blocks, the scaled sums of elements `4l..4l + 4` of each sub-block
//! (the `vpmaddwd` layout); the lanes are exact in `i32`.
//!
//! - IQ1_S: `d = d_x · d_w`; `acc[l] = fma(d, lane[l], acc[l])`; the `δ` term comes from the
//!   Q8_K block sums, `s1 = Σ_ib ±(2s_ib + 1)·(bsum_2ib + bsum_2ib+1)`, one float
//!   `acc1 = fma(d, s1, acc1)`; the result is `reduce8(acc) + 0.125 · acc1` (a multiply, then an
//!   add, as GCC emits it).
//! - IQ1_M: `d = d_x · d_w` (`d_w` the f16 assembled from the scale words' top nibbles); two
//!   lane sets, `acc1` for the grid products and `acc2` for the `δ` signs, each
//!   `fma(d, lane, acc)`; the result is `fma(reduce8(acc2), 0.125, reduce8(acc1))`.
//!
//! **Tiled.** llama.cpp stores each weight as `8g + δ` (`δ = ±1`) with `d_w = f16 · 0.125`,
//! and per block `S1 = Σ_sub (2s + 1) · Σ (8g + δ)·x` exactly (no `vpsignb` quirk here), then
//! [`AccTiled::add_no_min`].

use super::reduce8;
use super::tiled::AccTiled;
use crate::blocks::*;
use crate::grids::IQ1S;

/// The grid value `g` (±1 or 0) times `x` as llama.cpp's `mul_add_epi8` computes it:
/// `|g| · sign(x, g)`, where `vpsignb` negates `−128` into `−128`.
#[inline(always)]
pub(crate) fn prod(g: i8, x: i8) -> i32 {
    g.unsigned_abs() as i32 * signed(x, g < 0) as i32
}

/// `x`, negated when `neg` (as `vpsignb` does: `−128` stays `−128`).
#[inline(always)]
pub(crate) fn signed(x: i8, neg: bool) -> i8 {
    if neg {
        x.wrapping_neg()
    } else {
        x
    }
}

/// The eight grid values of index `idx` (−1, 0 or 1).
#[inline(always)]
fn grid(idx: usize) -> [i8; 8] {
    IQ1S[idx].to_le_bytes().map(|b| b as i8)
}

/// One IQ1_S block unpacked: the 256 grid values, each 32-sub-block's odd scale `2s + 1` and
/// whether its `δ` is negative.
pub(crate) struct Iq1sBlock {
    /// Grid values, element order.
    pub(crate) g: [i8; 256],
    /// `2s + 1` per sub-block of 32.
    pub(crate) ls: [i32; 8],
    /// `δ < 0` per sub-block of 32.
    pub(crate) neg: [bool; 8],
}

/// Unpacks an IQ1_S block.
#[inline(always)]
pub(crate) fn iq1s_block(b: &BlockIQ1_S) -> Iq1sBlock {
    let mut out = Iq1sBlock {
        g: [0; 256],
        ls: [0; 8],
        neg: [false; 8],
    };
    for ib in 0..8 {
        let h = u16::from_le_bytes([b.qh[2 * ib], b.qh[2 * ib + 1]]);
        out.ls[ib] = 2 * ((h >> 12) & 7) as i32 + 1;
        out.neg[ib] = h & 0x8000 != 0;
        for l in 0..4 {
            let idx = b.qs[4 * ib + l] as usize | (((h >> (3 * l)) & 7) as usize) << 8;
            let e = 32 * ib + 8 * l;
            out.g[e..e + 8].copy_from_slice(&grid(idx));
        }
    }
    out
}

/// One IQ1_M block unpacked: the 256 grid values, each 16-group's odd scale `2s + 1`, whether
/// each 8-group's `δ` is negative, and the assembled f16 scale as `f32`.
pub(crate) struct Iq1mBlock {
    /// Grid values, element order.
    pub(crate) g: [i8; 256],
    /// `2s + 1` per group of 16.
    pub(crate) ls: [i32; 16],
    /// `δ < 0` per group of 8.
    pub(crate) neg: [bool; 32],
    /// The super-block scale.
    pub(crate) d: f32,
}

/// The f16 bits of an IQ1_M block's scale: the top nibbles of its four scale words.
#[inline(always)]
pub(crate) fn iq1m_scale_bits(b: &BlockIQ1_M) -> u16 {
    let sc = |k: usize| u16::from_le_bytes([b.scales[2 * k], b.scales[2 * k + 1]]);
    (sc(0) >> 12) | ((sc(1) >> 8) & 0x00f0) | ((sc(2) >> 4) & 0x0f00) | (sc(3) & 0xf000)
}

/// Unpacks an IQ1_M block.
#[inline(always)]
pub(crate) fn iq1m_block(b: &BlockIQ1_M) -> Iq1mBlock {
    let mut out = Iq1mBlock {
        g: [0; 256],
        ls: [0; 16],
        neg: [false; 32],
        d: f16_to_f32(iq1m_scale_bits(b).to_le_bytes()),
    };
    for g in 0..16 {
        let w = u16::from_le_bytes([b.scales[2 * (g / 4)], b.scales[2 * (g / 4) + 1]]);
        out.ls[g] = 2 * ((w >> (3 * (g % 4))) & 7) as i32 + 1;
    }
    for j in 0..32 {
        let n = (b.qh[j / 2] >> (4 * (j % 2))) & 0x0f;
        out.neg[j] = n & 8 != 0;
        let idx = b.qs[j] as usize | ((n & 7) as usize) << 8;
        out.g[8 * j..8 * j + 8].copy_from_slice(&grid(idx));
    }
    out
}

/// IQ1_S · Q8_K in `ggml_vec_dot_iq1_s_q8_K`'s x86 order (see the module docs).
pub(crate) fn iq1_s(w: &[BlockIQ1_S], x: &[BlockQ8_K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc1 = 0f32;
    for (b, a) in w.iter().zip(x) {
        let u = iq1s_block(b);
        let mut lane = [0i32; 8];
        let mut s1 = 0i32;
        for ib in 0..8 {
            for e in 32 * ib..32 * ib + 32 {
                lane[(e % 32) / 4] += u.ls[ib] * prod(u.g[e], a.qs[e]);
            }
            let bs = a.bsum(2 * ib) as i32 + a.bsum(2 * ib + 1) as i32;
            s1 += if u.neg[ib] { -bs } else { bs } * u.ls[ib];
        }
        let d = a.d() * f16_to_f32(b.d);
        for l in 0..8 {
            acc[l] = d.mul_add(lane[l] as f32, acc[l]);
        }
        acc1 = d.mul_add(s1 as f32, acc1);
    }
    reduce8(acc) + 0.125 * acc1
}

/// IQ1_S · Q8_K, one row, in llama.cpp's tiled order (see the module docs).
pub(crate) fn iq1_s_tiled(w: &[BlockIQ1_S], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let u = iq1s_block(b);
        let mut s1 = 0i32;
        for ib in 0..8 {
            let delta = if u.neg[ib] { -1 } else { 1 };
            let s: i32 = (32 * ib..32 * ib + 32)
                .map(|e| (8 * u.g[e] as i32 + delta) * a.qs[e] as i32)
                .sum();
            s1 += u.ls[ib] * s;
        }
        acc.add_no_min(f16_to_f32(b.d) * 0.125, a.d(), s1);
    }
    acc.finish()
}

/// IQ1_M · Q8_K in `ggml_vec_dot_iq1_m_q8_K`'s x86 order (see the module docs).
pub(crate) fn iq1_m(w: &[BlockIQ1_M], x: &[BlockQ8_K]) -> f32 {
    let mut acc1 = [0f32; 8];
    let mut acc2 = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let u = iq1m_block(b);
        let mut lane1 = [0i32; 8];
        let mut lane2 = [0i32; 8];
        for e in 0..256 {
            let ls = u.ls[e / 16];
            let l = (e % 32) / 4;
            lane1[l] += ls * prod(u.g[e], a.qs[e]);
            lane2[l] += ls * signed(a.qs[e], u.neg[e / 8]) as i32;
        }
        let d = a.d() * u.d;
        for l in 0..8 {
            acc1[l] = d.mul_add(lane1[l] as f32, acc1[l]);
            acc2[l] = d.mul_add(lane2[l] as f32, acc2[l]);
        }
    }
    reduce8(acc2).mul_add(0.125, reduce8(acc1))
}

/// IQ1_M · Q8_K, one row, in llama.cpp's tiled order (see the module docs).
pub(crate) fn iq1_m_tiled(w: &[BlockIQ1_M], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let u = iq1m_block(b);
        let mut s1 = 0i32;
        for g in 0..16 {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|e| {
                    let delta = if u.neg[e / 8] { -1 } else { 1 };
                    (8 * u.g[e] as i32 + delta) * a.qs[e] as i32
                })
                .sum();
            s1 += u.ls[g] * s;
        }
        acc.add_no_min(u.d * 0.125, a.d(), s1);
    }
    acc.finish()
}

//! IQ4_XS · Q8_K in llama.cpp's x86 float orders, bit for bit.
//!
//! Block format: see [`BlockIQ4_XS`]; weight `e` of sub-block `j` is
//! `d · ls_j · IQ4_NL_VALUES[n_e]`, `ls_j` the 6-bit scale minus 32.
//!
//! **`vec_dot` order** ([`iq4_xs`]; `ggml_vec_dot_iq4_xs_q8_K`, its `__AVX2__` branch: there is
//! no AVX-512 one). Per block, eight i32 lanes: lane `l` holds, over the eight sub-blocks `j`,
//! `ls_j · Σ q·y` for elements `4l..4l+4` of sub-block `j` (`vpmaddubsw` of `|q|` and
//! `sign(y, q)`, then `vpmaddwd` by `ls_j`). The products are formed with the sign trick, so an
//! activation of −128 meeting a negative weight counts as `|q| · (−128)` (the negation wraps),
//! as in llama.cpp; quantized activations never hold −128. Then
//! `acc_l = fma(f32(d_w) · d_x, f32(L_l), acc_l)` block after block, and the result is the lanes
//! in `hsum_float_8`'s tree ([`reduce8`]).
//!
//! **Tiled order** ([`iq4_xs_tiled`]; llama.cpp's tiled matmul for batches of n ≥ 8,
//! `tiled_matmul_dispatch<block_iq4_xs, 32, false, 128, false>`, its VNNI microkernel): the
//! weights are unpacked as `value + 128` (unsigned) and meet the activations in `vpdpbusd`; per
//! sub-block the raw sum minus `128 · (bsum_2j + bsum_2j+1)` times `ls_j`, summed over the block
//! into the exact integer `S1`; then `acc = fma(S1 · d_w, d_x, acc)` ([`AccTiled`]).

use super::lanes::reduce8;
use super::tiled::AccTiled;
use crate::blocks::*;
use crate::dequant::{iq4_xs_scales, iq4_xs_values};

/// `q · y` as `vpmaddubsw(|q|, sign(y, q))` forms it (q ≠ 0 for IQ4_NL values).
#[inline(always)]
fn sign_trick(q: i8, y: i8) -> i32 {
    let sy = if q < 0 { y.wrapping_neg() } else { y };
    q.unsigned_abs() as i32 * sy as i32
}

/// `vec_dot`'s eight integer lanes for one IQ4_XS block · one Q8_K block.
pub(crate) fn block_lanes(b: &BlockIQ4_XS, a: &BlockQ8_K) -> [i32; 8] {
    let ls = iq4_xs_scales(b);
    let q = iq4_xs_values(b);
    let mut lanes = [0i32; 8];
    for e in 0..256 {
        lanes[(e % 32) / 4] += ls[e / 32] * sign_trick(q[e], a.qs[e]);
    }
    lanes
}

/// IQ4_XS · Q8_K in `ggml_vec_dot_iq4_xs_q8_K`'s x86 order.
pub(crate) fn iq4_xs(w: &[BlockIQ4_XS], x: &[BlockQ8_K]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let lanes = block_lanes(b, a);
        let d = f16_to_f32(b.d) * a.d();
        for l in 0..8 {
            acc[l] = d.mul_add(lanes[l] as f32, acc[l]);
        }
    }
    reduce8(acc)
}

/// The tiled order's exact integer total `S1` of one block.
pub(crate) fn tiled_total(b: &BlockIQ4_XS, a: &BlockQ8_K) -> i32 {
    let ls = iq4_xs_scales(b);
    let q = iq4_xs_values(b);
    (0..8)
        .map(|j| {
            let raw: i32 = (32 * j..32 * j + 32)
                .map(|e| (q[e] as i32 + 128) * a.qs[e] as i32)
                .sum();
            let bsum = a.bsum(2 * j) as i32 + a.bsum(2 * j + 1) as i32;
            ls[j] * (raw - 128 * bsum)
        })
        .sum()
}

/// IQ4_XS · Q8_K in llama.cpp's tiled order.
pub(crate) fn iq4_xs_tiled(w: &[BlockIQ4_XS], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        acc.add_no_min(f16_to_f32(b.d), a.d(), tiled_total(b, a));
    }
    acc.finish()
}

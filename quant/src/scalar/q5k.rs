//! Q5_K · Q8_K in llama.cpp's float order, bit for bit.
//!
//! llama.cpp (0c1e57098, x86-64) neither repacks Q5_K weights nor hands them to llamafile's
//! sgemm. Products of at least 8 tokens take its tiled kernel (see [`crate::tiled`]); every
//! element of a product of fewer tokens is `ggml_vec_dot_q5_K_q8_K` (its AVX2 branch; there
//! is no AVX-512 one). Per block:
//!
//! - eight i32 lanes `L_l`: lane `l` holds elements `64j+4l..64j+4l+4` (sub-block `2j`) times
//!   that sub-block's scale plus elements `64j+32+4l..+4` (sub-block `2j+1`) times its scale,
//!   summed over the four 64-element chunks `j` (the same lanes as Q4_K's vec_dot);
//! - one i32 min total `M = Σ_j m_j·bs_j` (`bs_j`: sum of the 32 activations of sub-block `j`);
//! - `acc_l = fma(d_x·d_w, L_l, acc_l)` in eight f32 lanes, and one scalar
//!   `summs = fma(M, (−d_x)·dmin_w, summs)` (the compiler contracts llama.cpp's `summs += …`).
//!
//! The result is the eight lanes in `hsum_float_8`'s tree plus `summs`. The integer parts are
//! exact in every kernel; only these float steps fix the result's bits.

use super::lanes::reduce8;
use crate::blocks::{f16_to_f32, k4_scales_mins, BlockQ5_K, BlockQ8_K};

/// The integer parts of one Q5_K block · one Q8_K block: vec_dot's eight lanes and the min
/// total `M`.
pub(crate) fn block_ints(b: &BlockQ5_K, a: &BlockQ8_K) -> ([i32; 8], i32) {
    let (sc, mn) = k4_scales_mins(&b.scales);
    let mut lanes = [0i32; 8];
    for e in 0..256 {
        let low = (b.qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0x0F;
        let high = (b.qh[e % 32] >> (e / 32)) & 1;
        let q = (low | (high << 4)) as i32;
        lanes[(e % 32) / 4] += sc[e / 32] as i32 * q * a.qs[e] as i32;
    }
    let m = (0..8)
        .map(|j| mn[j] as i32 * (a.bsum(2 * j) as i32 + a.bsum(2 * j + 1) as i32))
        .sum();
    (lanes, m)
}

/// One row · one activation row in `ggml_vec_dot_q5_K_q8_K`'s order.
pub(crate) fn dot(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for (b, a) in w.iter().zip(x) {
        let (lanes, m) = block_ints(b, a);
        let dx = a.d();
        let d = dx * f16_to_f32(b.d);
        let dmin = -dx * f16_to_f32(b.dmin);
        for l in 0..8 {
            acc[l] = (lanes[l] as f32).mul_add(d, acc[l]);
        }
        summs = (m as f32).mul_add(dmin, summs);
    }
    reduce8(acc) + summs
}

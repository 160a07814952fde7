//! Q3_K · Q8_K in llama.cpp's float order, bit for bit.
//!
//! llama.cpp (0c1e57098, x86-64) neither repacks Q3_K weights nor hands them to llamafile's
//! sgemm. Products of at least 8 tokens take its tiled kernel (see [`crate::tiled`]); every
//! element of a product of fewer tokens is `ggml_vec_dot_q3_K_q8_K` (its AVX2 branch; there
//! is no AVX-512 one). Per block, eight i32
//! lanes: the block's 256 elements are eight runs of 32, and lane `l` holds elements `4l..4l+4`
//! of every run, each four times the scale of its 16-element sub-block (`sc − 32`) and with the
//! signed quant `q ∈ −4..4`. Then `acc_l = fma(d_x·d_w, L_l, acc_l)` in eight f32 lanes, and the
//! result is the lanes in `hsum_float_8`'s tree. No other correction term: the `−4` of a quant
//! whose high bit is clear is applied per element, inside the lanes.

use super::lanes::reduce8;
use crate::blocks::{f16_to_f32, q3k_scales, BlockQ3_K, BlockQ8_K};

/// vec_dot's eight integer lanes for one Q3_K block · one Q8_K block.
pub(crate) fn block_lanes(b: &BlockQ3_K, a: &BlockQ8_K) -> [i32; 8] {
    let sc = q3k_scales(&b.scales);
    let mut lanes = [0i32; 8];
    for e in 0..256 {
        let low = ((b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
        let high = (b.hmask[e % 32] >> (e / 32)) & 1;
        let q = low - if high == 0 { 4 } else { 0 };
        lanes[(e % 32) / 4] += sc[e / 16] as i32 * q * a.qs[e] as i32;
    }
    lanes
}

/// One row · one activation row in `ggml_vec_dot_q3_K_q8_K`'s order.
pub(crate) fn dot(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let lanes = block_lanes(b, a);
        let d = a.d() * f16_to_f32(b.d);
        for l in 0..8 {
            acc[l] = (lanes[l] as f32).mul_add(d, acc[l]);
        }
    }
    reduce8(acc)
}

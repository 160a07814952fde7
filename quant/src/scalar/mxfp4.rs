//! MXFP4 · Q8_0 in llama.cpp's x86 float orders, bit for bit.
//!
//! Block format: see [`BlockMXFP4`]; weight `j` is `2^(e − 128) · v_j`, `v_j` the doubled E2M1
//! value [`MXFP4_VALUES`]`[code]` (low nibbles elements `0..16`, high nibbles `16..32`), the
//! scale built like ggml's `ggml_e8m0_to_fp32_half` ([`e8m0_to_f32_half`]). In both orders a
//! block's scale is `f32(d_x) · e8m0_to_f32_half(e)`, one rounded product (exact, a power of two
//! times an f16, unless it leaves the normal range).
//!
//! **`vec_dot` order** ([`mxfp4`]; `ggml_vec_dot_mxfp4_q8_0`, its `__AVX2__` branch, which the
//! AVX-512 build runs; matrices whose row count is not a multiple of 8). Blocks go in pairs:
//! eight i32 lanes per block, lane `l` the sum of the products of elements `4l..4l+4`, formed
//! with `vpsignb`/`vpmaddubsw` (`|v| · sign(y, v)`: an activation of −128 meeting a negative
//! value counts as `|v| · (−128)`, the negation wrapping, as in llama.cpp; quantized activations
//! never hold −128), then `acc1_l = fma(scale, f32(lane_l), acc1_l)` for the even block of the
//! pair and `acc2_l` likewise for the odd one; the sum is [`reduce8`] of `acc1 + acc2` lane by
//! lane. For an odd block count the last block follows in plain C, not contracted (checked in
//! the disassembly): `sum = sum + scale · f32(Σ v·y)`, its integer sum exact.
//!
//! **Repacked order** ([`mxfp4_repacked`]; `ggml_gemv_mxfp4_8x8_q8_0` and
//! `ggml_gemm_mxfp4_8x8_q8_0`, which llama.cpp runs on matrices of a multiple of 8 rows, gemm for
//! each group of four tokens and gemv for the rest; both come from the same templates as Q4_0
//! and IQ4_NL, `gemv_q4_b32_8x8_q8_0_lut_avx` / `gemm_q4_b32_8x8_q8_0_lut_avx`, and compute
//! every output alike): one float per output,
//! `acc = fma(f32(Σ v·y), e8m0_to_f32_half(e) · f32(d_x), acc)` block after block, the integer
//! sum over the block exact. llamafile's tinyBLAS never takes MXFP4.

use super::lanes::reduce8;
use crate::blocks::*;
use crate::dequant::{e8m0_to_f32_half, mxfp4_values};

/// `v · y` as `vpsignb` + `vpmaddubsw` form it: `|v| · sign(y, v)`, the negation wrapping.
#[inline(always)]
fn signed_product(v: i8, y: i8) -> i32 {
    let sy = match v.signum() {
        -1 => y.wrapping_neg(),
        0 => 0,
        _ => y,
    };
    v.unsigned_abs() as i32 * sy as i32
}

/// MXFP4 · Q8_0 in `ggml_vec_dot_mxfp4_q8_0`'s x86 order (see the module docs).
pub(crate) fn mxfp4(w: &[BlockMXFP4], x: &[BlockQ8_0]) -> f32 {
    let nb = w.len().min(x.len());
    let mut acc = [[0f32; 8]; 2];
    for i in 0..nb / 2 * 2 {
        let (v, a) = (mxfp4_values(&w[i]), &x[i]);
        let scale = f16_to_f32(a.d) * e8m0_to_f32_half(w[i].e);
        for (l, acc) in acc[i % 2].iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4)
                .map(|e| signed_product(v[e], a.qs[e]))
                .sum();
            *acc = scale.mul_add(p as f32, *acc);
        }
    }
    let mut sum = reduce8(std::array::from_fn(|l| acc[0][l] + acc[1][l]));
    for i in nb / 2 * 2..nb {
        let (v, a) = (mxfp4_values(&w[i]), &x[i]);
        let scale = f16_to_f32(a.d) * e8m0_to_f32_half(w[i].e);
        let isum: i32 = (0..32).map(|e| v[e] as i32 * a.qs[e] as i32).sum();
        sum += scale * isum as f32;
    }
    sum
}

/// MXFP4 · Q8_0 in the order of llama.cpp's repacked x86 kernels (`mxfp4_8x8_q8_0`; see the
/// module docs).
pub(crate) fn mxfp4_repacked(w: &[BlockMXFP4], x: &[BlockQ8_0]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.iter().zip(x) {
        let v = mxfp4_values(b);
        let isum: i32 = (0..32).map(|e| v[e] as i32 * a.qs[e] as i32).sum();
        acc = (isum as f32).mul_add(e8m0_to_f32_half(b.e) * f16_to_f32(a.d), acc);
    }
    acc
}

//! TQ1_0 and TQ2_0 · Q8_K in llama.cpp's x86 float order, bit for bit.
//!
//! Block formats: see [`BlockTQ1_0`] and [`BlockTQ2_0`] (and `dequant::tq` for the element
//! layout); weight `e` is `d · (u_e − 1)` with `u_e ∈ 0..3` (TQ2_0: `0..4`, code 3 meaning 2).
//!
//! llama.cpp always takes `vec_dot` for these (no repacked, tiled or tinyBLAS kernel):
//! `ggml_vec_dot_tq1_0_q8_K` and `ggml_vec_dot_tq2_0_q8_K`, their `__AVX2__` branches (there is
//! no AVX-512 one). Per block they multiply the *unsigned* codes `u` by the activations with
//! `vpmaddubsw`, one 32-byte chunk of 32 consecutive elements at a time, and add the 16-bit pair
//! sums of all chunks lane by lane; the `−1` is taken out by subtracting the Q8_K `bsums`
//! (16-bit lane `k` loses `bsum_k`); `vpmaddwd` by 1 then forms eight i32 lanes. So lane `m`
//! of a block is the exact integer
//!
//! `L_m = Σ_c Σ_{b ∈ 4m..4m+4} u_{32c+b} · y_{32c+b} − (bsum_{2m} + bsum_{2m+1})`
//!
//! (every 16-bit partial sum stays far inside `i16`: at most 8 · 2 · 3 · 128 in magnitude
//! before the bsums, so nothing wraps or saturates). Then, block after block,
//! `acc_m = fma(f32(L_m), d_x · f32(d_w), acc_m)` (GCC contracts the `mul_ps`/`add_ps` pair;
//! checked in the disassembly), and the result is the eight lanes in `hsum_float_8`'s tree
//! ([`reduce8`]).

use super::lanes::reduce8;
use crate::blocks::*;
use crate::dequant::{tq1_0_codes, tq2_0_codes};

/// The shared order: per block the eight lanes `L_m` of the module docs from the unsigned
/// codes, one FMA each by `d_x · d_w`, then [`reduce8`].
#[inline(always)]
fn ternary<B>(w: &[B], x: &[BlockQ8_K], codes: impl Fn(&B) -> ([u8; 256], f32)) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let (u, dw) = codes(b);
        let d = a.d() * dw;
        for (m, acc) in acc.iter_mut().enumerate() {
            let mut lane = -(a.bsum(2 * m) as i32 + a.bsum(2 * m + 1) as i32);
            for c in 0..8 {
                for e in 32 * c + 4 * m..32 * c + 4 * m + 4 {
                    lane += u[e] as i32 * a.qs[e] as i32;
                }
            }
            *acc = (lane as f32).mul_add(d, *acc);
        }
    }
    reduce8(acc)
}

/// TQ1_0 · Q8_K in `ggml_vec_dot_tq1_0_q8_K`'s x86 order (see the module docs).
pub(crate) fn tq1_0(w: &[BlockTQ1_0], x: &[BlockQ8_K]) -> f32 {
    ternary(w, x, |b| (tq1_0_codes(b), f16_to_f32(b.d)))
}

/// TQ2_0 · Q8_K in `ggml_vec_dot_tq2_0_q8_K`'s x86 order (see the module docs).
pub(crate) fn tq2_0(w: &[BlockTQ2_0], x: &[BlockQ8_K]) -> f32 {
    ternary(w, x, |b| (tq2_0_codes(b), f16_to_f32(b.d)))
}

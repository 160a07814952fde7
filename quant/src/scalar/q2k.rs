//! Q2_K · Q8_K in llama.cpp's float order: the three CPU kernels it picks, reproduced bit for bit.
//!
//! llama.cpp (0c1e57098, x86-64 with AVX-512) computes a Q2_K matrix product with one of three
//! kernels, whose integer parts are the same exact sums but whose float parts differ:
//!
//! - **vec_dot** (`ggml_vec_dot_q2_K_q8_K`, AVX2 branch): weight matrices whose row count is not
//!   a multiple of 8, for every token of products of fewer than 8 tokens (with more, llama.cpp's
//!   tiled product, see [`crate::tiled`]). Per block, eight i32 lanes `L_l`: the 256 elements are
//!   eight runs of 32, and lane `l` holds elements `4l..4l+4` of every run, each four times the
//!   scale of its 16-element sub-block; and eight min lanes `N_k = m_2k·bs_2k + m_2k+1·bs_2k+1`
//!   (`bs_j`: sum of the 16 activations of sub-block `j`). One set of eight f32 lanes takes
//!   first `acc_l = fma((−d_x)·dmin_w, N_l, acc_l)`, then `acc_l = fma(d_x·d_w, L_l, acc_l)`;
//!   the result is the lanes in `hsum_float_8`'s tree.
//! - **gemv** (`ggml_gemv_q2_K_8x8_q8_K`, weights repacked 8 rows at a time): row counts that
//!   are a multiple of 8, for the tokens after the last whole group of four (all of them when
//!   there are fewer than four, so every decode step). Per block one integer total
//!   `I = Σ_j sc_j·S_j` and `M = Σ_j m_j·bs_j`; `acc = fma(I, d_w·d_x, acc)`,
//!   `accm = fma(M, dmin_w·d_x, accm)`; the result is `acc − accm`.
//! - **gemm** (`ggml_gemm_q2_K_8x8_q8_K`): the same matrices, tokens in whole groups of four
//!   (the first `n − n % 4`). Per block and per half `h` (128 elements, sub-blocks
//!   `8h..8h+8`), in order `h = 0, 1`: `acc = fma(I_h, d_w·d_x, acc)` and
//!   `accm = fma(M_h, dmin_w·d_x, accm)`; the result is `acc − accm`. Its AVX-512 and AVX2
//!   column loops share this order, so the result does not depend on how llama.cpp splits the
//!   rows between threads.
//!
//! The repacking interleaves the bytes of eight rows without changing any value (`d`, `dmin`
//! stay f16), so these formulas run on the blocks as stored. As for Q4_K (see the `q4k`
//! module), the four-token activation quantizer `ggml_quantize_mat_q8_K_4x8` gives products
//! equal to those of `quantize_row_q8_K_ref`'s quants, so one Q8_K quantization serves all three.

use super::lanes::reduce8;
use super::q4k::Acc2;
pub(crate) use super::q4k::Order;
use crate::blocks::{f16_to_f32, BlockQ2_K, BlockQ8_K};

/// The integer parts of one Q2_K block · one Q8_K block: vec_dot's lanes restricted to each
/// half of the block (`[h][l]`; vec_dot's lane `l` is `[0][l] + [1][l]`, and `I_h` is the sum
/// of `[h]`), and vec_dot's min lanes `N_k` (`M_h` is the sum of `N_4h..N_4h+4`).
pub(crate) fn block_ints(b: &BlockQ2_K, a: &BlockQ8_K) -> ([[i32; 8]; 2], [i32; 8]) {
    let mut lanes = [[0i32; 8]; 2];
    for e in 0..256 {
        let q = ((b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
        let sc = (b.scales[e / 16] & 0x0F) as i32;
        lanes[e / 128][(e % 32) / 4] += sc * q * a.qs[e] as i32;
    }
    let min_lanes = std::array::from_fn(|k| {
        (b.scales[2 * k] >> 4) as i32 * a.bsum(2 * k) as i32
            + (b.scales[2 * k + 1] >> 4) as i32 * a.bsum(2 * k + 1) as i32
    });
    (lanes, min_lanes)
}

/// `ggml_vec_dot` accumulators: eight f32 lanes.
#[derive(Clone, Copy, Default)]
pub(crate) struct AccDot([f32; 8]);

impl AccDot {
    /// One block: `d = d_x·d_w`, `dmin = (−d_x)·dmin_w`, the lanes and the min lanes.
    #[inline(always)]
    pub(crate) fn add(&mut self, d: f32, dmin: f32, lanes: [i32; 8], min_lanes: [i32; 8]) {
        for l in 0..8 {
            self.0[l] = (min_lanes[l] as f32).mul_add(dmin, self.0[l]);
            self.0[l] = (lanes[l] as f32).mul_add(d, self.0[l]);
        }
    }

    /// The result: the lanes in `hsum_float_8`'s tree.
    #[inline(always)]
    pub(crate) fn finish(self) -> f32 {
        reduce8(self.0)
    }
}

/// One row · one activation row in `order` (for [`Order::Gemm`], the arithmetic a token of a
/// group of four gets).
pub(crate) fn dot(order: Order, w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    match order {
        Order::VecDot => {
            let mut acc = AccDot::default();
            for (b, a) in w.iter().zip(x) {
                let (h, min_lanes) = block_ints(b, a);
                let lanes = std::array::from_fn(|l| h[0][l] + h[1][l]);
                let dx = a.d();
                acc.add(
                    dx * f16_to_f32(b.d),
                    -dx * f16_to_f32(b.dmin),
                    lanes,
                    min_lanes,
                );
            }
            acc.finish()
        }
        Order::Gemv | Order::Gemm => {
            let mut acc = Acc2::default();
            for (b, a) in w.iter().zip(x) {
                let (h, n) = block_ints(b, a);
                let i: [i32; 2] = h.map(|l| l.iter().sum());
                let m = [n[..4].iter().sum::<i32>(), n[4..].iter().sum::<i32>()];
                let dx = a.d();
                let (dd, ddm) = (f16_to_f32(b.d) * dx, f16_to_f32(b.dmin) * dx);
                if order == Order::Gemv {
                    acc.gemv(dd, ddm, i[0] + i[1], m[0] + m[1]);
                } else {
                    acc.gemv(dd, ddm, i[0], m[0]);
                    acc.gemv(dd, ddm, i[1], m[1]);
                }
            }
            acc.finish()
        }
    }
}

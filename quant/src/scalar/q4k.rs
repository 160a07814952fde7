//! Q4_K · Q8_K in llama.cpp's float order: the three CPU kernels it picks, reproduced bit for bit.
//!
//! llama.cpp (0c1e57098, x86-64 with AVX2/AVX-512) computes a Q4_K matrix product with one of
//! three kernels, whose integer parts are the same exact sums but whose float parts differ:
//!
//! - **vec_dot** (`ggml_vec_dot_q4_K_q8_K`): weight matrices whose row count is not a multiple
//!   of 8, for every token of products of fewer than 8 tokens (with more, llama.cpp's tiled
//!   product: see [`crate::tiled`]). Per block, eight i32 lanes `L_l` (lane `l` holds elements
//!   `64j+4l..64j+4l+4` of sub-block `2j` times its scale plus elements `64j+32+4l..` of
//!   sub-block `2j+1` times its scale, summed over `j`) and four i32 min lanes
//!   `M_k = m_2k·bs_2k + m_2k+1·bs_2k+1` (`bs_j`: sum of the 32 activations of sub-block `j`).
//!   `acc_l = fma(d_x·d_w, L_l, acc_l)`, `accm_k = fma((−d_x)·dmin_w, M_k, accm_k)`; at the
//!   end `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))` plus `(m0+m2)+(m1+m3)`.
//! - **gemv** (`ggml_gemv_q4_K_8x8_q8_K`, weights repacked 8 rows at a time): row counts that
//!   are a multiple of 8, for the tokens after the last whole group of four (all of them when
//!   there are fewer than four, so every decode step). Per block one integer total
//!   `I = Σ_j sc_j·S_j` and `M = Σ_j m_j·bs_j`; `acc = fma(I, d_w·d_x, acc)`,
//!   `accm = fma(M, dmin_w·d_x, accm)`; the result is `acc − accm`.
//! - **gemm** (`ggml_gemm_q4_K_8x8_q8_K`): the same matrices, tokens in whole groups of four
//!   (the first `n − n % 4`). Per block and per pair `p` of sub-blocks, in order `p = 0..4`:
//!   `acc = fma(sc_2p·S_2p + sc_2p+1·S_2p+1, d_w·d_x, acc)` and
//!   `accm = fma(m_2p·bs_2p + m_2p+1·bs_2p+1, dmin_w·d_x, accm)`; the result is `acc − accm`.
//!
//! The repacking interleaves the bytes of eight rows and re-encodes the 6-bit scales and mins
//! losslessly (`d` and `dmin` stay f16), so these formulas can run on the blocks as stored.
//! llama.cpp quantizes the activations of the four-token groups with `ggml_quantize_mat_q8_K_4x8`,
//! which gives the quants of `quantize_row_q8_K_ref` except when a block holds both `+max` and
//! `−max`; then all its quants and its `d` are negated, which leaves every product above
//! unchanged (each product has one factor from `d_x` and one from the quants). So one Q8_K
//! quantization serves all three kernels.
//!
//! This module holds the orders themselves: the accumulators (used by the scalar reference and,
//! for single rows, by the SIMD kernels), the integer parts and the one-row reference. Which
//! kernel computes a matrix is chosen above, in `crate::q4k`.

use super::lanes::reduce8;
use crate::blocks::{f16_to_f32, k4_scales_mins, BlockQ4_K, BlockQ8_K};

/// Which llama.cpp kernel a product of a K-quant it repacks (Q4_K here, Q2_K in `q2k`)
/// reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// `ggml_vec_dot_qN_K_q8_K` (row count not a multiple of 8).
    VecDot,
    /// `ggml_gemv_qN_K_8x8_q8_K` (row count a multiple of 8; tokens outside groups of four).
    Gemv,
    /// `ggml_gemm_qN_K_8x8_q8_K` (row count a multiple of 8; tokens in groups of four).
    Gemm,
}

/// `ggml_gemv` / `ggml_gemm` accumulators for one (row, token).
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc2 {
    acc: f32,
    acc_m: f32,
}

impl Acc2 {
    /// gemv: one block's totals `i` (scaled quants) and `m` (mins), `dd = d_w·d_x`,
    /// `ddm = dmin_w·d_x`.
    #[inline(always)]
    pub(crate) fn gemv(&mut self, dd: f32, ddm: f32, i: i32, m: i32) {
        self.acc = (i as f32).mul_add(dd, self.acc);
        self.acc_m = (m as f32).mul_add(ddm, self.acc_m);
    }

    /// gemm: one block's four sub-block-pair sums `p` and min sums `m`, in order.
    #[inline(always)]
    pub(crate) fn gemm(&mut self, dd: f32, ddm: f32, p: [i32; 4], m: [i32; 4]) {
        for k in 0..4 {
            self.acc = (p[k] as f32).mul_add(dd, self.acc);
            self.acc_m = (m[k] as f32).mul_add(ddm, self.acc_m);
        }
    }

    /// The result, `acc − acc_m`.
    #[inline(always)]
    pub(crate) fn finish(self) -> f32 {
        self.acc - self.acc_m
    }
}

/// `ggml_vec_dot_q4_K_q8_K` accumulators for one (row, token).
#[derive(Clone, Copy, Default)]
pub(crate) struct AccDot {
    acc: [f32; 8],
    acc_m: [f32; 4],
}

impl AccDot {
    /// One block: lanes `l`, min lanes `m`, `d = d_x·d_w`, `dmin = (−d_x)·dmin_w`.
    #[inline(always)]
    pub(crate) fn add(&mut self, d: f32, dmin: f32, l: [i32; 8], m: [i32; 4]) {
        for k in 0..8 {
            self.acc[k] = (l[k] as f32).mul_add(d, self.acc[k]);
        }
        for k in 0..4 {
            self.acc_m[k] = (m[k] as f32).mul_add(dmin, self.acc_m[k]);
        }
    }

    /// The result: the eight lanes in `hsum_float_8`'s tree plus the four min lanes.
    #[inline(always)]
    pub(crate) fn finish(self) -> f32 {
        let a = self.acc;
        let m = self.acc_m;
        reduce8(a) + ((m[0] + m[2]) + (m[1] + m[3]))
    }
}

/// The integer parts of one Q4_K block · one Q8_K block.
#[derive(Clone, Copy)]
pub(crate) struct BlockInts {
    /// `sc_2p·S_2p + sc_2p+1·S_2p+1` per pair `p` of sub-blocks.
    pub(crate) p: [i32; 4],
    /// `m_2p·bs_2p + m_2p+1·bs_2p+1` per pair `p`.
    pub(crate) m: [i32; 4],
    /// vec_dot's eight lanes.
    pub(crate) lanes: [i32; 8],
}

/// Computes [`BlockInts`] in plain integer arithmetic.
pub(crate) fn block_ints(b: &BlockQ4_K, a: &BlockQ8_K) -> BlockInts {
    let (sc, mn) = k4_scales_mins(&b.scales);
    // Element e of the block: byte 32·(e/64) + e%32, low nibble for e%64 < 32.
    let prod = |e: usize| -> i32 {
        let q = (b.qs[32 * (e / 64) + e % 32] >> (4 * ((e % 64) / 32))) & 0x0F;
        q as i32 * a.qs[e] as i32
    };
    let mut lanes = [0i32; 8];
    let mut s = [0i32; 8];
    for e in 0..256 {
        let j = e / 32; // sub-block
        let v = prod(e);
        s[j] += v;
        lanes[(e % 32) / 4] += sc[j] as i32 * v;
    }
    let bs = |j: usize| a.bsum(2 * j) as i32 + a.bsum(2 * j + 1) as i32;
    BlockInts {
        p: std::array::from_fn(|p| {
            sc[2 * p] as i32 * s[2 * p] + sc[2 * p + 1] as i32 * s[2 * p + 1]
        }),
        m: std::array::from_fn(|p| {
            mn[2 * p] as i32 * bs(2 * p) + mn[2 * p + 1] as i32 * bs(2 * p + 1)
        }),
        lanes,
    }
}

/// One row · one activation row in `order` (for [`Order::Gemm`], the arithmetic a token of a
/// group of four gets).
pub(crate) fn dot(order: Order, w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    match order {
        Order::VecDot => {
            let mut acc = AccDot::default();
            for (b, a) in w.iter().zip(x) {
                let k = block_ints(b, a);
                let dx = a.d();
                acc.add(dx * f16_to_f32(b.d), -dx * f16_to_f32(b.dmin), k.lanes, k.m);
            }
            acc.finish()
        }
        Order::Gemv | Order::Gemm => {
            let mut acc = Acc2::default();
            for (b, a) in w.iter().zip(x) {
                let k = block_ints(b, a);
                let dx = a.d();
                let (dd, ddm) = (f16_to_f32(b.d) * dx, f16_to_f32(b.dmin) * dx);
                if order == Order::Gemv {
                    acc.gemv(dd, ddm, k.p.iter().sum(), k.m.iter().sum());
                } else {
                    acc.gemm(dd, ddm, k.p, k.m);
                }
            }
            acc.finish()
        }
    }
}

//! llama.cpp's tiled K-quant matrix product (`ggml/src/ggml-cpu/tiled`), reproduced bit for bit
//! for Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
//!
//! llama.cpp (0c1e57098, x86-64 with AVX-512 VNNI) computes `MUL_MAT` of a K-quant weight that
//! is not repacked with its tiled kernel, instead of `vec_dot`, when the product has at least
//! 8 tokens (`ggml_compute_forward_mul_mat_tiled`; Q3_K, Q5_K and Q6_K always, Q2_K and Q4_K
//! when the row count is not a multiple of 8; the driver decides). Every token of such a
//! product, whatever its position, gets the same arithmetic. Per (row, token) and per block, in
//! block order, with exact integer totals `S1 = Σ_j sc_j·S_j` (the sub-block scales times the
//! sub-block quant sums; Q3_K's scales are `sc − 32` and its quants signed, Q6_K's quants
//! `q − 32`) and, for formats with mins, `S2 = Σ_j m_j·bs_j`:
//!
//! ```text
//! r   = S1 · d_w                      (f32 multiply)
//! r   = fma(−dmin_w, S2, r)           (Q2_K, Q4_K, Q5_K only)
//! acc = fma(r, d_x, acc)
//! ```
//!
//! starting from `acc = 0` (the source writes `acc + r · d_x` with intrinsics; the build
//! contracts it to one FMA, as its disassembly shows). The VNNI microkernel, its 16-token
//! narrow path and its 256-wide windows all follow this order; only the order of the integer
//! sums differs, and those are exact. [`AccTiled`] is this accumulator; the scalar references
//! below and every SIMD kernel of this order (`simd::tiled_x86`, chosen in `crate::tiled`) use
//! it, so all levels are bit-identical.

use crate::blocks::{f16_to_f32, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};

/// The tiled accumulator for one (row, token).
#[derive(Clone, Copy, Default)]
pub(crate) struct AccTiled(f32);

impl AccTiled {
    /// One block: weight scales `d_w`, `dmin_w` (0 for formats without mins), activation
    /// scale `d_x`, integer totals `s1`, `s2`.
    #[inline(always)]
    pub(crate) fn add(&mut self, d_w: f32, dmin_w: f32, d_x: f32, s1: i32, s2: i32) {
        let r = (-dmin_w).mul_add(s2 as f32, s1 as f32 * d_w);
        self.0 = r.mul_add(d_x, self.0);
    }

    /// [`add`](Self::add) for formats without mins.
    #[inline(always)]
    pub(crate) fn add_no_min(&mut self, d_w: f32, d_x: f32, s1: i32) {
        self.0 = (s1 as f32 * d_w).mul_add(d_x, self.0);
    }

    /// The result.
    #[inline(always)]
    pub(crate) fn finish(self) -> f32 {
        self.0
    }
}

/// Q5_K · Q8_K, one row, tiled order.
pub(crate) fn q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (lanes, m) = super::q5k::block_ints(b, a);
        acc.add(
            f16_to_f32(b.d),
            f16_to_f32(b.dmin),
            a.d(),
            lanes.iter().sum(),
            m,
        );
    }
    acc.finish()
}

/// Q3_K · Q8_K, one row, tiled order.
pub(crate) fn q3_k(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let lanes = super::q3k::block_lanes(b, a);
        acc.add_no_min(f16_to_f32(b.d), a.d(), lanes.iter().sum());
    }
    acc.finish()
}

/// Q2_K · Q8_K, one row, tiled order.
pub(crate) fn q2_k(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (h, n) = super::q2k::block_ints(b, a);
        let s1 = h.iter().flatten().sum();
        acc.add(
            f16_to_f32(b.d),
            f16_to_f32(b.dmin),
            a.d(),
            s1,
            n.iter().sum(),
        );
    }
    acc.finish()
}

/// Q4_K · Q8_K, one row, tiled order.
pub(crate) fn q4_k(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let k = super::q4k::block_ints(b, a);
        acc.add(
            f16_to_f32(b.d),
            f16_to_f32(b.dmin),
            a.d(),
            k.lanes.iter().sum(),
            k.m.iter().sum(),
        );
    }
    acc.finish()
}

/// Q6_K · Q8_K, one row, tiled order.
pub(crate) fn q6_k(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let q = crate::dequant::q6k_quants(b);
        let s1 = (0..256)
            .map(|e| b.scales[e / 16] as i32 * (q[e] as i32 - 32) * a.qs[e] as i32)
            .sum();
        acc.add_no_min(f16_to_f32(b.d), a.d(), s1);
    }
    acc.finish()
}

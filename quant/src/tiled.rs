//! llama.cpp's tiled K-quant matrix product (`ggml/src/ggml-cpu/tiled`), reproduced bit for bit
//! for Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
//!
//! llama.cpp (0c1e57098, x86-64 with AVX-512 VNNI) computes `MUL_MAT` of a K-quant weight that
//! is not repacked with its tiled kernel, instead of `vec_dot`, when the product has at least
//! [`MIN_TOKENS`] tokens (`ggml_compute_forward_mul_mat_tiled`; Q3_K, Q5_K and Q6_K always,
//! Q2_K and Q4_K when the row count is not a multiple of 8; the driver decides). Every token of
//! such a product, whatever its position, gets the same arithmetic. Per (row, token) and per block, in block
//! order, with exact integer totals `S1 = Σ_j sc_j·S_j` (the sub-block scales times the
//! sub-block quant sums; Q3_K's scales are `sc − 32` and its quants signed, Q6_K's quants
//! `q − 32`) and, for formats
//! with mins, `S2 = Σ_j m_j·bs_j`:
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
//! below and every SIMD kernel of this order (`simd::tiled_x86`) use it, so all levels are
//! bit-identical.

use strata_gguf::GgmlType;

use crate::blocks::{
    f16_to_f32, view, Block, BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K,
};
use crate::simd::{Rows4Fn, RowsFn, SimdLevel};

/// The fewest tokens for which llama.cpp takes the tiled path (`ggml_tiled_min_batch`).
pub(crate) const MIN_TOKENS: usize = 8;

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

/// The tiled kernels (one token, and four tokens where the level has one) for the K-quant `ty`
/// at most at `level`. Panics for other types.
pub(crate) fn kernels(level: SimdLevel, ty: GgmlType) -> (RowsFn, Option<Rows4Fn>) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = crate::simd::tiled_x86(level, ty) {
            return k;
        }
    }
    let _ = level;
    let k: RowsFn = match ty {
        GgmlType::Q2_K => q2_k_rows,
        GgmlType::Q3_K => q3_k_rows,
        GgmlType::Q4_K => q4_k_rows,
        GgmlType::Q5_K => q5_k_rows,
        GgmlType::Q6_K => q6_k_rows,
        _ => panic!("{ty:?} has no tiled kernel"),
    };
    (k, None)
}

/// Q5_K · Q8_K, one row, tiled order.
pub(crate) fn q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (lanes, m) = crate::q5k::block_ints(b, a);
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
        let lanes = crate::q3k::block_lanes(b, a);
        acc.add_no_min(f16_to_f32(b.d), a.d(), lanes.iter().sum());
    }
    acc.finish()
}

/// Q2_K · Q8_K, one row, tiled order.
pub(crate) fn q2_k(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = AccTiled::default();
    for (b, a) in w.iter().zip(x) {
        let (h, n) = crate::q2k::block_ints(b, a);
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
        let k = crate::q4k::block_ints(b, a);
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

fn rows<B: Block>(
    w: &[u8],
    row_bytes: usize,
    x: &[u8],
    out: &mut [f32],
    dot: fn(&[B], &[BlockQ8_K]) -> f32,
) {
    let xa = view::<BlockQ8_K>(x).expect("activation row is whole blocks");
    for (r, o) in out.iter_mut().enumerate() {
        let wr =
            view::<B>(&w[r * row_bytes..(r + 1) * row_bytes]).expect("weight row is whole blocks");
        assert_eq!(wr.len(), xa.len(), "activation row size mismatch");
        *o = dot(wr, xa);
    }
}

fn q5_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows(w, row_bytes, x, out, q5_k)
}

fn q3_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows(w, row_bytes, x, out, q3_k)
}

fn q2_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows(w, row_bytes, x, out, q2_k)
}

fn q4_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows(w, row_bytes, x, out, q4_k)
}

fn q6_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    rows(w, row_bytes, x, out, q6_k)
}

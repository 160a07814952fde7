//! Kernel choice for Q2_K matrices: which of llama.cpp's three orders (spelled out in
//! [`crate::scalar::q2k`]) a product takes, computed by the SIMD kernels of a level or by the
//! scalar row drivers below.

use crate::blocks::BlockQ2_K;
use crate::scalar::q2k::{dot, Order};
use crate::simd::{Rows4Fn, RowsFn, SimdLevel};

/// The one-token kernel and the four-token kernel for a Q2_K matrix at `level`: llama.cpp's
/// gemv and gemm where it repacks the weights (`repacked`, row counts that are a multiple of 8;
/// the driver runs gemm for the tokens in whole groups of four and gemv for the others),
/// `vec_dot` otherwise (both kernels then give the same bits).
pub(crate) fn kernels(level: SimdLevel, repacked: bool) -> (RowsFn, Option<Rows4Fn>) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(k) = crate::simd::q2k_x86(level, repacked) {
            return k;
        }
    }
    let _ = level;
    if repacked {
        (gemv_rows, Some(gemm_rows4))
    } else {
        (vec_dot_rows, None)
    }
}

fn scalar_rows(order: Order, w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    crate::q4k::scalar_rows_of::<BlockQ2_K>(dot, order, w, row_bytes, x, out)
}

/// Scalar `vec_dot` kernel.
pub(crate) fn vec_dot_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    scalar_rows(Order::VecDot, w, row_bytes, x, out)
}

/// Scalar `gemv` kernel.
pub(crate) fn gemv_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    scalar_rows(Order::Gemv, w, row_bytes, x, out)
}

/// Scalar `gemm` kernel (four tokens).
pub(crate) fn gemm_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
    for (xt, ot) in x.into_iter().zip(out) {
        scalar_rows(Order::Gemm, w, row_bytes, xt, ot);
    }
}

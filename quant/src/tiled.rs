//! The kernels of llama.cpp's tiled K-quant matrix product (`ggml/src/ggml-cpu/tiled`; it also
//! takes IQ4_XS and the IQ1/IQ2/IQ3 formats), chosen per level: its float order and the scalar references are in `scalar::tiled`; the SIMD kernels
//! of that order in `simd` (`tiled_x86`).

use strata_gguf::GgmlType;

use crate::blocks::{view, Block, BlockQ8_K};
use crate::scalar::tiled::{q2_k, q3_k, q4_k, q5_k, q6_k};
use crate::scalar::{iq1, iq2, iq3, iq4_xs};
use crate::simd::{Rows4Fn, RowsFn, SimdLevel};

/// The fewest tokens for which llama.cpp takes the tiled path (`ggml_tiled_min_batch`).
pub(crate) const MIN_TOKENS: usize = 8;

/// The tiled kernels (one token, and four tokens where the level has one) for `ty` (a K-quant,
/// IQ4_XS or an IQ1/IQ2/IQ3 format)
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
        GgmlType::IQ4_XS => |w, rb, x, out| rows(w, rb, x, out, iq4_xs::iq4_xs_tiled),
        GgmlType::IQ2_XXS => |w, rb, x, out| rows(w, rb, x, out, iq2::iq2_xxs_tiled),
        GgmlType::IQ2_XS => |w, rb, x, out| rows(w, rb, x, out, iq2::iq2_xs_tiled),
        GgmlType::IQ2_S => |w, rb, x, out| rows(w, rb, x, out, iq2::iq2_s_tiled),
        GgmlType::IQ3_XXS => |w, rb, x, out| rows(w, rb, x, out, iq3::iq3_xxs_tiled),
        GgmlType::IQ3_S => |w, rb, x, out| rows(w, rb, x, out, iq3::iq3_s_tiled),
        GgmlType::IQ1_S => |w, rb, x, out| rows(w, rb, x, out, iq1::iq1_s_tiled),
        GgmlType::IQ1_M => |w, rb, x, out| rows(w, rb, x, out, iq1::iq1_m_tiled),
        _ => panic!("{ty:?} has no tiled kernel"),
    };
    (k, None)
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

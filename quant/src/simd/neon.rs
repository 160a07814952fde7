//! aarch64 NEON kernel for Q8_0 (the most common format; Q4_K's llama.cpp orders are in `q4k`).
//!
//! Algorithm: the integer products of each block are formed with widening multiplies
//! (`vmull_s8`, i8·i8 → i16, two products summed per i16 lane, which fits because activations
//! are in −127..=127) and pairwise-widened to i32; the block's integer sum is then exact, and the
//! float scaling and the sum over blocks follow the scalar reference step for step (Q8_0: eight
//! lanes of four-product sums with fused multiply-adds, llama.cpp's x86 order), so these
//! kernels equal the scalar ones bit for bit. Compiled only for aarch64 (no test machine here).

use std::arch::aarch64::*;

use strata_gguf::GgmlType;

use super::{check_rows, RowsFn};
use crate::blocks::{f16_to_f32, view, BlockQ8_0};
use crate::scalar::reduce8;

/// The NEON kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    match ty {
        GgmlType::Q8_0 => Some(q8_0_rows),
        _ => None,
    }
}

/// Eight i32 lane sums of one 32-byte block product: lane `l` = Σ w[e]·x[e], e in 4l..4l+4
/// (the grouping llama.cpp's x86 kernels accumulate in; exact in i32).
#[inline(always)]
fn lanes8(w: &[i8; 32], x: &[i8; 32]) -> (int32x4_t, int32x4_t) {
    // SAFETY: NEON is part of the aarch64 baseline; each load reads 16 bytes inside a 32-byte
    // array (offsets 0 and 16).
    #[allow(unused_unsafe)]
    unsafe {
        let half = |o: usize| {
            let a = vld1q_s8(w.as_ptr().add(o));
            let b = vld1q_s8(x.as_ptr().add(o));
            // [p0+p1, p2+p3, p4+p5, p6+p7] and the same for p8..p16, then pairs of those.
            let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
            let hi = vpaddlq_s16(vmull_high_s8(a, b));
            vpaddq_s32(lo, hi)
        };
        (half(0), half(16))
    }
}

fn q8_0_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    check_rows::<BlockQ8_0, BlockQ8_0>(w, row_bytes, x, out.len());
    let xa = view::<BlockQ8_0>(x).expect("activation row is whole blocks");
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockQ8_0>(&w[r * row_bytes..(r + 1) * row_bytes])
            .expect("weight row is whole blocks");
        // SAFETY: NEON is part of the aarch64 baseline; register-only intrinsics and a store
        // of four lanes into each four-element array.
        #[allow(unused_unsafe)]
        let lanes = unsafe {
            let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            for (b, a) in wr.iter().zip(xa) {
                let (p0, p1) = lanes8(&b.qs, &a.qs);
                let d = vdupq_n_f32(f16_to_f32(b.d) * f16_to_f32(a.d));
                // Fused: acc + p·d with one rounding, as the x86 FMA.
                acc0 = vfmaq_f32(acc0, vcvtq_f32_s32(p0), d);
                acc1 = vfmaq_f32(acc1, vcvtq_f32_s32(p1), d);
            }
            let mut l = [0f32; 8];
            vst1q_f32(l.as_mut_ptr(), acc0);
            vst1q_f32(l.as_mut_ptr().add(4), acc1);
            l
        };
        *o = reduce8(lanes);
    }
}

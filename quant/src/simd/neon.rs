//! aarch64 NEON kernels for Q8_0 and Q4_K (the formats most models spend their time in).
//!
//! Algorithm: the integer products of each block are formed with widening multiplies
//! (`vmull_s8`, i8·i8 → i16, two products summed per i16 lane, which fits because activations
//! are in −127..=127) and pairwise-widened to i32; the block's integer sum is then exact, and the
//! float scaling and the sum over blocks follow the scalar reference step for step, so these
//! kernels equal the scalar ones bit for bit. Compiled only for aarch64 (no test machine here).

use std::arch::aarch64::*;

use strata_gguf::GgmlType;

use super::{check_rows, RowsFn};
use crate::blocks::{f16_to_f32, k4_scales_mins, view, BlockQ4_K, BlockQ8_0, BlockQ8_K};

/// The NEON kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    match ty {
        GgmlType::Q8_0 => Some(q8_0_rows),
        GgmlType::Q4_K => Some(q4_k_rows),
        _ => None,
    }
}

/// Σ a·b over 16 signed bytes, as i32 (|a|, |b| ≤ 127 for `b`; `a` may be −128).
#[inline(always)]
fn dot16(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: NEON is part of the aarch64 baseline, so these register-only intrinsics are always
    // available on this target. (Newer toolchains treat them as safe: hence the `allow`.)
    #[allow(unused_unsafe)]
    unsafe {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p = vmlal_high_s8(lo, a, b);
        vpaddlq_s16(p)
    }
}

fn q8_0_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    check_rows::<BlockQ8_0, BlockQ8_0>(w, row_bytes, x, out.len());
    let xa = view::<BlockQ8_0>(x).expect("activation row is whole blocks");
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockQ8_0>(&w[r * row_bytes..(r + 1) * row_bytes])
            .expect("weight row is whole blocks");
        let mut sum = 0f32;
        for (b, a) in wr.iter().zip(xa) {
            // SAFETY: each load reads 16 bytes inside a 32-byte `qs` array (offsets 0 and 16).
            let isum = unsafe {
                let w0 = vld1q_s8(b.qs.as_ptr());
                let w1 = vld1q_s8(b.qs.as_ptr().add(16));
                let x0 = vld1q_s8(a.qs.as_ptr());
                let x1 = vld1q_s8(a.qs.as_ptr().add(16));
                vaddvq_s32(vaddq_s32(dot16(w0, x0), dot16(w1, x1)))
            };
            sum += isum as f32 * (f16_to_f32(b.d) * f16_to_f32(a.d));
        }
        *o = sum;
    }
}

fn q4_k_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    check_rows::<BlockQ4_K, BlockQ8_K>(w, row_bytes, x, out.len());
    let xa = view::<BlockQ8_K>(x).expect("activation row is whole blocks");
    for (r, o) in out.iter_mut().enumerate() {
        let wr = view::<BlockQ4_K>(&w[r * row_bytes..(r + 1) * row_bytes])
            .expect("weight row is whole blocks");
        let mut sum = 0f32;
        for (b, a) in wr.iter().zip(xa) {
            let (sc, m) = k4_scales_mins(&b.scales);
            let mut isum = 0i32;
            for c in 0..4 {
                // SAFETY: loads read bytes 32c..32c+32 of the 128-byte `qs` and 64c..64c+64 of
                // the 256-byte activation `qs`.
                let (s_lo, s_hi) = unsafe {
                    let q0 = vld1q_u8(b.qs.as_ptr().add(32 * c));
                    let q1 = vld1q_u8(b.qs.as_ptr().add(32 * c + 16));
                    let mask = vdupq_n_u8(0x0F);
                    let l0 = vreinterpretq_s8_u8(vandq_u8(q0, mask));
                    let l1 = vreinterpretq_s8_u8(vandq_u8(q1, mask));
                    let h0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
                    let h1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
                    let y = a.qs.as_ptr().add(64 * c);
                    let lo = vaddq_s32(dot16(l0, vld1q_s8(y)), dot16(l1, vld1q_s8(y.add(16))));
                    let hi = vaddq_s32(
                        dot16(h0, vld1q_s8(y.add(32))),
                        dot16(h1, vld1q_s8(y.add(48))),
                    );
                    (vaddvq_s32(lo), vaddvq_s32(hi))
                };
                isum += sc[2 * c] as i32 * s_lo + sc[2 * c + 1] as i32 * s_hi;
            }
            let mut msum = 0i32;
            for j in 0..8 {
                msum += m[j] as i32 * (a.bsum(2 * j) as i32 + a.bsum(2 * j + 1) as i32);
            }
            let dx = a.d();
            sum += (dx * f16_to_f32(b.d)) * isum as f32 - (dx * f16_to_f32(b.dmin)) * msum as f32;
        }
        *o = sum;
    }
}

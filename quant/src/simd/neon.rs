//! aarch64 NEON kernels for Q8_0 and Q4_K (the formats most models spend their time in).
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
use crate::blocks::{f16_to_f32, k4_scales_mins, view, BlockQ4_K, BlockQ8_0, BlockQ8_K};
use crate::scalar::reduce8;

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

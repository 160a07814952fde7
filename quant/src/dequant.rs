//! Dequantization: blocks → `f32`, one function per format.
//!
//! Each formula multiplies in the same order as ggml's `dequantize_row_*` and gguf-py's numpy
//! reference (for example Q6_K is `(d · scale) · q`, Q4_1 is `d · q + m` with no fused
//! multiply-add), so the results are bit-identical to both; the golden tests check it.

use crate::blocks::*;

mod iq1;
mod iq2;
mod iq3;
mod iq4_xs;
mod mxfp4;
mod tq;

pub(crate) use iq1::{iq1_m, iq1_s};
pub(crate) use iq2::{iq2_s, iq2_xs, iq2_xxs};
pub(crate) use iq3::{iq3_s, iq3_xxs};
pub(crate) use iq4_xs::{iq4_xs, iq4_xs_scales, iq4_xs_values};
pub(crate) use mxfp4::{e8m0_to_f32_half, mxfp4, mxfp4_values};
pub(crate) use tq::{tq1_0, tq1_0_codes, tq2_0, tq2_0_codes};

/// Q4_0 → f32. `out.len() == 32 · blocks.len()`.
pub(crate) fn q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for j in 0..16 {
            y[j] = d * ((b.qs[j] & 0x0F) as i32 - 8) as f32;
            y[j + 16] = d * ((b.qs[j] >> 4) as i32 - 8) as f32;
        }
    }
}

/// Q4_1 → f32.
pub(crate) fn q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for j in 0..16 {
            y[j] = d * (b.qs[j] & 0x0F) as f32 + m;
            y[j + 16] = d * (b.qs[j] >> 4) as f32 + m;
        }
    }
}

/// The 32 five-bit quants of a Q5_0/Q5_1 block, in element order.
#[inline(always)]
pub(crate) fn q5_quants(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let h = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) | ((((h >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((h >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Q5_0 → f32.
pub(crate) fn q5_0(blocks: &[BlockQ5_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let q = q5_quants(b.qh, &b.qs);
        for j in 0..32 {
            y[j] = d * (q[j] as i32 - 16) as f32;
        }
    }
}

/// Q5_1 → f32.
pub(crate) fn q5_1(blocks: &[BlockQ5_1], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        let q = q5_quants(b.qh, &b.qs);
        for j in 0..32 {
            y[j] = d * q[j] as f32 + m;
        }
    }
}

/// Q8_0 → f32.
pub(crate) fn q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

/// IQ4_NL → f32 (`d · value`, as ggml's `dequantize_row_iq4_nl`).
pub(crate) fn iq4_nl(blocks: &[BlockIQ4_NL], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for j in 0..16 {
            y[j] = d * IQ4_NL_VALUES[(b.qs[j] & 0x0F) as usize] as f32;
            y[j + 16] = d * IQ4_NL_VALUES[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

/// Q8_1 → f32 (`s` is redundant and ignored).
pub(crate) fn q8_1(blocks: &[BlockQ8_1], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = f16_to_f32(b.d);
        for j in 0..32 {
            y[j] = b.qs[j] as f32 * d;
        }
    }
}

/// Q2_K → f32.
pub(crate) fn q2_k(blocks: &[BlockQ2_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        for (e, v) in y.iter_mut().enumerate() {
            let (c, s, l) = (e / 128, (e % 128) / 32, e % 32);
            let q = (b.qs[32 * c + l] >> (2 * s)) & 3;
            let sc = b.scales[e / 16];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            *v = dl * q as f32 - ml;
        }
    }
}

/// Q3_K → f32.
pub(crate) fn q3_k(blocks: &[BlockQ3_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let sc = q3k_scales(&b.scales);
        for (e, v) in y.iter_mut().enumerate() {
            let (c, s, l) = (e / 128, (e % 128) / 32, e % 32);
            let low = ((b.qs[32 * c + l] >> (2 * s)) & 3) as i32;
            let high = (b.hmask[e % 32] >> (e / 32)) & 1;
            let q = low - if high == 0 { 4 } else { 0 };
            let dl = d * sc[e / 16] as f32;
            *v = dl * q as f32;
        }
    }
}

/// Q4_K → f32.
pub(crate) fn q4_k(blocks: &[BlockQ4_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        let (sc, m) = k4_scales_mins(&b.scales);
        for (e, v) in y.iter_mut().enumerate() {
            let (c, h, l) = (e / 64, (e % 64) / 32, e % 32);
            let q = (b.qs[32 * c + l] >> (4 * h)) & 0x0F;
            let j = e / 32;
            let dl = d * sc[j] as f32;
            let ml = dmin * m[j] as f32;
            *v = dl * q as f32 - ml;
        }
    }
}

/// Q5_K → f32.
pub(crate) fn q5_k(blocks: &[BlockQ5_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        let (sc, m) = k4_scales_mins(&b.scales);
        for (e, v) in y.iter_mut().enumerate() {
            let (c, h, l) = (e / 64, (e % 64) / 32, e % 32);
            let low = (b.qs[32 * c + l] >> (4 * h)) & 0x0F;
            let high = (b.qh[e % 32] >> (e / 32)) & 1;
            let q = low | (high << 4);
            let j = e / 32;
            let dl = d * sc[j] as f32;
            let ml = dmin * m[j] as f32;
            *v = dl * q as f32 - ml;
        }
    }
}

/// The 256 six-bit quants (0..64, not yet offset by −32) of a Q6_K block, in element order.
#[inline(always)]
pub(crate) fn q6k_quants(b: &BlockQ6_K) -> [u8; 256] {
    let mut q = [0u8; 256];
    for (e, v) in q.iter_mut().enumerate() {
        let (c, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (b.ql[64 * c + 32 * (s & 1) + l] >> (4 * (s >> 1))) & 0x0F;
        let high = (b.qh[32 * c + l] >> (2 * s)) & 3;
        *v = low | (high << 4);
    }
    q
}

/// Q6_K → f32.
pub(crate) fn q6_k(blocks: &[BlockQ6_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let q = q6k_quants(b);
        for (e, v) in y.iter_mut().enumerate() {
            let dl = d * b.scales[e / 16] as f32;
            *v = dl * (q[e] as i32 - 32) as f32;
        }
    }
}

/// Q8_K → f32.
pub(crate) fn q8_k(blocks: &[BlockQ8_K], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (v, &q) in y.iter_mut().zip(b.qs.iter()) {
            *v = d * q as f32;
        }
    }
}

/// F16 → f32 (exact).
pub(crate) fn f16(bytes: &[u8], out: &mut [f32]) {
    for (c, y) in bytes.chunks_exact(2).zip(out.iter_mut()) {
        *y = f16_to_f32([c[0], c[1]]);
    }
}

/// BF16 → f32 (exact).
pub(crate) fn bf16(bytes: &[u8], out: &mut [f32]) {
    for (c, y) in bytes.chunks_exact(2).zip(out.iter_mut()) {
        *y = bf16_to_f32([c[0], c[1]]);
    }
}

/// F32 (little-endian bytes) → f32.
pub(crate) fn f32(bytes: &[u8], out: &mut [f32]) {
    for (c, y) in bytes.chunks_exact(4).zip(out.iter_mut()) {
        *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

//! Scalar reference dot products: one weight row · one quantized activation row.
//!
//! These are the oracle for the SIMD kernels. For each block the integer part (Σ q_w · q_x, with
//! sub-block scales and the Q8_K `bsums` for mins/offsets) is computed exactly in `i32`; the
//! block's float scales are then applied and the blocks summed in order into one `f32`.
//! Pairings are ggml's: Q4_0/Q5_0/Q8_0 × Q8_0, Q4_1/Q5_1 × Q8_1, K-quants × Q8_K,
//! F32/F16/BF16 × F32.

use crate::blocks::*;
use crate::dequant::{q5_quants, q6k_quants};

/// Σ over blocks of `(d_w · d_x) · Σ q_w q_x` for formats whose quants are centred integers.
#[inline(always)]
fn centred<B, const N: usize>(
    w: &[B],
    x: &[BlockQ8_0],
    quants: impl Fn(&B) -> ([i8; N], f32),
) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let (q, d) = quants(b);
        let isum: i32 = q
            .iter()
            .zip(a.qs.iter())
            .map(|(&p, &r)| p as i32 * r as i32)
            .sum();
        sum += isum as f32 * (d * f16_to_f32(a.d));
    }
    sum
}

/// Q4_0 · Q8_0.
pub fn q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, |b| {
        let q = std::array::from_fn::<i8, 32, _>(|j| {
            let n = if j < 16 {
                b.qs[j] & 0x0F
            } else {
                b.qs[j - 16] >> 4
            };
            n as i8 - 8
        });
        (q, f16_to_f32(b.d))
    })
}

/// Q5_0 · Q8_0.
pub fn q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, |b| {
        let u = q5_quants(b.qh, &b.qs);
        (
            std::array::from_fn::<i8, 32, _>(|j| u[j] as i8 - 16),
            f16_to_f32(b.d),
        )
    })
}

/// Q8_0 · Q8_0.
pub fn q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, |b| (b.qs, f16_to_f32(b.d)))
}

/// Σ over blocks of `(d_w · d_x) · Σ q_w q_x + m_w · s_x` (offset formats × Q8_1).
#[inline(always)]
fn offset(w: impl Iterator<Item = ([u8; 32], f32, f32)>, x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for ((q, d, m), a) in w.zip(x) {
        let isum: i32 = q
            .iter()
            .zip(a.qs.iter())
            .map(|(&p, &r)| p as i32 * r as i32)
            .sum();
        sum += isum as f32 * (d * f16_to_f32(a.d)) + m * f16_to_f32(a.s);
    }
    sum
}

/// Q4_1 · Q8_1.
pub fn q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    offset(
        w.iter().map(|b| {
            let q = std::array::from_fn(|j| {
                if j < 16 {
                    b.qs[j] & 0x0F
                } else {
                    b.qs[j - 16] >> 4
                }
            });
            (q, f16_to_f32(b.d), f16_to_f32(b.m))
        }),
        x,
    )
}

/// Q5_1 · Q8_1.
pub fn q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    offset(
        w.iter()
            .map(|b| (q5_quants(b.qh, &b.qs), f16_to_f32(b.d), f16_to_f32(b.m))),
        x,
    )
}

/// Σ_{e in 16j..16j+16} q[e] · x[e] for each of the 16 sub-blocks of 16.
#[inline(always)]
fn sums16(q: &[i32; 256], x: &BlockQ8_K) -> [i32; 16] {
    std::array::from_fn(|j| (16 * j..16 * j + 16).map(|e| q[e] * x.qs[e] as i32).sum())
}

/// Q2_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q2_K_q8_K` (x86). Matrix
/// products may use its repacked gemv/gemm orders instead (see the crate docs).
pub fn q2_k(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    crate::q2k::dot(crate::q2k::Order::VecDot, w, x)
}

/// Q3_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q3_K_q8_K` (x86; see the
/// `q3k` module).
pub fn q3_k(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    crate::q3k::dot(w, x)
}

/// Q4_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q4_K_q8_K` (x86). Matrix
/// products may use its repacked gemv/gemm orders instead (see the crate docs).
pub fn q4_k(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
    crate::q4k::dot(crate::q4k::Order::VecDot, w, x)
}

/// Q5_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q5_K_q8_K` (x86; see the
/// `q5k` module).
pub fn q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    crate::q5k::dot(w, x)
}

/// Q6_K · Q8_K: `d·d_x·Σ_j sc_j·Σ (q − 32)·x`.
pub fn q6_k(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let mut sum = 0f32;
    for (b, a) in w.iter().zip(x) {
        let u = q6k_quants(b);
        let q: [i32; 256] = std::array::from_fn(|e| u[e] as i32 - 32);
        let s = sums16(&q, a);
        let isum: i32 = (0..16).map(|j| b.scales[j] as i32 * s[j]).sum();
        sum += (a.d() * f16_to_f32(b.d)) * isum as f32;
    }
    sum
}

/// Float rows: eight interleaved partial sums (lane `i % 8`), then added pairwise
/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, the same tree the AVX2 kernels use.
#[inline(always)]
fn float_dot(n: usize, w: impl Fn(usize) -> f32, x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        for l in 0..8 {
            acc[l] += w(i + l) * x[i + l];
        }
    }
    let mut sum = reduce8(acc);
    for i in full..n {
        sum += w(i) * x[i];
    }
    sum
}

/// Adds eight lanes in the fixed tree the SIMD reductions use.
#[inline(always)]
pub(crate) fn reduce8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// F32 · F32 (weights as little-endian bytes).
pub fn f32(w: &[u8], x: &[f32]) -> f32 {
    float_dot(
        x.len(),
        |i| f32::from_le_bytes(w[4 * i..4 * i + 4].try_into().unwrap()),
        x,
    )
}

/// F16 · F32.
pub fn f16(w: &[u8], x: &[f32]) -> f32 {
    float_dot(x.len(), |i| f16_to_f32([w[2 * i], w[2 * i + 1]]), x)
}

/// BF16 · F32.
pub fn bf16(w: &[u8], x: &[f32]) -> f32 {
    float_dot(x.len(), |i| bf16_to_f32([w[2 * i], w[2 * i + 1]]), x)
}

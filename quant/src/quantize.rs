//! Quantization: `f32` → blocks.
//!
//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and Q8_K follow ggml's reference quantizers
//! (`quantize_row_*_ref`) step by step, so their output is bit-identical to ggml's and to
//! gguf-py's (the golden tests check those gguf-py implements). Q4_K, Q5_K and Q6_K use our own
//! simple, deterministic quantizer (ggml's searches for better scales; ours covers each
//! sub-block's range exactly), with the round-trip error bound stated on each function.

use crate::blocks::*;

#[inline(always)]
fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// f32 → Q4_0. Round trip: `|x − x̂| ≤ |d|/2` inside the block's range, `d = max/−8`
/// (the f16 rounding of `d` adds at most 2⁻¹¹ relative).
pub(crate) fn q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (_, max) = signed_absmax::<QK>(x.try_into().expect("a block"));
        let d = max / -8.0;
        let id = inv(d);
        b.d = f32_to_f16(d);
        for j in 0..16 {
            // `as u8` truncates toward zero like the C `(int8_t)` cast; the value is ≥ 0 here.
            let q0 = ((x[j] * id + 8.5) as u8).min(15);
            let q1 = ((x[j + 16] * id + 8.5) as u8).min(15);
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// f32 → Q4_1. Round trip: `|x − x̂| ≤ d/2`, `d = (max − min)/15`.
pub(crate) fn q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inv(d);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        for j in 0..16 {
            let q0 = (((x[j] - min) * id + 0.5) as u8).min(15);
            let q1 = (((x[j + 16] - min) * id + 0.5) as u8).min(15);
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Packs 32 five-bit quants into (`qh`, `qs`).
#[inline(always)]
fn pack_q5(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qh = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= (((q[j] >> 4) & 1) as u32) << j;
        qh |= (((q[j + 16] >> 4) & 1) as u32) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

/// f32 → Q5_0. Round trip: `|x − x̂| ≤ |d|/2`, `d = max/−16`.
pub(crate) fn q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (_, max) = signed_absmax::<QK>(x.try_into().expect("a block"));
        let d = max / -16.0;
        let id = inv(d);
        b.d = f32_to_f16(d);
        let q: [u8; 32] = std::array::from_fn(|j| ((x[j] * id + 16.5) as u8).min(31));
        (b.qh, b.qs) = pack_q5(&q);
    }
}

/// f32 → Q5_1. Round trip: `|x − x̂| ≤ d/2`, `d = (max − min)/31`.
pub(crate) fn q5_1(x: &[f32], out: &mut [BlockQ5_1]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inv(d);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let q: [u8; 32] = std::array::from_fn(|j| (((x[j] - min) * id + 0.5) as u8).min(31));
        (b.qh, b.qs) = pack_q5(&q);
    }
}

/// Scale and quants of one 32-element 8-bit block (ggml's Q8_0/Q8_1 reference): `d = amax/127`,
/// `q = round(x / d)` with ties away from zero (C `roundf`).
#[inline(always)]
fn q8_block(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    (d, std::array::from_fn(|j| (x[j] * id).round() as i8))
}

/// Fills Q8_0 blocks with the scale and quants `block` computes for each 32 values.
#[inline(always)]
fn fill_q8_0(x: &[f32], out: &mut [BlockQ8_0], block: impl Fn(&[f32]) -> (f32, [i8; 32])) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = block(x);
        b.d = f32_to_f16(d);
        b.qs = qs;
    }
}

/// Fills Q8_1 blocks with the scale and quants `block` computes; `s = f16(d · Σq)`.
#[inline(always)]
fn fill_q8_1(x: &[f32], out: &mut [BlockQ8_1], block: impl Fn(&[f32]) -> (f32, [i8; 32])) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = block(x);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(sum as f32 * d);
        b.qs = qs;
    }
}

/// f32 → Q8_0 (ggml's `quantize_row_q8_0_ref`). Round trip: `|x − x̂| ≤ d/2`, `d = amax/127`.
pub(crate) fn q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    fill_q8_0(x, out, q8_block);
}

/// `x.round_ties_even()` for `|x| < 2^22`, without the libm call (`rintf`) the method compiles
/// to on baseline x86-64: adding and subtracting 1.5·2^23 leaves `x` rounded in the FPU's mode,
/// to nearest with ties to even. Quantizers only pass values of magnitude ≤ 128 here; larger ones
/// still saturate the same way in the `as i8`/`as i32` casts that follow. Was 7% of prefill time.
#[inline(always)]
pub(crate) fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

/// One Q8_0/Q8_1 block as llama.cpp's x86 CPU backend quantizes *activations* at run time
/// (`quantize_row_q8_0`/`quantize_row_q8_1` in `ggml-cpu/arch/x86/quants.c`): `d = amax/127`,
/// `q = round_ties_even(x · (127/amax))`. It differs from the reference quantizer ([`q8_block`])
/// in the multiplier (`127/amax`, not `1/d`) and in rounding ties to even, so a few quants differ
/// by one; the engine uses this one so that its logits agree with llama.cpp's.
#[inline(always)]
fn q8_block_runtime(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (
        d,
        std::array::from_fn(|j| round_ties_even_small(x[j] * id) as i8),
    )
}

/// f32 → Q8_0 as llama.cpp's x86 backend quantizes activations (see [`q8_block_runtime`]).
pub(crate) fn q8_0_runtime(x: &[f32], out: &mut [BlockQ8_0]) {
    fill_q8_0(x, out, q8_block_runtime);
}

/// f32 → Q8_1 as llama.cpp's x86 backend quantizes activations (see [`q8_block_runtime`]);
/// `s = f16(d · Σq)`.
pub(crate) fn q8_1_runtime(x: &[f32], out: &mut [BlockQ8_1]) {
    fill_q8_1(x, out, q8_block_runtime);
}

/// f32 → Q8_1 (ggml's `quantize_row_q8_1_ref`); `s = f16(d · Σq)`.
pub(crate) fn q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    fill_q8_1(x, out, q8_block);
}

/// ggml's `nearest_int`: the low 23 mantissa bits of `x + 1.5·2^23`, less 2^22. For
/// `|x| < 2^22` this is `x` rounded half to even; for other inputs it is whatever those bits
/// give (∞ and NaN give −2^22 and 0), which matters when `−127/max` overflows to ±∞ for a
/// block of tiny activations (`|max| < 2^−119`): llama.cpp then stores the low byte, 0.
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    ((x + MAGIC).to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// f32 → Q8_K (ggml's `quantize_row_q8_K_ref`): `iscale = −127/max` with `max` the signed
/// element of largest magnitude, `q = min(127, round_ties_even(iscale · x))` (ggml's
/// `nearest_int`, see there for out-of-range values), `d = 1/iscale` (an `f32`), `bsums` the
/// sums of 16 quants. Round trip: `|x − x̂| ≤ |d|/2`. Bit-identical to llama.cpp's, which x86
/// runs for activations too.
pub(crate) fn q8_k(x: &[f32], out: &mut [BlockQ8_K]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn wide(x: &[f32], out: &mut [BlockQ8_K]) {
            q8_k_body(x, out)
        }
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of `wide`.
        return unsafe { wide(x, out) };
    }
    q8_k_body(x, out)
}

/// The element of largest magnitude: `(|v|, v)` of the first such `v` (NaNs skipped; `(0, 0)`
/// when there is none), in three passes that vectorize: the largest magnitude's bits, the
/// first index holding it, its value.
#[inline(always)]
fn signed_absmax<const N: usize>(x: &[f32; N]) -> (f32, f32) {
    // Magnitudes as bits order like the magnitudes; a NaN counts as 0.
    let mut mag = [0u32; N];
    for (m, v) in mag.iter_mut().zip(x) {
        let b = v.to_bits() & 0x7FFF_FFFF;
        *m = if b > 0x7F80_0000 { 0 } else { b };
    }
    let mut top = 0;
    for &m in &mag {
        top = top.max(m);
    }
    if top == 0 {
        return (0.0, 0.0);
    }
    let mut first = u32::MAX;
    for (i, &m) in mag.iter().enumerate() {
        first = first.min(if m == top { i as u32 } else { u32::MAX });
    }
    (f32::from_bits(top), x[first as usize])
}

/// [`q8_k`]'s body (inlined into a copy compiled for AVX2 where the CPU has it).
#[inline(always)]
fn q8_k_body(x: &[f32], out: &mut [BlockQ8_K]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (amax, max) = signed_absmax::<QK_K>(x.try_into().expect("a block"));
        if amax == 0.0 {
            b.d = 0f32.to_le_bytes();
            b.qs = [0; 256];
            b.bsums = [0; 32];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            // The C `(int8_t)` store of `MIN(127, v)` keeps the low byte.
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let s: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
            b.bsums[2 * j..2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

/// The smallest f16 value `d ≥ need` (so that `need / d ≤ limit` holds after rounding to f16).
fn f16_at_least(need: f32) -> [u8; 2] {
    let mut h = half::f16::from_f32(need);
    while h.to_f32() < need {
        h = half::f16::from_bits(h.to_bits() + 1);
    }
    h.to_bits().to_le_bytes()
}

/// Shared Q4_K/Q5_K quantizer: eight sub-blocks of 32 with `levels` quant levels (16 or 32).
/// Returns (d, dmin, packed scales, quants 0..levels in element order).
fn k_affine(x: &[f32], levels: u8) -> ([u8; 2], [u8; 2], [u8; 12], [u8; 256]) {
    let top = (levels - 1) as f32;
    // Per sub-block offset m_j = −min(0, min x) ≥ 0 and the upper end of the range.
    let mut off = [0f32; 8];
    let mut hi = [0f32; 8];
    for j in 0..8 {
        let (mn, mx) = min_max(&x[32 * j..32 * j + 32]);
        off[j] = (-mn).max(0.0);
        hi[j] = mx.max(0.0);
    }
    // Quantize the offsets to 6 bits, rounding up so the range stays covered.
    let max_off = off.iter().fold(0f32, |a, &v| a.max(v));
    let dmin_b = f16_at_least(max_off / 63.0);
    let dmin = f16_to_f32(dmin_b);
    let mut mq = [0u8; 8];
    let mut offq = [0f32; 8];
    for j in 0..8 {
        mq[j] = if dmin > 0.0 {
            (off[j] / dmin).ceil().min(63.0) as u8
        } else {
            0
        };
        offq[j] = dmin * mq[j] as f32;
    }
    // Scales: each sub-block's step must span offset + upper end in `top` steps.
    let need: [f32; 8] = std::array::from_fn(|j| (hi[j] + offq[j]) / top);
    let max_need = need.iter().fold(0f32, |a, &v| a.max(v));
    let d_b = f16_at_least(max_need / 63.0);
    let d = f16_to_f32(d_b);
    let mut sc = [0u8; 8];
    for j in 0..8 {
        sc[j] = if d > 0.0 {
            (need[j] / d).ceil().min(63.0) as u8
        } else {
            0
        };
    }
    let mut q = [0u8; 256];
    for (e, v) in q.iter_mut().enumerate() {
        let j = e / 32;
        let step = d * sc[j] as f32;
        *v = if step > 0.0 {
            ((x[e] + offq[j]) / step).round().clamp(0.0, top) as u8
        } else {
            0
        };
    }
    (d_b, dmin_b, k4_pack_scales_mins(&sc, &mq), q)
}

/// f32 → Q4_K (our quantizer). Per sub-block j of 32: offset `m_j = dmin·⌈−min_j/dmin⌉` (min
/// clamped to ≤ 0), step `s_j = d·⌈(max_j⁺ + m_j)/(15 d)⌉`, `q = round((x + m_j)/s_j)`.
/// Round trip: `|x − x̂| ≤ s_j/2` where `s_j ≤ (max_j⁺ + m_j)/15 + d`, `d = max_j(…)/63`,
/// `m_j ≤ −min_j + dmin`, `dmin = max_j(−min_j)/63`.
pub(crate) fn q4_k(x: &[f32], out: &mut [BlockQ4_K]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, dmin, scales, q) = k_affine(x, 16);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        for c in 0..4 {
            for l in 0..32 {
                b.qs[32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
            }
        }
    }
}

/// f32 → Q5_K (our quantizer; as [`q4_k`] with 31 steps per sub-block).
/// Round trip: `|x − x̂| ≤ s_j/2`, `s_j ≤ (max_j⁺ + m_j)/31 + d`.
pub(crate) fn q5_k(x: &[f32], out: &mut [BlockQ5_K]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (d, dmin, scales, q) = k_affine(x, 32);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; 32];
        for c in 0..4 {
            for l in 0..32 {
                b.qs[32 * c + l] = (q[64 * c + l] & 0x0F) | ((q[64 * c + 32 + l] & 0x0F) << 4);
            }
        }
        for (e, &v) in q.iter().enumerate() {
            b.qh[e % 32] |= ((v >> 4) & 1) << (e / 32);
        }
    }
}

/// f32 → Q6_K (our quantizer). Per sub-block j of 16: step `s_j = d·⌈(amax_j/31)/d⌉` with
/// `d = max_j(amax_j/31)/127`, `q = clamp(round(x/s_j), −32, 31)`.
/// Round trip: `|x − x̂| ≤ s_j/2 ≤ (amax_j/31 + d)/2`.
pub(crate) fn q6_k(x: &[f32], out: &mut [BlockQ6_K]) {
    for (b, x) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let need: [f32; 16] = std::array::from_fn(|j| {
            x[16 * j..16 * j + 16]
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()))
                / 31.0
        });
        let max_need = need.iter().fold(0f32, |a, &v| a.max(v));
        b.d = f16_at_least(max_need / 127.0);
        let d = f16_to_f32(b.d);
        for j in 0..16 {
            b.scales[j] = if d > 0.0 {
                (need[j] / d).ceil().min(127.0) as i8
            } else {
                0
            };
        }
        let mut q = [0u8; 256];
        for (e, v) in q.iter_mut().enumerate() {
            let step = d * b.scales[e / 16] as f32;
            let qi = if step > 0.0 {
                (x[e] / step).round().clamp(-32.0, 31.0) as i32
            } else {
                0
            };
            *v = (qi + 32) as u8;
        }
        b.ql = [0; 128];
        b.qh = [0; 64];
        for (e, &v) in q.iter().enumerate() {
            let (c, s, l) = (e / 128, (e % 128) / 32, e % 32);
            b.ql[64 * c + 32 * (s & 1) + l] |= (v & 0x0F) << (4 * (s >> 1));
            b.qh[32 * c + l] |= (v >> 4) << (2 * s);
        }
    }
}

/// f32 → F16 bytes (round to nearest even).
pub(crate) fn f16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_f16(*v));
    }
}

/// f32 → BF16 bytes: round to nearest even, NaN forced quiet (ggml's `ggml_compute_fp32_to_bf16`).
pub(crate) fn bf16(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        let u = v.to_bits();
        let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
            ((u >> 16) | 64) as u16
        } else {
            ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
        };
        o.copy_from_slice(&h.to_le_bytes());
    }
}

/// f32 → F32 little-endian bytes.
pub(crate) fn f32(x: &[f32], out: &mut [u8]) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::round_ties_even_small;
    use super::signed_absmax;

    /// `(|v|, v)` of the first element of largest magnitude, by a plain scan (ggml's loop).
    fn scan_absmax(x: &[f32]) -> (f32, f32) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        (amax, max)
    }

    #[test]
    fn signed_absmax_equals_the_scan() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for case in 0..2000 {
            let n = 1 + (next() % 300) as usize;
            let mut x: Vec<f32> = (0..n)
                .map(|_| ((next() % 41) as f32 - 20.0) * 0.25)
                .collect();
            // Ties of opposite signs are common above; add zeros, NaNs and infinities.
            match case % 5 {
                0 => x.iter_mut().for_each(|v| *v = 0.0 * v.signum()),
                1 => x[(next() % n as u64) as usize] = f32::NAN,
                2 => x[(next() % n as u64) as usize] = f32::NEG_INFINITY,
                3 => x.iter_mut().for_each(|v| *v = f32::NAN),
                _ => {}
            }
            x.resize(300, 0.0);
            let x: [f32; 300] = x.try_into().unwrap();
            let (a, b) = (scan_absmax(&x), signed_absmax(&x));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "{x:?}"
            );
        }
    }

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        // Every exact half and quarter in ±300, then a seeded sweep of arbitrary values.
        for k in -1200..=1200 {
            let x = k as f32 * 0.25;
            assert_eq!(round_ties_even_small(x), x.round_ties_even(), "{x}");
        }
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..1_000_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = (s >> 40) as f32 / (1u64 << 24) as f32 * 600.0 - 300.0;
            assert_eq!(round_ties_even_small(x), x.round_ties_even(), "{x}");
        }
        assert_eq!(round_ties_even_small(-0.4), -0.0);
        assert!(round_ties_even_small(f32::NAN).is_nan());
    }
}

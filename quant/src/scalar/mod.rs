//! Scalar reference dot products: one weight row · one quantized activation row.
//!
//! These are the oracle for the SIMD kernels. For each block the integer part (Σ q_w · q_x, with
//! sub-block scales and the Q8_K `bsums` for mins/offsets) is computed exactly in `i32`; the
//! block's float scales are then applied and the blocks summed in order into one `f32` (Q4_0,
//! Q5_0, Q8_0, Q4_1, Q5_1: into eight lanes with fused multiply-adds, in llama.cpp's order; see
//! `centred` and `offset`).
//! Pairings are ggml's: Q4_0/Q5_0/Q8_0 × Q8_0, Q4_1/Q5_1 × Q8_1, K-quants × Q8_K,
//! F16 × F16, BF16 × BF16, F32 × F32.
//!
//! Where a kernel reproduces llama.cpp's float order (the K-quants, F16, BF16), the reference
//! emulates the SIMD lanes one by one, so every level is bit-identical to it and to llama.cpp.
//! These are `vec_dot` orders; the other orders llama.cpp uses for matrix products (repacked
//! gemv/gemm, tiled, tinyBLAS) have their references in the submodules [`q4k`] and [`q2k`]
//! (which also hold the Q4_K and Q2_K `vec_dot` orders, as [`q3k`] and [`q5k`] hold theirs), in
//! `crate::tiled`, and here (`f16_sgemm`, `bf16_sgemm`).
//!
//! This is the bottom layer of the crate's dot products: it and its submodules import only
//! `blocks` and `dequant`'s quant unpacking, never `simd`, `driver` or the kernel-choice
//! modules, so every kernel above can be tested against it.

pub(crate) mod iq1;
pub(crate) mod iq2;
pub(crate) mod iq3;
pub(crate) mod iq4_xs;
mod lanes;
pub(crate) mod mxfp4;
pub(crate) mod q2k;
pub(crate) mod q3k;
pub(crate) mod q4k;
pub(crate) mod q5k;
pub(crate) mod tiled;
pub(crate) mod tq;

pub(crate) use lanes::{reduce16, reduce8};

use crate::blocks::*;
use crate::dequant::{q5_quants, q6k_quants};

/// Σ over blocks of `(d_w · d_x) · Σ q_w q_x` for formats whose quants are centred integers
/// (× Q8_0), in llama.cpp's float order on x86 (`ggml_vec_dot_*_q8_0` and `tinyBLAS_Q0_AVX`
/// alike): eight lanes, lane `l` of block `b` being the exact integer sum of the products of
/// elements `4l..4l+4`; for each block in order `acc[l] = fma(d_w · d_x, p[l], acc[l])`; then
/// [`reduce8`].
#[inline(always)]
fn centred<B>(w: &[B], x: &[BlockQ8_0], quants: impl Fn(&B) -> ([i8; 32], f32)) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let (q, d) = quants(b);
        let d = d * f16_to_f32(a.d);
        for (l, acc) in acc.iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4)
                .map(|e| q[e] as i32 * a.qs[e] as i32)
                .sum();
            *acc = d.mul_add(p as f32, *acc);
        }
    }
    reduce8(acc)
}

/// Q4_0 · Q8_0.
pub(crate) fn q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
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

/// Q4_0 · Q8_0 in the order of llama.cpp's repacked x86 kernels (`ggml_gemv_q4_0_8x8_q8_0`
/// and `ggml_gemm_q4_0_8x8_q8_0`, which it uses for matrices of a multiple of 8 rows): one
/// float per output, `acc = fma(Σ q_w q_x, f32(d_w) · f32(d_x), acc)` block after block, the
/// integer sum over the whole block being exact.
pub(crate) fn q4_0_repacked(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    repacked(w, x, |b| {
        (nibble_values(&b.qs, |n| n as i8 - 8), f16_to_f32(b.d))
    })
}

/// IQ4_NL · Q8_0 in the order of llama.cpp's repacked x86 kernels (`ggml_gemv_iq4_nl_8x8_q8_0`,
/// `ggml_gemm_iq4_nl_8x8_q8_0`; matrices of a multiple of 8 rows), as [`q4_0_repacked`].
pub(crate) fn iq4_nl_repacked(w: &[BlockIQ4_NL], x: &[BlockQ8_0]) -> f32 {
    repacked(w, x, iq4_nl_quants)
}

/// IQ4_NL · Q8_0 in `tinyBLAS_Q0_AVX`'s order (batches of n ≥ 2 tokens, matrices llama.cpp does
/// not repack): as [`q8_0`].
pub(crate) fn iq4_nl(w: &[BlockIQ4_NL], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, iq4_nl_quants)
}

/// IQ4_NL · Q8_0 in `ggml_vec_dot_iq4_nl_q8_0`'s order (one token, matrices llama.cpp does not
/// repack): the eight lanes of `centred` kept in two sets, even blocks in one and odd blocks in
/// the other, over the pairs of blocks; the sets added lane by lane and reduced by [`reduce8`];
/// then, for an odd block count, `fma(d_w · d_x, Σ q_w q_x, sum)` for the last block.
pub(crate) fn iq4_nl_vec_dot(w: &[BlockIQ4_NL], x: &[BlockQ8_0]) -> f32 {
    let mut acc = [[0f32; 8]; 2];
    let pairs = w.len().min(x.len()) / 2;
    for i in 0..2 * pairs {
        let (q, dw) = iq4_nl_quants(&w[i]);
        let d = dw * f16_to_f32(x[i].d);
        for (l, acc) in acc[i % 2].iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4)
                .map(|e| q[e] as i32 * x[i].qs[e] as i32)
                .sum();
            *acc = d.mul_add(p as f32, *acc);
        }
    }
    let mut sum = reduce8(std::array::from_fn(|l| acc[0][l] + acc[1][l]));
    for i in 2 * pairs..w.len().min(x.len()) {
        let (q, dw) = iq4_nl_quants(&w[i]);
        let isum: i32 = (0..32).map(|e| q[e] as i32 * x[i].qs[e] as i32).sum();
        sum = (dw * f16_to_f32(x[i].d)).mul_add(isum as f32, sum);
    }
    sum
}

/// The 32 values of a nibble-packed block (`qs[j]`: element j low, j + 16 high) through `f`.
#[inline(always)]
fn nibble_values(qs: &[u8; 16], f: impl Fn(u8) -> i8) -> [i8; 32] {
    std::array::from_fn(|j| {
        if j < 16 {
            f(qs[j] & 0x0F)
        } else {
            f(qs[j - 16] >> 4)
        }
    })
}

/// An IQ4_NL block's 32 values and scale.
#[inline(always)]
fn iq4_nl_quants(b: &BlockIQ4_NL) -> ([i8; 32], f32) {
    (
        nibble_values(&b.qs, |n| IQ4_NL_VALUES[n as usize]),
        f16_to_f32(b.d),
    )
}

/// One float per output: `acc = fma(Σ q_w q_x, d_w · d_x, acc)` per block (repacked orders).
#[inline(always)]
fn repacked<B>(w: &[B], x: &[BlockQ8_0], quants: impl Fn(&B) -> ([i8; 32], f32)) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.iter().zip(x) {
        let (q, d) = quants(b);
        let isum: i32 = (0..32).map(|e| q[e] as i32 * a.qs[e] as i32).sum();
        acc = (isum as f32).mul_add(d * f16_to_f32(a.d), acc);
    }
    acc
}

/// Q5_0 · Q8_0.
pub(crate) fn q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, |b| {
        let u = q5_quants(b.qh, &b.qs);
        (
            std::array::from_fn::<i8, 32, _>(|j| u[j] as i8 - 16),
            f16_to_f32(b.d),
        )
    })
}

/// Q8_0 · Q8_0.
pub(crate) fn q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    centred(w, x, |b| (b.qs, f16_to_f32(b.d)))
}

/// Σ over blocks of `(d_w · d_x) · Σ q_w q_x + m_w · s_x` (offset formats × Q8_1), in
/// llama.cpp's x86 order (`ggml_vec_dot_q{4,5}_1_q8_1`, AVX2 branch; it has no batch kernel for
/// these, so batches use it too): the first term in eight lanes as in `centred`, the second in
/// one float, `summs = fma(m_w, s_x, summs)` (GCC contracts `summs += m*s`; the product of two
/// f16 values is exact in f32 anyway), then [`reduce8`]`(acc) + summs`.
#[inline(always)]
fn offset(w: impl Iterator<Item = ([u8; 32], f32, f32)>, x: &[BlockQ8_1]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    for ((q, d, m), a) in w.zip(x) {
        let d = d * f16_to_f32(a.d);
        for (l, acc) in acc.iter_mut().enumerate() {
            let p: i32 = (4 * l..4 * l + 4)
                .map(|e| q[e] as i32 * a.qs[e] as i32)
                .sum();
            *acc = d.mul_add(p as f32, *acc);
        }
        summs = m.mul_add(f16_to_f32(a.s), summs);
    }
    reduce8(acc) + summs
}

/// Q4_1 · Q8_1.
pub(crate) fn q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
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
pub(crate) fn q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    offset(
        w.iter()
            .map(|b| (q5_quants(b.qh, &b.qs), f16_to_f32(b.d), f16_to_f32(b.m))),
        x,
    )
}

/// Q2_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q2_K_q8_K` (x86). Matrix
/// products may use its repacked gemv/gemm orders instead (see the crate docs).
pub(crate) fn q2_k(w: &[BlockQ2_K], x: &[BlockQ8_K]) -> f32 {
    q2k::dot(q2k::Order::VecDot, w, x)
}

/// Q3_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q3_K_q8_K` (x86; see
/// [`q3k`]).
pub(crate) fn q3_k(w: &[BlockQ3_K], x: &[BlockQ8_K]) -> f32 {
    q3k::dot(w, x)
}

/// Q5_K · Q8_K in the float order of llama.cpp's `ggml_vec_dot_q5_K_q8_K` (x86; see
/// [`q5k`]).
pub(crate) fn q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
    q5k::dot(w, x)
}

/// Q6_K · Q8_K: `d·d_x·Σ_j sc_j·Σ (q − 32)·x`, in llama.cpp's float order
/// (`ggml_vec_dot_q6_K_q8_K`, its AVX2 branch, which x86 builds with AVX-512 run too).
///
/// Eight integer lanes per block: lane `k` holds `Σ sc·q·x` over the elements `e` with
/// `(e mod 32) / 4 == k` (the `vpmaddubsw`/`vpmaddwd` layout of each 32-element chunk), minus
/// `32 · (sc_2k·bsum_2k + sc_2k+1·bsum_2k+1)` (the −32 offset, sub-blocks 2k and 2k+1). Each lane
/// is converted to `f32` and accumulated with one fused multiply-add by `d_x · d_w`; the eight
/// float lanes are added at the end in [`reduce8`]'s tree.
pub(crate) fn q6_k(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
    let mut acc = [0f32; 8];
    for (b, a) in w.iter().zip(x) {
        let u = q6k_quants(b);
        let mut lane = [0i32; 8];
        for (e, &q) in u.iter().enumerate() {
            lane[(e % 32) / 4] += b.scales[e / 16] as i32 * q as i32 * a.qs[e] as i32;
        }
        let d = a.d() * f16_to_f32(b.d);
        for k in 0..8 {
            let off = b.scales[2 * k] as i32 * a.bsum(2 * k) as i32
                + b.scales[2 * k + 1] as i32 * a.bsum(2 * k + 1) as i32;
            acc[k] = d.mul_add((lane[k] - 32 * off) as f32, acc[k]);
        }
    }
    reduce8(acc)
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

/// F32 · F32 (weights as little-endian bytes).
pub(crate) fn f32(w: &[u8], x: &[f32]) -> f32 {
    float_dot(
        x.len(),
        |i| f32::from_le_bytes(w[4 * i..4 * i + 4].try_into().unwrap()),
        x,
    )
}

/// Element `i` of little-endian f16 bytes.
#[inline(always)]
fn h(b: &[u8], i: usize) -> f32 {
    f16_to_f32([b[2 * i], b[2 * i + 1]])
}

/// F16 · F16 (weights and activations as little-endian f16 bytes) in the order of llama.cpp's
/// `ggml_vec_dot_f16` (AVX-512 build without AVX512-FP16): four 16-lane accumulators over
/// steps of 64 elements (lane `l` of accumulator `j` takes element `64i + 16j + l`, one FMA
/// each), combined `(s0 + s2) + (s1 + s3)` lane by lane, then [`reduce16`]; the last `n mod 64`
/// products are added in `f64` and the sum rounded to `f32` once.
pub(crate) fn f16(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 2;
    let np = n / 64 * 64;
    let mut s = [[0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, sj) in s.iter_mut().enumerate() {
            for (l, v) in sj.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *v = h(w, e).mul_add(h(x, e), *v);
            }
        }
    }
    let t = std::array::from_fn(|l| (s[0][l] + s[2][l]) + (s[1][l] + s[3][l]));
    let mut sum = reduce16(t) as f64;
    for e in np..n {
        sum += (h(w, e) * h(x, e)) as f64;
    }
    sum as f32
}

/// F16 · F16 in the order of llama.cpp's llamafile `tinyBLAS` (its F16 × F16 `sgemm`, 16-lane
/// AVX-512), which it uses for batches of 2 or more tokens when the row length is a multiple of
/// 16 and the row count a multiple of 4: one 16-lane accumulator, one FMA per 16 elements, then
/// [`reduce16`].
///
/// # Panics
/// If the row length is not a multiple of 16.
pub(crate) fn f16_sgemm(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 2;
    assert!(
        n.is_multiple_of(16),
        "tinyBLAS order needs rows of 16k elements"
    );
    let mut acc = [0f32; 16];
    for i in (0..n).step_by(16) {
        for (l, v) in acc.iter_mut().enumerate() {
            *v = h(w, i + l).mul_add(h(x, i + l), *v);
        }
    }
    reduce16(acc)
}

/// `x` with a subnormal flushed to zero of the same sign (the DAZ/FTZ of `vdpbf16ps`).
#[inline(always)]
pub(crate) fn flush_subnormal(x: f32) -> f32 {
    if x.is_subnormal() {
        0f32.copysign(x)
    } else {
        x
    }
}

/// Element `i` of little-endian bf16 bytes.
#[inline(always)]
fn bh(b: &[u8], i: usize) -> f32 {
    bf16_to_f32([b[2 * i], b[2 * i + 1]])
}

/// One lane of AVX-512 BF16's `vdpbf16ps` over the 32 elements from `c`: lane `l` adds the
/// product of elements `c + 2l + 1`, then of `c + 2l`, each as an FMA with subnormal inputs
/// read as zero and a subnormal result flushed to zero.
#[inline(always)]
fn dpbf16(acc: &mut [f32; 16], w: &[u8], x: &[u8], c: usize) {
    for (l, v) in acc.iter_mut().enumerate() {
        for e in [c + 2 * l + 1, c + 2 * l] {
            let (a, b) = (flush_subnormal(bh(w, e)), flush_subnormal(bh(x, e)));
            *v = flush_subnormal(a.mul_add(b, flush_subnormal(*v)));
        }
    }
}

/// BF16 · BF16 (weights and activations as little-endian bf16 bytes) in the order of
/// llama.cpp's `ggml_vec_dot_bf16` (AVX-512 BF16 build): two 16-lane `vdpbf16ps` accumulators
/// over steps of 64 elements (the first takes elements 0..32 of each step, the second 32..64;
/// see `dpbf16` for one lane), each reduced as `_mm512_reduce_add_ps` and added in `f64`,
/// then the last `n mod 64` products in `f64`, the sum rounded to `f32` once.
pub(crate) fn bf16(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 2;
    let np = n / 64 * 64;
    let (mut c1, mut c2) = ([0f32; 16], [0f32; 16]);
    for i in (0..np).step_by(64) {
        dpbf16(&mut c1, w, x, i);
        dpbf16(&mut c2, w, x, i + 32);
    }
    let mut sum = 0f64;
    sum += reduce16(c1) as f64;
    sum += reduce16(c2) as f64;
    for e in np..n {
        sum += (bh(w, e) * bh(x, e)) as f64;
    }
    sum as f32
}

/// BF16 · BF16 in the order of llama.cpp's llamafile `tinyBLAS` BF16 × BF16 (AVX-512 BF16),
/// used for batches of 2 or more tokens when the row length is a multiple of 32 and the row
/// count a multiple of 4: one 16-lane `vdpbf16ps` accumulator over steps of 32, then
/// [`reduce16`].
///
/// # Panics
/// If the row length is not a multiple of 32.
pub(crate) fn bf16_sgemm(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 2;
    assert!(
        n.is_multiple_of(32),
        "tinyBLAS BF16 order needs rows of 32k elements"
    );
    let mut acc = [0f32; 16];
    for c in (0..n).step_by(32) {
        dpbf16(&mut acc, w, x, c);
    }
    reduce16(acc)
}

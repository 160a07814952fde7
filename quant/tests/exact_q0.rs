//! The 32-element block formats (Q4_0, Q5_0, Q8_0, IQ4_NL × Q8_0; Q4_1, Q5_1 × Q8_1) in
//! llama.cpp's float order, bit for bit.
//!
//! llama.cpp's x86 CPU backend computes each output element of these formats the same way for
//! one token (`ggml_vec_dot_*`) and for batches (`tinyBLAS_Q0_AVX`; Q4_1/Q5_1 have no batch
//! kernel and use `vec_dot`): eight f32 lanes, lane `l` of each block adding
//! `fma(d_w · d_x, Σ_{e=4l}^{4l+3} q_w[e] q_x[e], acc[l])`, blocks in order, then
//! `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`; Q4_1/Q5_1 add `summs`, accumulated as
//! `fma(m_w, s_x, summs)` over the blocks. IQ4_NL's one-token kernel keeps the lanes in two
//! sets by block parity (see [`Order::Pairs`]). Q4_0 and IQ4_NL matrices of a multiple of 8
//! rows, which llama.cpp repacks, are computed with one float per output:
//! `acc = fma(Σ_block q_w q_x, d_w · d_x, acc)`. These tests check the scalar reference against
//! those specifications written out independently here, and every SIMD level (and every grouping
//! of rows and tokens the kernels use) against the scalar reference, with no tolerance.

use strata_gguf::GgmlType;
use strata_quant::{
    dequantize, matmul_q_with, quantize_acts, vec_dot_type, QuantizedActs, SimdLevel,
};

use crate::common::*;

const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::IQ4_NL,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
];

/// Activations of `n` rows for weights of type `ty`.
fn acts(ty: GgmlType, x: &[f32], n: usize, cols: usize) -> QuantizedActs {
    quantize_acts(vec_dot_type(ty).unwrap(), x, n, cols).unwrap()
}

fn levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_available())
        .collect()
}

fn product(level: SimdLevel, ty: GgmlType, w: &[u8], rows: usize, x: &QuantizedActs) -> Vec<u32> {
    let mut y = vec![0f32; rows * x.n_rows()];
    matmul_q_with(level, ty, w, rows, x.cols(), x, &mut y).unwrap();
    y.iter().map(|v| v.to_bits()).collect()
}

/// Which of llama.cpp's float orders an output follows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Order {
    /// Eight lanes, blocks in order (`vec_dot` of most formats, `tinyBLAS_Q0_AVX`).
    Lanes,
    /// One float per output (the repacked Q4_0/IQ4_NL kernels, rows % 8 == 0).
    Repacked,
    /// Eight lanes in two sets by block parity, plus an odd last block (IQ4_NL `vec_dot`).
    Pairs,
}

/// The order llama.cpp uses for a `rows`-row matrix of `ty` and a batch of `n` tokens.
fn order(ty: GgmlType, rows: usize, n: usize) -> Order {
    match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL if rows.is_multiple_of(8) => Order::Repacked,
        GgmlType::IQ4_NL if n == 1 => Order::Pairs,
        _ => Order::Lanes,
    }
}

/// The specifications above, from the blocks' integer quants and f16 scales.
fn spec(ty: GgmlType, order: Order, w_row: &[u8], x_row: &[u8]) -> f32 {
    let ts = ty.type_size();
    // Q4_1/Q5_1 × Q8_1: an offset `m` after `d` in the weights, a sum `s` after `d` in the
    // activations.
    let offset = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
    let xq = if offset { 4 } else { 2 };
    let f16 = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let nb = w_row.len() / ts;
    let mut acc = [[0f32; 8]; 2];
    let mut one = 0f32;
    let mut summs = 0f32;
    let mut last = None;
    for (i, (b, a)) in w_row
        .chunks_exact(ts)
        .zip(x_row.chunks_exact(xq + 32))
        .enumerate()
    {
        // The weight quants: dequantize the block with its scale set to one (offset zero).
        let mut unit = b.to_vec();
        unit[..2].copy_from_slice(&half::f16::ONE.to_bits().to_le_bytes());
        if offset {
            unit[2..4].copy_from_slice(&half::f16::ZERO.to_bits().to_le_bytes());
            summs = f16(b, 2).mul_add(f16(a, 2), summs);
        }
        let mut q = [0f32; 32];
        dequantize(ty, &unit, &mut q).unwrap();
        let d = f16(b, 0) * f16(a, 0);
        let prod = |e: usize| q[e] as i32 * a[xq + e] as i8 as i32;
        let isum: i32 = (0..32).map(prod).sum();
        match order {
            Order::Repacked => one = (isum as f32).mul_add(d, one),
            Order::Pairs if i == nb - 1 && nb % 2 == 1 => last = Some((d, isum)),
            _ => {
                let set = if order == Order::Pairs { i % 2 } else { 0 };
                for (l, acc) in acc[set].iter_mut().enumerate() {
                    let p: i32 = (4 * l..4 * l + 4).map(prod).sum();
                    *acc = d.mul_add(p as f32, *acc);
                }
            }
        }
    }
    if order == Order::Repacked {
        return one;
    }
    let l: [f32; 8] = std::array::from_fn(|k| acc[0][k] + acc[1][k]);
    let mut sum = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    if let Some((d, isum)) = last {
        sum = d.mul_add(isum as f32, sum);
    }
    sum + summs
}

#[test]
fn scalar_reference_is_llama_cpp_order() {
    let mut rng = Rng::new(21);
    for ty in TYPES {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max] {
            // 5 rows: the vec_dot/tinyBLAS order; 16 rows of Q4_0/IQ4_NL: the repacked one;
            // one token of IQ4_NL (5 rows): its vec_dot order. 25 blocks: an odd last block.
            for (rows, n) in [(5, 3), (16, 3), (5, 1)] {
                let cols = 800;
                let w = random_blocks(ty, cols / 32 * rows, &mut rng, scales);
                let x = acts(ty, &random_acts(cols * n, &mut rng), n, cols);
                let got = product(SimdLevel::Scalar, ty, &w, rows, &x);
                let rb = w.len() / rows;
                for t in 0..n {
                    for r in 0..rows {
                        let want = spec(ty, order(ty, rows, n), &w[r * rb..(r + 1) * rb], x.row(t));
                        assert_eq!(
                            got[t * rows + r],
                            want.to_bits(),
                            "{ty} {scales:?} rows {rows}: row {r} token {t}: {} vs {want}",
                            f32::from_bits(got[t * rows + r])
                        );
                    }
                }
            }
        }
    }
}

/// Every level, for row counts that exercise each row grouping (pairs, eights, sixteens, a lone
/// row, a padded group; multiples of 8 rows for repacked Q4_0) and token counts that exercise
/// the four-token kernel and the single-token one.
#[test]
fn every_level_equals_scalar_bit_for_bit() {
    let mut rng = Rng::new(22);
    let levels = levels();
    for ty in TYPES {
        for (rows, cols) in [
            (1, 32),
            (2, 64),
            (3, 800),
            (9, 96),
            (17, 800),
            (8, 1024),
            (16, 800),
            (40, 96),
            (56, 64),
        ] {
            for n in [1, 2, 3, 4, 5, 9] {
                let w = random_blocks(ty, cols / 32 * rows, &mut rng, Scales::Normal);
                let x = acts(ty, &random_acts(cols * n, &mut rng), n, cols);
                let want = product(SimdLevel::Scalar, ty, &w, rows, &x);
                for &level in &levels {
                    assert_eq!(
                        product(level, ty, &w, rows, &x),
                        want,
                        "{ty} {level:?} rows {rows} cols {cols} n {n}"
                    );
                }
            }
        }
    }
}

/// Results do not depend on the number of tokens in the batch: token `t` of a batch equals the
/// same token alone (llama.cpp's one-token and batch kernels agree for these formats, repacked
/// Q4_0 included), and a product large enough to be split into tiles over threads equals the
/// scalar one (700 rows: vec_dot order; 704: repacked Q4_0, in tiles of 84 rows, so that a
/// kernel call does not start at a multiple of 8 rows).
#[test]
fn batch_rows_equal_single_token_and_tiling_is_invisible() {
    let mut rng = Rng::new(23);
    for (ty, rows) in TYPES.into_iter().flat_map(|ty| [(ty, 700), (ty, 704)]) {
        let (cols, n) = (1024, 6);
        let w = random_blocks(ty, cols / 32 * rows, &mut rng, Scales::Normal);
        let xs = random_acts(cols * n, &mut rng);
        let x = acts(ty, &xs, n, cols);
        let want = product(SimdLevel::Scalar, ty, &w, rows, &x);
        for level in levels() {
            let all = product(level, ty, &w, rows, &x);
            assert_eq!(all, want, "{ty} {level:?} batch vs scalar");
            if order(ty, rows, n) != order(ty, rows, 1) {
                continue; // IQ4_NL not repacked: llama.cpp's one-token order differs
            }
            for t in 0..n {
                let one = acts(ty, &xs[t * cols..(t + 1) * cols], 1, cols);
                assert_eq!(
                    product(level, ty, &w, rows, &one),
                    all[t * rows..(t + 1) * rows],
                    "{ty} {level:?} token {t} alone vs in the batch"
                );
            }
        }
    }
}

/// The batch kernel's groupings (AVX-512: register tiles of 8 rows × 4 tokens, a last row group
/// padded, token remainders of 1–3, token chunks split over tasks, several row tiles) equal the
/// scalar reference, on shapes like Gemma 3's 640-column matrices.
#[test]
fn batch_groupings_equal_scalar_bit_for_bit() {
    let mut rng = Rng::new(24);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::IQ4_NL,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
    ] {
        for (rows, cols, n) in [(13, 640, 133), (300, 640, 67), (7, 96, 11), (250, 64, 130)] {
            let w = random_blocks(ty, cols / 32 * rows, &mut rng, Scales::Normal);
            let x = acts(ty, &random_acts(cols * n, &mut rng), n, cols);
            let want = product(SimdLevel::Scalar, ty, &w, rows, &x);
            for level in levels() {
                assert_eq!(
                    product(level, ty, &w, rows, &x),
                    want,
                    "{ty} {level:?} rows {rows} cols {cols} n {n}"
                );
            }
        }
    }
}

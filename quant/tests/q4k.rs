//! Q4_K in llama.cpp's four orders (vec_dot, gemv, gemm, tiled; see the crate's `q4k` and
//! `tiled` modules): every SIMD level equals the scalar reference bit for bit, for every token
//! grouping and row count.

use strata_gguf::GgmlType;
use strata_quant::{matmul_q_with, matvec, quantize_acts, SimdLevel};

use crate::common::*;

const TY: GgmlType = GgmlType::Q4_K;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

fn product(level: SimdLevel, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f32> {
    let acts = quantize_acts(GgmlType::Q8_K, x, n, cols).unwrap();
    let mut y = vec![0f32; rows * n];
    matmul_q_with(level, TY, w, rows, cols, &acts, &mut y).unwrap();
    y
}

/// Row counts with and without the multiple of 8 that selects the gemv/gemm orders, and with
/// remainders of the four-row groups; token counts 1..=9 cover every `n % 4` with and without
/// a group of four.
#[test]
fn every_level_equals_scalar_bitwise_for_all_orders() {
    let mut rng = Rng::new(41);
    let cols = 768;
    for scales in [Scales::Normal, Scales::Subnormal, Scales::Max] {
        for rows in [8, 16, 24, 9, 12, 13] {
            let w = random_blocks(TY, cols / 256 * rows, &mut rng, scales);
            for n in 1..=9 {
                let x = random_acts(cols * n, &mut rng);
                let want = product(SimdLevel::Scalar, &w, rows, cols, &x, n);
                for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
                    let got = product(level, &w, rows, cols, &x, n);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{scales:?} rows {rows} n {n} {level:?}"
                    );
                }
            }
        }
    }
}

/// Long rows: the AVX-512 gemv reads each row through in segments of 64 blocks; 67 blocks
/// gives a second, partial segment whose last group of four blocks is short.
#[test]
fn long_rows_equal_scalar_bitwise() {
    let mut rng = Rng::new(43);
    let (rows, cols) = (24, 256 * 67);
    let w = random_blocks(TY, cols / 256 * rows, &mut rng, Scales::Normal);
    for n in [1, 2, 5, 16, 21, 36] {
        let x = random_acts(cols * n, &mut rng);
        let want = product(SimdLevel::Scalar, &w, rows, cols, &x, n);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
            let got = product(level, &w, rows, cols, &x, n);
            assert_eq!(bits(&got), bits(&want), "n {n} {level:?}");
        }
    }
}

/// With `rows % 8 == 0` the tokens after the last group of four run llama.cpp's gemv, which is
/// also what a single-token product runs; the grouped tokens run gemm and may differ.
#[test]
fn ungrouped_tokens_equal_matvec_bitwise() {
    let mut rng = Rng::new(42);
    let (rows, cols, n) = (16, 512, 7);
    let w = random_blocks(TY, cols / 256 * rows, &mut rng, Scales::Normal);
    let x = random_acts(cols * n, &mut rng);
    let y = product(SimdLevel::active(), &w, rows, cols, &x, n);
    for t in 4..n {
        let mut yv = vec![0f32; rows];
        matvec(TY, &w, rows, cols, &x[t * cols..(t + 1) * cols], &mut yv).unwrap();
        assert_eq!(bits(&yv), bits(&y[t * rows..(t + 1) * rows]), "token {t}");
    }
}

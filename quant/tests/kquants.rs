//! Q5_K, Q3_K and Q2_K in llama.cpp's orders (see the crate's `q5k`, `q3k`, `q2k` modules):
//! every SIMD level equals the scalar reference bit for bit, for every token grouping and row
//! count.

use strata_gguf::GgmlType;
use strata_quant::{matvec, SimdLevel};

use crate::common::*;

/// Exact bits, NaN payloads included (stricter than `common::bits`).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// Row counts with and without the multiple of 8 that selects Q2_K's gemv/gemm orders, and with
/// remainders of the four-row groups; token counts 1..=9 cover every `n % 4` with and without
/// a group of four.
#[test]
fn every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(43);
    let cols = 768;
    for ty in [GgmlType::Q5_K, GgmlType::Q3_K, GgmlType::Q2_K] {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max] {
            for rows in [8, 16, 9, 12, 13] {
                let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
                for n in 1..=9 {
                    let x = random_acts(cols * n, &mut rng);
                    let want = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, n);
                    for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
                        let got = product(level, ty, &w, rows, cols, &x, n);
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{ty} {scales:?} rows {rows} n {n} {level:?}"
                        );
                    }
                }
            }
        }
    }
}

/// Q5_K and Q3_K run llama.cpp's vec_dot for every token; Q2_K with `rows % 8 == 0` runs gemv
/// for the tokens after the last group of four (and for matvec), gemm for the grouped ones,
/// which may differ.
#[test]
fn ungrouped_tokens_equal_matvec_bitwise() {
    let mut rng = Rng::new(44);
    let (cols, n) = (512, 7);
    for (ty, rows, first) in [
        (GgmlType::Q5_K, 16, 0),
        (GgmlType::Q3_K, 16, 0),
        (GgmlType::Q2_K, 12, 0),
        (GgmlType::Q2_K, 16, 4),
    ] {
        let w = random_blocks(ty, cols / 256 * rows, &mut rng, Scales::Normal);
        let x = random_acts(cols * n, &mut rng);
        let y = product(SimdLevel::active(), ty, &w, rows, cols, &x, n);
        for t in first..n {
            let mut yv = vec![0f32; rows];
            matvec(ty, &w, rows, cols, &x[t * cols..(t + 1) * cols], &mut yv).unwrap();
            assert_eq!(
                bits(&yv),
                bits(&y[t * rows..(t + 1) * rows]),
                "{ty} rows {rows} token {t}"
            );
        }
    }
}

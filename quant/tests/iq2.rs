//! IQ2_XXS, IQ2_XS and IQ2_S kernels: every available SIMD level equals the scalar reference
//! bit for bit, in the `vec_dot` order (n < 8) and the tiled order (n ≥ 8, one- and four-token
//! kernels), for row counts that are and are not multiples of 4, several column counts, random
//! blocks with every kind of f16 scale, and extreme blocks.

use strata_gguf::GgmlType;
use strata_quant::{matmul_q_with, quantize_acts, SimdLevel};

use crate::common::*;

/// The family's types.
const TYPES: [GgmlType; 3] = [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

fn product(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let acts = quantize_acts(GgmlType::Q8_K, x, n, cols).unwrap();
    let mut y = vec![0f32; rows * n];
    matmul_q_with(level, ty, w, rows, cols, &acts, &mut y).unwrap();
    y
}

/// Checks every available level against the scalar reference for one weight matrix.
fn check_levels(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize, what: &str) {
    let want = product(SimdLevel::Scalar, ty, w, rows, cols, x, n);
    for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
        let got = product(level, ty, w, rows, cols, x, n);
        assert_eq!(
            bits(&got),
            bits(&want),
            "{ty} {what} rows {rows} cols {cols} n {n} {level:?}"
        );
    }
}

/// Random blocks, every kind of scale; n = 1..3 (`vec_dot`) and 8, 9, 13 (tiled: groups of
/// four and single tokens).
#[test]
fn iq2_every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(0x1a2);
    for ty in TYPES {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
            for (rows, cols) in [(5, 256), (13, 512), (8, 768), (3, 1024)] {
                let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
                for n in [1, 2, 3, 8, 9, 13] {
                    let x = random_acts(cols * n, &mut rng);
                    check_levels(ty, &w, rows, cols, &x, n, &format!("{scales:?}"));
                }
            }
        }
    }
}

/// Extreme blocks: every quant byte 0xFF (largest grid indices, all sign bits, largest
/// scales) or 0x00, with the largest f16 scale; activations all at ±127 (every quant at the
/// end of the range), so the integer sums reach their largest magnitudes.
#[test]
fn iq2_extreme_blocks_equal_scalar_bitwise() {
    let mut rng = Rng::new(0x1a3);
    let (rows, cols) = (7, 512);
    for ty in TYPES {
        for fill in [0xFFu8, 0x00, 0x55, 0xAA] {
            let mut w = random_blocks(ty, cols / 256 * rows, &mut rng, Scales::Max);
            for b in w.chunks_exact_mut(ty.type_size()) {
                b[2..].fill(fill);
            }
            for n in [1, 8] {
                for sign in [1.0f32, -1.0] {
                    let x = vec![sign; cols * n];
                    check_levels(ty, &w, rows, cols, &x, n, &format!("fill {fill:#x} {sign}"));
                }
                let x: Vec<f32> = (0..cols * n)
                    .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
                    .collect();
                check_levels(ty, &w, rows, cols, &x, n, &format!("fill {fill:#x} mixed"));
            }
        }
    }
}

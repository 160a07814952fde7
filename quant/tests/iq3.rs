//! IQ3_XXS and IQ3_S kernels: every available SIMD level equals the scalar reference bit for
//! bit, in the `vec_dot` order (n < 8) and the tiled order (n ≥ 8, one- and four-token
//! kernels), for row counts that are and are not multiples of 4, several column counts, random
//! blocks with every kind of f16 scale, and extreme blocks.

use strata_gguf::GgmlType;

use crate::common::*;

/// The family's types.
const TYPES: [GgmlType; 2] = [GgmlType::IQ3_XXS, GgmlType::IQ3_S];

/// Random blocks, every kind of scale; n = 1..3 (`vec_dot`) and 8, 9, 13 (tiled: groups of
/// four and single tokens).
#[test]
fn iq3_every_level_equals_scalar_bitwise() {
    grid_iq_every_level(&TYPES, 0x1a3);
}

/// Extreme blocks: every quant byte 0xFF (largest grid indices, all sign bits, largest
/// scales) or 0x00 and two mixed patterns, with the largest f16 scale; activations all at
/// ±127 (every quant at the end of the range), so the integer sums reach their largest
/// magnitudes.
#[test]
fn iq3_extreme_blocks_equal_scalar_bitwise() {
    grid_iq_extreme_blocks(&TYPES, 0x1a4);
}

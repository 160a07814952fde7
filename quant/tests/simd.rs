//! Every SIMD level available on this CPU against the scalar reference.
//!
//! Tolerances: the integer part of every dot product is exact in all kernels; only the order of
//! float operations differs (per-lane accumulation, FMA). Random blocks must agree within
//! `1e-5 · Σ|w_e · x_e|` (the sum of absolute products of dequantized values; f32 summation
//! error over the few dozen block terms of a row is far below that). Integer-valued inputs
//! (unit scales, integer activations, sums below 2²⁴) make every float step exact, so there the
//! results must be bit-identical.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, quantize_acts, vec_dot_type, SimdLevel};

use crate::common::*;

fn levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| *l != SimdLevel::Scalar && l.is_available())
        .collect()
}

/// Σ|w·x| per output, from dequantized weights and activations.
fn magnitudes(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f64> {
    let dt = vec_dot_type(ty).unwrap();
    let acts = quantize_acts(dt, x, n, cols).unwrap();
    let rb = w.len() / rows;
    let mut wd = vec![0f32; cols];
    let mut xd = vec![0f32; cols];
    let mut out = vec![0f64; rows * n];
    for t in 0..n {
        dequantize(dt, acts.row(t), &mut xd).unwrap();
        for r in 0..rows {
            dequantize(ty, &w[r * rb..(r + 1) * rb], &mut wd).unwrap();
            out[t * rows + r] = wd
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
        }
    }
    out
}

#[test]
fn simd_matches_scalar_on_random_and_edge_blocks() {
    let levels = levels();
    eprintln!(
        "SIMD levels under test: {levels:?} (active: {:?})",
        SimdLevel::active()
    );
    let mut rng = Rng::new(7);
    for &ty in WEIGHT_TYPES {
        for scales in [Scales::Normal, Scales::Zero, Scales::Subnormal, Scales::Max] {
            // 9 rows: two groups of four and a remainder. 25 blocks of 32 (odd, so
            // the kernels that take blocks in pairs run their single-block tail).
            let cols = if ty.block_size() == 32 { 800 } else { 1024 };
            // 5 tokens: a group of four (the multi-token kernels) and one alone.
            let (rows, n) = (9, 5);
            let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, scales);
            let x = random_acts(cols * n, &mut rng);
            let want = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, n);
            let mag = magnitudes(ty, &w, rows, cols, &x, n);
            for &level in &levels {
                let got = product(level, ty, &w, rows, cols, &x, n);
                for i in 0..rows * n {
                    let tol = 1e-5 * mag[i];
                    assert!(
                        (got[i] as f64 - want[i] as f64).abs() <= tol,
                        "{ty} {scales:?} {level:?} output {i}: {} vs scalar {} (tol {tol})",
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// Weights with unit scales (d = dmin = 1) and integer activations whose block maximum is 127
/// (so the activation scale is exactly 1): every intermediate is an integer below 2²⁴.
#[test]
fn simd_equals_scalar_exactly_on_integer_data() {
    let levels = levels();
    let mut rng = Rng::new(8);
    for &ty in WEIGHT_TYPES {
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            continue;
        }
        let (rows, cols) = (6, if ty.block_size() == 32 { 544 } else { 512 });
        let mut w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Zero);
        for b in w.chunks_exact_mut(ty.type_size()) {
            let one = half::f16::from_f32(1.0).to_bits().to_le_bytes();
            for &off in f16_fields(ty) {
                b[off..off + 2].copy_from_slice(&one);
            }
            if matches!(ty, GgmlType::IQ1_M | GgmlType::MXFP4) {
                set_block_scale(ty, b, one);
            }
        }
        let blk = vec_dot_type(ty).unwrap().block_size();
        let x: Vec<f32> = (0..cols)
            .map(|i| {
                if i % blk == 3 {
                    127.0
                } else {
                    ((rng.u64() % 5) as i32 - 2) as f32
                }
            })
            .collect();
        let want = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, 1);
        for &level in &levels {
            let got = product(level, ty, &w, rows, cols, &x, 1);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty} {level:?}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn forced_level_never_exceeds_detected() {
    assert!(SimdLevel::active() <= SimdLevel::detected());
    if let Ok(v) = std::env::var("STRATA_SIMD")
        .map(|v| v.trim().to_string())
        .and_then(|v| {
            if v.is_empty() {
                Err(std::env::VarError::NotPresent)
            } else {
                Ok(v)
            }
        })
    {
        assert!(
            SimdLevel::active() <= SimdLevel::parse(&v).unwrap(),
            "STRATA_SIMD={v}"
        );
    }
}

/// Extreme quants: every quant byte 0xFF, 0x80 or 0x7F (largest magnitudes, −128 for Q8_0),
/// largest f16 scales, activations of alternating sign at full scale (quantized to ±127).
#[test]
fn simd_matches_scalar_on_extreme_quants() {
    let levels = levels();
    let mut rng = Rng::new(9);
    for &ty in WEIGHT_TYPES {
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            continue;
        }
        let (rows, cols, n) = (5, 512, 5);
        let mut w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Max);
        let fields = f16_fields(ty);
        for (k, b) in w.chunks_exact_mut(ty.type_size()).enumerate() {
            let fill = [0xFFu8, 0x80, 0x7F][k % 3];
            for (i, v) in b.iter_mut().enumerate() {
                if !fields.iter().any(|&o| i == o || i == o + 1) {
                    *v = fill;
                }
            }
            if matches!(ty, GgmlType::IQ1_M | GgmlType::MXFP4) {
                set_block_scale(ty, b, 0x7bffu16.to_le_bytes());
            }
        }
        let x: Vec<f32> = (0..cols * n)
            .map(|i| if i % 2 == 0 { 3.0 } else { -3.0 })
            .collect();
        let want = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, n);
        let mag = magnitudes(ty, &w, rows, cols, &x, n);
        for &level in &levels {
            let got = product(level, ty, &w, rows, cols, &x, n);
            for i in 0..rows * n {
                assert!(
                    (got[i] as f64 - want[i] as f64).abs() <= 1e-5 * mag[i]
                        && got[i].is_finite() == want[i].is_finite(),
                    "{ty} {level:?} output {i}: {} vs scalar {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
}

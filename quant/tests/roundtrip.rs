//! quantize → dequantize round trips within each format's stated error bound, and errors for
//! formats we do not compute.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, quantize, QuantError};

use crate::common::*;

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x).unwrap();
    assert_eq!(q.len() as u64, ty.row_size(x.len() as u64).unwrap());
    let mut y = vec![0f32; x.len()];
    dequantize(ty, &q, &mut y).unwrap();
    y
}

fn inputs(rng: &mut Rng) -> Vec<Vec<f32>> {
    let n = 1024;
    vec![
        (0..n).map(|_| rng.normal_ish()).collect(),
        (0..n).map(|_| rng.f32() * 1e-3 + 0.5).collect(), // positive offset
        (0..n)
            .map(|i| if i % 300 == 0 { 40.0 } else { rng.f32() })
            .collect(), // outliers
        vec![0.0; n],
        (0..n)
            .map(|i| if i < 512 { 0.0 } else { -rng.f32().abs() })
            .collect(),
    ]
}

/// Per-element bound `|x − x̂| ≤ bound(sub-block of x, whole block of x)`.
fn check(ty: GgmlType, sub: usize, bound: impl Fn(&[f32], &[f32]) -> f32) {
    let block = ty.block_size();
    let mut rng = Rng::new(ty.id() as u64);
    for (k, x) in inputs(&mut rng).iter().enumerate() {
        let y = round_trip(ty, x);
        for (b, (xb, yb)) in x.chunks(block).zip(y.chunks(block)).enumerate() {
            for (s, (xs, ys)) in xb.chunks(sub).zip(yb.chunks(sub)).enumerate() {
                let lim = bound(xs, xb) + 1e-7;
                for (i, (&a, &v)) in xs.iter().zip(ys).enumerate() {
                    assert!(
                        (a - v).abs() <= lim,
                        "{ty} input {k} block {b} sub {s} elem {i}: {a} -> {v}, bound {lim}"
                    );
                }
            }
        }
    }
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |a, v| a.max(v.abs()))
}
fn range(x: &[f32]) -> f32 {
    let mx = x.iter().fold(f32::MIN, |a, &v| a.max(v));
    let mn = x.iter().fold(f32::MAX, |a, &v| a.min(v));
    mx - mn
}
/// Relative error of rounding a scale to f16 (2⁻¹¹), which every quant level multiplies.
const H: f32 = 1.0 / 2048.0;

// Symmetric formats with d = max/−2^(b−1): the side opposite the max ends one step short, so the
// bound is one full step there, half a step elsewhere; plus the f16 rounding of d times 2^(b−1).
#[test]
fn q4_0_one_step() {
    check(GgmlType::Q4_0, 32, |x, _| amax(x) / 8.0 + amax(x) * H);
}
#[test]
fn q5_0_one_step() {
    check(GgmlType::Q5_0, 32, |x, _| amax(x) / 16.0 + amax(x) * H);
}
// Affine formats: half a step of (max − min)/levels; the f16 rounding of d and of the min.
#[test]
fn q4_1_half_step() {
    check(GgmlType::Q4_1, 32, |x, _| {
        range(x) / 15.0 / 2.0 + 2.0 * amax(x) * H
    });
}
#[test]
fn q5_1_half_step() {
    check(GgmlType::Q5_1, 32, |x, _| {
        range(x) / 31.0 / 2.0 + 2.0 * amax(x) * H
    });
}
#[test]
fn q8_0_half_step() {
    check(GgmlType::Q8_0, 32, |x, _| {
        amax(x) / 127.0 / 2.0 + amax(x) * H
    });
}
#[test]
fn q8_1_half_step() {
    check(GgmlType::Q8_1, 32, |x, _| {
        amax(x) / 127.0 / 2.0 + amax(x) * H
    });
}
#[test]
fn q8_k_half_step() {
    // d is an f32: no f16 rounding.
    check(GgmlType::Q8_K, 256, |x, _| {
        amax(x) / 127.0 / 2.0 * (1.0 + 1e-6)
    });
}
// Our K-quantizers: half a step s_j ≤ (range_j + dmin)/levels + d, where the super-block scales
// d and dmin are bounded by the whole block's amax (d ≤ (2·amax)/levels/63, dmin ≤ amax/63).
#[test]
fn q4_k_half_step() {
    check(GgmlType::Q4_K, 32, |x, blk| {
        let (dmin, d) = (
            amax(blk) / 63.0,
            (2.0 * amax(blk) + amax(blk) / 63.0) / 15.0 / 63.0,
        );
        ((range(x).max(amax(x)) + dmin) / 15.0 + d) / 2.0 * (1.0 + 4.0 * H)
    });
}
#[test]
fn q5_k_half_step() {
    check(GgmlType::Q5_K, 32, |x, blk| {
        let (dmin, d) = (
            amax(blk) / 63.0,
            (2.0 * amax(blk) + amax(blk) / 63.0) / 31.0 / 63.0,
        );
        ((range(x).max(amax(x)) + dmin) / 31.0 + d) / 2.0 * (1.0 + 4.0 * H)
    });
}
#[test]
fn q6_k_half_step() {
    check(GgmlType::Q6_K, 16, |x, blk| {
        (amax(x) / 31.0 + amax(blk) / 31.0 / 127.0) / 2.0 * (1.0 + 4.0 * H)
    });
}
#[test]
fn float_formats() {
    check(GgmlType::F32, 1, |_, _| 0.0);
    check(GgmlType::F16, 1, |x, _| amax(x) * H);
    check(GgmlType::BF16, 1, |x, _| amax(x) / 256.0);
}

#[test]
fn unsupported_formats_are_named() {
    for ty in [GgmlType::NVFP4, GgmlType::Q1_0] {
        let n = ty.block_size() * 2;
        let bytes = vec![0u8; ty.type_size() * 2];
        let mut out = vec![0f32; n];
        let err = dequantize(ty, &bytes, &mut out).unwrap_err();
        assert_eq!(
            err,
            QuantError::Unsupported {
                ty,
                op: "dequantize"
            }
        );
        assert!(err.to_string().contains(ty.name()), "{err}");
        assert!(matches!(
            quantize(ty, &vec![0f32; n]),
            Err(QuantError::Unsupported { .. })
        ));
    }
    assert!(matches!(
        quantize(GgmlType::Q2_K, &[0f32; 256]),
        Err(QuantError::Unsupported {
            ty: GgmlType::Q2_K,
            ..
        })
    ));
}

//! TQ1_0 and TQ2_0: every SIMD level equals the scalar oracle (llama.cpp's `vec_dot` order,
//! which it uses for every batch size) bit for bit, for row counts that are not multiples of
//! four, several row lengths, batches of one and of several tokens, random and extreme blocks;
//! and the oracles agree with the dequantized weights.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, matmul_q_with, quantize_acts, SimdLevel};

use crate::common::*;

const TYPES: [GgmlType; 2] = [GgmlType::TQ1_0, GgmlType::TQ2_0];

/// Bits of each output, all NaNs read as one (their payloads are not part of the contract).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

/// `ty` weights `w` (`rows × cols`) times `n` tokens `x` at `level`.
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

/// Checks every available level against the scalar oracle for `w` and `n` tokens.
fn check(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], n: usize, what: &str) {
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

/// Random blocks (every byte drawn, so TQ1_0 bytes above 242 and TQ2_0 code 3 occur too), all
/// kinds of f16 scales, batches below and above 8 tokens.
#[test]
fn every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(0x7a1);
    for ty in TYPES {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
            for (rows, cols) in [(1, 256), (3, 512), (5, 1280), (13, 768), (2, 256 * 33)] {
                let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
                for n in [1, 2, 3, 8, 9] {
                    let x = random_acts(cols * n, &mut rng);
                    check(ty, &w, rows, cols, &x, n, &format!("{scales:?}"));
                }
            }
        }
    }
}

/// Blocks of constant bytes (0x00: every trit/code 0; 0xFF: TQ1_0's largest byte, TQ2_0's
/// code 3 everywhere; 0xAA, 0x55, 0xF2 = 242, the largest valid TQ1_0 byte) with fixed f16
/// scales, and activations of one sign and of extreme size.
#[test]
fn extreme_blocks_equal_scalar_bitwise() {
    let (rows, cols) = (7, 512);
    for ty in TYPES {
        let d_at = f16_fields(ty)[0];
        for fill in [0x00u8, 0xff, 0xaa, 0x55, 0xf2, 0x79] {
            for d in [0x3c00u16, 0x7bff, 0xfbff, 0x0001] {
                let mut w = vec![fill; ty.row_size(cols as u64).unwrap() as usize * rows];
                for b in w.chunks_exact_mut(ty.type_size()) {
                    b[d_at..d_at + 2].copy_from_slice(&d.to_le_bytes());
                }
                let acts: [Box<dyn Fn(usize) -> f32>; 4] = [
                    Box::new(|i| if i % 3 == 0 { -1.0 } else { -0.25 }),
                    Box::new(|i| if i % 2 == 0 { 1e30 } else { -1e30 }),
                    Box::new(|_| 0.5),
                    Box::new(|_| -3.0),
                ];
                for (k, act) in acts.iter().enumerate() {
                    for n in [1, 8] {
                        let x: Vec<f32> = (0..cols * n).map(act).collect();
                        let what = format!("fill {fill:#x} d {d:#x} acts {k}");
                        check(ty, &w, rows, cols, &x, n, &what);
                    }
                }
            }
        }
    }
}

/// The oracles agree with a plain f64 dot product of the dequantized weights and activations
/// up to rounding (the formats' meaning, independent of float order). The activations are
/// integers in −127..=127 with a −127 in every block, so their Q8_K quants are exact (`d = 1`).
#[test]
fn oracles_match_dequantized_dot() {
    let mut rng = Rng::new(0x7a2);
    let (rows, cols) = (4, 1024);
    for ty in TYPES {
        let w = random_blocks(ty, cols / 256 * rows, &mut rng, Scales::Normal);
        let mut wf = vec![0f32; rows * cols];
        dequantize(ty, &w, &mut wf).unwrap();
        for n in [1, 8] {
            let x: Vec<f32> = (0..cols * n)
                .map(|i| {
                    if i % 256 == 3 {
                        -127.0
                    } else {
                        ((rng.u64() % 255) as i32 - 127) as f32
                    }
                })
                .collect();
            let y = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, n);
            for t in 0..n {
                for r in 0..rows {
                    let terms = (0..cols).map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64);
                    let exact: f64 = terms.clone().sum();
                    let scale: f64 = terms.map(f64::abs).sum();
                    let got = y[t * rows + r] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-5 * scale + 1e-6,
                        "{ty} n {n} row {r} token {t}: {got} vs {exact}"
                    );
                }
            }
        }
    }
}

/// Rough speed of the one-token kernels (run by hand, one thread:
/// `RAYON_NUM_THREADS=1 cargo test --release -p strata-quant --test tests tq::speed --
/// --ignored --nocapture`): ns per block with the weights hot in cache (best of several
/// trials; the machine may be shared).
#[test]
#[ignore]
fn speed() {
    use std::time::Instant;
    let mut rng = Rng::new(0x7a3);
    let (rows, cols) = (256, 4096);
    let nb = cols / 256;
    let x = quantize_acts(GgmlType::Q8_K, &random_acts(cols, &mut rng), 1, cols).unwrap();
    let mut y = vec![0f32; rows];
    for ty in TYPES {
        let w = random_blocks(ty, nb * rows, &mut rng, Scales::Normal);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
            let reps = 20;
            let ns = (0..20)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        strata_quant::matvec_q_with(level, ty, &w, rows, cols, &x, &mut y).unwrap();
                    }
                    t.elapsed().as_nanos() as f64
                })
                .fold(f64::INFINITY, f64::min)
                / (reps * rows * nb) as f64;
            println!("{ty} hot {level:?}: {ns:.2} ns/block");
        }
    }
}

//! TQ1_0 and TQ2_0: every SIMD level equals the scalar oracle (llama.cpp's `vec_dot` order,
//! which it uses for every batch size) bit for bit, for row counts that are not multiples of
//! four, several row lengths, batches of one and of several tokens, random and extreme blocks;
//! and the oracles agree with the dequantized weights.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, quantize_acts, SimdLevel};

use crate::common::*;

const TYPES: [GgmlType; 2] = [GgmlType::TQ1_0, GgmlType::TQ2_0];

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
                    check_levels(ty, &w, rows, cols, &x, n, &format!("{scales:?}"));
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
                for (k, act) in EXTREME_ACTS.iter().enumerate() {
                    for n in [1, 8] {
                        let x: Vec<f32> = (0..cols * n).map(act).collect();
                        let what = format!("fill {fill:#x} d {d:#x} acts {k}");
                        check_levels(ty, &w, rows, cols, &x, n, &what);
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
            let x = integer_acts(cols * n, 256, 3, &mut rng);
            let y = product(SimdLevel::Scalar, ty, &w, rows, cols, &x, n);
            assert_near_f64_dot(
                &wf,
                &x,
                &y,
                (rows, cols),
                (1e-5, 1e-6),
                &format!("{ty} n {n}"),
            );
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

//! MXFP4: every SIMD level equals the scalar oracle bit for bit in both of llama.cpp's orders
//! (`vec_dot` for row counts that are not a multiple of 8, the repacked `mxfp4_8x8_q8_0` order
//! for the others, whatever the batch size), for odd and even block counts, batches of one and
//! of several tokens, every exponent byte and extreme blocks; and the oracles agree with the
//! dequantized weights.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, quantize_acts, SimdLevel};

use crate::common::*;

const TY: GgmlType = GgmlType::MXFP4;
/// Bytes per block: the exponent, then 16 bytes of codes.
const BLOCK: usize = 17;

/// A draw of an exponent byte.
type Draw = fn(&mut Rng) -> u8;

/// `n_blocks` random blocks whose exponents are drawn by `e`.
fn blocks(n_blocks: usize, rng: &mut Rng, e: impl Fn(&mut Rng) -> u8) -> Vec<u8> {
    let mut w = random_blocks(TY, n_blocks, rng, Scales::Normal);
    for b in w.chunks_exact_mut(BLOCK) {
        b[0] = e(rng);
    }
    w
}

/// Row counts not a multiple of 8 (`vec_dot`) and multiples of 8 (repacked: 8, 16 and 24 rows
/// meet the AVX-512 kernel's 16-row groups and its 8-row remainder), odd and even block counts,
/// batches of 1 to 9 tokens (the repacked order's groups of four and the rest), exponents near
/// 127 and anywhere in 0..=255 (products overflowing to ±inf or NaN included).
#[test]
fn every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(0x3f4);
    let exps: [(&str, Draw); 2] = [("normal", |r| 118 + r.u8() % 16), ("any", |r| r.u8())];
    for (what, e) in exps {
        for rows in [1, 3, 5, 13, 8, 16, 24, 40] {
            for cols in [32, 96, 512, 1056] {
                let w = blocks(cols / 32 * rows, &mut rng, e);
                for n in [1, 2, 4, 5, 8, 9] {
                    let x = random_acts(cols * n, &mut rng);
                    check_levels(TY, &w, rows, cols, &x, n, what);
                }
            }
        }
    }
}

/// Blocks of constant code bytes (0x00: all +0; 0x88: all −0; 0x77 and 0xFF: ±12, the largest
/// magnitudes; 0x7F: +12 and −12) with each exponent from 0 to 255, and activations of one sign
/// and of extreme size.
#[test]
fn extreme_blocks_equal_scalar_bitwise() {
    for rows in [7, 8] {
        let cols = 96;
        for fill in [0x00u8, 0x88, 0x77, 0xff, 0x7f, 0x19] {
            for e0 in (0..=255u8)
                .step_by(17)
                .chain([1, 2, 126, 127, 128, 254, 255])
            {
                let mut w = vec![fill; cols / 32 * BLOCK * rows];
                for (k, b) in w.chunks_exact_mut(BLOCK).enumerate() {
                    b[0] = e0.wrapping_add(k as u8 % 3);
                }
                for (k, act) in EXTREME_ACTS.iter().enumerate() {
                    for n in [1, 5] {
                        let x: Vec<f32> = (0..cols * n).map(act).collect();
                        let what = format!("fill {fill:#x} e {e0} acts {k}");
                        check_levels(TY, &w, rows, cols, &x, n, &what);
                    }
                }
            }
        }
    }
}

/// The oracles (both orders: 4 and 8 rows) agree with a plain f64 dot product of the
/// dequantized weights and activations up to rounding. The activations are integers in
/// −127..=127 with a −127 in every block, so their Q8_0 quants are exact (`d = 1`).
#[test]
fn oracles_match_dequantized_dot() {
    let mut rng = Rng::new(0x3f5);
    let cols = 1056;
    for rows in [4, 8] {
        let w = blocks(cols / 32 * rows, &mut rng, |r| 120 + r.u8() % 12);
        let mut wf = vec![0f32; rows * cols];
        dequantize(TY, &w, &mut wf).unwrap();
        for n in [1, 5] {
            let x = integer_acts(cols * n, 32, 3, &mut rng);
            let y = product(SimdLevel::Scalar, TY, &w, rows, cols, &x, n);
            assert_near_f64_dot(
                &wf,
                &x,
                &y,
                (rows, cols),
                (1e-5, 1e-6),
                &format!("rows {rows} n {n}"),
            );
        }
    }
}

/// The `vec_dot` order's last block of an odd count (`sum + scale · isum`, two roundings) with
/// products that do not fit in 24 bits: activations of magnitude 64..=127 in their Q8_0 quants
/// and an amax whose f16 `d_x` has a full mantissa, weights ±3 with the sign of the first
/// token's activation (so `isum = 3 · Σ|y|`, about 14 bits), three blocks per row.
#[test]
fn odd_last_block_rounds_twice() {
    let mut rng = Rng::new(0x3f6);
    let (rows, cols) = (61, 96);
    for n in [1, 3] {
        let x: Vec<f32> = (0..cols * n)
            .map(|i| {
                let m = if i % 32 == 0 {
                    1.0
                } else {
                    0.5 + 0.25 * (rng.f32() + 1.0)
                };
                if rng.u8() & 1 == 0 {
                    1.9837 * m
                } else {
                    -1.9837 * m
                }
            })
            .collect();
        let mut w = blocks(cols / 32 * rows, &mut rng, |r| 125 + r.u8() % 6);
        for (k, b) in w.chunks_exact_mut(BLOCK).enumerate() {
            let xb = &x[(k % (cols / 32)) * 32..][..32];
            let code = |v: f32| if v >= 0.0 { 3u8 } else { 11 };
            for j in 0..16 {
                b[1 + j] = code(xb[j]) | (code(xb[16 + j]) << 4);
            }
        }
        check_levels(TY, &w, rows, cols, &x, n, "odd last block");
    }
}

/// Rough speed of the one-token kernels in both orders (run by hand, one thread:
/// `RAYON_NUM_THREADS=1 cargo test --release -p strata-quant --test tests mxfp4::speed --
/// --ignored --nocapture`): ns per block with the weights hot in cache (best of several
/// trials; the machine may be shared), for 255 rows (`vec_dot`) and 256 (repacked).
#[test]
#[ignore]
fn speed() {
    use std::time::Instant;
    let mut rng = Rng::new(0x3f7);
    let cols = 4096;
    let nb = cols / 32;
    let x = quantize_acts(GgmlType::Q8_0, &random_acts(cols, &mut rng), 1, cols).unwrap();
    let mut y = vec![0f32; 256];
    for rows in [255, 256] {
        let w = blocks(nb * rows, &mut rng, |r| 118 + r.u8() % 16);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_available()) {
            let reps = 20;
            let ns = (0..20)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        strata_quant::matvec_q_with(level, TY, &w, rows, cols, &x, &mut y[..rows])
                            .unwrap();
                    }
                    t.elapsed().as_nanos() as f64
                })
                .fold(f64::INFINITY, f64::min)
                / (reps * rows * nb) as f64;
            println!("MXFP4 {rows} rows hot {level:?}: {ns:.2} ns/block");
        }
    }
}

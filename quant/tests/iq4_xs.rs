//! IQ4_XS: every SIMD level equals the scalar oracle bit for bit, in both of llama.cpp's orders
//! (`vec_dot` for fewer than 8 tokens, tiled from 8), for row counts that are not multiples of
//! four, several row lengths (odd block counts, rows longer than the AVX-512 kernel's 64-block
//! segments), random and extreme blocks; and the oracles agree with the dequantized weights.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, matmul_q_with, quantize_acts, SimdLevel};

use crate::common::*;

const TY: GgmlType = GgmlType::IQ4_XS;

/// Token counts below 8 take `vec_dot`, from 8 the tiled order (with and without a group of
/// four tokens left over).
#[test]
fn every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(0x4a5);
    for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
        for (rows, cols) in [(1, 256), (3, 512), (5, 1280), (13, 768), (6, 256 * 67)] {
            let w = random_blocks(TY, cols / 256 * rows, &mut rng, scales);
            for n in [1, 2, 3, 7, 8, 9, 12, 13] {
                let x = random_acts(cols * n, &mut rng);
                check_levels(TY, &w, rows, cols, &x, n, &format!("{scales:?}"));
            }
        }
    }
}

/// Blocks of constant bytes (0xFF: every index 15 and every scale 63; 0x00: index 0, the most
/// negative value, and scale −32; mixed nibbles) with a fixed f16 scale, and activations of
/// one sign and of extreme size.
#[test]
fn extreme_blocks_equal_scalar_bitwise() {
    let (rows, cols) = (7, 512);
    for fill in [0x00u8, 0xff, 0x0f, 0xf0, 0x88, 0x77] {
        for d in [0x3c00u16, 0x7bff, 0x0001] {
            let mut w = vec![fill; TY.row_size(cols as u64).unwrap() as usize * rows];
            for b in w.chunks_exact_mut(TY.type_size()) {
                b[..2].copy_from_slice(&d.to_le_bytes());
            }
            for (k, act) in EXTREME_ACTS.iter().enumerate() {
                for n in [1, 8] {
                    let x: Vec<f32> = (0..cols * n).map(act).collect();
                    check_levels(
                        TY,
                        &w,
                        rows,
                        cols,
                        &x,
                        n,
                        &format!("fill {fill:#x} d {d:#x} acts {k}"),
                    );
                }
            }
        }
    }
}

/// The oracles agree with a plain f64 dot product of the dequantized weights and activations
/// up to rounding (the format's meaning, independent of float order), in both orders. The
/// activations are integers in −127..=127 with a −127 in every block, so their Q8_K quants are
/// exact (`d = 1`).
#[test]
fn oracles_match_dequantized_dot() {
    let mut rng = Rng::new(0x4a6);
    let (rows, cols) = (4, 1024);
    let w = random_blocks(TY, cols / 256 * rows, &mut rng, Scales::Normal);
    let mut wf = vec![0f32; rows * cols];
    dequantize(TY, &w, &mut wf).unwrap();
    for n in [1, 8] {
        let x = integer_acts(cols * n, 256, 3, &mut rng);
        let y = product(SimdLevel::Scalar, TY, &w, rows, cols, &x, n);
        assert_near_f64_dot(&wf, &x, &y, (rows, cols), (1e-5, 1e-6), &format!("n {n}"));
    }
}

/// Rough speed of the one-token kernels (run by hand, one thread:
/// `RAYON_NUM_THREADS=1 cargo test --release -p strata-quant --test tests iq4_xs::speed --
/// --ignored --nocapture`): ns per block with the weights in L2 (hot) and from DRAM (four
/// 8192 × 8192 matrices in turn, 142 MB), against a plain read of the same bytes. Each figure
/// is the best of several trials (the machine may be shared).
#[test]
#[ignore]
fn speed() {
    use std::time::Instant;
    let best = |trials: usize, f: &mut dyn FnMut()| {
        (0..trials)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mut rng = Rng::new(0x4a7);
    let cols = 8192;
    let nb = cols / 256;
    let x = quantize_acts(GgmlType::Q8_K, &random_acts(cols, &mut rng), 1, cols).unwrap();
    let levels: Vec<SimdLevel> = [SimdLevel::Avx2, SimdLevel::Avx512]
        .into_iter()
        .filter(|l| l.is_available())
        .collect();
    let hot_rows = 48;
    let hot = random_blocks(TY, nb * hot_rows, &mut rng, Scales::Normal);
    let mut y = vec![0f32; 8192];
    for &level in &levels {
        let reps = 100;
        let ns = best(50, &mut || {
            for _ in 0..reps {
                strata_quant::matvec_q_with(
                    level,
                    TY,
                    &hot,
                    hot_rows,
                    cols,
                    &x,
                    &mut y[..hot_rows],
                )
                .unwrap();
            }
        }) / (reps * hot_rows * nb) as f64;
        println!(
            "IQ4_XS hot {level:?}: {ns:.2} ns/block, {:.1} GB/s",
            136.0 / ns
        );
    }
    let n = 16;
    let xs = quantize_acts(GgmlType::Q8_K, &random_acts(cols * n, &mut rng), n, cols).unwrap();
    let mut ys = vec![0f32; hot_rows * n];
    for level in [SimdLevel::Scalar]
        .into_iter()
        .chain(levels.iter().copied())
    {
        let ns = best(5, &mut || {
            matmul_q_with(level, TY, &hot, hot_rows, cols, &xs, &mut ys).unwrap();
        }) / (hot_rows * nb * n) as f64;
        println!("IQ4_XS tiled (n = {n}) hot {level:?}: {ns:.2} ns per block and token");
    }
    let mats: Vec<Vec<u8>> = (0..4)
        .map(|_| random_blocks(TY, nb * 8192, &mut rng, Scales::Normal))
        .collect();
    let bytes = mats[0].len() as f64;
    let mut s = 0u64;
    let read = 4.0 * bytes
        / best(5, &mut || {
            for m in &mats {
                s = s.wrapping_add(
                    m.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                        .fold(0u64, |a, v| a ^ v),
                );
            }
        });
    println!("plain read: {read:.1} GB/s ({s:x})");
    for &level in &levels {
        let ns = best(5, &mut || {
            for m in &mats {
                strata_quant::matvec_q_with(level, TY, m, 8192, cols, &x, &mut y).unwrap();
            }
        }) / (4 * 8192 * nb) as f64;
        let gbs = 136.0 / ns;
        println!(
            "IQ4_XS DRAM {level:?}: {ns:.2} ns/block, {gbs:.1} GB/s = {:.0}% of the plain read",
            100.0 * gbs / read
        );
    }
}

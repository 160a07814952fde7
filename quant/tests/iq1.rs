//! IQ1_S and IQ1_M: every SIMD level equals the scalar oracle bit for bit, in both of
//! llama.cpp's orders (`vec_dot` for fewer than 8 tokens, tiled from 8), for row counts that
//! are not multiples of four, several row lengths, random and extreme blocks.

use strata_gguf::GgmlType;
use strata_quant::{dequantize, SimdLevel};

use crate::common::*;

const TYPES: [GgmlType; 2] = [GgmlType::IQ1_S, GgmlType::IQ1_M];

/// Sets the f16 scale of every IQ1_M block (bytes 48..56: four u16 words whose top nibbles
/// hold the scale, word 0's the lowest) to a value drawn as `scales` asks.
fn set_iq1m_scales(w: &mut [u8], rng: &mut Rng, scales: Scales) {
    for b in w.chunks_exact_mut(56) {
        let mut tmp = random_blocks(GgmlType::IQ1_S, 1, rng, scales);
        let h = u16::from_le_bytes([tmp[0], tmp[1]]);
        tmp.clear();
        for k in 0..4 {
            let o = 48 + 2 * k;
            let word = u16::from_le_bytes([b[o], b[o + 1]]);
            let word = (word & 0x0fff) | (((h >> (4 * k)) & 0xf) << 12);
            b[o..o + 2].copy_from_slice(&word.to_le_bytes());
        }
    }
}

/// Random blocks of `ty` with f16 scales as `scales` asks.
fn blocks(ty: GgmlType, n: usize, rng: &mut Rng, scales: Scales) -> Vec<u8> {
    let mut w = random_blocks(ty, n, rng, scales);
    if ty == GgmlType::IQ1_M {
        set_iq1m_scales(&mut w, rng, scales);
    }
    w
}

/// Token counts below 8 take `vec_dot`, from 8 the tiled order (with and without a group of
/// four tokens left over).
#[test]
fn every_level_equals_scalar_bitwise() {
    let mut rng = Rng::new(0x1a1);
    for ty in TYPES {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
            for (rows, cols) in [(1, 256), (3, 512), (5, 1280), (13, 768)] {
                let w = blocks(ty, cols / 256 * rows, &mut rng, scales);
                for n in [1, 2, 3, 7, 8, 9, 12, 13] {
                    let x = random_acts(cols * n, &mut rng);
                    check_levels(ty, &w, rows, cols, &x, n, &format!("{scales:?}"));
                }
            }
        }
    }
}

/// Blocks of all-0x00 and all-0xFF bytes (largest indices, scales, every `δ` negative), with
/// the f16 scale set afterwards, and activations of one sign and of extreme size.
#[test]
fn extreme_blocks_equal_scalar_bitwise() {
    let mut rng = Rng::new(0x1a2);
    let (rows, cols) = (6, 512);
    for ty in TYPES {
        for fill in [0x00u8, 0xff, 0x55, 0xaa] {
            let mut w = vec![fill; ty.row_size(cols as u64).unwrap() as usize * rows];
            let ts = ty.type_size();
            for b in w.chunks_exact_mut(ts) {
                if ty == GgmlType::IQ1_S {
                    b[..2].copy_from_slice(&0x3c00u16.to_le_bytes()); // 1.0
                }
            }
            if ty == GgmlType::IQ1_M {
                set_iq1m_scales(&mut w, &mut rng, Scales::Max);
            }
            for (k, act) in EXTREME_ACTS[..3].iter().enumerate() {
                for n in [1, 8] {
                    let x: Vec<f32> = (0..cols * n).map(act).collect();
                    check_levels(
                        ty,
                        &w,
                        rows,
                        cols,
                        &x,
                        n,
                        &format!("fill {fill:#x} acts {k}"),
                    );
                }
            }
        }
    }
}

/// The oracles agree with a plain f64 dot product of the dequantized weights and activations
/// up to rounding (a check of the formats' meaning that does not depend on float order), in
/// both orders. The activations are integers in −127..=127 with a −127 in every block, so
/// their Q8_K quants are exact (`d = 1`).
#[test]
fn oracles_match_dequantized_dot() {
    let mut rng = Rng::new(0x1a3);
    let (rows, cols) = (4, 1024);
    for ty in TYPES {
        let w = blocks(ty, cols / 256 * rows, &mut rng, Scales::Normal);
        let mut wf = vec![0f32; rows * cols];
        dequantize(ty, &w, &mut wf).unwrap();
        let n = 9;
        let x = integer_acts(cols * n, 256, 0, &mut rng);
        for (tokens, tol) in [(n, 1e-5), (1, 1e-5)] {
            let got = product(
                SimdLevel::Scalar,
                ty,
                &w,
                rows,
                cols,
                &x[..cols * tokens],
                tokens,
            );
            assert_near_f64_dot(
                &wf,
                &x,
                &got,
                (rows, cols),
                (tol, 0.0),
                &format!("{ty} tokens {tokens}"),
            );
        }
    }
}

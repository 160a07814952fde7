//! matvec / matmul against an f64 reference built from dequantized weights and activations.

use strata_gguf::GgmlType;
use strata_quant::{
    dequantize, matmul, matmul_q, matmul_q_id, matvec, matvec_q, quantize_acts, vec_dot_type,
    QuantError,
};

use crate::common::*;

/// Reference: Σ dequant(W[r]) · dequant(quant(x)) in f64, and Σ |terms| for the tolerance.
fn reference(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<(f64, f64)> {
    let dt = vec_dot_type(ty).unwrap();
    let acts = quantize_acts(dt, x, 1, cols).unwrap();
    let mut xd = vec![0f32; cols];
    dequantize(dt, acts.row(0), &mut xd).unwrap();
    let rb = w.len() / rows;
    let mut wd = vec![0f32; cols];
    (0..rows)
        .map(|r| {
            dequantize(ty, &w[r * rb..(r + 1) * rb], &mut wd).unwrap();
            let s: f64 = wd.iter().zip(&xd).map(|(&a, &b)| a as f64 * b as f64).sum();
            let m: f64 = wd
                .iter()
                .zip(&xd)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            (s, m)
        })
        .collect()
}

#[test]
fn matvec_matches_dequantized_reference_for_every_format() {
    let mut rng = Rng::new(1);
    for &ty in WEIGHT_TYPES {
        let (rows, cols) = (37, 512);
        let nb = cols / ty.block_size() * rows;
        let w = random_blocks(ty, nb, &mut rng, Scales::Normal);
        let x = random_acts(cols, &mut rng);
        let mut y = vec![0f32; rows];
        matvec(ty, &w, rows, cols, &x, &mut y).unwrap();
        for (r, (&got, (want, mag))) in y.iter().zip(reference(ty, &w, rows, cols, &x)).enumerate()
        {
            let tol = 1e-5 * mag + 1e-30;
            assert!(
                (got as f64 - want).abs() <= tol,
                "{ty} row {r}: got {got}, want {want} (|terms| {mag})"
            );
        }
    }
}

/// Holds where llama.cpp runs one token and the batch with the same kernel, as for these shapes
/// (5 tokens: below Q6_K's tiled matmul; 70 rows: not a multiple of 8, so Q4_K is not repacked,
/// and a shape F16's tinyBLAS refuses). Elsewhere a batch may differ in the last bits (see
/// `exact.rs` and `q4k.rs`).
#[test]
fn matmul_rows_equal_matvec_bitwise() {
    let mut rng = Rng::new(2);
    for &ty in WEIGHT_TYPES {
        if ty == GgmlType::IQ4_NL {
            continue; // a batch takes tinyBLAS's lanes, one token `vec_dot`'s (see `exact_q0.rs`)
        }
        let (rows, cols, n) = (70, 768, 5);
        let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Normal);
        let x = random_acts(cols * n, &mut rng);
        let mut y = vec![0f32; rows * n];
        matmul(ty, &w, rows, cols, &x, n, &mut y).unwrap();
        for t in 0..n {
            let mut yv = vec![0f32; rows];
            matvec(ty, &w, rows, cols, &x[t * cols..(t + 1) * cols], &mut yv).unwrap();
            assert_eq!(
                yv.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y[t * rows..(t + 1) * rows]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                "{ty} token {t}"
            );
        }
    }
}

/// `matmul_q_id` (llama.cpp's `MUL_MAT_ID` for one expert) gives every routed row the bits of
/// the one-token product, except for the K-quant matrices llama.cpp does not repack when 8 or
/// more rows are routed to the expert: those get the batch product's (tiled) bits.
#[test]
fn expert_product_takes_mul_mat_id_kernels() {
    let mut rng = Rng::new(3);
    for &ty in WEIGHT_TYPES {
        // 72 rows: repacked where llama.cpp repacks; 68: never repacked.
        for rows in [72, 68] {
            let cols = 512;
            let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Normal);
            let n_acts = 12;
            let x = random_acts(cols * n_acts, &mut rng);
            let acts = quantize_acts(vec_dot_type(ty).unwrap(), &x, n_acts, cols).unwrap();
            for ids in [
                vec![3usize],
                vec![0, 5, 7],
                (0..10).rev().collect::<Vec<_>>(),
            ] {
                let mut y = vec![0f32; rows * ids.len()];
                matmul_q_id(ty, &w, rows, cols, &acts, &ids, &mut y).unwrap();
                let tiled = matches!(
                    ty,
                    GgmlType::Q2_K
                        | GgmlType::Q3_K
                        | GgmlType::Q4_K
                        | GgmlType::Q5_K
                        | GgmlType::Q6_K
                        | GgmlType::IQ4_XS
                        | GgmlType::IQ2_XXS
                        | GgmlType::IQ2_XS
                        | GgmlType::IQ2_S
                        | GgmlType::IQ3_XXS
                        | GgmlType::IQ3_S
                        | GgmlType::IQ1_S
                        | GgmlType::IQ1_M
                ) && !(matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K) && rows % 8 == 0)
                    && ids.len() >= 8;
                let gathered: Vec<f32> = ids
                    .iter()
                    .flat_map(|&t| x[t * cols..(t + 1) * cols].iter().copied())
                    .collect();
                let g =
                    quantize_acts(vec_dot_type(ty).unwrap(), &gathered, ids.len(), cols).unwrap();
                let mut want = vec![0f32; rows * ids.len()];
                if tiled {
                    matmul_q(ty, &w, rows, cols, &g, &mut want).unwrap();
                } else {
                    for (i, &t) in ids.iter().enumerate() {
                        let one = quantize_acts(
                            vec_dot_type(ty).unwrap(),
                            &x[t * cols..(t + 1) * cols],
                            1,
                            cols,
                        )
                        .unwrap();
                        matvec_q(
                            ty,
                            &w,
                            rows,
                            cols,
                            &one,
                            &mut want[i * rows..(i + 1) * rows],
                        )
                        .unwrap();
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want), "{ty} rows {rows} ids {ids:?}");
            }
            let mut y = vec![0f32; rows];
            assert!(matmul_q_id(ty, &w, rows, cols, &acts, &[n_acts], &mut y).is_err());
        }
    }
}

#[cfg(feature = "rayon")]
#[test]
fn results_identical_for_any_thread_count() {
    let mut rng = Rng::new(3);
    for &ty in &[
        GgmlType::Q4_K,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
        GgmlType::F32,
    ] {
        let (rows, cols, n) = (1000, 1024, 3);
        let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Normal);
        let x = random_acts(cols * n, &mut rng);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![0f32; rows * n];
            pool.install(|| matmul(ty, &w, rows, cols, &x, n, &mut y))
                .unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert_eq!(one, run(threads), "{ty} with {threads} threads");
        }
    }
}

/// A group of one-token products of different types and sizes (some too small to split on their
/// own) run as one loop: every output equals `vec_dot` of its row (a separate path), with one
/// thread and with a spinning team of three.
#[cfg(feature = "rayon")]
#[test]
fn matvec_group_equals_vec_dot_rows() {
    let mut rng = Rng::new(5);
    let cols = 768;
    let x = random_acts(cols, &mut rng);
    let shapes = [
        (GgmlType::Q5_0, 1024),
        (GgmlType::Q5_0, 256),
        (GgmlType::Q6_K, 264),
        (GgmlType::Q8_0, 2049),
        (GgmlType::Q4_K, 3),
    ];
    let products: Vec<_> = shapes
        .iter()
        .map(|&(ty, rows)| {
            let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Normal);
            let acts = quantize_acts(vec_dot_type(ty).unwrap(), &x, 1, cols).unwrap();
            (ty, rows, w, acts)
        })
        .collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&(_, rows)| vec![0f32; rows]).collect();
        pool.install(|| {
            strata_quant::with_team(|| {
                let mut group: Vec<_> = products
                    .iter()
                    .zip(ys.iter_mut())
                    .map(|((ty, rows, w, acts), y)| {
                        strata_quant::Matvec::new(*ty, w, *rows, cols, acts, y).unwrap()
                    })
                    .collect();
                strata_quant::matvec_q_many(&mut group);
            })
        });
        ys
    };
    for threads in [1, 3] {
        let ys = run(threads);
        for ((ty, rows, w, acts), y) in products.iter().zip(&ys) {
            let rb = w.len() / rows;
            for (r, got) in y.iter().enumerate() {
                let want = strata_quant::vec_dot(*ty, &w[r * rb..(r + 1) * rb], acts, 0).unwrap();
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} row {r} of {rows}, {threads} threads"
                );
            }
        }
    }
}

#[test]
fn shape_and_type_errors() {
    let w = vec![0u8; 144 * 2];
    let mut y = vec![0f32; 2];
    let x = vec![0f32; 256];
    assert!(matches!(
        matvec(GgmlType::Q4_K, &w, 2, 255, &x, &mut y),
        Err(QuantError::BadLength { .. }) | Err(QuantError::SizeMismatch { .. })
    ));
    assert!(matches!(
        matvec(GgmlType::Q4_K, &w[1..], 2, 256, &x, &mut y),
        Err(QuantError::SizeMismatch { .. })
    ));
    assert!(matches!(
        matvec(GgmlType::Q1_0, &w[..72], 2, 256, &x, &mut y),
        Err(QuantError::Unsupported {
            ty: GgmlType::Q1_0,
            ..
        })
    ));
    let acts = quantize_acts(GgmlType::Q8_0, &x, 1, 256).unwrap();
    assert!(matches!(
        strata_quant::matvec_q(GgmlType::Q4_K, &w, 2, 256, &acts, &mut y),
        Err(QuantError::ActsType { .. })
    ));
}

#[test]
fn vec_dot_equals_matvec_rows() {
    let mut rng = Rng::new(4);
    for &ty in WEIGHT_TYPES {
        let (rows, cols) = (6, 512);
        let w = random_blocks(ty, cols / ty.block_size() * rows, &mut rng, Scales::Normal);
        let x = random_acts(cols, &mut rng);
        let acts = quantize_acts(vec_dot_type(ty).unwrap(), &x, 1, cols).unwrap();
        let mut y = vec![0f32; rows];
        strata_quant::matvec_q(ty, &w, rows, cols, &acts, &mut y).unwrap();
        let rb = w.len() / rows;
        for r in 0..rows {
            let d = strata_quant::vec_dot(ty, &w[r * rb..(r + 1) * rb], &acts, 0).unwrap();
            assert_eq!(d.to_bits(), y[r].to_bits(), "{ty} row {r}");
        }
        assert!(strata_quant::vec_dot(ty, &w[..rb], &acts, 1).is_err());
    }
}

/// Regression: activations are quantized the way llama.cpp's x86 backend does at run time
/// (`x · 127/amax`, ties to even), not with the reference rounding (ties away from zero), or
/// the engine's logits drift from llama.cpp's.
#[test]
fn q8_0_activations_round_ties_to_even_like_llama_cpp_x86() {
    // amax = 127 makes the multiplier exactly 1, so 2.5 and -3.5 are exact ties.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.5;
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
        let acts = quantize_acts(ty, &x, 1, 32).unwrap();
        let row = acts.row(0);
        let qs_at = if ty == GgmlType::Q8_0 { 2 } else { 4 };
        let q = |i: usize| row[qs_at + i] as i8;
        assert_eq!((q(0), q(1), q(2), q(3)), (127, 2, -4, 0), "{ty}");
    }
    // The reference quantizer (for weights) keeps rounding half away from zero.
    let w = strata_quant::quantize(GgmlType::Q8_0, &x).unwrap();
    assert_eq!((w[3] as i8, w[4] as i8, w[5] as i8), (3, -4, 1));
}

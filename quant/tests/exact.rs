//! Bit-exactness against llama.cpp's CPU backend (commit 0c1e57098, x86-64 build with AVX2 and
//! AVX-512): the kernels reproduce its float operation order, so results must be identical bit
//! for bit, at every SIMD level.
//!
//! The expected values come from running llama.cpp's own `from_float` (activation quantizer)
//! and `vec_dot` for the weight type on the seeded data [`Case`] draws (a xorshift64 stream,
//! drawn in the order written below), and are pinned here as bits. Every SIMD level must also
//! equal the scalar reference bit for bit on random blocks.

use strata_gguf::GgmlType;
use strata_quant::{matmul_q_with, quantize_acts, vec_dot_type, SimdLevel};

use crate::common::*;

/// Seeded weights and activations, drawn exactly as the generator that produced the goldens.
struct Case {
    w: Vec<u8>,
    x: Vec<f32>,
    rows: usize,
    cols: usize,
    n: usize,
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl Case {
    /// Weight bytes first (one draw per byte, top byte), then each f16 field of the weights
    /// (a magnitude draw, then a sign draw; Q5_K: `d` then `dmin` of each block), then activations: `u = (r>>40)/2^24·2 − 1`, times
    /// 40 at every 97th element (offset 5). Token 0's first 32 activations are replaced by
    /// `−127, −15.5, −14.5, …, 14.5`: that block's Q8_K scale is exactly 1 and every quant
    /// is a tie, rounded to even.
    fn new(ty: GgmlType, rows: usize, cols: usize, n: usize) -> Case {
        let mut rng = XorShift(0x243F_6A88_85A3_08D3);
        let rb = ty.row_size(cols as u64).unwrap() as usize;
        let mut w: Vec<u8> = (0..rb * rows).map(|_| (rng.next() >> 56) as u8).collect();
        match ty {
            GgmlType::Q6_K => {
                for b in w.chunks_exact_mut(210) {
                    let mut h = (0x1000 + (rng.next() >> 40) % 0x1800) as u16;
                    if rng.next() & 1 == 1 {
                        h |= 0x8000;
                    }
                    b[208..210].copy_from_slice(&h.to_le_bytes());
                }
            }
            GgmlType::Q5_K => {
                for b in w.chunks_exact_mut(176) {
                    for f in 0..2 {
                        let mut h = (0x1000 + (rng.next() >> 40) % 0x1800) as u16;
                        if rng.next() & 1 == 1 {
                            h |= 0x8000;
                        }
                        b[2 * f..2 * f + 2].copy_from_slice(&h.to_le_bytes());
                    }
                }
            }
            GgmlType::F16 | GgmlType::BF16 => draw_half_elements(ty, &mut w, || rng.next()),
            _ => unreachable!("no golden generator for {ty}"),
        }
        let mut x: Vec<f32> = (0..cols * n)
            .map(|i| {
                let u = (rng.next() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0;
                if i % 97 == 5 {
                    u * 40.0
                } else {
                    u
                }
            })
            .collect();
        if cols >= 256 {
            x[0] = -127.0;
            for (j, v) in x.iter_mut().enumerate().take(32).skip(1) {
                *v = (j as f32 - 16.0) + 0.5;
            }
        }
        Case {
            w,
            x,
            rows,
            cols,
            n,
        }
    }

    fn run(&self, level: SimdLevel, ty: GgmlType) -> Vec<u32> {
        let acts = quantize_acts(vec_dot_type(ty).unwrap(), &self.x, self.n, self.cols).unwrap();
        let mut y = vec![0f32; self.rows * self.n];
        matmul_q_with(level, ty, &self.w, self.rows, self.cols, &acts, &mut y).unwrap();
        y.iter().map(|v| v.to_bits()).collect()
    }
}

/// FNV-1a (64-bit) of bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_available())
        .collect()
}

/// Checks every available level (matvec one token at a time, and the whole batch) against
/// llama.cpp's results `want` (token-major).
fn check_golden(ty: GgmlType, case: &Case, want: &[u32]) {
    for level in available_levels() {
        assert_eq!(
            case.run(level, ty),
            want,
            "{ty} {level:?}: batch of {}",
            case.n
        );
    }
}

/// Q8_K activations: bytes identical to llama.cpp's `quantize_row_q8_K` (its reference
/// quantizer, which x86 runs), ties included.
#[test]
fn q8_k_activations_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::Q6_K, 8, 1024, 3);
    let acts = quantize_acts(GgmlType::Q8_K, &case.x, case.n, case.cols).unwrap();
    let bytes: Vec<u8> = (0..case.n).flat_map(|t| acts.row(t).to_vec()).collect();
    assert_eq!(fnv1a(&bytes), 0xa167_48cc_8d88_267f);
    // The tie block (quants after the 4-byte scale): iscale = −127/−127 is exactly 1, so each
    // j − 15.5 rounds to the even neighbour.
    let q: Vec<i8> = acts.row(0)[4..36].iter().map(|&b| b as i8).collect();
    let want: Vec<i8> = std::iter::once(-127)
        .chain((1..32).map(|j| (j as f32 - 15.5).round_ties_even() as i8))
        .collect();
    assert_eq!(q, want);
}

/// Q6_K · Q8_K equals `ggml_vec_dot_q6_K_q8_K` (x86 AVX2 branch) bit for bit, one token or many
/// (llama.cpp multiplies Q6_K one element at a time with that kernel for every batch size on
/// x86: no repacking, no llamafile tile).
#[test]
fn q6_k_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::Q6_K, 8, 1024, 3);
    #[rustfmt::skip]
    let want = [
        0xc4046f50, 0x45022bc8, 0xc46bf920, 0xc31e29b3, 0x43fd480c, 0xc463db60, 0x44a5bbcd, 0x441d3127,
        0xc3db7b43, 0xc50d0372, 0x44a51d76, 0xc42f1bf2, 0xc2a26350, 0xc3f49da4, 0x44b7e617, 0xc361327c,
        0x41f4a788, 0x43231f98, 0x4506fee5, 0xc2dad7d0, 0x444112a2, 0x43d204fc, 0xc40cb2d4, 0xc4125dee,
    ];
    check_golden(GgmlType::Q6_K, &case, &want);
    // One token alone gives the same bits as inside the batch.
    let one = Case {
        x: case.x[..case.cols].to_vec(),
        n: 1,
        ..Case::new(GgmlType::Q6_K, 8, 1024, 3)
    };
    check_golden(GgmlType::Q6_K, &one, &want[..8]);
}

/// A batch of 9 tokens: llama.cpp's graph takes its tiled K-quant matmul from 8 tokens on, whose
/// float order differs from `vec_dot`'s (per block `acc = fma(f32(s)·d_w, d_x, acc)`), so these
/// bits differ from the one-token ones in the last places; ours must follow. The expected
/// values are `ggml_mul_mat` computed by llama.cpp's CPU graph (2 threads) on the same data.
#[test]
fn q6_k_batch_of_9_bit_identical_to_llama_cpp_tiled_matmul() {
    let case = Case::new(GgmlType::Q6_K, 8, 1024, 9);
    let acts = quantize_acts(GgmlType::Q8_K, &case.x, case.n, case.cols).unwrap();
    let bytes: Vec<u8> = (0..case.n).flat_map(|t| acts.row(t).to_vec()).collect();
    assert_eq!(fnv1a(&bytes), 0x172e_860b_fbbe_9c79);
    #[rustfmt::skip]
    let want = [
        0xc4046f50, 0x45022bca, 0xc46bf91f, 0xc31e29b3, 0x43fd480b, 0xc463db7b, 0x44a5bbce, 0x441d3126,
        0xc3db7b43, 0xc50d0372, 0x44a51d77, 0xc42f1bf1, 0xc2a26350, 0xc3f49da0, 0x44b7e619, 0xc361327a,
        0x41f4a76d, 0x43231fac, 0x4506fee6, 0xc2dad7da, 0x444112a2, 0x43d204f7, 0xc40cb2cf, 0xc4125df0,
        0xc4af0501, 0x44e1de58, 0xc4ece591, 0x43cf242f, 0x43d345dd, 0xc3a2d016, 0xc4aa7a53, 0xc3198a2a,
        0xc524a926, 0xc4c20cb3, 0x45213e2e, 0x43a7d222, 0x44637722, 0xc3fc0dee, 0x44598341, 0x4502a6b0,
        0xc44d75e5, 0xc4653c1f, 0x44c9ea72, 0x42e24ed2, 0x44202ffe, 0xc4a369b9, 0x429eaa33, 0x42cb851a,
        0x43db9e8d, 0x4424486a, 0x45293b70, 0x4338b0e3, 0x43c1562a, 0xc44ea736, 0x43fb971a, 0xc4478735,
        0xc4511e87, 0x44d050fb, 0xc38bcdc6, 0x43a41eb4, 0x426461de, 0x4499899d, 0xc27e8c65, 0xc4b586e6,
        0xc4194b5e, 0xc315f161, 0x448864b8, 0x445a7726, 0xc3dce967, 0x4483ddef, 0x42b0097c, 0x432ba819,
    ];
    check_golden(GgmlType::Q6_K, &case, &want);
}

/// Every SIMD level equals the scalar reference bit for bit on random blocks (normal,
/// subnormal and largest scales), for 1 token, for 5 (the four-token kernels and one more) and
/// for 9 (llama.cpp's batch order), over 9 rows (groups of four, pairs, and a remainder).
#[test]
fn q6_k_simd_bit_identical_to_scalar() {
    let mut rng = Rng::new(61);
    let ty = GgmlType::Q6_K;
    for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
        // 9: the batch order (four-token kernels twice, then one).
        for n in [1, 5, 9] {
            let (rows, cols) = (9, 1280);
            let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
            let x = random_acts(cols * n, &mut rng);
            let case = Case {
                w,
                x,
                rows,
                cols,
                n,
            };
            let want = case.run(SimdLevel::Scalar, ty);
            for level in available_levels() {
                assert_eq!(case.run(level, ty), want, "{scales:?} n={n} {level:?}");
            }
        }
    }
}

/// Regression: a block whose largest magnitude is below 2⁻¹¹⁹ makes `−127/max` overflow to
/// ±∞; llama.cpp's `nearest_int` then yields −2²² (∞) or 0 (NaN for a zero element), whose low
/// byte, 0, is stored. We used to saturate to ±127 there.
#[test]
fn q8_k_tiny_block_quantizes_to_zero_like_llama_cpp() {
    let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * 1e-40).collect();
    let acts = quantize_acts(GgmlType::Q8_K, &x, 1, 256).unwrap();
    let row = acts.row(0);
    // max is 1.55e−38 (element 255), so iscale = −∞ and d = 1/−∞ = −0.
    assert_eq!(row[..4], (-0f32).to_le_bytes());
    assert!(row[4..].iter().all(|&b| b == 0), "{:?}", &row[4..40]);
}

/// F16 weights: activations rounded to F16 (bytes identical to llama.cpp's), then one token in
/// `ggml_vec_dot_f16` order and a batch of 3 in llamafile tinyBLAS order (8 rows, 1024 columns:
/// a shape tinyBLAS takes), as llama.cpp's graph computes them.
#[test]
fn f16_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::F16, 8, 1024, 3);
    let acts = quantize_acts(GgmlType::F16, &case.x, case.n, case.cols).unwrap();
    let bytes: Vec<u8> = (0..case.n).flat_map(|t| acts.row(t).to_vec()).collect();
    assert_eq!(fnv1a(&bytes), 0x97b2_9d7e_26b4_e2e0);
    #[rustfmt::skip]
    let batch = [
        0xc2d25f4e, 0x422932a8, 0x43fe99d3, 0x42a88d70, 0xc2cd4949, 0x438bac4b, 0xc242f36e, 0x4307cfc4,
        0xc25790ba, 0xc1342d68, 0x429deee0, 0x423e9030, 0xc29c5ace, 0xc327be2d, 0xc2bd8e10, 0xc27a377a,
        0xc28508d6, 0xc2aa40ed, 0x42491a7b, 0xc251eb15, 0x427ee7cf, 0xc0a34d40, 0x4201d613, 0xc17d8ca9,
    ];
    check_golden(GgmlType::F16, &case, &batch);
    let one = Case {
        x: case.x[..case.cols].to_vec(),
        n: 1,
        ..Case::new(GgmlType::F16, 8, 1024, 3)
    };
    #[rustfmt::skip]
    let single = [
        0xc2d25f4e, 0x422932a8, 0x43fe99d3, 0x42a88d70, 0xc2cd4946, 0x438bac4c, 0xc242f36f, 0x4307cfc4,
    ];
    check_golden(GgmlType::F16, &one, &single);
}

/// F16 with 1000 columns (not a multiple of 16): tinyBLAS refuses the shape, so llama.cpp's
/// batch of 3 runs `ggml_vec_dot_f16` per element, whose last 40 products (1000 mod 64) are
/// summed in `f64`.
#[test]
fn f16_vec_dot_fallback_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::F16, 6, 1000, 3);
    #[rustfmt::skip]
    let want = [
        0xc3016ff6, 0xc24e8550, 0xc1c9ace2, 0xc36f53b7, 0x41a07e4c, 0x43cbd715,
        0x42e990b1, 0xbf91a777, 0xc323e208, 0x423db4c7, 0x41d92694, 0xc16fc7a1,
        0x4144193c, 0xc23e6d16, 0xc10cabdd, 0xc2f842d2, 0xc27c82f8, 0xc1dfe089,
    ];
    check_golden(GgmlType::F16, &case, &want);
}

/// F16: every SIMD level equals the scalar reference bit for bit, in both orders (shapes
/// tinyBLAS takes and refuses, 1 and 5 tokens).
#[test]
fn f16_simd_bit_identical_to_scalar() {
    let mut rng = Rng::new(16);
    let ty = GgmlType::F16;
    for (rows, cols) in [(8, 1024), (9, 1000), (12, 208), (5, 64)] {
        for n in [1, 2, 5] {
            let w = random_blocks(ty, cols * rows, &mut rng, Scales::Normal);
            let x = random_acts(cols * n, &mut rng);
            let case = Case {
                w,
                x,
                rows,
                cols,
                n,
            };
            let want = case.run(SimdLevel::Scalar, ty);
            for level in available_levels() {
                assert_eq!(case.run(level, ty), want, "{rows}x{cols} n={n} {level:?}");
            }
        }
    }
}

/// BF16 weights: activations rounded to BF16, then one token in `ggml_vec_dot_bf16` order and a
/// batch of 3 in tinyBLAS BF16 order (`vdpbf16ps`), as llama.cpp's graph computes them.
#[test]
fn bf16_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::BF16, 8, 1024, 3);
    let acts = quantize_acts(GgmlType::BF16, &case.x, case.n, case.cols).unwrap();
    let bytes: Vec<u8> = (0..case.n).flat_map(|t| acts.row(t).to_vec()).collect();
    assert_eq!(fnv1a(&bytes), 0x22f5_bc68_4c15_2ee4);
    #[rustfmt::skip]
    let batch = [
        0xc26faa5e, 0xc2080662, 0x42d1bed0, 0x416818c4, 0x4163f286, 0x427564be, 0x42788e00, 0x43197a03,
        0xc21d3c81, 0x41f5c11a, 0x4278fc74, 0x42b1f3aa, 0xc20d7712, 0xc237792a, 0xc2449522, 0x411d55f4,
        0xc26ecee4, 0x4246b7f1, 0xc16c9f3c, 0x4149b875, 0x41d77fe9, 0x3f965912, 0xc03aef10, 0x411cec4b,
    ];
    check_golden(GgmlType::BF16, &case, &batch);
    let one = Case {
        x: case.x[..case.cols].to_vec(),
        n: 1,
        ..Case::new(GgmlType::BF16, 8, 1024, 3)
    };
    #[rustfmt::skip]
    let single = [
        0xc26faa5d, 0xc2080659, 0x42d1bece, 0x416818be, 0x4163f292, 0x427564bc, 0x42788e02, 0x43197a03,
    ];
    check_golden(GgmlType::BF16, &one, &single);
}

/// BF16 with 1000 columns (not a multiple of 32): tinyBLAS refuses, llama.cpp's batch runs
/// `ggml_vec_dot_bf16` per element, the last 40 products summed in `f64`.
#[test]
fn bf16_vec_dot_fallback_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::BF16, 6, 1000, 3);
    #[rustfmt::skip]
    let want = [
        0x40cf8786, 0xc28f6804, 0x416d4e5c, 0x40f070be, 0x41a65f37, 0xc16f5f83,
        0xc1246b85, 0xc2713a95, 0xc0f8f4f1, 0xc2134b00, 0xc05517d3, 0x4111d482,
        0xc1d1d55b, 0xc19232c3, 0xc2c15509, 0xc1f4d14c, 0x4208ace2, 0xc1d24e5b,
    ];
    check_golden(GgmlType::BF16, &case, &want);
}

/// BF16: every SIMD level (native `vdpbf16ps` where the CPU has it, the AVX2 emulation
/// otherwise) equals the scalar emulation bit for bit, in both orders, including values whose
/// products and partial sums fall below the smallest normal (`vdpbf16ps` flushes them).
#[test]
fn bf16_simd_bit_identical_to_scalar() {
    let mut rng = Rng::new(30);
    let ty = GgmlType::BF16;
    for tiny in [false, true] {
        for (rows, cols) in [(8, 1024), (9, 1000), (12, 224), (5, 64)] {
            for n in [1, 2, 5] {
                let mut w = random_blocks(ty, cols * rows, &mut rng, Scales::Normal);
                let mut x = random_acts(cols * n, &mut rng);
                if tiny {
                    // Weights near 2^-60, activations near 2^-66 (and some subnormal): products
                    // near 2^-126, the edge of the normal range.
                    for (k, e) in w.chunks_exact_mut(2).enumerate() {
                        let v = f32::from_bits(u32::from(u16::from_le_bytes([e[0], e[1]])) << 16);
                        let s = if k % 7 == 0 { 1e-39 } else { 2f32.powi(-60) };
                        let b = ((v.clamp(-4.0, 4.0) * s).to_bits() >> 16) as u16;
                        e.copy_from_slice(&b.to_le_bytes());
                    }
                    for (k, v) in x.iter_mut().enumerate() {
                        *v *= if k % 5 == 0 { 1e-39 } else { 2f32.powi(-66) };
                    }
                }
                let case = Case {
                    w,
                    x,
                    rows,
                    cols,
                    n,
                };
                let want = case.run(SimdLevel::Scalar, ty);
                for level in available_levels() {
                    assert_eq!(
                        case.run(level, ty),
                        want,
                        "tiny={tiny} {rows}x{cols} n={n} {level:?}"
                    );
                }
            }
        }
    }
}

/// Q5_K · Q8_K (not repacked on x86): 3 tokens in `ggml_vec_dot_q5_K_q8_K` order (AVX2
/// branch, its `summs += dmin * msum` contracted to an FMA), 9 tokens in the tiled matmul's
/// order, as llama.cpp's graph computes them.
#[test]
fn q5_k_bit_identical_to_llama_cpp() {
    let case = Case::new(GgmlType::Q5_K, 8, 1024, 3);
    #[rustfmt::skip]
    let want = [
        0xc29f0dde, 0x427050d4, 0xc21b9682, 0xc309ef5e, 0xc2b3a2c5, 0x43efed3f, 0xc575b9f4, 0x4362d198,
        0x438a81e4, 0xc216347a, 0xc33407b3, 0x432a239c, 0xc2c220df, 0xc3224093, 0xc28d4912, 0xc320d721,
        0x41561e1f, 0x41e33424, 0x43b857f7, 0xc1c40567, 0xc38676c5, 0x42e3bfa2, 0xc4a87223, 0x438fc682,
    ];
    check_golden(GgmlType::Q5_K, &case, &want);
    let case = Case::new(GgmlType::Q5_K, 8, 1024, 9);
    #[rustfmt::skip]
    let want = [
        0xc29f0dde, 0x427050d6, 0xc21b9682, 0xc309ef60, 0xc2b3a2c6, 0x43efed42, 0xc575b9f4, 0x4362d198,
        0x438a81e6, 0xc2163479, 0xc33407b4, 0x432a239b, 0xc2c220df, 0xc3224093, 0xc28d490b, 0xc320d721,
        0x41561e1b, 0x41e33424, 0x43b857f8, 0xc1c40562, 0xc38676c6, 0x42e3bf9f, 0xc4a87223, 0x438fc683,
        0x419eeda4, 0xc263e7f4, 0x4297d0fa, 0x43b1bbd8, 0xc3189cf8, 0xc421a762, 0x44758589, 0xc4131e6f,
        0xc3859213, 0x42929e6c, 0x43fcc27d, 0xc293a128, 0xc3538198, 0xc3d4aba6, 0x4402edb4, 0xc4984437,
        0x4331dbfd, 0xc2096145, 0x433dd066, 0x4334b4c4, 0xc41789d2, 0x438138c7, 0x44213995, 0x434af7e1,
        0xc3a96fb9, 0x427630c3, 0x43cf6a5c, 0x42a9fe90, 0xc313f75b, 0xc3a64e36, 0xc3e4e642, 0xc321a0cf,
        0xc09a7de8, 0xc1e8dddc, 0xc3e43db6, 0x43ef5c87, 0xc40ed354, 0x42b3df48, 0x449824b0, 0xc3f61797,
        0x4306d1db, 0x42cf7aaa, 0x43143c06, 0xc3f464a2, 0x437c1da1, 0x443276fb, 0xc4231baa, 0x4300a56b,
    ];
    check_golden(GgmlType::Q5_K, &case, &want);
}

/// Q5_K: every SIMD level equals the scalar reference bit for bit (1, 5 and 9 tokens).
#[test]
fn q5_k_simd_bit_identical_to_scalar() {
    let mut rng = Rng::new(51);
    let ty = GgmlType::Q5_K;
    for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
        for n in [1, 5, 9] {
            let (rows, cols) = (9, 1280);
            let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
            let x = random_acts(cols * n, &mut rng);
            let case = Case {
                w,
                x,
                rows,
                cols,
                n,
            };
            let want = case.run(SimdLevel::Scalar, ty);
            for level in available_levels() {
                assert_eq!(case.run(level, ty), want, "{scales:?} n={n} {level:?}");
            }
        }
    }
}

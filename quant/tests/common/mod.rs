//! Shared test helpers: a deterministic RNG and generators of valid random blocks.

use strata_gguf::GgmlType;
use strata_quant::{matmul_q_with, quantize_acts, vec_dot_type, SimdLevel};

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn u8(&mut self) -> u8 {
        (self.u64() >> 56) as u8
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn normal_ish(&mut self) -> f32 {
        (0..4).map(|_| self.f32()).sum::<f32>() * 0.5
    }
}

/// Byte offsets of the f16 scale fields in one block of `ty`.
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S
        | IQ1_S => &[0],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Overwrites `w`, a seeded F16 or BF16 row, element by element with values from `next` as the
/// llama.cpp harnesses draw them: a magnitude draw (`base + (r >> 40) % span`; F16:
/// `[0x2000, 0x4400)`, BF16: `[0x3c00, 0x4000)`), then a sign draw (`r & 1`).
pub fn draw_half_elements(ty: GgmlType, w: &mut [u8], mut next: impl FnMut() -> u64) {
    let (base, span) = match ty {
        GgmlType::F16 => (0x2000, 0x2400),
        GgmlType::BF16 => (0x3c00, 0x0400),
        _ => panic!("{ty} has no half-precision elements"),
    };
    for e in w.chunks_exact_mut(2) {
        let mut h = (base + (next() >> 40) % span) as u16;
        if next() & 1 == 1 {
            h |= 0x8000;
        }
        e.copy_from_slice(&h.to_le_bytes());
    }
}

/// How scales are drawn for a block.
#[derive(Clone, Copy, Debug)]
pub enum Scales {
    /// Ordinary magnitudes (up to 5e-2), either sign.
    Normal,
    /// All scales zero.
    Zero,
    /// Subnormal f16 scales.
    Subnormal,
    /// Largest finite f16 scales.
    Max,
}

fn f16_bits(rng: &mut Rng, s: Scales) -> [u8; 2] {
    let h = match s {
        Scales::Normal => half::f16::from_f32(rng.f32() * 0.05),
        Scales::Zero => half::f16::from_f32(0.0),
        Scales::Subnormal => {
            half::f16::from_bits((rng.u64() as u16 & 0x03ff) | 1 | ((rng.u64() as u16) & 0x8000))
        }
        Scales::Max => half::f16::from_bits(0x7bff | ((rng.u64() as u16) & 0x8000)),
    };
    h.to_bits().to_le_bytes()
}

/// `n_blocks` random blocks of `ty` with scales of the given kind (quant bytes fully random).
/// For F32/F16/BF16, `n_blocks` elements of random finite values.
pub fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut Rng, scales: Scales) -> Vec<u8> {
    let ts = ty.type_size();
    let mut v: Vec<u8> = (0..n_blocks * ts).map(|_| rng.u8()).collect();
    match ty {
        GgmlType::F32 => {
            for c in v.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.normal_ish().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in v.chunks_exact_mut(2) {
                c.copy_from_slice(
                    &half::f16::from_f32(rng.normal_ish())
                        .to_bits()
                        .to_le_bytes(),
                );
            }
        }
        GgmlType::BF16 => {
            for c in v.chunks_exact_mut(2) {
                c.copy_from_slice(
                    &half::bf16::from_f32(rng.normal_ish())
                        .to_bits()
                        .to_le_bytes(),
                );
            }
        }
        _ => {
            for b in v.chunks_exact_mut(ts) {
                for &off in f16_fields(ty) {
                    b[off..off + 2].copy_from_slice(&f16_bits(rng, scales));
                }
                if matches!(ty, GgmlType::IQ1_M | GgmlType::MXFP4) {
                    set_block_scale(ty, b, f16_bits(rng, scales));
                }
            }
        }
    }
    v
}

/// Writes the f16 `bits` as the block scale of a format whose scale is not an f16 field:
/// IQ1_M (nibble k of the f16 in the top nibble of scale word k) and MXFP4 (the E8M0 exponent
/// nearest the f16's magnitude, `2^(e − 128)`: 0 for zero and subnormals, 254 for the largest).
/// Panics for other types.
pub fn set_block_scale(ty: GgmlType, block: &mut [u8], bits: [u8; 2]) {
    let h = u16::from_le_bytes(bits);
    match ty {
        GgmlType::IQ1_M => {
            for k in 0..4 {
                let hi = &mut block[48 + 2 * k + 1];
                *hi = (*hi & 0x0F) | ((((h >> (4 * k)) & 0x0F) as u8) << 4);
            }
        }
        GgmlType::MXFP4 => {
            let v = half::f16::from_bits(h).to_f32().abs();
            block[0] = if v < 6.2e-5 {
                0
            } else {
                (128.0 + v.log2().round()).clamp(1.0, 254.0) as u8
            };
        }
        _ => panic!("{ty} has f16 scale fields"),
    }
}

/// Weight formats with dot products.
pub const WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
];

/// Random activations, roughly normal, with a few large outliers.
pub fn random_acts(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if i % 97 == 5 {
                rng.f32() * 20.0
            } else {
                rng.normal_ish()
            }
        })
        .collect()
}

/// Bits of each output, all NaNs read as one (their payloads are not part of the contract).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

/// `ty` weights `w` (`rows × cols`) times `n` tokens `x` at `level`, through the public API:
/// the activations are quantized to `ty`'s `vec_dot_type`, the outputs are `n × rows`.
pub fn product(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
) -> Vec<f32> {
    let acts = quantize_acts(vec_dot_type(ty).unwrap(), x, n, cols).unwrap();
    let mut y = vec![0f32; rows * n];
    matmul_q_with(level, ty, w, rows, cols, &acts, &mut y).unwrap();
    y
}

/// Checks that every SIMD level available on this CPU gives the scalar reference's outputs bit
/// for bit (see [`bits`]) for `ty` weights `w` and `n` tokens `x`; `what` names the case in
/// the failure message.
pub fn check_levels(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    what: &str,
) {
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

/// `len` integer activations in −127..=127, −127 at every index `≡ at (mod block)` and the
/// others drawn from `rng` (in index order): every block of `block` activations then has
/// `amax = 127`, so its Q8_0/Q8_K quants are exact (`d = 1`).
pub fn integer_acts(len: usize, block: usize, at: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len)
        .map(|i| {
            if i % block == at {
                -127.0
            } else {
                ((rng.u64() % 255) as i32 - 127) as f32
            }
        })
        .collect()
}

/// Asserts that each output of `y` (`n × rows`, token-major) is within
/// `rel · Σ|w·x| + abs` of the f64 dot product of its row of `wf` (dequantized weights,
/// `rows × cols`) and its token of `x` (`n × cols`); `what` names the case.
pub fn assert_near_f64_dot(
    wf: &[f32],
    x: &[f32],
    y: &[f32],
    (rows, cols): (usize, usize),
    (rel, abs): (f64, f64),
    what: &str,
) {
    for t in 0..y.len() / rows {
        for r in 0..rows {
            let terms = (0..cols).map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64);
            let exact: f64 = terms.clone().sum();
            let scale: f64 = terms.map(f64::abs).sum();
            let got = y[t * rows + r] as f64;
            assert!(
                (got - exact).abs() <= rel * scale + abs,
                "{what} row {r} token {t}: {got} vs {exact}"
            );
        }
    }
}

/// Activations (`element index → value`) for the extreme-block tests: mixed −1/−0.25 (one
/// sign), ±1e30 (extreme size), all 0.5, all −3.
pub const EXTREME_ACTS: [fn(usize) -> f32; 4] = [
    |i| if i % 3 == 0 { -1.0 } else { -0.25 },
    |i| if i % 2 == 0 { 1e30 } else { -1e30 },
    |_| 0.5,
    |_| -3.0,
];

/// The IQ2/IQ3 families' random-block test: every available level against the scalar
/// reference, bitwise, for each of `types`, every kind of f16 scale, row counts that are and
/// are not multiples of 4, n = 1..3 (`vec_dot`) and 8, 9, 13 (tiled: groups of four and single
/// tokens), drawn from `Rng::new(seed)`.
pub fn grid_iq_every_level(types: &[GgmlType], seed: u64) {
    let mut rng = Rng::new(seed);
    for &ty in types {
        for scales in [Scales::Normal, Scales::Subnormal, Scales::Max, Scales::Zero] {
            for (rows, cols) in [(5, 256), (13, 512), (8, 768), (3, 1024)] {
                let w = random_blocks(ty, cols / 256 * rows, &mut rng, scales);
                for n in [1, 2, 3, 8, 9, 13] {
                    let x = random_acts(cols * n, &mut rng);
                    check_levels(ty, &w, rows, cols, &x, n, &format!("{scales:?}"));
                }
            }
        }
    }
}

/// The IQ2/IQ3 families' extreme-block test: for each of `types`, blocks whose quant bytes
/// (all but the f16 scale) are all 0xFF, 0x00, 0x55 or 0xAA, with the largest f16 scale
/// (drawn from `Rng::new(seed)`), against activations all at ±1 and mixed ±1 (every quant at
/// ±127), every available level against the scalar reference, bitwise.
pub fn grid_iq_extreme_blocks(types: &[GgmlType], seed: u64) {
    let mut rng = Rng::new(seed);
    let (rows, cols) = (7, 512);
    for &ty in types {
        for fill in [0xFFu8, 0x00, 0x55, 0xAA] {
            let mut w = random_blocks(ty, cols / 256 * rows, &mut rng, Scales::Max);
            for b in w.chunks_exact_mut(ty.type_size()) {
                b[2..].fill(fill);
            }
            for n in [1, 8] {
                for sign in [1.0f32, -1.0] {
                    let x = vec![sign; cols * n];
                    check_levels(ty, &w, rows, cols, &x, n, &format!("fill {fill:#x} {sign}"));
                }
                let x: Vec<f32> = (0..cols * n)
                    .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
                    .collect();
                check_levels(ty, &w, rows, cols, &x, n, &format!("fill {fill:#x} mixed"));
            }
        }
    }
}

//! Shared test helpers: a deterministic RNG and generators of valid random blocks.

use strata_gguf::GgmlType;

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

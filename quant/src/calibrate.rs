//! One-time micro-calibration of the one-token kernels: 256-bit (AVX2) or 512-bit (AVX-512)
//! bodies, per weight type, chosen by timing both on this CPU.
//!
//! Every SIMD level computes the same float order, bit for bit (tested against the scalar
//! reference at every level), so the choice changes speed only, never a result. It matters
//! because CPUs differ in how they run 512-bit instructions: Intel cores of the AVX-512 era run
//! them natively, while AMD Zen 4 splits each into two 256-bit halves, so there a 256-bit body
//! with fewer shuffles can be faster. Rather than hard-coding a vendor rule, the first one-token
//! product of each weight type times both kernels on a small matrix that stays in L2 (so the
//! kernels' compute, not DRAM, is measured: the case where the choice matters), and keeps the
//! faster one for the life of the process. Batches (`n >= 2`) keep the highest level: the
//! AVX-512 batch kernels have no 256-bit counterpart of the same design.
//!
//! `STRATA_SIMD` still caps the level; `STRATA_CALIBRATE=0` skips the calibration (the highest
//! level is used everywhere).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use strata_gguf::GgmlType;

use crate::simd::SimdLevel;

/// Weight types with one-token kernels at several levels (every type [`crate::is_supported`]
/// multiplies, F32 excluded: its kernel is the same at both levels).
const TYPES: [GgmlType; 13] = [
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
    GgmlType::F16,
    GgmlType::BF16,
];

/// The calibration matrix: 16 rows (a multiple of 8, so repacked formats take their repacked
/// kernels, as real weights do) × 4096 columns (whole blocks of every format; rows long enough
/// that passes take the long-row path, as a large model's matrices do, rather than the short-row
/// one with linear prefetching, where both levels keep up with memory): 36–128 KiB of weights,
/// resident in L2 after the first pass and small enough to run on one thread.
const ROWS: usize = 16;
const COLS: usize = 4096;
/// The 512-bit kernel is kept unless the 256-bit one is faster by more than this share (a
/// margin against timing noise).
const MARGIN: f64 = 0.05;

/// The SIMD level the kernels use for `n` tokens of `ty` weights: [`SimdLevel::active`], or,
/// for one token on a CPU with AVX-512, the calibrated faster of AVX2 and AVX-512 (measured
/// once per type, on first use). Results are the same at every level.
pub fn kernel_level(ty: GgmlType, n: usize) -> SimdLevel {
    let active = SimdLevel::active();
    if n != 1 || active < SimdLevel::Avx512 || !enabled() {
        return active;
    }
    let Some(i) = TYPES.iter().position(|&t| t == ty) else {
        return active;
    };
    static CHOICE: [OnceLock<SimdLevel>; TYPES.len()] = [const { OnceLock::new() }; TYPES.len()];
    *CHOICE[i].get_or_init(|| calibrate(ty).map_or(active, |c| c.chosen))
}

/// What the calibration measured for one type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// The weight type.
    pub ty: GgmlType,
    /// Best time of one product of the calibration matrix with the AVX2 kernel.
    pub avx2: Duration,
    /// Best time with the AVX-512 kernel.
    pub avx512: Duration,
    /// The level kept.
    pub chosen: SimdLevel,
}

/// Times the AVX2 and AVX-512 one-token kernels of `ty` on the calibration matrix and picks one
/// (AVX2 only when faster by more than 5%). `None` where the CPU lacks AVX-512 (or `STRATA_SIMD`
/// caps below it) or the type has no kernel here.
pub fn calibrate(ty: GgmlType) -> Option<Calibration> {
    if SimdLevel::active() < SimdLevel::Avx512 {
        return None;
    }
    let (w, x) = calibration_data(ty)?;
    let mut y = vec![0f32; ROWS];
    let mut time = |level: SimdLevel| -> Option<Duration> {
        let t = Instant::now();
        for _ in 0..8 {
            crate::matmul_q_with(level, ty, &w, ROWS, COLS, &x, &mut y).ok()?;
        }
        Some(t.elapsed() / 8)
    };
    // Warm both (caches, page faults of `y`), then alternate so drift hits both alike.
    time(SimdLevel::Avx2)?;
    time(SimdLevel::Avx512)?;
    let (mut avx2, mut avx512) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        avx2 = avx2.min(time(SimdLevel::Avx2)?);
        avx512 = avx512.min(time(SimdLevel::Avx512)?);
    }
    let chosen = if avx2.as_secs_f64() < avx512.as_secs_f64() * (1.0 - MARGIN) {
        SimdLevel::Avx2
    } else {
        SimdLevel::Avx512
    };
    Some(Calibration {
        ty,
        avx2,
        avx512,
        chosen,
    })
}

/// Whether calibration is on (`STRATA_CALIBRATE` unset, empty, or anything but `0`/`off`/`false`).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("STRATA_CALIBRATE")
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
                .as_str(),
            "0" | "off" | "false"
        )
    })
}

/// Seeded weights of `ty` and one activation row. The kernels' speed does not depend on the
/// values, so the weights are pseudo-random bytes of the right length, each in `0x30..0x3c`:
/// every f16 or bf16 field read from two such bytes (block scales, or the elements of F16/BF16
/// rows) is then a normal number between about 2^-9 and 1, never a NaN, an infinity or a
/// subnormal (which some CPUs compute slowly).
fn calibration_data(ty: GgmlType) -> Option<(Vec<u8>, crate::QuantizedActs)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let len = usize::try_from(ty.row_size(COLS as u64)?).ok()? * ROWS;
    let w: Vec<u8> = (0..len).map(|_| 0x30 + (next() % 12) as u8).collect();
    let xf: Vec<f32> = (0..COLS)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let x = crate::quantize_acts(crate::vec_dot_type(ty).ok()?, &xf, 1, COLS).ok()?;
    Some((w, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_one_this_cpu_runs_and_never_above_active() {
        for ty in TYPES {
            for n in [1, 2, 7] {
                let l = kernel_level(ty, n);
                assert!(l.is_available(), "{ty:?} n={n}: {l:?}");
                assert!(l <= SimdLevel::active(), "{ty:?} n={n}: {l:?}");
                if n > 1 {
                    assert_eq!(l, SimdLevel::active());
                }
            }
        }
    }

    #[test]
    fn calibration_times_both_kernels_where_there_is_avx512() {
        for ty in TYPES {
            match calibrate(ty) {
                Some(c) => {
                    assert_eq!(SimdLevel::active(), SimdLevel::Avx512);
                    assert!(
                        c.avx2 > Duration::ZERO && c.avx512 > Duration::ZERO,
                        "{c:?}"
                    );
                    assert!(matches!(c.chosen, SimdLevel::Avx2 | SimdLevel::Avx512));
                }
                None => assert!(SimdLevel::active() < SimdLevel::Avx512),
            }
        }
    }

    #[test]
    fn calibrated_and_highest_level_give_the_same_bits() {
        for ty in TYPES {
            let (w, x) = calibration_data(ty).unwrap();
            let mut a = vec![0f32; ROWS];
            let mut b = vec![0f32; ROWS];
            crate::matmul_q_with(kernel_level(ty, 1), ty, &w, ROWS, COLS, &x, &mut a).unwrap();
            crate::matmul_q_with(SimdLevel::active(), ty, &w, ROWS, COLS, &x, &mut b).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{ty:?}");
        }
    }
}

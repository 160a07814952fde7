//! One-time micro-calibration of the one-token kernels: 256-bit (AVX2) or 512-bit (AVX-512)
//! bodies, per weight type, chosen by timing both on this CPU.
//!
//! Every SIMD level computes the same float order, bit for bit (tested against the scalar
//! reference at every level), so the choice changes speed only, never a result. It matters
//! because CPUs differ in how they run 512-bit instructions: Intel cores of the AVX-512 era run
//! them natively, while AMD Zen 4 splits each into two 256-bit halves, so there a 256-bit body
//! with fewer shuffles can be faster. Rather than hard-coding a vendor rule, the first one-token
//! product of each weight type and row-length class (`ceil(log2(cols))`: short rows, such as an
//! output head's 640 columns, take other passes and prefetching than long ones) times both
//! kernels on a matrix of that row length that stays in L2 (so the kernels' compute, not DRAM,
//! is measured: the case where the choice matters), in alternating samples of about 100 µs each,
//! and keeps the faster one for the life of the process ([`calibrations`] lists what was
//! chosen). Batches (`n >= 2`) keep the highest level: they are not calibrated (most AVX-512
//! batch kernels have no 256-bit counterpart of the same design; the Q8_0-family batch kernel
//! and the sixteen-token Q4_K gemm have one, for CPUs without AVX-512).
//!
//! `STRATA_SIMD` still caps the level; `STRATA_CALIBRATE=0` skips the calibration (the highest
//! level is used everywhere).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_gguf::GgmlType;

use crate::simd::SimdLevel;

/// Weight types with one-token kernels at several levels (every type [`crate::is_supported`]
/// multiplies, F32 excluded: its kernel is the same at both levels).
const TYPES: [GgmlType; 17] = [
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
    GgmlType::IQ2_XXS,
    GgmlType::IQ3_XXS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_S,
    GgmlType::F16,
    GgmlType::BF16,
];

/// Row-length classes: `ceil(log2(cols))`, so 640 and 1024 columns share a class and 2048
/// starts the next. Kernels take different paths for short and long rows (a short-row pass is
/// one contiguous region, prefetched linearly; long rows are separate streams), so the faster
/// level can differ between an output head's 640 columns and an FFN's 11008.
const CLASSES: usize = 33;

/// Weights per calibration matrix: about this many bytes (rows are added in eights up to it,
/// 8 to 256 rows), so the matrix stays in L2 after the first pass and the kernels' compute, not
/// DRAM, is timed.
const MATRIX_BYTES: usize = 64 << 10;
/// Widest calibration row: wider calls are timed at this many columns (still long rows).
const MAX_COLS: usize = 16384;
/// Each timing sample repeats the product until it takes about this long, so a sample is long
/// against the timer's resolution and a single interruption.
const SAMPLE: Duration = Duration::from_micros(100);
/// Alternating samples per level; the fastest of each level is compared.
const ROUNDS: usize = 7;
/// The 512-bit kernel is kept unless the 256-bit one is faster by more than this share (a
/// margin against timing noise).
const MARGIN: f64 = 0.05;

/// The SIMD level the kernels use for `n` tokens of `ty` weights with rows of `cols` columns:
/// [`SimdLevel::active`], or, for one token on a CPU with AVX-512, the calibrated faster of AVX2
/// and AVX-512 (measured once per type and row-length class, on first use, at the first width
/// seen in the class). Results are the same at every level.
pub fn kernel_level(ty: GgmlType, n: usize, cols: usize) -> SimdLevel {
    let active = SimdLevel::active();
    if n != 1 || active < SimdLevel::Avx512 || !enabled() {
        return active;
    }
    let Some(i) = TYPES.iter().position(|&t| t == ty) else {
        return active;
    };
    static CHOICE: [[OnceLock<SimdLevel>; CLASSES]; TYPES.len()] =
        [const { [const { OnceLock::new() }; CLASSES] }; TYPES.len()];
    *CHOICE[i][class(cols)].get_or_init(|| {
        calibrate(ty, cols).map_or(active, |c| {
            LOG.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            c.chosen
        })
    })
}

/// The row-length class of `cols` columns: `ceil(log2(cols))`, at most `CLASSES - 1`.
fn class(cols: usize) -> usize {
    ((usize::BITS - cols.max(1).saturating_sub(1).leading_zeros()) as usize).min(CLASSES - 1)
}

/// The calibrations [`kernel_level`] has made in this process so far, in order (for reports
/// such as `strata bench`'s).
pub fn calibrations() -> Vec<Calibration> {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

static LOG: Mutex<Vec<Calibration>> = Mutex::new(Vec::new());

/// What the calibration measured for one type and row length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// The weight type.
    pub ty: GgmlType,
    /// Columns of the calibration matrix (the row length asked for, at most 16384).
    pub cols: usize,
    /// Rows of the calibration matrix (a multiple of 8 from 8 to 256: about 64 KiB of weights,
    /// more where 8 rows are wider).
    pub rows: usize,
    /// Best time of one product of the calibration matrix with the AVX2 kernel.
    pub avx2: Duration,
    /// Best time with the AVX-512 kernel.
    pub avx512: Duration,
    /// The level kept.
    pub chosen: SimdLevel,
}

/// Times the AVX2 and AVX-512 one-token kernels of `ty` on an L2-resident matrix with rows of
/// `cols` columns (at most 16384) and picks one (AVX2 only when faster by more than 5%). `None`
/// where the CPU lacks AVX-512 (or `STRATA_SIMD` caps below it), the type has no kernel here, or
/// `cols` is not a whole number of the type's blocks.
pub fn calibrate(ty: GgmlType, cols: usize) -> Option<Calibration> {
    if SimdLevel::active() < SimdLevel::Avx512 {
        return None;
    }
    let cols = cols.min(MAX_COLS);
    let row_bytes = usize::try_from(ty.row_size(cols as u64)?).ok()?;
    // Whole eights of rows (repacked formats take their repacked kernels, as real weights do).
    let rows = (MATRIX_BYTES / row_bytes.max(1) / 8).clamp(1, 32) * 8;
    let (w, x) = calibration_data(ty, rows, cols)?;
    let mut y = vec![0f32; rows];
    let mut run = |level: SimdLevel, reps: u32| -> Option<Duration> {
        let t = Instant::now();
        for _ in 0..reps {
            crate::matmul_q_with(level, ty, &w, rows, cols, &x, &mut y).ok()?;
        }
        Some(t.elapsed() / reps)
    };
    // Warm both (caches, page faults of `y`, the 512-bit units), then size the samples.
    run(SimdLevel::Avx2, 2)?;
    run(SimdLevel::Avx512, 2)?;
    let once = run(SimdLevel::Avx2, 1)?.max(run(SimdLevel::Avx512, 1)?);
    let reps = (SAMPLE.as_nanos() / once.as_nanos().max(1)).clamp(1, 1024) as u32;
    // Alternate so drift hits both alike.
    let (mut avx2, mut avx512) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        avx2 = avx2.min(run(SimdLevel::Avx2, reps)?);
        avx512 = avx512.min(run(SimdLevel::Avx512, reps)?);
    }
    let chosen = if avx2.as_secs_f64() < avx512.as_secs_f64() * (1.0 - MARGIN) {
        SimdLevel::Avx2
    } else {
        SimdLevel::Avx512
    };
    Some(Calibration {
        ty,
        cols,
        rows,
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
fn calibration_data(
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> Option<(Vec<u8>, crate::QuantizedActs)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let len = usize::try_from(ty.row_size(cols as u64)?).ok()? * rows;
    let w: Vec<u8> = (0..len).map(|_| 0x30 + (next() % 12) as u8).collect();
    let xf: Vec<f32> = (0..cols)
        .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let x = crate::quantize_acts(crate::vec_dot_type(ty).ok()?, &xf, 1, cols).ok()?;
    Some((w, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row lengths every type takes (whole blocks of 256): a short-row class and a long one.
    const WIDTHS: [usize; 2] = [512, 4096];

    #[test]
    fn the_level_is_one_this_cpu_runs_and_never_above_active() {
        for ty in TYPES {
            for cols in WIDTHS {
                for n in [1, 2, 7] {
                    let l = kernel_level(ty, n, cols);
                    assert!(l.is_available(), "{ty:?} n={n} cols={cols}: {l:?}");
                    assert!(l <= SimdLevel::active(), "{ty:?} n={n} cols={cols}: {l:?}");
                    if n > 1 {
                        assert_eq!(l, SimdLevel::active());
                    }
                }
            }
        }
        // Each type and class asked for was calibrated, and logged once (other tests may have
        // asked first, at another width of the same class).
        let log = calibrations();
        for c in &log {
            let same = log
                .iter()
                .filter(|d| d.ty == c.ty && class(d.cols) == class(c.cols))
                .count();
            assert_eq!(same, 1, "{c:?} logged {same} times");
        }
        if SimdLevel::active() == SimdLevel::Avx512 && enabled() {
            for ty in TYPES {
                for cols in WIDTHS {
                    assert!(
                        log.iter()
                            .any(|c| c.ty == ty && class(c.cols) == class(cols)),
                        "{ty:?} cols={cols} not calibrated: {log:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn row_lengths_fall_in_power_of_two_classes() {
        let classes: Vec<usize> = [0, 1, 2, 32, 33, 512, 513, 640, 1024, 1025, 2048, 11008]
            .map(class)
            .to_vec();
        assert_eq!(classes, [0, 0, 1, 5, 6, 9, 10, 10, 10, 11, 11, 14]);
        assert_eq!(class(usize::MAX), CLASSES - 1);
    }

    #[test]
    fn calibration_times_both_kernels_where_there_is_avx512() {
        for ty in TYPES {
            for cols in [512, 640, 4096, 65536] {
                let valid = ty.row_size(cols as u64).is_some();
                match calibrate(ty, cols) {
                    Some(c) => {
                        assert_eq!(SimdLevel::active(), SimdLevel::Avx512);
                        assert!(valid, "{c:?}");
                        assert!(
                            c.avx2 > Duration::ZERO && c.avx512 > Duration::ZERO,
                            "{c:?}"
                        );
                        assert!(matches!(c.chosen, SimdLevel::Avx2 | SimdLevel::Avx512));
                        assert_eq!(c.cols, cols.min(MAX_COLS), "{c:?}");
                        assert!(c.rows % 8 == 0 && (8..=256).contains(&c.rows), "{c:?}");
                    }
                    None => assert!(SimdLevel::active() < SimdLevel::Avx512 || !valid),
                }
            }
        }
    }

    #[test]
    fn calibrated_and_highest_level_give_the_same_bits() {
        for ty in TYPES {
            for cols in WIDTHS {
                let rows = 24;
                let (w, x) = calibration_data(ty, rows, cols).unwrap();
                let mut a = vec![0f32; rows];
                let mut b = vec![0f32; rows];
                let level = kernel_level(ty, 1, cols);
                crate::matmul_q_with(level, ty, &w, rows, cols, &x, &mut a).unwrap();
                crate::matmul_q_with(SimdLevel::active(), ty, &w, rows, cols, &x, &mut b).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{ty:?} cols={cols}");
            }
        }
    }
}

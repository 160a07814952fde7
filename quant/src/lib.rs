//! GGUF block formats: dequantize, quantize, and quantized dot products at memory speed.
//!
//! Weights stay in their GGUF block format in memory; every matrix product reads the blocks in
//! place. The principal entry points:
//!
//! - [`dequantize`] / [`quantize()`]: whole rows of any supported [`GgmlType`] to and from `f32`.
//! - [`vec_dot_type`]: the activation format a weight format is multiplied with (ggml's
//!   pairing: Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4 × Q8_0, Q4_1/Q5_1 × Q8_1, K-quants, IQ4_XS, the
//!   IQ1/IQ2/IQ3 formats and TQ1_0/TQ2_0 × Q8_K, F16 × F16, BF16 × BF16, F32 × F32).
//! - [`quantize_acts`] → [`QuantizedActs`]: activations quantized once, shared by every weight
//!   with the same dot type (Q, K and V all read the same `x`).
//! - [`vec_dot`]: one weight row · one quantized activation row.
//! - [`matvec`], [`matvec_q`], [`matmul`], [`matmul_q`]: `y = W·x` for one token and `Y = W·X`
//!   for a batch, rows split over rayon threads (feature `rayon`, on by default).
//! - [`matmul_q_part`]: some tokens of a batch, with the bits the product over the whole batch
//!   gives them (for callers that compute a batch in slices, such as an output head).
//!
//! Inside the crate (none of it public), block layouts live in `blocks`, one `#[repr(C)]` record
//! per format with a compile-time size check, and the scalar reference kernels (`scalar`) are
//! the oracle for the SIMD ones (AVX2, AVX-512 with VNNI on x86-64, NEON on aarch64), chosen once
//! at run time; the environment variable `STRATA_SIMD=scalar|avx2|avx512|neon` caps the level
//! (see [`SimdLevel`]).
//!
//! **Determinism.** Each output element is computed by exactly one kernel call whose arithmetic
//! does not depend on how rows are grouped or split across threads, so results are bit-identical
//! for any thread count. The float order is the one llama.cpp's CPU backend (0c1e57098, x86-64
//! AVX-512 build) uses for the same product, and llama.cpp picks its kernel by type, row count
//! and batch size `n`:
//!
//! - Q4_K and Q2_K with `rows % 8 == 0` (weights it repacks): its gemm for the tokens in whole
//!   groups of four (the first `n - n % 4`), its gemv for the rest (see the `scalar::q4k` and
//!   `scalar::q2k` modules);
//! - Q4_0, IQ4_NL and MXFP4 with `rows % 8 == 0` (also repacked): one order for every token
//!   (`scalar::q4_0_repacked`, `scalar::mxfp4::mxfp4_repacked`);
//! - any other K-quant matrix (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), IQ4_XS and the IQ1/IQ2/IQ3
//!   formats with `n >= 8`: its tiled matmul (the `tiled` module);
//! - F16 (`cols % 16 == 0`) and BF16 (`cols % 32 == 0`) with `rows % 4 == 0` and `n >= 2`:
//!   llamafile's tinyBLAS;
//! - everything else: its `vec_dot`, one element at a time (the order [`vec_dot`] always uses),
//!   except IQ4_NL with `n >= 2`, which takes tinyBLAS's lanes.
//!
//! So `matmul` row `t` may differ from `matvec` of token `t` in the last bits, and a batch
//! computed in slices must say which batch each slice belongs to ([`matmul_q_part`]): the
//! kernel is chosen by the batch's `n`, not the slice's. Results never depend on threads or on
//! how rows are tiled. `tests/sweep.rs` checks every type against llama.cpp's `MUL_MAT` for
//! every `n` up to 600, whole and in slices.
//!
//! This crate does no I/O and needs no threads or filesystem (without feature `rayon` every
//! product runs on the calling thread).

#![allow(clippy::needless_range_loop)] // index loops mirror the block layouts

// Layering: a module imports only from its own layer or the layers below it.
//
// 0. `blocks`: block layouts, f16/bf16 conversions, the checked byte views; `grids`: the IQ
//    formats' lattice tables (generated from gguf-py).
// 1. `dequant`, `quantize`: whole blocks to and from `f32`.
// 2. `scalar` (with `scalar::{lanes, q2k, q3k, q4k, q5k, tiled}`): the reference float order
//    of every format and kernel llama.cpp runs, the oracle of every kernel. Imports `blocks` and
//    `dequant`'s unpacking only: never `simd`, `driver`, `calibrate`, `q2k`, `q4k` or `tiled`.
// 3. Kernels and their choice: `simd` (per-ISA kernels, scalar row drivers, the kernel per
//    type and level), `q2k`/`q4k` (the repacked K-quants' kernels per order), `tiled` (the
//    kernels of llama.cpp's tiled order, chosen per level).
// 4. `driver` (which kernel each product takes; matvec/matmul), `team` (the threads a
//    product's row tiles run on: rayon's, or a one-token step's spinning team), `calibrate`,
//    and the API in this file. `QuantError` and the small helpers here (`row_bytes`,
//    `f32_bytes`) may be used from any layer.
mod blocks;
mod calibrate;
mod dequant;
mod driver;
mod grids;
mod q2k;
mod q4k;
mod quantize;
mod scalar;
mod simd;
mod team;
mod tiled;

use strata_gguf::GgmlType;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use calibrate::{calibrate, calibrations, kernel_level, Calibration};
pub use driver::{
    matmul, matmul_q, matmul_q_id, matmul_q_part, matmul_q_part_with, matmul_q_with, matvec,
    matvec_q, matvec_q_many, matvec_q_with, vec_dot, Matvec, Part,
};
pub use simd::SimdLevel;
pub use team::{for_each_index, with_team};

/// Errors of the quantization and dot-product functions.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    /// The type has no implementation here for this operation (integer types, NVFP4, …).
    #[error("{ty} is not supported by strata-quant for {op}")]
    Unsupported {
        /// The type asked for.
        ty: GgmlType,
        /// What was asked: "dequantize", "quantize", "dot product", "activations".
        op: &'static str,
    },
    /// A length is not a whole number of blocks (or elements).
    #[error("{ty}: length {len} is not a multiple of {unit} {what}")]
    BadLength {
        /// The type whose block size applies.
        ty: GgmlType,
        /// The offending length.
        len: usize,
        /// The unit it must be a multiple of.
        unit: usize,
        /// What the length counts.
        what: &'static str,
    },
    /// A buffer has the wrong size for the shape given.
    #[error("{ty}: {what} has {got}, expected {expected}")]
    SizeMismatch {
        /// The type of the data.
        ty: GgmlType,
        /// Which buffer, and in what unit.
        what: &'static str,
        /// The size the shape implies.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// Activations quantized to one type were given to weights that pair with another.
    #[error("{weights} weights need {expected} activations, got {got}")]
    ActsType {
        /// The weight type.
        weights: GgmlType,
        /// The activation type it pairs with.
        expected: GgmlType,
        /// The activation type given.
        got: GgmlType,
    },
    /// A SIMD level was requested that this CPU (or build) does not have.
    #[error("SIMD level {0:?} is not available on this CPU")]
    SimdUnavailable(SimdLevel),
}

/// Bytes of `n` elements of `ty`, checking that `n` is a whole number of blocks.
pub(crate) fn row_bytes(ty: GgmlType, n: usize, what: &'static str) -> Result<usize, QuantError> {
    ty.row_size(n as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::BadLength {
            ty,
            len: n,
            unit: ty.block_size(),
            what,
        })
}

/// Dequantizes `out.len()` elements of type `ty` from `bytes` into `out`.
///
/// `bytes` must hold exactly `out.len()` elements (`ty.row_size(out.len())` bytes). Bit-identical
/// to ggml's `dequantize_row_*` and gguf-py's `gguf.quants.dequantize`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use blocks::view;
    let need = row_bytes(ty, out.len(), "elements (a whole number of blocks)")?;
    if !is_supported(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "dequantize",
        });
    }
    if bytes.len() != need {
        return Err(QuantError::SizeMismatch {
            ty,
            what: "input bytes",
            expected: need,
            got: bytes.len(),
        });
    }
    match ty {
        GgmlType::F32 => dequant::f32(bytes, out),
        GgmlType::F16 => dequant::f16(bytes, out),
        GgmlType::BF16 => dequant::bf16(bytes, out),
        GgmlType::Q4_0 => dequant::q4_0(view(bytes)?, out),
        GgmlType::Q4_1 => dequant::q4_1(view(bytes)?, out),
        GgmlType::Q5_0 => dequant::q5_0(view(bytes)?, out),
        GgmlType::Q5_1 => dequant::q5_1(view(bytes)?, out),
        GgmlType::Q8_0 => dequant::q8_0(view(bytes)?, out),
        GgmlType::Q8_1 => dequant::q8_1(view(bytes)?, out),
        GgmlType::Q2_K => dequant::q2_k(view(bytes)?, out),
        GgmlType::Q3_K => dequant::q3_k(view(bytes)?, out),
        GgmlType::Q4_K => dequant::q4_k(view(bytes)?, out),
        GgmlType::Q5_K => dequant::q5_k(view(bytes)?, out),
        GgmlType::Q6_K => dequant::q6_k(view(bytes)?, out),
        GgmlType::Q8_K => dequant::q8_k(view(bytes)?, out),
        GgmlType::IQ4_NL => dequant::iq4_nl(view(bytes)?, out),
        GgmlType::IQ4_XS => dequant::iq4_xs(view(bytes)?, out),
        GgmlType::IQ2_XXS => dequant::iq2_xxs(view(bytes)?, out),
        GgmlType::IQ2_XS => dequant::iq2_xs(view(bytes)?, out),
        GgmlType::IQ2_S => dequant::iq2_s(view(bytes)?, out),
        GgmlType::IQ3_XXS => dequant::iq3_xxs(view(bytes)?, out),
        GgmlType::IQ3_S => dequant::iq3_s(view(bytes)?, out),
        GgmlType::IQ1_S => dequant::iq1_s(view(bytes)?, out),
        GgmlType::IQ1_M => dequant::iq1_m(view(bytes)?, out),
        GgmlType::TQ1_0 => dequant::tq1_0(view(bytes)?, out),
        GgmlType::TQ2_0 => dequant::tq2_0(view(bytes)?, out),
        GgmlType::MXFP4 => dequant::mxfp4(view(bytes)?, out),
        _ => unreachable!("is_supported covers exactly the arms above"),
    }
    Ok(())
}

/// Whether `ty` is one of the formats this crate computes with (dequantize and dot product).
pub fn is_supported(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
            | IQ2_XXS
            | IQ2_XS
            | IQ2_S
            | IQ3_XXS
            | IQ3_S
            | IQ1_S
            | IQ1_M
            | TQ1_0
            | TQ2_0
            | MXFP4
    )
}

/// Quantizes `src` (a whole number of blocks of `ty`) to `ty`'s bytes.
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K (bit-identical to ggml's
/// reference quantizers), Q4_K, Q5_K, Q6_K (our quantizer; its round-trip error bounds are in
/// the crate's README and `tests/roundtrip.rs`). Q2_K and Q3_K and the unsupported formats give
/// [`QuantError::Unsupported`].
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    use blocks::view_mut;
    let n = row_bytes(ty, src.len(), "elements (a whole number of blocks)")?;
    let mut out = vec![0u8; n];
    match ty {
        GgmlType::F32 => quantize::f32(src, &mut out),
        GgmlType::F16 => quantize::f16(src, &mut out),
        GgmlType::BF16 => quantize::bf16(src, &mut out),
        GgmlType::Q4_0 => quantize::q4_0(src, view_mut(&mut out)),
        GgmlType::Q4_1 => quantize::q4_1(src, view_mut(&mut out)),
        GgmlType::Q5_0 => quantize::q5_0(src, view_mut(&mut out)),
        GgmlType::Q5_1 => quantize::q5_1(src, view_mut(&mut out)),
        GgmlType::Q8_0 => quantize::q8_0(src, view_mut(&mut out)),
        GgmlType::Q8_1 => quantize::q8_1(src, view_mut(&mut out)),
        GgmlType::Q8_K => quantize::q8_k(src, view_mut(&mut out)),
        GgmlType::Q4_K => quantize::q4_k(src, view_mut(&mut out)),
        GgmlType::Q5_K => quantize::q5_k(src, view_mut(&mut out)),
        GgmlType::Q6_K => quantize::q6_k(src, view_mut(&mut out)),
        _ => return Err(QuantError::Unsupported { ty, op: "quantize" }),
    }
    Ok(out)
}

/// The activation type that weights of type `ty` are multiplied with (ggml's `vec_dot_type`).
pub fn vec_dot_type(ty: GgmlType) -> Result<GgmlType, QuantError> {
    use GgmlType::*;
    Ok(match ty {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | MXFP4 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Q8_K,
        IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ1_M | TQ1_0 | TQ2_0 => Q8_K,
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dot product",
            })
        }
    })
}

/// Activations quantized once, reusable for every weight of the same [`vec_dot_type`].
///
/// Holds `n_rows` rows (tokens) of `cols` elements, each row quantized to `ty` (F32 rows are
/// kept as `f32`).
#[derive(Clone, Debug)]
pub struct QuantizedActs {
    ty: GgmlType,
    n_rows: usize,
    cols: usize,
    row_bytes: usize,
    buf: ActBuf,
}

#[derive(Clone, Debug)]
enum ActBuf {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
}

impl QuantizedActs {
    /// The activation type (F32, F16, BF16, Q8_0, Q8_1 or Q8_K).
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    /// Number of rows (tokens).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The bytes of row `t` (for F32, the native-endian bytes of the `f32`s).
    ///
    /// # Panics
    /// If `t >= n_rows`.
    pub fn row(&self, t: usize) -> &[u8] {
        assert!(
            t < self.n_rows,
            "row {t} of {} activation rows",
            self.n_rows
        );
        let all: &[u8] = match &self.buf {
            ActBuf::F32(v) => f32_bytes(v),
            ActBuf::Bytes(v) => v,
        };
        &all[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// Views `f32`s as bytes.
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: `u8` has alignment 1 and every byte of an `f32` is initialized; the view covers
    // exactly the `f32`s' memory with the same lifetime.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Quantizes `n_rows` rows of `cols` activations (`x` row-major) to `dot_ty`
/// (F32, F16, BF16, Q8_0, Q8_1 or Q8_K, as returned by [`vec_dot_type`]).
///
/// Q8_0 and Q8_1 follow llama.cpp's x86 run-time activation quantizer (`d = amax/127`,
/// `q = round_ties_even(x · 127/amax)`), which is what llama.cpp multiplies with on the CPU;
/// it can differ by one in a quant from [`quantize()`]'s reference rounding (half away from zero).
/// Q8_K follows ggml's reference (`d = max/−127` of the signed absolute maximum, round half to
/// even, with `bsums`), which is also what llama.cpp runs. F16 rounds each value to nearest
/// even (llama.cpp's `ggml_cpu_fp32_to_fp16`); BF16 likewise, NaN kept quiet
/// (`ggml_cpu_fp32_to_bf16`).
pub fn quantize_acts(
    dot_ty: GgmlType,
    x: &[f32],
    n_rows: usize,
    cols: usize,
) -> Result<QuantizedActs, QuantError> {
    if n_rows.checked_mul(cols) != Some(x.len()) {
        return Err(QuantError::SizeMismatch {
            ty: dot_ty,
            what: "activations (elements)",
            expected: n_rows.saturating_mul(cols),
            got: x.len(),
        });
    }
    let row_bytes = row_bytes(dot_ty, cols, "activation columns")?;
    let buf = match dot_ty {
        GgmlType::F32 => ActBuf::F32(x.to_vec()),
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K | GgmlType::F16 | GgmlType::BF16 => {
            let mut buf = vec![0u8; row_bytes * n_rows];
            driver::for_each_row(x, cols, &mut buf, row_bytes, |xr, out| match dot_ty {
                GgmlType::Q8_0 => quantize::q8_0_runtime(xr, blocks::view_mut(out)),
                GgmlType::Q8_1 => quantize::q8_1_runtime(xr, blocks::view_mut(out)),
                GgmlType::F16 => quantize::f16(xr, out),
                GgmlType::BF16 => quantize::bf16(xr, out),
                _ => quantize::q8_k(xr, blocks::view_mut(out)),
            });
            ActBuf::Bytes(buf)
        }
        _ => {
            return Err(QuantError::Unsupported {
                ty: dot_ty,
                op: "activations",
            })
        }
    };
    Ok(QuantizedActs {
        ty: dot_ty,
        n_rows,
        cols,
        row_bytes,
        buf,
    })
}

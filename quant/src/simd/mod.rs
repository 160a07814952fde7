//! Kernel selection: the SIMD level, detected once, and the row-dot kernel per weight type.
//!
//! A kernel computes `out[r] = W[r] · x` for `r in 0..out.len()`, where row `r` of `W` is
//! `w[r * row_bytes..][..row_bytes]` and `x` is one quantized activation row. SIMD kernels may
//! process several rows per activation load, but each row's arithmetic is the same whatever the
//! grouping, so results never depend on how rows are split between calls or threads.

use std::sync::OnceLock;

use strata_gguf::GgmlType;

use crate::blocks::{view, Block, BlockQ8_0, BlockQ8_1, BlockQ8_K};
use crate::{blocks, scalar};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_q0;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_q0;
#[cfg(target_arch = "x86_64")]
mod bf16;
#[cfg(target_arch = "x86_64")]
mod f16;
#[cfg(target_arch = "x86_64")]
mod half_rows;
#[cfg(target_arch = "x86_64")]
mod iq1_x86;
#[cfg(target_arch = "x86_64")]
mod iq2_x86;
#[cfg(target_arch = "x86_64")]
mod iq3_x86;
#[cfg(target_arch = "x86_64")]
mod iq4_nl_x86;
#[cfg(target_arch = "x86_64")]
mod iq4_xs_x86;
#[cfg(target_arch = "x86_64")]
mod iq_signs;
#[cfg(target_arch = "x86_64")]
mod iq_vbmi;
#[cfg(target_arch = "x86_64")]
mod mxfp4_x86;
#[cfg(target_arch = "x86_64")]
mod tiles_x86;
#[cfg(target_arch = "x86_64")]
pub(crate) use tiles_x86::Tiles;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod q2k_x86;
#[cfg(target_arch = "x86_64")]
mod q4k_x86;
#[cfg(target_arch = "x86_64")]
mod repacked_x86;
#[cfg(target_arch = "x86_64")]
mod tq_x86;

/// Generates the three row drivers of an IQ2/IQ3 format (`vec_dot` rows, tiled rows, tiled
/// four-token rows) around its AVX2 kernels on block slices, `$dot(w, x) -> f32` and
/// `$tiled_dot::<N>(w, [x; N]) -> [f32; N]`; the drivers are handed out only when the CPU has
/// AVX2/FMA/F16C.
#[cfg(target_arch = "x86_64")]
macro_rules! iq_row_drivers {
    ($block:ty, $dot:ident, $tiled_dot:ident, $rows:ident, $tiled_rows:ident,
     $tiled_rows4:ident) => {
        /// Rows · one token in the `vec_dot` order.
        fn $rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            use $crate::blocks::{view, BlockQ8_K};
            $crate::simd::check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            let x = view::<BlockQ8_K>(x).expect("activation blocks");
            for (r, o) in out.iter_mut().enumerate() {
                let wr = view::<$block>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
                // SAFETY: `kernel` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                *o = unsafe { $dot(wr, x) };
            }
        }

        /// Rows · one token in the tiled order.
        fn $tiled_rows(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            use $crate::blocks::{view, BlockQ8_K};
            $crate::simd::check_rows::<$block, BlockQ8_K>(w, row_bytes, x, out.len());
            let x = view::<BlockQ8_K>(x).expect("activation blocks");
            for (r, o) in out.iter_mut().enumerate() {
                let wr = view::<$block>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
                // SAFETY: `tiled_kernels` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                *o = unsafe { $tiled_dot::<1>(wr, [x])[0] };
            }
        }

        /// Rows · four tokens in the tiled order.
        fn $tiled_rows4(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]) {
            use $crate::blocks::{view, BlockQ8_K};
            let n = out[0].len();
            assert!(out.iter().all(|o| o.len() == n), "output lengths differ");
            let x = x.map(|x| {
                $crate::simd::check_rows::<$block, BlockQ8_K>(w, row_bytes, x, n);
                view::<BlockQ8_K>(x).expect("activation blocks")
            });
            for r in 0..n {
                let wr = view::<$block>(&w[r * row_bytes..][..row_bytes]).expect("weight blocks");
                // SAFETY: `tiled_kernels` hands this function out only when the CPU has
                // AVX2/FMA/F16C.
                let v = unsafe { $tiled_dot::<4>(wr, x) };
                for t in 0..4 {
                    out[t][r] = v[t];
                }
            }
        }
    };
}
/// Lets the IQ2/IQ3 modules name [`iq_row_drivers!`] by path.
#[cfg(target_arch = "x86_64")]
use iq_row_drivers;

/// Inputs for the kernels' unit tests that the public API cannot make.
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod test_util {
    /// Pseudo-random bytes (a 64-bit LCG's high bytes).
    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    /// `nb` Q8_K blocks with scale 1 whose quants are often −128 (which the public quantizer
    /// never makes): `vec_dot`'s sign wraps there and the tiled order's products do not.
    pub(crate) fn acts(nb: usize, seed: u64) -> Vec<u8> {
        let mut v = bytes(nb * 292, seed);
        for b in v.chunks_exact_mut(292) {
            b[..4].copy_from_slice(&1f32.to_le_bytes());
            for q in &mut b[4..260] {
                if *q % 3 == 0 {
                    *q = 0x80;
                }
            }
        }
        v
    }

    /// One test per format: the AVX2 `vec_dot` (`$dot`) and tiled (`$tiled_dot`, one and four
    /// tokens) kernels of an IQ2/IQ3 format with `$block` weights equal the scalar references
    /// `$vd` and `$td` bit for bit, on random blocks (f16 scale 1.0) with many −128 activation
    /// quants. Expands to a `#[test]` named `$name`.
    macro_rules! check_iq_kernels {
        ($name:ident, $block:ty, $dot:ident, $tiled_dot:ident, $vd:path, $td:path) => {
            #[test]
            fn $name() {
                use $crate::blocks::{view, BlockQ8_K};
                use $crate::simd::test_util::{acts, bytes};
                use $crate::simd::SimdLevel;
                if !SimdLevel::Avx2.is_available() {
                    return;
                }
                let nb = 3;
                let size = std::mem::size_of::<$block>();
                for seed in 0..20u64 {
                    let mut wb = bytes(nb * size, seed);
                    for b in wb.chunks_exact_mut(size) {
                        b[..2].copy_from_slice(&[0x00, 0x3C]); // f16 1.0
                    }
                    let w = view::<$block>(&wb).unwrap();
                    let xb: [Vec<u8>; 4] = std::array::from_fn(|t| acts(nb, 100 * seed + t as u64));
                    let x: [&[BlockQ8_K]; 4] = std::array::from_fn(|t| view(&xb[t]).unwrap());
                    // SAFETY: AVX2/FMA/F16C checked above.
                    let got = unsafe { $dot(w, x[0]) };
                    assert_eq!(got.to_bits(), $vd(w, x[0]).to_bits(), "vec_dot seed {seed}");
                    let want: [f32; 4] = std::array::from_fn(|t| $td(w, x[t]));
                    // SAFETY: as above.
                    let one = unsafe { $tiled_dot::<1>(w, [x[0]]) };
                    assert_eq!(one[0].to_bits(), want[0].to_bits(), "tiled seed {seed}");
                    // SAFETY: as above.
                    let four = unsafe { $tiled_dot::<4>(w, x) };
                    assert_eq!(
                        four.map(f32::to_bits),
                        want.map(f32::to_bits),
                        "tiled4 seed {seed}"
                    );
                }
            }
        };
    }
    pub(crate) use check_iq_kernels;
}

/// Bytes ahead of a pass's first row that a linear prefetch ([`Prefetch::Linear`]) reaches.
/// The lead must cover the memory's bandwidth × latency, which grows with the bandwidth: on
/// AMD Zen 4 a lead of 3–4 KiB gave an output head's 640-column Q8_0 rows 2.2× the throughput
/// of per-row prefetching (which lands in the rows being read), but on AMD Zen 5 (one core
/// reads 31 GiB/s) the 640-column Q5_0 rows read 19.5–19.8 GiB/s from DRAM with 3 KiB, 22–24
/// with 6 KiB, 23.7–24 with 12 KiB and 23–26 with 24 KiB (one thread; criterion
/// `matvec_cold/Q5_0/65536x640`), and Gemma 3 270M decoded 6% faster with 12 KiB. 12 KiB is
/// 3/8 of the smallest L1 data cache of the CPUs measured (32 KiB on Zen 3/4).
#[cfg(target_arch = "x86_64")]
pub(super) const PF_LINEAR_BYTES: usize = 12288;
/// Largest pass (rows × blocks) prefetched linearly ([`Prefetch::for_pass`]; ~8.7 KiB of Q8_0).
#[cfg(target_arch = "x86_64")]
pub(super) const PF_PASS_BLOCKS: usize = 256;

/// How a one-token kernel's pass prefetches weights as it walks its blocks.
///
/// Long rows are separate streams, each prefetched a fixed number of blocks ahead. Short rows
/// (an output head's 640 columns, an FFN's down projection of a small model) make a pass one
/// contiguous region a few KiB long, read a block of every row at a time; there the pass
/// prefetches the bytes [`PF_LINEAR_BYTES`] beyond its start, a few lines per block step, so the
/// lines of the next passes arrive in address order (the hardware prefetchers do not follow a
/// pass's interleaved row streams through such a region).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(super) enum Prefetch {
    /// Each row's block `i + n` (every line it starts in) at block `i`.
    Rows(usize),
    /// At block step `i` of a pass over the rows `w` ([`Prefetch::step`]), the pass's bytes per
    /// step rounded up to whole lines, `L = ⌈w.len() · size / 64⌉`: lines `i·L .. (i+1)·L` (64
    /// bytes each) from `at`.
    Linear {
        /// The first byte prefetched.
        at: *const u8,
    },
}

#[cfg(target_arch = "x86_64")]
impl Prefetch {
    /// The prefetch of a pass over `rows` consecutive rows of `nb` blocks from `first`: linear
    /// when the pass is at most [`PF_PASS_BLOCKS`] blocks, else each row `row_ahead` blocks
    /// ahead. A linear prefetch starts [`PF_LINEAR_BYTES`] past the pass's start, or one whole
    /// pass ahead where the pass is longer (so that every row of the next pass is fetched while
    /// this one runs: with the earlier lead of 3 KiB, the AVX2 Q4_K gemv's passes of four
    /// 4096- or 8192-column rows, 9 to 18 KiB, read the last rows' first blocks unfetched, and
    /// an 8192² matrix went from 8.8 to 13.3 GiB/s from DRAM on one thread of an AMD EPYC
    /// Zen 3).
    #[inline(always)]
    pub(super) fn for_pass<B>(
        first: *const B,
        rows: usize,
        nb: usize,
        row_ahead: usize,
    ) -> Prefetch {
        if rows * nb <= PF_PASS_BLOCKS {
            let pass = rows * nb * std::mem::size_of::<B>();
            Prefetch::Linear {
                at: first.cast::<u8>().wrapping_add(PF_LINEAR_BYTES.max(pass)),
            }
        } else {
            Prefetch::Rows(row_ahead)
        }
    }

    /// Issues the prefetches of block step `i` for the pass's rows `w` (all of them in one
    /// call: a linear prefetch covers the whole pass at once). A prefetch never faults, and
    /// `wrapping_add` keeps the address arithmetic defined past the end of the weights.
    ///
    /// Every count here is a compile-time constant where `w` is an array (a kernel's pass of
    /// `N` rows), so the block loop carries no loop over a run-time line count: with one, the
    /// one-token Q8_0/Q5_0 kernel on 640-column rows took a third longer.
    #[inline(always)]
    pub(super) fn step<B>(self, w: &[*const B], i: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        match self {
            Prefetch::Rows(n) => {
                for r in w {
                    let at = r.wrapping_add(i + n).cast::<i8>();
                    for l in 0..std::mem::size_of::<B>().div_ceil(64) {
                        // SAFETY: prefetching has no memory effects and never faults.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64 * l)) };
                    }
                }
            }
            Prefetch::Linear { at } => {
                let lines = (w.len() * std::mem::size_of::<B>()).div_ceil(64);
                for l in 0..lines {
                    // SAFETY: as above.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add((i * lines + l) * 64).cast())
                    };
                }
            }
        }
    }
}

/// The x86 Q2_K kernels at most at `level` (see [`crate::q2k::kernels`]), where this CPU has
/// them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn q2k_x86(level: SimdLevel, repacked: bool) -> Option<(RowsFn, Option<Rows4Fn>)> {
    q2k_x86::kernels(level, repacked)
}

/// The x86 Q4_K kernels at most at `level` (see [`crate::q4k::kernels`]), where this CPU has
/// them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn q4k_x86(level: SimdLevel, repacked: bool) -> Option<(RowsFn, Option<Rows4Fn>)> {
    q4k_x86::kernels(level, repacked)
}

/// The x86 kernels (one token, four tokens) of llama.cpp's tiled K-quant order (see
/// [`crate::tiled`]) for `ty` at most at `level`, where this CPU has them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn tiled_x86(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    if level >= SimdLevel::Avx512 {
        if let Some((k, k4)) = avx512::tiled_kernels(ty) {
            return Some((k, Some(k4)));
        }
    }
    if let Some(k) = iq_tiled_x86(level, ty) {
        return Some(k);
    }
    if level < SimdLevel::Avx2 || !SimdLevel::Avx2.is_available() {
        return None;
    }
    let k = match ty {
        GgmlType::Q2_K => q2k_x86::tiled_rows,
        GgmlType::Q4_K => q4k_x86::tiled_rows,
        _ => avx2::tiled_kernel(ty)?,
    };
    Some((k, None))
}

/// The x86 tiled-order kernels of the IQ formats (IQ4_XS, IQ1/IQ2/IQ3) at most at `level`,
/// where this CPU has them.
#[cfg(target_arch = "x86_64")]
fn iq_tiled_x86(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    iq4_xs_x86::tiled_kernels(level, ty)
        .or_else(|| iq2_x86::tiled_kernels(level, ty))
        .or_else(|| iq3_x86::tiled_kernels(level, ty))
        .or_else(|| iq1_x86::tiled_kernels(level, ty))
}

/// The x86 `vec_dot`-order kernels of the IQ, ternary and MXFP4 formats at most at `level`,
/// where this CPU has them.
#[cfg(target_arch = "x86_64")]
fn iq_x86(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    iq4_xs_x86::kernel(level, ty)
        .or_else(|| iq2_x86::kernel(level, ty))
        .or_else(|| iq3_x86::kernel(level, ty))
        .or_else(|| iq1_x86::kernel(level, ty))
        .or_else(|| tq_x86::kernel(level, ty))
        .or_else(|| mxfp4_x86::kernel(level, ty))
}

/// The batch size from which llama.cpp tries llamafile's `sgemm` (F16/BF16 weights here).
pub(crate) const SGEMM_MIN_TOKENS: usize = 2;

/// F16 × F16 in tinyBLAS order (`scalar::f16_sgemm`).
fn scalar_f16_sgemm(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::f16_sgemm(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}

/// BF16 × BF16 in tinyBLAS order (`scalar::bf16_sgemm`).
fn scalar_bf16_sgemm(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::bf16_sgemm(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}

/// The kernels (one token, four tokens) of llamafile's tinyBLAS `sgemm` for F16 or BF16
/// weights at most at `level` (one 16-lane accumulator per output: AVX-512 FMAs for F16,
/// `vdpbf16ps` for BF16; the driver decides when llama.cpp takes this path). Panics for other
/// types.
pub(crate) fn sgemm_kernels(level: SimdLevel, ty: GgmlType) -> (RowsFn, Option<Rows4Fn>) {
    #[cfg(target_arch = "x86_64")]
    {
        let k = match ty {
            GgmlType::F16 => f16::sgemm_kernels(level),
            _ => bf16::sgemm_kernels(level),
        };
        if let Some((k, k4)) = k {
            return (k, Some(k4));
        }
    }
    let _ = level;
    match ty {
        GgmlType::F16 => (scalar_f16_sgemm, None),
        GgmlType::BF16 => (scalar_bf16_sgemm, None),
        _ => panic!("no tinyBLAS kernel for {ty:?}"),
    }
}

/// The kernels for a Q4_0 or IQ4_NL matrix whose row count is a multiple of 8, at most at
/// `level`: llama.cpp repacks such matrices and computes them in another float order (see
/// [`scalar::q4_0_repacked`]); the four-token kernel, where there is one, gives the same results.
pub(crate) fn repacked(level: SimdLevel, ty: GgmlType) -> Option<(RowsFn, Option<Rows4Fn>)> {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = repacked_x86::kernels(level, ty) {
        return Some(k);
    }
    let _ = level;
    match ty {
        GgmlType::Q4_0 => Some((scalar_q4_0_repacked, None)),
        GgmlType::IQ4_NL => Some((scalar_iq4_nl_repacked, None)),
        GgmlType::MXFP4 => Some((scalar_mxfp4_repacked, None)),
        _ => None,
    }
}

/// The one-token kernel for an IQ4_NL matrix llama.cpp does not repack (its `vec_dot` order,
/// which differs from its batch kernel's), at most at `level`.
pub(crate) fn iq4_nl_vec_dot(level: SimdLevel) -> RowsFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = iq4_nl_x86::kernel(level) {
        return k;
    }
    let _ = level;
    scalar_iq4_nl_vec_dot
}

/// One token's Q8_0 activation block prepared for a [`BatchKernel`] (and for the AVX-512
/// one-token Q0 kernel): the 32 quants and the integer each of the eight lane sums starts
/// from (a per-format offset correction).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ActBlock {
    /// The block's quants.
    pub(crate) y: [i8; 32],
    /// Lane `l`: `-OFF · Σ y[4l..4l+4]`, `OFF` the weight format's quant offset.
    pub(crate) init: [i32; 8],
}

/// The activations of a batch, prepared once per product for a [`BatchKernel`].
#[derive(Debug)]
// Only the x86 batch kernels read the fields.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct BatchActs {
    /// Tokens.
    pub(crate) n: usize,
    /// Blocks per token.
    pub(crate) nb: usize,
    /// `n × nb` prepared blocks, token-major.
    pub(crate) blocks: Vec<ActBlock>,
    /// `n × nb` activation scales as f32, token-major.
    pub(crate) d: Vec<f32>,
}

/// A kernel for many tokens at once (Q8_0, Q5_0, Q4_0, IQ4_NL × Q8_0 on AVX-512 and on
/// AVX2): the same per-output float order as the [`RowsFn`] of its type, with register tiles
/// of several rows × several tokens and each weight block unpacked once per row group.
#[derive(Clone, Copy)]
pub(crate) struct BatchKernel {
    /// Prepares one token's Q8_0 row: its blocks and scales.
    pub(crate) prepare_row: fn(x: &[u8], out: &mut [ActBlock], d: &mut [f32]),
    /// `out[t][r] = W[r] · x[t]` for every row `r` of `w` (rows of `row_bytes`) and every token
    /// `t` in `tokens`.
    pub(crate) run: fn(
        w: &[u8],
        row_bytes: usize,
        x: &BatchActs,
        tokens: std::ops::Range<usize>,
        out: &mut OutRows,
    ),
}

/// Where a [`BatchKernel`] writes: rows `0..rows` of tokens `tokens` of a row-major output,
/// token `t`'s row `r` at `ptr + t · stride + r`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct OutRows {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
    tokens: std::ops::Range<usize>,
}

impl OutRows {
    /// # Safety
    /// For every `t` in `tokens`, the `rows` floats from `ptr + t · stride` are valid for
    /// writes and accessed by nothing else while the value lives.
    pub(crate) unsafe fn new(
        ptr: *mut f32,
        stride: usize,
        rows: usize,
        tokens: std::ops::Range<usize>,
    ) -> OutRows {
        OutRows {
            ptr,
            stride,
            rows,
            tokens,
        }
    }

    /// The rows of each token.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The tokens.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn tokens(&self) -> std::ops::Range<usize> {
        self.tokens.clone()
    }

    /// Writes `v` to rows `r..r + v.len()` of token `t`.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn write(&mut self, t: usize, r: usize, v: &[f32]) {
        assert!(
            self.tokens.contains(&t) && r <= self.rows && v.len() <= self.rows - r,
            "output position out of range"
        );
        // SAFETY: inside the region `new`'s contract makes writable and exclusive (checked
        // just above).
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(t * self.stride + r), v.len())
        };
    }
}

impl BatchActs {
    /// Checks a batch kernel's arguments for weight blocks `B`: `w` is whole rows of
    /// `row_bytes`, each the activations' `nb > 0` blocks, and `tokens` were prepared. Returns
    /// `(nb, rows)`.
    ///
    /// # Panics
    /// If any of these does not hold.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn check<B: Block>(
        &self,
        w: &[u8],
        row_bytes: usize,
        tokens: &std::ops::Range<usize>,
    ) -> (usize, usize) {
        let nb = row_bytes / std::mem::size_of::<B>();
        assert!(
            row_bytes == nb * std::mem::size_of::<B>() && nb == self.nb && nb > 0,
            "row is not the activations' whole {} blocks",
            B::TYPE
        );
        let rows = w.len() / row_bytes;
        assert!(rows * row_bytes == w.len(), "weights are not whole rows");
        assert!(tokens.end <= self.n, "token range past the activations");
        assert!(
            self.blocks.len() == self.n * nb && self.d.len() == self.n * nb,
            "prepared activations have the wrong size"
        );
        (nb, rows)
    }
}

impl BatchKernel {
    /// The `n` tokens' rows `xrow(t)` (Q8_0, `nb` blocks each), prepared.
    pub(crate) fn prepare<'x>(
        &self,
        n: usize,
        nb: usize,
        xrow: impl Fn(usize) -> &'x [u8],
    ) -> BatchActs {
        let mut x = BatchActs {
            n,
            nb,
            blocks: vec![ActBlock::default(); n * nb],
            d: vec![0.0; n * nb],
        };
        if nb > 0 {
            for (t, (b, d)) in x
                .blocks
                .chunks_exact_mut(nb)
                .zip(x.d.chunks_exact_mut(nb))
                .enumerate()
            {
                (self.prepare_row)(xrow(t), b, d);
            }
        }
        x
    }
}

/// The batch kernel for `ty` at most at `level`, where there is one (Q8_0, Q5_0, Q4_0, IQ4_NL
/// at AVX-512 or AVX2; the caller decides that the product uses their `vec_dot`/tinyBLAS lane
/// order).
pub(crate) fn batch_kernel(level: SimdLevel, ty: GgmlType) -> Option<BatchKernel> {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx512 && level.is_available() {
        return avx512_q0::batch_kernel(ty);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return avx2_q0::batch_kernel(ty);
    }
    let _ = (level, ty);
    None
}

/// A row-dot kernel: `out[r] = dot(w[r*row_bytes..][..row_bytes], x)`.
pub(crate) type RowsFn = fn(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]);

/// A four-token kernel: `out[t][r] = dot(w[r*row_bytes..][..row_bytes], x[t])`; the result for
/// each (r, t) is bit-identical to the [`RowsFn`] of the same type and level, except for Q4_K
/// and Q2_K (see [`crate::q4k`], [`crate::q2k`]), where both reproduce llama.cpp's kernels for
/// their token groups.
pub(crate) type Rows4Fn = fn(w: &[u8], row_bytes: usize, x: [&[u8]; 4], out: [&mut [f32]; 4]);

/// Groups of sixteen tokens at once (each group's activations laid out by [`Prep16::new`];
/// `out[16 g + j]` is token `j` of group `g`): each group is four groups of four, bit-identical
/// to four calls of the matching [`Rows4Fn`].
pub(crate) type Rows16Fn = fn(w: &[u8], row_bytes: usize, x: &[Prep16], out: &mut [&mut [f32]]);

/// Sixteen tokens' Q8_K activation rows laid out for a [`Rows16Fn`], token `t` in lane (or
/// byte group) `t`: per block, for each group of four elements the sixteen tokens' four signed
/// quants (`vpdpbusd`'s signed operand, against the weights' broadcast unsigned nibbles); per
/// pair of sub-blocks the tokens' two 32-element sums; the scales.
pub(crate) struct Prep16 {
    /// Blocks per row.
    pub(crate) nb: usize,
    /// `[block][group of four elements][token][4]`.
    pub(crate) q: Vec<Line<[u8; 64]>>,
    /// `[block][pair p][token][sum of sub-block 2p, of 2p + 1]`.
    pub(crate) bs: Vec<Line<[i16; 32]>>,
    /// `[block][token]`.
    pub(crate) d: Vec<Line<[f32; 16]>>,
}

/// One 64-byte value aligned to a cache line, so that a 512-bit load of it never spans two
/// lines (a split load costs about twice a whole one; a `Vec<[u8; 64]>` is only as aligned as
/// the allocator happens to make it).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

impl Prep16 {
    /// Lays out sixteen Q8_K rows of equal length.
    ///
    /// # Panics
    /// If the rows are not whole Q8_K blocks or differ in length.
    pub(crate) fn new(x: [&[u8]; 16]) -> Prep16 {
        let rows = x.map(|r| blocks::view::<BlockQ8_K>(r).expect("whole Q8_K blocks"));
        let nb = rows[0].len();
        assert!(
            rows.iter().all(|r| r.len() == nb),
            "token rows differ in length"
        );
        let mut p = Prep16 {
            nb,
            q: vec![Line([0; 64]); nb * 64],
            bs: vec![Line([0; 32]); nb * 4],
            d: vec![Line([0.0; 16]); nb],
        };
        for i in 0..nb {
            for (t, row) in rows.iter().enumerate() {
                let a = &row[i];
                for (k, q4) in a.qs.chunks_exact(4).enumerate() {
                    for (o, &v) in p.q[64 * i + k].0[4 * t..4 * t + 4].iter_mut().zip(q4) {
                        *o = v as u8;
                    }
                }
                for j in 0..8 {
                    p.bs[4 * i + j / 2].0[2 * t + j % 2] = a.bsum(2 * j) + a.bsum(2 * j + 1);
                }
                p.d[i].0[t] = a.d();
            }
        }
        p
    }
}

/// The sixteen-token kernel of llama.cpp's gemm order for repacked Q4_K at most at `level`,
/// where there is one (AVX-512, AVX2).
pub(crate) fn q4k_gemm16(level: SimdLevel) -> Option<Rows16Fn> {
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx512 && SimdLevel::Avx512.is_available() {
        return Some(q4k_x86::gemm_rows16_512);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && SimdLevel::Avx2.is_available() {
        return Some(q4k_x86::gemm_rows16_256);
    }
    let _ = level;
    None
}

/// An instruction-set level for the dot-product kernels, ordered from lowest to highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable scalar reference code.
    Scalar,
    /// aarch64 NEON.
    Neon,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI (plus everything AVX2 needs).
    Avx512,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// Whether this CPU (and build) can run kernels of this level.
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                SimdLevel::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The highest level this CPU supports.
    pub fn detected() -> SimdLevel {
        SimdLevel::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_available())
            .unwrap_or(SimdLevel::Scalar)
    }

    /// The level the kernels use: [`detected`](Self::detected), capped by the environment
    /// variable `STRATA_SIMD` (`scalar`, `neon`, `avx2`, `avx512`; a level above the CPU's is
    /// capped to the CPU's; empty reads as unset). Read once, on first use, and cached.
    ///
    /// # Panics
    /// If `STRATA_SIMD` holds anything else: a misspelt level must not silently run another.
    pub fn active() -> SimdLevel {
        static ACTIVE: OnceLock<SimdLevel> = OnceLock::new();
        *ACTIVE.get_or_init(|| match std::env::var("STRATA_SIMD") {
            // Set but empty reads as unset.
            Ok(v) if !v.trim().is_empty() => {
                let forced = SimdLevel::parse(&v).unwrap_or_else(|| {
                    panic!("STRATA_SIMD={v:?}: expected scalar, neon, avx2 or avx512")
                });
                SimdLevel::ALL
                    .into_iter()
                    .rev()
                    .find(|l| *l <= forced && l.is_available())
                    .unwrap_or(SimdLevel::Scalar)
            }
            _ => SimdLevel::detected(),
        })
    }

    /// Parses a level name (`scalar`, `neon`, `avx2`, `avx512`), case-insensitively.
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx-512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

/// Views activation bytes as `f32`s (they always come from an `f32` buffer).
#[inline(always)]
pub(crate) fn as_f32(x: &[u8]) -> &[f32] {
    // SAFETY: every bit pattern is a valid `f32`; `align_to` only yields the aligned middle part.
    let (pre, mid, post) = unsafe { x.align_to::<f32>() };
    assert!(
        pre.is_empty() && post.is_empty(),
        "f32 activations must be 4-byte aligned whole f32s"
    );
    mid
}

/// Scalar kernel for block formats: one `scalar::*` call per row.
macro_rules! scalar_rows {
    ($name:ident, $wb:ty, $ab:ty, $f:path) => {
        fn $name(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let xa = view::<$ab>(x).expect("activation row is whole blocks");
            for (r, o) in out.iter_mut().enumerate() {
                let wr = view::<$wb>(&w[r * row_bytes..(r + 1) * row_bytes])
                    .expect("weight row is whole blocks");
                *o = $f(wr, xa);
            }
        }
    };
}

scalar_rows!(scalar_q4_0, blocks::BlockQ4_0, BlockQ8_0, scalar::q4_0);
scalar_rows!(
    scalar_q4_0_repacked,
    blocks::BlockQ4_0,
    BlockQ8_0,
    scalar::q4_0_repacked
);
scalar_rows!(
    scalar_iq4_nl,
    blocks::BlockIQ4_NL,
    BlockQ8_0,
    scalar::iq4_nl
);
scalar_rows!(
    scalar_iq4_nl_vec_dot,
    blocks::BlockIQ4_NL,
    BlockQ8_0,
    scalar::iq4_nl_vec_dot
);
scalar_rows!(
    scalar_iq4_nl_repacked,
    blocks::BlockIQ4_NL,
    BlockQ8_0,
    scalar::iq4_nl_repacked
);
scalar_rows!(scalar_q5_0, blocks::BlockQ5_0, BlockQ8_0, scalar::q5_0);
scalar_rows!(scalar_q8_0, BlockQ8_0, BlockQ8_0, scalar::q8_0);
scalar_rows!(scalar_q4_1, blocks::BlockQ4_1, BlockQ8_1, scalar::q4_1);
scalar_rows!(scalar_q5_1, blocks::BlockQ5_1, BlockQ8_1, scalar::q5_1);
scalar_rows!(scalar_q2_k, blocks::BlockQ2_K, BlockQ8_K, scalar::q2_k);
scalar_rows!(scalar_q3_k, blocks::BlockQ3_K, BlockQ8_K, scalar::q3_k);
scalar_rows!(scalar_q5_k, blocks::BlockQ5_K, BlockQ8_K, scalar::q5_k);
scalar_rows!(scalar_q6_k, blocks::BlockQ6_K, BlockQ8_K, scalar::q6_k);
scalar_rows!(
    scalar_iq4_xs,
    blocks::BlockIQ4_XS,
    BlockQ8_K,
    scalar::iq4_xs::iq4_xs
);
scalar_rows!(
    scalar_iq2_xxs,
    blocks::BlockIQ2_XXS,
    BlockQ8_K,
    scalar::iq2::iq2_xxs
);
scalar_rows!(
    scalar_iq2_xs,
    blocks::BlockIQ2_XS,
    BlockQ8_K,
    scalar::iq2::iq2_xs
);
scalar_rows!(
    scalar_iq2_s,
    blocks::BlockIQ2_S,
    BlockQ8_K,
    scalar::iq2::iq2_s
);
scalar_rows!(
    scalar_iq3_xxs,
    blocks::BlockIQ3_XXS,
    BlockQ8_K,
    scalar::iq3::iq3_xxs
);
scalar_rows!(
    scalar_iq3_s,
    blocks::BlockIQ3_S,
    BlockQ8_K,
    scalar::iq3::iq3_s
);
scalar_rows!(
    scalar_iq1_s,
    blocks::BlockIQ1_S,
    BlockQ8_K,
    scalar::iq1::iq1_s
);
scalar_rows!(
    scalar_iq1_m,
    blocks::BlockIQ1_M,
    BlockQ8_K,
    scalar::iq1::iq1_m
);
scalar_rows!(
    scalar_tq1_0,
    blocks::BlockTQ1_0,
    BlockQ8_K,
    scalar::tq::tq1_0
);
scalar_rows!(
    scalar_tq2_0,
    blocks::BlockTQ2_0,
    BlockQ8_K,
    scalar::tq::tq2_0
);
scalar_rows!(
    scalar_mxfp4,
    blocks::BlockMXFP4,
    BlockQ8_0,
    scalar::mxfp4::mxfp4
);
scalar_rows!(
    scalar_mxfp4_repacked,
    blocks::BlockMXFP4,
    BlockQ8_0,
    scalar::mxfp4::mxfp4_repacked
);

macro_rules! scalar_float_rows {
    ($name:ident, $f:path) => {
        fn $name(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
            let xf = as_f32(x);
            for (r, o) in out.iter_mut().enumerate() {
                *o = $f(&w[r * row_bytes..(r + 1) * row_bytes], xf);
            }
        }
    };
}

scalar_float_rows!(scalar_f32, scalar::f32);
/// F16 weights × F16 activations (`scalar::f16`, llama.cpp's `vec_dot` order).
fn scalar_f16(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::f16(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}
/// BF16 weights × BF16 activations (`scalar::bf16`, llama.cpp's `vec_dot` order).
fn scalar_bf16(w: &[u8], row_bytes: usize, x: &[u8], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        *o = scalar::bf16(&w[r * row_bytes..(r + 1) * row_bytes], x);
    }
}

/// The scalar kernel for weight type `ty`, if it is one we compute with.
fn scalar_kernel(ty: GgmlType) -> Option<RowsFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => scalar_f32,
        F16 => scalar_f16,
        BF16 => scalar_bf16,
        Q4_0 => scalar_q4_0,
        Q5_0 => scalar_q5_0,
        Q8_0 => scalar_q8_0,
        IQ4_NL => scalar_iq4_nl,
        Q4_1 => scalar_q4_1,
        Q5_1 => scalar_q5_1,
        Q2_K => scalar_q2_k,
        Q3_K => scalar_q3_k,
        Q5_K => scalar_q5_k,
        Q6_K => scalar_q6_k,
        IQ4_XS => scalar_iq4_xs,
        IQ2_XXS => scalar_iq2_xxs,
        IQ2_XS => scalar_iq2_xs,
        IQ2_S => scalar_iq2_s,
        IQ3_XXS => scalar_iq3_xxs,
        IQ3_S => scalar_iq3_s,
        IQ1_S => scalar_iq1_s,
        IQ1_M => scalar_iq1_m,
        TQ1_0 => scalar_tq1_0,
        TQ2_0 => scalar_tq2_0,
        MXFP4 => scalar_mxfp4,
        _ => return None,
    })
}

/// The best kernel for `ty` at most at `level` (falling back to lower levels where a format has
/// no kernel of that level). `level` must be available on this CPU.
pub(crate) fn kernel(level: SimdLevel, ty: GgmlType) -> Option<RowsFn> {
    debug_assert!(level.is_available());
    #[cfg(target_arch = "x86_64")]
    {
        if ty == GgmlType::F16 {
            if let Some(k) = f16::vec_dot_kernel(level) {
                return Some(k);
            }
        }
        if ty == GgmlType::BF16 {
            if let Some(k) = bf16::vec_dot_kernel(level) {
                return Some(k);
            }
        }
        if let Some(k) = iq_x86(level, ty) {
            return Some(k);
        }
        if level >= SimdLevel::Avx512 {
            if let Some(k) = avx512::kernel(ty) {
                return Some(k);
            }
        }
        if level >= SimdLevel::Avx2 {
            if let Some(k) = avx2::kernel(ty) {
                return Some(k);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if level >= SimdLevel::Neon {
            if let Some(k) = neon::kernel(ty) {
                return Some(k);
            }
        }
    }
    scalar_kernel(ty)
}

/// The four-token kernel for `ty` at exactly the level [`kernel`] picks, if it has one.
pub(crate) fn kernel4(level: SimdLevel, ty: GgmlType) -> Option<Rows4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512 && avx512::kernel(ty).is_some() {
            return avx512::kernel4(ty);
        }
    }
    let _ = (level, ty);
    None
}

/// Checks the slice sizes a kernel relies on: `out.len()` rows of `row_bytes` (whole blocks of
/// `W`), and `x` exactly the activation blocks for one row. SIMD kernels call this before any
/// unchecked access.
#[inline(always)]
#[allow(dead_code)] // unused on targets with no SIMD kernels
pub(crate) fn check_rows<W: Block, A: Block>(
    w: &[u8],
    row_bytes: usize,
    x: &[u8],
    rows: usize,
) -> usize {
    let nb = row_bytes / std::mem::size_of::<W>();
    assert!(
        row_bytes.is_multiple_of(std::mem::size_of::<W>()),
        "row is not whole {} blocks",
        W::TYPE
    );
    assert!(
        w.len() >= rows * row_bytes,
        "weights shorter than {rows} rows"
    );
    assert!(
        x.len() == nb * W::ELEMS / A::ELEMS * std::mem::size_of::<A>(),
        "activation row size mismatch"
    );
    nb
}

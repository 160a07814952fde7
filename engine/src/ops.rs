//! The f32 building blocks of the forward pass: RMSNorm, RoPE, softmax, gated activations and
//! f16 helpers.
//!
//! Each function states the formula it computes. Where llama.cpp's CPU backend rounds in a
//! particular way (sums in f64, GELU through an f16 table, f16 attention operands) we round the
//! same way, so that our logits land within a small, measured distance of llama.cpp's.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::config::RopeStyle;

/// Fewest elements for which [`for_rows`] hands rows to other threads (a hand-over costs about a
/// microsecond; one token's row is a few hundred nanoseconds of work).
#[cfg(feature = "threads")]
const PAR_MIN_ELEMS: usize = 1 << 14;

/// Calls `f(t, row)` for each `len`-element row `t` of `x`: on the engine's threads where there
/// are several rows and at least [`PAR_MIN_ELEMS`] elements (a batch's prompt), else in order on
/// this thread (one token). Each row's arithmetic is its own, so results do not depend on where
/// a row runs.
pub(crate) fn for_rows(x: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    let len = len.max(1);
    #[cfg(feature = "threads")]
    if x.len() >= PAR_MIN_ELEMS && x.len() > len && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        x.par_chunks_mut(len).enumerate().for_each(|(t, r)| f(t, r));
        return;
    }
    x.chunks_mut(len).enumerate().for_each(|(t, r)| f(t, r));
}

/// [`for_rows`] over two matrices with the same number of rows: `f(t, a_row, b_row)`.
pub(crate) fn for_rows2(
    a: &mut [f32],
    a_len: usize,
    b: &mut [f32],
    b_len: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Send + Sync,
) {
    let (a_len, b_len) = (a_len.max(1), b_len.max(1));
    debug_assert_eq!(a.len() / a_len, b.len() / b_len);
    #[cfg(feature = "threads")]
    if a.len() + b.len() >= PAR_MIN_ELEMS && a.len() > a_len && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        a.par_chunks_mut(a_len)
            .zip(b.par_chunks_mut(b_len))
            .enumerate()
            .for_each(|(t, (ra, rb))| f(t, ra, rb));
        return;
    }
    a.chunks_mut(a_len)
        .zip(b.chunks_mut(b_len))
        .enumerate()
        .for_each(|(t, (ra, rb))| f(t, ra, rb));
}

/// RMSNorm of one row in place of `out`: `out = x / sqrt(mean(x²) + eps) ⊙ w`.
///
/// The sum of squares is accumulated in f64 and the normalized value is rounded to f32 before the
/// weight multiply, as ggml's `rms_norm` followed by `mul` does.
/// Shapes: `x`, `w`, `out`: `[n]`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), out.len());
    let mean = mean_square(x);
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (xi * scale) * wi;
    }
}

/// `mean(x²)`: squares rounded to f32, summed in f64 in order, the mean rounded to f32 (ggml).
fn mean_square(x: &[f32]) -> f32 {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    (sum / x.len() as f64) as f32
}

/// RMSNorm of one row in place.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let mean = mean_square(x);
    let scale = 1.0 / (mean + eps).sqrt();
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = (*xi * scale) * wi;
    }
}

/// The rotation angles of RoPE at one position: `cos`/`sin` of
/// `θ_i = scale · pos · base^(-2i/n_rot) / ff_i` for `i in 0..n_rot/2`.
///
/// The powers are formed by repeated multiplication in f32 (`θ_{i+1} = θ_i · base^(-2/n_rot)`),
/// as ggml does, rather than one `powf` per index. `freq_factors` (llama 3 `rope_freqs.weight`)
/// divide the angle of each pair when present.
pub fn rope_angles(
    pos: usize,
    n_rot: usize,
    freq_base: f32,
    freq_scale: f32,
    freq_factors: Option<&[f32]>,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let theta_scale = crate::mathf::powf(freq_base, -2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let angle = freq_scale * (theta / ff);
        // glibc's cosf/sinf on every platform (see `mathf`): llama.cpp's bits, also in wasm.
        cos[i] = crate::mathf::cosf(angle);
        sin[i] = crate::mathf::sinf(angle);
        theta *= theta_scale;
    }
}

/// Calls `$body` (an `#[inline(always)]` function using `f32::mul_add`) through a copy compiled
/// with the FMA target feature when the CPU has it, so `mul_add` becomes one instruction instead
/// of a libm call; returns from the calling function. The results are identical either way: a
/// fused multiply-add is correctly rounded in hardware and in libm.
/// Usage: `with_fma!(body(a: &[f32], b: &[f32]) -> f32)`.
macro_rules! with_fma {
    // A body generic over const parameters: `with_fma!(body::<const H: usize, …>(args…))`.
    ($body:ident::<$(const $g:ident: $gt:ty),+>($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn fast<$(const $g: $gt),+>($($arg: $ty),*) $(-> $ret)? {
                $body::<$($g),+>($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports FMA (checked just above), the only requirement of
                // calling a function compiled with that target feature.
                return unsafe { fast::<$($g),+>($($arg),*) };
            }
        }
        $body::<$($g),+>($($arg),*)
    }};
    ($body:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports FMA (checked just above), the only requirement of
                // calling a function compiled with that target feature.
                return unsafe { fast($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}

/// Rotates the first `n_rot` dimensions of one head in place with precomputed angles.
///
/// `Normal` pairs `(2i, 2i+1)`; `Neox` pairs `(i, i + n_rot/2)`. Dimensions past `n_rot` are
/// left as they are. Shapes: `head`: `[head_dim]`, `cos`, `sin`: `[n_rot/2]`.
pub fn rope_apply(head: &mut [f32], n_rot: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    with_fma!(rope_body(
        head: &mut [f32],
        n_rot: usize,
        style: RopeStyle,
        cos: &[f32],
        sin: &[f32]
    ))
}

#[inline(always)]
fn rope_body(head: &mut [f32], n_rot: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    let half = n_rot / 2;
    for i in 0..half {
        let (a, b) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        // ggml's rotation as its compiler emits it: the first product of each line fused
        // into the add (x0·c − x1·s and x0·s + x1·c with one rounding fewer).
        head[a] = x0.mul_add(cos[i], -(x1 * sin[i]));
        head[b] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}

/// Softmax in place as ggml's CPU `soft_max` computes it: `p_j = e_j · (1 / Σ e)` with
/// `e_j = exp(x_j − max)` by [`expf_ggml`], the sum accumulated in f64 over 16-element chunks
/// (each chunk summed by [`reduce16`]). Entries equal to `-inf` (masked) become 0. The chunks
/// start at index 0 of `x`, so callers keep masked entries in place to keep the alignment.
pub fn softmax_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        unsafe { avx512::softmax(x) };
        return;
    }
    with_fma!(softmax_body(x: &mut [f32]))
}

/// [`softmax_inplace`]'s body, inlined into an FMA-enabled copy where the CPU has FMA (so the
/// fused multiply-adds of [`expf_ggml`] are single instructions, not libm calls; same results).
#[inline(always)]
fn softmax_body(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for chunk in x.chunks_mut(16) {
        let mut lanes = [0.0f32; 16];
        for (l, v) in chunk.iter_mut().enumerate() {
            *v = expf_ggml(*v - max);
            lanes[l] = *v;
        }
        sum += f64::from(reduce16(&lanes));
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Softmax of a whole row as ggml's CPU `soft_max` computes one whose length is not a multiple
/// of 16 (a mixture-of-experts router's probabilities): the whole 16-element chunks as in
/// [`softmax_inplace`], then each element past them with the C library's `expf`, added to the
/// f64 sum one by one; `p_j = e_j · (1 / Σ e)`.
pub fn softmax_row(x: &mut [f32]) {
    with_fma!(softmax_row_body(x: &mut [f32]))
}

#[inline(always)]
fn softmax_row_body(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    let whole = x.len() / 16 * 16;
    for chunk in x[..whole].chunks_exact_mut(16) {
        let mut lanes = [0.0f32; 16];
        for (l, v) in chunk.iter_mut().enumerate() {
            *v = expf_ggml(*v - max);
            lanes[l] = *v;
        }
        sum += f64::from(reduce16(&lanes));
    }
    for v in &mut x[whole..] {
        *v = crate::mathf::expf(*v - max);
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

const GELU_COEF_A: f32 = 0.044_715;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU with the tanh approximation: `0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    // `1 + a·x·x` is one fused multiply-add of `a·x` and `x`, as in ggml's compiled table
    // builder; the table entry for x = −1.999 differs in its last f16 bit otherwise.
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// GeGLU in place of `gate`: `gate = gelu_tanh(gate) ⊙ up`.
///
/// As in ggml's CPU backend, GELU is evaluated on the input rounded to f16 and its result
/// rounded to f16 (ggml reads it from a 65536-entry f16 table); inputs ≤ −10 give 0 and
/// inputs ≥ 10 pass through.
pub fn geglu_inplace(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX2 and F16C (checked just above), all that `geglu_avx2` needs.
        let done = unsafe { geglu_avx2(gate, up) };
        geglu_scalar(&mut gate[done..], &up[done..]);
        return;
    }
    geglu_scalar(gate, up);
}

/// [`geglu_inplace`] one element at a time (the reference of the SIMD path).
fn geglu_scalar(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[usize::from(f16::from_f32(x).to_bits())].to_f32() * u
        };
    }
}

/// [`geglu_inplace`] eight elements at a time: F16C rounds the inputs to f16 (to nearest, ties
/// to even, as `f16::from_f32`), a gather reads the table entries, F16C widens them, and the
/// same f32 products are blended by the same comparisons. Returns how many leading elements it
/// did (a multiple of 8); the caller does the rest.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_avx2(gate: &mut [f32], up: &[f32]) -> usize {
    use std::arch::x86_64::*;
    let table = gelu_table();
    let n = gate.len().min(up.len()) / 8 * 8;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    let low16 = _mm256_set1_epi32(0xFFFF);
    for i in (0..n).step_by(8) {
        // SAFETY: `i + 8 <= n <= len` of both slices.
        let (x, u) = unsafe {
            (
                _mm256_loadu_ps(gate.as_ptr().add(i)),
                _mm256_loadu_ps(up.as_ptr().add(i)),
            )
        };
        let idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        // SAFETY: reads the four bytes at byte offset 2·idx (idx ≤ 65535) of the table, whose
        // 65537 entries (128 KiB + 2 bytes) cover them; the low two are entry idx.
        let g = unsafe { _mm256_i32gather_epi32::<2>(table.as_ptr().cast(), idx) };
        let g = _mm256_and_si256(g, low16);
        let t = _mm256_cvtph_ps(_mm_packus_epi32(
            _mm256_castsi256_si128(g),
            _mm256_extracti128_si256::<1>(g),
        ));
        let r = _mm256_blendv_ps(
            _mm256_mul_ps(t, u),
            _mm256_mul_ps(x, u),
            _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi),
        );
        let r = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(x, lo), r);
        // SAFETY: as the loads.
        unsafe { _mm256_storeu_ps(gate.as_mut_ptr().add(i), r) };
    }
    n
}

/// `f16(gelu_tanh(x))` for every f16 bit pattern `x`, built once (128 KiB), and one entry of
/// padding that lets [`geglu_avx2`] gather four bytes at the last entry.
fn gelu_table() -> &'static [f16] {
    static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
            .chain([f16::ZERO])
            .collect()
    })
}

/// SwiGLU in place of `gate`: `gate = silu(gate) ⊙ up` with `silu(x) = x / (1 + e^(−x))`, for
/// rows of `row` elements.
///
/// As ggml's CPU backend does: in each row, the elements of whole 16-element chunks take
/// `e^(−x)` from [`expf_ggml`] (its AVX-512 `exp`), the tail past the last chunk from libm.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32], row: usize) {
    assert_eq!(gate.len(), up.len(), "swiglu: lengths differ");
    for (gr, ur) in gate.chunks_mut(row.max(1)).zip(up.chunks(row.max(1))) {
        let simd = gr.len() / 16 * 16;
        swiglu_chunks(&mut gr[..simd], &ur[..simd]);
        swiglu_tail(&mut gr[simd..], &ur[simd..]);
    }
}

/// SwiGLU of whole 16-element chunks (`gate.len()` a multiple of 16): in AVX-512 where the CPU
/// has it, else [`swiglu_chunks_body`].
fn swiglu_chunks(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above); `up` is as long as `gate`, a
        // multiple of 16 (the caller's chunks).
        unsafe { avx512::swiglu(gate, up) };
        return;
    }
    with_fma!(swiglu_chunks_body(gate: &mut [f32], up: &[f32]))
}

/// [`swiglu_chunks`]' scalar body: `e^(−x)` from [`expf_ggml`].
#[inline(always)]
fn swiglu_chunks_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + expf_ggml(0.0 - x)) * u;
    }
}

/// SwiGLU of a row's elements past its last 16-element chunk (libm's `exp`, as ggml's tail).
#[inline(always)]
fn swiglu_tail(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + crate::mathf::expf(-x)) * u;
    }
}

/// Rounds every value to the nearest f16 and back (what storing into an f16 buffer does).
pub fn round_to_f16(x: &mut [f32]) {
    // Through the slice conversions below (the same round-to-nearest-even as `f16::from_f32`
    // one value at a time).
    let mut h = [f16::ZERO; 64];
    for c in x.chunks_mut(64) {
        let h = &mut h[..c.len()];
        f32_to_f16(c, h);
        f16_to_f32(h, c);
    }
}

/// Converts f32 values to f16 (round to nearest even): F16C eight at a time where the CPU has
/// it, else `half`'s conversion. Panics if the lengths differ.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has F16C (checked just above); the lengths are equal (asserted).
        unsafe { f16c::from_f32(src, dst) };
        return;
    }
    dst.convert_from_f32_slice(src);
}

/// Converts f16 values to f32 (exact): F16C eight at a time where the CPU has it, else
/// `half`'s conversion. Panics if the lengths differ.
///
/// `half`'s own slice conversion calls an out-of-line function per eight values; this loop is
/// one instruction per eight, which matters where attention converts a KV head's rows for
/// every token.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has F16C (checked just above); the lengths are equal (asserted).
        unsafe { f16c::to_f32(src, dst) };
        return;
    }
    src.convert_to_f32_slice(dst);
}

/// F16C slice conversions (exact to f32; round to nearest even to f16, as `half`).
#[cfg(target_arch = "x86_64")]
mod f16c {
    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// F16C available; `dst.len() == src.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn to_f32(src: &[f16], dst: &mut [f32]) {
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            // SAFETY: `i + 8 <= n8 <= len` of both slices (caller: equal lengths).
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for (d, s) in dst[n8..].iter_mut().zip(&src[n8..]) {
            *d = s.to_f32();
        }
    }

    /// # Safety
    /// F16C available; `dst.len() == src.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn from_f32(src: &[f32], dst: &mut [f16]) {
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            // SAFETY: as in `to_f32`.
            unsafe {
                let x = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
            }
        }
        for (d, s) in dst[n8..].iter_mut().zip(&src[n8..]) {
            *d = f16::from_f32(*s);
        }
    }
}

/// `y = a·x + y` element-wise with fused multiply-adds (see `with_fma!`).
pub fn fma_axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[inline(always)]
    fn body(a: f32, x: &[f32], y: &mut [f32]) {
        for (r, &xi) in y.iter_mut().zip(x) {
            *r = a.mul_add(xi, *r);
        }
    }
    with_fma!(body(a: f32, x: &[f32], y: &mut [f32]))
}

/// For each of `H` coefficient rows `coef[h]` and accumulators `acc[h]`:
/// `acc[h][l·n + d] = fma(coef[h][j − base], rows[j][d], acc[h][l·n + d])` for `j` in `j0..j1`
/// in increasing order, `l = j mod lanes`, `d < n`, where
/// `rows[j] = &x[(j − x0)·stride + off..][..n]` (`x` starts at position `x0 ≤ j0`):
/// exactly the fused multiply-adds of [`fma_axpy`] called once per `j` and `h`, in the same
/// order per element, so the same bits. The loops run the other way round (per block of `D`
/// elements and lane, over that lane's `j`, all `H` rows at once), so the accumulators stay in
/// registers and each block of `rows[j]` is loaded once for the `H` rows (attention heads
/// sharing one KV head).
#[allow(clippy::too_many_arguments)]
pub fn fma_axpy_lanes<const H: usize, const D: usize>(
    coef: [&[f32]; H],
    base: usize,
    (j0, j1): (usize, usize),
    x: &[f32],
    (x0, stride, off, n): (usize, usize, usize, usize),
    lanes: usize,
    acc: [&mut [f32]; H],
) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<const H: usize, const D: usize>(
        coef: [&[f32]; H],
        base: usize,
        j0: usize,
        j1: usize,
        x: &[f32],
        x0: usize,
        stride: usize,
        off: usize,
        n: usize,
        lanes: usize,
        acc: [&mut [f32]; H],
    ) {
        // Each lane's first j is one of j0..j0 + lanes.
        for first in j0..j1.min(j0 + lanes) {
            let l = first % lanes;
            let mut d0 = 0;
            while d0 + D <= n {
                let mut r: [[f32; D]; H] =
                    std::array::from_fn(|h| acc[h][l * n + d0..][..D].try_into().expect("D"));
                let mut j = first;
                while j < j1 {
                    let xr: &[f32; D] = x[(j - x0) * stride + off + d0..][..D]
                        .try_into()
                        .expect("D");
                    for h in 0..H {
                        let c = coef[h][j - base];
                        for d in 0..D {
                            r[h][d] = c.mul_add(xr[d], r[h][d]);
                        }
                    }
                    j += lanes;
                }
                for h in 0..H {
                    acc[h][l * n + d0..][..D].copy_from_slice(&r[h]);
                }
                d0 += D;
            }
            if d0 < n {
                for h in 0..H {
                    let a = &mut acc[h][l * n + d0..l * n + n];
                    let mut j = first;
                    while j < j1 {
                        let c = coef[h][j - base];
                        let xr = &x[(j - x0) * stride + off + d0..][..a.len()];
                        for (r, &xi) in a.iter_mut().zip(xr) {
                            *r = c.mul_add(xi, *r);
                        }
                        j += lanes;
                    }
                }
            }
        }
    }
    for a in &acc {
        assert!(a.len() >= lanes * n, "accumulator shorter than lanes × n");
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        if j0 < j1 {
            assert!(
                x0 <= j0 && base <= j0,
                "rows or coefficients start after {j0}"
            );
            assert!(
                coef.iter().all(|c| c.len() >= j1 - base)
                    && x.len() >= (j1 - 1 - x0) * stride + off + n,
                "coefficients or rows end before position {j1}"
            );
        }
        // SAFETY: the CPU has AVX-512 F (checked just above); the accumulators, coefficients
        // and rows cover every index the kernel reads or writes (asserted just above).
        unsafe { avx512::axpy_lanes(coef, base, (j0, j1), x, (x0, stride, off, n), lanes, acc) };
        return;
    }
    with_fma!(body::<const H: usize, const D: usize>(
        coef: [&[f32]; H],
        base: usize,
        j0: usize,
        j1: usize,
        x: &[f32],
        x0: usize,
        stride: usize,
        off: usize,
        n: usize,
        lanes: usize,
        acc: [&mut [f32]; H]
    ))
}

/// `out[d] = Σ_j coef[j − base] · rows[j][d]` for `j` in `j0..j1` and `d < n`, where
/// `rows[j] = &x[(j − x0)·stride + off..][..n]` (`x` starts at position `x0 ≤ j0`), in the
/// order of [`fma_axpy_lanes`] with 64 lanes followed by the single-token fold: lane `L`
/// (`j ≡ L mod 64`) accumulates its `j` in increasing order with fused multiply-adds from +0,
/// then `(a_0 + a_2) + (a_1 + a_3)` (`a_k` = lane `16k + l`) and [`reduce16`] over `l`. The
/// loops run per block of 16 elements with the four lanes of each `l` as independent chains,
/// all in registers: no `64 × n` accumulator buffer, no scalar reduction.
pub fn weighted_rows_step64(
    coef: &[f32],
    base: usize,
    (j0, j1): (usize, usize),
    x: &[f32],
    (x0, stride, off, n): (usize, usize, usize, usize),
    out: &mut [f32],
) {
    const LANES: usize = 64;
    #[inline(always)]
    fn add<const W: usize>(p: &mut [f32; W], q: &[f32; W]) {
        for d in 0..W {
            p[d] += q[d];
        }
    }
    /// Lanes `l, l + 16, l + 32, l + 48` for elements `d0..d0 + W`, folded.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lane_l<const W: usize>(
        coef: &[f32],
        base: usize,
        (j0, j1): (usize, usize),
        x: &[f32],
        (x0, stride, off): (usize, usize, usize),
        l: usize,
        d0: usize,
    ) -> [f32; W] {
        let mut a = [[0.0f32; W]; 4];
        // Each lane's first j ≥ j0, and the steps all four lanes take.
        let mut start = [0usize; 4];
        let mut steps = usize::MAX;
        for (k, s) in start.iter_mut().enumerate() {
            *s = j0 + (16 * k + l + LANES - j0 % LANES) % LANES;
            steps = steps.min(j1.saturating_sub(*s).div_ceil(LANES));
        }
        let fma_row = |a: &mut [f32; W], j: usize| {
            let c = coef[j - base];
            let r: &[f32; W] = x[(j - x0) * stride + off + d0..][..W]
                .try_into()
                .expect("W");
            for d in 0..W {
                a[d] = c.mul_add(r[d], a[d]);
            }
        };
        for t in 0..steps {
            for k in 0..4 {
                fma_row(&mut a[k], start[k] + t * LANES);
            }
        }
        for k in 0..4 {
            let mut j = start[k] + steps * LANES;
            while j < j1 {
                fma_row(&mut a[k], j);
                j += LANES;
            }
        }
        let [mut a0, mut a1, a2, a3] = a;
        add(&mut a0, &a2);
        add(&mut a1, &a3);
        add(&mut a0, &a1);
        a0
    }
    /// Elements `d0..d0 + W` of the result. Plain loops rather than `array::from_fn`, whose
    /// closures would be compiled outside the FMA target feature (`mul_add` a libm call).
    #[inline(always)]
    fn block<const W: usize>(
        coef: &[f32],
        base: usize,
        js: (usize, usize),
        x: &[f32],
        rows: (usize, usize, usize),
        d0: usize,
    ) -> [f32; W] {
        let mut s = [[0.0f32; W]; 16];
        for (l, sl) in s.iter_mut().enumerate() {
            *sl = lane_l::<W>(coef, base, js, x, rows, l, d0);
        }
        reduce16_each(s)
    }
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body(
        coef: &[f32],
        base: usize,
        j0: usize,
        j1: usize,
        x: &[f32],
        x0: usize,
        stride: usize,
        off: usize,
        n: usize,
        out: &mut [f32],
    ) {
        assert!(
            x0 <= j0 && base <= j0,
            "rows or coefficients start after position {j0}"
        );
        let (js, rows) = ((j0, j1), (x0, stride, off));
        let mut blocks = out[..n].chunks_exact_mut(16);
        for (k, o) in blocks.by_ref().enumerate() {
            o.copy_from_slice(&block::<16>(coef, base, js, x, rows, 16 * k));
        }
        let d0 = n / 16 * 16;
        for (d, o) in blocks.into_remainder().iter_mut().enumerate() {
            *o = block::<1>(coef, base, js, x, rows, d0 + d)[0];
        }
    }
    with_fma!(body(
        coef: &[f32],
        base: usize,
        j0: usize,
        j1: usize,
        x: &[f32],
        x0: usize,
        stride: usize,
        off: usize,
        n: usize,
        out: &mut [f32]
    ))
}

/// [`dot`] of `a` with each of four vectors: the same bits as four calls (and as `dot(b[k], a)`:
/// a fused multiply-add's product is exact, so the operands' order does not matter), with four
/// independent accumulator chains in flight and `a` loaded once for the four.
pub fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    #[inline(always)]
    fn body(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        let mut acc = [[0.0f32; 16]; 4];
        let n = a.len();
        for bk in &b {
            assert_eq!(bk.len(), n, "dot4: lengths differ");
        }
        let full = n / 16 * 16;
        let mut c = 0;
        while c < full {
            let ca: &[f32; 16] = a[c..c + 16].try_into().expect("16");
            for k in 0..4 {
                let cb: &[f32; 16] = b[k][c..c + 16].try_into().expect("16");
                for i in 0..16 {
                    acc[k][i] = ca[i].mul_add(cb[i], acc[k][i]);
                }
            }
            c += 16;
        }
        for k in 0..4 {
            for i in 0..n - full {
                acc[k][i] = a[full + i].mul_add(b[k][full + i], acc[k][i]);
            }
        }
        acc.map(|l| reduce16(&l))
    }
    with_fma!(body(a: &[f32], b: [&[f32]; 4]) -> [f32; 4])
}

/// [`dot`] of each of four vectors `k[j]` with each of four vectors `q[h]` (all of one length):
/// `out[h][j] = dot(q[h], k[j])`, the same bits. With AVX-512 the sixteen accumulator chains run
/// side by side and their [`reduce16`] trees are done together, across registers, so sixteen
/// sums cost fifteen vector adds instead of sixteen lane-by-lane trees.
pub fn dot4x4(k: [&[f32]; 4], q: [&[f32]; 4]) -> [[f32; 4]; 4] {
    let n = q[0].len();
    for v in k.iter().chain(&q) {
        assert_eq!(v.len(), n, "dot4x4: lengths differ");
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above); the lengths are equal (asserted).
        return unsafe { avx512::dot4x4(k, q) };
    }
    let by_key = k.map(|kj| dot4(kj, q));
    std::array::from_fn(|h| std::array::from_fn(|j| by_key[j][h]))
}

/// AVX-512 kernels of the attention scores.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The mask of the first `min(left, 16)` lanes.
    #[inline(always)]
    fn lanes_mask(left: usize) -> __mmask16 {
        if left >= 16 {
            0xFFFF
        } else {
            (1 << left) - 1
        }
    }

    /// [`super::dot4x4`]: accumulator `4j + h` holds pair (`q[h]`, `k[j]`) in 16 lanes, exactly
    /// as [`super::dot`]'s (a tail below 16 elements through masked lanes, the others left
    /// as they are); then [`super::reduce16`]'s tree for all sixteen at once: halves, quarters,
    /// pairs and the last add, each step adding the same lanes as the scalar tree.
    ///
    /// # Safety
    /// AVX-512 F available; all eight slices have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot4x4(k: [&[f32]; 4], q: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let n = q[0].len();
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut c = 0;
        while c + 16 <= n {
            // SAFETY: elements `c..c + 16` of slices of length `n` (caller).
            let qv = q.map(|v| unsafe { _mm512_loadu_ps(v.as_ptr().add(c)) });
            for (j, kj) in k.iter().enumerate() {
                // SAFETY: as above.
                let kv = unsafe { _mm512_loadu_ps(kj.as_ptr().add(c)) };
                for (h, qv) in qv.iter().enumerate() {
                    acc[4 * j + h] = _mm512_fmadd_ps(kv, *qv, acc[4 * j + h]);
                }
            }
            c += 16;
        }
        if c < n {
            let m = lanes_mask(n - c);
            // SAFETY: the masked lanes are elements `c..n` of each slice (caller: length `n`).
            let qv = q.map(|v| unsafe { _mm512_maskz_loadu_ps(m, v.as_ptr().add(c)) });
            for (j, kj) in k.iter().enumerate() {
                // SAFETY: as above.
                let kv = unsafe { _mm512_maskz_loadu_ps(m, kj.as_ptr().add(c)) };
                for (h, qv) in qv.iter().enumerate() {
                    acc[4 * j + h] = _mm512_mask3_fmadd_ps(kv, *qv, acc[4 * j + h], m);
                }
            }
        }
        // Halves: `w[i]` = [a_lo + a_hi, b_lo + b_hi] of `a = acc[2i]`, `b = acc[2i + 1]`.
        let w: [__m512; 8] = std::array::from_fn(|i| {
            let (a, b) = (acc[2 * i], acc[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            )
        });
        // Quarters: 128-bit lane `l` of `z[i]` holds accumulator `4i + l`'s four partials.
        let z: [__m512; 4] = std::array::from_fn(|i| {
            let (a, b) = (w[2 * i], w[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            )
        });
        // Pairs: per 128-bit lane `[u0 + u2, u1 + u3]` of `z[2i]`'s then of `z[2i + 1]`'s.
        let r: [__m512; 2] = std::array::from_fn(|i| {
            let (a, b) = (z[2 * i], z[2 * i + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
                _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
            )
        });
        // Last: element `e` of 128-bit lane `l` is accumulator `4e + l`'s sum, that is
        // (`q[l]`, `k[e]`).
        let f = _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(r[0], r[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(r[0], r[1]),
        );
        // SAFETY: sixteen floats are a 512-bit vector, any bits valid.
        unsafe { std::mem::transmute::<__m512, [[f32; 4]; 4]>(f) }
    }

    /// [`super::fma_axpy_lanes`] with sixteen elements per register: per lane `l` and block of
    /// sixteen elements (the last one masked), the `H` accumulators stay in registers over that
    /// lane's positions `j`, each row block loaded once and each coefficient broadcast; the
    /// same fused multiply-adds in the same order per element.
    ///
    /// # Safety
    /// AVX-512 F available; for `j` in `j0..j1`: `coef[h][j − base]` and
    /// `x[(j − x0)·stride + off..][..n]` exist (`base, x0 ≤ j0`), and each `acc[h]` holds
    /// `lanes · n` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn axpy_lanes<const H: usize>(
        coef: [&[f32]; H],
        base: usize,
        (j0, j1): (usize, usize),
        x: &[f32],
        (x0, stride, off, n): (usize, usize, usize, usize),
        lanes: usize,
        acc: [&mut [f32]; H],
    ) {
        let acc = acc.map(|a| a.as_mut_ptr());
        for first in j0..j1.min(j0 + lanes) {
            let l = first % lanes;
            let count = (j1 - first).div_ceil(lanes);
            for d0 in (0..n).step_by(16) {
                let m = lanes_mask(n - d0);
                // Pointers move with wrapping arithmetic; each one is read only while it points
                // at an element the caller's contract covers.
                let at = l * n + d0;
                let mut xp = x.as_ptr().wrapping_add((first - x0) * stride + off + d0);
                let mut cp = coef.map(|c| c.as_ptr().wrapping_add(first - base));
                // SAFETY: the masked lanes of accumulator rows `l·n + d0..` are below `lanes·n`.
                let mut r: [__m512; H] =
                    std::array::from_fn(|h| unsafe { _mm512_maskz_loadu_ps(m, acc[h].add(at)) });
                for _ in 0..count {
                    // SAFETY: `xp` is row `j`'s element `d0` and `cp[h]` coefficient `j − base`
                    // of a position `j < j1` (`count` steps of `lanes` from `first`); the masked
                    // lanes stay below `n`.
                    let (xv, c) = unsafe { (_mm512_maskz_loadu_ps(m, xp), cp.map(|p| *p)) };
                    for h in 0..H {
                        r[h] = _mm512_fmadd_ps(_mm512_set1_ps(c[h]), xv, r[h]);
                        cp[h] = cp[h].wrapping_add(lanes);
                    }
                    xp = xp.wrapping_add(lanes * stride);
                }
                for (h, r) in r.iter().enumerate() {
                    // SAFETY: as the loads of `r`.
                    unsafe { _mm512_mask_storeu_ps(acc[h].add(at), m, *r) };
                }
            }
        }
    }

    /// [`super::expf_ggml`] of sixteen lanes: ggml's `ggml_v_expf`, whose steps the scalar
    /// function spells out (`vscalefps` is its `scale_by_pow2`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn expf(x: __m512) -> __m512 {
        let c = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
        let r = c(0x4B40_0000);
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, c(0x3FB8_AA3B), r), r);
        let b = _mm512_fnmadd_ps(n, c(0x35BF_BE8E), _mm512_fnmadd_ps(n, c(0x3F31_7200), x));
        let u = _mm512_mul_ps(b, b);
        let p = _mm512_fmadd_ps(
            _mm512_fmadd_ps(c(0x3C07_2010), b, c(0x3D2B_9F17)),
            u,
            _mm512_fmadd_ps(c(0x3E2A_AF33), b, c(0x3EFF_FEDB)),
        );
        let j = _mm512_fmadd_ps(
            p,
            u,
            _mm512_fmadd_ps(c(0x3F7F_FFF6), b, _mm512_set1_ps(1.0)),
        );
        let res = _mm512_scalef_ps(j, n);
        // Far out of range (and `x = −inf`, where `n` is −inf): 0 below, inf above.
        let far = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
        if far == 0 {
            return res;
        }
        let below = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, _mm512_setzero_ps());
        let alt = _mm512_mask_blend_ps(below, _mm512_set1_ps(f32::INFINITY), _mm512_setzero_ps());
        _mm512_mask_blend_ps(far, res, alt)
    }

    /// [`super::swiglu_inplace`] of whole 16-element chunks: `x / (1 + e^(0 − x)) · u` with
    /// [`expf`], as the scalar body.
    ///
    /// # Safety
    /// AVX-512 F available; `up` holds `gate.len()` elements, a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        let one = _mm512_set1_ps(1.0);
        for (g, u) in gate.chunks_exact_mut(16).zip(up.chunks_exact(16)) {
            // SAFETY: sixteen elements of each chunk.
            unsafe {
                let x = _mm512_loadu_ps(g.as_ptr());
                let e = expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
                _mm512_storeu_ps(
                    g.as_mut_ptr(),
                    _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr())),
                );
            }
        }
    }

    /// [`super::reduce16`] of a vector's lanes (halves, quarters, pairs).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce16(v: __m512) -> f32 {
        let h = _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        );
        let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let p = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)))
    }

    /// [`super::softmax_inplace`] sixteen lanes at a time: the same chunks, the same
    /// [`expf`], the same f64 sum of each chunk's [`reduce16`] (a last partial chunk's missing
    /// lanes are zeros, as in the scalar body) and the same scale.
    ///
    /// # Safety
    /// AVX-512 F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax(x: &mut [f32]) {
        let n = x.len();
        let ptr = x.as_mut_ptr();
        let mask = |i: usize| lanes_mask(n - i);
        // `vmaxps` returns its second operand where the first is NaN, so NaNs are skipped as
        // `f32::max` skips them.
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..n).step_by(16) {
            // SAFETY: the masked lanes are elements `i..min(i + 16, n)` of `x`.
            let v = unsafe {
                _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask(i), ptr.add(i))
            };
            m = _mm512_max_ps(v, m);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut sum = 0.0f64;
        for i in (0..n).step_by(16) {
            let k = mask(i);
            // SAFETY: as above; missing lanes read as −inf, whose exponential is 0.
            let v =
                unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), k, ptr.add(i)) };
            let e = expf(_mm512_sub_ps(v, max));
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(ptr.add(i), k, e) };
            sum += f64::from(reduce16(e));
        }
        let inv = _mm512_set1_ps((1.0 / sum) as f32);
        for i in (0..n).step_by(16) {
            let k = mask(i);
            // SAFETY: as above.
            unsafe {
                let v = _mm512_maskz_loadu_ps(k, ptr.add(i));
                _mm512_mask_storeu_ps(ptr.add(i), k, _mm512_mul_ps(v, inv));
            }
        }
    }
}

/// Sum of 16 lanes in the order of `_mm512_reduce_add_ps` (halves, quarters, pairs).
#[inline]
pub fn reduce16(l: &[f32; 16]) -> f32 {
    reduce16_each::<1>(l.map(|v| [v]))[0]
}

/// [`reduce16`] of each of `W` elements: `out[d]` sums `s[l][d]` over the 16 lanes `l` in
/// [`reduce16`]'s order. Plain loops (no `array::from_fn` closures), so it inlines into a
/// caller's target features.
#[inline(always)]
fn reduce16_each<const W: usize>(mut s: [[f32; W]; 16]) -> [f32; W] {
    #[inline(always)]
    fn add<const W: usize>(p: &mut [f32; W], q: &[f32; W]) {
        for d in 0..W {
            p[d] += q[d];
        }
    }
    // Halves, quarters, pairs.
    for i in 0..8 {
        let hi = s[i + 8];
        add(&mut s[i], &hi);
    }
    for i in 0..4 {
        let hi = s[i + 4];
        add(&mut s[i], &hi);
    }
    let (mut a, mut b) = (s[0], s[1]);
    add(&mut a, &s[2]);
    add(&mut b, &s[3]);
    add(&mut a, &b);
    a
}

/// Dot product with 16 lanes: lane `j` accumulates elements `j, j+16, …` with fused
/// multiply-adds, then the lanes are summed by [`reduce16`]. This is the order of a 16-wide
/// SIMD loop (llama.cpp's tinyBLAS f16/f32 kernels for batches); the order is fixed, so the
/// result does not depend on threads. A tail shorter than 16 is added lane-wise first.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    with_fma!(dot_body(a: &[f32], b: &[f32]) -> f32)
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let (ea, eb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ea.remainder(), eb.remainder());
    for (ca, cb) in ea.zip(eb) {
        let ca: &[f32; 16] = ca.try_into().expect("chunks of 16");
        let cb: &[f32; 16] = cb.try_into().expect("chunks of 16");
        for i in 0..16 {
            acc[i] = ca[i].mul_add(cb[i], acc[i]);
        }
    }
    for i in 0..ta.len() {
        acc[i] = ta[i].mul_add(tb[i], acc[i]);
    }
    reduce16(&acc)
}

/// Dot product in the order of ggml's `ggml_vec_dot_f16` on AVX-512 (used for single-token
/// products): four 16-lane accumulators over steps of 64, combined as `(a0+a2) + (a1+a3)`,
/// reduced by [`reduce16`], then a tail past the last multiple of 64 added in f64.
pub fn dot_step64(a: &[f32], b: &[f32]) -> f32 {
    with_fma!(dot_step64_body(a: &[f32], b: &[f32]) -> f32)
}

#[inline(always)]
fn dot_step64_body(a: &[f32], b: &[f32]) -> f32 {
    let (head, np) = step64_head(a, b);
    let mut sum = f64::from(head);
    for i in np..a.len() {
        sum += f64::from(a[i] * b[i]);
    }
    sum as f32
}

/// The part of ggml's AVX-512 f16/f32 `vec_dot` before its tail: four 16-lane accumulators
/// over the whole steps of 64, combined as `(a0+a2) + (a1+a3)` and reduced by [`reduce16`];
/// with the length of that part.
#[inline(always)]
fn step64_head(a: &[f32], b: &[f32]) -> (f32, usize) {
    debug_assert_eq!(a.len(), b.len());
    let np = a.len() / 64 * 64;
    let mut acc = [[0.0f32; 16]; 4];
    for (ca, cb) in a[..np].chunks_exact(64).zip(b[..np].chunks_exact(64)) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                let i = 16 * j + l;
                *lane = ca[i].mul_add(cb[i], *lane);
            }
        }
    }
    let w: [f32; 16] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    (reduce16(&w), np)
}

/// Dot product in the order of ggml's `ggml_vec_dot_f32` on AVX-512 (an F32 matrix times one
/// token): as [`dot_step64`], except that the tail past the last multiple of 64 is added in
/// f32, each product rounded first.
pub fn dot_f32_vec(a: &[f32], b: &[f32]) -> f32 {
    with_fma!(dot_f32_vec_body(a: &[f32], b: &[f32]) -> f32)
}

#[inline(always)]
fn dot_f32_vec_body(a: &[f32], b: &[f32]) -> f32 {
    let (mut sum, np) = step64_head(a, b);
    for i in np..a.len() {
        let p = a[i] * b[i];
        sum += p;
    }
    sum
}

/// `exp(x)` as ggml's AVX-512 `ggml_v_expf` computes it (a degree-5 polynomial on the
/// reduced argument and a power-of-two scale; max error ~1.5 ulp). `x = −inf` gives 0; far
/// out of range it gives 0 below and `inf` above, as ggml's does.
#[inline(always)]
pub fn expf_ggml(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return 0.0;
    }
    let r = f32::from_bits(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), r); // log2(e) = 0x1.715476p+0
    let n = z - r;
    // b = x − n·ln2 (in two parts: 0x1.62e4p-1 and 0x1.7f7d1cp-20)
    let b = (-n).mul_add(
        f32::from_bits(0x35BF_BE8E),
        (-n).mul_add(f32::from_bits(0x3F31_7200), x),
    );
    let u = b * b;
    let p = f32::from_bits(0x3C07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3D2B_9F17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3E2A_AF33).mul_add(b, f32::from_bits(0x3EFF_FEDB)),
        ); // 0x1.555e66p-3, 0x1.fffdb6p-2
    let j = p.mul_add(u, f32::from_bits(0x3F7F_FFF6).mul_add(b, 1.0)); // 0x1.ffffecp-1
    if n.abs() > 192.0 {
        // Far out of range: ggml returns 0 below and inf above.
        return if n < 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_by_pow2(j, n as i32)
}

/// `j · 2^n` with one rounding (like `_mm512_scalef_ps`), also into the subnormal range.
fn scale_by_pow2(j: f32, n: i32) -> f32 {
    if n > 127 {
        return (j * 2f32.powi(127)) * 2f32.powi(n - 127);
    }
    if n >= -126 {
        return j * f32::from_bits(((n + 127) as u32) << 23);
    }
    // Subnormal result: scale in f64 (exact) and round once to f32.
    (f64::from(j) * 2f64.powi(n)) as f32
}

/// Reads little-endian f32 values from bytes (a small F32 tensor such as a norm weight).
pub fn f32_from_le_bytes(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values of mixed sign and magnitude (so that a changed order of additions
    /// changes bits).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * (1 << (s % 7)) as f32
            })
            .collect()
    }

    #[test]
    fn swiglu_simd_equals_scalar_body_bit_for_bit() {
        for row in [1, 15, 16, 17, 40, 64, 70] {
            let gate: Vec<f32> = values(3 * row, 50 + row as u64)
                .iter()
                .map(|v| v * 5.0)
                .collect();
            let up = values(3 * row, 60 + row as u64);
            let mut want = gate.clone();
            for (gr, ur) in want.chunks_mut(row).zip(up.chunks(row)) {
                let simd = gr.len() / 16 * 16;
                swiglu_chunks_body(&mut gr[..simd], &ur[..simd]);
                swiglu_tail(&mut gr[simd..], &ur[simd..]);
            }
            let mut got = gate.clone();
            swiglu_inplace(&mut got, &up, row);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "row {row}");
        }
    }

    #[test]
    fn softmax_simd_equals_scalar_body_bit_for_bit() {
        for n in 1..80 {
            // Mixed magnitudes (some differences reach exp's subnormal and zero range), with
            // masked (−inf) entries in front as attention's score rows have them.
            let mut x: Vec<f32> = values(n, 30 + n as u64).iter().map(|v| v * 9.0).collect();
            for v in x.iter_mut().take(n / 5) {
                *v = f32::NEG_INFINITY;
            }
            let mut want = x.clone();
            softmax_body(&mut want);
            let mut got = x.clone();
            softmax_inplace(&mut got);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "n {n}");
        }
    }

    #[test]
    fn dot4x4_equals_sixteen_dots_bit_for_bit() {
        for n in [1, 5, 15, 16, 17, 64, 80, 100, 128, 256] {
            let k: Vec<Vec<f32>> = (0..4).map(|j| values(n, 10 + j)).collect();
            let q: Vec<Vec<f32>> = (0..4).map(|h| values(n, 20 + h)).collect();
            let got = dot4x4(
                std::array::from_fn(|j| &k[j][..]),
                std::array::from_fn(|h| &q[h][..]),
            );
            for h in 0..4 {
                for j in 0..4 {
                    let want = dot(&q[h], &k[j]);
                    assert_eq!(got[h][j].to_bits(), want.to_bits(), "n {n} h {h} j {j}");
                }
            }
        }
    }

    #[test]
    fn dot4_equals_four_dots_bit_for_bit() {
        for n in [1, 15, 16, 17, 64, 200, 256] {
            let a = values(n, 1);
            let b: Vec<Vec<f32>> = (0..4).map(|k| values(n, 2 + k)).collect();
            let got = dot4(&a, [&b[0], &b[1], &b[2], &b[3]]);
            for k in 0..4 {
                assert_eq!(got[k].to_bits(), dot(&a, &b[k]).to_bits(), "n {n} k {k}");
                assert_eq!(got[k].to_bits(), dot(&b[k], &a).to_bits(), "n {n} k {k}");
            }
        }
    }

    #[test]
    fn fma_axpy_lanes_equals_one_axpy_per_row_bit_for_bit() {
        // Rows of n = 70 elements (tails past 16 and 64), stride 3n, offset n; j0 not aligned.
        let (n, stride, off, lanes) = (70usize, 210usize, 70usize, 16usize);
        let (base, j0, j1) = (32usize, 37usize, 101usize);
        let x = values(j1 * stride + off + n, 9);
        let coef: Vec<Vec<f32>> = (0..4u64).map(|h| values(j1 - base, 20 + h)).collect();
        let expected: Vec<Vec<f32>> = (0..4usize)
            .map(|h| {
                let mut acc = values(lanes * n, 40 + h as u64);
                for j in j0..j1 {
                    let row = &x[j * stride + off..][..n];
                    fma_axpy(coef[h][j - base], row, &mut acc[(j % lanes) * n..][..n]);
                }
                acc
            })
            .collect();
        let mut four: Vec<Vec<f32>> = (0..4u64).map(|h| values(lanes * n, 40 + h)).collect();
        let [a0, a1, a2, a3] = &mut four[..] else {
            unreachable!()
        };
        fma_axpy_lanes::<4, 16>(
            [&coef[0], &coef[1], &coef[2], &coef[3]],
            base,
            (j0, j1),
            &x,
            (0, stride, off, n),
            lanes,
            [a0, a1, a2, a3],
        );
        let mut one = values(lanes * n, 42);
        fma_axpy_lanes::<1, 64>(
            [&coef[2]],
            base,
            (j0, j1),
            &x,
            (0, stride, off, n),
            lanes,
            [&mut one],
        );
        // The same rows from a buffer that starts at position x0 = 30 (≤ j0).
        let x0 = 30;
        let mut shifted = values(lanes * n, 42);
        fma_axpy_lanes::<1, 64>(
            [&coef[2]],
            base,
            (j0, j1),
            &x[x0 * stride..],
            (x0, stride, off, n),
            lanes,
            [&mut shifted],
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for h in 0..4 {
            assert_eq!(bits(&four[h]), bits(&expected[h]), "head {h}");
        }
        assert_eq!(bits(&one), bits(&expected[2]));
        assert_eq!(bits(&shifted), bits(&expected[2]));
    }

    /// The single-token weighted sum against its definition: [`fma_axpy_lanes`] into 64 lane
    /// accumulators, then the fold and [`reduce16`] per element.
    #[test]
    fn weighted_rows_step64_equals_lane_accumulators_bit_for_bit() {
        // Rows of n = 70 elements (a tail past 64), stride 3n, offset n; j0 not aligned; fewer
        // positions than lanes, and several per lane.
        let (n, stride, off, lanes) = (70usize, 210usize, 70usize, 64usize);
        let (base, j0) = (32usize, 37usize);
        for j1 in [40usize, 101, 300] {
            let x = values(j1 * stride + off + n, 9);
            let coef = values(j1 - base, 20 + j1 as u64);
            let mut acc = vec![0.0f32; lanes * n];
            let rows = (0, stride, off, n);
            fma_axpy_lanes::<1, 64>([&coef], base, (j0, j1), &x, rows, lanes, [&mut acc]);
            let expected: Vec<f32> = (0..n)
                .map(|d| {
                    let a = |l: usize| acc[l * n + d];
                    reduce16(&std::array::from_fn(|l| {
                        (a(l) + a(32 + l)) + (a(16 + l) + a(48 + l))
                    }))
                })
                .collect();
            let mut got = vec![0.0; n];
            weighted_rows_step64(&coef, base, (j0, j1), &x, rows, &mut got);
            // The same rows from a buffer that starts at position x0 = 30 (≤ j0).
            let x0 = 30;
            let mut shifted = vec![0.0; n];
            let xs = &x[x0 * stride..];
            weighted_rows_step64(
                &coef,
                base,
                (j0, j1),
                xs,
                (x0, stride, off, n),
                &mut shifted,
            );
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&expected), "j1 {j1}");
            assert_eq!(bits(&shifted), bits(&expected), "j1 {j1}, x0 {x0}");
        }
    }

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let mut out = [0.0f32; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6, "{rms}");
        // Sign and ratios preserved.
        assert!((out[3] / out[0] + 4.0).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let mut cos = [0.0f32; 2];
        let mut sin = [0.0f32; 2];
        rope_angles(3, 4, 10_000.0, 1.0, None, &mut cos, &mut sin);
        assert!((cos[0] - 3.0f32.cos()).abs() < 1e-6);
        assert!((sin[1] - (3.0f32 * 0.01).sin()).abs() < 1e-6);

        let head = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let mut normal = head;
        rope_apply(&mut normal, 4, RopeStyle::Normal, &cos, &sin);
        let mut neox = head;
        rope_apply(&mut neox, 4, RopeStyle::Neox, &cos, &sin);
        // Normal rotates (0,1) by θ0: x0' = x0 cos − x1 sin.
        assert!((normal[0] - (cos[0] - 2.0 * sin[0])).abs() < 1e-6);
        // NeoX rotates (0,2) by θ0.
        assert!((neox[0] - (cos[0] - 3.0 * sin[0])).abs() < 1e-6);
        assert_eq!(normal[4], 5.0);
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((n(&normal) - n(&head)).abs() < 1e-4);
        assert!((n(&neox) - n(&head)).abs() < 1e-4);
    }

    #[test]
    fn rope_position_zero_is_identity() {
        let mut cos = [0.0f32; 4];
        let mut sin = [0.0f32; 4];
        rope_angles(
            0,
            8,
            1e6,
            0.5,
            Some(&[1.0, 2.0, 3.0, 4.0]),
            &mut cos,
            &mut sin,
        );
        let mut h = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let orig = h;
        rope_apply(&mut h, 8, RopeStyle::Neox, &cos, &sin);
        assert_eq!(h, orig);
    }

    #[test]
    fn softmax_sums_to_one_and_masks() {
        let mut x = [1.0f32, f32::NEG_INFINITY, 3.0, 2.0];
        softmax_inplace(&mut x);
        assert_eq!(x[1], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[3] && x[3] > x[0]);
    }

    #[test]
    fn gelu_matches_known_values() {
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-1.0) + 0.158_808).abs() < 1e-5);
        let mut g = [-20.0f32, 20.0, 1.0];
        geglu_inplace(&mut g, &[2.0, 2.0, 2.0]);
        assert_eq!(g[0], 0.0);
        assert_eq!(g[1], 40.0);
        assert!((g[2] - 2.0 * 0.841_192).abs() < 2e-3);
    }

    /// `round_to_f16` (slice conversions) rounds every value as `f16::from_f32` one at a time.
    #[test]
    fn round_to_f16_equals_one_at_a_time() {
        let mut x: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9)))
            .collect();
        x.extend([
            0.0,
            -0.0,
            65_504.0,
            65_520.0,
            6e-8,
            -3e-8,
            f32::INFINITY,
            f32::NAN,
        ]);
        let want: Vec<u32> = x
            .iter()
            .map(|&v| f16::from_f32(v).to_f32().to_bits())
            .collect();
        round_to_f16(&mut x);
        let got: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
    }

    /// `f16_to_f32` converts every f16 value as `f16::to_f32` does, in the eights and in a tail.
    #[test]
    fn f16_to_f32_equals_one_at_a_time() {
        let h: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        for n in [h.len(), h.len() - 1, 7] {
            let mut got = vec![0f32; n];
            f16_to_f32(&h[..n], &mut got);
            let want: Vec<u32> = h[..n].iter().map(|v| v.to_f32().to_bits()).collect();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want,
                "n {n}"
            );
        }
    }

    /// The SIMD GeGLU equals the scalar reference bit for bit: every f16 value as input (and
    /// values between them, ±10 and beyond, zeros, infinities, NaN), against several `up`s.
    #[test]
    fn geglu_simd_equals_scalar_bitwise() {
        let mut x: Vec<f32> = (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect();
        x.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 1.000_37e-3 * 11.0));
        x.extend([
            -10.0,
            10.0,
            -9.999_999,
            9.999_999,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            65_520.0,
            -65_520.0,
            1e-8,
            -1e-8,
            3.0,
        ]);
        for up in [1.0f32, -2.5, 0.333, 1e30] {
            let u: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, _)| up * (1.0 + (i % 7) as f32))
                .collect();
            let mut want = x.clone();
            geglu_scalar(&mut want, &u);
            let mut got = x.clone();
            geglu_inplace(&mut got, &u);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "x {} up {}", x[i], u[i]);
            }
        }
    }

    #[test]
    fn swiglu_matches_formula() {
        let mut g = [0.0f32, 2.0];
        swiglu_inplace(&mut g, &[3.0, 0.5], 2);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-2.0f32).exp()) * 0.5).abs() < 1e-6);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.25).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
        let a: Vec<f32> = (0..200).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..200).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot_step64(&a, &b)) - naive).abs() < 1e-4);
    }

    #[test]
    fn expf_ggml_is_close_to_exp() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.05;
            let (got, want) = (expf_ggml(x), x.exp());
            assert!(
                (got - want).abs() <= want * 4e-7 + f32::MIN_POSITIVE,
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(expf_ggml(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_ggml(0.0), 1.0);
    }
}

//! The f32 building blocks of the forward pass: RMSNorm, RoPE, softmax, gated activations and
//! f16 helpers.
//!
//! Each function states the formula it computes. Where llama.cpp's CPU backend rounds in a
//! particular way (sums in f64, GELU through an f16 table, f16 attention operands) we round the
//! same way, so that our logits land within a small, measured distance of llama.cpp's.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::config::RopeStyle;

/// RMSNorm of one row in place of `out`: `out = x / sqrt(mean(x²) + eps) ⊙ w`.
///
/// The sum of squares is accumulated in f64 and the normalized value is rounded to f32 before the
/// weight multiply, as ggml's `rms_norm` followed by `mul` does.
/// Shapes: `x`, `w`, `out`: `[n]`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), out.len());
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (xi * scale) * wi;
    }
}

/// RMSNorm of one row in place.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let sum: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let mean = (sum / x.len() as f64) as f32;
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
    let theta_scale = freq_base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let angle = freq_scale * (theta / ff);
        cos[i] = angle.cos();
        sin[i] = angle.sin();
        theta *= theta_scale;
    }
}

/// Rotates the first `n_rot` dimensions of one head in place with precomputed angles.
///
/// `Normal` pairs `(2i, 2i+1)`; `Neox` pairs `(i, i + n_rot/2)`. Dimensions past `n_rot` are
/// left as they are. Shapes: `head`: `[head_dim]`, `cos`, `sin`: `[n_rot/2]`.
pub fn rope_apply(head: &mut [f32], n_rot: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    let half = n_rot / 2;
    for i in 0..half {
        let (a, b) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[i] - x1 * sin[i];
        head[b] = x0 * sin[i] + x1 * cos[i];
    }
}

/// Softmax in place: `p_j = exp(x_j − max) / Σ exp(x_k − max)`; the sum is accumulated in f64.
/// Entries equal to `-inf` (masked) become 0.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        let e = if *v == f32::NEG_INFINITY {
            0.0
        } else {
            (*v - max).exp()
        };
        *v = e;
        sum += f64::from(e);
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
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// GeGLU in place of `gate`: `gate = gelu_tanh(gate) ⊙ up`.
///
/// As in ggml's CPU backend, GELU is evaluated on the input rounded to f16 and its result
/// rounded to f16 (ggml reads it from a 65536-entry f16 table); inputs ≤ −10 give 0 and
/// inputs ≥ 10 pass through.
pub fn geglu_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            let xh = f16::from_f32(x).to_f32();
            f16::from_f32(gelu_tanh(xh)).to_f32() * u
        };
    }
}

/// SwiGLU in place of `gate`: `gate = silu(gate) ⊙ up` with `silu(x) = x / (1 + e^(−x))`.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + (-x).exp()) * u;
    }
}

/// Rounds every value to the nearest f16 and back (what storing into an f16 buffer does).
pub fn round_to_f16(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Converts f32 values to f16 (round to nearest even).
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    dst.convert_from_f32_slice(src);
}

/// Converts f16 values to f32 (exact).
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    src.convert_to_f32_slice(dst);
}

/// Dot product with 16 independent f32 accumulators (vectorizable; the order is fixed, so the
/// result does not depend on threads).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        let (xa, xb) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for i in 0..16 {
            acc[i] = xa[i].mul_add(xb[i], acc[i]);
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 16..a.len() {
        tail = a[i].mul_add(b[i], tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a · x` (vectorizable).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = a.mul_add(xi, *yi);
    }
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

    #[test]
    fn swiglu_matches_formula() {
        let mut g = [0.0f32, 2.0];
        swiglu_inplace(&mut g, &[3.0, 0.5]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 / (1.0 + (-2.0f32).exp()) * 0.5).abs() < 1e-6);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.25).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}

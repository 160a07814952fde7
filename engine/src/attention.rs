//! Grouped-query attention of a batch of query tokens over the cached keys and values, with a
//! causal mask and an optional sliding window.
//!
//! For query token `t` at position `p_t` and query head `h` (KV head `g = h / (n_head / n_head_kv)`):
//! ```text
//! s_j   = q_th · k_jg                      for every cached position j
//! s_j   = c · tanh(s_j · (1/c))            (soft-capping, when c > 0: gemma2)
//! s_j   = scale · s_j
//! s_j   = −inf  if j > p_t                 (causal)
//!               or p_t − j ≥ window        (sliding window; llama.cpp's LLAMA_SWA_TYPE_STANDARD)
//! a     = softmax(s)
//! o_th  = Σ_j a_j · v_jg
//! ```
//! With an f16 KV cache the query head is rounded to f16 before the dot products and the
//! probabilities are rounded to f16 before weighting V, which is what ggml's f16 matrix products
//! do to their f32 operand.

use half::f16;

use crate::ops;

/// Shapes and rules of one layer's attention.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_head_kv: usize,
    /// Width of a query/key head.
    pub head_dim: usize,
    /// Width of a value head.
    pub head_dim_v: usize,
    /// Multiplier of the scores inside the softmax.
    pub scale: f32,
    /// Soft-capping of the scores before the softmax: `c · tanh(s · (1/c))`; 0 = off.
    pub softcap: f32,
    /// Sliding window in positions (`None` = full causal attention).
    pub window: Option<usize>,
    /// Round queries and probabilities to f16 (the KV cache is f16).
    pub f16_operands: bool,
    /// More than one query token in this call (selects the summation order of a batched
    /// product rather than a single-token one).
    pub batched: bool,
}

/// Computes attention for `n_tok` query tokens at positions `pos0..pos0 + n_tok`.
///
/// Shapes: `q`: `[n_tok, n_head · head_dim]`; `keys`: `[n_kv, n_head_kv · head_dim]` and
/// `values`: `[n_kv, n_head_kv · head_dim_v]` for positions `0..n_kv` (`n_kv ≥ pos0 + n_tok`);
/// `out`: `[n_tok, n_head · head_dim_v]`.
pub fn attention(
    q: &[f32],
    pos0: usize,
    keys: &[f32],
    values: &[f32],
    p: &AttnParams,
    out: &mut [f32],
) {
    let q_dim = p.n_head * p.head_dim;
    let o_dim = p.n_head * p.head_dim_v;
    let n_tok = q.len() / q_dim;
    debug_assert_eq!(out.len(), n_tok * o_dim);

    // One task per (token, head): each writes its own disjoint slice of `out`.
    let task = |t: usize, h: usize, o: &mut [f32]| {
        let q_head = &q[t * q_dim + h * p.head_dim..][..p.head_dim];
        attend_one(q_head, pos0 + t, h, keys, values, p, o);
    };

    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(p.head_dim_v)
            .enumerate()
            .for_each(|(i, o)| task(i / p.n_head, i % p.n_head, o));
    }
    #[cfg(not(feature = "threads"))]
    for (i, o) in out.chunks_mut(p.head_dim_v).enumerate() {
        task(i / p.n_head, i % p.n_head, o);
    }
}

/// Attention of one query head at position `pos` over keys `0..=pos`; writes `[head_dim_v]`.
///
/// Summation orders follow llama.cpp's CPU path so that results agree closely: for a batch,
/// tinyBLAS's 16-lane products ([`ops::dot`]); for one token, `ggml_vec_dot_f16`'s 64-wide
/// steps ([`ops::dot_step64`]). Masked positions stay in the score row as `-inf` so the
/// 16-element chunks of the softmax start where ggml's do (at position 0); chunks that are
/// entirely masked contribute exact zeros and are skipped.
fn attend_one(
    q_head: &[f32],
    pos: usize,
    h: usize,
    keys: &[f32],
    values: &[f32],
    p: &AttnParams,
    out: &mut [f32],
) {
    let g = h / (p.n_head / p.n_head_kv);
    let k_dim = p.n_head_kv * p.head_dim;
    let v_dim = p.n_head_kv * p.head_dim_v;

    // q: [head_dim], rounded like the f32 → f16 conversion ggml applies before an f16 product.
    let mut qh = q_head.to_vec();
    if p.f16_operands {
        for x in qh.iter_mut() {
            *x = f16::from_f32(*x).to_f32();
        }
    }

    // Visible keys: j in first..=pos (causal; the window drops j with pos − j ≥ window).
    let first = match p.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    // Score row over [base, end): 16-aligned, masked entries = -inf.
    let base = first / 16 * 16;
    let end = pos + 1;
    let mut scores = vec![f32::NEG_INFINITY; end - base];
    for j in first..end {
        let k = &keys[j * k_dim + g * p.head_dim..][..p.head_dim];
        let s = if p.batched {
            ops::dot(&qh, k)
        } else {
            ops::dot_step64(&qh, k)
        };
        let s = if p.softcap > 0.0 {
            // ggml_scale(1/c), ggml_tanh, ggml_scale(c) on the f32 scores.
            crate::mathf::tanhf(s * (1.0 / p.softcap)) * p.softcap
        } else {
            s
        };
        scores[j - base] = s * p.scale;
    }
    if first == end {
        // A zero window masks everything (llama.cpp would produce NaN); attend to nothing.
        out.fill(0.0);
        return;
    }
    ops::softmax_inplace(&mut scores);
    if p.f16_operands {
        ops::round_to_f16(&mut scores);
    }

    // out[d] = Σ_j a_j · v_j[d], accumulated per lane like the matching ggml kernel:
    // 16 lanes (batch) or 64 lanes (single token), lane = j mod lanes.
    let hv = p.head_dim_v;
    let lanes = if p.batched { 16 } else { 64 };
    let mut acc = vec![0.0f32; lanes * hv];
    for j in first..end {
        let a = scores[j - base];
        let v = &values[j * v_dim + g * hv..][..hv];
        ops::fma_axpy(a, v, &mut acc[(j % lanes) * hv..][..hv]);
    }
    for (d, o) in out.iter_mut().enumerate() {
        let l16: [f32; 16] = if p.batched {
            std::array::from_fn(|l| acc[l * hv + d])
        } else {
            std::array::from_fn(|l| {
                let a = |jj: usize| acc[(16 * jj + l) * hv + d];
                (a(0) + a(2)) + (a(1) + a(3))
            })
        };
        *o = ops::reduce16(&l16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(window: Option<usize>) -> AttnParams {
        AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim: 2,
            head_dim_v: 2,
            scale: 1.0,
            softcap: 0.0,
            window,
            f16_operands: false,
            batched: true,
        }
    }

    #[test]
    fn first_position_returns_its_own_value() {
        let q = [1.0, 0.0, 0.0, 1.0]; // two heads
        let keys = [0.3, 0.4];
        let values = [5.0, -7.0];
        let mut out = [0.0; 4];
        attention(&q, 0, &keys, &values, &params(None), &mut out);
        assert_eq!(out, [5.0, -7.0, 5.0, -7.0]);
    }

    #[test]
    fn causal_mask_hides_future_and_window_hides_old() {
        // Three cached positions; query at position 1 must not see position 2.
        let keys = [0.0, 0.0, 0.0, 0.0, 100.0, 100.0];
        let values = [1.0, 1.0, 3.0, 3.0, 1000.0, 1000.0];
        let q = [1.0, 1.0, 1.0, 1.0];
        let mut out = [0.0; 4];
        attention(&q, 1, &keys, &values, &params(None), &mut out);
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}"); // mean of 1 and 3
                                                         // Window 1: position 1 sees only itself.
        attention(&q, 1, &keys, &values, &params(Some(1)), &mut out);
        assert!((out[0] - 3.0).abs() < 1e-6, "{out:?}");
        // Window 2 at position 2: sees 1 and 2, not 0 (2 − 0 ≥ 2).
        attention(&q, 2, &keys, &values, &params(Some(2)), &mut out);
        assert!(out[0] > 999.0);
    }
}

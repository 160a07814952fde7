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

/// One layer's cached keys or values, `[n_kv, n_head_kv · dim]`, as the cache stores them.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    /// Single precision, read in place.
    F32(&'a [f32]),
    /// Half precision: each task of [`attention`] converts the rows of its own KV head and
    /// visible positions (exactly: every f16 is an f32), so one token's conversions run in
    /// parallel and stay in cache.
    F16(&'a [f16]),
}

impl<'a> KvRows<'a> {
    /// All rows as f32: `self` for f32, else converted into `scratch` (exact). Worth it for a
    /// batch of tokens, whose tasks would otherwise each convert the same rows.
    pub fn to_f32(self, scratch: &'a mut Vec<f32>) -> KvRows<'a> {
        match self {
            KvRows::F32(_) => self,
            KvRows::F16(h) => {
                scratch.resize(h.len(), 0.0);
                ops::f16_to_f32(h, scratch);
                KvRows::F32(scratch)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            KvRows::F32(x) => x.len(),
            KvRows::F16(x) => x.len(),
        }
    }
}

/// The rows of one KV head for positions `first..end` as f32: position `j`'s row is
/// `x[(j − x0)·stride + off..][..dim]`.
struct HeadRows<'a> {
    x: &'a [f32],
    x0: usize,
    stride: usize,
    off: usize,
}

impl<'a> HeadRows<'a> {
    /// Head `g`'s `dim`-wide rows of `src` (rows of `width` elements) for positions
    /// `first..end`: f32 storage in place, f16 converted into `buf`.
    fn new(
        src: KvRows<'a>,
        (width, g, dim): (usize, usize, usize),
        (first, end): (usize, usize),
        buf: &'a mut Vec<f32>,
    ) -> HeadRows<'a> {
        match src {
            KvRows::F32(x) => HeadRows {
                x,
                x0: 0,
                stride: width,
                off: g * dim,
            },
            KvRows::F16(h) => {
                buf.resize((end - first) * dim, 0.0);
                if width == dim {
                    ops::f16_to_f32(&h[first * dim..end * dim], buf);
                } else {
                    for (j, row) in (first..end).zip(buf.chunks_exact_mut(dim)) {
                        ops::f16_to_f32(&h[j * width + g * dim..][..dim], row);
                    }
                }
                HeadRows {
                    x: buf,
                    x0: first,
                    stride: dim,
                    off: 0,
                }
            }
        }
    }

    /// Position `j`'s row.
    fn row(&self, j: usize, dim: usize) -> &[f32] {
        &self.x[(j - self.x0) * self.stride + self.off..][..dim]
    }
}

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
/// `out`: `[n_tok, n_head · head_dim_v]`. f16 rows are converted by the tasks that read them
/// (for a batch, [`KvRows::to_f32`] first converts them once for every token).
pub fn attention(
    q: &[f32],
    pos0: usize,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    p: &AttnParams,
    out: &mut [f32],
) {
    let q_dim = p.n_head * p.head_dim;
    let o_dim = p.n_head * p.head_dim_v;
    let n_tok = q.len() / q_dim;
    assert_eq!(out.len(), n_tok * o_dim, "attention output size");
    let n_kv = pos0 + n_tok;
    assert!(
        keys.len() >= n_kv * p.n_head_kv * p.head_dim
            && values.len() >= n_kv * p.n_head_kv * p.head_dim_v,
        "keys or values shorter than {n_kv} positions"
    );
    // The query heads that share one KV head are adjacent (`h / group` is the KV head), and so
    // are their outputs.
    let group = p.n_head / p.n_head_kv;

    // Query heads per task: a whole group, or an equal share of it where there are fewer
    // (token, KV head) pairs than threads (one token of a model with one or two KV heads, such
    // as Gemma 3 270M's one): each share converts its KV head's rows itself, and the shares run
    // side by side. Each head's arithmetic is its own, so the split does not change any bits.
    #[cfg(feature = "threads")]
    let per_task = heads_per_task(group, n_tok * p.n_head_kv, rayon::current_num_threads());
    #[cfg(not(feature = "threads"))]
    let per_task = group;
    let shares = group / per_task;

    // Task `i`: token `t`, KV head `g`, share `s` of its query heads; it writes its own
    // disjoint slice of `out` (its heads' outputs are adjacent), chunk `i` of `per_task` heads.
    let task = |i: usize, o: &mut [f32]| {
        let (t, g, s) = (
            i / (p.n_head_kv * shares),
            i / shares % p.n_head_kv,
            i % shares,
        );
        let h0 = g * group + s * per_task;
        let q_heads = &q[t * q_dim + h0 * p.head_dim..][..per_task * p.head_dim];
        attend_group(q_heads, pos0 + t, g, keys, values, p, o);
    };

    // Through `strata_quant::for_each_index`: rayon's threads, or a one-token step's spinning
    // team (`strata_quant::with_team`), whose threads rayon's own loops would not find idle.
    #[cfg(feature = "threads")]
    {
        let out = OutChunks(out.as_mut_ptr(), per_task * p.head_dim_v);
        let n_tasks = n_tok * p.n_head_kv * shares;
        strata_quant::for_each_index(n_tasks, &|i| {
            // SAFETY: chunk `i < n_tasks` of `out` (`n_tasks` chunks of `per_task` heads are
            // `n_tok · n_head` outputs, the length asserted above); each index runs once, so no
            // two tasks touch the same chunk, and `out` is borrowed mutably by this function
            // for the whole loop.
            let o = unsafe { out.chunk(i) };
            task(i, o);
        });
    }
    #[cfg(not(feature = "threads"))]
    for (i, o) in out.chunks_mut(per_task * p.head_dim_v).enumerate() {
        task(i, o);
    }
}

/// Query heads per attention task: the largest divisor of `group` (query heads per KV head)
/// that still gives `pairs` (token, KV head) pairs at least `threads` tasks, else 1.
#[cfg_attr(not(feature = "threads"), allow(dead_code))]
fn heads_per_task(group: usize, pairs: usize, threads: usize) -> usize {
    (1..=group)
        .rev()
        .find(|&d| group.is_multiple_of(d) && pairs * (group / d) >= threads)
        .unwrap_or(1)
}

/// Attention of query heads of KV head `g` (`q_group`: their `[head_dim]` rows, adjacent; all
/// of the group's heads or a share of them) at position `pos` over keys `0..=pos`; writes their
/// `[head_dim_v]` outputs, adjacent.
///
/// Summation orders follow llama.cpp's CPU path so that results agree closely: for a batch,
/// tinyBLAS's 16-lane products ([`ops::dot`]); for one token, `ggml_vec_dot_f16`'s 64-wide
/// steps ([`ops::dot_step64`], and [`ops::weighted_rows_step64`] for the values). Masked
/// positions stay in the score row as `-inf` so the 16-element chunks of the softmax start
/// where ggml's do (at position 0); chunks that are entirely masked contribute exact zeros and
/// are skipped. Each head's arithmetic is its own
/// (the heads only share loads of the keys and values), so the results are those of one head
/// at a time.
fn attend_group(
    q_group: &[f32],
    pos: usize,
    g: usize,
    keys: KvRows<'_>,
    values: KvRows<'_>,
    p: &AttnParams,
    out: &mut [f32],
) {
    let k_dim = p.n_head_kv * p.head_dim;
    let v_dim = p.n_head_kv * p.head_dim_v;
    let n_q = q_group.len() / p.head_dim;

    // q: [head_dim] per head, rounded like the f32 → f16 conversion ggml applies before an f16
    // product.
    let mut qh = q_group.to_vec();
    if p.f16_operands {
        ops::round_to_f16(&mut qh);
    }
    let q_row = |h: usize| &qh[h * p.head_dim..][..p.head_dim];

    // Visible keys: j in first..=pos (causal; the window drops j with pos − j ≥ window).
    let first = match p.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    if first > pos {
        // A zero window masks everything (llama.cpp would produce NaN); attend to nothing.
        out.fill(0.0);
        return;
    }
    // Score rows over [base, end), one per head: 16-aligned, masked entries = -inf.
    let base = first / 16 * 16;
    let end = pos + 1;
    let width = end - base;
    let (mut kbuf, mut vbuf) = HEAD_BUFS.take();
    let keys = HeadRows::new(keys, (k_dim, g, p.head_dim), (first, end), &mut kbuf);
    let values = HeadRows::new(values, (v_dim, g, p.head_dim_v), (first, end), &mut vbuf);
    let mut scores = vec![f32::NEG_INFINITY; n_q * width];
    let finish = |s: f32| {
        let s = if p.softcap > 0.0 {
            // ggml_scale(1/c), ggml_tanh, ggml_scale(c) on the f32 scores.
            crate::mathf::tanhf(s * (1.0 / p.softcap)) * p.softcap
        } else {
            s
        };
        s * p.scale
    };
    // A batch's scores four keys × four heads at a time (the keys and queries loaded once for
    // the sixteen, their lane trees done together); the rest below, one key at a time.
    let mut j4 = first;
    if p.batched && n_q >= 4 {
        while j4 + 4 <= end {
            let k: [&[f32]; 4] = std::array::from_fn(|i| keys.row(j4 + i, p.head_dim));
            for h in (0..n_q / 4 * 4).step_by(4) {
                let s = ops::dot4x4(k, std::array::from_fn(|i| q_row(h + i)));
                for (i, s) in s.iter().enumerate() {
                    let row = &mut scores[(h + i) * width + j4 - base..][..4];
                    for (r, &s) in row.iter_mut().zip(s) {
                        *r = finish(s);
                    }
                }
            }
            j4 += 4;
        }
    }
    for j in first..end {
        let k = keys.row(j, p.head_dim);
        // Keys before `j4` have their scores of whole groups of four heads already.
        let mut h = if j < j4 { n_q / 4 * 4 } else { 0 };
        if p.batched {
            // Four heads at a time: the key is loaded once for the four.
            while h + 4 <= n_q {
                let s4 = ops::dot4(k, [q_row(h), q_row(h + 1), q_row(h + 2), q_row(h + 3)]);
                for (i, s) in s4.into_iter().enumerate() {
                    scores[(h + i) * width + j - base] = finish(s);
                }
                h += 4;
            }
        }
        for h in h..n_q {
            let s = if p.batched {
                ops::dot(q_row(h), k)
            } else {
                ops::dot_step64(q_row(h), k)
            };
            scores[h * width + j - base] = finish(s);
        }
    }
    for row in scores.chunks_mut(width) {
        ops::softmax_inplace(row);
        if p.f16_operands {
            ops::round_to_f16(row);
        }
    }

    // out[d] = Σ_j a_j · v_j[d], accumulated per lane like the matching ggml kernel:
    // 16 lanes (batch) or 64 lanes (single token), lane = j mod lanes.
    let hv = p.head_dim_v;
    let rows = (values.x0, values.stride, values.off, hv);
    if !p.batched {
        for (c, o) in scores.chunks(width).zip(out.chunks_mut(hv)) {
            ops::weighted_rows_step64(c, base, (first, end), values.x, rows, o);
        }
    } else {
        weighted_rows_batch(&scores, width, base, (first, end), values.x, rows, out);
    }
    HEAD_BUFS.set((kbuf, vbuf));
}

/// A batch's `out[h][d] = Σ_j coef[h][j − base] · rows[j][d]` for each head's score row: 16
/// lane accumulators per head and element, four heads at a time so that each value row is
/// loaded once for the four, then [`ops::reduce16`] per element.
fn weighted_rows_batch(
    scores: &[f32],
    width: usize,
    base: usize,
    (first, end): (usize, usize),
    x: &[f32],
    rows: (usize, usize, usize, usize),
    out: &mut [f32],
) {
    let hv = rows.3;
    let n_q = scores.len() / width;
    let lanes = 16;
    let mut acc = vec![0.0f32; n_q * lanes * hv];
    let mut coef = scores.chunks(width);
    let mut accs = acc.chunks_mut(lanes * hv);
    let mut left = n_q;
    while left >= 4 {
        let c: [&[f32]; 4] = std::array::from_fn(|_| coef.next().expect("a row per head"));
        let a: [&mut [f32]; 4] = std::array::from_fn(|_| accs.next().expect("a row per head"));
        ops::fma_axpy_lanes::<4, 16>(c, base, (first, end), x, rows, lanes, a);
        left -= 4;
    }
    for (c, a) in coef.zip(accs) {
        ops::fma_axpy_lanes::<1, 64>([c], base, (first, end), x, rows, lanes, [a]);
    }
    for (o, acc) in out.chunks_mut(hv).zip(acc.chunks(lanes * hv)) {
        for (d, o) in o.iter_mut().enumerate() {
            *o = ops::reduce16(&std::array::from_fn(|l| acc[l * hv + d]));
        }
    }
}

thread_local! {
    /// This thread's buffers for a task's converted f16 keys and values, kept from task to
    /// task (a fresh allocation each time costed Gemma 3 270M's decode about 1%).
    static HEAD_BUFS: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// The output of [`attention`] as raw chunks for tasks that each write their own one.
#[cfg(feature = "threads")]
struct OutChunks(*mut f32, usize);

// SAFETY: tasks reach the buffer only through `chunk`, each its own disjoint chunk.
#[cfg(feature = "threads")]
unsafe impl Sync for OutChunks {}

#[cfg(feature = "threads")]
impl OutChunks {
    /// Chunk `i` (`self.1` elements).
    ///
    /// # Safety
    /// Chunk `i` lies inside the buffer, which outlives the returned slice, and no other
    /// reference to it exists meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn chunk(&self, i: usize) -> &mut [f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(i * self.1), self.1) }
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

    /// Attention over f32 rows with [`params`].
    fn run(
        q: &[f32],
        pos0: usize,
        keys: &[f32],
        values: &[f32],
        window: Option<usize>,
    ) -> [f32; 4] {
        let mut out = [0.0; 4];
        let (k, v) = (KvRows::F32(keys), KvRows::F32(values));
        attention(q, pos0, k, v, &params(window), &mut out);
        out
    }

    #[test]
    fn first_position_returns_its_own_value() {
        let q = [1.0, 0.0, 0.0, 1.0]; // two heads
        let out = run(&q, 0, &[0.3, 0.4], &[5.0, -7.0], None);
        assert_eq!(out, [5.0, -7.0, 5.0, -7.0]);
    }

    #[test]
    fn causal_mask_hides_future_and_window_hides_old() {
        // Three cached positions; query at position 1 must not see position 2.
        let keys = [0.0, 0.0, 0.0, 0.0, 100.0, 100.0];
        let values = [1.0, 1.0, 3.0, 3.0, 1000.0, 1000.0];
        let q = [1.0, 1.0, 1.0, 1.0];
        let out = run(&q, 1, &keys, &values, None);
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}"); // mean of 1 and 3
                                                         // Window 1: position 1 sees only itself.
        let out = run(&q, 1, &keys, &values, Some(1));
        assert!((out[0] - 3.0).abs() < 1e-6, "{out:?}");
        // Window 2 at position 2: sees 1 and 2, not 0 (2 − 0 ≥ 2).
        let out = run(&q, 2, &keys, &values, Some(2));
        assert!(out[0] > 999.0);
    }

    /// f16 rows converted per task (one token) or for the batch give the bits of the f32
    /// rows they convert to, with one KV head (contiguous rows) and several, with and without
    /// a window.
    #[test]
    fn f16_rows_equal_their_f32_conversion() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for (n_head, n_head_kv, window) in [(4, 1, None), (4, 2, None), (6, 3, Some(5))] {
            let (hd, n_kv) = (24, 37);
            let p = AttnParams {
                n_head,
                n_head_kv,
                head_dim: hd,
                head_dim_v: hd,
                scale: 0.2,
                softcap: 0.0,
                window,
                f16_operands: true,
                batched: false,
            };
            let kv: Vec<f16> = (0..2 * n_kv * n_head_kv * hd)
                .map(|_| f16::from_f32(next()))
                .collect();
            let (k16, v16) = kv.split_at(n_kv * n_head_kv * hd);
            let (k32, v32): (Vec<f32>, Vec<f32>) = (
                k16.iter().map(|h| h.to_f32()).collect(),
                v16.iter().map(|h| h.to_f32()).collect(),
            );
            let q: Vec<f32> = (0..n_head * hd).map(|_| next()).collect();
            let pos = n_kv - 1;
            let mut want = vec![0.0; n_head * hd];
            attention(&q, pos, KvRows::F32(&k32), KvRows::F32(&v32), &p, &mut want);
            let mut got = vec![0.0; n_head * hd];
            attention(&q, pos, KvRows::F16(k16), KvRows::F16(v16), &p, &mut got);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{n_head}/{n_head_kv} heads, {window:?}"
            );
            let mut scratch = Vec::new();
            assert!(matches!(
                KvRows::F16(k16).to_f32(&mut scratch),
                KvRows::F32(x) if bits(x) == bits(&k32)
            ));
            // Split into shares of query heads on more threads: the same bits.
            #[cfg(feature = "threads")]
            for threads in [2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut split = vec![0.0; n_head * hd];
                pool.install(|| {
                    attention(&q, pos, KvRows::F16(k16), KvRows::F16(v16), &p, &mut split)
                });
                assert_eq!(
                    bits(&split),
                    bits(&want),
                    "{n_head}/{n_head_kv}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn heads_per_task_shares_a_group_among_threads() {
        // (query heads per KV head, (token, KV head) pairs, threads) → heads per task.
        for ((group, pairs, threads), want) in [
            ((4, 1, 1), 4),
            ((4, 1, 2), 2),
            ((4, 2, 2), 4),
            ((4, 1, 3), 1),
            ((4, 1, 8), 1),
            ((8, 1, 2), 4),
            ((3, 1, 2), 1),
            ((6, 2, 4), 3),
        ] {
            assert_eq!(
                heads_per_task(group, pairs, threads),
                want,
                "{group} {pairs} {threads}"
            );
        }
    }
}

//! matvec / matmul over a tensor's bytes: shape checks, activation quantization (once per call),
//! and the split of weight rows into tiles run on rayon threads.
//!
//! Rows are cut into tiles of a fixed number of rows that depends only on the row size (never on
//! the thread count). Each task owns one tile: for every token it calls the row-dot kernel on
//! the tile's rows, so the tile's weight bytes stay in cache across the tokens of a batch, and
//! every output element is written by exactly one kernel call. Formats with a batch kernel
//! ([`simd::batch_kernel`]) run batches of tokens differently: the activations are prepared
//! once per call, and each task owns a (row tile, token chunk) pair and unpacks its weight rows
//! into a small buffer of its own; otherwise no allocation happens after the activations are
//! quantized.

use strata_gguf::GgmlType;

use crate::simd::{self, SimdLevel};
use crate::{f32_bytes, quantize_acts, row_bytes, vec_dot_type, QuantError, QuantizedActs};

/// Weight bytes per tile: small enough to stay in L2 while a batch of tokens passes over it.
const TILE_BYTES: usize = 48 * 1024;
/// From this many tokens, products in `vec_dot` lane order use the batch kernel where there is
/// one ([`simd::batch_kernel`]); results are the same either way.
const BATCH_MIN_TOKENS: usize = 4;
/// Most tokens per batch-kernel task (each task unpacks its weight rows once).
const BATCH_CHUNK: usize = 128;
/// Most tokens per [`simd::Tiles`] task: the decoding is paid once per task, so the whole of a
/// usual batch.
#[cfg(target_arch = "x86_64")]
const TILES_CHUNK: usize = 512;
/// Rows per [`simd::Tiles`] task.
#[cfg(target_arch = "x86_64")]
const TILES_ROWS: usize = 64;
/// Below this many weight bytes a product runs on the calling thread (threads would cost more
/// than they save); results are the same either way.
#[cfg(feature = "rayon")]
const PAR_MIN_BYTES: usize = 256 * 1024;

/// Threads the products split over: rayon's in the current context, else one.
fn threads() -> usize {
    #[cfg(feature = "rayon")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "rayon"))]
    1
}

/// `y[r] = Σ_c W[r][c] · x[c]`: `W` is `rows` rows of `cols` elements of type `ty` (tensor dims
/// `[cols, rows]`), `x` has `cols` elements, `y` has `rows`.
///
/// `x` is quantized to [`vec_dot_type`]`(ty)` once (F32 weights use `x` as is; F16 and BF16
/// weights get `x` rounded to their type, as llama.cpp does).
pub fn matvec(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul(ty, w, rows, cols, x, 1, y)
}

/// [`matvec`] with activations already quantized ([`quantize_acts`], one row).
pub fn matvec_q(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matvec_q_with(
        crate::calibrate::kernel_level(ty, 1, cols),
        ty,
        w,
        rows,
        cols,
        x,
        y,
    )
}

/// [`matvec_q`] at a given SIMD level (for tests and benchmarks comparing kernels).
pub fn matvec_q_with(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matvec_q_many(&mut [Matvec::with_level(level, ty, w, rows, cols, x, y)?]);
    Ok(())
}

/// One single-token product `y = W x` of a [`matvec_q_many`] group: checked, with its kernel
/// chosen, not yet run ([`matvec_q`] is a group of one).
pub struct Matvec<'a> {
    kernel: simd::RowsFn,
    w: &'a [u8],
    /// Bytes per weight row.
    rb: usize,
    rows: usize,
    /// Rows per task ([`one_token_tile`]).
    tile: usize,
    /// The quantized activation row.
    x: &'a [u8],
    /// `rows` outputs, written by the tasks (disjoint tiles) during [`matvec_q_many`].
    y: OutPtr,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Matvec<'a> {
    /// [`matvec_q`]'s product, checked as [`matvec_q`] checks it (the same errors).
    pub fn new(
        ty: GgmlType,
        w: &'a [u8],
        rows: usize,
        cols: usize,
        x: &'a QuantizedActs,
        y: &'a mut [f32],
    ) -> Result<Matvec<'a>, QuantError> {
        let level = crate::calibrate::kernel_level(ty, 1, cols);
        Matvec::with_level(level, ty, w, rows, cols, x, y)
    }

    /// [`Matvec::new`] at a given SIMD level (for tests and benchmarks comparing kernels).
    pub fn with_level(
        level: SimdLevel,
        ty: GgmlType,
        w: &'a [u8],
        rows: usize,
        cols: usize,
        x: &'a QuantizedActs,
        y: &'a mut [f32],
    ) -> Result<Matvec<'a>, QuantError> {
        if x.n_rows() != 1 {
            return Err(QuantError::SizeMismatch {
                ty: x.ty(),
                what: "activation rows for matvec",
                expected: 1,
                got: x.n_rows(),
            });
        }
        acts_for(ty, x, cols)?;
        if !level.is_available() {
            return Err(QuantError::SimdUnavailable(level));
        }
        let (kernel, _) = kernels(level, Kernel::for_product(ty, rows, cols, 1), ty, 1)?;
        let rb = check_shapes(ty, w, rows, cols, 1, y.len())?;
        Ok(Matvec {
            kernel,
            w,
            rb,
            rows,
            tile: one_token_tile(rb, rows),
            x: x.row(0),
            y: OutPtr(y.as_mut_ptr()),
            _y: std::marker::PhantomData,
        })
    }

    /// Its tasks: tiles of `tile` rows.
    fn tasks(&self) -> usize {
        self.rows.div_ceil(self.tile)
    }

    /// Runs tile `i`.
    fn run_tile(&self, i: usize) {
        let r0 = i * self.tile;
        let r1 = (r0 + self.tile).min(self.rows);
        // SAFETY: `y` pointed to `rows` elements borrowed mutably for `'a` (`with_level`), and
        // `r0..r1` lies in `0..rows`; tile `i` is the only task writing these rows, and `y` is
        // not read meanwhile.
        let y = unsafe { std::slice::from_raw_parts_mut(self.y.ptr().add(r0), r1 - r0) };
        (self.kernel)(&self.w[r0 * self.rb..r1 * self.rb], self.rb, self.x, y);
    }
}

/// Runs single-token products as one parallel loop over all their row tiles: products that
/// take the same activations (a layer's Q, K and V; its FFN gate and up) then pay one hand-off
/// to the threads instead of one each, and a product too small to split on its own (K, V) still
/// shares the threads. Each output gets the bits [`matvec_q`] gives it.
pub fn matvec_q_many(products: &mut [Matvec<'_>]) {
    let tasks: usize = products.iter().map(Matvec::tasks).sum();
    let products = &*products;
    let task = |mut i: usize| {
        for p in products {
            if i < p.tasks() {
                return p.run_tile(i);
            }
            i -= p.tasks();
        }
    };
    #[cfg(feature = "rayon")]
    {
        let bytes: usize = products.iter().map(|p| p.w.len()).sum();
        if bytes >= PAR_MIN_BYTES && tasks > 1 {
            crate::team::for_each_index(tasks, &task);
            return;
        }
    }
    (0..tasks).for_each(task);
}

/// Rows per task of a single-token product with rows of `rb` bytes: [`batch_tile`]'s, or as
/// tall as four tasks per thread allow (up to 256 rows), so each task reads one long stretch
/// of memory that the hardware prefetchers follow (Q4_K 8192², one thread on Zen 4: 9.5 GiB/s
/// with 8-row tiles, 13 with 128) and pays the per-call set-up once.
fn one_token_tile(rb: usize, rows: usize) -> usize {
    batch_tile(rb)
        .max((rows / (4 * threads())) / 8 * 8)
        .min(256)
}

/// Rows per tile of a batch: a multiple of 8 rows (the largest SIMD row group, that of the
/// Q8_0-family AVX-512 kernel; a tile of fewer rows would leave long rows to its two-row tail)
/// near [`TILE_BYTES`], where the tokens reuse the tile from cache.
fn batch_tile(rb: usize) -> usize {
    ((TILE_BYTES / rb.max(1)) / 8 * 8).clamp(8, 256)
}

/// `Y[t][r] = Σ_c W[r][c] · X[t][c]` for `t in 0..n`: `X` row-major `n × cols`, `Y` row-major
/// `n × rows`.
///
/// Each element gets the float order of the kernel llama.cpp's CPU backend runs for this type,
/// row count and batch size `n` (the rule is in the crate docs), so row `t` of `Y`
/// can differ from [`matvec`] of row `t` of `X` in the last bits; it never depends on thread
/// count or on how rows are tiled.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), QuantError> {
    let dot_ty = vec_dot_type(ty)?;
    if dot_ty == GgmlType::F32 {
        // Float weights read `x` in place: no copy.
        if n.checked_mul(cols) != Some(x.len()) {
            return Err(QuantError::SizeMismatch {
                ty: dot_ty,
                what: "activations (elements)",
                expected: n.saturating_mul(cols),
                got: x.len(),
            });
        }
        let bytes = f32_bytes(x);
        let xrow = cols * 4;
        return run(
            crate::calibrate::kernel_level(ty, n, cols),
            ty,
            w,
            rows,
            cols,
            n,
            Part::whole(n),
            |t| &bytes[t * xrow..(t + 1) * xrow],
            y,
        );
    }
    let acts = quantize_acts(dot_ty, x, n, cols)?;
    matmul_q(ty, w, rows, cols, &acts, y)
}

/// [`matmul`] with activations already quantized (`x.n_rows()` tokens).
pub fn matmul_q(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul_q_with(
        crate::calibrate::kernel_level(ty, x.n_rows(), cols),
        ty,
        w,
        rows,
        cols,
        x,
        y,
    )
}

/// [`matmul_q`] at a given SIMD level (for tests and benchmarks comparing kernels).
pub fn matmul_q_with(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul_q_part_with(level, ty, w, rows, cols, x, Part::whole(x.n_rows()), y)
}

/// Which tokens of a batch a product computes: tokens `first..first + n` of a batch of `batch`
/// tokens that llama.cpp would multiply in one `MUL_MAT` (see [`matmul_q_part`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// Index in the batch of the first token computed.
    pub first: usize,
    /// Tokens in the whole batch.
    pub batch: usize,
}

impl Part {
    /// The whole batch of `n` tokens.
    pub fn whole(n: usize) -> Part {
        Part { first: 0, batch: n }
    }
}

/// [`matmul_q`] for some of the tokens of a batch: `x` holds tokens `part.first..part.first +
/// x.n_rows()` of a batch of `part.batch` tokens, and each element of `y` gets the float order
/// llama.cpp's product of the *whole* batch gives it (the kernel is chosen by `part.batch`, and
/// a token's place in the batch decides, for repacked Q4_K/Q2_K, whether it is in a group of
/// four). So a caller that computes a batch in slices (to bound a buffer) gets the bits of one
/// product over the batch, whatever the slices.
pub fn matmul_q_part(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    part: Part,
    y: &mut [f32],
) -> Result<(), QuantError> {
    matmul_q_part_with(
        crate::calibrate::kernel_level(ty, part.batch, cols),
        ty,
        w,
        rows,
        cols,
        x,
        part,
        y,
    )
}

/// [`matmul_q_part`] at a given SIMD level (for tests and benchmarks comparing kernels).
#[allow(clippy::too_many_arguments)]
pub fn matmul_q_part_with(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    part: Part,
    y: &mut [f32],
) -> Result<(), QuantError> {
    let dot_ty = acts_for(ty, x, cols)?;
    let n = x.n_rows();
    if part.first.checked_add(n).is_none_or(|end| end > part.batch) {
        return Err(QuantError::SizeMismatch {
            ty: dot_ty,
            what: "tokens of the batch (first + activation rows)",
            expected: part.batch,
            got: part.first.saturating_add(n),
        });
    }
    run(level, ty, w, rows, cols, n, part, |t| x.row(t), y)
}

/// One expert's product in a mixture-of-experts layer, as llama.cpp's `MUL_MAT_ID` computes it:
/// `Y[i][r] = Σ_c W[r][c] · X[ids[i]][c]` for the activation rows `ids` routed to this expert
/// (`W`: the expert's `rows × cols` slice of the 3-D tensor; `Y`: `ids.len() × rows`).
///
/// `MUL_MAT_ID` chooses its kernel per expert, not per batch: matrices llama.cpp repacks (the
/// [`matmul`] rule) always take the one-token repacked order (its gemv, never its gemm); other
/// K-quant matrices take the tiled kernel when at least 8 rows are routed to the expert, else
/// `vec_dot`; everything else `vec_dot` (never tinyBLAS or llamafile's lanes, which `MUL_MAT_ID`
/// does not use). So each element equals [`matvec_q`] of its row, except for tiled experts.
pub fn matmul_q_id(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &QuantizedActs,
    ids: &[usize],
    y: &mut [f32],
) -> Result<(), QuantError> {
    let dot_ty = acts_for(ty, x, cols)?;
    if let Some(&bad) = ids.iter().find(|&&i| i >= x.n_rows()) {
        return Err(QuantError::SizeMismatch {
            ty: dot_ty,
            what: "activation row index bound",
            expected: x.n_rows(),
            got: bad,
        });
    }
    let n = ids.len();
    // The kernel `run` picks for the batch: the routed rows' count where the tiled kernel
    // applies, else one token (repacked gemv, `vec_dot`) for every row.
    let batch = match Kernel::for_product(ty, rows, cols, n) {
        Kernel::Tiled => n,
        _ => 1,
    };
    run(
        crate::calibrate::kernel_level(ty, batch, cols),
        ty,
        w,
        rows,
        cols,
        n,
        Part::whole(batch),
        |t| x.row(ids[t]),
        y,
    )
}

/// One dot product: weight row `w_row` (`x.cols()` elements of type `ty`) · activation row `t`
/// of `x` (quantized to [`vec_dot_type`]`(ty)`), with the active SIMD kernel. Equals element
/// `r` of [`matvec_q`] for that row, bit for bit, except for matrices llama.cpp repacks (Q4_K,
/// Q2_K, Q4_0 and IQ4_NL with a multiple of 8 rows): this is llama.cpp's `vec_dot` order, such
/// matrices use its repacked orders.
pub fn vec_dot(ty: GgmlType, w_row: &[u8], x: &QuantizedActs, t: usize) -> Result<f32, QuantError> {
    let dot_ty = acts_dot_type(ty, x)?;
    if t >= x.n_rows() {
        return Err(QuantError::SizeMismatch {
            ty: dot_ty,
            what: "activation row index bound",
            expected: x.n_rows(),
            got: t,
        });
    }
    let mut y = [0f32];
    run(
        crate::calibrate::kernel_level(ty, 1, x.cols()),
        ty,
        w_row,
        1,
        x.cols(),
        1,
        Part::whole(1),
        |_| x.row(t),
        &mut y,
    )?;
    Ok(y[0])
}

/// [`vec_dot_type`]`(ty)`, after checking that `x` was quantized to it.
/// [`acts_dot_type`], and `x` has `cols` columns.
fn acts_for(ty: GgmlType, x: &QuantizedActs, cols: usize) -> Result<GgmlType, QuantError> {
    let dot_ty = acts_dot_type(ty, x)?;
    if x.cols() != cols {
        return Err(QuantError::SizeMismatch {
            ty: dot_ty,
            what: "activation columns",
            expected: cols,
            got: x.cols(),
        });
    }
    Ok(dot_ty)
}

fn acts_dot_type(ty: GgmlType, x: &QuantizedActs) -> Result<GgmlType, QuantError> {
    let dot_ty = vec_dot_type(ty)?;
    if x.ty() != dot_ty {
        return Err(QuantError::ActsType {
            weights: ty,
            expected: dot_ty,
            got: x.ty(),
        });
    }
    Ok(dot_ty)
}

/// A pointer to the output that tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks only write through it to disjoint element ranges (one tile's rows of each
// token), and the owning `&mut [f32]` outlives every task (they finish before `run` returns).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    // A method (not field access) so closures capture the `Send + Sync` wrapper, not the pointer.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Which of llama.cpp's CPU kernels (0c1e57098, x86-64 AVX-512 build) computes a product, and so
/// whose float order [`run`] reproduces. [`Kernel::for_product`] is the one place this rule is
/// decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Repacked weights. Q4_K/Q2_K: gemm for tokens in whole groups of four (the first
    /// `n - n % 4`), gemv for the others (see the `q4k` and `q2k` modules); Q4_0/IQ4_NL: one
    /// order for every token ([`crate::scalar::q4_0_repacked`]).
    Repacked,
    /// The tiled K-quant matmul (see the `tiled` module).
    Tiled,
    /// llamafile's tinyBLAS `sgemm` for F16/BF16 weights.
    Sgemm,
    /// `vec_dot`, one element at a time.
    VecDot,
}

impl Kernel {
    /// The kernel for a batch of `n` tokens times `rows × cols` weights of type `ty` (`n` is
    /// the whole batch's count even when a call computes only some of its tokens, [`Part`]):
    ///
    /// - Q4_K, Q2_K, Q4_0, IQ4_NL and MXFP4 with `rows % 8 == 0` (llama.cpp repacks them; Q2_K
    ///   only on AVX-512 machines, like the reference's), any `n`: [`Kernel::Repacked`];
    /// - other K-quant matrices (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), IQ4_XS and the IQ1/IQ2/IQ3
    ///   formats, `n >= 8`: [`Kernel::Tiled`];
    /// - F16 with `cols % 16 == 0`, BF16 with `cols % 32 == 0`, `rows % 4 == 0`, `n >= 2`:
    ///   [`Kernel::Sgemm`] (other shapes llamafile refuses);
    /// - everything else: [`Kernel::VecDot`] (IQ4_NL not repacked: llama.cpp's `vec_dot` order
    ///   for one token, its tinyBLAS lanes for more).
    fn for_product(ty: GgmlType, rows: usize, cols: usize, n: usize) -> Kernel {
        use GgmlType::*;
        match ty {
            Q4_K | Q2_K | Q4_0 | IQ4_NL | MXFP4 if rows.is_multiple_of(8) => Kernel::Repacked,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS
            | IQ3_S | IQ1_S | IQ1_M
                if n >= crate::tiled::MIN_TOKENS =>
            {
                Kernel::Tiled
            }
            F16 | BF16
                if n >= simd::SGEMM_MIN_TOKENS
                    && rows.is_multiple_of(4)
                    && cols.is_multiple_of(if ty == F16 { 16 } else { 32 }) =>
            {
                Kernel::Sgemm
            }
            _ => Kernel::VecDot,
        }
    }
}

/// A kernel for many tokens at once with its activations prepared (see [`run`]).
enum Many<'x> {
    /// The Q8_0-family `vec_dot`/tinyBLAS batch kernels.
    Q0(simd::BatchKernel, simd::BatchActs),
    /// The tiled order with 8-bit codes, sixteen rows per register (K-quants, IQ formats).
    #[cfg(target_arch = "x86_64")]
    Tiles(simd::Tiles<'x>),
    /// Never made: no kernel of other targets borrows the activations (this keeps `'x` in
    /// use there).
    #[cfg(not(target_arch = "x86_64"))]
    _Borrows(std::convert::Infallible, std::marker::PhantomData<&'x ()>),
}

/// Computes tokens `part.first..part.first + n` of a batch of `part.batch` (`xrow(t)` is token
/// `part.first + t`) in the whole batch's float order.
#[allow(clippy::too_many_arguments)]
fn run<'x>(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    n: usize,
    part: Part,
    xrow: impl Fn(usize) -> &'x [u8] + Sync,
    y: &mut [f32],
) -> Result<(), QuantError> {
    if !level.is_available() {
        return Err(QuantError::SimdUnavailable(level));
    }
    let kind = Kernel::for_product(ty, rows, cols, part.batch);
    let (kernel, kernel4) = kernels(level, kind, ty, part.batch)?;
    let rb = check_shapes(ty, w, rows, cols, n, y.len())?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let out = OutPtr(y.as_mut_ptr());
    // The multi-token `vec_dot` kernels keep `vec_dot`'s bits, except IQ4_NL's (tinyBLAS's
    // lanes): for a batch of one (`matmul_q_id` runs several rows as such) it stays row by row.
    // The tiled order at 8 tokens or more: each weight block decoded once per tile of tokens.
    let nb = rb / ty.type_size();
    let many = match kind {
        Kernel::VecDot if ty == GgmlType::IQ4_NL && part.batch == 1 => None,
        Kernel::VecDot if n >= BATCH_MIN_TOKENS => simd::batch_kernel(level, ty).map(|bk| {
            let acts = bk.prepare(n, nb, &xrow);
            Many::Q0(bk, acts)
        }),
        #[cfg(target_arch = "x86_64")]
        Kernel::Tiled => simd::Tiles::prepare(level, ty, n, nb, &xrow).map(Many::Tiles),
        _ => None,
    };
    if let Some(many) = many {
        // Tasks: tiles of a multiple of 8 rows (the batch kernels' row group) × chunks of at
        // most `chunk_max` tokens (balanced), so that small matrices still split over threads.
        // The tile kernels keep one decoded block of each row (whatever the row length), so
        // their tiles are as tall as TILES_ROWS however long the rows are: each tile reads the
        // tokens' activations once.
        let (chunk_max, tile) = match many {
            Many::Q0(..) => (BATCH_CHUNK, batch_tile(rb)),
            #[cfg(target_arch = "x86_64")]
            Many::Tiles(_) => (TILES_CHUNK, TILES_ROWS),
            #[cfg(not(target_arch = "x86_64"))]
            Many::_Borrows(never, _) => match never {},
        };
        let n_tiles = rows.div_ceil(tile);
        let n_chunks = n.div_ceil(chunk_max);
        let chunk = n.div_ceil(n_chunks).next_multiple_of(4);
        let n_chunks = n.div_ceil(chunk);
        let task = |i: usize| {
            let (r0, t0) = ((i / n_chunks) * tile, (i % n_chunks) * chunk);
            let (r1, t1) = ((r0 + tile).min(rows), (t0 + chunk).min(n));
            // SAFETY: `y` has `rows * n` elements (checked above), so rows `r0..r1 <= rows`
            // of each token `t < n` lie inside it; tasks own disjoint (row tile, token chunk)
            // pairs, so only this task writes them, and `y` is not read meanwhile.
            let mut yt = unsafe { simd::OutRows::new(out.ptr().add(r0), rows, r1 - r0, t0..t1) };
            let wt = &w[r0 * rb..r1 * rb];
            match &many {
                Many::Q0(bk, acts) => (bk.run)(wt, rb, acts, t0..t1, &mut yt),
                #[cfg(target_arch = "x86_64")]
                Many::Tiles(k) => k.run(wt, rb, &mut yt),
                #[cfg(not(target_arch = "x86_64"))]
                Many::_Borrows(never, _) => match *never {},
            }
        };
        #[cfg(feature = "rayon")]
        if w.len().saturating_mul(n) >= PAR_MIN_BYTES && n_tiles * n_chunks > 1 {
            crate::team::for_each_index(n_tiles * n_chunks, &task);
            return Ok(());
        }
        (0..n_tiles * n_chunks).for_each(task);
        return Ok(());
    }
    // Tile height: a batch's tiles stay in cache for its tokens; a single token reuses
    // nothing, so its tiles are taller.
    let tile = if n == 1 {
        one_token_tile(rb, rows)
    } else {
        batch_tile(rb)
    };
    let n_tiles = rows.div_ceil(tile);
    // Four tokens per pass over a tile where the kernel choice has such a kernel (each weight
    // block is unpacked once for four tokens). Its results equal `kernel`'s bit for bit except
    // for `Kernel::Repacked`, where the two are llama.cpp's gemm and gemv: there the tokens of
    // the batch's first `batch - batch % 4` (llama.cpp's grouping) take `kernel4`, the others
    // `kernel`; this part's share of the former is its first `n4` tokens.
    let n4 = if kind == Kernel::Repacked {
        (part.batch - part.batch % 4)
            .saturating_sub(part.first)
            .min(n)
    } else if n >= 4 {
        n - n % 4
    } else {
        0
    };
    let kernel4 = if n4 > 0 { kernel4 } else { None };
    // Repacked Q4_K: sixteen tokens per pass where there is such a kernel (same bits as four
    // four-token passes; each weight block is unpacked once for all of them).
    let kernel16 = match kind {
        Kernel::Repacked if ty == GgmlType::Q4_K && kernel4.is_some() && n4 >= 16 => {
            simd::q4k_gemm16(level)
        }
        _ => None,
    };
    // Its activations, laid out once per group of sixteen tokens for every tile.
    let prep = |g: usize| simd::Prep16::new(std::array::from_fn(|j| xrow(16 * g + j)));
    let groups = if kernel16.is_some() { n4 / 16 } else { 0 };
    // (A single token has none: no parallel loop to set up for it.)
    #[cfg(feature = "rayon")]
    let preps: Vec<simd::Prep16> = if groups > 1 {
        use rayon::prelude::*;
        (0..groups).into_par_iter().map(prep).collect()
    } else {
        (0..groups).map(prep).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let preps: Vec<simd::Prep16> = (0..groups).map(prep).collect();
    let task = |i: usize| {
        let r0 = i * tile;
        let r1 = (r0 + tile).min(rows);
        let wt = &w[r0 * rb..r1 * rb];
        // SAFETY: `y` has `rows * n` elements (checked above) and `r0..r1` lies in `0..rows`,
        // so the range is inside `y`; tile `i` is the only task writing rows `r0..r1` of any
        // token, so the ranges of different tasks (and of different `t`) are disjoint, and `y`
        // is not read meanwhile.
        let yt = |t: usize| unsafe {
            std::slice::from_raw_parts_mut(out.ptr().add(t * rows + r0), r1 - r0)
        };
        let mut t = 0;
        if let Some(k16) = kernel16 {
            let mut ys: Vec<&mut [f32]> = (0..16 * groups).map(yt).collect();
            k16(wt, rb, &preps, &mut ys);
            t = 16 * groups;
        }
        if let Some(k4) = kernel4 {
            while t + 4 <= n4 {
                k4(
                    wt,
                    rb,
                    [xrow(t), xrow(t + 1), xrow(t + 2), xrow(t + 3)],
                    [yt(t), yt(t + 1), yt(t + 2), yt(t + 3)],
                );
                t += 4;
            }
            if t < n4 {
                // A part that starts inside a group of four: the group's remaining tokens
                // still need the four-token order (each token's result does not depend on
                // the others in its group), so the last one fills the group and the extra
                // results are dropped.
                let m = n4 - t;
                let mut spare = vec![0f32; (4 - m) * (r1 - r0)];
                let mut spare = spare.chunks_exact_mut(r1 - r0);
                let x4: [&[u8]; 4] = std::array::from_fn(|j| xrow(t + j.min(m - 1)));
                let y4: [&mut [f32]; 4] = std::array::from_fn(|j| {
                    if j < m {
                        yt(t + j)
                    } else {
                        spare.next().expect("one spare row per padded token")
                    }
                });
                k4(wt, rb, x4, y4);
                t = n4;
            }
        }
        while t < n {
            kernel(wt, rb, xrow(t), yt(t));
            t += 1;
        }
    };
    #[cfg(feature = "rayon")]
    if w.len().saturating_mul(n) >= PAR_MIN_BYTES && n_tiles > 1 {
        crate::team::for_each_index(n_tiles, &task);
        return Ok(());
    }
    (0..n_tiles).for_each(task);
    Ok(())
}

/// The one-token and four-token kernels of `kind` for `ty` at `level` (`batch`: the whole
/// batch's token count).
fn kernels(
    level: SimdLevel,
    kind: Kernel,
    ty: GgmlType,
    batch: usize,
) -> Result<(simd::RowsFn, Option<simd::Rows4Fn>), QuantError> {
    Ok(match kind {
        Kernel::Repacked if ty == GgmlType::Q4_K => crate::q4k::kernels(level, true),
        Kernel::Repacked if ty == GgmlType::Q2_K => crate::q2k::kernels(level, true),
        Kernel::Repacked => simd::repacked(level, ty).ok_or(QuantError::Unsupported {
            ty,
            op: "repacked dot product",
        })?,
        Kernel::Tiled => crate::tiled::kernels(level, ty),
        Kernel::Sgemm => simd::sgemm_kernels(level, ty),
        Kernel::VecDot if ty == GgmlType::Q4_K => crate::q4k::kernels(level, false),
        Kernel::VecDot if ty == GgmlType::Q2_K => crate::q2k::kernels(level, false),
        Kernel::VecDot if ty == GgmlType::IQ4_NL && batch == 1 => {
            (simd::iq4_nl_vec_dot(level), None)
        }
        Kernel::VecDot => {
            let k = simd::kernel(level, ty).ok_or(QuantError::Unsupported {
                ty,
                op: "dot product",
            })?;
            (k, simd::kernel4(level, ty))
        }
    })
}
/// Checks that `w` is `rows` rows of `cols` elements of type `ty` and that the output has
/// `rows * n` elements (`y_len`); returns the bytes per row.
fn check_shapes(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    n: usize,
    y_len: usize,
) -> Result<usize, QuantError> {
    let rb = row_bytes(ty, cols, "columns (a whole number of blocks)")?;
    let expected = rb.checked_mul(rows).ok_or(QuantError::SizeMismatch {
        ty,
        what: "weight bytes",
        expected: usize::MAX,
        got: w.len(),
    })?;
    if w.len() != expected {
        return Err(QuantError::SizeMismatch {
            ty,
            what: "weight bytes",
            expected,
            got: w.len(),
        });
    }
    if y_len != rows * n {
        return Err(QuantError::SizeMismatch {
            ty,
            what: "output elements",
            expected: rows * n,
            got: y_len,
        });
    }
    Ok(rb)
}

/// Applies `f` to each (input row, output row) pair of `x` (rows of `cols`) and `out` (rows of
/// `rb` bytes), on rayon threads when the feature is on and there are several rows.
pub(crate) fn for_each_row(
    x: &[f32],
    cols: usize,
    out: &mut [u8],
    rb: usize,
    f: impl Fn(&[f32], &mut [u8]) + Sync + Send,
) {
    if cols == 0 || rb == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    if x.len() > cols {
        use rayon::prelude::*;
        x.par_chunks_exact(cols)
            .zip(out.par_chunks_exact_mut(rb))
            .for_each(|(a, b)| f(a, b));
        return;
    }
    x.chunks_exact(cols)
        .zip(out.chunks_exact_mut(rb))
        .for_each(|(a, b)| f(a, b));
}

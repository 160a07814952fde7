//! The forward pass: token ids in, logits out, reading every weight through the layer cache.
//!
//! ```text
//! x = embed(tokens)                              [n, n_embd]   (× √n_embd for gemma3)
//! for il in 0..n_layer:                          LayerCache::get(il) → tensor views
//!     x = x + attention_block(x)                 norm → Q,K,V → (Q/K norm) → RoPE → KV cache →
//!                                                softmax(QKᵀ)V → output proj (→ post-norm)
//!     x = x + ffn_block(x)                       norm → act(gate) ⊙ up → down (→ post-norm)
//! logits = output · norm(x)                      [n_out, n_vocab]
//! ```
//! Every matrix product reads quantized bytes in place: activations are quantized once per
//! weight `vec_dot_type` (`strata_quant::quantize_acts`) and shared by Q/K/V and by gate/up,
//! as llama.cpp does. Prefill uses `matmul_q` over a chunk of tokens, decode `matvec_q`.
//! No weight is ever kept dequantized; only the embedding rows of the current tokens are
//! dequantized, one row each.

use strata_gguf::GgmlType;
use strata_layer_cache::{LayerCache, LayerRef, TensorView};
use strata_quant::{quantize_acts, vec_dot_type, Part, QuantizedActs};

use crate::attention::{attention, AttnParams};
use crate::config::{Arch, FfnActivation, ModelConfig};
use crate::error::EngineError;
use crate::kv_cache::{KvCache, KvType};
use crate::ops;

/// Which positions of a batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last token (generation).
    Last,
    /// Every token (scoring, verification).
    All,
}

/// One sequence's tokens in a batched forward pass ([`Model::forward_batch`]).
pub struct SeqChunk<'a> {
    /// The tokens to evaluate (at least one).
    pub tokens: &'a [u32],
    /// Position of the first token; positions `0..pos0` are already in `kv`.
    pub pos0: usize,
    /// This sequence's KV cache; the chunk's keys and values are appended to it.
    pub kv: &'a mut KvCache,
    /// Whether the logits of the chunk's last token are wanted.
    pub logits: bool,
}

/// The floor of a token's expert-weight sum before the weights are divided by it (2⁻¹⁴,
/// llama.cpp's clamp in `build_moe_ffn`).
const MIN_EXPERT_WEIGHT_SUM: f32 = 1.0 / 16384.0;

/// Output rows computed per output-head product (bounds the logits buffer to 32 × n_vocab).
const OUTPUT_ROWS_PER_STEP: usize = 32;

/// A model: its configuration and the layer cache its weights come from.
pub struct Model {
    cfg: ModelConfig,
    cache: LayerCache,
    /// Per-pair RoPE frequency divisors, `[n_rot/2]`: Llama 3's `rope_freqs.weight`, or Phi-3's
    /// `rope_factors_long.weight` / `rope_factors_short.weight` chosen by the context length as
    /// llama.cpp chooses them. A property of the position encoding rather than a weight matrix.
    rope_freqs: Option<Vec<f32>>,
}

impl Model {
    /// Wraps an open layer cache; checks that every tensor matches the configuration. `n_ctx`
    /// is the context length sessions will have (it selects Phi-3's RoPE factors).
    pub fn new(cfg: ModelConfig, cache: LayerCache, n_ctx: usize) -> Result<Model, EngineError> {
        let globals = cache.globals();
        // llama.cpp (`get_rope_factors`): rope_freqs if present, else the long factors for a
        // context beyond the original one, else the short factors (either may be absent).
        let factors = if globals.get("rope_freqs.weight").is_some() {
            "rope_freqs.weight"
        } else if n_ctx > cfg.n_ctx_orig {
            "rope_factors_long.weight"
        } else {
            "rope_factors_short.weight"
        };
        let rope_freqs = match globals.get(factors) {
            Some(t) => {
                expect_dims(&t, &[(cfg.n_rot / 2) as u64])?;
                Some(f32_tensor(&t)?)
            }
            None => None,
        };
        if cache.n_layers() != cfg.n_layer {
            return Err(EngineError::Config(crate::error::ConfigError::Invalid {
                what: format!(
                    "{}.block_count = {} but the file has {} layers of tensors",
                    cfg.arch.name(),
                    cfg.n_layer,
                    cache.n_layers()
                ),
            }));
        }
        // After the layer count: it bounds the loop over layers.
        check_tensors(&cfg, cache.gguf())?;
        Ok(Model {
            cfg,
            cache,
            rope_freqs,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The layer cache.
    pub fn cache(&self) -> &LayerCache {
        &self.cache
    }

    /// Runs `tokens` at positions `pos0..pos0 + n` through the model, appending their keys and
    /// values to `kv`, and hands the logits of the requested positions to `sink` as
    /// `(index in tokens, logits [n_vocab])`, in order.
    ///
    /// The caller checked that the positions fit `kv` and that every id is in the vocabulary.
    pub fn forward(
        &self,
        tokens: &[u32],
        pos0: usize,
        kv: &mut KvCache,
        which: LogitsFor,
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        let n = tokens.len();
        if n == 0 {
            return Err(EngineError::EmptyInput);
        }
        let out: Vec<usize> = match which {
            LogitsFor::Last => vec![n - 1],
            LogitsFor::All => (0..n).collect(),
        };
        let mut seqs = [SeqChunk {
            tokens,
            pos0,
            kv,
            logits: false,
        }];
        self.run(&mut seqs, &out, sink)
    }

    /// One forward pass over several sequences at once (continuous batching): the chunks'
    /// tokens are concatenated into one batch, so each layer is fetched once and every matrix
    /// product runs over all of them; RoPE, the KV cache and attention stay per sequence.
    /// Hands the logits of the last token of each chunk with `logits` set to `sink` as
    /// `(index in seqs, logits [n_vocab])`, in order.
    ///
    /// A chunk's results depend on the whole batch the way llama.cpp's do (kernels are chosen
    /// by the batch's size), so a batched step may round differently from the same chunk run
    /// alone. The caller checked positions and ids as for [`Model::forward`].
    pub fn forward_batch(
        &self,
        seqs: &mut [SeqChunk<'_>],
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        // Rows (in the concatenated batch) whose logits are wanted, and their chunk.
        let mut out = Vec::new();
        let mut owner = Vec::new();
        let mut end = 0;
        for (i, s) in seqs.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(EngineError::EmptyInput);
            }
            end += s.tokens.len();
            if s.logits {
                out.push(end - 1);
                owner.push(i);
            }
        }
        let mut k = 0;
        self.run(seqs, &out, &mut |row, logits| {
            debug_assert_eq!(out[k], row);
            sink(owner[k], logits);
            k += 1;
        })
    }

    /// The forward pass over the concatenated tokens of `seqs`; `out` lists the rows (indices
    /// into the concatenation, ascending) whose logits go to `sink` as `(row, logits)`.
    fn run(
        &self,
        seqs: &mut [SeqChunk<'_>],
        out: &[usize],
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let n = tokens.len();
        let d = self.cfg.n_embd;
        // x: [n, n_embd], the residual stream.
        let mut x = self.embed(&tokens)?;
        let mut s = Scratch::default();
        // Rows of x still carried (all but the last layer's FFN see every token).
        let mut rows = n;
        for il in 0..self.cfg.n_layer {
            let layer = self.cache.get(il)?;
            self.attention_block(il, &layer, &mut x, seqs, &mut s)?;
            if il + 1 == self.cfg.n_layer && out.len() < n {
                // Only some rows' logits are wanted: like llama.cpp (`inp_out_ids`), the last
                // layer keeps only those rows after attention. Attention and its output
                // projection ran on every row (their kernels depend on the batch size); what
                // follows up to the FFN is row by row, so this is llama.cpp's order, and its
                // FFN runs on the kept rows only.
                let mut kept = Vec::with_capacity(out.len() * d);
                for &r in out {
                    kept.extend_from_slice(&x[r * d..(r + 1) * d]);
                }
                x = kept;
                rows = out.len();
            }
            self.ffn_block(il, &layer, &mut x, rows, &mut s)?;
        }
        if rows != out.len() {
            // No layer pruned the rows (a model without layers): keep the requested ones.
            let mut kept = Vec::with_capacity(out.len() * d);
            for &r in out {
                kept.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
            x = kept;
        }
        self.logits(&x, out, sink)
    }

    /// Embedding rows of `tokens` (dequantized one row at a time): `[n, n_embd]`, each row
    /// copied by [`LayerCache::read_global`] from the pinned globals, or read from storage
    /// where the budget left the table there (a row global, see [`crate::Engine::row_globals`]).
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        const NAME: &str = "token_embd.weight";
        let d = self.cfg.n_embd;
        let ty = self
            .cache
            .gguf()
            .tensor(NAME)
            .ok_or_else(|| crate::error::ConfigError::MissingTensor { name: NAME.into() })?
            .ty;
        let row_bytes = ty
            .row_size(d as u64)
            .ok_or_else(|| EngineError::TensorType {
                name: NAME.into(),
                ty,
                usage: "rows of this width",
            })?;
        let mut bytes = vec![0u8; row_bytes as usize];
        let mut x = vec![0.0f32; tokens.len() * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            if id as usize >= self.cfg.n_vocab {
                return Err(EngineError::TokenOutOfRange {
                    id,
                    n_vocab: self.cfg.n_vocab,
                });
            }
            self.cache
                .read_global(NAME, id as u64 * row_bytes, &mut bytes)?;
            strata_quant::dequantize(ty, &bytes, row).map_err(|source| EngineError::Kernel {
                tensor: NAME.into(),
                source,
            })?;
        }
        if self.cfg.scale_embeddings {
            let scale = (d as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(x)
    }

    /// `x += attention(norm(x))` for one layer, storing this batch's keys and values in `kv`.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        il: usize,
        layer: &LayerRef,
        x: &mut [f32],
        seqs: &mut [SeqChunk<'_>],
        s: &mut Scratch,
    ) -> Result<(), EngineError> {
        let c = &self.cfg;
        let (d, hd) = (c.n_embd, c.head_dim);
        let n = x.len() / d;

        // xn = rmsnorm(x) ⊙ attn_norm                         [n, n_embd]
        let w_norm = norm_weight(layer, "attn_norm.weight", d, &mut s.w)?;
        s.xn.resize(n * d, 0.0);
        ops::for_rows(&mut s.xn, d, |t, o| {
            ops::rms_norm(&x[t * d..(t + 1) * d], w_norm, c.rms_eps, o)
        });

        // q = Wq xn + bq  [n, n_head·hd];  k = Wk xn + bk  [n, n_kv·hd];  v = Wv xn + bv  [n, n_kv·hd_v]
        let mut acts = Acts::new(&s.xn, n, d);
        let (q_dim, k_dim, v_dim) = (c.q_dim(), c.k_dim(), c.v_dim());
        s.q.resize(n * q_dim, 0.0);
        s.k.resize(n * k_dim, 0.0);
        s.v.resize(n * v_dim, 0.0);
        if c.arch == Arch::Phi3 && layer.get("attn_qkv.weight").is_some() {
            // Fused (phi3): one product [n, q+k+v], split by columns as llama.cpp's views do.
            let qkv_dim = q_dim + k_dim + v_dim;
            s.fused.resize(n * qkv_dim, 0.0);
            linear(layer, "attn_qkv", &mut acts, qkv_dim, &mut s.fused)?;
            for (t, row) in s.fused.chunks_exact(qkv_dim).enumerate() {
                s.q[t * q_dim..(t + 1) * q_dim].copy_from_slice(&row[..q_dim]);
                s.k[t * k_dim..(t + 1) * k_dim].copy_from_slice(&row[q_dim..q_dim + k_dim]);
                s.v[t * v_dim..(t + 1) * v_dim].copy_from_slice(&row[q_dim + k_dim..]);
            }
        } else {
            let mut qkv = [
                ("attn_q", q_dim, &mut s.q),
                ("attn_k", k_dim, &mut s.k),
                ("attn_v", v_dim, &mut s.v),
            ];
            linear_many(layer, &mut qkv, &mut acts)?;
        }

        // Gemma 3, Qwen3: per-head RMSNorm of q and k (weights [hd], shared by all heads).
        if c.qk_norm {
            let wq = norm_weight(layer, "attn_q_norm.weight", hd, &mut s.w)?;
            ops::for_rows(&mut s.q, hd, |_, h| ops::rms_norm_inplace(h, wq, c.rms_eps));
            let wk = norm_weight(layer, "attn_k_norm.weight", hd, &mut s.w)?;
            ops::for_rows(&mut s.k, hd, |_, h| ops::rms_norm_inplace(h, wk, c.rms_eps));
        }

        // RoPE on every head of q and k at the token's position, with this layer's base.
        let rope = c.rope_for_layer(il);
        let half = c.n_rot / 2;
        s.pos.clear();
        for seq in seqs.iter() {
            s.pos.extend(seq.pos0..seq.pos0 + seq.tokens.len());
        }
        let pos = &s.pos;
        ops::for_rows2(&mut s.q, q_dim, &mut s.k, k_dim, |t, q, k| {
            let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
            ops::rope_angles(
                pos[t],
                c.n_rot,
                rope.freq_base,
                rope.freq_scale,
                self.rope_freqs.as_deref(),
                &mut cos,
                &mut sin,
            );
            if c.rope_attn_factor != 1.0 {
                // ggml's rope: cos(θ)·mscale, sin(θ)·mscale.
                cos.iter_mut().for_each(|v| *v *= c.rope_attn_factor);
                sin.iter_mut().for_each(|v| *v *= c.rope_attn_factor);
            }
            for h in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                ops::rope_apply(h, c.n_rot, c.rope_style, &cos, &sin);
            }
        });

        // Gemma and Phi-3 scale q before the product; the others scale the scores.
        let score_scale = if c.scale_q_before_attn {
            ops::for_rows(&mut s.q, q_dim, |_, r| {
                r.iter_mut().for_each(|v| *v *= c.attn_scale)
            });
            1.0
        } else {
            c.attn_scale
        };

        // Per sequence: append its k, v at positions pos0..pos0+m of its cache, then attend over
        // positions 0..pos0+m. The summation order is the batch's (more than one token in it).
        s.att.resize(n * c.n_head * c.head_dim_v, 0.0);
        let o_dim = c.n_head * c.head_dim_v;
        let mut t0 = 0;
        for seq in seqs.iter_mut() {
            let m = seq.tokens.len();
            let kv = &mut *seq.kv;
            kv.store(
                il,
                seq.pos0,
                &s.k[t0 * k_dim..(t0 + m) * k_dim],
                &s.v[t0 * v_dim..(t0 + m) * v_dim],
            );
            let n_kv = seq.pos0 + m;
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: hd,
                head_dim_v: c.head_dim_v,
                scale: score_scale,
                softcap: c.attn_softcap,
                window: c.is_swa_layer(il).then_some(c.sliding_window),
                f16_operands: kv.kv_type() == KvType::F16,
                batched: n > 1,
            };
            // att: [m, n_head·hd_v] for this sequence's rows
            // Several tokens of one sequence convert f16 rows once for all of them; a single
            // token's tasks convert only the rows of their own KV head, in parallel.
            let (keys, values) = (kv.keys(il, n_kv), kv.values(il, n_kv));
            let (keys, values) = if m > 1 {
                (keys.to_f32(&mut s.kbuf), values.to_f32(&mut s.vbuf))
            } else {
                (keys, values)
            };
            attention(
                &s.q[t0 * q_dim..(t0 + m) * q_dim],
                seq.pos0,
                keys,
                values,
                &params,
                &mut s.att[t0 * o_dim..(t0 + m) * o_dim],
            );
            t0 += m;
        }

        // o = Wo att + bo                                      [n, n_embd]
        let mut acts = Acts::new(&s.att, n, c.n_head * c.head_dim_v);
        s.o.resize(n * d, 0.0);
        linear(layer, "attn_output", &mut acts, d, &mut s.o)?;

        // Gemma: o = rmsnorm(o) ⊙ post_attention_norm;  x += o
        self.post_norm_residual(layer, "post_attention_norm.weight", x, s)
    }

    /// `x += ffn(norm(x))` for one layer: `down(act(gate · xn) ⊙ (up · xn))`.
    fn ffn_block(
        &self,
        il: usize,
        layer: &LayerRef,
        x: &mut [f32],
        n: usize,
        s: &mut Scratch,
    ) -> Result<(), EngineError> {
        let c = &self.cfg;
        let (d, ff) = (c.n_embd, c.n_ff);

        // xn = rmsnorm(x) ⊙ ffn_norm                          [n, n_embd]
        let w_norm = norm_weight(layer, "ffn_norm.weight", d, &mut s.w)?;
        s.xn.resize(n * d, 0.0);
        ops::for_rows(&mut s.xn, d, |t, o| {
            ops::rms_norm(&x[t * d..(t + 1) * d], w_norm, c.rms_eps, o)
        });
        if c.n_expert > 0 {
            return self.moe_block(il, layer, x, n, s);
        }

        // g = Wgate xn, u = Wup xn                            [n, n_ff]
        let mut acts = Acts::new(&s.xn, n, d);
        s.gate.resize(n * ff, 0.0);
        s.up.resize(n * ff, 0.0);
        if !c.ffn_up_fused {
            let mut gate_up = [("ffn_gate", ff, &mut s.gate), ("ffn_up", ff, &mut s.up)];
            linear_many(layer, &mut gate_up, &mut acts)?;
        } else {
            // Fused (phi3): ffn_up has 2·n_ff rows, the gate's first, as ggml_swiglu splits them.
            s.fused.resize(n * 2 * ff, 0.0);
            linear(layer, "ffn_up", &mut acts, 2 * ff, &mut s.fused)?;
            for (t, row) in s.fused.chunks_exact(2 * ff).enumerate() {
                s.gate[t * ff..(t + 1) * ff].copy_from_slice(&row[..ff]);
                s.up[t * ff..(t + 1) * ff].copy_from_slice(&row[ff..]);
            }
        }

        // h = act(g) ⊙ u                                      [n, n_ff]
        let (up, act) = (&s.up, c.ffn_activation);
        ops::for_rows(&mut s.gate, ff, |t, g| {
            let u = &up[t * ff..(t + 1) * ff];
            match act {
                FfnActivation::GeGlu => ops::geglu_inplace(g, u),
                FfnActivation::SwiGlu => ops::swiglu_inplace(g, u, ff),
            }
        });

        // o = Wdown h                                         [n, n_embd]
        let mut acts = Acts::new(&s.gate, n, ff);
        s.o.resize(n * d, 0.0);
        linear(layer, "ffn_down", &mut acts, d, &mut s.o)?;

        // Gemma: o = rmsnorm(o) ⊙ post_ffw_norm;  x += o
        self.post_norm_residual(layer, "post_ffw_norm.weight", x, s)
    }

    /// The end of a block: `o = rmsnorm(o) ⊙ norm` where the model has post-norms (Gemma;
    /// `norm` names the weight), then the residual `x += o` (`o` = `s.o`, `[n, n_embd]`).
    fn post_norm_residual(
        &self,
        layer: &LayerRef,
        norm: &str,
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), EngineError> {
        let c = &self.cfg;
        let d = c.n_embd;
        if c.post_norms {
            let w = norm_weight(layer, norm, d, &mut s.w)?;
            ops::for_rows(&mut s.o, d, |_, r| ops::rms_norm_inplace(r, w, c.rms_eps));
        }
        let o = &s.o;
        ops::for_rows(x, d, |t, xr| {
            xr.iter_mut()
                .zip(&o[t * d..(t + 1) * d])
                .for_each(|(xi, oi)| *xi += oi)
        });
        Ok(())
    }

    /// `x += moe(xn)` for one mixture-of-experts layer (`xn` = the normalized input in
    /// `s.xn`, `[n, n_embd]`), in llama.cpp's order (`build_moe_ffn`, softmax gating, weights
    /// normalized, no scale):
    ///
    /// ```text
    /// p      = softmax(W_router xn)                  [n, E]   (W_router F32)
    /// sel    = the K largest p, descending           [n, K]   (ties as libstdc++'s std::sort)
    /// w      = p[sel] / max(Σ p[sel], 2^-14)         [n, K]   (Σ in f64, in slot order)
    /// y_k    = w_k · down_e(silu(gate_e xn) ⊙ up_e xn)         for e = sel_k
    /// x     += ((y_0 + y_1) + y_2) + …
    /// ```
    /// Each expert's products take `MUL_MAT_ID`'s kernels ([`strata_quant::matmul_q_id`]) over
    /// the rows routed to it, in token order.
    fn moe_block(
        &self,
        il: usize,
        layer: &LayerRef,
        x: &mut [f32],
        n: usize,
        s: &mut Scratch,
    ) -> Result<(), EngineError> {
        let c = &self.cfg;
        let (d, ff, n_exp, k) = (c.n_embd, c.n_ff_exp, c.n_expert, c.n_expert_used);

        // Router logits [n, E]: tinyBLAS's 16 lanes for a batch it takes, vec_dot_f32 otherwise.
        let router = layer.tensor("ffn_gate_inp.weight")?;
        expect_dims(&router, &[d as u64, n_exp as u64])?;
        let wr = f32_tensor(&router)?;
        let tiny_blas = n >= 2 && d % 16 == 0 && n_exp % 4 == 0;
        let mut probs = vec![0.0f32; n * n_exp];
        for (xt, pt) in s.xn.chunks_exact(d).zip(probs.chunks_exact_mut(n_exp)) {
            for (p, we) in pt.iter_mut().zip(wr.chunks_exact(d)) {
                *p = if tiny_blas {
                    ops::dot(we, xt)
                } else {
                    ops::dot_f32_vec(we, xt)
                };
            }
            ops::softmax_row(pt);
        }

        // Top-K per token: descending probability, ties where llama.cpp's std::sort leaves
        // them; then the weights.
        let mut sel = vec![0usize; n * k];
        let mut weights = vec![0.0f32; n * k];
        let mut order: Vec<usize> = Vec::with_capacity(n_exp);
        for t in 0..n {
            let pt = &probs[t * n_exp..(t + 1) * n_exp];
            order.clear();
            order.extend(0..n_exp);
            crate::argsort::argsort_desc(pt, &mut order);
            let mut sum = 0.0f64;
            for j in 0..k {
                sel[t * k + j] = order[j];
                weights[t * k + j] = pt[order[j]];
                sum += f64::from(pt[order[j]]);
            }
            let sum = (sum as f32).max(MIN_EXPERT_WEIGHT_SUM);
            weights[t * k..(t + 1) * k]
                .iter_mut()
                .for_each(|w| *w /= sum);
        }

        // Rows routed to each expert, token-major: (token, slot).
        let mut routed: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_exp];
        for t in 0..n {
            for j in 0..k {
                routed[sel[t * k + j]].push((t, j));
            }
        }

        // Per routed expert: h = silu(gate_e xn) ⊙ (up_e xn) for its rows, then
        // y[(t, slot)] = w[(t, slot)] · down_e h. The experts come from the cache's expert
        // slots, pinned a group at a time (at most what the slots hold; a batch may route to
        // more experts than that). Activations are quantized per row, so quantizing an
        // expert's rows of h on their own gives the bits of llama.cpp's [n·K, ff] product.
        let wanted: Vec<usize> = (0..n_exp).filter(|&e| !routed[e].is_empty()).collect();
        let group = self.cache.plan().expert_slots.max(1);
        let mut acts = Acts::new(&s.xn, n, d);
        let mut y = vec![0.0f32; n * k * d];
        let (mut gbuf, mut ubuf, mut dbuf) = (Vec::new(), Vec::new(), Vec::new());
        for ids in wanted.chunks(group) {
            let set = self.cache.experts(il, ids)?;
            for &e in ids {
                let part = |name: &str| {
                    set.get(e, name).ok_or_else(|| {
                        EngineError::Config(crate::error::ConfigError::MissingTensor {
                            name: format!("blk.{il}.{name} (expert {e})"),
                        })
                    })
                };
                let (up, gate, down) = (
                    part("ffn_up_exps.weight")?,
                    part("ffn_gate_exps.weight")?,
                    part("ffn_down_exps.weight")?,
                );
                expect_dims(&up, &[d as u64, ff as u64])?;
                expect_dims(&gate, &[d as u64, ff as u64])?;
                expect_dims(&down, &[ff as u64, d as u64])?;
                let rows = &routed[e];
                let tok: Vec<usize> = rows.iter().map(|&(t, _)| t).collect();
                gbuf.resize(tok.len() * ff, 0.0);
                ubuf.resize(tok.len() * ff, 0.0);
                matmul_id(&up, &mut acts, &tok, ff, &mut ubuf)?;
                matmul_id(&gate, &mut acts, &tok, ff, &mut gbuf)?;
                ops::swiglu_inplace(&mut gbuf, &ubuf, ff);
                let mut hacts = Acts::new(&gbuf, tok.len(), ff);
                let all: Vec<usize> = (0..tok.len()).collect();
                dbuf.resize(tok.len() * d, 0.0);
                matmul_id(&down, &mut hacts, &all, d, &mut dbuf)?;
                for (i, &(t, j)) in rows.iter().enumerate() {
                    let w = weights[t * k + j];
                    y[(t * k + j) * d..(t * k + j + 1) * d]
                        .iter_mut()
                        .zip(&dbuf[i * d..(i + 1) * d])
                        .for_each(|(yo, v)| *yo = v * w);
                }
            }
        }

        // x += ((y_0 + y_1) + …) per token, slots in order.
        for (t, xt) in x.chunks_exact_mut(d).enumerate() {
            let mut acc = y[t * k * d..(t * k + 1) * d].to_vec();
            for j in 1..k {
                let yj = &y[(t * k + j) * d..(t * k + j + 1) * d];
                acc.iter_mut().zip(yj).for_each(|(a, v)| *a += v);
            }
            xt.iter_mut().zip(&acc).for_each(|(xi, a)| *xi += a);
        }
        Ok(())
    }

    /// Final norm and output head for the rows of `x` (`[n_out, n_embd]`), in steps of
    /// [`OUTPUT_ROWS_PER_STEP`] rows; row `r` is reported to `sink` as index `ids[r]`.
    fn logits(
        &self,
        x: &[f32],
        ids: &[usize],
        sink: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), EngineError> {
        let n_out = ids.len();
        let c = &self.cfg;
        let (d, nv) = (c.n_embd, c.n_vocab);
        let globals = self.cache.globals();
        let mut w = Vec::new();
        let w_norm = norm_weight(globals, "output_norm.weight", d, &mut w)?;
        // Untied models have output.weight; tied ones reuse the embedding matrix.
        let head = match globals.get("output.weight") {
            Some(t) => t,
            None => globals.tensor("token_embd.weight")?,
        };

        let mut xn = Vec::new();
        let mut logits = Vec::new();
        let mut r0 = 0;
        while r0 < n_out {
            let m = OUTPUT_ROWS_PER_STEP.min(n_out - r0);
            // xn = rmsnorm(x) ⊙ output_norm                  [m, n_embd]
            xn.resize(m * d, 0.0);
            for (o, xi) in xn
                .chunks_exact_mut(d)
                .zip(x[r0 * d..(r0 + m) * d].chunks_exact(d))
            {
                ops::rms_norm(xi, w_norm, c.rms_eps, o);
            }
            // logits = W_out xn                              [m, n_vocab]
            logits.resize(m * nv, 0.0);
            // One product over the n_out rows in llama.cpp, so each slice keeps the kernel
            // (and float order) of the whole batch.
            let mut acts = Acts::new(&xn, m, d);
            let part = Part {
                first: r0,
                batch: n_out,
            };
            matmul_part(&head, &mut acts, nv, part, &mut logits)?;
            if c.final_logit_softcap > 0.0 {
                // ggml_scale(1/c), ggml_tanh, ggml_scale(c): a product by the reciprocal.
                let cap = c.final_logit_softcap;
                let inv = 1.0 / cap;
                logits
                    .iter_mut()
                    .for_each(|v| *v = crate::mathf::tanhf(*v * inv) * cap);
            }
            for (r, row) in logits.chunks_exact(nv).enumerate() {
                sink(ids[r0 + r], row);
            }
            r0 += m;
        }
        Ok(())
    }
}

/// Buffers reused across the layers of one forward call.
#[derive(Default)]
struct Scratch {
    /// Normalized input of a block: `[n, n_embd]`.
    xn: Vec<f32>,
    /// Queries `[n, n_head·hd]`, keys `[n, n_kv·hd]`, values `[n, n_kv·hd_v]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output before the projection: `[n, n_head·hd_v]`.
    att: Vec<f32>,
    /// Block output before the residual add: `[n, n_embd]`.
    o: Vec<f32>,
    /// A fused product before its split (`attn_qkv`: `[n, q+k+v]`; `ffn_up`: `[n, 2·n_ff]`).
    fused: Vec<f32>,
    /// FFN gate and up projections: `[n, n_ff]`.
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Cached keys/values of this layer as f32 when the cache is f16 and a sequence brings
    /// several tokens: `[n_kv, kv_dim]`.
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    /// The position of each token of the batch: `[n]`.
    pos: Vec<usize>,
    /// A norm weight read from its F32 tensor.
    w: Vec<f32>,
}

/// Activations `x: [n, cols]`, quantized lazily once per `vec_dot_type` and then shared by every
/// weight of that type (Q/K/V; gate/up).
struct Acts<'x> {
    x: &'x [f32],
    n: usize,
    cols: usize,
    quantized: Vec<(GgmlType, QuantizedActs)>,
}

impl<'x> Acts<'x> {
    fn new(x: &'x [f32], n: usize, cols: usize) -> Acts<'x> {
        debug_assert_eq!(x.len(), n * cols);
        Acts {
            x,
            n,
            cols,
            quantized: Vec::new(),
        }
    }

    fn for_weight(&mut self, w: &TensorView<'_>) -> Result<&QuantizedActs, EngineError> {
        let i = self.quantize_for(w)?;
        Ok(&self.quantized[i].1)
    }

    /// Quantizes the activations for `w`'s `vec_dot_type` unless done; returns their index in
    /// `quantized`.
    fn quantize_for(&mut self, w: &TensorView<'_>) -> Result<usize, EngineError> {
        let dot_ty = vec_dot_type(w.ty).map_err(|source| kernel_err(w, source))?;
        if let Some(i) = self.quantized.iter().position(|(t, _)| *t == dot_ty) {
            return Ok(i);
        }
        let q = quantize_acts(dot_ty, self.x, self.n, self.cols)
            .map_err(|source| kernel_err(w, source))?;
        self.quantized.push((dot_ty, q));
        Ok(self.quantized.len() - 1)
    }
}

/// `y = W x (+ b)` for the layer tensor `<name>.weight` (dims `[cols, rows]`) and the optional
/// bias `<name>.bias` (`[rows]`). Shapes: x `[n, cols]` (in `acts`), y `[n, rows]`.
fn linear(
    layer: &LayerRef,
    name: &str,
    acts: &mut Acts<'_>,
    rows: usize,
    y: &mut [f32],
) -> Result<(), EngineError> {
    let w = layer.tensor(&format!("{name}.weight"))?;
    matmul(&w, acts, rows, y)?;
    add_bias(layer, name, rows, y)
}

/// [`linear`] for several tensors of `layer` that take the same activations (Q, K and V; the
/// FFN's gate and up): `(name, rows, y)` each. For one token their products run as one
/// parallel loop ([`strata_quant::matvec_q_many`]: one hand-off to the threads, and products
/// too small to split alone share them), else one after another; the bits are the same.
fn linear_many(
    layer: &LayerRef,
    products: &mut [(&str, usize, &mut Vec<f32>)],
    acts: &mut Acts<'_>,
) -> Result<(), EngineError> {
    if acts.n != 1 {
        for (name, rows, y) in products.iter_mut() {
            linear(layer, name, acts, *rows, y)?;
        }
        return Ok(());
    }
    let cols = acts.cols;
    let mut ws = Vec::with_capacity(products.len());
    for (name, rows, _) in products.iter() {
        let w = layer.tensor(&format!("{name}.weight"))?;
        expect_dims(&w, &[cols as u64, *rows as u64])?;
        let i = acts.quantize_for(&w)?;
        ws.push((w, i));
    }
    let mut group = Vec::with_capacity(products.len());
    for ((w, i), (_, rows, y)) in ws.iter().zip(products.iter_mut()) {
        let x = &acts.quantized[*i].1;
        let mv = strata_quant::Matvec::new(w.ty, w.bytes, *rows, cols, x, y)
            .map_err(|source| kernel_err(w, source))?;
        group.push(mv);
    }
    strata_quant::matvec_q_many(&mut group);
    for (name, rows, y) in products.iter_mut() {
        add_bias(layer, name, *rows, y)?;
    }
    Ok(())
}

/// Adds the optional bias `<name>.bias` (`[rows]`) of `layer` to each row of `y`.
fn add_bias(layer: &LayerRef, name: &str, rows: usize, y: &mut [f32]) -> Result<(), EngineError> {
    if let Some(b) = layer.get(&format!("{name}.bias")) {
        expect_dims(&b, &[rows as u64])?;
        let bias = f32_tensor(&b)?;
        for row in y.chunks_exact_mut(rows) {
            row.iter_mut().zip(&bias).for_each(|(v, bi)| *v += bi);
        }
    }
    Ok(())
}

/// One expert's product (`w`: its `[cols, rows]` slice of an expert tensor) with the activation
/// rows `ids` of `acts`, by `MUL_MAT_ID`'s kernel rule: `y` `[ids.len(), rows]`.
fn matmul_id(
    w: &TensorView<'_>,
    acts: &mut Acts<'_>,
    ids: &[usize],
    rows: usize,
    y: &mut [f32],
) -> Result<(), EngineError> {
    let cols = acts.cols;
    let q = acts.for_weight(w)?;
    strata_quant::matmul_q_id(w.ty, w.bytes, rows, cols, q, ids, y)
        .map_err(|source| kernel_err(w, source))
}

/// `y = W x` with W `[cols, rows]` read in place: `matvec_q` for one token, `matmul_q` for more.
fn matmul(
    w: &TensorView<'_>,
    acts: &mut Acts<'_>,
    rows: usize,
    y: &mut [f32],
) -> Result<(), EngineError> {
    let n = acts.n;
    matmul_part(w, acts, rows, Part::whole(n), y)
}

/// [`matmul`] for the tokens of `acts`, which are `part` of a larger batch: each gets the bits
/// of one product over the whole batch (`strata_quant::matmul_q_part`).
fn matmul_part(
    w: &TensorView<'_>,
    acts: &mut Acts<'_>,
    rows: usize,
    part: Part,
    y: &mut [f32],
) -> Result<(), EngineError> {
    let cols = acts.cols;
    expect_dims(w, &[cols as u64, rows as u64])?;
    let q = acts.for_weight(w)?;
    let r = if part.batch == 1 {
        strata_quant::matvec_q(w.ty, w.bytes, rows, cols, q, y)
    } else {
        strata_quant::matmul_q_part(w.ty, w.bytes, rows, cols, q, part, y)
    };
    r.map_err(|source| kernel_err(w, source))
}

/// How a tensor is used, which decides the types it may have.
#[derive(Clone, Copy)]
enum Role {
    /// A norm weight or bias, read whole and dequantized.
    Vector,
    /// A matrix multiplied by the activations (a kernel for its type must exist).
    Matrix,
    /// A mixture-of-experts router, multiplied in f32 as llama.cpp keeps it.
    Router,
}

/// Every tensor the forward pass will use exists, with the shape the configuration implies and
/// a type the kernels compute with: checked from the header at open, so that a broken file is
/// refused before any token instead of failing (or worse) in the middle of a generation.
fn check_tensors(cfg: &ModelConfig, gguf: &strata_gguf::Gguf) -> Result<(), EngineError> {
    let check = |name: &str, dims: &[usize], role: Role, required: bool| {
        let Some(t) = gguf.tensor(name) else {
            return match required {
                true => Err(EngineError::Config(
                    crate::error::ConfigError::MissingTensor { name: name.into() },
                )),
                false => Ok(()),
            };
        };
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if t.dims != expected {
            return Err(EngineError::Shape {
                name: name.into(),
                dims: t.dims.clone(),
                expected,
            });
        }
        let usable = match role {
            Role::Vector => strata_quant::is_supported(t.ty),
            Role::Matrix => vec_dot_type(t.ty).is_ok(),
            Role::Router => t.ty == GgmlType::F32,
        } && t.ty.row_size(t.dims[0]).is_some();
        if !usable {
            return Err(EngineError::TensorType {
                name: name.into(),
                ty: t.ty,
                usage: match role {
                    Role::Vector => "a norm or bias vector",
                    Role::Matrix => "a weight matrix",
                    Role::Router => "an expert router (F32)",
                },
            });
        }
        Ok(())
    };
    let (d, ff, hd) = (cfg.n_embd, cfg.n_ff, cfg.head_dim);
    check("token_embd.weight", &[d, cfg.n_vocab], Role::Matrix, true)?;
    check("output.weight", &[d, cfg.n_vocab], Role::Matrix, false)?;
    check("output_norm.weight", &[d], Role::Vector, true)?;
    for factors in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        check(factors, &[cfg.n_rot / 2], Role::Vector, false)?;
    }
    let attn_out_cols = cfg.n_head * cfg.head_dim_v;
    for il in 0..cfg.n_layer {
        let name = |short: &str| format!("blk.{il}.{short}");
        let matrix = |short: &str, cols: usize, rows: usize| -> Result<(), EngineError> {
            check(
                &name(&format!("{short}.weight")),
                &[cols, rows],
                Role::Matrix,
                true,
            )?;
            check(
                &name(&format!("{short}.bias")),
                &[rows],
                Role::Vector,
                false,
            )
        };
        check(&name("attn_norm.weight"), &[d], Role::Vector, true)?;
        // Q, K, V as three matrices or (phi3) one fused `attn_qkv`, as llama.cpp accepts them.
        if cfg.arch == Arch::Phi3 && gguf.tensor(&name("attn_qkv.weight")).is_some() {
            matrix("attn_qkv", d, cfg.q_dim() + cfg.k_dim() + cfg.v_dim())?;
        } else {
            matrix("attn_q", d, cfg.q_dim())?;
            matrix("attn_k", d, cfg.k_dim())?;
            matrix("attn_v", d, cfg.v_dim())?;
        }
        matrix("attn_output", attn_out_cols, d)?;
        check(&name("ffn_norm.weight"), &[d], Role::Vector, true)?;
        // Gate and up as two matrices, or (phi3) one fused `ffn_up` of 2·n_ff rows, or the
        // router and the experts' 3-D tensors.
        if cfg.n_expert > 0 {
            let (fe, ne) = (cfg.n_ff_exp, cfg.n_expert);
            check(&name("ffn_gate_inp.weight"), &[d, ne], Role::Router, true)?;
            check(
                &name("ffn_gate_exps.weight"),
                &[d, fe, ne],
                Role::Matrix,
                true,
            )?;
            check(
                &name("ffn_up_exps.weight"),
                &[d, fe, ne],
                Role::Matrix,
                true,
            )?;
            check(
                &name("ffn_down_exps.weight"),
                &[fe, d, ne],
                Role::Matrix,
                true,
            )?;
        } else if cfg.ffn_up_fused {
            matrix("ffn_up", d, 2 * ff)?;
            matrix("ffn_down", ff, d)?;
        } else {
            matrix("ffn_gate", d, ff)?;
            matrix("ffn_up", d, ff)?;
            matrix("ffn_down", ff, d)?;
        }
        if cfg.qk_norm {
            check(&name("attn_q_norm.weight"), &[hd], Role::Vector, true)?;
            check(&name("attn_k_norm.weight"), &[hd], Role::Vector, true)?;
        }
        if cfg.post_norms {
            check(
                &name("post_attention_norm.weight"),
                &[d],
                Role::Vector,
                true,
            )?;
            check(&name("post_ffw_norm.weight"), &[d], Role::Vector, true)?;
        }
    }
    Ok(())
}

/// A norm weight `[n]` as f32 in `buf` (norm tensors are F32 in every GGUF llama.cpp writes).
fn norm_weight<'b>(
    layer: &LayerRef,
    name: &str,
    n: usize,
    buf: &'b mut Vec<f32>,
) -> Result<&'b [f32], EngineError> {
    let t = layer.tensor(name)?;
    expect_dims(&t, &[n as u64])?;
    *buf = f32_tensor(&t)?;
    Ok(buf)
}

/// The values of a small F32 (or F16/BF16, dequantized) 1-D tensor.
fn f32_tensor(t: &TensorView<'_>) -> Result<Vec<f32>, EngineError> {
    let n: u64 = t.dims.iter().product();
    let mut out = Vec::new();
    if t.ty == GgmlType::F32 {
        ops::f32_from_le_bytes(t.bytes, &mut out);
    } else {
        out.resize(n as usize, 0.0);
        strata_quant::dequantize(t.ty, t.bytes, &mut out)
            .map_err(|source| kernel_err(t, source))?;
    }
    if out.len() as u64 != n {
        return Err(EngineError::Shape {
            name: t.name.to_string(),
            dims: t.dims.to_vec(),
            expected: vec![out.len() as u64],
        });
    }
    Ok(out)
}

fn expect_dims(t: &TensorView<'_>, expected: &[u64]) -> Result<(), EngineError> {
    if t.dims != expected {
        return Err(EngineError::Shape {
            name: t.name.to_string(),
            dims: t.dims.to_vec(),
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

fn kernel_err(t: &TensorView<'_>, source: strata_quant::QuantError) -> EngineError {
    EngineError::Kernel {
        tensor: t.name.to_string(),
        source,
    }
}

//! `cargo xtask gen-model`: synthetic GGUF models (llama, qwen2, qwen3, gemma2, phi3, and the
//! mixture-of-experts qwen3moe and Mixtral-style llama) for streaming tests, benches and checks
//! against llama.cpp.
//!
//! ```text
//! cargo xtask gen-model [--preset tiny|1b|7b|moe-8g] [--type TYPE] [--arch ARCH]
//!                       [--experts N] [--experts-used K]
//!                       [--seed N] [--layers N] [--vocab N] [--out PATH]
//! ```
//! `ARCH` is one of llama, qwen2, qwen3, gemma2, phi3, qwen3moe, llama-moe (alias mixtral: GGUF
//! arch `llama` with experts). `--experts`/`--experts-used` override the expert count and the
//! experts used per token of a MoE arch (an error for the others). The `moe-8g` preset is MoE only
//! (default arch qwen3moe): a Qwen3-30B-A3B-like shape of 32 experts, 4 used, about 8 GB as Q4_K.
//! `TYPE` is one of q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs,
//! iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, tq1_0, tq2_0, mxfp4, f16, bf16 (every
//! weight matrix of that type; the IQ formats' blocks are random, not the output of llama.cpp's
//! importance-matrix quantizer, which synthetic weights do not need), or q4_k_m, shaped like llama.cpp's Q4_K_M (Q4_K, except
//! `output.weight` and every `attn_v`, `attn_qkv`, `ffn_down` and `ffn_down_exps`, which are Q6_K),
//! or mxfp4_moe, llama.cpp's MXFP4_MOE (gpt-oss's mix: expert matrices MXFP4, the others Q8_0).
//! MoE routers (`ffn_gate_inp`) are always F32, like llama.cpp's.
//!
//! Shapes follow llama.cpp's tensor names, ggml dimension order (`[columns, rows, experts]`) and
//! `<arch>.<key>` metadata, so llama.cpp loads every file:
//! - llama, qwen2: `attn_q/k/v`, `attn_output`, `ffn_gate/up/down`; qwen2 adds f32 q/k/v biases.
//! - qwen3: head width `key_length` independent of `n_embd / n_head`, and `attn_q_norm` /
//!   `attn_k_norm` (`[head_dim]`).
//! - gemma2: `post_attention_norm` and `post_ffw_norm`, a sliding window of 8, attention and final
//!   logit soft-capping, no `output.weight` (the head is `token_embd`).
//! - phi3: fused `attn_qkv` (Q, K, V rows) and `ffn_up` (gate rows, then up rows), LongRoPE
//!   `rope_factors_long/short.weight` (F32, `[head_dim / 2]`).
//! - qwen3moe: qwen3's attention, then an F32 router `ffn_gate_inp` `[n_embd, n_expert]` and
//!   `ffn_gate/up_exps` `[n_embd, n_ff_exp, n_expert]`, `ffn_down_exps` `[n_ff_exp, n_embd,
//!   n_expert]`; `expert_feed_forward_length` is the expert width.
//! - llama-moe: llama's attention and Mixtral's experts, whose width is `feed_forward_length`.
//!
//! Weights are valid blocks of random quants with small finite f16 scales chosen so that a forward
//! pass stays finite: every weight matrix has elements of standard deviation ≈ 1/sqrt(columns)
//! (an expert tensor's columns are its `dims[0]`), qwen2's q/k/v biases are small, and llama/qwen2
//! norm weights are 1.0. The other archs draw their norm weights in [0.5, 1.5), so weighted norms
//! are really exercised, and their routers have std 4/sqrt(n_embd), so tokens pick varied experts.
//! Nothing is quantized: for each (type, columns) a pool of random blocks is generated once and
//! each tensor borrows a slice of it at a random block offset, so a 4 GB file costs little more
//! than writing it. The llama and qwen2 files keep their bytes from before the other archs existed
//! (llama.cpp references carry their SHA-256): the extra random draws happen only on the other
//! archs' paths. The tokenizer is a small valid SentencePiece ("llama") vocabulary: `<unk>`, `<s>`,
//! `</s>`, the 256 byte tokens, a few hundred pieces, then filler pieces up to the vocabulary size.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use strata_gguf::{Array, GgmlType, GgufWriter};

/// Model family: decides the metadata key prefix, the tensors, defaults and extra metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// llama: no biases.
    Llama,
    /// qwen2: f32 biases on attn_q/k/v.
    Qwen2,
    /// qwen3: RMS-normed q and k heads (`attn_q_norm`, `attn_k_norm`), head width of its own.
    Qwen3,
    /// gemma2: post-attention and post-FFN norms, sliding window, soft-capping, tied head.
    Gemma2,
    /// phi3: fused `attn_qkv` and gate/up `ffn_up`, LongRoPE factors.
    Phi3,
    /// qwen3moe: qwen3's attention, an expert FFN of `expert_feed_forward_length`.
    Qwen3Moe,
    /// Mixtral: GGUF arch `llama` with experts of width `feed_forward_length`.
    LlamaMoe,
}

impl Arch {
    /// Every arch, in `--arch` order.
    pub const ALL: [Arch; 7] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Gemma2,
        Arch::Phi3,
        Arch::Qwen3Moe,
        Arch::LlamaMoe,
    ];

    /// The GGUF `general.architecture` (and metadata key prefix): `llama` for [`Arch::LlamaMoe`].
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama | Arch::LlamaMoe => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma2 => "gemma2",
            Arch::Phi3 => "phi3",
            Arch::Qwen3Moe => "qwen3moe",
        }
    }

    /// The name `--arch` takes and file names carry: [`Arch::name`], but `llama-moe` for
    /// [`Arch::LlamaMoe`].
    pub fn cli_name(self) -> &'static str {
        match self {
            Arch::LlamaMoe => "llama-moe",
            other => other.name(),
        }
    }

    /// Parses an `--arch` value: a [`Arch::cli_name`], or `mixtral` for [`Arch::LlamaMoe`].
    pub fn from_cli(s: &str) -> Result<Arch> {
        if s.eq_ignore_ascii_case("mixtral") {
            return Ok(Arch::LlamaMoe);
        }
        match Arch::ALL
            .into_iter()
            .find(|a| a.cli_name().eq_ignore_ascii_case(s))
        {
            Some(a) => Ok(a),
            None => {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.cli_name()).collect();
                bail!(
                    "unknown arch `{s}`; accepted: {} (or mixtral)",
                    names.join(", ")
                )
            }
        }
    }

    /// Whether the FFN is a mixture of experts.
    pub fn is_moe(self) -> bool {
        matches!(self, Arch::Qwen3Moe | Arch::LlamaMoe)
    }

    /// The archs added after llama and qwen2: random norm weights, `key_length` metadata where
    /// the real models have it. llama and qwen2 keep their bytes.
    fn is_new(self) -> bool {
        !matches!(self, Arch::Llama | Arch::Qwen2)
    }

    /// qwen3's per-head RMS norms of q and k.
    fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Qwen3Moe)
    }
}

/// What `--type` accepts.
const ACCEPTED: &str =
    "q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, \
     iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, tq1_0, tq2_0, mxfp4, f16, bf16, q4_k_m, \
     mxfp4_moe";

/// The weight types of a synthetic model: one type for every matrix, or a llama.cpp mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Every weight matrix (embeddings and output head included) has this type.
    Uniform(GgmlType),
    /// llama.cpp's Q4_K_M shape: Q4_K, except `output.weight` and every `attn_v`, `attn_qkv`,
    /// `ffn_down` and `ffn_down_exps`, which are Q6_K. (llama.cpp gives Q6_K to only some
    /// layers' `attn_v` and `ffn_down`; here all of them are, which covers the same kernels.)
    Q4KM,
    /// llama.cpp's MXFP4_MOE mix (gpt-oss's): the experts (`ffn_{gate,up,down}_exps`) MXFP4,
    /// every other matrix Q8_0.
    Mxfp4Moe,
}

impl From<GgmlType> for WeightType {
    fn from(ty: GgmlType) -> WeightType {
        WeightType::Uniform(ty)
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightType::Uniform(ty) => ty.fmt(f),
            WeightType::Q4KM => f.write_str("Q4_K_M"),
            WeightType::Mxfp4Moe => f.write_str("MXFP4_MOE"),
        }
    }
}

impl WeightType {
    /// The type of the weight matrix called `name` (e.g. `blk.0.attn_v.weight`).
    pub fn of(self, name: &str) -> GgmlType {
        match self {
            WeightType::Uniform(ty) => ty,
            WeightType::Mxfp4Moe => {
                if name.ends_with("_exps.weight") {
                    GgmlType::MXFP4
                } else {
                    GgmlType::Q8_0
                }
            }
            WeightType::Q4KM => {
                if name == "output.weight"
                    || name.ends_with(".attn_v.weight")
                    || name.ends_with(".attn_qkv.weight")
                    || name.ends_with(".ffn_down.weight")
                    || name.ends_with(".ffn_down_exps.weight")
                {
                    GgmlType::Q6_K
                } else {
                    GgmlType::Q4_K
                }
            }
        }
    }

    /// Every type the matrices may have.
    fn types(self) -> Vec<GgmlType> {
        match self {
            WeightType::Uniform(ty) => vec![ty],
            WeightType::Q4KM => vec![GgmlType::Q4_K, GgmlType::Q6_K],
            WeightType::Mxfp4Moe => vec![GgmlType::MXFP4, GgmlType::Q8_0],
        }
    }

    /// llama.cpp's `LLAMA_FTYPE` number, for `general.file_type`.
    fn file_type(self) -> Result<u32> {
        Ok(match self {
            WeightType::Q4KM => 15,
            WeightType::Mxfp4Moe => 38,
            WeightType::Uniform(ty) => match ty {
                GgmlType::F16 => 1,
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q2_K => 10,
                GgmlType::Q3_K => 11,
                GgmlType::Q4_K => 15,
                GgmlType::Q5_K => 16,
                GgmlType::Q6_K => 18,
                GgmlType::IQ4_NL => 25,
                GgmlType::IQ2_XXS => 19,
                GgmlType::IQ2_XS => 20,
                GgmlType::IQ3_XXS => 23,
                GgmlType::IQ1_S => 24,
                GgmlType::IQ3_S => 26,
                GgmlType::IQ2_S => 28,
                GgmlType::IQ4_XS => 30,
                GgmlType::IQ1_M => 31,
                GgmlType::BF16 => 32,
                GgmlType::TQ1_0 => 36,
                GgmlType::TQ2_0 => 37,
                GgmlType::MXFP4 => 38,
                other => bail!("type {other} is not generated; accepted: {ACCEPTED}"),
            },
        })
    }

    /// The lower-case name `--type` accepts, e.g. `q4_k`, `iq4_nl`, `q4_k_m`.
    pub fn name(self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

/// Shape and type of a synthetic model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Preset name (for `general.name`).
    pub preset: String,
    /// Architecture.
    pub arch: Arch,
    /// Types of the weight matrices (embeddings and output head included; MoE routers are F32).
    pub ty: WeightType,
    /// Hidden size.
    pub n_embd: u64,
    /// Feed-forward size (`feed_forward_length`; for llama-moe also each expert's width).
    pub n_ff: u64,
    /// Number of blocks.
    pub n_layer: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads.
    pub n_head_kv: u64,
    /// Width of a query/key/value head. `n_embd / n_head` for llama and qwen2 (which write no
    /// `key_length`); qwen3's is its own (`n_head · head_dim` need not be `n_embd`).
    pub head_dim: u64,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// Context length.
    pub n_ctx: u64,
    /// Experts per MoE layer (0: dense).
    pub n_expert: u64,
    /// Experts used per token (0: dense).
    pub n_expert_used: u64,
    /// Width of an expert's FFN (0: dense; for llama-moe equal to `n_ff`).
    pub n_ff_exp: u64,
}

impl ModelSpec {
    /// A named preset: `tiny`, `1b` (TinyLlama-1.1B shape), `7b` (Llama-2-7B shape) or `moe-8g`
    /// (MoE archs only). The dense archs take `tiny`, `1b` and `7b`, the MoE archs `tiny` and
    /// `moe-8g`. Every arch has llama's shape of a preset except in `tiny`: qwen3 has heads of
    /// 128 (n_head · head_dim = 512 ≠ n_embd), phi3 a context of 4096, qwen3moe qwen3's heads
    /// and 8 experts of 256 (2 used), llama-moe 8 experts of n_ff = 256 (2 used).
    pub fn preset(name: &str, arch: Arch, ty: impl Into<WeightType>) -> Result<ModelSpec> {
        let ty = ty.into();
        let (n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, n_ctx) = match name {
            "tiny" => (256, 768, 4, 4, 2, 512, 512),
            "1b" => (2048, 5632, 22, 32, 4, 32000, 2048),
            "7b" => (4096, 11008, 32, 32, 32, 32000, 4096),
            // Qwen3-30B-A3B (n_embd 2048, 32 heads of 128, 4 KV heads, 48 layers, 128 experts of
            // 768, 8 used) scaled to 32 experts of 1792, 4 used, 38 layers, a 32000 vocabulary.
            // As Q4_K (144 bytes per 256 elements, 0.5625 B/element), per layer:
            //   attention: 2048·4096 (q) + 2·2048·512 (k, v) + 4096·2048 (output) = 18,874,368
            //   experts:   3 · 2048·1792·32                                      = 352,321,536
            //   → 371,195,904 elements · 0.5625 = 208,797,696 B, plus the F32 router
            //     (2048·32·4 = 262,144 B) and norms (2·2048·4 + 2·128·4 = 17,408 B)
            //   = 209,077,248 B;
            // 38 layers = 7,944,935,424 B; token_embd + output: 2·2048·32000·0.5625 = 73,728,000 B,
            // output_norm 8,192 B; total 8,018,671,616 B ≈ 8.02 GB (7.47 GiB) of tensor data, plus
            // well under 1 MB of metadata. (24 layers would be 5.09 GB, 36 layers 7.60 GB.)
            "moe-8g" => (2048, 6144, 38, 32, 4, 32000, 4096),
            other => bail!("unknown preset `{other}`; accepted: tiny, 1b, 7b, moe-8g"),
        };
        let mut spec = ModelSpec {
            preset: name.to_string(),
            arch,
            ty,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            head_dim: n_embd / n_head,
            n_vocab,
            n_ctx,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
        };
        match (name, arch) {
            ("moe-8g", a) if !a.is_moe() => bail!(
                "preset moe-8g is for MoE archs (qwen3moe, llama-moe), not {}",
                a.cli_name()
            ),
            ("moe-8g", a) => {
                spec.head_dim = 128;
                spec.n_expert = 32;
                spec.n_expert_used = 4;
                spec.n_ff_exp = 1792;
                if a == Arch::LlamaMoe {
                    spec.n_ff = spec.n_ff_exp;
                }
            }
            ("tiny", _) => match arch {
                Arch::Llama | Arch::Qwen2 | Arch::Gemma2 => {}
                Arch::Qwen3 => spec.head_dim = 128,
                Arch::Phi3 => spec.n_ctx = 4096,
                Arch::Qwen3Moe => {
                    spec.head_dim = 128;
                    spec.n_expert = 8;
                    spec.n_expert_used = 2;
                    spec.n_ff_exp = 256;
                }
                Arch::LlamaMoe => {
                    spec.n_ff = 256;
                    spec.n_expert = 8;
                    spec.n_expert_used = 2;
                    spec.n_ff_exp = 256;
                }
            },
            (_, a) if a.is_moe() => bail!(
                "preset {name} is dense; the MoE arch {} takes tiny or moe-8g",
                a.cli_name()
            ),
            _ => {}
        }
        Ok(spec)
    }

    /// Every tensor in file order: (name, dims, kind).
    fn tensors(&self) -> Vec<(String, Vec<u64>, Kind)> {
        let (e, f, hd) = (self.n_embd, self.n_ff, self.head_dim);
        let (q, kv) = (self.n_head * hd, self.n_head_kv * hd);
        let (fx, nx) = (self.n_ff_exp, self.n_expert);
        let arch = self.arch;
        let mut t = Vec::new();
        if arch == Arch::Phi3 {
            t.push((
                "rope_factors_long.weight".to_string(),
                vec![hd / 2],
                Kind::RopeLong,
            ));
            t.push((
                "rope_factors_short.weight".to_string(),
                vec![hd / 2],
                Kind::RopeShort,
            ));
        }
        t.push((
            "token_embd.weight".to_string(),
            vec![e, self.n_vocab],
            Kind::Matrix,
        ));
        for i in 0..self.n_layer {
            let b = |n: &str| format!("blk.{i}.{n}");
            t.push((b("attn_norm.weight"), vec![e], Kind::Norm));
            if arch == Arch::Phi3 {
                t.push((b("attn_qkv.weight"), vec![e, q + 2 * kv], Kind::Matrix));
            } else {
                t.push((b("attn_q.weight"), vec![e, q], Kind::Matrix));
                t.push((b("attn_k.weight"), vec![e, kv], Kind::Matrix));
                t.push((b("attn_v.weight"), vec![e, kv], Kind::Matrix));
            }
            if arch == Arch::Qwen2 {
                t.push((b("attn_q.bias"), vec![q], Kind::Bias));
                t.push((b("attn_k.bias"), vec![kv], Kind::Bias));
                t.push((b("attn_v.bias"), vec![kv], Kind::Bias));
            }
            if arch.has_qk_norm() {
                t.push((b("attn_q_norm.weight"), vec![hd], Kind::Norm));
                t.push((b("attn_k_norm.weight"), vec![hd], Kind::Norm));
            }
            t.push((b("attn_output.weight"), vec![q, e], Kind::Matrix));
            if arch == Arch::Gemma2 {
                t.push((b("post_attention_norm.weight"), vec![e], Kind::Norm));
            }
            t.push((b("ffn_norm.weight"), vec![e], Kind::Norm));
            if arch.is_moe() {
                t.push((b("ffn_gate_inp.weight"), vec![e, nx], Kind::Router));
                t.push((b("ffn_gate_exps.weight"), vec![e, fx, nx], Kind::Matrix));
                t.push((b("ffn_up_exps.weight"), vec![e, fx, nx], Kind::Matrix));
                t.push((b("ffn_down_exps.weight"), vec![fx, e, nx], Kind::Matrix));
            } else if arch == Arch::Phi3 {
                t.push((b("ffn_up.weight"), vec![e, 2 * f], Kind::Matrix));
                t.push((b("ffn_down.weight"), vec![f, e], Kind::Matrix));
            } else {
                t.push((b("ffn_gate.weight"), vec![e, f], Kind::Matrix));
                t.push((b("ffn_up.weight"), vec![e, f], Kind::Matrix));
                t.push((b("ffn_down.weight"), vec![f, e], Kind::Matrix));
            }
            if arch == Arch::Gemma2 {
                t.push((b("post_ffw_norm.weight"), vec![e], Kind::Norm));
            }
        }
        t.push(("output_norm.weight".to_string(), vec![e], Kind::Norm));
        if arch != Arch::Gemma2 {
            t.push((
                "output.weight".to_string(),
                vec![e, self.n_vocab],
                Kind::Matrix,
            ));
        }
        t
    }

    /// Whether `<arch>.attention.key_length` / `value_length` are written: for the archs whose
    /// real GGUFs carry them, and wherever the head width is not `n_embd / n_head`.
    fn writes_key_length(&self) -> bool {
        matches!(self.arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma2)
            || self.n_head == 0
            || self.head_dim != self.n_embd / self.n_head
    }

    fn check(&self) -> Result<()> {
        for ty in self.ty.types() {
            let block = ty.block_size() as u64;
            if !self.n_embd.is_multiple_of(block) || !self.n_ff.is_multiple_of(block) {
                bail!(
                    "{}: n_embd {} and n_ff {} must be multiples of the {ty} block size {block}",
                    self.preset,
                    self.n_embd,
                    self.n_ff,
                );
            }
            // Rows of attn_output and ffn_down_exps.
            for (what, cols) in [
                ("n_head · head_dim", self.n_head * self.head_dim),
                ("n_ff_exp", self.n_ff_exp),
            ] {
                if !cols.is_multiple_of(block) {
                    bail!(
                        "{}: {what} = {cols} must be a multiple of the {ty} block size {block}",
                        self.preset
                    );
                }
            }
        }
        self.ty.file_type()?;
        if self.n_head == 0
            || !self.n_embd.is_multiple_of(self.n_head)
            || self.n_head_kv == 0
            || !self.n_head.is_multiple_of(self.n_head_kv)
        {
            bail!(
                "{}: bad head counts {} / {}",
                self.preset,
                self.n_head,
                self.n_head_kv
            );
        }
        let natural = self.n_embd / self.n_head;
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            bail!("{}: bad head width {}", self.preset, self.head_dim);
        }
        if matches!(self.arch, Arch::Llama | Arch::Qwen2 | Arch::Phi3) && self.head_dim != natural {
            bail!(
                "{}: {} needs head_dim = n_embd / n_head = {natural}, not {}",
                self.preset,
                self.arch.cli_name(),
                self.head_dim
            );
        }
        if self.arch.is_moe() {
            if self.n_expert == 0
                || self.n_expert_used == 0
                || self.n_expert_used > self.n_expert
                || self.n_ff_exp == 0
            {
                bail!(
                    "{}: a MoE arch needs 1 ≤ experts used ({}) ≤ experts ({}) and an expert \
                     width (n_ff_exp {})",
                    self.preset,
                    self.n_expert_used,
                    self.n_expert,
                    self.n_ff_exp
                );
            }
            if self.arch == Arch::LlamaMoe && self.n_ff_exp != self.n_ff {
                bail!(
                    "{}: llama-moe's expert width is feed_forward_length: n_ff_exp {} ≠ n_ff {}",
                    self.preset,
                    self.n_ff_exp,
                    self.n_ff
                );
            }
        } else if self.n_expert != 0 || self.n_expert_used != 0 || self.n_ff_exp != 0 {
            bail!(
                "{}: {} is dense: no experts",
                self.preset,
                self.arch.cli_name()
            );
        }
        if self.n_vocab < 259 + 64 {
            bail!(
                "vocabulary of {} is too small (at least 323: specials, bytes, pieces)",
                self.n_vocab
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A weight matrix (2-D, or 3-D for experts) of the model's weight type.
    Matrix,
    /// An F32 norm weight: 1.0 for llama/qwen2, random in [0.5, 1.5) for the other archs.
    Norm,
    /// qwen2's small F32 q/k/v biases.
    Bias,
    /// An F32 MoE router, std 4/sqrt(columns) so that routing varies from token to token.
    Router,
    /// phi3's LongRoPE factors for long contexts: F32 in [1, 8), increasing.
    RopeLong,
    /// phi3's LongRoPE factors for short contexts: F32 in [1, 1.5), increasing.
    RopeShort,
}

/// xorshift64*: small, fast, seeded.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// IEEE half-precision bits of `x`, rounded to nearest even, subnormals kept (a Q6_K scale of a
/// matrix with thousands of columns is below f16's smallest normal; flushing it to zero made every
/// such matrix all zeros), huge values clamped to the largest finite f16.
fn f16_bits(x: f32) -> u16 {
    let h = half::f16::from_f32(x);
    if h.is_infinite() {
        return if x < 0.0 { 0xfbff } else { 0x7bff };
    }
    h.to_bits()
}

/// bfloat16 bits of `x` (round to nearest even; `x` finite).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `pos` or `neg` with equal probability (a random sign for a block scale, so that formats
/// whose quants are not symmetric about zero still give zero-mean weights).
fn either(rng: &mut Rng, pos: [u8; 2], neg: [u8; 2]) -> [u8; 2] {
    if rng.next() >> 63 == 0 {
        pos
    } else {
        neg
    }
}

/// `n_blocks` valid random blocks of `ty` whose elements have standard deviation ≈ `sigma`.
fn block_pool(ty: GgmlType, sigma: f32, n_blocks: usize, rng: &mut Rng) -> Result<Vec<u8>> {
    let size = ty.type_size();
    let mut out = vec![0u8; n_blocks * size];
    rng.fill(&mut out);
    match ty {
        // Q4_K (256 elements, 144 bytes): d, dmin (f16), 12 bytes of packed 6-bit sub-block
        // scales and mins, 128 bytes of 4-bit quants. x = d·sc·q − dmin·m; with m = sc and
        // dmin = 7.5·d this is d·sc·(q − 7.5), zero-mean with std ≈ d·sc·4.6.
        GgmlType::Q4_K => {
            let d = sigma / (19.5 * 4.6);
            let (d_bits, dmin_bits) = (f16_bits(d).to_le_bytes(), f16_bits(7.5 * d).to_le_bytes());
            for block in out.chunks_exact_mut(size) {
                block[0..2].copy_from_slice(&d_bits);
                block[2..4].copy_from_slice(&dmin_bits);
                let sc: [u8; 8] = std::array::from_fn(|_| 8 + (rng.next() % 24) as u8);
                let q = &mut block[4..16];
                for j in 0..4 {
                    q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    q[j + 4] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    q[j + 8] = (sc[j + 4] & 0xf) | ((sc[j + 4] & 0xf) << 4);
                }
            }
        }
        // Q5_K (256 elements, 176 bytes): as Q4_K with 32 bytes of fifth bits before the
        // quants; q in 0..32, so dmin = 15.5·d and std ≈ d·sc·9.2.
        GgmlType::Q5_K => {
            let d = sigma / (19.5 * 9.2);
            let (d_bits, dmin_bits) = (f16_bits(d).to_le_bytes(), f16_bits(15.5 * d).to_le_bytes());
            for block in out.chunks_exact_mut(size) {
                block[0..2].copy_from_slice(&d_bits);
                block[2..4].copy_from_slice(&dmin_bits);
                let sc: [u8; 8] = std::array::from_fn(|_| 8 + (rng.next() % 24) as u8);
                let q = &mut block[4..16];
                for j in 0..4 {
                    q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    q[j + 4] = sc[j] | ((sc[j + 4] >> 4) << 6);
                    q[j + 8] = (sc[j + 4] & 0xf) | ((sc[j + 4] & 0xf) << 4);
                }
            }
        }
        // Q3_K (256 elements, 110 bytes): high-bit mask, 2-bit quants, 12 bytes of packed 6-bit
        // scales (random: sc − 32 has rms ≈ 18.5), d (f16) last. x = d·(sc − 32)·q with q in
        // −4..4 (rms ≈ 2.35).
        GgmlType::Q3_K => {
            let d_bits = f16_bits(sigma / (18.5 * 2.35)).to_le_bytes();
            for block in out.chunks_exact_mut(size) {
                block[108..110].copy_from_slice(&d_bits);
            }
        }
        // Q2_K (256 elements, 84 bytes): 16 scale bytes (low nibble sc, high nibble m), 2-bit
        // quants, d and dmin (f16). With m = sc and dmin = 1.5·d, x = d·sc·(q − 1.5): zero-mean,
        // std ≈ d·8.8·1.12.
        GgmlType::Q2_K => {
            let d = sigma / (8.8 * 1.12);
            let (d_bits, dmin_bits) = (f16_bits(d).to_le_bytes(), f16_bits(1.5 * d).to_le_bytes());
            for block in out.chunks_exact_mut(size) {
                for s in &mut block[0..16] {
                    *s = (*s & 0x0F) * 0x11;
                }
                block[80..82].copy_from_slice(&d_bits);
                block[82..84].copy_from_slice(&dmin_bits);
            }
        }
        // Q6_K (256 elements, 210 bytes): 128 bytes of low nibbles, 64 of high two bits, 16
        // signed 8-bit sub-block scales, d (f16). x = d·sc·(q − 32), q in 0..64 (rms of q − 32
        // ≈ 18.5); sc = ±(8..32) with random signs (rms ≈ 20.7), so x is zero-mean.
        GgmlType::Q6_K => {
            let d_bits = f16_bits(sigma / (20.7 * 18.5)).to_le_bytes();
            for block in out.chunks_exact_mut(size) {
                for s in &mut block[192..208] {
                    let r = rng.next();
                    let m = 8 + (r % 24) as i8;
                    *s = (if r >> 63 == 0 { m } else { -m }) as u8;
                }
                block[208..210].copy_from_slice(&d_bits);
            }
        }
        // Q4_0 (32 elements, 18 bytes): d (f16), 16 bytes of 4-bit quants; x = d·(q − 8), rms of
        // q − 8 ≈ 4.64. Q5_0 (22 bytes): d, 4 bytes of fifth bits, 16 of low nibbles;
        // x = d·(q − 16), rms ≈ 9.25. IQ4_NL (18 bytes): d, 16 bytes of 4-bit indices;
        // x = d·kvalues[q], rms ≈ 67.4. The sign of d is random per block: zero-mean x.
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL => {
            let rms = match ty {
                GgmlType::Q4_0 => 4.64,
                GgmlType::Q5_0 => 9.25,
                _ => 67.4,
            };
            let pos = f16_bits(sigma / rms).to_le_bytes();
            let neg = f16_bits(-sigma / rms).to_le_bytes();
            for block in out.chunks_exact_mut(size) {
                block[0..2].copy_from_slice(&either(rng, pos, neg));
            }
        }
        // Q4_1 (32 elements, 20 bytes): d, m (f16), 16 bytes of 4-bit quants; x = d·q + m. With
        // m = −7.5·d, x = d·(q − 7.5), std ≈ d·4.61. Q5_1 (24 bytes): d, m, 4 bytes of fifth
        // bits, 16 of low nibbles; m = −15.5·d, std ≈ d·9.23.
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let (rms, mid) = if ty == GgmlType::Q4_1 {
                (4.61, 7.5)
            } else {
                (9.23, 15.5)
            };
            let d = sigma / rms;
            let (d_bits, m_bits) = (f16_bits(d).to_le_bytes(), f16_bits(-mid * d).to_le_bytes());
            for block in out.chunks_exact_mut(size) {
                block[0..2].copy_from_slice(&d_bits);
                block[2..4].copy_from_slice(&m_bits);
            }
        }
        // Q8_0 (32 elements, 34 bytes): d (f16) then 32 int8; uniform q has std ≈ 73.
        GgmlType::Q8_0 => {
            let d_bits = f16_bits(sigma / 73.0).to_le_bytes();
            for block in out.chunks_exact_mut(size) {
                block[0..2].copy_from_slice(&d_bits);
            }
        }
        // F16: uniform in ±sigma·√3.
        GgmlType::F16 => {
            let table: Vec<[u8; 2]> = (0..4096)
                .map(|k| {
                    f16_bits(sigma * 3f32.sqrt() * (2.0 * k as f32 / 4095.0 - 1.0)).to_le_bytes()
                })
                .collect();
            for v in out.chunks_exact_mut(2) {
                let k = (rng.next() >> 52) as usize;
                v.copy_from_slice(&table[k]);
            }
        }
        // BF16: uniform in ±sigma·√3.
        GgmlType::BF16 => {
            let table: Vec<[u8; 2]> = (0..4096)
                .map(|k| {
                    bf16_bits(sigma * 3f32.sqrt() * (2.0 * k as f32 / 4095.0 - 1.0)).to_le_bytes()
                })
                .collect();
            for v in out.chunks_exact_mut(2) {
                let k = (rng.next() >> 52) as usize;
                v.copy_from_slice(&table[k]);
            }
        }
        // The IQ formats, TQ1_0/TQ2_0 and MXFP4: every byte pattern of their quant fields is a
        // valid block (random grid rows, signs, sub-block scales, trits), so only the block
        // scale is set (see `scale_by_measurement`).
        GgmlType::IQ4_XS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ3_XXS
        | GgmlType::IQ3_S
        | GgmlType::IQ1_S
        | GgmlType::IQ1_M
        | GgmlType::TQ1_0
        | GgmlType::TQ2_0
        | GgmlType::MXFP4 => scale_by_measurement(ty, sigma, &mut out, rng)?,
        other => bail!("type {other} is not generated; accepted: {ACCEPTED}"),
    }
    Ok(out)
}

/// Sets the block scale of random blocks of `ty` (IQ, TQ or MXFP4) so that their elements have
/// rms ≈ `sigma`: with a unit scale written into every block, the pool's first blocks are
/// dequantized and their rms `r` measured; then every block gets `±sigma / r` (a random sign
/// per block, so the weights are zero-mean). The scale is an f16 field for most formats;
/// IQ1_M spreads its f16 over the top nibbles of its four scale words; MXFP4's is a power of
/// two (an E8M0 exponent), the nearest to `sigma / r`.
fn scale_by_measurement(ty: GgmlType, sigma: f32, out: &mut [u8], rng: &mut Rng) -> Result<()> {
    let size = ty.type_size();
    let put_f16 = |block: &mut [u8], h: u16| match ty {
        GgmlType::IQ1_M => {
            for k in 0..4 {
                let hi = &mut block[48 + 2 * k + 1];
                *hi = (*hi & 0x0F) | ((((h >> (4 * k)) & 0x0F) as u8) << 4);
            }
        }
        GgmlType::TQ1_0 => block[52..54].copy_from_slice(&h.to_le_bytes()),
        GgmlType::TQ2_0 => block[64..66].copy_from_slice(&h.to_le_bytes()),
        _ => block[0..2].copy_from_slice(&h.to_le_bytes()),
    };
    // A known scale: an f16 of 1, or MXFP4's exponent 129 (ggml's halved E8M0 scale
    // 2^(e − 128) = 2).
    for block in out.chunks_exact_mut(size) {
        if ty == GgmlType::MXFP4 {
            block[0] = 129;
        } else {
            put_f16(block, f16_bits(1.0));
        }
    }
    let sample = &out[..size * (out.len() / size).min(1024)];
    let mut deq = vec![0f32; sample.len() / size * ty.block_size()];
    strata_quant::dequantize(ty, sample, &mut deq)
        .with_context(|| format!("measuring random {ty} blocks"))?;
    let ms = deq.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / deq.len().max(1) as f64;
    ensure!(ms > 0.0, "random {ty} blocks dequantize to zeros");
    let scale = sigma / ms.sqrt() as f32;
    if ty == GgmlType::MXFP4 {
        // Measured at e = 129: the exponent whose scale is nearest to `scale` times that.
        let e = (129.0 + scale.log2().round()).clamp(2.0, 254.0) as u8;
        for block in out.chunks_exact_mut(size) {
            block[0] = e;
        }
        return Ok(());
    }
    let (pos, neg) = (f16_bits(scale), f16_bits(-scale));
    for block in out.chunks_exact_mut(size) {
        put_f16(block, if rng.next() >> 63 == 0 { pos } else { neg });
    }
    Ok(())
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

/// The SentencePiece vocabulary: (tokens, scores, token types).
fn vocabulary(n_vocab: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut pieces: Vec<String> = Vec::new();
    let words = [
        "the", "of", "and", "to", "in", "is", "that", "it", "for", "was", "on", "are", "as",
        "with", "his", "they", "at", "be", "this", "from", "have", "or", "by", "one", "had", "not",
        "but", "what", "all", "were", "when", "we", "there", "can", "an", "your", "which", "their",
        "said", "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she",
        "many", "some", "so", "these", "would", "other", "into", "has", "more", "her", "two",
        "like", "him", "see", "time", "could", "no", "make", "than", "first", "been", "its", "who",
        "now", "people", "my", "made", "over", "did", "down", "only", "way", "find", "use", "may",
        "water", "long", "little", "very", "after", "words", "called", "just", "where", "most",
        "know", "hello", "world", "model", "layer", "cache", "token", "stream",
    ];
    for w in words {
        pieces.push(format!("▁{w}"));
    }
    for c in ('a'..='z').chain('A'..='Z').chain('0'..='9') {
        pieces.push(format!("▁{c}"));
        pieces.push(c.to_string());
    }
    for p in [
        "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of",
        "ed", "is", "it",
    ] {
        pieces.push(p.to_string());
    }
    for p in [
        "▁", ".", ",", "!", "?", "'", "\"", "-", ":", ";", "(", ")", "\n",
    ] {
        pieces.push(p.to_string());
    }
    let mut i = 0;
    while tokens.len() + pieces.len() < n_vocab {
        pieces.push(format!("▁w{i}"));
        i += 1;
    }
    pieces.truncate(n_vocab - tokens.len());
    let mut scores = vec![0.0f32; tokens.len()];
    for (rank, p) in pieces.into_iter().enumerate() {
        tokens.push(p);
        types.push(1);
        scores.push(-(rank as f32));
    }
    (tokens, scores, types)
}

/// The number of blocks of each pool: one pool of random blocks per (type, column count) (the std
/// of a weight depends on the columns, `dims[0]`), big enough for the largest tensor of that type
/// and column count (an expert tensor counts whole: all its experts) plus room to vary the offset.
/// Pools are drawn in (type, columns) order: with one type, that is column order, as before
/// mixes existed, so those files keep their bytes.
fn pool_sizes(
    spec: &ModelSpec,
    tensors: &[(String, Vec<u64>, Kind)],
) -> BTreeMap<(GgmlType, u64), u64> {
    let mut largest: BTreeMap<(GgmlType, u64), u64> = BTreeMap::new();
    for (name, dims, kind) in tensors {
        if *kind == Kind::Matrix {
            let ty = spec.ty.of(name);
            let blocks = dims.iter().product::<u64>() / ty.block_size() as u64;
            let e = largest.entry((ty, dims[0])).or_default();
            *e = (*e).max(blocks);
        }
    }
    for blocks in largest.values_mut() {
        *blocks += (*blocks / 2).max(64);
    }
    largest
}

/// Write `spec` to `path` with `seed`; returns the file size.
pub fn write_model(spec: &ModelSpec, seed: u64, path: &Path) -> Result<u64> {
    spec.check()?;
    let arch = spec.arch.name();
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::new();
    let file_type = spec.ty.file_type()?;
    let (rope_base, eps) = match spec.arch {
        Arch::Llama | Arch::LlamaMoe | Arch::Phi3 => (10_000.0f32, 1e-5f32),
        Arch::Gemma2 => (10_000.0f32, 1e-6f32),
        Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe => (1_000_000.0f32, 1e-6f32),
    };
    let u32_of = |v: u64| u32::try_from(v).context("shape value overflows u32");
    w.add_metadata("general.architecture", arch)?;
    // Not `phi3` in the name: llama.cpp then gives `<|endoftext|>`, which this vocabulary lacks,
    // special attributes, and fails to load the model ("unordered_map::at").
    let name_arch = match spec.arch {
        Arch::Phi3 => "phi",
        a => a.cli_name(),
    };
    w.add_metadata(
        "general.name",
        format!("strata-synthetic-{}-{name_arch}-{}", spec.preset, spec.ty),
    )?;
    w.add_metadata("general.alignment", 32u32)?;
    w.add_metadata("general.file_type", file_type)?;
    w.add_metadata(format!("{arch}.vocab_size"), u32_of(spec.n_vocab)?)?;
    w.add_metadata(format!("{arch}.context_length"), u32_of(spec.n_ctx)?)?;
    w.add_metadata(format!("{arch}.embedding_length"), u32_of(spec.n_embd)?)?;
    w.add_metadata(format!("{arch}.block_count"), u32_of(spec.n_layer)?)?;
    w.add_metadata(format!("{arch}.feed_forward_length"), u32_of(spec.n_ff)?)?;
    w.add_metadata(format!("{arch}.attention.head_count"), u32_of(spec.n_head)?)?;
    w.add_metadata(
        format!("{arch}.attention.head_count_kv"),
        u32_of(spec.n_head_kv)?,
    )?;
    w.add_metadata(
        format!("{arch}.rope.dimension_count"),
        u32_of(spec.head_dim)?,
    )?;
    w.add_metadata(format!("{arch}.rope.freq_base"), rope_base)?;
    w.add_metadata(format!("{arch}.attention.layer_norm_rms_epsilon"), eps)?;
    // The other archs' keys (none for llama and qwen2, whose bytes stay as they were).
    if spec.writes_key_length() {
        w.add_metadata(
            format!("{arch}.attention.key_length"),
            u32_of(spec.head_dim)?,
        )?;
        w.add_metadata(
            format!("{arch}.attention.value_length"),
            u32_of(spec.head_dim)?,
        )?;
    }
    if spec.arch.is_moe() {
        w.add_metadata(format!("{arch}.expert_count"), u32_of(spec.n_expert)?)?;
        w.add_metadata(
            format!("{arch}.expert_used_count"),
            u32_of(spec.n_expert_used)?,
        )?;
        // llama (Mixtral) has no such key: its experts are feed_forward_length wide.
        if spec.arch != Arch::LlamaMoe {
            w.add_metadata(
                format!("{arch}.expert_feed_forward_length"),
                u32_of(spec.n_ff_exp)?,
            )?;
        }
    }
    match spec.arch {
        Arch::Gemma2 => {
            // Small, so that a short prompt crosses the window of the sliding layers.
            w.add_metadata(format!("{arch}.attention.sliding_window"), 8u32)?;
            w.add_metadata(format!("{arch}.attn_logit_softcapping"), 10.0f32)?;
            w.add_metadata(format!("{arch}.final_logit_softcapping"), 5.0f32)?;
        }
        Arch::Phi3 => {
            // LongRoPE: `rope_factors_long` beyond a quarter of the context, as Phi-3-128k's
            // 4k of 128k; the attention factor is Phi-3-mini-128k's.
            w.add_metadata(
                format!("{arch}.rope.scaling.original_context_length"),
                u32_of(spec.n_ctx / 4)?,
            )?;
            w.add_metadata(format!("{arch}.rope.scaling.attn_factor"), 1.190_238f32)?;
        }
        _ => {}
    }
    let n_vocab = usize::try_from(spec.n_vocab)?;
    let (tokens, scores, types) = vocabulary(n_vocab);
    w.add_metadata("tokenizer.ggml.model", "llama")?;
    w.add_metadata("tokenizer.ggml.tokens", Array::from_strings(tokens))?;
    w.add_metadata("tokenizer.ggml.scores", Array::from_f32(&scores))?;
    w.add_metadata("tokenizer.ggml.token_type", Array::from_i32(&types))?;
    w.add_metadata("tokenizer.ggml.unknown_token_id", 0u32)?;
    w.add_metadata("tokenizer.ggml.bos_token_id", 1u32)?;
    w.add_metadata("tokenizer.ggml.eos_token_id", 2u32)?;
    w.add_metadata("tokenizer.ggml.add_bos_token", true)?;
    w.add_metadata("tokenizer.ggml.add_eos_token", false)?;

    let tensors = spec.tensors();
    let mut pools: BTreeMap<(GgmlType, u64), Vec<u8>> = BTreeMap::new();
    for (&(ty, cols), &n) in &pool_sizes(spec, &tensors) {
        pools.insert(
            (ty, cols),
            block_pool(
                ty,
                1.0 / (cols as f32).sqrt(),
                usize::try_from(n)?,
                &mut rng,
            )?,
        );
    }
    for (name, dims, kind) in &tensors {
        match kind {
            Kind::Matrix => {
                let ty = spec.ty.of(name);
                let pool = &pools[&(ty, dims[0])];
                let (block, type_size) = (ty.block_size() as u64, ty.type_size() as u64);
                let blocks = dims.iter().product::<u64>() / block;
                let pool_blocks = pool.len() as u64 / type_size;
                let start = rng.next() % (pool_blocks - blocks + 1);
                let bytes =
                    &pool[(start * type_size) as usize..((start + blocks) * type_size) as usize];
                w.add_tensor(name.clone(), ty, dims, bytes)?;
            }
            Kind::Norm if spec.arch.is_new() => {
                let v = f32_bytes((0..dims[0]).map(|_| rng.uniform(0.5, 1.5)));
                w.add_tensor(name.clone(), GgmlType::F32, dims, v)?;
            }
            Kind::Norm => w.add_tensor(
                name.clone(),
                GgmlType::F32,
                dims,
                f32_bytes((0..dims[0]).map(|_| 1.0)),
            )?,
            Kind::Bias => {
                let b: Vec<u8> = f32_bytes((0..dims[0]).map(|_| rng.uniform(-0.05, 0.05)));
                w.add_tensor(name.clone(), GgmlType::F32, dims, b)?;
            }
            Kind::Router => {
                // Uniform in ±a has std a/√3: std 4/sqrt(columns).
                let a = 4.0 * 3f32.sqrt() / (dims[0] as f32).sqrt();
                let n = dims.iter().product::<u64>();
                let v = f32_bytes((0..n).map(|_| rng.uniform(-a, a)));
                w.add_tensor(name.clone(), GgmlType::F32, dims, v)?;
            }
            Kind::RopeLong | Kind::RopeShort => {
                let hi = if *kind == Kind::RopeLong { 8.0 } else { 1.5 };
                let mut v: Vec<f32> = (0..dims[0]).map(|_| rng.uniform(1.0, hi)).collect();
                v.sort_by(f32::total_cmp);
                w.add_tensor(name.clone(), GgmlType::F32, dims, f32_bytes(v.into_iter()))?;
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let n = w
        .write_file(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

/// Parses a `--type` value (`q4_k`, `iq4_nl`, `q4_k_m`, …; the underscores may be left out).
pub fn parse_type(s: &str) -> Result<WeightType> {
    let ty = match s.to_ascii_lowercase().as_str() {
        "q4_0" | "q40" => GgmlType::Q4_0,
        "q4_1" | "q41" => GgmlType::Q4_1,
        "q5_0" | "q50" => GgmlType::Q5_0,
        "q5_1" | "q51" => GgmlType::Q5_1,
        "q8_0" | "q80" => GgmlType::Q8_0,
        "q2_k" | "q2k" => GgmlType::Q2_K,
        "q3_k" | "q3k" => GgmlType::Q3_K,
        "q4_k" | "q4k" => GgmlType::Q4_K,
        "q5_k" | "q5k" => GgmlType::Q5_K,
        "q6_k" | "q6k" => GgmlType::Q6_K,
        "iq4_nl" | "iq4nl" => GgmlType::IQ4_NL,
        "iq4_xs" | "iq4xs" => GgmlType::IQ4_XS,
        "iq2_xxs" | "iq2xxs" => GgmlType::IQ2_XXS,
        "iq2_xs" | "iq2xs" => GgmlType::IQ2_XS,
        "iq2_s" | "iq2s" => GgmlType::IQ2_S,
        "iq3_xxs" | "iq3xxs" => GgmlType::IQ3_XXS,
        "iq3_s" | "iq3s" => GgmlType::IQ3_S,
        "iq1_s" | "iq1s" => GgmlType::IQ1_S,
        "iq1_m" | "iq1m" => GgmlType::IQ1_M,
        "tq1_0" | "tq10" => GgmlType::TQ1_0,
        "tq2_0" | "tq20" => GgmlType::TQ2_0,
        "mxfp4" => GgmlType::MXFP4,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q4_k_m" | "q4km" => return Ok(WeightType::Q4KM),
        "mxfp4_moe" | "mxfp4moe" => return Ok(WeightType::Mxfp4Moe),
        other => bail!("unknown type `{other}`; accepted: {ACCEPTED}"),
    };
    Ok(ty.into())
}

/// The default output path: `<workspace>/models/synth-<preset>-<arch>-<type>.gguf`, `<arch>` as
/// `--arch` takes it (`llama-moe`, not `llama`).
pub fn default_path(spec: &ModelSpec) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    root.join("models").join(format!(
        "synth-{}-{}-{}.gguf",
        spec.preset,
        spec.arch.cli_name(),
        spec.ty.name()
    ))
}

/// `--help` of `cargo xtask gen-model`.
const USAGE: &str = "\
cargo xtask gen-model [--preset tiny|1b|7b|moe-8g] [--type TYPE] [--arch ARCH]
                      [--experts N] [--experts-used K]
                      [--seed N] [--layers N] [--vocab N] [--out PATH]
  ARCH: llama (default), qwen2, qwen3, gemma2, phi3, qwen3moe, llama-moe (alias mixtral:
        GGUF arch llama with experts)
  TYPE: q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k (default), q5_k, q6_k, iq4_nl,
        iq4_xs, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, tq1_0, tq2_0, mxfp4, f16,
        bf16, q4_k_m, mxfp4_moe (MoE archs: experts MXFP4, the rest Q8_0)
  --preset: tiny, 1b and 7b for the dense archs; tiny and moe-8g (Qwen3-30B-A3B-like, 32
        experts, 4 used, about 8 GB as q4_k; default arch qwen3moe) for the MoE archs
  --experts N, --experts-used K: expert count and experts per token (MoE archs only)
  --out: default models/synth-<preset>-<arch>-<type>.gguf in the workspace";

/// `cargo xtask gen-model ...`
pub fn run(args: &[String]) -> Result<()> {
    let mut preset = "tiny".to_string();
    let mut ty = WeightType::Uniform(GgmlType::Q4_K);
    let mut arch = None;
    let mut seed = 42u64;
    let mut layers = None;
    let mut vocab = None;
    let mut experts: Option<u64> = None;
    let mut experts_used: Option<u64> = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = value()?.clone(),
            "--type" => ty = parse_type(value()?)?,
            "--arch" => arch = Some(Arch::from_cli(value()?)?),
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--layers" => layers = Some(value()?.parse().context("--layers")?),
            "--vocab" => vocab = Some(value()?.parse().context("--vocab")?),
            "--experts" => experts = Some(value()?.parse().context("--experts")?),
            "--experts-used" => experts_used = Some(value()?.parse().context("--experts-used")?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!(
                "unknown flag `{other}`; accepted: --preset --type --arch --experts \
                 --experts-used --seed --layers --vocab --out"
            ),
        }
    }
    let arch = arch.unwrap_or(if preset == "moe-8g" {
        Arch::Qwen3Moe
    } else {
        Arch::Llama
    });
    let mut spec = ModelSpec::preset(&preset, arch, ty)?;
    if let Some(l) = layers {
        spec.n_layer = l;
    }
    if let Some(v) = vocab {
        spec.n_vocab = v;
    }
    if (experts.is_some() || experts_used.is_some()) && !arch.is_moe() {
        bail!(
            "--experts and --experts-used are for the MoE archs (qwen3moe, llama-moe), not {}",
            arch.cli_name()
        );
    }
    if let Some(n) = experts {
        spec.n_expert = n;
    }
    if let Some(k) = experts_used {
        spec.n_expert_used = k;
    }
    spec.check()?;
    let path = out.unwrap_or_else(|| default_path(&spec));
    let t = Instant::now();
    let n = write_model(&spec, seed, &path)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {} ({:.2} GB, {}, {} layers, {}) in {secs:.1} s ({:.2} GB/s)",
        path.display(),
        n as f64 / 1e9,
        spec.arch.cli_name(),
        spec.n_layer,
        spec.ty,
        n as f64 / 1e9 / secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(0.5), 0x3800);
        assert_eq!(f16_bits(1e-9), 0);
        assert_eq!(f16_bits(1e9), 0x7bff);
    }

    /// Regression: the block pools were drawn in `HashMap` order, so one seed gave different
    /// files from run to run (and the synthetic llama.cpp references in `verify` went stale).
    #[test]
    fn same_seed_gives_identical_files() {
        let spec = ModelSpec::preset("tiny", Arch::Qwen2, GgmlType::Q4_K).unwrap();
        let dir = std::env::temp_dir();
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.join(format!("xtask-det-{}-{i}.gguf", std::process::id()));
                write_model(&spec, 42, &path).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                bytes
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn every_accepted_type_parses_and_names_round_trip() {
        for name in ACCEPTED.split(", ") {
            let ty = parse_type(name).unwrap();
            assert_eq!(ty.name(), name);
            assert!(ty.file_type().is_ok());
        }
        assert!(parse_type("nvfp4").is_err());
    }

    /// Checks that weight matrix `tensor` of `g` (file `bytes`) has `wt`'s type for it and
    /// dequantizes to finite, zero-mean values of standard deviation ≈ 1/sqrt(`cols`); returns
    /// the values. `what` names the model in failures.
    fn modest_weights(
        g: &strata_gguf::Gguf,
        bytes: &[u8],
        wt: WeightType,
        tensor: &str,
        cols: usize,
        what: &str,
    ) -> Vec<f32> {
        let t = g.tensor(tensor).unwrap();
        let ty = wt.of(tensor);
        assert_eq!(t.ty, ty, "{what} {tensor}");
        let data = g.tensor_data(bytes, t).unwrap();
        let mut out = vec![0f32; t.n_elements() as usize];
        strata_quant::dequantize(ty, data, &mut out).unwrap();
        let n = out.len() as f32;
        let mean = out.iter().sum::<f32>() / n;
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / n).sqrt();
        let expect = 1.0 / (cols as f32).sqrt();
        assert!(out.iter().all(|v| v.is_finite()));
        assert!(
            rms > 0.7 * expect && rms < 1.4 * expect,
            "{what} {tensor}: rms {rms} vs {expect}"
        );
        assert!(
            mean.abs() < 0.05 * expect,
            "{what} {tensor}: mean {mean} vs std {expect}"
        );
        out
    }

    #[test]
    fn tiny_models_parse_and_dequantize_to_finite_modest_values() {
        for arch in [Arch::Llama, Arch::Qwen2] {
            for name in ACCEPTED.split(", ") {
                let wt = parse_type(name).unwrap();
                let spec = ModelSpec::preset("tiny", arch, wt).unwrap();
                let path = std::env::temp_dir().join(format!(
                    "xtask-gen-{}-{arch:?}-{name}.gguf",
                    std::process::id()
                ));
                write_model(&spec, 7, &path).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                let g = strata_gguf::Gguf::from_bytes(&bytes).unwrap();
                assert_eq!(
                    g.metadata()
                        .get_u32(&format!("{}.block_count", arch.name()))
                        .unwrap(),
                    4
                );
                assert_eq!(
                    g.metadata()
                        .get_array("tokenizer.ggml.tokens")
                        .unwrap()
                        .len(),
                    512
                );
                assert_eq!(g.tensor("blk.3.attn_q.bias").is_some(), arch == Arch::Qwen2);
                for (tensor, cols) in [
                    ("blk.1.ffn_down.weight", 768usize),
                    ("blk.2.attn_q.weight", 256),
                    ("output.weight", 256),
                ] {
                    modest_weights(&g, &bytes, wt, tensor, cols, &format!("{arch:?} {name}"));
                }
                assert_eq!(
                    g.metadata().get_u32("general.file_type").unwrap(),
                    wt.file_type().unwrap()
                );
            }
        }
    }

    /// The file `write_model` writes for `spec` and `seed`.
    fn generate(spec: &ModelSpec, seed: u64, tag: &str) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!(
            "xtask-gen-{}-{tag}-{}-{}.gguf",
            std::process::id(),
            spec.arch.cli_name(),
            spec.ty.name()
        ));
        write_model(spec, seed, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        bytes
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        sha.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The llama and qwen2 tiny models of seed 42 (every type verify checks them in) are byte
    /// for byte the ones the committed llama.cpp references were made from: adding archs or
    /// types must not change them.
    #[test]
    fn llama_and_qwen2_files_keep_the_reference_sha256() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/reference/synthetic");
        for arch in [Arch::Llama, Arch::Qwen2] {
            let models = crate::verify::synthetic_models();
            let names = models.iter().filter(|(a, _)| *a == arch.name());
            for &(_, name) in names {
                let spec = ModelSpec::preset("tiny", arch, parse_type(name).unwrap()).unwrap();
                let file = dir.join(format!("{}-{name}.json", arch.name()));
                let text = std::fs::read_to_string(&file).unwrap();
                let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                let want = json["model_sha256"].as_str().unwrap();
                let got = sha256_hex(&generate(&spec, 42, "sha"));
                assert_eq!(got, want, "{}", file.display());
            }
        }
    }

    #[test]
    fn arch_cli_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_cli(arch.cli_name()).unwrap(), arch);
        }
        assert_eq!(Arch::from_cli("mixtral").unwrap(), Arch::LlamaMoe);
        assert_eq!(Arch::from_cli("Qwen3MoE").unwrap(), Arch::Qwen3Moe);
        assert_eq!(Arch::LlamaMoe.name(), "llama");
        assert!(Arch::from_cli("gpt2").is_err());
        let spec = ModelSpec::preset("tiny", Arch::LlamaMoe, GgmlType::Q4_K).unwrap();
        let path = default_path(&spec);
        assert!(path
            .to_string_lossy()
            .ends_with("synth-tiny-llama-moe-q4_k.gguf"));
        let spec = ModelSpec::preset("tiny", Arch::Llama, GgmlType::Q4_K).unwrap();
        assert!(default_path(&spec)
            .to_string_lossy()
            .ends_with("synth-tiny-llama-q4_k.gguf"));
    }

    #[test]
    fn presets_and_flags_refuse_what_does_not_fit() {
        assert!(ModelSpec::preset("moe-8g", Arch::Llama, GgmlType::Q4_K).is_err());
        assert!(ModelSpec::preset("7b", Arch::Qwen3Moe, GgmlType::Q4_K).is_err());
        assert!(ModelSpec::preset("1b", Arch::Qwen3, GgmlType::Q4_K).is_ok());
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Every one of these fails before anything is written.
        for bad in [
            &["--arch", "qwen3", "--experts", "4"][..],
            &["--arch", "llama", "--experts-used", "1"],
            &[
                "--arch",
                "qwen3moe",
                "--experts",
                "4",
                "--experts-used",
                "8",
            ],
            &["--arch", "llama-moe", "--experts-used", "0"],
            &["--preset", "moe-8g", "--arch", "gemma2"],
            &["--arch", "gpt2"],
        ] {
            assert!(run(&args(bad)).is_err(), "{bad:?}");
        }
        let mut spec = ModelSpec::preset("tiny", Arch::Qwen3, GgmlType::Q4_K).unwrap();
        spec.head_dim = 96; // n_head · 96 = 384, not a multiple of 256
        assert!(spec.check().is_err());
    }

    /// (name, dims) of every tensor of an arch's tiny model, written out by hand.
    fn tiny_layout(arch: Arch) -> Vec<(String, Vec<u64>)> {
        let mut t: Vec<(String, Vec<u64>)> = Vec::new();
        let mut add = |name: String, dims: &[u64]| t.push((name, dims.to_vec()));
        if arch == Arch::Phi3 {
            add("rope_factors_long.weight".into(), &[32]);
            add("rope_factors_short.weight".into(), &[32]);
        }
        add("token_embd.weight".into(), &[256, 512]);
        for i in 0..4 {
            let b = |n: &str| format!("blk.{i}.{n}.weight");
            add(b("attn_norm"), &[256]);
            match arch {
                Arch::Qwen3 | Arch::Qwen3Moe => {
                    add(b("attn_q"), &[256, 512]);
                    add(b("attn_k"), &[256, 256]);
                    add(b("attn_v"), &[256, 256]);
                    add(b("attn_q_norm"), &[128]);
                    add(b("attn_k_norm"), &[128]);
                    add(b("attn_output"), &[512, 256]);
                }
                Arch::Phi3 => {
                    add(b("attn_qkv"), &[256, 512]);
                    add(b("attn_output"), &[256, 256]);
                }
                _ => {
                    add(b("attn_q"), &[256, 256]);
                    add(b("attn_k"), &[256, 128]);
                    add(b("attn_v"), &[256, 128]);
                    add(b("attn_output"), &[256, 256]);
                }
            }
            if arch == Arch::Gemma2 {
                add(b("post_attention_norm"), &[256]);
            }
            add(b("ffn_norm"), &[256]);
            match arch {
                Arch::Qwen3Moe | Arch::LlamaMoe => {
                    add(b("ffn_gate_inp"), &[256, 8]);
                    add(b("ffn_gate_exps"), &[256, 256, 8]);
                    add(b("ffn_up_exps"), &[256, 256, 8]);
                    add(b("ffn_down_exps"), &[256, 256, 8]);
                }
                Arch::Phi3 => {
                    add(b("ffn_up"), &[256, 1536]);
                    add(b("ffn_down"), &[768, 256]);
                }
                _ => {
                    add(b("ffn_gate"), &[256, 768]);
                    add(b("ffn_up"), &[256, 768]);
                    add(b("ffn_down"), &[768, 256]);
                }
            }
            if arch == Arch::Gemma2 {
                add(b("post_ffw_norm"), &[256]);
            }
        }
        add("output_norm.weight".into(), &[256]);
        if arch != Arch::Gemma2 {
            add("output.weight".into(), &[256, 512]);
        }
        t
    }

    fn f32_values(g: &strata_gguf::Gguf, bytes: &[u8], name: &str) -> Vec<f32> {
        let t = g.tensor(name).unwrap();
        assert_eq!(t.ty, GgmlType::F32, "{name}");
        g.tensor_data(bytes, t)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The tiny models of the archs after llama and qwen2: llama.cpp's tensor names, ggml dims
    /// and metadata; F32 norms in [0.5, 1.5), routers of std ≈ 4/sqrt(n_embd), LongRoPE factors.
    #[test]
    fn new_arch_tiny_models_have_llama_cpp_layout_and_metadata() {
        use strata_gguf::Value;
        for arch in Arch::ALL.into_iter().filter(|a| a.is_new()) {
            let spec = ModelSpec::preset("tiny", arch, GgmlType::Q4_K).unwrap();
            let bytes = generate(&spec, 7, "layout");
            let g = strata_gguf::Gguf::from_bytes(&bytes).unwrap();
            let got: Vec<(String, Vec<u64>)> = g
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.dims.clone()))
                .collect();
            assert_eq!(got, tiny_layout(arch), "{arch:?}");
            let m = g.metadata();
            let a = arch.name();
            let u32_of = |k: &str| match m.get(&format!("{a}.{k}")) {
                Some(Value::U32(v)) => Some(*v),
                None => None,
                Some(v) => panic!("{arch:?} {k}: {v:?} is not a u32"),
            };
            let f32_of = |k: &str| match m.get(&format!("{a}.{k}")) {
                Some(Value::F32(v)) => Some(*v),
                None => None,
                Some(v) => panic!("{arch:?} {k}: {v:?} is not an f32"),
            };
            assert_eq!(m.get_str("general.architecture").unwrap(), a);
            assert_eq!(u32_of("embedding_length"), Some(256));
            assert_eq!(u32_of("block_count"), Some(4));
            assert_eq!(u32_of("attention.head_count"), Some(4));
            assert_eq!(u32_of("attention.head_count_kv"), Some(2));
            assert_eq!(u32_of("vocab_size"), Some(512));
            let (hd, ff, ctx, base, eps) = match arch {
                Arch::Qwen3 | Arch::Qwen3Moe => (128, 768, 512, 1e6, 1e-6),
                Arch::Gemma2 => (64, 768, 512, 1e4, 1e-6),
                Arch::Phi3 => (64, 768, 4096, 1e4, 1e-5),
                _ => (64, 256, 512, 1e4, 1e-5),
            };
            assert_eq!(u32_of("rope.dimension_count"), Some(hd));
            assert_eq!(u32_of("feed_forward_length"), Some(ff));
            assert_eq!(u32_of("context_length"), Some(ctx));
            assert_eq!(f32_of("rope.freq_base"), Some(base));
            assert_eq!(f32_of("attention.layer_norm_rms_epsilon"), Some(eps));
            let key_length = matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma2);
            let hd_key = key_length.then_some(hd);
            assert_eq!(u32_of("attention.key_length"), hd_key, "{arch:?}");
            assert_eq!(u32_of("attention.value_length"), hd_key, "{arch:?}");
            let moe = arch.is_moe();
            assert_eq!(u32_of("expert_count"), moe.then_some(8));
            assert_eq!(u32_of("expert_used_count"), moe.then_some(2));
            assert_eq!(
                u32_of("expert_feed_forward_length"),
                (arch == Arch::Qwen3Moe).then_some(256)
            );
            let gemma = arch == Arch::Gemma2;
            assert_eq!(u32_of("attention.sliding_window"), gemma.then_some(8));
            assert_eq!(f32_of("attn_logit_softcapping"), gemma.then_some(10.0));
            assert_eq!(f32_of("final_logit_softcapping"), gemma.then_some(5.0));
            let phi = arch == Arch::Phi3;
            assert_eq!(
                u32_of("rope.scaling.original_context_length"),
                phi.then_some(1024)
            );
            assert_eq!(f32_of("rope.scaling.attn_factor"), phi.then_some(1.190_238));
            assert_eq!(
                m.get_u32("general.file_type").unwrap(),
                WeightType::from(GgmlType::Q4_K).file_type().unwrap()
            );

            for t in g.tensors() {
                if t.dims.len() == 1 && !t.name.starts_with("rope_factors") {
                    let v = f32_values(&g, &bytes, &t.name);
                    assert!(v.iter().all(|x| (0.5..1.5).contains(x)), "{}", t.name);
                    assert!(v.iter().any(|x| *x != v[0]), "{}", t.name);
                } else if t.name.ends_with("ffn_gate_inp.weight") {
                    let v = f32_values(&g, &bytes, &t.name);
                    let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
                    assert!((rms - 0.25).abs() < 0.03, "{}: rms {rms}", t.name);
                } else if t.name.starts_with("rope_factors") {
                    let v = f32_values(&g, &bytes, &t.name);
                    let hi = if t.name.contains("long") { 8.0 } else { 1.5 };
                    assert!(v.iter().all(|x| (1.0..hi).contains(x)), "{}", t.name);
                    assert!(v.windows(2).all(|w| w[0] <= w[1]), "{}", t.name);
                } else {
                    assert_eq!(t.ty, GgmlType::Q4_K, "{}", t.name);
                }
            }
        }
    }

    /// The new archs' tiny models, every weight type: matrices (expert tensors included) have the
    /// type Q4_K_M gives them and elements of std ≈ 1/sqrt(columns); the experts differ.
    #[test]
    fn new_arch_tiny_models_dequantize_to_finite_modest_values() {
        for arch in Arch::ALL.into_iter().filter(|a| a.is_new()) {
            let tensors: &[(&str, usize)] = match arch {
                Arch::Qwen3 => &[
                    ("blk.1.ffn_down.weight", 768),
                    ("blk.2.attn_q.weight", 256),
                    ("blk.0.attn_output.weight", 512),
                    ("output.weight", 256),
                ],
                Arch::Gemma2 => &[
                    ("blk.1.ffn_down.weight", 768),
                    ("blk.2.attn_v.weight", 256),
                    ("token_embd.weight", 256),
                ],
                Arch::Phi3 => &[
                    ("blk.1.ffn_down.weight", 768),
                    ("blk.2.attn_qkv.weight", 256),
                    ("blk.3.ffn_up.weight", 256),
                    ("output.weight", 256),
                ],
                Arch::Qwen3Moe => &[
                    ("blk.1.ffn_down_exps.weight", 256),
                    ("blk.2.ffn_gate_exps.weight", 256),
                    ("blk.0.attn_output.weight", 512),
                ],
                _ => &[
                    ("blk.1.ffn_down_exps.weight", 256),
                    ("blk.3.ffn_up_exps.weight", 256),
                    ("output.weight", 256),
                ],
            };
            for name in ACCEPTED.split(", ") {
                let wt = parse_type(name).unwrap();
                let spec = ModelSpec::preset("tiny", arch, wt).unwrap();
                let bytes = generate(&spec, 7, "dequant");
                let g = strata_gguf::Gguf::from_bytes(&bytes).unwrap();
                assert_eq!(
                    g.metadata().get_u32("general.file_type").unwrap(),
                    wt.file_type().unwrap()
                );
                for &(tensor, cols) in tensors {
                    let t = g.tensor(tensor).unwrap();
                    let out =
                        modest_weights(&g, &bytes, wt, tensor, cols, &format!("{arch:?} {name}"));
                    if t.dims.len() == 3 {
                        let per = (t.dims[0] * t.dims[1]) as usize;
                        assert_ne!(out[..per], out[per..2 * per], "{arch:?} {name} {tensor}");
                    }
                }
            }
        }
        let wt = WeightType::Q4KM;
        assert_eq!(wt.of("blk.0.attn_qkv.weight"), GgmlType::Q6_K);
        assert_eq!(wt.of("blk.0.ffn_down_exps.weight"), GgmlType::Q6_K);
        assert_eq!(wt.of("blk.0.ffn_up_exps.weight"), GgmlType::Q4_K);
    }

    /// moe-8g as Q4_K is about 8 GB, and its block pools (one per type and column count, sized
    /// for the largest tensor: a whole expert tensor) stay a small fraction of that.
    #[test]
    fn moe_8g_is_about_8_gb_with_modest_pools() {
        for arch in [Arch::Qwen3Moe, Arch::LlamaMoe] {
            for wt in [WeightType::from(GgmlType::Q4_K), WeightType::Q4KM] {
                let spec = ModelSpec::preset("moe-8g", arch, wt).unwrap();
                spec.check().unwrap();
                let tensors = spec.tensors();
                let bytes: u64 = tensors
                    .iter()
                    .map(|(name, dims, kind)| {
                        let n: u64 = dims.iter().product();
                        let ty = if *kind == Kind::Matrix {
                            wt.of(name)
                        } else {
                            GgmlType::F32
                        };
                        n / ty.block_size() as u64 * ty.type_size() as u64
                    })
                    .sum();
                let pools: u64 = pool_sizes(&spec, &tensors)
                    .iter()
                    .map(|(&(ty, _), &blocks)| blocks * ty.type_size() as u64)
                    .sum();
                if wt == WeightType::from(GgmlType::Q4_K) {
                    // The arithmetic beside the preset; llama-moe has no q/k norms.
                    let norms = if arch == Arch::LlamaMoe { 38 * 1024 } else { 0 };
                    assert_eq!(bytes, 8_018_671_616 - norms, "{arch:?}");
                } else {
                    assert!(bytes > 8_000_000_000 && bytes < 10_000_000_000, "{bytes}");
                }
                assert!(pools < 400_000_000, "{arch:?} {wt}: pools of {pools} B");
                assert_eq!(spec.n_expert, 32);
                assert_eq!(spec.n_expert_used, 4);
            }
        }
    }
}

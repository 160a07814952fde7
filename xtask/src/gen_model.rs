//! `cargo xtask gen-model`: synthetic llama/qwen2 GGUF models for streaming tests and benches.
//!
//! ```text
//! cargo xtask gen-model [--preset tiny|1b|7b] [--type TYPE] [--arch llama|qwen2]
//!                       [--seed N] [--layers N] [--vocab N] [--out PATH]
//! ```
//! `TYPE` is one of q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, f16, bf16
//! (every weight matrix of that type), or q4_k_m, shaped like llama.cpp's Q4_K_M (Q4_K, except
//! `output.weight` and every `attn_v` and `ffn_down`, which are Q6_K).
//! Shapes follow llama.cpp's tensor names and ggml dimension order. Weights are valid blocks of
//! random quants with small finite f16 scales chosen so that a forward pass stays finite: every
//! weight matrix has elements of standard deviation ≈ 1/sqrt(columns), norm weights are 1.0,
//! qwen2's q/k/v biases are small. Nothing is quantized: for each (type, columns) a pool of random
//! blocks is generated once and each tensor borrows a slice of it at a random block offset, so a
//! 4 GB file costs little more than writing it. The tokenizer is a small valid SentencePiece
//! ("llama") vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, a few hundred pieces, then
//! filler pieces up to the vocabulary size.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use strata_gguf::{Array, GgmlType, GgufWriter};

/// Model family: decides metadata key prefix, defaults and the attention biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// llama: no biases.
    Llama,
    /// qwen2: f32 biases on attn_q/k/v.
    Qwen2,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// What `--type` accepts.
const ACCEPTED: &str =
    "q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, f16, bf16, q4_k_m";

/// The weight types of a synthetic model: one type for every matrix, or a llama.cpp mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// Every weight matrix (embeddings and output head included) has this type.
    Uniform(GgmlType),
    /// llama.cpp's Q4_K_M shape: Q4_K, except `output.weight` and every `attn_v` and
    /// `ffn_down`, which are Q6_K. (llama.cpp gives Q6_K to only some layers' `attn_v` and
    /// `ffn_down`; here all of them are, which covers the same kernels.)
    Q4KM,
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
        }
    }
}

impl WeightType {
    /// The type of the weight matrix called `name` (e.g. `blk.0.attn_v.weight`).
    pub fn of(self, name: &str) -> GgmlType {
        match self {
            WeightType::Uniform(ty) => ty,
            WeightType::Q4KM => {
                if name == "output.weight"
                    || name.ends_with(".attn_v.weight")
                    || name.ends_with(".ffn_down.weight")
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
        }
    }

    /// llama.cpp's `LLAMA_FTYPE` number, for `general.file_type`.
    fn file_type(self) -> Result<u32> {
        Ok(match self {
            WeightType::Q4KM => 15,
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
                GgmlType::BF16 => 32,
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
    /// Types of the weight matrices (embeddings and output head included).
    pub ty: WeightType,
    /// Hidden size.
    pub n_embd: u64,
    /// Feed-forward size.
    pub n_ff: u64,
    /// Number of blocks.
    pub n_layer: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads.
    pub n_head_kv: u64,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// Context length.
    pub n_ctx: u64,
}

impl ModelSpec {
    /// A named preset: `tiny`, `1b` (TinyLlama-1.1B shape) or `7b` (Llama-2-7B shape).
    pub fn preset(name: &str, arch: Arch, ty: impl Into<WeightType>) -> Result<ModelSpec> {
        let ty = ty.into();
        let (n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab, n_ctx) = match name {
            "tiny" => (256, 768, 4, 4, 2, 512, 512),
            "1b" => (2048, 5632, 22, 32, 4, 32000, 2048),
            "7b" => (4096, 11008, 32, 32, 32, 32000, 4096),
            other => bail!("unknown preset `{other}`; accepted: tiny, 1b, 7b"),
        };
        Ok(ModelSpec {
            preset: name.to_string(),
            arch,
            ty,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            n_vocab,
            n_ctx,
        })
    }

    fn head_dim(&self) -> u64 {
        self.n_embd / self.n_head
    }

    /// Every tensor in file order: (name, dims, is a weight matrix).
    fn tensors(&self) -> Vec<(String, Vec<u64>, Kind)> {
        let (e, f, kv) = (self.n_embd, self.n_ff, self.n_head_kv * self.head_dim());
        let mut t = vec![(
            "token_embd.weight".to_string(),
            vec![e, self.n_vocab],
            Kind::Matrix,
        )];
        for i in 0..self.n_layer {
            let b = |n: &str| format!("blk.{i}.{n}");
            t.push((b("attn_norm.weight"), vec![e], Kind::Norm));
            t.push((b("attn_q.weight"), vec![e, e], Kind::Matrix));
            t.push((b("attn_k.weight"), vec![e, kv], Kind::Matrix));
            t.push((b("attn_v.weight"), vec![e, kv], Kind::Matrix));
            if self.arch == Arch::Qwen2 {
                t.push((b("attn_q.bias"), vec![e], Kind::Bias));
                t.push((b("attn_k.bias"), vec![kv], Kind::Bias));
                t.push((b("attn_v.bias"), vec![kv], Kind::Bias));
            }
            t.push((b("attn_output.weight"), vec![e, e], Kind::Matrix));
            t.push((b("ffn_norm.weight"), vec![e], Kind::Norm));
            t.push((b("ffn_gate.weight"), vec![e, f], Kind::Matrix));
            t.push((b("ffn_up.weight"), vec![e, f], Kind::Matrix));
            t.push((b("ffn_down.weight"), vec![f, e], Kind::Matrix));
        }
        t.push(("output_norm.weight".to_string(), vec![e], Kind::Norm));
        t.push((
            "output.weight".to_string(),
            vec![e, self.n_vocab],
            Kind::Matrix,
        ));
        t
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
    Matrix,
    Norm,
    Bias,
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
        other => bail!("type {other} is not generated; accepted: {ACCEPTED}"),
    }
    Ok(out)
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

/// Write `spec` to `path` with `seed`; returns the file size.
pub fn write_model(spec: &ModelSpec, seed: u64, path: &Path) -> Result<u64> {
    spec.check()?;
    let arch = spec.arch.name();
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::new();
    let file_type = spec.ty.file_type()?;
    let (rope_base, eps) = match spec.arch {
        Arch::Llama => (10_000.0f32, 1e-5f32),
        Arch::Qwen2 => (1_000_000.0f32, 1e-6f32),
    };
    let u32_of = |v: u64| u32::try_from(v).context("shape value overflows u32");
    w.add_metadata("general.architecture", arch)?;
    w.add_metadata(
        "general.name",
        format!("strata-synthetic-{}-{arch}-{}", spec.preset, spec.ty),
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
        u32_of(spec.head_dim())?,
    )?;
    w.add_metadata(format!("{arch}.rope.freq_base"), rope_base)?;
    w.add_metadata(format!("{arch}.attention.layer_norm_rms_epsilon"), eps)?;
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

    // One pool of random blocks per (type, column count) (the std of a weight depends on the
    // columns), big enough for the largest tensor of that type and column count plus room to
    // vary the offset. Pools are drawn in (type, columns) order: with one type, that is column
    // order, as before mixes existed, so those files keep their bytes.
    let tensors = spec.tensors();
    let mut largest: BTreeMap<(GgmlType, u64), u64> = BTreeMap::new();
    for (name, dims, kind) in &tensors {
        if *kind == Kind::Matrix {
            let ty = spec.ty.of(name);
            let blocks = dims[0] * dims[1] / ty.block_size() as u64;
            let e = largest.entry((ty, dims[0])).or_default();
            *e = (*e).max(blocks);
        }
    }
    let mut pools: BTreeMap<(GgmlType, u64), Vec<u8>> = BTreeMap::new();
    for (&(ty, cols), &blocks) in &largest {
        let n = blocks + (blocks / 2).max(64);
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
                let blocks = dims[0] * dims[1] / block;
                let pool_blocks = pool.len() as u64 / type_size;
                let start = rng.next() % (pool_blocks - blocks + 1);
                let bytes =
                    &pool[(start * type_size) as usize..((start + blocks) * type_size) as usize];
                w.add_tensor(name.clone(), ty, dims, bytes)?;
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
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q4_k_m" | "q4km" => return Ok(WeightType::Q4KM),
        other => bail!("unknown type `{other}`; accepted: {ACCEPTED}"),
    };
    Ok(ty.into())
}

/// The default output path: `<workspace>/models/synth-<preset>-<arch>-<type>.gguf`.
pub fn default_path(spec: &ModelSpec) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    root.join("models").join(format!(
        "synth-{}-{}-{}.gguf",
        spec.preset,
        spec.arch.name(),
        spec.ty.name()
    ))
}

/// `cargo xtask gen-model ...`
pub fn run(args: &[String]) -> Result<()> {
    let mut preset = "tiny".to_string();
    let mut ty = WeightType::Uniform(GgmlType::Q4_K);
    let mut arch = Arch::Llama;
    let mut seed = 42u64;
    let mut layers = None;
    let mut vocab = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--preset" => preset = value()?.clone(),
            "--type" => ty = parse_type(value()?)?,
            "--arch" => {
                arch = match value()?.as_str() {
                    "llama" => Arch::Llama,
                    "qwen2" => Arch::Qwen2,
                    other => bail!("unknown arch `{other}`; accepted: llama, qwen2"),
                }
            }
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--layers" => layers = Some(value()?.parse().context("--layers")?),
            "--vocab" => vocab = Some(value()?.parse().context("--vocab")?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("cargo xtask gen-model [--preset tiny|1b|7b] [--type TYPE] [--arch llama|qwen2] [--seed N] [--layers N] [--vocab N] [--out PATH]\n  TYPE: {ACCEPTED}");
                return Ok(());
            }
            other => bail!("unknown flag `{other}`; accepted: --preset --type --arch --seed --layers --vocab --out"),
        }
    }
    let mut spec = ModelSpec::preset(&preset, arch, ty)?;
    if let Some(l) = layers {
        spec.n_layer = l;
    }
    if let Some(v) = vocab {
        spec.n_vocab = v;
    }
    let path = out.unwrap_or_else(|| default_path(&spec));
    let t = Instant::now();
    let n = write_model(&spec, seed, &path)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {} ({:.2} GB, {} layers, {}) in {secs:.1} s ({:.2} GB/s)",
        path.display(),
        n as f64 / 1e9,
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
        assert!(parse_type("iq2_xxs").is_err());
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
                    let t = g.tensor(tensor).unwrap();
                    let ty = wt.of(tensor);
                    assert_eq!(t.ty, ty, "{name} {tensor}");
                    let data = g.tensor_data(&bytes, t).unwrap();
                    let mut out = vec![0f32; t.n_elements() as usize];
                    strata_quant::dequantize(ty, data, &mut out).unwrap();
                    let n = out.len() as f32;
                    let mean = out.iter().sum::<f32>() / n;
                    let rms = (out.iter().map(|v| v * v).sum::<f32>() / n).sqrt();
                    let expect = 1.0 / (cols as f32).sqrt();
                    assert!(out.iter().all(|v| v.is_finite()));
                    assert!(
                        rms > 0.7 * expect && rms < 1.4 * expect,
                        "{arch:?} {name} {tensor}: rms {rms} vs {expect}"
                    );
                    assert!(
                        mean.abs() < 0.05 * expect,
                        "{arch:?} {name} {tensor}: mean {mean} vs std {expect}"
                    );
                }
                assert_eq!(
                    g.metadata().get_u32("general.file_type").unwrap(),
                    wt.file_type().unwrap()
                );
            }
        }
    }
}

//! Model hyperparameters read from GGUF metadata.
//!
//! Every value is read by explicit key under the architecture's prefix (`gemma3.`, `llama.`,
//! `qwen3.`, …), with llama.cpp's default where llama.cpp has one and an error naming the key where
//! it has none. Nothing here is specific to one model file: the forward pass follows these values.

use strata_gguf::{Gguf, Metadata};

use crate::error::ConfigError;

/// The transformer families the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 3: GeGLU, per-head Q/K norms, sandwich norms, sliding-window layers, scaled embeddings.
    Gemma3,
    /// Gemma 2: GeGLU, sandwich norms, every other layer sliding, attention and final logit
    /// soft-capping, scaled embeddings, the output head tied to the embeddings.
    Gemma2,
    /// Llama (also Mistral-style models): SwiGLU, normal RoPE ordering.
    Llama,
    /// Qwen2: SwiGLU, Q/K/V biases, NeoX RoPE ordering.
    Qwen2,
    /// Qwen3: SwiGLU, per-head Q/K norms, NeoX RoPE ordering, no biases.
    Qwen3,
    /// Qwen3-MoE: Qwen3's attention with a mixture-of-experts feed-forward network.
    Qwen3Moe,
    /// Phi-3: fused QKV and gate/up matrices, optional LongRoPE frequency factors.
    Phi3,
}

impl Arch {
    /// Parses `general.architecture`.
    pub fn from_name(name: &str) -> Result<Arch, ConfigError> {
        match name {
            "gemma3" => Ok(Arch::Gemma3),
            "gemma2" => Ok(Arch::Gemma2),
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "qwen3moe" => Ok(Arch::Qwen3Moe),
            "phi3" => Ok(Arch::Phi3),
            other => Err(ConfigError::UnsupportedArch {
                arch: other.to_string(),
            }),
        }
    }

    /// The metadata key prefix (`general.architecture`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3",
            Arch::Gemma2 => "gemma2",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Phi3 => "phi3",
        }
    }

    /// How RoPE pairs the dimensions of a head for this architecture.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Normal,
            Arch::Gemma3
            | Arch::Gemma2
            | Arch::Qwen2
            | Arch::Qwen3
            | Arch::Qwen3Moe
            | Arch::Phi3 => RopeStyle::Neox,
        }
    }
}

/// Which dimensions RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (llama.cpp `LLAMA_ROPE_TYPE_NORM`).
    Normal,
    /// Halves `(i, i + n_rot/2)` (llama.cpp `LLAMA_ROPE_TYPE_NEOX`).
    Neox,
}

/// The feed-forward gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnActivation {
    /// `silu(gate) * up` (llama, qwen2).
    SwiGlu,
    /// `gelu_tanh(gate) * up` (gemma3).
    GeGlu,
}

/// RoPE frequency parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Base θ of the frequencies `θ^(-2i/n_rot)`.
    pub freq_base: f32,
    /// Linear position scale (1 / scaling factor; 1.0 = no scaling).
    pub freq_scale: f32,
}

impl RopeParams {
    /// Refuses a base or scale that is not a positive finite number (`key` names the base's
    /// metadata key in the error).
    fn check(&self, arch: Arch, key: &str) -> Result<(), ConfigError> {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        if !ok(self.freq_base) || !ok(self.freq_scale) {
            return Err(ConfigError::Invalid {
                what: format!(
                    "RoPE base {} ({}.{key}) or position scale {} is not a positive number",
                    self.freq_base,
                    arch.name(),
                    self.freq_scale
                ),
            });
        }
        Ok(())
    }
}

/// Hyperparameters of a model, read from its GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Arch,
    /// Width of the residual stream (`<arch>.embedding_length`).
    pub n_embd: usize,
    /// Number of transformer blocks (`<arch>.block_count`).
    pub n_layer: usize,
    /// Hidden width of the feed-forward network (`<arch>.feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`<arch>.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`<arch>.attention.head_count_kv`, default `n_head`).
    pub n_head_kv: usize,
    /// Width of one key/query head (`<arch>.attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Width of one value head (`<arch>.attention.value_length`, default `head_dim`).
    pub head_dim_v: usize,
    /// Dimensions of each head that RoPE rotates (`<arch>.rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
    /// The context length the model was trained for (`<arch>.context_length`).
    pub n_ctx_train: usize,
    /// RMSNorm epsilon (`<arch>.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// RoPE ordering.
    pub rope_style: RopeStyle,
    /// RoPE parameters of full-attention layers (`<arch>.rope.freq_base`, rope scaling keys).
    pub rope_global: RopeParams,
    /// RoPE parameters of sliding-window layers (gemma3: `<arch>.rope.local_freq_base`, default
    /// 10000, no scaling). Equal to `rope_global` for architectures without sliding windows.
    pub rope_local: RopeParams,
    /// Sliding-window size in tokens; 0 = no sliding-window layers.
    pub sliding_window: usize,
    /// Period of the sliding-window pattern: layer `il` slides when `il % period < period - 1`
    /// (llama.cpp `set_swa_pattern`); 0 = every layer slides when `sliding_window > 0`.
    pub swa_period: usize,
    /// Scale applied to attention scores: `softmax(scale · q·k)`.
    pub attn_scale: f32,
    /// Whether the scale is multiplied into Q before the dot products (gemma, phi3) or applied
    /// to the scores inside the softmax (llama, qwen). Both are what llama.cpp's graphs do; the
    /// distinction matters for rounding because Q is converted to f16 for an f16 K cache.
    pub scale_q_before_attn: bool,
    /// Multiply embeddings by `sqrt(n_embd)` (gemma).
    pub scale_embeddings: bool,
    /// Per-head RMSNorm of Q and K after their projections (`attn_q_norm`, `attn_k_norm`;
    /// gemma3, qwen3).
    pub qk_norm: bool,
    /// Sandwich norms on the block outputs (`post_attention_norm`, `post_ffw_norm`; gemma).
    pub post_norms: bool,
    /// The gate activation.
    pub ffn_activation: FfnActivation,
    /// Gate and up are one `ffn_up` matrix of `2·n_ff` rows, the gate's first (phi3).
    pub ffn_up_fused: bool,
    /// Attention score soft-capping `c · tanh(s · (1/c))` before the softmax (0 = off; gemma2).
    pub attn_softcap: f32,
    /// Final logit soft-capping `c · tanh(x · (1/c))` (0 = off).
    pub final_logit_softcap: f32,
    /// Magnitude factor applied to RoPE's cosines and sines (`<arch>.rope.scaling.attn_factor`,
    /// default 1; phi3's LongRoPE models set it).
    pub rope_attn_factor: f32,
    /// Experts per mixture-of-experts layer (`<arch>.expert_count`; 0 = a dense model).
    pub n_expert: usize,
    /// Experts each token is routed to (`<arch>.expert_used_count`).
    pub n_expert_used: usize,
    /// Hidden width of one expert (`<arch>.expert_feed_forward_length`, default `n_ff` for
    /// llama, `n_ff / n_expert_used` for qwen3moe, as llama.cpp).
    pub n_ff_exp: usize,
    /// The context length RoPE frequency factors were made for
    /// (`<arch>.rope.scaling.original_context_length`, default `n_ctx_train`): a context longer
    /// than this uses `rope_factors_long`, otherwise `rope_factors_short` (llama.cpp's choice).
    pub n_ctx_orig: usize,
}

impl ModelConfig {
    /// Reads the configuration of the model in `gguf`.
    ///
    /// `n_vocab` comes from the `token_embd.weight` tensor (the vocabulary the model computes
    /// over), falling back to the tokenizer's token list.
    pub fn from_gguf(gguf: &Gguf) -> Result<ModelConfig, ConfigError> {
        let md = gguf.metadata();
        let arch_name =
            md.get_str("general.architecture")
                .map_err(|source| ConfigError::Metadata {
                    key: "general.architecture".into(),
                    source,
                })?;
        let arch = Arch::from_name(arch_name)?;
        let keys = Keys { md, arch };

        let n_embd = keys.req_usize("embedding_length")?;
        let n_layer = keys.req_usize("block_count")?;
        let n_ff = keys.req_usize("feed_forward_length")?;
        let n_head = keys.req_usize("attention.head_count")?;
        let n_head_kv = keys.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ctx_train = keys.req_usize("context_length")?;
        let rms_eps = keys.req_f32("attention.layer_norm_rms_epsilon")?;
        if n_embd == 0 || n_layer == 0 || n_ff == 0 || n_head == 0 || n_head_kv == 0 {
            return Err(ConfigError::Invalid {
                what: format!(
                    "zero dimension: n_embd={n_embd} n_layer={n_layer} n_ff={n_ff} \
                     n_head={n_head} n_head_kv={n_head_kv}"
                ),
            });
        }
        if n_head % n_head_kv != 0 {
            return Err(ConfigError::Invalid {
                what: format!("head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"),
            });
        }
        if n_ctx_train == 0 {
            return Err(ConfigError::Invalid {
                what: format!("{}.context_length is 0", arch.name()),
            });
        }
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(ConfigError::Invalid {
                what: format!(
                    "{}.attention.layer_norm_rms_epsilon is {rms_eps}",
                    arch.name()
                ),
            });
        }
        let head_dim = match keys.opt_usize("attention.key_length")? {
            Some(k) => k,
            None if n_embd % n_head != 0 => {
                return Err(ConfigError::Invalid {
                    what: format!(
                        "embedding_length {n_embd} is not a multiple of head_count {n_head} \
                         (and attention.key_length is absent)"
                    ),
                })
            }
            None => n_embd / n_head,
        };
        let head_dim_v = keys
            .opt_usize("attention.value_length")?
            .unwrap_or(head_dim);
        let n_rot = keys.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if head_dim == 0 || head_dim_v == 0 || n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ConfigError::Invalid {
                what: format!("head_dim={head_dim} head_dim_v={head_dim_v} n_rot={n_rot}"),
            });
        }

        let n_vocab = match gguf.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => {
                usize::try_from(t.dims[1]).map_err(|_| ConfigError::Invalid {
                    what: format!("token_embd.weight rows {}", t.dims[1]),
                })?
            }
            Some(t) => {
                return Err(ConfigError::Invalid {
                    what: format!("token_embd.weight has dims {:?}, expected 2", t.dims),
                })
            }
            None => {
                return Err(ConfigError::MissingTensor {
                    name: "token_embd.weight".into(),
                })
            }
        };

        let rope_global = RopeParams {
            freq_base: keys.opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
            freq_scale: keys.rope_freq_scale()?,
        };
        rope_global.check(arch, "rope.freq_base")?;

        let mut cfg = ModelConfig {
            arch,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_rot,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_style: arch.rope_style(),
            rope_global,
            rope_local: rope_global,
            sliding_window: 0,
            swa_period: 0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            scale_q_before_attn: false,
            scale_embeddings: false,
            qk_norm: false,
            post_norms: false,
            ffn_activation: FfnActivation::SwiGlu,
            ffn_up_fused: false,
            attn_softcap: 0.0,
            final_logit_softcap: 0.0,
            rope_attn_factor: keys.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            n_ctx_orig: keys
                .opt_usize("rope.scaling.original_context_length")?
                .unwrap_or(n_ctx_train),
        };
        cfg.n_expert = keys.opt_usize("expert_count")?.unwrap_or(0);
        if cfg.n_expert > 0 {
            if !matches!(arch, Arch::Llama | Arch::Qwen3Moe) {
                return Err(ConfigError::Unsupported {
                    what: format!("mixture-of-experts {} models", arch.name()),
                });
            }
            cfg.n_expert_used = keys.req_usize("expert_used_count")?;
            if cfg.n_expert_used == 0 || cfg.n_expert_used > cfg.n_expert {
                return Err(ConfigError::Invalid {
                    what: format!(
                        "{}.expert_used_count {} is not in 1..={} (expert_count)",
                        arch.name(),
                        cfg.n_expert_used,
                        cfg.n_expert
                    ),
                });
            }
            cfg.n_ff_exp = match keys.opt_usize("expert_feed_forward_length")? {
                Some(f) if f > 0 => f,
                _ if arch == Arch::Qwen3Moe => n_ff / cfg.n_expert_used,
                _ => n_ff,
            };
            if cfg.n_ff_exp == 0 {
                return Err(ConfigError::Invalid {
                    what: format!("{}.expert_feed_forward_length is 0", arch.name()),
                });
            }
        } else if arch == Arch::Qwen3Moe {
            return Err(ConfigError::MissingKey {
                key: keys.key("expert_count"),
            });
        }
        if !(cfg.rope_attn_factor.is_finite() && cfg.rope_attn_factor > 0.0) {
            return Err(ConfigError::Invalid {
                what: format!(
                    "{}.rope.scaling.attn_factor is {}",
                    arch.name(),
                    cfg.rope_attn_factor
                ),
            });
        }

        if arch == Arch::Gemma3 {
            // llama.cpp: SWA on 5 of every 6 layers, local layers at rope base 10000, scale 1.
            cfg.sliding_window = keys.opt_usize("attention.sliding_window")?.unwrap_or(0);
            cfg.swa_period = keys
                .opt_usize("attention.sliding_window_pattern")?
                .unwrap_or(6);
            let local_base = match keys.opt_f32("rope.local_freq_base")? {
                Some(b) => b,
                None => keys.opt_f32("rope.freq_base_swa")?.unwrap_or(10_000.0),
            };
            cfg.rope_local = RopeParams {
                freq_base: local_base,
                freq_scale: 1.0,
            };
            cfg.rope_local.check(arch, "rope.local_freq_base")?;
            // Gemma 3 27B scales by the model width per head; every other size by head_dim
            // (`query_pre_attn_scalar`).
            cfg.attn_scale = if n_layer == 62 {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            };
            cfg.scale_q_before_attn = true;
            cfg.scale_embeddings = true;
            cfg.qk_norm = true;
            cfg.post_norms = true;
            cfg.ffn_activation = FfnActivation::GeGlu;
            cfg.final_logit_softcap = keys.softcap("final_logit_softcapping", 0.0)?;
        }
        if arch == Arch::Gemma2 {
            // llama.cpp: a 4096-token window on every other layer (pattern 2), both layer kinds
            // at the model's RoPE base unless rope.freq_base_swa says otherwise; soft-capping
            // of the attention scores (default 50) and of the logits (default 30).
            cfg.sliding_window = keys.opt_usize("attention.sliding_window")?.unwrap_or(4096);
            cfg.swa_period = keys
                .opt_usize("attention.sliding_window_pattern")?
                .unwrap_or(2);
            cfg.rope_local = RopeParams {
                freq_base: keys
                    .opt_f32("rope.freq_base_swa")?
                    .unwrap_or(rope_global.freq_base),
                freq_scale: rope_global.freq_scale,
            };
            cfg.rope_local.check(arch, "rope.freq_base_swa")?;
            // Gemma 2 27B (46 layers) scales by the model width per head, the others by head_dim.
            cfg.attn_scale = if n_layer == 46 {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            };
            cfg.scale_q_before_attn = true;
            cfg.scale_embeddings = true;
            cfg.post_norms = true;
            cfg.ffn_activation = FfnActivation::GeGlu;
            cfg.attn_softcap = keys.softcap("attn_logit_softcapping", 50.0)?;
            cfg.final_logit_softcap = keys.softcap("final_logit_softcapping", 30.0)?;
        }
        if matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe) {
            cfg.qk_norm = true;
        }
        if arch == Arch::Phi3 {
            // llama.cpp scales Q by 1/sqrt(head_dim) before attention; it reads Phi-3's sliding
            // window but disables it (every layer attends to the whole context).
            cfg.scale_q_before_attn = true;
            cfg.ffn_up_fused = true;
        }
        Ok(cfg)
    }

    /// Whether layer `il` uses sliding-window attention (llama.cpp `set_swa_pattern` with
    /// `dense_first = false`: the last layer of each period is global).
    pub fn is_swa_layer(&self, il: usize) -> bool {
        self.sliding_window > 0
            && (self.swa_period == 0 || il % self.swa_period < self.swa_period - 1)
    }

    /// RoPE parameters of layer `il`.
    pub fn rope_for_layer(&self, il: usize) -> RopeParams {
        if self.is_swa_layer(il) {
            self.rope_local
        } else {
            self.rope_global
        }
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of one token's keys (all KV heads).
    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Width of one token's values (all KV heads).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

/// Typed metadata reads under one architecture prefix.
struct Keys<'a> {
    md: &'a Metadata,
    arch: Arch,
}

impl Keys<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch.name())
    }

    fn req_usize(&self, suffix: &str) -> Result<usize, ConfigError> {
        let key = self.key(suffix);
        self.opt_usize(suffix)?
            .ok_or(ConfigError::MissingKey { key })
    }

    fn req_f32(&self, suffix: &str) -> Result<f32, ConfigError> {
        let key = self.key(suffix);
        self.opt_f32(suffix)?.ok_or(ConfigError::MissingKey { key })
    }

    fn opt_u64(&self, suffix: &str) -> Result<Option<u64>, ConfigError> {
        let key = self.key(suffix);
        if self.md.get(&key).is_none() {
            return Ok(None);
        }
        self.md
            .get_u64(&key)
            .map(Some)
            .map_err(|source| ConfigError::Metadata { key, source })
    }

    fn opt_usize(&self, suffix: &str) -> Result<Option<usize>, ConfigError> {
        match self.opt_u64(suffix)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    what: format!("{} = {v} does not fit in usize", self.key(suffix)),
                }),
        }
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>, ConfigError> {
        let key = self.key(suffix);
        if self.md.get(&key).is_none() {
            return Ok(None);
        }
        self.md
            .get_f32(&key)
            .map(Some)
            .map_err(|source| ConfigError::Metadata { key, source })
    }

    /// A soft-capping value (`default` when absent): finite and ≥ 0, 0 meaning off.
    fn softcap(&self, suffix: &str, default: f32) -> Result<f32, ConfigError> {
        let v = self.opt_f32(suffix)?.unwrap_or(default);
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError::Invalid {
                what: format!("{} is {v}", self.key(suffix)),
            });
        }
        Ok(v)
    }

    fn opt_str(&self, suffix: &str) -> Result<Option<&str>, ConfigError> {
        let key = self.key(suffix);
        if self.md.get(&key).is_none() {
            return Ok(None);
        }
        self.md
            .get_str(&key)
            .map(Some)
            .map_err(|source| ConfigError::Metadata { key, source })
    }

    /// Linear RoPE scaling as llama.cpp reads it: `rope.scale_linear` (legacy) or
    /// `rope.scaling.factor`, giving `freq_scale = 1 / factor`. Scaling types other than
    /// `none`/`linear` change the rotation itself and are refused rather than approximated.
    fn rope_freq_scale(&self) -> Result<f32, ConfigError> {
        let ty = self.opt_str("rope.scaling.type")?.unwrap_or("linear");
        if ty == "none" {
            return Ok(1.0);
        }
        if ty != "linear" {
            return Err(ConfigError::Unsupported {
                what: format!(
                    "{} = {ty:?} (only none/linear)",
                    self.key("rope.scaling.type")
                ),
            });
        }
        let mut factor = self.opt_f32("rope.scale_linear")?.unwrap_or(0.0);
        if let Some(f) = self.opt_f32("rope.scaling.factor")? {
            factor = f;
        }
        Ok(if factor == 0.0 { 1.0 } else { 1.0 / factor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_gguf::GgufWriter;

    fn gemma_like(extra: &[(&str, f32)]) -> Gguf {
        let mut f32s = vec![
            ("attention.layer_norm_rms_epsilon", 1e-6f32),
            ("rope.freq_base", 1e6),
        ];
        f32s.extend_from_slice(extra);
        header_with(
            "gemma3",
            &[
                ("embedding_length", 64u32),
                ("block_count", 12),
                ("feed_forward_length", 128),
                ("attention.head_count", 4),
                ("attention.head_count_kv", 1),
                ("attention.key_length", 32),
                ("attention.value_length", 32),
                ("context_length", 1024),
                ("attention.sliding_window", 512),
            ],
            &f32s,
        )
    }

    /// A header of `arch` with these u32 and f32 keys (under the `arch.` prefix) and a
    /// 10-row F32 `token_embd.weight`.
    fn header_with(arch: &str, u32s: &[(&str, u32)], f32s: &[(&str, f32)]) -> Gguf {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", arch).unwrap();
        for (k, v) in u32s {
            w.add_metadata(format!("{arch}.{k}"), *v).unwrap();
        }
        for (k, v) in f32s {
            w.add_metadata(format!("{arch}.{k}"), *v).unwrap();
        }
        w.add_tensor(
            "token_embd.weight",
            strata_gguf::GgmlType::F32,
            &[64, 10],
            vec![0u8; 64 * 10 * 4],
        )
        .unwrap();
        Gguf::from_bytes(&w.to_vec().unwrap()).unwrap()
    }

    #[test]
    fn gemma3_every_sixth_layer_is_global_with_its_own_rope_base() {
        let c = ModelConfig::from_gguf(&gemma_like(&[])).unwrap();
        let swa: Vec<bool> = (0..12).map(|il| c.is_swa_layer(il)).collect();
        assert_eq!(
            swa,
            [true, true, true, true, true, false, true, true, true, true, true, false]
        );
        assert_eq!(c.rope_for_layer(0).freq_base, 10_000.0);
        assert_eq!(c.rope_for_layer(5).freq_base, 1e6);
        assert_eq!(c.attn_scale, 1.0 / 32f32.sqrt());
        assert!(c.scale_q_before_attn && c.scale_embeddings && c.qk_norm && c.post_norms);
        assert_eq!((c.head_dim, c.n_head_kv, c.n_vocab), (32, 1, 10));
        assert_eq!(c.rope_style, RopeStyle::Neox);
    }

    #[test]
    fn rope_scaling_and_local_base_follow_metadata() {
        let c = ModelConfig::from_gguf(&gemma_like(&[
            ("rope.scaling.factor", 8.0),
            ("rope.local_freq_base", 20_000.0),
        ]))
        .unwrap();
        assert_eq!(c.rope_global.freq_scale, 0.125);
        assert_eq!(
            c.rope_local,
            RopeParams {
                freq_base: 20_000.0,
                freq_scale: 1.0
            }
        );
    }

    /// A minimal header of `arch` with the shape keys and `extra` u32/f32 keys.
    fn header(arch: &str, extra_u32: &[(&str, u32)], extra_f32: &[(&str, f32)]) -> Gguf {
        let mut u32s = vec![
            ("embedding_length", 64u32),
            ("block_count", 4),
            ("feed_forward_length", 128),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("context_length", 4096),
        ];
        u32s.extend_from_slice(extra_u32);
        let mut f32s = vec![("attention.layer_norm_rms_epsilon", 1e-6f32)];
        f32s.extend_from_slice(extra_f32);
        header_with(arch, &u32s, &f32s)
    }

    #[test]
    fn gemma2_defaults_follow_llama_cpp() {
        let c = ModelConfig::from_gguf(&header("gemma2", &[], &[])).unwrap();
        assert_eq!((c.sliding_window, c.swa_period), (4096, 2));
        let swa: Vec<bool> = (0..4).map(|il| c.is_swa_layer(il)).collect();
        assert_eq!(swa, [true, false, true, false]);
        assert_eq!((c.attn_softcap, c.final_logit_softcap), (50.0, 30.0));
        assert!(c.scale_q_before_attn && c.scale_embeddings && c.post_norms && !c.qk_norm);
        assert_eq!(c.ffn_activation, FfnActivation::GeGlu);
        let c = ModelConfig::from_gguf(&header(
            "gemma2",
            &[("attention.sliding_window", 8)],
            &[
                ("attn_logit_softcapping", 10.0),
                ("final_logit_softcapping", 5.0),
            ],
        ))
        .unwrap();
        assert_eq!(
            (c.sliding_window, c.attn_softcap, c.final_logit_softcap),
            (8, 10.0, 5.0)
        );
        let e = ModelConfig::from_gguf(&header("gemma2", &[], &[("attn_logit_softcapping", -1.0)]))
            .unwrap_err();
        assert!(
            e.to_string().contains("gemma2.attn_logit_softcapping"),
            "{e}"
        );
    }

    #[test]
    fn phi3_and_qwen3_switches() {
        let c = ModelConfig::from_gguf(&header(
            "phi3",
            &[("rope.scaling.original_context_length", 1024)],
            &[("rope.scaling.attn_factor", 1.19)],
        ))
        .unwrap();
        assert!(c.ffn_up_fused && c.scale_q_before_attn && !c.qk_norm);
        assert_eq!((c.n_ctx_orig, c.rope_attn_factor), (1024, 1.19));
        assert_eq!(c.sliding_window, 0);
        let c = ModelConfig::from_gguf(&header("qwen3", &[], &[])).unwrap();
        assert!(c.qk_norm && !c.post_norms && !c.scale_q_before_attn);
        assert_eq!(
            (c.n_ctx_orig, c.rope_attn_factor, c.n_expert),
            (4096, 1.0, 0)
        );
    }

    #[test]
    fn experts_are_read_and_checked() {
        let c = ModelConfig::from_gguf(&header(
            "qwen3moe",
            &[("expert_count", 8), ("expert_used_count", 2)],
            &[],
        ))
        .unwrap();
        // qwen3moe without expert_feed_forward_length: n_ff / n_expert_used, as llama.cpp.
        assert_eq!((c.n_expert, c.n_expert_used, c.n_ff_exp), (8, 2, 64));
        let c = ModelConfig::from_gguf(&header(
            "llama",
            &[("expert_count", 8), ("expert_used_count", 2)],
            &[],
        ))
        .unwrap();
        assert_eq!(c.n_ff_exp, 128);
        for (arch, extra) in [
            ("qwen3moe", vec![]),
            ("llama", vec![("expert_count", 8), ("expert_used_count", 9)]),
            ("llama", vec![("expert_count", 8)]),
            ("qwen2", vec![("expert_count", 8), ("expert_used_count", 2)]),
        ] {
            assert!(
                ModelConfig::from_gguf(&header(arch, &extra, &[])).is_err(),
                "{arch} {extra:?}"
            );
        }
    }

    #[test]
    fn missing_key_is_named() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "qwen2").unwrap();
        w.add_metadata("qwen2.embedding_length", 64u32).unwrap();
        let g = Gguf::from_bytes(&w.to_vec().unwrap()).unwrap();
        let e = ModelConfig::from_gguf(&g).unwrap_err();
        assert!(
            matches!(&e, ConfigError::MissingKey { key } if key == "qwen2.block_count"),
            "{e}"
        );
    }
}

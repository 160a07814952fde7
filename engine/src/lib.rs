//! Strata's engine: model configs, tokenizer, forward pass, KV cache, sampling and generation
//! over the bounded layer cache.

pub mod tokenizer;

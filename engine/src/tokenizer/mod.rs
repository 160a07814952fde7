//! Tokenizers built from GGUF `tokenizer.ggml.*` metadata (SPM and BPE).

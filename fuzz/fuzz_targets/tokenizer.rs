//! Tokenizers (SPM and two BPE vocabularies from engine/tests/data/vocab) on arbitrary text
//! and arbitrary ids: encode gives ids in range, stream decoding equals one-shot decoding,
//! decoding any ids (in range or not) never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_engine::tokenizer::{StreamDecoder, Tokenizer};
use strata_gguf::Gguf;

fn load(name: &str) -> Tokenizer {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/tests/data/vocab")
        .join(format!("ggml-vocab-{name}.gguf"));
    let g = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&g).unwrap()
}

fn vocabs() -> &'static [Tokenizer] {
    static V: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    V.get_or_init(|| ["llama-spm", "gpt-2", "deepseek-r1-qwen"].map(load).into())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let tok = &vocabs()[sel as usize % 3];
    let (add_special, parse_special) = (sel & 4 != 0, sel & 8 != 0);
    let text = String::from_utf8_lossy(rest);
    // SPM without a byte token for some byte is the one documented error.
    if let Ok(ids) = tok.encode(&text, add_special, parse_special) {
        assert!(ids.iter().all(|&i| (i as usize) < tok.n_vocab()));
        let mut d = StreamDecoder::new(tok);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(id));
        }
        streamed.push_str(&d.finish());
        assert_eq!(streamed, tok.decode(&ids));
    }
    // The bytes as ids: out-of-range ids included.
    let ids: Vec<u32> = rest
        .chunks(3)
        .map(|c| c.iter().fold(0u32, |a, &b| a << 8 | u32::from(b)))
        .collect();
    let mut d = StreamDecoder::new(tok);
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&d.push(id));
    }
    streamed.push_str(&d.finish());
    assert_eq!(streamed, tok.decode(&ids));
});

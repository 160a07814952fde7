//! Tokenizer tests against llama.cpp's tokenizer test data (tests/data/vocab, see its README)
//! and the real Gemma 3 model's reference ids, plus property tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use strata_engine::tokenizer::{
    PreTokenizer, StreamDecoder, TokenType, Tokenizer, TokenizerError, Vocab, GPT2_PATTERN,
    LLAMA3_PATTERN, QWEN2_PATTERN,
};
use strata_gguf::Gguf;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn load_vocab(name: &str) -> Tokenizer {
    let path = data_dir()
        .join("vocab")
        .join(format!("ggml-vocab-{name}.gguf"));
    let g = Gguf::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("tokenizer of {}: {e}", path.display()))
}

/// Vocabularies are loaded once per test binary.
fn vocab(name: &str) -> &'static Tokenizer {
    macro_rules! cached {
        ($($n:literal),*) => {
            match name {
                $($n => {
                    static T: OnceLock<Tokenizer> = OnceLock::new();
                    T.get_or_init(|| load_vocab($n))
                })*
                other => panic!("no vocab {other}"),
            }
        };
    }
    cached!(
        "llama-spm",
        "gpt-2",
        "deepseek-r1-qwen",
        "deepseek-llm",
        "deepseek-coder",
        "starcoder"
    )
}

/// The real model: `STRATA_MODEL`, else `<workspace>/models/gemma-3-270m-q4_k_m.gguf`.
fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_MODEL") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf")
}

fn gemma() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = model_path();
        assert!(
            path.exists(),
            "model file {} is missing: run `cargo xtask fetch-model` (or set STRATA_MODEL)",
            path.display()
        );
        let g = Gguf::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Tokenizer::from_gguf(&g).expect("gemma tokenizer")
    })
}

/// The cases of a llama.cpp `*.inp`/`*.out` pair: inputs separated by
/// `\n__ggml_vocab_test__\n`, one line of ids per input.
fn cases(file: &str) -> Vec<(String, Vec<u32>)> {
    let dir = data_dir().join("vocab");
    let inp = std::fs::read_to_string(dir.join(format!("{file}.inp"))).expect("read .inp");
    let out = std::fs::read_to_string(dir.join(format!("{file}.out"))).expect("read .out");
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(inputs.pop(), Some(""), "{file}.inp ends with a separator");
    let mut outputs: Vec<&str> = out.split('\n').collect();
    assert_eq!(outputs.pop(), Some(""), "{file}.out ends with a newline");
    assert_eq!(inputs.len(), outputs.len(), "{file}: inputs vs outputs");
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| {
            let ids = o
                .split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect();
            (i.to_owned(), ids)
        })
        .collect()
}

/// Every case encodes to the expected ids and decodes back to its text.
fn check_fixture(file: &str, tok: &Tokenizer) {
    let cases = cases(file);
    assert!(cases.len() > 40, "{file}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = tok.encode(text, false, false).expect("encode");
        if &got != expected {
            failures.push(format!(
                "{text:?}\n   expected {expected:?}\n   got      {got:?}"
            ));
            continue;
        }
        let back = tok.decode(&got);
        if &back != text {
            failures.push(format!("{text:?}: decode gave {back:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn fixture_llama_spm() {
    check_fixture("ggml-vocab-llama-spm.gguf", vocab("llama-spm"));
}

#[test]
fn fixture_gpt2() {
    check_fixture("ggml-vocab-gpt-2.gguf", vocab("gpt-2"));
}

#[test]
fn fixture_qwen2() {
    // The qwen2 test file is meant for the deepseek-r1-qwen vocabulary (same pre-tokenizer).
    check_fixture("ggml-vocab-qwen2.gguf", vocab("deepseek-r1-qwen"));
}

#[test]
fn fixture_deepseek_r1_qwen() {
    check_fixture(
        "ggml-vocab-deepseek-r1-qwen.gguf",
        vocab("deepseek-r1-qwen"),
    );
}

#[test]
fn fixture_deepseek_llm() {
    check_fixture("ggml-vocab-deepseek-llm.gguf", vocab("deepseek-llm"));
}

#[test]
fn fixture_deepseek_coder() {
    check_fixture("ggml-vocab-deepseek-coder.gguf", vocab("deepseek-coder"));
}

#[test]
fn fixture_starcoder() {
    check_fixture("ggml-vocab-starcoder.gguf", vocab("starcoder"));
}

#[test]
fn gemma_reference_ids() {
    let tok = gemma();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("tokenize.json")).unwrap())
            .unwrap();
    assert_eq!(json["add_special"], false);
    assert_eq!(json["parse_special"], false);
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let expected: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false, false).unwrap();
        if got != expected {
            failures.push(format!(
                "{text:?}\n   expected {expected:?}\n   got      {got:?}"
            ));
        } else if tok.decode(&got) != text {
            failures.push(format!("{text:?}: decode gave {:?}", tok.decode(&got)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} gemma cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma_prompts_with_bos() {
    // Prompt ids from the reference run (shared/reference/gemma3-270m/p*.json, add_special = true).
    let tok = gemma();
    let cases: &[(&str, &[u32])] = &[
        ("The capital of France is", &[2, 818, 5279, 529, 7001, 563]),
        (
            "Once upon a time, in a small village,",
            &[
                2, 14946, 3324, 496, 990, 236764, 528, 496, 1944, 9744, 236764,
            ],
        ),
        (
            "def fibonacci(n):",
            &[2, 2063, 10779, 78113, 236769, 236749, 1473],
        ),
        (
            "1, 2, 3, 4, 5,",
            &[
                2, 236770, 236764, 236743, 236778, 236764, 236743, 236800, 236764, 236743, 236812,
                236764, 236743, 236810, 236764,
            ],
        ),
        (
            "Café naïve 東京 🚀 — ok",
            &[2, 160319, 236859, 120362, 86459, 236743, 242015, 2192, 7546],
        ),
    ];
    for (text, expected) in cases {
        let got = tok.encode(text, true, false).unwrap();
        assert_eq!(&got, expected, "{text:?}");
        assert_eq!(tok.decode(&got), *text);
    }
}

#[test]
fn gemma_specials() {
    let tok = gemma();
    assert_eq!(tok.n_vocab(), 262_144);
    assert_eq!(tok.bos(), Some(2));
    assert_eq!(tok.eos(), Some(1));
    let sot = tok.token_id("<start_of_turn>").expect("<start_of_turn>");
    let eot = tok.token_id("<end_of_turn>").expect("<end_of_turn>");
    assert_eq!(tok.eot(), Some(eot));
    assert!(tok.is_eog(eot) && tok.is_eog(1) && !tok.is_eog(sot));
    // `</s>` (212, user-defined in the file) ends generation and is control, as llama.cpp's
    // loader makes every `</s>`: plain text does not become it, and it decodes empty.
    let s = tok.token_id("</s>").expect("</s>");
    assert_eq!(tok.eog_ids(), [1, eot, s]);
    assert_eq!(tok.token_type(s), Some(TokenType::Control));
    assert!(!tok.encode("a</s>", false, false).unwrap().contains(&s));
    assert_eq!(tok.encode("</s>", false, true).unwrap(), [s]);
    assert_eq!(tok.decode(&[s]), "");
    // This GGUF carries no tokenizer.chat_template; the DeepSeek-R1 vocabulary does.
    assert_eq!(tok.chat_template(), None);
    assert!(vocab("deepseek-r1-qwen")
        .chat_template()
        .is_some_and(|t| t.contains("<｜Assistant｜>")));

    // parse_special switches control-token matching.
    let text = "<start_of_turn>user\nhi<end_of_turn>";
    let parsed = tok.encode(text, false, true).unwrap();
    assert_eq!(parsed.first(), Some(&sot));
    assert_eq!(parsed.last(), Some(&eot));
    let plain = tok.encode(text, false, false).unwrap();
    assert!(!plain.contains(&sot) && !plain.contains(&eot), "{plain:?}");
    assert_eq!(tok.decode(&plain), text);
    // Control tokens render empty in decode, as their text in token_bytes.
    assert_eq!(tok.decode(&parsed), "user\nhi");
    assert_eq!(tok.token_bytes(sot), b"<start_of_turn>");
    // add_special adds BOS only (add_eos is false).
    let with = tok.encode("hi", true, false).unwrap();
    assert_eq!(with[0], 2);
    assert_eq!(&with[1..], &tok.encode("hi", false, false).unwrap()[..]);
}

#[test]
fn llama_spm_space_prefix_and_bytes() {
    let tok = vocab("llama-spm");
    assert!(tok.add_space_prefix());
    assert_eq!(tok.encode("", true, false).unwrap(), [1]);
    // After a special token the fragment gets the space prefix again.
    let ids = tok.encode("<s>Hello", false, true).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(&ids[1..], &tok.encode("Hello", false, false).unwrap()[..]);
    // Byte fallback: a character outside the vocabulary becomes <0xNN> tokens.
    let ids = tok.encode("\u{10FFFF}", false, false).unwrap();
    assert_eq!(tok.token_text(ids[0]), "▁".as_bytes(), "space prefix");
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(
        ids[1..]
            .iter()
            .all(|&i| tok.token_text(i).starts_with(b"<0x")),
        "{ids:?}"
    );
    assert_eq!(tok.decode(&ids), "\u{10FFFF}");
}

#[test]
fn bpe_specials_user_defined_always_control_on_request() {
    let tok = vocab("deepseek-r1-qwen");
    // User-defined tokens (here <think>) are matched even without parse_special.
    let think = tok.token_id("<think>").expect("<think>");
    let ids = tok.encode("<think>hi</think>", false, false).unwrap();
    assert_eq!(ids[0], think, "{ids:?}");
    assert_eq!(tok.decode(&ids), "<think>hi</think>");
    // Control tokens only with parse_special.
    let eos = tok.eos().unwrap();
    let eos_text = String::from_utf8(tok.token_text(eos).to_vec()).unwrap();
    assert_eq!(tok.encode(&eos_text, false, true).unwrap(), [eos]);
    assert_ne!(tok.encode(&eos_text, false, false).unwrap(), [eos]);
    assert!(tok.is_eog(eos));
    // add_special: BOS (add_bos_token = true), no EOS.
    let with = tok.encode("hi", true, false).unwrap();
    assert_eq!(with[0], tok.bos().unwrap());
    assert_eq!(
        with.len(),
        1 + tok.encode("hi", false, false).unwrap().len()
    );
}

#[test]
fn detokenize_options() {
    // GPT-2 cleans spaces before punctuation (llama.cpp's clean_spaces); decode does not.
    let tok = vocab("gpt-2");
    let ids = tok.encode("Hello , world !", false, false).unwrap();
    assert_eq!(tok.decode(&ids), "Hello , world !");
    assert_eq!(tok.detokenize(&ids, false, false), "Hello, world!");
    // remove_special drops the BOS the model adds; unparse_special renders control tokens.
    let spm = vocab("llama-spm");
    let ids = spm.encode("Hi", true, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(spm.detokenize(&ids, true, false), " Hi");
    assert_eq!(spm.detokenize(&ids, false, true), "<s> Hi");
    assert_eq!(spm.decode(&ids), " Hi");
}

#[test]
fn unknown_pre_tokenizer_is_an_error() {
    let v = Vocab {
        model: "gpt2".into(),
        pre: Some("made-up-pre".into()),
        tokens: vec![b"a".to_vec()],
        ..Vocab::default()
    };
    match Tokenizer::from_vocab(v) {
        Err(e @ TokenizerError::UnknownPreTokenizer { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("made-up-pre")
                    && msg.contains("llama3")
                    && msg.contains("deepseek-coder"),
                "{msg}"
            );
        }
        other => panic!("expected UnknownPreTokenizer, got {other:?}"),
    }
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    let tok = vocab("llama-spm");
    // "東" is three bytes; with byte fallback they arrive as three tokens.
    let ids: Vec<u32> = "東"
        .bytes()
        .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut d = StreamDecoder::continuing(tok);
    assert_eq!(d.push(ids[0]), "");
    assert_eq!(d.push(ids[1]), "");
    assert_eq!(d.push(ids[2]), "東");
    assert_eq!(d.finish(), "");
    // An incomplete character at the end is flushed as U+FFFD.
    let mut d = StreamDecoder::continuing(tok);
    assert_eq!(d.push(ids[0]), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

/// The splitter steps of a pre-tokenizer, done by `fancy-regex` with the original pattern.
fn oracle_split(pattern: &str, text: &str) -> Vec<String> {
    let re = fancy_regex::Regex::new(pattern).unwrap();
    let mut out = Vec::new();
    let mut last = 0;
    for m in re.find_iter(text) {
        let m = m.unwrap();
        if m.start() > last {
            out.push(text[last..m.start()].to_owned());
        }
        out.push(m.as_str().to_owned());
        last = m.end();
    }
    if last < text.len() {
        out.push(text[last..].to_owned());
    }
    out
}

fn split(pre: &str, text: &str) -> Vec<String> {
    PreTokenizer::new(pre)
        .unwrap()
        .split(text)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Text generator biased toward what pre-tokenizers care about.
fn text_strategy() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        3 => proptest::sample::select(vec![
            " ", "  ", "\t", "\n", "\r\n", "\r", "\u{a0}", "\u{3000}", "'", "'s", "'LL", "'re", "'ve", "'d",
            "a", "Hello", "WORLD", "é", "東京", "🚀", "1", "12345", "½", "٣", "!", "...", "?!", "—",
            "\u{301}", "<", ">", "<start_of_turn>", "<end_of_turn>", "<s>", "</s>", "<|endoftext|>",
            "<|im_start|>", "<think>", "\u{200d}", "🏳️‍🌈", "x\u{301}", "Ω", "ǅ", "▁",
        ]).prop_map(str::to_owned),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    proptest::collection::vec(atoms, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn hand_written_splitters_match_fancy_regex(text in text_strategy()) {
        prop_assert_eq!(split("gpt-2", &text), oracle_split(GPT2_PATTERN, &text));
        prop_assert_eq!(split("llama3", &text), oracle_split(LLAMA3_PATTERN, &text));
        prop_assert_eq!(split("qwen2", &text), oracle_split(QWEN2_PATTERN, &text));
    }

    #[test]
    fn any_text_encodes_and_round_trips(text in text_strategy()) {
        for name in ["llama-spm", "gpt-2", "deepseek-r1-qwen", "deepseek-llm", "deepseek-coder", "starcoder"] {
            let tok = vocab(name);
            for parse_special in [false, true] {
                let ids = tok.encode(&text, false, parse_special).unwrap();
                prop_assert!(ids.iter().all(|&i| (i as usize) < tok.n_vocab()));
                // Stream decoding equals one-shot decoding.
                let mut d = StreamDecoder::new(tok);
                let mut streamed = String::new();
                for &id in &ids {
                    streamed.push_str(&d.push(id));
                }
                streamed.push_str(&d.finish());
                prop_assert_eq!(&streamed, &tok.decode(&ids), "{}", name);
                // Lossless where no control token was parsed out of the text (decode renders
                // them empty) and no byte was dropped for want of a token.
                let has_control = ids.iter().any(|&i| tok.is_control(i));
                if !has_control && lossless(name, &text) {
                    prop_assert_eq!(&tok.decode(&ids), &text, "{} parse_special={}", name, parse_special);
                }
            }
        }
    }

    #[test]
    fn gemma_any_text(text in text_strategy()) {
        let tok = gemma();
        let ids = tok.encode(&text, false, false).unwrap();
        let mut d = StreamDecoder::new(tok);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(id));
        }
        streamed.push_str(&d.finish());
        prop_assert_eq!(&streamed, &tok.decode(&ids));
        // SPM writes spaces as U+2581, so a literal U+2581 comes back as a space.
        prop_assert_eq!(streamed, text.replace('▁', " "));
    }
}

/// Whether a fixture vocabulary can spell every byte of `text`. SPM vocabularies with byte
/// tokens and byte-level BPE vocabularies can; the exceptions are BPE vocabularies missing some
/// single-byte tokens.
fn lossless(name: &str, text: &str) -> bool {
    let tok = vocab(name);
    if tok.model_name() == "llama" {
        // SPM writes spaces as U+2581, so a literal U+2581 comes back as a space.
        return !text.contains('▁');
    }
    // Every byte must have a single-byte token in byte-level spelling.
    text.bytes().all(|b| byte_has_token(tok, b))
}

fn byte_has_token(tok: &Tokenizer, b: u8) -> bool {
    // GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the others map
    // to U+0100.. in order.
    let printable = |x: u32| {
        (0x21..=0x7E).contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x)
    };
    let c = if printable(u32::from(b)) {
        char::from(b)
    } else {
        let n = (0..u32::from(b)).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).unwrap()
    };
    tok.token_id(&c.to_string()).is_some()
}

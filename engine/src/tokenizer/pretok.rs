//! BPE pre-tokenizers: split raw text into the words that BPE merges run inside.
//!
//! A pre-tokenizer is a sequence of split steps, applied one after the other the way llama.cpp
//! applies its `regex_exprs`: each step runs over every chunk the previous step produced,
//! separately (so `$` and look-ahead see the end of the chunk), and keeps both the matches and
//! the unmatched text between them as chunks.
//!
//! The two patterns that need look-ahead (`\s+(?!\S)`), GPT-2's and Llama 3's, are written by
//! hand below ([`gpt2_match`], [`llama3_match`]); they run on every token of English prose, and
//! a hand-written matcher is several times faster than a backtracking regex engine. They are
//! tested against `fancy-regex` running the original patterns (tests/tokenizer.rs). The other
//! steps have no look-around and use the `regex` crate.

use regex::Regex;

use super::unicode::{flags, LETTER, NUMBER, SPACE};
use super::TokenizerError;

/// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pattern (llama.cpp's case-insensitive-contractions form).
pub const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's pattern: Llama 3's with single digits.
pub const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's letters step (the model's tokenizer.json pattern, via llama.cpp; non-ASCII
/// characters written as `\x{..}` escapes so no editor or normalizer can alter them).
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";
/// DeepSeek LLM's punctuation step.
const DEEPSEEK_LLM_PUNCT: &str =
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+";
/// CJK runs shared by the DeepSeek pre-tokenizers.
const DEEPSEEK_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

/// The `tokenizer.ggml.pre` names this module knows, grouped as llama.cpp groups them.
pub const KNOWN_PRE: &[&str] = &[
    "default",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "a.x-4.0",
    "mellum",
    "exaone4",
    "mpt",
    "olmo",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "megrez",
    "stablelm2",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
];

/// One split step.
#[derive(Debug)]
enum Step {
    /// [`GPT2_PATTERN`], hand-written.
    Gpt2,
    /// [`LLAMA3_PATTERN`] (`max_digits` 3) or [`QWEN2_PATTERN`] (`max_digits` 1), hand-written.
    Llama3 { max_digits: usize },
    /// A look-around-free pattern run by the `regex` crate.
    Regex(Regex),
}

/// A BPE pre-tokenizer: the split steps for one `tokenizer.ggml.pre` value, and the vocabulary
/// flags llama.cpp ties to it.
#[derive(Debug)]
pub struct PreTokenizer {
    name: String,
    steps: Vec<Step>,
    /// Whole words that are tokens skip the merges (llama.cpp's `ignore_merges`).
    pub(crate) ignore_merges: bool,
    /// Default of `add_bos` before `tokenizer.ggml.add_bos_token` overrides it.
    pub(crate) default_add_bos: bool,
    /// llama.cpp's `clean_spaces` flag (used only by [`super::Tokenizer::detokenize`]).
    pub(crate) clean_spaces: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value; an unknown name is an error that
    /// lists the known ones.
    pub fn new(pre: &str) -> Result<PreTokenizer, TokenizerError> {
        let re = |p: &str| -> Step {
            Step::Regex(Regex::new(p).expect("built-in pre-tokenizer pattern compiles"))
        };
        let mut ignore_merges = false;
        let mut default_add_bos = false;
        let mut clean_spaces = true;
        let steps = match pre {
            "default" => vec![
                re(r"[\p{P}\$\+<=>\^~\|]+"),
                Step::Gpt2,
                re(r"\p{N}+"),
                re(r"[0-9][0-9][0-9]"),
            ],
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "a.x-4.0"
            | "mellum" | "exaone4" | "mpt" | "olmo" => vec![Step::Gpt2],
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => {
                ignore_merges = true;
                default_add_bos = true;
                vec![Step::Llama3 { max_digits: 3 }]
            }
            "dbrx" | "smaug-bpe" => vec![Step::Llama3 { max_digits: 3 }],
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "megrez" | "stablelm2" => {
                clean_spaces = matches!(pre, "megrez" | "stablelm2");
                vec![Step::Llama3 { max_digits: 1 }]
            }
            "deepseek-llm" => {
                clean_spaces = false;
                vec![
                    re(r"[\r\n]"),
                    re(DEEPSEEK_LLM_LETTERS),
                    re(DEEPSEEK_LLM_PUNCT),
                    re(r"\s+$"),
                    re(DEEPSEEK_CJK),
                    re(r"\p{N}+"),
                ]
            }
            "deepseek-coder" => {
                clean_spaces = false;
                vec![
                    re(r"[\r\n]"),
                    re(r"\s?\p{L}+"),
                    re(r"\s?\p{P}+"),
                    re(DEEPSEEK_CJK),
                    re(r"\p{N}"),
                ]
            }
            "falcon" => vec![
                re(r"[\p{P}\$\+<=>\^~\|`]+"),
                Step::Gpt2,
                re(r"[0-9][0-9][0-9]"),
            ],
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => {
                clean_spaces = !matches!(pre, "command-r" | "smollm");
                vec![re(r"\p{N}"), Step::Gpt2]
            }
            other => {
                return Err(TokenizerError::UnknownPreTokenizer {
                    name: other.to_owned(),
                    known: KNOWN_PRE.join(", "),
                })
            }
        };
        Ok(PreTokenizer {
            name: pre.to_owned(),
            steps,
            ignore_merges,
            default_add_bos,
            clean_spaces,
        })
    }

    /// The `tokenizer.ggml.pre` name this was built from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Splits `text` into words (in order; their concatenation is `text`).
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut chunks = vec![text];
        let mut next = Vec::new();
        let mut cps = Vec::new();
        for step in &self.steps {
            next.clear();
            for &chunk in &chunks {
                match step {
                    Step::Gpt2 => split_custom(chunk, &mut cps, &mut next, gpt2_match),
                    Step::Llama3 { max_digits } => {
                        let d = *max_digits;
                        split_custom(chunk, &mut cps, &mut next, |c, i| llama3_match(c, i, d))
                    }
                    Step::Regex(re) => split_regex(chunk, re, &mut next),
                }
            }
            std::mem::swap(&mut chunks, &mut next);
        }
        chunks.retain(|c| !c.is_empty());
        chunks
    }
}

/// A code point with its byte offset in the chunk and its category flags.
#[derive(Clone, Copy)]
pub(crate) struct Cp {
    off: usize,
    c: char,
    f: u8,
}

/// Emulates `find_iter` with a hand-written matcher: matches and the gaps between them become
/// chunks.
fn split_custom<'t>(
    chunk: &'t str,
    cps: &mut Vec<Cp>,
    out: &mut Vec<&'t str>,
    matcher: impl Fn(&[Cp], usize) -> Option<usize>,
) {
    cps.clear();
    cps.extend(chunk.char_indices().map(|(off, c)| Cp {
        off,
        c,
        f: flags(c),
    }));
    let n = cps.len();
    let off = |i: usize| if i < n { cps[i].off } else { chunk.len() };
    let mut gap_start: Option<usize> = None;
    let mut i = 0;
    while i < n {
        match matcher(cps, i) {
            Some(len) => {
                if let Some(g) = gap_start.take() {
                    out.push(&chunk[off(g)..off(i)]);
                }
                out.push(&chunk[off(i)..off(i + len)]);
                i += len;
            }
            None => {
                gap_start.get_or_insert(i);
                i += 1;
            }
        }
    }
    if let Some(g) = gap_start {
        out.push(&chunk[off(g)..]);
    }
}

/// Splits with a regex: matches and the gaps between them become chunks.
fn split_regex<'t>(chunk: &'t str, re: &Regex, out: &mut Vec<&'t str>) {
    let mut last = 0;
    for m in re.find_iter(chunk) {
        if m.start() > last {
            out.push(&chunk[last..m.start()]);
        }
        if m.end() > m.start() {
            out.push(m.as_str());
        }
        last = m.end();
    }
    if last < chunk.len() {
        out.push(&chunk[last..]);
    }
}

#[inline]
fn is(cp: Option<&Cp>, flag: u8) -> bool {
    cp.is_some_and(|c| c.f & flag != 0)
}

/// Length of the run of code points from `i` whose flags intersect `flag`.
#[inline]
fn run(cps: &[Cp], i: usize, flag: u8) -> usize {
    cps[i..].iter().take_while(|c| c.f & flag != 0).count()
}

/// Length of the run of code points from `i` that are neither space, letter nor number.
#[inline]
fn run_other(cps: &[Cp], i: usize) -> usize {
    cps[i..]
        .iter()
        .take_while(|c| c.f & (SPACE | LETTER | NUMBER) == 0)
        .count()
}

/// `\s+(?!\S)` at `i`: the whitespace run, less its last character when a non-space follows.
#[inline]
fn space_not_before_nonspace(cps: &[Cp], i: usize) -> Option<usize> {
    let k = run(cps, i, SPACE);
    if k == 0 {
        None
    } else if i + k == cps.len() {
        Some(k)
    } else if k > 1 {
        Some(k - 1)
    } else {
        None
    }
}

/// The match of [`GPT2_PATTERN`] starting exactly at `i`, as a length in code points.
pub(crate) fn gpt2_match(cps: &[Cp], i: usize) -> Option<usize> {
    let c = cps[i].c;
    let at = |j: usize| cps.get(j).map(|cp| cp.c);
    // 's 't 're 've 'm 'll 'd
    if c == '\'' {
        match (at(i + 1), at(i + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return Some(2),
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                return Some(3)
            }
            _ => {}
        }
    }
    let j = if c == ' ' { i + 1 } else { i };
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    if is(cps.get(j), LETTER) {
        return Some(j - i + run(cps, j, LETTER));
    }
    if is(cps.get(j), NUMBER) {
        return Some(j - i + run(cps, j, NUMBER));
    }
    if j < cps.len() {
        let k = run_other(cps, j);
        if k > 0 {
            return Some(j - i + k);
        }
    }
    // `\s+(?!\S)`
    space_not_before_nonspace(cps, i)
}

/// The match of [`LLAMA3_PATTERN`] (or, with `max_digits` 1, [`QWEN2_PATTERN`]) starting
/// exactly at `i`, as a length in code points. Every position matches something.
pub(crate) fn llama3_match(cps: &[Cp], i: usize, max_digits: usize) -> Option<usize> {
    let c = cps[i].c;
    let f = cps[i].f;
    let at = |j: usize| cps.get(j).map(|cp| cp.c.to_ascii_lowercase());
    // (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])
    if c == '\'' {
        match (at(i + 1), at(i + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return Some(2),
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                return Some(3)
            }
            _ => {}
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if f & LETTER != 0 {
        return Some(run(cps, i, LETTER));
    }
    if c != '\r' && c != '\n' && f & NUMBER == 0 && is(cps.get(i + 1), LETTER) {
        return Some(1 + run(cps, i + 1, LETTER));
    }
    // \p{N}{1,max}
    if f & NUMBER != 0 {
        return Some(run(cps, i, NUMBER).min(max_digits));
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let j = if c == ' ' { i + 1 } else { i };
    if j < cps.len() {
        let k = run_other(cps, j);
        if k > 0 {
            let end = j + k;
            let crlf = cps[end..]
                .iter()
                .take_while(|cp| cp.c == '\r' || cp.c == '\n')
                .count();
            return Some(end + crlf - i);
        }
    }
    if f & SPACE != 0 {
        let k = run(cps, i, SPACE);
        // `\s*[\r\n]+`: up to and including the last CR/LF of the whitespace run.
        if let Some(last) = cps[i..i + k]
            .iter()
            .rposition(|cp| cp.c == '\r' || cp.c == '\n')
        {
            return Some(last + 1);
        }
        // `\s+(?!\S)`, then `\s+`.
        return Some(space_not_before_nonspace(cps, i).unwrap_or(k));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pre: &str, text: &str) -> Vec<String> {
        PreTokenizer::new(pre)
            .unwrap()
            .split(text)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            split("gpt-2", "Hello world's  end\t\tx 123"),
            ["Hello", " world", "'s", " ", " end", "\t", "\t", "x", " 123"]
        );
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            split("llama3", "Hello WORLD'S 12345 \n\n  x!!\n"),
            ["Hello", " WORLD", "'S", " ", "123", "45", " \n\n", " ", " x", "!!\n"]
        );
        assert_eq!(split("qwen2", "12"), ["1", "2"]);
    }

    #[test]
    fn unknown_pre_is_an_error_listing_known_ones() {
        let err = PreTokenizer::new("no-such-pre").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no-such-pre") && msg.contains("qwen2"),
            "{msg}"
        );
    }
}

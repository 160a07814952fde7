//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's `llm_tokenizer_bpe` does it.
//!
//! Algorithm: the pre-tokenizer splits the text into words; each word's bytes start as one
//! symbol per byte; the adjacent pair with the lowest merge rank (leftmost on ties) is merged
//! until no adjacent pair has a rank; each final symbol becomes its token, or, if the symbol is
//! not a token, the tokens of its bytes' single-character spellings (which only exist for
//! printable ASCII; other bytes are dropped, as in llama.cpp).
//!
//! Optimizations, none of which changes the result:
//! - Vocabulary and merges are converted once from the byte-level alphabet (`Ġ` for space...)
//!   to raw bytes and interned, so symbols are integer ids and a merge lookup is one hash probe
//!   on a pair of ids, not a string concatenation.
//! - Short words (the common case) find the best pair by a linear scan instead of a heap; the
//!   valid entries of llama.cpp's queue are exactly the current adjacent ranked pairs, so the
//!   minimum is the same. Long words use a heap with lazy deletion.
//! - Within one `encode` call, words seen before reuse their tokens.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::index::{FastMap, StrIndex};
use super::pretok::PreTokenizer;
use super::unicode::{byte_to_char, decode_byte_level_into};

/// No id.
const NONE: u32 = u32::MAX;
/// Words up to this many bytes use the quadratic scan; longer ones the heap.
const SCAN_MAX: usize = 48;
/// Words up to this many bytes are cached within one encode call.
const CACHE_MAX: usize = 64;

/// Hasher for `u64` keys that are already well mixed by construction (pairs of small ids):
/// one multiply.
#[derive(Default, Clone, Copy)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PairMap = HashMap<u64, (u32, u32), BuildHasherDefault<U64Hasher>>;

/// The BPE model: interned raw-byte strings, merge ranks over their ids, and the pre-tokenizer.
#[derive(Debug)]
pub(crate) struct Bpe {
    pub(crate) pre: PreTokenizer,
    /// Raw-byte strings: every token whose text is in the byte-level alphabet, and every merge
    /// side and result.
    strs: StrIndex,
    /// String id -> token id (or `NONE` for merge strings that are not tokens).
    str_token: Vec<u32>,
    /// String id of each single byte (or `NONE`).
    byte_str: [u32; 256],
    /// `(left id << 32) | right id` -> (rank, merged string id).
    pairs: PairMap,
    /// Tokens a byte falls back to when its symbol is not a token (llama.cpp looks up each
    /// byte of the byte-level spelling as a one-byte string).
    byte_fallback: Vec<Vec<u32>>,
}

impl std::fmt::Debug for U64Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("U64Hasher")
    }
}

#[inline]
fn pair_key(l: u32, r: u32) -> u64 {
    (u64::from(l) << 32) | u64::from(r)
}

impl Bpe {
    /// Builds the model. `token_text(id)` is a token's text as stored in the GGUF (byte-level
    /// alphabet for normal tokens); `find_token` looks a text up exactly; `merges` are
    /// `"left right"` strings in rank order.
    pub(crate) fn new<'a>(
        pre: PreTokenizer,
        n_tokens: usize,
        token_text: impl Fn(u32) -> &'a [u8],
        find_token: impl Fn(&[u8]) -> Option<u32>,
        merges: &[Vec<u8>],
    ) -> Bpe {
        let mut strs = StrIndex::with_capacity(n_tokens + merges.len(), n_tokens * 8);
        let mut str_token = Vec::with_capacity(n_tokens + merges.len());
        let mut raw = Vec::new();
        for id in 0..n_tokens as u32 {
            let Ok(text) = std::str::from_utf8(token_text(id)) else {
                continue;
            };
            raw.clear();
            if decode_byte_level_into(text, &mut raw) {
                // The byte-level spelling is a bijection, so distinct texts give distinct bytes.
                if strs.insert(&raw).1 {
                    str_token.push(id);
                }
                debug_assert_eq!(str_token.len(), strs.len());
            }
        }
        let mut pairs = PairMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut intern = |s: &[u8], strs: &mut StrIndex| -> u32 {
            let (sid, new) = strs.insert(s);
            if new {
                str_token.push(NONE);
            }
            sid
        };
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let Some(pos) = m.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (Ok(ltext), Ok(rtext)) = (
                std::str::from_utf8(&m[..pos]),
                std::str::from_utf8(&m[pos + 1..]),
            ) else {
                continue;
            };
            l.clear();
            r.clear();
            if !decode_byte_level_into(ltext, &mut l) || !decode_byte_level_into(rtext, &mut r) {
                continue;
            }
            let ls = intern(&l, &mut strs);
            let rs = intern(&r, &mut strs);
            let llen = l.len();
            l.extend_from_slice(&r);
            let ms = intern(&l, &mut strs);
            l.truncate(llen);
            pairs.entry(pair_key(ls, rs)).or_insert((rank as u32, ms));
        }
        let mut byte_str = [NONE; 256];
        for (b, slot) in byte_str.iter_mut().enumerate() {
            if let Some(s) = strs.find(&[b as u8]) {
                *slot = s;
            }
        }
        let byte_fallback = (0..256usize)
            .map(|b| {
                let mut buf = [0u8; 4];
                let spelled = byte_to_char()[b].encode_utf8(&mut buf);
                spelled
                    .as_bytes()
                    .iter()
                    .filter_map(|&u| find_token(&[u]))
                    .collect()
            })
            .collect();
        Bpe {
            pre,
            strs,
            str_token,
            byte_str,
            pairs,
            byte_fallback,
        }
    }

    #[inline]
    fn rank(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        if l == NONE || r == NONE {
            return None;
        }
        self.pairs.get(&pair_key(l, r)).copied()
    }

    /// Appends the tokens of one raw-text fragment (no special tokens inside) to `out`.
    /// `cache` maps words already encoded in this call to their tokens' range in `out`.
    pub(crate) fn encode_fragment<'t>(
        &self,
        text: &'t str,
        cache: &mut FastMap<&'t str, (u32, u32)>,
        out: &mut Vec<u32>,
    ) {
        let words = self.pre.split(text);
        let mut syms: Vec<Sym> = Vec::new();
        for word in words {
            if word.len() <= CACHE_MAX {
                if let Some(&(s, e)) = cache.get(word) {
                    out.extend_from_within(s as usize..e as usize);
                    continue;
                }
            }
            let start = out.len();
            self.encode_word(word.as_bytes(), &mut syms, out);
            if word.len() <= CACHE_MAX {
                cache.insert(word, (start as u32, out.len() as u32));
            }
        }
    }

    /// Tokens of one pre-tokenized word.
    fn encode_word(&self, word: &[u8], syms: &mut Vec<Sym>, out: &mut Vec<u32>) {
        if self.pre.ignore_merges {
            if let Some(sid) = self.strs.find(word) {
                let tok = self.str_token[sid as usize];
                if tok != NONE {
                    out.push(tok);
                    return;
                }
            }
        }
        syms.clear();
        syms.extend(word.iter().enumerate().map(|(i, &b)| Sym {
            sid: self.byte_str[b as usize],
            start: i as u32,
            len: 1,
        }));
        if word.len() <= SCAN_MAX {
            self.merge_scan(syms);
        } else {
            self.merge_heap(syms);
        }
        for s in syms.iter().filter(|s| s.len > 0) {
            let tok = if s.sid == NONE {
                NONE
            } else {
                self.str_token[s.sid as usize]
            };
            if tok != NONE {
                out.push(tok);
            } else {
                let bytes = &word[s.start as usize..(s.start + s.len) as usize];
                for &b in bytes {
                    out.extend_from_slice(&self.byte_fallback[b as usize]);
                }
            }
        }
    }

    /// Repeatedly merges the adjacent pair with the lowest (rank, position), scanning.
    fn merge_scan(&self, syms: &mut Vec<Sym>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some((rank, merged)) = self.rank(syms[i].sid, syms[i + 1].sid) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i].sid = merged;
            syms[i].len += syms[i + 1].len;
            syms.remove(i + 1);
        }
    }

    /// The same merges with a priority queue keyed by (rank, left position) and lazy deletion.
    fn merge_heap(&self, syms: &mut [Sym]) {
        let n = syms.len();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<u32> = (1..=n as u32)
            .map(|i| if i as usize == n { NONE } else { i })
            .collect();
        // (rank, left) min-first; the payload is the (left sid, right sid) it was made from.
        let mut heap: BinaryHeap<Reverse<(u64, u32, u32, u32)>> = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: u32, r: u32| {
            if l == NONE || r == NONE {
                return;
            }
            let (ls, rs) = (syms[l as usize].sid, syms[r as usize].sid);
            if let Some((rank, _)) = self.rank(ls, rs) {
                heap.push(Reverse((pair_key(rank, l), r, ls, rs)));
            }
        };
        for i in 1..n as u32 {
            push(&mut heap, syms, i - 1, i);
        }
        while let Some(Reverse((key, r, ls, rs))) = heap.pop() {
            let l = key as u32;
            let (lsym, rsym) = (syms[l as usize], syms[r as usize]);
            // Stale: one side was merged away or has grown since this entry was made.
            if lsym.len == 0
                || rsym.len == 0
                || lsym.sid != ls
                || rsym.sid != rs
                || next[l as usize] != r
            {
                continue;
            }
            let (_, merged) = self.rank(ls, rs).expect("ranked when queued");
            syms[l as usize].sid = merged;
            syms[l as usize].len += rsym.len;
            syms[r as usize].len = 0;
            let rn = next[r as usize];
            next[l as usize] = rn;
            if rn != NONE {
                prev[rn as usize] = l;
            }
            push(&mut heap, syms, prev[l as usize], l);
            push(&mut heap, syms, l, rn);
        }
    }
}

/// A BPE symbol: interned string id and the byte span of the word it covers.
#[derive(Clone, Copy, Debug)]
struct Sym {
    sid: u32,
    start: u32,
    len: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: bytes `a`..`e` and merges over them.
    fn toy() -> Bpe {
        let tokens: Vec<&[u8]> = vec![
            b"a", b"b", b"c", b"d", b"e", b"ab", b"bc", b"abc", b"cd", b"de", b"cde",
        ];
        let merges: Vec<Vec<u8>> = ["b c", "a b", "c d", "ab c", "d e", "c de"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let find = |s: &[u8]| tokens.iter().position(|t| *t == s).map(|p| p as u32);
        Bpe::new(
            PreTokenizer::new("gpt-2").unwrap(),
            tokens.len(),
            |id| tokens[id as usize],
            find,
            &merges,
        )
    }

    #[test]
    fn scan_and_heap_agree() {
        let bpe = toy();
        // Deterministic pseudo-random words over a..e, long enough for both paths.
        let mut x = 0x1234_5678u32;
        for len in 1..120 {
            let word: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b'a' + (x % 5) as u8
                })
                .collect();
            let mk = || -> Vec<Sym> {
                word.iter()
                    .enumerate()
                    .map(|(i, &b)| Sym {
                        sid: bpe.byte_str[b as usize],
                        start: i as u32,
                        len: 1,
                    })
                    .collect()
            };
            let mut a = mk();
            bpe.merge_scan(&mut a);
            let mut b = mk();
            bpe.merge_heap(&mut b);
            let a: Vec<(u32, u32)> = a.iter().map(|s| (s.sid, s.len)).collect();
            let b: Vec<(u32, u32)> = b
                .iter()
                .filter(|s| s.len > 0)
                .map(|s| (s.sid, s.len))
                .collect();
            assert_eq!(a, b, "word {:?}", String::from_utf8_lossy(&word));
        }
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let bpe = toy();
        let mut out = Vec::new();
        // "abc": "b c" (rank 0) beats "a b" (rank 1): a + bc; "a bc" has no merge.
        bpe.encode_fragment("abc", &mut FastMap::default(), &mut out);
        assert_eq!(out, [0, 6]);
        out.clear();
        // "cde": "c d" (2) before "d e" (4): cd + e; no "cd e" merge.
        bpe.encode_fragment("cde", &mut FastMap::default(), &mut out);
        assert_eq!(out, [8, 4]);
    }
}

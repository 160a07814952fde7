//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`), as llama.cpp's `llm_tokenizer_spm`
//! does it.
//!
//! Algorithm: the (already `▁`-escaped) text starts as one symbol per UTF-8 character; every
//! adjacent pair whose concatenation is a token goes into a priority queue keyed by that
//! token's score (highest first, leftmost on ties); popping a pair that is still current
//! merges it and queues the new symbol's pairs with its neighbours. Each final symbol becomes
//! its token, or its bytes' `<0xNN>` tokens when it is not one (byte fallback).
//!
//! Optimizations, none of which changes the result:
//! - The text is cut before every `▁` whose preceding character `c` never occurs as `c▁` inside
//!   a token (for Gemma 3 that is every `▁` not preceded by `>`). No token can span such a cut,
//!   so no pair across it is ever queued, and merges on either side never interact: each piece
//!   can be merged alone, and pieces repeated within one call reuse their tokens.
//! - Symbols are byte spans of the text and adjacent symbols are contiguous, so a pair's text is
//!   a slice (no allocation), looked up in the interned vocabulary; the queue entry packs score
//!   and position into one `u64` key.

use std::collections::BinaryHeap;

use super::index::{FastMap, StrIndex};
use super::TokenizerError;

/// A symbol: a byte span of the text in a doubly linked list.
#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// The token this symbol is, once it is the result of a merge.
    tok: u32,
}

const NONE: u32 = u32::MAX;

/// A queued pair: `key` = score (order-preserving bits) << 32 | !left, so the max-heap pops the
/// highest score and then the leftmost pair.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    key: u64,
    right: u32,
    size: u32,
    tok: u32,
}

/// Maps an `f32` to a `u32` with the same order (no NaNs in vocab scores; any would sort last).
#[inline]
fn order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The characters `c` such that some token contains `c▁` (sorted): a `▁` after one of them
/// may be inside a token, so the text is not cut there.
pub(crate) fn joiners(vocab: &StrIndex) -> Vec<char> {
    const ESC: &str = "▁";
    let mut out = Vec::new();
    for id in 0..vocab.len() as u32 {
        let Ok(t) = std::str::from_utf8(vocab.get(id)) else {
            // Not UTF-8: it can never be a symbol (symbols are spans of valid text).
            continue;
        };
        for (i, _) in t.match_indices(ESC).filter(|&(i, _)| i > 0) {
            if let Some(c) = t[..i].chars().next_back() {
                out.push(c);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Appends the tokens of `text` (spaces already escaped to `▁`) to `out`, cutting it at `▁`s
/// that no token can span (see [`joiners`]).
///
/// `cache` maps pieces already encoded in this call to their tokens' range in `out`.
pub(crate) fn encode(
    text: &str,
    joiners: &[char],
    cache: &mut FastMap<String, (u32, u32)>,
    vocab: &StrIndex,
    scores: &[f32],
    byte_tokens: &[Option<u32>; 256],
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    // Cut points first, then each piece (cached by its text).
    let mut cuts = vec![0];
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        if c == '▁' && i > 0 && prev.is_some_and(|p| joiners.binary_search(&p).is_err()) {
            cuts.push(i);
        }
        prev = Some(c);
    }
    cuts.push(text.len());
    let mut scratch = Scratch::default();
    for w in cuts.windows(2) {
        let piece = &text[w[0]..w[1]];
        if let Some(&(a, b)) = cache.get(piece) {
            out.extend_from_within(a as usize..b as usize);
            continue;
        }
        let a = out.len();
        encode_piece(piece, vocab, scores, byte_tokens, &mut scratch, out)?;
        if piece.len() <= 64 {
            cache.insert(piece.to_owned(), (a as u32, out.len() as u32));
        }
    }
    Ok(())
}

/// Buffers reused across pieces.
#[derive(Default)]
struct Scratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

/// The SPM merge loop over one piece.
fn encode_piece(
    text: &str,
    vocab: &StrIndex,
    scores: &[f32],
    byte_tokens: &[Option<u32>; 256],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let bytes = text.as_bytes();
    let Scratch { syms, heap } = scratch;
    syms.clear();
    heap.clear();
    for (i, (off, c)) in text.char_indices().enumerate() {
        let i = i as u32;
        syms.push(Sym {
            start: off as u32,
            len: c.len_utf8() as u32,
            prev: i.wrapping_sub(1),
            next: i + 1,
            tok: NONE,
        });
    }
    let Some(last) = syms.last_mut() else {
        return Ok(());
    };
    last.next = NONE;

    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: u32, r: u32| {
        if l == NONE || r == NONE {
            return;
        }
        let (ls, rs) = (syms[l as usize], syms[r as usize]);
        let span = &bytes[ls.start as usize..(rs.start + rs.len) as usize];
        if let Some(id) = vocab.find(span) {
            heap.push(Bigram {
                key: (u64::from(order_bits(scores[id as usize])) << 32) | u64::from(!l),
                right: r,
                size: span.len() as u32,
                tok: id,
            });
        }
    };
    for i in 1..syms.len() as u32 {
        try_add(heap, syms, i - 1, i);
    }
    while let Some(bg) = heap.pop() {
        let l = !(bg.key as u32);
        let r = bg.right;
        let (ls, rs) = (syms[l as usize], syms[r as usize]);
        if ls.len == 0 || rs.len == 0 || ls.len + rs.len != bg.size {
            continue;
        }
        syms[l as usize].len += rs.len;
        syms[l as usize].tok = bg.tok;
        syms[r as usize].len = 0;
        syms[l as usize].next = rs.next;
        if rs.next != NONE {
            syms[rs.next as usize].prev = l;
        }
        try_add(heap, syms, ls.prev, l);
        try_add(heap, syms, l, rs.next);
    }

    let mut i = 0u32;
    while i != NONE {
        let s = syms[i as usize];
        let span = &bytes[s.start as usize..(s.start + s.len) as usize];
        let found = if s.tok != NONE {
            Some(s.tok)
        } else {
            vocab.find(span)
        };
        match found {
            Some(id) => out.push(id),
            None => {
                for &b in span {
                    out.push(
                        byte_tokens[b as usize].ok_or(TokenizerError::NoByteToken { byte: b })?,
                    );
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cutting at `▁`s that no token spans gives the same ids as merging the whole text.
    #[test]
    fn cuts_do_not_change_the_result() {
        let tokens = [
            "a", "b", "c", "▁", "ab", "▁a", "▁b", "▁c", "a▁", "a▁b", "▁ab", "bc", "▁bc", "cc",
            "▁▁", "ca", "▁ca", "b▁c",
        ];
        let mut vocab = StrIndex::with_capacity(tokens.len(), 64);
        for t in tokens {
            vocab.insert(t.as_bytes());
        }
        let scores: Vec<f32> = (0..tokens.len())
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        let joiners = joiners(&vocab);
        assert_eq!(joiners, ['a', 'b', '▁']);
        let bytes = [None; 256];
        let mut x = 0x2545_F491u32;
        for len in 0..200 {
            let text: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    ["a", "b", "c", "▁"][(x % 4) as usize]
                })
                .collect();
            let mut cut = Vec::new();
            let mut cache = FastMap::default();
            encode(
                &text, &joiners, &mut cache, &vocab, &scores, &bytes, &mut cut,
            )
            .unwrap();
            let mut whole = Vec::new();
            encode_piece(
                &text,
                &vocab,
                &scores,
                &bytes,
                &mut Scratch::default(),
                &mut whole,
            )
            .unwrap();
            assert_eq!(cut, whole, "{text:?}");
        }
    }
}

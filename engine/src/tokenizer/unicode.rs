//! Unicode facts the pre-tokenizers need: general-category flags per code point and GPT-2's
//! byte-level alphabet.
//!
//! The category table is built once, on first use, from `regex-syntax`'s Unicode data (the
//! same tables the `regex` crate matches `\p{L}` with), so the hand-written splitters and the
//! regex-based ones agree on what a letter is.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// Code point is a letter (`\p{L}`).
pub(crate) const LETTER: u8 = 1;
/// Code point is a number (`\p{N}`).
pub(crate) const NUMBER: u8 = 2;
/// Code point is white space (`\s`, Unicode `White_Space`).
pub(crate) const SPACE: u8 = 4;

/// One flags byte per code point (0x110000 entries, about 1.1 MB), built on first use.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![0u8; 0x11_0000];
        for (pattern, flag) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            for (lo, hi) in class_ranges(pattern) {
                for cp in lo..=hi {
                    t[cp as usize] |= flag;
                }
            }
        }
        t
    })
}

/// The code-point ranges of a one-class regex such as `\p{L}`.
fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .expect("built-in Unicode class pattern parses");
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => unreachable!("pattern {pattern:?} is not a Unicode class: {other:?}"),
    }
}

/// The category flags ([`LETTER`], [`NUMBER`], [`SPACE`]) of `c`.
#[inline]
pub(crate) fn flags(c: char) -> u8 {
    table()[c as usize]
}

/// Forces the category table to be built (so the first tokenization is not slower).
pub(crate) fn warm_up() {
    let _ = table();
}

/// GPT-2's byte-level alphabet: byte `b` is written as the character `BYTE_TO_CHAR[b]`.
///
/// Printable Latin-1 bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68
/// bytes are mapped, in order, to U+0100, U+0101, ... so that every byte has a visible character.
pub(crate) fn byte_to_char() -> &'static [char; 256] {
    static MAP: OnceLock<[char; 256]> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = ['\0'; 256];
        let mut next = 256u32;
        for b in 0..=255u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let cp = if printable {
                b
            } else {
                let cp = next;
                next += 1;
                cp
            };
            map[b as usize] = char::from_u32(cp).expect("byte-level alphabet is valid chars");
        }
        map
    })
}

/// Decodes a string written in GPT-2's byte-level alphabet back to bytes; `None` if some
/// character is outside the alphabet.
#[cfg(test)]
pub(crate) fn decode_byte_level(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    decode_byte_level_into(text, &mut out).then_some(out)
}

/// Appends the bytes a byte-level-alphabet string stands for to `out`; false (with `out` in an
/// unspecified state past its old length) if some character is outside the alphabet.
pub(crate) fn decode_byte_level_into(text: &str, out: &mut Vec<u8>) -> bool {
    static INVERSE: OnceLock<[i16; 324]> = OnceLock::new();
    let inverse = INVERSE.get_or_init(|| {
        let mut inv = [-1i16; 324];
        for (b, &c) in byte_to_char().iter().enumerate() {
            inv[c as usize] = b as i16;
        }
        inv
    });
    for c in text.chars() {
        match inverse.get(c as usize) {
            Some(&b) if b >= 0 => out.push(b as u8),
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        assert_eq!(flags('a'), LETTER);
        assert_eq!(flags('é'), LETTER);
        assert_eq!(flags('東'), LETTER);
        assert_eq!(flags('7'), NUMBER);
        assert_eq!(flags('½'), NUMBER);
        assert_eq!(flags(' '), SPACE);
        assert_eq!(flags('\u{3000}'), SPACE);
        assert_eq!(flags('\u{85}'), SPACE);
        assert_eq!(flags('!'), 0);
        assert_eq!(flags('\u{301}'), 0); // combining mark: neither L nor N
    }

    #[test]
    fn byte_level_alphabet_round_trips() {
        assert_eq!(byte_to_char()[b' ' as usize], 'Ġ');
        assert_eq!(byte_to_char()[b'\n' as usize], 'Ċ');
        assert_eq!(byte_to_char()[b'a' as usize], 'a');
        for b in 0..=255u8 {
            let c = byte_to_char()[b as usize];
            assert_eq!(decode_byte_level(&c.to_string()), Some(vec![b]));
        }
        assert_eq!(decode_byte_level("東"), None);
    }
}

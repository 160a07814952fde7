//! Per-token attributes: llama.cpp's `llama_token_attr`, a set of flags of which a token can
//! have several (a control token the loader also finds unused, a special token Phi-3's name
//! fix-up makes strip the whitespace after it...).

use std::ops::BitOr;

use super::TokenType;

/// A set of llama.cpp token attributes, with llama.cpp's bit values (`LLAMA_TOKEN_ATTR_*`).
///
/// Only the attributes llama.cpp's loader sets are named: it never sets `NORMALIZED` or
/// `SINGLE_WORD` from GGUF metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenAttrs(u16);

impl TokenAttrs {
    /// No attribute (`tokenizer.ggml.token_type` 0 or a value llama.cpp does not know).
    pub(crate) const UNDEFINED: TokenAttrs = TokenAttrs(0);
    /// The unknown token.
    pub(crate) const UNKNOWN: TokenAttrs = TokenAttrs(1 << 0);
    /// An unused slot (also set on control tokens whose text contains `unused`).
    pub(crate) const UNUSED: TokenAttrs = TokenAttrs(1 << 1);
    /// An ordinary piece.
    pub(crate) const NORMAL: TokenAttrs = TokenAttrs(1 << 2);
    /// A control token: matched in text only with `parse_special`, rendered only on request.
    pub(crate) const CONTROL: TokenAttrs = TokenAttrs(1 << 3);
    /// A user-defined token: always matched in text, always rendered.
    pub(crate) const USER_DEFINED: TokenAttrs = TokenAttrs(1 << 4);
    /// A byte-fallback token `<0xNN>`.
    pub(crate) const BYTE: TokenAttrs = TokenAttrs(1 << 5);
    /// Whitespace before an occurrence of the token is dropped.
    pub(crate) const LSTRIP: TokenAttrs = TokenAttrs(1 << 7);
    /// Whitespace after an occurrence of the token is dropped.
    pub(crate) const RSTRIP: TokenAttrs = TokenAttrs(1 << 8);

    /// Whether any attribute of `other` is set.
    pub(crate) fn intersects(self, other: TokenAttrs) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets (`on`) or clears every attribute of `other`.
    pub(crate) fn set(&mut self, other: TokenAttrs, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// Control.
    pub(crate) fn is_control(self) -> bool {
        self.intersects(TokenAttrs::CONTROL)
    }

    /// Normal.
    pub(crate) fn is_normal(self) -> bool {
        self.intersects(TokenAttrs::NORMAL)
    }

    /// A byte-fallback token.
    pub(crate) fn is_byte(self) -> bool {
        self.intersects(TokenAttrs::BYTE)
    }

    /// Whitespace before the token is dropped.
    pub(crate) fn lstrip(self) -> bool {
        self.intersects(TokenAttrs::LSTRIP)
    }

    /// Whitespace after the token is dropped.
    pub(crate) fn rstrip(self) -> bool {
        self.intersects(TokenAttrs::RSTRIP)
    }

    /// Control or unknown (llama.cpp's `attr_special`): matched in text only with
    /// `parse_special`, and its piece rendered only when asked for special pieces.
    pub(crate) fn is_control_or_unknown(self) -> bool {
        self.intersects(TokenAttrs::CONTROL | TokenAttrs::UNKNOWN)
    }

    /// Control, user-defined or unknown: a token of llama.cpp's special-token cache (matched
    /// by the special-token partition; its piece is its text as is).
    pub(crate) fn is_special(self) -> bool {
        self.intersects(TokenAttrs::CONTROL | TokenAttrs::USER_DEFINED | TokenAttrs::UNKNOWN)
    }

    /// The one [`TokenType`] that describes the token best: unused, control, user-defined,
    /// unknown, byte, normal, in that order of precedence.
    pub(crate) fn main_type(self) -> TokenType {
        [
            (TokenAttrs::UNUSED, TokenType::Unused),
            (TokenAttrs::CONTROL, TokenType::Control),
            (TokenAttrs::USER_DEFINED, TokenType::UserDefined),
            (TokenAttrs::UNKNOWN, TokenType::Unknown),
            (TokenAttrs::BYTE, TokenType::Byte),
            (TokenAttrs::NORMAL, TokenType::Normal),
        ]
        .into_iter()
        .find(|&(a, _)| self.intersects(a))
        .map_or(TokenType::Undefined, |(_, t)| t)
    }
}

impl BitOr for TokenAttrs {
    type Output = TokenAttrs;

    fn bitor(self, rhs: TokenAttrs) -> TokenAttrs {
        TokenAttrs(self.0 | rhs.0)
    }
}

impl From<TokenType> for TokenAttrs {
    /// The attribute llama.cpp's loader gives a `tokenizer.ggml.token_type` value: exactly the
    /// one of the same name.
    fn from(t: TokenType) -> TokenAttrs {
        match t {
            TokenType::Undefined => TokenAttrs::UNDEFINED,
            TokenType::Normal => TokenAttrs::NORMAL,
            TokenType::Unknown => TokenAttrs::UNKNOWN,
            TokenType::Control => TokenAttrs::CONTROL,
            TokenType::UserDefined => TokenAttrs::USER_DEFINED,
            TokenType::Unused => TokenAttrs::UNUSED,
            TokenType::Byte => TokenAttrs::BYTE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_their_attribute_and_back() {
        for t in [
            TokenType::Undefined,
            TokenType::Normal,
            TokenType::Unknown,
            TokenType::Control,
            TokenType::UserDefined,
            TokenType::Unused,
            TokenType::Byte,
        ] {
            assert_eq!(TokenAttrs::from(t).main_type(), t);
        }
        // llama.cpp's numbering of `tokenizer.ggml.token_type`.
        assert_eq!(
            TokenAttrs::from(TokenType::from_i32(3)),
            TokenAttrs::CONTROL
        );
        assert_eq!(
            TokenAttrs::from(TokenType::from_i32(7)),
            TokenAttrs::UNDEFINED
        );
    }

    #[test]
    fn flags_combine_and_clear() {
        let mut a = TokenAttrs::USER_DEFINED;
        a.set(TokenAttrs::CONTROL, true);
        assert!(a.is_control() && a.is_special() && a.is_control_or_unknown());
        // Unused wins over control, control over user-defined.
        assert_eq!(a.main_type(), TokenType::Control);
        a.set(TokenAttrs::UNUSED, true);
        assert_eq!(a.main_type(), TokenType::Unused);
        a.set(TokenAttrs::RSTRIP, true);
        assert!(a.rstrip() && !a.lstrip());
        a.set(TokenAttrs::RSTRIP | TokenAttrs::CONTROL, false);
        assert!(!a.rstrip() && !a.is_control());
        assert!(!TokenAttrs::NORMAL.is_special() && TokenAttrs::NORMAL.is_normal());
        assert!(TokenAttrs::BYTE.is_byte());
    }
}

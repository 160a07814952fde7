//! Tokenizers built from GGUF `tokenizer.ggml.*` metadata (SPM and BPE), agreeing with
//! llama.cpp token for token.
//!
//! - [`Tokenizer`]: built once per model ([`Tokenizer::from_gguf`], or [`Tokenizer::from_vocab`]
//!   for a [`Vocab`] assembled in memory); [`Tokenizer::encode`] text to ids,
//!   [`Tokenizer::decode`] ids to text, special-token ids and end-of-generation checks.
//! - [`StreamDecoder`]: turns ids into text one at a time, emitting only whole UTF-8 characters.
//! - [`PreTokenizer`]: the word splitters BPE vocabularies name in `tokenizer.ggml.pre`.
//!
//! Encoding follows llama.cpp's `llama_vocab::impl::tokenize`:
//! 1. **Special-token partition.** The text is cut at occurrences of special tokens' texts,
//!    longest tokens first (ties: lower id first), each token claiming its leftmost
//!    non-overlapping occurrences in what is still plain text. User-defined tokens are always
//!    matched; control (and unknown) tokens only when `parse_special` is true.
//! 2. **Plain-text fragments** go to the model: SPM prefixes a space when `add_space_prefix` is
//!    set and the fragment starts the text or follows a special token, replaces every space with
//!    `▁` and merges by score; BPE pre-tokenizes into words and merges by rank.
//! 3. With `add_special`, BOS is prepended if `add_bos` and EOS appended if `add_eos`.
//!
//! Token attributes follow llama.cpp's loader, including its fix-ups by token text: EOT/EOM
//! and FIM tokens are detected by name when the metadata does not give them and marked
//! control; control tokens whose text contains `unused` are marked unused; the
//! end-of-generation set is EOS, EOT, EOM, the FIM pad/repo/separator tokens and the
//! well-known end-of-turn texts. Where llama.cpp's result depends on hash-map iteration order
//! (several candidate EOT texts in one vocabulary), the lowest id wins here.
//!
//! The `lstrip`/`rstrip` attributes llama.cpp sets by model name (Phi-3's special tokens eat
//! the whitespace after them; jina/modern-bert mask tokens the whitespace before) are applied
//! the same way. Not implemented: the WPM/UGM/RWKV tokenizer families.

mod attrs;
mod bpe;
mod index;
mod load;
mod pretok;
mod spm;
mod unicode;

use std::collections::BTreeMap;

use aho_corasick::AhoCorasick;
use strata_gguf::Gguf;

use attrs::TokenAttrs;
use index::{FastMap, StrIndex};
pub use pretok::{PreTokenizer, GPT2_PATTERN, KNOWN_PRE, LLAMA3_PATTERN, QWEN2_PATTERN};

/// Errors building a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A metadata key could not be read (wrong type, out of range...).
    #[error("tokenizer metadata `{key}`: {source}")]
    Gguf {
        /// The key.
        key: &'static str,
        /// The GGUF error.
        source: strata_gguf::Error,
    },
    /// A required metadata key is absent.
    #[error("tokenizer metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer family this module does not implement.
    #[error("unsupported tokenizer model `{model}` (supported: `llama` (SPM), `gpt2` (BPE))")]
    UnsupportedModel {
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this module does not know.
    #[error("unknown BPE pre-tokenizer `{name}` (tokenizer.ggml.pre); known: {known}")]
    UnknownPreTokenizer {
        /// The value of `tokenizer.ggml.pre`.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A per-token array is shorter than the token list.
    #[error("tokenizer metadata `{key}` has {len} entries, fewer than the {n_tokens} tokens")]
    ArrayTooShort {
        /// The key.
        key: &'static str,
        /// Its length.
        len: usize,
        /// Number of tokens.
        n_tokens: usize,
    },
    /// Two tokens have the same text.
    #[error("duplicate token in vocabulary: {text:?} has ids {first} and {second}")]
    DuplicateToken {
        /// The text (lossy UTF-8).
        text: String,
        /// The first id.
        first: u32,
        /// The second id.
        second: u32,
    },
    /// `add_bos`/`add_eos` is set but the token id is not.
    #[error("{flag} is true, but {key} is not set")]
    AddSpecialWithoutId {
        /// The flag key.
        flag: &'static str,
        /// The id key.
        key: &'static str,
    },
    /// A special-token id in the metadata is not a token of the vocabulary.
    #[error("{key} = {id}, but the vocabulary has {n_tokens} tokens (ids 0..{n_tokens})")]
    SpecialIdOutOfRange {
        /// The metadata key.
        key: &'static str,
        /// Its value.
        id: u32,
        /// The vocabulary's size.
        n_tokens: usize,
    },
    /// The vocabulary has no tokens.
    #[error("the vocabulary has no tokens")]
    EmptyVocab,
    /// SPM byte fallback needed a byte token (`<0xNN>`) the vocabulary lacks.
    #[error("SPM byte fallback: no token for byte 0x{byte:02X} (neither `<0x{byte:02X}>` nor the byte itself)")]
    NoByteToken {
        /// The byte.
        byte: u8,
    },
}

/// Token types as stored in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0: undefined.
    Undefined,
    /// 1: an ordinary piece.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token (BOS, `<start_of_turn>`...), matched in text only with `parse_special`.
    Control,
    /// 4: a user-defined token, always matched in text before the model runs.
    UserDefined,
    /// 5: an unused slot.
    Unused,
    /// 6: a byte-fallback token `<0xNN>`.
    Byte,
}

impl TokenType {
    /// From the stored integer (unknown values are [`TokenType::Undefined`], as in llama.cpp).
    pub fn from_i32(v: i32) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// A vocabulary as GGUF stores it: the raw `tokenizer.ggml.*` values, before any defaults.
///
/// [`Vocab::from_gguf`] reads it from a file; tests can also fill it in by hand and call
/// [`Tokenizer::from_vocab`].
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `"llama"` (SPM) or `"gpt2"` (BPE).
    pub model: String,
    /// `tokenizer.ggml.pre` (BPE pre-tokenizer name); `None` means llama.cpp's `default`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, as bytes.
    pub tokens: Vec<Vec<u8>>,
    /// `tokenizer.ggml.scores` (SPM merge priorities); absent means all 0.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`; absent means all normal.
    pub token_types: Option<Vec<TokenType>>,
    /// `tokenizer.ggml.merges` (`"left right"`, in rank order), BPE only.
    pub merges: Vec<Vec<u8>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.seperator_token_id` (sic).
    pub sep: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.name` (llama.cpp keys a few per-token attributes on it, e.g. Phi-3's).
    pub name: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
}

/// Metadata keys.
mod keys {
    pub const MODEL: &str = "tokenizer.ggml.model";
    pub const PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const MERGES: &str = "tokenizer.ggml.merges";
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const EOT: &str = "tokenizer.ggml.eot_token_id";
    pub const EOM: &str = "tokenizer.ggml.eom_token_id";
    pub const UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const SEP: &str = "tokenizer.ggml.seperator_token_id";
    pub const PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    pub const NAME: &str = "general.name";
    pub const ARCH: &str = "general.architecture";
}

impl Vocab {
    /// Reads the `tokenizer.*` metadata of a GGUF file.
    pub fn from_gguf(g: &Gguf) -> Result<Vocab, TokenizerError> {
        let md = g.metadata();
        let wrap = |key: &'static str| move |source| TokenizerError::Gguf { key, source };
        let opt_str = |key: &'static str| -> Result<Option<String>, TokenizerError> {
            match md.get(key) {
                None => Ok(None),
                Some(_) => md
                    .get_str(key)
                    .map(|s| Some(s.to_owned()))
                    .map_err(wrap(key)),
            }
        };
        let opt_u32 = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match md.get(key) {
                None => Ok(None),
                Some(_) => md.get_u32(key).map(Some).map_err(wrap(key)),
            }
        };
        let opt_bool = |key: &'static str| -> Result<Option<bool>, TokenizerError> {
            match md.get(key) {
                None => Ok(None),
                Some(_) => md.get_bool(key).map(Some).map_err(wrap(key)),
            }
        };
        let model = opt_str(keys::MODEL)?.ok_or(TokenizerError::MissingKey { key: keys::MODEL })?;
        if md.get(keys::TOKENS).is_none() {
            return Err(TokenizerError::MissingKey { key: keys::TOKENS });
        }
        let tokens: Vec<Vec<u8>> = md
            .get_array(keys::TOKENS)
            .map_err(wrap(keys::TOKENS))?
            .iter_bytes()
            .map(<[u8]>::to_vec)
            .collect();
        let scores = match md.get(keys::SCORES) {
            None => None,
            Some(_) => {
                let a = md.get_array(keys::SCORES).map_err(wrap(keys::SCORES))?;
                // llama.cpp accepts float32 or int32 scores.
                Some(match a.to_f32_vec() {
                    Ok(v) => v,
                    Err(e) => match a.to_i32_vec() {
                        Ok(v) => v.into_iter().map(|x| x as f32).collect(),
                        Err(_) => {
                            return Err(TokenizerError::Gguf {
                                key: keys::SCORES,
                                source: e,
                            })
                        }
                    },
                })
            }
        };
        let token_types = match md.get(keys::TOKEN_TYPE) {
            None => None,
            Some(_) => Some(
                md.get_array(keys::TOKEN_TYPE)
                    .and_then(|a| a.to_i32_vec())
                    .map_err(wrap(keys::TOKEN_TYPE))?
                    .into_iter()
                    .map(TokenType::from_i32)
                    .collect(),
            ),
        };
        let merges = match md.get(keys::MERGES) {
            None => Vec::new(),
            Some(_) => md
                .get_array(keys::MERGES)
                .map_err(wrap(keys::MERGES))?
                .iter_bytes()
                .map(<[u8]>::to_vec)
                .collect(),
        };
        Ok(Vocab {
            model,
            pre: opt_str(keys::PRE)?,
            tokens,
            scores,
            token_types,
            merges,
            bos: opt_u32(keys::BOS)?,
            eos: opt_u32(keys::EOS)?,
            eot: opt_u32(keys::EOT)?,
            eom: opt_u32(keys::EOM)?,
            unk: opt_u32(keys::UNK)?,
            sep: opt_u32(keys::SEP)?,
            pad: opt_u32(keys::PAD)?,
            add_bos: opt_bool(keys::ADD_BOS)?,
            add_eos: opt_bool(keys::ADD_EOS)?,
            add_space_prefix: opt_bool(keys::ADD_PREFIX)?,
            chat_template: opt_str(keys::CHAT_TEMPLATE)?,
            name: opt_str(keys::NAME)?,
            architecture: opt_str(keys::ARCH)?,
        })
    }
}

/// The merge algorithm.
#[derive(Debug)]
enum Model {
    Spm,
    Bpe(Box<bpe::Bpe>),
}

/// A piece of the input after the special-token partition.
#[derive(Clone, Copy, Debug)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// A tokenizer for one vocabulary. Cheap to share (`&Tokenizer` is all encoding needs).
#[derive(Debug)]
pub struct Tokenizer {
    model: Model,
    model_name: String,
    /// Token texts by id, with exact lookup.
    texts: StrIndex,
    scores: Vec<f32>,
    attrs: Vec<TokenAttrs>,
    /// Piece of each token as llama.cpp's `token_to_piece(special = true)` gives it.
    pieces: Vec<u8>,
    piece_offsets: Vec<u32>,
    /// Matchers for user-defined tokens only, and for all special tokens.
    user_matcher: Option<Matcher>,
    all_matcher: Option<Matcher>,
    byte_tokens: [Option<u32>; 256],
    /// SPM: characters after which a `▁` may be inside a token (see `spm::joiners`).
    spm_joiners: Vec<char>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    sep: Option<u32>,
    pad: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    chat_template: Option<String>,
    architecture: Option<String>,
}

/// A special-token automaton and the token id of each of its patterns.
type Matcher = (AhoCorasick, Vec<u32>);

impl Tokenizer {
    /// Builds the tokenizer of a GGUF model from its `tokenizer.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_vocab(Vocab::from_gguf(g)?)
    }

    /// Builds a tokenizer from vocabulary metadata, applying llama.cpp's defaults and fix-ups
    /// (each step is a function of the `load` module, in llama.cpp's order).
    pub fn from_vocab(mut v: Vocab) -> Result<Tokenizer, TokenizerError> {
        let is_spm = load::check_arrays(&v)?;
        let texts = load::token_table(&v.tokens)?;
        let n = texts.len();
        let scores = match v.scores.take() {
            Some(mut s) => {
                s.truncate(n);
                s
            }
            None => vec![0.0; n],
        };
        let mut attrs = load::initial_attrs(v.token_types.as_deref(), n);
        let (model, defaults) = load::choose_model(is_spm, v.pre.as_deref(), &texts, &v.merges)?;
        let mut ids = load::resolve_special_ids(&v, n, &defaults)?;
        let eog = load::fix_up_by_text(&texts, &mut attrs, &mut ids);
        let (pieces, piece_offsets) = load::build_pieces(&texts, &attrs, is_spm);
        let (spm_joiners, byte_tokens) = if is_spm {
            (spm::joiners(&texts), load::spm_byte_tokens(&texts))
        } else {
            (Vec::new(), [None; 256])
        };
        let special = load::special_tokens(&texts, &attrs);
        load::fix_up_by_name(&v, &texts, &mut attrs, &special);
        let (user_matcher, all_matcher) = load::matchers(&texts, &attrs, special);
        unicode::warm_up();

        Ok(Tokenizer {
            model,
            model_name: v.model,
            texts,
            scores,
            attrs,
            pieces,
            piece_offsets,
            user_matcher,
            all_matcher,
            byte_tokens,
            spm_joiners,
            bos: ids.bos,
            eos: ids.eos,
            eot: ids.eot,
            eom: ids.eom,
            unk: ids.unk,
            sep: ids.sep,
            pad: ids.pad,
            eog,
            add_bos: ids.add_bos,
            add_eos: ids.add_eos,
            add_space_prefix: ids.add_space_prefix,
            clean_spaces: defaults.clean_spaces,
            chat_template: v.chat_template,
            architecture: v.architecture,
        })
    }

    /// Splits `text` at special-token occurrences (llama.cpp's `tokenizer_st_partition`).
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let matcher = if parse_special {
            &self.all_matcher
        } else {
            &self.user_matcher
        };
        let Some((ac, ids)) = matcher else {
            return vec![Fragment::Text(text)];
        };
        // All occurrences of all special tokens, overlapping; then claim them token by token
        // (pattern order), each leftmost-first among what is still plain text.
        let mut cands: Vec<(u32, usize, usize)> = ac
            .find_overlapping_iter(text)
            .map(|m| (m.pattern().as_u32(), m.start(), m.end()))
            .collect();
        if cands.is_empty() {
            return vec![Fragment::Text(text)];
        }
        cands.sort_unstable();
        // start -> (end, token id, or DROPPED for whitespace a strip attribute removed).
        const DROPPED: u32 = u32::MAX;
        let bytes = text.as_bytes();
        let mut claimed: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        for (pat, start, end) in cands {
            let before_ok = claimed
                .range(..=start)
                .next_back()
                .is_none_or(|(_, &(e, _))| e <= start);
            let after_ok = claimed.range(start..end).next().is_none();
            if !(before_ok && after_ok) {
                continue;
            }
            let id = ids[pat as usize];
            claimed.insert(start, (end, id));
            let a = self.attrs[id as usize];
            if a.lstrip() {
                let lo = claimed
                    .range(..start)
                    .next_back()
                    .map_or(0, |(_, &(e, _))| e);
                let mut s = start;
                while s > lo && is_c_space(bytes[s - 1]) {
                    s -= 1;
                }
                if s < start {
                    claimed.insert(s, (start, DROPPED));
                }
            }
            if a.rstrip() {
                let hi = claimed.range(end..).next().map_or(text.len(), |(&s, _)| s);
                let mut e = end;
                while e < hi && is_c_space(bytes[e]) {
                    e += 1;
                }
                if e > end {
                    claimed.insert(end, (e, DROPPED));
                }
            }
        }
        let mut out = Vec::with_capacity(claimed.len() * 2 + 1);
        let mut pos = 0;
        for (start, (end, id)) in claimed {
            if start > pos {
                out.push(Fragment::Text(&text[pos..start]));
            }
            if id != DROPPED {
                out.push(Fragment::Token(id));
            }
            pos = end;
        }
        if pos < text.len() {
            out.push(Fragment::Text(&text[pos..]));
        }
        out
    }

    /// Encodes `text` to token ids.
    ///
    /// `add_special` adds BOS/EOS as the model's `add_bos_token`/`add_eos_token` say;
    /// `parse_special` lets control-token texts in `text` (e.g. `<start_of_turn>`) become those
    /// tokens (user-defined tokens are always matched). Errors only if SPM byte fallback needs a
    /// byte token the vocabulary lacks.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let frags = self.partition(text, parse_special);
        match &self.model {
            Model::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                let mut cache = FastMap::default();
                for f in frags {
                    match f {
                        Fragment::Text(s) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for (i, part) in s.split(' ').enumerate() {
                                if i > 0 {
                                    buf.push('▁');
                                }
                                buf.push_str(part);
                            }
                            spm::encode(
                                &buf,
                                &self.spm_joiners,
                                &mut cache,
                                &self.texts,
                                &self.scores,
                                &self.byte_tokens,
                                &mut out,
                            )?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                let mut cache = FastMap::default();
                for f in frags {
                    match f {
                        Fragment::Text(s) => bpe.encode_fragment(s, &mut cache, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        Ok(out)
    }

    /// The piece of `id` as llama.cpp's `token_to_piece(special = true)` renders it: raw bytes
    /// for normal tokens (`▁` → space for SPM, byte-level alphabet undone for BPE), the byte of
    /// a `<0xNN>` token, the text of control and user-defined tokens; empty for unused or
    /// undefined tokens and for ids out of range.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i + 1 >= self.piece_offsets.len() {
            return &[];
        }
        &self.pieces[self.piece_offsets[i] as usize..self.piece_offsets[i + 1] as usize]
    }

    /// The piece of `id` as text is decoded: like [`Tokenizer::token_bytes`], but empty for
    /// control and unknown tokens (llama.cpp's `special = false`) unless `special`.
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        match self.attrs.get(id as usize) {
            Some(&a) if special || !a.is_control_or_unknown() => self.token_bytes(id),
            _ => &[],
        }
    }

    /// The token's text exactly as the vocabulary stores it (`▁` and byte-level spellings
    /// included); empty for ids out of range.
    pub fn token_text(&self, id: u32) -> &[u8] {
        if (id as usize) < self.texts.len() {
            self.texts.get(id)
        } else {
            &[]
        }
    }

    /// The token's type (its main llama.cpp attribute, after the loader's fix-ups).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.attrs.get(id as usize).map(|a| a.main_type())
    }

    /// Whether `id` is a control token (rendered empty by [`Tokenizer::decode`]).
    pub fn is_control(&self, id: u32) -> bool {
        self.attrs.get(id as usize).is_some_and(|a| a.is_control())
    }

    /// Decodes ids to text as llama.cpp's `llama_detokenize(remove_special = false,
    /// unparse_special = false)` does, without its `clean_spaces` pass: the concatenated pieces,
    /// control tokens rendered empty, and (when the vocabulary adds a space prefix) one leading
    /// space removed from the first token. Invalid UTF-8 becomes U+FFFD.
    ///
    /// For text that round-trips, `decode(encode(s, false, false)) == s`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            self.append_piece(&mut bytes, id, i == 0, false);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// llama.cpp's `llama_detokenize` with its options: `remove_special` drops a leading BOS and
    /// trailing EOS that the model adds; `unparse_special` renders control tokens as their text;
    /// the vocabulary's `clean_spaces` clean-up (" ," → ",", " 's" → "'s"...) is applied where
    /// llama.cpp applies it.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        let mut ids = ids;
        let mut strip_first = self.add_space_prefix;
        if remove_special && self.add_bos && ids.first().is_some_and(|&f| Some(f) == self.bos) {
            strip_first = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().is_some_and(|&l| Some(l) == self.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut t = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            self.append_piece(&mut t, id, strip_first && i == 0, unparse_special);
        }
        if self.clean_spaces {
            t = clean_spaces(&t);
        }
        String::from_utf8_lossy(&t).into_owned()
    }

    /// Appends the piece of `id`, with llama.cpp's leading-space strip for the first token.
    fn append_piece(&self, out: &mut Vec<u8>, id: u32, first: bool, special: bool) {
        let mut p = self.piece(id, special);
        if first && self.add_space_prefix && p.first() == Some(&b' ') {
            p = &p[1..];
        }
        out.extend_from_slice(p);
    }

    /// The id of the token whose text is exactly `text` (e.g. `"<start_of_turn>"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.texts.find(text.as_bytes())
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (metadata, or detected by text as llama.cpp does).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// End-of-message token (`<|eom_id|>`).
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }

    /// Unknown token.
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    /// Separator token.
    pub fn sep(&self) -> Option<u32> {
        self.sep
    }

    /// Padding token.
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }

    /// Whether generating `id` ends generation (EOS, EOT, EOM and llama.cpp's other
    /// end-of-generation tokens).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether SPM encoding prefixes a space to text at the start and after special tokens.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// The chat template (`tokenizer.chat_template`), if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The model's architecture (`general.architecture`), if the file names one (chat
    /// formats are chosen by it when the file has no chat template).
    pub fn architecture(&self) -> Option<&str> {
        self.architecture.as_deref()
    }

    /// `tokenizer.ggml.model` (`"llama"` or `"gpt2"`).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The BPE pre-tokenizer name, or `None` for SPM.
    pub fn pre_name(&self) -> Option<&str> {
        match &self.model {
            Model::Spm => None,
            Model::Bpe(b) => Some(b.pre.name()),
        }
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Appends `text` with `▁` (U+2581) turned into spaces.
fn unescape_spaces(text: &[u8], out: &mut Vec<u8>) {
    const ESC: &[u8] = "▁".as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(ESC) {
            out.push(b' ');
            i += ESC.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// The byte of a `<0xNN>` token text (llama.cpp reads the two characters after `<0x`).
fn parse_byte_token(text: &[u8]) -> Option<u8> {
    let hex = text.get(3..5)?;
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// llama.cpp's `clean_spaces` detokenizer passes, in place over the buffer as llama.cpp runs
/// them (so a space consumed by one rule is seen as gone by the next position).
fn clean_spaces(t: &[u8]) -> Vec<u8> {
    let mut text = t.to_vec();
    // Pass 1: " ?", " !", " .", " ," lose the space.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    // Pass 2: " ' " becomes "'".
    let n = total;
    total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    // Pass 3: " 's", " 'm", " 're", " 've" lose the space.
    let n = total;
    total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if matches!(x1, b's' | b'm')
                || (i + 2 < n && text[i + 2] == b'e' && matches!(x1, b'r' | b'v'))
            {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
    text
}

/// Turns ids into text one at a time, emitting only whole UTF-8 characters: bytes of a
/// character split across tokens are held back until it is complete. Invalid bytes become
/// U+FFFD exactly where [`String::from_utf8_lossy`] would put them, so the concatenated output
/// of [`StreamDecoder::push`] and [`StreamDecoder::finish`] equals [`Tokenizer::decode`] of the
/// same ids ([`StreamDecoder::new`]) or their concatenated pieces ([`StreamDecoder::continuing`]).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
    first: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder for text that starts here (the first token gets [`Tokenizer::decode`]'s
    /// space-prefix strip).
    pub fn new(tok: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            pending: Vec::new(),
            first: true,
        }
    }

    /// A decoder for tokens that continue earlier text (e.g. generated after a prompt): every
    /// piece is emitted as is.
    pub fn continuing(tok: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            pending: Vec::new(),
            first: false,
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.tok
            .append_piece(&mut self.pending, id, self.first, false);
        self.first = false;
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    match e.error_len() {
                        // Incomplete character at the end: hold it back.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }

    /// Flushes what is held back (an incomplete character becomes U+FFFD). The decoder can go
    /// on afterwards as a [`StreamDecoder::continuing`] one.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.first = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_like_llama_cpp() {
        let c = |s: &str| String::from_utf8(clean_spaces(s.as_bytes())).unwrap();
        assert_eq!(c("Hello , world ! It 's ok ."), "Hello, world! It's ok.");
        assert_eq!(c("we 're here , they 've gone"), "we're here, they've gone");
        assert_eq!(c("rock ' n roll"), "rock'n roll");
        assert_eq!(c("don 't"), "don 't");
        assert_eq!(c(""), "");
        assert_eq!(c(" ,"), ",");
    }

    fn toy_spm(name: Option<&str>) -> Tokenizer {
        let tokens = [
            "<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "▁b", "<|user|>",
        ];
        let mut types = vec![TokenType::Normal; tokens.len()];
        types[0] = TokenType::Unknown;
        types[1] = TokenType::Control;
        types[2] = TokenType::Control;
        types[8] = TokenType::UserDefined;
        Tokenizer::from_vocab(Vocab {
            model: "llama".into(),
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            scores: Some((0..tokens.len()).map(|i| -(i as f32)).collect()),
            token_types: Some(types),
            name: name.map(str::to_owned),
            ..Vocab::default()
        })
        .unwrap()
    }

    #[test]
    fn phi3_special_tokens_strip_following_whitespace() {
        // "a " + <|user|> + "  b": Phi-3's rstrip drops the two spaces after <|user|>.
        let phi = toy_spm(Some("Phi-3 Mini 4k Instruct"));
        assert_eq!(
            phi.encode("a <|user|>  b", false, false).unwrap(),
            [6, 3, 8, 7]
        );
        let plain = toy_spm(None);
        assert_eq!(
            plain.encode("a <|user|>  b", false, false).unwrap(),
            [6, 3, 8, 3, 3, 7]
        );
        // Control tokens are only matched with parse_special; then BOS is not stripped.
        assert_eq!(plain.encode("<s>a", false, true).unwrap(), [1, 6]);
        assert_eq!(plain.encode("a", true, false).unwrap(), [1, 6]);
        // Without parse_special "<s>" is text, and this toy vocabulary cannot spell "<".
        assert!(matches!(
            plain.encode("<s>a", false, false),
            Err(TokenizerError::NoByteToken { byte: b'<' })
        ));
    }

    #[test]
    fn byte_token_and_space_helpers() {
        assert_eq!(parse_byte_token(b"<0x0A>"), Some(10));
        assert_eq!(parse_byte_token(b"<0xFF>"), Some(255));
        assert_eq!(parse_byte_token(b"abc"), None);
        let mut out = Vec::new();
        unescape_spaces("▁a▁▁b".as_bytes(), &mut out);
        assert_eq!(out, b" a  b");
    }
}

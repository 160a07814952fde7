//! The steps of [`Tokenizer::from_vocab`](super::Tokenizer::from_vocab), in the order llama.cpp's
//! `llama_vocab::impl::load` takes them: check the arrays, build the token table and the
//! attributes the token types give, choose the model and its defaults, resolve the special ids,
//! apply the fix-ups by token text, render the pieces, list the special tokens, apply the
//! fix-ups by model name, and build the special-token matchers.

use aho_corasick::{AhoCorasickBuilder, MatchKind};

use super::attrs::TokenAttrs;
use super::index::StrIndex;
use super::{
    bpe, keys, parse_byte_token, unescape_spaces, unicode, Matcher, Model, PreTokenizer, TokenType,
    TokenizerError, Vocab,
};

/// Names llama.cpp recognises as end-of-turn tokens when `eot_token_id` is absent.
const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Names llama.cpp treats as end-of-generation.
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const FIM_PRE_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_NAMES: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_NAMES: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_NAMES: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_NAMES: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_NAMES: &[&str] = &["<|file_sep|>"];
/// gpt-oss's message-structure tokens, which llama.cpp always renders (made user-defined).
const ALWAYS_RENDERED_NAMES: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Checks the vocabulary's shape: at least one token, a known `tokenizer.ggml.model`, and
/// per-token arrays at least as long as the token list. Returns whether the model is SPM.
pub(super) fn check_arrays(v: &Vocab) -> Result<bool, TokenizerError> {
    let n = v.tokens.len();
    if n == 0 {
        return Err(TokenizerError::EmptyVocab);
    }
    let is_spm = match v.model.as_str() {
        "llama" => true,
        "gpt2" => false,
        other => {
            return Err(TokenizerError::UnsupportedModel {
                model: other.to_owned(),
            })
        }
    };
    let lens = [
        (keys::SCORES, v.scores.as_ref().map(Vec::len)),
        (keys::TOKEN_TYPE, v.token_types.as_ref().map(Vec::len)),
    ];
    for (key, len) in lens {
        if let Some(len) = len.filter(|&len| len < n) {
            return Err(TokenizerError::ArrayTooShort {
                key,
                len,
                n_tokens: n,
            });
        }
    }
    Ok(is_spm)
}

/// The token texts by id with exact lookup; an empty text is renamed `[EMPTY_<id>]` as
/// llama.cpp does, and two tokens with one text are an error.
pub(super) fn token_table(tokens: &[Vec<u8>]) -> Result<StrIndex, TokenizerError> {
    let total: usize = tokens.iter().map(Vec::len).sum();
    let mut texts = StrIndex::with_capacity(tokens.len(), total + 16);
    for (i, t) in tokens.iter().enumerate() {
        let renamed;
        let t: &[u8] = if t.is_empty() {
            renamed = format!("[EMPTY_{i}]").into_bytes();
            &renamed
        } else {
            t
        };
        let (id, new) = texts.insert(t);
        if !new {
            return Err(TokenizerError::DuplicateToken {
                text: String::from_utf8_lossy(t).into_owned(),
                first: id,
                second: i as u32,
            });
        }
    }
    Ok(texts)
}

/// Each token's attributes as its `tokenizer.ggml.token_type` gives them (all normal when the
/// array is absent), before any fix-up.
pub(super) fn initial_attrs(types: Option<&[TokenType]>, n: usize) -> Vec<TokenAttrs> {
    match types {
        Some(t) => t[..n].iter().map(|&t| TokenAttrs::from(t)).collect(),
        None => vec![TokenAttrs::NORMAL; n],
    }
}

/// What llama.cpp assumes for a model type before the metadata overrides it.
pub(super) struct ModelDefaults {
    add_bos: bool,
    add_space_prefix: bool,
    /// Not overridable: follows the pre-tokenizer.
    pub(super) clean_spaces: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
}

/// The merge algorithm for `tokenizer.ggml.model` with its defaults: SPM adds BOS and a space
/// prefix, with BOS 1, EOS 2, UNK 0; BPE takes its flags from the pre-tokenizer (an unknown
/// `tokenizer.ggml.pre` is an error) and has BOS = EOS = 11.
pub(super) fn choose_model(
    is_spm: bool,
    pre: Option<&str>,
    texts: &StrIndex,
    merges: &[Vec<u8>],
) -> Result<(Model, ModelDefaults), TokenizerError> {
    if is_spm {
        let defaults = ModelDefaults {
            add_bos: true,
            add_space_prefix: true,
            clean_spaces: false,
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
        };
        return Ok((Model::Spm, defaults));
    }
    let pre = PreTokenizer::new(pre.unwrap_or("default"))?;
    let defaults = ModelDefaults {
        add_bos: pre.default_add_bos,
        add_space_prefix: false,
        clean_spaces: pre.clean_spaces,
        bos: Some(11),
        eos: Some(11),
        unk: None,
    };
    let bpe = bpe::Bpe::new(
        pre,
        texts.len(),
        |id| texts.get(id),
        |s| texts.find(s),
        merges,
    );
    Ok((Model::Bpe(Box::new(bpe)), defaults))
}

/// The special-token ids and the flags that use them, after the metadata's overrides (and,
/// for EOT and EOM, after [`fix_up_by_text`]).
#[derive(Debug)]
pub(super) struct SpecialIds {
    pub(super) bos: Option<u32>,
    pub(super) eos: Option<u32>,
    pub(super) eot: Option<u32>,
    pub(super) eom: Option<u32>,
    pub(super) unk: Option<u32>,
    pub(super) sep: Option<u32>,
    pub(super) pad: Option<u32>,
    pub(super) add_bos: bool,
    pub(super) add_eos: bool,
    pub(super) add_space_prefix: bool,
}

/// The special ids and flags: the metadata's values, else the model's defaults (a default
/// outside the vocabulary means none).
///
/// llama.cpp warns about a metadata id outside the vocabulary and uses its default; such a
/// file is broken (its author meant some other token), so it is refused here. So is
/// `add_bos`/`add_eos` without the token to add.
pub(super) fn resolve_special_ids(
    v: &Vocab,
    n: usize,
    d: &ModelDefaults,
) -> Result<SpecialIds, TokenizerError> {
    let metadata = [
        (keys::BOS, v.bos),
        (keys::EOS, v.eos),
        (keys::EOT, v.eot),
        (keys::EOM, v.eom),
        (keys::UNK, v.unk),
        (keys::SEP, v.sep),
        (keys::PAD, v.pad),
    ];
    for (key, id) in metadata {
        if let Some(id) = id.filter(|&id| id as usize >= n) {
            return Err(TokenizerError::SpecialIdOutOfRange {
                key,
                id,
                n_tokens: n,
            });
        }
    }
    // Every metadata id is in range now.
    let pick =
        |meta: Option<u32>, default: Option<u32>| meta.or(default.filter(|&id| (id as usize) < n));
    let ids = SpecialIds {
        bos: pick(v.bos, d.bos),
        eos: pick(v.eos, d.eos),
        eot: v.eot,
        eom: v.eom,
        unk: pick(v.unk, d.unk),
        sep: v.sep,
        pad: v.pad,
        add_bos: v.add_bos.unwrap_or(d.add_bos),
        add_eos: v.add_eos.unwrap_or(false),
        add_space_prefix: v.add_space_prefix.unwrap_or(d.add_space_prefix),
    };
    if ids.add_bos && ids.bos.is_none() {
        return Err(TokenizerError::AddSpecialWithoutId {
            flag: keys::ADD_BOS,
            key: keys::BOS,
        });
    }
    if ids.add_eos && ids.eos.is_none() {
        return Err(TokenizerError::AddSpecialWithoutId {
            flag: keys::ADD_EOS,
            key: keys::EOS,
        });
    }
    Ok(ids)
}

/// llama.cpp's fix-ups by token text, in its order. EOT and EOM, when the metadata does not
/// give them, are found by name; they and the FIM tokens (prefix, suffix, middle, pad, repo,
/// separator) become control; control tokens whose text contains `unused` become unused;
/// then [`end_of_generation`] fixes the end-of-generation set. Returns that set, ascending.
///
/// Where llama.cpp's pick depends on hash-map iteration order (several candidate names in one
/// vocabulary), the lowest id wins here.
pub(super) fn fix_up_by_text(
    texts: &StrIndex,
    attrs: &mut [TokenAttrs],
    ids: &mut SpecialIds,
) -> Vec<u32> {
    let find_named = |names: &[&str]| -> Option<u32> {
        names
            .iter()
            .filter_map(|name| texts.find(name.as_bytes()))
            .min()
    };
    // Tokens found by name are marked control (not those the metadata names).
    let mut by_name = Vec::new();
    if ids.eot.is_none() {
        ids.eot = find_named(EOT_NAMES);
        by_name.extend(ids.eot);
    }
    if ids.eom.is_none() {
        ids.eom = texts.find(b"<|eom_id|>");
        by_name.extend(ids.eom);
    }
    let fim_eog: Vec<u32> = [FIM_PAD_NAMES, FIM_REP_NAMES, FIM_SEP_NAMES]
        .iter()
        .filter_map(|names| find_named(names))
        .collect();
    by_name.extend(
        [FIM_PRE_NAMES, FIM_SUF_NAMES, FIM_MID_NAMES]
            .iter()
            .filter_map(|n| find_named(n)),
    );
    for &id in by_name.iter().chain(&fim_eog) {
        attrs[id as usize].set(TokenAttrs::CONTROL, true);
    }
    for (a, id) in attrs.iter_mut().zip(0..) {
        if a.is_control() && texts.get(id).windows(6).any(|w| w == b"unused") {
            a.set(TokenAttrs::UNUSED, true);
        }
    }
    end_of_generation(texts, attrs, ids, fim_eog)
}

/// The end-of-generation set as llama.cpp builds it: the FIM pad/repo/separator tokens
/// (`fim_eog`), the tokens with an end-of-generation name (made control), EOS, EOT and EOM.
/// Between, gpt-oss's structure tokens become user-defined (only). Then two exceptions:
/// `<|end|>` is not end-of-generation (and becomes user-defined only) next to `<|return|>`
/// and `<|call|>` (gpt-oss) or `<|calls|>` and `<|flush|>` (solar-open); `</s>` is not (and
/// becomes normal only) next to `<|tool_response>` (Gemma 4) or `<|plamo:eos|>` (PLaMo).
fn end_of_generation(
    texts: &StrIndex,
    attrs: &mut [TokenAttrs],
    ids: &SpecialIds,
    fim_eog: Vec<u32>,
) -> Vec<u32> {
    let mut eog = fim_eog;
    for name in EOG_NAMES {
        if let Some(id) = texts.find(name.as_bytes()) {
            eog.push(id);
            attrs[id as usize].set(TokenAttrs::CONTROL, true);
        }
    }
    for name in ALWAYS_RENDERED_NAMES {
        if let Some(id) = texts.find(name.as_bytes()) {
            attrs[id as usize] = TokenAttrs::USER_DEFINED;
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());
    eog.sort_unstable();
    eog.dedup();
    let has = |eog: &[u32], names: &[&str]| {
        eog.iter()
            .any(|&id| names.iter().any(|n| texts.get(id) == n.as_bytes()))
    };
    let mut demote = |eog: &mut Vec<u32>, text: &str, now: TokenAttrs| {
        if let Some(pos) = eog.iter().position(|&id| texts.get(id) == text.as_bytes()) {
            attrs[eog.remove(pos) as usize] = now;
        }
    };
    if has(&eog, &["<|call|>", "<|calls|>"])
        && (has(&eog, &["<|return|>"]) || has(&eog, &["<|flush|>"]))
    {
        demote(&mut eog, "<|end|>", TokenAttrs::USER_DEFINED);
    }
    if has(&eog, &["<|tool_response>", "<|plamo:eos|>"]) {
        demote(&mut eog, "</s>", TokenAttrs::NORMAL);
    }
    eog
}

/// Each token's piece as llama.cpp's `token_to_piece(special = true)` gives it, back to back,
/// with the offsets of each (`offsets[id]..offsets[id + 1]`): the text of unknown, control
/// and user-defined tokens; normal tokens with `▁` turned into spaces (SPM) or the byte-level
/// alphabet undone (BPE); the byte of a byte token; nothing for the others.
pub(super) fn build_pieces(
    texts: &StrIndex,
    attrs: &[TokenAttrs],
    is_spm: bool,
) -> (Vec<u8>, Vec<u32>) {
    let n = texts.len() as u32;
    let total: usize = (0..n).map(|id| texts.get(id).len()).sum();
    let mut pieces = Vec::with_capacity(total);
    let mut offsets = Vec::with_capacity(n as usize + 1);
    offsets.push(0u32);
    for id in 0..n {
        let text = texts.get(id);
        let a = attrs[id as usize];
        if a.is_special() {
            pieces.extend_from_slice(text);
        } else if a.is_normal() {
            if is_spm {
                unescape_spaces(text, &mut pieces);
            } else {
                let start = pieces.len();
                let ok = std::str::from_utf8(text)
                    .is_ok_and(|t| unicode::decode_byte_level_into(t, &mut pieces));
                if !ok {
                    // Outside the byte-level alphabet: keep the text as is.
                    pieces.truncate(start);
                    pieces.extend_from_slice(text);
                }
            }
        } else if a.is_byte() {
            pieces.extend(parse_byte_token(text));
        }
        offsets.push(pieces.len() as u32);
    }
    (pieces, offsets)
}

/// SPM byte fallback: the token of each byte, `<0xNN>` or else the byte itself as a token.
pub(super) fn spm_byte_tokens(texts: &StrIndex) -> [Option<u32>; 256] {
    let mut byte_tokens = [None; 256];
    for (b, slot) in byte_tokens.iter_mut().enumerate() {
        let name = format!("<0x{b:02X}>");
        *slot = texts
            .find(name.as_bytes())
            .or_else(|| texts.find(&[b as u8]));
    }
    byte_tokens
}

/// llama.cpp's special-token cache: the control, user-defined and unknown tokens (with UTF-8
/// texts), in the order the partition lets them claim text: longest first, then lower id.
pub(super) fn special_tokens(texts: &StrIndex, attrs: &[TokenAttrs]) -> Vec<u32> {
    let mut special: Vec<u32> = (0..texts.len() as u32)
        .filter(|&id| attrs[id as usize].is_special())
        .filter(|&id| std::str::from_utf8(texts.get(id)).is_ok())
        .collect();
    special.sort_by_key(|&id| (std::cmp::Reverse(texts.get(id).len()), id));
    special
}

/// The whitespace-strip attributes llama.cpp sets by pre-tokenizer, architecture or model
/// name, after its special-token cache is built (so they do not change which tokens are
/// special): jina-v2 and nomic-bert-moe/jina-bert-v3 `<mask>` and modern-bert `[MASK]` eat the
/// whitespace before them; Phi-3's special tokens and `</s>` eat the whitespace after them,
/// except `<unk>`, `<s>` and `<|endoftext|>`.
pub(super) fn fix_up_by_name(
    v: &Vocab,
    texts: &StrIndex,
    attrs: &mut [TokenAttrs],
    special: &[u32],
) {
    let name = v.name.as_deref().unwrap_or("").to_ascii_lowercase();
    let pre = v.pre.as_deref().unwrap_or("");
    let arch = v.architecture.as_deref().unwrap_or("");
    let find = |text: &str| texts.find(text.as_bytes());
    let mut set = |id: Option<u32>, attr: TokenAttrs, on: bool| {
        if let Some(id) = id {
            attrs[id as usize].set(attr, on);
        }
    };
    let jina_pre = ["jina-v2-de", "jina-v2-es", "jina-v2-code"];
    let mask_arch = ["nomic-bert-moe", "jina-bert-v3"];
    if jina_pre.iter().any(|p| pre.contains(p)) || mask_arch.iter().any(|a| arch.contains(a)) {
        set(find("<mask>"), TokenAttrs::LSTRIP, true);
    } else if name.contains("phi-3") || name.contains("phi3") {
        for &id in special {
            set(Some(id), TokenAttrs::RSTRIP, true);
        }
        set(find("</s>"), TokenAttrs::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(find(t), TokenAttrs::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(find("[MASK]"), TokenAttrs::LSTRIP, true);
    }
}

/// Aho-Corasick matchers over the special tokens, in claim order: one for the user-defined
/// tokens only (matched in all text) and one for all of them (with `parse_special`).
pub(super) fn matchers(
    texts: &StrIndex,
    attrs: &[TokenAttrs],
    special: Vec<u32>,
) -> (Option<Matcher>, Option<Matcher>) {
    let build = |ids: Vec<u32>| -> Option<Matcher> {
        if ids.is_empty() {
            return None;
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(ids.iter().map(|&id| texts.get(id)))
            .expect("special-token automaton builds");
        Some((ac, ids))
    };
    let user: Vec<u32> = special
        .iter()
        .copied()
        .filter(|&id| !attrs[id as usize].is_control_or_unknown())
        .collect();
    (build(user), build(special))
}

#[cfg(test)]
mod tests {
    use super::super::Tokenizer;
    use super::*;

    /// A GPT-2-style BPE vocabulary of the given token texts (all normal unless `control`).
    fn tokenizer(tokens: &[&str], control: &[&str]) -> Tokenizer {
        let types = tokens
            .iter()
            .map(|t| {
                if control.contains(t) {
                    TokenType::Control
                } else {
                    TokenType::Normal
                }
            })
            .collect();
        Tokenizer::from_vocab(Vocab {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            token_types: Some(types),
            bos: Some(0),
            eos: Some(0),
            ..Vocab::default()
        })
        .unwrap()
    }

    #[test]
    fn end_of_generation_names_become_control() {
        // </s> is an end-of-generation name even when it is neither EOS nor control.
        let t = tokenizer(&["a", "</s>", "<fim_prefix>", "<|fim_pad|>"], &[]);
        assert_eq!(t.eog_ids(), [0, 1, 3]);
        // FIM prefix/suffix/middle tokens become control, without ending generation.
        for id in 1..4 {
            assert_eq!(t.token_type(id), Some(TokenType::Control), "{id}");
        }
    }

    #[test]
    fn end_and_s_exceptions() {
        // gpt-oss: <|end|> is not end-of-generation next to <|return|> and <|call|>.
        let names = ["a", "<|end|>", "<|return|>", "<|call|>"];
        let t = tokenizer(&names, &names[1..]);
        assert_eq!(t.eog_ids(), [0, 2, 3]);
        assert_eq!(t.token_type(1), Some(TokenType::UserDefined));
        // Without <|call|> it is.
        let t = tokenizer(&names[..3], &names[1..3]);
        assert_eq!(t.eog_ids(), [0, 1, 2]);
        // solar-open: <|calls|> and <|flush|>.
        let names = ["a", "<|end|>", "<|calls|>", "<|flush|>"];
        assert_eq!(tokenizer(&names, &[]).eog_ids(), [0, 2, 3]);
        // Gemma 4: </s> is a normal token next to <|tool_response>.
        let t = tokenizer(&["a", "</s>", "<|tool_response>"], &[]);
        assert_eq!(t.eog_ids(), [0, 2]);
        assert_eq!(t.token_type(1), Some(TokenType::Normal));
    }
}

//! Chat templates: a conversation rendered to the prompt text the model was trained on, with the
//! Jinja template in the model file (`tokenizer.chat_template`, rendered by minijinja) or, when
//! the file has none, the known format of the model's family, chosen by `general.architecture`:
//!
//! - `gemma3`, `gemma2`, `gemma`: Gemma's turns ([`GEMMA_TEMPLATE`]);
//! - `qwen2`, `qwen3`, `qwen3moe`: ChatML (`<|im_start|>role\n…<|im_end|>\n`);
//! - `phi3`: Phi-3's role tags (`<|role|>\n…<|end|>\n`);
//! - `llama`: Llama 3's headers (`<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`) if
//!   the vocabulary has `<|start_header_id|>`, else Llama 2 / Mistral (`[INST] … [/INST]`).
//!
//! The ChatML, Phi-3, Llama 3 and Llama 2 formats are written exactly as llama.cpp's
//! `llm_chat_apply_template` writes its `chatml`, `phi3`, `llama3` and `llama2` templates. Any
//! other architecture without a template is refused, naming it.

use std::fmt::Write as _;

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::tokenizer::Tokenizer;

/// Gemma's turn format, used when a Gemma model file carries no `tokenizer.chat_template`
/// (every role but `assistant`, which becomes `model`, opens its own turn; contents are
/// trimmed).
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n\
{{ m.content | trim }}<end_of_turn>\n{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (passed to the template as is).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A family's chat format, for model files without a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChatFormat {
    /// [`GEMMA_TEMPLATE`].
    Gemma,
    /// llama.cpp's `chatml`.
    ChatMl,
    /// llama.cpp's `phi3`.
    Phi3,
    /// llama.cpp's `llama3`.
    Llama3,
    /// llama.cpp's `llama2` (Llama 2 chat, Mistral, Mixtral).
    Llama2,
}

impl ChatFormat {
    /// The format of `architecture`'s family; `tok` tells Llama 3 vocabularies from older
    /// `llama` ones. `None` for an architecture with no known format.
    fn for_architecture(architecture: &str, tok: &Tokenizer) -> Option<ChatFormat> {
        Some(match architecture {
            "gemma3" | "gemma2" | "gemma" => ChatFormat::Gemma,
            "qwen2" | "qwen3" | "qwen3moe" => ChatFormat::ChatMl,
            "phi3" => ChatFormat::Phi3,
            "llama" if tok.token_id("<|start_header_id|>").is_some() => ChatFormat::Llama3,
            "llama" => ChatFormat::Llama2,
            _ => return None,
        })
    }

    /// The prompt text of `messages` (`bos_text` is written only by the Gemma format, the
    /// others leave BOS to the tokenizer).
    fn render(
        self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_text: &str,
    ) -> String {
        let mut s = String::new();
        // `write!` to a String cannot fail.
        match self {
            ChatFormat::Gemma => {
                s.push_str(bos_text);
                for m in messages {
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        &m.role
                    };
                    let _ = write!(
                        s,
                        "<start_of_turn>{role}\n{}<end_of_turn>\n",
                        m.content.trim()
                    );
                }
                if add_generation_prompt {
                    s.push_str("<start_of_turn>model\n");
                }
            }
            ChatFormat::ChatMl => {
                for m in messages {
                    let _ = write!(s, "<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s.push_str("<|im_start|>assistant\n");
                }
            }
            ChatFormat::Phi3 => {
                for m in messages {
                    let _ = write!(s, "<|{}|>\n{}<|end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s.push_str("<|assistant|>\n");
                }
            }
            ChatFormat::Llama3 => {
                for m in messages {
                    let (role, content) = (&m.role, c_trim(&m.content));
                    let _ = write!(
                        s,
                        "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
                    );
                }
                if add_generation_prompt {
                    s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            ChatFormat::Llama2 => render_llama2(&mut s, messages),
        }
        s
    }
}

/// llama.cpp's `llama2` format: one `[INST] ` opening each user turn (a system message goes
/// first inside it, followed by a newline), ` [/INST]` after the user's text, `</s>` after the
/// assistant's. Nothing is added for the generation prompt: the model answers after `[/INST]`.
fn render_llama2(s: &mut String, messages: &[ChatMessage]) {
    s.push_str("[INST] ");
    let mut inside_turn = true;
    for m in messages {
        if !inside_turn {
            inside_turn = true;
            s.push_str("[INST] ");
        }
        s.push_str(&m.content);
        match m.role.as_str() {
            "system" => s.push('\n'),
            "user" => s.push_str(" [/INST]"),
            _ => {
                s.push_str("</s>");
                inside_turn = false;
            }
        }
    }
}

/// `s` without leading and trailing C `isspace` bytes (llama.cpp's `trim`).
fn c_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r'))
}

/// How a [`ChatTemplate`] renders.
enum Renderer {
    /// The model's own Jinja template (or one given to [`ChatTemplate::new`]).
    Jinja(Box<Environment<'static>>),
    /// A family's built-in format.
    Format(ChatFormat),
}

/// A parsed chat template plus the special-token texts it refers to.
pub struct ChatTemplate {
    renderer: Renderer,
    bos_text: String,
    eos_text: String,
}

impl ChatTemplate {
    /// The template of `tok`'s model, parsed once; for a model file without one, its family's
    /// format (see the module documentation). An architecture with no known format (or no
    /// `general.architecture`) is an error.
    pub fn for_tokenizer(tok: &Tokenizer) -> Result<ChatTemplate, EngineError> {
        if let Some(source) = tok.chat_template() {
            return ChatTemplate::new(source.to_string(), tok);
        }
        let format = match tok.architecture() {
            Some(arch) => ChatFormat::for_architecture(arch, tok).ok_or_else(|| {
                EngineError::ChatTemplate {
                    what: format!(
                        "missing: the model file has no tokenizer.chat_template, and there is \
                         no known chat format for architecture `{arch}`"
                    ),
                }
            })?,
            None => {
                return Err(EngineError::ChatTemplate {
                    what: "missing: the model file has neither tokenizer.chat_template nor \
                           general.architecture to choose a known chat format by"
                        .into(),
                })
            }
        };
        Ok(ChatTemplate::with_renderer(Renderer::Format(format), tok))
    }

    /// A template from Jinja `source`, with `tok`'s BOS/EOS texts as `bos_token`/`eos_token`.
    pub fn new(source: String, tok: &Tokenizer) -> Result<ChatTemplate, EngineError> {
        let mut env = Environment::new();
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| template_err("does not parse", e))?;
        Ok(ChatTemplate::with_renderer(
            Renderer::Jinja(Box::new(env)),
            tok,
        ))
    }

    fn with_renderer(renderer: Renderer, tok: &Tokenizer) -> ChatTemplate {
        let text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tok.token_text(id)).into_owned())
                .unwrap_or_default()
        };
        ChatTemplate {
            renderer,
            bos_text: text(tok.bos()),
            eos_text: text(tok.eos()),
        }
    }

    /// The prompt text of `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt` (the Llama 2 format has none: the model answers after the
    /// user's `[/INST]`).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let env = match &self.renderer {
            Renderer::Format(f) => {
                return Ok(f.render(messages, add_generation_prompt, &self.bos_text))
            }
            Renderer::Jinja(env) => env,
        };
        let template = env
            .get_template("chat")
            .map_err(|e| template_err("is missing", e))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_text,
                eos_token => &self.eos_text,
            })
            .map_err(|e| template_err("failed to render", e))
    }

    /// [`ChatTemplate::render`], tokenized with special tokens parsed; BOS is added unless
    /// the template wrote it.
    pub fn encode(
        &self,
        tok: &Tokenizer,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, EngineError> {
        let text = self.render(messages, add_generation_prompt)?;
        let starts_with_bos = !self.bos_text.is_empty() && text.starts_with(&self.bos_text);
        Ok(tok.encode(&text, !starts_with_bos, true)?)
    }
}

fn template_err(what: &str, e: JinjaError) -> EngineError {
    EngineError::ChatTemplate {
        what: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{TokenType, Vocab};

    /// A small SPM vocabulary of `architecture` with the given extra control tokens.
    fn vocab(architecture: Option<&str>, extra: &[&str]) -> Vocab {
        let mut tokens = vec!["<unk>", "<s>", "</s>", "▁", "a"];
        tokens.extend_from_slice(extra);
        let mut types = vec![TokenType::Normal; tokens.len()];
        types[0] = TokenType::Unknown;
        types[1] = TokenType::Control;
        types[2] = TokenType::Control;
        for t in &mut types[5..] {
            *t = TokenType::Control;
        }
        Vocab {
            model: "llama".into(),
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            token_types: Some(types),
            architecture: architecture.map(str::to_owned),
            ..Vocab::default()
        }
    }

    fn tokenizer(architecture: Option<&str>, extra: &[&str]) -> Tokenizer {
        Tokenizer::from_vocab(vocab(architecture, extra)).unwrap()
    }

    /// llama.cpp's test conversation (tests/test-chat-template.cpp).
    fn conversation() -> Vec<ChatMessage> {
        [
            ("system", "You are a helpful assistant"),
            ("user", "Hello"),
            ("assistant", "Hi there"),
            ("user", "Who are you"),
            ("assistant", "   I am an assistant   "),
            ("user", "Another question"),
        ]
        .into_iter()
        .map(|(r, c)| ChatMessage::new(r, c))
        .collect()
    }

    fn render(architecture: &str, extra: &[&str]) -> String {
        let tok = tokenizer(Some(architecture), extra);
        ChatTemplate::for_tokenizer(&tok)
            .unwrap()
            .render(&conversation(), true)
            .unwrap()
    }

    #[test]
    fn qwen_families_use_chatml() {
        // llama.cpp's expected output for its `chatml` template.
        let want = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n\
            <|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n\
            <|im_start|>user\nWho are you<|im_end|>\n\
            <|im_start|>assistant\n   I am an assistant   <|im_end|>\n\
            <|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n";
        for arch in ["qwen2", "qwen3", "qwen3moe"] {
            assert_eq!(
                render(arch, &["<|im_start|>", "<|im_end|>"]),
                want,
                "{arch}"
            );
        }
    }

    #[test]
    fn phi3_uses_its_role_tags() {
        let want = "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n\
            <|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n\
            <|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n\
            <|assistant|>\n";
        assert_eq!(
            render("phi3", &["<|user|>", "<|assistant|>", "<|end|>"]),
            want
        );
    }

    #[test]
    fn llama_with_header_tokens_uses_llama3() {
        let want = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant\
            <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>\
            <|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>\
            <|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>\
            <|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>\
            <|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>\
            <|start_header_id|>assistant<|end_header_id|>\n\n";
        let extra = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
        assert_eq!(render("llama", &extra), want);
    }

    #[test]
    fn llama_without_header_tokens_uses_llama2() {
        // llama.cpp's expected output for Mistral-7B-Instruct-v0.2 (its `llama2` template):
        // no generation prompt, the system message inside the first [INST].
        let want = "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>\
            [INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]";
        assert_eq!(render("llama", &[]), want);
        let tok = tokenizer(Some("llama"), &[]);
        let t = ChatTemplate::for_tokenizer(&tok).unwrap();
        assert_eq!(t.render(&conversation(), false).unwrap(), want);
    }

    #[test]
    fn gemma_families_use_gemma_turns_like_the_jinja_template() {
        let want = "<s><start_of_turn>system\nYou are a helpful assistant<end_of_turn>\n\
            <start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n\
            <start_of_turn>user\nWho are you<end_of_turn>\n\
            <start_of_turn>model\nI am an assistant<end_of_turn>\n\
            <start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n";
        for arch in ["gemma3", "gemma2", "gemma"] {
            assert_eq!(render(arch, &[]), want, "{arch}");
        }
        // The built-in format is GEMMA_TEMPLATE, also for whitespace Rust trims and C does not.
        let tok = tokenizer(Some("gemma3"), &[]);
        let jinja = ChatTemplate::new(GEMMA_TEMPLATE.to_string(), &tok).unwrap();
        let builtin = ChatTemplate::for_tokenizer(&tok).unwrap();
        let mut messages = conversation();
        messages.push(ChatMessage::new("user", "\u{A0} x \u{2003}\n"));
        for gen in [false, true] {
            assert_eq!(
                builtin.render(&messages, gen).unwrap(),
                jinja.render(&messages, gen).unwrap()
            );
        }
    }

    #[test]
    fn llama3_trims_like_c() {
        let tok = tokenizer(Some("llama"), &["<|start_header_id|>"]);
        let t = ChatTemplate::for_tokenizer(&tok).unwrap();
        let m = [ChatMessage::new("user", "\u{A0}x\x0B\n")];
        assert_eq!(
            t.render(&m, false).unwrap(),
            "<|start_header_id|>user<|end_header_id|>\n\n\u{A0}x<|eot_id|>"
        );
    }

    #[test]
    fn the_file_template_wins_over_the_family_format() {
        let tok = Tokenizer::from_vocab(Vocab {
            chat_template: Some("{% for m in messages %}[{{ m.role }}]{% endfor %}".into()),
            ..vocab(Some("qwen3"), &[])
        })
        .unwrap();
        let t = ChatTemplate::for_tokenizer(&tok).unwrap();
        assert_eq!(
            t.render(&conversation()[..2], true).unwrap(),
            "[system][user]"
        );
    }

    #[test]
    fn other_architectures_without_a_template_are_refused() {
        let err = |arch: Option<&str>| match ChatTemplate::for_tokenizer(&tokenizer(arch, &[])) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{arch:?}: a template"),
        };
        let e = err(Some("falcon"));
        assert!(e.contains("no tokenizer.chat_template"), "{e}");
        assert!(
            e.contains("no known chat format for architecture `falcon`"),
            "{e}"
        );
        let e = err(None);
        assert!(
            e.contains("neither tokenizer.chat_template nor general.architecture"),
            "{e}"
        );
    }
}

//! Chat templates: a conversation rendered to the prompt text the model was trained on, with the
//! Jinja template in the model file (`tokenizer.chat_template`, rendered by minijinja) or
//! Gemma's turn format when the file has none.

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::tokenizer::Tokenizer;

/// Gemma's turn format, used when the model file carries no `tokenizer.chat_template`.
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

/// A parsed chat template plus the special-token texts it refers to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_text: String,
    eos_text: String,
}

impl ChatTemplate {
    /// The template of `tok`'s model (or [`GEMMA_TEMPLATE`]), parsed once.
    pub fn for_tokenizer(tok: &Tokenizer) -> Result<ChatTemplate, EngineError> {
        let source = tok.chat_template().unwrap_or(GEMMA_TEMPLATE).to_string();
        ChatTemplate::new(source, tok)
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
        let text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tok.token_text(id)).into_owned())
                .unwrap_or_default()
        };
        Ok(ChatTemplate {
            env,
            bos_text: text(tok.bos()),
            eos_text: text(tok.eos()),
        })
    }

    /// The prompt text of `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let template = self
            .env
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

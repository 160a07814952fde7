//! OpenAI (and llama-server) request and response bodies. Requests ignore fields they do not
//! know; every optional field may also be `null`.

use serde::{Deserialize, Serialize};

/// The body of `POST /v1/chat/completions` and `POST /v1/completions` (one type for both: chat
/// requires `messages`, completions require `prompt`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerationRequest {
    /// Echoed in responses; the server serves one model whatever this says.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation (chat).
    #[serde(default)]
    pub messages: Option<Vec<ChatMessageIn>>,
    /// The prompt (completions).
    #[serde(default)]
    pub prompt: Option<Prompt>,
    /// Most tokens to generate; `null` = the rest of the context.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Newer name of `max_tokens`; wins when both are given.
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature in [0, 2]; 0 = greedy. Default 1.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1]. Default 1 (off).
    #[serde(default)]
    pub top_p: Option<f64>,
    /// llama-server extension: keep the k most likely tokens (0 = off, the default).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// llama-server extension: min-p in [0, 1] (0 = off, the default).
    #[serde(default)]
    pub min_p: Option<f64>,
    /// llama-server extension: repetition penalty (> 0; 1 = off, the default).
    #[serde(default)]
    pub repeat_penalty: Option<f64>,
    /// RNG seed; absent = a fresh random seed per request.
    #[serde(default)]
    pub seed: Option<serde_json::Number>,
    /// Stop strings (at most 4).
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate: only 1 is supported.
    #[serde(default)]
    pub n: Option<i64>,
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and empty `choices`) before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: one string or a list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `prompt` of a completion: a string, a list of exactly one string, or a list of token ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// A batch of texts: only batches of one are supported.
    Texts(Vec<String>),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// One message of a chat request.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessageIn {
    /// `system` (or `developer`), `user` or `assistant`.
    pub role: String,
    /// The text, or a list of content parts; `null` counts as empty.
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts: only `{"type": "text", "text": …}` is supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
}

impl Usage {
    /// Usage of `prompt` and `completion` tokens.
    pub fn new(prompt: usize, completion: usize) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// A non-streamed chat answer (`chat.completion`).
#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// The one choice.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// A choice of a chat answer.
#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    /// Always 0.
    pub index: u32,
    /// The assistant's message.
    pub message: ChatMessageOut,
    /// Always `null`.
    pub logprobs: Option<()>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// The assistant's message.
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessageOut {
    /// `assistant`.
    pub role: &'static str,
    /// The generated text.
    pub content: String,
}

/// One streamed chat chunk (`chat.completion.chunk`).
#[derive(Clone, Debug, Serialize)]
pub struct ChatChunk {
    /// The same `chatcmpl-…` for every chunk of a request.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// One choice, or none in the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the final usage chunk (with `include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The choice of a streamed chat chunk.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// The new text.
    pub delta: Delta,
    /// Always `null`.
    pub logprobs: Option<()>,
    /// Set on the last chunk.
    pub finish_reason: Option<&'static str>,
}

/// What a chunk adds to the message.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text (absent in an empty final delta).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A text completion, whole or one streamed chunk (`text_completion`).
#[derive(Clone, Debug, Serialize)]
pub struct TextCompletion {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model.
    pub model: String,
    /// One choice, or none in the final usage chunk of a stream.
    pub choices: Vec<TextChoice>,
    /// Token counts (non-streamed answers, and the final chunk of a stream with
    /// `include_usage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A choice of a text completion.
#[derive(Clone, Debug, Serialize)]
pub struct TextChoice {
    /// The generated text (the new part, in a stream).
    pub text: String,
    /// Always 0.
    pub index: u32,
    /// Always `null`.
    pub logprobs: Option<()>,
    /// `stop` or `length` (on the last chunk of a stream).
    pub finish_reason: Option<&'static str>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The served model.
    pub data: Vec<ModelCard>,
}

/// One model of `/v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelCard {
    /// The model file's stem.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds when the server started.
    pub created: u64,
    /// `strata`.
    pub owned_by: &'static str,
}

/// `POST /tokenize` (llama-server's).
#[derive(Clone, Debug, Deserialize)]
pub struct TokenizeRequest {
    /// The text.
    pub content: String,
    /// Add BOS/EOS as the model does.
    #[serde(default)]
    pub add_special: bool,
    /// Let special-token texts (e.g. `<start_of_turn>`) become those tokens.
    #[serde(default = "yes")]
    pub parse_special: bool,
    /// Answer `[{"id", "piece"}]` instead of bare ids.
    #[serde(default)]
    pub with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /detokenize`.
#[derive(Clone, Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// One token with its piece (`with_pieces`): the piece is a string when it is valid UTF-8,
/// else its bytes.
#[derive(Clone, Debug, Serialize)]
pub struct TokenPiece {
    /// The id.
    pub id: u32,
    /// Its text or bytes.
    pub piece: Piece,
}

/// A token's piece.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Piece {
    /// Valid UTF-8.
    Text(String),
    /// Part of a character.
    Bytes(Vec<u8>),
}

//! Text generation as an iterator of text pieces.
//!
//! Each step samples a token from the current logits, turns it into whole UTF-8 characters
//! with the tokenizer's stream decoder, and evaluates it to get the next logits. Generation
//! stops after `max_tokens`, at an end-of-generation token (EOS/EOT) unless told not to, or when
//! the text contains a stop string (the stop string and anything after it are not emitted; text
//! that could be the start of a stop string is held back until it is known not to be).

use crate::engine::Session;
use crate::error::EngineError;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings (greedy when `temperature <= 0`).
    pub sampler: SamplerConfig,
    /// Stop when one of these strings appears in the generated text.
    pub stop: Vec<String>,
    /// Stop at end-of-generation tokens (EOS, EOT). The verification run turns this off,
    /// as llama.cpp's reference continuations do not stop.
    pub stop_at_eog: bool,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eog: true,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token (its id).
    EndOfGeneration(u32),
    /// The text reached a stop string.
    StopString(String),
}

/// A running generation: iterate to receive text pieces.
pub struct Generation<'s, 'e> {
    session: &'s mut Session<'e>,
    sampler: Sampler,
    opts: GenerateOptions,
    /// Logits for the next token.
    logits: Vec<f32>,
    text: TextStream<'e>,
    /// Generated ids, in order.
    ids: Vec<u32>,
    stop: Option<StopReason>,
    /// Set once the final piece has been returned.
    finished: bool,
}

impl<'s, 'e> Generation<'s, 'e> {
    /// Evaluates the prompt and prepares the first step.
    pub(crate) fn start(
        session: &'s mut Session<'e>,
        prompt: &[u32],
        opts: GenerateOptions,
    ) -> Result<Generation<'s, 'e>, EngineError> {
        let sampler = Sampler::new(opts.sampler.clone())?;
        let logits = session.eval(prompt)?;
        let text = TextStream::new(session.engine().tokenizer());
        Ok(Generation {
            session,
            sampler,
            opts,
            logits,
            text,
            ids: Vec::new(),
            stop: None,
            finished: false,
        })
    }

    /// Ids generated so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Why generation stopped (`None` while running).
    pub fn stop_reason(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// One step: sample, decode, and evaluate the token unless it is the last. Returns the text
    /// that became safe to emit (possibly empty).
    fn step(&mut self) -> Result<String, EngineError> {
        let tokenizer = self.session.engine().tokenizer();
        let history = self.session.tokens();
        let id = self.sampler.sample(&self.logits, &history);
        self.ids.push(id);
        self.session.stats_mut().generated_tokens += 1;
        self.session.set_pending(id);

        if self.opts.stop_at_eog && tokenizer.is_eog(id) {
            self.stop = Some(StopReason::EndOfGeneration(id));
            return Ok(self.text.finish());
        }
        if let Some((text, hit)) = self.text.push(id, &self.opts.stop) {
            self.stop = Some(StopReason::StopString(hit));
            return Ok(text);
        }
        if self.ids.len() >= self.opts.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return Ok(self.text.finish());
        }
        self.logits = self.session.eval(&[])?;
        Ok(self.text.take_safe(&self.opts.stop))
    }
}

/// Generated ids to emitted text: whole UTF-8 characters (the tokenizer's stream decoder), with
/// text that could begin a stop string held back until it is known not to.
pub(crate) struct TextStream<'e> {
    decoder: StreamDecoder<'e>,
    /// Decoded text not yet emitted because it may begin a stop string.
    held: String,
}

impl<'e> TextStream<'e> {
    /// A stream continuing after a prompt (no leading-space stripping).
    pub(crate) fn new(tokenizer: &'e crate::tokenizer::Tokenizer) -> TextStream<'e> {
        TextStream {
            decoder: StreamDecoder::continuing(tokenizer),
            held: String::new(),
        }
    }

    /// Decodes `id` into the held text. If the held text now contains one of `stop`, returns
    /// the text before the earliest match and that stop string (generation ends there).
    pub(crate) fn push(&mut self, id: u32, stop: &[String]) -> Option<(String, String)> {
        self.held.push_str(&self.decoder.push(id));
        let (at, s) = stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s.clone())))
            .min()?;
        self.held.truncate(at);
        Some((std::mem::take(&mut self.held), s))
    }

    /// Takes the held text except the longest suffix that is a proper prefix of a stop string.
    pub(crate) fn take_safe(&mut self, stop: &[String]) -> String {
        let keep = stop
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let rest = self.held.split_off(cut);
        std::mem::replace(&mut self.held, rest)
    }

    /// Everything left: held text plus the decoder's incomplete bytes.
    pub(crate) fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&self.decoder.finish());
        out
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`, cut at a
/// character boundary of `text`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k)
                && stop
                    .as_bytes()
                    .starts_with(&text.as_bytes()[text.len() - k..])
        })
        .unwrap_or(0)
}

impl Iterator for Generation<'_, '_> {
    type Item = Result<String, EngineError>;

    /// The next non-empty piece of text, `None` when generation is over, or the error that
    /// ended it.
    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            if self.stop.is_some() {
                self.finished = true;
                return None;
            }
            match self.step() {
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Ok(text) if text.is_empty() => continue,
                Ok(text) => return Some(Ok(text)),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::longest_suffix_prefix;

    #[test]
    fn suffix_prefix_overlap() {
        assert_eq!(longest_suffix_prefix("hello wor", "world"), 3);
        assert_eq!(longest_suffix_prefix("hello", "world"), 0);
        assert_eq!(longest_suffix_prefix("ab", "b"), 0); // proper prefix only
        assert_eq!(longest_suffix_prefix("x<end", "<end_of_turn>"), 4);
        assert_eq!(longest_suffix_prefix("é", "\u{e9}x"), 2);
    }
}

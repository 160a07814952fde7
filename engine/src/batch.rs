//! Continuous batching: many sequences decoded together through one forward pass per step.
//!
//! A [`Batcher`] holds `n_slots` KV caches (allocated once, up front). [`Batcher::submit`]
//! starts a sequence in a free slot; each [`Batcher::step`] runs **one** forward pass over every
//! active sequence: one token for each sequence that is generating, then chunks of the prompts
//! still being read, up to `step_tokens` tokens in all. Every layer is therefore fetched from the
//! layer cache once per step and applied to the whole batch — when the model streams from a
//! small budget, the bytes read per step serve every sequence. New sequences join between steps;
//! a long prompt is read over several steps while the others keep generating; a finished or
//! cancelled sequence frees its slot at once.
//!
//! A sequence alone in the batcher is computed exactly as [`crate::Session::generate`] computes
//! it (the same chunks of `step_tokens` = the engine's batch size, the same kernels), so its
//! tokens are the same. In a batch with others, its rows go through matrix products over the
//! whole batch, whose kernels (and float order) depend on the batch's size — as in llama.cpp,
//! a batched step may round differently from a single one.
//!
//! ```no_run
//! use strata_engine::{BatchConfig, Batcher, Engine, EngineConfig, GenerateOptions, SamplerConfig};
//!
//! let engine = Engine::open("models/gemma-3-270m-q4_k_m.gguf", EngineConfig::default())?;
//! let mut batcher = Batcher::new(&engine, BatchConfig { n_slots: 2, ..Default::default() })?;
//! let opts = GenerateOptions { max_tokens: 16, sampler: SamplerConfig::greedy(), ..Default::default() };
//! for prompt in ["The capital of France is", "Water boils at"] {
//!     let ids = engine.tokenizer().encode(prompt, true, false)?;
//!     batcher.submit(ids, opts.clone())?;
//! }
//! while !batcher.is_idle() {
//!     for update in batcher.step()? {
//!         print!("[{}] {}", update.id.0, update.text);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use strata_layer_cache::Clock;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::generate::{GenerateOptions, StopReason, TextStream};
use crate::kv_cache::KvCache;
use crate::model::SeqChunk;
use crate::sampler::Sampler;

/// How a [`Batcher`] is sized.
#[derive(Clone, Debug, Default)]
pub struct BatchConfig {
    /// Sequences decoded together (each gets a KV cache of `n_ctx` positions).
    pub n_slots: usize,
    /// KV positions per sequence; `None` = the engine's [`Engine::n_ctx`].
    pub n_ctx: Option<usize>,
    /// Most tokens evaluated in one step (decode tokens plus prompt chunks); `None` = the
    /// engine's batch size. At least `n_slots`.
    pub step_tokens: Option<usize>,
}

/// A sequence's handle, unique for the batcher's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// What one step produced for one sequence: the token it sampled and the text that became safe
/// to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqUpdate {
    /// The sequence.
    pub id: SeqId,
    /// Text safe to emit now (possibly empty: an incomplete character, or a possible stop
    /// string held back).
    pub text: String,
    /// The token sampled this step.
    pub token: u32,
    /// `Some` on the sequence's last update: why it ended. Its slot is already free.
    pub finished: Option<StopReason>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated so far, this one included.
    pub completion_tokens: usize,
}

/// Counters since the batcher was created.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Forward passes run.
    pub steps: u64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: u64,
    /// Tokens sampled.
    pub generated_tokens: u64,
    /// Time spent in [`Batcher::step`].
    pub busy: Duration,
    /// Sequences that ended by themselves (stop token, stop string, `max_tokens`).
    pub finished: u64,
    /// Sequences ended by [`Batcher::cancel`] or by a failed step.
    pub cancelled: u64,
    /// Largest number of sequences in one step.
    pub max_batch_seqs: usize,
}

/// One active sequence.
struct Seq<'e> {
    id: SeqId,
    /// Index of its KV cache in `Batcher::kv`.
    slot: usize,
    /// Tokens in the KV cache, in position order (prompt, then generated).
    evaluated: Vec<u32>,
    /// Tokens still to evaluate: the rest of the prompt, or the last sampled token.
    todo: Vec<u32>,
    prompt_tokens: usize,
    /// Tokens generated so far.
    generated: usize,
    sampler: Sampler,
    opts: GenerateOptions,
    text: TextStream<'e>,
}

/// Continuous batching over one engine; see the module documentation.
pub struct Batcher<'e> {
    engine: &'e Engine,
    /// One KV cache per slot.
    kv: Vec<KvCache>,
    /// `free[i]`: slot `i` holds no sequence.
    free: Vec<bool>,
    /// Active sequences in submission order (the order of their rows in a step's batch).
    seqs: Vec<Seq<'e>>,
    n_ctx: usize,
    step_tokens: usize,
    next_id: u64,
    stats: BatchStats,
}

impl<'e> Batcher<'e> {
    /// A batcher of `cfg.n_slots` sequences over `engine`; allocates every KV cache now, so
    /// memory does not grow while serving.
    pub fn new(engine: &'e Engine, cfg: BatchConfig) -> Result<Batcher<'e>, EngineError> {
        if cfg.n_slots == 0 {
            return Err(EngineError::InvalidSetting {
                what: "0 parallel sequences".into(),
            });
        }
        let n_ctx = cfg.n_ctx.unwrap_or(engine.n_ctx());
        let step_tokens = cfg.step_tokens.unwrap_or(engine.batch_size());
        if step_tokens < cfg.n_slots {
            return Err(EngineError::InvalidSetting {
                what: format!(
                    "{step_tokens} tokens per step for {} parallel sequences \
                     (each generating sequence needs one)",
                    cfg.n_slots
                ),
            });
        }
        let kv = (0..cfg.n_slots)
            .map(|_| KvCache::new(engine.config(), n_ctx, engine.kv_type()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batcher {
            engine,
            kv,
            free: vec![true; cfg.n_slots],
            seqs: Vec::new(),
            n_ctx,
            step_tokens,
            next_id: 0,
            stats: BatchStats::default(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &'e Engine {
        self.engine
    }

    /// Sequences that can run at once.
    pub fn n_slots(&self) -> usize {
        self.kv.len()
    }

    /// KV positions of each sequence.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Bytes held by the KV caches of all slots.
    pub fn kv_bytes(&self) -> usize {
        self.kv.iter().map(KvCache::size_bytes).sum()
    }

    /// Slots without a sequence.
    pub fn free_slots(&self) -> usize {
        self.free.iter().filter(|&&f| f).count()
    }

    /// Sequences running (reading their prompt or generating).
    pub fn n_active(&self) -> usize {
        self.seqs.len()
    }

    /// No sequence is running: [`Batcher::step`] has nothing to do.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Starts generating after `prompt` in a free slot; the prompt is read by the next steps.
    ///
    /// Fails, changing nothing, when no slot is free ([`EngineError::NoFreeSlot`]), the prompt
    /// is empty or has an id outside the vocabulary, the prompt plus `options.max_tokens` does
    /// not fit the slot's `n_ctx` positions, or the sampler settings are invalid.
    pub fn submit(
        &mut self,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<SeqId, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if options.max_tokens == 0 {
            return Err(EngineError::InvalidSetting {
                what: "max_tokens 0 (at least one token is generated)".into(),
            });
        }
        let n_vocab = self.engine.config().n_vocab;
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= n_vocab) {
            return Err(EngineError::TokenOutOfRange { id, n_vocab });
        }
        // As `Session::generate`: the last generated token is never evaluated, but the check
        // is the same so that both accept the same requests.
        let needed = prompt.len() + options.max_tokens;
        if needed > self.n_ctx {
            return Err(EngineError::ContextOverflow {
                needed,
                n_ctx: self.n_ctx,
                n_ctx_train: self.engine.config().n_ctx_train,
            });
        }
        let sampler = Sampler::new(options.sampler.clone())?;
        let slot = self
            .free
            .iter()
            .position(|&f| f)
            .ok_or(EngineError::NoFreeSlot {
                n_slots: self.kv.len(),
            })?;
        self.free[slot] = false;
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.push(Seq {
            id,
            slot,
            evaluated: Vec::with_capacity(prompt.len() + options.max_tokens),
            prompt_tokens: prompt.len(),
            todo: prompt,
            generated: 0,
            sampler,
            opts: options,
            text: TextStream::new(self.engine.tokenizer()),
        });
        Ok(id)
    }

    /// Ends sequence `id` and frees its slot; `false` if it is not running.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        match self.seqs.iter().position(|s| s.id == id) {
            Some(i) => {
                let seq = self.seqs.remove(i);
                self.free[seq.slot] = true;
                self.stats.cancelled += 1;
                true
            }
            None => false,
        }
    }

    /// Runs one forward pass over every running sequence and samples the next token of each
    /// sequence whose logits came out (those generating, and those whose prompt was finished
    /// in this step). Returns their updates in submission order; sequences still reading their
    /// prompt report nothing. A sequence that finishes frees its slot before this returns.
    ///
    /// On an error (a failed read of the model, say) every running sequence is dropped —
    /// its KV cache holds a partial step — and counted as cancelled.
    pub fn step(&mut self) -> Result<Vec<SeqUpdate>, EngineError> {
        if self.seqs.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = Clock::now();
        let result = self.step_inner();
        self.stats.busy += t0.elapsed();
        if result.is_err() {
            for seq in self.seqs.drain(..) {
                self.free[seq.slot] = true;
                self.stats.cancelled += 1;
            }
        }
        result
    }

    fn step_inner(&mut self) -> Result<Vec<SeqUpdate>, EngineError> {
        // Tokens each sequence evaluates this step: generating sequences one each; then
        // prompts, in submission order, in chunks of what is left of the step's tokens.
        let generating = self
            .seqs
            .iter()
            .filter(|s| s.todo.len() == 1 && s.evaluated.len() >= s.prompt_tokens)
            .count();
        let mut left = self.step_tokens - generating;
        let mut take = vec![0usize; self.seqs.len()];
        for (t, s) in take.iter_mut().zip(&self.seqs) {
            if s.evaluated.len() >= s.prompt_tokens {
                *t = s.todo.len();
            } else if left > 0 {
                *t = s.todo.len().min(left);
                left -= *t;
            }
        }

        // The batch: one chunk per sequence with tokens this step, each with its own cache.
        let mut kv_of: Vec<Option<&mut KvCache>> = self.kv.iter_mut().map(Some).collect();
        let mut chunks = Vec::new();
        let mut members = Vec::new();
        for (i, (s, &n)) in self.seqs.iter().zip(&take).enumerate() {
            if n == 0 {
                continue;
            }
            let kv = kv_of[s.slot].take().expect("each slot holds one sequence");
            chunks.push(SeqChunk {
                tokens: &s.todo[..n],
                pos0: s.evaluated.len(),
                kv,
                logits: n == s.todo.len(),
            });
            members.push(i);
        }
        let n_vocab = self.engine.config().n_vocab;
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; chunks.len()];
        let model = self.engine.model();
        self.engine.install(|| {
            model.forward_batch(&mut chunks, &mut |c, l| {
                debug_assert_eq!(l.len(), n_vocab);
                logits[c] = Some(l.to_vec());
            })
        })?;
        drop(chunks);
        self.stats.steps += 1;
        self.stats.max_batch_seqs = self.stats.max_batch_seqs.max(members.len());

        // Move the evaluated tokens into place; sample where logits came out.
        let tokenizer = self.engine.tokenizer();
        let mut updates = Vec::new();
        let mut done = Vec::new();
        for (c, &i) in members.iter().enumerate() {
            let s = &mut self.seqs[i];
            let n = take[i];
            if s.evaluated.len() < s.prompt_tokens {
                self.stats.prompt_tokens += n as u64;
            }
            s.evaluated.extend(s.todo.drain(..n));
            let Some(l) = logits[c].take() else { continue };
            let id = s.sampler.sample(&l, &s.evaluated);
            s.generated += 1;
            self.stats.generated_tokens += 1;
            let (text, finished) = if s.opts.stop_at_eog && tokenizer.is_eog(id) {
                (s.text.finish(), Some(StopReason::EndOfGeneration(id)))
            } else if let Some((text, hit)) = s.text.push(id, &s.opts.stop) {
                (text, Some(StopReason::StopString(hit)))
            } else if s.generated >= s.opts.max_tokens {
                (s.text.finish(), Some(StopReason::MaxTokens))
            } else {
                s.todo.push(id);
                (s.text.take_safe(&s.opts.stop), None)
            };
            if finished.is_some() {
                done.push(s.id);
            }
            updates.push(SeqUpdate {
                id: s.id,
                text,
                token: id,
                finished,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.generated,
            });
        }
        for id in done {
            if let Some(i) = self.seqs.iter().position(|s| s.id == id) {
                let seq = self.seqs.remove(i);
                self.free[seq.slot] = true;
                self.stats.finished += 1;
            }
        }
        Ok(updates)
    }
}

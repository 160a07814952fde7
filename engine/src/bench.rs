//! Throughput tests with llama-bench's semantics (llama.cpp `tools/llama-bench`), so that
//! `strata bench` and `llama-bench` numbers mean the same thing:
//!
//! - **pp*N*** ([`BenchTest::prompt`]): one prompt of *N* tokens evaluated from an empty
//!   context, logits for the last token only.
//! - **tg*N*** ([`BenchTest::gen`]): *N* single-token evaluations from an empty context, each
//!   computing logits (the token is not sampled: the next one is random).
//! - **pp*P*+tg*G***: both, one after the other, timed together.
//!
//! Token ids are pseudo-random in the vocabulary (seeded: the same ids every run), the first
//! one BOS when the model adds BOS, as llama-bench does. Before the repetitions one warmup run
//! (the whole prompt; one generation step) is made and not measured. Each repetition starts
//! from an empty context and is timed from its first evaluation to its last; its speed is
//! `(n_prompt + n_gen) / seconds`, and the mean and sample standard deviation over the
//! repetitions are what llama-bench reports as `avg_ts` and `stddev_ts`.
//!
//! The layer cache's counters are taken around the measured repetitions only, so
//! [`BenchResult::bytes_read_per_token`] and [`BenchResult::stall_share`] describe the steady
//! state (after the warmup has loaded what stays resident).

use std::time::{Duration, Instant};

use strata_layer_cache::CacheStats;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::LogitsFor;
use crate::sampler::Rng;

/// One test: a prompt of `n_prompt` tokens, then `n_gen` single-token evaluations, from an
/// empty context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BenchTest {
    /// Prompt tokens evaluated as one batch (0 = none).
    pub n_prompt: usize,
    /// Tokens evaluated one at a time after the prompt (0 = none).
    pub n_gen: usize,
}

impl BenchTest {
    /// The prompt-processing test `pp{n}`.
    pub fn prompt(n: usize) -> BenchTest {
        BenchTest {
            n_prompt: n,
            n_gen: 0,
        }
    }

    /// The text-generation test `tg{n}`.
    pub fn gen(n: usize) -> BenchTest {
        BenchTest {
            n_prompt: 0,
            n_gen: n,
        }
    }

    /// Tokens evaluated per repetition.
    pub fn n_tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    /// llama-bench's name of the test: `pp512`, `tg128` or `pp512+tg128`.
    pub fn name(&self) -> String {
        match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        }
    }
}

/// How to run a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Measured repetitions (llama-bench's `-r`, default 5).
    pub repetitions: usize,
    /// Make one unmeasured run first (llama-bench does unless `--no-warmup`).
    pub warmup: bool,
    /// Seed of the pseudo-random token ids.
    pub seed: u64,
}

impl Default for BenchOptions {
    /// 5 repetitions after a warmup run, seed 1 (the seed of C's `rand()` that llama-bench uses;
    /// the ids differ, the generator is ours).
    fn default() -> BenchOptions {
        BenchOptions {
            repetitions: 5,
            warmup: true,
            seed: 1,
        }
    }
}

/// Where a running test is, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchStep {
    /// The unmeasured warmup run is starting.
    Warmup,
    /// Measured repetition `index` (1-based) of `of` is starting.
    Repetition {
        /// 1-based number of the repetition.
        index: usize,
        /// Repetitions in all.
        of: usize,
    },
}

/// The measurements of one test.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// The test that was run.
    pub test: BenchTest,
    /// Wall time of each measured repetition.
    pub samples: Vec<Duration>,
    /// Layer cache counters accumulated over the measured repetitions (gauges as at the end).
    pub cache: CacheStats,
}

impl BenchResult {
    /// Each repetition's time in nanoseconds (llama-bench's `samples_ns`).
    pub fn samples_ns(&self) -> Vec<u64> {
        self.samples
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect()
    }

    /// Each repetition's tokens per second (llama-bench's `samples_ts`).
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = self.test.n_tokens() as f64;
        self.samples.iter().map(|d| n / d.as_secs_f64()).collect()
    }

    /// Mean time per repetition in nanoseconds (`avg_ns`).
    pub fn avg_ns(&self) -> f64 {
        mean(
            &self
                .samples_ns()
                .iter()
                .map(|&n| n as f64)
                .collect::<Vec<_>>(),
        )
    }

    /// Sample standard deviation of the repetition times in nanoseconds (`stddev_ns`).
    pub fn stddev_ns(&self) -> f64 {
        stddev(
            &self
                .samples_ns()
                .iter()
                .map(|&n| n as f64)
                .collect::<Vec<_>>(),
        )
    }

    /// Mean tokens per second over the repetitions (`avg_ts`).
    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    /// Sample standard deviation of the tokens per second (`stddev_ts`; 0 for one repetition).
    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }

    /// Bytes read from storage by the layer cache per evaluated token, over the measured
    /// repetitions (0 when every layer stayed resident).
    pub fn bytes_read_per_token(&self) -> f64 {
        let tokens = self.test.n_tokens() * self.samples.len();
        if tokens == 0 {
            0.0
        } else {
            self.cache.bytes_read as f64 / tokens as f64
        }
    }

    /// The share of the measured time the forward pass spent waiting for layers (for a
    /// prefetch, or reading one itself) or for routed experts, from 0 to 1.
    pub fn stall_share(&self) -> f64 {
        self.share(self.cache.stall + self.cache.expert_stall)
    }

    /// The part of [`BenchResult::stall_share`] spent waiting for routed experts (MoE).
    pub fn expert_stall_share(&self) -> f64 {
        self.share(self.cache.expert_stall)
    }

    /// Bytes of routed experts read from storage per evaluated token (MoE; included in
    /// [`BenchResult::bytes_read_per_token`]).
    pub fn expert_bytes_read_per_token(&self) -> f64 {
        let tokens = self.test.n_tokens() * self.samples.len();
        if tokens == 0 {
            0.0
        } else {
            self.cache.expert_bytes_read as f64 / tokens as f64
        }
    }

    /// Routed experts found resident, over all routed experts asked for (0 without experts).
    pub fn expert_hit_ratio(&self) -> f64 {
        self.cache.expert_hit_ratio()
    }

    /// `d` as a share of the measured time.
    fn share(&self, d: Duration) -> f64 {
        let total: Duration = self.samples.iter().sum();
        if total.is_zero() {
            0.0
        } else {
            d.as_secs_f64() / total.as_secs_f64()
        }
    }
}

/// Mean of `v` (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Sample standard deviation of `v` (divides by n − 1; 0 for fewer than two values).
pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let ss: f64 = v.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (v.len() - 1) as f64).sqrt()
}

/// Runs `test` on `engine`: a warmup run if asked, then `options.repetitions` measured ones,
/// each from an empty context in one session. `progress` is told when each run starts.
///
/// Fails if the test has no tokens, there are no repetitions, the engine's context is shorter
/// than the test, or an evaluation fails.
pub fn run_test(
    engine: &Engine,
    test: BenchTest,
    options: &BenchOptions,
    progress: &mut dyn FnMut(BenchStep),
) -> Result<BenchResult, EngineError> {
    if test.n_tokens() == 0 {
        return Err(EngineError::InvalidSetting {
            what: "benchmark test with 0 prompt and 0 generated tokens".into(),
        });
    }
    if options.repetitions == 0 {
        return Err(EngineError::InvalidSetting {
            what: "benchmark with 0 repetitions".into(),
        });
    }
    if test.n_tokens() > engine.n_ctx() {
        return Err(EngineError::ContextOverflow {
            needed: test.n_tokens(),
            n_ctx: engine.n_ctx(),
            n_ctx_train: engine.config().n_ctx_train,
        });
    }
    let n_vocab = engine.config().n_vocab;
    if n_vocab == 0 {
        return Err(EngineError::InvalidSetting {
            what: "benchmark on a model with an empty vocabulary".into(),
        });
    }
    // BOS when the model adds one (what `encode` of nothing with specials gives first).
    let bos = engine
        .tokenizer()
        .encode("", true, false)?
        .first()
        .copied()
        .filter(|&id| Some(id) == engine.tokenizer().bos());
    let mut rng = Rng::new(options.seed);
    let mut random = move || (rng.next_u64() % n_vocab as u64) as u32;

    let mut session = engine.session()?;
    let mut run = |test: BenchTest| -> Result<Duration, EngineError> {
        session.reset();
        let prompt: Vec<u32> = (0..test.n_prompt)
            .map(|i| match (i, bos) {
                (0, Some(b)) => b,
                _ => random(),
            })
            .collect();
        let t0 = Instant::now();
        if !prompt.is_empty() {
            session.eval_with(&prompt, LogitsFor::Last, &mut |_, logits| {
                std::hint::black_box(logits);
            })?;
        }
        // llama-bench's generation starts from BOS (or a random id) whatever came before.
        let mut token = bos.unwrap_or_else(&mut random);
        for _ in 0..test.n_gen {
            session.eval_with(&[token], LogitsFor::Last, &mut |_, logits| {
                std::hint::black_box(logits);
            })?;
            token = random();
        }
        Ok(t0.elapsed())
    };

    if options.warmup {
        progress(BenchStep::Warmup);
        // As llama-bench: the whole prompt, and one generation step.
        if test.n_prompt > 0 {
            run(BenchTest::prompt(test.n_prompt))?;
        }
        if test.n_gen > 0 {
            run(BenchTest::gen(1))?;
        }
    }
    let before = engine.cache_stats();
    let mut samples = Vec::with_capacity(options.repetitions);
    for index in 1..=options.repetitions {
        progress(BenchStep::Repetition {
            index,
            of: options.repetitions,
        });
        samples.push(run(test)?);
    }
    let cache = engine.cache_stats().since(&before);
    Ok(BenchResult {
        test,
        samples,
        cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_follow_llama_bench() {
        assert_eq!(BenchTest::prompt(512).name(), "pp512");
        assert_eq!(BenchTest::gen(128).name(), "tg128");
        let pg = BenchTest {
            n_prompt: 512,
            n_gen: 128,
        };
        assert_eq!(pg.name(), "pp512+tg128");
        assert_eq!(pg.n_tokens(), 640);
    }

    #[test]
    fn statistics_are_llama_bench_s() {
        // llama-bench: t/s per repetition = tokens / seconds; mean; sample stddev (n - 1).
        let r = BenchResult {
            test: BenchTest::gen(100),
            samples: vec![Duration::from_secs(1), Duration::from_secs(2)],
            cache: CacheStats {
                bytes_read: 600,
                stall: Duration::from_millis(300),
                ..CacheStats::default()
            },
        };
        assert_eq!(r.samples_ts(), vec![100.0, 50.0]);
        assert_eq!(r.samples_ns(), vec![1_000_000_000, 2_000_000_000]);
        assert_eq!(r.avg_ts(), 75.0);
        assert!((r.stddev_ts() - 1250f64.sqrt()).abs() < 1e-12);
        assert_eq!(r.avg_ns(), 1.5e9);
        assert_eq!(r.bytes_read_per_token(), 3.0);
        assert!((r.stall_share() - 0.1).abs() < 1e-12);
        assert_eq!(stddev(&[5.0]), 0.0);
        assert_eq!(mean(&[]), 0.0);
    }
}

//! `strata generate`: stream a continuation of a prompt to stdout, one stats line to stderr.

use std::io::Write;

use anyhow::{Context, Result};
use strata_engine::{GenerateOptions, SamplerConfig};

use crate::model_opts::{stats_line, ModelOpts};

/// Flags of `strata generate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelOpts,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(
        short = 'n',
        long,
        default_value_t = 128,
        allow_negative_numbers = true
    )]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Parse special-token text in the prompt (e.g. `<start_of_turn>`).
    #[arg(long)]
    special: bool,
}

/// Sampling flags (shared with `chat`).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = temperature)]
    temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true, value_parser = top_p)]
    top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = min_p)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = penalty)]
    repeat_penalty: f32,
    /// Tokens the repetition penalty looks back over.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

/// A float flag's value, checked by `ok` (clap names the flag in the error: exit code 2).
fn float_in(s: &str, ok: impl Fn(f32) -> bool, expected: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if ok(v) {
        Ok(v)
    } else {
        Err(format!("expected {expected}"))
    }
}

fn temperature(s: &str) -> Result<f32, String> {
    float_in(
        s,
        |v| v.is_finite() && v >= 0.0,
        "a number ≥ 0 (0 = greedy)",
    )
}

fn top_p(s: &str) -> Result<f32, String> {
    float_in(s, |v| v > 0.0 && v <= 1.0, "0 < p ≤ 1 (1 = off)")
}

fn min_p(s: &str) -> Result<f32, String> {
    float_in(s, |v| (0.0..=1.0).contains(&v), "0 ≤ p ≤ 1 (0 = off)")
}

fn penalty(s: &str) -> Result<f32, String> {
    float_in(s, |v| v.is_finite() && v > 0.0, "a number > 0 (1 = off)")
}

impl SamplingArgs {
    /// The sampler settings.
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// Runs `strata generate`.
pub fn run(args: Args) -> Result<()> {
    let engine = args.model.open()?;
    let prompt = engine
        .tokenizer()
        .encode(&args.prompt, true, args.special)
        .context("tokenizing the prompt")?;
    let mut session = engine.session()?;
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        sampler: args.sampling.config(),
        stop: args.stop.clone(),
        stop_at_eog: !args.ignore_eos,
    };
    let mut out = std::io::stdout().lock();
    {
        let generation = session.generate(&prompt, opts)?;
        for piece in generation {
            out.write_all(piece?.as_bytes())?;
            out.flush()?;
        }
    }
    writeln!(out)?;
    eprintln!("{}", stats_line(&engine, session.stats()));
    Ok(())
}

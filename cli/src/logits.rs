//! `strata logits`: evaluate a prompt and print, for every position, the top logits as one JSON
//! document `{"token_ids": [...], "positions": [{"top": [[id, logit], ...]}, ...]}` (the shape of
//! llama.cpp reference files); optionally write the last position's full logit vector as raw
//! little-endian f32.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use strata_engine::LogitsFor;

use crate::model_opts::ModelOpts;

/// Flags of `strata logits`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelOpts,
    /// The prompt (BOS is added if the model wants it).
    #[arg(short, long)]
    prompt: String,
    /// Logits listed per position.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true)]
    top: usize,
    /// Write the last position's full logits here (raw little-endian f32, n_vocab values).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Parse special-token text in the prompt.
    #[arg(long)]
    special: bool,
}

/// Runs `strata logits`.
pub fn run(args: Args) -> Result<()> {
    let engine = args.model.open()?;
    let ids = engine
        .tokenizer()
        .encode(&args.prompt, true, args.special)
        .context("tokenizing the prompt")?;
    let mut session = engine.session()?;
    let n = ids.len();
    let k = args.top;
    let mut positions = Vec::with_capacity(n);
    let mut last = Vec::new();
    session.eval_with(&ids, LogitsFor::All, &mut |i, logits| {
        positions.push(top_k(logits, k));
        if i + 1 == n {
            last = logits.to_vec();
        }
    })?;
    let doc = serde_json::json!({
        "token_ids": ids,
        "positions": positions
            .iter()
            .map(|top| serde_json::json!({ "top": top.iter().map(|&(id, l)| serde_json::json!([id, l])).collect::<Vec<_>>() }))
            .collect::<Vec<_>>(),
    });
    // The file first: a failure to write it leaves nothing on stdout.
    if let Some(path) = &args.out {
        let bytes: Vec<u8> = last.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &doc)?;
    writeln!(out)?;
    Ok(())
}

/// The `k` largest logits, descending (ties: lower id first).
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let k = k.min(idx.len());
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}

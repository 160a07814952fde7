//! `strata logits`.

/// Flags of `strata logits`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata logits`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata logits` is not implemented yet")
}

//! `strata tokenize`.

/// Flags of `strata tokenize`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata tokenize`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata tokenize` is not implemented yet")
}

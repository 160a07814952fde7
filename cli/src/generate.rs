//! `strata generate`.

/// Flags of `strata generate`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata generate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata generate` is not implemented yet")
}

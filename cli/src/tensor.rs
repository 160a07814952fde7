//! `strata tensor`.

/// Flags of `strata tensor`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata tensor`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata tensor` is not implemented yet")
}

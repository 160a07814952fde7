//! `strata chat`.

/// Flags of `strata chat`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata chat`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata chat` is not implemented yet")
}

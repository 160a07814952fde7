//! `strata inspect`.

/// Flags of `strata inspect`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `strata inspect`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`strata inspect` is not implemented yet")
}

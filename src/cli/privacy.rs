//! `confide privacy ...` (being written).
use clap::Subcommand;

#[derive(Subcommand)]
pub enum PrivacyCommand {}

pub fn run(cmd: PrivacyCommand) -> anyhow::Result<()> {
    match cmd {}
}

//! `streamseal schema`: schema files.

use anyhow::Result;
use clap::Subcommand;

use crate::common::TableTarget;
use crate::output::Output;

/// Schema files: `schema infer` proposes one from the captured images.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Propose a schema file (typed columns for Athena) from the images a backup holds.
    ///
    /// Samples the latest snapshot's segments (or the first segments captured), and proposes a
    /// column for each attribute path present in most items with one dominant type. Prints
    /// TOML to stdout (under --json, {"toml": ...}); review it before use.
    Infer(InferArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct InferArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Segments to sample.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10000))]
    segments: u16,
}

pub(crate) async fn run(command: Command, out: &Output) -> Result<()> {
    match command {
        Command::Infer(args) => {
            let store = args.at.open().await?;
            let text =
                streamseal::ops::infer::infer(&store, &args.at.table, usize::from(args.segments))
                    .await?;
            out.result(&serde_json::json!({ "toml": text }), || print!("{text}"))
        }
    }
}

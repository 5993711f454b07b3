//! `streamseal bootstrap`: the base state of a table captured after it existed.

use std::sync::Arc;

use anyhow::Result;
use streamseal::aws::bootstrap::{Source, bootstrap};
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::Output;

/// Write the base state of a table that existed before its stream was captured.
///
/// Reads the whole table with a parallel Scan (or, with --from-export, a DynamoDB full
/// export in DYNAMODB_JSON format, which costs no read capacity) into Parquet files under
/// <table>/base/. Refuses to start unless the table's stream is enabled with new images:
/// changes during the scan must be captured for base + changes to be exact. The next seal
/// adopts the base.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Parallel scan segments.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=10000))]
    segments: i32,
    /// Take the base from a DynamoDB full export instead of scanning: the export's folder
    /// (s3://bucket/prefix/AWSDynamoDB/<export-id> or a local directory).
    #[arg(long, value_name = "URI")]
    from_export: Option<String>,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let client = streamseal::aws::dynamodb::client_from_env().await;
    let source = match &args.from_export {
        Some(uri) => Source::Export(uri.clone()),
        None => Source::Scan(args.segments),
    };
    let progress = Arc::new(Progress::default());
    let shown = out.progress("bootstrap", progress.clone());
    let base = bootstrap(&store, &client, &args.at.table, &source, Some(progress)).await?;
    drop(shown);
    out.result(&base, || {
        println!(
            "base {} of {} written from {}: {} items in {} file(s), digest {}; the next seal adopts it",
            base.base_id,
            base.table,
            base.source,
            base.items,
            base.files.len(),
            base.digest.to_hex()
        );
    })
}

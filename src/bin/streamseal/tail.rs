//! `streamseal tail`: capture a table's stream through the DynamoDB Streams API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use streamseal::aws::tail::{SdkStreams, TailOptions, TailReport, stream_arn, tail};
use streamseal::capture::{IngestOptions, Ingestor};
use streamseal::progress::Progress;

use crate::common::{self, TableTarget};
use crate::output::{self, Output};

/// Capture a table's stream through the DynamoDB Streams API (no Lambda needed).
///
/// Reads every shard, parents before children, from per-shard checkpoints kept in the
/// target (so a restart resumes with nothing lost or doubled), and writes segments through
/// the same code as the Lambda. Keeps a copy of the shard map in the target. Runs until
/// stopped, or with --until-idle until no record arrived for that long.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Stop once no record arrived for this long (e.g. 30s, 5m; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = output::parse_seconds_or_duration)]
    until_idle: Option<Duration>,
    /// Schema file with typed columns (see schemas/orders.toml); default: key and images only.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Records per GetRecords call (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    batch: i32,
    /// Threads for preparing records and encoding Parquet.
    #[arg(long, default_value_t = common::default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let threads = usize::from(args.threads);
    let ingestor = Ingestor::new(
        store.clone(),
        common::schema_source(args.schema.as_ref())?,
        IngestOptions::on_threads(threads),
    );
    let config = streamseal::aws::config::load().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let progress = Arc::new(Progress::default());
    progress.stage("records captured", 0);
    let arn = stream_arn(&ddb, &args.at.table).await?;
    // Kept with the shard map so a restore can recreate the table as it is; without
    // permission to describe it, the backup records the key schema only.
    let definition = match streamseal::aws::dynamodb::describe_definition(&ddb, &args.at.table)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(table = %args.at.table, error = %e, "could not describe the table; a restore will need --create-table's key schema from the stream or a schema file");
            None
        }
    };
    let options = TailOptions {
        until_idle: args.until_idle,
        limit: args.batch,
        progress: Some(progress.clone()),
        definition,
        ..Default::default()
    };
    let mut report = TailReport::default();
    let shown = out.progress("tail", progress);
    tail(
        &arn,
        &SdkStreams(streams),
        &ingestor,
        &store,
        &args.at.table,
        &options,
        &mut report,
    )
    .await?;
    drop(shown);
    out.result(&report, || {
        println!(
            "tail of {} stopped after {} idle: {} records in {} segment(s) from {} shard(s) ({} finished), in {}",
            args.at.table,
            output::duration(args.until_idle.unwrap_or_default()),
            report.records,
            report.segments,
            report.shards,
            report.finished_shards,
            output::millis(report.elapsed_ms)
        );
    })
}

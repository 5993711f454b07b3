//! `streamseal sample-events`: synthetic stream events, one per line.

use std::io::Write as _;

use anyhow::Result;
use clap::ValueEnum;
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;

/// Print synthetic stream events for an orders-like table (one event per line).
///
/// Deterministic for a given seed; items use every DynamoDB type. Useful to try `ingest`,
/// to benchmark, and as test input.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Total number of change records.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Records per event (Lambda's batch size).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    batch: u32,
    /// Approximate size of each item's DynamoDB JSON, in bytes.
    #[arg(long, default_value_t = 1024)]
    item_bytes: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Table name (goes into eventSourceARN).
    #[arg(long, default_value = "orders")]
    table: String,
    /// Stream view type of the generated records.
    #[arg(long, value_enum, default_value = "new-and-old-images")]
    view_type: View,
    /// At most this many live items: once reached, inserts become updates (so a longer
    /// history makes a table of the same size).
    #[arg(long, value_name = "N")]
    max_items: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum View {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

pub(crate) fn run(args: Args) -> Result<()> {
    streamseal::model::change::validate_table_name(&args.table)
        .map_err(|e| anyhow::anyhow!("--table {:?}: {e}", args.table))?;
    let view = match args.view_type {
        View::KeysOnly => StreamViewType::KeysOnly,
        View::NewImage => StreamViewType::NewImage,
        View::OldImage => StreamViewType::OldImage,
        View::NewAndOldImages => StreamViewType::NewAndOldImages,
    };
    let mut workload = Workload::new(args.seed, &args.table, view, args.item_bytes);
    workload.max_items = args.max_items;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = args.records;
    while left > 0 {
        let n = left.min(args.batch as usize);
        writeln!(out, "{}", workload.next_event(n))?;
        left -= n;
    }
    out.flush()?;
    Ok(())
}

//! `streamseal checkpoint` and `streamseal expire`: the full state at a snapshot, and the
//! retention that deletes what a checkpoint covers.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use streamseal::model::clock::SystemClock;
use streamseal::ops::checkpoint::{CheckpointOptions, checkpoint, expire};
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// Write a state checkpoint: the full table state at a sealed snapshot.
///
/// Built from the previous checkpoint (or the bootstrap base, or the whole history) plus the
/// changes sealed since, in bounded memory; written as Parquet files of `keys`, `item` and
/// `sequence_number`, one per key-hash partition, sorted by key; proven equal to the
/// snapshot's digest and item count, read back, and only then published. Restore, verify,
/// diff and athena-ddl then start from the newest checkpoint instead of reading the whole
/// history. Running it again for the same snapshot does nothing.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// The snapshot to checkpoint: an id, or "latest".
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    snapshot: String,
    /// Partitions (files). Default: the previous checkpoint's, else one per 64 MiB of stored
    /// changes; raised when the memory budget needs more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    partitions: Option<u32>,
    /// Memory budget for rebuilding the state; beyond it, changes are spilled to disk.
    #[arg(long, value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    memory_mb: u64,
    /// Directory for spill files (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Partitions built and written at once (each holds one partition in memory).
    #[arg(long, value_name = "N", default_value_t = crate::common::default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let mut options = CheckpointOptions {
        partitions: args.partitions.map(|p| p as usize),
        ..Default::default()
    };
    options.materialize.memory_mb = args.memory_mb as usize;
    options.materialize.spill_dir = args.spill_dir.clone();
    options.materialize.parallel = usize::from(args.parallel);
    let progress = Arc::new(Progress::default());
    let shown = out.progress("checkpoint", progress.clone());
    let result = checkpoint(
        &store,
        &args.at.table,
        &args.snapshot,
        &options,
        &SystemClock,
        &progress,
    )
    .await;
    drop(shown);
    let report = result?;
    out.result(&report, || {
        if report.existing {
            println!(
                "checkpoint of {} snapshot {} already exists: {} items in {} partition(s) ({})",
                report.table,
                report.snapshot_id,
                report.items,
                report.partitions,
                report.manifest
            );
        } else {
            println!(
                "checkpoint of {} snapshot {}: {} items in {} partition(s), {}, from {} plus {} changes, proven and read back in {} ({})",
                report.table,
                report.snapshot_id,
                report.items,
                report.partitions,
                output::size(report.bytes),
                report.built_from,
                report.changes_read,
                output::millis(report.elapsed_ms),
                report.manifest
            );
        }
        if report.quarantined_keys > 0 {
            println!(
                "  {} key(s) are held by quarantined records (kept in the checkpoint manifest)",
                report.quarantined_keys
            );
        }
    })
}

/// Delete change segments older than the retention that a state checkpoint covers.
///
/// Only segments sealed at or before the newest checkpoint (checked first: its manifest, its
/// link to the snapshot, every file's size and SHA-256) and whose every change is older than
/// --keep-changes are deleted, after an immutable record of each object is written under
/// `<table>/expired/`. Verify reports those objects as expired by policy, not missing.
/// Afterwards, restore offers: any instant from the checkpoint's newest change on, the
/// checkpointed snapshot, and every later snapshot. Use --dry-run to see what would go.
#[derive(clap::Args, Debug)]
pub(crate) struct ExpireArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Keep changes this recent (e.g. 35d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = output::parse_duration)]
    keep_changes: std::time::Duration,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run_expire(args: ExpireArgs, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let keep = i64::try_from(args.keep_changes.as_millis()).unwrap_or(i64::MAX);
    let report = expire(&store, &args.at.table, keep, args.dry_run, &SystemClock).await?;
    out.result(&report, || {
        println!(
            "{} {} object(s) ({}) of {} older than {} and covered by checkpoint {}; {} segment(s) kept",
            if report.dry_run {
                "would expire"
            } else {
                "expired"
            },
            report.objects,
            output::size(report.bytes),
            report.table,
            report.cutoff,
            report.checkpoint,
            report.kept
        );
        if let Some(r) = &report.record {
            println!("  recorded in {r}");
        }
        if let Some(t) = &report.restorable_from {
            println!(
                "  restorable: snapshot {} and later, and any instant from {t}",
                report.checkpoint
            );
        }
    })
}

//! `streamseal compact`: fewer, larger objects for Athena; small segments deleted once safe.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use streamseal::ops::compact::CompactOptions;
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// Rewrite small sealed segments as large objects (Athena reads fewer files), and delete
/// the small ones once that is sealed and old enough.
///
/// Each run does two things. (1) For hours that ended at least --older-than ago, packs the
/// segments one snapshot sealed in that hour into objects of up to --target-size MiB, next
/// to them, and publishes each through the segment log; the next seal checks and records
/// it, after which restore and verify read the compacted object instead. (2) For
/// compactions sealed at least --grace ago, points that snapshot's Athena file list at the
/// compacted objects and deletes the small segments. Capture can keep running: only sealed
/// segments are read. Run it on a schedule, after seals.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Only hours that ended at least this long ago (e.g. 90m, 6h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = output::parse_duration)]
    older_than: Duration,
    /// Largest compacted object, MiB.
    #[arg(long, value_name = "MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    target_size: u64,
    /// Delete small segments once their compaction has been sealed this long (readers that
    /// started before keep working until then).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = output::parse_duration)]
    grace: Duration,
    /// Show what would be written and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let progress = Arc::new(Progress::default());
    let options = CompactOptions {
        older_than_ms: args.older_than.as_millis() as i64,
        target_bytes: args.target_size << 20,
        grace_ms: args.grace.as_millis() as i64,
        dry_run: args.dry_run,
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let shown = out.progress("compact", progress);
    let report = streamseal::ops::compact::compact(&store, &args.at.table, &options).await?;
    drop(shown);
    out.result(&report, || {
        let verb = if args.dry_run { "would write" } else { "wrote" };
        for o in &report.written {
            println!(
                "{verb} {} ({} segments, {} rows, {} -> {})",
                o.key,
                o.parts,
                o.rows,
                output::size(o.bytes_in),
                output::size(o.bytes_out)
            );
        }
        let parts: usize = report.written.iter().map(|o| o.parts).sum();
        let unsealed = report.unsealed + if args.dry_run { 0 } else { report.written.len() };
        println!(
            "{verb} {} compacted object(s) from {parts} of {} candidate segment(s); {} {} small segment(s) whose compaction was sealed over the grace period ago ({} Athena list(s) rewritten); {} compaction(s) within the grace period; {unsealed} unsealed compaction(s){}; in {}",
            report.written.len(),
            report.candidates,
            if args.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            report.deleted.len(),
            report.symlinks_rewritten,
            report.waiting_for_grace,
            if report.written.is_empty() && report.unsealed == 0 {
                ""
            } else {
                " (seal to publish them)"
            },
            output::millis(report.elapsed_ms)
        );
    })
}

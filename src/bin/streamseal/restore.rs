//! `streamseal restore`: a snapshot, or an instant, into DynamoDB or files, checked.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use streamseal::aws::restore::{Request, Target, run as restore};
use streamseal::ops::restore::{Point, RestoreError};
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// Restore a sealed snapshot (or any instant the backup covers) into DynamoDB or files.
///
/// Rebuilds the table state from base state plus changes (latest change per key, REMOVEs
/// dropped, duplicates ignored) in bounded memory, writes it to --to, then reads the target
/// back and compares item count and state digest; exit status 1 on any difference, naming
/// a few differing keys. A DynamoDB restore that stops midway resumes when rerun with the
/// same arguments (finished partitions are not rewritten). AWS settings come from the
/// standard environment.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Snapshot id, or "latest".
    #[arg(long, value_name = "ID|latest", conflicts_with = "as_of")]
    snapshot: Option<String>,
    /// Restore the state as of this instant (RFC 3339, e.g. 2026-11-27T14:00:00Z) instead of a
    /// snapshot; it must be within what the latest snapshot covers.
    #[arg(long, value_name = "RFC3339")]
    as_of: Option<String>,
    /// dynamodb://TABLE; file://DIR for gzip DynamoDB JSON lines (DynamoDB's import format);
    /// or s3://bucket/prefix for the same files in S3, with the `aws dynamodb import-table`
    /// request that loads them into a new table (no write capacity used; new tables only).
    #[arg(long, value_name = "URI")]
    to: String,
    /// Create the DynamoDB table as the backup recorded the original: keys, attribute types,
    /// billing mode and capacity, secondary indexes, TTL and stream settings (recorded by the
    /// Lambda and `tail`). A backup with only a key schema (a schema file's [key]) gets an
    /// on-demand table with that key.
    #[arg(long)]
    create_table: bool,
    /// Memory budget for rebuilding the state; beyond it, changes are spilled to disk.
    #[arg(long, value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    memory_mb: u64,
    /// Directory for spill files (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Parallel BatchWriteItem calls.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Refuse (before writing anything) a chain holding quarantined records that could be a
    /// key's latest change. Without it, such keys are left out and named, and every other item
    /// is restored and checked.
    #[arg(long)]
    strict: bool,
    /// Partitions rebuilt and written at once (each holds one partition in memory, so more
    /// partitions are used to stay within --memory-mb).
    #[arg(long, value_name = "N", default_value_t = crate::common::default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Rebuild from the whole history even when a state checkpoint could start the restore
    /// (a cross-check of the checkpoint; slower).
    #[arg(long)]
    from_history: bool,
    /// Bring an existing dynamodb://TABLE to the snapshot or instant by writing only what
    /// differs (scan the table, compare with the backup's state key by key, put or delete),
    /// each write conditional on the item still holding what the scan read: a key changed
    /// since is a conflict, left alone and named. Every written key is read back. The table
    /// keeps its name, stream, alarms and IAM.
    #[arg(long, conflicts_with = "create_table")]
    in_place: bool,
    /// With --in-place: print the plan (puts, deletes, unchanged), write nothing.
    #[arg(long, requires = "in_place")]
    dry_run: bool,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let to = Target::parse(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let point = match (&args.as_of, &args.snapshot) {
        (Some(t), _) => Point::AsOf(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| anyhow::anyhow!("--as-of {t:?} is not an RFC 3339 instant: {e}"))?
                .timestamp_millis(),
        ),
        (None, s) => Point::Snapshot(s.clone().unwrap_or_else(|| "latest".into())),
    };
    let store = args.at.open().await?;
    if args.in_place {
        let Target::Dynamo(target) = &to else {
            bail!("--in-place needs --to dynamodb://TABLE");
        };
        return in_place(&args, &store, &point, target, out).await;
    }
    let client = match &to {
        Target::Dynamo(_) => Some(streamseal::aws::dynamodb::client_from_env().await),
        Target::Files(_) | Target::Objects(_) => None,
    };
    let mut request = Request::new(&args.at.table, point, to);
    request.create_table = args.create_table;
    request.materialize.memory_mb = args.memory_mb as usize;
    request.materialize.spill_dir = args.spill_dir.clone();
    request.workers = usize::from(args.workers);
    request.strict = args.strict;
    request.from_history = args.from_history;
    request.materialize.parallel = usize::from(args.parallel);
    let progress = Arc::new(Progress::default());
    let shown = out.progress("restore", progress.clone());
    let result = restore(&store, client.as_ref(), &request, &progress).await;
    drop(shown);
    let report = result.map_err(|e| match e {
        RestoreError::NoTargetTable { table } => anyhow::anyhow!(
            "target table {table} does not exist; create it, or pass --create-table"
        ),
        RestoreError::OutOfRange { at, why } => anyhow::anyhow!("--as-of {at}: {why}"),
        RestoreError::StrictRefused { records, keys } => anyhow::anyhow!(
            "--strict: the chain holds {records} quarantined record(s) whose change cannot be written ({keys}); nothing was written. Without --strict the restore writes every other item and names the keys left out."
        ),
        e => e.into(),
    })?;
    out.result(&report, || {
        println!(
            "restored {} of {} ({} partition(s)) to {}: {} items from {} changes in {} ({:.0} items/s){}",
            match &report.as_of {
                Some(t) => format!("as of {t}"),
                None => format!("snapshot {}", report.snapshot_id),
            },
            report.table,
            report.partitions,
            report.to,
            report.items,
            report.changes,
            output::millis(report.elapsed_ms),
            report.items as f64 / (report.elapsed_ms.max(1) as f64 / 1000.0),
            if report.resumed { ", resumed" } else { "" }
        );
        if let Some(c) = &report.checkpoint {
            println!("  started from the state checkpoint of snapshot {c}");
        }
        println!(
            "  self-check: target holds {} items, digest {} -> {}",
            report.target_items,
            report.target_digest.to_hex(),
            if report.matches { "MATCH" } else { "MISMATCH" }
        );
        for k in &report.differing_keys {
            println!("  differs: {k}");
        }
        if !report.quarantined.is_empty() {
            println!(
                "  {} key(s) left out: their latest change is a quarantined record, kept verbatim (the rest was restored and checked without them):",
                report.quarantined.len()
            );
            for q in &report.quarantined {
                println!(
                    "  quarantined: {} (sequence number {}, record at {})",
                    q.key, q.sequence_number, q.object
                );
            }
        }
        if let Some(why) = &report.unproven {
            println!("  note: not proven against the snapshot: {why}");
        }
        if let Some(req) = &report.import_request {
            println!(
                "  load them into a new table (rename TableName as you like; TTL and the stream are set afterwards; local indexes cannot be: use --create-table for a table that has them):"
            );
            println!(
                "  aws dynamodb import-table --cli-input-json '{}'",
                serde_json::to_string(req).unwrap_or_default()
            );
        }
    })?;
    if !report.matches {
        bail!(
            "the restored {} does not match the backup ({} items and digest {} expected, {} found)",
            report.to,
            report.items,
            report.digest.to_hex(),
            report.target_items
        );
    }
    Ok(())
}

async fn in_place(
    args: &Args,
    store: &Arc<dyn streamseal::store::ObjectStore>,
    point: &Point,
    target: &str,
    out: &Output,
) -> Result<()> {
    let client = streamseal::aws::dynamodb::client_from_env().await;
    let mut options = streamseal::aws::inplace::InPlaceOptions {
        dry_run: args.dry_run,
        workers: usize::from(args.workers),
        ..Default::default()
    };
    options.materialize.memory_mb = args.memory_mb as usize;
    options.materialize.spill_dir = args.spill_dir.clone();
    let progress = Arc::new(Progress::default());
    let shown = out.progress("restore in place", progress.clone());
    let result = streamseal::aws::inplace::restore_in_place(
        store,
        &client,
        &args.at.table,
        point,
        target,
        &options,
        &progress,
    )
    .await;
    drop(shown);
    let r = result?;
    out.result(&r, || {
        println!(
            "{} {} to {} of {}: {} scanned, {} in the backup, {} unchanged, {} put, {} deleted, {} conflict(s), in {}",
            if r.dry_run { "would bring" } else { "brought" },
            r.target_table,
            match &r.as_of {
                Some(t) => format!("its state as of {t}"),
                None => format!("snapshot {}", r.snapshot_id),
            },
            r.table,
            r.scanned,
            r.backup_items,
            r.unchanged,
            r.puts,
            r.deletes,
            r.conflicts.len(),
            output::millis(r.elapsed_ms)
        );
        if !r.dry_run {
            println!("  read back: {} of {} written keys hold the backup's state", r.verified, r.puts + r.deletes - r.conflicts.len() as u64);
        }
        for k in &r.conflicts {
            println!("  conflict (changed since the scan, left alone): {k}");
        }
        for k in &r.not_verified {
            println!("  not as intended when read back: {k}");
        }
        for k in &r.unknown {
            println!("  left alone: {k} (its latest change in the backup is a quarantined record)");
        }
    })?;
    if !r.not_verified.is_empty() {
        bail!(
            "{} written key(s) do not hold the backup's state when read back (changed again meanwhile?); rerun to bring them",
            r.not_verified.len()
        );
    }
    if !r.conflicts.is_empty() {
        bail!(
            "{} key(s) changed in {} since the scan and were left alone; rerun to bring them too",
            r.conflicts.len(),
            r.target_table
        );
    }
    Ok(())
}

//! `streamseal seal`: seal the latest snapshot, then verify it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use streamseal::ops::verify::{Scope, VerifyOptions, VerifyReport, verify};
use streamseal::progress::Progress;
use streamseal::store::{ObjectStore, RetentionMode};

use crate::common::{self, TableTarget};
use crate::output::{self, Output};

/// Seal the latest snapshot: an immutable manifest of everything captured so far.
///
/// Seals every log entry waiting in the inbox (only what is not sealed yet: O(new
/// changes), whatever the writers' clocks), resolves records stored twice by redelivered
/// or bisected batches, records gaps, rejected entries and quarantined records in the
/// findings ledger, writes the manifest once (If-None-Match), removes the sealed entries
/// from the inbox, then runs a quick verify of the new snapshot. Exit status is that
/// verify's: 0 ok, 3 incomplete (open findings), 4 corrupt; 1 if the seal failed.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Why: recorded in the manifest (e.g. "INC-1234 failover drill").
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Schema file whose [key] is recorded in the manifest (restores use it to create tables).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Write the manifest under S3 Object Lock for this many days (the bucket must have
    /// Object Lock enabled).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    retention_days: Option<u32>,
    /// Object Lock mode for --retention-days.
    #[arg(
        long,
        value_enum,
        default_value = "compliance",
        requires = "retention_days"
    )]
    retention_mode: Mode,
    /// Skip the quick verify after sealing.
    #[arg(long)]
    no_verify: bool,
}

/// `--retention-mode`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// Nobody, not even the root user, can delete or shorten it.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let key_schema = common::load_schema(args.schema.as_ref())?.and_then(|s| s.key);
    let progress = Arc::new(Progress::default());
    let options = streamseal::ops::seal::SealOptions {
        reason: args
            .reason
            .clone()
            .unwrap_or_else(|| format!("manual: streamseal seal by {}", common::whoami())),
        key_schema,
        retention: args.retention_days.map(|d| {
            let mode = match args.retention_mode {
                Mode::Compliance => RetentionMode::Compliance,
                Mode::Governance => RetentionMode::Governance,
            };
            (mode, d)
        }),
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let shown = out.progress("seal", progress);
    let report = streamseal::ops::seal::seal(&store, &args.at.table, &options).await?;
    let verify = match args.no_verify {
        true => None,
        false => Some(verify_sealed(&store, &args.at.table, &report.manifest.snapshot_id).await?),
    };
    drop(shown);
    out.result(&serde_json::json!({"seal": report, "verify": verify}), || {
        let m = &report.manifest;
        println!(
            "sealed snapshot {} of {} in {}: {} new segment(s), {} new row(s), {} ({} duplicate segment(s) and {} duplicate row(s) resolved)",
            m.snapshot_id,
            m.table,
            output::millis(report.elapsed_ms),
            m.files.segments,
            m.files.rows,
            output::size(m.files.segment_bytes),
            m.files.duplicate_segments,
            m.files.duplicate_rows
        );
        println!(
            "  chain: {} segment(s), {} row(s), {} live item(s), state digest {}",
            m.totals.segments,
            m.totals.rows,
            m.item_count,
            m.state_digest
                .map_or("unknown (stream lacks NEW_AND_OLD_IMAGES)".into(), |d| d
                    .to_hex())
        );
        println!(
            "  newest change {}, lag {}; manifest {}",
            common::instant(m.watermark.newest_change_ms),
            report
                .lag_ms
                .map_or("n/a".into(), |l| output::millis(l.max(0) as u64)),
            report.manifest_key
        );
        if report.leftover_log_entries > 0 {
            println!(
                "  removed {} entr{} the previous seal had sealed but not removed from the inbox",
                report.leftover_log_entries,
                if report.leftover_log_entries == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
        }
        for f in &report.findings {
            println!(
                "  new [{}] {}: {}{}",
                f.kind,
                f.object,
                f.problem,
                f.id.as_deref()
                    .map(|id| format!(" (finding {id})"))
                    .unwrap_or_default()
            );
        }
        if m.quarantined_records > 0 || m.known_gaps > 0 || report.open_findings > 0 {
            println!(
                "  {} quarantined record(s), {} known gap(s) in the chain; {} finding(s) open",
                m.quarantined_records, m.known_gaps, report.open_findings
            );
        }
        if let Some(v) = &verify {
            print!("{}", v.render());
        }
    })?;
    match verify {
        Some(v) => output::verdict(&v, "sealed, then verified"),
        None => Ok(()),
    }
}

/// The quick verify a seal runs on the snapshot it wrote: its own segments, the whole chain's
/// manifests, the ledger.
pub(crate) async fn verify_sealed(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    id: &str,
) -> Result<VerifyReport> {
    let options = VerifyOptions {
        scope: Scope::Snapshot,
        ..Default::default()
    };
    Ok(verify(store, table, id, options).await?)
}

//! `streamseal verify`: is a sealed snapshot complete, intact, and nothing extra?

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use streamseal::ops::verify::{Mode, Scope, VerifyOptions};
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// Verify a sealed snapshot: complete, intact, nothing extra. Names every problem.
///
/// Quick (default): manifest digests along the parent chain, the file lists' and the
/// findings ledger's sums, and every segment's and quarantined record's size and SHA-256
/// via HEAD. --deep downloads each segment, recomputes SHA-256, parses the Parquet, counts
/// rows and recomputes digest deltas, rebuilds the ledger from the chain, and (for the
/// latest snapshot) audits the store for captured data no snapshot accounts for.
///
/// Exit status: 0 complete and intact (acknowledged findings allowed); 3 incomplete
/// (open gaps, rejected entries, quarantined records or orphans: the backup is intact
/// but known to lack them); 4 corrupt (a sealed object is missing or altered); 1 verify
/// could not run.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Snapshot id, or "latest".
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    snapshot: String,
    /// Download and recompute everything instead of checking metadata; for the latest
    /// snapshot, also audit the store for captured data no snapshot accounts for.
    #[arg(long)]
    deep: bool,
    /// Check only the segments this snapshot sealed, not the whole chain's (the chain's
    /// manifests are still checked).
    #[arg(long)]
    only_new: bool,
    /// Deep audit: judge an object no snapshot accounts for only once it is this much older
    /// than the latest seal (a writer may still be between the object and its entry).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = output::parse_duration)]
    orphan_grace: Duration,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let progress = Arc::new(Progress::default());
    let options = VerifyOptions {
        mode: if args.deep { Mode::Deep } else { Mode::Quick },
        scope: if args.only_new {
            Scope::Snapshot
        } else {
            Scope::Chain
        },
        orphan_grace_ms: args.orphan_grace.as_millis() as i64,
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let shown = out.progress("verify", progress);
    let report =
        streamseal::ops::verify::verify(&store, &args.at.table, &args.snapshot, options).await?;
    drop(shown);
    out.result(&report, || print!("{}", report.render()))?;
    output::verdict(&report, "verify")
}

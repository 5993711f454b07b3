//! `streamseal diff`: the keys that differ between two points of a backup.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use streamseal::ops::diff::{Change, DiffOptions, diff};
use streamseal::ops::restore::Point;
use streamseal::progress::Progress;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// List the keys inserted, removed and changed between two points of a backup.
///
/// Each point is a snapshot id, `latest`, or an RFC 3339 instant the change log covers. Both
/// states are rebuilt as a restore would (bounded memory, spilled to disk in buckets by key),
/// then compared bucket by bucket: memory stays bounded whatever the table's size. Output: one
/// line per key (`+` inserted, `-` removed, `~` changed), then a summary; with --json, one JSON
/// object per key and a final `{"summary": ...}`. A key whose latest change at either point is
/// a quarantined record cannot be judged and is listed as unknown, never as removed.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// The first point: a snapshot id, `latest`, or an RFC 3339 instant.
    #[arg(long, value_name = "ID|RFC3339")]
    from: String,
    /// The second point.
    #[arg(long, value_name = "ID|RFC3339", default_value = "latest")]
    to: String,
    /// Print both images of each differing key, not only their SHA-256.
    #[arg(long)]
    images: bool,
    /// Memory budget for rebuilding each state; beyond it, changes are spilled to disk.
    #[arg(long, value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    memory_mb: u64,
    /// Directory for spill and bucket files (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
}

/// A snapshot id (or `latest`), or an instant.
fn point(flag: &str, text: &str) -> Result<Point> {
    if text == "latest" || text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Point::Snapshot(text.to_owned()));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| Point::AsOf(t.timestamp_millis()))
        .map_err(|e| {
            anyhow::anyhow!(
                "{flag} {text:?} is neither a snapshot id (digits, or latest) nor an RFC 3339 instant: {e}"
            )
        })
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let from = point("--from", &args.from)?;
    let to = point("--to", &args.to)?;
    let store = args.at.open().await?;
    let mut options = DiffOptions {
        images: args.images,
        work_dir: args.spill_dir.clone(),
        ..Default::default()
    };
    options.materialize.memory_mb = args.memory_mb as usize;
    options.materialize.spill_dir = args.spill_dir.clone();
    let progress = Arc::new(Progress::default());
    let shown = out.progress("diff", progress.clone());
    let json = out.json();
    let mut emit = |d: &streamseal::ops::diff::KeyDiff| {
        if json {
            println!("{}", serde_json::to_string(d).unwrap_or_default());
        } else {
            let sign = match d.change {
                Change::Inserted => '+',
                Change::Removed => '-',
                Change::Changed => '~',
            };
            match (args.images, &d.from, &d.to) {
                (true, from, to) => println!(
                    "{sign} {}\n    from: {}\n    to:   {}",
                    d.key,
                    from.as_deref().unwrap_or("(absent)"),
                    to.as_deref().unwrap_or("(absent)")
                ),
                _ => println!("{sign} {}", d.key),
            }
        }
    };
    let report = diff(
        &store,
        &args.at.table,
        &from,
        &to,
        &options,
        &progress,
        &mut emit,
    )
    .await?;
    drop(shown);
    out.result(&serde_json::json!({ "summary": &report }), || {
        println!(
            "{} from {} ({} items) to {} ({} items): {} inserted, {} removed, {} changed, in {}",
            report.table,
            report.from,
            report.from_items,
            report.to,
            report.to_items,
            report.inserted,
            report.removed,
            report.changed,
            output::millis(report.elapsed_ms)
        );
        for why in &report.unproven {
            println!("  note: not proven against the snapshot ({why})");
        }
        for k in &report.unknown {
            println!("  unknown: {k} (its latest change at one point is a quarantined record)");
        }
    })
}

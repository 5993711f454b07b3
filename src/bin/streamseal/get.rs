//! `streamseal get`: one item as of a snapshot or an instant, or its history.

use anyhow::Result;
use streamseal::ops::get::get;
use streamseal::ops::restore::Point;

use crate::common::TableTarget;
use crate::output::{self, Output};

/// Show one item as of a snapshot or an instant, or every change of it (--history).
///
/// Reads only what the lookup needs: from the newest state checkpoint that can start it, the
/// one checkpoint file of the key's partition, then the segments sealed after it; --history
/// reads the whole chain. The answer follows the restore's rule exactly (latest change by
/// sequence number; a removed item is absent; a key whose latest change is a quarantined record
/// is unknown and says where the record is). Prints the item as DynamoDB JSON; --json gives the
/// report with the objects read.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// The key, as DynamoDB JSON: '{"pk":{"S":"customer#1"},"sk":{"S":"order#7"}}'. Checked
    /// against the table's key schema when the backup recorded it (the Lambda and `tail` do).
    #[arg(long, value_name = "JSON")]
    key: String,
    /// Snapshot id, or "latest".
    #[arg(long, value_name = "ID|latest", conflicts_with = "as_of")]
    snapshot: Option<String>,
    /// The item as of this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    as_of: Option<String>,
    /// Every change of the item up to that point, oldest first.
    #[arg(long)]
    history: bool,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let point = match (&args.as_of, &args.snapshot) {
        (Some(t), _) => Point::AsOf(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| anyhow::anyhow!("--as-of {t:?} is not an RFC 3339 instant: {e}"))?
                .timestamp_millis(),
        ),
        (None, s) => Point::Snapshot(s.clone().unwrap_or_else(|| "latest".into())),
    };
    let store = args.at.open().await?;
    let r = get(&store, &args.at.table, &args.key, &point, args.history).await?;
    out.result(&r, || {
        for c in &r.history {
            println!(
                "{}  {}  {}",
                crate::common::instant(c.created_ms),
                c.sequence_number,
                match &c.image {
                    None => "REMOVED".to_owned(),
                    Some(i) if i.starts_with('?') => format!("(quarantined record {})", c.object),
                    Some(i) => i.clone(),
                }
            );
        }
        match (&r.item, &r.quarantined) {
            (Some(item), _) => println!("{item}"),
            (None, Some(object)) => println!(
                "unknown: the key's latest change is a quarantined record, kept at {object}"
            ),
            (None, None) => println!("(no such item)"),
        }
        eprintln!(
            "{} of {} at {}: {} of {} object(s) read{} in {}",
            r.key,
            r.table,
            r.as_of
                .clone()
                .unwrap_or_else(|| format!("snapshot {}", r.snapshot_id)),
            r.objects_read,
            r.objects_in_plan,
            r.checkpoint
                .as_ref()
                .map(|c| format!(" (from the checkpoint of snapshot {c})"))
                .unwrap_or_default(),
            output::millis(r.elapsed_ms)
        );
    })?;
    // An absent item is an answer, not an error: exit 0, said on stdout.
    Ok(())
}

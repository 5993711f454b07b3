//! `streamseal snapshots`: a table's sealed snapshots and findings.

use anyhow::Result;
use streamseal::model::layout::TableLayout;
use streamseal::model::manifest;

use crate::common::{self, TableTarget};
use crate::output::Output;

/// List a table's sealed snapshots, oldest first, and the findings ledger.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let store = args.at.open().await?;
    let layout = TableLayout::new(&args.at.table);
    let ids = manifest::list_snapshot_ids(store.as_ref(), &layout, None).await?;
    let mut rows = Vec::new();
    for id in &ids {
        rows.push(manifest::read_manifest(store.as_ref(), &layout, id).await?);
    }
    // The latest ledger holds every finding and decision of the chain.
    let ledger = match rows.last() {
        Some(m) => Some(manifest::read_ledger(store.as_ref(), m).await?),
        None => None,
    };
    let findings = ledger.map(|l| l.entries).unwrap_or_default();
    out.result(
        &serde_json::json!({"snapshots": rows, "findings": findings}),
        || {
            if rows.is_empty() {
                println!(
                    "no sealed snapshots of {} in {}",
                    args.at.table,
                    store.url()
                );
                return;
            }
            println!(
                "{:<10}  {:<24}  {:>9}  {:>11}  {:>10}  {:<24}  {:>5}  {:>5}  reason",
                "id", "created", "segments", "rows", "items", "newest change", "open", "acked"
            );
            for m in &rows {
                let (open, acked) = m
                    .findings
                    .as_ref()
                    .map_or((0, 0), |f| (f.open, f.acknowledged));
                println!(
                    "{:<10}  {:<24}  {:>9}  {:>11}  {:>10}  {:<24}  {:>5}  {:>5}  {}",
                    m.snapshot_id,
                    m.created_at,
                    m.totals.segments,
                    m.totals.rows,
                    m.item_count,
                    common::instant(m.watermark.newest_change_ms),
                    open,
                    acked,
                    m.reason
                );
            }
            if !findings.is_empty() {
                println!("findings (open until acknowledged; decisions are kept for good):");
            }
            for e in &findings {
                match &e.acknowledged {
                    None => println!(
                        "  {}  open          sealed in {}  {}: {}",
                        e.id, e.sealed_in, e.subject, e.detail
                    ),
                    Some(a) => println!(
                        "  {}  acknowledged  sealed in {}, decided in {} by {}: {}",
                        e.id, e.sealed_in, a.snapshot_id, a.by, a.reason
                    ),
                }
            }
        },
    )
}

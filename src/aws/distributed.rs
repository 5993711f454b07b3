//! A DynamoDB restore split across workers: one plan, one restore per key-hash partition (a
//! Lambda invocation each, fanned out by a Step Functions Distributed Map, or any caller's
//! tasks), and one check that combines their digests and proves the table.
//!
//! ```text
//! plan_distributed   snapshot resolved, target checked or created (empty, or this restore's),
//!                    partitions chosen (the checkpoint's, so each reads one checkpoint file)
//!                    ──▶ <table>/restores/<sha16>-plan.json, the iterations
//! run_partition(i)   checkpoint file i (or the history) + changes since, keys of partition i only
//!                    ──▶ BatchWriteItem ──▶ restores/<sha16>-<i>.json when done (a rerun skips it)
//!                    ──▶ {items, digest, quarantined}
//! check_distributed  every partition once, complete; Σ digests (+ quarantined) == the snapshot's;
//!                    parallel Scan (resumable, state kept in the plan object) == Σ digests
//! ```
//!
//! Each partition reads the changes sealed after the checkpoint in full and keeps its own keys:
//! the distributed path pays off once the checkpoint (the table) is much larger than the
//! recent changes, which is the point of checkpoints.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::aws::dynamodb::{self, CheckpointAt, DynamoSink, ScanState};
use crate::model::item::StateDigest;
use crate::model::layout::TableLayout;
use crate::ops::restore::{self, MaterializeOptions, Point, RestoreError};
use crate::progress::Progress;
use crate::store::{ObjectStore, PutMode, StoreError};

/// Most partitions of a distributed restore (each iteration's answer travels back through the
/// state machine, whose payload is bounded).
pub const MAX_PARTITIONS: usize = 500;

/// What [`plan_distributed`] decided, and what the check keeps between calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributedPlan {
    /// Source table.
    pub table: String,
    /// The snapshot restored (resolved: every iteration restores the same one).
    pub snapshot_id: String,
    /// Target table.
    pub target_table: String,
    /// Partitions.
    pub partitions: usize,
    /// The checkpoint the iterations start from, if any.
    pub checkpoint: Option<String>,
    /// The check's scan, where it stands.
    #[serde(default)]
    pub(crate) scan: Option<ScanState>,
}

/// One partition's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionOutcome {
    /// Partition.
    pub partition: usize,
    /// Of.
    pub partitions: usize,
    /// Items written (or found written by an earlier run).
    pub items: u64,
    /// Their digest (hex).
    pub digest: String,
    /// Keys left out: their latest change is a quarantined record.
    pub quarantined_keys: u64,
    /// The sum of those records' image hashes (hex), when each has one.
    pub quarantined_digest: Option<String>,
    /// The partition was written by an earlier run.
    pub skipped: bool,
}

/// What [`check_distributed`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckOutcome {
    /// Source table.
    pub table: String,
    /// Snapshot.
    pub snapshot_id: String,
    /// Target table.
    pub target_table: String,
    /// False: the scan ran out of time; call again.
    pub complete: bool,
    /// The partitions add up to the snapshot and the table holds exactly them.
    pub matches: bool,
    /// Items the partitions wrote.
    pub items: u64,
    /// Items the scan found.
    pub target_items: u64,
    /// Keys left out (quarantined records).
    pub quarantined_keys: u64,
    /// Why the partitions could not be compared with the snapshot, if they could not.
    pub unproven: Option<String>,
}

fn label(table: &str, snapshot: &str, target: &str, identity: &str) -> String {
    format!("distributed {table} snapshot {snapshot} -> {identity} ({target})")
}

fn plan_key(layout: &TableLayout, label: &str) -> String {
    layout.restore_checkpoint_key(&format!(
        "{}-plan",
        &hex::encode(Sha256::digest(label.as_bytes()))[..16]
    ))
}

async fn read_plan(
    store: &Arc<dyn ObjectStore>,
    key: &str,
) -> Result<Option<DistributedPlan>, RestoreError> {
    match store.get(key).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RestoreError::Corrupt {
                key: key.to_owned(),
                problem: format!("not a distributed restore plan: {e}"),
            }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_plan(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    plan: &DistributedPlan,
) -> Result<(), RestoreError> {
    // Plain structs serialize.
    let body = serde_json::to_vec(plan).unwrap_or_default();
    store
        .put(key, bytes::Bytes::from(body), PutMode::Overwrite)
        .await?;
    Ok(())
}

/// Plans a distributed restore of `snapshot` into `target`: checks (or creates) the table,
/// refuses a non-empty one unless this restore started it, and fixes the partitions (given, or
/// the checkpoint's, or one per 64 MiB of stored changes, at most [`MAX_PARTITIONS`]).
pub async fn plan_distributed(
    store: &Arc<dyn ObjectStore>,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    snapshot: &str,
    target: &str,
    partitions: Option<usize>,
    create_table: bool,
) -> Result<DistributedPlan, RestoreError> {
    let plan = restore::plan(store.as_ref(), table, &Point::Snapshot(snapshot.to_owned())).await?;
    let id = plan.manifest.snapshot_id.clone();
    super::restore::prepare_table(client, target, &plan, create_table).await?;
    let identity = dynamodb::table_identity(client, target).await?;
    let layout = TableLayout::new(table);
    let key = plan_key(&layout, &label(table, &id, target, &identity));
    if let Some(existing) = read_plan(store, &key).await? {
        return Ok(existing);
    }
    if !dynamodb::is_empty(client, target).await? {
        return Err(RestoreError::Target(format!(
            "target table {target} is not empty; restore into a new or empty table (nothing was written)"
        )));
    }
    let partitions = partitions
        .or(plan.checkpoint.as_ref().map(|c| c.partitions))
        .unwrap_or_else(|| plan.bytes().div_ceil(64 << 20) as usize)
        .clamp(1, MAX_PARTITIONS);
    let d = DistributedPlan {
        table: table.to_owned(),
        snapshot_id: id,
        target_table: target.to_owned(),
        partitions,
        checkpoint: plan.checkpoint.as_ref().map(|c| c.snapshot_id.clone()),
        scan: None,
    };
    write_plan(store, &key, &d).await?;
    Ok(d)
}

/// Restores partition `partition` of a planned distributed restore (resumable: a partition
/// recorded as written is not written again, only recomputed).
#[allow(clippy::too_many_arguments)]
pub async fn run_partition(
    store: &Arc<dyn ObjectStore>,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    snapshot_id: &str,
    target: &str,
    partition: usize,
    partitions: usize,
    options: &MaterializeOptions,
    workers: usize,
) -> Result<PartitionOutcome, RestoreError> {
    let identity = dynamodb::table_identity(client, target).await?;
    let layout = TableLayout::new(table);
    let base = label(table, snapshot_id, target, &identity);
    let Some(d) = read_plan(store, &plan_key(&layout, &base)).await? else {
        return Err(RestoreError::Target(format!(
            "no distributed restore of {table} snapshot {snapshot_id} into {target} is planned; plan it first"
        )));
    };
    if d.partitions != partitions || partition >= partitions {
        return Err(RestoreError::Target(format!(
            "partition {partition} of {partitions}: the plan has {} partitions",
            d.partitions
        )));
    }
    let plan = restore::plan(
        store.as_ref(),
        table,
        &Point::Snapshot(snapshot_id.to_owned()),
    )
    .await?;
    let part_label = format!("{base} partition {partition}/{partitions}");
    let sink = DynamoSink::new(
        client.clone(),
        target,
        workers,
        15,
        Some(CheckpointAt {
            store: store.clone(),
            key: layout
                .restore_checkpoint_key(&hex::encode(Sha256::digest(part_label.as_bytes()))[..16]),
            label: part_label,
        }),
    )
    .await?;
    let mut options = options.clone();
    options.partitions = Some(partitions);
    options.only_partition = Some(partition);
    let m = restore::materialize(store, &plan, &options, &sink, &Progress::default()).await?;
    let skipped = sink
        .stats()
        .partitions_skipped
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0;
    Ok(PartitionOutcome {
        partition,
        partitions,
        items: m.items,
        digest: m.digest.to_hex(),
        quarantined_keys: m.quarantined.len() as u64,
        quarantined_digest: m.quarantined_digest.map(|d| d.to_hex()),
        skipped,
    })
}

/// Combines the partitions' results, compares them with the snapshot, and scans the table
/// (until `deadline`, resumably) to prove it holds exactly them. Removes the restore's
/// checkpoints when it matches.
#[allow(clippy::too_many_arguments)]
pub async fn check_distributed(
    store: &Arc<dyn ObjectStore>,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    snapshot_id: &str,
    target: &str,
    results: &[PartitionOutcome],
    deadline: Option<std::time::Instant>,
    scan_segments: i32,
) -> Result<CheckOutcome, RestoreError> {
    let identity = dynamodb::table_identity(client, target).await?;
    let layout = TableLayout::new(table);
    let base = label(table, snapshot_id, target, &identity);
    let key = plan_key(&layout, &base);
    let Some(mut d) = read_plan(store, &key).await? else {
        return Err(RestoreError::Target(format!(
            "no distributed restore of {table} snapshot {snapshot_id} into {target} is planned"
        )));
    };
    let mut seen = vec![false; d.partitions];
    let mut digest = StateDigest::ZERO;
    let mut quarantined = Some(StateDigest::ZERO);
    let (mut items, mut qkeys) = (0u64, 0u64);
    let bad = |why: String| RestoreError::Target(format!("restore check: {why}"));
    for r in results {
        if r.partitions != d.partitions || r.partition >= d.partitions {
            return Err(bad(format!(
                "a result for partition {} of {} (the plan has {})",
                r.partition, r.partitions, d.partitions
            )));
        }
        if std::mem::replace(&mut seen[r.partition], true) {
            return Err(bad(format!("partition {} reported twice", r.partition)));
        }
        digest.add(&StateDigest::from_hex(&r.digest).map_err(|e| bad(format!("digest {e}")))?);
        quarantined = match (&r.quarantined_digest, quarantined) {
            (Some(h), Some(mut q)) => {
                q.add(&StateDigest::from_hex(h).map_err(|e| bad(format!("digest {e}")))?);
                Some(q)
            }
            _ => None,
        };
        items += r.items;
        qkeys += r.quarantined_keys;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(bad(format!(
            "partition {missing} has no result; run every partition first"
        )));
    }
    let plan = restore::plan(
        store.as_ref(),
        table,
        &Point::Snapshot(snapshot_id.to_owned()),
    )
    .await?;
    let mut unproven = None;
    match plan.expected {
        Some(_) if plan.unknown_effects > 0 => {
            unproven = Some(format!(
                "the chain holds {} entries whose changes it lacks or cannot read",
                plan.unknown_effects
            ));
        }
        Some((want, n)) => {
            let mut total = digest;
            match quarantined {
                Some(q) => total.add(&q),
                None => {
                    return Err(RestoreError::Unrestorable(
                        "a quarantined record that is a key's latest change has no recorded image hash; the backup cannot prove this restore".into(),
                    ));
                }
            }
            if total != want || (items + qkeys) as i64 != n {
                return Err(RestoreError::Mismatch {
                    snapshot: snapshot_id.to_owned(),
                    what: format!(
                        "the partitions hold {} items with digest {}, the manifest records {n} items with digest {}",
                        items + qkeys,
                        total.to_hex(),
                        want.to_hex()
                    ),
                });
            }
        }
        None => unproven = Some("the snapshot records no state digest".into()),
    }
    let mut scan = d
        .scan
        .clone()
        .unwrap_or_else(|| ScanState::new(scan_segments));
    let scanned = dynamodb::scan_digest_until(client, target, &mut scan, deadline, None).await;
    let complete = scan.complete();
    d.scan = (!complete).then(|| scan.clone());
    write_plan(store, &key, &d).await?;
    scanned?;
    let mut out = CheckOutcome {
        table: table.to_owned(),
        snapshot_id: snapshot_id.to_owned(),
        target_table: target.to_owned(),
        complete,
        matches: false,
        items,
        target_items: 0,
        quarantined_keys: qkeys,
        unproven,
    };
    if !complete {
        return Ok(out);
    }
    let (n, found) = scan.totals()?;
    out.target_items = n;
    out.matches = n == items && found == digest;
    if out.matches {
        // Done: the plan and every partition's checkpoint go.
        let mut keys = vec![key];
        for p in 0..d.partitions {
            let part_label = format!("{base} partition {p}/{}", d.partitions);
            keys.push(
                layout.restore_checkpoint_key(
                    &hex::encode(Sha256::digest(part_label.as_bytes()))[..16],
                ),
            );
        }
        if let Err(e) = crate::store::delete_many(store, &keys, 16, None).await {
            tracing::warn!(error = %e, "could not remove a finished restore's checkpoints");
        }
    }
    Ok(out)
}

//! `restore --in-place`: bring an existing table to a snapshot or an instant by writing only
//! the difference, so the table keeps its name, its stream, its alarms, its IAM and whoever
//! owns it in infrastructure code.
//!
//! ```text
//! parallel Scan of the table ──▶ bucket files by key hash (key, canonical item)   ┐ bounded
//! materialize the backup     ──▶ bucket files by the same hash                    ┘ memory
//! per bucket: keys whose images differ ──▶ PutItem (the backup's image) or DeleteItem,
//!     each conditional on the item still holding what the scan read (every attribute it had;
//!     absent: attribute_not_exists), so a write made since the scan is never overwritten:
//!     that key is a conflict, left alone and named
//! every written key read back (consistent GetItem) ──▶ it holds the backup's state, or named
//! ```
//!
//! The condition compares each top-level attribute the scanned item had: a concurrent write
//! that changes or removes one is a conflict; one that only adds an attribute is not seen.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::aws::AwsError;
use crate::aws::dynamodb::{self, SegmentScan};
use crate::model::schema::KeySchema;
use crate::ops::restore::{self, MaterializeOptions, Point, RestoreError};
use crate::progress::Progress;
use crate::store::ObjectStore;

/// Options of [`restore_in_place`].
#[derive(Debug, Clone)]
pub struct InPlaceOptions {
    /// Materialization (memory budget, spill directory).
    pub materialize: MaterializeOptions,
    /// Parallel scan segments.
    pub scan_segments: i32,
    /// Writes in flight.
    pub workers: usize,
    /// Plan only: nothing is written.
    pub dry_run: bool,
    /// Bucket files per side (more: less memory per bucket compared).
    pub buckets: usize,
}

impl Default for InPlaceOptions {
    fn default() -> Self {
        InPlaceOptions {
            materialize: MaterializeOptions::default(),
            scan_segments: 8,
            workers: 16,
            dry_run: false,
            buckets: 64,
        }
    }
}

/// What [`restore_in_place`] did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct InPlaceReport {
    /// Source table in the backup.
    pub table: String,
    /// The snapshot read.
    pub snapshot_id: String,
    /// The instant, for `--as-of`.
    pub as_of: Option<String>,
    /// The table brought to it.
    pub target_table: String,
    /// Items the scan read.
    pub scanned: u64,
    /// Items of the backup's state.
    pub backup_items: u64,
    /// Keys the same in both.
    pub unchanged: u64,
    /// Items written back (missing or different in the table).
    pub puts: u64,
    /// Items deleted (not in the backup's state).
    pub deletes: u64,
    /// Keys changed in the table since the scan read them: left alone.
    pub conflicts: Vec<String>,
    /// Keys whose latest change in the backup is a quarantined record: left alone.
    pub unknown: Vec<String>,
    /// Written keys read back holding the backup's state.
    pub verified: u64,
    /// Written keys read back holding something else (named).
    pub not_verified: Vec<String>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// One write of the plan.
#[derive(Debug, Clone)]
struct Action {
    key: String,
    /// The backup's image to put; none: delete.
    put: Option<String>,
    /// What the scan read; none: the key was absent.
    scanned: Option<String>,
}

/// Brings `target` to the backup's state at `point`, writing only what differs.
pub async fn restore_in_place(
    store: &Arc<dyn ObjectStore>,
    client: &Client,
    table: &str,
    point: &Point,
    target: &str,
    options: &InPlaceOptions,
    progress: &Progress,
) -> Result<InPlaceReport, RestoreError> {
    let started = Instant::now();
    let plan = restore::plan(store.as_ref(), table, point).await?;
    // The table must exist with the backup's key schema: checked before anything is read.
    let key = match dynamodb::describe_key_schema(client, target).await? {
        None => {
            return Err(RestoreError::NoTargetTable {
                table: target.to_owned(),
            });
        }
        Some(k) => k,
    };
    if let Some(recorded) = &plan.manifest.key_schema
        && *recorded != key
    {
        return Err(RestoreError::Target(format!(
            "target table {target} has another key schema than the snapshot's table; nothing was written"
        )));
    }
    let work = restore::work_dir(
        options.materialize.spill_dir.as_deref(),
        "streamseal-inplace-",
    )?;
    let buckets = options.buckets.clamp(1, 65_536);

    // The table, as it is now, into bucket files.
    progress.stage("scanning the table", 0);
    let scanned = scan_into_buckets(
        client,
        target,
        &key,
        options.scan_segments,
        work.path(),
        buckets,
        progress,
    )
    .await?;
    // The backup's state into bucket files by the same hash.
    let sink = crate::ops::diff::BucketSink::new(work.path(), "backup", buckets, true)?;
    let m = restore::materialize(store, &plan, &options.materialize, &sink, progress).await?;
    let backup_files = sink.finish()?;
    // Deleting and overwriting live items needs a state the backup can prove.
    if let Some(why) = &m.unproven {
        return Err(RestoreError::Unrestorable(format!(
            "restore in place refused, nothing was written: {why}"
        )));
    }

    let mut report = InPlaceReport {
        table: table.to_owned(),
        snapshot_id: plan.manifest.snapshot_id.clone(),
        as_of: plan.as_of_ms.map(crate::model::clock::rfc3339),
        target_table: target.to_owned(),
        scanned: scanned.1,
        backup_items: m.items,
        unchanged: 0,
        puts: 0,
        deletes: 0,
        conflicts: vec![],
        unknown: m.quarantined.iter().map(|q| q.key.clone()).collect(),
        verified: 0,
        not_verified: vec![],
        dry_run: options.dry_run,
        elapsed_ms: 0,
    };
    let unknown: std::collections::HashSet<&str> =
        report.unknown.iter().map(String::as_str).collect();
    let mut actions: Vec<Action> = vec![];
    for (table_file, backup_file) in scanned.0.iter().zip(&backup_files) {
        let mut live = crate::ops::diff::read_bucket(table_file)?;
        for (k, image) in crate::ops::diff::read_bucket(backup_file)? {
            match live.remove(&k) {
                Some(now) if now == image => report.unchanged += 1,
                now => actions.push(Action {
                    key: k,
                    put: Some(image),
                    scanned: now,
                }),
            }
        }
        for (k, now) in live {
            if unknown.contains(k.as_str()) {
                continue;
            }
            actions.push(Action {
                key: k,
                put: None,
                scanned: Some(now),
            });
        }
    }
    actions.sort_by(|a, b| a.key.cmp(&b.key));
    report.puts = actions.iter().filter(|a| a.put.is_some()).count() as u64;
    report.deletes = actions.len() as u64 - report.puts;
    if options.dry_run || actions.is_empty() {
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }

    // Conditional writes, `workers` at once.
    progress.stage("writing differences", actions.len() as u64);
    use futures_util::StreamExt as _;
    let results: Vec<(Action, Result<bool, AwsError>)> =
        futures_util::stream::iter(actions.into_iter().map(|a| {
            let client = client.clone();
            let target = target.to_owned();
            async move {
                let r = write_one(&client, &target, &a).await;
                progress.add(1);
                (a, r)
            }
        }))
        .buffer_unordered(options.workers.max(1))
        .collect()
        .await;
    let mut written = vec![];
    for (a, r) in results {
        match r? {
            true => written.push(a),
            false => report.conflicts.push(a.key),
        }
    }
    report.conflicts.sort();
    // Proof: every written key read back holds the backup's state.
    progress.stage("reading written keys back", written.len() as u64);
    for a in &written {
        let now = get_item(client, target, &a.key).await?;
        if now == a.put {
            report.verified += 1;
        } else {
            report.not_verified.push(a.key.clone());
        }
        progress.add(1);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The item under `key` (canonical JSON), read consistently.
async fn get_item(client: &Client, table: &str, key: &str) -> Result<Option<String>, AwsError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(dynamodb::to_attribute_map(key, "key")?))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| AwsError::call("GetItem", table, e))?;
    match out.item() {
        None => Ok(None),
        Some(item) => {
            let text = dynamodb::from_attribute_map(item)?;
            crate::model::item::canonicalize(&text)
                .map(Some)
                .map_err(|e| AwsError::convert(format!("an item of {table}"), e))
        }
    }
}

/// One conditional write: true when written, false when the item changed since the scan.
async fn write_one(client: &Client, table: &str, a: &Action) -> Result<bool, AwsError> {
    let (expression, names, values) = match &a.scanned {
        None => {
            // Absent when scanned: still absent. Any key attribute will do.
            let key = dynamodb::to_attribute_map(&a.key, "key")?;
            let name = key.keys().next().cloned().unwrap_or_default();
            (
                "attribute_not_exists(#k0)".to_owned(),
                HashMap::from([("#k0".to_owned(), name)]),
                HashMap::new(),
            )
        }
        Some(image) => unchanged_condition(&dynamodb::to_attribute_map(image, "item")?),
    };
    let names = Some(names).filter(|n| !n.is_empty());
    let values = Some(values).filter(|v| !v.is_empty());
    let sent = match &a.put {
        Some(image) => client
            .put_item()
            .table_name(table)
            .set_item(Some(dynamodb::to_attribute_map(image, "item")?))
            .condition_expression(&expression)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                e.into_service_error()
                    .is_conditional_check_failed_exception()
            }),
        None => client
            .delete_item()
            .table_name(table)
            .set_key(Some(dynamodb::to_attribute_map(&a.key, "key")?))
            .condition_expression(&expression)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                e.into_service_error()
                    .is_conditional_check_failed_exception()
            }),
    };
    match sent {
        Ok(()) => Ok(true),
        Err(true) => Ok(false),
        Err(false) => Err(AwsError::Unexpected(format!(
            "a conditional write to {table} of key {} failed (rerun: what is written is not written again)",
            a.key
        ))),
    }
}

/// `#a0 = :v0 AND #a1 = :v1 ...`: every top-level attribute still holds what was scanned.
fn unchanged_condition(
    item: &HashMap<String, AttributeValue>,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut parts = vec![];
    let mut attrs: Vec<(&String, &AttributeValue)> = item.iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, value)) in attrs.into_iter().enumerate() {
        names.insert(format!("#a{i}"), name.clone());
        values.insert(format!(":v{i}"), value.clone());
        parts.push(format!("#a{i} = :v{i}"));
    }
    (parts.join(" AND "), names, values)
}

/// A parallel Scan of `table` into `buckets` files `table-NNNNN` under `dir` (`key \t item`,
/// canonical; the same hash as the backup side): the files and the item count.
async fn scan_into_buckets(
    client: &Client,
    table: &str,
    key: &KeySchema,
    segments: i32,
    dir: &Path,
    buckets: usize,
    progress: &Progress,
) -> Result<(Vec<PathBuf>, u64), RestoreError> {
    let paths: Vec<PathBuf> = (0..buckets)
        .map(|b| dir.join(format!("table-{b:05}")))
        .collect();
    let files: Vec<std::sync::Mutex<BufWriter<std::fs::File>>> = paths
        .iter()
        .map(|p| {
            std::fs::File::create(p)
                .map(|f| std::sync::Mutex::new(BufWriter::new(f)))
                .map_err(|e| RestoreError::Spill {
                    path: p.display().to_string(),
                    source: e,
                })
        })
        .collect::<Result<_, _>>()?;
    let files = Arc::new(files);
    let segments = segments.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for seg in 0..segments {
        let (client, table, key, files) =
            (client.clone(), table.to_owned(), key.clone(), files.clone());
        tasks.spawn(async move {
            let mut scan = SegmentScan::new(client, &table, seg, segments);
            let mut n = 0u64;
            while let Some(items) = scan.next_page().await? {
                for item in &items {
                    let k = dynamodb::key_text(item, &key)?;
                    let text =
                        crate::model::item::canonicalize(&dynamodb::from_attribute_map(item)?)
                            .map_err(|e| AwsError::convert(format!("an item of {table}"), e))?;
                    let b = crate::ops::diff::bucket_of(&k, files.len());
                    let mut f = files[b]
                        .lock()
                        .map_err(|_| AwsError::Unexpected("a scan task panicked".into()))?;
                    // Canonical JSON escapes tabs and newlines: one record per line.
                    writeln!(f, "{k}\t{text}")
                        .map_err(|e| AwsError::Unexpected(format!("bucket file: {e}")))?;
                    n += 1;
                }
            }
            Ok::<u64, AwsError>(n)
        });
    }
    let mut count = 0;
    while let Some(r) = tasks.join_next().await {
        let n = r.map_err(|e| RestoreError::Target(format!("a scan task failed: {e}")))??;
        count += n;
        progress.add(n);
    }
    let files = Arc::try_unwrap(files)
        .map_err(|_| RestoreError::Target("a scan task is still running".into()))?;
    for (f, p) in files.into_iter().zip(&paths) {
        let mut f = f
            .into_inner()
            .map_err(|_| RestoreError::Target("a scan task panicked".into()))?;
        f.flush().map_err(|e| RestoreError::Spill {
            path: p.display().to_string(),
            source: e,
        })?;
    }
    Ok((paths, count))
}

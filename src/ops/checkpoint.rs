//! State checkpoints and retention: `streamseal checkpoint` writes the full state at a sealed
//! snapshot (built from the previous checkpoint, or the base, plus the changes since, in
//! bounded memory), proves it against the snapshot's digest, reads it back, and only then
//! publishes its manifest; `streamseal expire` deletes change segments older than the
//! retention that a checkpoint covers, after writing an immutable record of what it deletes.
//!
//! ```text
//! restore::plan(snapshot N)  ──▶ materialize (exactly P partitions by key hash) ──▶ CheckpointSink
//!     part-<p>.parquet (keys, item, sequence_number; sorted by key), IfAbsent, SHA-256 recorded
//!   ──▶ digest + count == snapshot N's ──▶ every file read back: digest + count again
//!   ──▶ checkpoint-manifests/<N>.json (IfAbsent: the commit)
//! expire: newest checkpoint checked (manifest, snapshot link, every file's size and SHA-256)
//!   ──▶ segments sealed at or before it whose every change is older than the cutoff
//!   ──▶ expired/<checkpoint>-<sha16>.json (IfAbsent) ──▶ objects deleted
//! ```
//!
//! A crash anywhere leaves either no manifest (the files are rewritten identically by a rerun:
//! encoding is deterministic) or a complete checkpoint; an expire record written before a
//! crash names objects that may still exist, which verify accepts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::model::checkpoint::{
    CHECKPOINT_FORMAT, CheckpointFile, CheckpointManifest, ExpireRecord, ExpiredObject,
    PARTITIONING, QuarantinedState,
};
use crate::model::clock::Clock;
use crate::model::item::{ItemHash, StateDigest};
use crate::model::layout::TableLayout;
use crate::model::manifest::{self, ManifestError};
use crate::ops::restore::{self, Item, MaterializeOptions, Point, RestoreError, Sink, SinkError};
use crate::progress::Progress;
use crate::store::{self, ObjectStore, PutMode, PutOutcome, StoreError};

/// Why a checkpoint or an expire failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The snapshot could not be materialized or proven.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot cannot be checkpointed (nothing was published).
    #[error("cannot checkpoint snapshot {snapshot}: {why}")]
    Unprovable {
        /// Snapshot id.
        snapshot: String,
        /// Why.
        why: String,
    },
    /// What was written does not read back as what was materialized (nothing was published).
    #[error("checkpoint of snapshot {snapshot}: {key}: {problem}; nothing was published")]
    ReadBack {
        /// Snapshot id.
        snapshot: String,
        /// Object key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Expire found no checkpoint it can rely on.
    #[error("expire: {0}; nothing was deleted")]
    NoCheckpoint(String),
}

/// Options of [`checkpoint`].
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Memory, spill directory, concurrency and parallelism of the materialization.
    pub materialize: MaterializeOptions,
    /// Partitions (files); default: the previous checkpoint's, else one per 64 MiB of stored
    /// changes read, raised when the memory budget needs more.
    pub partitions: Option<usize>,
}

/// What [`checkpoint`] did.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// Table.
    pub table: String,
    /// The snapshot the checkpoint equals.
    pub snapshot_id: String,
    /// Its manifest's key.
    pub manifest: String,
    /// `history`, `base <id>` or `checkpoint <id>`.
    pub built_from: String,
    /// The checkpoint already existed: nothing was written.
    pub existing: bool,
    /// Items.
    pub items: u64,
    /// Keys held by quarantined records.
    pub quarantined_keys: usize,
    /// Partitions (files).
    pub partitions: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Changes read (after the previous checkpoint).
    pub changes_read: u64,
    /// Digest (hex) of the state, equal to the snapshot's.
    pub digest: String,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// Rows of a checkpoint file per Parquet row group.
const ROWS_PER_GROUP: usize = 64 * 1024;

/// Encodes one partition's items (sorted by key) as a checkpoint file.
fn encode(items: &[Item]) -> Result<Vec<u8>, String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, false),
        Field::new("sequence_number", DataType::Utf8, true),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
        .build();
    let mut out = Vec::new();
    let mut w =
        ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).map_err(|e| e.to_string())?;
    for chunk in items.chunks(ROWS_PER_GROUP) {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|i| i.key.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|i| i.item.as_str()),
            )),
            // A base item no change touched has no sequence number.
            Arc::new(StringArray::from_iter(chunk.iter().map(|i| {
                (i.sequence_number != "0").then_some(i.sequence_number.as_str())
            }))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
    }
    if items.is_empty() {
        // An empty partition is still a file (readers find every partition).
        w.write(&RecordBatch::new_empty(schema))
            .map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes each partition as `checkpoint-files/<id>/part-<p>.parquet`.
struct CheckpointSink {
    store: Arc<dyn ObjectStore>,
    layout: TableLayout,
    snapshot: String,
    files: std::sync::Mutex<Vec<CheckpointFile>>,
    progress: Arc<Progress>,
}

#[async_trait::async_trait]
impl Sink for CheckpointSink {
    async fn partition(&self, index: usize, _: usize, items: Vec<Item>) -> Result<(), SinkError> {
        let key = self.layout.checkpoint_file_key(&self.snapshot, index);
        let here = std::path::PathBuf::from(format!("{}{key}", self.store.url()));
        let rows = items.len() as u64;
        let body = tokio::task::spawn_blocking(move || encode(&items))
            .await
            .map_err(|e| SinkError::file(&here, e))?
            .map_err(|e| SinkError::file(&here, e))?;
        let sha256 = hex::encode(Sha256::digest(&body));
        let bytes = body.len() as u64;
        // Write-once; a rerun after a crash before the manifest writes the same bytes.
        match self
            .store
            .put(&key, Bytes::from(body), PutMode::IfAbsent)
            .await
            .map_err(|e| SinkError::file(&here, e))?
        {
            PutOutcome::Created => {}
            PutOutcome::AlreadyExists => {
                let stored = self
                    .store
                    .head(&key)
                    .await
                    .map_err(|e| SinkError::file(&here, e))?;
                if stored.as_ref().and_then(|m| m.sha256.as_deref()) != Some(sha256.as_str()) {
                    return Err(SinkError::file(
                        &here,
                        "a file with other content is already there and no checkpoint manifest names it (a run of another version?); delete the checkpoint's folder and rerun",
                    ));
                }
            }
        }
        self.progress.add_bytes(bytes);
        if let Ok(mut f) = self.files.lock() {
            f.push(CheckpointFile {
                partition: index,
                key,
                bytes,
                rows,
                sha256,
            });
        }
        Ok(())
    }
}

/// Builds, proves and publishes the checkpoint of snapshot `which` (`latest` or an id).
pub async fn checkpoint(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    which: &str,
    options: &CheckpointOptions,
    clock: &dyn Clock,
    progress: &Arc<Progress>,
) -> Result<CheckpointReport, CheckpointError> {
    let started = Instant::now();
    let layout = TableLayout::new(table);
    let id = manifest::resolve_snapshot(store.as_ref(), &layout, which).await?;
    let manifest_key = layout.checkpoint_manifest_key(&id);
    let report = |c: &CheckpointManifest, built: bool, changes: u64| CheckpointReport {
        table: table.to_owned(),
        snapshot_id: id.clone(),
        manifest: manifest_key.clone(),
        built_from: c.built_from.clone(),
        existing: !built,
        items: c.items,
        quarantined_keys: c.quarantined.len(),
        partitions: c.partitions,
        bytes: c.bytes(),
        changes_read: changes,
        digest: c.digest.to_hex(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    match crate::model::checkpoint::read_checkpoint(store.as_ref(), &layout, &id).await {
        Ok(c) => return Ok(report(&c, false, 0)),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let plan = restore::plan(store.as_ref(), table, &Point::Snapshot(id.clone())).await?;
    let unprovable = |why: String| CheckpointError::Unprovable {
        snapshot: id.clone(),
        why,
    };
    if plan.expected.is_none() {
        return Err(unprovable(
            "its manifest has no state digest (the stream does not carry both images), so the checkpoint could not be proven equal to it".into(),
        ));
    }
    if plan.unknown_effects > 0 {
        return Err(unprovable(format!(
            "its chain holds {} entr(y/ies) whose changes it lacks (gaps, rejected entries; `streamseal verify` names them), so no state can be proven equal to it",
            plan.unknown_effects
        )));
    }
    let built_from = match &plan.checkpoint {
        Some(c) => format!("checkpoint {}", c.snapshot_id),
        None if !plan.base.is_empty() => "base".to_owned(),
        None => "history".to_owned(),
    };
    // Partitions: the previous checkpoint's (so a key stays in its partition), else one per
    // 64 MiB of stored changes; never fewer than the memory budget needs.
    let parallel = options.materialize.parallel.max(1) as u64;
    let budget = (options.materialize.memory_mb.max(16) as u64) << 19;
    let needed = plan
        .bytes()
        .saturating_mul(8 * parallel)
        .div_ceil(budget.max(1)) as usize;
    let wanted = options.partitions.unwrap_or_else(|| {
        plan.checkpoint
            .as_ref()
            .map_or((plan.bytes().div_ceil(64 << 20)) as usize, |c| c.partitions)
    });
    let partitions = wanted.max(needed).clamp(1, 65_536);
    let mut mopts = options.materialize.clone();
    mopts.partitions = Some(partitions);
    mopts.only_partition = None;
    let sink = CheckpointSink {
        store: store.clone(),
        layout: layout.clone(),
        snapshot: id.clone(),
        files: Default::default(),
        progress: progress.clone(),
    };
    let m = restore::materialize(store, &plan, &mopts, &sink, progress).await?;
    if let Some(why) = m.unproven {
        return Err(unprovable(why));
    }
    let mut files = sink.files.into_inner().unwrap_or_default();
    files.sort_by_key(|f| f.partition);
    if files.len() != partitions {
        return Err(unprovable(format!(
            "{} of {partitions} partitions were written",
            files.len()
        )));
    }
    // Read back what is stored: the published checkpoint is what the store holds.
    progress.stage("reading the checkpoint back", files.len() as u64);
    let (count, digest) = read_back(store, &id, &files, options.materialize.concurrency).await?;
    if count != m.items || digest != m.digest {
        return Err(CheckpointError::ReadBack {
            snapshot: id.clone(),
            key: layout.checkpoint_files_prefix(&id),
            problem: format!(
                "the files hold {count} items with digest {}, {} items with digest {} were written",
                digest.to_hex(),
                m.items,
                m.digest.to_hex()
            ),
        });
    }
    let mut c = CheckpointManifest {
        format: CHECKPOINT_FORMAT,
        table: table.to_owned(),
        snapshot_id: id.clone(),
        snapshot_sha256: plan.manifest.manifest_sha256.clone(),
        newest_change_ms: plan.manifest.watermark.newest_change_ms,
        created_at: crate::model::clock::rfc3339(clock.now_ms()),
        built_from,
        key_schema: plan.manifest.key_schema.clone(),
        partitioning: PARTITIONING.to_owned(),
        partitions,
        items: m.items,
        digest: m.digest,
        snapshot_digest: plan.manifest.state_digest,
        snapshot_items: plan.manifest.item_count,
        files,
        quarantined: m
            .quarantined
            .iter()
            .map(|q| QuarantinedState {
                key: q.key.clone(),
                sequence_number: q.sequence_number.clone(),
                state: q.state.clone(),
            })
            .collect(),
        checkpoint_sha256: String::new(),
    };
    c.seal_digest();
    match store
        .put(&manifest_key, Bytes::from(c.to_bytes()), PutMode::IfAbsent)
        .await?
    {
        PutOutcome::Created => {}
        // A concurrent run published first: its checkpoint equals the same snapshot.
        PutOutcome::AlreadyExists => {
            let theirs =
                crate::model::checkpoint::read_checkpoint(store.as_ref(), &layout, &id).await?;
            return Ok(report(&theirs, false, m.changes));
        }
    }
    tracing::info!(
        table,
        snapshot = %id,
        items = c.items,
        partitions,
        "checkpoint published"
    );
    Ok(report(&c, true, m.changes))
}

/// Reads checkpoint files back: item count and digest, each file checked against its size
/// and SHA-256, its rows sorted by key and in their partition.
pub(crate) async fn read_back(
    store: &Arc<dyn ObjectStore>,
    snapshot: &str,
    files: &[CheckpointFile],
    concurrency: usize,
) -> Result<(u64, StateDigest), CheckpointError> {
    let mut count = 0u64;
    let mut digest = StateDigest::ZERO;
    let partitions = files.len();
    for chunk in files.chunks(concurrency.max(1)) {
        let keys: Vec<String> = chunk.iter().map(|f| f.key.clone()).collect();
        for (f, body) in chunk
            .iter()
            .zip(store::get_many(store, &keys, concurrency).await)
        {
            let problem = |p: String| CheckpointError::ReadBack {
                snapshot: snapshot.to_owned(),
                key: f.key.clone(),
                problem: p,
            };
            let body = body?;
            if body.len() as u64 != f.bytes || hex::encode(Sha256::digest(&body)) != f.sha256 {
                return Err(problem(format!(
                    "is {} bytes and not the SHA-256 recorded",
                    body.len()
                )));
            }
            let key = f.key.clone();
            let partition = f.partition;
            let (n, d) =
                tokio::task::spawn_blocking(move || file_state(&key, body, partition, partitions))
                    .await
                    .map_err(|e| problem(e.to_string()))?
                    .map_err(problem)?;
            if n != f.rows {
                return Err(problem(format!("holds {n} rows, {} recorded", f.rows)));
            }
            count += n;
            digest.add(&d);
        }
    }
    Ok((count, digest))
}

/// One checkpoint file's item count and digest; its keys must be sorted, unique and in
/// `partition`.
fn file_state(
    key: &str,
    body: Bytes,
    partition: usize,
    partitions: usize,
) -> Result<(u64, StateDigest), String> {
    let batches = crate::segment::read_segment_columns(key, body, &["keys", "item"])
        .map_err(|e| e.to_string())?;
    let mut digest = StateDigest::ZERO;
    let mut count = 0u64;
    let mut last: Option<String> = None;
    for b in &batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| format!("no string column {name:?}"))
        };
        let (keys, items) = (col("keys")?, col("item")?);
        for i in 0..b.num_rows() {
            if keys.is_null(i) || items.is_null(i) {
                return Err(format!("row {count} has no key or item"));
            }
            let k = keys.value(i);
            if last.as_deref().is_some_and(|l| l >= k) {
                return Err(format!("keys are not sorted and unique at row {count}"));
            }
            if restore::partition_of(k, partitions) != partition {
                return Err(format!(
                    "row {count}'s key belongs to another partition (not partition {partition} of {partitions})"
                ));
            }
            digest.add_item(&ItemHash(Sha256::digest(items.value(i).as_bytes()).into()));
            count += 1;
            last = Some(k.to_owned());
        }
    }
    Ok((count, digest))
}

/// What [`expire`] did (or would do, with `dry_run`).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    /// Table.
    pub table: String,
    /// The checkpoint covering what was expired.
    pub checkpoint: String,
    /// Objects whose every change is older than this were eligible (RFC 3339).
    pub cutoff: String,
    /// The record written (none on a dry run or when nothing was eligible).
    pub record: Option<String>,
    /// Objects deleted (or to delete).
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Segments newer than the cutoff, or sealed after the checkpoint, that are kept.
    pub kept: usize,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Point-in-time restore stays possible from this instant on (the checkpoint's newest
    /// change), and for the checkpointed snapshot itself (RFC 3339).
    pub restorable_from: Option<String>,
}

/// Checks the checkpoint at `id` against the chain's manifest of that snapshot and the store
/// (each file present with its size and SHA-256). Returns the manifest, or what is wrong.
pub(crate) async fn check_checkpoint(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    id: &str,
    snapshot_sha256: Option<&str>,
    concurrency: usize,
) -> Result<Result<CheckpointManifest, String>, StoreError> {
    let c = match crate::model::checkpoint::read_checkpoint(store.as_ref(), layout, id).await {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => return Ok(Err("its manifest is missing".into())),
        Err(e @ StoreError::Permanent { .. }) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    if let Some(s) = snapshot_sha256
        && c.snapshot_sha256 != s
    {
        return Ok(Err(format!(
            "it was built from a snapshot {id} whose manifest SHA-256 is {}, the chain's is {s}",
            c.snapshot_sha256
        )));
    }
    let keys: Vec<String> = c.files.iter().map(|f| f.key.clone()).collect();
    for (f, head) in c
        .files
        .iter()
        .zip(store::head_many(store, &keys, concurrency).await)
    {
        match head? {
            None => return Ok(Err(format!("{} is missing", f.key))),
            Some(m) if m.size != f.bytes => {
                return Ok(Err(format!(
                    "{} is {} bytes, recorded as {}",
                    f.key, m.size, f.bytes
                )));
            }
            // No checksum from the store proves nothing (a file rewritten by another tool).
            Some(m) if m.sha256.as_deref() != Some(f.sha256.as_str()) => {
                return Ok(Err(format!(
                    "{}'s SHA-256 is not the one recorded (or the store reports none)",
                    f.key
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(c))
}

/// Deletes change segments older than `keep_changes_ms` that the newest checkpoint covers,
/// after recording them in an immutable expire record. Point-in-time restore stays possible
/// from the checkpoint on; snapshots at or after the checkpoint stay restorable.
pub async fn expire(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    keep_changes_ms: i64,
    dry_run: bool,
    clock: &dyn Clock,
) -> Result<ExpireReport, CheckpointError> {
    let layout = TableLayout::new(table);
    let now = clock.now_ms();
    let cutoff = now.saturating_sub(keep_changes_ms.max(0));
    // The chain from the latest snapshot down: each manifest's file list, so each segment's
    // sealing snapshot is known.
    let chain = crate::ops::compact::latest_chain(store.as_ref(), &layout).await?;
    if chain.is_empty() {
        return Err(CheckpointError::NoCheckpoint(format!(
            "table {table} has no sealed snapshot"
        )));
    }
    // Deletion is decided from these manifests: each must be the one its child sealed.
    for (i, (m, _)) in chain.iter().enumerate() {
        let linked = chain
            .get(i.wrapping_sub(1))
            .and_then(|(child, _)| child.parent.as_ref())
            .is_none_or(|p| p.manifest_sha256 == m.manifest_sha256);
        if !m.digest_ok() || !linked {
            return Err(ManifestError::Integrity {
                key: layout.snapshot_key(&m.snapshot_id),
                what: "manifest does not match its digest or its child's link".into(),
            }
            .into());
        }
    }
    let sealed: Vec<(&String, &manifest::SnapshotFiles, &manifest::Manifest)> =
        chain.iter().map(|(m, f)| (&m.snapshot_id, f, m)).collect();
    // The newest checkpoint a restore of the latest snapshot would start from: one whose
    // chain has the latest base (a base adopted after a checkpoint makes it unusable).
    let latest_base = sealed
        .first()
        .map(|(_, _, m)| m.base.clone())
        .unwrap_or_default();
    let Some(cid) = crate::model::checkpoint::list_checkpoints(store.as_ref(), &layout)
        .await?
        .into_iter()
        .rev()
        .find(|c| {
            sealed
                .iter()
                .any(|(id, _, m)| *id == c && m.base == latest_base)
        })
    else {
        return Err(CheckpointError::NoCheckpoint(format!(
            "table {table} has no checkpoint a restore of its latest snapshot can start from; run `streamseal checkpoint` first (expire deletes only changes a checkpoint holds)"
        )));
    };
    let snapshot_sha = sealed
        .iter()
        .find(|(id, _, _)| **id == cid)
        .map(|(_, _, m)| m.manifest_sha256.clone());
    let c = match check_checkpoint(store, &layout, &cid, snapshot_sha.as_deref(), 8).await? {
        Ok(c) => c,
        Err(why) => {
            return Err(CheckpointError::NoCheckpoint(format!(
                "the newest checkpoint ({cid}) does not check: {why}"
            )));
        }
    };
    let replaced = crate::ops::compact::replacements_of(chain.iter().map(|(m, f)| (m, f)));
    let records = crate::model::checkpoint::list_expired(store.as_ref(), &layout).await?;
    let already: HashSet<String> = records
        .iter()
        .flat_map(|(_, r)| r.objects.iter().map(|o| o.key.clone()))
        .collect();
    // A run that stopped between its record and its deletes (the newest checkpoint's records):
    // their objects are deleted again (deleting a deleted key is a no-op).
    let newest_recorded = records.iter().map(|(_, r)| r.checkpoint.as_str()).max();
    let unfinished: Vec<String> = records
        .iter()
        .filter(|(_, r)| Some(r.checkpoint.as_str()) == newest_recorded)
        .flat_map(|(_, r)| r.objects.iter().map(|o| o.key.clone()))
        .collect();
    // Each stored object with every segment it holds: eligible when all are sealed at or
    // before the checkpoint and older than the cutoff.
    struct Candidate {
        bytes: u64,
        sha256: String,
        sealed_by: String,
        eligible: bool,
    }
    let mut objects: HashMap<String, Candidate> = HashMap::new();
    let mut kept = 0usize;
    for &(id, files, _) in &sealed {
        for s in &files.segments {
            let ok = *id <= cid && s.max_time_ms.is_some_and(|t| t < cutoff);
            if !ok {
                kept += 1;
            }
            let (key, bytes, sha, by) = match replaced.get(&s.key) {
                Some(r) => (&r.key, r.bytes, &r.sha256, r.sealed_by.clone()),
                None => (&s.key, s.bytes, &s.sha256, id.clone()),
            };
            let e = objects.entry(key.clone()).or_insert_with(|| Candidate {
                bytes,
                sha256: sha.clone(),
                sealed_by: by,
                eligible: true,
            });
            e.eligible &= ok;
        }
    }
    let mut expired: Vec<ExpiredObject> = objects
        .into_iter()
        .filter(|(k, c)| c.eligible && !already.contains(k))
        .map(|(key, c)| ExpiredObject {
            key,
            bytes: c.bytes,
            sha256: c.sha256,
            sealed_by: c.sealed_by,
        })
        .collect();
    expired.sort_by(|a, b| a.key.cmp(&b.key));
    let mut report = ExpireReport {
        table: table.to_owned(),
        checkpoint: cid.clone(),
        cutoff: crate::model::clock::rfc3339(cutoff),
        record: None,
        objects: expired.len(),
        bytes: expired.iter().map(|o| o.bytes).sum(),
        kept,
        dry_run,
        restorable_from: c.newest_change_ms.map(crate::model::clock::rfc3339),
    };
    if dry_run {
        return Ok(report);
    }
    store::delete_many(store, &unfinished, 16, None).await?;
    if expired.is_empty() {
        return Ok(report);
    }
    let record = ExpireRecord {
        format: CHECKPOINT_FORMAT,
        table: table.to_owned(),
        created_at: crate::model::clock::rfc3339(now),
        keep_changes_ms,
        cutoff_ms: cutoff,
        checkpoint: cid.clone(),
        checkpoint_sha256: c.checkpoint_sha256.clone(),
        objects: expired,
    };
    let mut body = serde_json::to_vec_pretty(&record).unwrap_or_default();
    body.push(b'\n');
    let key = layout.expire_record_key(&cid, &hex::encode(Sha256::digest(&body)));
    // The record first: a crash after it leaves objects it names still stored, which verify
    // accepts; a crash before it deletes nothing.
    store
        .put(&key, Bytes::from(body), PutMode::IfAbsent)
        .await?;
    let keys: Vec<String> = record.objects.iter().map(|o| o.key.clone()).collect();
    store::delete_many(store, &keys, 16, None).await?;
    tracing::info!(table, checkpoint = %cid, objects = keys.len(), "changes expired");
    report.record = Some(key);
    Ok(report)
}

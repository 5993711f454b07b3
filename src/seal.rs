//! Sealing: turn what the capture has already written into an immutable snapshot manifest, in
//! time proportional to the changes since the parent snapshot.
//!
//! ```text
//! parent manifest (small) ──▶ list log/ after (parent cursor - overlap window)
//!                               │ entries not sealed before (not in parent's recent keys)
//!                               ▼
//!                     GET each new log entry (concurrently), validate
//!                               │ records created before the parent's newest change?
//!                               ├──▶ look back: read sealed log entries from that time on
//!                               ▼
//!                     resolve duplicates by sequence number (first in log order wins)
//!                               ▼
//!      file list (IfAbsent) ──▶ manifest snapshots/<generation>.json (IfAbsent) ──▶ head hint
//! ```
//!
//! **Duplicates.** Lambda redelivers batches and bisects failing ones, so the same record can
//! be in several segments. Every segment log entry lists its rows' sequence numbers, so the
//! seal decides, without opening Parquet, which segment each sequence number counts in: the
//! first in log order. A segment whose rows were all sealed already is left out; one that
//! overlaps partly is kept with the duplicate sequence numbers listed as skipped, and its
//! digest delta is recomputed from the stored rows (the only case where a seal reads a segment).
//! A duplicate has the same creation time as its original, and the original was written after
//! it was created, so only entries written since the oldest new record's creation time (less
//! a clock-skew allowance) need checking; in steady state that is nothing beyond the new ones.
//!
//! **Concurrency.** The manifest key is the next generation number and is written with
//! `IfAbsent`: of two seals racing from the same parent, one wins and the other starts over
//! from the new parent. A chain never forks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::change::{SequenceNumber, StreamViewType};
use crate::item::StateDigest;
use crate::layout::TableLayout;
use crate::log::{LogEntry, SequenceList};
use crate::manifest::{
    self, DuplicateSegment, FilesRef, Head, MANIFEST_FORMAT, Manifest, ManifestError, ParentRef,
    RejectedEntry, SealedGap, SealedQuarantine, SealedSegment, SnapshotFiles, Totals, Watermark,
};
use crate::schema::KeySchema;
use crate::segment::{SEGMENT_FORMAT, SegmentContents, SegmentRecord};
use crate::store::{self, ObjectStore, PutMode, PutOutcome, Retention, RetentionMode, StoreError};

/// How a seal behaves.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Recorded in the manifest: which event or person asked.
    pub reason: String,
    /// The table's key schema, recorded for restores that create the table.
    pub key_schema: Option<KeySchema>,
    /// Object Lock retention for the manifest and its file list: mode and days.
    pub retention: Option<(RetentionMode, u32)>,
    /// How long after its write time a log entry may still become visible (slow writers,
    /// clock differences between writers). Each seal re-lists this much before its parent's
    /// cursor. Default 5 minutes.
    pub overlap_window_ms: i64,
    /// Allowance between DynamoDB's clock (creation times) and the writers' clocks (log keys).
    /// Default 5 minutes.
    pub clock_skew_ms: i64,
    /// Concurrent reads.
    pub concurrency: usize,
    /// How many times to start over when another seal wins the race for the next generation.
    pub attempts: usize,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            reason: "manual".into(),
            key_schema: None,
            retention: None,
            overlap_window_ms: 5 * 60 * 1000,
            clock_skew_ms: 5 * 60 * 1000,
            concurrency: 64,
            attempts: 5,
        }
    }
}

/// Why a seal failed. Nothing is half-written: the manifest is the commit point.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The parent snapshot cannot be used.
    #[error("cannot build on the latest snapshot: {0}")]
    Parent(#[from] ManifestError),
    /// Other seals kept winning the race for the next generation.
    #[error(
        "table {table}: another seal wrote snapshot {id} first, {attempts} times in a row; run the seal again"
    )]
    Conflict {
        /// Table.
        table: String,
        /// The contested id.
        id: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The base state could not be read to compute the first digest over it.
    #[error("computing the state over the bootstrap base: {0}")]
    Base(String),
    /// A segment that partly overlaps sealed records could not be read to recompute its delta.
    #[error(
        "segment {key} (log entry {log_key}) repeats {skipped} already-sealed records and could not be read to recompute its digest: {message}"
    )]
    Overlap {
        /// Segment key.
        key: String,
        /// Its log entry.
        log_key: String,
        /// Rows to skip.
        skipped: usize,
        /// What failed.
        message: String,
    },
}

/// What a seal did.
#[derive(Debug, Clone, Serialize)]
pub struct SealReport {
    /// The sealed manifest.
    pub manifest: Manifest,
    /// Its key.
    pub manifest_key: String,
    /// Log entries read that were new.
    pub new_log_entries: usize,
    /// Already-sealed log entries read to resolve duplicates.
    pub lookback_log_entries: usize,
    /// Milliseconds between the newest sealed change and the seal (how stale the snapshot is).
    pub lag_ms: Option<i64>,
    /// Wall time of the seal.
    pub elapsed_ms: u64,
}

/// A new segment log entry that passed validation.
struct Candidate {
    log_key: String,
    record: SegmentRecord,
    sequences: Vec<String>,
}

/// Seals the latest snapshot of `table`.
pub async fn seal(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    options: &SealOptions,
) -> Result<SealReport, SealError> {
    let started = Instant::now();
    let layout = TableLayout::new(table);
    let mut last_id = String::new();
    for _ in 0..options.attempts.max(1) {
        match seal_once(store, &layout, options, started).await? {
            Attempt::Sealed(report) => return Ok(*report),
            Attempt::Lost(id) => {
                tracing::warn!(table, snapshot = %id, "another seal wrote this snapshot first; starting over from it");
                last_id = id;
            }
        }
    }
    Err(SealError::Conflict {
        table: table.to_owned(),
        id: last_id,
        attempts: options.attempts.max(1),
    })
}

enum Attempt {
    Sealed(Box<SealReport>),
    Lost(String),
}

async fn seal_once(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    options: &SealOptions,
    started: Instant,
) -> Result<Attempt, SealError> {
    let parent = match manifest::latest_snapshot_id(store.as_ref(), layout).await? {
        Some(id) => {
            let m = manifest::read_manifest(store.as_ref(), layout, &id).await?;
            if !m.digest_ok() || m.snapshot_id != id || m.table != layout.table() {
                return Err(ManifestError::Integrity {
                    key: layout.snapshot_key(&id),
                    what: "the manifest does not match its own digest, id or table".into(),
                }
                .into());
            }
            Some(m)
        }
        None => None,
    };
    let now = chrono::Utc::now();
    let now_ms = now.timestamp_millis();
    let window = options.overlap_window_ms.max(0);

    // 1. The new log entries: everything listed from the window before the parent's cursor
    //    that the parent (or its ancestors) did not already seal.
    let parent_cursor_ms = parent
        .as_ref()
        .and_then(|p| p.watermark.log_cursor.as_deref())
        .and_then(|k| layout.log_key_time(k));
    let listed_after = parent_cursor_ms.map(|c| layout.log_start_at(c - window));
    let recent: HashSet<&str> = parent
        .as_ref()
        .map(|p| {
            p.watermark
                .recent_log_keys
                .iter()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    let listed = store
        .list(&layout.log_prefix(), listed_after.as_deref(), None)
        .await?;
    let mut files = SnapshotFiles {
        format: MANIFEST_FORMAT,
        table: layout.table().to_owned(),
        snapshot_id: String::new(),
        segments: vec![],
        duplicates: vec![],
        quarantined: vec![],
        gaps: vec![],
        rejected: vec![],
        compactions: vec![],
    };
    let mut new_keys = Vec::new();
    for meta in &listed {
        if recent.contains(meta.key.as_str()) {
            continue;
        }
        if layout.log_key_time(&meta.key).is_none() {
            files.rejected.push(RejectedEntry {
                log_key: meta.key.clone(),
                object: None,
                reason: "not a log key (expected log/<YYYY-MM-DDTHH>/<16-digit ms>-<tag>.json)"
                    .into(),
            });
            continue;
        }
        new_keys.push(meta.key.clone());
    }
    let bodies = store::get_many(store, &new_keys, options.concurrency).await;
    let mut candidates = Vec::new();
    let mut compaction_files = std::collections::HashMap::new();
    for (log_key, body) in new_keys.iter().zip(bodies) {
        let body = body?;
        match LogEntry::parse(log_key, &body) {
            Err(e) => files.rejected.push(RejectedEntry {
                log_key: log_key.clone(),
                object: None,
                reason: e.to_string(),
            }),
            Ok(entry) if entry.table() != layout.table() => files.rejected.push(RejectedEntry {
                log_key: log_key.clone(),
                object: None,
                reason: format!("entry is for table {:?}", entry.table()),
            }),
            Ok(LogEntry::Segment(record)) => match check_segment_entry(layout, log_key, &record) {
                Ok(sequences) => candidates.push(Candidate {
                    log_key: log_key.clone(),
                    record,
                    sequences,
                }),
                Err(reason) => files.rejected.push(RejectedEntry {
                    log_key: log_key.clone(),
                    object: Some(record.key.clone()),
                    reason,
                }),
            },
            Ok(LogEntry::Quarantine(q)) => files.quarantined.push(SealedQuarantine {
                key: q.key,
                log_key: log_key.clone(),
                sequence_number: q.sequence_number,
            }),
            Ok(LogEntry::Gap(gap)) => files.gaps.push(SealedGap {
                log_key: log_key.clone(),
                gap,
            }),
            Ok(LogEntry::Compaction(record)) => {
                match crate::compact::check_entry(
                    store.as_ref(),
                    layout,
                    &record,
                    parent.as_ref(),
                    &mut compaction_files,
                )
                .await
                {
                    Ok(()) => files.compactions.push(crate::manifest::SealedCompaction {
                        log_key: log_key.clone(),
                        record,
                    }),
                    Err(reason) => files.rejected.push(RejectedEntry {
                        log_key: log_key.clone(),
                        object: Some(record.key.clone()),
                        reason,
                    }),
                }
            }
        }
    }

    // 2. Sequence numbers sealed before that new records could repeat.
    let mut sealed: HashSet<String> = HashSet::new();
    let mut lookback_log_entries = 0;
    if let Some(p) = &parent {
        let skew = options.clock_skew_ms.max(0);
        let possible_repeat =
            |c: &Candidate| match (c.record.min_time_ms, p.watermark.newest_change_ms) {
                (Some(t), Some(newest)) => t <= newest + skew,
                (_, None) => false,
                (None, Some(_)) => true,
            };
        let from = candidates
            .iter()
            .filter(|c| possible_repeat(c))
            .map(|c| {
                c.record.min_time_ms.unwrap_or_else(|| {
                    // No creation time: a redelivery can be as old as the stream's retention.
                    layout.log_key_time(&c.log_key).unwrap_or(now_ms) - 24 * 3_600_000
                }) - skew
            })
            .min();
        if let Some(from) = from {
            let new_set: HashSet<&str> = new_keys.iter().map(String::as_str).collect();
            let older = store
                .list(&layout.log_prefix(), Some(&layout.log_start_at(from)), None)
                .await?;
            let sealed_keys: Vec<String> = older
                .into_iter()
                .map(|m| m.key)
                .filter(|k| !new_set.contains(k.as_str()) && layout.log_key_time(k).is_some())
                .collect();
            lookback_log_entries = sealed_keys.len();
            let bodies = store::get_many(store, &sealed_keys, options.concurrency).await;
            for (log_key, body) in sealed_keys.iter().zip(bodies) {
                // An entry that was rejected when sealed is rejected again here and adds
                // nothing: its records were never counted.
                if let Ok(LogEntry::Segment(record)) = LogEntry::parse(log_key, &body?)
                    && record.table == layout.table()
                    && let Ok(seqs) = check_segment_entry(layout, log_key, &record)
                {
                    sealed.extend(seqs);
                }
            }
        }
    }

    // 3. Resolve duplicates: each sequence number counts in the first segment (log order).
    let mut view_type: Option<StreamViewType> = parent.as_ref().and_then(|p| p.stream_view_type);
    for c in candidates {
        view_type = Some(c.record.stream_view_type);
        // A row counts if it is the first with its sequence number in this segment and no
        // earlier segment counted that number; numbers counted elsewhere are listed as skipped.
        let mut counted = Vec::with_capacity(c.sequences.len());
        let mut skipped = Vec::new();
        let mut local: HashSet<&str> = HashSet::with_capacity(c.sequences.len());
        for s in &c.sequences {
            if !local.insert(s.as_str()) {
                counted.push(false);
            } else if sealed.contains(s) {
                counted.push(false);
                skipped.push(s.as_str());
            } else {
                counted.push(true);
            }
        }
        let counted_rows = counted.iter().filter(|c| **c).count() as u64;
        let rec = &c.record;
        if counted_rows == 0 {
            files.duplicates.push(DuplicateSegment {
                key: rec.key.clone(),
                log_key: c.log_key.clone(),
                rows: rec.rows,
            });
            continue;
        }
        let (digest_delta, item_count_delta) = if counted_rows == rec.rows {
            (rec.digest_delta, rec.item_count_delta)
        } else {
            partial_effect(store.as_ref(), &c, &counted, skipped.len()).await?
        };
        files.segments.push(SealedSegment {
            key: rec.key.clone(),
            log_key: c.log_key.clone(),
            bytes: rec.bytes,
            rows: rec.rows,
            sha256: rec.sha256.clone(),
            first_sequence: rec.first_sequence.clone(),
            last_sequence: rec.last_sequence.clone(),
            min_time_ms: rec.min_time_ms,
            max_time_ms: rec.max_time_ms,
            shard_id: rec.shard_id.clone(),
            event_source_arn: rec.event_source_arn.clone(),
            counted_rows,
            skipped_sequences: SequenceList::from_sequences(skipped.iter().copied()),
            digest_delta,
            item_count_delta,
        });
        sealed.extend(local.into_iter().map(str::to_owned));
    }

    // Lambda segments carry no shard id: attribute them by sequence range from the shard map
    // the capture keeps in the store (no stream API call, so this works during an outage).
    if files.segments.iter().any(|s| s.shard_id.is_none()) {
        let maps = crate::shards::load_shard_maps(store.as_ref(), layout.table()).await;
        if !maps.is_empty() {
            for s in files.segments.iter_mut().filter(|s| s.shard_id.is_none()) {
                s.shard_id = crate::shards::attribute(
                    &maps,
                    s.event_source_arn.as_deref(),
                    &s.first_sequence,
                    &s.last_sequence,
                );
            }
        }
    }

    // 4. The manifest.
    let generation = parent.as_ref().map_or(1, |p| p.generation + 1);
    let id = manifest::snapshot_id(generation);
    files.snapshot_id = id.clone();
    let files_bytes = serde_json::to_vec(&files).unwrap_or_default();
    let files_sha = hex::encode(Sha256::digest(&files_bytes));
    let files_key = layout.snapshot_files_key(&id, &files_sha);

    let new_rows: u64 = files.segments.iter().map(|s| s.counted_rows).sum();
    let new_bytes: u64 = files.segments.iter().map(|s| s.bytes).sum();
    let duplicate_rows: u64 = files.duplicates.iter().map(|d| d.rows).sum::<u64>()
        + files
            .segments
            .iter()
            .map(|s| s.rows - s.counted_rows)
            .sum::<u64>();
    let mut digest = match &parent {
        Some(p) => p.state_digest,
        None => Some(StateDigest::ZERO),
    };
    let mut item_count = parent.as_ref().map_or(0, |p| p.item_count);
    for s in &files.segments {
        digest = StateDigest::sum_known(digest, s.digest_delta);
        item_count += s.item_count_delta;
    }
    let watermark = next_watermark(
        layout,
        parent.as_ref(),
        &files,
        &listed,
        listed_after.clone(),
        window,
    );
    let parent_totals = parent.as_ref().map(|p| p.totals).unwrap_or_default();
    // A bootstrap base joins the chain at the first seal after it is written.
    let new_base = if parent.as_ref().is_none_or(|p| p.base.is_empty()) {
        crate::base::latest_base(store.as_ref(), layout).await?
    } else {
        None
    };
    let retention = options.retention.map(|(mode, days)| Retention {
        mode,
        until_ms: now_ms + i64::from(days) * 86_400_000,
    });
    let mut m = Manifest {
        format: MANIFEST_FORMAT,
        table: layout.table().to_owned(),
        snapshot_id: id.clone(),
        generation,
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        reason: options.reason.clone(),
        parent: parent.as_ref().map(|p| ParentRef {
            snapshot_id: p.snapshot_id.clone(),
            manifest_sha256: p.manifest_sha256.clone(),
        }),
        key_schema: match options
            .key_schema
            .clone()
            .or_else(|| parent.as_ref().and_then(|p| p.key_schema.clone()))
        {
            Some(k) => Some(k),
            None => key_schema_from_capture(store.as_ref(), layout, &files).await,
        },
        base: match &new_base {
            Some(b) => b.files.clone(),
            None => parent.as_ref().map(|p| p.base.clone()).unwrap_or_default(),
        },
        files: FilesRef {
            key: files_key.clone(),
            bytes: files_bytes.len() as u64,
            sha256: files_sha,
            segments: files.segments.len() as u64,
            rows: new_rows,
            segment_bytes: new_bytes,
            duplicate_segments: files.duplicates.len() as u64,
            duplicate_rows,
        },
        totals: Totals {
            segments: parent_totals.segments + files.segments.len() as u64,
            rows: parent_totals.rows + new_rows,
            bytes: parent_totals.bytes + new_bytes,
        },
        watermark,
        quarantined_records: parent.as_ref().map_or(0, |p| p.quarantined_records)
            + files.quarantined.len() as u64,
        known_gaps: parent.as_ref().map_or(0, |p| p.known_gaps) + files.gaps.len() as u64,
        rejected_log_entries: files.rejected.len() as u64,
        state_digest: digest,
        item_count,
        stream_view_type: view_type,
        retain_until: retention.and_then(|r| {
            chrono::DateTime::from_timestamp_millis(r.until_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }),
        manifest_sha256: String::new(),
    };
    if let Some(b) = &new_base {
        // Deltas cannot be added to a base read by a (non point-in-time) scan: changes during
        // the scan may be in both. So this one seal computes the state exactly, by
        // materializing base + changes (O(table), once); later seals add deltas again.
        m.key_schema = m.key_schema.take().or_else(|| b.key_schema.clone());
        m.totals.bytes += b.files.iter().map(|f| f.bytes).sum::<u64>();
        let (digest, count) = state_with_base(store, layout, &m, parent.as_ref(), &files).await?;
        m.state_digest = if m
            .stream_view_type
            .is_none_or(|v| v == StreamViewType::NewAndOldImages)
        {
            Some(digest)
        } else {
            None
        };
        m.item_count = count;
    }
    m.seal_digest();

    // 5. Write: the file list (content-named, so a racing seal cannot clobber it), then the
    //    manifest, which commits. The head hint is best effort.
    store
        .put_retained(
            &files_key,
            Bytes::from(files_bytes),
            PutMode::IfAbsent,
            retention,
        )
        .await?;
    let manifest_key = layout.snapshot_key(&id);
    let outcome = store
        .put_retained(
            &manifest_key,
            Bytes::from(m.to_bytes()),
            PutMode::IfAbsent,
            retention,
        )
        .await?;
    if outcome == PutOutcome::AlreadyExists {
        return Ok(Attempt::Lost(id));
    }
    // The snapshot's own segments as a Hive symlink manifest, one partition per generation,
    // for Athena's per-snapshot view (see `crate::athena`). Best effort after the commit: the
    // manifest is the truth, this is a query aid.
    let root = format!("{}/", store.url().trim_end_matches('/'));
    let symlink: String = files
        .segments
        .iter()
        .map(|s| format!("{root}{}\n", s.key))
        .collect();
    if let Err(e) = store
        .put(
            &crate::athena::symlink_key(layout.table(), &id),
            Bytes::from(symlink),
            PutMode::Overwrite,
        )
        .await
    {
        tracing::warn!(snapshot = %id, error = %e, "could not write the Athena symlink manifest");
    }
    let head = serde_json::to_vec(&Head {
        snapshot_id: id.clone(),
    })
    .unwrap_or_default();
    if let Err(e) = store
        .put(
            &layout.snapshot_head_key(),
            Bytes::from(head),
            PutMode::Overwrite,
        )
        .await
    {
        tracing::warn!(error = %e, "could not update the latest-snapshot hint; readers will list snapshots instead");
    }
    let lag_ms = m.watermark.newest_change_ms.map(|t| now_ms - t);
    Ok(Attempt::Sealed(Box::new(SealReport {
        manifest: m,
        manifest_key,
        new_log_entries: new_keys.len(),
        lookback_log_entries,
        lag_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })))
}

/// Without a schema file, the key schema from what the capture kept: the roles from the shard
/// map (DescribeStream's `KeySchema`) and the types from the first new segment's first key.
/// Best effort: `None` leaves the manifest without one (a restore then needs an existing
/// table), never fails the seal.
async fn key_schema_from_capture(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    files: &SnapshotFiles,
) -> Option<crate::schema::KeySchema> {
    let maps = crate::shards::load_shard_maps(store, layout.table()).await;
    if maps.iter().all(|m| m.key.is_none()) {
        return None;
    }
    let segment = files.segments.first()?;
    let bytes = store.get(&segment.key).await.ok()?;
    let batches = crate::segment::read_segment_columns(&segment.key, bytes, &["keys"]).ok()?;
    let keys = batches
        .first()?
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()?;
    if arrow_array::Array::is_empty(keys) {
        return None;
    }
    let found = crate::shards::key_schema_of(&maps, keys.value(0));
    if found.is_none() {
        tracing::warn!(
            table = layout.table(),
            "the shard map's key roles do not match the captured keys; no key schema recorded"
        );
    }
    found
}

/// Digest and item count of base + every change of the chain ending in `m` (whose own
/// segments are in `files`), by materializing it.
async fn state_with_base(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    m: &Manifest,
    parent: Option<&Manifest>,
    files: &SnapshotFiles,
) -> Result<(StateDigest, i64), SealError> {
    let mut segments = vec![];
    let mut cur = parent.cloned();
    while let Some(p) = cur.take() {
        let f = manifest::read_files(store.as_ref(), &p).await?;
        segments.splice(0..0, f.segments);
        if let Some(pp) = &p.parent {
            cur = Some(manifest::read_manifest(store.as_ref(), layout, &pp.snapshot_id).await?);
        }
    }
    segments.extend(files.segments.iter().cloned());
    let plan = crate::restore::Plan {
        table: layout.table().to_owned(),
        manifest: m.clone(),
        base: m.base.clone(),
        segments,
        as_of_ms: None,
        expected: None,
        replaced: crate::compact::load_replacements(store.as_ref(), layout).await?,
    };
    struct Discard;
    #[async_trait::async_trait]
    impl crate::restore::Sink for Discard {
        async fn partition(
            &mut self,
            _: usize,
            _: usize,
            _: Vec<crate::restore::Item>,
        ) -> Result<(), String> {
            Ok(())
        }
    }
    let r = crate::restore::materialize(
        store,
        &plan,
        &Default::default(),
        &mut Discard,
        &Default::default(),
    )
    .await
    .map_err(|e| SealError::Base(e.to_string()))?;
    Ok((r.digest, r.items as i64))
}

/// Checks a segment log entry against the rules its writer follows, and returns its rows'
/// sequence numbers. A foreign or hand-edited entry fails here and is rejected, not sealed.
pub fn check_segment_entry(
    layout: &TableLayout,
    log_key: &str,
    r: &SegmentRecord,
) -> Result<Vec<String>, String> {
    if r.format != SEGMENT_FORMAT {
        return Err(format!("unknown segment format {}", r.format));
    }
    let name = r
        .key
        .strip_prefix(&layout.changes_prefix())
        .filter(|rest| !rest.contains(".."))
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(_, name)| name.strip_suffix(".parquet"))
        .ok_or_else(|| {
            format!(
                "object {} is not a segment of table {}",
                r.key,
                layout.table()
            )
        })?;
    let mut parts = name.splitn(3, '-');
    let (first, last, tag) = (parts.next(), parts.next(), parts.next());
    let (Some(first), Some(last), Some(tag)) = (first, last, tag) else {
        return Err(format!("object name {name:?} is not <first>-<last>-<tag>"));
    };
    let seq = |s: &str| SequenceNumber::parse(s);
    let (f, l) = (seq(&r.first_sequence)?, seq(&r.last_sequence)?);
    if first != f.padded() || last != l.padded() {
        return Err(format!(
            "object name {name:?} does not match the entry's sequence range {}..{}",
            r.first_sequence, r.last_sequence
        ));
    }
    let log_tag = log_key
        .rsplit_once('/')
        .and_then(|(_, n)| n.strip_suffix(".json"))
        .and_then(|n| n.split_once('-'))
        .map(|(_, t)| t);
    if log_tag != Some(tag) {
        return Err(format!(
            "log entry name does not carry the segment's tag {tag}"
        ));
    }
    let seqs = r.sequence_numbers.decode().map_err(|e| e.to_string())?;
    if seqs.len() as u64 != r.rows || seqs.is_empty() {
        return Err(format!(
            "entry lists {} sequence numbers for {} rows",
            seqs.len(),
            r.rows
        ));
    }
    let mut min: Option<SequenceNumber> = None;
    let mut max: Option<SequenceNumber> = None;
    for s in &seqs {
        let n = seq(s)?;
        if min.as_ref().is_none_or(|m| n < *m) {
            min = Some(n.clone());
        }
        if max.as_ref().is_none_or(|m| n > *m) {
            max = Some(n);
        }
    }
    if min.as_ref() != Some(&f) || max.as_ref() != Some(&l) {
        return Err("sequence list does not span the entry's first..last".into());
    }
    if let Some(arn) = &r.event_source_arn
        && crate::change::table_from_stream_arn(arn).ok() != Some(layout.table())
    {
        return Err(format!(
            "records come from stream {arn}, not table {}'s",
            layout.table()
        ));
    }
    if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 is not 64 hex digits".into());
    }
    Ok(seqs)
}

/// Digest and count deltas of the counted rows of a partly duplicated segment, from its rows.
async fn partial_effect(
    store: &dyn ObjectStore,
    c: &Candidate,
    counted: &[bool],
    skipped: usize,
) -> Result<(Option<StateDigest>, i64), SealError> {
    let fail = |message: String| SealError::Overlap {
        key: c.record.key.clone(),
        log_key: c.log_key.clone(),
        skipped,
        message,
    };
    let bytes = store
        .get(&c.record.key)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != c.record.sha256 {
        return Err(fail(format!(
            "its SHA-256 is {sha}, the log entry says {}",
            c.record.sha256
        )));
    }
    let contents = SegmentContents::read(&c.record.key, bytes).map_err(|e| fail(e.to_string()))?;
    if contents.rows.len() != counted.len() {
        return Err(fail(format!(
            "it has {} rows, its log entry lists {}",
            contents.rows.len(),
            counted.len()
        )));
    }
    let mut digest = Some(StateDigest::ZERO);
    let mut count = 0;
    for ((row, keep), seq) in contents.rows.iter().zip(counted).zip(&c.sequences) {
        if row.sequence != *seq {
            return Err(fail(format!(
                "row sequence {} where the log entry lists {seq}",
                row.sequence
            )));
        }
        if !keep {
            continue;
        }
        digest = StateDigest::sum_known(digest, row.digest);
        count += row.count;
    }
    Ok((digest, count))
}

/// The watermark after sealing `files` on top of `parent`.
fn next_watermark(
    layout: &TableLayout,
    parent: Option<&Manifest>,
    files: &SnapshotFiles,
    listed: &[store::ObjectMeta],
    listed_after: Option<String>,
    window: i64,
) -> Watermark {
    let mut shards: BTreeMap<String, String> = parent
        .map(|p| p.watermark.shards.clone())
        .unwrap_or_default();
    // Latest change per stream or shard that delivered to this seal.
    let mut latest: HashMap<String, i64> = HashMap::new();
    let mut newest = parent.and_then(|p| p.watermark.newest_change_ms);
    for s in &files.segments {
        if let Some(shard) = &s.shard_id {
            let last = shards.entry(shard.clone()).or_default();
            let bigger = match (
                SequenceNumber::parse(last),
                SequenceNumber::parse(&s.last_sequence),
            ) {
                (Ok(a), Ok(b)) => b > a,
                _ => true,
            };
            if bigger {
                *last = s.last_sequence.clone();
            }
        }
        if let Some(t) = s.max_time_ms {
            let group = s
                .shard_id
                .clone()
                .or_else(|| s.event_source_arn.clone())
                .unwrap_or_default();
            let e = latest.entry(group).or_insert(t);
            *e = (*e).max(t);
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    let consistent_through_ms = latest
        .values()
        .copied()
        .min()
        .or_else(|| parent.and_then(|p| p.watermark.consistent_through_ms));
    let cursor = listed
        .iter()
        .filter(|m| layout.log_key_time(&m.key).is_some())
        .map(|m| m.key.clone())
        .max()
        .or_else(|| parent.and_then(|p| p.watermark.log_cursor.clone()));
    // Exactly the keys the next seal's listing (from `cursor - window`, inclusive) will see
    // again: it must know they are sealed.
    let recent_log_keys = match cursor.as_deref().and_then(|c| layout.log_key_time(c)) {
        Some(c) => listed
            .iter()
            .filter(|m| layout.log_key_time(&m.key).is_some_and(|t| t >= c - window))
            .map(|m| m.key.clone())
            .collect(),
        None => vec![],
    };
    Watermark {
        shards,
        newest_change_ms: newest,
        consistent_through_ms,
        log_listed_after: listed_after,
        log_cursor: cursor,
        recent_log_keys,
    }
}

//! Sealing: turn what the capture has already written into an immutable snapshot manifest, in
//! time proportional to the changes since the parent snapshot.
//!
//! ```text
//! parent manifest + its file list (small) ──▶ list inbox/ (everything not sealed yet)
//!     entries the parent sealed but could not remove ──▶ removed now, before this seal commits
//!     every other entry: GET (concurrently), validate
//!          segment      ──▶ candidate          quarantine ──▶ read the record: its effect
//!          gap          ──▶ finding            compaction ──▶ checked against its snapshot
//!          acknowledgment ──▶ decision         anything else ──▶ rejected, kept in the file list
//!     records created before the parent's newest change? ──▶ look back through the ancestors'
//!          file lists, by creation time, for the sequence numbers they sealed
//!     resolve duplicates by sequence number
//! ledger (if it changed) ──▶ file list ──▶ manifest snapshots/<generation>.json (IfAbsent: commits)
//!     ──▶ head hint, Athena list ──▶ remove this seal's entries from the inbox
//! ```
//!
//! **Accounting.** Every log entry waits under `inbox/` until a seal commits it into a file
//! list, then the seal removes it. At any commit the inbox holds no entry an older snapshot
//! sealed (a seal first removes what its parent sealed and left behind), so after any seal
//! every entry in the store is in exactly one place: sealed in a file list (as a segment, a
//! duplicate, a repeat, a finding, a compaction or a decision), or waiting in the inbox for the
//! next seal. No writer's clock and no timing is involved: an entry whose PUT finishes after a
//! seal listed the inbox is simply the next seal's. A crash at any step leaves either nothing
//! committed (the entries are still waiting) or a commit whose entries the next seal
//! recognises from its parent's file list. Verify of a snapshot never looks at the inbox, so a
//! write in flight during a seal cannot fail it.
//!
//! **Duplicates.** Lambda redelivers batches and bisects failing ones, so the same record can
//! be in several segments. Every segment entry lists its rows' sequence numbers (and the file
//! list keeps them), so the seal decides, without opening Parquet, which segment each sequence
//! number counts in. A segment whose rows were all sealed already is left out; one that
//! overlaps partly is kept with the duplicate sequence numbers listed as skipped, and its
//! digest delta is recomputed from the stored rows (the only case where a seal reads a
//! segment). A redelivered record has its original's creation time (DynamoDB's clock, not a
//! writer's), so only ancestors whose newest change is at least that old can hold it: the seal
//! walks back the chain only that far, which in steady state is no further than its parent.
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

use crate::model::change::{SequenceNumber, StreamViewType};
use crate::model::clock::SharedClock;
use crate::model::findings::{self, Acknowledgment, Finding, Kind, Ledger, LedgerEntry};
use crate::model::item::StateDigest;
use crate::model::layout::TableLayout;
use crate::model::log::{LogEntry, SequenceList};
use crate::model::manifest::{
    self, DuplicateSegment, FilesRef, Head, MANIFEST_FORMAT, Manifest, ManifestError, ParentRef,
    RejectedEntry, RepeatedEntry, SealedAcknowledgment, SealedGap, SealedQuarantine, SealedSegment,
    SnapshotFiles, Totals, Watermark,
};
use crate::model::schema::KeySchema;
use crate::progress::Progress;
use crate::segment::{SEGMENT_FORMAT, SegmentContents, SegmentRecord};
use crate::store::{self, ObjectStore, PutMode, PutOutcome, Retention, RetentionMode, StoreError};

mod entries;
mod lookback;
mod sums;
pub(crate) use entries::*;
use lookback::*;
pub(crate) use sums::*;

/// Entries larger than this are not copied into the file list when rejected (and so are not
/// removed from the inbox either: nothing is deleted that is not recorded).
const MAX_KEPT_ENTRY_BYTES: u64 = 1 << 20;

/// How a seal behaves.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// Recorded in the manifest: which event or person asked.
    pub reason: String,
    /// The table's key schema, recorded for restores that create the table.
    pub key_schema: Option<KeySchema>,
    /// Object Lock retention for the manifest, its file list and its ledger: mode and days.
    pub retention: Option<(RetentionMode, u32)>,
    /// Concurrent reads and removals.
    pub concurrency: usize,
    /// How many times to start over when another seal wins the race for the next generation.
    pub attempts: usize,
    /// The seal's clock: `created_at`, the retention period and the reported lag. Nothing
    /// about what is sealed depends on it.
    pub clock: SharedClock,
    /// Counts the entries read and removed, for a caller showing progress.
    pub progress: Option<Arc<Progress>>,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            reason: "manual".into(),
            key_schema: None,
            retention: None,
            concurrency: 64,
            attempts: 5,
            clock: crate::model::clock::system(),
            progress: None,
        }
    }
}

/// Why a seal failed. Nothing is half-written: the manifest is the commit point.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kept shard maps cannot be read.
    #[error(transparent)]
    ShardMaps(#[from] crate::model::shards::ShardMapError),
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
    /// A segment that partly overlaps sealed records could not be read (a failure that may
    /// pass; run the seal again) to recompute its delta.
    #[error(
        "segment {key} (log entry {log_key}) repeats {skipped} already-sealed records and could not be read to recompute its digest: {message}; run the seal again"
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
    /// Entries this seal found waiting in the inbox and sealed.
    pub new_log_entries: usize,
    /// Entries the parent had sealed and this seal removed from the inbox (a seal that
    /// stopped between its commit and its clean-up).
    pub leftover_log_entries: usize,
    /// Ancestor snapshots whose file lists were read to resolve redelivered records.
    pub lookback_snapshots: usize,
    /// Findings this seal added to the ledger, and decisions it recorded (`acknowledged`).
    pub findings: Vec<Finding>,
    /// Findings open in the ledger after this seal.
    pub open_findings: u64,
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

/// The latest snapshot, checked against its own digest.
async fn latest_parent(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Option<Manifest>, SealError> {
    let Some(id) = manifest::latest_snapshot_id(store, layout).await? else {
        return Ok(None);
    };
    let m = manifest::read_manifest(store, layout, &id).await?;
    if !m.digest_ok() || m.snapshot_id != id || m.table != layout.table() {
        return Err(ManifestError::Integrity {
            key: layout.snapshot_key(&id),
            what: "the manifest does not match its own digest, id or table".into(),
        }
        .into());
    }
    Ok(Some(m))
}

/// What the entries found in the inbox hold, sorted by kind.
#[derive(Default)]
struct Inbox {
    /// Entries listed that the parent did not seal.
    fresh: usize,
    /// Entries the parent sealed but left behind (removed by this seal).
    leftover: usize,
    candidates: Vec<Candidate>,
    quarantines: Vec<(String, crate::model::log::QuarantineRecord)>,
    gaps: Vec<(String, crate::model::log::GapRecord)>,
    acknowledgments: Vec<(String, crate::model::log::AcknowledgmentRecord)>,
}

/// Step 1 of a seal: the inbox. What the parent sealed but did not get to remove goes first,
/// before this seal can commit: then no commit ever leaves an older snapshot's entry behind,
/// and what is left after a crash is always recognisable from the parent's file list. Then
/// every other entry is read and checked: usable ones are sorted into the [`Inbox`], checked
/// compactions go into `files.compactions` and unusable entries into `files.rejected`.
/// `None` when an entry vanished while being read: only a seal removes entries, and only after
/// committing, so this seal's parent is no longer the latest.
async fn read_inbox(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    options: &SealOptions,
    parent: Option<&Manifest>,
    parent_files: Option<&SnapshotFiles>,
    files: &mut SnapshotFiles,
) -> Result<Option<Inbox>, SealError> {
    let InboxListing {
        waiting: fresh,
        left_behind: leftover,
    } = list_inbox(store.as_ref(), layout, parent_files).await?;
    if !leftover.is_empty() {
        let keys: Vec<String> = leftover.iter().map(|m| m.key.clone()).collect();
        tracing::info!(
            table = layout.table(),
            entries = keys.len(),
            "removing entries the parent sealed but did not remove"
        );
        store::delete_many(store, &keys, options.concurrency, None).await?;
    }
    let mut inbox = Inbox {
        fresh: fresh.len(),
        leftover: leftover.len(),
        ..Inbox::default()
    };
    let readable: Vec<String> = fresh
        .iter()
        .filter(|m| m.size <= MAX_KEPT_ENTRY_BYTES)
        .map(|m| m.key.clone())
        .collect();
    for m in fresh.iter().filter(|m| m.size > MAX_KEPT_ENTRY_BYTES) {
        files.rejected.push(RejectedEntry {
            log_key: m.key.clone(),
            object: None,
            reason: format!(
                "{} bytes, larger than any log entry streamseal writes; left in the inbox",
                m.size
            ),
            entry: None,
            kept: true,
        });
    }
    let progress = options.progress.as_deref();
    crate::progress::stage(progress, "reading the inbox", readable.len() as u64);
    let bodies = store::get_many_counted(store, &readable, options.concurrency, progress).await;
    let mut compaction_files = HashMap::new();
    for (log_key, body) in readable.iter().zip(bodies) {
        let body = match body {
            Ok(b) => b,
            // Only a seal removes entries, and only after committing: this one's parent is
            // no longer the latest.
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let reject = |reason: String, object: Option<String>| RejectedEntry {
            log_key: log_key.clone(),
            object,
            reason,
            entry: Some(match std::str::from_utf8(&body) {
                Ok(text) => text.to_owned(),
                Err(_) => format!(
                    "base64:{}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body)
                ),
            }),
            kept: false,
        };
        if !layout.is_inbox_entry(log_key) {
            files.rejected.push(reject(
                "not an inbox entry name (inbox/<s|q|g|c|a>-<name>.json)".into(),
                None,
            ));
            continue;
        }
        match LogEntry::parse(log_key, &body) {
            Err(e) => files.rejected.push(reject(e.to_string(), None)),
            Ok(entry) if entry.table() != layout.table() => files.rejected.push(reject(
                format!("entry is for table {:?}", entry.table()),
                None,
            )),
            Ok(LogEntry::Segment(record)) => match check_segment_entry(layout, log_key, &record) {
                Ok(sequences) => inbox.candidates.push(Candidate {
                    log_key: log_key.clone(),
                    record,
                    sequences,
                }),
                Err(reason) => files
                    .rejected
                    .push(reject(reason, Some(record.key.clone()))),
            },
            Ok(LogEntry::Quarantine(q)) => match check_quarantine_entry(layout, log_key, &q) {
                Ok(()) => inbox.quarantines.push((log_key.clone(), q)),
                Err(reason) => files.rejected.push(reject(reason, Some(q.key.clone()))),
            },
            Ok(LogEntry::Gap(gap)) => inbox.gaps.push((log_key.clone(), gap)),
            Ok(LogEntry::Acknowledgment(a)) => inbox.acknowledgments.push((log_key.clone(), a)),
            Ok(LogEntry::Compaction(record)) => {
                match crate::ops::compact::check_entry(
                    store.as_ref(),
                    layout,
                    &record,
                    parent,
                    &mut compaction_files,
                )
                .await?
                {
                    Ok(()) => files
                        .compactions
                        .push(crate::model::manifest::SealedCompaction {
                            log_key: log_key.clone(),
                            record,
                        }),
                    Err(reason) => files
                        .rejected
                        .push(reject(reason, Some(record.key.clone()))),
                }
            }
        }
    }
    Ok(Some(inbox))
}

/// A quarantined record as sealed: its entry, and (unless the ledger already holds it) the
/// object read for its effect on the state.
type QuarantineSeal = (
    String,
    crate::model::log::QuarantineRecord,
    Option<SealedQuarantine>,
);

/// Step 2 of a seal: the quarantine entries of the inbox, each with the record it keeps read
/// for its effect on the state, unless the ledger already accounts for it. A missing object
/// is sealed with an unknown effect, which verify names.
async fn read_quarantines(
    store: &Arc<dyn ObjectStore>,
    options: &SealOptions,
    ledger: &Ledger,
    entries: Vec<(String, crate::model::log::QuarantineRecord)>,
) -> Result<Vec<QuarantineSeal>, SealError> {
    let mut quarantines = Vec::with_capacity(entries.len());
    let objects: Vec<String> = entries
        .iter()
        .filter(|(_, q)| !ledger.knows(Kind::Quarantined, &q.key))
        .map(|(_, q)| q.key.clone())
        .collect();
    let mut bodies: HashMap<String, Result<Bytes, StoreError>> = objects
        .iter()
        .cloned()
        .zip(store::get_many(store, &objects, options.concurrency).await)
        .collect();
    for (log_key, q) in entries {
        let read = match bodies.remove(&q.key) {
            None => None,
            Some(Ok(b)) => Some((
                b.len() as u64,
                hex::encode(Sha256::digest(&b)),
                crate::model::quarantine::effect_of_object(&b),
            )),
            Some(Err(StoreError::NotFound { .. })) => {
                let mut effect = crate::model::quarantine::effect_of_record("");
                effect.unknown = Some("the quarantine object is missing".into());
                Some((0, String::new(), effect))
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let sealed = read.map(|(bytes, sha256, effect)| SealedQuarantine {
            key: q.key.clone(),
            log_key: log_key.clone(),
            sequence_number: q.sequence_number.clone(),
            reason: q.reason.clone(),
            bytes,
            sha256,
            effect,
        });
        quarantines.push((log_key, q, sealed));
    }
    Ok(quarantines)
}

/// Step 5 of a seal: findings. Rejected entries, reported gaps and quarantined records become
/// ledger entries (a finding already in the ledger is a repeat, listed but not raised again;
/// a quarantined record whose sequence number is already `sealed` is a repeat too), and
/// acknowledgments are applied to the ledger. Returns the findings this snapshot raises.
fn record_findings(
    id: &str,
    ledger: &mut Ledger,
    files: &mut SnapshotFiles,
    gaps: Vec<(String, crate::model::log::GapRecord)>,
    acknowledgments: Vec<(String, crate::model::log::AcknowledgmentRecord)>,
    quarantines: Vec<QuarantineSeal>,
    sealed: &mut HashSet<String>,
) -> Vec<Finding> {
    let mut new_findings: Vec<Finding> = vec![];
    let mut add = |ledger: &mut Ledger,
                   files: &mut SnapshotFiles,
                   kind: Kind,
                   subject: &str,
                   log_key: &str,
                   detail: String|
     -> bool {
        let fid = findings::finding_id(kind, subject);
        if ledger.get(&fid).is_some() {
            files.repeats.push(RepeatedEntry {
                log_key: log_key.to_owned(),
                finding: Some(fid),
                sequence_number: None,
                object: None,
            });
            return false;
        }
        new_findings.push(Finding {
            kind,
            object: subject.to_owned(),
            problem: detail.clone(),
            id: Some(fid.clone()),
        });
        ledger.entries.push(LedgerEntry {
            id: fid,
            kind,
            subject: subject.to_owned(),
            detail,
            sealed_in: id.to_owned(),
            acknowledged: None,
        });
        true
    };
    let rejected = std::mem::take(&mut files.rejected);
    for r in rejected {
        let detail = format!(
            "log entry rejected by the seal{}: {}",
            r.object
                .as_deref()
                .map(|o| format!(" (names {o})"))
                .unwrap_or_default(),
            r.reason
        );
        // An entry left in the inbox comes back every seal: rejected once, then kept.
        if r.kept && ledger.knows(Kind::Rejected, &r.log_key) {
            files.kept.push(r.log_key);
            continue;
        }
        if add(
            ledger,
            files,
            Kind::Rejected,
            &r.log_key,
            &r.log_key,
            detail,
        ) {
            files.rejected.push(r);
        }
    }
    for (log_key, gap) in gaps {
        let detail = format!(
            "known gap reported by {}: {} record(s) missing{}{}",
            gap.source,
            gap.records
                .map_or("an unknown number of".into(), |n| n.to_string()),
            gap.shard_id
                .as_deref()
                .map(|s| format!(" from shard {s}"))
                .unwrap_or_default(),
            match (&gap.start_sequence, &gap.end_sequence) {
                (Some(a), Some(b)) => format!(", sequence numbers {a}..{b}"),
                _ => String::new(),
            }
        );
        if add(ledger, files, Kind::Gap, &log_key, &log_key, detail) {
            files.gaps.push(SealedGap { log_key, gap });
        }
    }
    for (log_key, q, sealed_q) in quarantines {
        // A record already counted (converted by another writer, or quarantined from
        // another delivery's text) is a repeat: its effect is in the chain once.
        if let Some(sq) = &sealed_q
            && let Some(seq) = sq.effect.sequence_number.as_deref()
            && !sealed.insert(seq.to_owned())
        {
            files.repeats.push(RepeatedEntry {
                log_key,
                finding: None,
                sequence_number: Some(seq.to_owned()),
                object: Some(q.key.clone()),
            });
            continue;
        }
        let detail = format!(
            "record{} kept verbatim, not in the segments: {}{}",
            q.sequence_number
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            q.reason,
            match sealed_q.as_ref().and_then(|s| s.effect.keys.as_deref()) {
                Some(k) => format!("; it changes key {k}"),
                None => String::new(),
            }
        );
        if add(ledger, files, Kind::Quarantined, &q.key, &log_key, detail)
            && let Some(sq) = sealed_q
        {
            files.quarantined.push(sq);
        }
    }
    for (log_key, a) in acknowledgments {
        let outcome = match ledger.entries.iter_mut().find(|e| e.id == a.finding) {
            None => format!("no finding {} in the ledger; nothing changed", a.finding),
            Some(e) => match &e.acknowledged {
                Some(done) => format!(
                    "finding {} was already acknowledged in snapshot {}",
                    a.finding, done.snapshot_id
                ),
                None => {
                    e.acknowledged = Some(Acknowledgment {
                        snapshot_id: id.to_owned(),
                        reason: a.reason.clone(),
                        by: a.by.clone(),
                        at: a.written_at.clone(),
                        entry: log_key.clone(),
                    });
                    new_findings.push(Finding {
                        kind: Kind::Acknowledged,
                        object: e.subject.clone(),
                        problem: format!("{} acknowledged by {}: {}", e.id, a.by, a.reason),
                        id: Some(e.id.clone()),
                    });
                    "applied".into()
                }
            },
        };
        files.acknowledgments.push(SealedAcknowledgment {
            log_key,
            record: a,
            outcome,
        });
    }
    new_findings
}

/// Step 4 of a seal: resolve duplicates, so each sequence number counts in one segment. Which
/// copy counts changes nothing but which segment lists skipped rows, so candidates are taken in
/// the order their writers stamped them (the original before its redeliveries, a whole batch
/// before the halves a bisection split it into: no partial reads in the usual case), and by
/// creation time, size and name where stamps are equal or skewed.
///
/// Counted segments go into `files.segments` (their sequence numbers into `sealed`), wholly
/// repeated ones into `files.duplicates`. Returns the stream view type of the last segment
/// taken, or `parent_view_type` when there is none.
async fn resolve_duplicates(
    store: &dyn ObjectStore,
    mut candidates: Vec<Candidate>,
    sealed: &mut HashSet<String>,
    files: &mut SnapshotFiles,
    parent_view_type: Option<StreamViewType>,
) -> Result<Option<StreamViewType>, SealError> {
    candidates.sort_by(|a, b| {
        a.record
            .written_at
            .cmp(&b.record.written_at)
            .then(a.record.min_time_ms.cmp(&b.record.min_time_ms))
            .then(b.record.rows.cmp(&a.record.rows))
            .then_with(|| {
                SequenceNumber::cmp_text(&a.record.first_sequence, &b.record.first_sequence)
            })
            .then_with(|| a.log_key.cmp(&b.log_key))
    });
    let mut view_type = parent_view_type;
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
            match partial_effect(store, &c, &counted).await? {
                Ok(effect) => effect,
                // Its new records are then in no snapshot: a finding, named, rather than a
                // seal that can never succeed again.
                Err(problem) => {
                    files.rejected.push(RejectedEntry {
                        log_key: c.log_key.clone(),
                        object: Some(rec.key.clone()),
                        reason: format!(
                            "repeats {} already-sealed record(s), and its segment cannot be read to count the rest: {problem}",
                            skipped.len()
                        ),
                        entry: serde_json::to_string(&LogEntry::Segment(rec.clone())).ok(),
                        kept: false,
                    });
                    continue;
                }
            }
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
            sequence_numbers: rec.sequence_numbers.clone(),
            digest_delta,
            item_count_delta,
        });
        sealed.extend(local.into_iter().map(str::to_owned));
    }
    Ok(view_type)
}

async fn seal_once(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    options: &SealOptions,
    started: Instant,
) -> Result<Attempt, SealError> {
    let parent = latest_parent(store.as_ref(), layout).await?;
    let parent_files = match &parent {
        Some(p) => Some(manifest::read_files(store.as_ref(), p).await?),
        None => None,
    };
    let generation = parent.as_ref().map_or(1, |p| p.generation + 1);
    let id = manifest::snapshot_id(generation);

    let mut files = SnapshotFiles {
        format: MANIFEST_FORMAT,
        table: layout.table().to_owned(),
        snapshot_id: id.clone(),
        segments: vec![],
        duplicates: vec![],
        quarantined: vec![],
        gaps: vec![],
        rejected: vec![],
        compactions: vec![],
        acknowledgments: vec![],
        repeats: vec![],
        kept: vec![],
    };
    // 1. The inbox.
    let Some(mut inbox) = read_inbox(
        store,
        layout,
        options,
        parent.as_ref(),
        parent_files.as_ref(),
        &mut files,
    )
    .await?
    else {
        return Ok(Attempt::Lost(id));
    };

    // 2. The ledger, when something may change it, and the quarantined records it does not
    //    hold yet, read for their effect on the state.
    let needs_ledger = !(inbox.quarantines.is_empty()
        && inbox.gaps.is_empty()
        && inbox.acknowledgments.is_empty()
        && files.rejected.is_empty());
    let parent_ledger = match (&parent, needs_ledger) {
        (Some(p), true) => Some(manifest::read_ledger(store.as_ref(), p).await?),
        _ => None,
    };
    let mut ledger = parent_ledger
        .clone()
        .unwrap_or_else(|| Ledger::new(layout.table()));
    let quarantines = read_quarantines(
        store,
        options,
        &ledger,
        std::mem::take(&mut inbox.quarantines),
    )
    .await?;

    // 3. Sequence numbers sealed before that new records could repeat.
    let times: Vec<Option<i64>> = inbox
        .candidates
        .iter()
        .map(|c| c.record.min_time_ms)
        .chain(
            quarantines
                .iter()
                .filter_map(|(_, _, s)| s.as_ref())
                .filter(|s| s.effect.sequence_number.is_some())
                .map(|s| s.effect.created_ms),
        )
        .collect();
    let (sealed, lookback_snapshots) = match (&parent, &parent_files) {
        (Some(p), Some(pf)) => lookback(store.as_ref(), layout, p, pf, &times).await?,
        _ => (HashSet::new(), 0),
    };

    // 4. Resolve duplicates.
    let mut sealed = sealed;
    let view_type = resolve_duplicates(
        store.as_ref(),
        std::mem::take(&mut inbox.candidates),
        &mut sealed,
        &mut files,
        parent.as_ref().and_then(|p| p.stream_view_type),
    )
    .await?;

    // Lambda segments carry no shard id: attribute them by sequence range from the shard map
    // the capture keeps in the store (no stream API call, so this works during an outage).
    if files.segments.iter().any(|s| s.shard_id.is_none()) {
        let maps = crate::model::shards::load_shard_maps(store.as_ref(), layout.table()).await?;
        if !maps.is_empty() {
            for s in files.segments.iter_mut().filter(|s| s.shard_id.is_none()) {
                s.shard_id = crate::model::shards::attribute(
                    &maps,
                    s.event_source_arn.as_deref(),
                    &s.first_sequence,
                    &s.last_sequence,
                );
            }
        }
    }

    // 5. Findings: rejected entries, gaps, quarantined records (with their effect on the
    //    state), and decisions.
    let new_findings = record_findings(
        &id,
        &mut ledger,
        &mut files,
        std::mem::take(&mut inbox.gaps),
        std::mem::take(&mut inbox.acknowledgments),
        quarantines,
        &mut sealed,
    );

    // 6. The manifest.
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
    let sums = StateSums::of_parent(parent.as_ref()).plus(&files);
    let watermark = next_watermark(parent.as_ref(), &files, inbox.fresh as u64);
    let parent_totals = parent.as_ref().map(|p| p.totals).unwrap_or_default();
    // A bootstrap base joins the chain at the first seal after it is written.
    let mut new_base = if parent.as_ref().is_none_or(|p| p.base.is_empty()) {
        crate::model::base::latest_base(store.as_ref(), layout).await?
    } else {
        None
    };
    // Adopting a base replays every change of the chain over it: impossible once changes have
    // expired (bootstrap refuses then; a base written anyway is left out, not fatal).
    if let Some(b) = &new_base
        && !crate::model::checkpoint::list_expired(store.as_ref(), layout)
            .await?
            .is_empty()
    {
        tracing::warn!(
            table = layout.table(),
            base = %b.base_id,
            "a base cannot join a chain whose changes have expired; it is left out (bootstrap into a new prefix)"
        );
        new_base = None;
    }
    let now_ms = options.clock.now_ms();
    let retention = options.retention.map(|(mode, days)| Retention {
        mode,
        until_ms: now_ms + i64::from(days) * 86_400_000,
    });
    let ledger_changed = parent_ledger.as_ref() != Some(&ledger) && !ledger.entries.is_empty();
    let (ledger_ref, ledger_bytes) = if ledger_changed {
        ledger.snapshot_id = id.clone();
        let bytes = serde_json::to_vec(&ledger).unwrap_or_default();
        let key = layout.findings_key(&id, &hex::encode(Sha256::digest(&bytes)));
        (Some(ledger.reference(key, &bytes)), Some(bytes))
    } else {
        (parent.as_ref().and_then(|p| p.findings.clone()), None)
    };
    // The table's definition: the newest the capture recorded, else the parent's.
    let definition = match definition_from_capture(store.as_ref(), layout).await {
        Some(d) => Some(d),
        None => parent.as_ref().and_then(|p| p.definition.clone()),
    };
    let checkpoint = crate::model::checkpoint::newest_for_seal(
        store.as_ref(),
        layout,
        parent.as_ref(),
        new_base.is_some(),
    )
    .await?;
    let mut m = Manifest {
        format: MANIFEST_FORMAT,
        table: layout.table().to_owned(),
        snapshot_id: id.clone(),
        generation,
        created_at: crate::model::clock::rfc3339(now_ms),
        reason: options.reason.clone(),
        parent: parent.as_ref().map(|p| ParentRef {
            snapshot_id: p.snapshot_id.clone(),
            manifest_sha256: p.manifest_sha256.clone(),
        }),
        key_schema: match options
            .key_schema
            .clone()
            .or_else(|| parent.as_ref().and_then(|p| p.key_schema.clone()))
            .or_else(|| definition.as_ref().map(|d| d.key.clone()))
        {
            Some(k) => Some(k),
            None => key_schema_from_capture(store.as_ref(), layout, &files).await,
        },
        definition,
        base: match &new_base {
            Some(b) => b.files.clone(),
            None => parent.as_ref().map(|p| p.base.clone()).unwrap_or_default(),
        },
        checkpoint,
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
        findings: ledger_ref,
        unknown_effects: sums.unknown_effects,
        state_digest: sums.digest,
        item_count: sums.item_count,
        stream_view_type: view_type,
        retain_until: retention.map(|r| crate::model::clock::rfc3339(r.until_ms)),
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

    // 7. Write: the ledger and the file list (content-named, so a racing seal cannot clobber
    //    them), then the manifest, which commits. The head hint is best effort.
    let retained = store::PutOptions {
        retention,
        sha256: None,
    };
    if let (Some(r), Some(bytes)) = (&m.findings, ledger_bytes) {
        store
            .put_with(&r.key, Bytes::from(bytes), PutMode::IfAbsent, retained)
            .await?;
    }
    store
        .put_with(
            &files_key,
            Bytes::from(files_bytes),
            PutMode::IfAbsent,
            retained,
        )
        .await?;
    let manifest_key = layout.snapshot_key(&id);
    let outcome = store
        .put_with(
            &manifest_key,
            Bytes::from(m.to_bytes()),
            PutMode::IfAbsent,
            retained,
        )
        .await?;
    if outcome == PutOutcome::AlreadyExists {
        return Ok(Attempt::Lost(id));
    }
    // The snapshot's own segments as a Hive symlink manifest, one partition per generation,
    // for Athena's per-snapshot view (see `crate::ops::athena`). Best effort after the commit: the
    // manifest is the truth, this is a query aid.
    let root = format!("{}/", store.url().trim_end_matches('/'));
    let symlink: String = files
        .segments
        .iter()
        .map(|s| format!("{root}{}\n", s.key))
        .collect();
    if let Err(e) = store
        .put(
            &layout.athena_snapshot_files_key(&id),
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
    // 8. The sealed entries leave the inbox. Best effort: what stays is removed by the next
    //    seal, which finds it in this snapshot's file list.
    let sealed_keys: Vec<String> = files.entry_keys().map(str::to_owned).collect();
    let progress = options.progress.as_deref();
    crate::progress::stage(
        progress,
        "removing sealed entries",
        sealed_keys.len() as u64,
    );
    if let Err(e) = store::delete_many(store, &sealed_keys, options.concurrency, progress).await {
        tracing::warn!(snapshot = %id, error = %e, "could not remove every sealed entry from the inbox; the next seal removes the rest");
    }
    let lag_ms = m.watermark.newest_change_ms.map(|t| now_ms - t);
    let open_findings = m.findings.as_ref().map_or(0, |f| f.open);
    Ok(Attempt::Sealed(Box::new(SealReport {
        manifest: m,
        manifest_key,
        new_log_entries: inbox.fresh,
        leftover_log_entries: inbox.leftover,
        lookback_snapshots,
        findings: new_findings,
        open_findings,
        lag_ms,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })))
}

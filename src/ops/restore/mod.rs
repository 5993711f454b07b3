//! Materialization: the table state at a sealed snapshot (or at an instant) from base state plus
//! changes, in bounded memory, handed to a sink partition by partition.
//!
//! ```text
//! plan (snapshot chain or --as-of) ──▶ read base files and segments, a few at a time
//!      │ each counted row: (key, sequence number, new image or REMOVE)
//!      ▼
//! one partition in memory, or P partitions spilled to disk by key hash (--memory-mb)
//!      │ per partition: latest change per key by sequence number, REMOVEs dropped
//!      ▼
//! sink.partition(i, items sorted by key)     (DynamoDB writer, DynamoDB-JSON files, a test)
//! ```
//!
//! Duplicates are dropped twice over: rows the seal marked as skipped are never read, and the
//! latest-per-key rule makes a repeated record (same sequence number, same image) harmless.
//! The state digest of the result is the sum of the final items' hashes; for a restore from a
//! snapshot it must equal the manifest's `state_digest`, which is checked before anything is
//! reported as done.
//!
//! Quarantined records take part as changes too (their key, sequence number and kind were
//! recorded by the seal, see [`crate::model::quarantine`]): a key whose latest change is a quarantined
//! REMOVE is gone; a key whose latest change is another quarantined record cannot be written
//! (its image is what could not be converted), so it is left out, named in
//! [`Materialized::quarantined`] with where its record is kept, and its recorded image hash is
//! taken out of the comparison with the manifest. Every other item is checked exactly.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, StringArray, TimestampMillisecondArray};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::model::change::SequenceNumber;
use crate::model::checkpoint::CheckpointManifest;
use crate::model::item::{ItemHash, StateDigest};
use crate::model::layout::TableLayout;
use crate::model::manifest::{self, BaseFile, Manifest, ManifestError, SealedSegment};
use crate::progress::Progress;
use crate::store::{self, ObjectStore, StoreError};

mod materialize;
mod sink;
mod spill;
pub use materialize::*;
pub use sink::*;
use spill::*;
pub(crate) use spill::{partition_of, work_dir};

/// What to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// A sealed snapshot: an id or `latest`.
    Snapshot(String),
    /// The state as of an instant (ms since the epoch), from the latest snapshot's chain.
    AsOf(i64),
}

/// Why a restore cannot proceed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot cannot be found or trusted.
    #[error(transparent)]
    Snapshot(#[from] ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The instant is outside what the backup covers.
    #[error("restore point {at}: {why}")]
    OutOfRange {
        /// The instant asked for (RFC 3339).
        at: String,
        /// What the backup covers.
        why: String,
    },
    /// The snapshot cannot give full items.
    #[error("{0}")]
    Unrestorable(String),
    /// A stored object is not what the manifest says.
    #[error("{key}: {problem} (run `streamseal verify --deep` for a full report)")]
    Corrupt {
        /// Object key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Spill files could not be written or read.
    #[error("spill file {path}: {source}")]
    Spill {
        /// Path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The target cannot take the restore (nothing was written).
    #[error("{0}")]
    Target(String),
    /// A strict restore met quarantined records whose change cannot be written (nothing was
    /// written).
    #[error(
        "strict restore refused: the chain holds {records} quarantined record(s) whose change cannot be written ({keys}); nothing was written. A restore that is not strict writes every other item and names the keys left out."
    )]
    StrictRefused {
        /// How many.
        records: usize,
        /// The first few keys.
        keys: String,
    },
    /// The DynamoDB target table does not exist (and was not to be created).
    #[error("target table {table} does not exist; create it, or have the restore create it")]
    NoTargetTable {
        /// The table.
        table: String,
    },
    /// The materialized state does not match the snapshot's digest.
    #[error(
        "the materialized state does not match snapshot {snapshot}: {what}; the backup is inconsistent (run `streamseal verify --deep`)"
    )]
    Mismatch {
        /// Snapshot id.
        snapshot: String,
        /// What differs.
        what: String,
    },
}

/// A restore plan: which objects, up to when, and what the result must be.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Table.
    pub table: String,
    /// The snapshot whose chain is read.
    pub manifest: Manifest,
    /// Base files, then segments in chain order (oldest snapshot first, log order within).
    pub base: Vec<BaseFile>,
    /// The state checkpoint the restore starts from (then `base` is empty and `segments`
    /// holds only what was sealed after it).
    pub checkpoint: Option<CheckpointManifest>,
    /// Segments.
    pub segments: Vec<SealedSegment>,
    /// Only changes created at or before this instant (ms).
    pub as_of_ms: Option<i64>,
    /// Digest and count the result must have (known for a snapshot with both images).
    pub expected: Option<(StateDigest, i64)>,
    /// Segments whose rows are read from a compacted object (see [`crate::ops::compact`]).
    pub replaced: HashMap<String, crate::ops::compact::Replacement>,
    /// Quarantined records of the chain, with what the seal recorded of their effect.
    pub quarantined: Vec<manifest::SealedQuarantine>,
    /// Entries whose effect the chain cannot account (gaps, rejected entries, unreadable
    /// quarantined records; see [`Manifest::unknown_effects`]): while any exist, the result
    /// cannot be proven against the manifest.
    pub unknown_effects: u64,
}

impl Plan {
    /// Bytes of objects to read.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>()
            + self.base.iter().map(|b| b.bytes).sum::<u64>()
            + self.checkpoint.as_ref().map_or(0, |c| c.bytes())
    }

    /// Changes to read.
    pub fn changes(&self) -> u64 {
        self.segments.iter().map(|s| s.counted_rows).sum()
    }
}

/// Plans a restore of `table` at `point`, from the newest checkpoint that can start it.
pub async fn plan(
    store: &dyn ObjectStore,
    table: &str,
    point: &Point,
) -> Result<Plan, RestoreError> {
    plan_with(store, table, point, true).await
}

/// Plans a restore of `table` at `point`; `checkpoints`: whether a state checkpoint may start
/// it (else the whole history is read, as a cross-check or when no checkpoint is wanted).
///
/// A checkpoint at snapshot N starts a restore of snapshot M ≥ N when its manifest equals the
/// chain's (same `manifest_sha256`) and the chain has not adopted another base since; for
/// `--as-of T`, also when every change it holds was created at or before T. Only the segments
/// sealed after N are then read.
pub async fn plan_with(
    store: &dyn ObjectStore,
    table: &str,
    point: &Point,
    checkpoints: bool,
) -> Result<Plan, RestoreError> {
    let layout = TableLayout::new(table);
    let which = match point {
        Point::Snapshot(s) => s.as_str(),
        Point::AsOf(_) => "latest",
    };
    let id = manifest::resolve_snapshot(store, &layout, which).await?;
    let top = match manifest::read_manifest(store, &layout, &id).await {
        Err(ManifestError::Store(StoreError::NotFound { .. })) => {
            return Err(ManifestError::UnknownSnapshot {
                table: table.to_owned(),
                id,
                store: store.url(),
            }
            .into());
        }
        other => other?,
    };
    // The newest checkpoint that can start this restore.
    let mut checkpoint: Option<CheckpointManifest> = None;
    if checkpoints {
        let ids = crate::model::checkpoint::list_checkpoints(store, &layout).await?;
        for cid in ids
            .iter()
            .rev()
            .filter(|c| c.as_str() <= top.snapshot_id.as_str())
        {
            let c = crate::model::checkpoint::read_checkpoint(store, &layout, cid).await?;
            let usable = match point {
                Point::AsOf(t) => c.newest_change_ms.is_none_or(|n| n <= *t),
                Point::Snapshot(_) => true,
            };
            if usable {
                checkpoint = Some(c);
                break;
            }
        }
    }
    // The chain, newest first, each manifest checked against its digest and its child's link,
    // down to the checkpoint's snapshot (whose own segments the checkpoint holds).
    let mut chain = vec![];
    let mut cur = Some((top.clone(), None::<String>));
    while let Some((m, expected_sha)) = cur.take() {
        let key = layout.snapshot_key(&m.snapshot_id);
        if !m.digest_ok()
            || expected_sha
                .as_ref()
                .is_some_and(|s| *s != m.manifest_sha256)
        {
            return Err(ManifestError::Integrity {
                key,
                what: "manifest does not match its digest or its child's link".into(),
            }
            .into());
        }
        if let Some(c) = &checkpoint
            && c.snapshot_id == m.snapshot_id
        {
            if c.snapshot_sha256 != m.manifest_sha256 {
                return Err(RestoreError::Corrupt {
                    key: layout.checkpoint_manifest_key(&c.snapshot_id),
                    problem: format!(
                        "the checkpoint was built from a snapshot {} whose manifest SHA-256 is {}, the chain's is {}",
                        c.snapshot_id, c.snapshot_sha256, m.manifest_sha256
                    ),
                });
            }
            if m.base == top.base {
                break;
            }
            // The chain adopted a new base after this checkpoint: it cannot start the restore.
            checkpoint = None;
        }
        let mut files = manifest::read_files(store, &m).await?;
        // A restore never needs the rows' sequence lists (the largest part of a file list):
        // dropped so the plan of a long history stays small.
        for s in &mut files.segments {
            s.sequence_numbers = crate::model::log::SequenceList::new();
        }
        if let Some(p) = &m.parent {
            let parent = manifest::read_manifest(store, &layout, &p.snapshot_id).await?;
            cur = Some((parent, Some(p.manifest_sha256.clone())));
        }
        chain.push((m, files));
    }
    // Compacted segments: the chain just read has every compaction when it is the latest;
    // an older snapshot's segments may have been compacted by later snapshots.
    let replaced = if manifest::latest_snapshot_id(store, &layout)
        .await?
        .as_deref()
        == Some(top.snapshot_id.as_str())
    {
        crate::ops::compact::replacements_of(chain.iter().map(|(m, f)| (m, f)))
    } else {
        crate::ops::compact::load_replacements(store, &layout).await?
    };
    chain.reverse();
    let quarantined: Vec<manifest::SealedQuarantine> = chain
        .iter()
        .flat_map(|(_, f)| f.quarantined.iter().cloned())
        .collect();
    let segments: Vec<SealedSegment> = chain.into_iter().flat_map(|(_, f)| f.segments).collect();
    if let Some(view) = top.stream_view_type
        && !view.has_new()
    {
        return Err(RestoreError::Unrestorable(format!(
            "table {table}'s stream is {}: its records carry no new images, so items cannot be rebuilt (set the stream to NEW_IMAGE or NEW_AND_OLD_IMAGES)",
            view.as_str()
        )));
    }
    // Expired segments: a restore that needs one is outside what the retention keeps.
    let expired = crate::model::checkpoint::list_expired(store, &layout).await?;
    if !expired.is_empty() {
        let gone: HashMap<&str, &str> = expired
            .iter()
            .flat_map(|(k, r)| r.objects.iter().map(move |o| (o.key.as_str(), k.as_str())))
            .collect();
        let needed = segments.iter().find_map(|s| {
            let stored = replaced
                .get(&s.key)
                .map_or(s.key.as_str(), |r| r.key.as_str());
            gone.get(stored).map(|record| (stored, *record))
        });
        if let Some((object, record)) = needed {
            let newest = crate::model::checkpoint::list_checkpoints(store, &layout)
                .await?
                .pop()
                .unwrap_or_default();
            let what = match point {
                Point::AsOf(t) => format!("instant {}", crate::model::clock::rfc3339(*t)),
                Point::Snapshot(_) => format!("snapshot {}", top.snapshot_id),
            };
            return Err(RestoreError::OutOfRange {
                at: what,
                why: format!(
                    "it needs {object}, expired by policy ({record}); restore a checkpointed snapshot (the newest is {newest}), a later snapshot, or an instant after that checkpoint's newest change",
                ),
            });
        }
    }
    let as_of_ms = match point {
        Point::AsOf(t) => {
            let at = crate::model::clock::rfc3339(*t);
            let newest = top.watermark.newest_change_ms;
            let first = segments.iter().filter_map(|s| s.min_time_ms).min();
            match (first, newest) {
                (_, None) => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: "the backup holds no changes yet".into(),
                    });
                }
                (Some(f), _) if *t < f && top.base.is_empty() && checkpoint.is_none() => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: format!("the backup begins at {}", crate::model::clock::rfc3339(f)),
                    });
                }
                (_, Some(n)) if *t > n => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: format!(
                            "the latest sealed snapshot ({}) reaches {}; seal again to restore a later instant",
                            top.snapshot_id,
                            crate::model::clock::rfc3339(n)
                        ),
                    });
                }
                _ => Some(*t),
            }
        }
        Point::Snapshot(_) => None,
    };
    let expected = match (as_of_ms, top.state_digest) {
        (None, Some(d)) => Some((d, top.item_count)),
        _ => None,
    };
    Ok(Plan {
        table: table.to_owned(),
        base: if checkpoint.is_some() {
            vec![]
        } else {
            top.base.clone()
        },
        checkpoint,
        unknown_effects: top.unknown_effects,
        manifest: top,
        segments,
        as_of_ms,
        expected,
        replaced,
        quarantined,
    })
}

/// One item of the restored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Canonical DynamoDB JSON of the key.
    pub key: String,
    /// Canonical DynamoDB JSON of the item.
    pub item: String,
    /// Sequence number of the change that wrote it (`0` for a base item no captured change
    /// touched).
    pub sequence_number: String,
}

/// Where materialized partitions go.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Receives partition `index` of `count`, its items sorted by key. Up to
    /// [`MaterializeOptions::parallel`] partitions arrive at once, in no particular order.
    async fn partition(
        &self,
        index: usize,
        count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError>;
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    /// Memory budget for the in-memory state, MiB. When the changes might not fit, they are
    /// spilled to disk in partitions by key hash.
    pub memory_mb: usize,
    /// Where spill files go (default: the system temp directory).
    pub spill_dir: Option<PathBuf>,
    /// Objects read concurrently.
    pub concurrency: usize,
    /// At least this many partitions (more partitions: finer restore checkpoints).
    pub min_partitions: usize,
    /// Exactly this many partitions, whatever the budget (a checkpoint's, or a distributed
    /// restore's, partition count).
    pub partitions: Option<usize>,
    /// Only this partition is materialized (one iteration of a distributed restore); the
    /// result is then proven by the caller, which combines every partition's digest.
    pub only_partition: Option<usize>,
    /// Only this key (canonical JSON): a point lookup (the result is not compared with the
    /// snapshot's digest). With a checkpoint, only the file of its partition is read.
    pub only_key: Option<String>,
    /// With `only_key`: keep every change of the key read ([`Materialized::history`]).
    pub history: bool,
    /// Partitions folded and handed to the sink at once (each holds one partition's state
    /// in memory, so the partition count grows with it to stay within `memory_mb`).
    pub parallel: usize,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            memory_mb: 1024,
            spill_dir: None,
            concurrency: 4,
            min_partitions: 1,
            partitions: None,
            only_partition: None,
            only_key: None,
            history: false,
            parallel: 1,
        }
    }
}

/// What a materialization produced.
#[derive(Debug, Clone, Serialize)]
pub struct Materialized {
    /// Items handed to the sink.
    pub items: u64,
    /// Their digest.
    pub digest: StateDigest,
    /// Changes read.
    pub changes: u64,
    /// Objects read (segments, compacted objects, base and checkpoint files).
    pub objects_read: u64,
    /// With [`MaterializeOptions::history`]: every change of the key, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<KeyChange>,
    /// Partitions (1 when everything fitted in memory).
    pub partitions: usize,
    /// Keys left out because their latest change is a quarantined record.
    pub quarantined: Vec<QuarantinedKey>,
    /// The sum of their recorded image hashes (`None` if one has none): with `digest`, the
    /// digest of the whole state.
    #[serde(skip)]
    pub quarantined_digest: Option<StateDigest>,
    /// Why the result could not be proven against the manifest, when it could not (a
    /// quarantined record of unknown effect); `None` when it was checked, or had nothing to
    /// be checked against (`--as-of`).
    pub unproven: Option<String>,
}

/// One change of a key, for `streamseal get --history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// Sequence number (`0`: the item as a base or checkpoint held it).
    pub sequence_number: String,
    /// When DynamoDB made the change (ms), when known.
    pub created_ms: Option<i64>,
    /// The new image (canonical JSON); none: the item was removed. A quarantined record's
    /// starts with `?`.
    pub image: Option<String>,
    /// The object it was read from.
    pub object: String,
}

/// A key a restore could not write: its latest change is a quarantined record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedKey {
    /// Canonical DynamoDB JSON of the key.
    pub key: String,
    /// The quarantined record's sequence number.
    pub sequence_number: String,
    /// Where the record is kept verbatim.
    pub object: String,
    /// The restore's state marker for it (kept by a checkpoint).
    #[serde(skip)]
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_across_runs() {
        // Pinned values: a different hash would strand resumed restores' checkpoints.
        assert_eq!(partition_of("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
        assert_eq!(partition_of(r#"{"pk":{"S":"a"}}"#, 1), 0);
        let a = partition_of(r#"{"pk":{"S":"customer#1"}}"#, 64);
        assert_eq!(a, partition_of(r#"{"pk":{"S":"customer#1"}}"#, 64));
    }

    #[test]
    fn latest_change_wins_and_removes_delete() {
        let mut s = State::default();
        fold(&mut s, "k", "5", Some("b"));
        fold(&mut s, "k", "3", Some("a"));
        assert_eq!(s["k"].image.as_deref(), Some("b"));
        fold(&mut s, "k", "7", None);
        assert!(s["k"].image.is_none());
        fold(&mut s, "k", "7", Some("again"));
        assert!(
            s["k"].image.is_none(),
            "a repeated sequence number changes nothing"
        );
    }
}

//! Sealed snapshot manifests: what a snapshot is made of, written once, checkable.
//!
//! A snapshot is a chain: its manifest names its parent (by id and manifest digest), the base
//! state it inherits, and the segments sealed *since the parent*, listed in a separate
//! file-list object whose size and SHA-256 the manifest records. The table as of the snapshot
//! is base + every segment of every manifest in the chain. Keeping each manifest to its own new
//! segments is what keeps sealing O(new changes): a seal reads the parent's small manifest,
//! never the history's file lists. The format is documented in `docs/manifest.md`.
//!
//! A manifest also references its chain's findings ledger ([`crate::model::findings`]): the gaps,
//! rejected entries and quarantined records of every snapshot so far, open or acknowledged.
//!
//! Each manifest carries `manifest_sha256`, the SHA-256 of its own canonical content (the
//! manifest serialised by this module with that field empty), so any edit to any field is
//! detected, and a child records its parent's digest, so an edited ancestor breaks the chain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::change::StreamViewType;
use crate::model::findings::{Ledger, LedgerRef};
use crate::model::item::StateDigest;
use crate::model::layout::TableLayout;
use crate::model::log::{GapRecord, SequenceList};
use crate::model::schema::KeySchema;
use crate::store::{ObjectStore, StoreError};

/// Version of the manifest and file-list formats. Format 1 (streamseal 0.1 before the inbox)
/// found log entries by write-time keys; it is not read any more.
pub(crate) const MANIFEST_FORMAT: u32 = 2;

/// Width of a snapshot id: the zero-padded generation number.
pub(crate) const SNAPSHOT_ID_DIGITS: usize = 10;

/// A sealed snapshot manifest (`<table>/snapshots/<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Snapshot id: the generation, zero-padded (ids sort in sealing order).
    pub snapshot_id: String,
    /// 1 for the first snapshot of a table, parent's + 1 after.
    pub generation: u64,
    /// When the seal ran (RFC 3339, UTC).
    pub created_at: String,
    /// Who or what asked (an alarm name, a Health event, a person's `--reason`).
    pub reason: String,
    /// The snapshot this one extends.
    pub parent: Option<ParentRef>,
    /// The table's key schema, when a schema file gave it.
    pub key_schema: Option<KeySchema>,
    /// The table's definition as the capture recorded it (keys, indexes, billing, TTL,
    /// stream), for `restore --create-table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::model::definition::TableDefinition>,
    /// Full-state files the chain starts from (bootstrap or compaction), inherited by children.
    pub base: Vec<BaseFile>,
    /// The newest state checkpoint of the chain when this seal ran (inherited until a newer
    /// one is published): verify checks that it is still there and still equals its snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::model::checkpoint::CheckpointRef>,
    /// The file list of the segments sealed by this snapshot.
    pub files: FilesRef,
    /// The whole chain: base plus every snapshot's segments.
    pub totals: Totals,
    /// How far the snapshot reaches.
    pub watermark: Watermark,
    /// Quarantined records in the chain (kept verbatim, not in segments; their effect on the
    /// state is accounted, see [`crate::model::quarantine`]).
    pub quarantined_records: u64,
    /// Known gaps in the chain (changes reported missing, e.g. by the on-failure destination).
    pub known_gaps: u64,
    /// Log entries this seal could not use (malformed, foreign); they stay open findings in
    /// the ledger until acknowledged.
    pub rejected_log_entries: u64,
    /// The chain's findings ledger, once the chain has a finding.
    pub findings: Option<LedgerRef>,
    /// Entries of the chain whose effect on the state the digest and count cannot include:
    /// quarantined records that could not be read (not JSON, unreadable key or kind),
    /// rejected segment or quarantine entries, gaps. Their changes are missing from the chain,
    /// so later changes of the same keys no longer add up: while any exist, a restore cannot be
    /// proven against the digest and says so (verify names each one).
    pub unknown_effects: u64,
    /// Order-independent digest of the table state (base + all changes), when every segment in
    /// the chain carries both images; `null` otherwise.
    pub state_digest: Option<StateDigest>,
    /// Live items: base items plus inserts minus removes.
    pub item_count: i64,
    /// The stream's view type, from the segments.
    pub stream_view_type: Option<StreamViewType>,
    /// End of the Object Lock retention the manifest was written with (RFC 3339), if any.
    pub retain_until: Option<String>,
    /// SHA-256 of this manifest's canonical content with this field empty.
    pub manifest_sha256: String,
}

/// A link to the parent snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    /// Parent snapshot id.
    pub snapshot_id: String,
    /// The parent's `manifest_sha256`.
    pub manifest_sha256: String,
}

/// A full-state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseFile {
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Items.
    pub rows: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Where a manifest's file list is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesRef {
    /// Object key of the file list.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Segments sealed by this snapshot.
    pub segments: u64,
    /// Rows they contribute (duplicates excluded).
    pub rows: u64,
    /// Their Parquet bytes.
    pub segment_bytes: u64,
    /// Segments dropped because every row was already sealed (redeliveries).
    pub duplicate_segments: u64,
    /// Rows skipped as duplicates, in dropped and in partly overlapping segments.
    pub duplicate_rows: u64,
}

/// Sums over the whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Segments.
    pub segments: u64,
    /// Rows (changes), duplicates excluded.
    pub rows: u64,
    /// Bytes of segments and base files.
    pub bytes: u64,
}

/// How far a snapshot reaches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watermark {
    /// Last sequence number sealed per shard, for segments whose shard is known (the stream
    /// poller records it; Lambda events do not carry it).
    pub shards: BTreeMap<String, String>,
    /// Newest `ApproximateCreationDateTime` sealed in the chain (ms).
    pub newest_change_ms: Option<i64>,
    /// The snapshot holds every change created before this instant (ms), as far as the
    /// capture can tell: the oldest "latest change" among the streams or shards that delivered
    /// to this seal. See `docs/manifest.md` for what it can and cannot promise.
    pub consistent_through_ms: Option<i64>,
    /// Log entries this seal found waiting in the inbox (sealed, repeated or rejected here).
    pub inbox_entries: u64,
}

/// A manifest's file list (`<table>/snapshot-files/<id>-<sha>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFiles {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Snapshot id.
    pub snapshot_id: String,
    /// Segments sealed by this snapshot, in log order.
    pub segments: Vec<SealedSegment>,
    /// Segments whose every row was already sealed.
    pub duplicates: Vec<DuplicateSegment>,
    /// Quarantine log entries sealed by this snapshot.
    pub quarantined: Vec<SealedQuarantine>,
    /// Gap log entries sealed by this snapshot.
    pub gaps: Vec<SealedGap>,
    /// Log entries this seal could not use, and why.
    pub rejected: Vec<RejectedEntry>,
    /// Compacted objects sealed by this snapshot (each stands in for segments of an earlier
    /// snapshot; see [`crate::ops::compact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compactions: Vec<SealedCompaction>,
    /// Acknowledgments sealed by this snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledgments: Vec<SealedAcknowledgment>,
    /// Quarantine and gap entries whose finding the ledger already held (a redelivered batch,
    /// a redelivered on-failure message), and quarantined records whose sequence number is
    /// already counted (a record quarantined by one writer and converted by another):
    /// consumed, counted once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatedEntry>,
    /// Entries too large to be a log entry, rejected once and left in the inbox (nothing is
    /// removed that is not recorded): listed by every later seal that meets them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

impl SnapshotFiles {
    /// Every log entry this file list accounts for.
    pub(crate) fn entry_keys(&self) -> impl Iterator<Item = &str> {
        self.segments
            .iter()
            .map(|s| s.log_key.as_str())
            .chain(self.duplicates.iter().map(|s| s.log_key.as_str()))
            .chain(self.quarantined.iter().map(|s| s.log_key.as_str()))
            .chain(self.gaps.iter().map(|s| s.log_key.as_str()))
            .chain(
                self.rejected
                    .iter()
                    .filter(|s| !s.kept)
                    .map(|s| s.log_key.as_str()),
            )
            .chain(self.compactions.iter().map(|s| s.log_key.as_str()))
            .chain(self.acknowledgments.iter().map(|s| s.log_key.as_str()))
            .chain(self.repeats.iter().map(|s| s.log_key.as_str()))
    }
}

/// An acknowledgment entry sealed into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedAcknowledgment {
    /// Its log entry.
    pub log_key: String,
    /// What it says.
    pub record: crate::model::log::AcknowledgmentRecord,
    /// What the seal did with it: `applied`, or why it changed nothing.
    pub outcome: String,
}

/// An entry whose content was already accounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatedEntry {
    /// Its log entry.
    pub log_key: String,
    /// The ledger id it repeats, when it repeats a finding.
    pub finding: Option<String>,
    /// The sequence number already counted, when it repeats a record.
    pub sequence_number: Option<String>,
    /// The object it names (a quarantined record), when it names one.
    pub object: Option<String>,
}

/// A compaction log entry sealed into a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedCompaction {
    /// Its log entry.
    pub log_key: String,
    /// What it says.
    pub record: crate::model::log::CompactionRecord,
}

/// A segment in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSegment {
    /// Object key.
    pub key: String,
    /// Its log entry.
    pub log_key: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows in the object.
    pub rows: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Smallest sequence number.
    pub first_sequence: String,
    /// Largest sequence number.
    pub last_sequence: String,
    /// Earliest change time (ms).
    pub min_time_ms: Option<i64>,
    /// Latest change time (ms).
    pub max_time_ms: Option<i64>,
    /// Shard: recorded by the stream poller, or attributed at seal time from the shard map in
    /// the store by sequence range (Lambda events carry no shard id); `None` when neither.
    pub shard_id: Option<String>,
    /// Stream ARN.
    pub event_source_arn: Option<String>,
    /// Rows that count: a row counts when it is the first in the segment with its sequence
    /// number and that number is not in `skipped_sequences`.
    pub counted_rows: u64,
    /// Sequence numbers already counted in an earlier segment; readers skip them (front-coded).
    pub skipped_sequences: SequenceList,
    /// The sequence number of every row, in row order (front-coded), from its log entry: what a
    /// later seal compares redelivered records with, without the entry (which is gone once
    /// sealed) or the Parquet.
    pub sequence_numbers: SequenceList,
    /// Digest delta of the counted rows, when the stream carries both images.
    pub digest_delta: Option<StateDigest>,
    /// Item-count delta of the counted rows.
    pub item_count_delta: i64,
}

/// A segment left out because all its rows were sealed already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateSegment {
    /// Object key.
    pub key: String,
    /// Its log entry.
    pub log_key: String,
    /// Its rows.
    pub rows: u64,
}

/// A quarantined record sealed into the snapshot's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedQuarantine {
    /// Quarantine object key.
    pub key: String,
    /// Its log entry.
    pub log_key: String,
    /// Sequence number, when readable.
    pub sequence_number: Option<String>,
    /// Why it was quarantined.
    pub reason: String,
    /// Size of the quarantine object when sealed (0 when it was missing).
    pub bytes: u64,
    /// SHA-256 of the quarantine object when sealed, hex (empty when it was missing).
    pub sha256: String,
    /// What it does to the state, read from the quarantine object by the seal.
    pub effect: crate::model::quarantine::QuarantineEffect,
}

/// A known gap sealed into the snapshot's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedGap {
    /// Its log entry.
    pub log_key: String,
    /// The gap.
    pub gap: GapRecord,
}

/// A log entry the seal could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedEntry {
    /// Log key.
    pub log_key: String,
    /// The object it names, if readable.
    pub object: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The entry as found (the entry itself is removed from the inbox): its text, or
    /// `base64:` and its bytes when it is not UTF-8; `None` when it was left in the inbox.
    pub entry: Option<String>,
    /// Left in the inbox (too large to be a log entry, so not copied here).
    #[serde(default)]
    pub kept: bool,
}

/// The hint object naming the latest snapshot (`<table>/snapshots/head.json`). It is only a
/// starting point: readers list snapshots after it to find newer ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Latest snapshot id when written.
    pub snapshot_id: String,
}

impl Manifest {
    /// SHA-256 over the canonical content: this manifest serialised with
    /// `manifest_sha256` empty.
    pub(crate) fn compute_sha256(&self) -> String {
        let mut body = self.clone();
        body.manifest_sha256 = String::new();
        // Serialising plain structs, vectors and BTreeMaps cannot fail, and the field order
        // is fixed by the struct, so the bytes are canonical.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Fills in `manifest_sha256`.
    pub(crate) fn seal_digest(&mut self) {
        self.manifest_sha256 = self.compute_sha256();
    }

    /// Whether `manifest_sha256` matches the content.
    pub(crate) fn digest_ok(&self) -> bool {
        self.manifest_sha256 == self.compute_sha256()
    }

    /// Pretty JSON, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A snapshot id from a generation.
pub fn snapshot_id(generation: u64) -> String {
    format!("{generation:0width$}", width = SNAPSHOT_ID_DIGITS)
}

/// The generation of a snapshot id, if it is one.
pub(crate) fn parse_snapshot_id(id: &str) -> Option<u64> {
    (id.len() == SNAPSHOT_ID_DIGITS && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            table: "orders".into(),
            snapshot_id: snapshot_id(1),
            generation: 1,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            reason: "test".into(),
            parent: None,
            key_schema: None,
            definition: None,
            base: vec![],
            checkpoint: None,
            files: FilesRef {
                key: "orders/snapshot-files/0000000001-ab.json".into(),
                bytes: 10,
                sha256: "00".into(),
                segments: 1,
                rows: 2,
                segment_bytes: 3,
                duplicate_segments: 0,
                duplicate_rows: 0,
            },
            totals: Totals::default(),
            watermark: Watermark::default(),
            quarantined_records: 0,
            known_gaps: 0,
            rejected_log_entries: 0,
            findings: None,
            unknown_effects: 0,
            state_digest: Some(StateDigest::ZERO),
            item_count: 0,
            stream_view_type: None,
            retain_until: None,
            manifest_sha256: String::new(),
        }
    }

    #[test]
    fn digest_covers_every_field_and_survives_a_round_trip() {
        let mut m = sample();
        m.seal_digest();
        assert!(m.digest_ok());
        let back: Manifest = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert!(back.digest_ok());
        let mut edited = back.clone();
        edited.item_count = 1;
        assert!(!edited.digest_ok());
        let mut edited = back;
        edited.files.rows = 3;
        assert!(!edited.digest_ok());
    }

    #[test]
    fn ids_are_fixed_width_generations() {
        assert_eq!(snapshot_id(42), "0000000042");
        assert_eq!(parse_snapshot_id("0000000042"), Some(42));
        assert_eq!(parse_snapshot_id("42"), None);
        assert_eq!(parse_snapshot_id("000000004x"), None);
        assert_eq!(parse_snapshot_id("head"), None);
    }
}

/// A manifest or file list that cannot be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not valid JSON of the expected shape.
    #[error("{key} is not a valid streamseal {what}: {message}")]
    Parse {
        /// Object key.
        key: String,
        /// "manifest" or "file list".
        what: &'static str,
        /// Parser message.
        message: String,
    },
    /// Written by a version of streamseal with another format.
    #[error(
        "{key} is a format-{format} {what}; this streamseal reads format {MANIFEST_FORMAT} (format 1 was written before log entries moved to the inbox: restore it with the streamseal that wrote it, or start a new chain with `streamseal bootstrap` under another prefix)"
    )]
    Format {
        /// Object key.
        key: String,
        /// "manifest" or "file list".
        what: &'static str,
        /// The format found.
        format: u32,
    },
    /// The content does not match its recorded digest.
    #[error(
        "{key}: {what} (the object was altered after sealing; run `streamseal verify` for details)"
    )]
    Integrity {
        /// Object key.
        key: String,
        /// What does not match.
        what: String,
    },
    /// The table has no sealed snapshot.
    #[error("table {table} has no sealed snapshot in {store} (seal one first)")]
    NoSnapshots {
        /// Table.
        table: String,
        /// Store URL.
        store: String,
    },
    /// The named snapshot does not exist.
    #[error(
        "snapshot {id} of table {table} does not exist in {store} (list the snapshots to see which exist)"
    )]
    UnknownSnapshot {
        /// Table.
        table: String,
        /// Snapshot id.
        id: String,
        /// Store URL.
        store: String,
    },
    /// A snapshot id that is not one.
    #[error(
        "{0:?} is not a snapshot id (expected \"latest\" or {SNAPSHOT_ID_DIGITS} digits, e.g. 0000000001)"
    )]
    BadId(String),
}

/// Reads and parses a manifest, without judging its digest (verify reports that itself).
pub async fn read_manifest(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    id: &str,
) -> Result<Manifest, ManifestError> {
    let key = layout.snapshot_key(id);
    let bytes = store.get(&key).await?;
    check_format(&key, &bytes, "manifest")?;
    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Parse {
        key,
        what: "manifest",
        message: e.to_string(),
    })
}

/// Refuses a manifest or file list of another format with a message that says what to do.
fn check_format(key: &str, bytes: &[u8], what: &'static str) -> Result<(), ManifestError> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    match serde_json::from_slice::<Format>(bytes) {
        Ok(f) if f.format != MANIFEST_FORMAT => Err(ManifestError::Format {
            key: key.to_owned(),
            what,
            format: f.format,
        }),
        _ => Ok(()),
    }
}

/// Reads a manifest's findings ledger and checks it against the size and SHA-256 the manifest
/// recorded; an empty ledger when the chain has never had a finding.
pub async fn read_ledger(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<Ledger, ManifestError> {
    let Some(r) = &manifest.findings else {
        return Ok(Ledger::new(&manifest.table));
    };
    let bytes = store.get(&r.key).await?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != r.bytes || sha != r.sha256 {
        return Err(ManifestError::Integrity {
            key: r.key.clone(),
            what: format!(
                "findings ledger is {} bytes with SHA-256 {sha}, the manifest recorded {} bytes with {}",
                bytes.len(),
                r.bytes,
                r.sha256
            ),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Parse {
        key: r.key.clone(),
        what: "findings ledger",
        message: e.to_string(),
    })
}

/// Reads a manifest's file list and checks it against the size and SHA-256 the manifest
/// recorded.
pub async fn read_files(
    store: &dyn ObjectStore,
    manifest: &Manifest,
) -> Result<SnapshotFiles, ManifestError> {
    let key = &manifest.files.key;
    let bytes = store.get(key).await?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != manifest.files.bytes || sha != manifest.files.sha256 {
        return Err(ManifestError::Integrity {
            key: key.clone(),
            what: format!(
                "file list is {} bytes with SHA-256 {sha}, the manifest recorded {} bytes with {}",
                bytes.len(),
                manifest.files.bytes,
                manifest.files.sha256
            ),
        });
    }
    check_format(key, &bytes, "file list")?;
    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Parse {
        key: key.clone(),
        what: "file list",
        message: e.to_string(),
    })
}

/// Every snapshot id of the table, oldest first (lists `snapshots/`, one entry per seal).
pub async fn list_snapshot_ids(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    after: Option<&str>,
) -> Result<Vec<String>, ManifestError> {
    let prefix = layout.snapshots_prefix();
    let start = after.map(|id| layout.snapshot_key(id));
    Ok(store
        .list(&prefix, start.as_deref(), None)
        .await?
        .into_iter()
        .filter_map(|m| {
            let name = m.key.strip_prefix(&prefix)?.strip_suffix(".json")?;
            parse_snapshot_id(name).map(|_| name.to_owned())
        })
        .collect())
}

/// The latest snapshot id: the head hint, then a listing of anything sealed after it (the
/// hint can lag behind a seal that crashed before updating it). O(1) listings in the usual case.
pub(crate) async fn latest_snapshot_id(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Option<String>, ManifestError> {
    let hint = match store.get(&layout.snapshot_head_key()).await {
        Ok(bytes) => serde_json::from_slice::<Head>(&bytes)
            .ok()
            .map(|h| h.snapshot_id)
            .filter(|id| parse_snapshot_id(id).is_some()),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let newer = list_snapshot_ids(store, layout, hint.as_deref()).await?;
    Ok(newer.into_iter().next_back().or(hint))
}

/// Resolves `latest` or an id to an id that exists.
pub async fn resolve_snapshot(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    which: &str,
) -> Result<String, ManifestError> {
    if which == "latest" {
        return latest_snapshot_id(store, layout).await?.ok_or_else(|| {
            ManifestError::NoSnapshots {
                table: layout.table().to_owned(),
                store: store.url(),
            }
        });
    }
    let id = if parse_snapshot_id(which).is_some() {
        which.to_owned()
    } else if let Some(n) = which.parse::<u64>().ok().filter(|n| *n > 0) {
        // `--snapshot 3` is friendlier than ten digits.
        snapshot_id(n)
    } else {
        return Err(ManifestError::BadId(which.to_owned()));
    };
    Ok(id)
}

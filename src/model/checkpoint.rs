//! State checkpoints and expire records: what lets recovery time depend on the table's size and
//! the changes since a recent checkpoint, never on how long the backup has run.
//!
//! ```text
//! <table>/checkpoint-files/<generation>/part-<p:05>.parquet   keys, item, sequence_number
//! <table>/checkpoint-manifests/<generation>.json              the checkpoint manifest (commit)
//! <table>/expired/<checkpoint>-<sha16>.json                   what an expire deleted, and why
//! ```
//!
//! A checkpoint is the full table state at a sealed snapshot, one Parquet file per key-hash
//! partition (the restore's FNV-1a partitioning, so a restore or an Athena query reads
//! partitions independently), rows sorted by key, each with the sequence number of the change
//! that wrote it (`null` for an item no captured change touched since the bootstrap base). Its
//! manifest names the snapshot it equals (id and `manifest_sha256`), the digest and item count
//! (checked against that snapshot's before it is published), and the keys whose latest change
//! is a quarantined record that cannot be written, with the state marker a restore needs.
//!
//! Why a checkpoint plus the later changes is the same state as the whole history: the
//! checkpoint holds, per key, the latest change of the chain up to its snapshot *with its
//! sequence number*; a restore folds the later changes over it by the same latest-by-sequence
//! rule a restore from the history uses, so the result is the same fold over the same changes.
//!
//! An expire record is written once, before anything is deleted, and lists every object it
//! deletes with the snapshot that sealed it and the checkpoint that covers it: verify tells an
//! object expired by policy (named in a record, covered by a checkpoint that checks) from a
//! missing one.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::item::StateDigest;
use crate::model::layout::TableLayout;
use crate::model::schema::KeySchema;
use crate::store::{ObjectStore, StoreError};

/// Version of the checkpoint manifest and of the expire record.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// How keys are assigned to partitions (recorded so a reader can check it knows the rule).
pub const PARTITIONING: &str = "fnv1a64(canonical key JSON) mod partitions";

/// A checkpoint manifest (`<table>/checkpoint-manifests/<generation>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointManifest {
    /// [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// Table.
    pub table: String,
    /// The snapshot this checkpoint equals.
    pub snapshot_id: String,
    /// That snapshot's `manifest_sha256`.
    pub snapshot_sha256: String,
    /// Every change of the snapshot's chain was created at or before this instant (ms): a
    /// restore as of an instant at or after it may start from this checkpoint.
    pub newest_change_ms: Option<i64>,
    /// When it was built (RFC 3339).
    pub created_at: String,
    /// What it was built from: `history`, `base <id>` or `checkpoint <id>`.
    pub built_from: String,
    /// The table's key schema, when the snapshot recorded it.
    pub key_schema: Option<KeySchema>,
    /// [`PARTITIONING`].
    pub partitioning: String,
    /// Partitions (one file each, maybe empty).
    pub partitions: usize,
    /// Items written (quarantined keys not included).
    pub items: u64,
    /// Digest of the items written.
    pub digest: StateDigest,
    /// The snapshot's digest and count (items plus quarantined keys), which this checkpoint
    /// was proven to reach.
    pub snapshot_digest: Option<StateDigest>,
    /// The snapshot's item count.
    pub snapshot_items: i64,
    /// One file per partition, in partition order.
    pub files: Vec<CheckpointFile>,
    /// Keys whose latest change is a quarantined record that cannot be written.
    pub quarantined: Vec<QuarantinedState>,
    /// SHA-256 of this manifest's JSON with this field empty.
    pub checkpoint_sha256: String,
}

/// A manifest's reference to a state checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// The snapshot it equals.
    pub snapshot_id: String,
    /// Its `checkpoint_sha256`.
    pub checkpoint_sha256: String,
}

/// One checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointFile {
    /// Partition.
    pub partition: usize,
    /// Object key.
    pub key: String,
    /// Size.
    pub bytes: u64,
    /// Items.
    pub rows: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A key held by a quarantined record at the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantinedState {
    /// Canonical key JSON.
    pub key: String,
    /// The record's sequence number.
    pub sequence_number: String,
    /// The restore's state marker (which record, and how the seal hashed its image).
    pub state: String,
}

impl CheckpointManifest {
    fn compute_sha256(&self) -> String {
        let mut body = self.clone();
        body.checkpoint_sha256 = String::new();
        // Plain structs and vectors always serialize, in field order: canonical bytes.
        hex::encode(Sha256::digest(
            serde_json::to_vec(&body).unwrap_or_default(),
        ))
    }

    /// Fills in `checkpoint_sha256`.
    pub fn seal_digest(&mut self) {
        self.checkpoint_sha256 = self.compute_sha256();
    }

    /// Whether `checkpoint_sha256` matches the content.
    pub fn digest_ok(&self) -> bool {
        self.checkpoint_sha256 == self.compute_sha256()
    }

    /// Pretty JSON, as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Bytes of its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// An expire record (`<table>/expired/<checkpoint>-<sha16>.json`), written once before the
/// objects it names are deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireRecord {
    /// [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// Table.
    pub table: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// The retention asked for (ms of changes kept).
    pub keep_changes_ms: i64,
    /// Objects whose every change is older than this instant were eligible (ms).
    pub cutoff_ms: i64,
    /// The checkpoint covering every object listed: its snapshot id.
    pub checkpoint: String,
    /// Its `checkpoint_sha256`.
    pub checkpoint_sha256: String,
    /// What was deleted.
    pub objects: Vec<ExpiredObject>,
}

/// One deleted object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiredObject {
    /// Object key.
    pub key: String,
    /// Size it was sealed with.
    pub bytes: u64,
    /// SHA-256 it was sealed with.
    pub sha256: String,
    /// The snapshot that sealed it (for a compacted object, the one that sealed the
    /// compaction).
    pub sealed_by: String,
}

impl TableLayout {
    /// Folder of checkpoint manifests.
    pub(crate) fn checkpoint_manifests_prefix(&self) -> String {
        format!("{}/checkpoint-manifests/", self.table())
    }

    /// Key of the manifest of the checkpoint at snapshot `id`.
    pub fn checkpoint_manifest_key(&self, id: &str) -> String {
        format!("{}{id}.json", self.checkpoint_manifests_prefix())
    }

    /// Folder of the files of the checkpoint at snapshot `id`.
    pub(crate) fn checkpoint_files_prefix(&self, id: &str) -> String {
        format!("{}/checkpoint-files/{id}/", self.table())
    }

    /// Key of partition `p`'s file of the checkpoint at snapshot `id`.
    pub(crate) fn checkpoint_file_key(&self, id: &str, p: usize) -> String {
        format!("{}part-{p:05}.parquet", self.checkpoint_files_prefix(id))
    }

    /// Folder of expire records.
    pub(crate) fn expired_prefix(&self) -> String {
        format!("{}/expired/", self.table())
    }

    /// Key of an expire record, named by its checkpoint and content.
    pub(crate) fn expire_record_key(&self, checkpoint: &str, sha256_hex: &str) -> String {
        format!(
            "{}{checkpoint}-{}.json",
            self.expired_prefix(),
            &sha256_hex[..sha256_hex.len().min(16)]
        )
    }
}

fn parse_error(
    store: &dyn ObjectStore,
    key: &str,
    what: &str,
    e: impl std::fmt::Display,
) -> StoreError {
    StoreError::Permanent {
        op: "parse",
        store: store.url(),
        key: key.to_owned(),
        message: format!("not {what}: {e}"),
    }
}

/// The snapshot ids of the table's published checkpoints, oldest first.
pub async fn list_checkpoints(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Vec<String>, StoreError> {
    let prefix = layout.checkpoint_manifests_prefix();
    let mut ids: Vec<String> = store
        .list(&prefix, None, None)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.key
                .strip_prefix(&prefix)
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|id| crate::model::manifest::parse_snapshot_id(id).is_some())
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// The manifest of the checkpoint at snapshot `id`, checked against its own digest, its
/// table and its name.
pub async fn read_checkpoint(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    id: &str,
) -> Result<CheckpointManifest, StoreError> {
    let key = layout.checkpoint_manifest_key(id);
    let bytes = store.get(&key).await?;
    let c: CheckpointManifest = serde_json::from_slice(&bytes)
        .map_err(|e| parse_error(store, &key, "a checkpoint manifest", e))?;
    let problem = if c.format != CHECKPOINT_FORMAT {
        Some(format!(
            "format {} (this version reads {CHECKPOINT_FORMAT})",
            c.format
        ))
    } else if !c.digest_ok() {
        Some("does not match its checkpoint_sha256".to_owned())
    } else if c.table != layout.table() || c.snapshot_id != id {
        Some(format!(
            "describes table {} snapshot {}",
            c.table, c.snapshot_id
        ))
    } else if c.partitioning != PARTITIONING || c.files.len() != c.partitions {
        Some(format!(
            "partitioning {:?} with {} files for {} partitions is not one this version reads",
            c.partitioning,
            c.files.len(),
            c.partitions
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(parse_error(store, &key, "a sound checkpoint manifest", p)),
        None => Ok(c),
    }
}

/// The checkpoint a seal records: the newest published at or before `parent` (by the time the
/// seal runs), else `parent`'s own; none when the seal adopts a new base (the checkpoint
/// predates it). One listing per seal.
pub async fn newest_for_seal(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    parent: Option<&crate::model::manifest::Manifest>,
    adopts_base: bool,
) -> Result<Option<CheckpointRef>, StoreError> {
    let Some(parent) = parent else {
        return Ok(None);
    };
    if adopts_base {
        return Ok(None);
    }
    let inherited = parent.checkpoint.clone();
    let Some(newest) = list_checkpoints(store, layout)
        .await?
        .into_iter()
        .rfind(|c| *c <= parent.snapshot_id)
    else {
        return Ok(inherited);
    };
    if inherited.as_ref().is_some_and(|c| c.snapshot_id == newest) {
        return Ok(inherited);
    }
    // A checkpoint from before the chain's base is no start for a restore: not recorded.
    match crate::model::manifest::read_manifest(store, layout, &newest).await {
        Ok(m) if m.base == parent.base => {}
        Ok(_) => return Ok(None),
        Err(crate::model::manifest::ManifestError::Store(e)) => return Err(e),
        Err(_) => return Ok(inherited),
    }
    match read_checkpoint(store, layout, &newest).await {
        Ok(c) => Ok(Some(CheckpointRef {
            snapshot_id: c.snapshot_id,
            checkpoint_sha256: c.checkpoint_sha256,
        })),
        // A checkpoint that does not read is not recorded; verify names it.
        Err(StoreError::Permanent { .. } | StoreError::NotFound { .. }) => Ok(inherited),
        Err(e) => Err(e),
    }
}

/// Every expire record of the table, oldest first (one per expire run: small).
pub async fn list_expired(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Vec<(String, ExpireRecord)>, StoreError> {
    let mut out = vec![];
    for m in store.list(&layout.expired_prefix(), None, None).await? {
        if !m.key.ends_with(".json") {
            continue;
        }
        let bytes = store.get(&m.key).await?;
        let r: ExpireRecord = serde_json::from_slice(&bytes)
            .map_err(|e| parse_error(store, &m.key, "an expire record", e))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if layout.expire_record_key(&r.checkpoint, &sha) != m.key || r.table != layout.table() {
            return Err(parse_error(
                store,
                &m.key,
                "an expire record of this table",
                "its name does not match its content (altered?)",
            ));
        }
        out.push((m.key, r));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_every_field() {
        let mut c = CheckpointManifest {
            format: CHECKPOINT_FORMAT,
            table: "t".into(),
            snapshot_id: "0000000003".into(),
            snapshot_sha256: "ab".into(),
            newest_change_ms: Some(5),
            created_at: "x".into(),
            built_from: "history".into(),
            key_schema: None,
            partitioning: PARTITIONING.into(),
            partitions: 0,
            items: 2,
            digest: StateDigest::ZERO,
            snapshot_digest: None,
            snapshot_items: 2,
            files: vec![],
            quarantined: vec![],
            checkpoint_sha256: String::new(),
        };
        c.seal_digest();
        assert!(c.digest_ok());
        c.items = 3;
        assert!(!c.digest_ok());
        let l = TableLayout::new("t");
        assert_eq!(
            l.checkpoint_file_key("0000000003", 7),
            "t/checkpoint-files/0000000003/part-00007.parquet"
        );
        assert!(
            !l.checkpoint_manifest_key("0000000003")
                .starts_with(&l.checkpoint_files_prefix("0000000003"))
        );
    }
}

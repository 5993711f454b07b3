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
//! recorded by the seal, see [`crate::quarantine`]): a key whose latest change is a quarantined
//! REMOVE is gone; a key whose latest change is another quarantined record cannot be written
//! (its image is what could not be converted), so it is left out, named in
//! [`Materialized::quarantined`] with where its record is kept, and its recorded image hash is
//! taken out of the comparison with the manifest. Every other item is checked exactly.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use arrow_array::{Array, StringArray, TimestampMillisecondArray};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::item::{ItemHash, StateDigest};
use crate::layout::TableLayout;
use crate::manifest::{self, BaseFile, Manifest, ManifestError, SealedSegment};
use crate::store::{self, ObjectStore, StoreError};

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
    #[error("--as-of {at}: {why}")]
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
    #[error("{0}")]
    Sink(String),
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
    /// Segments.
    pub segments: Vec<SealedSegment>,
    /// Only changes created at or before this instant (ms).
    pub as_of_ms: Option<i64>,
    /// Digest and count the result must have (known for a snapshot with both images).
    pub expected: Option<(StateDigest, i64)>,
    /// Segments whose rows are read from a compacted object (see [`crate::compact`]).
    pub replaced: HashMap<String, crate::compact::Replacement>,
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
    }

    /// Changes to read.
    pub fn changes(&self) -> u64 {
        self.segments.iter().map(|s| s.counted_rows).sum()
    }
}

/// Plans a restore of `table` at `point`.
pub async fn plan(
    store: &dyn ObjectStore,
    table: &str,
    point: &Point,
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
    // The chain, newest first, each manifest checked against its digest and its child's link.
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
        let mut files = manifest::read_files(store, &m).await?;
        // A restore never needs the rows' sequence lists (the largest part of a file list):
        // dropped so the plan of a long history stays small.
        for s in &mut files.segments {
            s.sequence_numbers = crate::log::SequenceList::new();
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
        crate::compact::replacements_of(chain.iter().map(|(m, f)| (m, f)))
    } else {
        crate::compact::load_replacements(store, &layout).await?
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
    let as_of_ms = match point {
        Point::AsOf(t) => {
            let at = fmt_ms(*t);
            let newest = top.watermark.newest_change_ms;
            let first = segments.iter().filter_map(|s| s.min_time_ms).min();
            match (first, newest) {
                (_, None) => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: "the backup holds no changes yet".into(),
                    });
                }
                (Some(f), _) if *t < f && top.base.is_empty() => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: format!("the backup begins at {}", fmt_ms(f)),
                    });
                }
                (_, Some(n)) if *t > n => {
                    return Err(RestoreError::OutOfRange {
                        at,
                        why: format!(
                            "the latest sealed snapshot ({}) reaches {}; seal again to restore a later instant",
                            top.snapshot_id,
                            fmt_ms(n)
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
        base: top.base.clone(),
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
}

/// Where materialized partitions go.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Receives partition `index` of `count`, its items sorted by key. Partitions arrive in
    /// index order.
    async fn partition(
        &mut self,
        index: usize,
        count: usize,
        items: Vec<Item>,
    ) -> Result<(), String>;
}

/// Counters a caller can read while a restore runs (for progress lines).
#[derive(Debug, Default)]
pub struct Progress {
    /// Changes (rows) read.
    pub changes_read: AtomicU64,
    /// Items handed to the sink.
    pub items_done: AtomicU64,
    /// Bytes of objects read.
    pub bytes_read: AtomicU64,
    /// Changes the plan will read (for an ETA).
    pub changes_total: AtomicU64,
    /// Items the result will have, when the manifest says (for an ETA).
    pub items_total: AtomicU64,
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
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            memory_mb: 1024,
            spill_dir: None,
            concurrency: 4,
            min_partitions: 1,
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

/// A key a restore could not write: its latest change is a quarantined record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedKey {
    /// Canonical DynamoDB JSON of the key.
    pub key: String,
    /// The quarantined record's sequence number.
    pub sequence_number: String,
    /// Where the record is kept verbatim.
    pub object: String,
}

/// Marks a state whose image is a quarantined record's: `?<v|o><sha256 or empty> <object>`,
/// `v` when the seal hashed the image as a valid item, `o` when opaquely. Canonical items
/// start with `{`, so the two cannot be confused.
const QUARANTINED: char = '?';

/// The latest change of a key seen so far.
struct Latest {
    seq: String,
    image: Option<String>,
}

/// Numeric order of two decimal digit strings (sequence numbers of any length).
fn seq_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn fold(state: &mut HashMap<String, Latest>, key: &str, seq: &str, image: Option<&str>) {
    match state.get_mut(key) {
        Some(l) => {
            if seq_cmp(seq, &l.seq) == Ordering::Greater {
                l.seq.clear();
                l.seq.push_str(seq);
                // Reuse the previous image's buffer: most changes are updates of a kept key.
                match (&mut l.image, image) {
                    (Some(buf), Some(new)) => {
                        buf.clear();
                        buf.push_str(new);
                    }
                    (slot, new) => *slot = new.map(str::to_owned),
                }
            }
        }
        None => {
            state.insert(
                key.to_owned(),
                Latest {
                    seq: seq.to_owned(),
                    image: image.map(str::to_owned),
                },
            );
        }
    }
}

/// Partition writers for the spilling mode.
struct Spill {
    dir: tempfile::TempDir,
    writers: Vec<BufWriter<std::fs::File>>,
}

/// FNV-1a: a fixed hash, so a key lands in the same partition in every run (a resumed restore
/// relies on it: its checkpoint names partitions).
fn partition_of(key: &str, partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions as u64) as usize
}

impl Spill {
    fn new(parent: Option<&Path>, n: usize) -> Result<Spill, RestoreError> {
        let dir = match parent {
            Some(p) => tempfile::Builder::new()
                .prefix("streamseal-restore-")
                .tempdir_in(p),
            None => tempfile::Builder::new()
                .prefix("streamseal-restore-")
                .tempdir(),
        }
        .map_err(|source| RestoreError::Spill {
            path: parent.map_or("temp dir".into(), |p| p.display().to_string()),
            source,
        })?;
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.path().join(format!("part-{i:05}"));
            let f = std::fs::File::create(&path).map_err(|source| RestoreError::Spill {
                path: path.display().to_string(),
                source,
            })?;
            writers.push(BufWriter::with_capacity(64 * 1024, f));
        }
        Ok(Spill { dir, writers })
    }

    fn push(&mut self, key: &str, seq: &str, image: Option<&str>) -> Result<(), RestoreError> {
        let i = partition_of(key, self.writers.len());
        // One record per line: key, sequence number, image (or `-` for a REMOVE), tab-separated.
        // Canonical DynamoDB JSON never contains a raw tab or newline (they are escaped).
        let w = &mut self.writers[i];
        let r = w
            .write_all(key.as_bytes())
            .and_then(|_| w.write_all(b"\t"))
            .and_then(|_| w.write_all(seq.as_bytes()))
            .and_then(|_| w.write_all(b"\t"))
            .and_then(|_| w.write_all(image.unwrap_or("-").as_bytes()))
            .and_then(|_| w.write_all(b"\n"));
        r.map_err(|source| RestoreError::Spill {
            path: self
                .dir
                .path()
                .join(format!("part-{i:05}"))
                .display()
                .to_string(),
            source,
        })
    }

    fn finish(&mut self) -> Result<(), RestoreError> {
        for w in &mut self.writers {
            w.flush().map_err(|source| RestoreError::Spill {
                path: self.dir.path().display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn read(&self, i: usize) -> Result<HashMap<String, Latest>, RestoreError> {
        let path = self.dir.path().join(format!("part-{i:05}"));
        let err = |source| RestoreError::Spill {
            path: path.display().to_string(),
            source,
        };
        let f = std::fs::File::open(&path).map_err(err)?;
        let mut state = HashMap::new();
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(err)? == 0 {
                break;
            }
            let text = line.trim_end_matches('\n');
            let mut parts = text.splitn(3, '\t');
            let (Some(key), Some(seq), Some(image)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(err(std::io::Error::other("malformed spill record")));
            };
            fold(
                &mut state,
                key,
                seq,
                if image == "-" { None } else { Some(image) },
            );
        }
        Ok(state)
    }
}

/// Reads the plan's objects and hands the final state to `sink`, partition by partition.
pub async fn materialize(
    store: &Arc<dyn ObjectStore>,
    plan: &Plan,
    options: &MaterializeOptions,
    sink: &mut dyn Sink,
    progress: &Progress,
) -> Result<Materialized, RestoreError> {
    // Partitions: enough that one partition's changes fit in half the budget, assuming the
    // stored (zstd) bytes expand up to 8x in memory.
    let budget = (options.memory_mb.max(16) as u64) << 19;
    let estimate = plan.bytes().saturating_mul(8);
    let partitions = (estimate.div_ceil(budget.max(1)) as usize)
        .max(options.min_partitions)
        .clamp(1, 4096);
    let mut memory: HashMap<String, Latest> = HashMap::new();
    let mut spill = if partitions > 1 {
        Some(Spill::new(options.spill_dir.as_deref(), partitions)?)
    } else {
        None
    };
    let mut changes = 0u64;
    progress
        .changes_total
        .store(plan.changes(), AtomicOrdering::Relaxed);
    if let Some((_, n)) = plan.expected {
        progress
            .items_total
            .store(n.max(0) as u64, AtomicOrdering::Relaxed);
    }

    // Base files first: every item at sequence "0", below any real change.
    let base_keys: Vec<String> = plan.base.iter().map(|b| b.key.clone()).collect();
    for chunk in base_keys.chunks(options.concurrency.max(1)) {
        let bodies = store::get_many(store, chunk, options.concurrency).await;
        for (b, body) in plan
            .base
            .iter()
            .filter(|b| chunk.contains(&b.key))
            .zip(bodies)
        {
            let bytes = checked(b.key.as_str(), b.bytes, &b.sha256, body?)?;
            progress
                .bytes_read
                .fetch_add(bytes.len() as u64, AtomicOrdering::Relaxed);
            for batch in read_batches(&b.key, bytes, &["keys", "item"])? {
                let keys = string_col(&batch, "keys", &b.key)?;
                let items = string_col(&batch, "item", &b.key)?;
                for i in 0..batch.num_rows() {
                    let (k, v) = (keys.value(i), items.value(i));
                    match &mut spill {
                        Some(s) => s.push(k, "0", Some(v))?,
                        None => fold(&mut memory, k, "0", Some(v)),
                    }
                }
            }
        }
    }

    // Quarantined records, where the seal could place them: a REMOVE removes, anything else
    // marks the key as holding an image that cannot be written.
    for q in &plan.quarantined {
        let e = &q.effect;
        let (Some(key), Some(seq)) = (e.keys.as_deref(), e.sequence_number.as_deref()) else {
            continue;
        };
        if !e.placeable() {
            continue;
        }
        if let (Some(t), Some(created)) = (plan.as_of_ms, e.created_ms)
            && created > t
        {
            continue;
        }
        // `v` when the seal hashed the new image as a valid item (it may be written), `o`
        // when it hashed it opaquely (it may not, whatever this version can read now).
        let marker = format!(
            "{QUARANTINED}{}{} {}",
            if e.new_image_opaque { 'o' } else { 'v' },
            e.new_image_sha256.as_deref().unwrap_or(""),
            q.key
        );
        let image = if e.is_remove() {
            None
        } else {
            Some(marker.as_str())
        };
        match &mut spill {
            Some(s) => s.push(key, seq, image)?,
            None => fold(&mut memory, key, seq, image),
        }
    }

    // Then every segment of the chain, read from its own object or, once compacted, from
    // its rows of the compacted object (each compacted object fetched once). Order does not
    // matter: the latest change per key is chosen by sequence number.
    struct Unit<'a> {
        key: &'a str,
        bytes: u64,
        sha256: &'a str,
        parts: Vec<(&'a SealedSegment, Option<(usize, usize)>)>,
    }
    let mut units: Vec<Unit> = vec![];
    let mut unit_of: HashMap<&str, usize> = HashMap::new();
    for s in &plan.segments {
        match plan.replaced.get(&s.key) {
            Some(r) => {
                let i = *unit_of.entry(r.key.as_str()).or_insert_with(|| {
                    units.push(Unit {
                        key: &r.key,
                        bytes: r.bytes,
                        sha256: &r.sha256,
                        parts: vec![],
                    });
                    units.len() - 1
                });
                let from = r.first_row as usize;
                units[i]
                    .parts
                    .push((s, Some((from, from + r.rows as usize))));
            }
            None => units.push(Unit {
                key: &s.key,
                bytes: s.bytes,
                sha256: &s.sha256,
                parts: vec![(s, None)],
            }),
        }
    }
    let columns = [
        "sequence_number",
        "event_name",
        "keys",
        "new_image",
        "approximate_creation_time",
    ];
    for chunk in units.chunks(options.concurrency.max(1)) {
        let keys: Vec<String> = chunk.iter().map(|u| u.key.to_owned()).collect();
        let bodies = store::get_many(store, &keys, options.concurrency).await;
        for (u, body) in chunk.iter().zip(bodies) {
            let bytes = checked(u.key, u.bytes, u.sha256, body?)?;
            progress
                .bytes_read
                .fetch_add(bytes.len() as u64, AtomicOrdering::Relaxed);
            let batches = read_batches(u.key, bytes, &columns)?;
            let total: usize = batches.iter().map(|b| b.num_rows()).sum();
            for (s, range) in &u.parts {
                let (from, to) = range.unwrap_or((0, total));
                if to > total {
                    return Err(RestoreError::Corrupt {
                        key: u.key.to_owned(),
                        problem: format!(
                            "has {total} rows; segment {} should be rows {from}..{to}",
                            s.key
                        ),
                    });
                }
                let skipped: HashSet<String> = s
                    .skipped_sequences
                    .decode()
                    .map_err(|e| RestoreError::Corrupt {
                        key: s.key.clone(),
                        problem: e.to_string(),
                    })?
                    .into_iter()
                    .collect();
                let mut rows = 0u64;
                let mut offset = 0usize;
                for batch in &batches {
                    let n = batch.num_rows();
                    let (lo, hi) = (from.max(offset), to.min(offset + n));
                    offset += n;
                    if lo >= hi {
                        continue;
                    }
                    let seq = string_col(batch, "sequence_number", u.key)?;
                    let name = string_col(batch, "event_name", u.key)?;
                    let key = string_col(batch, "keys", u.key)?;
                    let new = string_col(batch, "new_image", u.key)?;
                    let time = batch
                        .column_by_name("approximate_creation_time")
                        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
                        .ok_or_else(|| RestoreError::Corrupt {
                            key: u.key.to_owned(),
                            problem: "no approximate_creation_time column".into(),
                        })?;
                    for i in (lo - (offset - n))..(hi - (offset - n)) {
                        let q = seq.value(i);
                        if !skipped.is_empty() && skipped.contains(q) {
                            continue;
                        }
                        if let Some(t) = plan.as_of_ms {
                            let created = if time.is_null(i) {
                                s.max_time_ms
                            } else {
                                Some(time.value(i))
                            };
                            if created.is_none_or(|c| c > t) {
                                continue;
                            }
                        }
                        let image = match name.value(i) {
                            "REMOVE" => None,
                            _ if new.is_null(i) => {
                                return Err(RestoreError::Unrestorable(format!(
                                    "{}: row {i} ({}) has no new image; this segment's stream does not carry new images",
                                    s.key,
                                    name.value(i)
                                )));
                            }
                            _ => Some(new.value(i)),
                        };
                        rows += 1;
                        match &mut spill {
                            Some(sp) => sp.push(key.value(i), q, image)?,
                            None => fold(&mut memory, key.value(i), q, image),
                        }
                    }
                }
                changes += rows;
                progress
                    .changes_read
                    .fetch_add(rows, AtomicOrdering::Relaxed);
            }
        }
    }

    // Emit: partition by partition, latest change per key, sorted by key.
    let mut digest = StateDigest::ZERO;
    let mut count = 0u64;
    let mut quarantined: Vec<QuarantinedKey> = vec![];
    let mut quarantined_digest = Some(StateDigest::ZERO);
    let mut emit = async |index: usize, state: HashMap<String, Latest>| {
        let mut items: Vec<Item> = Vec::with_capacity(state.len());
        for (key, l) in state {
            let Some(item) = l.image else { continue };
            match item.strip_prefix(QUARANTINED) {
                None => items.push(Item { key, item }),
                Some(rest) => {
                    let (kind_sha, object) = rest.split_once(' ').unwrap_or(("", rest));
                    let (valid, sha) = match kind_sha.split_at_checked(1) {
                        Some(("v", sha)) => (true, sha),
                        Some((_, sha)) => (false, sha),
                        None => (false, ""),
                    };
                    // A record quarantined for something else than its new image (an old
                    // image of an unknown type, say) still writes a valid item: restore it.
                    if valid && let Some(item) = writable_image(store.as_ref(), object, sha).await?
                    {
                        items.push(Item { key, item });
                        continue;
                    }
                    let mut h = [0u8; 32];
                    quarantined_digest = match hex::decode_to_slice(sha, &mut h) {
                        Ok(()) => quarantined_digest.map(|mut d| {
                            d.add_item(&ItemHash(h));
                            d
                        }),
                        Err(_) => None,
                    };
                    quarantined.push(QuarantinedKey {
                        key,
                        sequence_number: l.seq,
                        object: object.to_owned(),
                    });
                }
            }
        }
        items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for it in &items {
            // Stored images are canonical, so the hash is SHA-256 of the text as stored.
            digest.add_item(&ItemHash(Sha256::digest(it.item.as_bytes()).into()));
        }
        count += items.len() as u64;
        let n = items.len() as u64;
        sink.partition(index, partitions, items)
            .await
            .map_err(RestoreError::Sink)?;
        progress.items_done.fetch_add(n, AtomicOrdering::Relaxed);
        Ok::<(), RestoreError>(())
    };
    match &mut spill {
        None => emit(0, std::mem::take(&mut memory)).await?,
        Some(s) => {
            s.finish()?;
            for i in 0..partitions {
                let state = s.read(i)?;
                emit(i, state).await?;
            }
        }
    }
    quarantined.sort_by(|a, b| a.key.cmp(&b.key));
    let mut unproven = None;
    if let Some((d, n)) = plan.expected {
        if plan.unknown_effects > 0 {
            unproven = Some(format!(
                "the chain holds {} entr{} whose changes it lacks or cannot read (gaps, rejected entries, unreadable quarantined records; `streamseal verify` names each), so the restored state cannot be compared with the snapshot's digest and count; everything captured was restored",
                plan.unknown_effects,
                if plan.unknown_effects == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
        } else {
            let Some(q) = quarantined_digest else {
                return Err(RestoreError::Unrestorable(
                    "a quarantined record that is a key's latest change has no recorded image hash; the backup cannot prove this restore".into(),
                ));
            };
            let mut total = digest;
            total.add(&q);
            let items = count + quarantined.len() as u64;
            if total != d || items as i64 != n {
                return Err(RestoreError::Mismatch {
                    snapshot: plan.manifest.snapshot_id.clone(),
                    what: format!(
                        "{items} items ({} of them quarantined) with digest {}, the manifest records {n} items with digest {}",
                        quarantined.len(),
                        total.to_hex(),
                        d.to_hex()
                    ),
                });
            }
        }
    }
    Ok(Materialized {
        items: count,
        digest,
        changes,
        partitions,
        quarantined,
        quarantined_digest,
        unproven,
    })
}

/// The new image of the quarantined record at `object`, canonical, when the canonicaliser
/// accepts it and it hashes to what the seal recorded (`sha256`); `None` when it cannot be
/// written.
async fn writable_image(
    store: &dyn ObjectStore,
    object: &str,
    sha256: &str,
) -> Result<Option<String>, RestoreError> {
    if sha256.is_empty() {
        return Ok(None);
    }
    let body = match store.get(object).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Err(RestoreError::Corrupt {
                key: object.to_owned(),
                problem: "quarantined record is missing".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let Some(image) = crate::quarantine::new_image_text(&body) else {
        return Ok(None);
    };
    let Ok(canonical) = crate::item::canonicalize(&image) else {
        return Ok(None);
    };
    if hex::encode(Sha256::digest(canonical.as_bytes())) != sha256 {
        return Err(RestoreError::Corrupt {
            key: object.to_owned(),
            problem: "the quarantined record's new image does not hash to what the seal recorded"
                .into(),
        });
    }
    Ok(Some(canonical))
}

fn checked(key: &str, bytes: u64, sha256: &str, body: Bytes) -> Result<Bytes, RestoreError> {
    if body.len() as u64 != bytes || hex::encode(Sha256::digest(&body)) != sha256 {
        return Err(RestoreError::Corrupt {
            key: key.to_owned(),
            problem: format!(
                "object is {} bytes and does not match the SHA-256 sealed in the manifest",
                body.len()
            ),
        });
    }
    Ok(body)
}

fn read_batches(
    key: &str,
    bytes: Bytes,
    columns: &[&str],
) -> Result<Vec<arrow_array::RecordBatch>, RestoreError> {
    crate::segment::read_segment_columns(key, bytes, columns).map_err(|e| RestoreError::Corrupt {
        key: key.to_owned(),
        problem: e.to_string(),
    })
}

fn string_col<'a>(
    batch: &'a arrow_array::RecordBatch,
    name: &str,
    key: &str,
) -> Result<&'a StringArray, RestoreError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| RestoreError::Corrupt {
            key: key.to_owned(),
            problem: format!("no string column {name:?}"),
        })
}

/// RFC 3339 of a millisecond instant.
pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A sink that writes gzip DynamoDB JSON lines (`{"Item": {...}}` per line), one file per
/// partition, the format DynamoDB's import from S3 accepts (`DYNAMODB_JSON`, `GZIP`).
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl FileSink {
    /// Writes under `dir/data/`. Refuses a directory that already holds restore output.
    pub fn new(dir: &Path) -> Result<FileSink, String> {
        let data = dir.join("data");
        if data.exists()
            && std::fs::read_dir(&data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(format!(
                "{} already holds restore output; choose an empty directory",
                data.display()
            ));
        }
        std::fs::create_dir_all(&data)
            .map_err(|e| format!("cannot create {}: {e}", data.display()))?;
        Ok(FileSink {
            dir: data,
            files: vec![],
        })
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn partition(
        &mut self,
        index: usize,
        _count: usize,
        items: Vec<Item>,
    ) -> Result<(), String> {
        let path = self.dir.join(format!("part-{index:05}.json.gz"));
        let tmp = self.dir.join(format!(".part-{index:05}.json.gz.tmp"));
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let mut gz = flate2::write::GzEncoder::new(
                BufWriter::with_capacity(256 * 1024, f),
                flate2::Compression::fast(),
            );
            for it in &items {
                gz.write_all(b"{\"Item\":")?;
                gz.write_all(it.item.as_bytes())?;
                gz.write_all(b"}\n")?;
            }
            let mut w = gz.finish()?;
            w.flush()?;
            w.get_ref().sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))?;
        self.files.push(path);
        Ok(())
    }
}

/// Reads DynamoDB JSON lines files (gzip or plain) back: items and their digest. Used to check
/// a file restore, and by tests.
pub fn read_item_files(paths: &[PathBuf]) -> Result<(u64, StateDigest), String> {
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    for path in paths {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::GzDecoder::new(f)))
        } else {
            Box::new(BufReader::new(f))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(rename = "Item", borrow)]
                item: &'a serde_json::value::RawValue,
            }
            let l: Line = serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
            let h = crate::item::item_hash(l.item.get())
                .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
            digest.add_item(&h);
            count += 1;
        }
    }
    Ok((count, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert_eq!(seq_cmp("9", "10"), Ordering::Less);
        assert_eq!(seq_cmp("0010", "10"), Ordering::Equal);
        assert_eq!(seq_cmp("0", "1"), Ordering::Less);
        assert_eq!(
            seq_cmp("999999999999999999999", "1000000000000000000000"),
            Ordering::Less
        );
    }

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
        let mut s = HashMap::new();
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

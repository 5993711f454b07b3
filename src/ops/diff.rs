//! The difference between two points of a backup (snapshots or instants the change log
//! covers): the keys inserted, removed and changed between them, in bounded memory.
//!
//! Each point's state is materialized as a restore would (the same plan, the same checks)
//! into bucket files by a hash of the key, on disk; the buckets are then compared pairwise,
//! one bucket of each state in memory at a time. The bucket count follows the states' size
//! and the memory budget, so memory stays within the budget whatever the table's size. A key whose latest change at either
//! point is a quarantined record cannot be judged: it is reported as such, never as removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::ops::restore::{self, Item, MaterializeOptions, Point, RestoreError, Sink, SinkError};
use crate::progress::Progress;
use crate::store::ObjectStore;

/// Tuning of a diff.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// How each state is materialized (memory budget, spill directory).
    pub materialize: MaterializeOptions,
    /// At least this many buckets the states are split into on disk (more when the states'
    /// size and `materialize.memory_mb` call for it: memory holds one bucket of each state).
    pub buckets: usize,
    /// Report both images of each differing key, not only their hashes.
    pub images: bool,
    /// Where the bucket files go (default: the system temp directory).
    pub work_dir: Option<PathBuf>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            materialize: MaterializeOptions::default(),
            buckets: 256,
            images: false,
            work_dir: None,
        }
    }
}

/// How a key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Absent at `from`, present at `to`.
    Inserted,
    /// Present at `from`, absent at `to`.
    Removed,
    /// Present at both, with other images.
    Changed,
}

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyDiff {
    /// Canonical DynamoDB JSON of the key.
    pub key: String,
    /// How it differs.
    pub change: Change,
    /// Its image at `from` (with `images`), else the image's SHA-256; none when absent.
    pub from: Option<String>,
    /// Its image at `to` (with `images`), else the image's SHA-256; none when absent.
    pub to: Option<String>,
}

/// What a diff found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Table.
    pub table: String,
    /// The first point (snapshot id, or instant).
    pub from: String,
    /// The second point.
    pub to: String,
    /// Items at `from`.
    pub from_items: u64,
    /// Items at `to`.
    pub to_items: u64,
    /// Keys inserted between them.
    pub inserted: u64,
    /// Keys removed.
    pub removed: u64,
    /// Keys changed.
    pub changed: u64,
    /// Keys that cannot be judged: their latest change at one of the points is a quarantined
    /// record (kept verbatim, named by a restore).
    pub unknown: Vec<String>,
    /// Why a state could not be proven against its manifest (a point given as an instant is
    /// never checked against one; a chain with changes of unknown effect), per side: the diff
    /// is then between what the backup holds, which may lack what the findings name.
    pub unproven: Vec<String>,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// Which bucket a key goes to.
pub(crate) fn bucket_of(key: &str, buckets: usize) -> usize {
    let h = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_le_bytes(b) % buckets.max(1) as u64) as usize
}

/// A sink writing `key \t value` lines into bucket files (value: the image, or its hash).
pub(crate) struct BucketSink {
    files: Vec<std::sync::Mutex<BufWriter<std::fs::File>>>,
    paths: Vec<PathBuf>,
    images: bool,
}

impl BucketSink {
    pub(crate) fn new(
        dir: &Path,
        side: &str,
        buckets: usize,
        images: bool,
    ) -> Result<BucketSink, SinkError> {
        let mut files = Vec::with_capacity(buckets);
        let mut paths = Vec::with_capacity(buckets);
        for b in 0..buckets {
            let path = dir.join(format!("{side}-{b:05}"));
            let f = std::fs::File::create(&path).map_err(|e| SinkError::File {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            files.push(std::sync::Mutex::new(BufWriter::new(f)));
            paths.push(path);
        }
        Ok(BucketSink {
            files,
            paths,
            images,
        })
    }

    pub(crate) fn finish(self) -> Result<Vec<PathBuf>, SinkError> {
        for (f, path) in self.files.into_iter().zip(&self.paths) {
            let mut f = f.into_inner().map_err(|_| SinkError::File {
                path: path.clone(),
                problem: "a writer panicked".into(),
            })?;
            f.flush().map_err(|e| SinkError::File {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        }
        Ok(self.paths)
    }
}

#[async_trait::async_trait]
impl Sink for BucketSink {
    async fn partition(
        &self,
        _index: usize,
        _count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        let buckets = self.files.len();
        for it in items {
            let b = bucket_of(&it.key, buckets);
            let mut file = self.files[b].lock().map_err(|_| SinkError::File {
                path: self.paths[b].clone(),
                problem: "a writer panicked".into(),
            })?;
            let value = if self.images {
                it.item
            } else {
                hex::encode(Sha256::digest(it.item.as_bytes()))
            };
            // Canonical JSON escapes control characters: no raw tab or newline in either.
            writeln!(file, "{}\t{}", it.key, value).map_err(|e| SinkError::File {
                path: self.paths[b].clone(),
                problem: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// Reads a bucket file: key → value.
pub(crate) fn read_bucket(path: &Path) -> Result<HashMap<String, String>, RestoreError> {
    let bad = |e: String| {
        RestoreError::Sink(SinkError::File {
            path: path.to_owned(),
            problem: e,
        })
    };
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        let (k, v) = line
            .split_once('\t')
            .ok_or_else(|| bad("a line without a tab".into()))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn describe(point: &Point, snapshot_id: &str) -> String {
    match point {
        Point::Snapshot(_) => format!("snapshot {snapshot_id}"),
        Point::AsOf(t) => format!("as of {}", crate::model::clock::rfc3339(*t)),
    }
}

/// The keys that differ between `from` and `to`, handed to `emit` bucket by bucket (keys
/// sorted within a bucket), and the counts.
pub async fn diff(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    from: &Point,
    to: &Point,
    options: &DiffOptions,
    progress: &Progress,
    emit: &mut (dyn FnMut(&KeyDiff) + Send),
) -> Result<DiffReport, RestoreError> {
    let started = Instant::now();
    // Both plans first: a point the backup does not cover fails before any work.
    let plan_from = restore::plan(store.as_ref(), table, from).await?;
    let plan_to = restore::plan(store.as_ref(), table, to).await?;
    let work = match &options.work_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| {
        RestoreError::Sink(SinkError::File {
            path: options.work_dir.clone().unwrap_or_default(),
            problem: format!("cannot make a work directory: {e}"),
        })
    })?;
    // One bucket of each state in memory at a time, each within a quarter of the budget
    // (stored bytes expand up to 8x in memory, as the materializer assumes).
    let budget = ((options.materialize.memory_mb.max(16) as u64) << 20) / 4;
    let largest = plan_from.bytes().max(plan_to.bytes()).saturating_mul(8);
    let buckets = (largest.div_ceil(budget.max(1)) as usize)
        .max(options.buckets)
        .clamp(1, 65_536);
    let mut sides = vec![];
    let mut unknown: HashSet<String> = HashSet::new();
    let mut counts = vec![];
    let mut unproven = vec![];
    for (name, plan) in [("from", &plan_from), ("to", &plan_to)] {
        let sink = BucketSink::new(work.path(), name, buckets, options.images)?;
        let m = restore::materialize(store, plan, &options.materialize, &sink, progress).await?;
        unknown.extend(m.quarantined.iter().map(|q| q.key.clone()));
        if let Some(why) = &m.unproven {
            unproven.push(format!("{name}: {why}"));
        }
        counts.push(m.items);
        sides.push(sink.finish()?);
    }
    let mut report = DiffReport {
        table: table.to_owned(),
        from: describe(from, &plan_from.manifest.snapshot_id),
        to: describe(to, &plan_to.manifest.snapshot_id),
        from_items: counts[0],
        to_items: counts[1],
        inserted: 0,
        removed: 0,
        changed: 0,
        unknown: vec![],
        unproven,
        elapsed_ms: 0,
    };
    for (before_path, after_path) in sides[0].iter().zip(&sides[1]) {
        let mut before = read_bucket(before_path)?;
        let after = read_bucket(after_path)?;
        let mut found: BTreeMap<String, KeyDiff> = BTreeMap::new();
        for (key, value) in after {
            let d = match before.remove(&key) {
                None => KeyDiff {
                    key: key.clone(),
                    change: Change::Inserted,
                    from: None,
                    to: Some(value),
                },
                Some(old) if old != value => KeyDiff {
                    key: key.clone(),
                    change: Change::Changed,
                    from: Some(old),
                    to: Some(value),
                },
                Some(_) => continue,
            };
            found.insert(key, d);
        }
        for (key, old) in before {
            found.insert(
                key.clone(),
                KeyDiff {
                    key,
                    change: Change::Removed,
                    from: Some(old),
                    to: None,
                },
            );
        }
        for (key, d) in found {
            // Left out of a state because its latest change there is quarantined: absent
            // from that side says nothing.
            if unknown.contains(&key) {
                continue;
            }
            match d.change {
                Change::Inserted => report.inserted += 1,
                Change::Removed => report.removed += 1,
                Change::Changed => report.changed += 1,
            }
            emit(&d);
        }
    }
    let mut unknown: Vec<String> = unknown.into_iter().collect();
    unknown.sort();
    report.unknown = unknown;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

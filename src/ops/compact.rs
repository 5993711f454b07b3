//! Compaction: many small sealed segments of one hour rewritten as a few large objects,
//! published through the segment log, and the small objects removed once that is sealed and a
//! grace period has passed.
//!
//! A compacted object holds the rows of its *parts*, in order and row for row: segments sealed
//! by one snapshot, in one `dt=/hr=` partition, with one Arrow schema. Nothing the seal
//! recorded about a part changes (its counted rows, the duplicates it skips, its digest
//! deltas), because its rows are the same; only where they are stored does. So:
//!
//! 1. `compact` writes the object (`<table>/changes/dt=/hr=/c-<snapshot>-<hash>.parquet`, in
//!    the same partition, so Athena's changes table sees it) and a `compaction` log entry.
//! 2. The next seal validates the entry (every part is a segment of that snapshot with the
//!    recorded SHA-256, the object exists with its recorded size and hash) and lists it in its
//!    file list. From then on restore and verify read the compacted object in place of the
//!    parts ([`load_replacements`]): each change is still read exactly once.
//! 3. A later `compact`, once the sealing snapshot is older than the grace period, rewrites the
//!    parts' snapshot's Athena symlink list to name the compacted object, then deletes the
//!    parts. Readers that started before keep working through the grace period.
//!
//! Concurrent capture is unaffected: compaction only reads segments already sealed, and
//! writes new objects under new names. Athena's `<table>_changes` view keeps one row per
//! sequence number, so during the grace period, when a change is stored in both a part and
//! the compacted object, a query still sees it once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::model::layout::TableLayout;
use crate::model::log::{CompactedPart, CompactionRecord, LOG_FORMAT, LogEntry};
use crate::model::manifest::{self, Manifest, ManifestError, SealedSegment, SnapshotFiles};
use crate::store::{self, ObjectStore, PutMode, StoreError};

/// A compaction that could not run.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Reading the snapshot chain failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A segment is not what its snapshot sealed, or cannot be rewritten.
    #[error(
        "{key}: {problem} (nothing of this group was published; run `streamseal verify --deep`)"
    )]
    Segment {
        /// Object key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Where a compacted segment's rows are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The compacted object.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// The segment's first row in it.
    pub first_row: u64,
    /// The segment's rows.
    pub rows: u64,
    /// The snapshot that sealed the compaction.
    pub sealed_by: String,
}

/// Options of [`compact`].
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only hours that ended at least this long ago (ms).
    pub older_than_ms: i64,
    /// Largest compacted object, bytes (of the parts' sizes; the output is about the same).
    pub target_bytes: u64,
    /// Delete parts once the snapshot that sealed their compaction is this old (ms).
    pub grace_ms: i64,
    /// zstd level of compacted objects.
    pub zstd_level: i32,
    /// Objects fetched at once.
    pub concurrency: usize,
    /// Report what would be done, write nothing.
    pub dry_run: bool,
    /// Counts segments read for compaction, for a caller showing progress.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            older_than_ms: 3_600_000,
            target_bytes: 128 << 20,
            grace_ms: 24 * 3_600_000,
            zstd_level: 3,
            concurrency: 8,
            dry_run: false,
            progress: None,
        }
    }
}

/// What [`compact`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactReport {
    /// Compacted objects written (and their log entries).
    pub written: Vec<CompactedObject>,
    /// Small objects deleted (their compaction sealed and past the grace period).
    pub deleted: Vec<String>,
    /// Symlink lists rewritten to name compacted objects.
    pub symlinks_rewritten: usize,
    /// Compactions sealed but still within the grace period.
    pub waiting_for_grace: usize,
    /// Compactions written but not sealed yet (seal to publish them).
    pub unsealed: usize,
    /// Segments considered (sealed, not yet compacted, in hours old enough).
    pub candidates: usize,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// One compacted object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompactedObject {
    /// Its key.
    pub key: String,
    /// Segments it replaces.
    pub parts: usize,
    /// Rows.
    pub rows: u64,
    /// Bytes in, bytes out.
    pub bytes_in: u64,
    /// Size.
    pub bytes_out: u64,
}

/// The chain of the latest snapshot, newest first, with file lists.
pub(crate) async fn latest_chain(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Vec<(Manifest, SnapshotFiles)>, ManifestError> {
    let Some(id) = manifest::latest_snapshot_id(store, layout).await? else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    let mut next = Some(id);
    while let Some(id) = next.take() {
        let m = manifest::read_manifest(store, layout, &id).await?;
        let files = manifest::read_files(store, &m).await?;
        next = m.parent.as_ref().map(|p| p.snapshot_id.clone());
        out.push((m, files));
    }
    Ok(out)
}

/// Every sealed compaction of the chain: segment key → where its rows are now. The first
/// (oldest) compaction of a segment wins.
pub(crate) fn replacements_of<'a, I>(chain: I) -> HashMap<String, Replacement>
where
    I: IntoIterator<Item = (&'a Manifest, &'a SnapshotFiles)>,
    I::IntoIter: DoubleEndedIterator,
{
    let mut out = HashMap::new();
    for (m, files) in chain.into_iter().rev() {
        for c in &files.compactions {
            for p in &c.record.parts {
                out.entry(p.key.clone()).or_insert_with(|| Replacement {
                    key: c.record.key.clone(),
                    bytes: c.record.bytes,
                    sha256: c.record.sha256.clone(),
                    first_row: p.first_row,
                    rows: p.rows,
                    sealed_by: m.snapshot_id.clone(),
                });
            }
        }
    }
    out
}

/// The replacements sealed in the latest chain (restore and verify read compacted objects in
/// place of their parts, whichever snapshot they read).
pub(crate) async fn load_replacements(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<HashMap<String, Replacement>, ManifestError> {
    let chain = latest_chain(store, layout).await?;
    Ok(replacements_of(chain.iter().map(|(m, f)| (m, f))))
}

/// Checks a compaction log entry before a seal lists it. `parent` is the chain's newest
/// manifest; the parts must be segments sealed by snapshot `record.snapshot_id` of it.
/// `files` caches file lists across the entries of one seal (a compaction run writes one entry
/// per hour, all naming the same snapshot). `Ok(Err(why))` rejects the entry; a store that
/// fails transiently is `Err`, so the seal fails and runs again rather than rejecting a sound
/// entry for good.
pub(crate) async fn check_entry(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    record: &CompactionRecord,
    parent: Option<&Manifest>,
    files: &mut HashMap<String, SnapshotFiles>,
) -> Result<Result<(), String>, StoreError> {
    let transient = |e: &ManifestError| match e {
        ManifestError::Store(s) if s.says_nothing_about_the_object() => {
            Some(StoreError::Transient {
                op: "read",
                store: store.url(),
                key: String::new(),
                message: s.to_string(),
            })
        }
        _ => None,
    };
    if !files.contains_key(&record.snapshot_id)
        && manifest::parse_snapshot_id(&record.snapshot_id)
            .is_some_and(|g| parent.is_some_and(|p| g <= p.generation))
    {
        let read = match manifest::read_manifest(store, layout, &record.snapshot_id).await {
            Ok(m) => manifest::read_files(store, &m).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(f) => {
                files.insert(record.snapshot_id.clone(), f);
            }
            Err(e) => {
                if let Some(t) = transient(&e) {
                    return Err(t);
                }
                return Ok(Err(e.to_string()));
            }
        }
    }
    match store.head(&record.key).await {
        Err(e) if e.says_nothing_about_the_object() => Err(e),
        head => Ok(check_entry_against(layout, record, parent, files, head)),
    }
}

fn check_entry_against(
    layout: &TableLayout,
    record: &CompactionRecord,
    parent: Option<&Manifest>,
    files: &HashMap<String, SnapshotFiles>,
    head: Result<Option<crate::store::ObjectMeta>, StoreError>,
) -> Result<(), String> {
    let Some(parent) = parent else {
        return Err("no sealed snapshot yet, so nothing can have been compacted".into());
    };
    let generation = manifest::parse_snapshot_id(&record.snapshot_id)
        .ok_or_else(|| format!("snapshot id {:?} is not one", record.snapshot_id))?;
    if generation > parent.generation {
        return Err(format!(
            "names snapshot {}, newer than the latest sealed ({})",
            record.snapshot_id, parent.snapshot_id
        ));
    }
    if !record.key.starts_with(&layout.changes_prefix()) || !record.key.ends_with(".parquet") {
        return Err(format!(
            "compacted object {} is not under {}",
            record.key,
            layout.changes_prefix()
        ));
    }
    let files = files
        .get(&record.snapshot_id)
        .ok_or_else(|| format!("snapshot {}'s file list cannot be read", record.snapshot_id))?;
    let sealed: HashMap<&str, &SealedSegment> =
        files.segments.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut next_row = 0;
    for p in &record.parts {
        let s = sealed.get(p.key.as_str()).ok_or_else(|| {
            format!(
                "part {} is not a segment of snapshot {}",
                p.key, record.snapshot_id
            )
        })?;
        if s.sha256 != p.sha256 || s.rows != p.rows || p.first_row != next_row {
            return Err(format!(
                "part {} does not match what snapshot {} sealed (SHA-256, rows or position)",
                p.key, record.snapshot_id
            ));
        }
        next_row += p.rows;
    }
    if next_row != record.rows || record.parts.len() < 2 {
        return Err(format!(
            "parts hold {next_row} rows in {} segments, the entry says {} rows",
            record.parts.len(),
            record.rows
        ));
    }
    match head {
        Ok(Some(meta)) if meta.size != record.bytes => Err(format!(
            "compacted object {} is {} bytes, the entry says {}",
            record.key, meta.size, record.bytes
        )),
        Ok(Some(meta)) if meta.sha256.as_ref().is_some_and(|s| *s != record.sha256) => {
            Err(format!(
                "compacted object {} does not have the recorded SHA-256",
                record.key
            ))
        }
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("compacted object {} is missing", record.key)),
        Err(e) => Err(e.to_string()),
    }
}

/// The `dt=.../hr=...` partition of a segment key and the end of that hour (ms).
fn hour_of(key: &str) -> Option<(String, i64)> {
    let mut parts = key.split('/');
    let dt = parts.find_map(|p| p.strip_prefix("dt="))?;
    let hr = parts.next()?.strip_prefix("hr=")?;
    let start = chrono::NaiveDate::parse_from_str(dt, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(hr.parse().ok()?, 0, 0)?
        .and_utc()
        .timestamp_millis();
    Some((format!("dt={dt}/hr={hr}"), start + 3_600_000))
}

/// Compacts `table`: publishes compacted objects for small sealed segments of hours older than
/// `older_than`, and deletes parts whose compaction was sealed more than `grace` ago.
pub async fn compact(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    options: &CompactOptions,
) -> Result<CompactReport, CompactError> {
    let started = std::time::Instant::now();
    let layout = TableLayout::new(table);
    let mut report = CompactReport::default();
    let chain = latest_chain(store.as_ref(), &layout).await?;
    if chain.is_empty() {
        return Err(ManifestError::NoSnapshots {
            table: table.to_owned(),
            store: store.url(),
        }
        .into());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let replaced = replacements_of(chain.iter().map(|(m, f)| (m, f)));

    // Compactions waiting in the inbox for the next seal: their parts are spoken for.
    let mut pending: HashSet<String> = HashSet::new();
    let listed = store
        .list(&format!("{}c-", layout.inbox_prefix()), None, None)
        .await?;
    let keys: Vec<String> = listed.into_iter().map(|m| m.key).collect();
    for (key, body) in keys
        .iter()
        .zip(store::get_many(store, &keys, options.concurrency).await)
    {
        let body = match body {
            Ok(b) => b,
            // Sealed (and removed) since the listing. Should this run compact its parts again,
            // the oldest compaction of a segment wins and the new one is only wasted work.
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Ok(LogEntry::Compaction(c)) = LogEntry::parse(key, &body) {
            report.unsealed += 1;
            pending.extend(c.parts.into_iter().map(|p| p.key));
        }
    }

    // 1. Delete parts whose compaction is sealed and past the grace period. Seals whose
    //    compactions are fully cleaned are remembered, so a run does not re-check history.
    let cleaned_key = layout.compaction_cleaned_key();
    let mut cleaned: std::collections::BTreeSet<String> = match store.get(&cleaned_key).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(StoreError::NotFound { .. }) => Default::default(),
        Err(e) => return Err(e.into()),
    };
    let created: HashMap<&str, i64> = chain
        .iter()
        .map(|(m, _)| {
            (
                m.snapshot_id.as_str(),
                chrono::DateTime::parse_from_rfc3339(&m.created_at)
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(i64::MAX),
            )
        })
        .collect();
    let mut due: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new(); // snapshot → (part, compacted)
    let mut sealed_in: HashMap<&str, &str> = HashMap::new(); // part → snapshot that sealed it
    for (m, files) in &chain {
        for s in &files.segments {
            sealed_in.insert(s.key.as_str(), m.snapshot_id.as_str());
        }
    }
    let mut waiting: HashSet<&str> = HashSet::new();
    let mut newly_cleaned: std::collections::BTreeSet<String> = Default::default();
    for (part, r) in &replaced {
        if cleaned.contains(&r.sealed_by) {
            continue;
        }
        let sealed_at = created
            .get(r.sealed_by.as_str())
            .copied()
            .unwrap_or(i64::MAX);
        if sealed_at.saturating_add(options.grace_ms) > now_ms {
            waiting.insert(r.key.as_str());
            continue;
        }
        newly_cleaned.insert(r.sealed_by.clone());
        if let Some(snapshot) = sealed_in.get(part.as_str()) {
            due.entry((*snapshot).to_owned())
                .or_default()
                .push((part.clone(), r.key.clone()));
        }
    }
    report.waiting_for_grace = waiting.len();
    let root = format!("{}/", store.url().trim_end_matches('/'));
    for (snapshot, parts) in &due {
        let present: Vec<String> = parts.iter().map(|(p, _)| p.clone()).collect();
        let heads = store::head_many(store, &present, options.concurrency).await;
        let mut still = vec![];
        for ((part, compacted), h) in parts.iter().zip(heads) {
            if h?.is_some() {
                still.push((part.clone(), compacted.clone()));
            }
        }
        if still.is_empty() {
            continue;
        }
        // Athena's view of that snapshot names the compacted objects before the parts go.
        let symlink_key = layout.athena_snapshot_files_key(snapshot);
        if let Some(files) = chain
            .iter()
            .find(|(m, _)| m.snapshot_id == *snapshot)
            .map(|(_, f)| f)
        {
            let mut seen = HashSet::new();
            let text: String = files
                .segments
                .iter()
                .map(|s| match replaced.get(&s.key) {
                    Some(r) => r.key.clone(),
                    _ => s.key.clone(),
                })
                .filter(|k| seen.insert(k.clone()))
                .map(|k| format!("{root}{k}\n"))
                .collect();
            if !options.dry_run {
                store
                    .put(&symlink_key, Bytes::from(text), PutMode::Overwrite)
                    .await?;
            }
            report.symlinks_rewritten += 1;
        }
        for (part, _) in still {
            if !options.dry_run {
                store.delete(&part).await?;
            }
            report.deleted.push(part);
        }
    }
    // Only now, with every part of those seals' compactions deleted (a seal's compactions
    // share its creation time, so they pass the grace period together).
    if !newly_cleaned.is_empty() && !options.dry_run {
        cleaned.extend(newly_cleaned);
        let body = serde_json::to_vec(&cleaned).unwrap_or_default();
        store
            .put(&cleaned_key, Bytes::from(body), PutMode::Overwrite)
            .await?;
    }

    // 2. New compactions: sealed segments not compacted yet, grouped by sealing snapshot and
    //    hour, in hours that ended long enough ago.
    let mut groups: BTreeMap<(String, String), Vec<&SealedSegment>> = BTreeMap::new();
    // Segments an expire deleted (a checkpoint holds their changes) are not compacted.
    let expired: HashSet<String> = crate::model::checkpoint::list_expired(store.as_ref(), &layout)
        .await?
        .into_iter()
        .flat_map(|(_, r)| r.objects.into_iter().map(|o| o.key))
        .collect();
    for (m, files) in &chain {
        for s in &files.segments {
            if replaced.contains_key(&s.key) || pending.contains(&s.key) || expired.contains(&s.key)
            {
                continue;
            }
            if s.bytes * 2 > options.target_bytes {
                continue; // already large
            }
            let Some((hour, end_ms)) = hour_of(&s.key) else {
                continue;
            };
            if end_ms + options.older_than_ms > now_ms {
                continue;
            }
            report.candidates += 1;
            groups
                .entry((m.snapshot_id.clone(), hour))
                .or_default()
                .push(s);
        }
    }
    crate::progress::stage(
        options.progress.as_deref(),
        "compacting segments",
        report.candidates as u64,
    );
    for ((snapshot, hour), segments) in groups {
        // Packs of at most target_bytes, each of at least two segments.
        let mut packs: Vec<Vec<&SealedSegment>> = vec![vec![]];
        let mut size = 0;
        for s in segments {
            if size + s.bytes > options.target_bytes && !packs.last().is_some_and(Vec::is_empty) {
                packs.push(vec![]);
                size = 0;
            }
            size += s.bytes;
            if let Some(p) = packs.last_mut() {
                p.push(s);
            }
        }
        for pack in packs.into_iter().filter(|p| p.len() >= 2) {
            if options.dry_run {
                report.written.push(CompactedObject {
                    key: layout.compacted_key(&hour, &snapshot, "(dry run)"),
                    parts: pack.len(),
                    rows: pack.iter().map(|s| s.rows).sum(),
                    bytes_in: pack.iter().map(|s| s.bytes).sum(),
                    bytes_out: 0,
                });
                continue;
            }
            report
                .written
                .extend(write_compacted(store, &layout, &snapshot, &hour, &pack, options).await?);
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Writes one pack (split further where the Arrow schemas differ) and its log entries.
/// Streams: parts are fetched a few at a time and each part's rows go straight into the
/// Parquet writer, so memory holds one part's rows and one row group, not the whole pack.
async fn write_compacted(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    snapshot: &str,
    hour: &str,
    pack: &[&SealedSegment],
    options: &CompactOptions,
) -> Result<Vec<CompactedObject>, CompactError> {
    let mut out = vec![];
    let mut open: Option<OpenRun> = None;
    for chunk in pack.chunks(options.concurrency.max(1)) {
        let keys: Vec<String> = chunk.iter().map(|s| s.key.clone()).collect();
        let bodies = store::get_many_counted(
            store,
            &keys,
            options.concurrency,
            options.progress.as_deref(),
        )
        .await;
        for (s, body) in chunk.iter().zip(bodies) {
            let body = body?;
            if body.len() as u64 != s.bytes || hex::encode(Sha256::digest(&body)) != s.sha256 {
                return Err(CompactError::Segment {
                    key: s.key.clone(),
                    problem: "does not match the size and SHA-256 its snapshot sealed".into(),
                });
            }
            let bad = |problem: String| CompactError::Segment {
                key: s.key.clone(),
                problem,
            };
            let (batches, view) =
                crate::segment::read_segment_all(&s.key, body).map_err(|e| bad(e.to_string()))?;
            let view =
                view.ok_or_else(|| bad("file metadata records no stream view type".into()))?;
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            if rows != s.rows {
                return Err(bad(format!("has {rows} rows, sealed as {}", s.rows)));
            }
            let Some(schema) = batches.first().map(|b| b.schema()) else {
                continue; // an empty segment has nothing to move
            };
            if open
                .as_ref()
                .is_some_and(|r| r.view != view || r.schema != schema)
                && let Some(run) = open.take()
            {
                out.extend(run.finish(store, layout, snapshot).await?);
            }
            let run = match &mut open {
                Some(r) => r,
                None => open.insert(OpenRun::new(layout, hour, snapshot, view, schema, options)?),
            };
            for b in &batches {
                run.writer.write(b).map_err(|e| bad(e.to_string()))?;
            }
            run.parts.push(CompactedPart {
                key: s.key.clone(),
                sha256: s.sha256.clone(),
                first_row: run.rows,
                rows,
            });
            run.rows += rows;
            run.bytes_in += s.bytes;
        }
    }
    if let Some(run) = open.take() {
        out.extend(run.finish(store, layout, snapshot).await?);
    }
    Ok(out)
}

/// A compacted object being written.
struct OpenRun {
    writer: parquet::arrow::ArrowWriter<Vec<u8>>,
    /// `dt=.../hr=...` of every part.
    hour: String,
    view: crate::model::change::StreamViewType,
    schema: arrow_schema::SchemaRef,
    parts: Vec<CompactedPart>,
    rows: u64,
    bytes_in: u64,
}

impl OpenRun {
    fn new(
        layout: &TableLayout,
        hour: &str,
        snapshot: &str,
        view: crate::model::change::StreamViewType,
        schema: arrow_schema::SchemaRef,
        options: &CompactOptions,
    ) -> Result<OpenRun, CompactError> {
        let writer = crate::segment::compacted_writer(
            layout.table(),
            view,
            schema.clone(),
            options.zstd_level,
        )
        .map_err(|e| CompactError::Segment {
            key: layout.compacted_key(hour, snapshot, "*"),
            problem: e.to_string(),
        })?;
        Ok(OpenRun {
            writer,
            hour: hour.to_owned(),
            view,
            schema,
            parts: vec![],
            rows: 0,
            bytes_in: 0,
        })
    }

    /// Closes the object and publishes it with its log entry (a run of one segment is dropped:
    /// nothing to gain).
    async fn finish(
        self,
        store: &Arc<dyn ObjectStore>,
        layout: &TableLayout,
        snapshot: &str,
    ) -> Result<Option<CompactedObject>, CompactError> {
        if self.parts.len() < 2 {
            return Ok(None);
        }
        let mut hasher = Sha256::new();
        for p in &self.parts {
            hasher.update(p.key.as_bytes());
            hasher.update(b"\n");
        }
        let id = hex::encode(hasher.finalize())[..16].to_owned();
        let key = layout.compacted_key(&self.hour, snapshot, &id);
        let bytes = self
            .writer
            .into_inner()
            .map_err(|e| CompactError::Segment {
                key: key.clone(),
                problem: e.to_string(),
            })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        // Written once: a concurrent run that compacted the same parts (same name) may have had
        // its object sealed already, and overwriting it with other bytes (another zstd level,
        // another version) would break what was sealed.
        if store
            .put(&key, Bytes::from(bytes), PutMode::IfAbsent)
            .await?
            == crate::store::PutOutcome::AlreadyExists
        {
            let stored = store.get(&key).await?;
            if hex::encode(Sha256::digest(&stored)) != sha {
                tracing::warn!(key = %key, "another compaction wrote these parts with other bytes; leaving it");
                return Ok(None);
            }
        }
        let record = CompactionRecord {
            format: LOG_FORMAT,
            table: layout.table().to_owned(),
            snapshot_id: snapshot.to_owned(),
            key: key.clone(),
            bytes: size,
            sha256: sha,
            rows: self.rows,
            parts: self.parts,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let log_key = layout.compaction_entry_key(snapshot, &id);
        let body = serde_json::to_vec(&LogEntry::Compaction(record.clone())).map_err(|e| {
            CompactError::Segment {
                key: log_key.clone(),
                problem: e.to_string(),
            }
        })?;
        store
            .put(&log_key, Bytes::from(body), PutMode::IfAbsent)
            .await?;
        Ok(Some(CompactedObject {
            key,
            parts: record.parts.len(),
            rows: record.rows,
            bytes_in: self.bytes_in,
            bytes_out: size,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_come_from_keys() {
        let (h, end) = hour_of("orders/changes/dt=2026-11-27/hr=13/a-b-c.parquet").unwrap();
        assert_eq!(h, "dt=2026-11-27/hr=13");
        assert_eq!(
            end,
            chrono::DateTime::parse_from_rfc3339("2026-11-27T14:00:00Z")
                .unwrap()
                .timestamp_millis()
        );
        assert!(hour_of("orders/changes/x.parquet").is_none());
    }
}

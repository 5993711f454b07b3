//! Verify: prove a sealed snapshot is complete and intact, or name what is wrong.
//!
//! **Quick** (metadata only, what a seal runs right after writing):
//! - the manifest parses and matches its own digest, id and table;
//! - the file list has the size and SHA-256 the manifest recorded, and its sums match the
//!   manifest's (segments, rows, bytes; digest, item count and unknown effects = parent's +
//!   the segments' and quarantined records' deltas);
//! - the parent chain: every ancestor's manifest matches its own digest and the digest its child
//!   recorded, generations count down to 1;
//! - the findings ledger: it has the recorded size and SHA-256, continues the parent's (no
//!   finding dropped, decisions only added), and holds every finding this snapshot sealed.
//!   Its open findings (gaps, rejected entries, quarantined records) are reported in every
//!   later snapshot until acknowledged, and make the status `incomplete`;
//! - every segment and quarantined record (of this snapshot, or of the whole chain with
//!   [`Scope::Chain`]) exists with the recorded size and SHA-256 (HEAD; S3 returns the checksum
//!   it stored at write time).
//!
//! Verify never judges what is still waiting in the inbox: an entry written while a seal ran
//! belongs to the next snapshot, so it cannot make this one fail.
//!
//! **Deep** adds, per segment: download, recompute SHA-256, parse the Parquet, count rows,
//! check the row sequence numbers against the manifest, recompute the object's name tag from
//! its rows (a foreign file under a segment's name fails here), and recompute the digest and
//! item-count deltas from the stored images; per quarantined record, its effect from the
//! stored record; the ledger rebuilt from the chain's file lists. Deep verify of the latest
//! snapshot also audits the store ([`audit`]): every segment, quarantined record and inbox
//! entry is listed, and whatever holds captured data that no snapshot accounts for and no
//! entry waits for, written before the latest seal (by more than the time a writer may spend
//! between an object and its entry), is an `orphan`.
//!
//! Every finding has a kind ([`crate::model::findings::Kind`]) and names the object; the report is
//! human-readable or JSON, and its [`Status`] gives the CLI's exit status.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::model::findings::{Finding, Kind, Ledger, Status};
use crate::model::item::StateDigest;
use crate::model::layout::TableLayout;
use crate::model::log::LogEntry;
use crate::model::manifest::{self, Manifest, ManifestError, SealedSegment, SnapshotFiles};
use crate::ops::seal::StateSums;
use crate::progress::Progress;
use crate::segment::{SegmentContents, SegmentTag};
use crate::store::{self, ObjectStore, StoreError};

mod audit;
mod checks;
mod ledger;
use audit::*;
use checks::*;
use ledger::*;

/// How thoroughly to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Metadata and HEADs.
    Quick,
    /// Download and recompute everything.
    Deep,
}

/// Whose segments to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The segments this snapshot sealed (O(new segments); the chain's manifests are still
    /// checked). What the seal trigger runs.
    Snapshot,
    /// Every segment and base file a restore of this snapshot reads.
    Chain,
}

/// What the deep audit of the store saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// Objects listed under `changes/`.
    pub segment_objects: u64,
    /// Objects listed under `quarantine/`.
    pub quarantine_objects: u64,
    /// Entries waiting in the inbox.
    pub waiting_entries: u64,
    /// Segments no snapshot names whose every record is sealed in other segments (the
    /// unacknowledged attempt of a batch Lambda bisected and retried): nothing is missing.
    pub superseded_segments: u64,
    /// Unaccounted objects written after the latest seal, or less than the grace before it
    /// (a writer may still be between its object and its entry): left for a later audit.
    pub recent: u64,
}

/// The result of a verify.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Table.
    pub table: String,
    /// Snapshot verified.
    pub snapshot_id: String,
    /// Quick or deep.
    pub mode: Mode,
    /// Snapshot or chain.
    pub scope: Scope,
    /// `ok`, `incomplete` or `corrupt`: the worst finding's severity.
    pub status: Status,
    /// True when the status is `ok` (acknowledged findings allowed).
    pub ok: bool,
    /// Manifests checked (the snapshot and its ancestors).
    pub manifests: usize,
    /// Segment and base objects checked.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Rows read back (deep only).
    pub rows_read: u64,
    /// Quarantined records in the chain (their keys and effects are accounted).
    pub quarantined_records: u64,
    /// Entries waiting in the inbox for the next seal, when the latest snapshot was verified.
    pub waiting: Option<u64>,
    /// The store audit (deep verify of the latest snapshot).
    pub audit: Option<Audit>,
    /// Findings, worst first; `acknowledged` ones do not fail the verify.
    pub findings: Vec<Finding>,
    /// Snapshots in scope without their Athena file list (seal writes it best effort): not a
    /// finding, the backup is whole, but their Athena views would return too few rows until
    /// `athena-ddl` writes the lists.
    pub athena_lists_missing: Vec<String>,
    /// Sealed objects in scope that an expire deleted by policy (each named in an expire
    /// record and covered by a checkpoint that checks): not findings.
    pub expired_objects: u64,
    /// State checkpoints checked (the newest one a restore would start from, and every one
    /// an expire relies on): quick, their files' size and SHA-256; deep, read back and their
    /// digest recomputed and compared with their snapshot's.
    pub checkpoints: Vec<String>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl VerifyReport {
    /// Human-readable summary, one finding per line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: snapshot {} of {} ({} verify, {} scope): {} manifest(s), {} object(s), {:.1} MiB{}, {} ms\n",
            self.status.as_str().to_uppercase(),
            self.snapshot_id,
            self.table,
            match self.mode {
                Mode::Quick => "quick",
                Mode::Deep => "deep",
            },
            match self.scope {
                Scope::Snapshot => "snapshot",
                Scope::Chain => "chain",
            },
            self.manifests,
            self.objects,
            self.bytes as f64 / (1024.0 * 1024.0),
            if self.mode == Mode::Deep {
                format!(", {} rows read", self.rows_read)
            } else {
                String::new()
            },
            self.elapsed_ms
        );
        if let Some(a) = &self.audit {
            out.push_str(&format!(
                "  audit: {} segment object(s), {} quarantined record(s), {} waiting entr{}, {} superseded segment(s), {} too recent to judge\n",
                a.segment_objects,
                a.quarantine_objects,
                a.waiting_entries,
                if a.waiting_entries == 1 { "y" } else { "ies" },
                a.superseded_segments,
                a.recent
            ));
        } else if let Some(n) = self.waiting.filter(|n| *n > 0) {
            out.push_str(&format!(
                "  note: {n} log entr{} waiting in the inbox for the next seal\n",
                if n == 1 { "y is" } else { "ies are" }
            ));
        }
        if !self.checkpoints.is_empty() || self.expired_objects > 0 {
            out.push_str(&format!(
                "  checkpoints checked: {}; {} object(s) expired by policy (covered by a checkpoint)\n",
                if self.checkpoints.is_empty() {
                    "none".to_owned()
                } else {
                    self.checkpoints.join(", ")
                },
                self.expired_objects
            ));
        }
        if !self.athena_lists_missing.is_empty() {
            out.push_str(&format!(
                "  note: {} snapshot(s) have no Athena file list ({}): their Athena views would return too few rows; run `streamseal athena-ddl` to write them\n",
                self.athena_lists_missing.len(),
                self.athena_lists_missing.join(", ")
            ));
        }
        if !self.findings.is_empty() {
            let counts: Vec<String> = crate::model::findings::counts(&self.findings)
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            out.push_str(&format!(
                "  {} finding(s): {}\n",
                self.findings.len(),
                counts.join(", ")
            ));
        }
        for f in &self.findings {
            match &f.id {
                Some(id) => out.push_str(&format!(
                    "  [{}] {}: {} (finding {id})\n",
                    f.kind, f.object, f.problem
                )),
                None => out.push_str(&format!("  [{}] {}: {}\n", f.kind, f.object, f.problem)),
            }
        }
        match self.status {
            Status::Ok => {}
            Status::Incomplete => out.push_str(
                "  the backup is intact but known to lack what is listed; see docs/runbook.md (\"verify says incomplete\"), or acknowledge a decided finding with `streamseal acknowledge`\n",
            ),
            Status::Corrupt => out.push_str(
                "  what was sealed is not what is stored; see docs/runbook.md (\"verify says corrupt\")\n",
            ),
        }
        out
    }
}

/// Why verify could not run at all (as opposed to finding problems, which it reports).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The snapshot to verify could not be found or named.
    #[error(transparent)]
    Snapshot(#[from] ManifestError),
    /// The store failed (not a finding about the snapshot: retry).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Options.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Quick or deep.
    pub mode: Mode,
    /// Snapshot or chain.
    pub scope: Scope,
    /// Concurrent requests.
    pub concurrency: usize,
    /// Deep audit: an object no snapshot accounts for is judged only once it is older than the
    /// latest seal by this much (by the store's clock), the longest a writer may take between
    /// an object and its entry. Default 15 minutes, a Lambda invocation's limit.
    pub orphan_grace_ms: i64,
    /// Counts manifests and objects checked, for a caller showing progress.
    pub progress: Option<Arc<Progress>>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            mode: Mode::Quick,
            scope: Scope::Chain,
            concurrency: 32,
            orphan_grace_ms: DEFAULT_ORPHAN_GRACE_MS,
            progress: None,
        }
    }
}

/// [`VerifyOptions::orphan_grace_ms`]'s default: 15 minutes.
pub const DEFAULT_ORPHAN_GRACE_MS: i64 = 15 * 60 * 1000;

/// Each manifest's digest, item count and unknown effects must be its parent's plus its own
/// segments' and quarantined records' (except where a bootstrap base joins the chain, whose
/// digest the seal computed by materializing).
fn check_sums(layout: &TableLayout, chain: &Chain, find: &mut impl FnMut(Kind, &str, String)) {
    for i in 0..chain.len() {
        let (m, files) = &chain[i];
        let Some(files) = files else { continue };
        let parent = chain.get(i + 1).map(|(p, _)| p);
        // The seal that adopts a bootstrap base computes its digest by materializing (deltas
        // do not add up across a scan); deep verify of a restore checks it instead.
        if parent.map_or(&[][..], |p| p.base.as_slice()) != m.base.as_slice() {
            continue;
        }
        if parent.is_none() && m.parent.is_some() {
            continue;
        }
        let sums = StateSums::of_parent(parent).plus(files);
        let key = layout.snapshot_key(&m.snapshot_id);
        if sums.digest != m.state_digest {
            find(
                Kind::Altered,
                &key,
                "state digest is not the parent's plus the segments' and quarantined records' deltas"
                    .into(),
            );
        }
        if sums.item_count != m.item_count {
            find(
                Kind::Altered,
                &key,
                format!(
                    "item count {} is not the parent's plus the deltas ({})",
                    m.item_count, sums.item_count
                ),
            );
        }
        if sums.unknown_effects != m.unknown_effects {
            find(
                Kind::Altered,
                &key,
                format!(
                    "{} quarantined record(s) of unknown effect recorded, {} counted",
                    m.unknown_effects, sums.unknown_effects
                ),
            );
        }
    }
}

/// The newest snapshot's findings ledger: open findings of the whole chain so far, and the
/// decisions taken. A ledger that is missing, does not match its manifest or does not continue
/// its parent's is a finding (and an empty ledger is returned when it cannot be read).
async fn read_ledger(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    chain: &Chain,
    find: &mut impl FnMut(Kind, &str, String),
) -> Result<Ledger, VerifyError> {
    let mut ledger = Ledger::new(layout.table());
    if let Some((m, files)) = chain.first() {
        match manifest::read_ledger(store, m).await {
            Ok(l) => ledger = l,
            Err(ManifestError::Store(StoreError::NotFound { .. })) => find(
                Kind::Missing,
                m.findings.as_ref().map_or("", |r| r.key.as_str()),
                "findings ledger is missing".into(),
            ),
            Err(ManifestError::Store(e)) => return Err(e.into()),
            Err(e) => find(
                Kind::Altered,
                m.findings.as_ref().map_or("", |r| r.key.as_str()),
                e.to_string(),
            ),
        }
        if let Some(r) = &m.findings {
            check_ledger(m, r, &ledger, files.as_ref(), find);
            if let Some((p, _)) = chain.get(1)
                && p.findings.as_ref() != Some(r)
            {
                match manifest::read_ledger(store, p).await {
                    Ok(parent_ledger) => {
                        for problem in ledger.check_continues(&parent_ledger, &m.snapshot_id) {
                            find(Kind::Altered, &r.key, problem);
                        }
                    }
                    Err(ManifestError::Store(e @ StoreError::Transient { .. })) => {
                        return Err(e.into());
                    }
                    // The parent's own verify names a parent ledger that cannot be read.
                    Err(_) => {}
                }
            }
        }
    }
    Ok(ledger)
}

/// Quick check of the objects in scope: each exists with the size and SHA-256 sealed (the
/// store's checksum, no object read), and so does each quarantined record.
async fn quick_check(
    store: &Arc<dyn ObjectStore>,
    options: &VerifyOptions,
    expected: &[(String, u64, String)],
    quarantined: &[&manifest::SealedQuarantine],
    find: &mut impl FnMut(Kind, &str, String),
) -> Result<(), VerifyError> {
    let progress = options.progress.as_deref();
    let keys: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
    let heads = store::head_many_counted(store, &keys, options.concurrency, progress).await;
    for ((key, bytes, sha), head) in expected.iter().zip(heads) {
        match head? {
            None => find(Kind::Missing, key, "object is missing".into()),
            Some(meta) if meta.size != *bytes => find(
                Kind::Altered,
                key,
                format!(
                    "object is {} bytes, sealed as {bytes} (truncated or replaced)",
                    meta.size
                ),
            ),
            Some(meta) => match meta.sha256 {
                Some(got) if got != *sha => find(
                    Kind::Altered,
                    key,
                    format!("SHA-256 is {got}, sealed as {sha} (content altered)"),
                ),
                Some(_) => {}
                None => find(
                    Kind::Altered,
                    key,
                    "the store reports no SHA-256 for this object, so its content cannot be proven without reading it (it was rewritten by another tool?); run verify --deep".into(),
                ),
            },
        }
    }
    let qkeys: Vec<String> = quarantined.iter().map(|q| q.key.clone()).collect();
    for (q, head) in quarantined
        .iter()
        .zip(store::head_many_counted(store, &qkeys, options.concurrency, progress).await)
    {
        match head? {
            // Missing when sealed: its effect is counted as unknown; nothing to check.
            None if q.sha256.is_empty() => {}
            None => find(
                Kind::Missing,
                &q.key,
                "quarantined record is missing".into(),
            ),
            Some(meta) if meta.size != q.bytes => find(
                Kind::Altered,
                &q.key,
                format!(
                    "quarantined record is {} bytes, sealed as {}",
                    meta.size, q.bytes
                ),
            ),
            Some(meta) => match meta.sha256 {
                Some(got) if got != q.sha256 => find(
                    Kind::Altered,
                    &q.key,
                    format!("SHA-256 is {got}, sealed as {} (content altered)", q.sha256),
                ),
                _ => {}
            },
        }
    }
    Ok(())
}

/// What [`check_expired`] found.
struct Expired {
    /// Keys of objects expired by policy under a checkpoint that checks.
    objects: HashSet<String>,
    /// Checkpoints checked.
    checkpoints: Vec<String>,
}

/// Reads the expire records and checks every checkpoint they rely on, and the newest one a
/// restore of this snapshot would start from: its manifest, its link to the chain's manifest
/// of that snapshot, its digest against that snapshot's, its files (deep: read back, digest
/// recomputed). An object named by a record is expired by policy only when its checkpoint
/// checks and covers it (sealed at or before the checkpoint's snapshot); otherwise it is
/// checked like any other, so a missing one stays a finding.
async fn check_expired(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    chain: &Chain,
    replaced: &HashMap<String, crate::ops::compact::Replacement>,
    options: &VerifyOptions,
    find: &mut impl FnMut(Kind, &str, String),
) -> Result<Expired, VerifyError> {
    let mut out = Expired {
        objects: HashSet::new(),
        checkpoints: vec![],
    };
    let Some((top, _)) = chain.first() else {
        return Ok(out);
    };
    let records = match crate::model::checkpoint::list_expired(store.as_ref(), layout).await {
        Ok(r) => r,
        Err(e @ StoreError::Permanent { .. }) => {
            find(Kind::Altered, &layout.expired_prefix(), e.to_string());
            vec![]
        }
        Err(e) => return Err(e.into()),
    };
    let mut ids: Vec<String> = records.iter().map(|(_, r)| r.checkpoint.clone()).collect();
    // The checkpoint the chain recorded (the next seal after a checkpoint adopts it).
    if let Some(r) = &top.checkpoint {
        ids.push(r.snapshot_id.clone());
    }
    if let Some(newest) = crate::model::checkpoint::list_checkpoints(store.as_ref(), layout)
        .await?
        .into_iter()
        .rfind(|c| *c <= top.snapshot_id)
    {
        ids.push(newest);
    }
    ids.sort();
    ids.dedup();
    let manifests: HashMap<&str, &Manifest> = chain
        .iter()
        .map(|(m, _)| (m.snapshot_id.as_str(), m))
        .collect();
    let mut sound: HashMap<String, String> = HashMap::new();
    for id in ids {
        // A checkpoint of a later snapshot than the one verified: outside this chain.
        let Some(m) = manifests.get(id.as_str()) else {
            continue;
        };
        let key = layout.checkpoint_manifest_key(&id);
        let checked = crate::ops::checkpoint::check_checkpoint(
            store,
            layout,
            &id,
            Some(&m.manifest_sha256),
            options.concurrency,
        )
        .await?;
        let c = match checked {
            Ok(c) => c,
            Err(why) => {
                find(
                    Kind::Missing,
                    &key,
                    format!("state checkpoint does not check: {why}"),
                );
                continue;
            }
        };
        let mut total = c.digest;
        let mut held = true;
        for q in &c.quarantined {
            let sha = q
                .state
                .get(2..)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("");
            let mut h = [0u8; 32];
            match hex::decode_to_slice(sha, &mut h) {
                Ok(()) => total.add_item(&crate::model::item::ItemHash(h)),
                Err(_) => held = false,
            }
        }
        if m.state_digest.is_none_or(|d| !held || d != total)
            || c.items as i64 + c.quarantined.len() as i64 != m.item_count
        {
            find(
                Kind::Altered,
                &key,
                format!(
                    "state checkpoint holds {} items (and {} quarantined keys) whose digest is not snapshot {id}'s",
                    c.items,
                    c.quarantined.len()
                ),
            );
            continue;
        }
        if options.mode == Mode::Deep {
            match crate::ops::checkpoint::read_back(store, &id, &c.files, options.concurrency).await
            {
                Ok((n, d)) if n == c.items && d == c.digest => {}
                Ok((n, _)) => {
                    find(
                        Kind::Altered,
                        &key,
                        format!(
                            "state checkpoint files hold {n} items whose digest is not the one recorded ({} items)",
                            c.items
                        ),
                    );
                    continue;
                }
                Err(crate::ops::checkpoint::CheckpointError::Store(e)) => {
                    if e.says_nothing_about_the_object() {
                        return Err(e.into());
                    }
                    find(Kind::Missing, &key, format!("state checkpoint: {e}"));
                    continue;
                }
                Err(e) => {
                    find(Kind::Altered, &key, e.to_string());
                    continue;
                }
            }
        }
        out.checkpoints.push(id.clone());
        // It covers expired objects only if a restore of this snapshot can start from it.
        if m.base == top.base {
            sound.insert(id, c.checkpoint_sha256.clone());
        }
    }
    // The recorded checkpoint, if it did not check, has its finding above; one that checks
    // but is not the one recorded was replaced.
    if let Some(r) = &top.checkpoint
        && sound
            .get(&r.snapshot_id)
            .is_some_and(|sha| *sha != r.checkpoint_sha256)
    {
        find(
            Kind::Altered,
            &layout.checkpoint_manifest_key(&r.snapshot_id),
            "the state checkpoint is not the one this chain recorded (replaced)".into(),
        );
    }
    // Where each stored object was sealed (the latest snapshot holding one of its segments).
    let mut sealed_by: HashMap<&str, &str> = HashMap::new();
    for (m, files) in chain {
        for s in files.iter().flat_map(|f| f.segments.iter()) {
            let stored = replaced
                .get(&s.key)
                .map_or(s.key.as_str(), |r| r.key.as_str());
            let e = sealed_by.entry(stored).or_insert(m.snapshot_id.as_str());
            if m.snapshot_id.as_str() > *e {
                *e = m.snapshot_id.as_str();
            }
        }
    }
    for (_, r) in &records {
        let covered = sound
            .get(&r.checkpoint)
            .is_some_and(|sha| *sha == r.checkpoint_sha256);
        for o in &r.objects {
            let Some(by) = sealed_by.get(o.key.as_str()) else {
                continue;
            };
            // Otherwise the object is checked like any other: a missing one is a finding,
            // and the checkpoint's own finding says why it does not cover it.
            if covered && *by <= r.checkpoint.as_str() {
                out.objects.insert(o.key.clone());
            }
        }
    }
    Ok(out)
}

/// A snapshot and its ancestors, newest first, each with its file list when it could be read.
type Chain = Vec<(Manifest, Option<SnapshotFiles>)>;

/// The snapshot `id` and its chain of ancestors, newest first, each with its file list when
/// that can be read. A manifest or file list that is missing or does not check is a finding,
/// and the chain stops there; only the first manifest's absence is an error.
async fn read_chain(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    id: &str,
    progress: Option<&crate::progress::Progress>,
    find: &mut impl FnMut(Kind, &str, String),
) -> Result<Chain, VerifyError> {
    let table = layout.table();
    crate::progress::stage(progress, "checking manifests", 0);
    let mut chain: Chain = Vec::new();
    let mut next = Some((id.to_owned(), None::<String>));
    while let Some((cur, expected_sha)) = next.take() {
        let key = layout.snapshot_key(&cur);
        let m = match manifest::read_manifest(store, layout, &cur).await {
            Ok(m) => m,
            Err(ManifestError::Store(StoreError::NotFound { .. })) if chain.is_empty() => {
                return Err(ManifestError::UnknownSnapshot {
                    table: table.to_owned(),
                    id: cur,
                    store: store.url(),
                }
                .into());
            }
            Err(ManifestError::Store(StoreError::NotFound { .. })) => {
                find(Kind::Missing, &key, "manifest is missing".into());
                break;
            }
            Err(ManifestError::Store(e)) => return Err(e.into()),
            Err(e @ ManifestError::Format { .. }) if chain.is_empty() => return Err(e.into()),
            Err(e) => {
                find(Kind::Altered, &key, e.to_string());
                break;
            }
        };
        check_manifest(layout, &key, &cur, &m, expected_sha.as_deref(), find);
        let files = match manifest::read_files(store, &m).await {
            Ok(f) => {
                check_files(&m, &f, find);
                Some(f)
            }
            Err(ManifestError::Store(StoreError::NotFound { .. })) => {
                find(Kind::Missing, &m.files.key, "file list is missing".into());
                None
            }
            Err(ManifestError::Store(e)) => return Err(e.into()),
            Err(e) => {
                find(Kind::Altered, &m.files.key, e.to_string());
                None
            }
        };
        if let Some(p) = &m.parent {
            if manifest::parse_snapshot_id(&p.snapshot_id) != Some(m.generation.saturating_sub(1)) {
                find(
                    Kind::Altered,
                    &key,
                    format!(
                        "parent {} is not generation {}",
                        p.snapshot_id,
                        m.generation.saturating_sub(1)
                    ),
                );
                next = None;
            } else {
                next = Some((p.snapshot_id.clone(), Some(p.manifest_sha256.clone())));
            }
        } else if m.generation != 1 {
            find(
                Kind::Altered,
                &key,
                format!("generation {} has no parent", m.generation),
            );
        }
        if let Some(p) = progress {
            if chain.is_empty() {
                p.add_total(m.generation);
            }
            p.add(1);
        }
        chain.push((m, files));
    }
    Ok(chain)
}

/// Verifies snapshot `which` (`latest` or an id) of `table`.
pub async fn verify(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    which: &str,
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let layout = TableLayout::new(table);
    let id = manifest::resolve_snapshot(store.as_ref(), &layout, which).await?;
    let mut report = VerifyReport {
        table: table.to_owned(),
        snapshot_id: id.clone(),
        mode: options.mode,
        scope: options.scope,
        status: Status::Ok,
        ok: false,
        manifests: 0,
        objects: 0,
        bytes: 0,
        rows_read: 0,
        quarantined_records: 0,
        waiting: None,
        audit: None,
        findings: vec![],
        athena_lists_missing: vec![],
        expired_objects: 0,
        checkpoints: vec![],
        elapsed_ms: 0,
    };
    let mut findings: Vec<Finding> = vec![];
    let mut find = |kind: Kind, object: &str, problem: String| {
        findings.push(Finding::new(kind, object, problem));
    };

    // The snapshot and its chain of ancestors.
    let chain = read_chain(
        store.as_ref(),
        &layout,
        &id,
        options.progress.as_deref(),
        &mut find,
    )
    .await?;
    report.manifests = chain.len();

    // Sums along the chain.
    check_sums(&layout, &chain, &mut find);

    // The ledger: open findings of the whole chain so far, and the decisions taken.
    let ledger = read_ledger(store.as_ref(), &layout, &chain, &mut find).await?;
    report.quarantined_records = chain.first().map_or(0, |(m, _)| m.quarantined_records);

    // Objects.
    let in_scope: Vec<&SealedSegment> = match options.scope {
        Scope::Snapshot => chain
            .first()
            .and_then(|(_, f)| f.as_ref())
            .map(|f| f.segments.iter().collect())
            .unwrap_or_default(),
        Scope::Chain => chain
            .iter()
            .filter_map(|(_, f)| f.as_ref())
            .flat_map(|f| f.segments.iter())
            .collect(),
    };
    let base: Vec<(String, u64, String)> = chain
        .first()
        .map(|(m, _)| {
            m.base
                .iter()
                .map(|b| (b.key.clone(), b.bytes, b.sha256.clone()))
                .collect()
        })
        .unwrap_or_default();
    // Segments a sealed compaction replaced are checked through the compacted object (their
    // own object may be gone). Compactions sealed by a later snapshot count too.
    let mut replaced = crate::ops::compact::replacements_of(
        chain.iter().filter_map(|(m, f)| f.as_ref().map(|f| (m, f))),
    );
    let latest = manifest::latest_snapshot_id(store.as_ref(), &layout)
        .await
        .ok()
        .flatten();
    let is_latest = latest
        .as_deref()
        .is_some_and(|l| chain.first().is_some_and(|(m, _)| m.snapshot_id == l));
    if !is_latest
        && let Ok(more) = crate::ops::compact::load_replacements(store.as_ref(), &layout).await
    {
        for (k, v) in more {
            replaced.entry(k).or_insert(v);
        }
    }
    let scope_files: Vec<&manifest::SnapshotFiles> = match options.scope {
        Scope::Snapshot => chain
            .first()
            .and_then(|(_, f)| f.as_ref())
            .into_iter()
            .collect(),
        Scope::Chain => chain.iter().filter_map(|(_, f)| f.as_ref()).collect(),
    };
    let mut compacted: Vec<crate::ops::compact::Replacement> = vec![];
    let mut seen_compacted: HashSet<String> = HashSet::new();
    for s in &in_scope {
        if let Some(r) = replaced.get(&s.key)
            && seen_compacted.insert(r.key.clone())
        {
            compacted.push(r.clone());
        }
    }
    for f in &scope_files {
        for c in &f.compactions {
            if seen_compacted.insert(c.record.key.clone()) {
                compacted.push(crate::ops::compact::Replacement {
                    key: c.record.key.clone(),
                    bytes: c.record.bytes,
                    sha256: c.record.sha256.clone(),
                    first_row: 0,
                    rows: c.record.rows,
                    sealed_by: f.snapshot_id.clone(),
                });
            }
        }
    }
    let plain: Vec<&SealedSegment> = in_scope
        .iter()
        .copied()
        .filter(|s| !replaced.contains_key(&s.key))
        .collect();
    let mut expected: Vec<(String, u64, String)> = plain
        .iter()
        .map(|s| (s.key.clone(), s.bytes, s.sha256.clone()))
        .collect();
    expected.extend(
        compacted
            .iter()
            .map(|r| (r.key.clone(), r.bytes, r.sha256.clone())),
    );
    if options.scope == Scope::Chain {
        expected.extend(base);
    }
    // Objects an expire deleted by policy: checked through the checkpoint that covers them.
    let expired = check_expired(store, &layout, &chain, &replaced, &options, &mut find).await?;
    report.checkpoints = expired.checkpoints;
    let before = expected.len();
    expected.retain(|(k, _, _)| !expired.objects.contains(k));
    report.expired_objects = (before - expected.len()) as u64;
    let plain: Vec<&SealedSegment> = plain
        .into_iter()
        .filter(|s| !expired.objects.contains(&s.key))
        .collect();
    compacted.retain(|r| !expired.objects.contains(&r.key));
    report.objects = expected.len();
    report.bytes = expected.iter().map(|e| e.1).sum();
    let keys: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
    // Quarantined records sealed in scope: their objects must be there, and (deep) still give
    // the effect the seal recorded.
    let quarantined: Vec<&manifest::SealedQuarantine> = scope_files
        .iter()
        .flat_map(|f| f.quarantined.iter())
        .collect();
    let progress = options.progress.as_deref();
    crate::progress::stage(
        progress,
        match options.mode {
            Mode::Quick => "checking objects",
            Mode::Deep => "reading objects back",
        },
        (keys.len() + quarantined.len()) as u64,
    );
    match options.mode {
        Mode::Quick => quick_check(store, &options, &expected, &quarantined, &mut find).await?,
        Mode::Deep => {
            for r in &compacted {
                match store.get(&r.key).await {
                    Err(StoreError::NotFound { .. }) => {
                        find(Kind::Missing, &r.key, "compacted object is missing".into())
                    }
                    Err(e) => return Err(e.into()),
                    Ok(bytes) => {
                        let parts: Vec<&SealedSegment> = in_scope
                            .iter()
                            .copied()
                            .filter(|s| replaced.get(&s.key).is_some_and(|x| x.key == r.key))
                            .collect();
                        report.rows_read +=
                            deep_check_compacted(r, &parts, &replaced, bytes, &mut find);
                    }
                }
            }
            // Bounded: objects are fetched and checked a batch at a time.
            for chunk in plain.chunks(options.concurrency.max(1)) {
                let keys: Vec<String> = chunk.iter().map(|s| s.key.clone()).collect();
                let bodies =
                    store::get_many_counted(store, &keys, options.concurrency, progress).await;
                for (s, body) in chunk.iter().zip(bodies) {
                    match body {
                        Err(StoreError::NotFound { .. }) => {
                            find(Kind::Missing, &s.key, "object is missing".into())
                        }
                        Err(e) => return Err(e.into()),
                        Ok(bytes) => {
                            report.rows_read += deep_check(s, bytes, &mut find);
                        }
                    }
                }
            }
            if options.scope == Scope::Chain {
                let base_keys: Vec<(String, u64, String)> = expected
                    .iter()
                    .filter(|(k, _, _)| {
                        chain
                            .first()
                            .is_some_and(|(m, _)| m.base.iter().any(|b| b.key == *k))
                    })
                    .cloned()
                    .collect();
                for (key, bytes, sha) in &base_keys {
                    match store.get(key).await {
                        Err(StoreError::NotFound { .. }) => {
                            find(Kind::Missing, key, "base file is missing".into())
                        }
                        Err(e) => return Err(e.into()),
                        Ok(body) => {
                            let got = hex::encode(Sha256::digest(&body));
                            if body.len() as u64 != *bytes || got != *sha {
                                find(
                                    Kind::Altered,
                                    key,
                                    format!(
                                        "base file is {} bytes with SHA-256 {got}, sealed as {bytes} bytes with {sha}",
                                        body.len()
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            let qkeys: Vec<String> = quarantined.iter().map(|q| q.key.clone()).collect();
            let bodies =
                store::get_many_counted(store, &qkeys, options.concurrency, progress).await;
            for (q, body) in quarantined.iter().zip(bodies) {
                match body {
                    Err(StoreError::NotFound { .. }) => find(
                        Kind::Missing,
                        &q.key,
                        "quarantined record is missing".into(),
                    ),
                    Err(e) => return Err(e.into()),
                    Ok(b) if hex::encode(Sha256::digest(&b)) != q.sha256 => find(
                        Kind::Altered,
                        &q.key,
                        format!(
                            "quarantined record is {} bytes that are not the ones sealed ({} bytes, SHA-256 {})",
                            b.len(),
                            q.bytes,
                            q.sha256
                        ),
                    ),
                    Ok(b) => {
                        let kinds = crate::model::quarantine::HashKinds::AsSealed {
                            new_opaque: q.effect.new_image_opaque,
                            old_opaque: q.effect.old_image_opaque,
                        };
                        if crate::model::quarantine::effect_of_object_with(&b, kinds) != q.effect {
                            find(
                                Kind::Altered,
                                &q.key,
                                "the stored record's effect on the state is not the one sealed"
                                    .into(),
                            );
                        }
                    }
                }
            }
            if let Some(expected) = rebuilt_ledger(&chain) {
                for problem in compare_ledgers(&expected, &ledger) {
                    find(
                        Kind::Altered,
                        chain
                            .first()
                            .and_then(|(m, _)| m.findings.as_ref())
                            .map_or(table, |r| r.key.as_str()),
                        problem,
                    );
                }
            }
        }
    }
    // The ledger's open findings and decisions.
    for f in ledger.findings() {
        findings.push(f);
    }

    // What waits for the next seal (never a finding about this snapshot), and with deep, the
    // audit of everything stored against the latest chain.
    if is_latest && let Some((m, Some(top))) = chain.first() {
        let inbox = crate::ops::seal::list_inbox(store.as_ref(), &layout, Some(top)).await?;
        report.waiting = Some(inbox.waiting.len() as u64);
        if options.mode == Mode::Deep && chain.iter().all(|(_, f)| f.is_some()) {
            crate::progress::stage(progress, "auditing the store", 0);
            let (a, audit_findings) = audit(store, &layout, m, &chain, &ledger, &options).await?;
            findings.extend(audit_findings);
            report.audit = Some(a);
        }
    }

    // The Athena file lists of the snapshots in scope.
    let ids: Vec<&str> = match options.scope {
        Scope::Snapshot => chain.iter().take(1),
        Scope::Chain => chain.iter().take(usize::MAX),
    }
    .map(|(m, _)| m.snapshot_id.as_str())
    .collect();
    let lists: Vec<String> = ids
        .iter()
        .map(|id| layout.athena_snapshot_files_key(id))
        .collect();
    for (id, head) in ids
        .iter()
        .zip(store::head_many(store, &lists, options.concurrency).await)
    {
        if matches!(head, Ok(None)) {
            report.athena_lists_missing.push((*id).to_owned());
        }
    }

    findings.sort_by(|a, b| {
        b.kind
            .severity()
            .cmp(&a.kind.severity())
            .then(a.kind.cmp(&b.kind))
    });
    report.status = Status::of(&findings);
    report.ok = report.status == Status::Ok;
    report.findings = findings;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

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
//! Every finding has a kind ([`crate::findings::Kind`]) and names the object; the report is
//! human-readable or JSON, and its [`Status`] gives the CLI's exit status.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::findings::{Finding, Kind, Ledger, Status};
use crate::item::StateDigest;
use crate::layout::TableLayout;
use crate::log::LogEntry;
use crate::manifest::{self, Manifest, ManifestError, SealedSegment, SnapshotFiles};
use crate::seal::StateSums;
use crate::segment::{SegmentContents, SegmentTag};
use crate::store::{self, ObjectStore, StoreError};

/// How thoroughly to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Metadata and HEADs.
    Quick,
    /// Download and recompute everything.
    Deep,
}

/// Whose segments to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
        if !self.findings.is_empty() {
            let counts: Vec<String> = crate::findings::counts(&self.findings)
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
#[derive(Debug, Clone, Copy)]
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
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            mode: Mode::Quick,
            scope: Scope::Chain,
            concurrency: 32,
            orphan_grace_ms: DEFAULT_ORPHAN_GRACE_MS,
        }
    }
}

/// [`VerifyOptions::orphan_grace_ms`]'s default: 15 minutes.
pub const DEFAULT_ORPHAN_GRACE_MS: i64 = 15 * 60 * 1000;

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
        elapsed_ms: 0,
    };
    let mut findings: Vec<Finding> = vec![];
    let mut find = |kind: Kind, object: &str, problem: String| {
        findings.push(Finding::new(kind, object, problem));
    };

    // The snapshot and its chain of ancestors.
    let mut chain: Vec<(Manifest, Option<SnapshotFiles>)> = Vec::new();
    let mut next = Some((id.clone(), None::<String>));
    while let Some((cur, expected_sha)) = next.take() {
        let key = layout.snapshot_key(&cur);
        let m = match manifest::read_manifest(store.as_ref(), &layout, &cur).await {
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
        check_manifest(&layout, &key, &cur, &m, expected_sha.as_deref(), &mut find);
        let files = match manifest::read_files(store.as_ref(), &m).await {
            Ok(f) => {
                check_files(&m, &f, &mut find);
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
        chain.push((m, files));
    }
    report.manifests = chain.len();

    // Sums: each manifest's digest, count and unknown effects are its parent's plus its own
    // segments' and quarantined records'.
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

    // The ledger: open findings of the whole chain so far, and the decisions taken.
    let mut ledger = Ledger::new(table);
    if let Some((m, files)) = chain.first() {
        match manifest::read_ledger(store.as_ref(), m).await {
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
            check_ledger(m, r, &ledger, files.as_ref(), &mut find);
            if let Some((p, _)) = chain.get(1)
                && p.findings.as_ref() != Some(r)
            {
                match manifest::read_ledger(store.as_ref(), p).await {
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
    let mut replaced = crate::compact::replacements_of(
        chain.iter().filter_map(|(m, f)| f.as_ref().map(|f| (m, f))),
    );
    let latest = manifest::latest_snapshot_id(store.as_ref(), &layout)
        .await
        .ok()
        .flatten();
    let is_latest = latest
        .as_deref()
        .is_some_and(|l| chain.first().is_some_and(|(m, _)| m.snapshot_id == l));
    if !is_latest && let Ok(more) = crate::compact::load_replacements(store.as_ref(), &layout).await
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
    let mut compacted: Vec<crate::compact::Replacement> = vec![];
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
                compacted.push(crate::compact::Replacement {
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
    report.objects = expected.len();
    report.bytes = expected.iter().map(|e| e.1).sum();
    let keys: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
    // Quarantined records sealed in scope: their objects must be there, and (deep) still give
    // the effect the seal recorded.
    let quarantined: Vec<&manifest::SealedQuarantine> = scope_files
        .iter()
        .flat_map(|f| f.quarantined.iter())
        .collect();
    match options.mode {
        Mode::Quick => {
            let heads = store::head_many(store, &keys, options.concurrency).await;
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
                .zip(store::head_many(store, &qkeys, options.concurrency).await)
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
        }
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
                let bodies = store::get_many(store, &keys, options.concurrency).await;
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
            let bodies = store::get_many(store, &qkeys, options.concurrency).await;
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
                        let kinds = crate::quarantine::HashKinds::AsSealed {
                            new_opaque: q.effect.new_image_opaque,
                            old_opaque: q.effect.old_image_opaque,
                        };
                        if crate::quarantine::effect_of_object_with(&b, kinds) != q.effect {
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
        let listed = store.list(&layout.inbox_prefix(), None, None).await?;
        let sealed: HashSet<&str> = top.entry_keys().collect();
        report.waiting = Some(
            listed
                .iter()
                .filter(|e| !sealed.contains(e.key.as_str()))
                .count() as u64,
        );
        if options.mode == Mode::Deep && chain.iter().all(|(_, f)| f.is_some()) {
            let (a, audit_findings) = audit(store, &layout, m, &chain, &ledger, &options).await?;
            findings.extend(audit_findings);
            report.audit = Some(a);
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

/// The ledger's own checks against the snapshot that references it: every finding this
/// snapshot sealed is in it, sealed in this snapshot, and every decision it applied is there.
fn check_ledger(
    m: &Manifest,
    r: &crate::findings::LedgerRef,
    ledger: &Ledger,
    files: Option<&SnapshotFiles>,
    find: &mut impl FnMut(Kind, &str, String),
) {
    let open = ledger.open().count() as u64;
    if open != r.open || ledger.entries.len() as u64 != r.open + r.acknowledged {
        find(
            Kind::Altered,
            &r.key,
            format!(
                "ledger holds {open} open and {} acknowledged findings, the manifest recorded {} and {}",
                ledger.entries.len() as u64 - open,
                r.open,
                r.acknowledged
            ),
        );
    }
    if ledger.table != m.table {
        find(
            Kind::Altered,
            &r.key,
            format!("ledger is for table {:?}", ledger.table),
        );
    }
    let Some(files) = files else { return };
    let sealed_here = files
        .rejected
        .iter()
        .map(|e| (Kind::Rejected, e.log_key.as_str()))
        .chain(files.gaps.iter().map(|g| (Kind::Gap, g.log_key.as_str())))
        .chain(
            files
                .quarantined
                .iter()
                .map(|q| (Kind::Quarantined, q.key.as_str())),
        );
    for (kind, subject) in sealed_here {
        let id = crate::findings::finding_id(kind, subject);
        match ledger.get(&id) {
            Some(e) if e.sealed_in == m.snapshot_id => {}
            _ => find(
                Kind::Altered,
                &r.key,
                format!("the {kind} {subject} this snapshot sealed is not in its ledger"),
            ),
        }
    }
    for a in files
        .acknowledgments
        .iter()
        .filter(|a| a.outcome == "applied")
    {
        let applied = ledger.get(&a.record.finding).is_some_and(|e| {
            e.acknowledged
                .as_ref()
                .is_some_and(|d| d.snapshot_id == m.snapshot_id && d.entry == a.log_key)
        });
        if !applied {
            find(
                Kind::Altered,
                &r.key,
                format!(
                    "the acknowledgment of {} this snapshot sealed is not in its ledger",
                    a.record.finding
                ),
            );
        }
    }
}

/// A finding as the chain's file lists record it.
struct SealedFinding {
    id: String,
    kind: Kind,
    subject: String,
    sealed_in: String,
    acknowledged_in: Option<String>,
}

/// The ledger the chain's file lists imply (oldest first), or `None` when a file list is
/// missing (already reported).
fn rebuilt_ledger(chain: &[(Manifest, Option<SnapshotFiles>)]) -> Option<Vec<SealedFinding>> {
    let mut out: Vec<SealedFinding> = vec![];
    for (m, files) in chain.iter().rev() {
        let files = files.as_ref()?;
        let new = files
            .rejected
            .iter()
            .map(|e| (Kind::Rejected, e.log_key.clone()))
            .chain(files.gaps.iter().map(|g| (Kind::Gap, g.log_key.clone())))
            .chain(
                files
                    .quarantined
                    .iter()
                    .map(|q| (Kind::Quarantined, q.key.clone())),
            );
        for (kind, subject) in new {
            out.push(SealedFinding {
                id: crate::findings::finding_id(kind, &subject),
                kind,
                subject,
                sealed_in: m.snapshot_id.clone(),
                acknowledged_in: None,
            });
        }
        for a in files
            .acknowledgments
            .iter()
            .filter(|a| a.outcome == "applied")
        {
            if let Some(e) = out.iter_mut().find(|e| e.id == a.record.finding) {
                e.acknowledged_in = Some(m.snapshot_id.clone());
            }
        }
    }
    Some(out)
}

fn compare_ledgers(expected: &[SealedFinding], ledger: &Ledger) -> Vec<String> {
    let mut problems = vec![];
    for f in expected {
        match ledger.get(&f.id) {
            None => problems.push(format!(
                "the {} {} sealed in {} is not in the ledger",
                f.kind, f.subject, f.sealed_in
            )),
            Some(e) => {
                let got = e.acknowledged.as_ref().map(|a| a.snapshot_id.clone());
                if e.kind != f.kind
                    || e.subject != f.subject
                    || e.sealed_in != f.sealed_in
                    || got != f.acknowledged_in
                {
                    problems.push(format!(
                        "finding {} in the ledger is not what the file lists sealed",
                        f.id
                    ));
                }
            }
        }
    }
    if ledger.entries.len() > expected.len() {
        problems.push(format!(
            "the ledger holds {} findings, the chain's file lists seal {}",
            ledger.entries.len(),
            expected.len()
        ));
    }
    problems
}

/// Deep verify's audit of the store against the latest chain: every object that holds
/// captured data must be sealed (or replaced by a sealed compaction), be a repeat of sealed
/// records, or wait in the inbox. What is none of these and was written before the latest
/// seal (by the store's own clock: S3's `LastModified`, a file's modification time) is an
/// `orphan`; an object under `changes/` that is no segment streamseal writes is `extra`
/// (Athena's changes table would read it). Memory: a 64-bit hash per sealed segment, and the
/// sequence numbers of the orphan candidates.
async fn audit(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    latest: &Manifest,
    chain: &[(Manifest, Option<SnapshotFiles>)],
    ledger: &Ledger,
    options: &VerifyOptions,
) -> Result<(Audit, Vec<Finding>), StoreError> {
    let (concurrency, grace_ms) = (options.concurrency, options.orphan_grace_ms.max(0));
    let mut findings = vec![];
    let mut find = |kind: Kind, object: &str, problem: String| {
        findings.push(Finding::new(kind, object, problem))
    };
    let mut a = Audit::default();
    let h = |k: &str| {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut s);
        s.finish()
    };
    // The latest seal's commit time by the store's clock, less the grace: what is newer may be
    // a write still in flight.
    let cutoff = store
        .head(&layout.snapshot_key(&latest.snapshot_id))
        .await?
        .and_then(|m| m.modified_ms)
        .map_or(i64::MAX, |t| t.saturating_sub(grace_ms));
    // Sealed, duplicate, compacted, or named by a rejected entry (its finding says so).
    let mut accounted: HashSet<u64> = HashSet::new();
    let mut quarantined: HashSet<&str> = ledger
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Quarantined)
        .map(|e| e.subject.as_str())
        .collect();
    for f in chain.iter().filter_map(|(_, f)| f.as_ref()) {
        accounted.extend(f.segments.iter().map(|s| h(&s.key)));
        accounted.extend(f.duplicates.iter().map(|s| h(&s.key)));
        for c in &f.compactions {
            accounted.insert(h(&c.record.key));
        }
        for o in f
            .rejected
            .iter()
            .filter_map(|r| r.object.as_deref())
            .chain(f.repeats.iter().filter_map(|r| r.object.as_deref()))
        {
            accounted.insert(h(o));
            quarantined.insert(o);
        }
    }
    // What waits in the inbox.
    let waiting = async |accounted: &mut HashSet<u64>,
                         quarantine: &mut HashSet<String>|
           -> Result<u64, StoreError> {
        let listed = store.list(&layout.inbox_prefix(), None, None).await?;
        let keys: Vec<String> = listed.into_iter().map(|m| m.key).collect();
        let mut n = 0;
        for (key, body) in keys
            .iter()
            .zip(store::get_many(store, &keys, concurrency).await)
        {
            let body = match body {
                Ok(b) => b,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            n += 1;
            match LogEntry::parse(key, &body) {
                Ok(LogEntry::Segment(r)) => {
                    accounted.insert(h(&r.key));
                }
                Ok(LogEntry::Compaction(c)) => {
                    accounted.insert(h(&c.key));
                }
                Ok(LogEntry::Quarantine(q)) => {
                    quarantine.insert(q.key);
                }
                _ => {}
            }
        }
        Ok(n)
    };
    let mut waiting_quarantine: HashSet<String> = HashSet::new();
    a.waiting_entries = waiting(&mut accounted, &mut waiting_quarantine).await?;

    // Segment objects, a page at a time.
    let prefix = layout.changes_prefix();
    let mut after: Option<String> = None;
    let mut candidates: Vec<String> = vec![];
    loop {
        let page = store.list(&prefix, after.as_deref(), Some(1000)).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for o in &page {
            a.segment_objects += 1;
            let name = o.key.rsplit('/').next().unwrap_or("");
            if !is_segment_name(name) && !is_compacted_name(name) {
                find(
                    Kind::Extra,
                    &o.key,
                    "not a segment or compacted object streamseal writes, under the changes/ folder Athena's changes table reads".into(),
                );
                continue;
            }
            if accounted.contains(&h(&o.key)) {
                continue;
            }
            if o.modified_ms.is_some_and(|t| t >= cutoff) {
                a.recent += 1;
                continue;
            }
            candidates.push(o.key.clone());
        }
        if page.len() < 1000 {
            break;
        }
    }
    // Quarantined records.
    let mut quarantine_candidates = vec![];
    for o in store.list(&layout.quarantine_prefix(), None, None).await? {
        a.quarantine_objects += 1;
        if quarantined.contains(o.key.as_str()) || waiting_quarantine.contains(&o.key) {
            continue;
        }
        if o.modified_ms.is_some_and(|t| t >= cutoff) {
            a.recent += 1;
            continue;
        }
        quarantine_candidates.push(o.key);
    }
    if candidates.is_empty() && quarantine_candidates.is_empty() {
        return Ok((a, findings));
    }
    // A writer between its object and its entry: look at the inbox once more.
    a.waiting_entries = waiting(&mut accounted, &mut waiting_quarantine).await?;
    candidates.retain(|k| !accounted.contains(&h(k)));
    quarantine_candidates.retain(|k| !waiting_quarantine.contains(k));
    for k in &quarantine_candidates {
        find(
            Kind::Orphan,
            k,
            "a quarantined record no snapshot counts and no entry waits for (its batch's writer stopped before writing the entry?): the change it holds is in no snapshot".into(),
        );
    }
    // Orphan segments whose every record is sealed elsewhere are superseded attempts.
    let mut seqs_of: HashMap<String, Vec<usize>> = HashMap::new();
    let mut left: Vec<usize> = vec![];
    for (i, k) in candidates.iter().enumerate() {
        let body = match store.get(k).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                left.push(0);
                continue;
            }
            Err(e) => return Err(e),
        };
        let seqs = crate::segment::read_segment_columns(k, body, &["sequence_number"])
            .ok()
            .map(|batches| {
                batches
                    .iter()
                    .filter_map(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<arrow_array::StringArray>()
                            .map(|a| a.iter().flatten().map(str::to_owned).collect::<Vec<_>>())
                    })
                    .flatten()
                    .collect::<HashSet<String>>()
            });
        let Some(seqs) = seqs else {
            find(
                Kind::Extra,
                k,
                "named like a segment, but not a readable one".into(),
            );
            left.push(0);
            continue;
        };
        left.push(seqs.len());
        for s in seqs {
            seqs_of.entry(s).or_default().push(i);
        }
    }
    for f in chain.iter().filter_map(|(_, f)| f.as_ref()) {
        for s in &f.segments {
            let Ok(seqs) = s.sequence_numbers.decode() else {
                continue;
            };
            for q in seqs {
                if let Some(owners) = seqs_of.remove(&q) {
                    for i in owners {
                        left[i] -= 1;
                    }
                }
            }
        }
    }
    for (k, n) in candidates.iter().zip(&left) {
        if *n == 0 {
            a.superseded_segments += 1;
        } else {
            find(
                Kind::Orphan,
                k,
                format!(
                    "a segment no snapshot names and no entry waits for, written before the latest seal: {n} of its records are in no snapshot (its writer stopped before writing the entry?); replay the batch, or see docs/runbook.md"
                ),
            );
        }
    }
    Ok((a, findings))
}

/// `<first:40>-<last:40>-<tag>.parquet`.
fn is_segment_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".parquet") else {
        return false;
    };
    let mut parts = stem.splitn(3, '-');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| p.len() == 40 && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next())
        && digits(parts.next())
        && parts
            .next()
            .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `c-<snapshot>-<hash16>.parquet`.
fn is_compacted_name(name: &str) -> bool {
    name.strip_prefix("c-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(id, hash)| {
            manifest::parse_snapshot_id(id).is_some()
                && !hash.is_empty()
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

fn check_manifest(
    layout: &TableLayout,
    key: &str,
    id: &str,
    m: &Manifest,
    expected_sha: Option<&str>,
    find: &mut impl FnMut(Kind, &str, String),
) {
    if !m.digest_ok() {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest content does not match its manifest_sha256 (edited after sealing; content hashes to {})",
                m.compute_sha256()
            ),
        );
    }
    if let Some(expected) = expected_sha
        && m.manifest_sha256 != expected
    {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest_sha256 is {}, its child recorded {expected} (replaced after sealing)",
                m.manifest_sha256
            ),
        );
    }
    if m.snapshot_id != id || manifest::parse_snapshot_id(id) != Some(m.generation) {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest says snapshot {} generation {}, its key says {id}",
                m.snapshot_id, m.generation
            ),
        );
    }
    if m.table != layout.table() {
        find(
            Kind::Altered,
            key,
            format!("manifest is for table {:?}", m.table),
        );
    }
}

fn check_files(m: &Manifest, f: &SnapshotFiles, find: &mut impl FnMut(Kind, &str, String)) {
    let key = &m.files.key;
    let rows: u64 = f.segments.iter().map(|s| s.counted_rows).sum();
    let bytes: u64 = f.segments.iter().map(|s| s.bytes).sum();
    if f.snapshot_id != m.snapshot_id || f.table != m.table {
        find(
            Kind::Altered,
            key,
            "file list belongs to another snapshot or table".into(),
        );
    }
    if f.segments.len() as u64 != m.files.segments
        || rows != m.files.rows
        || bytes != m.files.segment_bytes
        || f.duplicates.len() as u64 != m.files.duplicate_segments
        || f.rejected.len() as u64 != m.rejected_log_entries
    {
        find(
            Kind::Altered,
            key,
            "file list sums (segments, rows, bytes, duplicates, rejected) differ from the manifest's"
                .into(),
        );
    }
    for s in &f.segments {
        match (s.skipped_sequences.decode(), s.sequence_numbers.decode()) {
            (Ok(skipped), Ok(all))
                if s.counted_rows + skipped.len() as u64 <= s.rows
                    && s.counted_rows > 0
                    && all.len() as u64 == s.rows => {}
            (Ok(_), Ok(_)) => find(
                Kind::Altered,
                &s.key,
                "counted, skipped and listed rows do not add up to the rows".into(),
            ),
            (Err(e), _) | (_, Err(e)) => find(Kind::Altered, &s.key, format!("sequence list: {e}")),
        }
    }
}

/// Downloads-and-recomputes checks of one segment; returns rows read.
fn deep_check(
    s: &SealedSegment,
    bytes: bytes::Bytes,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = &s.key;
    if bytes.len() as u64 != s.bytes {
        find(
            Kind::Altered,
            key,
            format!(
                "object is {} bytes, sealed as {} (truncated or replaced)",
                bytes.len(),
                s.bytes
            ),
        );
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != s.sha256 {
        find(
            Kind::Altered,
            key,
            format!("SHA-256 is {sha}, sealed as {} (content altered)", s.sha256),
        );
        // Parsing an altered file would only produce noise after this finding.
        return 0;
    }
    let contents = match SegmentContents::read(key, bytes) {
        Ok(c) => c,
        Err(e) => {
            find(Kind::Altered, key, format!("cannot be read back: {e}"));
            return 0;
        }
    };
    check_contents(s, &contents, key, find)
}

/// Deep checks of a compacted object: its size and hash as recorded, then each part's rows
/// (a slice of the object) against what the part's snapshot sealed. Returns rows read.
fn deep_check_compacted(
    r: &crate::compact::Replacement,
    parts: &[&SealedSegment],
    replaced: &HashMap<String, crate::compact::Replacement>,
    bytes: bytes::Bytes,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = &r.key;
    let sha = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != r.bytes || sha != r.sha256 {
        find(
            Kind::Altered,
            key,
            format!(
                "compacted object is {} bytes with SHA-256 {sha}, sealed as {} bytes with {}",
                bytes.len(),
                r.bytes,
                r.sha256
            ),
        );
        return 0;
    }
    let contents = match SegmentContents::read(key, bytes) {
        Ok(c) => c,
        Err(e) => {
            find(Kind::Altered, key, format!("cannot be read back: {e}"));
            return 0;
        }
    };
    for s in parts {
        let Some(at) = replaced.get(&s.key) else {
            continue;
        };
        let (from, to) = (at.first_row as usize, (at.first_row + at.rows) as usize);
        let Some(rows) = contents.rows.get(from..to) else {
            find(
                Kind::Altered,
                key,
                format!(
                    "has {} rows; part {} should be rows {from}..{to}",
                    contents.rows.len(),
                    s.key
                ),
            );
            continue;
        };
        let slice = SegmentContents {
            view_type: contents.view_type,
            rows: rows.to_vec(),
        };
        let label = format!("{} (rows {from}..{to} of {key})", s.key);
        check_contents(s, &slice, &label, find);
    }
    contents.rows.len() as u64
}

/// Checks rows read back against what the seal recorded for segment `s`; findings name
/// `label`. Returns rows read.
fn check_contents(
    s: &SealedSegment,
    contents: &SegmentContents,
    label: &str,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = label;
    let rows = contents.rows.len() as u64;
    if rows != s.rows {
        find(
            Kind::Altered,
            key,
            format!("has {rows} rows, sealed as {}", s.rows),
        );
    }
    // The name's tag is a hash of the stream, view type and every row's identity.
    if let Some(view) = contents.view_type {
        let mut tag = SegmentTag::new(s.event_source_arn.as_deref(), view);
        for r in &contents.rows {
            tag.push(&r.sequence, &r.event_id);
        }
        let tag = tag.finish();
        if !s.key.ends_with(&format!("-{tag}.parquet")) {
            find(
                Kind::Altered,
                key,
                format!(
                    "rows hash to tag {tag}, which is not the object's name (a foreign object)"
                ),
            );
        }
    } else {
        find(
            Kind::Altered,
            key,
            "file metadata has no stream view type".into(),
        );
    }
    let listed = s.sequence_numbers.decode().unwrap_or_default();
    if listed.len() == contents.rows.len()
        && listed
            .iter()
            .zip(&contents.rows)
            .any(|(a, r)| *a != r.sequence)
    {
        find(
            Kind::Altered,
            key,
            "its rows' sequence numbers are not the ones sealed".into(),
        );
    }
    let skipped: HashSet<String> = s
        .skipped_sequences
        .decode()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut counted_seen: HashSet<&str> = HashSet::new();
    let mut digest = Some(StateDigest::ZERO);
    let mut count = 0;
    let mut counted = 0;
    for r in &contents.rows {
        if skipped.contains(&r.sequence) || !counted_seen.insert(r.sequence.as_str()) {
            continue;
        }
        counted += 1;
        count += r.count;
        digest = StateDigest::sum_known(digest, r.digest);
    }
    if counted != s.counted_rows {
        find(
            Kind::Altered,
            key,
            format!(
                "{counted} rows count after skips, sealed as {}",
                s.counted_rows
            ),
        );
    }
    if count != s.item_count_delta {
        find(
            Kind::Altered,
            key,
            format!(
                "rows give item-count delta {count}, sealed as {}",
                s.item_count_delta
            ),
        );
    }
    if s.digest_delta.is_some() && digest != s.digest_delta {
        find(
            Kind::Altered,
            key,
            "images hash to a different digest delta than sealed".into(),
        );
    }
    rows
}

//! Findings: one vocabulary for what `verify`, `seal`, the Lambda's trigger result and the
//! metrics report, and the *ledger* that carries the findings a person must decide on from
//! each snapshot to every later one.
//!
//! | kind | means | severity |
//! |---|---|---|
//! | `missing` | a sealed object (segment, base file, file list, quarantine object, ledger) is gone | corrupt |
//! | `altered` | an object or manifest differs from what was sealed | corrupt |
//! | `extra` | something under the table's prefix that streamseal did not write where only it writes | corrupt |
//! | `orphan` | captured data no snapshot accounts for and no entry waits for (deep verify) | incomplete |
//! | `gap` | changes known to be missing (the on-failure destination's records) | incomplete |
//! | `rejected` | a log entry the seal could not use | incomplete |
//! | `quarantined` | a record kept verbatim because it could not be converted | incomplete |
//! | `acknowledged` | a gap, rejection or quarantine a person decided on (with a reason) | info |
//!
//! A verify's [`Status`] is the worst severity found: `ok` (exit 0), `incomplete` (exit 3:
//! the backup is intact but known to lack something), `corrupt` (exit 4: what was sealed is no
//! longer what is stored). Exit 1 means verify could not run.
//!
//! **The ledger.** Gaps, rejected entries and quarantined records do not go away when the
//! snapshot that sealed them is superseded: every snapshot's manifest references a ledger
//! (`<table>/findings/<id>-<sha16>.json`, written once, named by content) holding every such
//! finding of its chain, open or acknowledged. A child inherits its parent's ledger by
//! reference and writes a new one only when it adds a finding or records a decision, so a seal
//! stays O(new changes). A finding leaves the open list only through an acknowledgment entry
//! (`streamseal acknowledge`), which is sealed like any other entry and recorded, with its
//! reason, in the ledger for good.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Version of the ledger format.
pub(crate) const LEDGER_FORMAT: u32 = 1;

/// What kind of problem (or decision) a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A sealed object is gone.
    Missing,
    /// An object or manifest differs from what was sealed.
    Altered,
    /// Something streamseal did not write, where only it writes.
    Extra,
    /// Captured data no snapshot accounts for.
    Orphan,
    /// Changes known to be missing from the capture.
    Gap,
    /// A log entry the seal could not use.
    Rejected,
    /// A record kept verbatim, not converted.
    Quarantined,
    /// A gap, rejection or quarantine a person decided on.
    Acknowledged,
}

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Missing,
        Kind::Altered,
        Kind::Extra,
        Kind::Orphan,
        Kind::Gap,
        Kind::Rejected,
        Kind::Quarantined,
        Kind::Acknowledged,
    ];

    /// The kind's name, as in JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Altered => "altered",
            Kind::Extra => "extra",
            Kind::Orphan => "orphan",
            Kind::Gap => "gap",
            Kind::Rejected => "rejected",
            Kind::Quarantined => "quarantined",
            Kind::Acknowledged => "acknowledged",
        }
    }

    /// How bad it is.
    pub(crate) fn severity(self) -> Severity {
        match self {
            Kind::Missing | Kind::Altered | Kind::Extra => Severity::Corrupt,
            Kind::Orphan | Kind::Gap | Kind::Rejected | Kind::Quarantined => Severity::Incomplete,
            Kind::Acknowledged => Severity::Info,
        }
    }

    /// The metric name counting this kind (`FindingsMissing`, ...).
    pub(crate) fn metric(self) -> String {
        let s = self.as_str();
        format!("Findings{}{}", s[..1].to_ascii_uppercase(), &s[1..])
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a finding, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// The backup is intact but known to lack something.
    Incomplete,
    /// What was sealed is not what is stored.
    Corrupt,
}

/// The verdict of a verify (or of the verify a seal runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Complete and intact.
    Ok,
    /// Intact, with open gaps, rejected entries, quarantined records or orphans.
    Incomplete,
    /// Something sealed is missing or altered.
    Corrupt,
}

impl Status {
    /// The worst status among `findings`.
    pub(crate) fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Status {
        findings
            .into_iter()
            .map(|f| match f.kind.severity() {
                Severity::Info => Status::Ok,
                Severity::Incomplete => Status::Incomplete,
                Severity::Corrupt => Status::Corrupt,
            })
            .max()
            .unwrap_or(Status::Ok)
    }

    /// The CLI's exit status: 0 ok, 3 incomplete, 4 corrupt (1 is "could not run").
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Incomplete => 3,
            Status::Corrupt => 4,
        }
    }

    /// `ok`, `incomplete`, `corrupt`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Incomplete => "incomplete",
            Status::Corrupt => "corrupt",
        }
    }
}

/// One finding: its kind, the object or entry it names, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Kind.
    pub kind: Kind,
    /// The object, log entry or key concerned.
    pub object: String,
    /// What is wrong, in words.
    pub problem: String,
    /// The ledger id, for findings a person can acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Finding {
    /// A finding without a ledger id.
    pub(crate) fn new(
        kind: Kind,
        object: impl Into<String>,
        problem: impl Into<String>,
    ) -> Finding {
        Finding {
            kind,
            object: object.into(),
            problem: problem.into(),
            id: None,
        }
    }
}

/// Counts of findings by kind, every kind present (zeros included), for metrics and reports.
pub(crate) fn counts<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Vec<(Kind, u64)> {
    let mut n = [0u64; Kind::ALL.len()];
    for f in findings {
        if let Some(i) = Kind::ALL.iter().position(|k| *k == f.kind) {
            n[i] += 1;
        }
    }
    Kind::ALL.iter().copied().zip(n).collect()
}

/// The ledger of a snapshot's chain: every gap, rejected entry and quarantined record ever
/// sealed, open or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// [`LEDGER_FORMAT`].
    pub format: u32,
    /// Table.
    pub table: String,
    /// The snapshot that wrote this version of the ledger.
    pub snapshot_id: String,
    /// Every finding, in the order they were sealed.
    pub entries: Vec<LedgerEntry>,
}

/// One finding in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// Stable id (`gap-…`, `rejected-…`, `quarantined-…`): what `acknowledge --finding` takes.
    pub id: String,
    /// `gap`, `rejected` or `quarantined`.
    pub kind: Kind,
    /// What it names: the quarantine object, the rejected entry, the gap's entry.
    pub subject: String,
    /// What is wrong, in words.
    pub detail: String,
    /// The snapshot that sealed it.
    pub sealed_in: String,
    /// The decision that closed it, if one was made.
    pub acknowledged: Option<Acknowledgment>,
}

/// A person's recorded decision about a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledgment {
    /// The snapshot that sealed the decision.
    pub snapshot_id: String,
    /// Why the finding is acceptable (or what was done about it).
    pub reason: String,
    /// Who decided.
    pub by: String,
    /// When the decision was written (RFC 3339, the writer's clock: informational).
    pub at: String,
    /// The log entry that carried it.
    pub entry: String,
}

/// Where a manifest's ledger is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerRef {
    /// Object key (`<table>/findings/<id>-<sha16>.json`).
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Findings still open.
    pub open: u64,
    /// Findings acknowledged.
    pub acknowledged: u64,
}

/// The stable id of a finding of `kind` about `subject`.
pub fn finding_id(kind: Kind, subject: &str) -> String {
    let h = hex::encode(Sha256::digest(subject.as_bytes()));
    format!("{}-{}", kind.as_str(), &h[..16])
}

impl Ledger {
    /// An empty ledger.
    pub(crate) fn new(table: &str) -> Ledger {
        Ledger {
            format: LEDGER_FORMAT,
            table: table.to_owned(),
            snapshot_id: String::new(),
            entries: vec![],
        }
    }

    /// The entry with `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&LedgerEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Whether a finding of `kind` about `subject` is recorded (open or acknowledged).
    pub(crate) fn knows(&self, kind: Kind, subject: &str) -> bool {
        let id = finding_id(kind, subject);
        self.entries.iter().any(|e| e.id == id)
    }

    /// Open findings.
    pub(crate) fn open(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.iter().filter(|e| e.acknowledged.is_none())
    }

    /// The findings a verify reports for this ledger: open ones under their kind, decided
    /// ones as `acknowledged`.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        self.entries
            .iter()
            .map(|e| match &e.acknowledged {
                None => Finding {
                    kind: e.kind,
                    object: e.subject.clone(),
                    problem: format!(
                        "{} (sealed in {}; open until acknowledged)",
                        e.detail, e.sealed_in
                    ),
                    id: Some(e.id.clone()),
                },
                Some(a) => Finding {
                    kind: Kind::Acknowledged,
                    object: e.subject.clone(),
                    problem: format!(
                        "{} {}: acknowledged in snapshot {} by {}: {}",
                        e.kind, e.detail, a.snapshot_id, a.by, a.reason
                    ),
                    id: Some(e.id.clone()),
                },
            })
            .collect()
    }

    /// The reference a manifest records for this ledger stored as `bytes` under `key`.
    pub(crate) fn reference(&self, key: String, bytes: &[u8]) -> LedgerRef {
        let open = self.open().count() as u64;
        LedgerRef {
            key,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            open,
            acknowledged: self.entries.len() as u64 - open,
        }
    }

    /// The problems of this ledger as the continuation of `parent`'s: every earlier finding
    /// must still be there, unchanged but for an acknowledgment sealed by `snapshot_id`.
    pub(crate) fn check_continues(&self, parent: &Ledger, snapshot_id: &str) -> Vec<String> {
        let mut problems = vec![];
        for p in &parent.entries {
            match self.get(&p.id) {
                None => problems.push(format!("finding {} of the parent's ledger is gone", p.id)),
                Some(e)
                    if e.kind != p.kind || e.subject != p.subject || e.sealed_in != p.sealed_in =>
                {
                    problems.push(format!("finding {} differs from the parent's", p.id))
                }
                Some(e) => match (&p.acknowledged, &e.acknowledged) {
                    (Some(a), Some(b)) if a != b => problems.push(format!(
                        "finding {}: its acknowledgment differs from the parent's",
                        p.id
                    )),
                    (Some(_), None) => problems.push(format!(
                        "finding {} was acknowledged in the parent and is open here",
                        p.id
                    )),
                    (None, Some(b)) if b.snapshot_id != snapshot_id => problems.push(format!(
                        "finding {} is acknowledged by snapshot {}, which did not seal this ledger",
                        p.id, b.snapshot_id
                    )),
                    _ => {}
                },
            }
        }
        for e in &self.entries {
            if parent.get(&e.id).is_none() && e.sealed_in != snapshot_id {
                problems.push(format!(
                    "finding {} says it was sealed in {}, but the parent's ledger lacks it",
                    e.id, e.sealed_in
                ));
            }
        }
        problems
    }
}

/// Why an acknowledgment could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcknowledgeError {
    /// The latest snapshot or its ledger could not be read.
    #[error(transparent)]
    Snapshot(#[from] crate::model::manifest::ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A decision needs a reason.
    #[error("an acknowledgment needs a reason (--reason TEXT): it is kept in the ledger for good")]
    NoReason,
    /// The id names no finding of the latest snapshot's ledger.
    #[error(
        "table {table} has no finding {id} in its latest snapshot's ledger (open findings: {open}); `streamseal verify` lists them"
    )]
    Unknown {
        /// Table.
        table: String,
        /// The id given.
        id: String,
        /// The open ones, for the message.
        open: String,
    },
    /// Already decided.
    #[error("finding {id} was already acknowledged in snapshot {snapshot}: {reason}")]
    Already {
        /// The id.
        id: String,
        /// Where.
        snapshot: String,
        /// Why, as recorded.
        reason: String,
    },
}

/// Writes acknowledgments of the open findings `ids` of `table`'s latest snapshot, for the
/// next seal to record in the ledger; returns the entries written. Nothing is written unless
/// every id is open.
pub async fn acknowledge(
    store: &dyn crate::store::ObjectStore,
    table: &str,
    ids: &[String],
    reason: &str,
    by: &str,
    clock: &dyn crate::model::clock::Clock,
) -> Result<Vec<String>, AcknowledgeError> {
    use crate::model::manifest;
    if reason.trim().is_empty() {
        return Err(AcknowledgeError::NoReason);
    }
    let layout = crate::model::layout::TableLayout::new(table);
    let id = manifest::resolve_snapshot(store, &layout, "latest").await?;
    let m = manifest::read_manifest(store, &layout, &id).await?;
    let ledger = manifest::read_ledger(store, &m).await?;
    for f in ids {
        match ledger.get(f) {
            None => {
                let open: Vec<&str> = ledger.open().map(|e| e.id.as_str()).collect();
                return Err(AcknowledgeError::Unknown {
                    table: table.to_owned(),
                    id: f.clone(),
                    open: if open.is_empty() {
                        "none".into()
                    } else {
                        open.join(", ")
                    },
                });
            }
            Some(LedgerEntry {
                acknowledged: Some(a),
                ..
            }) => {
                return Err(AcknowledgeError::Already {
                    id: f.clone(),
                    snapshot: a.snapshot_id.clone(),
                    reason: a.reason.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let mut written = vec![];
    for f in ids {
        let record = crate::model::log::AcknowledgmentRecord {
            format: crate::model::log::LOG_FORMAT,
            table: table.to_owned(),
            finding: f.clone(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            written_at: clock.now_rfc3339(),
        };
        let name = hex::encode(Sha256::digest(format!("{f}\n{reason}\n{by}").as_bytes()));
        let key = layout.acknowledgment_entry_key(&name[..16]);
        let body = serde_json::to_vec(&crate::model::log::LogEntry::Acknowledgment(record))
            .unwrap_or_default();
        store
            .put(
                &key,
                bytes::Bytes::from(body),
                crate::store::PutMode::IfAbsent,
            )
            .await?;
        written.push(key);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, subject: &str, sealed_in: &str) -> LedgerEntry {
        LedgerEntry {
            id: finding_id(kind, subject),
            kind,
            subject: subject.into(),
            detail: "d".into(),
            sealed_in: sealed_in.into(),
            acknowledged: None,
        }
    }

    #[test]
    fn status_is_the_worst_severity() {
        let f = |k| Finding::new(k, "o", "p");
        assert_eq!(Status::of(&[]), Status::Ok);
        assert_eq!(Status::of(&[f(Kind::Acknowledged)]), Status::Ok);
        assert_eq!(
            Status::of(&[f(Kind::Gap), f(Kind::Acknowledged)]),
            Status::Incomplete
        );
        assert_eq!(
            Status::of(&[f(Kind::Gap), f(Kind::Altered)]),
            Status::Corrupt
        );
        assert_eq!(Status::Incomplete.exit_code(), 3);
        assert_eq!(Status::Corrupt.exit_code(), 4);
        assert_eq!(Kind::Quarantined.metric(), "FindingsQuarantined");
        let json = serde_json::to_string(&f(Kind::Orphan)).unwrap();
        assert!(json.contains(r#""kind":"orphan""#), "{json}");
    }

    #[test]
    fn a_ledger_may_only_grow_and_record_decisions() {
        let mut parent = Ledger::new("t");
        parent.entries.push(entry(Kind::Gap, "a", "0000000001"));
        let mut child = parent.clone();
        child
            .entries
            .push(entry(Kind::Quarantined, "b", "0000000002"));
        child.entries[0].acknowledged = Some(Acknowledgment {
            snapshot_id: "0000000002".into(),
            reason: "r".into(),
            by: "me".into(),
            at: "now".into(),
            entry: "e".into(),
        });
        assert!(child.check_continues(&parent, "0000000002").is_empty());
        assert_eq!(child.findings()[0].kind, Kind::Acknowledged);
        assert_eq!(child.findings()[1].kind, Kind::Quarantined);
        // A dropped finding, or one claiming an older seal, is named.
        let mut dropped = child.clone();
        dropped.entries.remove(0);
        assert_eq!(dropped.check_continues(&parent, "0000000002").len(), 1);
        assert_eq!(child.check_continues(&parent, "0000000003").len(), 2);
        assert!(child.knows(Kind::Quarantined, "b") && !child.knows(Kind::Gap, "b"));
    }
}

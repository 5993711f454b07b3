//! The ledger's checks: against the snapshot that references it, and (deep) rebuilt from the
//! chain's file lists.

use super::*;

/// The ledger's own checks against the snapshot that references it: every finding this
/// snapshot sealed is in it, sealed in this snapshot, and every decision it applied is there.
pub(super) fn check_ledger(
    m: &Manifest,
    r: &crate::model::findings::LedgerRef,
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
        let id = crate::model::findings::finding_id(kind, subject);
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
pub(super) struct SealedFinding {
    pub(super) id: String,
    pub(super) kind: Kind,
    pub(super) subject: String,
    pub(super) sealed_in: String,
    pub(super) acknowledged_in: Option<String>,
}

/// The ledger the chain's file lists imply (oldest first), or `None` when a file list is
/// missing (already reported).
pub(super) fn rebuilt_ledger(
    chain: &[(Manifest, Option<SnapshotFiles>)],
) -> Option<Vec<SealedFinding>> {
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
                id: crate::model::findings::finding_id(kind, &subject),
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

pub(super) fn compare_ledgers(expected: &[SealedFinding], ledger: &Ledger) -> Vec<String> {
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

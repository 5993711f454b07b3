//! Deep verify's audit of the store: every segment, quarantined record and inbox entry listed
//! and accounted for against the latest chain.

use super::*;

/// Deep verify's audit of the store against the latest chain: every object that holds
/// captured data must be sealed (or replaced by a sealed compaction), be a repeat of sealed
/// records, or wait in the inbox. What is none of these and was written before the latest
/// seal (by the store's own clock: S3's `LastModified`, a file's modification time) is an
/// `orphan`; an object under `changes/` that is no segment streamseal writes is `extra`
/// (Athena's changes table would read it). Memory: a 64-bit hash per sealed segment, and the
/// sequence numbers of the orphan candidates.
pub(super) async fn audit(
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
pub(super) fn is_segment_name(name: &str) -> bool {
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
pub(super) fn is_compacted_name(name: &str) -> bool {
    name.strip_prefix("c-")
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(id, hash)| {
            manifest::parse_snapshot_id(id).is_some()
                && !hash.is_empty()
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

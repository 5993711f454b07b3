//! The look-back for redelivered records: the sequence numbers earlier snapshots sealed that
//! new records could repeat, found by creation time through the ancestors' file lists.

use super::*;

/// The sequence numbers earlier snapshots sealed (in segments, or as quarantined records)
/// that new records created at `times` could repeat, and how many ancestors' file lists were
/// read to find them.
///
/// A redelivered record carries its original's creation time, and the original was sealed
/// with a newest change at least that recent. Each manifest's `newest_change_ms` covers its
/// whole chain and never decreases from parent to child, so walking back from the parent while
/// it is at least the oldest new creation time reads every ancestor that can hold a repeat, and
/// no other. A record without a creation time (not something DynamoDB sends) could repeat
/// anything: the walk then covers the whole chain.
pub(super) async fn lookback(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    parent: &Manifest,
    parent_files: &SnapshotFiles,
    times: &[Option<i64>],
) -> Result<(HashSet<String>, usize), SealError> {
    let newest = parent.watermark.newest_change_ms;
    let mut from: Option<Option<i64>> = None;
    for t in times {
        let possible = match (t, newest) {
            (Some(t), Some(n)) => *t <= n,
            (Some(_), None) => false,
            (None, _) => parent.totals.segments > 0 || parent.quarantined_records > 0,
        };
        if possible {
            from = Some(match from {
                None => *t,
                Some(f) => match (f, t) {
                    (Some(a), Some(b)) => Some(a.min(*b)),
                    _ => None,
                },
            });
        }
    }
    let mut sealed = HashSet::new();
    let Some(from) = from else {
        return Ok((sealed, 0));
    };
    if from.is_none() {
        tracing::warn!(
            table = layout.table(),
            "a new record has no creation time; comparing it with the whole chain"
        );
    }
    let mut read = 0;
    let mut current: Option<(Manifest, SnapshotFiles)> =
        Some((parent.clone(), parent_files.clone()));
    while let Some((m, files)) = current.take() {
        read += 1;
        for s in &files.segments {
            if from.is_some_and(|t| s.max_time_ms.is_some_and(|max| max < t)) {
                continue;
            }
            let seqs = s.sequence_numbers.decode().map_err(|e| {
                SealError::Parent(ManifestError::Integrity {
                    key: m.files.key.clone(),
                    what: format!("segment {}: sequence list: {e}", s.key),
                })
            })?;
            sealed.extend(seqs);
        }
        sealed.extend(
            files
                .quarantined
                .iter()
                .filter_map(|q| q.effect.sequence_number.clone()),
        );
        let Some(p) = &m.parent else { break };
        let pm = manifest::read_manifest(store, layout, &p.snapshot_id).await?;
        if pm.manifest_sha256 != p.manifest_sha256 || !pm.digest_ok() {
            return Err(ManifestError::Integrity {
                key: layout.snapshot_key(&p.snapshot_id),
                what: "manifest does not match its digest or its child's link".into(),
            }
            .into());
        }
        let older = match (from, pm.watermark.newest_change_ms) {
            (None, _) => true,
            (Some(t), Some(n)) => n >= t,
            (Some(_), None) => false,
        };
        if !older {
            break;
        }
        let pf = manifest::read_files(store, &pm).await?;
        current = Some((pm, pf));
    }
    Ok((sealed, read))
}

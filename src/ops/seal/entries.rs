//! What a seal checks and reads of the entries it finds: segment and quarantine entries
//! against the rules their writers follow, a partly redelivered segment's rows, the key schema
//! from the capture, and the state over a bootstrap base.

use super::*;

/// The inbox against a snapshot's file list: the entries it did not seal (`waiting`, what the
/// next seal takes) and those it sealed but did not get to remove (`left_behind`, which the
/// next seal removes first). Seal and verify read the inbox through this one function.
pub(crate) struct InboxListing {
    pub(crate) waiting: Vec<store::ObjectMeta>,
    pub(crate) left_behind: Vec<store::ObjectMeta>,
}

/// Lists the inbox of `layout`'s table and splits it by `sealed_by` (see [`InboxListing`]).
pub(crate) async fn list_inbox(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    sealed_by: Option<&SnapshotFiles>,
) -> Result<InboxListing, StoreError> {
    let listed = store.list(&layout.inbox_prefix(), None, None).await?;
    let sealed: HashSet<&str> = sealed_by.iter().flat_map(|f| f.entry_keys()).collect();
    let (left_behind, waiting) = listed
        .into_iter()
        .partition(|m| sealed.contains(m.key.as_str()));
    Ok(InboxListing {
        waiting,
        left_behind,
    })
}

/// Checks a quarantine entry: its name is its record's hash and its object is where the
/// capture puts quarantined records.
pub(super) fn check_quarantine_entry(
    layout: &TableLayout,
    log_key: &str,
    q: &crate::model::log::QuarantineRecord,
) -> Result<(), String> {
    let sha = q
        .key
        .strip_prefix(&layout.quarantine_prefix())
        .and_then(|n| n.strip_suffix(".json"))
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "object {} is not a quarantined record of table {}",
                q.key,
                layout.table()
            )
        })?;
    if log_key != layout.quarantine_entry_key(sha) {
        return Err(format!(
            "entry name is not the one its record's hash gives ({})",
            layout.quarantine_entry_key(sha)
        ));
    }
    Ok(())
}

/// The newest table definition the capture kept with the shard maps. Best effort: `None`
/// (logged) never fails the seal.
pub(super) async fn definition_from_capture(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Option<crate::model::definition::TableDefinition> {
    match crate::model::shards::load_shard_maps(store, layout.table()).await {
        Ok(maps) => crate::model::shards::newest_definition(&maps),
        Err(e) => {
            tracing::warn!(table = layout.table(), error = %e, "cannot read the shard maps; no table definition recorded");
            None
        }
    }
}

/// Without a schema file, the key schema from what the capture kept: the roles from the shard
/// map (DescribeStream's `KeySchema`) and the types from the first new segment's first key.
/// Best effort: `None` leaves the manifest without one (a restore then needs an existing
/// table), never fails the seal.
pub(super) async fn key_schema_from_capture(
    store: &dyn ObjectStore,
    layout: &TableLayout,
    files: &SnapshotFiles,
) -> Option<crate::model::schema::KeySchema> {
    let maps = match crate::model::shards::load_shard_maps(store, layout.table()).await {
        Ok(maps) => maps,
        Err(e) => {
            tracing::warn!(table = layout.table(), error = %e, "cannot read the shard maps; no key schema recorded");
            return None;
        }
    };
    if maps.iter().all(|m| m.key.is_none()) {
        return None;
    }
    let segment = files.segments.first()?;
    let bytes = store.get(&segment.key).await.ok()?;
    let batches = crate::segment::read_segment_columns(&segment.key, bytes, &["keys"]).ok()?;
    let keys = batches
        .first()?
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()?;
    if arrow_array::Array::is_empty(keys) {
        return None;
    }
    let found = crate::model::shards::key_schema_of(&maps, keys.value(0));
    if found.is_none() {
        tracing::warn!(
            table = layout.table(),
            "the shard map's key roles do not match the captured keys; no key schema recorded"
        );
    }
    found
}

/// Digest and item count of base + every change of the chain ending in `m` (whose own
/// segments are in `files`), by materializing it.
pub(super) async fn state_with_base(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    m: &Manifest,
    parent: Option<&Manifest>,
    files: &SnapshotFiles,
) -> Result<(StateDigest, i64), SealError> {
    let mut segments = vec![];
    let mut quarantined = vec![];
    let mut cur = parent.cloned();
    while let Some(p) = cur.take() {
        let f = manifest::read_files(store.as_ref(), &p).await?;
        segments.splice(0..0, f.segments);
        quarantined.splice(0..0, f.quarantined);
        if let Some(pp) = &p.parent {
            cur = Some(manifest::read_manifest(store.as_ref(), layout, &pp.snapshot_id).await?);
        }
    }
    segments.extend(files.segments.iter().cloned());
    quarantined.extend(files.quarantined.iter().cloned());
    let plan = crate::ops::restore::Plan {
        quarantined,
        unknown_effects: m.unknown_effects,
        table: layout.table().to_owned(),
        manifest: m.clone(),
        base: m.base.clone(),
        checkpoint: None,
        segments,
        as_of_ms: None,
        expected: None,
        replaced: crate::ops::compact::load_replacements(store.as_ref(), layout).await?,
    };
    struct Discard;
    #[async_trait::async_trait]
    impl crate::ops::restore::Sink for Discard {
        async fn partition(
            &self,
            _: usize,
            _: usize,
            _: Vec<crate::ops::restore::Item>,
        ) -> Result<(), crate::ops::restore::SinkError> {
            Ok(())
        }
    }
    let r = crate::ops::restore::materialize(
        store,
        &plan,
        &Default::default(),
        &Discard,
        &Default::default(),
    )
    .await
    .map_err(|e| SealError::Base(e.to_string()))?;
    // Keys whose latest change is quarantined are part of the state, with their recorded
    // image hashes, exactly as later seals' deltas will treat them.
    let mut digest = r.digest;
    match r.quarantined_digest {
        Some(q) => digest.add(&q),
        None => {
            return Err(SealError::Base(
                "a quarantined record that is a key's latest change has no recorded image hash"
                    .into(),
            ));
        }
    }
    Ok((digest, (r.items + r.quarantined.len() as u64) as i64))
}

/// Checks a segment log entry against the rules its writer follows, and returns its rows'
/// sequence numbers. A foreign or hand-edited entry fails here and is rejected, not sealed.
pub(crate) fn check_segment_entry(
    layout: &TableLayout,
    log_key: &str,
    r: &SegmentRecord,
) -> Result<Vec<String>, String> {
    if r.format != SEGMENT_FORMAT {
        return Err(format!("unknown segment format {}", r.format));
    }
    let name = r
        .key
        .strip_prefix(&layout.changes_prefix())
        .filter(|rest| !rest.contains(".."))
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(_, name)| name.strip_suffix(".parquet"))
        .ok_or_else(|| {
            format!(
                "object {} is not a segment of table {}",
                r.key,
                layout.table()
            )
        })?;
    let mut parts = name.splitn(3, '-');
    let (first, last, tag) = (parts.next(), parts.next(), parts.next());
    let (Some(first), Some(last), Some(tag)) = (first, last, tag) else {
        return Err(format!("object name {name:?} is not <first>-<last>-<tag>"));
    };
    let seq = |s: &str| SequenceNumber::parse(s);
    let (f, l) = (seq(&r.first_sequence)?, seq(&r.last_sequence)?);
    if first != f.padded() || last != l.padded() {
        return Err(format!(
            "object name {name:?} does not match the entry's sequence range {}..{}",
            r.first_sequence, r.last_sequence
        ));
    }
    if log_key != layout.segment_entry_key(&f, &l, tag) {
        return Err(format!(
            "entry name is not the one its segment gives ({})",
            layout.segment_entry_key(&f, &l, tag)
        ));
    }
    let seqs = r.sequence_numbers.decode().map_err(|e| e.to_string())?;
    if seqs.len() as u64 != r.rows || seqs.is_empty() {
        return Err(format!(
            "entry lists {} sequence numbers for {} rows",
            seqs.len(),
            r.rows
        ));
    }
    let mut min: Option<SequenceNumber> = None;
    let mut max: Option<SequenceNumber> = None;
    for s in &seqs {
        let n = seq(s)?;
        if min.as_ref().is_none_or(|m| n < *m) {
            min = Some(n.clone());
        }
        if max.as_ref().is_none_or(|m| n > *m) {
            max = Some(n);
        }
    }
    if min.as_ref() != Some(&f) || max.as_ref() != Some(&l) {
        return Err("sequence list does not span the entry's first..last".into());
    }
    if let Some(arn) = &r.event_source_arn
        && crate::model::change::table_from_stream_arn(arn).ok() != Some(layout.table())
    {
        return Err(format!(
            "records come from stream {arn}, not table {}'s",
            layout.table()
        ));
    }
    if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 is not 64 hex digits".into());
    }
    Ok(seqs)
}

/// Digest and count deltas of the counted rows of a partly duplicated segment, from its rows.
/// `Ok(Err(problem))` when the segment is not what its entry says (missing, other bytes, other
/// rows); a store failure that may pass is `Err`.
pub(super) async fn partial_effect(
    store: &dyn ObjectStore,
    c: &Candidate,
    counted: &[bool],
) -> Result<Result<(Option<StateDigest>, i64), String>, SealError> {
    let bytes = match store.get(&c.record.key).await {
        Ok(b) => b,
        Err(e) if e.says_nothing_about_the_object() => {
            return Err(SealError::Overlap {
                key: c.record.key.clone(),
                log_key: c.log_key.clone(),
                skipped: counted.iter().filter(|k| !**k).count(),
                message: e.to_string(),
            });
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != c.record.sha256 {
        return Ok(Err(format!(
            "its SHA-256 is {sha}, the log entry says {}",
            c.record.sha256
        )));
    }
    let contents = match SegmentContents::read(&c.record.key, bytes) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if contents.rows.len() != counted.len() {
        return Ok(Err(format!(
            "it has {} rows, its log entry lists {}",
            contents.rows.len(),
            counted.len()
        )));
    }
    let mut digest = Some(StateDigest::ZERO);
    let mut count = 0;
    for ((row, keep), seq) in contents.rows.iter().zip(counted).zip(&c.sequences) {
        if row.sequence != *seq {
            return Ok(Err(format!(
                "row sequence {} where the log entry lists {seq}",
                row.sequence
            )));
        }
        if !keep {
            continue;
        }
        digest = StateDigest::sum_known(digest, row.digest);
        count += row.count;
    }
    Ok(Ok((digest, count)))
}

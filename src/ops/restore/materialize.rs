//! Materialization: the chain's base and changes read (only the columns needed, each object
//! checked against its sealed SHA-256), the latest change per key kept, and the result handed
//! to a sink partition by partition and proven against the snapshot's digest.

use super::*;

/// Marks a state whose image is a quarantined record's: `?<v|o><sha256 or empty> <object>`,
/// `v` when the seal hashed the image as a valid item, `o` when opaquely. Canonical items
/// start with `{`, so the two cannot be confused.
pub(super) const QUARANTINED: char = '?';

/// Per key, the latest change seen so far.
pub(super) type State = HashMap<String, Latest, foldhash::fast::RandomState>;

/// The latest change of a key seen so far.
pub(super) struct Latest {
    pub(super) seq: String,
    pub(super) image: Option<String>,
}

pub(super) fn fold(state: &mut State, key: &str, seq: &str, image: Option<&str>) {
    match state.get_mut(key) {
        Some(l) => {
            if SequenceNumber::cmp_text(seq, &l.seq) == Ordering::Greater {
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

/// Where counted changes go: one in-memory state, or spill files by partition; only the keys
/// of one partition when a distributed restore materializes just that one.
struct Collector {
    memory: State,
    spill: Option<Spill>,
    only: Option<(usize, usize)>,
    /// Only this key (a point lookup), and every change of it seen, when asked.
    only_key: Option<String>,
    history: Option<Vec<KeyChange>>,
}

impl Collector {
    /// A change of the key being looked up, for its history.
    fn record(&mut self, key: &str, seq: &str, image: Option<&str>, time: Option<i64>, from: &str) {
        if let Some(h) = &mut self.history
            && self.only_key.as_deref() == Some(key)
        {
            h.push(KeyChange {
                sequence_number: seq.to_owned(),
                created_ms: time,
                image: image.map(str::to_owned),
                object: from.to_owned(),
            });
        }
    }

    fn push(&mut self, key: &str, seq: &str, image: Option<&str>) -> Result<(), RestoreError> {
        if self.only_key.as_deref().is_some_and(|k| k != key) {
            return Ok(());
        }
        if let Some((i, p)) = self.only
            && partition_of(key, p) != i
        {
            return Ok(());
        }
        match &mut self.spill {
            Some(s) => s.push(key, seq, image),
            None => {
                fold(&mut self.memory, key, seq, image);
                Ok(())
            }
        }
    }
}

/// One partition ready for the sink.
struct Emitted {
    items: u64,
    digest: StateDigest,
    quarantined: Vec<QuarantinedKey>,
    quarantined_digest: Option<StateDigest>,
}

/// A partition's final state: the items sorted by key with their digest, and the keys held by
/// quarantined records (resolved afterwards: that needs the store).
fn prepare(state: State) -> (Vec<Item>, StateDigest, Vec<(String, Latest)>) {
    let mut items: Vec<Item> = Vec::with_capacity(state.len());
    let mut held = vec![];
    for (key, l) in state {
        let Some(item) = l.image else { continue };
        if item.starts_with(QUARANTINED) {
            held.push((
                key,
                Latest {
                    seq: l.seq,
                    image: Some(item),
                },
            ));
        } else {
            items.push(Item {
                key,
                item,
                sequence_number: l.seq,
            });
        }
    }
    items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut digest = StateDigest::ZERO;
    for it in &items {
        // Stored images are canonical, so the hash is SHA-256 of the text as stored.
        digest.add_item(&ItemHash(Sha256::digest(it.item.as_bytes()).into()));
    }
    (items, digest, held)
}

/// Resolves a partition's quarantined keys and hands it to the sink.
async fn emit(
    store: &Arc<dyn ObjectStore>,
    sink: &dyn Sink,
    index: usize,
    count: usize,
    state: State,
) -> Result<Emitted, RestoreError> {
    let (mut items, mut digest, held) =
        tokio::task::spawn_blocking(move || prepare(state))
            .await
            .map_err(|e| RestoreError::Unrestorable(format!("a restore task failed: {e}")))?;
    let mut quarantined = vec![];
    let mut quarantined_digest = Some(StateDigest::ZERO);
    let mut resorted = false;
    for (key, l) in held {
        let marker = l.image.unwrap_or_default();
        let rest = &marker[QUARANTINED.len_utf8()..];
        let (kind_sha, object) = rest.split_once(' ').unwrap_or(("", rest));
        let (valid, sha) = match kind_sha.split_at_checked(1) {
            Some(("v", sha)) => (true, sha),
            Some((_, sha)) => (false, sha),
            None => (false, ""),
        };
        // A record quarantined for something else than its new image (an old image of an
        // unknown type, say) still writes a valid item: restore it.
        if valid && let Some(item) = writable_image(store.as_ref(), object, sha).await? {
            digest.add_item(&ItemHash(Sha256::digest(item.as_bytes()).into()));
            items.push(Item {
                key,
                item,
                sequence_number: l.seq,
            });
            resorted = true;
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
            state: marker.clone(),
        });
    }
    if resorted {
        items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    }
    let n = items.len() as u64;
    sink.partition(index, count, items)
        .await
        .map_err(RestoreError::Sink)?;
    Ok(Emitted {
        items: n,
        digest,
        quarantined,
        quarantined_digest,
    })
}

/// Reads the plan's objects and hands the final state to `sink`, partition by partition.
pub async fn materialize(
    store: &Arc<dyn ObjectStore>,
    plan: &Plan,
    options: &MaterializeOptions,
    sink: &dyn Sink,
    progress: &Progress,
) -> Result<Materialized, RestoreError> {
    // Partitions: enough that the partitions in memory at once (`parallel` of them) fit in
    // half the budget, assuming the stored (zstd) bytes expand up to 8x in memory.
    let budget = (options.memory_mb.max(16) as u64) << 19;
    let parallel = options.parallel.max(1);
    let estimate = plan
        .bytes()
        .saturating_mul(8)
        .saturating_mul(parallel as u64);
    let partitions = match options.partitions {
        Some(p) => p.clamp(1, 65_536),
        None => (estimate.div_ceil(budget.max(1)) as usize)
            .max(options.min_partitions)
            .clamp(1, 4096),
    };
    if let Some(i) = options.only_partition
        && i >= partitions
    {
        return Err(RestoreError::Target(format!(
            "partition {i} does not exist: the restore has {partitions} partitions (0..{})",
            partitions - 1
        )));
    }
    let mut acc = Collector {
        memory: State::default(),
        spill: if partitions > 1 && options.only_partition.is_none() && options.only_key.is_none() {
            Some(Spill::new(options.spill_dir.as_deref(), partitions)?)
        } else {
            None
        },
        only: options.only_partition.map(|i| (i, partitions)),
        only_key: options.only_key.clone(),
        history: options.history.then(Vec::new),
    };
    let mut objects_read = 0u64;
    let mut changes = 0u64;
    progress.stage("reading changes", plan.changes());

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
            objects_read += 1;
            progress.add_bytes(bytes.len() as u64);
            for batch in read_batches(&b.key, bytes, &["keys", "item"])? {
                let keys = string_col(&batch, "keys", &b.key)?;
                let items = string_col(&batch, "item", &b.key)?;
                for i in 0..batch.num_rows() {
                    acc.record(keys.value(i), "0", Some(items.value(i)), None, &b.key);
                    acc.push(keys.value(i), "0", Some(items.value(i)))?;
                }
            }
        }
    }

    // A checkpoint: every item at the sequence number of the change that wrote it, and the
    // keys quarantined records held. With the same partitioning, one partition reads one file.
    if let Some(c) = &plan.checkpoint {
        let files: Vec<&crate::model::checkpoint::CheckpointFile> = c
            .files
            .iter()
            .filter(|f| match (&acc.only_key, acc.only) {
                // A point lookup reads the one file that can hold its key.
                (Some(k), _) => f.partition == partition_of(k, c.partitions),
                (None, Some((i, p))) if p == c.partitions => f.partition == i,
                _ => true,
            })
            .collect();
        for chunk in files.chunks(options.concurrency.max(1)) {
            let keys: Vec<String> = chunk.iter().map(|f| f.key.clone()).collect();
            let bodies = store::get_many(store, &keys, options.concurrency).await;
            for (f, body) in chunk.iter().zip(bodies) {
                let bytes = checked(&f.key, f.bytes, &f.sha256, body?)?;
                objects_read += 1;
                progress.add_bytes(bytes.len() as u64);
                for batch in read_batches(&f.key, bytes, &["keys", "item", "sequence_number"])? {
                    let keys = string_col(&batch, "keys", &f.key)?;
                    let items = string_col(&batch, "item", &f.key)?;
                    let seqs = string_col(&batch, "sequence_number", &f.key)?;
                    for i in 0..batch.num_rows() {
                        let seq = if seqs.is_null(i) { "0" } else { seqs.value(i) };
                        acc.record(keys.value(i), seq, Some(items.value(i)), None, &f.key);
                        acc.push(keys.value(i), seq, Some(items.value(i)))?;
                    }
                }
            }
        }
        for q in &c.quarantined {
            acc.push(&q.key, &q.sequence_number, Some(&q.state))?;
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
        acc.record(key, seq, image, e.created_ms, &q.key);
        acc.push(key, seq, image)?;
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
            objects_read += 1;
            progress.add_bytes(bytes.len() as u64);
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
                        if acc.history.is_some() {
                            let created = if time.is_null(i) {
                                s.max_time_ms
                            } else {
                                Some(time.value(i))
                            };
                            acc.record(key.value(i), q, image, created, u.key);
                        }
                        acc.push(key.value(i), q, image)?;
                    }
                }
                changes += rows;
                progress.add(rows);
            }
        }
    }

    // Emit: partition by partition (`parallel` at once), latest change per key, sorted by key.
    progress.stage(
        "writing items",
        plan.expected.map_or(0, |(_, n)| n.max(0) as u64),
    );
    let mut digest = StateDigest::ZERO;
    let mut count = 0u64;
    let mut quarantined: Vec<QuarantinedKey> = vec![];
    let mut quarantined_digest = Some(StateDigest::ZERO);
    let mut add = |e: Emitted| {
        digest.add(&e.digest);
        count += e.items;
        quarantined.extend(e.quarantined);
        quarantined_digest = match (quarantined_digest, e.quarantined_digest) {
            (Some(mut a), Some(b)) => {
                a.add(&b);
                Some(a)
            }
            _ => None,
        };
        progress.add(e.items);
    };
    match acc.spill.take() {
        None => {
            let index = options.only_partition.unwrap_or(0);
            add(emit(
                store,
                sink,
                index,
                partitions,
                std::mem::take(&mut acc.memory),
            )
            .await?);
        }
        Some(mut s) => {
            s.finish()?;
            let s = Arc::new(s);
            use futures_util::StreamExt as _;
            let mut done = futures_util::stream::iter(0..partitions)
                .map(|i| {
                    let s = s.clone();
                    async move {
                        let state = tokio::task::spawn_blocking(move || s.read(i))
                            .await
                            .map_err(|e| {
                                RestoreError::Unrestorable(format!("a restore task failed: {e}"))
                            })??;
                        emit(store, sink, i, partitions, state).await
                    }
                })
                .buffer_unordered(parallel);
            while let Some(e) = done.next().await {
                add(e?);
            }
        }
    }
    quarantined.sort_by(|a, b| a.key.cmp(&b.key));
    let mut unproven = None;
    let whole = options.only_partition.is_none() && options.only_key.is_none();
    if let Some((d, n)) = plan.expected.filter(|_| whole) {
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
    let mut history = acc.history.take().unwrap_or_default();
    history.sort_by(|a, b| SequenceNumber::cmp_text(&a.sequence_number, &b.sequence_number));
    history.dedup_by(|a, b| a.sequence_number == b.sequence_number);
    Ok(Materialized {
        items: count,
        digest,
        changes,
        objects_read,
        history,
        partitions,
        quarantined,
        quarantined_digest,
        unproven,
    })
}

/// The new image of the quarantined record at `object`, canonical, when the canonicaliser
/// accepts it and it hashes to what the seal recorded (`sha256`); `None` when it cannot be
/// written.
pub(super) async fn writable_image(
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
    let Some(image) = crate::model::quarantine::new_image_text(&body) else {
        return Ok(None);
    };
    let Ok(canonical) = crate::model::item::canonicalize(&image) else {
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

pub(super) fn checked(
    key: &str,
    bytes: u64,
    sha256: &str,
    body: Bytes,
) -> Result<Bytes, RestoreError> {
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

pub(super) fn read_batches(
    key: &str,
    bytes: Bytes,
    columns: &[&str],
) -> Result<Vec<arrow_array::RecordBatch>, RestoreError> {
    crate::segment::read_segment_columns(key, bytes, columns).map_err(|e| RestoreError::Corrupt {
        key: key.to_owned(),
        problem: e.to_string(),
    })
}

pub(super) fn string_col<'a>(
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

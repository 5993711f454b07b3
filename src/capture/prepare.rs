//! Step 1 of the capture path: finding and reading a batch's records, on several threads when
//! asked, into rows whose texts are in per-thread buffers.

use super::*;

/// An event split into records, with its table, schema and prepared rows.
pub(super) struct Batch<'a> {
    pub(super) table: String,
    pub(super) schema: Arc<TableSchema>,
    pub(super) rows: Rows<'a>,
}

/// The records of a batch read: their raw texts, their rows (or why they are unusable), and
/// the buffers holding the rows' key and image texts (one per thread that read them).
pub(super) struct Rows<'a> {
    pub(super) raws: Vec<&'a str>,
    pub(super) prepared: Vec<Prepared<'a>>,
    pub(super) texts: Vec<ColumnTexts>,
}
/// The first `eventSourceARN` of the batch.
pub(super) fn find_arn(raws: &[&str]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Arn<'a> {
        #[serde(rename = "eventSourceARN", borrow)]
        arn: Option<std::borrow::Cow<'a, str>>,
    }
    raws.iter().find_map(|raw| {
        serde_json::from_str::<Arn>(raw)
            .ok()
            .and_then(|a| a.arn.map(|a| a.into_owned()))
    })
}

pub(super) fn find_table(raws: &[&str]) -> Result<String, IngestError> {
    #[derive(serde::Deserialize)]
    struct Arn<'a> {
        #[serde(rename = "eventSourceARN", borrow)]
        arn: Option<std::borrow::Cow<'a, str>>,
    }
    for raw in raws {
        if let Ok(Arn { arn: Some(arn) }) = serde_json::from_str::<Arn>(raw) {
            return change::table_from_stream_arn(&arn)
                .map(str::to_owned)
                .map_err(|reason| ChangeError::Event(reason).into());
        }
    }
    Err(IngestError::NoTable)
}

pub(super) type Prepared<'a> = Result<PreparedRow<'a>, ChangeError>;

/// Reads one record of a split batch, its texts going to the batch's `texts_index`-th buffer.
pub(super) fn prepare_one<'a>(
    raw: &'a str,
    index: usize,
    table: &str,
    schema: &TableSchema,
    canon: &mut Canonicalizer,
    (texts, texts_index): (&mut TextColumns, usize),
) -> Prepared<'a> {
    let mark = texts.mark();
    let parsed =
        ChangeRecord::parse(raw, index, canon, &schema.paths).map(|r| r.into_spanned(texts));
    let prepared = check_table(parsed, index, table, schema, &mut None, texts_index);
    if prepared.is_err() {
        texts.rollback(mark);
    }
    prepared
}

/// A parsed record as a row, if it is from `table`; its texts are in the batch's
/// `texts_index`-th buffer.
///
/// `accepted` remembers the last stream ARN found to name `table`: records of a batch share
/// one, so it is parsed once per thread rather than once per record.
pub(super) fn check_table<'a>(
    parsed: Result<ChangeRecord<'a, SpannedItem<'a>>, ChangeError>,
    index: usize,
    table: &str,
    schema: &TableSchema,
    accepted: &mut Option<String>,
    texts_index: usize,
) -> Prepared<'a> {
    let rec = parsed?;
    if let Some(arn) = &rec.event_source_arn
        && accepted.as_deref() != Some(arn.as_ref())
    {
        let t = change::table_from_stream_arn(arn).map_err(|reason| ChangeError::Record {
            index,
            event_id: Some(rec.event_id.to_string()),
            sequence: Some(rec.sequence.to_string()),
            reason,
        })?;
        if t != table {
            return Err(ChangeError::Record {
                index,
                event_id: Some(rec.event_id.to_string()),
                sequence: Some(rec.sequence.to_string()),
                reason: format!("record is from table {t:?} but the batch is from {table:?}"),
            });
        }
        *accepted = Some(arn.to_string());
    }
    Ok(PreparedRow::new(rec, schema, texts_index))
}

/// What one thread of [`prepare_fused`] read: records from its start up to (not including)
/// the record starting at its `stop`, and whether it met that record exactly.
pub(super) struct Stretch<'a> {
    pub(super) raws: Vec<&'a str>,
    pub(super) prepared: Vec<Prepared<'a>>,
    pub(super) texts: ColumnTexts,
    /// True when the thread stopped at a record starting exactly at its `stop` (or reached the
    /// end of the event when it had no `stop`).
    pub(super) landed: bool,
}

/// Reads records with `cursor` until the record starting at or after `stop`, or to the end
/// of the event; their texts go to a buffer of their own, the batch's `texts_index`-th.
/// `None` if the event is broken.
pub(super) fn read_stretch<'a>(
    mut cursor: change::EventCursor<'a>,
    stop: Option<usize>,
    table: &str,
    schema: &TableSchema,
    texts_index: usize,
    pool: &BufferPool,
) -> Option<Stretch<'a>> {
    let mut canon = Canonicalizer::new();
    let mut accepted = None;
    let text = cursor.text();
    let bytes = stop.unwrap_or(text.len()).saturating_sub(cursor.pos());
    let mut raws = Vec::new();
    let mut prepared = Vec::new();
    let mut texts = pool.take(bytes);
    let landed = loop {
        let Some(start) = cursor.next_start()? else {
            break stop.is_none();
        };
        if let Some(stop) = stop
            && start >= stop
        {
            break start == stop;
        }
        // Counted from the stretch's start; prepare_fused offsets later stretches.
        let index = raws.len();
        let mark = texts.mark();
        let (raw, parsed) = cursor.record_into(index, &mut canon, &schema.paths, &mut texts)?;
        let row = check_table(parsed, index, table, schema, &mut accepted, texts_index);
        if row.is_err() {
            // A record of another table: its texts are not part of any row.
            texts.rollback(mark);
        }
        if index == 0 {
            // Size the lists once from the first record rather than doubling them (rows are
            // ~250 bytes each; a 6 MB batch holds thousands). A valid stream record is well
            // over 100 bytes: that bounds a small first guess.
            let expected = bytes / raw.len().max(100) + 1;
            raws.reserve(expected);
            prepared.reserve(expected);
        }
        raws.push(raw);
        prepared.push(row);
    };
    Some(Stretch {
        raws,
        prepared,
        texts: texts.into(),
        landed,
    })
}

impl<'a> From<Stretch<'a>> for Rows<'a> {
    fn from(s: Stretch<'a>) -> Rows<'a> {
        Rows {
            raws: s.raws,
            prepared: s.prepared,
            texts: vec![s.texts],
        }
    }
}

/// Finds and prepares every record of a usual-shape event in one pass (see
/// [`Ingestor::prepare_batch`]); `None` sends the caller the long way.
///
/// With several threads, each reads an even share of the text, starting at a guessed record
/// boundary. The guesses are trusted only if each thread, reading properly from the one
/// before, lands exactly on the next guess; otherwise the first thread's reading continues to
/// the end alone, so a bad guess costs time, never correctness.
pub(super) fn prepare_fused<'a>(
    text: &'a str,
    table: &str,
    schema: &TableSchema,
    threads: usize,
    pool: &BufferPool,
) -> Option<Rows<'a>> {
    // Below this, a thread's share costs more to hand out than it saves.
    pub(super) const MIN_BYTES_PER_THREAD: usize = 256 * 1024;
    let wanted = threads.clamp(1, (text.len() / MIN_BYTES_PER_THREAD).max(1));
    let workers = workers::pool(wanted);
    let threads = if workers.is_some() { wanted } else { 1 };
    let mut starts = vec![0];
    for k in 1..threads {
        let from = (text.len() * k / threads).max(starts.last().map_or(0, |s| s + 1));
        match change::guess_boundary(text, from) {
            Some(at) => starts.push(at),
            None => break,
        }
    }
    let first = change::EventCursor::new(text)?;
    let Some(workers) = workers.filter(|_| starts.len() > 1) else {
        let all = read_stretch(first, None, table, schema, 0, pool)?;
        return all.landed.then(|| all.into());
    };
    // Thread k reads [starts[k], starts[k+1]). A stretch whose reading panicked (a bug) is
    // `None`: the batch is then read again on this thread, as for one that did not land.
    let stretches: Vec<Option<Stretch<'a>>> = workers.install(|| {
        (0..starts.len())
            .into_par_iter()
            .with_max_len(1)
            .map(|k| {
                let cursor = if k == 0 {
                    first.clone()
                } else {
                    change::EventCursor::at(text, starts[k])
                };
                let stop = starts.get(k + 1).copied();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    read_stretch(cursor, stop, table, schema, k, pool)
                }))
                .ok()
                .flatten()
            })
            .collect()
    });
    if !stretches
        .iter()
        .all(|s| s.as_ref().is_some_and(|s| s.landed))
    {
        pool.give_all(stretches.into_iter().flatten().map(|s| s.texts).collect());
        let all = read_stretch(first, None, table, schema, 0, pool)?;
        return all.landed.then(|| all.into());
    }
    let records = stretches.iter().flatten().map(|s| s.raws.len()).sum();
    let mut raws = Vec::with_capacity(records);
    let mut prepared = Vec::with_capacity(records);
    let mut texts = Vec::with_capacity(stretches.len());
    for stretch in stretches.into_iter().flatten() {
        texts.push(stretch.texts);
        // Threads after the first counted their records from zero.
        let offset = raws.len();
        prepared.extend(stretch.prepared.into_iter().map(|mut p| {
            if let Err(ChangeError::Record { index, .. }) = &mut p {
                *index += offset;
            }
            p
        }));
        raws.extend(stretch.raws);
    }
    Some(Rows {
        raws,
        prepared,
        texts,
    })
}

/// Prepares the records of a split batch, on up to `threads` threads (each a run of
/// records, with its own text buffer).
pub(super) fn prepare_all<'a>(
    raws: Vec<&'a str>,
    table: &str,
    schema: &TableSchema,
    threads: usize,
    pool: &BufferPool,
) -> Rows<'a> {
    let wanted = threads.clamp(1, raws.len().max(1));
    let workers = workers::pool(wanted);
    let threads = if workers.is_some() { wanted } else { 1 };
    let chunk = raws.len().div_ceil(threads).max(1);
    let read = |c: usize, part: &[&'a str]| {
        let mut canon = Canonicalizer::new();
        let mut texts = pool.take(part.iter().map(|r| r.len()).sum());
        let prepared = part
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                prepare_one(
                    raw,
                    c * chunk + i,
                    table,
                    schema,
                    &mut canon,
                    (&mut texts, c),
                )
            })
            .collect::<Vec<_>>();
        (prepared, ColumnTexts::from(texts))
    };
    // A chunk whose reading panicked (a bug) is surfaced per record rather than aborting.
    let read_or_fail = |c: usize, part: &[&'a str]| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(c, part))).unwrap_or_else(
            |_| {
                let failed = (0..part.len())
                    .map(|i| {
                        Err(ChangeError::Record {
                            index: c * chunk + i,
                            event_id: None,
                            sequence: None,
                            reason: "internal error while preparing the record".into(),
                        })
                    })
                    .collect();
                (failed, TextColumns::default().into())
            },
        )
    };
    let parts: Vec<(Vec<Prepared<'a>>, ColumnTexts)> = match workers {
        Some(workers) => workers.install(|| {
            raws.par_chunks(chunk)
                .enumerate()
                .map(|(c, part)| read_or_fail(c, part))
                .collect()
        }),
        None => vec![read(0, &raws)],
    };
    let mut prepared = Vec::with_capacity(raws.len());
    let mut texts = Vec::with_capacity(parts.len());
    for (part, t) in parts {
        prepared.extend(part);
        texts.push(t);
    }
    Rows {
        raws,
        prepared,
        texts,
    }
}

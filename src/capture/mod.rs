//! The capture path: one batch of stream records in, segments and quarantined records out.
//!
//! Every front end (the Lambda, `streamseal ingest`, later the stream poller) calls
//! [`Ingestor::ingest_event`]. The batch is processed in three steps:
//!
//! 1. **Prepare** each record ([`change::EventCursor::record_into`] then [`PreparedRow::new`]):
//!    validate, canonicalise and hash the images, project typed columns. The canonical key and
//!    image texts go into the reading thread's [`TextColumns`] buffers, which the segments'
//!    columns are later sliced from. Records are independent, so with `threads > 1` the
//!    event text is split at guessed record boundaries and read on a [`workers`] pool kept
//!    between batches (see `prepare::prepare_fused`). A
//!    record that cannot be converted becomes a *quarantine* unit (or, under
//!    [`BadRecordPolicy::Reject`], fails the whole call before anything is written).
//! 2. **Group** consecutive good records by hour partition into segments; a batch spanning an
//!    hour boundary becomes two segments. Encode each as Parquet: one rayon task per
//!    (segment, column), then an assembly step per segment (see [`crate::segment`]).
//! 3. **Write**: quarantined records, then each segment followed by its log entry in the inbox
//!    (`inbox/s-<first>-<last>-<tag>.json`, named by the segment). A segment's records count
//!    as durable once its entry is written. Every write is `IfAbsent`, so a redelivered batch
//!    finds its segment and entry already present and adds no copy; no name depends on the
//!    writer's clock.
//!
//! On a store failure, writing stops and the report names the first record that is not durable:
//! [`IngestReport::batch_item_failures`] lists it and every record after it, which is what
//! Lambda's `ReportBatchItemFailures` needs to retry exactly the rest.

pub mod input;
pub mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::model::change::{self, ChangeError, ChangeRecord, SequenceNumber};
use crate::model::clock::SharedClock;
use crate::model::item::{Canonicalizer, SpannedItem, TextColumns};
use crate::model::layout::{HourPartition, TableLayout};
use crate::model::log::{LOG_FORMAT, LogEntry, QuarantineRecord};
use crate::model::schema::{SchemaError, TableSchema};
use crate::segment::{
    ColumnTexts, EncodeOptions, PreparedRow, SegmentBuilder, SegmentError, finish_segments,
};
use crate::store::{ObjectStore, PutMode, PutOptions, PutOutcome, StoreError};

use rayon::prelude::*;

mod buffers;
mod prepare;
mod publish;
use buffers::*;
use prepare::*;

/// What to do with a record that cannot be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Keep it verbatim under `quarantine/`, report it, and carry on (the Lambda's behaviour:
    /// a record that can never convert must not block its shard).
    Quarantine,
    /// Fail the whole call before writing anything (the CLI's default).
    Reject,
}

/// Why a batch could not be ingested at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event is not a DynamoDB stream event, or a record is bad under `Reject`.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The table's schema file is unusable.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Loading the schema file failed in the store.
    #[error("loading the schema for table {table}: {source}")]
    SchemaStore {
        /// Table name.
        table: String,
        /// Store error.
        source: StoreError,
    },
    /// Encoding a segment failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// No record names its table (`eventSourceARN` is missing everywhere).
    #[error("no record in the event has an eventSourceARN naming its table")]
    NoTable,
}

/// Where typed-column schemas come from.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    /// No schema: key and image columns only.
    None,
    /// One schema for every table (the CLI's `--schema FILE`).
    Fixed(Arc<TableSchema>, String),
    /// `<table>.toml` under a store location (a local directory or an S3 prefix); a missing
    /// file means no typed columns for that table.
    Store(Arc<dyn ObjectStore>),
}

/// A segment the call wrote (or found already written).
#[derive(Debug, Clone, Serialize)]
pub struct WrittenSegment {
    /// Object key.
    pub key: String,
    /// Log record key.
    pub log_key: String,
    /// Rows.
    pub rows: u64,
    /// Parquet bytes.
    pub bytes: u64,
    /// False when the segment already existed (a redelivery).
    pub created: bool,
}

/// A quarantined record.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedRecord {
    /// Object key of the quarantine copy.
    pub key: String,
    /// Position in the batch.
    pub index: usize,
    /// Why it could not be converted.
    pub reason: String,
}

/// What one call did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Table name.
    pub table: Option<String>,
    /// The stream the records came from.
    pub stream_arn: Option<String>,
    /// Records in the event.
    pub records: usize,
    /// Bytes of event JSON.
    pub event_bytes: usize,
    /// Segments, in write order.
    pub segments: Vec<WrittenSegment>,
    /// Quarantined records.
    pub quarantined: Vec<QuarantinedRecord>,
    /// Index of the first record that is not durably written, if any.
    pub failed_from: Option<usize>,
    /// Sequence numbers of the records Lambda must retry (from `failed_from` on).
    pub batch_item_failures: Vec<String>,
    /// The store error that stopped the writes.
    pub error: Option<String>,
    /// True if a record that must be retried has no readable sequence number, so only a retry
    /// of the whole batch is safe.
    pub retry_whole_batch: bool,
    /// Segments found already stored under their name with other changes (the batch stops
    /// there, unacknowledged): something else wrote the backup's prefix, or an object is
    /// damaged. Alarmed on (`SegmentConflicts`).
    pub segment_conflicts: usize,
}

/// Tuning and policy for [`Ingestor`].
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Parquet encoding options.
    pub encode: EncodeOptions,
    /// Threads that prepare records (1 = the calling thread).
    pub prepare_threads: usize,
    /// What to do with unconvertible records.
    pub bad_records: BadRecordPolicy,
}

impl IngestOptions {
    /// Records read and columns encoded on `threads` threads, zstd level 1, bad records
    /// quarantined (the Lambda's policy).
    pub fn on_threads(threads: usize) -> IngestOptions {
        IngestOptions {
            encode: EncodeOptions {
                zstd_level: 1,
                encode_threads: threads,
            },
            prepare_threads: threads,
            bad_records: BadRecordPolicy::Quarantine,
        }
    }
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            encode: EncodeOptions::default(),
            prepare_threads: 1,
            bad_records: BadRecordPolicy::Quarantine,
        }
    }
}

/// Turns stream events into segments in a store. Build once, reuse for every batch (the Lambda
/// keeps one per container).
#[derive(Debug)]
pub struct Ingestor {
    store: Arc<dyn ObjectStore>,
    schemas: SchemaSource,
    options: IngestOptions,
    cache: Mutex<HashMap<String, Arc<TableSchema>>>,
    buffers: BufferPool,
    clock: SharedClock,
}

/// An event read, checked and encoded, not yet written (see [`Ingestor::prepare_event`]).
/// It borrows the event's text and holds its encoded segments, which are several times
/// smaller than the event; the buffers the records were read into are already free for the
/// next event.
pub struct PreparedEvent<'a> {
    bytes: usize,
    encoded: Option<EncodedBatch<'a>>,
}

/// Steps 1 and 2 done: what step 3 writes, and what its report needs.
struct EncodedBatch<'a> {
    table: String,
    raws: Vec<&'a str>,
    units: Vec<Unit<'a>>,
}

impl PreparedEvent<'_> {
    /// Records in the event.
    pub fn records(&self) -> usize {
        self.encoded.as_ref().map_or(0, |b| b.raws.len())
    }
}

/// What step 3 writes: a segment (covering some records) or one quarantined record.
enum Unit<'a> {
    Segment {
        indices: Vec<usize>,
        encoded: Box<crate::segment::EncodedSegment>,
    },
    Quarantine {
        index: usize,
        raw: &'a str,
        reason: String,
    },
}

impl Unit<'_> {
    /// The smallest batch index among the records this unit makes durable.
    fn first_index(&self) -> usize {
        match self {
            Unit::Quarantine { index, .. } => *index,
            Unit::Segment { indices, .. } => indices.first().copied().unwrap_or(usize::MAX),
        }
    }
}

impl Ingestor {
    /// An ingestor writing to `store`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        schemas: SchemaSource,
        options: IngestOptions,
    ) -> Ingestor {
        Ingestor {
            store,
            schemas,
            options,
            cache: Mutex::new(HashMap::new()),
            buffers: BufferPool::default(),
            clock: crate::model::clock::system(),
        }
    }

    /// Stamps `written_at` with `clock` instead of the machine's (tests run writers with
    /// skewed clocks this way; no name or decision depends on it).
    pub fn with_clock(mut self, clock: SharedClock) -> Ingestor {
        self.clock = clock;
        self
    }

    /// The schema of `table` from the configured source (cached per table).
    pub(crate) async fn schema_for(&self, table: &str) -> Result<Arc<TableSchema>, IngestError> {
        if let Some(s) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            return Ok(s.clone());
        }
        let schema = match &self.schemas {
            SchemaSource::None => Arc::new(TableSchema::default()),
            SchemaSource::Fixed(s, origin) => {
                s.check_table(table, origin)?;
                s.clone()
            }
            SchemaSource::Store(store) => {
                let key = format!("{table}.toml");
                match store.get(&key).await {
                    Ok(bytes) => {
                        let origin = format!("{}/{key}", store.url().trim_end_matches('/'));
                        let text =
                            std::str::from_utf8(&bytes).map_err(|e| SchemaError::Invalid {
                                path: origin.clone(),
                                line: 1,
                                message: format!("not UTF-8: {e}"),
                            })?;
                        let s = TableSchema::parse(text, &origin)?;
                        s.check_table(table, &origin)?;
                        Arc::new(s)
                    }
                    Err(StoreError::NotFound { .. }) => {
                        tracing::info!(
                            table,
                            "no schema file for table; writing key and image columns only"
                        );
                        Arc::new(TableSchema::default())
                    }
                    // S3 answers 403, not 404, for a missing object when the role may not
                    // list the bucket. Capture must not stall on it: the images keep every
                    // attribute, so falling back loses nothing but the typed columns.
                    Err(e @ StoreError::Denied { .. }) => {
                        tracing::warn!(
                            table,
                            error = %e,
                            "schema file missing or unreadable; writing key and image columns only (grant s3:GetObject and s3:ListBucket on the schema location to tell the two apart)"
                        );
                        Arc::new(TableSchema::default())
                    }
                    Err(source) => {
                        return Err(IngestError::SchemaStore {
                            table: table.to_owned(),
                            source,
                        });
                    }
                }
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_owned(), schema.clone());
        Ok(schema)
    }

    /// Steps 1 and 2 of an event, writing nothing: read and check every record, group them
    /// and encode the segments. Under [`BadRecordPolicy::Reject`] the first bad record is an
    /// error. The CLI prepares a whole input this way before writing any of it, then hands
    /// each event to [`Ingestor::write_event`].
    pub async fn prepare_event<'a>(&self, text: &'a str) -> Result<PreparedEvent<'a>, IngestError> {
        let batch = self.prepare_batch(text).await?;
        if self.options.bad_records == BadRecordPolicy::Reject
            && let Some(b) = &batch
            && let Some(Err(e)) = b.rows.prepared.iter().find(|r| r.is_err())
        {
            let e = e.clone();
            if let Some(b) = batch {
                self.buffers.give_all(b.rows.texts);
            }
            return Err(e.into());
        }
        let encoded = match batch {
            Some(batch) => Some(self.encode(batch)?),
            None => None,
        };
        Ok(PreparedEvent {
            bytes: text.len(),
            encoded,
        })
    }

    /// Steps shared by checking and ingesting: split the event, find its table and schema, and
    /// prepare every record. `None` for an event without records.
    ///
    /// The usual event shape is read in one pass: records are found and parsed together (on
    /// `prepare_threads` threads, each starting at a record boundary near its share of the
    /// text). Any other shape, or a broken event, goes the long way: [`change::parse_event`]
    /// splits it (or names the problem), then the records are parsed.
    async fn prepare_batch<'a>(&self, text: &'a str) -> Result<Option<Batch<'a>>, IngestError> {
        if let Some(first) = change::first_record(text)
            && let Ok(table) = find_table(&[first])
        {
            let schema = self.schema_or_fallback(&table).await?;
            if let Some(rows) = prepare_fused(
                text,
                &table,
                &schema,
                self.options.prepare_threads,
                &self.buffers,
            ) {
                return Ok(Some(Batch {
                    table,
                    schema,
                    rows,
                }));
            }
        }
        let raws = change::parse_event(text)?;
        if raws.is_empty() {
            return Ok(None);
        }
        let table = find_table(&raws)?;
        let schema = self.schema_or_fallback(&table).await?;
        // CPU-bound; a batch is at most 6 MB, so it runs inline, split across the kept
        // threads (`workers`) when asked.
        let rows = prepare_all(
            raws,
            &table,
            &schema,
            self.options.prepare_threads,
            &self.buffers,
        );
        Ok(Some(Batch {
            table,
            schema,
            rows,
        }))
    }

    /// The table's schema; under [`BadRecordPolicy::Quarantine`] an unusable schema file means
    /// image-only segments rather than a stopped capture.
    async fn schema_or_fallback(&self, table: &str) -> Result<Arc<TableSchema>, IngestError> {
        match self.schema_for(table).await {
            Ok(schema) => Ok(schema),
            // Capture must not stop because of a schema file: typed columns are a convenience,
            // the images are the backup. Under Quarantine (the Lambda) fall back to image-only
            // segments and say so loudly; under Reject (the CLI) the user fixes the file first.
            Err(e) if self.options.bad_records == BadRecordPolicy::Quarantine => {
                tracing::error!(table, error = %e, "schema unusable; writing key and image columns only");
                Ok(Arc::new(TableSchema::default()))
            }
            Err(e) => Err(e),
        }
    }

    /// Ingests one Lambda DynamoDB stream event (`{"Records": [...]}`).
    pub async fn ingest_event(&self, text: &str) -> Result<IngestReport, IngestError> {
        self.ingest_event_from(text, None).await
    }

    /// [`Ingestor::ingest_event`] for records known to come from one shard (the stream
    /// poller): the shard id is recorded in the segment records.
    pub(crate) async fn ingest_event_from(
        &self,
        text: &str,
        shard: Option<&str>,
    ) -> Result<IngestReport, IngestError> {
        let event = self.prepare_event(text).await?;
        self.write_event(event, shard).await
    }

    /// Step 2: group the batch's records into segments by hour and encode them; bad records
    /// become quarantine units (under [`BadRecordPolicy::Quarantine`]).
    fn encode<'a>(&self, batch: Batch<'a>) -> Result<EncodedBatch<'a>, IngestError> {
        let Batch {
            table,
            schema,
            rows:
                Rows {
                    raws,
                    prepared,
                    texts,
                },
        } = batch;
        let layout = TableLayout::new(&table);
        let mut units: Vec<Unit> = Vec::new();
        let mut segments: Vec<(HourPartition, SegmentBuilder, Vec<usize>)> = Vec::new();
        let fallback_ms = self.clock.now_ms();
        for (index, result) in prepared.iter().enumerate() {
            let row = match result {
                Ok(row) => row,
                Err(err) => {
                    if self.options.bad_records == BadRecordPolicy::Reject {
                        return Err(err.clone().into());
                    }
                    let reason = match err {
                        ChangeError::Record { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    units.push(Unit::Quarantine {
                        index,
                        raw: raws[index],
                        reason,
                    });
                    continue;
                }
            };
            // A record without a creation time goes with its neighbours' hour.
            let partition = match (row.time_ms, segments.last()) {
                (Some(t), _) => HourPartition::of_millis(t),
                (None, Some((p, _, _))) => *p,
                (None, None) => HourPartition::of_millis(fallback_ms),
            };
            // A segment is a run of rows of one hour.
            if segments.last().is_none_or(|(p, _, _)| *p != partition) {
                let capacity = raws.len().saturating_sub(index);
                segments.push((
                    partition,
                    SegmentBuilder::new(&schema, capacity),
                    Vec::new(),
                ));
            }
            if let Some((_, builder, indices)) = segments.last_mut() {
                builder.push(row);
                indices.push(index);
            }
        }
        // One pool of threads encodes all the segments.
        let (builders, indices): (Vec<_>, Vec<_>) = segments
            .into_iter()
            .map(|(p, builder, indices)| ((p, builder), indices))
            .unzip();
        let encoded = finish_segments(builders, &layout, self.options.encode, &texts);
        // The columns are encoded and no array slices the buffers any more: keep them.
        drop(prepared);
        self.buffers.give_all(texts);
        for (encoded, indices) in encoded.into_iter().zip(indices) {
            units.push(Unit::Segment {
                encoded: Box::new(encoded?),
                indices,
            });
        }
        Ok(EncodedBatch { table, raws, units })
    }

    /// Step 3 for an event [`Ingestor::prepare_event`] read and encoded: write its quarantined
    /// records, then each segment and its inbox entry. `shard`: as for
    /// [`Ingestor::ingest_event_from`].
    pub async fn write_event(
        &self,
        event: PreparedEvent<'_>,
        shard: Option<&str>,
    ) -> Result<IngestReport, IngestError> {
        let mut report = IngestReport {
            event_bytes: event.bytes,
            ..Default::default()
        };
        let Some(EncodedBatch {
            table,
            raws,
            mut units,
        }) = event.encoded
        else {
            return Ok(report);
        };
        report.records = raws.len();
        report.table = Some(table.clone());
        report.stream_arn = find_arn(&raws);
        let layout = TableLayout::new(&table);

        // Step 3: write. Quarantine first: those records must be kept whatever happens next.
        units.sort_by_key(|u| match u {
            Unit::Quarantine { .. } => 0,
            Unit::Segment { .. } => 1,
        });
        let mut failure: Option<(usize, StoreError)> = None;
        for (position, unit) in units.iter().enumerate() {
            let result = match unit {
                Unit::Quarantine { index, raw, reason } => self
                    .write_quarantine(&layout, *index, raw, reason)
                    .await
                    .map(|q| report.quarantined.push(q)),
                Unit::Segment { encoded, .. } => self
                    .write_segment(&layout, encoded, shard)
                    .await
                    .map(|s| report.segments.push(s)),
            };
            if let Err(e) = result {
                failure = Some((position, e));
                break;
            }
        }
        if let Some((position, error)) = failure {
            // The failed unit and every unit after it are not written: retry from the
            // smallest record index among them.
            let from = units
                .get(position..)
                .unwrap_or_default()
                .iter()
                .map(Unit::first_index)
                .min()
                .unwrap_or(0);
            tracing::warn!(table, error = %error, first_unwritten_record = from, "stopping: store write failed; reporting the rest for retry");
            report.failed_from = Some(from);
            if matches!(
                error,
                StoreError::Permanent {
                    op: publish::CONFLICT_OP,
                    ..
                }
            ) {
                report.segment_conflicts += 1;
            }
            report.error = Some(error.to_string());
            for raw in raws.get(from..).unwrap_or_default() {
                match change::raw_sequence_number(raw) {
                    Some(seq) => report.batch_item_failures.push(seq),
                    None if report.batch_item_failures.is_empty() => {
                        report.retry_whole_batch = true
                    }
                    None => {}
                }
            }
        }
        for q in &report.quarantined {
            tracing::error!(table, key = %q.key, record = q.index, reason = %crate::model::quarantine::reason_without_values(&q.reason), "record quarantined: kept verbatim (with the full reason), not in the Parquet segments");
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::workload::Workload;
    use crate::model::change::StreamViewType;

    /// An event of `n` records (over the parallel threshold for n ≳ 400), the record at
    /// `broken` given an unknown eventName, and `decoy` put first in every record.
    fn event(n: usize, broken: usize, decoy: &str) -> String {
        let mut w = Workload::new(5, "orders", StreamViewType::NewAndOldImages, 1024);
        w.next_event(n);
        let text = w.next_event(n);
        let raws = change::parse_event(&text).unwrap();
        let records: Vec<String> = raws
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let mut r = format!("{{{decoy}{}", &raw[1..]);
                if i == broken {
                    r = r.replacen("\"eventName\":\"", "\"eventName\":\"BOGUS", 1);
                }
                r
            })
            .collect();
        format!("{{\"Records\":[{}]}}", records.join(","))
    }

    fn schema() -> TableSchema {
        TableSchema::parse(include_str!("../../schemas/orders.toml"), "orders.toml").unwrap()
    }

    /// An ingestor for the `orders` schema, quarantining bad records like the Lambda.
    fn orders_ingestor(
        store: Arc<crate::store::memory::MemoryStore>,
        zstd_level: i32,
        threads: usize,
    ) -> Ingestor {
        Ingestor::new(
            store,
            SchemaSource::Fixed(Arc::new(schema()), "orders.toml".into()),
            IngestOptions {
                encode: EncodeOptions {
                    zstd_level,
                    encode_threads: threads,
                },
                prepare_threads: threads,
                bad_records: BadRecordPolicy::Quarantine,
            },
        )
    }

    /// Each record's row (with its texts, wherever they are buffered) or error, as text.
    fn resolved(rows: &Rows) -> Vec<String> {
        rows.prepared
            .iter()
            .map(|p| match p {
                Ok(row) => {
                    let texts = rows.texts[row.texts].of(row);
                    let mut row = row.clone();
                    (row.texts, row.keys, row.new_image, row.old_image) = (0, 0..0, None, None);
                    format!("{row:?} {texts:?}")
                }
                Err(e) => format!("{e:?}"),
            })
            .collect()
    }

    /// Every thread count reads exactly what splitting then parsing reads.
    fn assert_fused_reads_like_split(text: &str) {
        let schema = schema();
        let raws = change::parse_event(text).unwrap();
        let want = resolved(&prepare_all(
            raws.clone(),
            "orders",
            &schema,
            1,
            &BufferPool::default(),
        ));
        assert_eq!(
            resolved(&prepare_all(
                raws.clone(),
                "orders",
                &schema,
                3,
                &BufferPool::default()
            )),
            want
        );
        for threads in [1, 2, 3] {
            let got =
                prepare_fused(text, "orders", &schema, threads, &BufferPool::default()).unwrap();
            assert_eq!(got.raws, raws, "threads={threads}");
            assert_eq!(resolved(&got), want, "threads={threads}");
        }
    }

    #[test]
    fn fused_reading_on_any_thread_count_matches_split_reading() {
        let text = event(1200, 900, "");
        assert!(
            text.len() > 3 * 256 * 1024,
            "the event must reach three threads"
        );
        assert_fused_reads_like_split(&text);
        let schema = schema();
        let rows = prepare_fused(&text, "orders", &schema, 2, &BufferPool::default()).unwrap();
        assert_eq!(rows.texts.len(), 2, "two threads, two text buffers");
        // The broken record keeps its batch index though a later thread read it.
        match &rows.prepared[900] {
            Err(ChangeError::Record { index, reason, .. }) => {
                assert_eq!(*index, 900);
                assert!(reason.contains("BOGUS"), "{reason}");
            }
            other => panic!("record 900 should fail, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_boundary_guess_costs_time_not_records() {
        // Every record starts with a field whose value holds `},{"eventID"`, so the guess
        // near the middle lands inside a record.
        let text = event(1200, 1100, r#""x":[{"a":1},{"eventID":"decoy"}],"#);
        let raws = change::parse_event(&text).unwrap();
        let guess = change::guess_boundary(&text, text.len() / 2).unwrap();
        assert!(
            !raws
                .iter()
                .any(|r| r.as_ptr() as usize - text.as_ptr() as usize == guess),
            "the guess should be wrong for this test to mean anything"
        );
        assert_fused_reads_like_split(&text);
    }

    #[test]
    fn segments_do_not_depend_on_the_thread_count() {
        use crate::store::ObjectStore as _;
        use crate::store::memory::MemoryStore;
        let text = event(1200, 700, "");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let objects = |threads: usize| {
            let store = Arc::new(MemoryStore::new());
            let ingestor = orders_ingestor(store.clone(), 1, threads);
            runtime.block_on(async {
                let report = ingestor.ingest_event(&text).await.unwrap();
                assert_eq!(report.quarantined.len(), 1);
                let mut out = Vec::new();
                for key in store.keys() {
                    // Log entries carry a wall-clock time; the data objects must match exactly.
                    if key.contains("/changes/") || key.contains("/quarantine/") {
                        out.push((key.clone(), store.get(&key).await.unwrap()));
                    }
                }
                out
            })
        };
        let one = objects(1);
        assert!(
            one.len() >= 2,
            "{:?}",
            one.iter().map(|o| &o.0).collect::<Vec<_>>()
        );
        assert_eq!(objects(2), one);
        assert_eq!(objects(3), one);
    }

    #[test]
    fn a_large_batch_on_two_threads_writes_the_segment_one_thread_writes() {
        // 3,000 records: each thread reads a share of several thousand rows, and the columns
        // of the segment are encoded on both.
        let text = event(3000, usize::MAX, "");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let segments = |threads: usize| {
            use crate::store::ObjectStore as _;
            let store = Arc::new(crate::store::memory::MemoryStore::new());
            let ingestor = orders_ingestor(store.clone(), 1, threads);
            runtime.block_on(async {
                ingestor.ingest_event(&text).await.unwrap();
                let mut out = Vec::new();
                for key in store.keys().into_iter().filter(|k| k.contains("/changes/")) {
                    out.push((key.clone(), store.get(&key).await.unwrap()));
                }
                out
            })
        };
        let one = segments(1);
        assert!(!one.is_empty());
        assert_eq!(segments(2), one);
    }

    #[test]
    fn text_buffers_are_reused_across_batches_without_changing_segments() {
        use crate::store::ObjectStore as _;
        use crate::store::memory::MemoryStore;
        let (small, large) = (event(300, usize::MAX, ""), event(900, 500, ""));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let objects = |store: &MemoryStore| {
            runtime.block_on(async {
                let mut out = Vec::new();
                // Entries carry their writer's `written_at`: the rest must be byte-identical.
                for key in store.keys() {
                    if !key.contains("/inbox/") {
                        out.push((key.clone(), store.get(&key).await.unwrap()));
                    }
                }
                out
            })
        };
        for threads in [1, 2] {
            // One ingestor for a large batch, then a small one: the second writes into the
            // first one's (larger, non-empty) buffers.
            let store = Arc::new(MemoryStore::new());
            let reused = orders_ingestor(store.clone(), 1, threads);
            runtime.block_on(reused.ingest_event(&large)).unwrap();
            let kept = reused.buffers.0.lock().unwrap().len();
            assert!(kept >= 1, "threads={threads}: buffers were not kept");
            store.clear();
            runtime.block_on(reused.ingest_event(&small)).unwrap();
            let fresh_store = Arc::new(MemoryStore::new());
            let fresh = orders_ingestor(fresh_store.clone(), 1, threads);
            runtime.block_on(fresh.ingest_event(&small)).unwrap();
            assert_eq!(objects(&store), objects(&fresh_store), "threads={threads}");
        }
    }

    #[test]
    fn ingestors_sharing_helper_threads_write_what_one_writes_alone() {
        use crate::store::ObjectStore as _;
        use crate::store::memory::MemoryStore;
        // Large enough to be read on two threads.
        let text = event(900, usize::MAX, "");
        let objects = |store: &MemoryStore, runtime: &tokio::runtime::Runtime| {
            runtime.block_on(async {
                let mut out = Vec::new();
                for key in store.keys() {
                    out.push((key.clone(), store.get(&key).await.unwrap()));
                }
                out
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let alone = Arc::new(MemoryStore::new());
        runtime
            .block_on(orders_ingestor(alone.clone(), 1, 2).ingest_event(&text))
            .unwrap();
        let want = objects(&alone, &runtime);
        assert!(want.iter().any(|(k, _)| k.ends_with(".parquet")));
        // Four ingestors on four threads share the one two-thread pool,
        // each writing the batch three times (the second and third find it written).
        std::thread::scope(|s| {
            for caller in 0..4 {
                let (text, want) = (&text, &want);
                s.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let store = Arc::new(MemoryStore::new());
                    let ingestor = orders_ingestor(store.clone(), 1, 2);
                    for _ in 0..3 {
                        runtime.block_on(ingestor.ingest_event(text)).unwrap();
                    }
                    // Entries carry their writer's `written_at`; names and the rest must match.
                    let got: Vec<_> = objects(&store, &runtime)
                        .into_iter()
                        .map(|(k, b)| {
                            if k.contains("/inbox/") {
                                (k, Bytes::new())
                            } else {
                                (k, b)
                            }
                        })
                        .collect();
                    let want: Vec<_> = want
                        .iter()
                        .map(|(k, b)| {
                            if k.contains("/inbox/") {
                                (k.clone(), Bytes::new())
                            } else {
                                (k.clone(), b.clone())
                            }
                        })
                        .collect();
                    assert_eq!(got, want, "caller {caller}");
                });
            }
        });
    }

    #[test]
    fn a_retry_after_an_encoder_change_describes_the_stored_object() {
        use crate::store::ObjectStore as _;
        use crate::store::memory::MemoryStore;
        let text = event(300, usize::MAX, "");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        // The same batch, first written by an encoder that produces other bytes (zstd 3), which
        // stopped before writing the entries, then redelivered to this one (zstd 1).
        for zstd_level in [3, 1] {
            let ingestor = orders_ingestor(store.clone(), zstd_level, 1);
            runtime.block_on(ingestor.ingest_event(&text)).unwrap();
            for key in store.keys().into_iter().filter(|k| k.contains("/inbox/")) {
                if zstd_level == 3 {
                    runtime.block_on(store.delete(&key)).unwrap();
                }
            }
        }
        runtime.block_on(async {
            let mut described = 0;
            for key in store.keys().into_iter().filter(|k| k.contains("/inbox/")) {
                let bytes = store.get(&key).await.unwrap();
                let Ok(LogEntry::Segment(record)) = LogEntry::parse(&key, &bytes) else {
                    continue;
                };
                let stored = store.get(&record.key).await.unwrap();
                assert_eq!(record.sha256, hex::encode(Sha256::digest(&stored)), "{key}");
                assert_eq!(record.bytes, stored.len() as u64, "{key}");
                described += 1;
            }
            assert!(described >= 1, "the redelivery wrote the entries");
        });
    }

    #[test]
    fn a_segment_stored_with_other_changes_is_not_acknowledged() {
        use crate::store::ObjectStore as _;
        use crate::store::memory::MemoryStore;
        let text = event(300, usize::MAX, "");
        // The same records (sequence numbers and event ids, so the same segment name) with
        // other item values.
        let other = text.replace("Berlin", "Bremen");
        assert_ne!(text, other);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        let ingestor = orders_ingestor(store.clone(), 1, 1);
        let first = runtime.block_on(ingestor.ingest_event(&other)).unwrap();
        assert!(first.error.is_none());
        let entries = |store: &MemoryStore| {
            store
                .keys()
                .into_iter()
                .filter(|k| k.contains("/inbox/"))
                .collect::<Vec<_>>()
        };
        for key in entries(&store) {
            runtime.block_on(store.delete(&key)).unwrap();
        }
        let report = runtime.block_on(ingestor.ingest_event(&text)).unwrap();
        let error = report.error.expect("the batch fails");
        assert!(error.contains("other changes"), "{error}");
        assert!(error.contains("column new_image differs"), "{error}");
        assert_eq!(report.failed_from, Some(0));
        assert_eq!(report.segment_conflicts, 1, "counted for the alarm");
        assert_eq!(report.batch_item_failures.len(), 300);
        assert!(
            entries(&store).is_empty(),
            "nothing is published for these records"
        );
    }

    /// Schemas in an S3 location the role may read but not list: S3 answers a missing
    /// `<table>.toml` with 403. Capture falls back to key and image columns (every attribute
    /// is in the images) instead of failing every batch until the records expire.
    #[test]
    fn an_unreadable_schema_file_falls_back_instead_of_stalling() {
        use crate::store::{Listing, ObjectMeta, PutMode, PutResult};
        #[derive(Debug)]
        struct Refusing;
        #[async_trait::async_trait]
        impl ObjectStore for Refusing {
            fn url(&self) -> String {
                "s3://schemas/".into()
            }
            async fn put(&self, key: &str, _: bytes::Bytes, _: PutMode) -> PutResult {
                unreachable!("{key}")
            }
            async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
                Err(StoreError::Denied {
                    op: "get",
                    store: self.url(),
                    key: key.into(),
                    message: "AccessDenied".into(),
                })
            }
            async fn head(&self, _: &str) -> Result<Option<ObjectMeta>, StoreError> {
                Ok(None)
            }
            async fn list(&self, _: &str, _: Option<&str>, _: Option<usize>) -> Listing {
                Ok(vec![])
            }
            async fn delete(&self, _: &str) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Arc::new(crate::store::memory::MemoryStore::new());
        let ingestor = Ingestor::new(
            store.clone(),
            SchemaSource::Store(Arc::new(Refusing)),
            IngestOptions::default(),
        );
        let report = runtime
            .block_on(ingestor.ingest_event(&event(20, usize::MAX, "")))
            .unwrap();
        assert!(report.error.is_none(), "{:?}", report.error);
        assert!(report.batch_item_failures.is_empty());
        assert_eq!(report.segments.len(), 1);
    }

    #[test]
    fn a_record_from_another_table_is_refused_on_every_path() {
        let text = event(6, usize::MAX, "");
        let other =
            "arn:aws:dynamodb:eu-west-1:123456789012:table/invoices/stream/2026-01-01T00:00:00.000";
        let raws = change::parse_event(&text).unwrap();
        let first: serde_json::Value = serde_json::from_str(raws[0]).unwrap();
        let arn = first["eventSourceARN"].as_str().unwrap().to_owned();
        let edited: Vec<String> = raws
            .iter()
            .enumerate()
            .map(|(i, r)| match i {
                2 => r.replace(&arn, other),
                4 => r.replace(&arn, "not-an-arn"),
                _ => r.to_string(),
            })
            .collect();
        let text = format!("{{\"Records\":[{}]}}", edited.join(","));
        let fused = prepare_fused(&text, "orders", &schema(), 1, &BufferPool::default()).unwrap();
        let raws = change::parse_event(&text).unwrap();
        let split = prepare_all(raws, "orders", &schema(), 1, &BufferPool::default());
        for rows in [fused, split] {
            let failed: Vec<usize> = rows
                .prepared
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_err())
                .map(|(i, _)| i)
                .collect();
            assert_eq!(failed, [2, 4]);
            let reason = format!("{:?}", rows.prepared[2].as_ref().err());
            assert!(reason.contains("invoices"), "{reason}");
            // The refused records left nothing in the text buffer: the rows' keys are back
            // to back from its start, so their columns are slices of it.
            let mut at = 0;
            for row in rows.prepared.iter().flatten() {
                assert_eq!(row.keys.start, at);
                at = row.keys.end;
            }
            assert_eq!(
                rows.texts[0].of(rows.prepared[0].as_ref().unwrap())[0].map(|k| k.len()),
                Some(rows.prepared[0].as_ref().unwrap().keys.len())
            );
        }
    }

    #[test]
    fn events_of_other_shapes_are_left_to_the_splitter() {
        let pool = BufferPool::default();
        for text in [
            r#"{"Records":[{"a":1}], "more": 1}"#,
            r#"{"Records":[{"a":1}"#,
            r#"{"Records":[{"a":1}]} x"#,
        ] {
            assert!(
                prepare_fused(text, "t", &schema(), 1, &pool).is_none(),
                "{text}"
            );
        }
        let rows = prepare_fused(r#" { "Records" : [ ] } "#, "t", &schema(), 2, &pool).unwrap();
        assert!(rows.raws.is_empty() && rows.prepared.is_empty());
    }
}

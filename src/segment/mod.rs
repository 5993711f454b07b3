//! Segments: a run of change records turned into one Parquet object and its segment record.
//!
//! ```text
//! PreparedRow ──push──▶ SegmentBuilder (references to the rows + running stats)
//!                              │ finish: each column built from the rows (Arrow, in 1,024-row
//!                              │ chunks; key and image arrays are slices of the batch's
//!                              │ ColumnTexts) and encoded by one task, tasks spread over threads
//!                              ▼
//!                        EncodedSegment { key, Parquet bytes, SegmentRecord }
//! ```
//!
//! One row per change. Columns, in order: `event_id`, `event_name`, `is_ttl_delete`,
//! `sequence_number` (as sent), `approximate_creation_time` (timestamp, ms, UTC), `keys`
//! (canonical DynamoDB JSON), `new_image` and `old_image` (canonical DynamoDB JSON, see
//! [`crate::model::item`]),
//! then the schema file's typed columns. Only types that Athena, Spark, DuckDB and pyarrow all
//! read: UTF-8 strings, booleans, signed 64-bit integers, doubles, decimals, dates and
//! millisecond UTC timestamps. zstd compression (each page with its thread's kept zstd
//! context, see [`crate::segment::pages`]); statistics per page for the small columns and
//! per chunk (truncated) for the large text columns, where page statistics cost time and help
//! no query.
//!
//! Encoding is deterministic: the same records and schema give the same bytes, so a redelivered
//! batch produces an identical object under the identical name (and if an older encoder wrote
//! that object, the capture path describes the stored bytes, see `crate::capture::publish`). Columns can be encoded on
//! several threads (`encode_threads`); the output does not depend on the thread count.

pub mod pages;

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::change::{ChangeKind, ChangeRecord, SequenceNumber, StreamViewType};
use crate::model::item::{ItemHash, SpannedItem, StateDigest, TextColumns};
use crate::model::layout::{HourPartition, TableLayout};
use crate::model::log::{SequenceList, SequenceListBuilder};
use crate::model::schema::{ColumnType, TableSchema, TypedValue};
use crate::segment::pages::{ColumnWriter, CompressedChunk};

mod columns;
mod encode;
mod read;
mod rows;
pub(crate) use columns::*;
pub(crate) use encode::*;
pub use read::*;
pub use rows::*;

/// Version of the segment file layout and of the segment record.
pub const SEGMENT_FORMAT: u32 = 1;

/// Why a segment could not be encoded or read.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Arrow rejected the batch (a bug, or an Arrow limit such as 2 GiB of text).
    #[error("building the Arrow batch for {key}: {source}")]
    Arrow {
        /// Object key of the segment.
        key: String,
        /// The Arrow error.
        source: arrow_schema::ArrowError,
    },
    /// Parquet encoding or decoding failed.
    #[error("Parquet {action} {key}: {source}")]
    Parquet {
        /// "encoding" or "reading".
        action: &'static str,
        /// Object key of the segment.
        key: String,
        /// The Parquet error.
        source: parquet::errors::ParquetError,
    },
    /// A segment with no rows cannot be written.
    #[error("segment {0} has no rows")]
    Empty(String),
    /// A Parquet file that is not a streamseal segment (columns missing or mistyped, images
    /// that are not valid DynamoDB JSON).
    #[error("{key} is not a valid streamseal segment: {reason}")]
    NotASegment {
        /// Object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Tuning of the Parquet encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// zstd level (1 is fast and already compresses DynamoDB JSON 4-8×).
    pub zstd_level: i32,
    /// Threads that encode columns in parallel (1 = the calling thread only).
    pub encode_threads: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            zstd_level: 1,
            encode_threads: 1,
        }
    }
}

/// The description of one segment, written to the segment log next to the segment itself.
/// Seal, verify and restore work from these records without opening the Parquet files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRecord {
    /// [`SEGMENT_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Object key of the Parquet file, relative to the store root.
    pub key: String,
    /// Size of the Parquet file in bytes.
    pub bytes: u64,
    /// Number of rows (changes).
    pub rows: u64,
    /// SHA-256 of the Parquet file, hex.
    pub sha256: String,
    /// Smallest sequence number in the segment.
    pub first_sequence: String,
    /// Largest sequence number in the segment.
    pub last_sequence: String,
    /// Earliest `ApproximateCreationDateTime`, ms since the epoch.
    pub min_time_ms: Option<i64>,
    /// Latest `ApproximateCreationDateTime`, ms since the epoch.
    pub max_time_ms: Option<i64>,
    /// Sum of `H(new) - H(old)` over the rows, when every row carries the images it needs
    /// (`NEW_AND_OLD_IMAGES`); otherwise deep verify recomputes it.
    pub digest_delta: Option<StateDigest>,
    /// Inserts minus removes.
    pub item_count_delta: i64,
    /// How many rows are TTL deletions.
    pub ttl_deletes: u64,
    /// The stream's view type.
    pub stream_view_type: StreamViewType,
    /// The stream ARN the records came from.
    pub event_source_arn: Option<String>,
    /// The shard, when the front end knows it (the stream poller does; Lambda events do not).
    pub shard_id: Option<String>,
    /// When the segment was written (RFC 3339, UTC).
    pub written_at: String,
    /// The sequence number of every row, in row order (front-coded), so a seal can resolve
    /// records stored twice by redelivered or bisected batches without opening the Parquet.
    pub sequence_numbers: SequenceList,
}

/// A finished segment: its key, its bytes, and its record (with `written_at` still empty).
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    /// Object key.
    pub key: String,
    /// Name tag shared by the segment and its log entry.
    pub tag: String,
    /// The Parquet file.
    pub bytes: Bytes,
    /// SHA-256 of `bytes` (the record has it in hex; the S3 store sends it as the checksum).
    pub sha256: [u8; 32],
    /// Its description.
    pub record: SegmentRecord,
}

/// Collects one segment's rows (by reference). Rows are not copied; they are turned into Arrow
/// columns at [`SegmentBuilder::finish`], each column by the thread that encodes it, and the
/// segment record's statistics are gathered there too, beside the columns.
pub struct SegmentBuilder<'s, 'r> {
    schema: &'s TableSchema,
    rows: Vec<&'r PreparedRow<'r>>,
}

impl<'s, 'r> SegmentBuilder<'s, 'r> {
    /// A builder for about `capacity` rows.
    pub fn new(schema: &'s TableSchema, capacity: usize) -> SegmentBuilder<'s, 'r> {
        SegmentBuilder {
            schema,
            rows: Vec::with_capacity(capacity),
        }
    }

    /// Appends one change.
    pub fn push(&mut self, row: &'r PreparedRow<'r>) {
        self.rows.push(row);
    }

    /// Encodes the rows as Parquet and describes the result. `texts` holds the rows' key and
    /// image texts (see [`PreparedRow::texts`]).
    pub fn finish(
        self,
        layout: &TableLayout,
        partition: HourPartition,
        options: EncodeOptions,
        texts: &[ColumnTexts],
    ) -> Result<EncodedSegment, SegmentError> {
        finish_segments(vec![(partition, self)], layout, options, texts)
            .pop()
            .unwrap_or_else(|| Err(SegmentError::Empty(layout.changes_prefix())))
    }

    /// The segment of these rows, from its encoding and statistics.
    fn describe(
        &self,
        layout: &TableLayout,
        partition: HourPartition,
        stats: RowStats,
        encoded: Result<Encoded, Encoding>,
    ) -> Result<EncodedSegment, SegmentError> {
        let Some(view_type) = self.rows.first().map(|r| r.view_type) else {
            return Err(SegmentError::Empty(layout.changes_prefix()));
        };
        let (first, last) = (
            self.rows[stats.first].sequence.clone(),
            self.rows[stats.last].sequence.clone(),
        );
        let tag = stats.tag.finish();
        let key = layout.segment_key(partition, &first, &last, &tag);
        let Encoded { bytes, sha256 } = encoded.map_err(|e| e.at(key.clone()))?;
        let record = SegmentRecord {
            format: SEGMENT_FORMAT,
            table: layout.table().to_owned(),
            key: key.clone(),
            bytes: bytes.len() as u64,
            rows: self.rows.len() as u64,
            sha256: hex::encode(sha256),
            first_sequence: first.to_string(),
            last_sequence: last.to_string(),
            min_time_ms: stats.min_time,
            max_time_ms: stats.max_time,
            digest_delta: stats.digest,
            item_count_delta: stats.count_delta,
            ttl_deletes: stats.ttl_deletes,
            stream_view_type: view_type,
            event_source_arn: stats.arn,
            shard_id: None,
            written_at: String::new(),
            sequence_numbers: stats.sequences.finish(),
        };
        Ok(EncodedSegment {
            key,
            tag,
            bytes: Bytes::from(bytes),
            sha256,
            record,
        })
    }
}

/// Encodes a batch's segments (each [`SegmentBuilder::finish`] would give the same bytes)
/// with one pool of threads for all of them, so that a small segment is encoded beside a
/// large one instead of after it. One result per segment, in order; the rows and `texts` are
/// no longer borrowed when it returns.
pub(crate) fn finish_segments(
    segments: Vec<(HourPartition, SegmentBuilder<'_, '_>)>,
    layout: &TableLayout,
    options: EncodeOptions,
    texts: &[ColumnTexts],
) -> Vec<Result<EncodedSegment, SegmentError>> {
    let jobs: Vec<Job> = segments
        .iter()
        .filter_map(|(_, builder)| {
            Some(Job {
                view_type: builder.rows.first()?.view_type,
                columns: (builder.schema, arrow_schema(builder.schema)),
                rows: &builder.rows,
            })
        })
        .collect();
    let mut encoded =
        encode_segments(texts, layout.table(), (options, CHUNK_ROWS), &jobs).into_iter();
    segments
        .iter()
        .map(|(partition, builder)| {
            if builder.rows.is_empty() {
                return Err(SegmentError::Empty(layout.changes_prefix()));
            }
            // One encoding per segment that has rows, in order.
            let (encoded, stats) = encoded.next().unwrap_or_else(|| {
                (
                    Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                        "segment was not encoded".into(),
                    ))),
                    RowStats::of(&builder.rows),
                )
            });
            builder.describe(layout, *partition, stats, encoded)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::workload::Workload;
    use crate::model::change::{ChangeRecord, parse_event};
    use crate::model::item::{Canonicalizer, TextColumns};

    #[test]
    fn the_name_tag_is_the_sha256_of_its_documented_text() {
        // The tag names stored objects, so how it is computed may change but not its value:
        // SHA-256 over "<arn>\n<view type>\n" and "<sequence>\n<event id>\n" per row, whether
        // the rows are few, span many flushes, or one row is longer than the others put
        // together.
        for rows in [0usize, 1, 700, 5000] {
            let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000";
            let mut tag = SegmentTag::new(Some(arn), StreamViewType::NewAndOldImages);
            let mut text = format!("{arn}\nNEW_AND_OLD_IMAGES\n");
            for i in 0..rows {
                let sequence = format!("{}", 10u128.pow(20) + i as u128 * 7919);
                let event_id = if i == 3 {
                    "e".repeat(40_000)
                } else {
                    format!("{i:08x}-0000-4000-8000-000000000000")
                };
                tag.push(&sequence, &event_id);
                text.push_str(&format!("{sequence}\n{event_id}\n"));
            }
            let want = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
            assert_eq!(tag.finish(), want, "{rows} rows");
        }
        let none = SegmentTag::new(None, StreamViewType::KeysOnly);
        assert_eq!(
            none.finish(),
            hex::encode(&Sha256::digest(b"\nKEYS_ONLY\n")[..8])
        );
    }

    /// The rows of `text`'s records, record `i` read into buffer `buffer(i)` of two (as two
    /// readers would), with `edit` applied to each row and its buffer as it is read.
    fn rows_in_two_buffers<'t>(
        text: &'t str,
        schema: &TableSchema,
        buffer: impl Fn(usize) -> usize,
        mut edit: impl FnMut(usize, &mut PreparedRow<'t>, &mut TextColumns),
    ) -> (Vec<PreparedRow<'t>>, [ColumnTexts; 2]) {
        let mut canon = Canonicalizer::new();
        let mut two = [TextColumns::default(), TextColumns::default()];
        let mut rows = Vec::new();
        for (i, raw) in parse_event(text).expect("event").into_iter().enumerate() {
            let rec = ChangeRecord::parse(raw, i, &mut canon, &schema.paths).expect("record");
            let t = buffer(i);
            let mut row = PreparedRow::new(rec.into_spanned(&mut two[t]), schema, t);
            edit(i, &mut row, &mut two[t]);
            rows.push(row);
        }
        (rows, two.map(ColumnTexts::from))
    }

    #[test]
    fn id_and_sequence_columns_are_the_fields() {
        let schema = TableSchema::default();
        let mut w = Workload::new(9, "orders", StreamViewType::NewAndOldImages, 256);
        let text = w.next_event(500);
        let (rows, texts) = rows_in_two_buffers(
            &text,
            &schema,
            |i| usize::from(i % 3 == 0),
            |i, row, _| {
                // Event ids holding a line separator, nothing, or non-ASCII text.
                match i % 50 {
                    7 => row.event_id = Cow::Owned("one\ntwo\n".to_owned()),
                    8 => row.event_id = Cow::Owned(String::new()),
                    9 => row.event_id = Cow::Owned("\u{e9}t\u{e9}".to_owned()),
                    _ => {}
                }
            },
        );
        let refs: Vec<&PreparedRow<'_>> = rows.iter().collect();
        let column = |i: usize| -> Vec<String> {
            let a = build_column(&schema, &refs, &texts, i).expect("column");
            let a = a.as_any().downcast_ref::<StringArray>().expect("strings");
            assert_eq!(a.null_count(), 0);
            a.iter().map(|v| v.unwrap_or("<null>").to_owned()).collect()
        };
        let ids: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
        let seqs: Vec<String> = rows
            .iter()
            .map(|r| r.sequence.as_str().to_owned())
            .collect();
        assert_eq!(column(0), ids);
        assert_eq!(column(3), seqs);
    }

    #[test]
    fn row_statistics_find_the_extremes_by_number() {
        let schema = TableSchema::default();
        let mut w = Workload::new(13, "orders", StreamViewType::NewAndOldImages, 256);
        let text = w.next_event(400);
        let (rows, _) = rows_in_two_buffers(
            &text,
            &schema,
            |i| usize::from(i >= 150),
            |i, row, _| {
                // Leading zeros, other lengths, and the extremes away from the ends, where the
                // order of the texts is not the order of the numbers.
                let seq = match i {
                    123 => "1".to_owned(),
                    200 => "99".to_owned(),
                    321 => format!("1{}", "0".repeat(39)),
                    _ if i % 7 == 0 => format!("000{}", row.sequence.as_str()),
                    _ => row.sequence.as_str().to_owned(),
                };
                row.sequence = SequenceNumber::parse(&seq).expect("sequence");
            },
        );
        let refs: Vec<&PreparedRow<'_>> = rows.iter().collect();
        let stats = RowStats::of(&refs);
        assert_eq!((stats.first, stats.last), (123, 321));
        let seqs: Vec<&str> = rows.iter().map(|r| r.sequence.as_str()).collect();
        assert_eq!(stats.sequences.finish().decode().expect("list"), seqs);
        let mut tag = SegmentTag::new(refs[0].event_source_arn.as_deref(), refs[0].view_type);
        for r in &refs {
            tag.push(r.sequence.as_str(), &r.event_id);
        }
        assert_eq!(stats.tag.finish(), tag.finish());
    }

    #[test]
    fn captured_values_become_the_rows_typed_values_in_place() {
        let schema = orders_schema();
        let text = orders_event();
        let mut canon = Canonicalizer::new();
        let mut texts = TextColumns::default();
        let mut checked = 0;
        for (i, raw) in parse_event(&text)
            .expect("event")
            .into_iter()
            .enumerate()
            .take(50)
        {
            let rec = ChangeRecord::parse(raw, i, &mut canon, &schema.paths).expect("record");
            let rec = rec.into_spanned(&mut texts);
            let Some(captured) = rec.new_image.as_ref().or(rec.old_image.as_ref()) else {
                continue;
            };
            let (list, len) = (
                captured.captured.as_ptr().cast::<u8>(),
                captured.captured.len(),
            );
            let row = PreparedRow::new(rec, &schema, 0);
            assert_eq!(len, schema.columns.len());
            assert_eq!(row.typed.len(), schema.columns.len());
            assert_eq!(
                row.typed.as_ptr().cast::<u8>(),
                list,
                "record {i}: a new list"
            );
            checked += 1;
        }
        assert!(checked > 40, "{checked} rows had an image");
    }

    fn orders_schema() -> TableSchema {
        TableSchema::parse(include_str!("../../schemas/orders.toml"), "orders.toml")
            .expect("orders schema")
    }

    /// A 2,500-record `orders` event.
    fn orders_event() -> String {
        let mut w = Workload::new(3, "orders", StreamViewType::NewAndOldImages, 512);
        w.next_event(2500);
        w.next_event(2500)
    }

    /// The rows of `text` twice: with their texts in one buffer, and in two buffers split at
    /// record `split` (as two threads would read them).
    #[allow(clippy::type_complexity)]
    fn orders_rows<'t>(
        text: &'t str,
        schema: &TableSchema,
        split: usize,
    ) -> (
        (Vec<PreparedRow<'t>>, [ColumnTexts; 1]),
        (Vec<PreparedRow<'t>>, [ColumnTexts; 2]),
    ) {
        let mut canon = Canonicalizer::new();
        let (mut one, mut two) = (
            TextColumns::default(),
            [TextColumns::default(), TextColumns::default()],
        );
        let (mut rows, mut rows_two) = (Vec::new(), Vec::new());
        for (i, raw) in parse_event(text).expect("event").into_iter().enumerate() {
            let rec = ChangeRecord::parse(raw, i, &mut canon, &schema.paths).expect("record");
            let t = usize::from(i >= split);
            rows_two.push(PreparedRow::new(
                rec.clone().into_spanned(&mut two[t]),
                schema,
                t,
            ));
            rows.push(PreparedRow::new(rec.into_spanned(&mut one), schema, 0));
        }
        (
            (rows, [ColumnTexts::from(one)]),
            (rows_two, two.map(ColumnTexts::from)),
        )
    }

    #[test]
    fn chunked_columns_encode_to_the_bytes_of_whole_columns() {
        let schema = orders_schema();
        let text = orders_event();
        // The rows twice: with their texts in one buffer, and in two buffers split inside a
        // chunk (as two threads would read them), where the chunk across the split is copied.
        let split = 2100;
        let ((rows, one), (rows_two, two)) = orders_rows(&text, &schema, split);
        assert!(rows.len() > 2 * CHUNK_ROWS && !rows.len().is_multiple_of(CHUNK_ROWS));
        assert!(!split.is_multiple_of(CHUNK_ROWS));
        let arrow = arrow_schema(&schema);
        let encode =
            |rows: &[&PreparedRow<'_>], texts: &[ColumnTexts], chunk_rows, encode_threads| {
                let options = EncodeOptions {
                    zstd_level: 1,
                    encode_threads,
                };
                let encoded = encode_parquet(
                    &schema,
                    &arrow,
                    (rows, texts),
                    ("orders", StreamViewType::NewAndOldImages),
                    (options, chunk_rows),
                );
                match encoded {
                    Ok(bytes) => bytes,
                    Err(_) => panic!("encoding failed"),
                }
            };
        let (rows, rows_two): (Vec<_>, Vec<_>) = (rows.iter().collect(), rows_two.iter().collect());
        let whole = encode(&rows, &one, usize::MAX, 1);
        assert_eq!(encode(&rows, &one, CHUNK_ROWS, 1), whole);
        assert_eq!(encode(&rows, &one, CHUNK_ROWS, 2), whole);
        assert_eq!(encode(&rows_two, &two, CHUNK_ROWS, 1), whole);
        assert_eq!(encode(&rows_two, &two, CHUNK_ROWS, 3), whole);
        // A row pointing outside the buffers is an error, not a panic.
        let mut wrong = rows_two[7].clone();
        wrong.texts = 2;
        let mut bad = rows_two.clone();
        bad[7] = &wrong;
        assert!(
            encode_parquet(
                &schema,
                &arrow,
                (&bad, &two),
                ("orders", StreamViewType::NewAndOldImages),
                (EncodeOptions::default(), CHUNK_ROWS),
            )
            .is_err()
        );
        // A chunk size that is not the writer's mini-batch gives other pages: the test can tell.
        assert_ne!(encode(&rows, &one, 1000, 1), whole);
        // Through the builder: the same segment.
        let layout = TableLayout::new("orders");
        let mut builder = SegmentBuilder::new(&schema, rows_two.len());
        for &row in &rows_two {
            builder.push(row);
        }
        let segment = builder
            .finish(
                &layout,
                HourPartition::of_millis(0),
                EncodeOptions::default(),
                &two,
            )
            .expect("segment");
        assert_eq!(segment.bytes.as_ref(), whole.as_slice());
    }

    #[test]
    fn segments_are_the_bytes_parquet_itself_writes() {
        // Parquet's own `ArrowWriter`, given the same rows and properties, writes the same
        // bytes: multi-page image columns, dictionary columns, a three-row segment, two zstd
        // levels. (It embeds the Arrow schema itself.)
        let schema = orders_schema();
        let text = orders_event();
        let ((rows, one), _) = orders_rows(&text, &schema, 2100);
        let rows: Vec<&PreparedRow<'_>> = rows.iter().collect();
        let arrow = arrow_schema(&schema);
        let orders = ("orders", StreamViewType::NewAndOldImages);
        for (n, zstd_level) in [(rows.len(), 1), (rows.len(), 3), (3, 1)] {
            let rows = &rows[..n];
            let columns = (0..arrow.fields().len())
                .map(|i| build_column(&schema, rows, &one, i).expect("column"))
                .collect();
            let batch = RecordBatch::try_new(arrow.clone(), columns).expect("batch");
            let props = segment_properties(&arrow, orders.0, orders.1, zstd_level);
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(Vec::new(), arrow.clone(), Some(props))
                    .expect("writer");
            writer.write(&batch).expect("write");
            let want = writer.into_inner().expect("file");
            for encode_threads in [1, 2] {
                let options = EncodeOptions {
                    zstd_level,
                    encode_threads,
                };
                let got =
                    encode_parquet(&schema, &arrow, (rows, &one), orders, (options, CHUNK_ROWS));
                let Ok(got) = got else {
                    panic!("encoding failed");
                };
                assert!(
                    got == want,
                    "{n} rows, level {zstd_level}, {encode_threads} threads: {} bytes, parquet wrote {}",
                    got.len(),
                    want.len()
                );
            }
        }
    }

    #[test]
    fn a_batch_of_segments_encodes_as_each_segment_alone() {
        // A batch that spans hours becomes several segments, encoded by one pool of threads.
        // Whatever the thread count, each is the segment it would be encoded on its own, and
        // an empty one is an error of its own.
        let schema = orders_schema();
        let text = orders_event();
        let split = 2100;
        let (_, (rows, texts)) = orders_rows(&text, &schema, split);
        let rows: Vec<&PreparedRow<'_>> = rows.iter().collect();
        let layout = TableLayout::new("orders");
        let hour = |h: i64| HourPartition::of_millis(h * 3_600_000);
        // A large segment, a small one across the buffers' split, and one of three rows.
        let groups = [
            (hour(0), 0..1900),
            (hour(1), 1900..2497),
            (hour(2), 2497..2500),
        ];
        let builder = |range: Range<usize>| {
            let mut b = SegmentBuilder::new(&schema, range.len());
            for &row in &rows[range] {
                b.push(row);
            }
            b
        };
        let alone: Vec<EncodedSegment> = groups
            .iter()
            .map(|(p, range)| {
                builder(range.clone())
                    .finish(&layout, *p, EncodeOptions::default(), &texts)
                    .expect("segment")
            })
            .collect();
        let same = |got: &EncodedSegment, want: &EncodedSegment| {
            got.key == want.key
                && got.tag == want.tag
                && got.bytes == want.bytes
                && got.record == want.record
        };
        for encode_threads in [1, 2, 3] {
            let options = EncodeOptions {
                zstd_level: 1,
                encode_threads,
            };
            let batch = groups
                .iter()
                .map(|(p, range)| (*p, builder(range.clone())))
                .collect();
            let got = finish_segments(batch, &layout, options, &texts);
            assert_eq!(got.len(), alone.len());
            for (got, want) in got.iter().zip(&alone) {
                let got = got.as_ref().expect("segment");
                assert!(same(got, want), "{encode_threads} threads: {}", want.key);
            }

            // An empty segment between them.
            let mut batch: Vec<_> = groups
                .iter()
                .map(|(p, range)| (*p, builder(range.clone())))
                .collect();
            batch.insert(1, (hour(5), SegmentBuilder::new(&schema, 0)));
            let got = finish_segments(batch, &layout, options, &texts);
            assert_eq!(got.len(), alone.len() + 1);
            assert!(matches!(got[1], Err(SegmentError::Empty(_))));
            for (got, want) in [&got[0], &got[2], &got[3]].into_iter().zip(&alone) {
                let got = got.as_ref().expect("segment");
                assert!(same(got, want), "{encode_threads} threads: {}", want.key);
            }
        }
        assert!(finish_segments(Vec::new(), &layout, EncodeOptions::default(), &texts).is_empty());
    }
}

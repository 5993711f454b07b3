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
//! [`crate::item`]),
//! then the schema file's typed columns. Only types that Athena, Spark, DuckDB and pyarrow all
//! read: UTF-8 strings, booleans, signed 64-bit integers, doubles, decimals, dates and
//! millisecond UTC timestamps. zstd compression (each page with its thread's kept zstd
//! context, see [`crate::pages`]); statistics per page for the small columns and
//! per chunk (truncated) for the large text columns, where page statistics cost time and help
//! no query.
//!
//! Encoding is deterministic: the same records and schema give the same bytes, so a redelivered
//! batch produces an identical object under the identical name (and if an older encoder wrote
//! that object, ingest describes the stored bytes, see `ingest`). Columns can be encoded on
//! several threads (`encode_threads`); the output does not depend on the thread count.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

use crate::change::{ChangeKind, ChangeRecord, SequenceNumber, StreamViewType};
use crate::item::{ItemHash, SpannedItem, StateDigest, TextColumns};
use crate::layout::{HourPartition, TableLayout};
use crate::log::{SequenceList, SequenceListBuilder};
use crate::pages::{ColumnWriter, CompressedChunk};
use crate::schema::{ColumnType, TableSchema, TypedValue};

/// Version of the segment file layout and of the segment record.
pub const SEGMENT_FORMAT: u32 = 1;

/// Columns holding whole items: large, unique per row, no use for dictionaries or page stats.
const LARGE_TEXT_COLUMNS: &[&str] = &["new_image", "old_image", "keys", "event_id"];

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

/// The name tag of a segment: the first 8 bytes (hex) of SHA-256 over the stream ARN, the view
/// type, and every row's sequence number and event id. The stream (a recreated table gets a new
/// one) and the view type are part of a segment's identity, not only its sequence numbers. Deep
/// verify recomputes it from the rows to prove an object is the segment its name claims.
#[derive(Clone)]
pub struct SegmentTag(Sha256);

impl SegmentTag {
    /// Starts the tag of a segment from `arn` with `view_type`.
    pub fn new(arn: Option<&str>, view_type: StreamViewType) -> SegmentTag {
        let mut h = Sha256::new();
        h.update(arn.unwrap_or("").as_bytes());
        h.update(b"\n");
        h.update(view_type.as_str().as_bytes());
        h.update(b"\n");
        SegmentTag(h)
    }

    /// Adds a row.
    pub fn push(&mut self, sequence: &str, event_id: &str) {
        // One update per row rather than four: the hasher copies each piece into its block
        // buffer, and per-call overhead dominated for pieces this small.
        let mut line = [0u8; 128];
        let (s, e) = (sequence.as_bytes(), event_id.as_bytes());
        let n = s.len() + e.len() + 2;
        if n <= line.len() {
            line[..s.len()].copy_from_slice(s);
            line[s.len()] = b'\n';
            line[s.len() + 1..n - 1].copy_from_slice(e);
            line[n - 1] = b'\n';
            self.0.update(&line[..n]);
        } else {
            self.0.update(s);
            self.0.update(b"\n");
            self.0.update(e);
            self.0.update(b"\n");
        }
    }

    /// Adds rows already written as their lines (`<sequence>\n<event id>\n` each, see
    /// [`PreparedRow::write_tag_line`]).
    fn push_lines(&mut self, lines: &[u8]) {
        self.0.update(lines);
    }

    /// The tag: 16 hex digits.
    pub fn finish(self) -> String {
        hex::encode(&self.0.finalize()[..8])
    }
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

enum TypedBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder),
    Date(Date32Builder),
    Timestamp(TimestampMillisecondBuilder),
}

impl TypedBuilder {
    fn new(t: ColumnType, capacity: usize) -> TypedBuilder {
        match t {
            ColumnType::String => {
                TypedBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            ColumnType::Bigint => TypedBuilder::I64(Int64Builder::with_capacity(capacity)),
            ColumnType::Double => TypedBuilder::F64(Float64Builder::with_capacity(capacity)),
            ColumnType::Boolean => TypedBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Decimal { precision, scale } => TypedBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(precision, scale)),
            ),
            ColumnType::Date => TypedBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => TypedBuilder::Timestamp(
                TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
        }
    }

    fn append(&mut self, v: &TypedValue) {
        match (self, v) {
            (TypedBuilder::Str(b), TypedValue::Str(s)) => b.append_value(s),
            (TypedBuilder::I64(b), TypedValue::I64(x)) => b.append_value(*x),
            (TypedBuilder::F64(b), TypedValue::F64(x)) => b.append_value(*x),
            (TypedBuilder::Bool(b), TypedValue::Bool(x)) => b.append_value(*x),
            (TypedBuilder::Decimal(b), TypedValue::Decimal(x)) => b.append_value(x.get()),
            (TypedBuilder::Date(b), TypedValue::Date(x)) => b.append_value(*x),
            (TypedBuilder::Timestamp(b), TypedValue::TimestampMs(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            TypedBuilder::Str(b) => b.append_null(),
            TypedBuilder::I64(b) => b.append_null(),
            TypedBuilder::F64(b) => b.append_null(),
            TypedBuilder::Bool(b) => b.append_null(),
            TypedBuilder::Decimal(b) => b.append_null(),
            TypedBuilder::Date(b) => b.append_null(),
            TypedBuilder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            TypedBuilder::Str(mut b) => Arc::new(b.finish()),
            TypedBuilder::I64(mut b) => Arc::new(b.finish()),
            TypedBuilder::F64(mut b) => Arc::new(b.finish()),
            TypedBuilder::Bool(mut b) => Arc::new(b.finish()),
            TypedBuilder::Decimal(mut b) => Arc::new(b.finish()),
            TypedBuilder::Date(mut b) => Arc::new(b.finish()),
            TypedBuilder::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The Arrow schema of a segment for a table schema.
pub fn arrow_schema(schema: &TableSchema) -> SchemaRef {
    let mut fields = vec![
        Arc::new(Field::new("event_id", DataType::Utf8, false)),
        Arc::new(Field::new("event_name", DataType::Utf8, false)),
        Arc::new(Field::new("is_ttl_delete", DataType::Boolean, false)),
        Arc::new(Field::new("sequence_number", DataType::Utf8, false)),
        Arc::new(Field::new(
            "approximate_creation_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        )),
        Arc::new(Field::new("keys", DataType::Utf8, false)),
        Arc::new(Field::new("new_image", DataType::Utf8, true)),
        Arc::new(Field::new("old_image", DataType::Utf8, true)),
    ];
    fields.extend(schema.typed_fields());
    Arc::new(Schema::new(fields))
}

/// The [`TextColumns`] of a batch, frozen into Arrow buffers that its segments' columns share
/// (slices of them become the `keys`, `new_image` and `old_image` arrays without copying).
#[derive(Debug, Clone)]
pub struct ColumnTexts {
    keys: Buffer,
    new_image: Buffer,
    old_image: Buffer,
    /// Name-tag lines (see [`TextColumns::tags`]); only hashed, never a column.
    tags: Vec<u8>,
}

impl ColumnTexts {
    /// The key, new image and old image texts and the name-tag line of `row`, which must be
    /// one of this buffer's rows (`None` for a range outside it, or what the row does not
    /// have).
    #[cfg(test)]
    pub(crate) fn of(&self, row: &PreparedRow<'_>) -> [Option<&[u8]>; 4] {
        [
            self.keys.get(row.keys.clone()),
            row.new_image.clone().and_then(|r| self.new_image.get(r)),
            row.old_image.clone().and_then(|r| self.old_image.get(r)),
            row.tag_line.clone().and_then(|r| self.tags.get(r)),
        ]
    }

    /// The buffers back, for reuse, once no array uses them any more (`None` while one does).
    pub fn into_text_columns(self) -> Option<TextColumns> {
        Some(TextColumns {
            keys: self.keys.into_vec().ok()?,
            new_image: self.new_image.into_vec().ok()?,
            old_image: self.old_image.into_vec().ok()?,
            tags: self.tags,
        })
    }
}

impl From<TextColumns> for ColumnTexts {
    fn from(t: TextColumns) -> ColumnTexts {
        ColumnTexts {
            keys: Buffer::from_vec(t.keys),
            new_image: Buffer::from_vec(t.new_image),
            old_image: Buffer::from_vec(t.old_image),
            tags: t.tags,
        }
    }
}

/// A change record reduced to what a segment row needs: where its canonical key and image
/// texts are, image hashes and typed values. Preparing rows is independent per record, which
/// is what lets a batch be prepared on several threads (each writing its own [`TextColumns`]).
#[derive(Debug, Clone)]
pub struct PreparedRow<'a> {
    /// `eventID`.
    pub event_id: Cow<'a, str>,
    /// `eventName`.
    pub kind: ChangeKind,
    /// Sequence number.
    pub sequence: SequenceNumber,
    /// Approximate creation time, ms since the epoch.
    pub time_ms: Option<i64>,
    /// TTL deletion.
    pub ttl_delete: bool,
    /// Which [`ColumnTexts`] of the batch holds this row's texts (an index into the slice
    /// given to [`SegmentBuilder::finish`]).
    pub texts: usize,
    /// Canonical DynamoDB JSON of the key: where it is in `keys`.
    pub keys: Range<usize>,
    /// Canonical new image: where it is in `new_image`.
    pub new_image: Option<Range<usize>>,
    /// Canonical old image: where it is in `old_image`.
    pub old_image: Option<Range<usize>>,
    /// Hash of the new image.
    pub new_hash: Option<ItemHash>,
    /// Hash of the old image.
    pub old_hash: Option<ItemHash>,
    /// Typed column values, in schema order.
    pub typed: Vec<TypedValue<'a>>,
    /// The stream's view type.
    pub view_type: StreamViewType,
    /// Stream ARN.
    pub event_source_arn: Option<Cow<'a, str>>,
    /// Where the row's name-tag line is in its texts' `tags`, when the reader wrote it
    /// ([`PreparedRow::write_tag_line`]); otherwise the tag is made from the fields.
    pub tag_line: Option<Range<usize>>,
}

impl<'a> PreparedRow<'a> {
    /// Reduces a parsed record to its row; its texts are in the batch's `texts`-th
    /// [`TextColumns`].
    pub fn new(
        mut rec: ChangeRecord<'a, SpannedItem<'a>>,
        schema: &TableSchema,
        texts: usize,
    ) -> PreparedRow<'a> {
        let source = rec.new_image.as_mut().or(rec.old_image.as_mut());
        // The captured list becomes the typed list in place (the same size and alignment per
        // element, and the list first in the zip): no allocation per row, and the memory is
        // the list the image's scan has just written.
        let mut typed: Vec<TypedValue<'a>> = match source {
            Some(img) => std::mem::take(&mut img.captured)
                .into_iter()
                .zip(&schema.columns)
                .map(|(v, c)| c.typed(v))
                .collect(),
            None => Vec::new(),
        };
        // One value per column whatever was captured, so every Arrow column has every row.
        typed.resize(schema.columns.len(), TypedValue::Null);
        PreparedRow {
            texts,
            keys: rec.keys.span,
            new_hash: rec.new_image.as_ref().and_then(|i| i.hash),
            old_hash: rec.old_image.as_ref().and_then(|i| i.hash),
            new_image: rec.new_image.map(|i| i.span),
            old_image: rec.old_image.map(|i| i.span),
            typed,
            event_id: rec.event_id,
            kind: rec.kind,
            sequence: rec.sequence,
            time_ms: rec.approximate_creation_ms,
            ttl_delete: rec.ttl_delete,
            view_type: rec.view_type,
            event_source_arn: rec.event_source_arn,
            tag_line: None,
        }
    }

    /// Appends the row's name-tag line to `texts.tags` (which must be the buffer of its
    /// `texts` index) and remembers where it is.
    pub fn write_tag_line(&mut self, texts: &mut TextColumns) {
        let t = &mut texts.tags;
        let start = t.len();
        t.extend_from_slice(self.sequence.as_str().as_bytes());
        t.push(b'\n');
        t.extend_from_slice(self.event_id.as_bytes());
        t.push(b'\n');
        self.tag_line = Some(start..t.len());
    }
}

/// Collects one segment's rows (by reference). Rows are not copied; they are turned into Arrow
/// columns at [`SegmentBuilder::finish`], each column by the thread that encodes it, and the
/// segment record's statistics are gathered there too, alongside the columns.
pub struct SegmentBuilder<'s, 'r> {
    schema: &'s TableSchema,
    rows: Vec<&'r PreparedRow<'r>>,
}

/// What a segment record says about the rows: gathered in one pass over them (see
/// [`RowStats::of`]).
struct RowStats {
    tag: SegmentTag,
    sequences: SequenceListBuilder,
    /// Rows holding the smallest and largest sequence numbers.
    first: usize,
    last: usize,
    min_time: Option<i64>,
    max_time: Option<i64>,
    /// `None` when a row lacks an image the digest needs (a view type without both).
    digest: Option<StateDigest>,
    count_delta: i64,
    ttl_deletes: u64,
    arn: Option<String>,
}

impl RowStats {
    /// The statistics of `rows`, in their order (the tag and the sequence list depend on it);
    /// `texts` holds their name-tag lines, if the reader wrote them.
    fn of(rows: &[&PreparedRow<'_>], texts: &[ColumnTexts]) -> RowStats {
        // The tag starts from the first row's stream and view type; the record names the
        // first stream ARN any row has.
        let first = rows.first();
        let mut stats = RowStats {
            tag: SegmentTag::new(
                first.and_then(|r| r.event_source_arn.as_deref()),
                first.map_or(StreamViewType::KeysOnly, |r| r.view_type),
            ),
            sequences: SequenceListBuilder::default(),
            first: 0,
            last: 0,
            min_time: None,
            max_time: None,
            digest: Some(StateDigest::ZERO),
            count_delta: 0,
            ttl_deletes: 0,
            arn: rows
                .iter()
                .find_map(|r| r.event_source_arn.as_deref())
                .map(str::to_owned),
        };
        // Lines written back to back are hashed as one run, straight from their buffer.
        let mut run: Option<(usize, Range<usize>)> = None;
        let flush = |tag: &mut SegmentTag, run: Option<(usize, Range<usize>)>| {
            if let Some((t, span)) = run
                && let Some(lines) = texts.get(t).and_then(|t| t.tags.get(span))
            {
                tag.push_lines(lines);
            }
        };
        // The texts of the lowest and highest sequence numbers so far (rows `first`, `last`).
        let (mut first_seq, mut last_seq) = ("", "");
        for (n, row) in rows.iter().enumerate() {
            // A row's line is used when it splits into the row's sequence number and event id
            // (`tag_line_parts`); otherwise the tag takes the fields.
            let parts = tag_line_parts(row, texts);
            let line = parts
                .and(row.tag_line.clone())
                .map(|span| (row.texts, span));
            match (line, &mut run) {
                (Some((t, span)), Some((rt, rs))) if *rt == t && rs.end == span.start => {
                    rs.end = span.end;
                }
                (Some(line), _) => flush(&mut stats.tag, run.replace(line)),
                (None, _) => {
                    flush(&mut stats.tag, run.take());
                    stats.tag.push(row.sequence.as_str(), &row.event_id);
                }
            }
            // The sequence number from the row's tag line when it has one (see
            // `tag_line_parts`): by now each row's own text is a cache miss.
            let seq = parts
                .and_then(|(seq, _)| std::str::from_utf8(seq).ok())
                .unwrap_or(row.sequence.as_str());
            stats.sequences.push(seq);
            if n == 0 {
                (first_seq, last_seq) = (seq, seq);
            }
            if SequenceNumber::cmp_text(seq, first_seq).is_lt() {
                (stats.first, first_seq) = (n, seq);
            }
            if SequenceNumber::cmp_text(seq, last_seq).is_gt() {
                (stats.last, last_seq) = (n, seq);
            }
            if let Some(t) = row.time_ms {
                stats.min_time = Some(stats.min_time.map_or(t, |m| m.min(t)));
                stats.max_time = Some(stats.max_time.map_or(t, |m| m.max(t)));
            }
            match row.kind {
                ChangeKind::Insert => stats.count_delta += 1,
                ChangeKind::Remove => stats.count_delta -= 1,
                ChangeKind::Modify => {}
            }
            if row.ttl_delete {
                stats.ttl_deletes += 1;
            }
            // The digest moves by H(new) - H(old); it is only known when the stream carries
            // both.
            if let Some(digest) = &mut stats.digest {
                if row.view_type == StreamViewType::NewAndOldImages {
                    if let Some(h) = &row.new_hash {
                        digest.add_item(h);
                    }
                    if let Some(h) = &row.old_hash {
                        digest.remove_item(h);
                    }
                } else {
                    stats.digest = None;
                }
            }
        }
        flush(&mut stats.tag, run);
        stats
    }
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
        self.finish_from(layout, partition, options, texts, None)
    }

    /// [`SegmentBuilder::finish`], resuming the column writers of `head` where they stopped
    /// when it began this segment's first rows. A head start that does not fit (other
    /// columns, another partition, table, view type or zstd level, more rows than the segment
    /// has, or other first rows) is set aside and the segment encoded from its first row; either way the
    /// bytes are the same.
    pub fn finish_from(
        self,
        layout: &TableLayout,
        partition: HourPartition,
        options: EncodeOptions,
        texts: &[ColumnTexts],
        head: Option<HeadStart>,
    ) -> Result<EncodedSegment, SegmentError> {
        let mut finished = finish_segments(vec![(partition, self)], layout, options, texts, head);
        finished
            .pop()
            .unwrap_or_else(|| Err(SegmentError::Empty(layout.changes_prefix())))
            .and_then(FinishingSegment::complete)
    }
}

/// Encodes a batch's segments (each [`SegmentBuilder::finish`] would give the same bytes)
/// with one pool of threads for all of them, so that a small segment is encoded beside a
/// large one instead of after it. `head` may have begun the first segment (see
/// [`SegmentBuilder::finish_from`]). One result per segment, in order; the rows and `texts`
/// are no longer borrowed when it returns, and [`complete_segments`] finishes the files.
pub fn finish_segments(
    segments: Vec<(HourPartition, SegmentBuilder<'_, '_>)>,
    layout: &TableLayout,
    options: EncodeOptions,
    texts: &[ColumnTexts],
    mut head: Option<HeadStart>,
) -> Vec<Result<FinishingSegment, SegmentError>> {
    // The statistics are one more task per segment for the encoding threads: serial work
    // before the columns would leave the other threads waiting.
    let stats: Vec<Slot<RowStats>> = segments
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let gathers: Vec<_> = segments
        .iter()
        .zip(&stats)
        .map(|((_, builder), slot)| {
            move || {
                let of = RowStats::of(&builder.rows, texts);
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(of);
                }
            }
        })
        .collect();
    let mut jobs = Vec::new();
    for ((partition, builder), gather) in segments.iter().zip(&gathers) {
        let Some(view_type) = builder.rows.first().map(|r| r.view_type) else {
            continue;
        };
        let schema = arrow_schema(builder.schema);
        let head = head.take().filter(|h| {
            let fits = h.fits(
                &schema,
                &builder.rows,
                *partition,
                (layout.table(), view_type),
                options,
            );
            if !fits {
                tracing::debug!(
                    table = layout.table(),
                    ?partition,
                    "head start does not fit the segment; encoding from its first row"
                );
            }
            fits
        });
        jobs.push(Job {
            columns: (builder.schema, schema),
            rows: &builder.rows,
            view_type,
            head,
            alongside: Some(gather as &(dyn Fn() + Sync)),
        });
    }
    let mut encoded =
        encode_segments(texts, layout.table(), (options, CHUNK_ROWS), jobs).into_iter();
    segments
        .iter()
        .zip(stats)
        .map(|((partition, builder), stats)| {
            if builder.rows.is_empty() {
                return Err(SegmentError::Empty(layout.changes_prefix()));
            }
            // One encoding per segment that has rows, in order.
            let encoded = encoded.next().unwrap_or_else(|| {
                Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                    "segment was not encoded".into(),
                )))
            });
            builder.describe(layout, *partition, stats, encoded)
        })
        .collect()
}

impl SegmentBuilder<'_, '_> {
    /// The segment of these rows, from its encoding and the statistics gathered alongside.
    fn describe(
        &self,
        layout: &TableLayout,
        partition: HourPartition,
        stats: Slot<RowStats>,
        encoded: Result<Assembly, Encoding>,
    ) -> Result<FinishingSegment, SegmentError> {
        let Some(view_type) = self.rows.first().map(|r| r.view_type) else {
            return Err(SegmentError::Empty(layout.changes_prefix()));
        };
        let stats = stats
            .into_inner()
            .ok()
            .flatten()
            .unwrap_or_else(|| RowStats::of(&self.rows, &[]));
        let (first, last) = (
            self.rows[stats.first].sequence.clone(),
            self.rows[stats.last].sequence.clone(),
        );
        let tag = stats.tag.finish();
        let key = layout.segment_key(partition, &first, &last, &tag);
        let assembly = encoded.map_err(|e| e.at(key.clone()))?;
        let record = SegmentRecord {
            format: SEGMENT_FORMAT,
            table: layout.table().to_owned(),
            key: key.clone(),
            // Filled in by `FinishingSegment::complete`, from the file.
            bytes: 0,
            rows: self.rows.len() as u64,
            sha256: String::new(),
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
        Ok(FinishingSegment {
            key,
            tag,
            record,
            assembly,
        })
    }
}

/// A segment whose columns are encoded and described, and whose file may still have to be
/// assembled (the batch's last to finish encoding; see [`complete_segments`]). It borrows
/// neither the rows nor their texts.
pub struct FinishingSegment {
    key: String,
    tag: String,
    record: SegmentRecord,
    assembly: Assembly,
}

impl std::fmt::Debug for FinishingSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishingSegment")
            .field("key", &self.key)
            .field("pending", &matches!(self.assembly, Assembly::Pending(_)))
            .finish_non_exhaustive()
    }
}

impl FinishingSegment {
    /// The segment: its file assembled (if it was not yet) and hashed, and its record's size
    /// and SHA-256 filled in.
    pub fn complete(self) -> Result<EncodedSegment, SegmentError> {
        let FinishingSegment {
            key,
            tag,
            mut record,
            assembly,
        } = self;
        let Encoded { bytes, sha256 } = assembly.finish().map_err(|e| e.at(key.clone()))?;
        record.bytes = bytes.len() as u64;
        record.sha256 = hex::encode(sha256);
        Ok(EncodedSegment {
            key,
            tag,
            bytes: Bytes::from(bytes),
            sha256,
            record,
        })
    }
}

/// Completes [`finish_segments`]' results, in order. When a file is still to be assembled
/// and `threads` allows a helper, `beside` runs on the helper meanwhile (the capture path frees
/// the batch's rows there); otherwise it runs after. Either way it has run on return.
pub fn complete_segments(
    finishing: Vec<Result<FinishingSegment, SegmentError>>,
    threads: usize,
    beside: impl FnOnce() + Send,
) -> Vec<Result<EncodedSegment, SegmentError>> {
    let pending = finishing
        .iter()
        .any(|f| matches!(f, Ok(f) if matches!(f.assembly, Assembly::Pending(_))));
    let complete = |finishing: Vec<Result<FinishingSegment, SegmentError>>| {
        finishing
            .into_iter()
            .map(|f| f.and_then(FinishingSegment::complete))
            .collect()
    };
    let helpers = if pending {
        crate::workers::helpers(threads)
    } else {
        None
    };
    match helpers {
        Some(helpers) => helpers.in_place_scope(|s| {
            s.spawn(move |_| beside());
            complete(finishing)
        }),
        None => {
            let done = complete(finishing);
            beside();
            done
        }
    }
}

fn writer_properties(table: &str, view_type: StreamViewType, zstd_level: i32) -> WriterProperties {
    writer_properties_with(table, view_type, zstd_level, None)
}

/// A segment's writer properties as parquet would take them to compress the segment itself:
/// those of [`writer_properties`], with the columns that zstd cannot shrink left uncompressed.
/// [`segment_writer_setup`] hands the compression to [`crate::pages`].
fn segment_properties(
    schema: &SchemaRef,
    table: &str,
    view_type: StreamViewType,
    zstd_level: i32,
) -> WriterProperties {
    // Columns that stay a few hundred bytes whatever the data (bit-packed booleans, and
    // `event_name`'s three-value dictionary and its 2-bit indices) are left uncompressed:
    // zstd would save them a few dozen bytes, for a frame per page that every reader must
    // decompress. (When they were chosen, each compressed column also cost two new zstd
    // contexts per segment; `crate::pages` has since done away with those.)
    let mut builder = writer_properties(table, view_type, zstd_level).into_builder();
    for field in schema.fields() {
        if field.data_type() == &DataType::Boolean || field.name() == "event_name" {
            builder = builder.set_column_compression(
                ColumnPath::from(field.name().as_str()),
                Compression::UNCOMPRESSED,
            );
        }
    }
    builder.build()
}

/// What a segment is written with: the properties of its file and column writers (the Arrow
/// schema embedded, as `ArrowWriter` does, so Arrow readers get the exact types back), its
/// Parquet schema, and each column's zstd level (`None`: uncompressed). The writers themselves
/// compress nothing: [`crate::pages`] compresses their pages.
fn segment_writer_setup(
    schema: &SchemaRef,
    table: &str,
    view_type: StreamViewType,
    zstd_level: i32,
) -> Result<WriterSetup, Encoding> {
    let mut props = segment_properties(schema, table, view_type, zstd_level);
    parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .map_err(Encoding::Parquet)?;
    let (props, levels) =
        crate::pages::uncompressed_writing(props, &parquet_schema).map_err(Encoding::Parquet)?;
    Ok(WriterSetup {
        props: Arc::new(props),
        parquet_schema,
        levels,
    })
}

/// See [`segment_writer_setup`].
struct WriterSetup {
    props: Arc<WriterProperties>,
    parquet_schema: parquet::schema::types::SchemaDescriptor,
    levels: Arc<[Option<i32>]>,
}

/// One column writer per column of `schema`, each with its own page buffers (they do not
/// write to the file until their chunks are appended to a row group).
fn column_writers<W: std::io::Write + Send>(
    writer: &SerializedFileWriter<W>,
    schema: &SchemaRef,
    levels: &Arc<[Option<i32>]>,
) -> Result<Vec<ColumnWriter>, Encoding> {
    crate::pages::column_writers(writer, schema.clone(), levels).map_err(Encoding::Parquet)
}

/// Every column here is flat, so leaf i is column i. Largest first: the images, the keys, the
/// event ids and sequence numbers, then the small columns.
fn largest_first(columns: usize) -> Vec<usize> {
    const LARGE_FIRST: [usize; 5] = [6, 7, 5, 0, 3];
    let mut order: Vec<usize> = LARGE_FIRST.into_iter().filter(|&i| i < columns).collect();
    order.extend((0..columns).filter(|i| !LARGE_FIRST.contains(i)));
    order
}

/// The column writers of a segment, started on its first rows before the rest of them were
/// read: in a batch read by several threads, the thread that reads the head of the event
/// finishes its smaller share first and encodes its rows, whole steps at a time, while the
/// others are still reading (see `ingest`). [`SegmentBuilder::finish_from`] resumes them.
///
/// Every column advances by whole [`STEP_ROWS`] steps (the writer's mini-batch), so the
/// segment's bytes are those of encoding it in one go.
pub struct HeadStart {
    partition: HourPartition,
    table: String,
    view_type: StreamViewType,
    zstd_level: i32,
    setup: WriterSetup,
    writers: Vec<ColumnWriter>,
    /// Rows each column has encoded, a multiple of [`STEP_ROWS`].
    done: Vec<usize>,
    /// Sequence numbers of the first row and of the last row any column encoded, to check
    /// that they are the segment's.
    ends: Option<(SequenceNumber, SequenceNumber)>,
    arrow: SchemaRef,
}

impl std::fmt::Debug for HeadStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadStart")
            .field("partition", &self.partition)
            .field("table", &self.table)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl HeadStart {
    /// Column writers for a segment of `table` in `partition`, nothing encoded yet.
    pub fn new(
        schema: &TableSchema,
        table: &str,
        view_type: StreamViewType,
        partition: HourPartition,
        zstd_level: i32,
    ) -> Result<HeadStart, SegmentError> {
        let arrow = arrow_schema(schema);
        let started =
            segment_writer_setup(&arrow, table, view_type, zstd_level).and_then(|setup| {
                // The writers take only the schema and properties from the file writer; this
                // one writes its magic bytes to nowhere and is dropped.
                let file = SerializedFileWriter::new(
                    std::io::sink(),
                    setup.parquet_schema.root_schema_ptr(),
                    setup.props.clone(),
                )
                .map_err(Encoding::Parquet)?;
                let writers = column_writers(&file, &arrow, &setup.levels)?;
                Ok((setup, writers))
            });
        let (setup, writers) =
            started.map_err(|e| e.at(format!("the head of a segment of {table}")))?;
        Ok(HeadStart {
            partition,
            table: table.to_owned(),
            view_type,
            zstd_level,
            setup,
            done: vec![0; writers.len()],
            writers,
            ends: None,
            arrow,
        })
    }

    /// Encodes whole steps of `rows` (the segment's first rows, their texts in `texts`),
    /// largest column first, for as long as `more()` says to go on. A step of a large column
    /// can take milliseconds (it may end in a page's compression) that the other threads,
    /// done reading, would wait out: once `soon(d)` says they will likely be done within `d`,
    /// the longest such step so far, the rest goes to the smallest columns' steps instead,
    /// which end within microseconds of `more()` turning false. After an error the writers
    /// are in an unknown state: drop the head start and encode the segment whole.
    pub fn advance(
        &mut self,
        schema: &TableSchema,
        rows: &[&PreparedRow<'_>],
        texts: &[ColumnTexts],
        more: impl Fn() -> bool,
        soon: impl Fn(std::time::Duration) -> bool,
    ) -> Result<(), SegmentError> {
        let whole = rows.len() - rows.len() % STEP_ROWS;
        let order = largest_first(self.writers.len());
        let mut longest = std::time::Duration::ZERO;
        let mut small_first = false;
        for i in order.iter().copied() {
            while self.done.get(i).is_some_and(|&d| d < whole) && more() {
                if soon(longest) {
                    small_first = true;
                    break;
                }
                let began = std::time::Instant::now();
                if !self.step(schema, rows, texts, i)? {
                    break;
                }
                longest = longest.max(began.elapsed());
            }
            if small_first {
                break;
            }
        }
        if small_first {
            for i in order.iter().rev().copied() {
                while self.done.get(i).is_some_and(|&d| d < whole) && more() {
                    if !self.step(schema, rows, texts, i)? {
                        break;
                    }
                }
            }
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.get(self.rows().wrapping_sub(1))) {
            self.ends = Some((first.sequence.clone(), last.sequence.clone()));
        }
        Ok(())
    }

    /// Encodes column `i`'s next step of `rows`; `false` when there is none (no such column,
    /// or fewer than a step's rows left).
    fn step(
        &mut self,
        schema: &TableSchema,
        rows: &[&PreparedRow<'_>],
        texts: &[ColumnTexts],
        i: usize,
    ) -> Result<bool, SegmentError> {
        let (Some(writer), Some(done)) = (self.writers.get_mut(i), self.done.get_mut(i)) else {
            return Ok(false);
        };
        let Some(chunk) = rows.get(*done..*done + STEP_ROWS) else {
            return Ok(false);
        };
        build_column(schema, chunk, texts, i)
            .map_err(Encoding::Arrow)
            .and_then(|array| encode_column(writer, self.arrow.field(i), &array))
            .map_err(|e| e.at(format!("the head of a segment of {}", self.table)))?;
        *done += STEP_ROWS;
        Ok(true)
    }

    /// Rows of the most advanced column.
    pub fn rows(&self) -> usize {
        self.done.iter().copied().max().unwrap_or(0)
    }

    /// Whether these writers began the segment of `rows`, with columns `schema`, with these
    /// settings.
    fn fits(
        &self,
        schema: &SchemaRef,
        rows: &[&PreparedRow<'_>],
        partition: HourPartition,
        (table, view_type): (&str, StreamViewType),
        options: EncodeOptions,
    ) -> bool {
        self.arrow == *schema
            && self.partition == partition
            && self.table == table
            && self.view_type == view_type
            && self.zstd_level == options.zstd_level
            && match &self.ends {
                None => true,
                Some((first, last)) => {
                    rows.first().is_some_and(|r| r.sequence == *first)
                        && rows
                            .get(self.rows().wrapping_sub(1))
                            .is_some_and(|r| r.sequence == *last)
                }
            }
    }
}

fn writer_properties_with(
    table: &str,
    view_type: StreamViewType,
    zstd_level: i32,
    max_row_group_rows: Option<usize>,
) -> WriterProperties {
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_statistics_truncate_length(Some(64))
        .set_max_row_group_row_count(max_row_group_rows)
        .set_write_batch_size(STEP_ROWS)
        .set_key_value_metadata(Some(vec![
            KeyValue::new("streamseal.format".into(), SEGMENT_FORMAT.to_string()),
            KeyValue::new("streamseal.table".into(), table.to_owned()),
            KeyValue::new(
                "streamseal.stream_view_type".into(),
                view_type.as_str().to_owned(),
            ),
        ]));
    for name in LARGE_TEXT_COLUMNS {
        let path = ColumnPath::from(*name);
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::Chunk);
    }
    props = props.set_column_dictionary_enabled(ColumnPath::from("sequence_number"), false);
    props.build()
}

/// Why [`encode_parquet`] failed.
enum Encoding {
    Arrow(arrow_schema::ArrowError),
    Parquet(parquet::errors::ParquetError),
}

impl Encoding {
    /// The error, naming the segment `key`.
    fn at(self, key: String) -> SegmentError {
        match self {
            Encoding::Arrow(source) => SegmentError::Arrow { key, source },
            Encoding::Parquet(source) => SegmentError::Parquet {
                action: "encoding",
                key,
                source,
            },
        }
    }
}

/// Column `i` of the segment schema, built from the rows. The key and image columns are
/// slices of the batch's text buffers when the rows' texts lie back to back there (the usual
/// case); small text columns are sized exactly before they are filled.
fn build_column(
    schema: &TableSchema,
    rows: &[&PreparedRow<'_>],
    texts: &[ColumnTexts],
    i: usize,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    fn text<'r>(
        rows: &[&'r PreparedRow<'_>],
        f: impl Fn(&'r PreparedRow<'_>) -> Option<&'r str>,
    ) -> ArrayRef {
        let bytes = rows.iter().map(|r| f(r).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(rows.len(), bytes);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    }
    Ok(match i {
        0 => tag_part(rows, texts, TagPart::EventId)?,
        1 => text(rows, |r| Some(r.kind.as_str())),
        2 => Arc::new(
            rows.iter()
                .map(|r| Some(r.ttl_delete))
                .collect::<BooleanArray>(),
        ),
        3 => tag_part(rows, texts, TagPart::Sequence)?,
        4 => Arc::new(
            rows.iter()
                .map(|r| r.time_ms)
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ),
        5 => spans(rows, texts, |r| Some(&r.keys), |t| &t.keys)?,
        6 => spans(rows, texts, |r| r.new_image.as_ref(), |t| &t.new_image)?,
        7 => spans(rows, texts, |r| r.old_image.as_ref(), |t| &t.old_image)?,
        _ => {
            let column = i - FIXED_COLUMNS;
            let column_type = schema
                .columns
                .get(column)
                .map_or(ColumnType::String, |c| c.column_type);
            let mut b = TypedBuilder::new(column_type, rows.len());
            for r in rows {
                match r.typed.get(column) {
                    Some(v) => b.append(v),
                    None => b.append_null(),
                }
            }
            b.finish()
        }
    })
}

/// Which half of a name-tag line (`<sequence>\n<event id>\n`) a column takes.
#[derive(Clone, Copy, PartialEq)]
enum TagPart {
    Sequence,
    EventId,
}

/// The `sequence_number` or `event_id` column, copied from the rows' name-tag lines where the
/// reader wrote them: those lie back to back in a buffer filled moments ago, while the fields
/// cost a cache miss per row (the event id is in the event text, the sequence number in an
/// allocation of its own). Rows without a line give their fields.
fn tag_part(
    rows: &[&PreparedRow<'_>],
    texts: &[ColumnTexts],
    part: TagPart,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let field = |r: &PreparedRow<'_>| match part {
        TagPart::Sequence => r.sequence.as_str().len(),
        TagPart::EventId => r.event_id.len(),
    };
    let total = rows.iter().map(|r| field(r)).sum::<usize>();
    let mut values = Vec::with_capacity(total);
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    for r in rows {
        match (tag_line_parts(r, texts), part) {
            (Some((seq, _)), TagPart::Sequence) => values.extend_from_slice(seq),
            (Some((_, id)), TagPart::EventId) => values.extend_from_slice(id),
            (None, TagPart::Sequence) => values.extend_from_slice(r.sequence.as_str().as_bytes()),
            (None, TagPart::EventId) => values.extend_from_slice(r.event_id.as_bytes()),
        }
        offsets.push(text_offset(values.len())?);
    }
    string_array(offsets, values, None)
}

/// The sequence number and event id of `row` as its reader wrote them in its name-tag line
/// (`<sequence>\n<event id>\n`), or `None` when the row has no line or the line does not
/// split there. Those lines lie back to back in a buffer filled moments ago, while the fields
/// cost a cache miss per row (the event id is in the event text, the sequence number in an
/// allocation of its own).
fn tag_line_parts<'t>(
    row: &PreparedRow<'_>,
    texts: &'t [ColumnTexts],
) -> Option<(&'t [u8], &'t [u8])> {
    // The sequence number's length is in the row itself: where the line splits.
    let split = row.sequence.as_str().len();
    let line = texts.get(row.texts)?.tags.get(row.tag_line.clone()?)?;
    let (seq, rest) = line.split_at_checked(split)?;
    let id = rest.strip_prefix(b"\n")?.strip_suffix(b"\n")?;
    Some((seq, id))
}

/// A text array's end offset for `n` bytes of values.
fn text_offset(n: usize) -> Result<i32, arrow_schema::ArrowError> {
    i32::try_from(n).map_err(|_| {
        arrow_schema::ArrowError::InvalidArgumentError(format!(
            "{n} bytes of text in one column chunk (the limit is 2 GiB)"
        ))
    })
}

/// A text array of owned values (checked to be UTF-8 here, once).
fn string_array(
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: Option<arrow_buffer::NullBuffer>,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(Arc::new(StringArray::try_new(
        offsets,
        Buffer::from_vec(values),
        nulls,
    )?))
}

/// A text column of `rows` whose values are spans of one of the `texts` buffers. When the
/// non-null values lie back to back in one buffer, the array is a slice of it (no copy);
/// otherwise (rows of several threads' buffers, or of two hours interleaved) they are copied.
/// Either way the text is checked to be UTF-8 here, once, rather than item by item.
fn spans<'r>(
    rows: &[&'r PreparedRow<'_>],
    texts: &[ColumnTexts],
    span: impl Fn(&'r PreparedRow<'_>) -> Option<&'r Range<usize>>,
    buffer: impl Fn(&ColumnTexts) -> &Buffer,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    use arrow_schema::ArrowError;
    let missing =
        |t: usize| ArrowError::InvalidArgumentError(format!("row text buffer {t} does not exist"));
    let mut nulls = NullBufferBuilder::new(rows.len());
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    // The run of back-to-back values so far: (buffer index, start, end).
    let mut run: Option<(usize, usize, usize)> = None;
    let mut back_to_back = true;
    for r in rows {
        match span(r) {
            Some(sp) => {
                nulls.append_non_null();
                match &mut run {
                    None => run = Some((r.texts, sp.start, sp.end)),
                    Some((t, _, end)) if *t == r.texts && *end == sp.start => *end = sp.end,
                    Some(_) => back_to_back = false,
                }
            }
            None => nulls.append_null(),
        }
    }
    let nulls = nulls.finish();
    match run {
        Some((t, start, end)) if back_to_back => {
            let values = buffer(texts.get(t).ok_or_else(|| missing(t))?);
            if end > values.len() {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "row text {start}..{end} is outside its buffer of {} bytes",
                    values.len()
                )));
            }
            let mut at = 0;
            for r in rows {
                if let Some(sp) = span(r) {
                    at = sp.end - start;
                }
                offsets.push(text_offset(at)?);
            }
            let values = values.slice_with_length(start, end - start);
            let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
            Ok(Arc::new(StringArray::try_new(offsets, values, nulls)?))
        }
        _ => {
            let mut values = Vec::new();
            for r in rows {
                if let Some(sp) = span(r) {
                    let buf = buffer(texts.get(r.texts).ok_or_else(|| missing(r.texts))?);
                    let text = buf.get(sp.clone()).ok_or_else(|| {
                        ArrowError::InvalidArgumentError(format!(
                            "row text {sp:?} is outside its buffer of {} bytes",
                            buf.len()
                        ))
                    })?;
                    values.extend_from_slice(text);
                }
                offsets.push(text_offset(values.len())?);
            }
            string_array(offsets, values, nulls)
        }
    }
}

/// Rows per Arrow array handed to the column writer. A whole image column of a 6 MB batch would
/// be a fresh multi-megabyte buffer (page faults, and cold by the time the encoder reads it);
/// chunks this size stay in cache. A multiple of [`STEP_ROWS`], so pages and bytes are exactly
/// those of writing the column in one call.
const CHUNK_ROWS: usize = 1024;

/// The writer's mini-batch (`write_batch_size`): it checks whether a page is full after each.
/// Every write of a column starts at a multiple of it, so where a column's writes are cut
/// (whole columns, [`CHUNK_ROWS`] chunks, or a [`HeadStart`]'s steps of this size) does not
/// change a byte. Small enough that the head of a 1,000-record batch holds a step.
pub const STEP_ROWS: usize = 256;

/// Columns every segment has before the typed ones (see [`arrow_schema`]).
const FIXED_COLUMNS: usize = 8;

/// One segment for [`encode_segments`]: its rows (their texts in the batch's buffers), the
/// view type it records, the column writers a [`HeadStart`] began on its first rows, and one
/// more task to run alongside its columns.
struct Job<'j, 'r> {
    /// The table's schema and the segment's Arrow schema made from it.
    columns: (&'j TableSchema, SchemaRef),
    rows: &'j [&'j PreparedRow<'r>],
    view_type: StreamViewType,
    head: Option<HeadStart>,
    alongside: Option<&'j (dyn Fn() + Sync)>,
}

/// A finished segment object and its SHA-256 (hex).
struct Encoded {
    bytes: Vec<u8>,
    sha256: [u8; 32],
}

type Slot<T> = std::sync::Mutex<Option<T>>;

/// A [`Job`] whose file and column writers exist: what the encoding threads share.
struct Started<'j, 'r> {
    columns: (&'j TableSchema, SchemaRef),
    rows: &'j [&'j PreparedRow<'r>],
    alongside: Option<&'j (dyn Fn() + Sync)>,
    file: Slot<SerializedFileWriter<Vec<u8>>>,
    /// Each column's writer and the rows it has already encoded.
    writers: Vec<Slot<(ColumnWriter, usize)>>,
    chunks: Vec<Slot<Result<CompressedChunk, Encoding>>>,
    /// Columns not encoded yet: the thread that encodes the last one finishes the file.
    remaining: AtomicUsize,
    out: Slot<Result<Encoded, Encoding>>,
}

impl<'j, 'r> Started<'j, 'r> {
    fn new(
        table: &str,
        options: EncodeOptions,
        job: Job<'j, 'r>,
    ) -> Result<Started<'j, 'r>, Encoding> {
        let (rows, schema) = (job.rows, &job.columns.1);
        let (setup, head) = match job.head {
            Some(h) => (h.setup, Some((h.writers, h.done))),
            None => (
                segment_writer_setup(schema, table, job.view_type, options.zstd_level)?,
                None,
            ),
        };
        let image_bytes: usize = rows
            .iter()
            .map(|r| {
                r.keys.len()
                    + r.new_image.as_ref().map_or(0, Range::len)
                    + r.old_image.as_ref().map_or(0, Range::len)
            })
            .sum();
        let out = Vec::with_capacity(image_bytes / 4 + 4096);
        let file =
            SerializedFileWriter::new(out, setup.parquet_schema.root_schema_ptr(), setup.props)
                .map_err(Encoding::Parquet)?;
        let (writers, done) = match head {
            Some(started) => started,
            None => {
                let writers = column_writers(&file, schema, &setup.levels)?;
                let done = vec![0; writers.len()];
                (writers, done)
            }
        };
        if writers.len() != schema.fields().len()
            || done
                .iter()
                .any(|&d| d > rows.len() || !d.is_multiple_of(STEP_ROWS))
        {
            return Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                format!(
                    "{} column writers (started at rows {done:?}) for {} columns of {} rows",
                    writers.len(),
                    schema.fields().len(),
                    rows.len()
                ),
            )));
        }
        Ok(Started {
            columns: (job.columns.0, schema.clone()),
            rows,
            alongside: job.alongside,
            file: std::sync::Mutex::new(Some(file)),
            remaining: AtomicUsize::new(writers.len()),
            chunks: writers
                .iter()
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            writers: writers
                .into_iter()
                .zip(done)
                .map(|w| std::sync::Mutex::new(Some(w)))
                .collect(),
            out: std::sync::Mutex::new(None),
        })
    }

    /// This segment's tasks, largest first: its columns, and the `alongside` task after the
    /// images and the keys, where it is about the size of a small text column, so it fills a
    /// gap rather than making the last one (`None` stands for it).
    fn tasks(&self) -> Vec<Option<usize>> {
        let mut order: Vec<Option<usize>> = largest_first(self.writers.len())
            .into_iter()
            .map(Some)
            .collect();
        if self.alongside.is_some() {
            order.insert(order.len().min(3), None);
        }
        order
    }

    /// Encodes column `i` (after the rows a head start already did), `chunk_rows` rows per
    /// Arrow array. The thread that encodes a segment's last column assembles the file, unless
    /// it is the last column of the whole batch (`batch_left` reaches zero): then no task is
    /// left for the other threads, and the file is left for [`complete_segments`] to assemble
    /// beside the freeing of the batch's rows.
    fn encode(&self, texts: &[ColumnTexts], chunk_rows: usize, i: usize, batch_left: &AtomicUsize) {
        let (table_schema, schema) = (self.columns.0, &self.columns.1);
        let writer = self
            .writers
            .get(i)
            .and_then(|s| s.lock().ok().and_then(|mut s| s.take()));
        let rows = self.rows;
        let result = match writer {
            // A started writer resumes after its rows, which were whole steps.
            Some((mut w, done)) => rows[done..]
                .chunks(chunk_rows)
                .try_for_each(|chunk| {
                    let array =
                        build_column(table_schema, chunk, texts, i).map_err(Encoding::Arrow)?;
                    encode_column(&mut w, schema.field(i), &array)
                })
                .and_then(|()| w.close().map_err(Encoding::Parquet)),
            None => Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                format!("column {i} encoded twice"),
            ))),
        };
        if let Some(Ok(mut slot)) = self.chunks.get(i).map(|s| s.lock()) {
            *slot = Some(result);
        }
        let segment_done = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        let batch_done = batch_left.fetch_sub(1, Ordering::AcqRel) == 1;
        if segment_done && !batch_done {
            let assembled = self.closed().and_then(Closed::assemble);
            if let Ok(mut out) = self.out.lock() {
                *out = Some(assembled);
            }
        }
    }

    /// The file writer and the encoded columns, taken out to be assembled.
    fn closed(&self) -> Result<Closed, Encoding> {
        let file = self
            .file
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .ok_or_else(|| {
                Encoding::Parquet(parquet::errors::ParquetError::General(
                    "segment assembled twice".into(),
                ))
            })?;
        let chunks = self
            .chunks
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                slot.lock()
                    .ok()
                    .and_then(|mut s| s.take())
                    .unwrap_or_else(|| {
                        Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                            format!("column {i} was not encoded"),
                        )))
                    })
            })
            .collect();
        Ok(Closed { file, chunks })
    }

    /// What became of this segment once every task has run: its file, or its columns still to
    /// be assembled.
    fn into_assembly(self) -> Result<Assembly, Encoding> {
        match self.out.lock().ok().and_then(|mut o| o.take()) {
            Some(assembled) => assembled.map(Assembly::Done),
            None => self.closed().map(Assembly::Pending),
        }
    }
}

/// A segment whose columns are all encoded: its file writer (schema and properties written)
/// and its column chunks, in schema order.
struct Closed {
    file: SerializedFileWriter<Vec<u8>>,
    chunks: Vec<Result<CompressedChunk, Encoding>>,
}

impl Closed {
    /// The file from its encoded columns, and its SHA-256.
    fn assemble(self) -> Result<Encoded, Encoding> {
        let mut file = self.file;
        let mut row_group = file.next_row_group().map_err(Encoding::Parquet)?;
        for chunk in self.chunks {
            chunk?
                .append_to_row_group(&mut row_group)
                .map_err(Encoding::Parquet)?;
        }
        row_group.close().map_err(Encoding::Parquet)?;
        let bytes = file.into_inner().map_err(Encoding::Parquet)?;
        let sha256 = Sha256::digest(&bytes).into();
        Ok(Encoded { bytes, sha256 })
    }
}

/// A segment's file as [`encode_segments`] leaves it: assembled by the thread that encoded its
/// last column, or (the batch's last segment to finish) its columns, for
/// [`complete_segments`] to assemble.
enum Assembly {
    Done(Encoded),
    Pending(Closed),
}

impl Assembly {
    fn finish(self) -> Result<Encoded, Encoding> {
        match self {
            Assembly::Done(encoded) => Ok(encoded),
            Assembly::Pending(closed) => closed.assemble(),
        }
    }
}

/// Encodes segments, each as a one-row-group Parquet file, with one pool of
/// `encode_threads` threads for all of them. Each column of each segment is built and encoded
/// by one task, `chunk_rows` rows per Arrow array. Threads take tasks largest first: the
/// first-ranked task of every segment (larger segments first), then the second-ranked, and
/// so on, so with two threads the two image columns land on different cores and a batch's
/// small second segment (a batch that spans an hour) is encoded beside its first rather than
/// after it. The thread that finishes a segment's last column assembles it and takes its
/// SHA-256 while the other threads go on; the batch's last segment to finish is left
/// [`Assembly::Pending`] (see [`Started::encode`]).
fn encode_segments(
    texts: &[ColumnTexts],
    table: &str,
    (options, chunk_rows): (EncodeOptions, usize),
    jobs: Vec<Job<'_, '_>>,
) -> Vec<Result<Assembly, Encoding>> {
    let started: Vec<Result<Started, Encoding>> = jobs
        .into_iter()
        .map(|job| Started::new(table, options, job))
        .collect();
    let mut by_size: Vec<(usize, Vec<Option<usize>>)> = started
        .iter()
        .enumerate()
        .filter_map(|(j, s)| s.as_ref().ok().map(|s| (j, s.tasks())))
        .collect();
    by_size
        .sort_by_key(|(j, _)| std::cmp::Reverse(started[*j].as_ref().map_or(0, |s| s.rows.len())));
    let ranks = by_size.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    let tasks: Vec<(usize, Option<usize>)> = (0..ranks)
        .flat_map(|k| {
            by_size
                .iter()
                .filter_map(move |(j, t)| t.get(k).map(|&task| (*j, task)))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let batch_left = AtomicUsize::new(tasks.iter().filter(|(_, t)| t.is_some()).count());
    let work = || {
        while let Some(&(j, task)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
            let Some(Ok(s)) = started.get(j) else {
                continue;
            };
            match task {
                Some(i) => s.encode(texts, chunk_rows, i, &batch_left),
                None => {
                    if let Some(alongside) = s.alongside {
                        alongside();
                    }
                }
            }
        }
    };
    let threads = options.encode_threads.clamp(1, tasks.len().max(1));
    match crate::workers::helpers(threads) {
        Some(helpers) => helpers.in_place_scope(|s| {
            let work = &work;
            for _ in 1..threads {
                s.spawn(move |_| work());
            }
            work();
        }),
        None => work(),
    }
    started.into_iter().map(|s| s?.into_assembly()).collect()
}

/// [`encode_segments`] for one segment: its bytes.
#[cfg(test)]
fn encode_parquet(
    table_schema: &TableSchema,
    schema: &SchemaRef,
    (rows, texts): (&[&PreparedRow<'_>], &[ColumnTexts]),
    (table, view_type): (&str, StreamViewType),
    (options, chunk_rows): (EncodeOptions, usize),
    head: Option<HeadStart>,
) -> Result<Vec<u8>, Encoding> {
    let job = Job {
        columns: (table_schema, schema.clone()),
        rows,
        view_type,
        head,
        alongside: None,
    };
    let mut encoded = encode_segments(texts, table, (options, chunk_rows), vec![job]);
    encoded
        .pop()
        .unwrap_or_else(|| {
            Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                "no segment".into(),
            )))
        })
        .and_then(Assembly::finish)
        .map(|e| e.bytes)
}

fn encode_column(
    writer: &mut ColumnWriter,
    field: &Field,
    array: &ArrayRef,
) -> Result<(), Encoding> {
    if array.data_type() != field.data_type() || (!field.is_nullable() && array.null_count() > 0) {
        return Err(Encoding::Arrow(
            arrow_schema::ArrowError::InvalidArgumentError(format!(
                "column {} built as {} with {} nulls; the schema says {}{}",
                field.name(),
                array.data_type(),
                array.null_count(),
                field.data_type(),
                if field.is_nullable() { "" } else { " NOT NULL" }
            )),
        ));
    }
    for leaf in compute_leaves(field, array).map_err(Encoding::Parquet)? {
        writer.write(&leaf).map_err(Encoding::Parquet)?;
    }
    Ok(())
}

/// Reads a segment back into Arrow batches (verify, restore and tests use this).
pub fn read_segment(key: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, SegmentError> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|source| SegmentError::Parquet {
            action: "reading",
            key: key.to_owned(),
            source,
        })?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SegmentError::Arrow {
            key: key.to_owned(),
            source,
        })
}

/// The stream view type a segment's file metadata records.
fn recorded_view_type(
    metadata: &parquet::file::metadata::ParquetMetaData,
) -> Option<StreamViewType> {
    metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| {
            kv.iter()
                .find(|e| e.key == "streamseal.stream_view_type")
                .and_then(|e| e.value.as_deref())
                .and_then(|v| StreamViewType::parse(v).ok())
        })
}

/// Every column of a stored segment (or compacted file), and the stream view type its
/// metadata records.
pub fn read_segment_all(
    key: &str,
    bytes: Bytes,
) -> Result<(Vec<RecordBatch>, Option<StreamViewType>), SegmentError> {
    let err = |source| SegmentError::Parquet {
        action: "reading",
        key: key.to_owned(),
        source,
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(err)?;
    let view_type = recorded_view_type(builder.metadata());
    let batches = builder
        .with_batch_size(8192)
        .build()
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SegmentError::Arrow {
            key: key.to_owned(),
            source,
        })?;
    Ok((batches, view_type))
}

/// A Parquet writer for a compacted object: the segments' own writer settings and metadata,
/// with row groups of at most 65,536 rows so Athena can split and skip within a large file.
/// Every column is compressed here: over row groups that large, the few columns a segment
/// leaves uncompressed would grow, and their zstd contexts cost next to nothing.
pub fn compacted_writer(
    table: &str,
    view_type: StreamViewType,
    schema: SchemaRef,
    zstd_level: i32,
) -> Result<parquet::arrow::ArrowWriter<Vec<u8>>, parquet::errors::ParquetError> {
    let props = writer_properties_with(table, view_type, zstd_level, Some(65_536));
    parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, Some(props))
}

/// Reads only the named columns of a segment (the others are neither decompressed nor decoded).
pub fn read_segment_columns(
    key: &str,
    bytes: Bytes,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, SegmentError> {
    let err = |source| SegmentError::Parquet {
        action: "reading",
        key: key.to_owned(),
        source,
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(err)?;
    let mask =
        parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(err)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SegmentError::Arrow {
            key: key.to_owned(),
            source,
        })
}

/// What one row of a stored segment contributes, recomputed from the stored images.
#[derive(Debug, Clone, PartialEq)]
pub struct RowEffect {
    /// Sequence number as stored.
    pub sequence: String,
    /// Event id.
    pub event_id: String,
    /// `H(new) - H(old)` when the segment carries both images, else `None`.
    pub digest: Option<StateDigest>,
    /// +1 INSERT, -1 REMOVE, 0 MODIFY.
    pub count: i64,
}

/// A stored segment read back for checking: its view type (from the file's metadata) and the
/// effect of every row, in row order.
#[derive(Debug, Clone)]
pub struct SegmentContents {
    /// View type recorded in the file.
    pub view_type: Option<StreamViewType>,
    /// Rows.
    pub rows: Vec<RowEffect>,
}

impl SegmentContents {
    /// Reads Parquet bytes and recomputes each row's effect (rehashing both images).
    pub fn read(key: &str, bytes: Bytes) -> Result<SegmentContents, SegmentError> {
        let not = |reason: String| SegmentError::NotASegment {
            key: key.to_owned(),
            reason,
        };
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|source| SegmentError::Parquet {
                action: "reading",
                key: key.to_owned(),
                source,
            })?;
        let view_type = recorded_view_type(builder.metadata());
        let reader =
            builder
                .with_batch_size(8192)
                .build()
                .map_err(|source| SegmentError::Parquet {
                    action: "reading",
                    key: key.to_owned(),
                    source,
                })?;
        let both = view_type == Some(StreamViewType::NewAndOldImages);
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|source| SegmentError::Arrow {
                key: key.to_owned(),
                source,
            })?;
            let col = |name: &str| -> Result<&arrow_array::StringArray, SegmentError> {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                    .ok_or_else(|| not(format!("no string column {name:?}")))
            };
            let (seq, id, name, new, old) = (
                col("sequence_number")?,
                col("event_id")?,
                col("event_name")?,
                col("new_image")?,
                col("old_image")?,
            );
            for i in 0..batch.num_rows() {
                let hash = |a: &arrow_array::StringArray, which: &str| {
                    if arrow_array::Array::is_null(a, i) {
                        return Ok(None);
                    }
                    crate::item::item_hash(a.value(i))
                        .map(Some)
                        .map_err(|e| not(format!("row {i}: {which} image: {e}")))
                };
                let digest = if both {
                    let mut d = StateDigest::ZERO;
                    if let Some(h) = hash(new, "new")? {
                        d.add_item(&h);
                    }
                    if let Some(h) = hash(old, "old")? {
                        d.remove_item(&h);
                    }
                    Some(d)
                } else {
                    None
                };
                let count = match name.value(i) {
                    "INSERT" => 1,
                    "REMOVE" => -1,
                    "MODIFY" => 0,
                    other => return Err(not(format!("row {i}: event_name {other:?}"))),
                };
                rows.push(RowEffect {
                    sequence: seq.value(i).to_owned(),
                    event_id: id.value(i).to_owned(),
                    digest,
                    count,
                });
            }
        }
        Ok(SegmentContents { view_type, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{ChangeRecord, parse_event};
    use crate::item::{Canonicalizer, TextColumns};
    use crate::workload::Workload;

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
    fn tag_lines_written_while_reading_hash_to_the_tag_of_the_fields() {
        let schema = TableSchema::default();
        let mut w = Workload::new(5, "orders", StreamViewType::NewAndOldImages, 256);
        let text = w.next_event(600);
        // Some rows without a line (as the long way leaves them), and some lines not back to
        // back with the one before.
        let (rows, mut texts) = rows_in_two_buffers(
            &text,
            &schema,
            |i| usize::from(i >= 350),
            |i, row, buffer| {
                if i % 97 != 0 {
                    row.write_tag_line(buffer);
                }
                if i % 131 == 0 {
                    buffer.tags.extend_from_slice(b"not a line\n");
                }
            },
        );
        let refs: Vec<&PreparedRow<'_>> = rows.iter().collect();
        let mut fields = SegmentTag::new(refs[0].event_source_arn.as_deref(), refs[0].view_type);
        for r in &refs {
            fields.push(r.sequence.as_str(), &r.event_id);
        }
        let fields = fields.finish();
        assert_eq!(RowStats::of(&refs, &texts).tag.finish(), fields);
        // The lines are what is hashed: a changed line changes the tag.
        texts[1].tags[0] ^= 1;
        assert_ne!(RowStats::of(&refs, &texts).tag.finish(), fields);
    }

    #[test]
    fn id_and_sequence_columns_from_tag_lines_equal_the_fields() {
        let schema = TableSchema::default();
        let mut w = Workload::new(9, "orders", StreamViewType::NewAndOldImages, 256);
        let text = w.next_event(500);
        let (mut rows, texts) = rows_in_two_buffers(
            &text,
            &schema,
            |i| usize::from(i % 3 == 0),
            |i, row, buffer| {
                // Event ids holding the line separator, or nothing, still split right.
                match i % 50 {
                    7 => row.event_id = Cow::Owned("one\ntwo\n".to_owned()),
                    8 => row.event_id = Cow::Owned(String::new()),
                    9 => row.event_id = Cow::Owned("\u{e9}t\u{e9}".to_owned()),
                    _ => {}
                }
                if i % 41 != 0 {
                    row.write_tag_line(buffer);
                }
            },
        );
        // A line that does not fit its row (a bug elsewhere) falls back to the fields.
        rows[5].tag_line = Some(0..3);
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
    fn row_statistics_from_tag_lines_equal_those_from_the_fields() {
        let schema = TableSchema::default();
        let mut w = Workload::new(13, "orders", StreamViewType::NewAndOldImages, 256);
        let text = w.next_event(400);
        let (mut rows, texts) = rows_in_two_buffers(
            &text,
            &schema,
            |i| usize::from(i >= 150),
            |i, row, buffer| {
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
                if i % 53 != 0 {
                    row.write_tag_line(buffer);
                }
            },
        );
        // A line that does not fit its row falls back to the fields.
        rows[5].tag_line = Some(0..3);
        let without_lines: Vec<PreparedRow<'_>> = rows
            .iter()
            .map(|r| PreparedRow {
                tag_line: None,
                ..r.clone()
            })
            .collect();
        let summary = |rows: &[PreparedRow<'_>]| {
            let refs: Vec<&PreparedRow<'_>> = rows.iter().collect();
            let stats = RowStats::of(&refs, &texts);
            let ends = (stats.first, stats.last);
            (stats.sequences.finish(), ends, stats.tag.finish())
        };
        let (lines, fields) = (summary(&rows), summary(&without_lines));
        assert_eq!(lines, fields);
        assert_eq!(lines.1, (123, 321));
        let seqs: Vec<&str> = rows.iter().map(|r| r.sequence.as_str()).collect();
        assert_eq!(lines.0.decode().expect("list"), seqs);
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
        TableSchema::parse(include_str!("../schemas/orders.toml"), "orders.toml")
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
            let mut row = PreparedRow::new(rec.clone().into_spanned(&mut two[t]), schema, t);
            row.write_tag_line(&mut two[t]);
            rows_two.push(row);
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
            |rows: &[&PreparedRow<'_>], texts: &[ColumnTexts], chunk_rows, encode_threads, head| {
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
                    head,
                );
                match encoded {
                    Ok(bytes) => bytes,
                    Err(_) => panic!("encoding failed"),
                }
            };
        let (rows, rows_two): (Vec<_>, Vec<_>) = (rows.iter().collect(), rows_two.iter().collect());
        let whole = encode(&rows, &one, usize::MAX, 1, None);
        assert_eq!(encode(&rows, &one, CHUNK_ROWS, 1, None), whole);
        assert_eq!(encode(&rows, &one, CHUNK_ROWS, 2, None), whole);
        assert_eq!(encode(&rows_two, &two, CHUNK_ROWS, 1, None), whole);
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
                None,
            )
            .is_err()
        );
        // A chunk size that is not the writer's mini-batch gives other pages: the test can tell.
        assert_ne!(encode(&rows, &one, 1000, 1, None), whole);

        // Begun on the rows of the first buffer (as the thread reading the head of an event
        // does), for every whole step, for three steps of the largest column only, or not at
        // all, then resumed: the same bytes.
        let partition = HourPartition::of_millis(0);
        // `budget` steps are allowed; after `soon_after` of them the readers are said to be
        // about done, and the head turns to the smallest columns.
        let begin_with = |budget: usize, soon_after: usize| {
            let mut head = HeadStart::new(
                &schema,
                "orders",
                StreamViewType::NewAndOldImages,
                partition,
                1,
            )
            .expect("head start");
            let calls = std::cell::Cell::new(0);
            head.advance(
                &schema,
                &rows_two[..split],
                &two[..1],
                || {
                    calls.set(calls.get() + 1);
                    calls.get() <= budget
                },
                |_| calls.get() > soon_after,
            )
            .expect("advance");
            head
        };
        let begin = |budget: usize| begin_with(budget, usize::MAX);
        let whole_steps = split / STEP_ROWS * STEP_ROWS;
        assert!(!split.is_multiple_of(STEP_ROWS));
        for (budget, begun) in [(usize::MAX, whole_steps), (3, 3 * STEP_ROWS), (0, 0)] {
            let head = begin(budget);
            assert_eq!(head.rows(), begun, "budget {budget}");
            let resumed = encode(&rows_two, &two, CHUNK_ROWS, 1, Some(head));
            assert!(resumed == whole, "budget {budget}: other bytes");
        }
        // Two steps of the largest column, then the smallest column's steps: the columns stand
        // at different rows, and the segment is still the same.
        let columns = arrow_schema(&schema).fields().len();
        // (steps allowed, steps before "soon", then rows of the largest and the smallest
        // column: the rest of the budget goes to the smallest column, one call to noticing).
        for (budget, soon_after, large, smallest) in [
            (10, 2, 2 * STEP_ROWS, 7 * STEP_ROWS),
            (5, 0, 0, 4 * STEP_ROWS),
            (usize::MAX, 2, whole_steps, whole_steps),
        ] {
            let head = begin_with(budget, soon_after);
            assert_eq!(head.done[6], large, "{budget}, {soon_after}: new_image");
            assert_eq!(
                head.done[columns - 1],
                smallest,
                "{budget}, {soon_after}: last"
            );
            let resumed = encode(&rows_two, &two, CHUNK_ROWS, 1, Some(head));
            assert!(resumed == whole, "{budget}, {soon_after}: other bytes");
        }

        // Through the builder: a head start that fits is used; one begun for another hour, or
        // on other rows, is set aside. The segment is the same every time.
        let layout = TableLayout::new("orders");
        let finish = |rows: &[&PreparedRow<'_>], head: Option<HeadStart>| {
            let mut builder = SegmentBuilder::new(&schema, rows.len());
            for &row in rows {
                builder.push(row);
            }
            builder
                .finish_from(&layout, partition, EncodeOptions::default(), &two, head)
                .expect("segment")
                .bytes
        };
        let plain = finish(&rows_two, None);
        assert_eq!(plain.as_ref(), whole.as_slice());
        assert_eq!(finish(&rows_two, Some(begin(usize::MAX))), plain);
        let mut elsewhen = HeadStart::new(
            &schema,
            "orders",
            StreamViewType::NewAndOldImages,
            HourPartition::of_millis(3_600_000),
            1,
        )
        .expect("head start");
        elsewhen
            .advance(&schema, &rows_two[..split], &two[..1], || true, |_| false)
            .expect("advance");
        let orders = ("orders", StreamViewType::NewAndOldImages);
        let options = EncodeOptions::default();
        assert!(begin(usize::MAX).fits(&arrow, &rows_two, partition, orders, options));
        assert!(!elsewhen.fits(&arrow, &rows_two, partition, orders, options));
        assert_eq!(finish(&rows_two, Some(elsewhen)), plain);
        let later_rows = &rows_two[1..];
        assert!(!begin(usize::MAX).fits(&arrow, later_rows, partition, orders, options));
        // Nor does one begun with other columns (a segment of the same rows without the typed
        // columns).
        let image_only = arrow_schema(&TableSchema::default());
        assert!(!begin(usize::MAX).fits(&image_only, &rows_two, partition, orders, options));
        assert_eq!(
            finish(later_rows, Some(begin(usize::MAX))),
            finish(later_rows, None)
        );
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
                let got = encode_parquet(
                    &schema,
                    &arrow,
                    (rows, &one),
                    orders,
                    (options, CHUNK_ROWS),
                    None,
                );
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
        // Whatever the thread count, each is the segment it would be encoded on its own, an
        // empty one is an error of its own, and a head start begun on the first changes
        // nothing. The last to finish is assembled by `complete_segments`.
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
            // Only the last segment to finish is left to assemble, beside work of the caller's
            // that runs exactly once.
            let finishing = finish_segments(batch, &layout, options, &texts, None);
            let pending = finishing
                .iter()
                .filter(|f| matches!(f, Ok(f) if matches!(f.assembly, Assembly::Pending(_))))
                .count();
            assert_eq!(pending, 1, "{encode_threads} threads");
            let ran = AtomicUsize::new(0);
            let got = complete_segments(finishing, encode_threads, || {
                ran.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(ran.load(Ordering::Relaxed), 1, "{encode_threads} threads");
            assert_eq!(got.len(), alone.len());
            for (got, want) in got.iter().zip(&alone) {
                let got = got.as_ref().expect("segment");
                assert!(same(got, want), "{encode_threads} threads: {}", want.key);
            }

            // An empty segment between them, and the first begun by a head start.
            let mut head = HeadStart::new(
                &schema,
                "orders",
                StreamViewType::NewAndOldImages,
                hour(0),
                1,
            )
            .expect("head start");
            head.advance(&schema, &rows[..1900], &texts[..1], || true, |_| false)
                .expect("advance");
            assert!(head.rows() >= 1024);
            let mut batch: Vec<_> = groups
                .iter()
                .map(|(p, range)| (*p, builder(range.clone())))
                .collect();
            batch.insert(1, (hour(5), SegmentBuilder::new(&schema, 0)));
            let got = complete_segments(
                finish_segments(batch, &layout, options, &texts, Some(head)),
                encode_threads,
                || (),
            );
            assert_eq!(got.len(), alone.len() + 1);
            assert!(matches!(got[1], Err(SegmentError::Empty(_))));
            for (got, want) in [&got[0], &got[2], &got[3]].into_iter().zip(&alone) {
                let got = got.as_ref().expect("segment");
                assert!(
                    same(got, want),
                    "{encode_threads} threads, head start: {}",
                    want.key
                );
            }
        }
        assert!(
            finish_segments(Vec::new(), &layout, EncodeOptions::default(), &texts, None).is_empty()
        );
    }
}

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
}

impl ColumnTexts {
    /// The key, new image and old image texts of `row`, which must be one of this buffer's
    /// rows (`None` for a range outside it, or what the row does not have).
    #[cfg(test)]
    pub(crate) fn of(&self, row: &PreparedRow<'_>) -> [Option<&[u8]>; 3] {
        [
            self.keys.get(row.keys.clone()),
            row.new_image.clone().and_then(|r| self.new_image.get(r)),
            row.old_image.clone().and_then(|r| self.old_image.get(r)),
        ]
    }

    /// The buffers back, for reuse, once no array uses them any more (`None` while one does).
    pub fn into_text_columns(self) -> Option<TextColumns> {
        Some(TextColumns {
            keys: self.keys.into_vec().ok()?,
            new_image: self.new_image.into_vec().ok()?,
            old_image: self.old_image.into_vec().ok()?,
        })
    }
}

impl From<TextColumns> for ColumnTexts {
    fn from(t: TextColumns) -> ColumnTexts {
        ColumnTexts {
            keys: Buffer::from_vec(t.keys),
            new_image: Buffer::from_vec(t.new_image),
            old_image: Buffer::from_vec(t.old_image),
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
        }
    }
}

/// Collects one segment's rows (by reference). Rows are not copied; they are turned into Arrow
/// columns at [`SegmentBuilder::finish`], each column by the thread that encodes it, and the
/// segment record's statistics are gathered there too, beside the columns.
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
    /// The statistics of `rows`, in their order (the tag and the sequence list depend on it).
    fn of(rows: &[&PreparedRow<'_>]) -> RowStats {
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
        for (n, row) in rows.iter().enumerate() {
            let seq = row.sequence.as_str();
            stats.tag.push(seq, &row.event_id);
            stats.sequences.push(seq);
            if row.sequence < rows[stats.first].sequence {
                stats.first = n;
            }
            if row.sequence > rows[stats.last].sequence {
                stats.last = n;
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
pub fn finish_segments(
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
        0 => text(rows, |r| Some(r.event_id.as_ref())),
        1 => text(rows, |r| Some(r.kind.as_str())),
        2 => Arc::new(
            rows.iter()
                .map(|r| Some(r.ttl_delete))
                .collect::<BooleanArray>(),
        ),
        3 => text(rows, |r| Some(r.sequence.as_str())),
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
/// Every write of a column starts at a multiple of it, so writing a column in [`CHUNK_ROWS`]
/// chunks gives the bytes of writing it whole.
const STEP_ROWS: usize = 256;

/// Columns every segment has before the typed ones (see [`arrow_schema`]).
const FIXED_COLUMNS: usize = 8;

/// One segment for [`encode_segments`]: its rows (their texts in the batch's buffers) and the
/// view type it records.
struct Job<'j, 'r> {
    /// The table's schema and the segment's Arrow schema made from it.
    columns: (&'j TableSchema, SchemaRef),
    rows: &'j [&'j PreparedRow<'r>],
    view_type: StreamViewType,
}

/// A finished segment object and its SHA-256.
struct Encoded {
    bytes: Vec<u8>,
    sha256: [u8; 32],
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

/// One unit of a batch's encoding work.
enum Task {
    /// Build and encode column `col` of segment `seg` with its writer.
    Column {
        seg: usize,
        col: usize,
        writer: Box<ColumnWriter>,
    },
    /// Gather segment `seg`'s statistics.
    Stats { seg: usize },
}

/// What a [`Task`] gave.
enum Done {
    Column {
        seg: usize,
        col: usize,
        chunk: Box<Result<CompressedChunk, Encoding>>,
    },
    Stats {
        seg: usize,
        stats: Box<RowStats>,
    },
}

/// A segment's file writer and one column writer per column, each with its own page buffers
/// (they write to the file only when their chunks are appended to its row group).
fn start(
    table: &str,
    options: EncodeOptions,
    job: &Job<'_, '_>,
) -> Result<(SerializedFileWriter<Vec<u8>>, Vec<ColumnWriter>), Encoding> {
    let schema = &job.columns.1;
    let setup = segment_writer_setup(schema, table, job.view_type, options.zstd_level)?;
    let image_bytes: usize = job
        .rows
        .iter()
        .map(|r| {
            r.keys.len()
                + r.new_image.as_ref().map_or(0, Range::len)
                + r.old_image.as_ref().map_or(0, Range::len)
        })
        .sum();
    let out = Vec::with_capacity(image_bytes / 4 + 4096);
    let file = SerializedFileWriter::new(out, setup.parquet_schema.root_schema_ptr(), setup.props)
        .map_err(Encoding::Parquet)?;
    let writers = column_writers(&file, schema, &setup.levels)?;
    Ok((file, writers))
}

/// Encodes segments, each as a one-row-group Parquet file, with one pool of
/// `encode_threads` threads for all of them. Each column of each segment is built and encoded
/// by one task, `chunk_rows` rows per Arrow array; one more task per segment gathers its
/// statistics. Tasks are handed out largest first: the first-ranked task of every segment
/// (larger segments first), then the second-ranked, and so on, so with two threads the two
/// image columns land on different cores and a batch's small second segment (a batch that
/// spans an hour) is encoded beside its first rather than after it. Then each segment is
/// assembled and hashed. One result per job, in order.
fn encode_segments(
    texts: &[ColumnTexts],
    table: &str,
    (options, chunk_rows): (EncodeOptions, usize),
    jobs: &[Job<'_, '_>],
) -> Vec<(Result<Encoded, Encoding>, RowStats)> {
    let mut files: Vec<Result<SerializedFileWriter<Vec<u8>>, Encoding>> = vec![];
    let mut ranked: Vec<Vec<Task>> = vec![];
    for (seg, job) in jobs.iter().enumerate() {
        let mut tasks: Vec<Option<Task>> = vec![];
        match start(table, options, job) {
            Ok((file, writers)) => {
                files.push(Ok(file));
                tasks = writers
                    .into_iter()
                    .enumerate()
                    .map(|(col, writer)| {
                        Some(Task::Column {
                            seg,
                            col,
                            writer: Box::new(writer),
                        })
                    })
                    .collect();
            }
            Err(e) => files.push(Err(e)),
        }
        // Largest first; the statistics, about the size of a small text column, after the
        // images and keys, where they fill a gap rather than make the last task.
        let mut order: Vec<Task> = largest_first(tasks.len())
            .into_iter()
            .filter_map(|i| tasks.get_mut(i).and_then(Option::take))
            .collect();
        order.insert(order.len().min(3), Task::Stats { seg });
        ranked.push(order);
    }
    let mut by_size: Vec<usize> = (0..jobs.len()).collect();
    by_size.sort_by_key(|&j| std::cmp::Reverse(jobs[j].rows.len()));
    let mut queues: Vec<std::vec::IntoIter<Task>> =
        ranked.into_iter().map(Vec::into_iter).collect();
    let mut tasks: Vec<Task> = vec![];
    loop {
        let before = tasks.len();
        for &j in &by_size {
            tasks.extend(queues[j].next());
        }
        if tasks.len() == before {
            break;
        }
    }
    let run = |task: Task| match task {
        Task::Column {
            seg,
            col,
            mut writer,
        } => {
            let job = &jobs[seg];
            let (table_schema, schema) = (job.columns.0, &job.columns.1);
            let chunk = job
                .rows
                .chunks(chunk_rows)
                .try_for_each(|rows| {
                    let array =
                        build_column(table_schema, rows, texts, col).map_err(Encoding::Arrow)?;
                    encode_column(&mut writer, schema.field(col), &array)
                })
                .and_then(|()| writer.close().map_err(Encoding::Parquet));
            Done::Column {
                seg,
                col,
                chunk: Box::new(chunk),
            }
        }
        Task::Stats { seg } => Done::Stats {
            seg,
            stats: Box::new(RowStats::of(jobs[seg].rows)),
        },
    };
    let threads = options.encode_threads.clamp(1, tasks.len().max(1));
    let pool = crate::workers::pool(threads);
    let done: Vec<Done> = match pool {
        // One task per job: the pool's threads take the next one as they finish, in order.
        Some(pool) => pool.install(|| tasks.into_par_iter().with_max_len(1).map(run).collect()),
        None => tasks.into_iter().map(run).collect(),
    };
    let mut chunks: Vec<Vec<Option<Result<CompressedChunk, Encoding>>>> = jobs
        .iter()
        .map(|j| (0..j.columns.1.fields().len()).map(|_| None).collect())
        .collect();
    let mut stats: Vec<Option<RowStats>> = jobs.iter().map(|_| None).collect();
    for d in done {
        match d {
            Done::Column { seg, col, chunk } => chunks[seg][col] = Some(*chunk),
            Done::Stats { seg, stats: s } => stats[seg] = Some(*s),
        }
    }
    let closed: Vec<Result<Closed, Encoding>> = files
        .into_iter()
        .zip(chunks)
        .map(|(file, chunks)| {
            let chunks = chunks
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    c.unwrap_or_else(|| {
                        Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                            format!("column {i} was not encoded"),
                        )))
                    })
                })
                .collect();
            Ok(Closed {
                file: file?,
                chunks,
            })
        })
        .collect();
    let assemble = |c: Result<Closed, Encoding>| c.and_then(Closed::assemble);
    let assembled: Vec<Result<Encoded, Encoding>> = match pool.filter(|_| closed.len() > 1) {
        Some(pool) => pool.install(|| closed.into_par_iter().map(assemble).collect()),
        None => closed.into_iter().map(assemble).collect(),
    };
    assembled
        .into_iter()
        .zip(stats)
        .zip(jobs)
        .map(|((a, s), job)| (a, s.unwrap_or_else(|| RowStats::of(job.rows))))
        .collect()
}

/// [`encode_segments`] for one segment: its bytes.
#[cfg(test)]
fn encode_parquet(
    table_schema: &TableSchema,
    schema: &SchemaRef,
    (rows, texts): (&[&PreparedRow<'_>], &[ColumnTexts]),
    (table, view_type): (&str, StreamViewType),
    (options, chunk_rows): (EncodeOptions, usize),
) -> Result<Vec<u8>, Encoding> {
    let job = Job {
        columns: (table_schema, schema.clone()),
        rows,
        view_type,
    };
    let mut encoded = encode_segments(texts, table, (options, chunk_rows), &[job]);
    encoded
        .pop()
        .map_or_else(
            || {
                Err(Encoding::Parquet(parquet::errors::ParquetError::General(
                    "no segment".into(),
                )))
            },
            |(e, _)| e,
        )
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

//! Reading segments back: all of a segment or some columns (verify, restore, seal's rare
//! partial reads, Athena tests), and each row's effect recomputed from its stored images.

use super::*;

/// Reads a segment back into Arrow batches (verify, restore and tests use this).
pub fn read_segment(key: &str, bytes: Bytes) -> Result<Vec<RecordBatch>, SegmentError> {
    read(key, bytes, None).map(|(batches, _)| batches)
}

/// The stream view type a segment's file metadata records.
pub(super) fn recorded_view_type(
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
pub(crate) fn read_segment_all(
    key: &str,
    bytes: Bytes,
) -> Result<(Vec<RecordBatch>, Option<StreamViewType>), SegmentError> {
    read(key, bytes, None)
}

/// Reads only the named columns of a segment (the others are neither decompressed nor decoded).
pub(crate) fn read_segment_columns(
    key: &str,
    bytes: Bytes,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, SegmentError> {
    read(key, bytes, Some(columns)).map(|(batches, _)| batches)
}

/// Where two segments stored under one key differ in the changes they hold: `None` when they
/// hold the same changes in the same order, whatever their bytes (another encoder version,
/// another compression level, other typed columns).
pub(crate) fn change_difference(
    key: &str,
    stored: Bytes,
    ours: Bytes,
) -> Result<Option<String>, SegmentError> {
    // The metadata and image columns hold the changes losslessly; the typed columns are
    // projections of the images, which another schema file may project differently.
    let columns = crate::model::schema::BASE_COLUMNS;
    let stored = read_segment_columns(key, stored, columns)?;
    let ours = read_segment_columns(key, ours, columns)?;
    let rows = |batches: &[RecordBatch]| batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    if rows(&stored) != rows(&ours) {
        return Ok(Some(format!(
            "{} rows stored, {} in this batch",
            rows(&stored),
            rows(&ours)
        )));
    }
    // Both are read in batches of the same size, so batch i holds the same rows on both sides.
    for (a, b) in stored.iter().zip(&ours) {
        for name in columns {
            if a.column_by_name(name) != b.column_by_name(name) {
                return Ok(Some(format!("column {name} differs")));
            }
        }
    }
    Ok(None)
}

/// The named columns of a segment (all when `None`), and its recorded stream view type.
fn read(
    key: &str,
    bytes: Bytes,
    columns: Option<&[&str]>,
) -> Result<(Vec<RecordBatch>, Option<StreamViewType>), SegmentError> {
    let err = |source| SegmentError::Parquet {
        action: "reading",
        key: key.to_owned(),
        source,
    };
    let mut builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(err)?;
    let view_type = recorded_view_type(builder.metadata());
    if let Some(columns) = columns {
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            columns.iter().copied(),
        );
        builder = builder.with_projection(mask);
    }
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

/// What one row of a stored segment contributes, recomputed from the stored images.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowEffect {
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
pub(crate) struct SegmentContents {
    /// View type recorded in the file.
    pub view_type: Option<StreamViewType>,
    /// Rows.
    pub rows: Vec<RowEffect>,
}

impl SegmentContents {
    /// Reads Parquet bytes and recomputes each row's effect (rehashing both images).
    pub(crate) fn read(key: &str, bytes: Bytes) -> Result<SegmentContents, SegmentError> {
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
                    crate::model::item::item_hash(a.value(i))
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

//! Encoding: the writer settings of a segment (deterministic: the same rows give the same
//! bytes), and the tasks that encode a batch's segments on the kept pool, each column of each
//! segment a task, then each file assembled and hashed.

use super::*;

/// Columns holding whole items: large, unique per row, no use for dictionaries or page stats.
pub(super) const LARGE_TEXT_COLUMNS: &[&str] = &["new_image", "old_image", "keys", "event_id"];

pub(super) fn writer_properties(
    table: &str,
    view_type: StreamViewType,
    zstd_level: i32,
) -> WriterProperties {
    writer_properties_with(table, view_type, zstd_level, None)
}

/// A segment's writer properties as parquet would take them to compress the segment itself:
/// those of [`writer_properties`], with the columns that zstd cannot shrink left uncompressed.
/// [`segment_writer_setup`] hands the compression to [`crate::segment::pages`].
pub(super) fn segment_properties(
    schema: &SchemaRef,
    table: &str,
    view_type: StreamViewType,
    zstd_level: i32,
) -> WriterProperties {
    // Columns that stay a few hundred bytes whatever the data (bit-packed booleans, and
    // `event_name`'s three-value dictionary and its 2-bit indices) are left uncompressed:
    // zstd would save them a few dozen bytes, for a frame per page that every reader must
    // decompress. (When they were chosen, each compressed column also cost two new zstd
    // contexts per segment; `crate::segment::pages` has since done away with those.)
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
/// compress nothing: [`crate::segment::pages`] compresses their pages.
pub(super) fn segment_writer_setup(
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
    let (props, levels) = crate::segment::pages::uncompressed_writing(props, &parquet_schema)
        .map_err(Encoding::Parquet)?;
    Ok(WriterSetup {
        props: Arc::new(props),
        parquet_schema,
        levels,
    })
}

/// See [`segment_writer_setup`].
pub(super) struct WriterSetup {
    pub(super) props: Arc<WriterProperties>,
    pub(super) parquet_schema: parquet::schema::types::SchemaDescriptor,
    pub(super) levels: Arc<[Option<i32>]>,
}

/// One column writer per column of `schema`, each with its own page buffers (they do not
/// write to the file until their chunks are appended to a row group).
pub(super) fn column_writers<W: std::io::Write + Send>(
    writer: &SerializedFileWriter<W>,
    schema: &SchemaRef,
    levels: &Arc<[Option<i32>]>,
) -> Result<Vec<ColumnWriter>, Encoding> {
    crate::segment::pages::column_writers(writer, schema.clone(), levels).map_err(Encoding::Parquet)
}

/// Every column here is flat, so leaf i is column i. Largest first: the images, the keys, the
/// event ids and sequence numbers, then the small columns.
pub(super) fn largest_first(columns: usize) -> Vec<usize> {
    pub(super) const LARGE_FIRST: [usize; 5] = [6, 7, 5, 0, 3];
    let mut order: Vec<usize> = LARGE_FIRST.into_iter().filter(|&i| i < columns).collect();
    order.extend((0..columns).filter(|i| !LARGE_FIRST.contains(i)));
    order
}

pub(super) fn writer_properties_with(
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
pub(super) enum Encoding {
    Arrow(arrow_schema::ArrowError),
    Parquet(parquet::errors::ParquetError),
}

impl Encoding {
    /// The error, naming the segment `key`.
    pub(super) fn at(self, key: String) -> SegmentError {
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

/// Rows per Arrow array handed to the column writer. A whole image column of a 6 MB batch would
/// be a fresh multi-megabyte buffer (page faults, and cold by the time the encoder reads it);
/// chunks this size stay in cache. A multiple of [`STEP_ROWS`], so pages and bytes are exactly
/// those of writing the column in one call.
pub(super) const CHUNK_ROWS: usize = 1024;

/// The writer's mini-batch (`write_batch_size`): it checks whether a page is full after each.
/// Every write of a column starts at a multiple of it, so writing a column in [`CHUNK_ROWS`]
/// chunks gives the bytes of writing it whole.
pub(super) const STEP_ROWS: usize = 256;

/// One segment for [`encode_segments`]: its rows (their texts in the batch's buffers) and the
/// view type it records.
pub(super) struct Job<'j, 'r> {
    /// The table's schema and the segment's Arrow schema made from it.
    pub(super) columns: (&'j TableSchema, SchemaRef),
    pub(super) rows: &'j [&'j PreparedRow<'r>],
    pub(super) view_type: StreamViewType,
}

/// A finished segment object and its SHA-256.
pub(super) struct Encoded {
    pub(super) bytes: Vec<u8>,
    pub(super) sha256: [u8; 32],
}

/// A segment whose columns are all encoded: its file writer (schema and properties written)
/// and its column chunks, in schema order.
pub(super) struct Closed {
    pub(super) file: SerializedFileWriter<Vec<u8>>,
    pub(super) chunks: Vec<Result<CompressedChunk, Encoding>>,
}

impl Closed {
    /// The file from its encoded columns, and its SHA-256.
    pub(super) fn assemble(self) -> Result<Encoded, Encoding> {
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
pub(super) enum Task {
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
pub(super) enum Done {
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
pub(super) fn start(
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
pub(super) fn encode_segments(
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
    let pool = crate::capture::workers::pool(threads);
    let done: Vec<Done> = match pool {
        // In rank order, first come first served: each thread takes the next task as it
        // finishes one, so the two image columns start on two threads at once. (A parallel
        // iterator would split the list in halves and could leave both with one thread.)
        Some(pool) => {
            let (sender, results) = std::sync::mpsc::channel();
            pool.scope_fifo(|scope| {
                for task in tasks {
                    let (sender, run) = (sender.clone(), &run);
                    scope.spawn_fifo(move |_| {
                        // The receiver outlives the scope: sending cannot fail.
                        let _ = sender.send(run(task));
                    });
                }
            });
            drop(sender);
            results.into_iter().collect()
        }
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
pub(super) fn encode_parquet(
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

pub(super) fn encode_column(
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

/// A Parquet writer for a compacted object: the segments' own writer settings and metadata,
/// with row groups of at most 65,536 rows so Athena can split and skip within a large file.
/// Every column is compressed here: over row groups that large, the few columns a segment
/// leaves uncompressed would grow, and their zstd contexts cost next to nothing.
pub(crate) fn compacted_writer(
    table: &str,
    view_type: StreamViewType,
    schema: SchemaRef,
    zstd_level: i32,
) -> Result<parquet::arrow::ArrowWriter<Vec<u8>>, parquet::errors::ParquetError> {
    let props = writer_properties_with(table, view_type, zstd_level, Some(65_536));
    parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, Some(props))
}

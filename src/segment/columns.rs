//! The Arrow schema of a segment and each of its columns built from the rows: key and image
//! columns as slices of the batch's text buffers, the small columns sized exactly, typed
//! columns from the values captured while reading.

use super::*;

pub(super) enum TypedBuilder {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder),
    Date(Date32Builder),
    Timestamp(TimestampMillisecondBuilder),
}

impl TypedBuilder {
    pub(super) fn new(t: ColumnType, capacity: usize) -> TypedBuilder {
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

    pub(super) fn append(&mut self, v: &TypedValue) {
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

    pub(super) fn append_null(&mut self) {
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

    pub(super) fn finish(self) -> ArrayRef {
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
pub(crate) fn arrow_schema(schema: &TableSchema) -> SchemaRef {
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

/// Column `i` of the segment schema, built from the rows. The key and image columns are
/// slices of the batch's text buffers when the rows' texts lie back to back there (the usual
/// case); small text columns are sized exactly before they are filled.
pub(super) fn build_column(
    schema: &TableSchema,
    rows: &[&PreparedRow<'_>],
    texts: &[ColumnTexts],
    i: usize,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    pub(super) fn text<'r>(
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
pub(super) fn text_offset(n: usize) -> Result<i32, arrow_schema::ArrowError> {
    i32::try_from(n).map_err(|_| {
        arrow_schema::ArrowError::InvalidArgumentError(format!(
            "{n} bytes of text in one column chunk (the limit is 2 GiB)"
        ))
    })
}

/// A text array of owned values (checked to be UTF-8 here, once).
pub(super) fn string_array(
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
pub(super) fn spans<'r>(
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

/// Columns every segment has before the typed ones (see [`arrow_schema`]).
pub(super) const FIXED_COLUMNS: usize = 8;

//! Table schema files: key attributes and typed columns projected out of the images.
//!
//! A schema file is optional. Without one, a table is backed up with its metadata columns and
//! lossless image columns only. With one, analysts also get typed columns (`status STRING`,
//! `total DECIMAL(12,2)`, …) next to the images. The format, with every field:
//!
//! ```toml
//! table = "orders"                 # optional: refuse to apply this file to another table
//!
//! [key]                            # the table's primary key, recorded for restores
//! partition = { name = "pk", type = "S" }
//! sort = { name = "sk", type = "S" }            # omit for a hash-only key
//!
//! [[column]]
//! name = "status"                  # Athena column name: a-z, 0-9, _ (not a metadata column)
//! path = "status"                  # attribute path; dots walk into maps: "address.city"
//! type = "string"                  # string | bigint | double | boolean | decimal(p,s) | date | timestamp
//!
//! [[column]]
//! name = "created_at"
//! path = "created_at"
//! type = "timestamp"
//! unit = "seconds"                 # for timestamps held as numbers: seconds (default) or milliseconds
//! ```
//!
//! DynamoDB is schemaless, so a schema never rejects data: a value whose DynamoDB type does not
//! fit its column (a string where `bigint` was declared, a number with more decimals than the
//! column's scale) becomes NULL in that column, and the image column still holds it intact.
//! Unknown fields, unknown types and malformed paths are errors that name the line.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field, TimeUnit};
use serde::Deserialize;
use toml::Spanned;

use crate::model::item::{Captured, ColumnPaths};

/// The metadata and image columns every segment has, in order. Typed columns follow them.
pub(crate) const BASE_COLUMNS: &[&str] = &[
    "event_id",
    "event_name",
    "is_ttl_delete",
    "sequence_number",
    "approximate_creation_time",
    "keys",
    "new_image",
    "old_image",
];

/// Names Athena reserves for the Hive partitions in the object path.
const PARTITION_COLUMNS: &[&str] = &["dt", "hr"];

/// A schema file that cannot be used. The message names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid, with the line it happened on.
    #[error("schema file {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The DynamoDB scalar types a key attribute can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum KeyType {
    /// String.
    S,
    /// Number.
    N,
    /// Binary.
    B,
}

/// One key attribute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAttribute {
    /// Attribute name.
    pub name: String,
    /// Its DynamoDB type.
    #[serde(rename = "type")]
    pub key_type: KeyType,
}

/// The table's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySchema {
    /// The partition (hash) key.
    pub partition: KeyAttribute,
    /// The sort (range) key, if the table has one.
    #[serde(default)]
    pub sort: Option<KeyAttribute>,
}

/// An Athena type a typed column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `string`: from S.
    String,
    /// `bigint`: from an integral N that fits 64 bits.
    Bigint,
    /// `double`: from N (a projection for convenience; the image keeps the exact number).
    Double,
    /// `boolean`: from BOOL.
    Boolean,
    /// `decimal(p,s)`: from N with at most `p - s` integer and `s` fractional digits.
    Decimal {
        /// Total digits, 1..=38.
        precision: u8,
        /// Fractional digits, 0..=precision.
        scale: i8,
    },
    /// `date`: from an S of the form `YYYY-MM-DD`.
    Date,
    /// `timestamp` (milliseconds, UTC): from an ISO-8601 S or an epoch N in `unit`.
    Timestamp,
}

impl ColumnType {
    fn parse(text: &str) -> Result<ColumnType, String> {
        let t = text.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "string" => ColumnType::String,
            "bigint" => ColumnType::Bigint,
            "double" => ColumnType::Double,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => {
                let inner = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "unknown column type {text:?} (expected string, bigint, double, boolean, decimal(p,s), date or timestamp)"
                        )
                    })?;
                let (p, s) = inner.split_once(',').ok_or_else(|| {
                    format!("{text:?}: decimal needs a precision and a scale, e.g. decimal(12,2)")
                })?;
                let precision: u8 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?}: bad precision"))?;
                let scale: i8 = s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?}: bad scale"))?;
                if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
                    return Err(format!(
                        "{text:?}: decimal precision must be 1..=38 and scale 0..=precision"
                    ));
                }
                ColumnType::Decimal { precision, scale }
            }
        })
    }

    /// The Arrow type of the column; all of them are Athena-readable Parquet types.
    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Bigint => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }
}

/// How a number is read as a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EpochUnit {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[default]
    Seconds,
    /// Milliseconds since the epoch.
    Milliseconds,
}

/// One typed column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Athena column name.
    pub name: String,
    /// Attribute path, split at dots.
    pub path: Vec<String>,
    /// Column type.
    pub column_type: ColumnType,
    /// Unit of numeric timestamps.
    pub unit: EpochUnit,
}

/// A parsed, validated schema file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableSchema {
    /// The table this file is for, if it says.
    pub table: Option<String>,
    /// The key schema, if given.
    pub key: Option<KeySchema>,
    /// Typed columns, in file order.
    pub columns: Vec<Column>,
    /// The columns' attribute paths as a trie, for capturing values while reading images.
    pub paths: ColumnPaths,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSchema {
    table: Option<String>,
    key: Option<KeySchema>,
    #[serde(default)]
    column: Vec<Spanned<WireColumn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireColumn {
    name: Spanned<String>,
    path: Spanned<String>,
    #[serde(rename = "type")]
    column_type: Spanned<String>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
}

impl TableSchema {
    /// Reads and validates a schema file.
    pub fn load(path: &Path) -> Result<TableSchema, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TableSchema::parse(&text, &path.display().to_string())
    }

    /// Parses schema text; `origin` names it in errors (a file path or URL).
    pub fn parse(text: &str, origin: &str) -> Result<TableSchema, SchemaError> {
        let fail = |offset: usize, message: String| SchemaError::Invalid {
            path: origin.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let wire: WireSchema = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            fail(offset, e.message().trim().to_owned())
        })?;
        let mut columns: Vec<Column> = Vec::with_capacity(wire.column.len());
        for spanned in &wire.column {
            let c = spanned.get_ref();
            let name = c.name.get_ref();
            let valid_name = !name.is_empty()
                && name.len() <= 255
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid_name {
                return Err(fail(
                    c.name.span().start,
                    format!(
                        "column name {name:?} must be lowercase letters, digits and '_', not starting with a digit"
                    ),
                ));
            }
            if BASE_COLUMNS.contains(&name.as_str()) || PARTITION_COLUMNS.contains(&name.as_str()) {
                return Err(fail(
                    c.name.span().start,
                    format!("column name {name:?} is reserved for streamseal's own columns"),
                ));
            }
            if columns.iter().any(|other| &other.name == name) {
                return Err(fail(
                    c.name.span().start,
                    format!("column {name:?} is declared twice"),
                ));
            }
            let path_text = c.path.get_ref();
            let path: Vec<String> = path_text.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(fail(
                    c.path.span().start,
                    format!(
                        "attribute path {path_text:?} is malformed: use names separated by single dots, e.g. \"address.city\""
                    ),
                ));
            }
            let column_type = ColumnType::parse(c.column_type.get_ref())
                .map_err(|m| fail(c.column_type.span().start, m))?;
            let unit = match &c.unit {
                None => EpochUnit::Seconds,
                Some(u) if column_type != ColumnType::Timestamp => {
                    return Err(fail(
                        u.span().start,
                        "unit applies only to timestamp columns".into(),
                    ));
                }
                Some(u) => match u.get_ref().as_str() {
                    "seconds" | "s" => EpochUnit::Seconds,
                    "milliseconds" | "ms" => EpochUnit::Milliseconds,
                    other => {
                        return Err(fail(
                            u.span().start,
                            format!("unknown unit {other:?} (expected seconds or milliseconds)"),
                        ));
                    }
                },
            };
            columns.push(Column {
                name: name.clone(),
                path,
                column_type,
                unit,
            });
        }
        if let Some(table) = &wire.table {
            crate::model::change::validate_table_name(table).map_err(|m| fail(0, m))?;
        }
        let paths = ColumnPaths::new(columns.iter().map(|c| c.path.as_slice()));
        Ok(TableSchema {
            table: wire.table,
            key: wire.key,
            columns,
            paths,
        })
    }

    /// Checks the file is meant for `table`.
    pub(crate) fn check_table(&self, table: &str, origin: &str) -> Result<(), SchemaError> {
        match &self.table {
            Some(t) if t != table => Err(SchemaError::Invalid {
                path: origin.to_owned(),
                line: 1,
                message: format!("this schema is for table {t:?}, not {table:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// Arrow fields of the typed columns (all nullable).
    pub(crate) fn typed_fields(&self) -> Vec<Arc<Field>> {
        self.columns
            .iter()
            .map(|c| Arc::new(Field::new(&c.name, c.column_type.arrow_type(), true)))
            .collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A typed value extracted from an image, ready for an Arrow builder.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue<'a> {
    /// No value, or a value of another type.
    Null,
    /// For `string` (borrowed from the event text when the fast path read it).
    Str(Cow<'a, str>),
    /// For `bigint`.
    I64(i64),
    /// For `double`.
    F64(f64),
    /// For `boolean`.
    Bool(bool),
    /// For `decimal(p,s)`: the unscaled integer.
    Decimal(Unscaled),
    /// For `date`: days since the epoch.
    Date(i32),
    /// For `timestamp`: milliseconds since the epoch.
    TimestampMs(i64),
}

/// A decimal's unscaled integer, held as two 64-bit words: an `i128` would make a
/// [`TypedValue`] 16-byte aligned, unlike the captured values it is made from, and the list of
/// captured values could then not become the row's typed values in place (one allocation per
/// row more; see `PreparedRow::new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unscaled {
    hi: i64,
    lo: u64,
}

impl Unscaled {
    /// The integer.
    pub(crate) fn get(self) -> i128 {
        (i128::from(self.hi) << 64) | i128::from(self.lo)
    }
}

impl From<i128> for Unscaled {
    fn from(v: i128) -> Unscaled {
        // Two's complement halves: the high word keeps the sign, the low word the rest.
        Unscaled {
            hi: (v >> 64) as i64,
            lo: v as u64,
        }
    }
}

impl Column {
    /// This column's value from what was captured at its path; a missing or mismatched value
    /// is `Null` (the image keeps it).
    pub(crate) fn typed<'a>(&self, captured: Option<Captured<'a>>) -> TypedValue<'a> {
        let Some(value) = captured else {
            return TypedValue::Null;
        };
        match (self.column_type, &value) {
            (ColumnType::String, Captured::S(_)) => match value {
                Captured::S(s) => TypedValue::Str(s),
                _ => TypedValue::Null,
            },
            (ColumnType::Boolean, Captured::Bool(b)) => TypedValue::Bool(*b),
            (ColumnType::Bigint, Captured::N(n)) => decimal_unscaled(n, 38, 0)
                .and_then(|v| i64::try_from(v).ok())
                .map_or(TypedValue::Null, TypedValue::I64),
            (ColumnType::Double, Captured::N(n)) => n
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map_or(TypedValue::Null, TypedValue::F64),
            (ColumnType::Decimal { precision, scale }, Captured::N(n)) => {
                decimal_unscaled(n, precision, scale)
                    .map_or(TypedValue::Null, |v| TypedValue::Decimal(v.into()))
            }
            (ColumnType::Date, Captured::S(s)) => parse_date(s)
                .map(|d| (d - chrono::NaiveDate::default()).num_days())
                .and_then(|d| i32::try_from(d).ok())
                .map_or(TypedValue::Null, TypedValue::Date),
            (ColumnType::Timestamp, Captured::S(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .map(|t| t.and_utc().timestamp_millis())
                })
                .map_or(TypedValue::Null, TypedValue::TimestampMs),
            (ColumnType::Timestamp, Captured::N(n)) => {
                let scale: u32 = match self.unit {
                    EpochUnit::Seconds => 3,
                    EpochUnit::Milliseconds => 0,
                };
                // Exact decimal arithmetic; fractional milliseconds are truncated toward zero.
                decimal_truncated(n, scale)
                    .and_then(|v| i64::try_from(v).ok())
                    .map_or(TypedValue::Null, TypedValue::TimestampMs)
            }
            _ => TypedValue::Null,
        }
    }
}

/// A `date` column's text as a date, as chrono's `%Y-%m-%d` reads it. The usual form (ten
/// bytes, `YYYY-MM-DD`) is read directly: chrono's format-string parser cost about as much as
/// all the other typed columns of the orders schema together (perf), for every row.
fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    let digits = |r: std::ops::Range<usize>| {
        s.as_bytes().get(r).and_then(|d| {
            d.iter().try_fold(0u32, |v, &c| {
                c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
            })
        })
    };
    if s.len() == 10
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-'
        && let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10))
    {
        // Four digits always fit; an impossible date (2026-02-30) is no date, as in chrono.
        return chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d);
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// `10^i` for every power a u128 holds (computing one per call cost as much as the digits).
const POW10: [u128; 39] = {
    let mut table = [1u128; 39];
    let mut i = 1;
    while i < table.len() {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `n × 10^scale` as an integer, for a number in normalised form (what [`Captured::N`] holds).
/// With `exact`, `None` when fractional digits would be dropped; otherwise they are truncated
/// toward zero. `None` when the result has more than `max_digits` digits. No allocation: typed
/// columns are computed for every row.
fn scaled(n: &str, scale: u32, exact: bool, max_digits: u32) -> Option<i128> {
    let (negative, body) = match n.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, n),
    };
    let body = body.as_bytes();
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    if exact && frac.len() > scale as usize {
        return None;
    }
    let kept = &frac[..frac.len().min(scale as usize)];
    // Every row has several of these, so this is written for speed: digits gather in a u64,
    // 18 at a time (which cannot overflow it), and move into the wide value once per 18.
    const CHUNK: u32 = 18;
    let mut value: u128 = 0;
    let mut digits = 0u32;
    for part in [int, kept] {
        for run in part.chunks(CHUNK as usize) {
            let mut chunk = 0u64;
            for &b in run {
                if !b.is_ascii_digit() {
                    return None;
                }
                chunk = chunk * 10 + u64::from(b - b'0');
                // Significant digits: from the first non-zero one on.
                digits += u32::from(digits > 0 || b != b'0');
            }
            value = value
                .checked_mul(*POW10.get(run.len())?)?
                .checked_add(u128::from(chunk))?;
        }
    }
    // The zeros that make up the scale.
    let padding = u32::try_from(scale as usize - kept.len()).ok()?;
    if value != 0 {
        digits = digits.saturating_add(padding);
        value = value.checked_mul(*POW10.get(padding as usize)?)?;
    }
    if digits > max_digits {
        return None;
    }
    let value = i128::try_from(value).ok()?;
    Some(if negative { -value } else { value })
}

/// The unscaled value of `n` at `scale`, if it fits `decimal(precision, scale)` without rounding.
fn decimal_unscaled(n: &str, precision: u8, scale: i8) -> Option<i128> {
    scaled(n, u32::try_from(scale).ok()?, true, u32::from(precision))
}

/// `n × 10^scale`, truncated toward zero, if it fits 38 digits.
fn decimal_truncated(n: &str, scale: u32) -> Option<i128> {
    scaled(n, scale, false, 38)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = include_str!("../../schemas/orders.toml");

    #[test]
    fn unscaled_decimals_hold_every_i128() {
        let ten_38 = 10i128.pow(38);
        for v in [
            0,
            1,
            -1,
            123450,
            -123450,
            ten_38 - 1,
            1 - ten_38,
            i128::MAX,
            i128::MIN,
        ] {
            assert_eq!(Unscaled::from(v).get(), v);
        }
        proptest::proptest!(|(v: i128)| proptest::prop_assert_eq!(Unscaled::from(v).get(), v));
    }

    #[test]
    fn dates_read_as_chrono_reads_them() {
        let reference = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let mut checked = 0;
        for y in [
            "0000", "0001", "1969", "1970", "2000", "2024", "2026", "2100", "9999",
        ] {
            for m in 0..=13 {
                for d in 0..=32 {
                    let text = format!("{y}-{m:02}-{d:02}");
                    assert_eq!(parse_date(&text), reference(&text), "{text:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 4000);
        for text in [
            "2026-1-05",
            "2026-01-5",
            "+2026-01-05",
            "-0001-01-01",
            "12026-01-05",
            " 2026-01-05",
            "2026-01-05 ",
            "2026/01/05",
            "2026-0a-05",
            "2026-01-0x",
            "",
            "2026",
            "２０２６-01-05",
            "2026-01-05T00:00:00",
            "99999-12-31",
        ] {
            assert_eq!(parse_date(text), reference(text), "{text:?}");
        }
    }

    #[test]
    fn shipped_example_parses() {
        let s = TableSchema::parse(ORDERS, "schemas/orders.toml").unwrap();
        assert_eq!(s.table.as_deref(), Some("orders"));
        assert!(s.key.is_some());
        assert!(s.columns.len() >= 5);
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            (
                "[[column]]\nname = \"a\"\npath = \"a\"\ntype = \"varchar\"\n",
                4,
                "unknown column type",
            ),
            (
                "[[column]]\nname = \"a\"\npath = \"a..b\"\ntype = \"string\"\n",
                3,
                "malformed",
            ),
            (
                "\n[[column]]\nname = \"a\"\npath = \"a\"\ntype = \"string\"\ncolour = 1\n",
                6,
                "unknown field",
            ),
            (
                "[[column]]\nname = \"event_id\"\npath = \"a\"\ntype = \"string\"\n",
                2,
                "reserved",
            ),
            (
                "[[column]]\nname = \"a\"\npath = \"a\"\ntype = \"decimal(40,2)\"\n",
                4,
                "precision",
            ),
            (
                "table = \"x\"\n[key]\npartition = { name = \"pk\", type = \"Q\" }\n",
                3,
                "unknown variant",
            ),
            ("this is not toml", 1, ""),
        ];
        for (text, line, needle) in cases {
            match TableSchema::parse(text, "t.toml") {
                Err(SchemaError::Invalid {
                    line: got, message, ..
                }) => {
                    assert_eq!(got, line, "{text:?}: {message}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn mismatched_values_become_null() {
        let schema = TableSchema::parse(
            "[[column]]\nname = \"total\"\npath = \"p.total\"\ntype = \"decimal(6,2)\"\n\
             [[column]]\nname = \"n\"\npath = \"n\"\ntype = \"bigint\"\n\
             [[column]]\nname = \"at\"\npath = \"at\"\ntype = \"timestamp\"\n\
             [[column]]\nname = \"d\"\npath = \"d\"\ntype = \"date\"\n",
            "t",
        )
        .unwrap();
        let item = crate::model::item::Canonicalizer::new()
            .item(
                r#"{"p":{"M":{"total":{"N":"1234.5"}}},"n":{"S":"12"},"at":{"N":"1700000000.25"},"d":{"S":"2024-02-29"}}"#,
                &schema.paths,
            )
            .unwrap();
        let got: Vec<_> = schema
            .columns
            .iter()
            .zip(item.captured)
            .map(|(c, v)| c.typed(v))
            .collect();
        assert_eq!(
            got,
            vec![
                TypedValue::Decimal(123450.into()),
                TypedValue::Null,
                TypedValue::TimestampMs(1_700_000_000_250),
                TypedValue::Date(19782),
            ]
        );
        assert_eq!(decimal_unscaled("1.234", 6, 2), None, "no silent rounding");
        assert_eq!(
            decimal_unscaled("12345", 6, 2),
            None,
            "too many integer digits"
        );
        assert_eq!(decimal_unscaled("-0.5", 6, 2), Some(-50));
        assert_eq!(decimal_unscaled("9999.99", 6, 2), Some(999999));
        assert_eq!(
            decimal_unscaled("10000", 6, 2),
            None,
            "7 digits do not fit decimal(6,2)"
        );
        assert_eq!(decimal_unscaled("0", 6, 2), Some(0));
        assert_eq!(
            decimal_truncated("1700000000.2509", 3),
            Some(1_700_000_000_250)
        );
        assert_eq!(decimal_truncated("-1.9", 0), Some(-1));
        assert_eq!(decimal_truncated(&"9".repeat(39), 0), None);
    }

    /// `scaled` as it was written first: one checked 128-bit step per digit. The chunked
    /// version must agree with it everywhere.
    fn scaled_by_digit(n: &str, scale: u32, exact: bool, max_digits: u32) -> Option<i128> {
        let (negative, body) = match n.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, n),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if exact && frac.len() > scale as usize {
            return None;
        }
        let kept = &frac[..frac.len().min(scale as usize)];
        let mut value: i128 = 0;
        let mut digits = 0u32;
        let padding = std::iter::repeat_n(b'0', (scale as usize).saturating_sub(kept.len()));
        for b in int.bytes().chain(kept.bytes()).chain(padding) {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
            if value != 0 {
                digits += 1;
            }
        }
        if digits > max_digits {
            return None;
        }
        Some(if negative { -value } else { value })
    }

    #[test]
    fn scaled_agrees_with_digit_by_digit_arithmetic() {
        let edges = [
            "0",
            "-0",
            "1",
            "-1",
            "0.5",
            "-0.05",
            "12.345",
            "999999999999999999",
            "1000000000000000000",
            "9999999999999999999",
            "123456789012345678901234567890123456",
            "170141183460469231731687303715884105727",
            "170141183460469231731687303715884105728",
            "99999999999999999999999999999999999999",
            "0.000000000000000000001",
            "1.2.3",
            "1e5",
            "",
            "-",
            ".",
            "5.",
            ".5",
            "12a",
        ];
        for n in edges {
            for scale in [0, 1, 2, 3, 17, 18, 19, 20, 38, 40] {
                for exact in [true, false] {
                    for max in [1, 6, 18, 19, 38, 39] {
                        assert_eq!(
                            scaled(n, scale, exact, max),
                            scaled_by_digit(n, scale, exact, max),
                            "{n:?} scale {scale} exact {exact} max {max}"
                        );
                    }
                }
            }
        }
        proptest::proptest!(|(int in "-?[0-9]{0,40}", frac in proptest::option::of("[0-9]{0,40}"),
                              scale in 0u32..45, exact: bool, max in 0u32..40)| {
            let n = match frac {
                Some(f) => format!("{int}.{f}"),
                None => int,
            };
            proptest::prop_assert_eq!(
                scaled(&n, scale, exact, max),
                scaled_by_digit(&n, scale, exact, max),
                "{:?} scale {} exact {} max {}", n, scale, exact, max
            );
        });
    }
}

//! Athena DDL for a backup: the changes table over the segments (Hive partitions `dt`/`hr`
//! with partition projection, so no crawler or `MSCK REPAIR`), and a `<table>_latest` view
//! with the latest image per key, deleted keys excluded. See `docs/athena.md`.
//!
//! The view's SQL is plain ANSI (window function, `lpad`), so the same text runs in DuckDB
//! over the same files, which is how the tests check it against ground truth.

use crate::model::layout::TableLayout;
use crate::model::schema::{ColumnType, TableSchema};

/// Names the views give their own helper columns: with a `$`, which no schema column name can
/// hold, so a typed column named `once` or `rn` never collides with them.
const ONCE: &str = "streamseal$once";
const RANK: &str = "streamseal$rank";

/// Athena identifier for a DynamoDB table name: lower case, `-` and `.` become `_`.
pub fn athena_name(table: &str) -> String {
    table
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn athena_type(t: ColumnType) -> String {
    match t {
        ColumnType::String => "string".into(),
        ColumnType::Bigint => "bigint".into(),
        ColumnType::Double => "double".into(),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        ColumnType::Date => "date".into(),
        ColumnType::Timestamp => "timestamp".into(),
    }
}

/// The columns every segment has, with their Athena types.
const FIXED_COLUMNS: &[(&str, &str)] = &[
    ("event_id", "string"),
    ("event_name", "string"),
    ("is_ttl_delete", "boolean"),
    ("sequence_number", "string"),
    ("approximate_creation_time", "timestamp"),
    ("keys", "string"),
    ("new_image", "string"),
    ("old_image", "string"),
];

/// The column list of a segment table: the fixed columns, then the schema's typed ones.
fn column_lines(schema: &TableSchema) -> Vec<String> {
    let mut columns: Vec<String> = FIXED_COLUMNS
        .iter()
        .map(|(n, t)| format!("  `{n}` {t}"))
        .collect();
    for c in &schema.columns {
        columns.push(format!("  `{}` {}", c.name, athena_type(c.column_type)));
    }
    columns
}

/// `CREATE EXTERNAL TABLE <table>_changes_raw`: every stored object, typed columns from the
/// schema, partitions projected from the path (`dt` as a date range from `first_day`, `hr`
/// 00-23). A change can be stored twice (a redelivered batch; a segment and its compacted
/// object during compaction's grace period): analysts query the [`changes_select`] view.
pub(crate) fn changes_table(
    table: &str,
    location: &str,
    schema: &TableSchema,
    database: &str,
    first_day: &str,
) -> String {
    let location = under(location, &TableLayout::new(table).changes_prefix());
    projected_table(
        database,
        &format!("{}_changes_raw", athena_name(table)),
        schema,
        "`dt` string, `hr` string",
        "STORED AS PARQUET",
        &location,
        &[
            ("parquet.compression", "ZSTD"),
            ("projection.enabled", "true"),
            ("projection.dt.type", "date"),
            ("projection.dt.format", "yyyy-MM-dd"),
            ("projection.dt.range", &format!("{first_day},NOW")),
            ("projection.dt.interval", "1"),
            ("projection.dt.interval.unit", "DAYS"),
            ("projection.hr.type", "integer"),
            ("projection.hr.range", "0,23"),
            ("projection.hr.digits", "2"),
            (
                "storage.location.template",
                &format!("{location}dt=${{dt}}/hr=${{hr}}/"),
            ),
        ],
    )
}

/// `location` (an `s3://` URL) joined with a key prefix of the layout.
fn under(location: &str, prefix: &str) -> String {
    format!("{}/{prefix}", location.trim_end_matches('/'))
}

/// `CREATE EXTERNAL TABLE` over the objects under `location`, with the schema's columns,
/// partitions found by projection, and `properties` (the projection's settings).
fn projected_table(
    database: &str,
    name: &str,
    schema: &TableSchema,
    partitioned_by: &str,
    storage: &str,
    location: &str,
    properties: &[(&str, &str)],
) -> String {
    let properties: Vec<String> = properties
        .iter()
        .map(|(k, v)| format!("  '{k}' = '{v}'"))
        .collect();
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}` (\n{}\n)\n\
PARTITIONED BY ({partitioned_by})\n\
{storage}\n\
LOCATION '{location}'\n\
TBLPROPERTIES (\n{}\n);",
        column_lines(schema).join(",\n"),
        properties.join(",\n")
    )
}

/// The body of the `<table>_changes` view: each change once (one row per stream record, by
/// event id and sequence number, within its hour partition, so Athena still prunes by `dt` and
/// `hr` through the view).
pub fn changes_select(raw: &str, schema: &TableSchema) -> String {
    let mut columns: Vec<String> = FIXED_COLUMNS
        .iter()
        .map(|(c, _)| format!("`{c}`"))
        .collect();
    columns.extend(schema.columns.iter().map(|c| format!("`{}`", c.name)));
    columns.push("`dt`".into());
    columns.push("`hr`".into());
    format!(
        "SELECT {}\n\
FROM (\n\
  SELECT *, row_number() OVER (\n\
    PARTITION BY `dt`, `hr`, `event_id`, `sequence_number` ORDER BY `sequence_number`\n\
  ) AS `{ONCE}`\n\
  FROM {raw}\n\
)\n\
WHERE `{ONCE}` = 1",
        columns.join(", ")
    )
    .replace('`', "\"")
}

/// The body of the `<table>_latest` view: per key, the change with the highest sequence number
/// (numeric order: padded to 40 digits); keys whose latest change is a REMOVE are left out.
/// Duplicate rows (a record stored twice by a redelivery) are identical, so either serves.
pub fn latest_select(changes: &str, schema: &TableSchema) -> String {
    latest_select_with_base(changes, None, schema)
}

/// [`latest_select`] over a bootstrapped table: the base items (`keys`, `item`) count as
/// changes older than any captured one (sequence number "0"), exactly as a restore applies
/// them. Typed columns are NULL for an item known only from the base.
pub fn latest_select_with_base(changes: &str, base: Option<&str>, schema: &TableSchema) -> String {
    latest_select_from(changes, base.map_or(Start::Nothing, Start::Base), schema)
}

/// What a state view starts from, under the changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// Nothing: the changes are the whole history.
    Nothing,
    /// A bootstrap base (`keys`, `item`): every item older than any change.
    Base(&'a str),
    /// A state checkpoint (`keys`, `item`, `sequence_number`): each item at the sequence number
    /// of the change that wrote it (none: a base item), so a change sealed after the
    /// checkpoint replaces it exactly when a restore would.
    Checkpoint(&'a str),
}

/// The latest image per key over `start` plus `changes`; keys whose latest change is a REMOVE
/// are left out. Typed columns are NULL for an item taken from the start state (its `item`
/// has every attribute).
pub fn latest_select_from(changes: &str, start: Start<'_>, schema: &TableSchema) -> String {
    let mut typed = String::new();
    let mut typed_null = String::new();
    for c in &schema.columns {
        typed.push_str(&format!(", `{}`", c.name));
        // Views are Trino SQL, where Hive's `string` is `varchar`.
        let sql_type = match c.column_type {
            ColumnType::String => "varchar".to_owned(),
            t => athena_type(t),
        };
        typed_null.push_str(&format!(", CAST(NULL AS {sql_type}) AS `{}`", c.name));
    }
    let state = |rel: &str, sequence: &str| {
        format!(
            "(\n    SELECT `keys`, `new_image`, `event_name`, `sequence_number`, `approximate_creation_time`{typed} FROM {changes}\n    UNION ALL\n    SELECT `keys`, `item` AS `new_image`, 'INSERT' AS `event_name`, {sequence} AS `sequence_number`, CAST(NULL AS timestamp) AS `approximate_creation_time`{typed_null} FROM {rel}\n  )"
        )
    };
    let source = match start {
        Start::Nothing => changes.to_owned(),
        Start::Base(base) => state(base, "'0'"),
        Start::Checkpoint(c) => state(c, "coalesce(`sequence_number`, '0')"),
    };
    format!(
        "SELECT `keys`, `new_image` AS `item`, `sequence_number`, `approximate_creation_time`{typed}\n\
FROM (\n\
  SELECT *, row_number() OVER (\n\
    PARTITION BY `keys` ORDER BY lpad(`sequence_number`, 40, '0') DESC\n\
  ) AS `{RANK}`\n\
  FROM {source}\n\
)\n\
WHERE `{RANK}` = 1 AND `event_name` <> 'REMOVE'"
    )
    .replace('`', "\"")
}

/// The changes a state checkpoint at generation `checkpoint` lacks, for the latest state: the
/// segments sealed after it (`snapshot_changes` with a later generation: exact whatever their
/// times) and what is captured but not sealed yet (`raw` in hour partitions from `since`, see
/// [`unsealed_window`]; Athena prunes the rest). A change in both is the same row twice; the
/// latest-per-key rule takes either.
pub fn changes_after_checkpoint(
    snapshot_changes: &str,
    checkpoint: u64,
    raw: &str,
    since: (&str, &str),
    schema: &TableSchema,
) -> String {
    let mut cols = String::from(
        "\"keys\", \"new_image\", \"event_name\", \"sequence_number\", \"approximate_creation_time\"",
    );
    for c in &schema.columns {
        cols.push_str(&format!(", \"{}\"", c.name));
    }
    let (dt, hr) = since;
    format!(
        "(\n    SELECT {cols} FROM {snapshot_changes} WHERE \"generation\" > {checkpoint}\n    UNION ALL\n    SELECT {cols} FROM {raw} WHERE \"dt\" > '{dt}' OR (\"dt\" = '{dt}' AND \"hr\" >= '{hr}')\n  )"
    )
}

/// The first hour partition that can hold a captured change the latest seal has not sealed:
/// 25 hours before the latest snapshot's newest change. Such a change's log entry was written
/// after that seal listed the inbox, so after its newest change was captured, and DynamoDB
/// Streams keeps a record 24 hours, so it was created at most 24 hours (and a Lambda
/// invocation) before (an hour more for clocks). Older changes in the window are harmless:
/// each key's later changes are in it too, and the latest one wins. (A change ingested from an
/// old file after that seal shows once the next seal takes it.)
pub fn unsealed_window(newest_change_ms: Option<i64>) -> (String, String) {
    let from = newest_change_ms.unwrap_or(0).saturating_sub(25 * 3_600_000);
    let path = crate::model::layout::HourPartition::of_millis(from).path();
    // `dt=YYYY-MM-DD/hr=HH`
    let dt = path.get(3..13).unwrap_or("1970-01-01").to_owned();
    let hr = path.get(17..19).unwrap_or("00").to_owned();
    (dt, hr)
}

/// `CREATE EXTERNAL TABLE <table>_checkpoint`: every state checkpoint's files (`keys`, `item`,
/// `sequence_number`), through the symlink list `athena-ddl` writes per checkpoint, with the
/// checkpoint's generation as a projected partition (a view keeps the one it starts from, so
/// a view made by an earlier run still reads its own checkpoint). Bounded like the snapshot
/// table, and moved by the `ALTER TABLE` that follows it.
pub(crate) fn checkpoint_table(table: &str, location: &str, database: &str, newest: u64) -> String {
    let name = athena_name(table);
    let location = under(
        location,
        &TableLayout::new(table).athena_checkpoint_files_prefix(),
    );
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}_checkpoint` (\n  `keys` string,\n  `item` string,\n  `sequence_number` string\n)\n\
PARTITIONED BY (`generation` bigint)\n\
{SYMLINK_PARQUET}\n\
LOCATION '{location}'\n\
TBLPROPERTIES (\n  'projection.enabled' = 'true',\n  'projection.generation.type' = 'integer',\n  'projection.generation.range' = '{}',\n  'projection.generation.digits' = '10',\n  'storage.location.template' = '{location}generation=${{generation}}/'\n);",
        projection_range(newest)
    )
}

/// The rows of the checkpoint at `generation` in the `<table>_checkpoint` table.
fn checkpoint_rel(database: &str, name: &str, generation: u64) -> String {
    format!(
        "(SELECT \"keys\", \"item\", \"sequence_number\" FROM \"{database}\".\"{name}_checkpoint\" WHERE \"generation\" = {generation})"
    )
}

/// `CREATE EXTERNAL TABLE <table>_base`: the bootstrap base the chain adopted (`keys`,
/// `item`), through the symlink list `athena-ddl` writes.
pub(crate) fn base_table(table: &str, location: &str, database: &str) -> String {
    let name = athena_name(table);
    let location = under(
        location,
        &TableLayout::new(table).athena_base_files_prefix(),
    );
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{database}`.`{name}_base` (\n  `keys` string,\n  `item` string\n)\n\
{SYMLINK_PARQUET}\n\
LOCATION '{location}';"
    )
}

/// Storage clauses of a table that reads Parquet files named by Hive symlink lists (the
/// mechanism Athena supports for Delta Lake manifests).
const SYMLINK_PARQUET: &str = "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n\
STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'\n\
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'";

/// `CREATE EXTERNAL TABLE <table>_snapshot_changes`: the segments of every sealed snapshot,
/// through Hive `SymlinkTextInputFormat` manifests (one per generation, written by seal and
/// rewritten by `athena-ddl`), with the generation as a projected partition bounded by the
/// newest sealed generation (an unfiltered query projects only generations that exist).
/// Snapshot N is `generation <= N`.
pub(crate) fn snapshot_table(
    table: &str,
    location: &str,
    schema: &TableSchema,
    database: &str,
    newest: u64,
) -> String {
    let location = under(
        location,
        &TableLayout::new(table).athena_snapshot_files_prefix(),
    );
    projected_table(
        database,
        &format!("{}_snapshot_changes", athena_name(table)),
        schema,
        "`generation` bigint",
        SYMLINK_PARQUET,
        &location,
        &[
            ("projection.enabled", "true"),
            ("projection.generation.type", "integer"),
            ("projection.generation.range", &projection_range(newest)),
            ("projection.generation.digits", "10"),
            (
                "storage.location.template",
                &format!("{location}generation=${{generation}}/"),
            ),
        ],
    )
}

/// The state as of snapshot `generation`: its chain's changes (each sequence number once:
/// a record a redelivery stored twice is the same row), then the latest change per key.
pub fn snapshot_state_select(
    snapshot_changes: &str,
    generation: u64,
    base: Option<&str>,
    schema: &TableSchema,
) -> String {
    let once = format!(
        "(SELECT * FROM (\n  SELECT *, row_number() OVER (PARTITION BY `sequence_number` ORDER BY `generation`) AS `{ONCE}`\n  FROM {snapshot_changes}\n  WHERE `generation` <= {generation}\n) WHERE `{ONCE}` = 1)"
    )
    .replace('`', "\"");
    latest_select_with_base(&once, base, schema)
}

/// The state as of snapshot `generation` from the state checkpoint at `checkpoint` (a
/// generation at or before it): the checkpoint, then each sequence number sealed after it
/// once, then the latest change per key, as a restore from the checkpoint computes it.
pub fn snapshot_state_from_checkpoint(
    snapshot_changes: &str,
    checkpoint: u64,
    generation: u64,
    checkpoint_rel: &str,
    schema: &TableSchema,
) -> String {
    let once = format!(
        "(SELECT * FROM (\n  SELECT *, row_number() OVER (PARTITION BY `sequence_number` ORDER BY `generation`) AS `{ONCE}`\n  FROM {snapshot_changes}\n  WHERE `generation` > {checkpoint} AND `generation` <= {generation}\n) WHERE `{ONCE}` = 1)"
    )
    .replace('`', "\"");
    latest_select_from(&once, Start::Checkpoint(checkpoint_rel), schema)
}

/// The state checkpoint the views start from: its generation, and the first hour partition
/// that may hold a change no seal has taken yet ([`unsealed_window`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointView {
    pub(crate) generation: u64,
    pub(crate) since: (String, String),
}

/// Every statement `streamseal athena-ddl` prints. `snapshots` are the generations to make
/// views of, each with whether its chain includes a bootstrap base; `newest` is the newest
/// sealed generation (the projection's bound); `base` says the latest chain has a base (then
/// the `<table>_base` table is created and the views read it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn statements_with_snapshots(
    table: &str,
    location: &str,
    schema: &TableSchema,
    database: &str,
    first_day: &str,
    snapshots: &[(u64, bool)],
    newest: u64,
    base: bool,
    checkpoint: Option<&CheckpointView>,
) -> Vec<String> {
    let name = athena_name(table);
    let mut out = statements(
        table, location, schema, database, first_day, base, newest, checkpoint,
    );
    let base_rel = format!("\"{database}\".\"{name}_base\"");
    let snapshot_rel = format!("\"{database}\".\"{name}_snapshot_changes\"");
    for (g, with_base) in snapshots {
        let body = match checkpoint {
            Some(c) if *g >= c.generation => snapshot_state_from_checkpoint(
                &snapshot_rel,
                c.generation,
                *g,
                &checkpoint_rel(database, &name, c.generation),
                schema,
            ),
            _ => snapshot_state_select(
                &snapshot_rel,
                *g,
                with_base.then_some(base_rel.as_str()),
                schema,
            ),
        };
        out.push(format!(
            "CREATE OR REPLACE VIEW \"{database}\".\"{name}_snapshot_{g:010}\" AS\n{body};"
        ));
    }
    out
}

/// The fixed statements (database, changes table and view, base table when the chain has a
/// base, checkpoint table when there is one, snapshot table, latest view).
#[allow(clippy::too_many_arguments)]
pub(crate) fn statements(
    table: &str,
    location: &str,
    schema: &TableSchema,
    database: &str,
    first_day: &str,
    base: bool,
    newest: u64,
    checkpoint: Option<&CheckpointView>,
) -> Vec<String> {
    let name = athena_name(table);
    let base_rel = format!("\"{database}\".\"{name}_base\"");
    let mut out = vec![
        format!("CREATE DATABASE IF NOT EXISTS `{database}`;"),
        changes_table(table, location, schema, database, first_day),
        format!(
            "CREATE OR REPLACE VIEW \"{database}\".\"{name}_changes\" AS\n{};",
            changes_select(&format!("\"{database}\".\"{name}_changes_raw\""), schema)
        ),
    ];
    if base {
        out.push(base_table(table, location, database));
    }
    if let Some(c) = checkpoint {
        out.push(checkpoint_table(table, location, database, newest));
        out.push(format!(
            "ALTER TABLE `{database}`.`{name}_checkpoint` SET TBLPROPERTIES ('projection.generation.range' = '{}');",
            projection_range(newest.max(c.generation))
        ));
    }
    out.push(snapshot_table(table, location, schema, database, newest));
    // An existing table keeps its properties (IF NOT EXISTS): move its bound to the newest
    // generation on every run.
    out.push(format!(
        "ALTER TABLE `{database}`.`{name}_snapshot_changes` SET TBLPROPERTIES ('projection.generation.range' = '{}');",
        projection_range(newest)
    ));
    let raw = format!("\"{database}\".\"{name}_changes_raw\"");
    // Duplicates are identical rows, so the latest image per key reads the raw table; from a
    // checkpoint, only what it lacks: the segments sealed after it and the unsealed ones.
    let latest = match checkpoint {
        Some(c) => latest_select_from(
            &changes_after_checkpoint(
                &format!("\"{database}\".\"{name}_snapshot_changes\""),
                c.generation,
                &raw,
                (&c.since.0, &c.since.1),
                schema,
            ),
            Start::Checkpoint(&checkpoint_rel(database, &name, c.generation)),
            schema,
        ),
        None => latest_select_with_base(&raw, base.then_some(base_rel.as_str()), schema),
    };
    out.push(format!(
        "CREATE OR REPLACE VIEW \"{database}\".\"{name}_latest\" AS\n{latest};"
    ));
    out
}

/// `statements` with each external table dropped before it is created again: `CREATE EXTERNAL
/// TABLE IF NOT EXISTS` keeps a table as it was, so after a schema change the tables keep
/// their old columns and the views over them fail. Dropping an external table removes only
/// its definition from the catalog, never the backup's objects.
pub fn with_tables_recreated(statements: Vec<String>) -> Vec<String> {
    const CREATE: &str = "CREATE EXTERNAL TABLE IF NOT EXISTS ";
    let mut out = Vec::with_capacity(statements.len() + 4);
    for s in statements {
        if let Some(name) = s
            .strip_prefix(CREATE)
            .and_then(|rest| rest.split([' ', '(', '\n']).next())
        {
            out.push(format!("DROP TABLE IF EXISTS {name};"));
        }
        out.push(s);
    }
    out
}

/// Which per-snapshot views to emit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SnapshotViews {
    /// One per sealed snapshot (a statement each: thousands after a year of hourly seals).
    All,
    /// Only the latest snapshot's.
    #[default]
    Latest,
    /// None (query `<table>_snapshot_changes` with `generation <= N` yourself).
    None,
    /// These snapshot ids.
    Only(Vec<String>),
}

/// Why the DDL of a backup cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum AthenaError {
    /// Athena reads S3 only.
    #[error("the backup {location} is not in S3; Athena reads s3://bucket/prefix locations")]
    NotS3 {
        /// The backup's location.
        location: String,
    },
    /// The database name is not one Athena accepts.
    #[error("database name {database:?}: use lower-case letters, digits and _")]
    BadDatabase {
        /// The name given.
        database: String,
    },
    /// A snapshot view was asked for a snapshot that is not sealed.
    #[error("no sealed snapshot {id} to make a view of; `streamseal snapshots` lists them")]
    NoSnapshot {
        /// The id asked for.
        id: String,
    },
    /// A typed column has a name the tables and views use themselves.
    #[error(
        "schema column {column:?} has the name of {what}: the statements would have two columns of that name; rename the column in the schema file (capture is not affected)"
    )]
    ReservedColumn {
        /// The schema's column.
        column: String,
        /// What else has that name.
        what: &'static str,
    },
    /// A manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] crate::model::manifest::ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The statements for a backup, and the base file list written for them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ddl {
    /// Statements to run in order.
    pub statements: Vec<String>,
    /// The base's Athena file list, when the chain adopted a base: its key and file count.
    pub base_files: Option<(String, usize)>,
    /// The newest state checkpoint's Athena file list, when the views start from one: its key
    /// and file count.
    pub checkpoint_files: Option<(String, usize)>,
    /// Snapshot file lists (re)written because they were missing or named other locations
    /// (a backup copied or replicated to another bucket or prefix).
    pub snapshot_lists_written: Vec<String>,
}

/// The DDL for `table`'s backup in `store` (whose URL Athena reads): the first captured day
/// bounds the partition projection, each sealed snapshot gets its view, and when the chain
/// adopted a bootstrap base, its file list is (re)written for the `<table>_base` table.
pub async fn ddl(
    store: &dyn crate::store::ObjectStore,
    table: &str,
    schema: &TableSchema,
    database: &str,
    views: &SnapshotViews,
) -> Result<Ddl, AthenaError> {
    let location = store.url();
    if !location.starts_with("s3://") {
        return Err(AthenaError::NotS3 { location });
    }
    if database.is_empty()
        || !database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(AthenaError::BadDatabase {
            database: database.to_owned(),
        });
    }
    for c in &schema.columns {
        let what = match c.name.as_str() {
            "item" => "the views' item column (the latest image)",
            "generation" => "the snapshot table's generation partition",
            _ => continue,
        };
        return Err(AthenaError::ReservedColumn {
            column: c.name.clone(),
            what,
        });
    }
    let layout = TableLayout::new(table);
    let root = format!("{}/", location.trim_end_matches('/'));
    // The earliest partition bounds the projection (keys sort by date): one small listing.
    let first = store
        .list(&layout.changes_prefix(), None, Some(1))
        .await?
        .first()
        .and_then(|m| {
            m.key
                .split("dt=")
                .nth(1)
                .and_then(|d| d.get(..10))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
    // Each snapshot, with whether its chain includes a bootstrap base (its view reads it).
    let mut snapshots: Vec<(u64, bool)> = vec![];
    let mut base = vec![];
    let mut snapshot_lists_written = vec![];
    let mut chain = vec![];
    for id in crate::model::manifest::list_snapshot_ids(store, &layout, None).await? {
        if crate::model::manifest::parse_snapshot_id(&id).is_none() {
            continue;
        }
        let m = crate::model::manifest::read_manifest(store, &layout, &id).await?;
        let files = crate::model::manifest::read_files(store, &m).await?;
        chain.push((m, files));
    }
    // Segments a sealed compaction replaced are named by their compacted object (as compact
    // writes the lists): the parts are deleted after the grace period.
    // `replacements_of` takes the chain newest first (the oldest compaction of a part wins,
    // as in compact and restore); `chain` here is oldest first.
    let replaced = crate::ops::compact::replacements_of(chain.iter().rev().map(|(m, f)| (m, f)));
    for (m, files) in &chain {
        let id = &m.snapshot_id;
        let Some(g) = crate::model::manifest::parse_snapshot_id(id) else {
            continue;
        };
        // The snapshot's file list for Athena, for this location: seal writes it best effort
        // and with the URL it wrote to, so a list may be missing, or name a bucket the backup
        // was copied from. A view over a wrong list would silently miss rows.
        let mut seen = std::collections::HashSet::new();
        let list: String = files
            .segments
            .iter()
            .map(|s| replaced.get(&s.key).map_or(&s.key, |r| &r.key))
            .filter(|k| seen.insert(k.as_str()))
            .map(|k| format!("{root}{k}\n"))
            .collect();
        let key = layout.athena_snapshot_files_key(id);
        if write_if_changed(store, &key, list).await? {
            snapshot_lists_written.push(key);
        }
        snapshots.push((g, !m.base.is_empty()));
        base = m.base.clone();
    }
    let mut base_files = None;
    if !base.is_empty() {
        let list: String = base.iter().map(|b| format!("{root}{}\n", b.key)).collect();
        let key = layout.athena_base_files_key();
        write_if_changed(store, &key, list).await?;
        base_files = Some((key, base.len()));
    }
    // The newest state checkpoint of this chain (built from a snapshot whose manifest is the
    // chain's and with the latest base): the views start from it.
    let mut checkpoint = None;
    let mut checkpoint_files = None;
    if let Some((latest, _)) = chain.last() {
        for id in crate::model::checkpoint::list_checkpoints(store, &layout)
            .await?
            .iter()
            .rev()
        {
            let Some((m, _)) = chain.iter().find(|(m, _)| m.snapshot_id == *id) else {
                continue;
            };
            let c = crate::model::checkpoint::read_checkpoint(store, &layout, id).await?;
            if c.snapshot_sha256 != m.manifest_sha256 || m.base != latest.base {
                continue;
            }
            let list: String = c
                .files
                .iter()
                .map(|f| format!("{root}{}\n", f.key))
                .collect();
            let key = layout.athena_checkpoint_files_key(id);
            write_if_changed(store, &key, list).await?;
            checkpoint_files = Some((key, c.files.len()));
            checkpoint = crate::model::manifest::parse_snapshot_id(id).map(|g| CheckpointView {
                generation: g,
                since: unsealed_window(latest.watermark.newest_change_ms),
            });
            break;
        }
    }
    let newest = snapshots.last().map_or(1, |(g, _)| *g);
    let chosen: Vec<(u64, bool)> = match views {
        SnapshotViews::All => snapshots.clone(),
        SnapshotViews::Latest => snapshots.last().copied().into_iter().collect(),
        SnapshotViews::None => vec![],
        SnapshotViews::Only(ids) => {
            let mut out = vec![];
            for id in ids {
                let found = crate::model::manifest::parse_snapshot_id(id)
                    .and_then(|g| snapshots.iter().find(|(s, _)| *s == g));
                match found {
                    Some(s) => out.push(*s),
                    None => return Err(AthenaError::NoSnapshot { id: id.clone() }),
                }
            }
            out
        }
    };
    Ok(Ddl {
        statements: statements_with_snapshots(
            table,
            &location,
            schema,
            database,
            &first,
            &chosen,
            newest,
            snapshots.last().is_some_and(|(_, b)| *b),
            checkpoint.as_ref(),
        ),
        base_files,
        checkpoint_files,
        snapshot_lists_written,
    })
}

/// Generations a snapshot table projects: the sealed ones and headroom for the seals made
/// before `athena-ddl` runs again (a generation past the bound reads nothing; an unfiltered
/// query projects the whole range, which stays small).
fn projection_range(newest: u64) -> String {
    format!("1,{}", newest.max(1) + PROJECTION_HEADROOM)
}

/// Seals a snapshot table keeps projecting past the newest when the DDL was made.
const PROJECTION_HEADROOM: u64 = 1000;

/// Writes a file list unless the store already holds exactly it; whether it wrote.
async fn write_if_changed(
    store: &dyn crate::store::ObjectStore,
    key: &str,
    list: String,
) -> Result<bool, AthenaError> {
    let current = match store.get(key).await {
        Ok(b) => Some(b),
        Err(crate::store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if current.as_deref() == Some(list.as_bytes()) {
        return Ok(false);
    }
    store
        .put(
            key,
            bytes::Bytes::from(list),
            crate::store::PutMode::Overwrite,
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_rows_get_typed_nulls_in_view_sql_types() {
        let schema = TableSchema::parse(
            "table = \"orders\"\n[[column]]\nname = \"status\"\npath = \"status\"\ntype = \"string\"\n[[column]]\nname = \"total\"\npath = \"total\"\ntype = \"decimal(12,2)\"\n",
            "t.toml",
        )
        .unwrap();
        let sql = latest_select_with_base("c", Some("b"), &schema);
        assert!(sql.contains("CAST(NULL AS varchar) AS \"status\""), "{sql}");
        assert!(
            sql.contains("CAST(NULL AS decimal(12,2)) AS \"total\""),
            "{sql}"
        );
        assert!(sql.contains("UNION ALL"));
    }

    #[test]
    fn names_and_projection() {
        assert_eq!(athena_name("Orders-2026.v1"), "orders_2026_v1");
        let schema =
            TableSchema::parse(include_str!("../../schemas/orders.toml"), "orders.toml").unwrap();
        let ddl = changes_table("orders", "s3://b/p/", &schema, "backups", "2026-01-01");
        assert!(ddl.contains("LOCATION 's3://b/p/orders/changes/'"), "{ddl}");
        assert!(ddl.contains(
            "'storage.location.template' = 's3://b/p/orders/changes/dt=${dt}/hr=${hr}/'"
        ));
        assert!(
            ddl.contains("`total` decimal(12,2)") || ddl.contains("decimal("),
            "{ddl}"
        );
        let view = latest_select("orders_changes", &schema);
        assert!(view.contains("lpad(\"sequence_number\", 40, '0') DESC"));
    }
}

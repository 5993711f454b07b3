//! Segments must be readable by the engines analysts use. pyarrow and DuckDB (pinned, in the
//! test venv) read every segment the capture path writes for the fixtures, with the expected
//! row counts and types; and no column may use a type outside the Athena-safe set.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::model::log::LogEntry;
use streamseal::model::schema::TableSchema;
use streamseal::segment::EncodeOptions;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

/// Writes every fixture (and a synthetic workload in all view types) to a local store.
async fn capture_fixtures(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir).unwrap());
    let schema = TableSchema::load(&common::root().join("schemas/orders.toml")).unwrap();
    let with_schema = Ingestor::new(
        store.clone(),
        SchemaSource::Fixed(Arc::new(schema), "schemas/orders.toml".into()),
        IngestOptions {
            encode: EncodeOptions {
                zstd_level: 1,
                encode_threads: 2,
            },
            prepare_threads: 2,
            bad_records: BadRecordPolicy::Reject,
        },
    );
    for name in [
        "view-new-and-old-images.json",
        "view-new-image.json",
        "view-old-image.json",
        "view-keys-only.json",
        "ttl-delete.json",
        "all-types.json",
        "hour-boundary.json",
    ] {
        with_schema
            .ingest_event(&common::fixture(name))
            .await
            .unwrap();
    }
    for line in common::fixture("sample-events.jsonl").lines() {
        with_schema.ingest_event(line).await.unwrap();
    }
    let plain = Ingestor::new(store.clone(), SchemaSource::None, IngestOptions::default());
    plain
        .ingest_event(&common::fixture("aws-docs-example.json"))
        .await
        .unwrap();
    store
}

/// Row counts by segment key, from the segment log.
async fn expected_rows(store: &dyn ObjectStore) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for table in ["orders", "ExampleTableWithStream"] {
        for meta in store
            .list(&format!("{table}/inbox/"), None, None)
            .await
            .unwrap()
        {
            let bytes = store.get(&meta.key).await.unwrap();
            if let LogEntry::Segment(r) = LogEntry::parse(&meta.key, &bytes).unwrap() {
                out.insert(r.key, r.rows);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = capture_fixtures(dir.path()).await;
    let expected = expected_rows(store.as_ref()).await;
    assert!(expected.len() >= 9, "{expected:?}");

    let output = std::process::Command::new(common::python())
        .arg(common::root().join("tests/support/check_parquet.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "reader script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        files.len(),
        expected.len(),
        "every segment, and only segments, are Parquet files"
    );
    for f in &files {
        let path = f["path"].as_str().unwrap();
        let rows = expected[path];
        assert_eq!(f["pyarrow_rows"].as_u64(), Some(rows), "{path}");
        assert_eq!(f["duckdb_rows"].as_u64(), Some(rows), "{path}");
        assert_eq!(f["compression"], "ZSTD", "{path}");
        // Every column is zstd but those that stay tiny whatever the data: booleans
        // (bit-packed) and `event_name` (three values).
        let compressions = f["compressions"].as_object().unwrap();
        assert_eq!(compressions.len(), f["parquet"].as_array().unwrap().len());
        for (column, codec) in compressions {
            let tiny = column == "event_name" || f["arrow_types"][column] == "bool";
            let want = if tiny { "UNCOMPRESSED" } else { "ZSTD" };
            assert_eq!(codec, want, "{path}: column {column}");
        }
        assert_eq!(f["statistics"], true, "{path}: statistics on every column");
        let arrow = &f["arrow_types"];
        assert_eq!(
            arrow["approximate_creation_time"], "timestamp[ms, tz=UTC]",
            "{path}"
        );
        for text in [
            "event_id",
            "event_name",
            "sequence_number",
            "keys",
            "new_image",
            "old_image",
        ] {
            assert_eq!(arrow[text], "string", "{path}: {text}");
        }
        assert_eq!(arrow["is_ttl_delete"], "bool");
        let duck: BTreeMap<&str, &str> = f["duckdb_columns"]
            .as_array()
            .unwrap()
            .iter()
            .zip(f["duckdb_types"].as_array().unwrap())
            .map(|(n, t)| (n.as_str().unwrap(), t.as_str().unwrap()))
            .collect();
        assert!(
            duck["approximate_creation_time"].starts_with("TIMESTAMP"),
            "{path}: {duck:?}"
        );
        if path.starts_with("orders/") {
            assert_eq!(arrow["total"], "decimal128(12, 2)", "{path}");
            assert_eq!(arrow["item_count"], "int64");
            assert_eq!(arrow["weight_kg"], "double");
            assert_eq!(arrow["gift"], "bool");
            assert_eq!(arrow["ship_date"], "date32[day]");
            assert_eq!(arrow["placed_at"], "timestamp[ms, tz=UTC]");
            assert_eq!(duck["total"], "DECIMAL(12,2)");
            assert_eq!(duck["ship_date"], "DATE");
        }
    }
}

/// The Parquet types Athena (Trino), Spark, DuckDB and pyarrow all read the same way.
fn athena_safe(physical: PhysicalType, logical: Option<&LogicalType>) -> bool {
    match (physical, logical) {
        (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)) => true,
        (PhysicalType::BOOLEAN, None) => true,
        (PhysicalType::INT64, None) => true,
        (PhysicalType::DOUBLE, None) => true,
        (PhysicalType::INT32, Some(LogicalType::Date)) => true,
        (
            PhysicalType::INT32 | PhysicalType::INT64 | PhysicalType::FIXED_LEN_BYTE_ARRAY,
            Some(LogicalType::Decimal(d)),
        ) => d.precision <= 38,
        (PhysicalType::INT64, Some(LogicalType::Timestamp(t))) => {
            t.is_adjusted_to_u_t_c && t.unit == TimeUnit::MILLIS
        }
        // Anything else (INT96, nanosecond or microsecond timestamps, unsigned integers, TIME,
        // UUID, nested types, view types) is not on the list.
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_uses_an_athena_safe_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = capture_fixtures(dir.path()).await;
    let expected = expected_rows(store.as_ref()).await;
    for key in expected.keys() {
        let file = std::fs::File::open(dir.path().join(key)).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        for col in schema.columns() {
            let (physical, logical) = (col.physical_type(), col.logical_type_ref());
            assert!(
                athena_safe(physical, logical),
                "{key}: column {} is {physical:?}/{logical:?}, outside the Athena-safe set",
                col.name()
            );
            assert_eq!(col.max_rep_level(), 0, "{key}: {} is nested", col.name());
        }
    }
    // And the check itself rejects what it should.
    assert!(!athena_safe(PhysicalType::INT96, None));
    assert!(!athena_safe(
        PhysicalType::INT64,
        Some(&LogicalType::timestamp(true, TimeUnit::NANOS))
    ));
    assert!(!athena_safe(
        PhysicalType::INT32,
        Some(&LogicalType::integer(32, false))
    ));
}

//! The generated `<table>_latest` view, run in DuckDB (the closest local engine to Athena) over
//! the real segment files, equals the ground truth, duplicates from redelivery included.
//! `athena-ddl` prints the statements and refuses non-S3 targets.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::item::canonicalize;
use streamseal::model::schema::TableSchema;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

/// The capture path with the typed columns of `schemas/orders.toml`.
fn orders_ingestor(store: &Arc<dyn ObjectStore>) -> (Arc<TableSchema>, Ingestor) {
    ingestor_with(store, include_str!("../schemas/orders.toml"))
}

/// The capture path with the typed columns of the schema `text`.
fn ingestor_with(store: &Arc<dyn ObjectStore>, text: &str) -> (Arc<TableSchema>, Ingestor) {
    let schema = Arc::new(TableSchema::parse(text, "schemas/orders.toml").unwrap());
    let ing = Ingestor::new(
        store.clone(),
        SchemaSource::Fixed(schema.clone(), "schemas/orders.toml".into()),
        IngestOptions {
            encode: Default::default(),
            prepare_threads: 1,
            bad_records: BadRecordPolicy::Quarantine,
        },
    );
    (schema, ing)
}

#[tokio::test]
async fn latest_view_in_duckdb_equals_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let (schema, ing) = orders_ingestor(&store);
    let mut w = Workload::new(3, "orders", StreamViewType::NewAndOldImages, 400);
    let mut batches = vec![];
    for _ in 0..8 {
        let records: Vec<String> = (0..50).map(|_| w.next_change().record).collect();
        ing.ingest_event(&format!("{{\"Records\":[{}]}}", records.join(",")))
            .await
            .unwrap();
        batches.push(records);
    }
    // A bisected redelivery stores some records twice.
    ing.ingest_event(&format!("{{\"Records\":[{}]}}", batches[3][..20].join(",")))
        .await
        .unwrap();

    let changes = format!(
        "read_parquet('{}/orders/changes/*/*/*.parquet', hive_partitioning = true)",
        dir.path().display()
    );
    let sql = format!(
        "SELECT \"item\" FROM ({}) AS latest",
        streamseal::ops::athena::latest_select(&changes, &schema)
    );
    let rows = common::duckdb_rows(&sql);
    let got: BTreeSet<String> = rows.into_iter().map(|r| r[0].clone()).collect();
    let truth: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();
    assert_eq!(got.len(), truth.len());
    assert_eq!(got, truth);

    // The changes view: every change exactly once, although the redelivery stored 20 twice.
    let raw = common::duckdb_rows(&format!("SELECT count(*) FROM {changes}"));
    assert_eq!(raw[0][0], "420");
    let sql = format!(
        "SELECT count(*), count(DISTINCT \"sequence_number\") FROM ({}) AS c",
        streamseal::ops::athena::changes_select(&changes, &schema)
    );
    let rows = common::duckdb_rows(&sql);
    assert_eq!(rows[0], ["400", "400"]);
}

#[test]
fn athena_ddl_prints_statements_and_refuses_local_targets() {
    let env = common::moto_env();
    let (_, err) = common::run_err(
        &["athena-ddl", "--table", "orders", "--target", "/tmp/x"],
        &env,
    );
    assert!(err.contains("Athena reads S3"), "{err}");

    let client = common::s3_client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(client.create_bucket().bucket("athena-ddl").send())
        .unwrap();
    let text = common::run_ok_env(
        &[
            "athena-ddl",
            "--table",
            "orders",
            "--target",
            "s3://athena-ddl/backups",
            "--schema",
            "schemas/orders.toml",
        ],
        &env,
    );
    assert!(text.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `streamseal`.`orders_changes_raw`"));
    assert!(text.contains("CREATE OR REPLACE VIEW \"streamseal\".\"orders_changes\" AS"));
    assert!(text.contains("LOCATION 's3://athena-ddl/backups/orders/changes/'"));
    assert!(text.contains("CREATE OR REPLACE VIEW \"streamseal\".\"orders_latest\""));
    assert!(text.contains("`orders_snapshot_changes`") && text.contains("SymlinkTextInputFormat"));
}

/// `schema infer` on a captured workload proposes a valid schema file with the expected types.
#[tokio::test]
async fn schema_infer_proposes_a_valid_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(9, "orders", StreamViewType::NewAndOldImages, 400);
    for _ in 0..4 {
        ing.ingest_event(&w.next_event(50)).await.unwrap();
    }
    let text = streamseal::ops::infer::infer(&store, "orders", 10)
        .await
        .unwrap();
    let schema =
        TableSchema::parse(&text, "inferred.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let key = schema.key.expect("key");
    assert_eq!(
        (key.partition.name.as_str(), key.sort.unwrap().name.as_str()),
        ("pk", "sk")
    );
    let col = |path: &str| {
        schema
            .columns
            .iter()
            .find(|c| c.path.join(".") == path)
            .unwrap_or_else(|| panic!("no column for {path}\n{text}"))
            .column_type
    };
    use streamseal::model::schema::ColumnType;
    assert_eq!(col("status"), ColumnType::String);
    assert_eq!(col("customer.address.city"), ColumnType::String);
    assert_eq!(col("ship_date"), ColumnType::Date);
    assert_eq!(col("gift"), ColumnType::Boolean);
    assert_eq!(col("item_count"), ColumnType::Bigint);
    assert!(matches!(col("total"), ColumnType::Decimal { .. }));
    // An empty backup gets a clear error.
    let empty = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(empty.path()).unwrap());
    let err = streamseal::ops::infer::infer(&store, "orders", 10)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("capture some changes first"),
        "{err}"
    );
}

/// Per-snapshot state through the symlink manifests seal writes (emulated in DuckDB as the
/// union of each generation's listed files): snapshot 1 equals the state when it was sealed,
/// snapshot 2 the final state, with redelivered duplicates in between.
#[tokio::test]
async fn snapshot_views_in_duckdb_equal_the_state_at_each_seal() {
    use streamseal::ops::seal::{SealOptions, seal};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(4, "orders", StreamViewType::NewAndOldImages, 300);
    let mut events = vec![];
    for _ in 0..3 {
        let e = w.next_event(40);
        ing.ingest_event(&e).await.unwrap();
        events.push(e);
    }
    seal(&store, "orders", &SealOptions::default())
        .await
        .unwrap();
    let at_first: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();
    for _ in 0..3 {
        ing.ingest_event(&w.next_event(40)).await.unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
    let half: Vec<String> = v["Records"].as_array().unwrap()[..20]
        .iter()
        .map(|r| r.to_string())
        .collect();
    ing.ingest_event(&format!("{{\"Records\":[{}]}}", half.join(",")))
        .await
        .unwrap();
    seal(&store, "orders", &SealOptions::default())
        .await
        .unwrap();
    let at_second: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();

    let schema = TableSchema::default();
    for (generation, truth) in [(1u64, &at_first), (2, &at_second)] {
        let mut parts = vec![];
        for g in 1..=generation {
            let key = streamseal::model::layout::TableLayout::new("orders")
                .athena_snapshot_files_key(&format!("{g:010}"));
            let text = std::fs::read_to_string(dir.path().join(&key)).unwrap();
            let files: Vec<String> = text
                .lines()
                .map(|l| format!("'{}'", l.strip_prefix("file://").unwrap()))
                .collect();
            if !files.is_empty() {
                parts.push(format!(
                    "SELECT *, {g} AS generation FROM read_parquet([{}], hive_partitioning = true)",
                    files.join(", ")
                ));
            }
        }
        let source = format!("({})", parts.join(" UNION ALL "));
        let sql = format!(
            "SELECT \"item\" FROM ({}) AS s",
            streamseal::ops::athena::snapshot_state_select(&source, generation, None, &schema)
        );
        let rows = common::duckdb_rows(&sql);
        let got: BTreeSet<String> = rows.into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(&got, truth, "snapshot {generation}");
    }
}

/// A bootstrapped table: the latest view over base + changes equals the ground truth (items
/// never changed since the bootstrap come from the base), and without the base it would not.
#[tokio::test]
async fn latest_view_with_a_base_equals_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let layout = streamseal::model::layout::TableLayout::new("orders");
    let mut w = Workload::new(8, "orders", StreamViewType::NewAndOldImages, 300);
    // History before capture: the table's contents at bootstrap become the base.
    for _ in 0..300 {
        w.next_change();
    }
    let mut base =
        streamseal::model::base::BaseWriter::new(store.clone(), &layout, "0000000000000001", 0);
    for item in w.items() {
        let v: serde_json::Value = serde_json::from_str(item).unwrap();
        let key = serde_json::json!({"pk": v["pk"], "sk": v["sk"]}).to_string();
        base.push(canonicalize(&key).unwrap(), canonicalize(item).unwrap())
            .await
            .unwrap();
    }
    base.flush().await.unwrap();
    // Then captured changes (with the typed columns of the orders schema, which base rows get
    // as typed NULLs), touching some of those keys and adding others.
    let (schema, ing) = orders_ingestor(&store);
    for _ in 0..4 {
        ing.ingest_event(&w.next_event(30)).await.unwrap();
    }
    let changes = format!(
        "read_parquet('{}/orders/changes/*/*/*.parquet', hive_partitioning = true)",
        dir.path().display()
    );
    let base_rel = format!(
        "read_parquet('{}/orders/base/*/*.parquet')",
        dir.path().display()
    );
    let truth: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();
    let sql = format!(
        "SELECT \"item\" FROM ({}) AS latest",
        streamseal::ops::athena::latest_select_with_base(&changes, Some(&base_rel), &schema)
    );
    let got: BTreeSet<String> = common::duckdb_rows(&sql)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(got, truth);
    let sql = format!(
        "SELECT \"item\" FROM ({}) AS latest",
        streamseal::ops::athena::latest_select(&changes, &schema)
    );
    let without = common::duckdb_rows(&sql).len();
    assert!(
        without < truth.len(),
        "the base holds items no change mentions"
    );
}

/// Typed columns may be named like the helper columns the views rank and de-duplicate with
/// (`rn`, `once`): the views use names no schema column can have, so the latest image per key
/// and each change once are still right, and the typed columns come through.
#[tokio::test]
async fn typed_columns_named_like_the_views_own_columns_do_not_break_them() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let text = include_str!("../schemas/orders.toml")
        .replace("name = \"status\"", "name = \"rn\"")
        .replace("name = \"city\"", "name = \"once\"");
    let (schema, ing) = ingestor_with(&store, &text);
    let mut w = Workload::new(13, "orders", StreamViewType::NewAndOldImages, 200);
    for _ in 0..4 {
        ing.ingest_event(&w.next_event(50)).await.unwrap();
    }
    let changes = format!(
        "read_parquet('{}/orders/changes/*/*/*.parquet', hive_partitioning = true)",
        dir.path().display()
    );
    let rows = common::duckdb_rows(&format!(
        "SELECT \"item\", \"rn\" FROM ({}) AS latest",
        streamseal::ops::athena::latest_select(&changes, &schema)
    ));
    let got: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    let truth: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();
    assert_eq!(got, truth);
    // The typed `rn` column is the item's status.
    let mut typed = 0;
    for r in &rows {
        let item: serde_json::Value = serde_json::from_str(&r[0]).unwrap();
        if let Some(status) = item["status"]["S"].as_str() {
            assert_eq!(r[1], status, "{}", r[0]);
            typed += 1;
        }
    }
    assert!(typed > 0);
    let rows = common::duckdb_rows(&format!(
        "SELECT count(*), count(\"once\") FROM ({}) AS c",
        streamseal::ops::athena::changes_select(&changes, &schema)
    ));
    assert_eq!(rows[0][0], "200");
}

/// A backup of `orders` in a fresh emulator bucket, sealed `seals` times (a batch each).
async fn sealed_in_s3(bucket: &str, prefix: &str, seals: usize) -> Arc<dyn ObjectStore> {
    use streamseal::ops::seal::{SealOptions, seal};
    let store = common::fresh_s3_store(bucket, prefix).await;
    let ing = common::ingestor(&store);
    let mut w = Workload::new(6, "orders", StreamViewType::NewAndOldImages, 100);
    for _ in 0..seals {
        ing.ingest_event(&w.next_event(25)).await.unwrap();
        seal(&store, "orders", &SealOptions::default())
            .await
            .unwrap();
    }
    store
}

/// Every statement parses as Athena SQL (sqlglot's dialect, pinned in tests/requirements.txt)
/// into a real statement, and every view's columns are uniquely named.
fn parses_as_athena_sql(statements: &[String]) {
    use std::io::Write;
    let mut child = std::process::Command::new(common::python())
        .arg(common::root().join("tests/support/check_sql.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(statements).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check_sql.py:\n{text}");
}

/// `athena-ddl` against a backup in S3 (the emulator) that was copied from elsewhere: one
/// snapshot's file list is missing (seal writes it best effort) and another names the bucket
/// it was copied from. Both are rewritten for this location (a view over them would silently
/// miss rows), the snapshot table's generation projection is bounded by the newest snapshot,
/// and a schema column named like a view's own column is refused with a clear error.
#[tokio::test]
async fn athena_ddl_repairs_snapshot_lists_and_bounds_the_projection() {
    use streamseal::model::layout::TableLayout;
    use streamseal::ops::athena::SnapshotViews;
    let store = sealed_in_s3("athena-copied", "backups", 2).await;
    let layout = TableLayout::new("orders");
    let (first, second) = (
        layout.athena_snapshot_files_key("0000000001"),
        layout.athena_snapshot_files_key("0000000002"),
    );
    let copied = String::from_utf8(store.get(&second).await.unwrap().to_vec())
        .unwrap()
        .replace("s3://athena-copied/backups/", "s3://old-bucket/old/");
    store.delete(&first).await.unwrap();
    store
        .put(
            &second,
            bytes::Bytes::from(copied),
            streamseal::store::PutMode::Overwrite,
        )
        .await
        .unwrap();

    // Verify says which lists are missing (a note: the backup itself is whole).
    let lists_missing = || async {
        let options = streamseal::ops::verify::VerifyOptions {
            scope: streamseal::ops::verify::Scope::Chain,
            ..Default::default()
        };
        let r = streamseal::ops::verify::verify(&store, "orders", "latest", options)
            .await
            .unwrap();
        assert!(r.ok, "{}", r.render());
        r.athena_lists_missing
    };
    assert_eq!(lists_missing().await, vec!["0000000001"]);

    let schema = TableSchema::default();
    let ddl = streamseal::ops::athena::ddl(
        store.as_ref(),
        "orders",
        &schema,
        "backups",
        &SnapshotViews::All,
    )
    .await
    .unwrap();
    assert_eq!(
        ddl.snapshot_lists_written,
        vec![first.clone(), second.clone()]
    );
    for key in [&first, &second] {
        let text = String::from_utf8(store.get(key).await.unwrap().to_vec()).unwrap();
        assert!(!text.is_empty());
        for line in text.lines() {
            assert!(
                line.starts_with("s3://athena-copied/backups/orders/changes/"),
                "{line}"
            );
            let segment = line.strip_prefix("s3://athena-copied/backups/").unwrap();
            assert!(store.head(segment).await.unwrap().is_some(), "{line}");
        }
    }
    assert!(lists_missing().await.is_empty());
    // Nothing to repair on a second run.
    let again = streamseal::ops::athena::ddl(
        store.as_ref(),
        "orders",
        &schema,
        "backups",
        &SnapshotViews::All,
    )
    .await
    .unwrap();
    assert!(again.snapshot_lists_written.is_empty());
    let all = ddl.statements.join("\n");
    parses_as_athena_sql(&ddl.statements);
    // With typed columns, one named like a view's helper column.
    let text = include_str!("../schemas/orders.toml").replace("name = \"status\"", "name = \"rn\"");
    let typed = TableSchema::parse(&text, "orders.toml").unwrap();
    let with_columns = streamseal::ops::athena::ddl(
        store.as_ref(),
        "orders",
        &typed,
        "backups",
        &SnapshotViews::All,
    )
    .await
    .unwrap();
    parses_as_athena_sql(&with_columns.statements);
    assert!(
        all.contains("'projection.generation.range' = '1,1002'"),
        "{all}"
    );
    assert!(!all.contains("9999999999"), "{all}");
    assert!(
        all.contains("ALTER TABLE `backups`.`orders_snapshot_changes` SET TBLPROPERTIES ('projection.generation.range' = '1,1002');"),
        "{all}"
    );

    let item = TableSchema::parse(
        "table = \"orders\"\n[[column]]\nname = \"item\"\npath = \"item\"\ntype = \"string\"\n",
        "t.toml",
    )
    .unwrap();
    let err = streamseal::ops::athena::ddl(
        store.as_ref(),
        "orders",
        &item,
        "backups",
        &SnapshotViews::All,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"item\"") && err.contains("rename"), "{err}");
}

/// One view per seal is thousands of statements after a year: `athena-ddl` emits the latest
/// snapshot's view by default, all of them, none, or the ones named (an unknown id is an
/// error); `--recreate-tables` drops each external table before creating it again, so a
/// schema change reaches the catalog (the statements still parse as Athena SQL).
#[tokio::test]
async fn snapshot_views_are_chosen_and_tables_can_be_recreated() {
    use streamseal::ops::athena::{SnapshotViews, ddl, with_tables_recreated};
    let store = sealed_in_s3("athena-views", "b", 3).await;
    let schema = TableSchema::default();
    let views = |statements: &[String]| -> Vec<String> {
        statements
            .iter()
            .filter_map(|s| s.split("\"orders_snapshot_").nth(1))
            .map(|rest| rest[..10].to_owned())
            .collect()
    };
    let cases = [
        (SnapshotViews::Latest, vec!["0000000003"]),
        (SnapshotViews::None, vec![]),
        (
            SnapshotViews::All,
            vec!["0000000001", "0000000002", "0000000003"],
        ),
        (
            SnapshotViews::Only(vec!["0000000001".into()]),
            vec!["0000000001"],
        ),
    ];
    for (which, want) in cases {
        let d = ddl(store.as_ref(), "orders", &schema, "db", &which)
            .await
            .unwrap();
        assert_eq!(views(&d.statements), want, "{which:?}");
        // The projection is bounded by the newest snapshot whichever views are emitted.
        assert!(
            d.statements.iter().any(|s| s.contains("'1,1003'")),
            "{which:?}"
        );
    }
    let err = ddl(
        store.as_ref(),
        "orders",
        &schema,
        "db",
        &SnapshotViews::Only(vec!["0000000009".into()]),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("0000000009"), "{err}");

    let d = ddl(
        store.as_ref(),
        "orders",
        &schema,
        "db",
        &SnapshotViews::Latest,
    )
    .await
    .unwrap();
    let recreated = with_tables_recreated(d.statements.clone());
    for (i, s) in recreated.iter().enumerate() {
        if let Some(rest) = s.strip_prefix("CREATE EXTERNAL TABLE IF NOT EXISTS ") {
            let name = rest.split(' ').next().unwrap();
            assert_eq!(recreated[i - 1], format!("DROP TABLE IF EXISTS {name};"));
        }
    }
    assert_eq!(
        recreated
            .iter()
            .filter(|s| s.starts_with("DROP TABLE"))
            .count(),
        2,
        "the changes table and the snapshot table"
    );
    parses_as_athena_sql(&recreated);
}

/// The views over a state checkpoint (emulated in DuckDB: the checkpoint's files, each
/// generation's listed segments, the raw changes): the latest view (checkpoint ∪ segments
/// sealed after it ∪ unsealed changes from the window's hour on) equals the ground truth on a
/// history of several days, where the window leaves most hour partitions out, with changes
/// sealed after the checkpoint and changes not sealed at all; the snapshot views from the
/// checkpoint equal the state at their seal. The typed columns come through for changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_checkpoint_equal_the_ground_truth() {
    use streamseal::ops::athena::{
        Start, changes_after_checkpoint, latest_select_from, snapshot_state_from_checkpoint,
        unsealed_window,
    };
    use streamseal::ops::seal::{SealOptions, seal};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let (schema, ing) = orders_ingestor(&store);
    let mut w = Workload::new(12, "orders", StreamViewType::NewAndOldImages, 200);
    // One change every 3 minutes: 3,000 changes span 150 hours, the unsealed window 25+.
    w.step_ms = 180_000;
    let mut truths = vec![];
    for s in 1..=3 {
        for _ in 0..9 {
            ing.ingest_event(&w.next_event(100)).await.unwrap();
        }
        seal(&store, "orders", &SealOptions::default())
            .await
            .unwrap();
        truths.push(
            w.items()
                .map(|i| canonicalize(i).unwrap())
                .collect::<BTreeSet<_>>(),
        );
        if s == 2 {
            let options = streamseal::ops::checkpoint::CheckpointOptions {
                partitions: Some(3),
                ..Default::default()
            };
            streamseal::ops::checkpoint::checkpoint(
                &store,
                "orders",
                "latest",
                &options,
                &streamseal::model::clock::SystemClock,
                &Arc::new(streamseal::progress::Progress::default()),
            )
            .await
            .unwrap();
        }
    }
    let latest_manifest = streamseal::model::manifest::read_manifest(
        store.as_ref(),
        &streamseal::model::layout::TableLayout::new("orders"),
        "0000000003",
    )
    .await
    .unwrap();
    // Not sealed: captured after the last seal.
    for _ in 0..3 {
        ing.ingest_event(&w.next_event(100)).await.unwrap();
    }
    let truth: BTreeSet<String> = w.items().map(|i| canonicalize(i).unwrap()).collect();

    let root = dir.path().display().to_string();
    let checkpoint = format!("read_parquet('{root}/orders/checkpoint-files/0000000002/*.parquet')");
    let mut parts = vec![];
    for g in 1..=3 {
        let key = streamseal::model::layout::TableLayout::new("orders")
            .athena_snapshot_files_key(&format!("{g:010}"));
        let text = std::fs::read_to_string(dir.path().join(&key)).unwrap();
        let files: Vec<String> = text
            .lines()
            .map(|l| format!("'{}'", l.strip_prefix("file://").unwrap()))
            .collect();
        parts.push(format!(
            "SELECT *, {g} AS generation FROM read_parquet([{}], hive_partitioning = true)",
            files.join(", ")
        ));
    }
    let snapshot_changes = format!("({})", parts.join(" UNION ALL "));
    let raw =
        format!("read_parquet('{root}/orders/changes/*/*/*.parquet', hive_partitioning = true)");
    let (dt, hr) = unsealed_window(latest_manifest.watermark.newest_change_ms);
    // The window leaves most of the history out.
    let all_hours = std::fs::read_dir(dir.path().join("orders/changes"))
        .unwrap()
        .count();
    assert!(all_hours >= 3, "{all_hours} days");
    let changes = changes_after_checkpoint(&snapshot_changes, 2, &raw, (&dt, &hr), &schema);
    let sql = format!(
        "SELECT \"item\", coalesce(\"customer_id\", '') FROM ({}) AS latest",
        latest_select_from(&changes, Start::Checkpoint(&checkpoint), &schema)
    );
    let rows = common::duckdb_rows(&sql);
    let got: BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, truth);
    assert!(
        rows.iter().any(|r| r[1] != "None" && !r[1].is_empty()),
        "typed columns of changes"
    );
    // The test has teeth: the window alone leaves out most of the history, and the
    // checkpoint with the sealed changes alone misses the unsealed ones.
    let only = |source: String, start: Start<'_>| -> BTreeSet<String> {
        let sql = format!(
            "SELECT \"item\" FROM ({}) AS latest",
            latest_select_from(&source, start, &schema)
        );
        common::duckdb_rows(&sql)
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    };
    let window_only = only(raw_window(&raw, &dt, &hr), Start::Nothing);
    assert!(
        window_only.len() < truth.len(),
        "{} of {}",
        window_only.len(),
        truth.len()
    );
    let sealed_only = only(
        format!("(SELECT * FROM {snapshot_changes} WHERE \"generation\" > 2)"),
        Start::Checkpoint(&checkpoint),
    );
    assert_ne!(sealed_only, truth);
    for g in [2u64, 3] {
        let sql = format!(
            "SELECT \"item\" FROM ({}) AS s",
            snapshot_state_from_checkpoint(&snapshot_changes, 2, g, &checkpoint, &schema)
        );
        let got: BTreeSet<String> = common::duckdb_rows(&sql)
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        assert_eq!(got, truths[g as usize - 1], "snapshot {g}");
    }
}

/// `raw` restricted to hour partitions from (`dt`, `hr`), with the columns the views read.
fn raw_window(raw: &str, dt: &str, hr: &str) -> String {
    format!("(SELECT * FROM {raw} WHERE \"dt\" > '{dt}' OR (\"dt\" = '{dt}' AND \"hr\" >= '{hr}'))")
}

/// `athena-ddl` on a checkpointed backup in S3: a `<table>_checkpoint` table over the
/// checkpoint's file list (written for this location), the latest and snapshot views read
/// it, and every statement parses as Athena SQL.
#[tokio::test]
async fn athena_ddl_starts_the_views_from_the_newest_checkpoint() {
    use streamseal::ops::athena::SnapshotViews;
    let store = sealed_in_s3("athena-checkpoint", "backups", 3).await;
    streamseal::ops::checkpoint::checkpoint(
        &store,
        "orders",
        "0000000002",
        &Default::default(),
        &streamseal::model::clock::SystemClock,
        &Arc::new(streamseal::progress::Progress::default()),
    )
    .await
    .unwrap();
    let ddl = streamseal::ops::athena::ddl(
        store.as_ref(),
        "orders",
        &TableSchema::default(),
        "backups",
        &SnapshotViews::All,
    )
    .await
    .unwrap();
    let (key, files) = ddl.checkpoint_files.clone().unwrap();
    assert_eq!(
        key,
        "orders/athena/checkpoint-files/generation=0000000002/symlink.txt"
    );
    let list = String::from_utf8(store.get(&key).await.unwrap().to_vec()).unwrap();
    assert_eq!(list.lines().count(), files);
    assert!(
        list.lines()
            .all(|l| l
                .starts_with("s3://athena-checkpoint/backups/orders/checkpoint-files/0000000002/")),
        "{list}"
    );
    let all = ddl.statements.join("\n");
    assert!(all.contains("`orders_checkpoint`"), "{all}");
    let latest = ddl
        .statements
        .iter()
        .find(|s| s.contains("\"orders_latest\""))
        .unwrap();
    assert!(
        latest.contains("\"orders_checkpoint\"") && latest.contains("\"generation\" > 2"),
        "{latest}"
    );
    let s1 = ddl
        .statements
        .iter()
        .find(|s| s.contains("\"orders_snapshot_0000000001\""))
        .unwrap();
    assert!(
        !s1.contains("orders_checkpoint"),
        "snapshot 1 is before the checkpoint: {s1}"
    );
    let s3 = ddl
        .statements
        .iter()
        .find(|s| s.contains("\"orders_snapshot_0000000003\""))
        .unwrap();
    assert!(s3.contains("\"orders_checkpoint\""), "{s3}");
    // The tables a view reads are created before it.
    let pos = |needle: &str| {
        ddl.statements
            .iter()
            .position(|s| s.contains(needle))
            .unwrap()
    };
    assert!(
        pos("EXTERNAL TABLE IF NOT EXISTS `backups`.`orders_snapshot_changes`")
            < pos("VIEW \"backups\".\"orders_latest\"")
    );
    parses_as_athena_sql(&ddl.statements);
}

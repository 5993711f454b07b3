//! Restore against the emulator: a source table takes a workload of every attribute type
//! (inserts, updates, deletes, TTL-style deletes) while its changes are captured; the backup
//! is sealed and restored into a new table, which must equal the source item for item (an
//! independent scan-and-compare) with matching digests. Also: --as-of, resume after a target
//! failure, throttling, and bad input.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType as DdbKeyType, ScalarAttributeType,
};
use streamseal::aws::restore::{Request, Target, run};
use streamseal::capture::Ingestor;
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::item::{StateDigest, item_hash};
use streamseal::model::schema::{KeyAttribute, KeySchema, KeyType};
use streamseal::ops::restore::{Point, RestoreError};
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::progress::Progress;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;
use streamseal::testing::dynamo_faults::DynamoFaults;

fn key_schema() -> KeySchema {
    KeySchema {
        partition: KeyAttribute {
            name: "pk".into(),
            key_type: KeyType::S,
        },
        sort: Some(KeyAttribute {
            name: "sk".into(),
            key_type: KeyType::S,
        }),
    }
}

async fn create_source(client: &Client, table: &str) {
    common::create_orders_table(client, table, true).await;
}

async fn scan_all(client: &Client, table: &str) -> BTreeMap<String, String> {
    common::scan_items(client, table).await
}

fn digest_of<'a>(items: impl Iterator<Item = &'a String>) -> StateDigest {
    let mut d = StateDigest::ZERO;
    for i in items {
        d.add_item(&item_hash(i).unwrap());
    }
    d
}

struct Captured {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    /// Source state (canonical) and time after the first half of the workload.
    middle: (BTreeMap<String, String>, i64),
}

/// Runs a workload against `source` in the emulator while capturing each batch of its
/// changes through the ingest path, then seals. `source` ends up holding the final state.
async fn capture(client: &Client, source: &str, batches: usize) -> Captured {
    create_source(client, source).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(99, source, StreamViewType::NewAndOldImages, 600);
    let mut middle = None;
    for b in 0..batches {
        let mut records = vec![];
        for _ in 0..40 {
            let c = common::apply_change(client, source, &mut w).await;
            records.push(c.record);
        }
        let report = ing
            .ingest_event(&format!("{{\"Records\":[{}]}}", records.join(",")))
            .await
            .unwrap();
        assert!(report.error.is_none());
        if b == batches / 2 - 1 {
            middle = Some((scan_all(client, source).await, w.now_ms()));
        }
    }
    seal(
        &store,
        source,
        &SealOptions {
            key_schema: Some(key_schema()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Captured {
        _dir: dir,
        store,
        middle: middle.unwrap(),
    }
}

fn request(table: &str, point: Point, to: Target) -> Request {
    Request {
        create_table: true,
        workers: 4,
        scan_segments: 3,
        max_resubmits: 8,
        ..Request::new(table, point, to)
    }
}

#[tokio::test]
async fn restored_table_equals_the_source() {
    let client = common::dynamodb_client(None);
    let c = capture(&client, "restore-src", 6).await;
    let source = scan_all(&client, "restore-src").await;
    assert!(source.len() > 50);

    let report = run(
        &c.store,
        Some(&client),
        &request(
            "restore-src",
            Point::Snapshot("latest".into()),
            Target::Dynamo("restore-dst".into()),
        ),
        &Progress::default(),
    )
    .await
    .unwrap();
    assert!(report.matches, "{report:?}");
    let restored = scan_all(&client, "restore-dst").await;
    assert_eq!(restored.len(), source.len());
    for (k, v) in &source {
        assert_eq!(restored.get(k), Some(v), "item {k}");
    }
    assert_eq!(report.digest, digest_of(source.values()));
    assert_eq!(report.target_digest, report.digest);

    // As of the middle of the workload, to files: the state the test recorded then.
    let out = tempfile::tempdir().unwrap();
    let (mid_state, mid_ms) = &c.middle;
    let report = run(
        &c.store,
        None,
        &request(
            "restore-src",
            Point::AsOf(*mid_ms),
            Target::Files(out.path().to_owned()),
        ),
        &Progress::default(),
    )
    .await
    .unwrap();
    assert!(report.matches);
    assert_eq!(report.items, mid_state.len() as u64);
    assert_eq!(report.digest, digest_of(mid_state.values()));
}

#[tokio::test]
async fn a_failed_restore_resumes_and_throttling_loses_nothing() {
    let healthy = common::dynamodb_client(None);
    let c = capture(&healthy, "resume-src", 4).await;
    let source = scan_all(&healthy, "resume-src").await;
    let mut req = request(
        "resume-src",
        Point::Snapshot("latest".into()),
        Target::Dynamo("resume-dst".into()),
    );
    req.materialize.min_partitions = 8;
    req.max_resubmits = 2;

    // The target becomes unreachable after a few batches.
    let outage = Arc::new(DynamoFaults {
        fail_after: Some(3),
        ..Default::default()
    });
    let broken = common::dynamodb_client(Some(outage.clone()));
    let err = run(&c.store, Some(&broken), &req, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    let partial = scan_all(&healthy, "resume-dst").await.len();
    assert!(partial > 0 && partial < source.len(), "{partial}");

    // Rerun with throttling and unprocessed items injected: resumes, completes, exact.
    let flaky = Arc::new(DynamoFaults {
        throttle_every: 3,
        unprocessed_every: 2,
        ..Default::default()
    });
    let client = common::dynamodb_client(Some(flaky.clone()));
    req.max_resubmits = 8;
    let report = run(&c.store, Some(&client), &req, &Progress::default())
        .await
        .unwrap();
    assert!(report.resumed);
    assert!(report.matches, "{report:?}");
    assert!(report.retries > 0);
    assert!(flaky.injected.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(scan_all(&healthy, "resume-dst").await, source);
}

/// A restore that fails inside its first partition leaves some items and no finished
/// partition; the rerun still resumes (its start was recorded before anything was written)
/// instead of refusing the target as not empty, and ends with the exact table.
#[tokio::test]
async fn a_restore_whose_first_partition_fails_resumes() {
    let healthy = common::dynamodb_client(None);
    let c = capture(&healthy, "first-src", 4).await;
    let source = scan_all(&healthy, "first-src").await;
    let mut req = request(
        "first-src",
        Point::Snapshot("latest".into()),
        Target::Dynamo("first-dst".into()),
    );
    // One partition, written by one worker: the second BatchWriteItem call fails, so the
    // first batch is in the table and no partition is finished.
    req.materialize.min_partitions = 1;
    req.workers = 1;
    req.max_resubmits = 1;
    let outage = Arc::new(DynamoFaults {
        fail_after: Some(1),
        ..Default::default()
    });
    let broken = common::dynamodb_client(Some(outage));
    let err = run(&c.store, Some(&broken), &req, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    let partial = scan_all(&healthy, "first-dst").await.len();
    assert!(partial > 0 && partial < source.len(), "{partial}");

    let report = run(&c.store, Some(&healthy), &req, &Progress::default())
        .await
        .unwrap();
    assert!(report.resumed, "{report:?}");
    assert!(report.complete && report.matches, "{report:?}");
    assert_eq!(scan_all(&healthy, "first-dst").await, source);

    // A different restore into that (now full) table is still refused, writing nothing.
    let mut other = req.clone();
    other.point = Point::AsOf(c.middle.1);
    let err = run(&c.store, Some(&healthy), &other, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

/// The retry policy retries throttling (above) but never an error retrying cannot fix: a
/// denied BatchWriteItem fails the restore after exactly one call, naming the error.
#[tokio::test]
async fn access_denied_is_not_retried() {
    let healthy = common::dynamodb_client(None);
    let c = capture(&healthy, "denied-src", 2).await;
    let denied = Arc::new(DynamoFaults {
        deny_after: Some(0),
        ..Default::default()
    });
    let client = common::dynamodb_client(Some(denied.clone()));
    let mut req = request(
        "denied-src",
        Point::Snapshot("latest".into()),
        Target::Dynamo("denied-dst".into()),
    );
    req.workers = 1;
    let err = run(&c.store, Some(&client), &req, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
    assert_eq!(denied.calls(), 1, "one call, no retry");
}

/// A caller with a time limit (a Lambda restore task): each run stops at its deadline after
/// writing at least one partition and reports `complete: false`; rerunning until complete
/// ends with the exact table, one partition per run at the least.
#[tokio::test]
async fn a_restore_with_a_deadline_hands_back_and_resumes_to_the_end() {
    let client = common::dynamodb_client(None);
    let c = capture(&client, "budget-src", 4).await;
    let source = scan_all(&client, "budget-src").await;
    let mut req = request(
        "budget-src",
        Point::Snapshot("latest".into()),
        Target::Dynamo("budget-dst".into()),
    );
    req.materialize.min_partitions = 5;
    // Small scan pages: the self-check scan does not fit in one run either.
    req.scan_segments = 2;
    req.scan_page_items = Some(10);
    let pages = source.len().div_ceil(10) + 2;
    let mut runs = 0;
    let mut scan_runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 5 + pages, "no progress");
        // Already past: every run writes exactly one partition, then hands back.
        req.deadline = Some(std::time::Instant::now());
        let report = run(&c.store, Some(&client), &req, &Progress::default())
            .await
            .unwrap();
        assert_eq!(report.resumed, runs > 1);
        if report.complete {
            assert!(report.matches, "{report:?}");
            break;
        }
        let partial = scan_all(&client, "budget-dst").await.len();
        if partial == source.len() {
            // Every partition is written: this run stopped inside the self-check scan.
            scan_runs += 1;
        }
    }
    assert!(runs > 5, "the scan resumed across runs");
    assert_eq!(runs - scan_runs, 5, "one partition per run");
    // Each run scans at least one page per segment and stops at the deadline: the scan
    // needed several runs (one per 10-item page of the larger segment, about).
    assert!(scan_runs >= 2, "{scan_runs}");
    assert_eq!(scan_all(&client, "budget-dst").await, source);
}

#[tokio::test]
async fn bad_input_is_refused_before_writing() {
    let client = common::dynamodb_client(None);
    let c = capture(&client, "refuse-src", 2).await;
    let expect_err = async |req: Request, needle: &str| {
        let err = run(&c.store, Some(&client), &req, &Progress::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    };
    expect_err(
        request(
            "refuse-src",
            Point::Snapshot("7".into()),
            Target::Dynamo("refuse-a".into()),
        ),
        "snapshot 0000000007 of table refuse-src does not exist",
    )
    .await;
    expect_err(
        request(
            "refuse-src",
            Point::AsOf(0),
            Target::Dynamo("refuse-a".into()),
        ),
        "the backup begins at",
    )
    .await;
    expect_err(
        request(
            "refuse-src",
            Point::AsOf(4_102_444_800_000),
            Target::Dynamo("refuse-a".into()),
        ),
        "seal again",
    )
    .await;
    // A target with another key schema.
    client
        .create_table()
        .table_name("refuse-other-key")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(DdbKeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    expect_err(
        request(
            "refuse-src",
            Point::Snapshot("latest".into()),
            Target::Dynamo("refuse-other-key".into()),
        ),
        "has key id (N)",
    )
    .await;
    // A non-empty target.
    expect_err(
        request(
            "refuse-src",
            Point::Snapshot("latest".into()),
            Target::Dynamo("refuse-src".into()),
        ),
        "is not empty",
    )
    .await;
    // In place: a table with another key schema, a missing table, an instant not covered.
    for (target, point, needle) in [
        (
            "refuse-other-key",
            Point::Snapshot("latest".into()),
            "another key schema",
        ),
        (
            "refuse-missing",
            Point::Snapshot("latest".into()),
            "does not exist",
        ),
        ("refuse-src", Point::AsOf(4_102_444_800_000), "seal again"),
    ] {
        let err = streamseal::aws::inplace::restore_in_place(
            &c.store,
            &client,
            "refuse-src",
            &point,
            target,
            &Default::default(),
            &Progress::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(needle), "{target}: {err}");
    }
    // Nothing was written anywhere.
    assert!(scan_all(&client, "refuse-other-key").await.is_empty());
    let tables = client.list_tables().send().await.unwrap();
    assert!(!tables.table_names().iter().any(|t| t == "refuse-a"));
    let _: Option<RestoreError> = None;
}

/// A table that already held items before capture began: bootstrap (scan, or a native export)
/// gives the base; changes captured from then on complete it; the restore is exact.
#[tokio::test]
async fn bootstrapped_tables_restore_exactly() {
    use std::io::Write as _;
    use streamseal::aws::bootstrap::{Source, bootstrap};
    let client = common::dynamodb_client(None);
    let source = "boot-src";
    create_source(&client, source).await;
    let mut w = Workload::new(7, source, StreamViewType::NewAndOldImages, 500);
    // History before the capture existed: applied to the table, never captured.
    for _ in 0..120 {
        common::apply_change(&client, source, &mut w).await;
    }
    let before = scan_all(&client, source).await;
    assert!(before.len() > 30);
    // The same state as a DynamoDB full export.
    let export = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(export.path().join("data")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(export.path().join("data/abc123.json.gz")).unwrap(),
        flate2::Compression::default(),
    );
    for item in before.values() {
        writeln!(gz, "{{\"Item\":{item}}}").unwrap();
    }
    gz.finish().unwrap();
    std::fs::write(
        export.path().join("manifest-summary.json"),
        r#"{"version":"2020-06-30","exportArn":"arn:aws:dynamodb:us-east-1:123456789012:table/boot-src/export/01","startTime":"2026-01-01T00:00:00.000Z","endTime":"2026-01-01T00:05:00.000Z","tableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/boot-src","tableId":"x","exportTime":"2026-01-01T00:00:00.000Z","s3Bucket":"b","s3Prefix":"p","s3SseAlgorithm":"AES256","manifestFilesS3Key":"p/AWSDynamoDB/01/manifest-files.json","billedSizeBytes":0,"itemCount":0,"outputFormat":"DYNAMODB_JSON","exportType":"FULL_EXPORT"}"#,
    )
    .unwrap();
    std::fs::write(
        export.path().join("manifest-files.json"),
        format!(
            "{{\"itemCount\":{},\"md5Checksum\":\"x\",\"etag\":\"y\",\"dataFileS3Key\":\"p/AWSDynamoDB/01/data/abc123.json.gz\"}}\n",
            before.len()
        ),
    )
    .unwrap();

    let by_scan = tempfile::tempdir().unwrap();
    let by_export = tempfile::tempdir().unwrap();
    let mut stores = vec![];
    for (dir, src) in [
        (&by_scan, Source::Scan(3)),
        (
            &by_export,
            Source::Export(export.path().to_str().unwrap().to_owned()),
        ),
    ] {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let base = bootstrap(&store, &client, source, &src, None)
            .await
            .unwrap();
        assert_eq!(base.items, before.len() as u64);
        assert_eq!(base.digest, digest_of(before.values()));
        // A second bootstrap is refused.
        assert!(
            bootstrap(&store, &client, source, &src, None)
                .await
                .is_err()
        );
        stores.push(store);
    }

    // From now on changes are captured (into both backups).
    let ingestors: Vec<Ingestor> = stores.iter().map(common::ingestor).collect();
    for _ in 0..3 {
        let mut records = vec![];
        for _ in 0..40 {
            let c = common::apply_change(&client, source, &mut w).await;
            records.push(c.record);
        }
        for ing in &ingestors {
            ing.ingest_event(&format!("{{\"Records\":[{}]}}", records.join(",")))
                .await
                .unwrap();
        }
    }
    let after = scan_all(&client, source).await;
    for (i, store) in stores.iter().enumerate() {
        let sealed = seal(store, source, &SealOptions::default()).await.unwrap();
        assert!(!sealed.manifest.base.is_empty());
        assert_eq!(sealed.manifest.item_count, after.len() as i64);
        assert_eq!(
            sealed.manifest.state_digest,
            Some(digest_of(after.values()))
        );
        let target = format!("boot-dst-{i}");
        let report = run(
            store,
            Some(&client),
            &request(
                source,
                Point::Snapshot("latest".into()),
                Target::Dynamo(target.clone()),
            ),
            &Progress::default(),
        )
        .await
        .unwrap();
        assert!(report.matches);
        assert_eq!(scan_all(&client, &target).await, after);
        let v = streamseal::ops::verify::verify(store, source, "latest", Default::default())
            .await
            .unwrap();
        assert!(v.ok, "{}", v.render());
    }
}

#[tokio::test]
async fn bootstrap_refuses_a_table_without_a_stream() {
    let client = common::dynamodb_client(None);
    client
        .create_table()
        .table_name("no-stream")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(DdbKeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let err = streamseal::aws::bootstrap::bootstrap(
        &store,
        &client,
        "no-stream",
        &streamseal::aws::bootstrap::Source::Scan(2),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no stream is enabled"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// The managed bulk path: a restore to `s3://bucket/prefix` writes the DynamoDB import format
/// (gzip DynamoDB JSON lines under `prefix/data/`), checks what it wrote by reading it back,
/// and returns the `ImportTable` request that loads it into a new table, with the key schema
/// the manifest records. (The emulator cannot run ImportTable: the objects and the request
/// are what is checked.) A second restore to the same place is refused.
#[tokio::test]
async fn a_restore_to_s3_writes_the_import_format_and_the_import_request() {
    use std::io::Read;
    let client = common::dynamodb_client(None);
    let c = capture(&client, "import-src", 3).await;
    let source = scan_all(&client, "import-src").await;
    let s3 = common::s3_client();
    s3.create_bucket()
        .bucket("restore-import")
        .send()
        .await
        .unwrap();
    // Through the CLI, as a user runs it (the backup in a directory, the output in S3).
    let backup = c._dir.path().display().to_string();
    let args = [
        "restore",
        "--table",
        "import-src",
        "--target",
        backup.as_str(),
        "--to",
        "s3://restore-import/out/",
        "--json",
    ];
    let report = common::run_json(&args, &common::moto_env());
    assert_eq!(report["matches"], true, "{report}");
    assert_eq!(report["items"], source.len() as u64);

    // The objects hold exactly the source's items.
    let mut items = BTreeMap::new();
    for url in report["files"].as_array().unwrap() {
        let key = url
            .as_str()
            .unwrap()
            .strip_prefix("s3://restore-import/")
            .unwrap();
        assert!(
            key.starts_with("out/data/part-") && key.ends_with(".json.gz"),
            "{key}"
        );
        let body = s3
            .get_object()
            .bucket("restore-import")
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let item = streamseal::model::item::canonicalize(&v["Item"].to_string()).unwrap();
            let k = format!(
                "{}\u{0}{}",
                v["Item"]["pk"]["S"].as_str().unwrap(),
                v["Item"]["sk"]["S"].as_str().unwrap()
            );
            items.insert(k, item);
        }
    }
    assert_eq!(items, source);

    let import = &report["import_request"];
    assert_eq!(import["S3BucketSource"]["S3Bucket"], "restore-import");
    assert_eq!(import["S3BucketSource"]["S3KeyPrefix"], "out/data/");
    assert_eq!(import["InputFormat"], "DYNAMODB_JSON");
    assert_eq!(import["InputCompressionType"], "GZIP");
    let t = &import["TableCreationParameters"];
    assert_eq!(t["TableName"], "import-src-imported");
    assert_eq!(
        t["KeySchema"],
        serde_json::json!([
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"}
        ])
    );
    assert_eq!(t["BillingMode"], "PAY_PER_REQUEST");

    let (_, err) = common::run_err(&args, &common::moto_env());
    assert!(err.contains("already holds restore output"), "{err}");
}

/// Partitions are written concurrently (`parallel`), each checkpointed when finished: a restore
/// that dies midway (the target becomes unreachable after a few calls, with several partitions
/// in flight) resumes on rerun, rewrites only the unfinished partitions, at least 4 at once,
/// and ends with the exact table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_restore_killed_midway_resumes_exactly() {
    let healthy = common::dynamodb_client(None);
    let c = capture(&healthy, "parallel-src", 16).await;
    let source = scan_all(&healthy, "parallel-src").await;
    let mut req = request(
        "parallel-src",
        Point::Snapshot("latest".into()),
        Target::Dynamo("parallel-dst".into()),
    );
    req.materialize.min_partitions = 12;
    req.materialize.parallel = 4;
    req.workers = 2;
    req.max_resubmits = 1;
    let outage = Arc::new(DynamoFaults {
        fail_after: Some(9),
        ..Default::default()
    });
    let broken = common::dynamodb_client(Some(outage));
    let err = run(&c.store, Some(&broken), &req, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    let partial = scan_all(&healthy, "parallel-dst").await.len();
    assert!(partial > 0 && partial < source.len(), "{partial}");
    // The restore's checkpoint: some partitions finished, not all.
    let listed = c
        .store
        .list("parallel-src/restores/", None, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&c.store.get(&listed[0].key).await.unwrap()).unwrap();
    let done = checkpoint["done"].as_array().unwrap().len();
    assert!((1..12).contains(&done), "{checkpoint}");

    let report = run(&c.store, Some(&healthy), &req, &Progress::default())
        .await
        .unwrap();
    assert!(
        report.resumed && report.complete && report.matches,
        "{report:?}"
    );
    assert_eq!(report.partitions, 12);
    assert!(report.parallel_partitions >= 4, "{report:?}");
    assert_eq!(scan_all(&healthy, "parallel-dst").await, source);
}

/// The distributed path, driven through the Lambda handler as the state machine drives it: a
/// checkpoint with 4 partitions plus changes sealed after it; `restore-plan` answers one
/// iteration per partition; the 4 `restore-partition` calls run at once, one of them on a
/// client whose target becomes unreachable midway; rerunning every iteration skips the
/// finished partitions and writes the failed one; `restore-check` combines the digests and
/// scans: the table equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_restore_runs_partitions_at_once_and_resumes_one_that_died() {
    use streamseal::lambda::{Config, Handler, serve};
    let healthy = common::dynamodb_client(None);
    let c = capture(&healthy, "dist-src", 12).await;
    let mut options = streamseal::ops::checkpoint::CheckpointOptions {
        partitions: Some(4),
        ..Default::default()
    };
    options.materialize.memory_mb = 16;
    streamseal::ops::checkpoint::checkpoint(
        &c.store,
        "dist-src",
        "latest",
        &options,
        &streamseal::model::clock::SystemClock,
        &Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    // Changes after the checkpoint.
    let ing = common::ingestor(&c.store);
    let mut w = Workload::new(100, "dist-src", StreamViewType::NewAndOldImages, 600);
    let mut records = vec![];
    for _ in 0..60 {
        records.push(
            common::apply_change(&healthy, "dist-src", &mut w)
                .await
                .record,
        );
    }
    ing.ingest_event(&format!("{{\"Records\":[{}]}}", records.join(",")))
        .await
        .unwrap();
    seal(&c.store, "dist-src", &SealOptions::default())
        .await
        .unwrap();
    let source = scan_all(&healthy, "dist-src").await;

    let config =
        Config::from_lookup(|k| (k == "STREAMSEAL_TARGET").then(|| "memory://".into())).unwrap();
    let handler = |client: Client| {
        let store = c.store.clone();
        let config = config.clone();
        async move {
            Handler::with_store(store, &config)
                .await
                .unwrap()
                .with_dynamodb(client)
        }
    };
    let call = async |h: &Handler, input: serde_json::Value| {
        serve(
            h,
            lambda_runtime::LambdaEvent::new(
                serde_json::value::RawValue::from_string(input.to_string()).unwrap(),
                lambda_runtime::Context::default(),
            ),
        )
        .await
    };
    let good = handler(healthy.clone()).await;
    let plan = call(
        &good,
        serde_json::json!({"action": "restore-plan", "table": "dist-src", "target_table": "dist-dst"}),
    )
    .await
    .unwrap();
    assert_eq!(plan["partitions"], 4, "{plan}");
    assert_eq!(plan["checkpoint"], "0000000001", "{plan}");
    let iterations = plan["iterations"].as_array().unwrap().clone();
    assert_eq!(iterations.len(), 4);

    // All four at once; the last one's target fails after its first write.
    let dying = handler(common::dynamodb_client(Some(Arc::new(DynamoFaults {
        fail_after: Some(1),
        ..Default::default()
    }))))
    .await;
    let first = futures_util::future::join_all(iterations.iter().enumerate().map(|(i, it)| {
        let h = if i == 3 { &dying } else { &good };
        call(h, it.clone())
    }))
    .await;
    assert!(first[..3].iter().all(|r| r.is_ok()), "{first:?}");
    let err = first[3].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("unreachable") && err.contains("rerun resumes"),
        "{err}"
    );
    let partial = scan_all(&healthy, "dist-dst").await.len();
    assert!(partial > 0 && partial < source.len(), "{partial}");

    // The state machine retries the iterations: finished ones are skipped, not rewritten.
    let second =
        futures_util::future::join_all(iterations.iter().map(|it| call(&good, it.clone()))).await;
    let results: Vec<serde_json::Value> = second.into_iter().map(|r| r.unwrap()).collect();
    let skipped: Vec<bool> = results
        .iter()
        .map(|r| r["skipped"].as_bool().unwrap())
        .collect();
    assert_eq!(skipped, vec![true, true, true, false]);
    // A check missing a partition's result is refused.
    let err = call(
        &good,
        serde_json::json!({"action": "restore-check", "table": "dist-src", "snapshot": plan["snapshot"],
            "target_table": "dist-dst", "results": results[..3]}),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("partition 3 has no result"),
        "{err}"
    );
    let check = call(
        &good,
        serde_json::json!({"action": "restore-check", "table": "dist-src", "snapshot": plan["snapshot"],
            "target_table": "dist-dst", "results": results}),
    )
    .await
    .unwrap();
    assert_eq!(check["complete"], true, "{check}");
    assert_eq!(check["matches"], true, "{check}");
    assert_eq!(check["items"], source.len() as u64);
    assert_eq!(scan_all(&healthy, "dist-dst").await, source);
}

/// `restore --in-place`: a table restored from the backup then drifted (items changed,
/// deleted and added, one of them kept changing by a writer while the restore runs) is brought
/// back to the snapshot by writing only the differing keys; the key the writer keeps changing
/// is a conflict, left alone; every other item equals the snapshot afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_in_place_writes_only_the_difference_and_leaves_conflicts_alone() {
    use streamseal::aws::inplace::{InPlaceOptions, restore_in_place};
    let client = common::dynamodb_client(None);
    let c = capture(&client, "inplace-src", 6).await;
    let source = scan_all(&client, "inplace-src").await;
    let report = run(
        &c.store,
        Some(&client),
        &request(
            "inplace-src",
            Point::Snapshot("latest".into()),
            Target::Dynamo("inplace-dst".into()),
        ),
        &Progress::default(),
    )
    .await
    .unwrap();
    assert!(report.matches);
    // Drift: change 5 items, delete 4, add 3.
    let keys: Vec<String> = source.keys().cloned().collect();
    assert!(keys.len() > 20, "{}", keys.len());
    let item_of = |k: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&source[k]).unwrap();
        v["status"] = serde_json::json!({"S": "DRIFTED"});
        v.to_string()
    };
    let put = async |text: &str| {
        client
            .put_item()
            .table_name("inplace-dst")
            .set_item(Some(
                streamseal::aws::dynamodb::to_attribute_map(text, "item").unwrap(),
            ))
            .send()
            .await
            .unwrap();
    };
    for k in &keys[0..5] {
        put(&item_of(k)).await;
    }
    for k in &keys[5..9] {
        let v: serde_json::Value = serde_json::from_str(&source[k]).unwrap();
        let key = serde_json::json!({"pk": v["pk"], "sk": v["sk"]}).to_string();
        client
            .delete_item()
            .table_name("inplace-dst")
            .set_key(Some(
                streamseal::aws::dynamodb::to_attribute_map(&key, "key").unwrap(),
            ))
            .send()
            .await
            .unwrap();
    }
    for i in 0..3 {
        put(&format!(
            r#"{{"pk":{{"S":"extra#{i}"}},"sk":{{"S":"x"}},"status":{{"S":"NEW"}}}}"#
        ))
        .await;
    }
    // A dry run plans exactly the differing keys and writes nothing.
    let options = InPlaceOptions {
        dry_run: true,
        ..Default::default()
    };
    let plan = restore_in_place(
        &c.store,
        &client,
        "inplace-src",
        &Point::Snapshot("latest".into()),
        "inplace-dst",
        &options,
        &Progress::default(),
    )
    .await
    .unwrap();
    assert_eq!((plan.puts, plan.deletes), (9, 3), "{plan:?}");
    assert_eq!(plan.unchanged as usize, source.len() - 9);
    assert_eq!(
        scan_all(&client, "inplace-dst").await.len(),
        source.len() - 4 + 3
    );

    // A writer keeps changing one of the drifted keys while the restore runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hot = keys[0].clone();
    let writer = {
        let (client, stop, base) = (client.clone(), stop.clone(), item_of(&hot));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
                v["status"] = serde_json::json!({"S": format!("WRITER-{n}")});
                client
                    .put_item()
                    .table_name("inplace-dst")
                    .set_item(Some(
                        streamseal::aws::dynamodb::to_attribute_map(&v.to_string(), "item")
                            .unwrap(),
                    ))
                    .send()
                    .await
                    .unwrap();
                n += 1;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let done = restore_in_place(
        &c.store,
        &client,
        "inplace-src",
        &Point::Snapshot("latest".into()),
        "inplace-dst",
        &InPlaceOptions::default(),
        &Progress::default(),
    )
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!((done.puts, done.deletes), (9, 3), "{done:?}");
    let (pk, sk) = hot.split_once('\0').unwrap();
    assert_eq!(
        done.conflicts,
        vec![format!(r#"{{"pk":{{"S":"{pk}"}},"sk":{{"S":"{sk}"}}}}"#)],
        "{done:?}"
    );
    assert_eq!(done.verified, 11);
    assert!(done.not_verified.is_empty());
    let mut after = scan_all(&client, "inplace-dst").await;
    assert!(after.remove(&hot).unwrap().contains("WRITER-"));
    let mut expected = source.clone();
    expected.remove(&hot);
    assert_eq!(after, expected);
}

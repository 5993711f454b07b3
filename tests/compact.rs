//! Compaction end to end, on the local store and on S3 (moto): small segments of several hours
//! are compacted while capture keeps writing; the seal publishes the compactions; a later run
//! deletes the small files. Before and after: the same rows and state digest, restores (of the
//! new and of the older snapshot) equal to the ground truth, deep verify clean, the file count
//! down by the expected factor, and every change present exactly once for a reader of all
//! files (DuckDB over the real objects, deduplicated by sequence number as the Athena view is).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::item::{StateDigest, item_hash};
use streamseal::ops::compact::{CompactOptions, compact};
use streamseal::ops::restore::Point;
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::ops::verify::{Mode, Scope, VerifyOptions, verify};
use streamseal::progress::Progress;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

fn digest_of<'a>(items: impl Iterator<Item = &'a str>) -> (StateDigest, u64) {
    let mut d = StateDigest::ZERO;
    let mut n = 0;
    for i in items {
        d.add_item(&item_hash(i).unwrap());
        n += 1;
    }
    (d, n)
}

async fn restored(store: &Arc<dyn ObjectStore>, table: &str, snapshot: &str) -> (StateDigest, u64) {
    let out = tempfile::tempdir().unwrap();
    let report = streamseal::aws::restore::run(
        store,
        None,
        &streamseal::aws::restore::Request::new(
            table,
            Point::Snapshot(snapshot.into()),
            streamseal::aws::restore::Target::Files(out.path().to_owned()),
        ),
        &Progress::default(),
    )
    .await
    .unwrap();
    assert!(report.matches, "{report:?}");
    (report.digest, report.items)
}

async fn deep_ok(store: &Arc<dyn ObjectStore>, table: &str, snapshot: &str) -> u64 {
    let r = verify(
        store,
        table,
        snapshot,
        VerifyOptions {
            mode: Mode::Deep,
            scope: Scope::Chain,
            concurrency: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.ok, "{}", r.render());
    r.rows_read
}

async fn parquet_keys(store: &Arc<dyn ObjectStore>, table: &str) -> Vec<String> {
    store
        .list(&format!("{table}/changes/"), None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .filter(|k| k.ends_with(".parquet"))
        .collect()
}

/// Ingests `batches` events of `size` changes.
async fn capture(
    ing: &streamseal::capture::Ingestor,
    w: &mut Workload,
    batches: usize,
    size: usize,
) -> Vec<String> {
    let mut seqs = vec![];
    for _ in 0..batches {
        let event = w.next_event(size);
        let v: serde_json::Value = serde_json::from_str(&event).unwrap();
        for r in v["Records"].as_array().unwrap() {
            seqs.push(r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned());
        }
        let report = ing.ingest_event(&event).await.unwrap();
        assert!(report.error.is_none(), "{:?}", report.error);
    }
    seqs
}

async fn compaction_round_trip(
    store: Arc<dyn ObjectStore>,
    table: &str,
    local_root: Option<&std::path::Path>,
) {
    let ing = common::ingestor(&store);
    let mut w = Workload::new(77, table, StreamViewType::NewAndOldImages, 300);
    w.step_ms = 60_000; // a change a minute: 5 hours of small batches
    let mut all_seqs = capture(&ing, &mut w, 30, 10).await;
    // A redelivered batch: its records are stored twice, the seal counts them once.
    let again = w.next_event(10);
    ing.ingest_event(&again).await.unwrap();
    ing.ingest_event(&again).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&again).unwrap();
    all_seqs.extend(
        v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned()),
    );

    let first = seal(&store, table, &SealOptions::default()).await.unwrap();
    let first_id = first.manifest.snapshot_id.clone();
    let truth_first = digest_of(w.items());
    assert_eq!(restored(&store, table, &first_id).await, truth_first);
    let small = parquet_keys(&store, table).await;
    let files = streamseal::model::manifest::read_files(store.as_ref(), &first.manifest)
        .await
        .unwrap();
    let mut hours: BTreeMap<String, usize> = BTreeMap::new();
    for s in &files.segments {
        let hour = s
            .key
            .split("/changes/")
            .nth(1)
            .unwrap()
            .rsplit_once('/')
            .unwrap()
            .0;
        *hours.entry(hour.to_owned()).or_default() += 1;
    }
    assert!(hours.values().all(|n| *n >= 2), "{hours:?}");
    assert!(small.len() >= 30);

    // Compaction, with capture going on at the same time (later hours, not sealed yet).
    let options = CompactOptions {
        older_than_ms: 0,
        grace_ms: 24 * 3_600_000,
        ..Default::default()
    };
    let (report, late) = tokio::join!(compact(&store, table, &options), async {
        let mut w2 = std::mem::replace(
            &mut w,
            Workload::new(0, table, StreamViewType::NewAndOldImages, 1),
        );
        let seqs = capture(&ing, &mut w2, 8, 10).await;
        (w2, seqs)
    });
    let report = report.unwrap();
    let (w2, late_seqs) = late;
    w = w2;
    all_seqs.extend(late_seqs);
    assert_eq!(
        report.written.len(),
        hours.len(),
        "one object per hour: {report:?}"
    );
    assert_eq!(
        report.written.iter().map(|o| o.parts).sum::<usize>(),
        files.segments.len()
    );
    assert!(report.deleted.is_empty());
    // Not sealed yet: a second run does not compact the same segments again.
    let again = compact(&store, table, &options).await.unwrap();
    assert!(again.written.is_empty(), "{again:?}");
    assert_eq!(again.unsealed, hours.len());

    // The seal publishes the compactions; verify and restore read them in place of the parts.
    let second = seal(&store, table, &SealOptions::default()).await.unwrap();
    let second_id = second.manifest.snapshot_id.clone();
    let f2 = streamseal::model::manifest::read_files(store.as_ref(), &second.manifest)
        .await
        .unwrap();
    assert_eq!(f2.compactions.len(), hours.len());
    assert!(f2.rejected.is_empty(), "{:?}", f2.rejected);
    let truth = digest_of(w.items());
    assert_eq!(second.manifest.state_digest, Some(truth.0));
    assert_eq!(second.manifest.item_count as u64, truth.1);
    let rows_with_parts = deep_ok(&store, table, "latest").await;
    assert_eq!(restored(&store, table, &second_id).await, truth);

    // During the grace period a change is stored twice (segment and compacted object); the
    // Athena changes view still shows it once.
    let unique: std::collections::HashSet<&String> = all_seqs.iter().collect();
    if let Some(root) = local_root {
        let (raw, view) = athena_counts(root, table);
        assert!(raw > unique.len(), "{raw}");
        assert_eq!(view, unique.len());
    }

    // Within the grace period nothing is deleted; past it, the small files go.
    let cleanup_only = CompactOptions {
        older_than_ms: i64::MAX / 4, // nothing new to compact, only the clean-up
        ..options.clone()
    };
    let waiting = compact(&store, table, &cleanup_only).await.unwrap();
    assert!(waiting.deleted.is_empty());
    assert_eq!(waiting.waiting_for_grace, hours.len());
    let now = compact(
        &store,
        table,
        &CompactOptions {
            grace_ms: 0,
            ..cleanup_only.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(now.deleted.len(), files.segments.len());
    assert_eq!(now.symlinks_rewritten, 1);
    // Cleaned seals are remembered: the next run neither re-checks nor rewrites anything.
    let idle = compact(
        &store,
        table,
        &CompactOptions {
            grace_ms: 0,
            ..cleanup_only.clone()
        },
    )
    .await
    .unwrap();
    assert!(
        idle.deleted.is_empty() && idle.symlinks_rewritten == 0,
        "{idle:?}"
    );
    assert!(
        store
            .head(&format!("{table}/compaction/cleaned.json"))
            .await
            .unwrap()
            .is_some()
    );
    let after = parquet_keys(&store, table).await;
    let late_segments = f2.segments.len();
    assert_eq!(
        after.len(),
        hours.len() + late_segments,
        "{after:#?} {:#?}",
        f2.segments.iter().map(|s| &s.key).collect::<Vec<_>>()
    );
    assert!(
        small.len() >= 5 * hours.len(),
        "{} small files into {} objects",
        small.len(),
        hours.len()
    );

    // The same rows and digest, the older snapshot too, with the small files gone.
    assert_eq!(deep_ok(&store, table, "latest").await, rows_with_parts);
    assert_eq!(restored(&store, table, &second_id).await, truth);
    assert_eq!(restored(&store, table, &first_id).await, truth_first);
    deep_ok(&store, table, &first_id).await;

    // Every change once for a reader of all the files (the Athena view's deduplication), and
    // nothing missing. The redelivered batch is stored twice; it counts once.
    if let Some(root) = local_root {
        let (raw, view) = athena_counts(root, table);
        assert_eq!((raw, view), (unique.len(), unique.len()));
        // pyarrow and DuckDB read every object, compacted ones included, alike.
        let out = std::process::Command::new(common::python())
            .arg(common::root().join("tests/support/check_parquet.py"))
            .arg(root.join(table).join("changes"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(files.len(), after.len());
        let mut rows = 0;
        for f in &files {
            assert_eq!(f["pyarrow_rows"], f["duckdb_rows"], "{f}");
            assert_eq!(f["compression"], "ZSTD", "{f}");
            assert_eq!(f["statistics"], true, "{f}");
            rows += f["pyarrow_rows"].as_u64().unwrap();
        }
        assert_eq!(rows as usize, raw);
        let symlink = std::fs::read_to_string(root.join(
            streamseal::model::layout::TableLayout::new(table).athena_snapshot_files_key(&first_id),
        ))
        .unwrap();
        assert_eq!(symlink.lines().count(), hours.len(), "{symlink}");
        assert!(symlink.lines().all(|l| l.contains("/c-")), "{symlink}");
    }
}

/// Rows of every object under `changes/`, and rows of the Athena `<table>_changes` view's SQL
/// over them, in DuckDB.
fn athena_counts(root: &std::path::Path, table: &str) -> (usize, usize) {
    let raw = format!(
        "read_parquet('{}/{table}/changes/*/*/*.parquet', hive_partitioning = true)",
        root.display()
    );
    let view = streamseal::ops::athena::changes_select(&raw, &Default::default());
    let rows = common::duckdb_rows(&format!(
        "SELECT (SELECT count(*) FROM {raw}), (SELECT count(*) FROM ({view}) AS v)"
    ));
    (rows[0][0].parse().unwrap(), rows[0][1].parse().unwrap())
}

#[tokio::test]
async fn compaction_keeps_every_change_once_on_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    compaction_round_trip(store, "compact-local", Some(dir.path())).await;
}

#[tokio::test]
async fn compaction_keeps_every_change_once_on_s3() {
    let store = common::fresh_s3_store("compact-s3", "backup").await;
    compaction_round_trip(store, "compact-s3", None).await;
}

#[tokio::test]
async fn a_forged_compaction_is_rejected_and_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let table = "compact-forged";
    let ing = common::ingestor(&store);
    let mut w = Workload::new(5, table, StreamViewType::NewAndOldImages, 200);
    capture(&ing, &mut w, 6, 10).await;
    seal(&store, table, &SealOptions::default()).await.unwrap();
    let options = CompactOptions {
        older_than_ms: 0,
        ..Default::default()
    };
    let report = compact(&store, table, &options).await.unwrap();
    assert!(!report.written.is_empty());
    // Tamper: the compacted object loses a row group's worth of bytes.
    let key = &report.written[0].key;
    let path = dir.path().join(key);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let sealed = seal(&store, table, &SealOptions::default()).await.unwrap();
    let files = streamseal::model::manifest::read_files(store.as_ref(), &sealed.manifest)
        .await
        .unwrap();
    assert_eq!(files.compactions.len(), report.written.len() - 1);
    assert_eq!(files.rejected.len(), 1);
    assert_eq!(files.rejected[0].object.as_deref(), Some(key.as_str()));
    let r = verify(&store, table, "latest", VerifyOptions::default())
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(r.render().contains("rejected"), "{}", r.render());
    // The restore still reads the small segments: nothing was published.
    let truth = digest_of(w.items());
    assert_eq!(restored(&store, table, "latest").await, truth);
}

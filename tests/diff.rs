//! `streamseal diff`: the keys that differ between two points equal the difference of two full
//! restores, on a table of more than 10,000 items, in bounded memory (small buckets and a
//! small memory budget, so both states spill); bad points are refused before any work.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use streamseal::aws::restore::{Request, Target, run};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::ops::diff::{Change, DiffOptions, KeyDiff, diff};
use streamseal::ops::restore::Point;
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::progress::Progress;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

/// `pk|sk` of a DynamoDB JSON key or item.
fn key_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    format!(
        "{}|{}",
        v["pk"]["S"].as_str().unwrap(),
        v["sk"]["S"].as_str().unwrap()
    )
}

/// A full restore of `snapshot` to files: `pk|sk` → canonical item.
async fn restored(store: &Arc<dyn ObjectStore>, snapshot: &str) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        store,
        None,
        &Request::new(
            "orders",
            Point::Snapshot(snapshot.into()),
            Target::Files(dir.path().to_owned()),
        ),
        &Progress::default(),
    )
    .await
    .unwrap();
    assert!(report.matches);
    let mut out = BTreeMap::new();
    for f in &report.files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let item = v["Item"].to_string();
            out.insert(
                key_of(&item),
                streamseal::model::item::canonicalize(&item).unwrap(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_between_two_snapshots_equals_the_difference_of_two_restores() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(31, "orders", StreamViewType::NewAndOldImages, 160);
    while w.len() < 10_000 {
        ing.ingest_event(&w.next_event(500)).await.unwrap();
    }
    seal(&store, "orders", &SealOptions::default())
        .await
        .unwrap();
    for _ in 0..6 {
        ing.ingest_event(&w.next_event(500)).await.unwrap();
    }
    seal(&store, "orders", &SealOptions::default())
        .await
        .unwrap();

    let (first, second) = (
        restored(&store, "0000000001").await,
        restored(&store, "0000000002").await,
    );
    assert!(first.len() >= 10_000);
    let mut expected: BTreeMap<String, Change> = BTreeMap::new();
    for (k, v) in &second {
        match first.get(k) {
            None => {
                expected.insert(k.clone(), Change::Inserted);
            }
            Some(old) if old != v => {
                expected.insert(k.clone(), Change::Changed);
            }
            Some(_) => {}
        }
    }
    for k in first.keys().filter(|k| !second.contains_key(*k)) {
        expected.insert(k.clone(), Change::Removed);
    }
    assert!(expected.values().any(|c| *c == Change::Removed));
    assert!(expected.values().any(|c| *c == Change::Changed));
    assert!(expected.values().any(|c| *c == Change::Inserted));

    let mut options = DiffOptions {
        buckets: 16,
        images: true,
        ..Default::default()
    };
    options.materialize.memory_mb = 16;
    options.materialize.min_partitions = 4;
    let mut got: BTreeMap<String, KeyDiff> = BTreeMap::new();
    let report = diff(
        &store,
        "orders",
        &Point::Snapshot("0000000001".into()),
        &Point::Snapshot("0000000002".into()),
        &options,
        &Progress::default(),
        &mut |d: &KeyDiff| {
            assert!(
                got.insert(key_of(&d.key), d.clone()).is_none(),
                "a key twice"
            );
        },
    )
    .await
    .unwrap();
    let kinds: BTreeMap<String, Change> = got.iter().map(|(k, d)| (k.clone(), d.change)).collect();
    assert_eq!(kinds, expected);
    // Both images, as the restores have them.
    for (k, d) in &got {
        assert_eq!(d.from.as_ref(), first.get(k), "{k}");
        assert_eq!(d.to.as_ref(), second.get(k), "{k}");
    }
    assert_eq!(
        (report.from_items, report.to_items),
        (first.len() as u64, second.len() as u64)
    );
    assert_eq!(
        report.inserted + report.removed + report.changed,
        expected.len() as u64
    );
    assert!(report.unknown.is_empty());
    assert!(report.unproven.is_empty(), "{report:?}");

    // Between an instant and itself: nothing. A point the backup does not cover: refused.
    let at = Point::AsOf(w.now_ms() - 60_000);
    let none = diff(
        &store,
        "orders",
        &at,
        &at,
        &options,
        &Progress::default(),
        &mut |_| panic!("no difference expected"),
    )
    .await
    .unwrap();
    assert_eq!(none.inserted + none.removed + none.changed, 0);
    assert!(none.from_items > 9_000, "{none:?}");
    let err = diff(
        &store,
        "orders",
        &Point::Snapshot("0000000009".into()),
        &Point::Snapshot("latest".into()),
        &options,
        &Progress::default(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("0000000009"), "{err}");
}

/// The command line: one line per key and a summary; `--json` one object per key and a final
/// summary object.
#[test]
fn diff_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().display().to_string();
    let events = common::run_ok(&["sample-events", "--records", "240", "--batch", "60"]);
    let lines: Vec<&str> = events.lines().collect();
    for (i, batch) in [&lines[..2], &lines[2..]].iter().enumerate() {
        let path = dir.path().join(format!("events-{i}.jsonl"));
        std::fs::write(&path, batch.join("\n")).unwrap();
        common::run_ok(&[
            "ingest",
            "--target",
            &target,
            "--events",
            path.to_str().unwrap(),
        ]);
        common::run_ok(&["seal", "--table", "orders", "--target", &target]);
    }
    let text = common::run_ok(&[
        "diff",
        "--table",
        "orders",
        "--target",
        &target,
        "--from",
        "0000000001",
    ]);
    let summary = text.lines().last().unwrap();
    assert!(
        summary.contains("inserted") && summary.contains("changed"),
        "{text}"
    );
    let listed = text
        .lines()
        .filter(|l| l.starts_with(['+', '-', '~']))
        .count();
    assert!(listed > 0, "{text}");
    let json = common::run_ok(&[
        "diff",
        "--table",
        "orders",
        "--target",
        &target,
        "--from",
        "0000000001",
        "--json",
    ]);
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = &objects.last().unwrap()["summary"];
    let keys = objects.len() as u64 - 1;
    assert_eq!(
        summary["inserted"].as_u64().unwrap()
            + summary["removed"].as_u64().unwrap()
            + summary["changed"].as_u64().unwrap(),
        keys,
        "{json}"
    );
    assert!(keys > 0);
    let (code, err) = common::run_err(
        &[
            "diff",
            "--table",
            "orders",
            "--target",
            &target,
            "--from",
            "yesterday",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("neither a snapshot id"), "{err}");
}

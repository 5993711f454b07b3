//! State checkpoints and retention: a restore that starts from a checkpoint equals the ground
//! truth (snapshots and `--as-of` instants before, at and after checkpoints; deletes, TTL
//! deletes and redelivered duplicates in the history) and the restore from the whole history;
//! expire deletes only what a checkpoint covers, verify tells expired-by-policy from missing,
//! and restores that would need an expired change are refused with the reason.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use streamseal::aws::restore::{Request, Target, run};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::clock::SystemClock;
use streamseal::ops::checkpoint::{CheckpointOptions, checkpoint, expire};
use streamseal::ops::restore::Point;
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::ops::verify::{Mode, Scope, VerifyOptions, verify};
use streamseal::progress::Progress;
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

/// Canonical item text of the workload's ground truth.
fn truth(w: &Workload) -> BTreeMap<String, String> {
    w.items()
        .map(|i| {
            let c = streamseal::model::item::canonicalize(i).unwrap();
            (key_of(&c), c)
        })
        .collect()
}

fn key_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    format!(
        "{}|{}",
        v["pk"]["S"].as_str().unwrap(),
        v["sk"]["S"].as_str().unwrap()
    )
}

/// A restore to files: the report's checkpoint and the items.
async fn restore(
    store: &Arc<dyn ObjectStore>,
    point: Point,
    from_history: bool,
) -> Result<(Option<String>, BTreeMap<String, String>), String> {
    let dir = tempfile::tempdir().unwrap();
    let mut request = Request::new("orders", point, Target::Files(dir.path().to_owned()));
    request.from_history = from_history;
    request.materialize.memory_mb = 16;
    request.materialize.min_partitions = 3;
    request.materialize.parallel = 3;
    let report = run(store, None, &request, &Progress::default())
        .await
        .map_err(|e| e.to_string())?;
    assert!(report.matches, "{report:?}");
    let mut out = BTreeMap::new();
    for f in &report.files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let item = streamseal::model::item::canonicalize(&v["Item"].to_string()).unwrap();
            assert!(out.insert(key_of(&item), item).is_none(), "a key twice");
        }
    }
    Ok((report.checkpoint, out))
}

/// An event of the records `from..` of `event` (a redelivery of the end of a batch, as after
/// a Lambda bisection).
fn tail_of(event: &str, from: usize) -> String {
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    let records = v["Records"].as_array().unwrap()[from..].to_vec();
    serde_json::json!({ "Records": records }).to_string()
}

async fn seal_now(store: &Arc<dyn ObjectStore>) {
    seal(store, "orders", &SealOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpointed_restores_equal_the_truth_and_expire_keeps_what_it_promises() {
    let dir = tempfile::tempdir().unwrap();
    exercise(Arc::new(LocalStore::new(dir.path()).unwrap())).await;
}

/// The same on S3 (the emulator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_s3() {
    exercise(common::fresh_s3_store("checkpoints", "backups").await).await;
}

async fn exercise(store: Arc<dyn ObjectStore>) {
    let ing = common::ingestor(&store);
    let mut w = Workload::new(7, "orders", StreamViewType::NewAndOldImages, 120);
    let mut instants: Vec<(i64, BTreeMap<String, String>)> = vec![];
    let mut events: Vec<String> = vec![];
    // Snapshot 1, then 2 (checkpointed), 3 (checkpointed from 2), 4; instants in between.
    for snapshot in 1..=4 {
        for e in 0..6 {
            let event = w.next_event(300);
            ing.ingest_event(&event).await.unwrap();
            // Redeliveries: the same batch again, and the end of an earlier one.
            if e == 2 {
                ing.ingest_event(&event).await.unwrap();
            }
            if (e == 0 || e == 4)
                && let Some(old) = events.last()
            {
                ing.ingest_event(&tail_of(old, 120)).await.unwrap();
            }
            events.push(event);
            if e == 3 {
                instants.push((w.now_ms(), truth(&w)));
            }
        }
        seal_now(&store).await;
        instants.push((w.now_ms(), truth(&w)));
        if snapshot == 2 || snapshot == 3 {
            let mut options = CheckpointOptions {
                partitions: Some(4),
                ..Default::default()
            };
            options.materialize.memory_mb = 16;
            options.materialize.parallel = 2;
            let r = checkpoint(
                &store,
                "orders",
                "latest",
                &options,
                &SystemClock,
                &Arc::new(Progress::default()),
            )
            .await
            .unwrap();
            assert!(!r.existing);
            assert_eq!(r.partitions, 4);
            assert_eq!(r.items, w.len() as u64);
            assert_eq!(
                r.built_from,
                if snapshot == 2 {
                    "history".to_owned()
                } else {
                    "checkpoint 0000000002".to_owned()
                }
            );
            // Again: nothing to do.
            let again = checkpoint(
                &store,
                "orders",
                "latest",
                &options,
                &SystemClock,
                &Arc::new(Progress::default()),
            )
            .await
            .unwrap();
            assert!(again.existing);
        }
    }
    let truth_at = |snapshot: usize| instants[snapshot * 2 - 1].1.clone();
    // The seal after a checkpoint records it in the chain.
    let layout = streamseal::model::layout::TableLayout::new("orders");
    for (snapshot, recorded) in [(2, None), (3, Some("0000000002")), (4, Some("0000000003"))] {
        let m = streamseal::model::manifest::read_manifest(
            store.as_ref(),
            &layout,
            &format!("{snapshot:010}"),
        )
        .await
        .unwrap();
        assert_eq!(
            m.checkpoint.map(|c| c.snapshot_id).as_deref(),
            recorded,
            "snapshot {snapshot}"
        );
    }
    let deletes = w.len();
    assert!(deletes > 1_000, "{deletes}");

    // Snapshots: 1 from history, 2 and 3 from their own checkpoint, 4 from checkpoint 3.
    for (snapshot, from) in [(1, None), (2, Some(2)), (3, Some(3)), (4, Some(3))] {
        let id = format!("{snapshot:010}");
        let (used, items) = restore(&store, Point::Snapshot(id.clone()), false)
            .await
            .unwrap();
        assert_eq!(used, from.map(|f: i32| format!("{f:010}")), "snapshot {id}");
        assert_eq!(items, truth_at(snapshot), "snapshot {id}");
        let (_, history) = restore(&store, Point::Snapshot(id.clone()), true)
            .await
            .unwrap();
        assert_eq!(history, items, "snapshot {id} from the whole history");
    }
    // Instants: inside each snapshot and at each seal; those at or after a checkpoint's
    // newest change start from it.
    for (i, (t, expected)) in instants.iter().enumerate() {
        let (used, items) = restore(&store, Point::AsOf(*t), false).await.unwrap();
        assert_eq!(&items, expected, "instant {i}");
        let want = match i {
            0..=2 => None,
            3..=4 => Some("0000000002".to_owned()),
            _ => Some("0000000003".to_owned()),
        };
        assert_eq!(used, want, "instant {i}");
    }

    // Verify (quick and deep) checks the checkpoint and stays exact.
    for mode in [Mode::Quick, Mode::Deep] {
        let report = verify(
            &store,
            "orders",
            "latest",
            VerifyOptions {
                mode,
                scope: Scope::Chain,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(report.ok, "{}", report.render());
        assert_eq!(report.checkpoints, vec!["0000000003".to_owned()]);
    }

    // Expire everything older than 30 days (the workload is in January 2026): only what
    // checkpoint 3 covers goes.
    let dry = expire(&store, "orders", 30 * 86_400_000, true, &SystemClock)
        .await
        .unwrap();
    assert!(dry.objects > 0 && dry.record.is_none());
    let done = expire(&store, "orders", 30 * 86_400_000, false, &SystemClock)
        .await
        .unwrap();
    assert_eq!(done.objects, dry.objects);
    assert_eq!(done.checkpoint, "0000000003");
    assert!(done.kept > 0, "snapshot 4's segments stay");
    // A run that dies after its record and before its deletes (simulated: its deletes are
    // held, then the run is dropped): the next run deletes what that record names.
    let named = {
        let record = done.record.clone().unwrap();
        let body = store.get(&record).await.unwrap();
        let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
        r["objects"].as_array().unwrap().len()
    };
    assert_eq!(named, done.objects, "the record names every object deleted");
    let again = expire(&store, "orders", 30 * 86_400_000, false, &SystemClock)
        .await
        .unwrap();
    assert_eq!(again.objects, 0);
    {
        use streamseal::testing::faulty_store::FaultyStore;
        // Put one expired object back, as if its delete had not happened.
        let record: serde_json::Value =
            serde_json::from_slice(&store.get(done.record.as_ref().unwrap()).await.unwrap())
                .unwrap();
        let victim = record["objects"][0]["key"].as_str().unwrap().to_owned();
        store
            .put(
                &victim,
                bytes::Bytes::from_static(b"left behind"),
                streamseal::store::PutMode::Overwrite,
            )
            .await
            .unwrap();
        let faulty = Arc::new(FaultyStore::new(store.clone()));
        faulty.hold_writes_matching("/changes/");
        let held: Arc<dyn ObjectStore> = faulty.clone();
        let run = tokio::spawn(async move {
            expire(&held, "orders", 30 * 86_400_000, false, &SystemClock).await
        });
        faulty.held().await;
        run.abort();
        assert!(
            store.head(&victim).await.unwrap().is_some(),
            "the crashed run deleted nothing"
        );
        expire(&store, "orders", 30 * 86_400_000, false, &SystemClock)
            .await
            .unwrap();
        assert!(
            store.head(&victim).await.unwrap().is_none(),
            "the next run finishes it"
        );
    }
    for mode in [Mode::Quick, Mode::Deep] {
        let report = verify(
            &store,
            "orders",
            "latest",
            VerifyOptions {
                mode,
                scope: Scope::Chain,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(report.ok, "{}", report.render());
        assert_eq!(report.expired_objects, done.objects as u64);
        assert!(report.render().contains("expired by policy"));
    }
    // Compaction leaves expired segments alone (and the backup still verifies after it).
    streamseal::ops::compact::compact(
        &store,
        "orders",
        &streamseal::ops::compact::CompactOptions::default(),
    )
    .await
    .unwrap();
    // Still restorable: snapshots 2, 3, 4 and instants from checkpoint 3 on.
    for snapshot in [2, 3, 4] {
        let (_, items) = restore(&store, Point::Snapshot(format!("{snapshot:010}")), false)
            .await
            .unwrap();
        assert_eq!(
            items,
            truth_at(snapshot),
            "snapshot {snapshot} after expire"
        );
    }
    for (t, expected) in &instants[5..] {
        let (_, items) = restore(&store, Point::AsOf(*t), false).await.unwrap();
        assert_eq!(&items, expected);
    }
    // Not restorable any more: they need expired changes; refused, naming why.
    for point in [
        Point::Snapshot("0000000001".into()),
        Point::AsOf(instants[3].0),
    ] {
        let err = restore(&store, point.clone(), false).await.unwrap_err();
        assert!(err.contains("expired by policy"), "{point:?}: {err}");
    }

    // A segment deleted without an expire record (snapshot 4's) still fails verify.
    let files = streamseal::model::manifest::read_files(
        store.as_ref(),
        &streamseal::model::manifest::read_manifest(
            store.as_ref(),
            &streamseal::model::layout::TableLayout::new("orders"),
            "0000000004",
        )
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    let victim = files.segments[0].key.clone();
    store.delete(&victim).await.unwrap();
    let report = verify(
        &store,
        "orders",
        "latest",
        VerifyOptions {
            scope: Scope::Chain,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!report.ok);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.object == victim && f.kind == streamseal::model::findings::Kind::Missing),
        "{}",
        report.render()
    );

    // A checkpoint file the expire relies on, removed: the expired objects are missing again.
    store
        .delete("orders/checkpoint-files/0000000003/part-00001.parquet")
        .await
        .unwrap();
    let report = verify(
        &store,
        "orders",
        "latest",
        VerifyOptions {
            scope: Scope::Chain,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!report.ok);
    let text = report.render();
    assert!(text.contains("state checkpoint does not check"), "{text}");
    assert_eq!(report.expired_objects, 0, "{text}");
}

/// A chain that cannot be proven (a gap) cannot be checkpointed, so nothing can be expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_without_a_checkpoint_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(8, "orders", StreamViewType::NewAndOldImages, 100);
    ing.ingest_event(&w.next_event(200)).await.unwrap();
    seal_now(&store).await;
    let err = expire(&store, "orders", 0, false, &SystemClock)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no checkpoint"), "{err}");
    assert!(err.to_string().contains("nothing was deleted"), "{err}");
}

//! `streamseal get`: one item as of instants before, between and after its changes (deleted
//! and TTL-deleted items included) equals the ground truth, read from a state checkpoint's one
//! partition file plus the segments sealed after it; `--history` lists every change, each
//! consistent with the point lookups; bad keys are refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::ops::get::get;
use streamseal::ops::restore::Point;
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

fn truth(w: &Workload) -> BTreeMap<String, String> {
    w.items()
        .map(|i| {
            let item = streamseal::model::item::canonicalize(i).unwrap();
            let v: serde_json::Value = serde_json::from_str(&item).unwrap();
            let key = serde_json::json!({"pk": v["pk"], "sk": v["sk"]}).to_string();
            (streamseal::model::item::canonicalize(&key).unwrap(), item)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_as_of_any_instant_equals_the_truth_and_reads_little() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ing = common::ingestor(&store);
    let mut w = Workload::new(21, "orders", StreamViewType::NewAndOldImages, 150);
    let mut instants: Vec<(i64, BTreeMap<String, String>)> = vec![];
    for s in 1..=10 {
        for _ in 0..4 {
            let e = w.next_event(50);
            ing.ingest_event(&e).await.unwrap();
            if s == 10 {
                // A redelivery after the checkpoint.
                ing.ingest_event(&e).await.unwrap();
            }
            instants.push((w.now_ms(), truth(&w)));
        }
        // The key schema, as the Lambda and `tail` record it (or a schema file's [key]).
        let key_schema = streamseal::model::schema::TableSchema::parse(
            include_str!("../schemas/orders.toml"),
            "schemas/orders.toml",
        )
        .unwrap()
        .key;
        seal(
            &store,
            "orders",
            &SealOptions {
                key_schema,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        if s == 9 {
            let options = streamseal::ops::checkpoint::CheckpointOptions {
                partitions: Some(4),
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
    // Keys that ever existed: some alive at the end, some deleted (TTL deletes among them).
    let ever: BTreeSet<String> = instants
        .iter()
        .flat_map(|(_, t)| t.keys().cloned())
        .collect();
    let last = &instants.last().unwrap().1;
    let gone: Vec<&String> = ever.iter().filter(|k| !last.contains_key(*k)).collect();
    assert!(!gone.is_empty());
    let sample: Vec<&String> = ever
        .iter()
        .step_by(ever.len() / 12)
        .chain(gone.iter().copied().take(6))
        .collect();
    let mut reads = vec![];
    for key in &sample {
        for (i, (t, at)) in instants.iter().enumerate().step_by(3) {
            let r = get(&store, "orders", key, &Point::AsOf(*t), false)
                .await
                .unwrap();
            assert_eq!(r.item.as_ref(), at.get(*key), "{key} at instant {i}");
            if r.checkpoint.is_some() {
                reads.push((r.objects_read, r.objects_in_plan));
            }
        }
        // The latest snapshot, and the history.
        let r = get(
            &store,
            "orders",
            key,
            &Point::Snapshot("latest".into()),
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.item.as_ref(), last.get(*key), "{key}");
        assert!(!r.history.is_empty(), "{key}");
        for c in &r.history {
            let at = get(
                &store,
                "orders",
                key,
                &Point::AsOf(c.created_ms.unwrap()),
                false,
            )
            .await
            .unwrap();
            assert_eq!(at.item, c.image, "{key} at {}", c.sequence_number);
        }
    }
    // From the checkpoint: one checkpoint file and the segments sealed after it, a small
    // fraction of the chain's objects.
    let all_segments = std::fs::read_dir(dir.path().join("orders/changes"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .flat_map(|h| std::fs::read_dir(h.unwrap().path()).unwrap())
        .count();
    assert!(!reads.is_empty());
    for (read, in_plan) in &reads {
        assert!(
            *read <= *in_plan && *read * 4 < all_segments as u64,
            "{read} of {all_segments}"
        );
    }
    println!(
        "objects read per lookup from the checkpoint: {:?} (chain: {all_segments} segments)",
        reads.iter().map(|r| r.0).collect::<BTreeSet<_>>()
    );

    // The command line: the item, and the report with --json.
    let key = sample[0];
    let target = dir.path().display().to_string();
    let v = common::run_json(
        &[
            "get", "--table", "orders", "--target", &target, "--key", key, "--json",
        ],
        &[],
    );
    assert_eq!(v["item"].as_str(), last.get(key).map(String::as_str), "{v}");
    assert_eq!(v["checkpoint"], "0000000009");
    let (code, err) = common::run_err(
        &[
            "get",
            "--table",
            "orders",
            "--target",
            &target,
            "--key",
            r#"{"pk":{"S":"a"}}"#,
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the table's key is pk (S), sk (S)"), "{err}");

    // Bad keys: refused with the key schema named (recorded from the capture).
    for bad in [
        r#"{"pk":{"S":"a"}}"#,
        r#"{"pk":{"N":"1"},"sk":{"S":"x"}}"#,
        "not json",
    ] {
        let err = get(
            &store,
            "orders",
            bad,
            &Point::Snapshot("latest".into()),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("--key"), "{bad}: {err}");
    }
}

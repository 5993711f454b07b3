//! The Lambda handler, driven exactly as Lambda drives it: `LambdaEvent`s built from real-shaped
//! fixtures, against the in-memory store and S3 on the emulator, with injected store failures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, StringArray};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::value::RawValue;
use streamseal::demo::workload::Workload;
use streamseal::lambda::{Config, Handler, serve};
use streamseal::model::item::{Canonicalizer, ColumnPaths, StateDigest, item_hash};
use streamseal::model::log::LogEntry;
use streamseal::segment::{SegmentRecord, read_segment};
use streamseal::store::ObjectStore;
use streamseal::store::memory::MemoryStore;
use streamseal::testing::faulty_store::FaultyStore;

fn config() -> Config {
    Config::from_lookup(|k| (k == "STREAMSEAL_TARGET").then(|| "memory://".to_owned())).unwrap()
}

async fn handler(store: Arc<dyn ObjectStore>) -> Handler {
    Handler::with_store(store, &config()).await.unwrap()
}

fn event(text: &str) -> LambdaEvent<Box<RawValue>> {
    LambdaEvent::new(
        RawValue::from_string(text.to_owned()).unwrap(),
        Context::default(),
    )
}

/// Item identifiers Lambda will retry.
fn failures(response: &serde_json::Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures array")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

/// Every row in the table's segments: sequence number → (event name, ttl flag, new image).
async fn rows(store: &dyn ObjectStore, table: &str) -> Vec<(String, String, bool, Option<String>)> {
    let mut out = Vec::new();
    for meta in store
        .list(&format!("{table}/changes/"), None, None)
        .await
        .unwrap()
    {
        let bytes = store.get(&meta.key).await.unwrap();
        for batch in read_segment(&meta.key, bytes).unwrap() {
            let col = |n: &str| {
                batch
                    .column_by_name(n)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone()
            };
            let (seq, name, new) = (col("sequence_number"), col("event_name"), col("new_image"));
            let ttl = batch
                .column_by_name("is_ttl_delete")
                .unwrap()
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .clone();
            for i in 0..batch.num_rows() {
                out.push((
                    seq.value(i).to_owned(),
                    name.value(i).to_owned(),
                    ttl.value(i),
                    new.is_valid(i).then(|| new.value(i).to_owned()),
                ));
            }
        }
    }
    out.sort();
    out
}

async fn log_records(store: &dyn ObjectStore, table: &str) -> Vec<SegmentRecord> {
    let mut out = Vec::new();
    for meta in store
        .list(&format!("{table}/inbox/"), None, None)
        .await
        .unwrap()
    {
        let bytes = store.get(&meta.key).await.unwrap();
        if let LogEntry::Segment(r) = LogEntry::parse(&meta.key, &bytes).unwrap() {
            out.push(r);
        }
    }
    out
}

fn sequences(fixture: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(fixture).unwrap();
    v["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_fixture_is_captured_with_no_failures() {
    for (name, table) in [
        ("aws-docs-example.json", "ExampleTableWithStream"),
        ("view-new-and-old-images.json", "orders"),
        ("view-new-image.json", "orders"),
        ("view-old-image.json", "orders"),
        ("view-keys-only.json", "orders"),
        ("ttl-delete.json", "orders"),
        ("all-types.json", "orders"),
        ("hour-boundary.json", "orders"),
    ] {
        let store = Arc::new(MemoryStore::new());
        let h = handler(store.clone()).await;
        let text = common::fixture(name);
        let response = serve(&h, event(&text))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(failures(&response).is_empty(), "{name}: {response}");
        let got: Vec<String> = rows(store.as_ref(), table)
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
        let mut want = sequences(&text);
        want.sort();
        assert_eq!(
            got, want,
            "{name}: every record is in the segments exactly once"
        );
        let logs = log_records(store.as_ref(), table).await;
        assert_eq!(
            logs.iter().map(|r| r.rows).sum::<u64>() as usize,
            want.len(),
            "{name}"
        );
        for r in &logs {
            let meta = store
                .head(&r.key)
                .await
                .unwrap()
                .expect("log record names an existing object");
            assert_eq!(meta.size, r.bytes);
        }
    }
}

#[tokio::test]
async fn a_batch_across_an_hour_is_two_segments_in_their_partitions() {
    let store = Arc::new(MemoryStore::new());
    let h = handler(store.clone()).await;
    serve(&h, event(&common::fixture("hour-boundary.json")))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("orders/changes/", None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].contains("/dt=2025-11-01/hr=12/"), "{keys:?}");
    assert!(keys[1].contains("/dt=2025-11-01/hr=13/"), "{keys:?}");
}

#[tokio::test]
async fn ttl_deletions_are_flagged_and_user_deletes_are_not() {
    let store = Arc::new(MemoryStore::new());
    serve(
        &handler(store.clone()).await,
        event(&common::fixture("ttl-delete.json")),
    )
    .await
    .unwrap();
    let rows = rows(store.as_ref(), "orders").await;
    let flags: Vec<(String, bool)> = rows.iter().map(|r| (r.1.clone(), r.2)).collect();
    assert_eq!(
        flags,
        vec![("REMOVE".to_owned(), true), ("REMOVE".to_owned(), false)]
    );
}

#[test]
fn the_event_crate_reads_the_same_records() {
    // Cross-check against aws_lambda_events' model of the same events: what it deserialises
    // must agree with what streamseal reads (names, sequence numbers, keys, TTL identity).
    for name in [
        "aws-docs-example.json",
        "ttl-delete.json",
        "view-new-and-old-images.json",
        "all-types.json",
    ] {
        let text = common::fixture(name);
        let theirs: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_str(&text).unwrap();
        let raws = streamseal::model::change::parse_event(&text).unwrap();
        assert_eq!(theirs.records.len(), raws.len());
        for (i, (t, raw)) in theirs.records.iter().zip(raws).enumerate() {
            let ours = streamseal::model::change::ChangeRecord::parse(
                raw,
                i,
                &mut Canonicalizer::new(),
                &ColumnPaths::default(),
            )
            .unwrap();
            assert_eq!(t.event_name, ours.kind.as_str(), "{name}");
            assert_eq!(
                t.change.sequence_number.as_deref(),
                Some(ours.sequence.as_str()),
                "{name}"
            );
            let our_keys: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&ours.keys.text).unwrap();
            assert_eq!(t.change.keys.len(), our_keys.len(), "{name}");
            let their_ttl = t.user_identity.as_ref().is_some_and(|u| {
                u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com"
            });
            assert_eq!(
                their_ttl && t.event_name == "REMOVE",
                ours.ttl_delete,
                "{name}: TTL flag"
            );
            if let Some(ms) = ours.approximate_creation_ms {
                // aws_lambda_events 1.2 drops the fractional part of ApproximateCreationDateTime
                // (1762000001.5 becomes …001.000); streamseal keeps the milliseconds.
                assert_eq!(
                    t.change.approximate_creation_date_time.timestamp(),
                    ms.div_euclid(1000),
                    "{name}"
                );
            }
        }
    }
}

async fn injected_failure_mid_batch_then_retry(inner: Arc<dyn ObjectStore>) {
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let h = handler(faulty.clone()).await;
    let text = common::fixture("hour-boundary.json");
    let seqs = sequences(&text);

    // The second segment (hour 13: records 1..=3) cannot be written.
    faulty.fail_puts_matching("hr=13", None);
    let response = serve(&h, event(&text)).await.unwrap();
    assert_eq!(
        failures(&response),
        seqs[1..].to_vec(),
        "failures start at the first record not durably written"
    );
    let written: Vec<String> = rows(inner.as_ref(), "orders")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(written, seqs[..1].to_vec());

    // Lambda retries exactly the rest, from the reported sequence number on.
    faulty.heal();
    let mut retry: serde_json::Value = serde_json::from_str(&text).unwrap();
    retry["Records"].as_array_mut().unwrap().remove(0);
    let response = serve(&h, event(&retry.to_string())).await.unwrap();
    assert!(failures(&response).is_empty());
    let all: Vec<String> = rows(inner.as_ref(), "orders")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(all, seqs, "nothing lost, nothing doubled");
}

#[tokio::test]
async fn injected_failure_in_memory() {
    injected_failure_mid_batch_then_retry(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failure_on_s3() {
    injected_failure_mid_batch_then_retry(common::fresh_s3_store("handler-failure", "bk").await)
        .await;
}

#[tokio::test]
async fn crash_between_segment_and_log_is_repaired_by_redelivery() {
    let inner = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let h = handler(faulty.clone()).await;
    let text = common::fixture("view-new-and-old-images.json");
    // The segment lands, its log record does not: the records are not durable yet.
    faulty.fail_puts_matching("/inbox/", Some(1));
    let response = serve(&h, event(&text)).await.unwrap();
    assert_eq!(failures(&response), sequences(&text));
    assert!(log_records(inner.as_ref(), "orders").await.is_empty());
    // The whole batch comes again: the segment is recognised, the log record written.
    let response = serve(&h, event(&text)).await.unwrap();
    assert!(failures(&response).is_empty());
    let logs = log_records(inner.as_ref(), "orders").await;
    assert_eq!(logs.len(), 1);
    assert_eq!(rows(inner.as_ref(), "orders").await.len(), 3);
}

#[tokio::test]
async fn redelivered_batch_gives_the_same_objects_and_no_duplicate_rows() {
    let store = Arc::new(MemoryStore::new());
    let h = handler(store.clone()).await;
    let text = common::fixture("sample-events.jsonl");
    let first_event = text.lines().next().unwrap();
    serve(&h, event(first_event)).await.unwrap();
    let snapshot: BTreeMap<String, bytes::Bytes> = {
        let mut m = BTreeMap::new();
        for meta in store.list("orders/changes/", None, None).await.unwrap() {
            m.insert(meta.key.clone(), store.get(&meta.key).await.unwrap());
        }
        m
    };
    // Redelivery: the same objects are found, nothing is rewritten.
    let response = serve(&h, event(first_event)).await.unwrap();
    assert!(failures(&response).is_empty());
    let mut after = BTreeMap::new();
    for meta in store.list("orders/changes/", None, None).await.unwrap() {
        after.insert(meta.key.clone(), store.get(&meta.key).await.unwrap());
    }
    assert_eq!(snapshot, after, "same objects, same bytes");
    let rows = rows(store.as_ref(), "orders").await;
    let mut seqs: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), rows.len(), "no duplicate rows");
    assert_eq!(
        rows.len(),
        first_event.matches("\"SequenceNumber\"").count()
    );

    // Encoding is deterministic, so a second, independent capture produces identical bytes.
    let other = Arc::new(MemoryStore::new());
    serve(&handler(other.clone()).await, event(first_event))
        .await
        .unwrap();
    for (key, bytes) in &snapshot {
        assert_eq!(&other.get(key).await.unwrap(), bytes, "{key}");
    }
}

#[tokio::test]
async fn a_malformed_record_is_quarantined_verbatim_and_the_rest_written() {
    let store = Arc::new(MemoryStore::new());
    let h = handler(store.clone()).await;
    let text = common::fixture("malformed-record.json");
    let response = serve(&h, event(&text)).await.unwrap();
    assert!(
        failures(&response).is_empty(),
        "a record that can never convert must not block the shard"
    );
    let seqs = sequences(&text);
    let written: Vec<String> = rows(store.as_ref(), "orders")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(written, vec![seqs[0].clone(), seqs[2].clone()]);
    let quarantined = store.list("orders/quarantine/", None, None).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    let body: serde_json::Value =
        serde_json::from_slice(&store.get(&quarantined[0].key).await.unwrap()).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["record"], original["Records"][1], "kept verbatim");
    assert!(
        body["reason"].as_str().unwrap().contains("twelve"),
        "{body}"
    );
    assert_eq!(body["sequence_number"], seqs[1]);
}

#[tokio::test]
async fn a_failed_quarantine_write_is_retried_from_that_record() {
    let inner = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let h = handler(faulty.clone()).await;
    let text = common::fixture("malformed-record.json");
    faulty.fail_puts_matching("/quarantine/", None);
    let response = serve(&h, event(&text)).await.unwrap();
    let seqs = sequences(&text);
    // The bad record is index 1; nothing before it depends on it, but the segment holding
    // records 0 and 2 was not written either (writes stop at the first failure).
    assert_eq!(failures(&response), seqs);
    assert!(inner.keys().is_empty());
}

#[tokio::test]
async fn digest_deltas_sum_to_the_digest_of_the_ground_truth() {
    // The state digest invariant: starting from an empty table, the sum of the segments'
    // digest deltas equals the sum of H(item) over the items the table holds at the end.
    let store = Arc::new(MemoryStore::new());
    let h = handler(store.clone()).await;
    let mut w = Workload::new(
        3,
        "orders",
        streamseal::model::change::StreamViewType::NewAndOldImages,
        700,
    );
    for _ in 0..20 {
        let response = serve(&h, event(&w.next_event(50))).await.unwrap();
        assert!(failures(&response).is_empty());
    }
    let mut from_segments = StateDigest::ZERO;
    let mut count = 0i64;
    for r in log_records(store.as_ref(), "orders").await {
        from_segments.add(
            &r.digest_delta
                .expect("NEW_AND_OLD_IMAGES segments carry a digest delta"),
        );
        count += r.item_count_delta;
    }
    let mut truth = StateDigest::ZERO;
    for item in w.items() {
        truth.add_item(&item_hash(item).unwrap());
    }
    assert_eq!(from_segments, truth);
    assert_eq!(count as usize, w.len());
}

#[tokio::test]
async fn schema_problems_never_stop_capture_in_lambda() {
    let schemas = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::root().join("tests/fixtures/bad/schema-unknown-type.toml"),
        schemas.path().join("orders.toml"),
    )
    .unwrap();
    let config = Config::from_lookup(|k| match k {
        "STREAMSEAL_TARGET" => Some("memory://".into()),
        "STREAMSEAL_SCHEMAS" => Some(format!("file://{}", schemas.path().display())),
        _ => None,
    })
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let h = Handler::with_store(store.clone(), &config).await.unwrap();
    let response = serve(&h, event(&common::fixture("view-new-and-old-images.json")))
        .await
        .unwrap();
    assert!(failures(&response).is_empty());
    assert_eq!(
        rows(store.as_ref(), "orders").await.len(),
        3,
        "images are captured without typed columns"
    );
}

#[tokio::test]
async fn non_stream_events_are_refused_clearly() {
    let h = handler(Arc::new(MemoryStore::new())).await;
    let err = serve(
        &h,
        event(r#"{"source":"aws.cloudwatch","detail-type":"CloudWatch Alarm State Change"}"#),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("unsupported event"), "{err}");
    // SQS events are the on-failure queue's (tests/deploy.rs); one without messages' ids and
    // bodies is refused whole.
    let err = serve(&h, event(r#"{"Records":[{"eventSource":"aws:sqs"}]}"#))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed SQS event"), "{err}");
    let err = serve(&h, event(r#"{"Records":[{"eventSource":"aws:kinesis"}]}"#))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("aws:kinesis"), "{err}");
    // A stream event whose ARN names no table is an error for the whole invocation.
    let err = serve(
        &h,
        event(r#"{"Records":[{"eventSource":"aws:dynamodb","eventSourceARN":"arn:aws:s3:::x"}]}"#),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("stream ARN"), "{err}");
}

/// A segment name already taken, on S3, by an object holding other changes (planted: another
/// writer under the prefix, or damage): the batch is not acknowledged (every record comes back
/// for retry), nothing is published to the inbox, and the report counts the conflict for the
/// `SegmentConflicts` metric and its alarm. A true redelivery (same bytes) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_segment_with_other_changes_is_refused_and_counted() {
    let mut w = Workload::new(
        14,
        "orders",
        streamseal::model::change::StreamViewType::NewAndOldImages,
        300,
    );
    let text = w.next_event(40);
    // The same records (so the same segment name) with another new image in one of them.
    let other = text.replacen(
        "\"NewImage\":{",
        "\"NewImage\":{\"zz\":{\"S\":\"planted\"},",
        1,
    );
    assert_ne!(text, other);
    let scratch = Arc::new(MemoryStore::new());
    let response = serve(&handler(scratch.clone()).await, event(&other))
        .await
        .unwrap();
    assert!(failures(&response).is_empty());
    let planted_key = scratch
        .keys()
        .into_iter()
        .find(|k| k.contains("/changes/"))
        .unwrap();

    let store = common::fresh_s3_store("planted-segment", "backups/").await;
    store
        .put(
            &planted_key,
            scratch.get(&planted_key).await.unwrap(),
            streamseal::store::PutMode::IfAbsent,
        )
        .await
        .unwrap();
    let h = handler(store.clone()).await;
    let payload = RawValue::from_string(text.clone()).unwrap();
    let streamseal::lambda::Outcome::Stream(response, report) = h.handle(&payload).await.unwrap()
    else {
        panic!("not a stream outcome")
    };
    let response = serde_json::to_value(response).unwrap();
    assert_eq!(
        failures(&response),
        sequences(&text),
        "nothing acknowledged"
    );
    assert_eq!(report.segment_conflicts, 1);
    assert!(
        report.error.as_deref().unwrap().contains("other changes"),
        "{:?}",
        report.error
    );
    let inbox = store.list("orders/inbox/", None, None).await.unwrap();
    assert!(inbox.is_empty(), "{inbox:?}");

    // The planted object removed, the retried batch writes; a redelivery of it (same bytes
    // under the same name) is accepted as what it is.
    store.delete(&planted_key).await.unwrap();
    for _ in 0..2 {
        let response = serve(&h, event(&text)).await.unwrap();
        assert!(failures(&response).is_empty());
    }
    assert!(
        !store
            .list("orders/inbox/", None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

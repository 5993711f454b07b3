//! Every outage event shape drives the Lambda handler (`serve`, what the binary runs) to a
//! sealed, verified snapshot; other states and foreign tables are handled as documented.

mod common;

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use serde_json::value::RawValue;
use streamseal::demo::workload::Workload;
use streamseal::lambda::{Config, Handler, serve};
use streamseal::model::change::StreamViewType;
use streamseal::ops::verify::{Mode, Scope, VerifyOptions, verify};
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

fn event(text: &str) -> LambdaEvent<Box<RawValue>> {
    LambdaEvent::new(
        RawValue::from_string(text.to_owned()).unwrap(),
        Context::default(),
    )
}

fn config(seal_tables: &str) -> Config {
    let seal_tables = seal_tables.to_owned();
    Config::from_lookup(move |k| match k {
        "STREAMSEAL_TARGET" => Some("memory://".into()),
        "STREAMSEAL_SEAL_TABLES" => Some(seal_tables.clone()),
        _ => None,
    })
    .unwrap()
}

/// A handler over a local store that has captured a few batches of `orders`.
async fn captured(seal_tables: &str) -> (tempfile::TempDir, Arc<dyn ObjectStore>, Handler) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let handler = Handler::with_store(store.clone(), &config(seal_tables))
        .await
        .unwrap();
    let mut w = Workload::new(21, "orders", StreamViewType::NewAndOldImages, 300);
    for _ in 0..4 {
        let response = serve(&handler, event(&w.next_event(25))).await.unwrap();
        assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    }
    (dir, store, handler)
}

/// The full report a reply names by `report_key` (the reply itself carries only scalars).
async fn full_report(store: &Arc<dyn ObjectStore>, reply: &serde_json::Value) -> serde_json::Value {
    let key = reply["report_key"].as_str().unwrap();
    assert!(key.starts_with("orders/reports/"), "{reply}");
    serde_json::from_slice(&store.get(key).await.unwrap()).unwrap()
}

async fn independently_verified(store: &Arc<dyn ObjectStore>, id: &str) {
    let r = verify(
        store,
        "orders",
        id,
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
    assert_eq!(r.rows_read, 100);
}

#[tokio::test]
async fn every_outage_event_seals_and_verifies() {
    for (fixture, trigger, deep) in [
        ("triggers/cloudwatch-alarm.json", "cloudwatch-alarm", false),
        ("triggers/aws-health.json", "aws-health", false),
        ("triggers/seal-requested.json", "seal-requested", true),
        ("triggers/step-functions-seal.json", "step-functions", false),
    ] {
        let (_dir, store, handler) = captured("orders").await;
        let response = serve(&handler, event(&common::fixture(fixture)))
            .await
            .unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(response["action"], "seal", "{fixture}: {response}");
        assert_eq!(response["trigger"], trigger);
        assert_eq!(response["ok"], true, "{fixture}: {response}");
        let t = &response["tables"][0];
        assert_eq!(t["table"], "orders");
        assert_eq!(t["snapshot_id"], "0000000001");
        assert_eq!(t["new_rows"], 100);
        assert_eq!(t["status"], "ok");
        // The reply stays small: what grows with history is in the report it names.
        assert!(
            t.get("verify").is_none() && t.get("shards").is_none(),
            "{t}"
        );
        assert_eq!(response["report_key"], t["report_key"]);
        let full = full_report(&store, t).await;
        assert_eq!(full["verify"]["ok"], true);
        assert_eq!(full["verify"]["mode"], if deep { "deep" } else { "quick" });
        assert_eq!(full["snapshot_id"], "0000000001");
        assert!(t["newest_change"].is_string() && t["lag_ms"].is_i64());
        assert!(
            t["manifest_key"]
                .as_str()
                .unwrap()
                .starts_with("orders/snapshots/")
        );
        independently_verified(&store, "0000000001").await;
    }
}

#[tokio::test]
async fn step_functions_verify_checks_the_latest_snapshot() {
    let (_dir, store, handler) = captured("orders").await;
    serve(
        &handler,
        event(&common::fixture("triggers/step-functions-seal.json")),
    )
    .await
    .unwrap();
    let response = serve(
        &handler,
        event(&common::fixture("triggers/step-functions-verify.json")),
    )
    .await
    .unwrap();
    assert_eq!(response["action"], "verify");
    assert_eq!(response["ok"], true, "{response}");
    let full = full_report(&store, &response["tables"][0]).await;
    assert_eq!(full["verify"]["mode"], "deep");
    assert_eq!(full["verify"]["scope"], "chain");

    // A damaged segment makes the verify task fail, with the finding in the error.
    let seg = store
        .list("orders/changes/", None, Some(1))
        .await
        .unwrap()
        .remove(0)
        .key;
    store.delete(&seg).await.unwrap();
    let err = serve(
        &handler,
        event(&common::fixture("triggers/step-functions-verify.json")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(&seg), "{err}");
}

/// Several alarms and an AWS Health event, or the two stacks' drills, start recoveries of one
/// table at once: the first of each kind in the hour takes a write-once lock and runs; the
/// others answer `ignore`, sealing nothing. A retried call of the same run (the same event id
/// or execution) goes on; a seal asked for by hand always runs.
#[tokio::test]
async fn concurrent_recovery_runs_of_a_table_are_de_duplicated() {
    common::clear_of_the_hour_end(30);
    let (_dir, store, handler) = captured("orders").await;
    let alarm = common::fixture("triggers/cloudwatch-alarm.json");
    let first = serve(&handler, event(&alarm)).await.unwrap();
    assert_eq!(first["action"], "seal", "{first}");
    // The same event again (Step Functions retrying the task): the lock is its own.
    let retry = serve(&handler, event(&alarm)).await.unwrap();
    assert_eq!(retry["action"], "seal", "{retry}");
    // Another alarm, and an AWS Health event: duplicates.
    let other = alarm.replace("c4c1c1c9-6542", "d5d2d2d0-7653");
    for dup in [other, common::fixture("triggers/aws-health.json")] {
        let r = serve(&handler, event(&dup)).await.unwrap();
        assert_eq!(r["action"], "ignore", "{r}");
        assert!(r["reason"].as_str().unwrap().contains("duplicate"), "{r}");
        assert_eq!(r["ok"], true);
    }
    let sealed = store.list("orders/snapshots/", None, None).await.unwrap();
    let manifests = sealed
        .iter()
        .filter(|o| !o.key.ends_with("head.json"))
        .count();
    assert_eq!(
        manifests, 2,
        "the first alarm and its retry sealed; nothing else"
    );
    let locks = store.list("orders/locks/", None, None).await.unwrap();
    assert_eq!(locks.len(), 1, "{locks:?}");

    // Drills: one per hour whichever stack starts it; an outage's lock does not stop them.
    let drill = |execution: &str| {
        serde_json::json!({"action": "seal", "reason": "scheduled restore drill", "drill": true,
                           "table": "orders", "execution": execution})
        .to_string()
    };
    let a = serve(&handler, event(&drill("arn:exec:a"))).await.unwrap();
    assert_eq!(a["action"], "seal", "{a}");
    let b = serve(&handler, event(&drill("arn:exec:b"))).await.unwrap();
    assert_eq!(b["action"], "ignore", "{b}");
    // By hand: always.
    let manual = serve(
        &handler,
        event(&common::fixture("triggers/seal-requested.json")),
    )
    .await
    .unwrap();
    assert_eq!(manual["action"], "seal", "{manual}");
}

/// One EventBridge event delivered twice starts two executions: the state machine passes its
/// execution id along, and only the first execution seals; its own retried call goes on.
#[tokio::test]
async fn an_event_delivered_twice_seals_once() {
    common::clear_of_the_hour_end(30);
    let (_dir, _store, handler) = captured("orders").await;
    let alarm: serde_json::Value =
        serde_json::from_str(&common::fixture("triggers/cloudwatch-alarm.json")).unwrap();
    let run = |execution: &str| {
        let mut e = alarm.clone();
        e["execution"] = serde_json::json!(execution);
        e.to_string()
    };
    let first = serve(&handler, event(&run("arn:exec:1"))).await.unwrap();
    assert_eq!(first["action"], "seal", "{first}");
    let second = serve(&handler, event(&run("arn:exec:2"))).await.unwrap();
    assert_eq!(second["action"], "ignore", "{second}");
    let retried = serve(&handler, event(&run("arn:exec:1"))).await.unwrap();
    assert_eq!(retried["action"], "seal", "{retried}");
}

/// A recovery run that fails gives its lock back: the next alarm of the hour tries again
/// instead of being ignored as a duplicate of a failure.
#[tokio::test]
async fn a_failed_recovery_run_releases_its_lock() {
    let (_dir, store, handler) = captured("orders").await;
    // A segment lost before the seal: the seal cannot account for it, verify says corrupt.
    let seg = store
        .list("orders/changes/", None, Some(1))
        .await
        .unwrap()
        .remove(0)
        .key;
    store.delete(&seg).await.unwrap();
    let alarm = common::fixture("triggers/cloudwatch-alarm.json");
    let err = serve(&handler, event(&alarm))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert!(
        store
            .list("orders/locks/", None, None)
            .await
            .unwrap()
            .is_empty(),
        "the lock is released"
    );
    // The next alarm of the hour runs (it seals what is new; the Step Functions verify task
    // checks the whole chain and finds the lost segment again).
    let other = alarm.replace("c4c1c1c9-6542", "d5d2d2d0-7653");
    let again = serve(&handler, event(&other)).await.unwrap();
    assert_eq!(again["action"], "seal", "it ran again: {again}");
    let chain = serve(
        &handler,
        event(&serde_json::json!({"action": "verify", "table": "orders"}).to_string()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(chain.contains("corrupt") && chain.contains(&seg), "{chain}");
}

#[tokio::test]
async fn alarms_leaving_alarm_state_are_ignored() {
    let (_dir, store, handler) = captured("orders").await;
    let response = serve(
        &handler,
        event(&common::fixture("triggers/cloudwatch-alarm-ok.json")),
    )
    .await
    .unwrap();
    assert_eq!(response["action"], "ignore");
    assert!(
        store
            .list("orders/snapshots/", None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn tables_outside_the_configured_list_are_refused() {
    let (_dir, store, handler) = captured("customers").await;
    let err = serve(
        &handler,
        event(&common::fixture("triggers/seal-requested.json")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("STREAMSEAL_SEAL_TABLES"), "{err}");
    assert!(
        store
            .list("orders/snapshots/", None, None)
            .await
            .unwrap()
            .is_empty()
    );
    // An alarm with no configured tables cannot guess which to seal.
    let (_dir, _store, handler) = captured("").await;
    let err = serve(
        &handler,
        event(&common::fixture("triggers/cloudwatch-alarm.json")),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("STREAMSEAL_SEAL_TABLES is not set"), "{err}");
}

/// The Lambda keeps the stream's shard map in the backup (from the emulator's stream API),
/// and a later seal attributes the Lambda's segments (which carry no shard id) to shards by
/// sequence range from that map alone.
#[tokio::test]
async fn the_lambda_keeps_the_shard_map_and_seal_uses_it() {
    use streamseal::aws::tail::SdkStreams;
    let ddb = common::dynamodb_client(None);
    let table = "shardmap-orders";
    ddb.create_table()
        .table_name(table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let arn = streamseal::aws::tail::stream_arn(&ddb, table)
        .await
        .unwrap();
    let streams = common::streams_client();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let handler = Handler::with_store(store.clone(), &config(table))
        .await
        .unwrap()
        .with_streams(Arc::new(SdkStreams(streams)));
    // Lambda-shaped records from this stream, numbered inside its shard's range.
    let shards = streamseal::model::shards::load_shard_maps(store.as_ref(), table)
        .await
        .unwrap();
    assert!(shards.is_empty());
    let mut w = Workload::new(8, table, StreamViewType::NewAndOldImages, 200);
    let event = w
        .next_event(20)
        .replace(&w.stream_arn(), &arn)
        .replace("\"SequenceNumber\":\"1", "\"SequenceNumber\":\"91");
    let response = serve(&handler, self::event(&event)).await.unwrap();
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    let maps = streamseal::model::shards::load_shard_maps(store.as_ref(), table)
        .await
        .unwrap();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0].stream_arn, arn);
    let shard = maps[0].shards[0].shard_id.clone();

    let sealed = streamseal::ops::seal::seal(&store, table, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        sealed.manifest.watermark.shards.keys().collect::<Vec<_>>(),
        vec![&shard],
        "the Lambda's segment is attributed to the stream's shard"
    );
}

//! End to end on the emulator: a table with a stream takes a workload (every attribute type,
//! inserts, updates, deletes); `streamseal tail` captures the stream (killed with SIGKILL
//! midway and restarted); the backup is sealed, verified deep, and restored into a second
//! table, which must equal the source item for item.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType as DdbKeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType as DdbView,
};
use streamseal::aws::dynamodb::{from_attribute_map, to_attribute_map};
use streamseal::change::StreamViewType;
use streamseal::item::canonicalize;
use streamseal::workload::Workload;

fn new_and_old() -> StreamSpecification {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(DdbView::NewAndOldImages)
        .build()
        .unwrap()
}

async fn create_source(client: &Client, table: &str) {
    create_table(client, table, true).await
}

async fn create_table(client: &Client, table: &str, stream: bool) {
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    if stream {
        req = req.stream_specification(new_and_old());
    }
    for (name, kt) in [("pk", DdbKeyType::Hash), ("sk", DdbKeyType::Range)] {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kt)
                    .build()
                    .unwrap(),
            );
    }
    req.send().await.unwrap();
}

async fn scan_all(client: &Client, table: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let text = canonicalize(&from_attribute_map(item).unwrap()).unwrap();
            let pk = item["pk"].as_s().unwrap().clone();
            let sk = item["sk"].as_s().unwrap().clone();
            out.insert(format!("{pk}\u{0}{sk}"), text);
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out
}

fn streamseal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamseal"))
        .args(args)
        .envs(common::moto_env())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_seal_verify_restore_equals_the_source_despite_sigkill() {
    let client = common::dynamodb_client(None);
    let source = "e2e-orders";
    create_source(&client, source).await;
    let mut w = Workload::new(2026, source, StreamViewType::NewAndOldImages, 400);
    let changes = 600;
    for _ in 0..changes {
        let c = w.next_change();
        match &c.after {
            Some(item) => client
                .put_item()
                .table_name(source)
                .set_item(Some(to_attribute_map(item).unwrap()))
                .send()
                .await
                .map(|_| ())
                .unwrap(),
            None => client
                .delete_item()
                .table_name(source)
                .set_key(Some(to_attribute_map(&c.key).unwrap()))
                .send()
                .await
                .map(|_| ())
                .unwrap(),
        }
    }
    let expected = scan_all(&client, source).await;
    assert!(expected.len() > 100);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    // First run: small batches, killed with SIGKILL once a few checkpoints are written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamseal"))
        .args([
            "tail",
            "--table",
            source,
            "--target",
            &target,
            "--batch",
            "7",
            "--until-idle",
            "30",
        ])
        .envs(common::moto_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.path().join(source).join("log");
    let started = Instant::now();
    let count_log = || walk(&log);
    while count_log() < 10 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let written_before_kill = count_log();
    assert!(
        written_before_kill >= 10,
        "tail wrote {written_before_kill} segments"
    );

    // Second run resumes from the checkpoints and drains.
    let out = streamseal(&[
        "tail",
        "--table",
        source,
        "--target",
        &target,
        "--until-idle",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(count_log() > written_before_kill);

    let out = streamseal(&[
        "seal",
        "--table",
        source,
        "--target",
        &target,
        "--schema",
        "tests/fixtures/e2e-schema.toml",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &sealed["seal"]["manifest"];
    assert_eq!(
        m["totals"]["rows"].as_u64(),
        Some(changes),
        "every change once: {m}"
    );
    assert_eq!(m["item_count"].as_u64(), Some(expected.len() as u64));
    assert!(
        !m["watermark"]["shards"].as_object().unwrap().is_empty(),
        "shards recorded"
    );
    assert!(
        dir.path().join(source).join("shards").exists(),
        "shard map kept"
    );

    let out = streamseal(&["verify", "--table", source, "--target", &target, "--deep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = streamseal(&[
        "restore",
        "--table",
        source,
        "--target",
        &target,
        "--to",
        "dynamodb://e2e-restored",
        "--create-table",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(scan_all(&client, "e2e-restored").await, expected);
}

async fn apply(client: &Client, table: &str, w: &mut Workload, n: usize) {
    for _ in 0..n {
        let c = w.next_change();
        match &c.after {
            Some(item) => client
                .put_item()
                .table_name(table)
                .set_item(Some(to_attribute_map(item).unwrap()))
                .send()
                .await
                .map(|_| ())
                .unwrap(),
            None => client
                .delete_item()
                .table_name(table)
                .set_key(Some(to_attribute_map(&c.key).unwrap()))
                .send()
                .await
                .map(|_| ())
                .unwrap(),
        }
    }
}

/// A table with history from before its stream existed: enable the stream, bootstrap it
/// (parallel Scan), keep changing it, capture with `tail`, seal, verify, restore; the restore
/// equals the source item for item and its digest equals the source's.
#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_then_stream_capture_restores_exactly() {
    let client = common::dynamodb_client(None);
    let source = "e2e-boot";
    create_table(&client, source, false).await;
    let mut w = Workload::new(77, source, StreamViewType::NewAndOldImages, 400);
    apply(&client, source, &mut w, 200).await;
    client
        .update_table()
        .table_name(source)
        .stream_specification(new_and_old())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    let out = streamseal(&[
        "bootstrap",
        "--table",
        source,
        "--target",
        &target,
        "--segments",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    apply(&client, source, &mut w, 300).await;
    let out = streamseal(&[
        "tail",
        "--table",
        source,
        "--target",
        &target,
        "--until-idle",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = scan_all(&client, source).await;

    let out = streamseal(&[
        "seal",
        "--table",
        source,
        "--target",
        &target,
        "--schema",
        "tests/fixtures/e2e-schema.toml",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &sealed["seal"]["manifest"];
    assert!(
        !m["base"].as_array().unwrap().is_empty(),
        "the base is adopted"
    );
    assert_eq!(m["totals"]["rows"].as_u64(), Some(300));
    let mut digest = streamseal::item::StateDigest::ZERO;
    for item in expected.values() {
        digest.add_item(&streamseal::item::item_hash(item).unwrap());
    }
    assert_eq!(m["state_digest"].as_str(), Some(digest.to_hex().as_str()));
    assert_eq!(m["item_count"].as_u64(), Some(expected.len() as u64));

    let out = streamseal(&["verify", "--table", source, "--target", &target, "--deep"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = streamseal(&[
        "restore",
        "--table",
        source,
        "--target",
        &target,
        "--to",
        "dynamodb://e2e-boot-restored",
        "--create-table",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["matches"], true);
    assert_eq!(r["target_digest"].as_str(), Some(digest.to_hex().as_str()));
    assert_eq!(scan_all(&client, "e2e-boot-restored").await, expected);
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

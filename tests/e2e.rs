//! End to end on the emulator: a table with a stream takes a workload (every attribute type,
//! inserts, updates, deletes); `streamseal tail` captures the stream (killed with SIGKILL
//! midway and restarted); the backup is sealed, verified deep, and restored into a second
//! table, which must equal the source item for item.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;

/// Runs the CLI against the emulator and asserts it succeeded.
fn streamseal(args: &[&str]) {
    common::run_ok_env(args, &common::moto_env());
}

/// `seal --json` with the test table's key schema; returns the manifest.
fn seal(source: &str, target: &str) -> serde_json::Value {
    let sealed = common::run_json(
        &[
            "seal",
            "--table",
            source,
            "--target",
            target,
            "--schema",
            "tests/fixtures/e2e-schema.toml",
            "--json",
        ],
        &common::moto_env(),
    );
    sealed["seal"]["manifest"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_seal_verify_restore_equals_the_source_despite_sigkill() {
    let client = common::dynamodb_client(None);
    let source = "e2e-orders";
    common::create_orders_table(&client, source, true).await;
    let mut w = Workload::new(2026, source, StreamViewType::NewAndOldImages, 400);
    let changes = 600;
    apply(&client, source, &mut w, changes as usize).await;
    let expected = common::scan_items(&client, source).await;
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
    let log = dir.path().join(source).join("inbox");
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
    streamseal(&[
        "tail",
        "--table",
        source,
        "--target",
        &target,
        "--until-idle",
        "2",
    ]);
    assert!(count_log() > written_before_kill);

    let m = &seal(source, &target);
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
    // `tail` described the table: the manifest records its definition, matching its key.
    let d = &m["definition"];
    assert_eq!(d["key"], m["key_schema"], "{m}");
    assert_eq!(d["stream_view_type"], "NEW_AND_OLD_IMAGES", "{m}");
    assert!(d["billing_mode"].is_string(), "{m}");

    streamseal(&["verify", "--table", source, "--target", &target, "--deep"]);

    streamseal(&[
        "restore",
        "--table",
        source,
        "--target",
        &target,
        "--to",
        "dynamodb://e2e-restored",
        "--create-table",
    ]);
    assert_eq!(common::scan_items(&client, "e2e-restored").await, expected);
}

async fn apply(client: &Client, table: &str, w: &mut Workload, n: usize) {
    for _ in 0..n {
        common::apply_change(client, table, w).await;
    }
}

/// A table with history from before its stream existed: enable the stream, bootstrap it
/// (parallel Scan), keep changing it, capture with `tail`, seal, verify, restore; the restore
/// equals the source item for item and its digest equals the source's.
#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_then_stream_capture_restores_exactly() {
    let client = common::dynamodb_client(None);
    let source = "e2e-boot";
    common::create_orders_table(&client, source, false).await;
    let mut w = Workload::new(77, source, StreamViewType::NewAndOldImages, 400);
    apply(&client, source, &mut w, 200).await;
    client
        .update_table()
        .table_name(source)
        .stream_specification(common::new_and_old_images())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    streamseal(&[
        "bootstrap",
        "--table",
        source,
        "--target",
        &target,
        "--segments",
        "3",
    ]);
    apply(&client, source, &mut w, 300).await;
    streamseal(&[
        "tail",
        "--table",
        source,
        "--target",
        &target,
        "--until-idle",
        "1",
    ]);
    let expected = common::scan_items(&client, source).await;

    let m = &seal(source, &target);
    assert!(
        !m["base"].as_array().unwrap().is_empty(),
        "the base is adopted"
    );
    assert_eq!(m["totals"]["rows"].as_u64(), Some(300));
    let mut digest = streamseal::model::item::StateDigest::ZERO;
    for item in expected.values() {
        digest.add_item(&streamseal::model::item::item_hash(item).unwrap());
    }
    assert_eq!(m["state_digest"].as_str(), Some(digest.to_hex().as_str()));
    assert_eq!(m["item_count"].as_u64(), Some(expected.len() as u64));

    streamseal(&["verify", "--table", source, "--target", &target, "--deep"]);
    let r = common::run_json(
        &[
            "restore",
            "--table",
            source,
            "--target",
            &target,
            "--to",
            "dynamodb://e2e-boot-restored",
            "--create-table",
            "--json",
        ],
        &common::moto_env(),
    );
    assert_eq!(r["matches"], true);
    assert_eq!(r["target_digest"].as_str(), Some(digest.to_hex().as_str()));
    assert_eq!(
        common::scan_items(&client, "e2e-boot-restored").await,
        expected
    );
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

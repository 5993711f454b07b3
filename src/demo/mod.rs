//! `streamseal demo`: the whole product on a laptop, no AWS account.
//!
//! 1. Generates a realistic `orders` workload (every DynamoDB type, inserts, updates, deletes,
//!    TTL deletions) and feeds it, batch by batch, through the Lambda handler (`lambda::serve`,
//!    exactly what the function runs) into a local backup directory, with the shipped
//!    `schemas/orders.toml` for typed columns.
//! 2. Raises an outage event (a CloudWatch alarm entering `ALARM`) through the same handler,
//!    which seals and verifies a snapshot.
//! 3. Restores the snapshot to DynamoDB-JSON files and checks them against the generator's
//!    ground truth, item for item and by digest.

pub mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{Context, LambdaEvent};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::aws::restore::{Request, Target, run};
use crate::demo::workload::Workload;
use crate::lambda::{Config, Handler, serve};
use crate::model::change::StreamViewType;
use crate::model::item::{StateDigest, canonicalize, item_hash};
use crate::ops::restore::Point;
use crate::progress::Progress;
use crate::store::ObjectStore;
use crate::store::local::LocalStore;

/// The example schema, shipped in the binary.
pub(crate) const ORDERS_SCHEMA: &str = include_str!("../../schemas/orders.toml");

/// Marks a directory as the demo's own, so a rerun may replace it.
const MARKER: &str = ".streamseal-demo";

/// What the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Backup directory.
    pub dir: PathBuf,
    /// Changes generated and captured.
    pub changes: usize,
    /// Lambda invocations (batches).
    pub batches: usize,
    /// Segments written.
    pub segments: u64,
    /// Their bytes.
    pub segment_bytes: u64,
    /// Capture time.
    pub capture_ms: u64,
    /// Snapshot sealed by the outage event.
    pub snapshot_id: String,
    /// Seal time (inside the handler).
    pub seal_ms: u64,
    /// Verify result and time.
    pub verify_ok: bool,
    /// Verify time.
    pub verify_ms: u64,
    /// Items restored.
    pub restored_items: u64,
    /// Restore time (including its self-check).
    pub restore_ms: u64,
    /// Items in the generator's ground truth.
    pub truth_items: usize,
    /// Restored state equals the ground truth, item for item.
    pub items_match: bool,
    /// Digests: restored vs ground truth.
    pub digest_match: bool,
    /// The state digest.
    pub digest: StateDigest,
}

/// Why the demo stopped: the step that failed and why.
#[derive(Debug, thiserror::Error)]
#[error("demo: {0}")]
pub struct DemoError(String);

impl From<String> for DemoError {
    fn from(problem: String) -> DemoError {
        DemoError(problem)
    }
}

/// Runs the demo into `dir` with `changes` changes in Lambda batches of `batch`.
pub async fn run_demo(dir: &Path, changes: usize, batch: usize) -> Result<DemoReport, DemoError> {
    prepare_dir(dir)?;
    let backup = dir.join("backup");
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(&schemas).map_err(|e| format!("{}: {e}", schemas.display()))?;
    std::fs::write(schemas.join("orders.toml"), ORDERS_SCHEMA)
        .map_err(|e| format!("{}: {e}", schemas.display()))?;
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalStore::new(&backup).map_err(|e| e.to_string())?);
    let schemas_url = schemas.display().to_string();
    let config = Config::from_lookup(|k| match k {
        "STREAMSEAL_TARGET" => Some(backup.display().to_string()),
        "STREAMSEAL_SCHEMAS" => Some(schemas_url.clone()),
        "STREAMSEAL_SEAL_TABLES" => Some("orders".into()),
        _ => None,
    })
    .map_err(|e| e.to_string())?;
    let handler = Handler::with_store(store.clone(), &config)
        .await
        .map_err(|e| e.to_string())?
        .without_metrics();

    // 1. Capture.
    let mut w = Workload::new(42, "orders", StreamViewType::NewAndOldImages, 700);
    let started = Instant::now();
    let mut done = 0;
    let mut batches = 0;
    while done < changes {
        let n = batch.min(changes - done);
        let response = serve(&handler, event(&w.next_event(n))?)
            .await
            .map_err(|e| format!("the handler failed on batch {batches}: {e}"))?;
        if response["batchItemFailures"]
            .as_array()
            .is_none_or(|a| !a.is_empty())
        {
            return Err(format!("batch {batches} reported failures: {response}").into());
        }
        done += n;
        batches += 1;
    }
    let capture_ms = started.elapsed().as_millis() as u64;

    // 2. Outage: an alarm enters ALARM; the handler seals and verifies.
    let alarm = serde_json::json!({
        "version": "0",
        "id": "demo",
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": "123456789012",
        "time": chrono::Utc::now().to_rfc3339(),
        "region": "eu-west-1",
        "resources": ["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:orders-demo-outage"],
        "detail": {
            "alarmName": "orders-demo-outage",
            "state": {"value": "ALARM", "reason": "streamseal demo: simulated regional outage"}
        }
    });
    let response = serve(&handler, event(&alarm.to_string())?)
        .await
        .map_err(|e| format!("seal/verify failed: {e}"))?;
    // The reply is a summary; the full report is in the backup, where the reply names it.
    let report_key = response["report_key"].as_str().unwrap_or_default();
    let full: serde_json::Value = store
        .get(report_key)
        .await
        .map_err(|e| format!("reading the seal's report: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("the seal's report: {e}")))?;
    let t = &full;
    let snapshot_id = t["snapshot_id"].as_str().unwrap_or_default().to_owned();
    let seal_ms = t["seal_ms"].as_u64().unwrap_or(0);
    let verify_ok = t["verify"]["ok"].as_bool().unwrap_or(false);
    let verify_ms = t["verify"]["elapsed_ms"].as_u64().unwrap_or(0);
    let segments = t["new_segments"].as_u64().unwrap_or(0);
    let segment_bytes = t["new_bytes"].as_u64().unwrap_or(0);

    // 3. Restore to files and compare with the ground truth.
    let started = Instant::now();
    let out = dir.join("restore");
    let report = run(
        &store,
        None,
        &Request::new(
            "orders",
            Point::Snapshot(snapshot_id.clone()),
            Target::Files(out.clone()),
        ),
        &Progress::default(),
    )
    .await
    .map_err(|e| format!("restore failed: {e}"))?;
    let restore_ms = started.elapsed().as_millis() as u64;
    let mut truth_digest = StateDigest::ZERO;
    let mut truth: BTreeSet<String> = BTreeSet::new();
    for item in w.items() {
        truth_digest.add_item(&item_hash(item).map_err(|e| e.to_string())?);
        truth.insert(canonicalize(item).map_err(|e| e.to_string())?);
    }
    let restored = read_items(&report.files)?;
    Ok(DemoReport {
        dir: dir.to_owned(),
        changes,
        batches,
        segments,
        segment_bytes,
        capture_ms,
        snapshot_id,
        seal_ms,
        verify_ok,
        verify_ms,
        restored_items: report.items,
        restore_ms,
        truth_items: truth.len(),
        items_match: restored == truth,
        digest_match: report.matches && report.digest == truth_digest,
        digest: report.digest,
    })
}

fn event(text: &str) -> Result<LambdaEvent<Box<RawValue>>, String> {
    Ok(LambdaEvent::new(
        RawValue::from_string(text.to_owned()).map_err(|e| e.to_string())?,
        Context::default(),
    ))
}

/// A fresh demo directory: created, or replaced if a previous demo made it; anything else
/// that is not empty is refused.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            if !dir.join(MARKER).exists() {
                return Err(format!(
                    "{} exists and is not a previous demo; choose another --dir (nothing was touched)",
                    dir.display()
                ));
            }
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "created by `streamseal demo`; safe to delete\n",
    )
    .map_err(|e| format!("{}: {e}", dir.display()))
}

fn read_items(files: &[String]) -> Result<BTreeSet<String>, String> {
    use std::io::BufRead as _;
    let mut out = BTreeSet::new();
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| format!("{f}: {e}"))?;
        for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let line = line.map_err(|e| format!("{f}: {e}"))?;
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("{f}: {e}"))?;
            out.insert(canonicalize(&v["Item"].to_string()).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

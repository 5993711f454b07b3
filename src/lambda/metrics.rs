//! CloudWatch Embedded Metric Format lines: per stream batch, per verify (one count per
//! finding kind), per finished restore drill.

use super::*;

use serde_json::{Value, json};

/// One Embedded Metric Format line: `metrics` (name, unit, value) in the `streamseal`
/// namespace with the `Table` dimension, plus `properties` logged beside them (not metrics).
fn emf_line(
    now_ms: i64,
    table: &str,
    metrics: Vec<(String, &str, Value)>,
    properties: Vec<(&str, Value)>,
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut doc = serde_json::Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "streamseal",
                "Dimensions": [["Table"]],
                "Metrics": definitions,
            }]
        }),
    );
    doc.insert("Table".into(), json!(table));
    for (key, value) in properties {
        doc.insert(key.into(), value);
    }
    for (name, _, value) in metrics {
        doc.insert(name, value);
    }
    Value::Object(doc).to_string()
}

/// The CloudWatch Embedded Metric Format line of a finished restore drill: the measured
/// recovery time and recovery point, in seconds, per table.
pub(crate) fn drill_metrics_line(outcome: &RestoreOutcome, now_ms: i64) -> String {
    let secs = |ms: Option<i64>| json!(ms.map(|m| m as f64 / 1000.0));
    emf_line(
        now_ms,
        &outcome.table,
        vec![
            (
                "RestoreDrillRtoSeconds".into(),
                "Seconds",
                secs(outcome.rto_ms),
            ),
            (
                "RestoreDrillRpoSeconds".into(),
                "Seconds",
                secs(outcome.rpo_ms),
            ),
            ("RestoreDrillItems".into(), "Count", json!(outcome.items)),
        ],
        vec![],
    )
}

/// The CloudWatch Embedded Metric Format line of a verify (after a seal, or asked for): one
/// metric per finding kind, zeros included so alarms always have data
/// (`FindingsMissing`, `FindingsAltered`, ..., `FindingsAcknowledged`), and `VerifyStatus`
/// (0 ok, 1 incomplete, 2 corrupt).
pub(crate) fn findings_metrics_line(table: &str, report: &VerifyReport, now_ms: i64) -> String {
    let mut metrics: Vec<(String, &str, Value)> = crate::model::findings::counts(&report.findings)
        .into_iter()
        .map(|(kind, n)| (kind.metric(), "Count", json!(n)))
        .collect();
    let status = match report.status {
        Status::Ok => 0,
        Status::Incomplete => 1,
        Status::Corrupt => 2,
    };
    metrics.push(("VerifyStatus".into(), "None", json!(status)));
    emf_line(
        now_ms,
        table,
        metrics,
        vec![
            ("Snapshot", json!(report.snapshot_id)),
            ("Status", json!(report.status.as_str())),
        ],
    )
}

/// One CloudWatch Embedded Metric Format line for a stream batch, to print on stdout.
pub(crate) fn metrics_line(report: &IngestReport, now_ms: i64) -> String {
    let bytes: u64 = report.segments.iter().map(|s| s.bytes).sum();
    let written = report.segments.iter().filter(|s| s.created).count();
    emf_line(
        now_ms,
        report.table.as_deref().unwrap_or_default(),
        vec![
            ("Records".into(), "Count", json!(report.records)),
            ("SegmentsWritten".into(), "Count", json!(written)),
            ("SegmentBytes".into(), "Bytes", json!(bytes)),
            (
                "QuarantinedRecords".into(),
                "Count",
                json!(report.quarantined.len()),
            ),
            (
                "RetriedRecords".into(),
                "Count",
                json!(report.batch_item_failures.len()),
            ),
            (
                "SegmentConflicts".into(),
                "Count",
                json!(report.segment_conflicts),
            ),
        ],
        vec![],
    )
}

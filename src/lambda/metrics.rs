//! CloudWatch Embedded Metric Format lines: per stream batch, per verify (one count per
//! finding kind), per finished restore drill.

use super::*;

/// The CloudWatch Embedded Metric Format line of a finished restore drill: the measured
/// recovery time and recovery point, in seconds, per table.
pub fn drill_metrics_line(outcome: &RestoreOutcome, now_ms: i64) -> String {
    let secs = |ms: Option<i64>| ms.map(|m| m as f64 / 1000.0);
    serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "streamseal",
                "Dimensions": [["Table"]],
                "Metrics": [
                    {"Name": "RestoreDrillRtoSeconds", "Unit": "Seconds"},
                    {"Name": "RestoreDrillRpoSeconds", "Unit": "Seconds"},
                    {"Name": "RestoreDrillItems", "Unit": "Count"},
                ]
            }]
        },
        "Table": outcome.table,
        "RestoreDrillRtoSeconds": secs(outcome.rto_ms),
        "RestoreDrillRpoSeconds": secs(outcome.rpo_ms),
        "RestoreDrillItems": outcome.items,
    })
    .to_string()
}

/// The CloudWatch Embedded Metric Format line of a verify (after a seal, or asked for): one
/// metric per finding kind, zeros included so alarms always have data
/// (`FindingsMissing`, `FindingsAltered`, ..., `FindingsAcknowledged`), and `VerifyStatus`
/// (0 ok, 1 incomplete, 2 corrupt).
pub fn findings_metrics_line(table: &str, report: &VerifyReport, now_ms: i64) -> String {
    let counts = crate::model::findings::counts(&report.findings);
    let mut metrics: Vec<serde_json::Value> = counts
        .iter()
        .map(|(k, _)| serde_json::json!({"Name": k.metric(), "Unit": "Count"}))
        .collect();
    metrics.push(serde_json::json!({"Name": "VerifyStatus", "Unit": "None"}));
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "streamseal",
                "Dimensions": [["Table"]],
                "Metrics": metrics,
            }]
        },
        "Table": table,
        "Snapshot": report.snapshot_id,
        "Status": report.status.as_str(),
        "VerifyStatus": match report.status {
            Status::Ok => 0,
            Status::Incomplete => 1,
            Status::Corrupt => 2,
        },
    });
    if let Some(map) = doc.as_object_mut() {
        for (k, n) in counts {
            map.insert(k.metric(), serde_json::json!(n));
        }
    }
    doc.to_string()
}

/// One CloudWatch Embedded Metric Format line for a stream batch, to print on stdout.
pub fn metrics_line(report: &IngestReport, now_ms: i64) -> String {
    let bytes: u64 = report.segments.iter().map(|s| s.bytes).sum();
    let written = report.segments.iter().filter(|s| s.created).count();
    serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": "streamseal",
                "Dimensions": [["Table"]],
                "Metrics": [
                    {"Name": "Records", "Unit": "Count"},
                    {"Name": "SegmentsWritten", "Unit": "Count"},
                    {"Name": "SegmentBytes", "Unit": "Bytes"},
                    {"Name": "QuarantinedRecords", "Unit": "Count"},
                    {"Name": "RetriedRecords", "Unit": "Count"},
                ]
            }]
        },
        "Table": report.table.clone().unwrap_or_default(),
        "Records": report.records,
        "SegmentsWritten": written,
        "SegmentBytes": bytes,
        "QuarantinedRecords": report.quarantined.len(),
        "RetriedRecords": report.batch_item_failures.len(),
    })
    .to_string()
}

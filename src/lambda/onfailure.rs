//! Gaps from the event source mapping's on-failure destination.
//!
//! When Lambda gives up on a batch of stream records (they expired from the stream, or the
//! retry or age limits were reached), it discards them and sends one JSON *invocation record*
//! describing the batch (shard, first and last sequence number, count, stream ARN) to the
//! mapping's on-failure destination. The template points that destination at an SQS queue
//! whose messages the same function reads: each becomes a gap entry in the table's segment
//! log, so every later seal counts it and verify fails, naming the missing range, until the
//! table is captured afresh. A loss is never silent.
//!
//! The invocation record (documented in "Retain discarded records for a DynamoDB event source
//! in Lambda"):
//!
//! ```json
//! {"requestContext": {"requestId": "...", "functionArn": "...", "condition": "RetryAttemptsExhausted",
//!   "approximateInvokeCount": 3},
//!  "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
//!  "version": "1.0", "timestamp": "2026-11-14T00:13:49.717Z",
//!  "DDBStreamBatchInfo": {"shardId": "shardId-...", "startSequenceNumber": "...",
//!   "endSequenceNumber": "...", "approximateArrivalOfFirstRecord": "...",
//!   "approximateArrivalOfLastRecord": "...", "batchSize": 1, "streamArn": "arn:aws:dynamodb:..."}}
//! ```

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::model::clock::Clock as _;
use crate::model::layout::TableLayout;
use crate::model::log::{GapRecord, LOG_FORMAT, LogEntry};
use crate::store::{ObjectStore, PutMode};

/// An on-failure message that cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OnFailureError {
    /// Not an invocation record of a DynamoDB stream event source mapping.
    #[error(
        "message {message_id}: not a DynamoDB stream on-failure invocation record ({why}); it stays in the queue and reaches its dead-letter queue"
    )]
    Shape {
        /// SQS message id.
        message_id: String,
        /// What is wrong.
        why: String,
    },
    /// The gap entry could not be written (retried by SQS).
    #[error("message {message_id}: writing gap entry {key}: {source}")]
    Store {
        /// SQS message id.
        message_id: String,
        /// Log key.
        key: String,
        /// The store's error.
        source: Box<crate::store::StoreError>,
    },
}

#[derive(Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records")]
    records: Vec<SqsMessage>,
}

#[derive(Deserialize)]
struct SqsMessage {
    #[serde(rename = "messageId")]
    message_id: String,
    body: String,
}

#[derive(Deserialize)]
struct Invocation {
    #[serde(rename = "requestContext", default)]
    request_context: Option<RequestContext>,
    #[serde(rename = "responseContext", default)]
    response_context: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(rename = "DDBStreamBatchInfo")]
    batch: BatchInfo,
}

#[derive(Deserialize)]
struct RequestContext {
    #[serde(default)]
    condition: Option<String>,
    #[serde(rename = "approximateInvokeCount", default)]
    approximate_invoke_count: Option<u64>,
}

#[derive(Deserialize)]
struct BatchInfo {
    #[serde(rename = "shardId")]
    shard_id: String,
    #[serde(rename = "startSequenceNumber")]
    start: String,
    #[serde(rename = "endSequenceNumber")]
    end: String,
    #[serde(rename = "approximateArrivalOfFirstRecord", default)]
    first_arrival: Option<String>,
    #[serde(rename = "approximateArrivalOfLastRecord", default)]
    last_arrival: Option<String>,
    #[serde(rename = "batchSize")]
    batch_size: u64,
    #[serde(rename = "streamArn")]
    stream_arn: String,
}

/// What one SQS batch of on-failure messages produced.
#[derive(Debug, Default)]
pub struct OnFailureReport {
    /// Log keys of the gap entries written, with their table.
    pub gaps: Vec<(String, String)>,
    /// Message ids to hand back to SQS (retried, then dead-lettered), with why.
    pub failed: Vec<(String, String)>,
}

/// Records one gap entry per message. A message that is not an on-failure invocation record,
/// or whose entry cannot be written, is reported in `failed` (the caller returns it as an SQS
/// batch item failure: a write error is retried; a bad message ends in the dead-letter queue,
/// whose alarm tells an operator).
pub(crate) async fn record_gaps(store: &dyn ObjectStore, payload: &str) -> OnFailureReport {
    let mut report = OnFailureReport::default();
    let event: SqsEvent = match serde_json::from_str(payload) {
        Ok(e) => e,
        Err(e) => {
            report
                .failed
                .push((String::new(), format!("malformed SQS event (expected the on-failure queue's messages, each with messageId and body): {e}")));
            return report;
        }
    };
    for m in event.records {
        match record_one(store, &m).await {
            Ok((table, key)) => report.gaps.push((table, key)),
            Err(e) => report.failed.push((m.message_id.clone(), e.to_string())),
        }
    }
    report
}

/// The gap entry for one on-failure message, or why there is none.
pub(crate) fn gap_of(message_id: &str, body: &str) -> Result<GapRecord, OnFailureError> {
    let shape = |why: String| OnFailureError::Shape {
        message_id: message_id.to_owned(),
        why,
    };
    let inv: Invocation = serde_json::from_str(body).map_err(|e| shape(e.to_string()))?;
    let b = &inv.batch;
    let table = crate::model::change::table_from_stream_arn(&b.stream_arn)
        .map_err(|e| shape(format!("streamArn: {e}")))?
        .to_owned();
    for (what, s) in [
        ("startSequenceNumber", &b.start),
        ("endSequenceNumber", &b.end),
    ] {
        if s.is_empty() || s.len() > 40 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(shape(format!("{what} {s:?} is not a sequence number")));
        }
    }
    let ctx = inv.request_context.as_ref();
    let mut detail = format!(
        "{} after {} invocation(s); records arrived {} .. {}; reported at {}",
        ctx.and_then(|c| c.condition.as_deref())
            .unwrap_or("discarded"),
        ctx.and_then(|c| c.approximate_invoke_count)
            .map_or("an unknown number of".into(), |n| n.to_string()),
        b.first_arrival.as_deref().unwrap_or("?"),
        b.last_arrival.as_deref().unwrap_or("?"),
        inv.timestamp.as_deref().unwrap_or("?"),
    );
    if let Some(r) = &inv.response_context {
        detail.push_str(&format!("; response {r}"));
    }
    if let Some((cut, _)) = detail.char_indices().nth(1000) {
        detail.truncate(cut);
    }
    Ok(GapRecord {
        format: LOG_FORMAT,
        table,
        source: "lambda-on-failure".into(),
        shard_id: Some(b.shard_id.clone()),
        start_sequence: Some(b.start.clone()),
        end_sequence: Some(b.end.clone()),
        records: Some(b.batch_size),
        detail,
        written_at: String::new(),
    })
}

async fn record_one(
    store: &dyn ObjectStore,
    m: &SqsMessage,
) -> Result<(String, String), OnFailureError> {
    let mut gap = gap_of(&m.message_id, &m.body)?;
    gap.written_at = crate::model::clock::SystemClock.now_rfc3339();
    let layout = TableLayout::new(&gap.table);
    // The entry is named by the range, so a redelivered message rewrites the same entry while
    // it waits, and one redelivered after its seal is recognised as a repeat of the finding.
    let id = &hex::encode(Sha256::digest(
        format!(
            "{}|{}|{}",
            gap.shard_id.as_deref().unwrap_or(""),
            gap.start_sequence.as_deref().unwrap_or(""),
            gap.end_sequence.as_deref().unwrap_or("")
        )
        .as_bytes(),
    ))[..16];
    let key = layout.gap_entry_key(id);
    let table = gap.table.clone();
    let body = serde_json::to_vec(&LogEntry::Gap(gap)).map_err(|e| OnFailureError::Shape {
        message_id: m.message_id.clone(),
        why: e.to_string(),
    })?;
    match store.put(&key, Bytes::from(body), PutMode::IfAbsent).await {
        Ok(_) => Ok((table, key)),
        Err(source) => Err(OnFailureError::Store {
            message_id: m.message_id.clone(),
            key,
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"requestContext":{"requestId":"316aa6d0","functionArn":"arn:aws:lambda:us-east-2:123456789012:function:f","condition":"RecordAgeExceeded","approximateInvokeCount":4},"responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},"version":"1.0","timestamp":"2026-11-14T00:13:49.717Z","DDBStreamBatchInfo":{"shardId":"shardId-00000001573689847184-864758bb","startSequenceNumber":"800000000003126276362","endSequenceNumber":"800000000003126276370","approximateArrivalOfFirstRecord":"2026-11-14T00:13:19Z","approximateArrivalOfLastRecord":"2026-11-14T00:13:19Z","batchSize":9,"streamArn":"arn:aws:dynamodb:us-east-2:123456789012:table/orders/stream/2026-11-14T00:04:06.388"}}"#;

    #[test]
    fn invocation_records_become_gaps() {
        let g = gap_of("m1", BODY).unwrap();
        assert_eq!(g.table, "orders");
        assert_eq!(g.records, Some(9));
        assert_eq!(g.start_sequence.as_deref(), Some("800000000003126276362"));
        assert!(
            g.detail.starts_with("RecordAgeExceeded after 4"),
            "{}",
            g.detail
        );
    }

    #[test]
    fn other_messages_are_refused() {
        for bad in [
            "not json",
            "{}",
            r#"{"DDBStreamBatchInfo":{"shardId":"s","startSequenceNumber":"1","endSequenceNumber":"2","batchSize":1,"streamArn":"arn:aws:kinesis:x"}}"#,
            &BODY.replace("800000000003126276362", "8e5"),
        ] {
            let e = gap_of("m9", bad).unwrap_err().to_string();
            assert!(e.contains("m9"), "{e}");
        }
    }
}

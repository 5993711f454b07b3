//! The Lambda side: configuration from the environment, dispatch by event shape, metrics.
//!
//! `streamseal-lambda` builds one [`Handler`] per container (store client, schema cache) and
//! calls [`Handler::handle`] for every invocation. Configuration:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `STREAMSEAL_TARGET` | where backups go: `s3://bucket/prefix` (or `file:///dir`) | required |
//! | `STREAMSEAL_SCHEMAS` | where `<table>.toml` schema files live: `s3://bucket/prefix`, `file:///dir` or a directory in the deployment package | none: key and image columns only |
//! | `STREAMSEAL_ENCODE_THREADS` | threads for preparing records and encoding Parquet | number of CPUs Lambda gives the function |
//! | `STREAMSEAL_ZSTD_LEVEL` | zstd level of segments | 1 |
//!
//! A DynamoDB stream event is answered with `{"batchItemFailures": [...]}` (the function's event
//! source mapping must enable `ReportBatchItemFailures`): empty on success, or every record from
//! the first one not durably written. Records that can never be converted are quarantined and
//! counted in the `QuarantinedRecords` metric, emitted in CloudWatch Embedded Metric Format.

use std::sync::Arc;

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_json::value::RawValue;

use crate::ingest::{
    BadRecordPolicy, IngestError, IngestOptions, IngestReport, Ingestor, SchemaSource,
};
use crate::segment::EncodeOptions;
use crate::store::{self, ObjectStore, StoreError};

/// A configuration or invocation error, reported to Lambda as a function error.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// A required variable is missing or malformed.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event could not be ingested at all (Lambda will retry or bisect the batch).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The event has a shape this function does not handle.
    #[error("unsupported event: {0}")]
    Unsupported(String),
    /// The response could not be serialised (a bug; Lambda retries the batch).
    #[error("serialising the response: {0}")]
    Response(String),
    /// A record that must be retried has no readable sequence number; the whole batch is
    /// failed so Lambda retries it (writes are idempotent, so nothing is duplicated).
    #[error("retrying the whole batch: {0}")]
    RetryBatch(String),
}

/// Settings read from the environment once per container.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STREAMSEAL_TARGET`.
    pub target: String,
    /// `STREAMSEAL_SCHEMAS`.
    pub schemas: Option<String>,
    /// Ingest tuning.
    pub options: IngestOptions,
}

impl Config {
    /// Reads the variables through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, LambdaError> {
        let target = get("STREAMSEAL_TARGET")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                LambdaError::Config(
                    "STREAMSEAL_TARGET is not set; set it to s3://bucket/prefix".into(),
                )
            })?;
        let threads = match get("STREAMSEAL_ENCODE_THREADS") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    LambdaError::Config(format!(
                        "STREAMSEAL_ENCODE_THREADS={v:?} is not a number from 1 to 64"
                    ))
                })?,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        };
        let zstd_level = match get("STREAMSEAL_ZSTD_LEVEL") {
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=19).contains(n))
                .ok_or_else(|| {
                    LambdaError::Config(format!(
                        "STREAMSEAL_ZSTD_LEVEL={v:?} is not a level from 1 to 19"
                    ))
                })?,
            None => 1,
        };
        Ok(Config {
            target,
            schemas: get("STREAMSEAL_SCHEMAS").filter(|s| !s.trim().is_empty()),
            options: IngestOptions {
                encode: EncodeOptions {
                    zstd_level,
                    encode_threads: threads,
                },
                prepare_threads: threads,
                bad_records: BadRecordPolicy::Quarantine,
            },
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, LambdaError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Everything an invocation needs, built once per container.
#[derive(Debug)]
pub struct Handler {
    ingestor: Ingestor,
}

/// What a handled event produced.
#[derive(Debug)]
pub enum Outcome {
    /// A stream batch: the response for Lambda and the report behind it.
    Stream(DynamoDbEventResponse, IngestReport),
}

impl Handler {
    /// Opens the stores named by the configuration.
    pub async fn new(config: &Config) -> Result<Handler, LambdaError> {
        let target = store::open(&config.target).await?;
        Handler::with_store(target, config).await
    }

    /// A handler writing to an already opened store (tests, the CLI, the demo).
    pub async fn with_store(
        target: Arc<dyn ObjectStore>,
        config: &Config,
    ) -> Result<Handler, LambdaError> {
        let schemas = match &config.schemas {
            Some(url) => SchemaSource::Store(store::open(url).await?),
            None => SchemaSource::None,
        };
        Ok(Handler {
            ingestor: Ingestor::new(target, schemas, config.options),
        })
    }

    /// Handles one invocation payload.
    pub async fn handle(&self, payload: &RawValue) -> Result<Outcome, LambdaError> {
        match classify(payload) {
            EventShape::DynamoDbStream => {
                let report = self.ingestor.ingest_event(payload.get()).await?;
                if report.retry_whole_batch {
                    return Err(LambdaError::RetryBatch(
                        report.error.clone().unwrap_or_default(),
                    ));
                }
                let mut response = DynamoDbEventResponse::default();
                response.batch_item_failures = report
                    .batch_item_failures
                    .iter()
                    .map(|seq| {
                        let mut f = DynamoDbBatchItemFailure::default();
                        f.item_identifier = Some(seq.clone());
                        f
                    })
                    .collect();
                Ok(Outcome::Stream(response, report))
            }
            EventShape::Other(what) => Err(LambdaError::Unsupported(what)),
        }
    }
}

/// Serves one Lambda invocation: handles the payload, prints the metrics line, and returns the
/// JSON response. `streamseal-lambda` calls exactly this for every event.
pub async fn serve(
    handler: &Handler,
    event: lambda_runtime::LambdaEvent<Box<RawValue>>,
) -> Result<serde_json::Value, LambdaError> {
    match handler.handle(&event.payload).await? {
        Outcome::Stream(response, report) => {
            println!(
                "{}",
                metrics_line(&report, chrono::Utc::now().timestamp_millis())
            );
            tracing::info!(
                request_id = %event.context.request_id,
                table = report.table.as_deref().unwrap_or(""),
                records = report.records,
                segments = report.segments.len(),
                quarantined = report.quarantined.len(),
                retry = report.batch_item_failures.len(),
                "batch handled"
            );
            serde_json::to_value(response).map_err(|e| LambdaError::Response(e.to_string()))
        }
    }
}

/// The kinds of payload the function recognises.
#[derive(Debug, PartialEq, Eq)]
pub enum EventShape {
    /// `{"Records": [{"eventSource": "aws:dynamodb", ...}]}`.
    DynamoDbStream,
    /// Anything else, described.
    Other(String),
}

/// Recognises an event by its shape, reading only the top-level fields.
pub fn classify(payload: &RawValue) -> EventShape {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(rename = "Records", borrow, default)]
        records: Option<Vec<&'a RawValue>>,
        #[serde(rename = "detail-type", default)]
        detail_type: Option<String>,
        #[serde(default)]
        source: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        #[serde(rename = "eventSource", default)]
        event_source: Option<String>,
    }
    match serde_json::from_str::<Top>(payload.get()) {
        Ok(Top {
            records: Some(records),
            ..
        }) => {
            let source = records
                .first()
                .and_then(|r| serde_json::from_str::<Rec>(r.get()).ok())
                .and_then(|r| r.event_source);
            match source.as_deref() {
                Some("aws:dynamodb") | None => EventShape::DynamoDbStream,
                Some(other) => EventShape::Other(format!(
                    "records from {other:?}; this function reads DynamoDB streams"
                )),
            }
        }
        Ok(Top {
            detail_type,
            source,
            ..
        }) => EventShape::Other(format!(
            "no Records array (source {:?}, detail-type {:?})",
            source.unwrap_or_default(),
            detail_type.unwrap_or_default()
        )),
        Err(e) => EventShape::Other(format!("payload is not a JSON object: {e}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_needs_a_target_and_checks_numbers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(matches!(
            Config::from_lookup(env(&[])),
            Err(LambdaError::Config(_))
        ));
        let c = Config::from_lookup(env(&[
            ("STREAMSEAL_TARGET", "s3://b/p"),
            ("STREAMSEAL_ENCODE_THREADS", "2"),
        ]))
        .unwrap();
        assert_eq!(c.options.encode.encode_threads, 2);
        assert!(
            Config::from_lookup(env(&[
                ("STREAMSEAL_TARGET", "s3://b/p"),
                ("STREAMSEAL_ZSTD_LEVEL", "99")
            ]))
            .is_err()
        );
    }

    #[test]
    fn shapes_are_recognised() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(
            classify(&raw(r#"{"Records":[{"eventSource":"aws:dynamodb"}]}"#)),
            EventShape::DynamoDbStream
        );
        assert!(matches!(
            classify(&raw(r#"{"Records":[{"eventSource":"aws:sqs"}]}"#)),
            EventShape::Other(_)
        ));
        assert!(matches!(
            classify(&raw(
                r#"{"source":"aws.health","detail-type":"AWS Health Event"}"#
            )),
            EventShape::Other(_)
        ));
    }
}

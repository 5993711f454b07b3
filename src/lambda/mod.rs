//! The Lambda side: configuration from the environment, dispatch by event shape, metrics.
//!
//! `streamseal-lambda` builds one [`Handler`] per container (store client, schema cache) and
//! calls [`Handler::handle`] for every invocation. Configuration:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `STREAMSEAL_TARGET` | where backups go: `s3://bucket/prefix` (or `file:///dir`) | required |
//! | `STREAMSEAL_TARGET_REGION` | the backup bucket's region, when not the function's (a bucket in the recovery region); same as `?region=` on the target URL. Schema files never take it (`?region=` on their URL, or discovered) | discovered once per container with HeadBucket |
//! | `STREAMSEAL_SCHEMAS` | where `<table>.toml` schema files live: `s3://bucket/prefix`, `file:///dir` or a directory in the deployment package | none: key and image columns only |
//! | `STREAMSEAL_ENCODE_THREADS` | threads for preparing records and encoding Parquet | number of CPUs Lambda gives the function |
//! | `STREAMSEAL_ZSTD_LEVEL` | zstd level of segments | 1 |
//! | `STREAMSEAL_SEAL_TABLES` | tables an outage event seals when it names none (comma-separated); events naming other tables are refused | none |
//! | `STREAMSEAL_RETENTION_DAYS` | Object Lock retention of sealed manifests, in days | none |
//! | `STREAMSEAL_RETENTION_MODE` | `compliance` or `governance` | `compliance` |
//! | `STREAMSEAL_SHARD_MAP_MINUTES` | how often to copy the stream's shard map into the backup (0: never) | 5 |
//!
//! A DynamoDB stream event is answered with `{"batchItemFailures": [...]}` (the function's event
//! source mapping must enable `ReportBatchItemFailures`): empty on success, or every record from
//! the first one not durably written. Records that can never be converted are quarantined and
//! counted in the `QuarantinedRecords` metric, emitted in CloudWatch Embedded Metric Format.
//!
//! An SQS event carries the event source mapping's on-failure messages (see
//! [`crate::lambda::onfailure`]): each becomes a gap entry in the table's log, and the answer is an SQS
//! `{"batchItemFailures": [{"itemIdentifier": messageId}]}` naming messages that could not be
//! recorded (the queue's mapping must enable `ReportBatchItemFailures` too).
//!
//! A Step Functions restore task (`{"action": "restore", ...}`, see
//! [`crate::lambda::trigger::RestoreTask`]) restores a snapshot into a DynamoDB table for at most its
//! time budget and answers `{"complete": false}` when the state machine must call again; a
//! drill's completed restore prints the `RestoreDrillRtoSeconds` and `RestoreDrillRpoSeconds`
//! metrics.
//!
//! Outage events (see [`crate::lambda::trigger`]) seal the named or configured tables, verify each new
//! snapshot (quick, over the segments it sealed; deep on request) and return a report per
//! table: snapshot id, watermark, rows, bytes, verify result, and the lag between the newest
//! sealed change and now. A failed seal or verify fails the invocation, with the report in the
//! error message, so a Step Functions `Catch` or an alarm on `Errors` sees it.

pub mod onfailure;
pub mod trigger;

use std::sync::Arc;

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_json::value::RawValue;

use crate::aws::tail::{SdkStreams, StreamApi, save_shard_map};
use crate::capture::{IngestError, IngestOptions, IngestReport, Ingestor, SchemaSource};
use crate::model::findings::{Finding, Status};
use crate::ops::seal::{self, SealOptions};
use crate::ops::verify::{self, Mode, Scope, VerifyOptions, VerifyReport};
use crate::segment::EncodeOptions;
use crate::store::{self, ObjectStore, RetentionMode, StoreError};
use serde::Serialize;
use trigger::{Action, Parsed, Request, RestoreTask, Task};

mod classify;
mod config;
mod metrics;
mod tasks;
pub use classify::*;
pub use config::*;
pub(crate) use metrics::*;
pub use tasks::*;

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
    /// A seal or verify requested by an outage event failed; the report is the message.
    #[error("seal/verify failed: {0}")]
    TriggerFailed(String),
    /// A restore task failed; the message says why and whether a rerun resumes.
    #[error("restore failed: {0}")]
    RestoreFailed(String),
}

/// Everything an invocation needs, built once per container.
#[derive(Debug)]
pub struct Handler {
    ingestor: Ingestor,
    store: Arc<dyn ObjectStore>,
    seal_tables: Vec<String>,
    retention: Option<(RetentionMode, u32)>,
    metrics: bool,
    streams: Option<Arc<dyn StreamApi>>,
    shard_map_every: Option<std::time::Duration>,
    keep_changes_days: Option<u32>,
    refreshed: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The container's AWS configuration (None in tests and the CLI).
    aws: Option<aws_config::SdkConfig>,
    /// DynamoDB client for restore tasks in the function's own region.
    dynamodb: Option<aws_sdk_dynamodb::Client>,
}

impl std::fmt::Debug for dyn StreamApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamApi")
    }
}

/// What a handled event produced.
#[derive(Debug)]
pub enum Outcome {
    /// A stream batch: the response for Lambda and the report behind it.
    Stream(DynamoDbEventResponse, IngestReport),
    /// An outage event: what was sealed and verified.
    Trigger(TriggerReport),
    /// On-failure messages: the SQS response and what was recorded.
    OnFailure(serde_json::Value, crate::lambda::onfailure::OnFailureReport),
    /// A restore task's progress or result.
    Restore(RestoreOutcome),
    /// A distributed restore step's or a checkpoint task's answer.
    Task(serde_json::Value),
}

impl Handler {
    /// Opens the stores named by the configuration.
    pub async fn new(config: &Config) -> Result<Handler, LambdaError> {
        // One AWS configuration (credentials chain, region) for every client of the container.
        let aws = crate::aws::config::load().await;
        let target = store::open_with(&config.target, Some(&aws), store::Role::Target).await?;
        let mut handler = Handler::assemble(target, config, Some(&aws)).await?;
        handler.dynamodb = Some(aws_sdk_dynamodb::Client::new(&aws));
        handler.aws = Some(aws.clone());
        Ok(if config.shard_map_every.is_some() {
            handler.with_streams(Arc::new(SdkStreams(aws_sdk_dynamodbstreams::Client::new(
                &aws,
            ))))
        } else {
            handler
        })
    }

    /// Lets the handler keep the stream's shard map in the backup (DescribeStream at most every
    /// `STREAMSEAL_SHARD_MAP_MINUTES`), so a seal during a regional outage can attribute
    /// segments to shards without the stream API.
    pub fn with_streams(mut self, streams: Arc<dyn StreamApi>) -> Handler {
        self.streams = Some(streams);
        self
    }

    /// Refreshes the shard map of `arn` if it is due. Best effort: a failure is logged and
    /// never fails the batch (capture matters more than the map).
    async fn refresh_shard_map(&self, table: &str, arn: &str) {
        let (Some(streams), Some(every)) = (&self.streams, self.shard_map_every) else {
            return;
        };
        let due = {
            let Ok(mut seen) = self.refreshed.lock() else {
                return;
            };
            let due = seen.get(arn).is_none_or(|t| t.elapsed() >= every);
            if due {
                seen.insert(arn.to_owned(), std::time::Instant::now());
            }
            due
        };
        if !due {
            return;
        }
        // Bounded: a slow or failing stream API must not hold up the batch.
        let result =
            match tokio::time::timeout(std::time::Duration::from_secs(2), streams.describe(arn))
                .await
            {
                Ok(Ok((shards, key))) => {
                    let definition = self.describe_table(table).await;
                    save_shard_map(
                        self.store.as_ref(),
                        table,
                        arn,
                        &shards,
                        key.as_ref(),
                        definition.as_ref(),
                    )
                    .await
                    .map_err(|e| e.to_string())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("DescribeStream took longer than 2 s".to_owned()),
            };
        if let Err(e) = result {
            // Not retried before the interval passes: a missing permission or an unreachable
            // API must not add latency to every batch.
            tracing::warn!(table, stream = arn, error = %e, "could not refresh the shard map; will retry after the refresh interval");
        }
    }

    /// The table's definition, for the shard map. Best effort and bounded, like the map: a
    /// missing permission or a slow API leaves the key roles alone in the map.
    async fn describe_table(
        &self,
        table: &str,
    ) -> Option<crate::model::definition::TableDefinition> {
        let client = self.dynamodb.as_ref()?;
        match tokio::time::timeout(
            std::time::Duration::from_secs(2),
            crate::aws::dynamodb::describe_definition(client, table),
        )
        .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(table, error = %e, "could not describe the table; the backup keeps its key roles only");
                None
            }
            Err(_) => {
                tracing::warn!(
                    table,
                    "DescribeTable took longer than 2 s; the backup keeps its key roles only"
                );
                None
            }
        }
    }

    /// A handler writing to an already opened store (tests, the CLI, the demo).
    pub async fn with_store(
        target: Arc<dyn ObjectStore>,
        config: &Config,
    ) -> Result<Handler, LambdaError> {
        Handler::assemble(target, config, None).await
    }

    async fn assemble(
        target: Arc<dyn ObjectStore>,
        config: &Config,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Handler, LambdaError> {
        let schemas = match &config.schemas {
            // Schema files may live in another region than the backup: never the target's
            // region, their own (`?region=`, or discovered).
            Some(url) => SchemaSource::Store(store::open_with(url, aws, store::Role::Other).await?),
            None => SchemaSource::None,
        };
        Ok(Handler {
            ingestor: Ingestor::new(target.clone(), schemas, config.options),
            store: target,
            seal_tables: config.seal_tables.clone(),
            retention: config.retention,
            metrics: true,
            streams: None,
            shard_map_every: config.shard_map_every,
            keep_changes_days: config.keep_changes_days,
            refreshed: Default::default(),
            aws: None,
            dynamodb: None,
        })
    }

    /// The DynamoDB client restore tasks use (tests point it at an emulator).
    pub fn with_dynamodb(mut self, client: aws_sdk_dynamodb::Client) -> Handler {
        self.dynamodb = Some(client);
        self
    }

    /// Stops [`serve`] from printing the CloudWatch metrics line (in-process use such as the
    /// demo, where stdout is the user's terminal).
    pub(crate) fn without_metrics(mut self) -> Handler {
        self.metrics = false;
        self
    }

    /// Handles one invocation payload.
    pub async fn handle(&self, payload: &RawValue) -> Result<Outcome, LambdaError> {
        // The shape first: stream batches (the hot path) are recognised in one pass and go
        // straight to the capture path; only payloads without `Records` are tried as outage
        // events and tasks.
        match classify(payload) {
            EventShape::DynamoDbStream => {
                let report = self.ingestor.ingest_event(payload.get()).await?;
                if let (Some(table), Some(arn)) = (&report.table, &report.stream_arn) {
                    self.refresh_shard_map(table, arn).await;
                }
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
            EventShape::OnFailureQueue => {
                let report =
                    crate::lambda::onfailure::record_gaps(self.store.as_ref(), payload.get()).await;
                for (table, key) in &report.gaps {
                    tracing::error!(table, gap = %key, "the event source mapping discarded stream records; recorded as a gap (verify fails until the table is captured afresh, see docs/runbook.md)");
                }
                for (id, why) in &report.failed {
                    tracing::error!(message_id = %id, error = %why, "on-failure message not recorded");
                }
                if report.failed.iter().any(|(id, _)| id.is_empty()) {
                    return Err(LambdaError::Unsupported(report.failed[0].1.clone()));
                }
                let failures: Vec<serde_json::Value> = report
                    .failed
                    .iter()
                    .map(|(id, _)| serde_json::json!({ "itemIdentifier": id }))
                    .collect();
                let response = serde_json::json!({ "batchItemFailures": failures });
                Ok(Outcome::OnFailure(response, report))
            }
            EventShape::Other(what) => {
                match trigger::parse(payload) {
                    Parsed::NotATrigger => Err(LambdaError::Unsupported(what)),
                    Parsed::Invalid(why) => Err(LambdaError::Unsupported(why)),
                    Parsed::Ignore { trigger, why } => Ok(Outcome::Trigger(TriggerReport {
                        action: "ignore".into(),
                        trigger: trigger.into(),
                        reason: why,
                        status: Status::Ok,
                        ok: true,
                        tables: vec![],
                        report_key: String::new(),
                    })),
                    Parsed::Run(request) => self.run_trigger(request).await,
                    // Boxed: the restore future is deep, and the runtime's own future nests it further.
                    Parsed::Restore(task) => {
                        Box::pin(self.run_restore(task)).await.map(Outcome::Restore)
                    }
                    Parsed::Task(task) => Box::pin(self.run_task(task)).await.map(Outcome::Task),
                }
            }
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
            if handler.metrics {
                println!(
                    "{}",
                    metrics_line(&report, chrono::Utc::now().timestamp_millis())
                );
            }
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
        Outcome::Trigger(report) => {
            for t in &report.tables {
                tracing::info!(
                    request_id = %event.context.request_id,
                    trigger = %report.trigger,
                    table = %t.table,
                    snapshot = t.snapshot_id.as_deref().unwrap_or(""),
                    new_rows = t.new_rows,
                    lag_ms = t.lag_ms.unwrap_or(-1),
                    status = t.status.map_or("error", Status::as_str),
                    "outage event handled"
                );
            }
            Ok(report.reply())
        }
        Outcome::OnFailure(response, report) => {
            tracing::info!(
                request_id = %event.context.request_id,
                gaps = report.gaps.len(),
                failed = report.failed.len(),
                "on-failure messages handled"
            );
            Ok(response)
        }
        Outcome::Task(answer) => {
            tracing::info!(request_id = %event.context.request_id, "task handled");
            Ok(answer)
        }
        Outcome::Restore(outcome) => {
            tracing::info!(
                request_id = %event.context.request_id,
                table = %outcome.table,
                target = %outcome.target_table,
                complete = outcome.complete,
                items = outcome.items,
                "restore task handled"
            );
            Ok(outcome.reply())
        }
    }
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
        // Other keys first, an empty array, a first record without eventSource, not an array.
        assert_eq!(
            classify(&raw(
                r#"{"x":[1,{"y":2}],"Records":[{"eventSource":"aws:sqs","body":"{}"},{}]}"#
            )),
            EventShape::OnFailureQueue
        );
        assert_eq!(
            classify(&raw(r#"{"Records":[]}"#)),
            EventShape::DynamoDbStream
        );
        assert_eq!(
            classify(&raw(r#"{"Records":[{"dynamodb":{}}]}"#)),
            EventShape::DynamoDbStream
        );
        assert!(matches!(
            classify(&raw(r#"{"Records":null,"source":"s"}"#)),
            EventShape::Other(_)
        ));
        assert!(matches!(classify(&raw(r#"[1]"#)), EventShape::Other(_)));
        assert!(matches!(
            classify(&raw(r#"{"Records":[{"eventSource":"weird at line 1"}]}"#)),
            EventShape::Other(m) if m.contains("weird at line 1")
        ));
        assert_eq!(
            classify(&raw(r#"{"Records":[{"eventSource":"aws:dynamodb"}]}"#)),
            EventShape::DynamoDbStream
        );
        assert_eq!(
            classify(&raw(r#"{"Records":[{"eventSource":"aws:sqs"}]}"#)),
            EventShape::OnFailureQueue
        );
        assert!(matches!(
            classify(&raw(r#"{"Records":[{"eventSource":"aws:kinesis"}]}"#)),
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

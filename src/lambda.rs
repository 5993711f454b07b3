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
//! [`crate::onfailure`]): each becomes a gap entry in the table's log, and the answer is an SQS
//! `{"batchItemFailures": [{"itemIdentifier": messageId}]}` naming messages that could not be
//! recorded (the queue's mapping must enable `ReportBatchItemFailures` too).
//!
//! A Step Functions restore task (`{"action": "restore", ...}`, see
//! [`crate::trigger::RestoreTask`]) restores a snapshot into a DynamoDB table for at most its
//! time budget and answers `{"complete": false}` when the state machine must call again; a
//! drill's completed restore prints the `RestoreDrillRtoSeconds` and `RestoreDrillRpoSeconds`
//! metrics.
//!
//! Outage events (see [`crate::trigger`]) seal the named or configured tables, verify each new
//! snapshot (quick, over the segments it sealed; deep on request) and return a report per
//! table: snapshot id, watermark, rows, bytes, verify result, and the lag between the newest
//! sealed change and now. A failed seal or verify fails the invocation, with the report in the
//! error message, so a Step Functions `Catch` or an alarm on `Errors` sees it.

use std::sync::Arc;

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_json::value::RawValue;

use crate::aws::tail::{SdkStreams, StreamApi, save_shard_map};
use crate::findings::{Finding, Status};
use crate::ingest::{
    BadRecordPolicy, IngestError, IngestOptions, IngestReport, Ingestor, SchemaSource,
};
use crate::seal::{self, SealOptions};
use crate::segment::EncodeOptions;
use crate::store::{self, ObjectStore, RetentionMode, StoreError};
use crate::trigger::{self, Action, Parsed, Request, RestoreTask};
use crate::verify::{self, Mode, Scope, VerifyOptions, VerifyReport};
use serde::Serialize;

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

/// Every environment variable [`Config`] reads (templates and docs are checked against it).
pub const CONFIG_VARIABLES: &[&str] = &[
    "STREAMSEAL_TARGET",
    "STREAMSEAL_SCHEMAS",
    "STREAMSEAL_ENCODE_THREADS",
    "STREAMSEAL_ZSTD_LEVEL",
    "STREAMSEAL_SEAL_TABLES",
    "STREAMSEAL_RETENTION_DAYS",
    "STREAMSEAL_RETENTION_MODE",
    "STREAMSEAL_SHARD_MAP_MINUTES",
];

/// Settings read from the environment once per container.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STREAMSEAL_TARGET`.
    pub target: String,
    /// `STREAMSEAL_SCHEMAS`.
    pub schemas: Option<String>,
    /// Ingest tuning.
    pub options: IngestOptions,
    /// `STREAMSEAL_SEAL_TABLES`.
    pub seal_tables: Vec<String>,
    /// `STREAMSEAL_RETENTION_DAYS` and `STREAMSEAL_RETENTION_MODE`.
    pub retention: Option<(RetentionMode, u32)>,
    /// `STREAMSEAL_SHARD_MAP_MINUTES` (0 turns the shard map off).
    pub shard_map_every: Option<std::time::Duration>,
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
        let seal_tables: Vec<String> = get("STREAMSEAL_SEAL_TABLES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        for t in &seal_tables {
            crate::change::validate_table_name(t).map_err(|e| {
                LambdaError::Config(format!("STREAMSEAL_SEAL_TABLES: table {t:?}: {e}"))
            })?;
        }
        let retention = match get("STREAMSEAL_RETENTION_DAYS").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => {
                let days = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=36_500).contains(d))
                    .ok_or_else(|| {
                        LambdaError::Config(format!(
                            "STREAMSEAL_RETENTION_DAYS={v:?} is not a number of days from 1 to 36500"
                        ))
                    })?;
                let mode = match get("STREAMSEAL_RETENTION_MODE").as_deref().map(str::trim) {
                    None | Some("") | Some("compliance") | Some("COMPLIANCE") => {
                        RetentionMode::Compliance
                    }
                    Some("governance") | Some("GOVERNANCE") => RetentionMode::Governance,
                    Some(other) => {
                        return Err(LambdaError::Config(format!(
                            "STREAMSEAL_RETENTION_MODE={other:?} is not compliance or governance"
                        )));
                    }
                };
                Some((mode, days))
            }
        };
        let shard_map_every = match get("STREAMSEAL_SHARD_MAP_MINUTES")
            .filter(|v| !v.trim().is_empty())
        {
            None => Some(std::time::Duration::from_secs(300)),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(m) if m <= 1440 => Some(std::time::Duration::from_secs(m * 60)),
                _ => {
                    return Err(LambdaError::Config(format!(
                        "STREAMSEAL_SHARD_MAP_MINUTES={v:?} is not a number of minutes from 0 (off) to 1440"
                    )));
                }
            },
        };
        Ok(Config {
            shard_map_every,
            seal_tables,
            retention,
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
    store: Arc<dyn ObjectStore>,
    seal_tables: Vec<String>,
    retention: Option<(RetentionMode, u32)>,
    metrics: bool,
    streams: Option<Arc<dyn StreamApi>>,
    shard_map_every: Option<std::time::Duration>,
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
    OnFailure(serde_json::Value, crate::onfailure::OnFailureReport),
    /// A restore task's progress or result.
    Restore(RestoreOutcome),
}

/// The answer to a restore task.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    /// Source table.
    pub table: String,
    /// Snapshot restored.
    pub snapshot_id: String,
    /// Target table.
    pub target_table: String,
    /// Target region, when not the function's own.
    pub region: Option<String>,
    /// False: call again (the restore resumes from its checkpoint).
    pub complete: bool,
    /// Items written (or skipped as already written) so far.
    pub items: u64,
    /// Whether the target's scan matched the snapshot (when complete).
    pub matches: bool,
    /// Keys left out because their latest change is a quarantined record (named, with where
    /// the record is kept).
    pub quarantined: Vec<crate::restore::QuarantinedKey>,
    /// This invocation's wall time, ms.
    pub elapsed_ms: u64,
    /// Recovery time: from `started_at` to the verified end of the restore, ms.
    pub rto_ms: Option<i64>,
    /// Recovery point: as given by the task (age of the newest sealed change at the seal), ms.
    pub rpo_ms: Option<i64>,
    /// A drill.
    pub drill: bool,
}

/// The answer to an outage event.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerReport {
    /// `seal`, `verify`, or `ignore`.
    pub action: String,
    /// Which kind of event.
    pub trigger: String,
    /// The reason recorded in manifests (or why the event was ignored).
    pub reason: String,
    /// The worst verify status among the tables (`ok`, `incomplete`, `corrupt`); a seal or
    /// verify that could not run counts as `corrupt`.
    pub status: Status,
    /// True when every table sealed and verified with nothing missing or altered (`ok` or
    /// `incomplete`: known, recorded gaps do not stop a recovery).
    pub ok: bool,
    /// One entry per table.
    pub tables: Vec<TableOutcome>,
}

/// What happened to one table.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TableOutcome {
    /// Table.
    pub table: String,
    /// Snapshot sealed or verified.
    pub snapshot_id: Option<String>,
    /// Its manifest key.
    pub manifest_key: Option<String>,
    /// Newest sealed change (RFC 3339).
    pub newest_change: Option<String>,
    /// Consistent-through instant (RFC 3339).
    pub consistent_through: Option<String>,
    /// Last sequence number per known shard.
    pub shards: std::collections::BTreeMap<String, String>,
    /// Rows sealed by this snapshot.
    pub new_rows: u64,
    /// Segments sealed by this snapshot.
    pub new_segments: u64,
    /// Their bytes.
    pub new_bytes: u64,
    /// Rows in the whole chain.
    pub total_rows: u64,
    /// Live items.
    pub item_count: i64,
    /// Lag between the newest sealed change and the seal, ms.
    pub lag_ms: Option<i64>,
    /// Seal time, ms.
    pub seal_ms: Option<u64>,
    /// The verify's status.
    pub status: Option<Status>,
    /// Findings the seal added to the ledger, and decisions it recorded.
    pub sealed_findings: Vec<Finding>,
    /// Findings open in the ledger after the seal.
    pub open_findings: u64,
    /// Verify result.
    pub verify: Option<VerifyReport>,
    /// The error, if the seal or verify could not run.
    pub error: Option<String>,
}

impl Handler {
    /// Opens the stores named by the configuration.
    pub async fn new(config: &Config) -> Result<Handler, LambdaError> {
        // One AWS configuration (credentials chain, region) for every client of the container.
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let target = store::open_with(&config.target, Some(&aws)).await?;
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
                    save_shard_map(self.store.as_ref(), table, arn, &shards, key.as_ref()).await
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err("DescribeStream took longer than 2 s".into()),
            };
        if let Err(e) = result {
            // Not retried before the interval passes: a missing permission or an unreachable
            // API must not add latency to every batch.
            tracing::warn!(table, stream = arn, error = %e, "could not refresh the shard map; will retry after the refresh interval");
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
            Some(url) => SchemaSource::Store(store::open_with(url, aws).await?),
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
    pub fn without_metrics(mut self) -> Handler {
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
                    crate::onfailure::record_gaps(self.store.as_ref(), payload.get()).await;
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
                    })),
                    Parsed::Run(request) => self.run_trigger(request).await,
                    // Boxed: the restore future is deep, and the runtime's own future nests it further.
                    Parsed::Restore(task) => {
                        Box::pin(self.run_restore(task)).await.map(Outcome::Restore)
                    }
                }
            }
        }
    }
}

impl Handler {
    async fn run_restore(&self, task: RestoreTask) -> Result<RestoreOutcome, LambdaError> {
        let client = match (&task.region, &self.aws) {
            (Some(region), Some(aws)) => {
                let conf = aws_sdk_dynamodb::config::Builder::from(aws)
                    .region(aws_sdk_dynamodb::config::Region::new(region.clone()))
                    .build();
                aws_sdk_dynamodb::Client::from_conf(conf)
            }
            _ => self.dynamodb.clone().ok_or_else(|| {
                LambdaError::Config("restore tasks need a DynamoDB client".into())
            })?,
        };
        let point = crate::restore::Point::Snapshot(task.snapshot.clone());
        let request = crate::aws::restore::Request {
            table: task.table.clone(),
            point,
            to: crate::aws::restore::Target::Dynamo(task.target_table.clone()),
            create_table: true,
            materialize: crate::restore::MaterializeOptions {
                // Lambda's /tmp holds the spill; fine partitions keep each checkpoint step short.
                min_partitions: 64,
                ..Default::default()
            },
            workers: 8,
            scan_segments: 8,
            max_attempts: 15,
            deadline: Some(
                std::time::Instant::now() + std::time::Duration::from_secs(task.budget_seconds),
            ),
            strict: false,
        };
        tracing::info!(table = %task.table, snapshot = %task.snapshot, target = %task.target_table, region = task.region.as_deref().unwrap_or("(own)"), drill = task.drill, reason = task.reason.as_deref().unwrap_or(""), "restore task");
        let report = crate::aws::restore::run(
            &self.store,
            Some(&client),
            &request,
            &crate::restore::Progress::default(),
        )
        .await
        .map_err(|e| {
            LambdaError::RestoreFailed(format!(
                "{} snapshot {} into {}: {e} (a rerun resumes from the checkpoint)",
                task.table, task.snapshot, task.target_table
            ))
        })?;
        let now = chrono::Utc::now();
        let rto_ms = match (&task.started_at, report.complete) {
            (Some(t), true) => chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| (now - t.with_timezone(&chrono::Utc)).num_milliseconds()),
            _ => None,
        };
        let outcome = RestoreOutcome {
            table: task.table.clone(),
            snapshot_id: report.snapshot_id.clone(),
            target_table: task.target_table.clone(),
            region: task.region.clone(),
            complete: report.complete,
            items: report.items,
            matches: report.matches,
            quarantined: report.quarantined.clone(),
            elapsed_ms: report.elapsed_ms,
            rto_ms,
            rpo_ms: task.rpo_ms,
            drill: task.drill,
        };
        if report.complete && !report.matches {
            return Err(LambdaError::RestoreFailed(format!(
                "{} snapshot {} into {}: the table does not match the snapshot ({} items, expected {}; differing keys: {})",
                task.table,
                report.snapshot_id,
                task.target_table,
                report.target_items,
                report.items,
                report.differing_keys.join(", ")
            )));
        }
        if report.complete && task.drill && self.metrics {
            println!("{}", drill_metrics_line(&outcome, now.timestamp_millis()));
        }
        Ok(outcome)
    }

    async fn run_trigger(&self, request: Request) -> Result<Outcome, LambdaError> {
        let tables =
            trigger::resolve_tables(&request, &self.seal_tables).map_err(LambdaError::Config)?;
        let mut report = TriggerReport {
            action: match request.action {
                Action::Seal => "seal".into(),
                Action::Verify => "verify".into(),
            },
            trigger: request.trigger.into(),
            reason: request.reason.clone(),
            status: Status::Ok,
            ok: true,
            tables: vec![],
        };
        for table in tables {
            let outcome = self.seal_and_verify(&request, &table).await;
            let status = match (&outcome.error, outcome.status) {
                (None, Some(s)) => s,
                _ => Status::Corrupt,
            };
            if self.metrics
                && let Some(v) = &outcome.verify
            {
                println!(
                    "{}",
                    findings_metrics_line(&table, v, chrono::Utc::now().timestamp_millis())
                );
            }
            report.status = report.status.max(status);
            report.ok &= status != Status::Corrupt;
            report.tables.push(outcome);
        }
        if report.ok {
            Ok(Outcome::Trigger(report))
        } else {
            Err(LambdaError::TriggerFailed(
                serde_json::to_string(&report).unwrap_or_default(),
            ))
        }
    }

    async fn seal_and_verify(&self, request: &Request, table: &str) -> TableOutcome {
        let mut out = TableOutcome {
            table: table.to_owned(),
            ..Default::default()
        };
        let mut which = request.snapshot.clone().unwrap_or_else(|| "latest".into());
        if request.action == Action::Seal {
            // The schema file's [key], recorded so a restore can create the table.
            let key_schema = match self.ingestor.schema_for(table).await {
                Ok(s) => s.key.clone(),
                Err(e) => {
                    tracing::warn!(table, error = %e, "schema file unusable; sealing without a key schema");
                    None
                }
            };
            let options = SealOptions {
                reason: request.reason.clone(),
                retention: self.retention,
                key_schema,
                ..Default::default()
            };
            match seal::seal(&self.store, table, &options).await {
                Err(e) => {
                    out.error = Some(format!("seal failed: {e}"));
                    return out;
                }
                Ok(r) => {
                    let m = &r.manifest;
                    let fmt = |ms: Option<i64>| {
                        ms.and_then(chrono::DateTime::from_timestamp_millis)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    };
                    out.snapshot_id = Some(m.snapshot_id.clone());
                    out.manifest_key = Some(r.manifest_key.clone());
                    out.newest_change = fmt(m.watermark.newest_change_ms);
                    out.consistent_through = fmt(m.watermark.consistent_through_ms);
                    out.shards = m.watermark.shards.clone();
                    out.new_rows = m.files.rows;
                    out.new_segments = m.files.segments;
                    out.new_bytes = m.files.segment_bytes;
                    out.total_rows = m.totals.rows;
                    out.item_count = m.item_count;
                    out.lag_ms = r.lag_ms;
                    out.seal_ms = Some(r.elapsed_ms);
                    out.sealed_findings = r.findings.clone();
                    out.open_findings = r.open_findings;
                    which = m.snapshot_id.clone();
                }
            }
        }
        let options = VerifyOptions {
            mode: if request.deep {
                Mode::Deep
            } else {
                Mode::Quick
            },
            // After a seal, its own segments (O(new)); a verify request checks the whole chain.
            scope: if request.action == Action::Seal {
                Scope::Snapshot
            } else {
                Scope::Chain
            },
            ..Default::default()
        };
        match verify::verify(&self.store, table, &which, options).await {
            Ok(v) => {
                out.snapshot_id.get_or_insert(v.snapshot_id.clone());
                out.status = Some(v.status);
                out.verify = Some(v);
            }
            Err(e) => out.error = Some(format!("verify could not run: {e}")),
        }
        out
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
            serde_json::to_value(report).map_err(|e| LambdaError::Response(e.to_string()))
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
        Outcome::Restore(outcome) => {
            tracing::info!(
                request_id = %event.context.request_id,
                table = %outcome.table,
                target = %outcome.target_table,
                complete = outcome.complete,
                items = outcome.items,
                "restore task handled"
            );
            serde_json::to_value(outcome).map_err(|e| LambdaError::Response(e.to_string()))
        }
    }
}

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
    let counts = crate::findings::counts(&report.findings);
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

/// The kinds of payload the function recognises.
#[derive(Debug, PartialEq, Eq)]
pub enum EventShape {
    /// `{"Records": [{"eventSource": "aws:dynamodb", ...}]}`.
    DynamoDbStream,
    /// `{"Records": [{"eventSource": "aws:sqs", ...}]}`: the on-failure queue's messages.
    OnFailureQueue,
    /// Anything else, described.
    Other(String),
}

/// Recognises an event by its shape, reading only the top-level fields.
pub fn classify(payload: &RawValue) -> EventShape {
    // A stream batch is megabytes: read only up to its first record's eventSource.
    if let Some(source) = first_record_source(payload.get()) {
        return match source.as_deref() {
            Some("aws:dynamodb") | None => EventShape::DynamoDbStream,
            Some("aws:sqs") => EventShape::OnFailureQueue,
            Some(other) => EventShape::Other(format!(
                "records from {other:?}; this function reads DynamoDB streams"
            )),
        };
    }
    #[derive(serde::Deserialize)]
    struct Top {
        #[serde(rename = "detail-type", default)]
        detail_type: Option<String>,
        #[serde(default)]
        source: Option<String>,
    }
    match serde_json::from_str::<Top>(payload.get()) {
        Ok(Top {
            detail_type,
            source,
        }) => EventShape::Other(format!(
            "no Records array (source {:?}, detail-type {:?})",
            source.unwrap_or_default(),
            detail_type.unwrap_or_default()
        )),
        Err(e) => EventShape::Other(format!("payload is not a JSON object: {e}")),
    }
}

/// `Some(eventSource of the first record)` when `text` is an object with a `Records` array
/// (`Some(None)` for an empty array or a record without one); `None` otherwise. Stops parsing
/// at the first record: serde has no early exit, so the record seed ends the parse with an
/// error that carries the answer.
fn first_record_source(text: &str) -> Option<Option<String>> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    const FOUND: &str = "\u{0}first-record-source:";
    struct TopSeed;
    impl<'de> Visitor<'de> for TopSeed {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "Records" {
                    map.next_value_seed(FirstSeed)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    struct FirstSeed;
    impl<'de> DeserializeSeed<'de> for FirstSeed {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for FirstSeed {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a Records array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            #[derive(serde::Deserialize)]
            struct Rec {
                #[serde(rename = "eventSource", default)]
                event_source: Option<String>,
            }
            let source = seq
                .next_element::<Rec>()
                .ok()
                .flatten()
                .and_then(|r| r.event_source);
            Err(de::Error::custom(format!(
                "{FOUND}{}",
                source.map(|s| format!("={s}")).unwrap_or_default()
            )))
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    match de::Deserializer::deserialize_map(&mut d, TopSeed) {
        Ok(()) => None,
        Err(e) => {
            let message = e.to_string();
            let found = message.strip_prefix(FOUND)?;
            // serde_json appends " at line L column C" to custom errors.
            let found = found.rsplit_once(" at line ").map_or(found, |(f, _)| f);
            Some(found.strip_prefix('=').map(str::to_owned))
        }
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

//! `streamseal tail`: capture a table's stream through the DynamoDB Streams API, without Lambda.
//!
//! ```text
//! DescribeTable ──▶ stream ARN ──▶ DescribeStream (all pages) ──▶ shard map (kept in the store)
//!   for each shard, parents before children:
//!     checkpoint <table>/checkpoints/<shard>.json ──▶ AFTER_SEQUENCE_NUMBER (or TRIM_HORIZON)
//!     GetRecords ──▶ Lambda-shaped event ──▶ Ingestor (same code as the Lambda, shard id kept)
//!     ──▶ checkpoint the last sequence number (only after its segment is in the log)
//!     a shard whose iterator ends is closed: marked finished, its children may start
//! ```
//!
//! A restart resumes from the checkpoints. A crash after a segment is written but before its
//! checkpoint re-reads those records; the segment is either the same object (same records) or a
//! new one whose records the seal resolves as duplicates, so nothing is lost or doubled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::aws::AwsError;
use crate::capture::{IngestError, Ingestor};
use crate::model::layout::TableLayout;
pub use crate::model::shards::{
    KeyRoles, ShardInfo, ShardMap, load_shard_maps, parents_first, save_shard_map,
};
use crate::progress::Progress;
use crate::store::{ObjectStore, PutMode, StoreError};

/// Why a tail run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A DynamoDB or DynamoDB Streams call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The backup store failed (checkpoints, shard map).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The table has no stream to tail.
    #[error("table {table} has no stream; enable one (NEW_AND_OLD_IMAGES)")]
    NoStream {
        /// The table.
        table: String,
    },
    /// A shard's checkpoint is not one.
    #[error("checkpoint {key} is unreadable: {source}")]
    Checkpoint {
        /// Its key.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Records after the checkpoint are gone from the stream.
    #[error(
        "shard {shard}: records after the checkpoint {after:?} were trimmed from the stream (older than 24 hours): they are lost to the capture; record the gap and bootstrap again"
    )]
    Trimmed {
        /// The shard.
        shard: String,
        /// The checkpoint.
        after: Option<String>,
    },
    /// Records could not be read into the capture path.
    #[error("ingesting records of shard {shard}: {source}")]
    Ingest {
        /// The shard.
        shard: String,
        /// The capture's error.
        #[source]
        source: IngestError,
    },
    /// Records could not be written; the checkpoint did not move.
    #[error(
        "writing records of shard {shard} failed; the checkpoint stays at {after:?}, rerun to resume: {problem}"
    )]
    Write {
        /// The shard.
        shard: String,
        /// The checkpoint.
        after: Option<String>,
        /// What failed.
        problem: String,
    },
}

/// A page of GetRecords.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    /// Records, in order.
    pub records: Vec<Record>,
    /// The next iterator; `None` when the shard is closed and fully read.
    pub next: Option<String>,
}

/// Why a stream call failed.
#[derive(Debug)]
pub enum StreamApiError {
    /// The iterator expired (they live 15 minutes): get a new one.
    Expired,
    /// The records asked for were trimmed (older than 24 hours).
    Trimmed,
    /// Anything else (already retried by the SDK's policy).
    Other(AwsError),
}

/// The DynamoDB Streams calls `tail` makes: the real API ([`SdkStreams`]), or a simulation in
/// tests (shard splits, closed shards), which the emulator cannot produce.
#[async_trait::async_trait]
pub trait StreamApi: Send + Sync {
    /// Every shard of the stream (all DescribeStream pages).
    async fn shards(&self, arn: &str) -> Result<Vec<ShardInfo>, AwsError>;
    /// An iterator after `after`, or at the trim horizon.
    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        after: Option<&str>,
    ) -> Result<Option<String>, AwsError>;
    /// One GetRecords call.
    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, StreamApiError>;
    /// Every shard and the table's key attribute names by role (DescribeStream's
    /// `KeySchema`, when the API reports it), in one pass.
    async fn describe(&self, arn: &str) -> Result<(Vec<ShardInfo>, Option<KeyRoles>), AwsError> {
        Ok((self.shards(arn).await?, None))
    }
}

/// [`StreamApi`] over the SDK client.
#[derive(Debug, Clone)]
pub struct SdkStreams(pub StreamsClient);

#[async_trait::async_trait]
impl StreamApi for SdkStreams {
    async fn shards(&self, arn: &str) -> Result<Vec<ShardInfo>, AwsError> {
        Ok(describe_stream(&self.0, arn).await?.0)
    }

    async fn describe(&self, arn: &str) -> Result<(Vec<ShardInfo>, Option<KeyRoles>), AwsError> {
        describe_stream(&self.0, arn).await
    }

    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        after: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        new_iterator(&self.0, arn, shard, after).await
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, StreamApiError> {
        match self
            .0
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
        {
            Ok(out) => Ok(RecordsPage {
                records: out.records().to_vec(),
                next: out.next_shard_iterator().map(str::to_owned),
            }),
            Err(e) => {
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_expired_iterator_exception()) {
                    Err(StreamApiError::Expired)
                } else if service.is_some_and(|s| s.is_trimmed_data_access_exception()) {
                    Err(StreamApiError::Trimmed)
                } else {
                    Err(StreamApiError::Other(AwsError::call(
                        "GetRecords",
                        "a shard iterator",
                        e,
                    )))
                }
            }
        }
    }
}

/// The stream ARN of a table (DescribeTable).
pub async fn stream_arn(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<String, TailError> {
    crate::aws::dynamodb::describe(ddb, table)
        .await?
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| TailError::NoStream {
            table: table.to_owned(),
        })
}

/// Options of a tail run.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Exit once no record arrived for this long (drain and stop); `None`: run until stopped.
    pub until_idle: Option<Duration>,
    /// Pause between polls of a caught-up stream.
    pub poll_interval: Duration,
    /// Records per GetRecords call (at most 1,000).
    pub limit: i32,
    /// How often to refresh the shard map copy in the store.
    pub shard_map_every: Duration,
    /// Counts records captured, for a caller showing progress.
    pub progress: Option<Arc<Progress>>,
    /// The table's definition, kept with the shard map (see
    /// [`crate::model::shards::ShardMap::definition`]).
    pub definition: Option<crate::model::definition::TableDefinition>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            until_idle: None,
            poll_interval: Duration::from_secs(1),
            limit: 1000,
            shard_map_every: Duration::from_secs(300),
            progress: None,
            definition: None,
        }
    }
}

/// Per-shard progress, in the backup store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Shard id.
    pub shard_id: String,
    /// Last sequence number durably captured.
    pub last_sequence: Option<String>,
    /// The shard ended and every record of it is captured.
    pub finished: bool,
}

/// What a tail run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TailReport {
    /// Records captured.
    pub records: u64,
    /// Segments written.
    pub segments: u64,
    /// Shards seen.
    pub shards: usize,
    /// Shards finished.
    pub finished_shards: usize,
    /// Wall time.
    pub elapsed_ms: u64,
}

async fn load_checkpoint(
    store: &dyn ObjectStore,
    table: &str,
    shard: &str,
) -> Result<Checkpoint, TailError> {
    let key = TableLayout::new(table).tail_checkpoint_key(shard);
    match store.get(&key).await {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| TailError::Checkpoint { key, source }),
        Err(StoreError::NotFound { .. }) => Ok(Checkpoint {
            shard_id: shard.to_owned(),
            ..Default::default()
        }),
        Err(e) => Err(e.into()),
    }
}

async fn save_checkpoint(
    store: &dyn ObjectStore,
    table: &str,
    c: &Checkpoint,
) -> Result<(), TailError> {
    // A struct of strings always serializes.
    let body = serde_json::to_vec(c).unwrap_or_default();
    store
        .put(
            &TableLayout::new(table).tail_checkpoint_key(&c.shard_id),
            Bytes::from(body),
            PutMode::Overwrite,
        )
        .await?;
    Ok(())
}

/// Tails `table`'s stream into `ingestor`'s store until idle (or forever).
pub async fn tail(
    arn: &str,
    streams: &dyn StreamApi,
    ingestor: &Ingestor,
    store: &Arc<dyn ObjectStore>,
    table: &str,
    options: &TailOptions,
    report: &mut TailReport,
) -> Result<(), TailError> {
    let started = Instant::now();
    let arn = arn.to_owned();
    let region = arn.split(':').nth(3).unwrap_or("").to_owned();
    let mut last_record = Instant::now();
    let mut last_map: Option<Instant> = None;
    let mut checkpoints: BTreeMap<String, Checkpoint> = BTreeMap::new();
    loop {
        let (described, key) = streams.describe(&arn).await?;
        let shards = parents_first(&described);
        if last_map.is_none_or(|t| t.elapsed() >= options.shard_map_every) {
            save_shard_map(
                store.as_ref(),
                table,
                &arn,
                &shards,
                key.as_ref(),
                options.definition.as_ref(),
            )
            .await?;
            last_map = Some(Instant::now());
        }
        report.shards = shards.len();
        let mut got_any = false;
        for shard in &shards {
            if !checkpoints.contains_key(&shard.shard_id) {
                let c = load_checkpoint(store.as_ref(), table, &shard.shard_id).await?;
                checkpoints.insert(shard.shard_id.clone(), c);
            }
            let parent_done = match &shard.parent_shard_id {
                None => true,
                Some(p) => match checkpoints.get(p) {
                    Some(c) => c.finished,
                    // A parent no longer in the map was trimmed: nothing left to read.
                    None => !shards.iter().any(|s| &s.shard_id == p),
                },
            };
            let Some(cp) = checkpoints.get(&shard.shard_id).cloned() else {
                continue;
            };
            if cp.finished || !parent_done {
                continue;
            }
            let (cp, n) = drain_shard(
                streams, ingestor, store, table, &arn, &region, shard, cp, options, report,
            )
            .await?;
            got_any |= n > 0;
            checkpoints.insert(shard.shard_id.clone(), cp);
        }
        report.finished_shards = checkpoints.values().filter(|c| c.finished).count();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        if got_any {
            last_record = Instant::now();
        } else if let Some(idle) = options.until_idle
            && last_record.elapsed() >= idle
        {
            return Ok(());
        }
        if !got_any {
            tokio::time::sleep(options.poll_interval).await;
        }
    }
}

async fn describe_stream(
    streams: &StreamsClient,
    arn: &str,
) -> Result<(Vec<ShardInfo>, Option<KeyRoles>), AwsError> {
    let mut shards = vec![];
    let mut key: Option<KeyRoles> = None;
    let mut start: Option<String> = None;
    loop {
        let out = streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .map_err(|e| AwsError::call("DescribeStream", arn, e))?;
        let Some(d) = out.stream_description() else {
            break;
        };
        if key.is_none() {
            let role = |t: &str| {
                d.key_schema()
                    .iter()
                    .find(|k| k.key_type().as_str() == t)
                    .map(|k| k.attribute_name().to_owned())
            };
            key = role("HASH").map(|partition| KeyRoles {
                partition,
                sort: role("RANGE"),
            });
        }
        for s in d.shards() {
            let Some(id) = s.shard_id() else { continue };
            shards.push(ShardInfo {
                shard_id: id.to_owned(),
                parent_shard_id: s.parent_shard_id().map(str::to_owned),
                starting_sequence: s
                    .sequence_number_range()
                    .and_then(|r| r.starting_sequence_number())
                    .map(str::to_owned),
                ending_sequence: s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .map(str::to_owned),
            });
        }
        match d.last_evaluated_shard_id() {
            Some(id) => start = Some(id.to_owned()),
            None => break,
        }
    }
    Ok((parents_first(&shards), key))
}

/// Reads one shard from its checkpoint until it is caught up or closed.
#[allow(clippy::too_many_arguments)]
async fn drain_shard(
    streams: &dyn StreamApi,
    ingestor: &Ingestor,
    store: &Arc<dyn ObjectStore>,
    table: &str,
    arn: &str,
    region: &str,
    shard: &ShardInfo,
    mut cp: Checkpoint,
    options: &TailOptions,
    report: &mut TailReport,
) -> Result<(Checkpoint, u64), TailError> {
    let mut iterator = streams
        .iterator(arn, &shard.shard_id, cp.last_sequence.as_deref())
        .await?;
    let mut total = 0u64;
    loop {
        let Some(it) = iterator.clone() else {
            // No iterator: the shard is closed and fully read.
            cp.finished = true;
            save_checkpoint(store.as_ref(), table, &cp).await?;
            return Ok((cp, total));
        };
        let out = match streams.records(&it, options.limit.clamp(1, 1000)).await {
            Ok(o) => o,
            Err(StreamApiError::Expired) => {
                // Iterators live 15 minutes; a fresh one from the checkpoint loses nothing.
                iterator = streams
                    .iterator(arn, &shard.shard_id, cp.last_sequence.as_deref())
                    .await?;
                continue;
            }
            Err(StreamApiError::Trimmed) => {
                return Err(TailError::Trimmed {
                    shard: shard.shard_id.clone(),
                    after: cp.last_sequence,
                });
            }
            Err(StreamApiError::Other(e)) => return Err(e.into()),
        };
        let records = &out.records[..];
        if !records.is_empty() {
            let event = lambda_event(records, arn, region)?;
            let r = ingestor
                .ingest_event_from(&event, Some(&shard.shard_id))
                .await
                .map_err(|source| TailError::Ingest {
                    shard: shard.shard_id.clone(),
                    source,
                })?;
            if let Some(problem) = r.error {
                return Err(TailError::Write {
                    shard: shard.shard_id.clone(),
                    after: cp.last_sequence,
                    problem,
                });
            }
            report.segments += r.segments.len() as u64;
            report.records += records.len() as u64;
            crate::progress::tick(options.progress.as_deref(), records.len() as u64, 0);
            total += records.len() as u64;
            // Durable (segment and log entry written): advance the checkpoint.
            cp.last_sequence = records
                .last()
                .and_then(|r| r.dynamodb())
                .and_then(|d| d.sequence_number())
                .map(str::to_owned);
            save_checkpoint(store.as_ref(), table, &cp).await?;
        }
        iterator = out.next.clone();
        if records.is_empty() && iterator.is_some() {
            // Caught up on an open shard.
            return Ok((cp, total));
        }
    }
}

async fn new_iterator(
    streams: &StreamsClient,
    arn: &str,
    shard: &str,
    after: Option<&str>,
) -> Result<Option<String>, AwsError> {
    let mut req = streams.get_shard_iterator().stream_arn(arn).shard_id(shard);
    req = match after {
        Some(seq) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
        None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::call("GetShardIterator", shard, e))?;
    Ok(out.shard_iterator().map(str::to_owned))
}

/// Stream API records → a Lambda DynamoDB event (what the capture path parses).
pub fn lambda_event(records: &[Record], arn: &str, region: &str) -> Result<String, AwsError> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let context = || {
            format!(
                "stream record {}",
                r.dynamodb()
                    .and_then(|d| d.sequence_number())
                    .unwrap_or("(no sequence number)")
            )
        };
        let d = r
            .dynamodb()
            .ok_or_else(|| AwsError::convert(context(), "no dynamodb section"))?;
        let mut dynamodb = serde_json::Map::new();
        if let Some(t) = d.approximate_creation_date_time() {
            let ms = t.to_millis().map_err(|e| AwsError::convert(context(), e))?;
            dynamodb.insert(
                "ApproximateCreationDateTime".into(),
                serde_json::from_str::<Value>(&format!(
                    "{}.{:03}",
                    ms.div_euclid(1000),
                    ms.rem_euclid(1000)
                ))
                .map_err(|e| AwsError::convert(context(), e))?,
            );
        }
        for (name, image) in [
            ("Keys", d.keys()),
            ("NewImage", d.new_image()),
            ("OldImage", d.old_image()),
        ] {
            if let Some(m) = image {
                dynamodb.insert(
                    name.into(),
                    map_json(m).map_err(|e| AwsError::convert(context(), e))?,
                );
            }
        }
        if let Some(s) = d.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(s));
        }
        if let Some(s) = d.size_bytes() {
            dynamodb.insert("SizeBytes".into(), json!(s));
        }
        if let Some(v) = d.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(v.as_str()));
        }
        let mut rec = json!({
            "eventID": r.event_id().unwrap_or_default(),
            "eventName": r.event_name().map(|n| n.as_str()).unwrap_or_default(),
            "eventVersion": r.event_version().unwrap_or("1.1"),
            "eventSource": r.event_source().unwrap_or("aws:dynamodb"),
            "awsRegion": r.aws_region().unwrap_or(region),
            "dynamodb": Value::Object(dynamodb),
            "eventSourceARN": arn,
        });
        if let Some(u) = r.user_identity() {
            rec["userIdentity"] = json!({
                "type": u.r#type().unwrap_or_default(),
                "principalId": u.principal_id().unwrap_or_default(),
            });
        }
        out.push(rec);
    }
    Ok(json!({ "Records": out }).to_string())
}

fn map_json(m: &HashMap<String, AttributeValue>) -> Result<Value, String> {
    m.iter()
        .map(|(k, v)| av_json(v).map(|j| (k.clone(), j)))
        .collect::<Result<serde_json::Map<_, _>, _>>()
        .map(Value::Object)
}

fn av_json(v: &AttributeValue) -> Result<Value, String> {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        json!(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    Ok(match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => json!({"BS": v.iter().map(b64).collect::<Vec<_>>()}),
        AttributeValue::L(v) => json!({"L": v.iter().map(av_json).collect::<Result<Vec<_>, _>>()?}),
        AttributeValue::M(m) => json!({"M": map_json(m)?}),
        other => return Err(format!("unsupported attribute value {other:?}")),
    })
}

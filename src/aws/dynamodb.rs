//! DynamoDB as a restore target and a scan source: item conversion, table creation and checks,
//! batched writes with backoff and checkpoints, parallel scans that compute the state digest.
//!
//! Items travel as canonical DynamoDB JSON text everywhere else in streamseal; this module is
//! the only place that turns them into `AttributeValue`s and back. Numbers stay strings (never
//! f64), binary is base64 in JSON and bytes on the wire, so the conversion is exact both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType as DdbKeyType,
    PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use base64::Engine as _;
use serde_json::Value;

use crate::model::item::{ItemHash, StateDigest};
use crate::model::schema::{KeyAttribute, KeySchema, KeyType};
use crate::ops::restore::{Item, Sink};
use crate::store::{ObjectStore, PutMode};

/// Builds a client from the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn client_from_env() -> Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Client::new(&config)
}

/// Canonical DynamoDB JSON of an item → the SDK's attribute map.
pub fn to_attribute_map(text: &str) -> Result<HashMap<String, AttributeValue>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("item is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("item is not a JSON object".into());
    };
    map.into_iter()
        .map(|(k, v)| to_attribute(&v).map(|a| (k, a)))
        .collect()
}

fn to_attribute(v: &Value) -> Result<AttributeValue, String> {
    let Value::Object(m) = v else {
        return Err(format!("attribute value {v} is not a typed object"));
    };
    let Some((ty, inner)) = m.iter().next().filter(|_| m.len() == 1) else {
        return Err(format!("attribute value {v} must have exactly one type"));
    };
    let s = |x: &Value| {
        x.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{ty} value {x} is not a string"))
    };
    let arr = |x: &Value| {
        x.as_array()
            .cloned()
            .ok_or_else(|| format!("{ty} value {x} is not an array"))
    };
    let b64 = |x: &Value| -> Result<Blob, String> {
        let text = s(x)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Blob::new)
            .map_err(|e| format!("B value is not base64: {e}"))
    };
    Ok(match ty.as_str() {
        "S" => AttributeValue::S(s(inner)?),
        "N" => AttributeValue::N(s(inner)?),
        "B" => AttributeValue::B(b64(inner)?),
        "BOOL" => AttributeValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| format!("BOOL value {inner} is not a boolean"))?,
        ),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(arr(inner)?.iter().map(s).collect::<Result<_, _>>()?),
        "NS" => AttributeValue::Ns(arr(inner)?.iter().map(s).collect::<Result<_, _>>()?),
        "BS" => AttributeValue::Bs(arr(inner)?.iter().map(b64).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            arr(inner)?
                .iter()
                .map(to_attribute)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(
            inner
                .as_object()
                .ok_or_else(|| format!("M value {inner} is not an object"))?
                .iter()
                .map(|(k, v)| to_attribute(v).map(|a| (k.clone(), a)))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown attribute type {other:?}")),
    })
}

/// The SDK's attribute map → DynamoDB JSON (not yet canonical: pass it to
/// [`crate::model::item::canonicalize`] or [`crate::model::item::item_hash`]).
pub fn from_attribute_map(map: &HashMap<String, AttributeValue>) -> Result<String, String> {
    let obj: serde_json::Map<String, Value> = map
        .iter()
        .map(|(k, v)| from_attribute(v).map(|j| (k.clone(), j)))
        .collect::<Result<_, _>>()?;
    serde_json::to_string(&Value::Object(obj)).map_err(|e| e.to_string())
}

fn from_attribute(v: &AttributeValue) -> Result<Value, String> {
    let b64 =
        |b: &Blob| Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()));
    let one = |t: &str, x: Value| {
        let mut m = serde_json::Map::new();
        m.insert(t.to_owned(), x);
        Value::Object(m)
    };
    Ok(match v {
        AttributeValue::S(s) => one("S", Value::String(s.clone())),
        AttributeValue::N(n) => one("N", Value::String(n.clone())),
        AttributeValue::B(b) => one("B", b64(b)),
        AttributeValue::Bool(b) => one("BOOL", Value::Bool(*b)),
        AttributeValue::Null(_) => one("NULL", Value::Bool(true)),
        AttributeValue::Ss(v) => one("SS", v.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(v) => one("NS", v.iter().cloned().map(Value::String).collect()),
        AttributeValue::Bs(v) => one("BS", v.iter().map(b64).collect()),
        AttributeValue::L(v) => one("L", v.iter().map(from_attribute).collect::<Result<_, _>>()?),
        AttributeValue::M(m) => one(
            "M",
            Value::Object(
                m.iter()
                    .map(|(k, v)| from_attribute(v).map(|j| (k.clone(), j)))
                    .collect::<Result<_, _>>()?,
            ),
        ),
        other => return Err(format!("unsupported attribute value {other:?}")),
    })
}

/// The key schema of an existing table, or `None` if the table does not exist.
pub async fn describe_key_schema(
    client: &Client,
    table: &str,
) -> Result<Option<KeySchema>, String> {
    let out = match client.describe_table().table_name(table).send().await {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("DescribeTable {table}: {}", sdk_message(&e))),
    };
    let Some(t) = out.table() else {
        return Ok(None);
    };
    let types: HashMap<&str, &ScalarAttributeType> = t
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name(), d.attribute_type()))
        .collect();
    let attr = |e: &KeySchemaElement| -> Result<KeyAttribute, String> {
        let ty = match types.get(e.attribute_name()) {
            Some(ScalarAttributeType::S) => KeyType::S,
            Some(ScalarAttributeType::N) => KeyType::N,
            Some(ScalarAttributeType::B) => KeyType::B,
            other => {
                return Err(format!(
                    "key attribute {} has type {other:?}",
                    e.attribute_name()
                ));
            }
        };
        Ok(KeyAttribute {
            name: e.attribute_name().to_owned(),
            key_type: ty,
        })
    };
    let mut partition = None;
    let mut sort = None;
    for e in t.key_schema() {
        match e.key_type() {
            DdbKeyType::Hash => partition = Some(attr(e)?),
            DdbKeyType::Range => sort = Some(attr(e)?),
            _ => {}
        }
    }
    Ok(partition.map(|partition| KeySchema { partition, sort }))
}

/// Whether the table's stream is enabled, and its view type.
pub async fn stream_enabled(client: &Client, table: &str) -> Result<Option<String>, String> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| format!("DescribeTable {table}: {}", sdk_message(&e)))?;
    Ok(out
        .table()
        .and_then(|t| t.stream_specification())
        .filter(|s| s.stream_enabled())
        .map(|s| {
            s.stream_view_type()
                .map_or("unknown".to_owned(), |v| v.as_str().to_owned())
        }))
}

/// Creates `table` with `key` and on-demand billing, and waits until it is active.
pub async fn create_table(client: &Client, table: &str, key: &KeySchema) -> Result<(), String> {
    let scalar = |t: KeyType| match t {
        KeyType::S => ScalarAttributeType::S,
        KeyType::N => ScalarAttributeType::N,
        KeyType::B => ScalarAttributeType::B,
    };
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (a, kt) in std::iter::once((&key.partition, DdbKeyType::Hash))
        .chain(key.sort.as_ref().map(|s| (s, DdbKeyType::Range)))
    {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&a.name)
                    .attribute_type(scalar(a.key_type))
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(&a.name)
                    .key_type(kt)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
    }
    req.send()
        .await
        .map_err(|e| format!("CreateTable {table}: {}", sdk_message(&e)))?;
    for _ in 0..600 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| format!("DescribeTable {table}: {}", sdk_message(&e)))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "table {table} did not become ACTIVE within 5 minutes"
    ))
}

/// Whether the table holds at least one item.
pub async fn is_empty(client: &Client, table: &str) -> Result<bool, String> {
    let out = client
        .scan()
        .table_name(table)
        .limit(1)
        .send()
        .await
        .map_err(|e| format!("Scan {table}: {}", sdk_message(&e)))?;
    Ok(out.items().is_empty())
}

fn sdk_message<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> String {
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        None => {
            // The display of a dispatch or timeout error is generic; its source says what.
            let mut text = format!("{e}");
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Whether an error is worth retrying (throttling, 5xx, network).
fn retryable<E: ProvideErrorMetadata, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool {
    use aws_sdk_dynamodb::error::SdkError;
    match e {
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "LimitExceededException"
            )
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => false,
    }
}

/// Exponential backoff with full jitter: attempt n waits up to min(cap, base × 2^n).
pub fn backoff(attempt: u32, seed: u64) -> Duration {
    let cap_ms = 5_000u64;
    let base_ms = 25u64;
    let ceiling = cap_ms.min(base_ms.saturating_mul(1u64 << attempt.min(20)));
    // SplitMix64 of the seed: cheap jitter without a RNG dependency.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Duration::from_millis(z % (ceiling + 1))
}

/// Counters of a DynamoDB restore.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Items written.
    pub items: AtomicU64,
    /// BatchWriteItem calls.
    pub requests: AtomicU64,
    /// Retries after throttling, errors or unprocessed items.
    pub retries: AtomicU64,
    /// Partitions skipped because a checkpoint says they were written.
    pub partitions_skipped: AtomicU64,
}

/// Writes materialized partitions into a DynamoDB table with parallel BatchWriteItem calls,
/// retrying throttling and `UnprocessedItems` with backoff, and checkpointing each finished
/// partition in the backup store so a rerun skips what is done.
pub struct DynamoSink {
    client: Client,
    table: String,
    workers: usize,
    /// Attempts per batch before the restore stops (to be resumed by a rerun).
    pub max_attempts: u32,
    checkpoint: Option<(Arc<dyn ObjectStore>, String)>,
    label: String,
    done: std::collections::BTreeSet<usize>,
    /// Partition count the checkpoint was written with.
    checkpoint_partitions: Option<usize>,
    /// Counters.
    pub stats: Arc<WriteStats>,
    /// Stop before starting a partition after this instant, once this run has written at
    /// least one (so every run makes progress); a rerun resumes from the checkpoint.
    pub deadline: Option<std::time::Instant>,
    /// Partitions this run wrote.
    written: usize,
    /// True when the run stopped at the deadline with partitions left.
    pub stopped_at_deadline: bool,
}

/// The checkpoint of a restore: which partitions are fully written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// What is being restored (snapshot id or as-of instant) and where to.
    pub restore: String,
    /// Total partitions.
    pub partitions: usize,
    /// Finished partitions.
    pub done: Vec<usize>,
}

impl DynamoSink {
    /// A sink writing to `table`. With `checkpoint`, progress is recorded at that key of the
    /// store (and read back first, to resume).
    pub async fn new(
        client: Client,
        table: &str,
        workers: usize,
        checkpoint: Option<(Arc<dyn ObjectStore>, String, String)>,
    ) -> Result<DynamoSink, String> {
        let mut done = std::collections::BTreeSet::new();
        let mut checkpoint_partitions = None;
        let label = checkpoint
            .as_ref()
            .map(|(_, _, r)| r.clone())
            .unwrap_or_default();
        let checkpoint = match checkpoint {
            None => None,
            Some((store, key, restore)) => {
                match store.get(&key).await {
                    Ok(bytes) => {
                        let c: Checkpoint = serde_json::from_slice(&bytes)
                            .map_err(|e| format!("checkpoint {key} is unreadable: {e}"))?;
                        if c.restore != restore {
                            return Err(format!(
                                "checkpoint {key} is for {:?}, not {restore:?}",
                                c.restore
                            ));
                        }
                        done.extend(c.done);
                        checkpoint_partitions = Some(c.partitions);
                    }
                    Err(crate::store::StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
                Some((store, key))
            }
        };
        Ok(DynamoSink {
            client,
            table: table.to_owned(),
            workers: workers.max(1),
            max_attempts: 15,
            checkpoint,
            label,
            done,
            checkpoint_partitions,
            stats: Arc::new(WriteStats::default()),
            deadline: None,
            written: 0,
            stopped_at_deadline: false,
        })
    }

    /// Whether a checkpoint says some partitions are written (a resumed restore).
    pub fn resuming(&self) -> bool {
        !self.done.is_empty()
    }

    async fn write_batch(&self, mut batch: Vec<WriteRequest>, seed: u64) -> Result<(), String> {
        let mut attempt = 0u32;
        let mut last;
        loop {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .batch_write_item()
                .request_items(&self.table, batch.clone())
                .send()
                .await;
            match result {
                Ok(out) => {
                    let left: Vec<WriteRequest> = out
                        .unprocessed_items()
                        .and_then(|m| m.get(&self.table))
                        .cloned()
                        .unwrap_or_default();
                    let written = batch.len() - left.len();
                    self.stats
                        .items
                        .fetch_add(written as u64, Ordering::Relaxed);
                    if left.is_empty() {
                        return Ok(());
                    }
                    last = format!("{} item(s) unprocessed", left.len());
                    batch = left;
                }
                Err(e) if retryable(&e) => last = sdk_message(&e),
                Err(e) => {
                    return Err(format!(
                        "BatchWriteItem into {}: {}",
                        self.table,
                        sdk_message(&e)
                    ));
                }
            }
            attempt += 1;
            if attempt >= self.max_attempts.max(1) {
                return Err(format!(
                    "BatchWriteItem into {}: failed {attempt} times, last: {last}; rerun the same restore to resume (finished partitions are not rewritten)",
                    self.table
                ));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt, seed ^ u64::from(attempt))).await;
        }
    }
}

#[async_trait::async_trait]
impl Sink for DynamoSink {
    async fn partition(
        &mut self,
        index: usize,
        count: usize,
        items: Vec<Item>,
    ) -> Result<(), String> {
        if let Some(p) = self.checkpoint_partitions
            && p != count
        {
            return Err(format!(
                "the checkpoint of this restore was written with {p} partitions, this run has {count}; rerun with the same --memory-mb to resume"
            ));
        }
        if self.done.contains(&index) {
            self.stats
                .partitions_skipped
                .fetch_add(1, Ordering::Relaxed);
            self.stats
                .items
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(deadline) = self.deadline
            && self.written > 0
            && std::time::Instant::now() >= deadline
        {
            self.stopped_at_deadline = true;
            return Err(format!(
                "time budget used up after {} partition(s) of {count}; rerun to resume",
                self.written
            ));
        }
        // Batches of at most 25 items and 16 MB (DynamoDB's BatchWriteItem limits).
        let mut batches: Vec<Vec<WriteRequest>> = vec![];
        let mut current = vec![];
        let mut bytes = 0usize;
        for it in &items {
            let map = to_attribute_map(&it.item).map_err(|e| format!("item {}: {e}", it.key))?;
            let put = PutRequest::builder()
                .set_item(Some(map))
                .build()
                .map_err(|e| e.to_string())?;
            if current.len() == 25 || bytes + it.item.len() > 15 * 1024 * 1024 {
                batches.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += it.item.len();
            current.push(WriteRequest::builder().put_request(put).build());
        }
        if !current.is_empty() {
            batches.push(current);
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(self.workers));
        let this = Arc::new(DynamoSink {
            client: self.client.clone(),
            table: self.table.clone(),
            workers: self.workers,
            max_attempts: self.max_attempts,
            checkpoint: None,
            label: String::new(),
            done: Default::default(),
            checkpoint_partitions: None,
            stats: self.stats.clone(),
            deadline: None,
            written: 0,
            stopped_at_deadline: false,
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (i, batch) in batches.into_iter().enumerate() {
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let this = this.clone();
            let seed = ((index as u64) << 32) ^ i as u64;
            tasks.spawn(async move {
                let r = this.write_batch(batch, seed).await;
                drop(permit);
                r
            });
        }
        let mut first_error = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(format!("write task failed: {e}"));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.done.insert(index);
        self.written += 1;
        if let Some((store, key)) = &self.checkpoint {
            let c = Checkpoint {
                restore: self.label.clone(),
                partitions: count,
                done: self.done.iter().copied().collect(),
            };
            let body = serde_json::to_vec(&c).map_err(|e| e.to_string())?;
            store
                .put(key, bytes::Bytes::from(body), PutMode::Overwrite)
                .await
                .map_err(|e| format!("writing the restore checkpoint: {e}"))?;
        }
        Ok(())
    }
}

/// Scans `table` with `segments` parallel segments: item count, state digest, and (when
/// `keep` is set) each item's key → hash, to name differing keys.
pub async fn scan_digest(
    client: &Client,
    table: &str,
    segments: i32,
    key: &KeySchema,
    keep: bool,
) -> Result<(u64, StateDigest, HashMap<String, ItemHash>), String> {
    let segments = segments.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for seg in 0..segments {
        let client = client.clone();
        let table = table.to_owned();
        let key = key.clone();
        tasks.spawn(async move {
            let mut digest = StateDigest::ZERO;
            let mut count = 0u64;
            let mut hashes = HashMap::new();
            let mut scan = SegmentScan::new(client, &table, seg, segments);
            while let Some(items) = scan.next_page().await? {
                for item in &items {
                    let text = from_attribute_map(item)?;
                    let h = crate::model::item::item_hash(&text).map_err(|e| e.to_string())?;
                    digest.add_item(&h);
                    count += 1;
                    if keep {
                        hashes.insert(key_text(item, &key)?, h);
                    }
                }
            }
            Ok::<_, String>((count, digest, hashes))
        });
    }
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    let mut all = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (c, d, h) = r.map_err(|e| format!("scan task failed: {e}"))??;
        count += c;
        digest.add(&d);
        all.extend(h);
    }
    Ok((count, digest, all))
}

/// One segment of a parallel Scan, page by page, with consistent reads and retries (backoff
/// with jitter) on throttling and transient errors.
pub struct SegmentScan {
    client: Client,
    table: String,
    segment: i32,
    total: i32,
    start: Option<HashMap<String, AttributeValue>>,
    done: bool,
}

impl SegmentScan {
    /// Segment `segment` of `total`.
    pub fn new(client: Client, table: &str, segment: i32, total: i32) -> SegmentScan {
        SegmentScan {
            client,
            table: table.to_owned(),
            segment,
            total,
            start: None,
            done: false,
        }
    }

    /// The next page of items, or `None` after the last.
    pub async fn next_page(
        &mut self,
    ) -> Result<Option<Vec<HashMap<String, AttributeValue>>>, String> {
        if self.done {
            return Ok(None);
        }
        let mut attempt = 0u32;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .segment(self.segment)
                .total_segments(self.total)
                .consistent_read(true)
                .set_exclusive_start_key(self.start.clone())
                .send()
                .await;
            match out {
                Ok(out) => {
                    match out.last_evaluated_key() {
                        Some(k) if !k.is_empty() => self.start = Some(k.clone()),
                        _ => self.done = true,
                    }
                    return Ok(Some(out.items().to_vec()));
                }
                Err(e) if retryable(&e) && attempt < 15 => {
                    attempt += 1;
                    tracing::warn!(table = %self.table, segment = self.segment, error = %sdk_message(&e), "scan page failed; retrying");
                    tokio::time::sleep(backoff(attempt, self.segment as u64)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "Scan {} segment {}: {}",
                        self.table,
                        self.segment,
                        sdk_message(&e)
                    ));
                }
            }
        }
    }
}

/// Canonical key text of an item (the form segments store in `keys`).
pub fn key_text(item: &HashMap<String, AttributeValue>, key: &KeySchema) -> Result<String, String> {
    let mut m = HashMap::new();
    for a in std::iter::once(&key.partition).chain(key.sort.as_ref()) {
        let v = item
            .get(&a.name)
            .ok_or_else(|| format!("item lacks key attribute {}", a.name))?;
        m.insert(a.name.clone(), v.clone());
    }
    crate::model::item::canonicalize(&from_attribute_map(&m)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_exact_both_ways() {
        let text = r#"{"a":{"S":""},"b":{"N":"-1.5E-130"},"c":{"B":""},"d":{"BOOL":false},"e":{"NULL":true},"f":{"SS":["x","y"]},"g":{"NS":["1","2"]},"h":{"BS":["AAE="]},"i":{"L":[{"M":{"z":{"S":"\u0000"}}}]}}"#;
        let canonical = crate::model::item::canonicalize(text).unwrap();
        let map = to_attribute_map(&canonical).unwrap();
        let back = crate::model::item::canonicalize(&from_attribute_map(&map).unwrap()).unwrap();
        assert_eq!(back, canonical);
        assert!(to_attribute_map(r#"{"a":{"X":"1"}}"#).is_err());
        assert!(to_attribute_map(r#"{"a":{"S":"1","N":"1"}}"#).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1, 7) <= Duration::from_millis(50));
        assert!((0..100).all(|s| backoff(30, s) <= Duration::from_secs(5)));
        assert!((0..100).any(|s| backoff(10, s) > Duration::from_millis(100)));
    }
}

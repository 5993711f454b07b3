//! DynamoDB as a restore target and a scan source: item conversion, table creation and checks,
//! batched writes with checkpoints, parallel scans that compute the state digest. Calls are
//! retried by the one policy of [`crate::aws::config`].
//!
//! Items travel as canonical DynamoDB JSON text everywhere else in streamseal; this module is
//! the only place that turns them into `AttributeValue`s and back. Numbers stay strings (never
//! f64), binary is base64 in JSON and bytes on the wire, so the conversion is exact both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType as DdbKeyType,
    PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use base64::Engine as _;
use serde_json::Value;

use crate::aws::AwsError;
use crate::model::item::{ItemHash, StateDigest};
use crate::model::schema::{KeyAttribute, KeySchema, KeyType};
use crate::ops::restore::{Item, Sink, SinkError};
use crate::store::{ObjectStore, PutMode};

/// Builds a client from the standard AWS environment (region, credentials, `AWS_ENDPOINT_URL`)
/// with streamseal's retry policy.
pub async fn client_from_env() -> Client {
    Client::new(&crate::aws::config::load().await)
}

/// Canonical DynamoDB JSON of an item → the SDK's attribute map. `context` names the item in
/// the error.
pub fn to_attribute_map(
    text: &str,
    context: &str,
) -> Result<HashMap<String, AttributeValue>, AwsError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| AwsError::convert(context, format!("item is not JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(AwsError::convert(context, "item is not a JSON object"));
    };
    map.into_iter()
        .map(|(k, v)| to_attribute(&v).map(|a| (k, a)))
        .collect::<Result<_, String>>()
        .map_err(|e| AwsError::convert(context, e))
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
pub fn from_attribute_map(map: &HashMap<String, AttributeValue>) -> Result<String, AwsError> {
    let obj: serde_json::Map<String, Value> = map
        .iter()
        .map(|(k, v)| from_attribute(v).map(|j| (k.clone(), j)))
        .collect::<Result<_, _>>()
        .map_err(|e| AwsError::convert("an item DynamoDB returned", e))?;
    Ok(Value::Object(obj).to_string())
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
pub(crate) async fn describe_key_schema(
    client: &Client,
    table: &str,
) -> Result<Option<KeySchema>, AwsError> {
    match describe_if_exists(client, table).await? {
        Some(t) => key_schema_of(table, &t),
        None => Ok(None),
    }
}

/// `DescribeTable`'s description of `table`, or `None` if the table does not exist.
async fn describe_if_exists(
    client: &Client,
    table: &str,
) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, AwsError> {
    match client.describe_table().table_name(table).send().await {
        Ok(o) => Ok(o.table().cloned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(AwsError::call("DescribeTable", table, e)),
    }
}

/// A DynamoDB scalar attribute type as a key type (`None` for a type this version does not
/// know).
fn key_type_of(t: &ScalarAttributeType) -> Option<KeyType> {
    match t {
        ScalarAttributeType::S => Some(KeyType::S),
        ScalarAttributeType::N => Some(KeyType::N),
        ScalarAttributeType::B => Some(KeyType::B),
        _ => None,
    }
}

/// The key schema a table description gives, with the key attributes' types.
fn key_schema_of(
    table: &str,
    t: &aws_sdk_dynamodb::types::TableDescription,
) -> Result<Option<KeySchema>, AwsError> {
    let types: HashMap<&str, &ScalarAttributeType> = t
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name(), d.attribute_type()))
        .collect();
    let attr = |e: &KeySchemaElement| -> Result<KeyAttribute, AwsError> {
        let found = types.get(e.attribute_name());
        let Some(ty) = found.and_then(|t| key_type_of(t)) else {
            return Err(AwsError::Unexpected(format!(
                "table {table}: key attribute {} has type {found:?}",
                e.attribute_name()
            )));
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

/// `DescribeTable` of `table`.
pub(crate) async fn describe(
    client: &Client,
    table: &str,
) -> Result<aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput, AwsError> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeTable", table, e))
}

/// Whether the table's stream is enabled, and its view type.
pub(crate) async fn stream_enabled(
    client: &Client,
    table: &str,
) -> Result<Option<String>, AwsError> {
    Ok(describe(client, table)
        .await?
        .table()
        .and_then(|t| t.stream_specification())
        .filter(|s| s.stream_enabled())
        .map(|s| {
            s.stream_view_type()
                .map_or("unknown".to_owned(), |v| v.as_str().to_owned())
        }))
}

/// Creates `table` with `key` and on-demand billing, and waits until it is active.
pub(crate) async fn create_table(
    client: &Client,
    table: &str,
    key: &KeySchema,
) -> Result<(), AwsError> {
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
                    .map_err(|e| AwsError::convert(format!("table {table}'s key"), e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(&a.name)
                    .key_type(kt)
                    .build()
                    .map_err(|e| AwsError::convert(format!("table {table}'s key"), e))?,
            );
    }
    req.send()
        .await
        .map_err(|e| AwsError::call("CreateTable", table, e))?;
    wait_active(client, table).await
}

/// The table's definition (DescribeTable, then DescribeTimeToLive), as a restore needs it to
/// recreate the table. `None` when the table does not exist.
pub async fn describe_definition(
    client: &Client,
    table: &str,
) -> Result<Option<crate::model::definition::TableDefinition>, AwsError> {
    use crate::model::definition::{
        AttributeDefinition as Attr, Index, TableDefinition, Throughput,
    };
    // One DescribeTable for the key and the rest.
    let Some(t) = describe_if_exists(client, table).await? else {
        return Ok(None);
    };
    let Some(key) = key_schema_of(table, &t)? else {
        return Ok(None);
    };
    let mut attributes = vec![];
    for d in t.attribute_definitions() {
        let Some(ty) = key_type_of(d.attribute_type()) else {
            return Err(AwsError::Unexpected(format!(
                "table {table}: attribute {} has type {:?}",
                d.attribute_name(),
                d.attribute_type()
            )));
        };
        attributes.push(Attr {
            name: d.attribute_name().to_owned(),
            attribute_type: ty,
        });
    }
    let role = |schema: &[KeySchemaElement], want: DdbKeyType| {
        schema
            .iter()
            .find(|e| *e.key_type() == want)
            .map(|e| e.attribute_name().to_owned())
    };
    let throughput = |read: Option<i64>, write: Option<i64>| match (read, write) {
        (Some(read), Some(write)) if read > 0 && write > 0 => Some(Throughput { read, write }),
        _ => None,
    };
    let billing_mode = t
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map_or("PROVISIONED", |m| m.as_str())
        .to_owned();
    let provisioned = billing_mode == "PROVISIONED";
    let index = |name: &str,
                 schema: &[KeySchemaElement],
                 projection: Option<&aws_sdk_dynamodb::types::Projection>,
                 tp: Option<Throughput>|
     -> Result<Index, AwsError> {
        Ok(Index {
            name: name.to_owned(),
            partition: role(schema, DdbKeyType::Hash).ok_or_else(|| {
                AwsError::Unexpected(format!("table {table}: index {name} has no HASH key"))
            })?,
            sort: role(schema, DdbKeyType::Range),
            projection: projection
                .and_then(|p| p.projection_type())
                .map_or("ALL", |p| p.as_str())
                .to_owned(),
            non_key_attributes: projection
                .map(|p| p.non_key_attributes().to_vec())
                .unwrap_or_default(),
            throughput: tp,
        })
    };
    let mut global_indexes = vec![];
    for g in t.global_secondary_indexes() {
        let tp = g
            .provisioned_throughput()
            .and_then(|p| throughput(p.read_capacity_units(), p.write_capacity_units()));
        global_indexes.push(index(
            g.index_name().unwrap_or_default(),
            g.key_schema(),
            g.projection(),
            if provisioned { tp } else { None },
        )?);
    }
    let mut local_indexes = vec![];
    for l in t.local_secondary_indexes() {
        local_indexes.push(index(
            l.index_name().unwrap_or_default(),
            l.key_schema(),
            l.projection(),
            None,
        )?);
    }
    let ttl_attribute = ttl_attribute(client, table).await?;
    let stream_view_type = t
        .stream_specification()
        .filter(|s| s.stream_enabled())
        .and_then(|s| s.stream_view_type())
        .map(|v| v.as_str().to_owned());
    let definition = TableDefinition {
        key,
        attributes,
        throughput: if provisioned {
            t.provisioned_throughput()
                .and_then(|p| throughput(p.read_capacity_units(), p.write_capacity_units()))
        } else {
            None
        },
        billing_mode,
        global_indexes,
        local_indexes,
        ttl_attribute,
        stream_view_type,
        described_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    definition
        .check()
        .map_err(|e| AwsError::Unexpected(format!("table {table}'s description: {e}")))?;
    Ok(Some(definition))
}

/// Creates `table` as `def` describes the original (key, attribute definitions, billing mode
/// and capacity, secondary indexes, stream) and waits until it is ACTIVE. Time to live is
/// not turned on here: DynamoDB would delete expired items while the restore writes them,
/// and the restored table would not match the snapshot. [`enable_ttl`] does it once the
/// restore is checked.
pub(crate) async fn create_table_from(
    client: &Client,
    table: &str,
    def: &crate::model::definition::TableDefinition,
) -> Result<(), AwsError> {
    use aws_sdk_dynamodb::types::{
        GlobalSecondaryIndex, LocalSecondaryIndex, Projection, ProjectionType,
        ProvisionedThroughput, StreamSpecification, StreamViewType,
    };
    def.check()
        .map_err(|e| AwsError::Unexpected(format!("the recorded definition of {table}: {e}")))?;
    let built = |what: &str, e: aws_sdk_dynamodb::error::BuildError| {
        AwsError::convert(format!("table {table}'s {what}"), e)
    };
    let key_schema =
        |partition: &str, sort: Option<&str>| -> Result<Vec<KeySchemaElement>, AwsError> {
            let mut out = vec![
                KeySchemaElement::builder()
                    .attribute_name(partition)
                    .key_type(DdbKeyType::Hash)
                    .build()
                    .map_err(|e| built("key", e))?,
            ];
            if let Some(s) = sort {
                out.push(
                    KeySchemaElement::builder()
                        .attribute_name(s)
                        .key_type(DdbKeyType::Range)
                        .build()
                        .map_err(|e| built("key", e))?,
                );
            }
            Ok(out)
        };
    let throughput = |t: &crate::model::definition::Throughput| {
        ProvisionedThroughput::builder()
            .read_capacity_units(t.read)
            .write_capacity_units(t.write)
            .build()
            .map_err(|e| built("capacity", e))
    };
    let projection = |i: &crate::model::definition::Index| {
        let mut p =
            Projection::builder().projection_type(ProjectionType::from(i.projection.as_str()));
        for a in &i.non_key_attributes {
            p = p.non_key_attributes(a);
        }
        p.build()
    };
    let provisioned = def.billing_mode == "PROVISIONED";
    let mut req = client
        .create_table()
        .table_name(table)
        .set_key_schema(Some(key_schema(
            &def.key.partition.name,
            def.key.sort.as_ref().map(|s| s.name.as_str()),
        )?));
    for a in &def.attributes {
        let ty = match a.attribute_type {
            KeyType::S => ScalarAttributeType::S,
            KeyType::N => ScalarAttributeType::N,
            KeyType::B => ScalarAttributeType::B,
        };
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.name)
                .attribute_type(ty)
                .build()
                .map_err(|e| built("attributes", e))?,
        );
    }
    match (provisioned, &def.throughput) {
        (true, Some(t)) => {
            req = req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(throughput(t)?)
        }
        _ => req = req.billing_mode(BillingMode::PayPerRequest),
    }
    for i in &def.global_indexes {
        let mut g = GlobalSecondaryIndex::builder()
            .index_name(&i.name)
            .set_key_schema(Some(key_schema(&i.partition, i.sort.as_deref())?))
            .projection(projection(i));
        if provisioned && let Some(t) = &i.throughput {
            g = g.provisioned_throughput(throughput(t)?);
        }
        req = req.global_secondary_indexes(g.build().map_err(|e| built("global index", e))?);
    }
    for i in &def.local_indexes {
        req = req.local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name(&i.name)
                .set_key_schema(Some(key_schema(&i.partition, i.sort.as_deref())?))
                .projection(projection(i))
                .build()
                .map_err(|e| built("local index", e))?,
        );
    }
    if let Some(v) = &def.stream_view_type {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(v.as_str()))
                .build()
                .map_err(|e| built("stream", e))?,
        );
    }
    req.send()
        .await
        .map_err(|e| AwsError::call("CreateTable", table, e))?;
    wait_active(client, table).await
}

/// The attribute time to live is on (or turning on) for, if any (`DescribeTimeToLive`).
async fn ttl_attribute(client: &Client, table: &str) -> Result<Option<String>, AwsError> {
    use aws_sdk_dynamodb::types::TimeToLiveStatus as S;
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| AwsError::call("DescribeTimeToLive", table, e))?;
    Ok(out
        .time_to_live_description()
        .and_then(|d| match d.time_to_live_status() {
            Some(S::Enabled | S::Enabling) => d.attribute_name().map(str::to_owned),
            _ => None,
        }))
}

/// Turns time to live on for `attribute`, unless it already is (so a rerun is harmless). A
/// table whose TTL is already on for another attribute (someone set it) is left as it is,
/// with a warning.
pub(crate) async fn enable_ttl(
    client: &Client,
    table: &str,
    attribute: &str,
) -> Result<(), AwsError> {
    if let Some(on) = ttl_attribute(client, table).await? {
        if on != attribute {
            tracing::warn!(
                table,
                ttl_attribute = %on,
                recorded = attribute,
                "the table's time to live is on for another attribute than the backup's table had; left as it is"
            );
        }
        return Ok(());
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .map_err(|e| AwsError::convert(format!("table {table}'s time to live"), e))?,
        )
        .send()
        .await
        .map_err(|e| AwsError::call("UpdateTimeToLive", table, e))?;
    Ok(())
}

/// Waits (up to 5 minutes) until `table` is ACTIVE.
async fn wait_active(client: &Client, table: &str) -> Result<(), AwsError> {
    for _ in 0..600 {
        let out = describe(client, table).await?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(AwsError::Unexpected(format!(
        "table {table} did not become ACTIVE within 5 minutes"
    )))
}

/// Which table `table` is: its ARN and creation time (`arn@ms`).
pub(crate) async fn table_identity(client: &Client, table: &str) -> Result<String, AwsError> {
    let out = describe(client, table).await?;
    let t = out.table();
    Ok(format!(
        "{}@{}",
        t.and_then(|t| t.table_arn()).unwrap_or(table),
        t.and_then(|t| t.creation_date_time())
            .and_then(|d| d.to_millis().ok())
            .unwrap_or_default()
    ))
}

/// Whether the table holds at least one item.
pub(crate) async fn is_empty(client: &Client, table: &str) -> Result<bool, AwsError> {
    let out = client
        .scan()
        .table_name(table)
        .limit(1)
        .send()
        .await
        .map_err(|e| AwsError::call("Scan", table, e))?;
    Ok(out.items().is_empty())
}

/// Counters of a DynamoDB restore.
#[derive(Debug, Default)]
pub(crate) struct WriteStats {
    /// Items written.
    pub items: AtomicU64,
    /// BatchWriteItem calls (not counting the SDK's retries of a call).
    pub requests: AtomicU64,
    /// Resubmissions of unprocessed items.
    pub retries: AtomicU64,
    /// Partitions skipped because a checkpoint says they were written.
    pub partitions_skipped: AtomicU64,
    /// Partitions this run wrote.
    pub partitions_done: AtomicU64,
    /// Partitions being written now.
    pub partitions_in_flight: AtomicU64,
    /// The most partitions written at once.
    pub max_partitions_in_flight: AtomicU64,
}

/// The checkpoint of a restore: which partitions are fully written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Checkpoint {
    /// What is being restored (snapshot id or as-of instant) and where to.
    pub restore: String,
    /// Total partitions (0: the restore has started and finished none yet).
    pub partitions: usize,
    /// Finished partitions.
    pub done: Vec<usize>,
    /// The self-check scan, once every partition is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanState>,
}

/// Where a restore records its progress: a key of the backup store, and what it restores.
#[derive(Clone)]
pub(crate) struct CheckpointAt {
    /// The backup store.
    pub store: Arc<dyn ObjectStore>,
    /// The checkpoint's key ([`crate::model::layout::TableLayout::restore_checkpoint_key`]).
    pub key: String,
    /// What is restored where, recorded in the checkpoint so a different restore never
    /// resumes from it.
    pub label: String,
}

/// The part of a sink its parallel write tasks share.
struct Writer {
    client: Client,
    table: String,
    max_resubmits: u32,
    stats: Arc<WriteStats>,
}

impl Writer {
    /// Writes one batch, resubmitting unprocessed items with backoff. Errors of the call
    /// itself were already retried by the SDK's policy.
    async fn write_batch(&self, mut batch: Vec<WriteRequest>) -> Result<(), AwsError> {
        let mut delays =
            crate::aws::config::resubmit_backoff().take(self.max_resubmits.max(1) as usize);
        loop {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, batch.clone())
                .send()
                .await
                .map_err(|e| AwsError::call("BatchWriteItem", &self.table, e))?;
            let left: Vec<WriteRequest> = out
                .unprocessed_items()
                .and_then(|m| m.get(&self.table))
                .cloned()
                .unwrap_or_default();
            self.stats
                .items
                .fetch_add((batch.len() - left.len()) as u64, Ordering::Relaxed);
            if left.is_empty() {
                return Ok(());
            }
            let Some(delay) = delays.next() else {
                return Err(AwsError::Unexpected(format!(
                    "BatchWriteItem into {}: {} item(s) still unprocessed after {} resubmissions; rerun the same restore to resume (finished partitions are not rewritten)",
                    self.table,
                    left.len(),
                    self.max_resubmits
                )));
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            batch = left;
        }
    }
}

/// Writes materialized partitions into a DynamoDB table with parallel BatchWriteItem calls,
/// resubmitting unprocessed items with backoff, and checkpointing each finished partition in
/// the backup store so a rerun skips what is done.
pub(crate) struct DynamoSink {
    writer: Arc<Writer>,
    workers: usize,
    checkpoint: Option<CheckpointAt>,
    /// What the checkpoint records; partitions written at once update it under this lock.
    state: tokio::sync::Mutex<SinkState>,
    /// A checkpoint of this restore existed when the sink was made: the target's items are
    /// this restore's own (at least [`DynamoSink::record_start`] ran), so it resumes.
    started: bool,
    /// Stop before starting a partition after this instant, once this run has written at
    /// least one (so every run makes progress); a rerun resumes from the checkpoint.
    pub deadline: Option<std::time::Instant>,
    /// Partitions this run wrote.
    written: std::sync::atomic::AtomicUsize,
    /// True when the run stopped at the deadline with partitions left.
    stopped_at_deadline: std::sync::atomic::AtomicBool,
}

/// The restore's progress as its checkpoint records it.
#[derive(Debug, Default)]
struct SinkState {
    done: std::collections::BTreeSet<usize>,
    /// Partition count the checkpoint was written with.
    partitions: Option<usize>,
    /// The self-check scan's progress.
    scan: Option<ScanState>,
}

impl DynamoSink {
    /// A sink writing to `table` with `workers` parallel calls, giving up a batch after
    /// `max_resubmits` resubmissions of unprocessed items. With `checkpoint`, progress is
    /// recorded there (and read back first, to resume).
    pub(crate) async fn new(
        client: Client,
        table: &str,
        workers: usize,
        max_resubmits: u32,
        checkpoint: Option<CheckpointAt>,
    ) -> Result<DynamoSink, AwsError> {
        let mut state = SinkState::default();
        let mut started = false;
        if let Some(at) = &checkpoint {
            match at.store.get(&at.key).await {
                Ok(bytes) => {
                    let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
                        AwsError::convert(format!("restore checkpoint {}", at.key), e)
                    })?;
                    if c.restore != at.label {
                        return Err(AwsError::Unexpected(format!(
                            "restore checkpoint {} is for {:?}, not {:?}",
                            at.key, c.restore, at.label
                        )));
                    }
                    state.done.extend(c.done);
                    state.partitions = (c.partitions > 0).then_some(c.partitions);
                    state.scan = c.scan;
                    started = true;
                }
                Err(crate::store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(DynamoSink {
            writer: Arc::new(Writer {
                client,
                table: table.to_owned(),
                max_resubmits,
                stats: Arc::new(WriteStats::default()),
            }),
            workers: workers.max(1),
            checkpoint,
            state: tokio::sync::Mutex::new(state),
            started,
            deadline: None,
            written: Default::default(),
            stopped_at_deadline: Default::default(),
        })
    }

    /// Whether a checkpoint of this restore exists (a resumed restore): it was started
    /// before, so whatever the target holds was written by it.
    pub(crate) fn resuming(&self) -> bool {
        self.started
    }

    /// Whether the run stopped at the deadline with partitions left.
    pub(crate) fn stopped_at_deadline(&self) -> bool {
        self.stopped_at_deadline.load(Ordering::Relaxed)
    }

    /// Records that this restore starts, before it writes anything: a run that fails in its
    /// first partition leaves a non-empty target, and the rerun must know those items are its
    /// own to resume rather than refuse the table as not empty.
    pub(crate) async fn record_start(&mut self) -> Result<(), AwsError> {
        if self.started {
            return Ok(());
        }
        self.save(&*self.state.lock().await).await?;
        self.started = true;
        Ok(())
    }

    /// The self-check scan where the checkpoint left it, or a new one of `segments`.
    pub(crate) async fn scan_state(&self, segments: i32) -> ScanState {
        self.state
            .lock()
            .await
            .scan
            .clone()
            .unwrap_or_else(|| ScanState::new(segments))
    }

    /// Records where the self-check scan stands, so the next run resumes it.
    pub(crate) async fn save_scan(&self, scan: Option<ScanState>) -> Result<(), AwsError> {
        let mut state = self.state.lock().await;
        state.scan = scan;
        self.save(&state).await
    }

    /// Writes the checkpoint: the partition count (0 when not known yet), the finished
    /// partitions and the scan's progress.
    async fn save(&self, state: &SinkState) -> Result<(), AwsError> {
        if let Some(at) = &self.checkpoint {
            let c = Checkpoint {
                restore: at.label.clone(),
                partitions: state.partitions.unwrap_or(0),
                done: state.done.iter().copied().collect(),
                scan: state.scan.clone(),
            };
            // A struct of strings and numbers always serializes.
            let body = serde_json::to_vec(&c).unwrap_or_default();
            at.store
                .put(&at.key, bytes::Bytes::from(body), PutMode::Overwrite)
                .await
                .map_err(AwsError::from)?;
        }
        Ok(())
    }

    /// Counters.
    pub(crate) fn stats(&self) -> &WriteStats {
        &self.writer.stats
    }

    async fn write_partition(
        &self,
        index: usize,
        count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        let stats = &self.writer.stats;
        {
            let state = self.state.lock().await;
            if let Some(p) = state.partitions
                && p != count
            {
                return Err(SinkError::Target(Box::new(AwsError::Unexpected(format!(
                    "the checkpoint of this restore was written with {p} partitions, this run has {count}; rerun with the same memory budget and parallelism to resume"
                )))));
            }
            if state.done.contains(&index) {
                stats.partitions_skipped.fetch_add(1, Ordering::Relaxed);
                stats.items.fetch_add(items.len() as u64, Ordering::Relaxed);
                return Ok(());
            }
        }
        let written = self.written.load(Ordering::Relaxed);
        if let Some(deadline) = self.deadline
            && written > 0
            && std::time::Instant::now() >= deadline
        {
            self.stopped_at_deadline.store(true, Ordering::Relaxed);
            return Err(SinkError::Deadline { written, count });
        }
        let now = stats.partitions_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats
            .max_partitions_in_flight
            .fetch_max(now, Ordering::Relaxed);
        let result = self.write_items(&items).await;
        stats.partitions_in_flight.fetch_sub(1, Ordering::Relaxed);
        result?;
        self.written.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().await;
        state.done.insert(index);
        state.partitions = Some(count);
        self.save(&state).await?;
        stats.partitions_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes items with up to `workers` BatchWriteItem calls in flight.
    async fn write_items(&self, items: &[Item]) -> Result<(), SinkError> {
        // Batches of at most 25 items and 16 MB (DynamoDB's BatchWriteItem limits).
        let mut batches: Vec<Vec<WriteRequest>> = vec![];
        let mut current = vec![];
        let mut bytes = 0usize;
        for it in items {
            let map = to_attribute_map(&it.item, &format!("item {}", it.key))?;
            let put = PutRequest::builder()
                .set_item(Some(map))
                .build()
                .map_err(|e| AwsError::convert(format!("item {}", it.key), e))?;
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
        let mut tasks = tokio::task::JoinSet::new();
        let mut first_error: Option<SinkError> = None;
        for batch in batches {
            // At most `workers` calls in flight; none started after a failure.
            while tasks.len() >= self.workers {
                if let Some(r) = tasks.join_next().await {
                    keep_first(&mut first_error, r);
                }
            }
            if first_error.is_some() {
                break;
            }
            let writer = self.writer.clone();
            tasks.spawn(async move { writer.write_batch(batch).await });
        }
        while let Some(r) = tasks.join_next().await {
            keep_first(&mut first_error, r);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Keeps the first failure of the write tasks.
fn keep_first(
    first: &mut Option<SinkError>,
    result: Result<Result<(), AwsError>, tokio::task::JoinError>,
) {
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => SinkError::from(e),
        Err(e) => SinkError::Target(format!("a write task failed: {e}").into()),
    };
    first.get_or_insert(error);
}

#[async_trait::async_trait]
impl Sink for DynamoSink {
    async fn partition(
        &self,
        index: usize,
        count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        self.write_partition(index, count, items).await
    }
}

impl From<AwsError> for SinkError {
    fn from(e: AwsError) -> SinkError {
        SinkError::Target(Box::new(e))
    }
}

/// Scans `table` with `segments` parallel segments: item count, state digest, and (when
/// `keep` is set) each item's key → hash, to name differing keys.
pub(crate) async fn scan_digest(
    client: &Client,
    table: &str,
    segments: i32,
    key: &KeySchema,
    keep: bool,
) -> Result<(u64, StateDigest, HashMap<String, ItemHash>), AwsError> {
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
                    let h = crate::model::item::item_hash(&text)
                        .map_err(|e| AwsError::convert(format!("an item of {table}"), e))?;
                    digest.add_item(&h);
                    count += 1;
                    if keep {
                        hashes.insert(key_text(item, &key)?, h);
                    }
                }
            }
            Ok::<_, AwsError>((count, digest, hashes))
        });
    }
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    let mut all = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (c, d, h) =
            r.map_err(|e| AwsError::Unexpected(format!("a scan task of {table} failed: {e}")))??;
        count += c;
        digest.add(&d);
        all.extend(h);
    }
    Ok((count, digest, all))
}

/// Where a self-check scan stands, kept in the restore's checkpoint so a scan that does not
/// fit in one call's time budget resumes where it stopped (page by page, per segment).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ScanState {
    /// Parallel scan segments (a resumed scan keeps the count it started with).
    pub segments: i32,
    /// One entry per segment.
    pub parts: Vec<SegmentState>,
}

/// One segment of a [`ScanState`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SegmentState {
    /// The key to continue after (DynamoDB JSON of `LastEvaluatedKey`); none: from the start.
    pub start: Option<String>,
    /// The segment is scanned to its end.
    pub done: bool,
    /// Items counted so far.
    pub count: u64,
    /// Their state digest (hex).
    pub digest: String,
}

impl ScanState {
    /// A scan not started, with `segments` segments.
    pub(crate) fn new(segments: i32) -> ScanState {
        let segments = segments.max(1);
        ScanState {
            segments,
            parts: (0..segments)
                .map(|_| SegmentState {
                    digest: StateDigest::ZERO.to_hex(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Every segment is scanned to its end.
    pub(crate) fn complete(&self) -> bool {
        self.parts.iter().all(|p| p.done)
    }

    /// Items and digest of what is scanned so far.
    pub(crate) fn totals(&self) -> Result<(u64, StateDigest), AwsError> {
        let mut digest = StateDigest::ZERO;
        let mut count = 0;
        for p in &self.parts {
            count += p.count;
            digest.add(&StateDigest::from_hex(&p.digest).map_err(|e| {
                AwsError::Unexpected(format!("restore checkpoint: a scan digest {e}"))
            })?);
        }
        Ok((count, digest))
    }
}

/// Scans `table` in parallel into `state`, from where it stands: each segment reads at least
/// one page (of at most `page_items` items when set, else DynamoDB's 1 MB), then stops
/// starting pages once `deadline` has passed. Returns with `state` complete, or with where
/// each segment stopped (to save and resume).
pub(crate) async fn scan_digest_until(
    client: &Client,
    table: &str,
    state: &mut ScanState,
    deadline: Option<std::time::Instant>,
    page_items: Option<i32>,
) -> Result<(), AwsError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (seg, part) in state.parts.iter().enumerate() {
        if part.done {
            continue;
        }
        let client = client.clone();
        let table = table.to_owned();
        let total = state.segments;
        let mut part = part.clone();
        tasks.spawn(async move {
            let mut digest = StateDigest::from_hex(&part.digest).map_err(|e| {
                AwsError::Unexpected(format!("restore checkpoint: a scan digest {e}"))
            })?;
            let mut scan = SegmentScan::new(client, &table, seg as i32, total);
            scan.limit = page_items;
            if let Some(start) = &part.start {
                scan.start = Some(to_attribute_map(
                    start,
                    "the scan position of a checkpoint",
                )?);
            }
            let mut pages = 0;
            while pages == 0 || deadline.is_none_or(|d| std::time::Instant::now() < d) {
                let Some(items) = scan.next_page().await? else {
                    break;
                };
                pages += 1;
                for item in &items {
                    let text = from_attribute_map(item)?;
                    let h = crate::model::item::item_hash(&text)
                        .map_err(|e| AwsError::convert(format!("an item of {table}"), e))?;
                    digest.add_item(&h);
                    part.count += 1;
                }
                if scan.done {
                    break;
                }
            }
            part.done = scan.done;
            part.start = match (&scan.start, scan.done) {
                (Some(k), false) => Some(from_attribute_map(k)?),
                _ => None,
            };
            part.digest = digest.to_hex();
            Ok::<_, AwsError>((seg, part))
        });
    }
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((seg, part))) => state.parts[seg] = part,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(AwsError::Unexpected(format!(
                    "a scan task of {table} failed: {e}"
                )));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One segment of a parallel Scan, page by page, with consistent reads.
pub(crate) struct SegmentScan {
    client: Client,
    table: String,
    segment: i32,
    total: i32,
    start: Option<HashMap<String, AttributeValue>>,
    done: bool,
    /// Items per page (none: DynamoDB's 1 MB pages).
    limit: Option<i32>,
}

impl SegmentScan {
    /// Segment `segment` of `total`.
    pub(crate) fn new(client: Client, table: &str, segment: i32, total: i32) -> SegmentScan {
        SegmentScan {
            client,
            table: table.to_owned(),
            segment,
            total,
            start: None,
            done: false,
            limit: None,
        }
    }

    /// The next page of items, or `None` after the last.
    pub(crate) async fn next_page(
        &mut self,
    ) -> Result<Option<Vec<HashMap<String, AttributeValue>>>, AwsError> {
        if self.done {
            return Ok(None);
        }
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(self.segment)
            .total_segments(self.total)
            .consistent_read(true)
            .set_limit(self.limit)
            .set_exclusive_start_key(self.start.clone())
            .send()
            .await
            .map_err(|e| {
                AwsError::call(
                    "Scan",
                    &format!("{} segment {}", self.table, self.segment),
                    e,
                )
            })?;
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => self.start = Some(k.clone()),
            _ => self.done = true,
        }
        Ok(Some(out.items().to_vec()))
    }
}

/// Canonical key text of an item (the form segments store in `keys`).
pub(crate) fn key_text(
    item: &HashMap<String, AttributeValue>,
    key: &KeySchema,
) -> Result<String, AwsError> {
    let mut m = HashMap::new();
    for a in std::iter::once(&key.partition).chain(key.sort.as_ref()) {
        let v = item.get(&a.name).ok_or_else(|| {
            AwsError::convert("an item", format!("it lacks key attribute {}", a.name))
        })?;
        m.insert(a.name.clone(), v.clone());
    }
    crate::model::item::canonicalize(&from_attribute_map(&m)?)
        .map_err(|e| AwsError::convert("an item's key", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_exact_both_ways() {
        let text = r#"{"a":{"S":""},"b":{"N":"-1.5E-130"},"c":{"B":""},"d":{"BOOL":false},"e":{"NULL":true},"f":{"SS":["x","y"]},"g":{"NS":["1","2"]},"h":{"BS":["AAE="]},"i":{"L":[{"M":{"z":{"S":"\u0000"}}}]}}"#;
        let canonical = crate::model::item::canonicalize(text).unwrap();
        let map = to_attribute_map(&canonical, "t").unwrap();
        let back = crate::model::item::canonicalize(&from_attribute_map(&map).unwrap()).unwrap();
        assert_eq!(back, canonical);
        assert!(to_attribute_map(r#"{"a":{"X":"1"}}"#, "t").is_err());
        assert!(to_attribute_map(r#"{"a":{"S":"1","N":"1"}}"#, "t").is_err());
    }
}

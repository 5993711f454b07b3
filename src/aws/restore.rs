//! A whole restore: plan, check the target, materialize into it, then prove the result by
//! reading it back (a parallel scan of the table, or the files) and comparing item count and
//! state digest. Nothing is written before every check that can fail early has passed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::aws::AwsError;
use crate::aws::dynamodb::{self, CheckpointAt, DynamoSink};
use crate::model::item::StateDigest;
use crate::model::schema::KeySchema;
use crate::ops::restore::{
    self, FileSink, Item, MaterializeOptions, Plan, Point, RestoreError, Sink,
};
use crate::progress::Progress;
use crate::store::ObjectStore;

/// Where the restored state goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `dynamodb://TABLE`.
    Dynamo(String),
    /// `file://DIR`: gzip DynamoDB JSON lines.
    Files(PathBuf),
    /// `s3://bucket/prefix`: the same files as objects under `prefix/data/`, which DynamoDB's
    /// import from S3 loads into a new table (the report gives the request).
    Objects(String),
}

impl Target {
    /// Parses `dynamodb://TABLE`, `s3://bucket/prefix` or `file://DIR` (or a plain directory
    /// path).
    pub fn parse(uri: &str) -> Result<Target, RestoreError> {
        if uri.starts_with("s3://") {
            let (bucket, _) = s3_location(uri)?;
            if bucket.is_empty() {
                return Err(RestoreError::Target(format!("{uri:?}: no bucket")));
            }
            return Ok(Target::Objects(uri.trim_end_matches('/').to_owned()));
        }
        if let Some(t) = uri.strip_prefix("dynamodb://") {
            crate::model::change::validate_table_name(t)
                .map_err(|e| RestoreError::Target(format!("{uri:?}: table name: {e}")))?;
            Ok(Target::Dynamo(t.to_owned()))
        } else if let Some(p) = uri.strip_prefix("file://") {
            if p.is_empty() {
                return Err(RestoreError::Target(format!("{uri:?}: no directory")));
            }
            Ok(Target::Files(PathBuf::from(p)))
        } else if uri.contains("://") {
            Err(RestoreError::Target(format!(
                "{uri:?}: expected dynamodb://TABLE, s3://bucket/prefix or file://DIR"
            )))
        } else {
            Ok(Target::Files(PathBuf::from(uri)))
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Dynamo(t) => format!("dynamodb://{t}"),
            Target::Files(p) => format!("file://{}", p.display()),
            Target::Objects(u) => u.clone(),
        }
    }
}

/// The bucket and key prefix (empty, or ending in `/`) of an `s3://bucket/prefix` URL.
fn s3_location(uri: &str) -> Result<(String, String), RestoreError> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| RestoreError::Target(format!("{uri:?}: not an s3:// URL")))?;
    // `?region=` names the bucket's region; it is not part of the location.
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    Ok((
        bucket.to_owned(),
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
    ))
}

/// The `ImportTable` request (the DynamoDB API's JSON, as `aws dynamodb import-table
/// --cli-input-json` takes it) that loads a restore written to `uri` into a new table named
/// `table`, defined as the snapshot records the original (or from its key schema alone, on
/// demand). Import cannot create local secondary indexes (nor can they be added to a table
/// afterwards: restore with `--create-table` when they matter), nor turn on TTL or a stream
/// (set those after the import).
pub fn import_request(
    uri: &str,
    table: &str,
    manifest: &crate::model::manifest::Manifest,
) -> Result<serde_json::Value, RestoreError> {
    use serde_json::json;
    let (bucket, prefix) = s3_location(uri)?;
    let key = |partition: &str, sort: Option<&str>| {
        let mut k = vec![json!({"AttributeName": partition, "KeyType": "HASH"})];
        if let Some(s) = sort {
            k.push(json!({"AttributeName": s, "KeyType": "RANGE"}));
        }
        k
    };
    let scalar = |t: crate::model::schema::KeyType| format!("{t:?}");
    let mut params = match (&manifest.definition, &manifest.key_schema) {
        (Some(d), _) => {
            // Only the attributes a key of the import uses: ImportTable refuses a definition
            // no key uses (those of local indexes, which import cannot create).
            let used: std::collections::HashSet<&str> =
                std::iter::once(d.key.partition.name.as_str())
                    .chain(d.key.sort.as_ref().map(|s| s.name.as_str()))
                    .chain(d.global_indexes.iter().flat_map(|i| {
                        std::iter::once(i.partition.as_str()).chain(i.sort.as_deref())
                    }))
                    .collect();
            let mut p = json!({
                "TableName": table,
                "AttributeDefinitions": d.attributes.iter().filter(|a| used.contains(a.name.as_str())).map(|a| json!({
                    "AttributeName": a.name, "AttributeType": scalar(a.attribute_type)
                })).collect::<Vec<_>>(),
                "KeySchema": key(&d.key.partition.name, d.key.sort.as_ref().map(|s| s.name.as_str())),
                "BillingMode": d.billing_mode,
            });
            if let Some(t) = &d.throughput {
                p["ProvisionedThroughput"] =
                    json!({"ReadCapacityUnits": t.read, "WriteCapacityUnits": t.write});
            }
            if !d.global_indexes.is_empty() {
                p["GlobalSecondaryIndexes"] = d
                    .global_indexes
                    .iter()
                    .map(|i| {
                        let mut g = json!({
                            "IndexName": i.name,
                            "KeySchema": key(&i.partition, i.sort.as_deref()),
                            "Projection": {"ProjectionType": i.projection},
                        });
                        if !i.non_key_attributes.is_empty() {
                            g["Projection"]["NonKeyAttributes"] = json!(i.non_key_attributes);
                        }
                        if let Some(t) = &i.throughput {
                            g["ProvisionedThroughput"] =
                                json!({"ReadCapacityUnits": t.read, "WriteCapacityUnits": t.write});
                        }
                        g
                    })
                    .collect();
            }
            p
        }
        (None, Some(k)) => json!({
            "TableName": table,
            "AttributeDefinitions": std::iter::once(&k.partition).chain(k.sort.as_ref()).map(|a| json!({
                "AttributeName": a.name, "AttributeType": scalar(a.key_type)
            })).collect::<Vec<_>>(),
            "KeySchema": key(&k.partition.name, k.sort.as_ref().map(|s| s.name.as_str())),
            "BillingMode": "PAY_PER_REQUEST",
        }),
        (None, None) => {
            return Err(RestoreError::Target(
                "the snapshot records no key schema: an import request cannot be written (seal with a schema file naming [key], or capture with the Lambda or tail, which record the table's definition)".into(),
            ));
        }
    };
    if params["BillingMode"] != "PROVISIONED" {
        params
            .as_object_mut()
            .map(|o| o.remove("ProvisionedThroughput"));
    }
    Ok(json!({
        "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": format!("{prefix}data/")},
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "TableCreationParameters": params,
    }))
}

/// A restore request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Source table (in the backup).
    pub table: String,
    /// Snapshot or instant.
    pub point: Point,
    /// Destination.
    pub to: Target,
    /// Create the DynamoDB table: as the manifest's table definition says (indexes, billing,
    /// TTL, stream), else from its key schema, on demand.
    pub create_table: bool,
    /// Materialization tuning.
    pub materialize: MaterializeOptions,
    /// Parallel BatchWriteItem calls.
    pub workers: usize,
    /// Parallel scan segments for the self-check.
    pub scan_segments: i32,
    /// Items per page of the self-check scan (none: DynamoDB's 1 MB pages). Smaller pages
    /// let a scan under a deadline stop and resume at a finer grain.
    pub scan_page_items: Option<i32>,
    /// Resubmissions of a write batch's unprocessed items before giving up (a rerun
    /// resumes). Failed calls are retried by the SDK's policy, [`crate::aws::config`].
    pub max_resubmits: u32,
    /// DynamoDB target: stop starting partitions after this instant (once at least one was
    /// written) and report `complete: false`; a rerun resumes from the checkpoint. For callers
    /// with a time limit, such as a Lambda invocation.
    pub deadline: Option<Instant>,
    /// Refuse, before writing anything, a restore whose chain holds quarantined records (other
    /// than REMOVEs) that could be a key's latest change: without it such keys are left out
    /// and named, and everything else is restored and checked.
    pub strict: bool,
    /// Read the whole history even when a state checkpoint could start the restore.
    pub from_history: bool,
}

impl Request {
    /// A restore of `table` at `point` into `to`, with the defaults: an existing target,
    /// 16 writers, an 8-segment checking scan, 15 resubmissions per batch, no deadline, not
    /// strict.
    pub fn new(table: &str, point: Point, to: Target) -> Request {
        Request {
            table: table.to_owned(),
            point,
            to,
            create_table: false,
            materialize: MaterializeOptions::default(),
            workers: 16,
            scan_segments: 8,
            scan_page_items: None,
            max_resubmits: 15,
            deadline: None,
            strict: false,
            from_history: false,
        }
    }
}

/// The outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Source table.
    pub table: String,
    /// Snapshot whose chain was read.
    pub snapshot_id: String,
    /// The state checkpoint the restore started from (a snapshot id), if any.
    pub checkpoint: Option<String>,
    /// Instant, for `--as-of`.
    pub as_of: Option<String>,
    /// Destination.
    pub to: String,
    /// Items restored.
    pub items: u64,
    /// Changes read.
    pub changes: u64,
    /// Partitions (1: everything fitted the memory budget).
    pub partitions: usize,
    /// The most partitions written at once (DynamoDB targets).
    pub parallel_partitions: u64,
    /// Digest of the restored state.
    pub digest: StateDigest,
    /// Items the self-check found in the target.
    pub target_items: u64,
    /// Their digest.
    pub target_digest: StateDigest,
    /// True when the target equals the restored state.
    pub matches: bool,
    /// Some keys that differ, when it does not.
    pub differing_keys: Vec<String>,
    /// True when a checkpoint let this run skip partitions written before.
    pub resumed: bool,
    /// BatchWriteItem retries (throttling, unprocessed items).
    pub retries: u64,
    /// Files written (file target), or objects (S3 target).
    pub files: Vec<String>,
    /// For an S3 target: the `ImportTable` request that loads the objects into a new table
    /// (`aws dynamodb import-table --cli-input-json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_request: Option<serde_json::Value>,
    /// Keys left out because their latest change is a quarantined record (kept verbatim at
    /// the named object): the one part of the table the backup cannot write.
    pub quarantined: Vec<restore::QuarantinedKey>,
    /// Why the restored state could not be proven against the manifest, when it could not.
    pub unproven: Option<String>,
    /// Wall time.
    pub elapsed_ms: u64,
    /// False when the run stopped at its deadline with partitions left to write (rerun to
    /// resume); the self-check fields are then unset.
    pub complete: bool,
}

/// Runs a restore. `client` is needed for a DynamoDB target.
pub async fn run(
    store: &Arc<dyn ObjectStore>,
    client: Option<&aws_sdk_dynamodb::Client>,
    request: &Request,
    progress: &Progress,
) -> Result<Report, RestoreError> {
    let started = Instant::now();
    let plan = restore::plan_with(
        store.as_ref(),
        &request.table,
        &request.point,
        !request.from_history,
    )
    .await?;
    let label = format!(
        "{} of {} -> {}",
        match &request.point {
            Point::AsOf(t) => format!("as-of {}", crate::model::clock::rfc3339(*t)),
            Point::Snapshot(_) => format!("snapshot {}", plan.manifest.snapshot_id),
        },
        request.table,
        request.to.describe()
    );
    let mut report = Report {
        table: request.table.clone(),
        snapshot_id: plan.manifest.snapshot_id.clone(),
        checkpoint: plan.checkpoint.as_ref().map(|c| c.snapshot_id.clone()),
        as_of: plan.as_of_ms.map(crate::model::clock::rfc3339),
        to: request.to.describe(),
        items: 0,
        changes: 0,
        partitions: 0,
        parallel_partitions: 0,
        digest: StateDigest::ZERO,
        target_items: 0,
        target_digest: StateDigest::ZERO,
        matches: false,
        differing_keys: vec![],
        resumed: false,
        retries: 0,
        files: vec![],
        import_request: None,
        quarantined: vec![],
        unproven: None,
        elapsed_ms: 0,
        complete: true,
    };
    if request.strict {
        let blocking: Vec<&str> = plan
            .quarantined
            .iter()
            .filter(|q| !q.effect.is_remove())
            .filter(|q| match (plan.as_of_ms, q.effect.created_ms) {
                (Some(t), Some(c)) => c <= t,
                _ => true,
            })
            .map(|q| q.key.as_str())
            .collect();
        if !blocking.is_empty() {
            return Err(RestoreError::StrictRefused {
                records: blocking.len(),
                keys: format!(
                    "{}{}",
                    blocking
                        .iter()
                        .take(5)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if blocking.len() > 5 { ", ..." } else { "" }
                ),
            });
        }
    }
    match &request.to {
        Target::Files(dir) => {
            let sink = FileSink::new(dir)?;
            let m =
                restore::materialize(store, &plan, &request.materialize, &sink, progress).await?;
            let files = sink.files();
            let (n, d) = restore::read_item_files(&files)?;
            report.files = files.iter().map(|p| p.display().to_string()).collect();
            finish(&mut report, &m, n, d);
        }
        Target::Objects(uri) => {
            let request_body =
                import_request(uri, &format!("{}-imported", request.table), &plan.manifest)?;
            let out = crate::store::open(uri)
                .await
                .map_err(|e| RestoreError::Target(format!("{uri}: {e}")))?;
            let sink = restore::StoreSink::new(out.clone()).await?;
            let m =
                restore::materialize(store, &plan, &request.materialize, &sink, progress).await?;
            let keys = sink.keys();
            let (n, d) = restore::read_item_objects(out.as_ref(), &keys).await?;
            let root = out.url();
            report.files = keys.iter().map(|k| format!("{root}{k}")).collect();
            report.import_request = Some(request_body);
            finish(&mut report, &m, n, d);
        }
        Target::Dynamo(target) => {
            let client = client.ok_or_else(|| {
                RestoreError::Target("a DynamoDB target needs a DynamoDB client".into())
            })?;
            let key = prepare_table(client, target, &plan, request.create_table).await?;
            // The target table itself (its ARN, so its account and region, and when it was
            // created): a restore resumes only into the very table it started writing, never
            // into a same-named one elsewhere or recreated since.
            let label = format!(
                "{label} ({})",
                dynamodb::table_identity(client, target).await?
            );
            let checkpoint_key = crate::model::layout::TableLayout::new(&request.table)
                .restore_checkpoint_key(&hex::encode(Sha256::digest(label.as_bytes()))[..16]);
            let mut sink = DynamoSink::new(
                client.clone(),
                target,
                request.workers,
                request.max_resubmits,
                Some(CheckpointAt {
                    store: store.clone(),
                    key: checkpoint_key.clone(),
                    label: label.clone(),
                }),
            )
            .await?;
            sink.deadline = request.deadline;
            report.resumed = sink.resuming();
            if !report.resumed && !dynamodb::is_empty(client, target).await? {
                return Err(RestoreError::Target(format!(
                    "target table {target} is not empty; restore into a new or empty table (nothing was written)"
                )));
            }
            sink.record_start().await?;
            let materialized =
                restore::materialize(store, &plan, &request.materialize, &sink, progress).await;
            // Handing back at the deadline: what this run did, to call again.
            let unfinished = |mut report: Report, sink: &DynamoSink| {
                use std::sync::atomic::Ordering::Relaxed;
                report.complete = false;
                report.items = sink.stats().items.load(Relaxed);
                report.retries = sink.stats().retries.load(Relaxed);
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                Ok(report)
            };
            let m = match materialized {
                Err(_) if sink.stopped_at_deadline() => return unfinished(report, &sink),
                other => other?,
            };
            report.retries = sink
                .stats()
                .retries
                .load(std::sync::atomic::Ordering::Relaxed);
            report.parallel_partitions = sink
                .stats()
                .max_partitions_in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
            // The self-check scan runs within the deadline too, resuming where the last run
            // stopped: a large table's scan may need more than one call.
            let mut scan = sink.scan_state(request.scan_segments).await;
            let scanned = dynamodb::scan_digest_until(
                client,
                target,
                &mut scan,
                request.deadline,
                request.scan_page_items,
            )
            .await;
            let complete = scan.complete();
            // A finished scan is not kept: a rerun after a mismatch scans afresh.
            sink.save_scan((!complete).then(|| scan.clone())).await?;
            scanned?;
            if !complete {
                return unfinished(report, &sink);
            }
            let (n, d) = scan.totals()?;
            finish(&mut report, &m, n, d);
            // Only now, with every item checked: turned on earlier, TTL could delete
            // expired items the snapshot holds while they are written.
            if report.matches
                && request.create_table
                && let Some(attribute) = plan
                    .manifest
                    .definition
                    .as_ref()
                    .and_then(|d| d.ttl_attribute.as_deref())
            {
                dynamodb::enable_ttl(client, target, attribute).await?;
            }
            if !report.matches {
                report.differing_keys =
                    differing_keys(store, client, target, &plan, &key, request).await?;
            } else if let Err(e) = store.delete(&checkpoint_key).await {
                tracing::warn!(error = %e, "could not remove the finished restore's checkpoint");
            }
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

impl From<AwsError> for RestoreError {
    fn from(e: AwsError) -> RestoreError {
        RestoreError::Sink(e.into())
    }
}

fn finish(report: &mut Report, m: &restore::Materialized, n: u64, d: StateDigest) {
    report.quarantined = m.quarantined.clone();
    report.unproven = m.unproven.clone();
    report.items = m.items;
    report.changes = m.changes;
    report.partitions = m.partitions;
    report.digest = m.digest;
    report.target_items = n;
    report.target_digest = d;
    report.matches = n == m.items && d == m.digest;
}

/// Checks or creates the target table; returns its key schema. Writes nothing on a mismatch.
pub(crate) async fn prepare_table(
    client: &aws_sdk_dynamodb::Client,
    target: &str,
    plan: &Plan,
    create: bool,
) -> Result<KeySchema, RestoreError> {
    let recorded = plan.manifest.key_schema.clone();
    match dynamodb::describe_key_schema(client, target).await? {
        Some(existing) => {
            if let Some(r) = &recorded
                && *r != existing
            {
                return Err(RestoreError::Target(format!(
                    "target table {target} has key {}, the snapshot's table has key {}; restore into a table with the same key schema (nothing was written)",
                    describe_key(&existing),
                    describe_key(r)
                )));
            }
            Ok(existing)
        }
        None if create => {
            // As the capture described the table (indexes, billing, TTL, stream), when it
            // could; else from the key schema alone, on demand.
            if let Some(def) = &plan.manifest.definition {
                if let Some(k) = &recorded
                    && *k != def.key
                {
                    return Err(RestoreError::Target(format!(
                        "the snapshot's key schema ({}, from a schema file) is not the table's as DynamoDB described it ({}); fix the schema file's [key], seal again, and rerun (nothing was written)",
                        describe_key(k),
                        describe_key(&def.key)
                    )));
                }
                dynamodb::create_table_from(client, target, def).await?;
                return Ok(def.key.clone());
            }
            let key = recorded.ok_or_else(|| {
                RestoreError::Target(format!(
                    "the snapshot records no key schema, so {target} cannot be created; create the table yourself, or seal with a schema file naming [key]"
                ))
            })?;
            dynamodb::create_table(client, target, &key).await?;
            Ok(key)
        }
        None => Err(RestoreError::NoTargetTable {
            table: target.to_owned(),
        }),
    }
}

fn describe_key(k: &KeySchema) -> String {
    let one = |a: &crate::model::schema::KeyAttribute| format!("{} ({:?})", a.name, a.key_type);
    match &k.sort {
        Some(s) => format!("{} + {}", one(&k.partition), one(s)),
        None => one(&k.partition),
    }
}

/// After a mismatch: a few keys whose items differ between the restored state and the table.
async fn differing_keys(
    store: &Arc<dyn ObjectStore>,
    client: &aws_sdk_dynamodb::Client,
    target: &str,
    plan: &Plan,
    key: &KeySchema,
    request: &Request,
) -> Result<Vec<String>, RestoreError> {
    let (_, _, in_table) =
        dynamodb::scan_digest(client, target, request.scan_segments, key, true).await?;
    struct Diff {
        table: std::collections::HashMap<String, crate::model::item::ItemHash>,
        found: Vec<String>,
    }
    struct Shared(std::sync::Mutex<Diff>);
    #[async_trait::async_trait]
    impl Sink for Shared {
        async fn partition(
            &self,
            _: usize,
            _: usize,
            items: Vec<Item>,
        ) -> Result<(), restore::SinkError> {
            let mut guard = self
                .0
                .lock()
                .map_err(|_| restore::SinkError::Target("a comparison task panicked".into()))?;
            let d = &mut *guard;
            for it in items {
                let h = crate::model::item::ItemHash(Sha256::digest(it.item.as_bytes()).into());
                match d.table.remove(&it.key) {
                    Some(t) if t == h => {}
                    Some(_) => d.found.push(format!("{} (differs)", it.key)),
                    None => d.found.push(format!("{} (missing from the table)", it.key)),
                }
            }
            Ok(())
        }
    }
    let diff = Shared(std::sync::Mutex::new(Diff {
        table: in_table,
        found: vec![],
    }));
    let mut plan = plan.clone();
    plan.expected = None;
    restore::materialize(
        store,
        &plan,
        &request.materialize,
        &diff,
        &Progress::default(),
    )
    .await?;
    let d = diff
        .0
        .into_inner()
        .map_err(|_| RestoreError::Unrestorable("a comparison task panicked".into()))?;
    let mut found = d.found;
    found.extend(
        d.table
            .into_keys()
            .map(|k| format!("{k} (not in the backup)")),
    );
    found.sort();
    found.truncate(5);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_target_is_a_bucket_and_prefix_without_its_region() {
        for (uri, bucket, prefix) in [
            ("s3://b", "b", ""),
            ("s3://b/", "b", ""),
            ("s3://b/imports/t/", "b", "imports/t/"),
            ("s3://b/imports/t?region=eu-west-1", "b", "imports/t/"),
            ("s3://b?region=eu-west-1", "b", ""),
        ] {
            let (b, p) = s3_location(uri).unwrap();
            assert_eq!((b.as_str(), p.as_str()), (bucket, prefix), "{uri}");
        }
    }
}

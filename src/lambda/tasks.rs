//! What the function does for an outage event (seal, then verify) and for a restore task
//! (restore within a time budget, resumably), and the answers it gives.

use super::*;

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
    pub quarantined: Vec<crate::ops::restore::QuarantinedKey>,
    /// This invocation's wall time, ms.
    pub elapsed_ms: u64,
    /// Recovery time: from `started_at` to the verified end of the restore, ms.
    pub rto_ms: Option<i64>,
    /// Recovery point: as given by the task (age of the newest sealed change at the seal), ms.
    pub rpo_ms: Option<i64>,
    /// A drill.
    pub drill: bool,
    /// Where this outcome is kept in full (key in the backup store; empty if it could not be
    /// written).
    pub report_key: String,
}

impl RestoreOutcome {
    /// The reply to Step Functions: scalars only, whatever the restore's size, so the state
    /// machine's payload stays far below its 256 KiB limit.
    pub fn reply(&self) -> serde_json::Value {
        serde_json::json!({
            "table": self.table,
            "snapshot_id": self.snapshot_id,
            "target_table": self.target_table,
            "region": self.region,
            "complete": self.complete,
            "matches": self.matches,
            "items": self.items,
            "quarantined_keys": self.quarantined.len(),
            "elapsed_ms": self.elapsed_ms,
            "rto_ms": self.rto_ms,
            "rpo_ms": self.rpo_ms,
            "drill": self.drill,
            "report_key": self.report_key,
        })
    }
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
    /// The first table's full report (key in the backup store), or empty.
    pub report_key: String,
}

/// What [`Handler::lock`] decided.
enum Lock {
    /// Run; with the key of the lock this run holds, if any.
    Go(Option<String>),
    /// Another run of the kind holds this hour's lock: why this one does nothing.
    Duplicate(String),
}

/// Longest error text a reply carries (the full text is in the report).
const REPLY_ERROR_CHARS: usize = 1000;

/// Findings a reply names per table (all of them are in the report).
const REPLY_FINDINGS: usize = 5;

impl TriggerReport {
    /// The reply to Step Functions: per table, scalars only (no shard map, no findings, no
    /// verify report: those grow with the table's history and are in the reports named by
    /// `report_key`), so the state machine's payload stays small and bounded.
    pub fn reply(&self) -> serde_json::Value {
        let tables: Vec<serde_json::Value> = self
            .tables
            .iter()
            .map(|t| {
                serde_json::json!({
                    "table": t.table,
                    "snapshot_id": t.snapshot_id,
                    "manifest_key": t.manifest_key,
                    "newest_change": t.newest_change,
                    "consistent_through": t.consistent_through,
                    "new_rows": t.new_rows,
                    "item_count": t.item_count,
                    "lag_ms": t.lag_ms,
                    "status": t.status,
                    "open_findings": t.open_findings,
                    "findings": t.verify.as_ref().map_or(0, |v| v.findings.len()),
                    // The first few, named (object and problem, cut short): enough to say what
                    // is missing without the report; all of them are in the report.
                    "first_findings": t.verify.as_ref().map_or(vec![], |v| v
                        .findings
                        .iter()
                        .take(REPLY_FINDINGS)
                        .map(|f| serde_json::json!({
                            "kind": f.kind,
                            "object": super::trigger::truncate(&f.object, 300),
                            "problem": super::trigger::truncate(&f.problem, 300),
                        }))
                        .collect()),
                    "ignored": t.ignored,
                    "error": t.error.as_deref().map(|e| super::trigger::truncate(e, REPLY_ERROR_CHARS)),
                    "report_key": t.report_key,
                })
            })
            .collect();
        serde_json::json!({
            "action": self.action,
            "trigger": self.trigger,
            "reason": super::trigger::truncate(&self.reason, REPLY_ERROR_CHARS),
            "status": self.status,
            "ok": self.ok,
            "report_key": self.report_key,
            "tables": tables,
        })
    }
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
    /// Why nothing was done for this table (another run of the same kind holds its lock).
    pub ignored: Option<String>,
    /// Where this outcome is kept in full (key in the backup store), if it was written.
    pub report_key: Option<String>,
}

impl Handler {
    /// The DynamoDB client of `region` (default: the function's own).
    fn dynamodb_in(
        &self,
        region: Option<&String>,
    ) -> Result<aws_sdk_dynamodb::Client, LambdaError> {
        Ok(match (region, &self.aws) {
            (Some(region), Some(aws)) => {
                let conf = aws_sdk_dynamodb::config::Builder::from(aws)
                    .region(aws_sdk_dynamodb::config::Region::new(region.clone()))
                    .build();
                aws_sdk_dynamodb::Client::from_conf(conf)
            }
            _ => self.dynamodb.clone().ok_or_else(|| {
                LambdaError::Config("restore tasks need a DynamoDB client".into())
            })?,
        })
    }

    /// A distributed restore step, or a scheduled checkpoint (then expire).
    pub(super) async fn run_task(&self, task: Task) -> Result<serde_json::Value, LambdaError> {
        use crate::aws::distributed;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            LambdaError::RestoreFailed(format!("{what}: {e} (a rerun resumes)"))
        };
        fn json(v: &impl Serialize) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or_default()
        }
        match task {
            Task::RestorePlan {
                table,
                snapshot,
                target_table,
                region,
                partitions,
            } => {
                let client = self.dynamodb_in(region.as_ref())?;
                let plan = distributed::plan_distributed(
                    &self.store,
                    &client,
                    &table,
                    &snapshot,
                    &target_table,
                    partitions,
                    true,
                )
                .await
                .map_err(|e| failed(&format!("planning {table} into {target_table}"), &e))?;
                tracing::info!(table = %table, snapshot = %plan.snapshot_id, target = %target_table, partitions = plan.partitions, "distributed restore planned");
                let iterations: Vec<serde_json::Value> = (0..plan.partitions)
                    .map(|p| {
                        serde_json::json!({
                            "action": "restore-partition",
                            "table": table,
                            "snapshot": plan.snapshot_id,
                            "target_table": target_table,
                            "region": region,
                            "partition": p,
                            "partitions": plan.partitions,
                        })
                    })
                    .collect();
                Ok(serde_json::json!({
                    "table": table,
                    "snapshot": plan.snapshot_id,
                    "target_table": target_table,
                    "region": region,
                    "partitions": plan.partitions,
                    "checkpoint": plan.checkpoint,
                    "iterations": iterations,
                }))
            }
            Task::RestorePartition {
                table,
                snapshot,
                target_table,
                region,
                partition,
                partitions,
            } => {
                let client = self.dynamodb_in(region.as_ref())?;
                let out = distributed::run_partition(
                    &self.store,
                    &client,
                    &table,
                    &snapshot,
                    &target_table,
                    partition,
                    partitions,
                    &crate::ops::restore::MaterializeOptions::default(),
                    8,
                )
                .await
                .map_err(|e| {
                    failed(
                        &format!("{table} partition {partition}/{partitions} into {target_table}"),
                        &e,
                    )
                })?;
                Ok(json(&out))
            }
            Task::RestoreCheck {
                table,
                snapshot,
                target_table,
                region,
                results,
                budget_seconds,
            } => {
                let client = self.dynamodb_in(region.as_ref())?;
                let out = distributed::check_distributed(
                    &self.store,
                    &client,
                    &table,
                    &snapshot,
                    &target_table,
                    &results,
                    Some(
                        std::time::Instant::now() + std::time::Duration::from_secs(budget_seconds),
                    ),
                    8,
                )
                .await
                .map_err(|e| failed(&format!("checking {table} in {target_table}"), &e))?;
                if out.complete && !out.matches {
                    return Err(LambdaError::RestoreFailed(format!(
                        "{table} snapshot {snapshot} into {target_table}: the table holds {} items, the partitions wrote {}; it does not match",
                        out.target_items, out.items
                    )));
                }
                Ok(json(&out))
            }
            Task::Checkpoint { table } => {
                if !self.seal_tables.is_empty() && !self.seal_tables.contains(&table) {
                    return Err(LambdaError::Config(format!(
                        "checkpoint task: table {table} is not in STREAMSEAL_SEAL_TABLES"
                    )));
                }
                let clock = crate::model::clock::SystemClock;
                let progress = Arc::new(crate::progress::Progress::default());
                let made = crate::ops::checkpoint::checkpoint(
                    &self.store,
                    &table,
                    "latest",
                    &Default::default(),
                    &clock,
                    &progress,
                )
                .await
                .map_err(|e| failed(&format!("checkpoint of {table}"), &e))?;
                let expired = match self.keep_changes_days {
                    Some(days) => Some(
                        crate::ops::checkpoint::expire(
                            &self.store,
                            &table,
                            i64::from(days) * 86_400_000,
                            false,
                            &clock,
                        )
                        .await
                        .map_err(|e| failed(&format!("expire of {table}"), &e))?,
                    ),
                    None => None,
                };
                Ok(serde_json::json!({
                    "table": table,
                    "checkpoint": made.snapshot_id,
                    "existing": made.existing,
                    "items": made.items,
                    "partitions": made.partitions,
                    "expired_objects": expired.as_ref().map(|e| e.objects),
                    "expire_record": expired.and_then(|e| e.record),
                }))
            }
        }
    }

    pub(super) async fn run_restore(
        &self,
        task: RestoreTask,
    ) -> Result<RestoreOutcome, LambdaError> {
        let client = self.dynamodb_in(task.region.as_ref())?;
        let point = crate::ops::restore::Point::Snapshot(task.snapshot.clone());
        let request = crate::aws::restore::Request {
            create_table: true,
            materialize: crate::ops::restore::MaterializeOptions {
                // Lambda's /tmp holds the spill; fine partitions keep each checkpoint step short.
                min_partitions: 64,
                ..Default::default()
            },
            workers: 8,
            deadline: Some(
                std::time::Instant::now() + std::time::Duration::from_secs(task.budget_seconds),
            ),
            ..crate::aws::restore::Request::new(
                &task.table,
                point,
                crate::aws::restore::Target::Dynamo(task.target_table.clone()),
            )
        };
        tracing::info!(table = %task.table, snapshot = %task.snapshot, target = %task.target_table, region = task.region.as_deref().unwrap_or("(own)"), drill = task.drill, reason = task.reason.as_deref().unwrap_or(""), "restore task");
        let report = crate::aws::restore::run(
            &self.store,
            Some(&client),
            &request,
            &crate::progress::Progress::default(),
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
            report_key: String::new(),
        };
        let mut outcome = outcome;
        outcome.report_key = self
            .write_report(&task.table, "restore", &task.target_table, &outcome)
            .await
            .unwrap_or_default();
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

    pub(super) async fn run_trigger(&self, request: Request) -> Result<Outcome, LambdaError> {
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
            report_key: String::new(),
        };
        for table in tables {
            let (mut outcome, lock) = match self.lock(&request, &table).await {
                Lock::Duplicate(why) => (
                    TableOutcome {
                        table: table.clone(),
                        ignored: Some(why),
                        ..Default::default()
                    },
                    None,
                ),
                Lock::Go(key) => (self.seal_and_verify(&request, &table).await, key),
            };
            let status = match (&outcome.error, outcome.status, &outcome.ignored) {
                (None, Some(s), _) => s,
                (None, None, Some(_)) => Status::Ok,
                _ => Status::Corrupt,
            };
            // A run that failed gives its lock back: the next alarm or event of the hour
            // must be able to try again, not be ignored as a duplicate of a failure.
            if status == Status::Corrupt
                && let Some(key) = lock
                && let Err(e) = self.store.delete(&key).await
            {
                tracing::warn!(table, lock = %key, error = %e, "could not release the recovery lock of a failed run; later events of this hour are ignored (start the state machine by hand)");
            }
            if outcome.ignored.is_none() {
                let what = match request.action {
                    Action::Seal => "seal",
                    Action::Verify => "verify",
                };
                outcome.report_key = self
                    .write_report(&table, what, &request.reason, &outcome)
                    .await;
            }
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
        report.report_key = report
            .tables
            .iter()
            .find_map(|t| t.report_key.clone())
            .unwrap_or_default();
        if !report.tables.is_empty() && report.tables.iter().all(|t| t.ignored.is_some()) {
            report.action = "ignore".into();
            report.reason = report.tables[0].ignored.clone().unwrap_or_default();
        }
        if report.ok {
            Ok(Outcome::Trigger(report))
        } else {
            // The summary, not the report: an error's text reaches Step Functions too.
            Err(LambdaError::TriggerFailed(report.reply().to_string()))
        }
    }

    /// Takes the recovery lock of `table` for this request's kind and time window (see
    /// [`super::trigger::Dedupe`]): go on (no de-duplication asked, the lock is taken, or it
    /// is this run's own from a retried call), or why this run is a duplicate. A lock that
    /// cannot be written or read does not stop a recovery: it is logged.
    async fn lock(&self, request: &Request, table: &str) -> Lock {
        let Some(d) = request.dedupe.as_ref() else {
            return Lock::Go(None);
        };
        let now = chrono::Utc::now();
        let window = now.format("%Y-%m-%dT%H").to_string();
        let key = crate::model::layout::TableLayout::new(table).lock_key(d.kind, &window);
        let body = serde_json::json!({
            "owner": d.owner,
            "kind": d.kind,
            "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reason": request.reason,
        });
        let put = self
            .store
            .put(
                &key,
                bytes::Bytes::from(body.to_string()),
                store::PutMode::IfAbsent,
            )
            .await;
        match put {
            Ok(store::PutOutcome::Created) => Lock::Go(Some(key)),
            Ok(store::PutOutcome::AlreadyExists) => {
                let held = match self.store.get(&key).await {
                    Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).ok(),
                    Err(e) => {
                        tracing::warn!(table, lock = %key, error = %e, "could not read the recovery lock; going on");
                        return Lock::Go(None);
                    }
                };
                let owner = held.as_ref().and_then(|h| h["owner"].as_str());
                if owner == Some(d.owner.as_str()) {
                    return Lock::Go(Some(key));
                }
                let at = held
                    .as_ref()
                    .and_then(|h| h["at"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                let why = format!(
                    "another {} run of {table} started at {at} holds this hour's lock {key}; this one is a duplicate",
                    d.kind
                );
                tracing::info!(table, lock = %key, "duplicate recovery run ignored");
                Lock::Duplicate(why)
            }
            Err(e) => {
                tracing::warn!(table, lock = %key, error = %e, "could not take the recovery lock; going on");
                Lock::Go(None)
            }
        }
    }

    /// Writes a task's full report under the table's `reports/` (write-once, a fresh key per
    /// call) and returns its key, or `None` (logged) when it could not be written: the
    /// reply still carries the summary.
    async fn write_report(
        &self,
        table: &str,
        what: &str,
        seed: &str,
        report: &impl Serialize,
    ) -> Option<String> {
        use sha2::Digest as _;
        let now = chrono::Utc::now();
        let body = match serde_json::to_vec_pretty(report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(table, error = %e, "could not encode the task's report");
                return None;
            }
        };
        let mut h = sha2::Sha256::new();
        h.update(seed.as_bytes());
        h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
        h.update(&body);
        let id = &hex::encode(h.finalize())[..12];
        let key = crate::model::layout::TableLayout::new(table).report_key(
            now.timestamp_millis(),
            what,
            id,
        );
        match self
            .store
            .put(&key, bytes::Bytes::from(body), store::PutMode::IfAbsent)
            .await
        {
            Ok(_) => Some(key),
            Err(e) => {
                tracing::warn!(table, report = %key, error = %e, "could not write the task's report");
                None
            }
        }
    }

    pub(super) async fn seal_and_verify(&self, request: &Request, table: &str) -> TableOutcome {
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

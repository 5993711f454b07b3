//! Outage triggers: the events that make the Lambda seal (and verify) instead of ingest.
//!
//! Recognised by shape, not by configuration, so one function can be wired to all of them:
//!
//! | event | shape | action |
//! |---|---|---|
//! | CloudWatch alarm via EventBridge | `source` `aws.cloudwatch`, `detail-type` `CloudWatch Alarm State Change` | seal when `detail.state.value` is `ALARM`; other states are acknowledged and ignored |
//! | AWS Health via EventBridge | `source` `aws.health`, `detail-type` `AWS Health Event` | seal |
//! | manual request via EventBridge | `source` `streamseal`, `detail-type` `Seal Requested`, optional `detail.table` / `detail.tables`, `detail.reason`, `detail.deep` | seal |
//! | Step Functions task input | `{"action": "seal" \| "verify", "table": ..., "tables": [...], "reason": ..., "snapshot": ..., "deep": ...}` | seal, or verify only |
//! | Step Functions restore task | `{"action": "restore", "table": ..., "snapshot": ..., "target_table": ..., "region": ..., "budget_seconds": ..., "drill": ..., "started_at": ..., "rpo_ms": ...}` | restore a snapshot into a DynamoDB table, resumably (see [`RestoreTask`]) |
//! | distributed restore steps | `{"action": "restore-plan" \| "restore-partition" \| "restore-check", ...}` | plan, restore one partition, check (see [`Task`]) |
//! | scheduled checkpoint | `{"action": "checkpoint", "table": ...}` | checkpoint the latest snapshot, then expire changes older than `STREAMSEAL_KEEP_CHANGES_DAYS` |
//!
//! Which tables an event seals: the ones it names, else every table in
//! `STREAMSEAL_SEAL_TABLES`. When that list is set, an event naming a table outside it is
//! refused (a stray or forged event cannot make the function read another table's backup).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What an outage event asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Request {
    /// Seal then verify, or verify only.
    pub action: Action,
    /// Which kind of event asked.
    pub trigger: &'static str,
    /// Tables the event names (empty: the configured ones).
    pub tables: Vec<String>,
    /// Recorded in the manifest.
    pub reason: String,
    /// Snapshot to verify (`verify` only; default latest).
    pub snapshot: Option<String>,
    /// Deep verify instead of quick.
    pub deep: bool,
    /// Runs of the same kind in the same window are de-duplicated: see [`Dedupe`].
    pub dedupe: Option<Dedupe>,
}

/// Who runs a recovery, for de-duplication: several alarms, an AWS Health event and the two
/// stacks' drills may all start executions for one table at once; the first of a kind in a
/// time window takes a write-once lock object and the others answer `ignore`. A retry of the
/// same run (the same owner) goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Dedupe {
    /// `outage` (alarms, AWS Health) or `drill`.
    pub kind: &'static str,
    /// The run's identity: the Step Functions execution, or the EventBridge event's `id`.
    pub owner: String,
}

/// Seal or verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Seal, then verify what was sealed.
    Seal,
    /// Verify an existing snapshot.
    Verify,
}

/// How an event was understood.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    /// Not an outage event (let the caller try other shapes).
    NotATrigger,
    /// An outage event that asks for nothing now (an alarm returning to `OK`).
    Ignore {
        /// Which kind of event.
        trigger: &'static str,
        /// Why nothing is done.
        why: String,
    },
    /// Do this.
    Run(Request),
    /// Restore a snapshot into a DynamoDB table (a Step Functions task).
    Restore(RestoreTask),
    /// A distributed restore step, or a checkpoint.
    Task(Task),
    /// Recognised, but malformed.
    Invalid(String),
}

/// A restore asked for by the recovery state machine or the scheduled drill.
///
/// A Lambda invocation lasts at most 15 minutes and a restore of a large table takes longer,
/// so a task restores for at most `budget_seconds`, checkpointing every finished partition in
/// the backup, and answers `complete: false` when time ran out; the state machine calls it
/// again until it answers `complete: true` (each call resumes from the checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreTask {
    /// Always `restore`.
    pub action: String,
    /// Source table in the backup.
    pub table: String,
    /// Snapshot id, or `latest` (the default).
    #[serde(default = "latest")]
    pub snapshot: String,
    /// DynamoDB table to restore into (created with the recorded key schema if missing).
    pub target_table: String,
    /// Region of the target table (default: the function's region).
    #[serde(default)]
    pub region: Option<String>,
    /// Seconds this invocation may spend writing before it checkpoints and hands back
    /// (default 600; the function's timeout must exceed it by the time one partition takes).
    #[serde(default = "default_budget")]
    pub budget_seconds: u64,
    /// A restore drill: publish the measured RTO and RPO as metrics when complete.
    #[serde(default)]
    pub drill: bool,
    /// When the recovery (or drill) started, RFC 3339: the RTO is measured from here.
    #[serde(default)]
    pub started_at: Option<String>,
    /// The recovery point: how old the newest sealed change was when the seal ran, ms.
    #[serde(default)]
    pub rpo_ms: Option<i64>,
    /// Why (recorded in logs).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The steps of a distributed restore (a Step Functions Distributed Map runs one
/// `restore-partition` per partition between the plan and the check), and the scheduled
/// checkpoint (then expire, when `STREAMSEAL_KEEP_CHANGES_DAYS` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub(crate) enum Task {
    /// Check or create the target, fix the partitions; answers the iterations.
    RestorePlan {
        /// Source table.
        table: String,
        /// Snapshot id, or `latest`.
        #[serde(default = "latest")]
        snapshot: String,
        /// Target table.
        target_table: String,
        /// Target region (default: the function's).
        #[serde(default)]
        region: Option<String>,
        /// Partitions (default: the checkpoint's).
        #[serde(default)]
        partitions: Option<usize>,
    },
    /// Restore one partition.
    RestorePartition {
        /// Source table.
        table: String,
        /// Snapshot id (as the plan resolved it).
        snapshot: String,
        /// Target table.
        target_table: String,
        /// Target region.
        #[serde(default)]
        region: Option<String>,
        /// Which partition.
        partition: usize,
        /// Of how many.
        partitions: usize,
    },
    /// Combine the partitions' results and scan the table.
    RestoreCheck {
        /// Source table.
        table: String,
        /// Snapshot id.
        snapshot: String,
        /// Target table.
        target_table: String,
        /// Target region.
        #[serde(default)]
        region: Option<String>,
        /// Every partition's answer.
        results: Vec<crate::aws::distributed::PartitionOutcome>,
        /// Seconds of scanning per call.
        #[serde(default = "default_budget")]
        budget_seconds: u64,
    },
    /// Checkpoint the latest snapshot, then expire what the retention allows.
    Checkpoint {
        /// Table.
        table: String,
    },
}

impl Task {
    fn check(&self) -> Result<(), String> {
        let (table, target, region) = match self {
            Task::RestorePlan {
                table,
                target_table,
                region,
                ..
            }
            | Task::RestorePartition {
                table,
                target_table,
                region,
                ..
            }
            | Task::RestoreCheck {
                table,
                target_table,
                region,
                ..
            } => (table, Some(target_table), region.as_ref()),
            Task::Checkpoint { table } => (table, None, None),
        };
        crate::model::change::validate_table_name(table)
            .map_err(|e| format!("task: table {table:?}: {e}"))?;
        if let Some(t) = target {
            crate::model::change::validate_table_name(t)
                .map_err(|e| format!("task: target_table {t:?}: {e}"))?;
            if t == table {
                return Err(format!(
                    "task: target_table {t:?} is the source table's name; restore into a new table"
                ));
            }
        }
        if let Some(r) = region
            && (r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!("task: region {r:?} is not a region name"));
        }
        match self {
            Task::RestorePartition {
                partition,
                partitions,
                ..
            } if *partition >= *partitions
                || *partitions > crate::aws::distributed::MAX_PARTITIONS =>
            {
                Err(format!(
                    "task: partition {partition} of {partitions} does not exist (at most {} partitions)",
                    crate::aws::distributed::MAX_PARTITIONS
                ))
            }
            Task::RestoreCheck { budget_seconds, .. } if !(10..=890).contains(budget_seconds) => {
                Err(format!(
                    "task: budget_seconds {budget_seconds} is not from 10 to 890"
                ))
            }
            _ => Ok(()),
        }
    }
}

fn latest() -> String {
    "latest".into()
}

fn default_budget() -> u64 {
    600
}

impl RestoreTask {
    fn check(&self) -> Result<(), String> {
        crate::model::change::validate_table_name(&self.table)
            .map_err(|e| format!("restore task: table {:?}: {e}", self.table))?;
        crate::model::change::validate_table_name(&self.target_table)
            .map_err(|e| format!("restore task: target_table {:?}: {e}", self.target_table))?;
        if self.target_table == self.table {
            return Err(format!(
                "restore task: target_table {:?} is the source table's name; restore into a new table",
                self.target_table
            ));
        }
        if !(10..=890).contains(&self.budget_seconds) {
            return Err(format!(
                "restore task: budget_seconds {} is not from 10 to 890 (a Lambda invocation lasts at most 900 s)",
                self.budget_seconds
            ));
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!("restore task: region {r:?} is not a region name"));
        }
        if let Some(t) = &self.started_at {
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("restore task: started_at {t:?} is not RFC 3339: {e}"))?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    source: Option<String>,
    #[serde(rename = "detail-type", default)]
    detail_type: Option<String>,
    #[serde(borrow, default)]
    detail: Option<&'a RawValue>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    action: Option<serde_json::Value>,
    #[serde(default)]
    id: Option<String>,
    /// The Step Functions execution passing the event on (`$$.Execution.Id`).
    #[serde(default)]
    execution: Option<String>,
}

#[derive(Deserialize, Default)]
struct Targets {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    deep: Option<bool>,
    #[serde(default)]
    snapshot: Option<String>,
    /// A drill's seal (de-duplicated with other drills of the table).
    #[serde(default)]
    drill: Option<bool>,
    /// The Step Functions execution that asks (`$$.Execution.Id`), for de-duplication.
    #[serde(default)]
    execution: Option<String>,
}

impl Targets {
    fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self.tables.clone().unwrap_or_default();
        t.extend(self.table.clone());
        t
    }
}

/// Recognises an outage event.
pub(crate) fn parse(payload: &RawValue) -> Parsed {
    let Ok(env) = serde_json::from_str::<Envelope>(payload.get()) else {
        return Parsed::NotATrigger;
    };
    let region = env.region.clone().unwrap_or_default();
    match (env.source.as_deref(), env.detail_type.as_deref()) {
        (Some("aws.cloudwatch"), Some("CloudWatch Alarm State Change")) => {
            #[derive(Deserialize)]
            struct Detail {
                #[serde(rename = "alarmName")]
                alarm_name: String,
                state: State,
            }
            #[derive(Deserialize)]
            struct State {
                value: String,
                #[serde(default)]
                reason: Option<String>,
            }
            let trigger = "cloudwatch-alarm";
            let Some(detail) = env.detail else {
                return Parsed::Invalid("alarm state change without detail".into());
            };
            match serde_json::from_str::<Detail>(detail.get()) {
                Err(e) => Parsed::Invalid(format!(
                    "alarm state change detail lacks alarmName/state.value: {e}"
                )),
                Ok(d) if d.state.value != "ALARM" => Parsed::Ignore {
                    trigger,
                    why: format!("alarm {} is now {}, not ALARM", d.alarm_name, d.state.value),
                },
                Ok(d) => Parsed::Run(Request {
                    action: Action::Seal,
                    trigger,
                    tables: vec![],
                    reason: format!(
                        "CloudWatch alarm {} entered ALARM{}{}",
                        d.alarm_name,
                        if region.is_empty() {
                            String::new()
                        } else {
                            format!(" in {region}")
                        },
                        d.state
                            .reason
                            .map(|r| format!(": {}", truncate(&r, 300)))
                            .unwrap_or_default()
                    ),
                    snapshot: None,
                    deep: false,
                    dedupe: outage(&env),
                }),
            }
        }
        (Some("aws.health"), Some("AWS Health Event")) => {
            #[derive(Deserialize)]
            struct Detail {
                #[serde(default)]
                service: Option<String>,
                #[serde(rename = "eventTypeCode", default)]
                event_type_code: Option<String>,
                #[serde(rename = "eventArn", default)]
                event_arn: Option<String>,
            }
            let d = env
                .detail
                .and_then(|d| serde_json::from_str::<Detail>(d.get()).ok());
            let Some(d) = d else {
                return Parsed::Invalid("AWS Health event without a readable detail".into());
            };
            Parsed::Run(Request {
                action: Action::Seal,
                trigger: "aws-health",
                tables: vec![],
                reason: format!(
                    "AWS Health {} for {}{} ({})",
                    d.event_type_code.as_deref().unwrap_or("event"),
                    d.service.as_deref().unwrap_or("an AWS service"),
                    if region.is_empty() {
                        String::new()
                    } else {
                        format!(" in {region}")
                    },
                    d.event_arn.as_deref().unwrap_or("no event ARN")
                ),
                snapshot: None,
                deep: false,
                dedupe: outage(&env),
            })
        }
        (Some("streamseal"), Some("Seal Requested")) => {
            let t = match env.detail.map(|d| serde_json::from_str::<Targets>(d.get())) {
                None => Targets::default(),
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    return Parsed::Invalid(format!(
                        "Seal Requested detail must be {{\"table\"|\"tables\", \"reason\", \"deep\"}}: {e}"
                    ));
                }
            };
            Parsed::Run(Request {
                action: Action::Seal,
                trigger: "seal-requested",
                tables: t.tables(),
                reason: t
                    .reason
                    .clone()
                    .unwrap_or_else(|| "Seal Requested event".into()),
                snapshot: None,
                deep: t.deep.unwrap_or(false),
                // Asked for by hand: always run.
                dedupe: None,
            })
        }
        _ => match env.action {
            None => Parsed::NotATrigger,
            Some(action) => {
                let action = match action.as_str() {
                    Some("seal") => Action::Seal,
                    Some("verify") => Action::Verify,
                    Some("restore") => {
                        return match serde_json::from_str::<RestoreTask>(payload.get()) {
                            Err(e) => Parsed::Invalid(format!(
                                "restore task input must be {{\"action\": \"restore\", \"table\", \"target_table\", \"snapshot\", \"region\", \"budget_seconds\", \"drill\", \"started_at\", \"rpo_ms\", \"reason\"}}: {e}"
                            )),
                            Ok(task) => match task.check() {
                                Ok(()) => Parsed::Restore(task),
                                Err(why) => Parsed::Invalid(why),
                            },
                        };
                    }
                    Some("restore-plan" | "restore-partition" | "restore-check" | "checkpoint") => {
                        return match serde_json::from_str::<Task>(payload.get()) {
                            Err(e) => Parsed::Invalid(format!("task input {action}: {e}")),
                            Ok(task) => match task.check() {
                                Ok(()) => Parsed::Task(task),
                                Err(why) => Parsed::Invalid(why),
                            },
                        };
                    }
                    _ => {
                        return Parsed::Invalid(format!(
                            "task input action {action} is not \"seal\", \"verify\", \"restore\", \"restore-plan\", \"restore-partition\", \"restore-check\" or \"checkpoint\""
                        ));
                    }
                };
                let t = match serde_json::from_str::<Targets>(payload.get()) {
                    Ok(t) => t,
                    Err(e) => {
                        return Parsed::Invalid(format!(
                            "task input must be {{\"action\", \"table\"|\"tables\", \"reason\", \"snapshot\", \"deep\"}}: {e}"
                        ));
                    }
                };
                Parsed::Run(Request {
                    action,
                    trigger: "step-functions",
                    tables: t.tables(),
                    reason: t
                        .reason
                        .clone()
                        .unwrap_or_else(|| "Step Functions task".into()),
                    snapshot: t.snapshot.clone(),
                    deep: t.deep.unwrap_or(false),
                    // Drills are de-duplicated among themselves; a seal asked for by hand runs.
                    dedupe: match (t.drill, &t.execution) {
                        (Some(true), Some(execution)) if action == Action::Seal => Some(Dedupe {
                            kind: "drill",
                            owner: execution.clone(),
                        }),
                        _ => None,
                    },
                })
            }
        },
    }
}

/// An outage event's de-duplication: by the execution passing it on, else by its EventBridge
/// `id` (an event delivered twice to the state machine starts two executions: one runs).
fn outage(env: &Envelope) -> Option<Dedupe> {
    env.execution
        .as_ref()
        .or(env.id.as_ref())
        .filter(|id| !id.is_empty())
        .map(|id| Dedupe {
            kind: "outage",
            owner: id.clone(),
        })
}

/// The tables a request applies to, given `STREAMSEAL_SEAL_TABLES`.
pub(crate) fn resolve_tables(
    request: &Request,
    configured: &[String],
) -> Result<Vec<String>, String> {
    if request.tables.is_empty() {
        if configured.is_empty() {
            return Err(format!(
                "the {} event names no table and STREAMSEAL_SEAL_TABLES is not set; set it to the tables to seal (comma-separated)",
                request.trigger
            ));
        }
        return Ok(configured.to_vec());
    }
    for t in &request.tables {
        crate::model::change::validate_table_name(t).map_err(|e| format!("table {t:?}: {e}"))?;
        if !configured.is_empty() && !configured.contains(t) {
            return Err(format!(
                "table {t} is not in STREAMSEAL_SEAL_TABLES ({}); refusing",
                configured.join(",")
            ));
        }
    }
    Ok(request.tables.clone())
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Parsed {
        parse(&RawValue::from_string(s.to_owned()).unwrap())
    }

    #[test]
    fn shapes() {
        assert_eq!(p(r#"{"Records":[]}"#), Parsed::NotATrigger);
        assert!(matches!(
            p(
                r#"{"source":"aws.cloudwatch","detail-type":"CloudWatch Alarm State Change","detail":{"alarmName":"a","state":{"value":"OK"}}}"#
            ),
            Parsed::Ignore { .. }
        ));
        assert!(matches!(
            p(
                r#"{"source":"aws.cloudwatch","detail-type":"CloudWatch Alarm State Change","detail":{}}"#
            ),
            Parsed::Invalid(_)
        ));
        let Parsed::Run(r) = p(r#"{"action":"verify","table":"orders","deep":true}"#) else {
            panic!()
        };
        assert_eq!(
            (r.action, r.tables.as_slice(), r.deep),
            (Action::Verify, &["orders".to_owned()][..], true)
        );
        assert!(matches!(p(r#"{"action":"dump"}"#), Parsed::Invalid(_)));
        let Parsed::Restore(r) =
            p(r#"{"action":"restore","table":"orders","target_table":"orders-dr"}"#)
        else {
            panic!()
        };
        assert_eq!((r.snapshot.as_str(), r.budget_seconds), ("latest", 600));
        for bad in [
            r#"{"action":"restore","table":"orders"}"#,
            r#"{"action":"restore","table":"orders","target_table":"orders"}"#,
            r#"{"action":"restore","table":"orders","target_table":"x-dr","budget_seconds":5000}"#,
            r#"{"action":"restore","table":"orders","target_table":"x-dr","region":"Moon 1"}"#,
            r#"{"action":"restore","table":"orders","target_table":"x-dr","started_at":"noon"}"#,
            r#"{"action":"restore","table":"orders","target_table":"x-dr","surprise":1}"#,
        ] {
            assert!(matches!(p(bad), Parsed::Invalid(_)), "{bad}");
        }
        assert!(matches!(
            p(r#"{"action":"seal","table":7}"#),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn tables_are_confined_to_the_configured_list() {
        let Parsed::Run(r) = p(
            r#"{"source":"streamseal","detail-type":"Seal Requested","detail":{"table":"other"}}"#,
        ) else {
            panic!()
        };
        assert!(resolve_tables(&r, &["orders".into()]).is_err());
        assert_eq!(resolve_tables(&r, &[]).unwrap(), ["other"]);
        let Parsed::Run(r) = p(
            r#"{"source":"aws.health","detail-type":"AWS Health Event","detail":{"service":"DYNAMODB"}}"#,
        ) else {
            panic!()
        };
        assert!(resolve_tables(&r, &[]).is_err());
        assert_eq!(
            resolve_tables(&r, &["a".into(), "b".into()]).unwrap(),
            ["a", "b"]
        );
    }
}

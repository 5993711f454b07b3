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
//!
//! Which tables an event seals: the ones it names, else every table in
//! `STREAMSEAL_SEAL_TABLES`. When that list is set, an event naming a table outside it is
//! refused (a stray or forged event cannot make the function read another table's backup).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What an outage event asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
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
}

/// Seal or verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Seal, then verify what was sealed.
    Seal,
    /// Verify an existing snapshot.
    Verify,
}

/// How an event was understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
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
    /// Recognised, but malformed.
    Invalid(String),
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
}

impl Targets {
    fn tables(&self) -> Vec<String> {
        let mut t: Vec<String> = self.tables.clone().unwrap_or_default();
        t.extend(self.table.clone());
        t
    }
}

/// Recognises an outage event.
pub fn parse(payload: &RawValue) -> Parsed {
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
            })
        }
        _ => match env.action {
            None => Parsed::NotATrigger,
            Some(action) => {
                let action = match action.as_str() {
                    Some("seal") => Action::Seal,
                    Some("verify") => Action::Verify,
                    _ => {
                        return Parsed::Invalid(format!(
                            "task input action {action} is not \"seal\" or \"verify\""
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
                })
            }
        },
    }
}

/// The tables a request applies to, given `STREAMSEAL_SEAL_TABLES`.
pub fn resolve_tables(request: &Request, configured: &[String]) -> Result<Vec<String>, String> {
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
        crate::change::validate_table_name(t).map_err(|e| format!("table {t:?}: {e}"))?;
        if !configured.is_empty() && !configured.contains(t) {
            return Err(format!(
                "table {t} is not in STREAMSEAL_SEAL_TABLES ({}); refusing",
                configured.join(",")
            ));
        }
    }
    Ok(request.tables.clone())
}

fn truncate(s: &str, max: usize) -> &str {
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

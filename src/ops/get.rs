//! `streamseal get`: one item's state at a snapshot or an instant, or its whole change history,
//! without materializing the table.
//!
//! The lookup runs the restore's materializer restricted to one key: from a state checkpoint
//! it reads only the file of the key's partition, then the segments sealed after it (keeping
//! the key's rows); `--history` reads the whole chain. The result is the same rule as a
//! restore (latest change by sequence number, REMOVEs remove, quarantined records named), so
//! `get` and a restore never disagree. The report says how many objects were read.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::model::schema::{KeySchema, KeyType};
use crate::ops::restore::{self, Item, KeyChange, MaterializeOptions, Point, RestoreError, Sink};
use crate::progress::Progress;
use crate::store::ObjectStore;

/// What [`get`] found.
#[derive(Debug, Clone, Serialize)]
pub struct GetReport {
    /// Table.
    pub table: String,
    /// The snapshot whose chain was read.
    pub snapshot_id: String,
    /// The instant, for `--as-of`.
    pub as_of: Option<String>,
    /// The key (canonical JSON).
    pub key: String,
    /// The item (canonical DynamoDB JSON); none: no such item at that point.
    pub item: Option<String>,
    /// The sequence number of the change that wrote it (`0`: from a base, untouched since).
    pub sequence_number: Option<String>,
    /// When the key's latest change is a quarantined record that cannot be written: where the
    /// record is kept (the item is then unknown, not absent).
    pub quarantined: Option<String>,
    /// Every change of the key up to the point, oldest first (`--history`).
    pub history: Vec<KeyChange>,
    /// The state checkpoint the lookup started from, if any.
    pub checkpoint: Option<String>,
    /// Objects read for this lookup.
    pub objects_read: u64,
    /// Objects a full restore of the same point would read.
    pub objects_in_plan: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// Keeps what the materializer hands over (at most one item).
struct One(std::sync::Mutex<Vec<Item>>);

#[async_trait::async_trait]
impl Sink for One {
    async fn partition(
        &self,
        _: usize,
        _: usize,
        items: Vec<Item>,
    ) -> Result<(), restore::SinkError> {
        if let Ok(mut v) = self.0.lock() {
            v.extend(items);
        }
        Ok(())
    }
}

/// The key `text` (DynamoDB JSON) in canonical form, checked against `schema` when known.
pub fn parse_key(text: &str, schema: Option<&KeySchema>) -> Result<String, RestoreError> {
    let bad = |why: String| RestoreError::Target(format!("--key {text}: {why}"));
    let canonical = crate::model::item::canonicalize(text)
        .map_err(|e| bad(format!("not a DynamoDB JSON key: {e}")))?;
    let Some(schema) = schema else {
        return Ok(canonical);
    };
    let v: serde_json::Value = serde_json::from_str(&canonical).map_err(|e| bad(e.to_string()))?;
    let map = v.as_object().cloned().unwrap_or_default();
    let wanted: Vec<_> = std::iter::once(&schema.partition)
        .chain(schema.sort.as_ref())
        .collect();
    let describe = wanted
        .iter()
        .map(|a| format!("{} ({:?})", a.name, a.key_type))
        .collect::<Vec<_>>()
        .join(", ");
    if map.len() != wanted.len() {
        return Err(bad(format!(
            "the table's key is {describe}; give exactly those attributes"
        )));
    }
    for a in wanted {
        let tag = match a.key_type {
            KeyType::S => "S",
            KeyType::N => "N",
            KeyType::B => "B",
        };
        if map.get(&a.name).and_then(|v| v.get(tag)).is_none() {
            return Err(bad(format!(
                "the table's key is {describe}; {} is missing or not of type {tag}",
                a.name
            )));
        }
    }
    Ok(canonical)
}

/// The item under `key` at `point` (and, with `history`, every change of it).
pub async fn get(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    key: &str,
    point: &Point,
    history: bool,
) -> Result<GetReport, RestoreError> {
    let started = Instant::now();
    // The history needs every change: the whole chain, not a checkpoint.
    let plan = restore::plan_with(store.as_ref(), table, point, !history).await?;
    let key = parse_key(key, plan.manifest.key_schema.as_ref())?;
    let options = MaterializeOptions {
        only_key: Some(key.clone()),
        history,
        ..Default::default()
    };
    let sink = One(Default::default());
    let m = restore::materialize(store, &plan, &options, &sink, &Progress::default()).await?;
    let found = sink.0.into_inner().unwrap_or_default().into_iter().next();
    let objects_in_plan =
        plan.base.len() as u64 + plan.checkpoint.as_ref().map_or(0, |c| c.files.len() as u64) + {
            let mut stored: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for s in &plan.segments {
                stored.insert(
                    plan.replaced
                        .get(&s.key)
                        .map_or(s.key.as_str(), |r| r.key.as_str()),
                );
            }
            stored.len() as u64
        };
    Ok(GetReport {
        table: table.to_owned(),
        snapshot_id: plan.manifest.snapshot_id.clone(),
        as_of: plan.as_of_ms.map(crate::model::clock::rfc3339),
        key,
        sequence_number: found.as_ref().map(|i| i.sequence_number.clone()),
        item: found.map(|i| i.item),
        quarantined: m.quarantined.first().map(|q| q.object.clone()),
        history: m.history,
        checkpoint: plan.checkpoint.as_ref().map(|c| c.snapshot_id.clone()),
        objects_read: m.objects_read,
        objects_in_plan,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

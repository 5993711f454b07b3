//! The stream's shard map, kept in the backup store (`<table>/shards/<stream-label>.json`) by
//! `tail` and by the Lambda, so that sealing during a regional outage can attribute segments to
//! shards (by sequence range) without calling the stream API of the failed region.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::model::layout::TableLayout;
use crate::store::{ObjectStore, PutMode, StoreError};

/// One shard of the stream, as the shard map records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard id.
    pub shard_id: String,
    /// Parent shard, if any.
    pub parent_shard_id: Option<String>,
    /// First sequence number.
    pub starting_sequence: Option<String>,
    /// Last sequence number (closed shards).
    pub ending_sequence: Option<String>,
}

/// The table's key attribute names by role, as DescribeStream reports them (the stream knows
/// which attribute is the partition key; the types come from the captured keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRoles {
    /// The HASH attribute.
    pub partition: String,
    /// The RANGE attribute, if any.
    pub sort: Option<String>,
}

/// The stream's shard map (`<table>/shards/<stream-label>.json`), so a seal during a regional
/// outage can attribute segments to shards without calling the stream API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMap {
    /// Stream ARN.
    pub stream_arn: String,
    /// When it was read (RFC 3339).
    pub read_at: String,
    /// Shards, parents before children.
    pub shards: Vec<ShardInfo>,
    /// The table's key roles (lets a seal record the key schema without a schema file, so a
    /// restore can create the table).
    #[serde(default)]
    pub key: Option<KeyRoles>,
    /// The table's definition (DescribeTable and DescribeTimeToLive, when the writer may call
    /// them): a seal carries it into the manifest, so a restore can recreate the table as it
    /// was, indexes included, without a schema file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::model::definition::TableDefinition>,
}

/// The newest definition the shard maps record (by when each map was read), if any.
pub fn newest_definition(maps: &[ShardMap]) -> Option<crate::model::definition::TableDefinition> {
    maps.iter()
        .filter_map(|m| m.definition.as_ref())
        .max_by(|a, b| a.described_at.cmp(&b.described_at))
        .cloned()
}

/// Orders shards so that every parent comes before its children (a parent missing from the
/// map, trimmed away after 24 hours, counts as done).
pub fn parents_first(shards: &[ShardInfo]) -> Vec<ShardInfo> {
    let ids: HashMap<&str, &ShardInfo> = shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let mut out: Vec<ShardInfo> = vec![];
    let mut placed: std::collections::HashSet<String> = Default::default();
    fn place(
        s: &ShardInfo,
        ids: &HashMap<&str, &ShardInfo>,
        placed: &mut std::collections::HashSet<String>,
        out: &mut Vec<ShardInfo>,
        depth: usize,
    ) {
        if placed.contains(&s.shard_id) || depth > 10_000 {
            return;
        }
        if let Some(p) = s.parent_shard_id.as_deref().and_then(|p| ids.get(p)) {
            place(p, ids, placed, out, depth + 1);
        }
        placed.insert(s.shard_id.clone());
        out.push(s.clone());
    }
    for s in shards {
        place(s, &ids, &mut placed, &mut out, 0);
    }
    out
}

/// Why the shard maps could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ShardMapError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A kept shard map is not one.
    #[error("shard map {key} is unreadable: {source}")]
    Unreadable {
        /// Its key.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// Writes the shard map of stream `arn` (`<table>/shards/<stream-label>.json`, rewritten).
pub async fn save_shard_map(
    store: &dyn ObjectStore,
    table: &str,
    arn: &str,
    shards: &[ShardInfo],
    key: Option<&KeyRoles>,
    definition: Option<&crate::model::definition::TableDefinition>,
) -> Result<(), StoreError> {
    let map = ShardMap {
        stream_arn: arn.to_owned(),
        read_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        shards: shards.to_vec(),
        key: key.cloned(),
        definition: definition.cloned(),
    };
    let label = arn
        .rsplit('/')
        .next()
        .unwrap_or("stream")
        .replace([':', '/'], "-");
    // A struct of strings always serializes.
    let body = serde_json::to_vec(&map).unwrap_or_default();
    store
        .put(
            &TableLayout::new(table).shard_map_key(&label),
            Bytes::from(body),
            PutMode::Overwrite,
        )
        .await
        .map(|_| ())
}

/// Every shard map kept for a table. A store failure or an unreadable map is an error: a seal
/// that attributes segments to shards must not silently do it with part of the maps.
pub async fn load_shard_maps(
    store: &dyn ObjectStore,
    table: &str,
) -> Result<Vec<ShardMap>, ShardMapError> {
    let list = store
        .list(&TableLayout::new(table).shards_prefix(), None, None)
        .await?;
    let mut out = vec![];
    for m in list {
        let body = store.get(&m.key).await?;
        let map = serde_json::from_slice::<ShardMap>(&body).map_err(|source| {
            ShardMapError::Unreadable {
                key: m.key.clone(),
                source,
            }
        })?;
        out.push(map);
    }
    Ok(out)
}

/// The key schema of a table from its shard maps' key roles and one captured key (DynamoDB
/// JSON, `{"pk": {"S": ...}, ...}`) for the attribute types. `None` when no map records roles
/// or the key does not have exactly those attributes with key types.
pub(crate) fn key_schema_of(
    maps: &[ShardMap],
    key_json: &str,
) -> Option<crate::model::schema::KeySchema> {
    use crate::model::schema::{KeyAttribute, KeySchema, KeyType};
    let roles = maps.iter().find_map(|m| m.key.clone())?;
    let key: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key_json).ok()?;
    if key.len() != 1 + usize::from(roles.sort.is_some()) {
        return None;
    }
    let attr = |name: &str| -> Option<KeyAttribute> {
        let value = key.get(name)?.as_object()?;
        let key_type = match value.keys().next()?.as_str() {
            "S" => KeyType::S,
            "N" => KeyType::N,
            "B" => KeyType::B,
            _ => return None,
        };
        Some(KeyAttribute {
            name: name.to_owned(),
            key_type,
        })
    };
    Some(KeySchema {
        partition: attr(&roles.partition)?,
        sort: match &roles.sort {
            Some(s) => Some(attr(s)?),
            None => None,
        },
    })
}

/// The shard of a segment whose first and last sequence numbers lie in exactly one shard's
/// range in the map of `arn` (closed shards have an end; open ones do not). `None` when no map
/// covers it or ranges are ambiguous.
pub(crate) fn attribute(
    maps: &[ShardMap],
    arn: Option<&str>,
    first: &str,
    last: &str,
) -> Option<String> {
    let arn = arn?;
    let map = maps.iter().find(|m| m.stream_arn == arn)?;
    let le = |a: &str, b: &str| crate::model::change::SequenceNumber::cmp_text(a, b).is_le();
    let mut hits = map.shards.iter().filter(|s| {
        s.starting_sequence
            .as_deref()
            .is_some_and(|start| le(start, first))
            && s.ending_sequence.as_deref().is_none_or(|end| le(last, end))
    });
    let hit = hits.next()?;
    hits.next().is_none().then(|| hit.shard_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(id: &str, start: &str, end: Option<&str>) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_id: None,
            starting_sequence: Some(start.into()),
            ending_sequence: end.map(Into::into),
        }
    }

    #[test]
    fn segments_are_attributed_by_sequence_range() {
        let maps = vec![ShardMap {
            stream_arn: "arn:s".into(),
            read_at: String::new(),
            shards: vec![ranged("a", "100", Some("199")), ranged("b", "200", None)],
            key: None,
            definition: None,
        }];
        assert_eq!(
            attribute(&maps, Some("arn:s"), "120", "150"),
            Some("a".into())
        );
        assert_eq!(
            attribute(&maps, Some("arn:s"), "250", "1000"),
            Some("b".into())
        );
        assert_eq!(
            attribute(&maps, Some("arn:s"), "150", "250"),
            None,
            "spans two"
        );
        assert_eq!(attribute(&maps, Some("arn:other"), "120", "150"), None);
        assert_eq!(attribute(&maps, None, "120", "150"), None);
    }

    fn s(id: &str, parent: Option<&str>) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_id: parent.map(Into::into),
            starting_sequence: None,
            ending_sequence: None,
        }
    }

    #[test]
    fn key_schemas_come_from_roles_and_a_captured_key() {
        use crate::model::schema::KeyType;
        let mut map = ShardMap {
            stream_arn: "arn:s".into(),
            read_at: String::new(),
            shards: vec![],
            key: None,
            definition: None,
        };
        let key = r#"{"sk":{"N":"7"},"pk":{"S":"a"}}"#;
        assert_eq!(key_schema_of(std::slice::from_ref(&map), key), None);
        map.key = Some(KeyRoles {
            partition: "pk".into(),
            sort: Some("sk".into()),
        });
        let k = key_schema_of(std::slice::from_ref(&map), key).unwrap();
        assert_eq!(
            (k.partition.name.as_str(), k.partition.key_type),
            ("pk", KeyType::S)
        );
        assert_eq!(k.sort.unwrap().key_type, KeyType::N);
        assert_eq!(key_schema_of(&[map.clone()], r#"{"pk":{"S":"a"}}"#), None);
        assert_eq!(
            key_schema_of(&[map], r#"{"pk":{"BOOL":true},"sk":{"N":"1"}}"#),
            None
        );
    }

    #[test]
    fn parents_come_before_children() {
        // A split (c1, c2 from p) listed children first, and a grandchild.
        let shards = vec![
            s("g", Some("c1")),
            s("c2", Some("p")),
            s("c1", Some("p")),
            s("p", None),
            s("orphan", Some("trimmed")),
        ];
        let order: Vec<String> = parents_first(&shards)
            .into_iter()
            .map(|s| s.shard_id)
            .collect();
        let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
        assert!(pos("p") < pos("c1") && pos("p") < pos("c2") && pos("c1") < pos("g"));
        assert_eq!(order.len(), 5);
    }
}

//! How the source table is defined, as DynamoDB describes it: key schema with its attribute
//! types, billing mode, secondary indexes, time-to-live attribute and stream settings.
//!
//! The capture records it (the Lambda with DescribeTable and DescribeTimeToLive, kept with
//! the shard map), a seal carries it into the manifest, and `restore --create-table` recreates
//! the table from it as it was, indexes included, with no schema file. Values are DynamoDB's
//! own names (`PAY_PER_REQUEST`, `KEYS_ONLY`, `NEW_AND_OLD_IMAGES`, ...), so a newer value
//! than this version knows is kept as it is rather than refused.

use serde::{Deserialize, Serialize};

use crate::model::schema::{KeySchema, KeyType};

/// A table's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDefinition {
    /// The primary key, with its attributes' types.
    pub key: KeySchema,
    /// Every attribute definition (the table's and its indexes' key attributes).
    pub attributes: Vec<AttributeDefinition>,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing_mode: String,
    /// Provisioned read and write capacity units (provisioned tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// Global secondary indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub global_indexes: Vec<Index>,
    /// Local secondary indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_indexes: Vec<Index>,
    /// The time-to-live attribute, when TTL is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_attribute: Option<String>,
    /// The stream's view type, when the stream is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_view_type: Option<String>,
    /// When DynamoDB was asked (RFC 3339).
    pub described_at: String,
}

/// One attribute definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeDefinition {
    /// Attribute name.
    pub name: String,
    /// Its scalar type.
    #[serde(rename = "type")]
    pub attribute_type: KeyType,
}

/// Provisioned capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    /// Read capacity units.
    pub read: i64,
    /// Write capacity units.
    pub write: i64,
}

/// A secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Index name.
    pub name: String,
    /// Its partition (HASH) attribute.
    pub partition: String,
    /// Its sort (RANGE) attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// The projected attributes of an `INCLUDE` projection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_key_attributes: Vec<String>,
    /// Provisioned capacity (global indexes of provisioned tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
}

impl TableDefinition {
    /// Checks the definition is one a table can be created from: every key attribute of the
    /// table and its indexes has a definition, the table key agrees with it.
    pub(crate) fn check(&self) -> Result<(), String> {
        let typed = |name: &str| {
            self.attributes
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.attribute_type)
        };
        for k in std::iter::once(&self.key.partition).chain(self.key.sort.as_ref()) {
            if typed(&k.name) != Some(k.key_type) {
                return Err(format!(
                    "key attribute {} has no matching attribute definition",
                    k.name
                ));
            }
        }
        for i in self.global_indexes.iter().chain(&self.local_indexes) {
            for a in std::iter::once(&i.partition).chain(i.sort.as_ref()) {
                if typed(a).is_none() {
                    return Err(format!(
                        "index {}'s key attribute {a} has no attribute definition",
                        i.name
                    ));
                }
            }
        }
        Ok(())
    }
}

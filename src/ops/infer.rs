//! `streamseal schema infer`: propose a schema file from captured images.
//!
//! Reads the images of a sample of segments (the latest snapshot's own segments, else the first
//! segments under `changes/`), tallies the DynamoDB type of every attribute path (top level and
//! inside maps, down to 3 levels), and proposes a typed column for each path present in at
//! least half the images with one dominant type: S → `string` (or `date` / `timestamp` when
//! every value is an ISO date / date-time), N → `bigint` when every value is an integer that
//! fits 64 bits, else `decimal(38,s)` when the scale fits, else `double`; BOOL → `boolean`.
//! The key attributes come from the `keys` column; which one is the partition key cannot be
//! told from the data, so the proposal says so. The output parses as a schema file.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, StringArray};
use serde_json::Value;

use crate::model::layout::TableLayout;
use crate::model::manifest;
use crate::store::{self, ObjectStore};

#[derive(Default, Debug)]
struct Tally {
    seen: u64,
    s: u64,
    n: u64,
    b: u64,
    other: u64,
    s_date: u64,
    s_datetime: u64,
    n_int64: u64,
    max_scale: usize,
}

/// Why no schema could be proposed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The latest snapshot cannot be read.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Nothing to sample.
    #[error("no segments of table {table} in {store}; capture some changes first")]
    NoSegments {
        /// The table.
        table: String,
        /// The store's URL.
        store: String,
    },
    /// A segment cannot be read.
    #[error("segment {key}: {problem}")]
    Segment {
        /// Its key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Proposes a schema file for `table` from up to `max_segments` segments.
pub async fn infer(
    store: &Arc<dyn ObjectStore>,
    table: &str,
    max_segments: usize,
) -> Result<String, InferError> {
    let layout = TableLayout::new(table);
    let mut keys: Vec<String> = match manifest::latest_snapshot_id(store.as_ref(), &layout).await? {
        Some(id) => {
            let m = manifest::read_manifest(store.as_ref(), &layout, &id).await?;
            manifest::read_files(store.as_ref(), &m)
                .await?
                .segments
                .into_iter()
                .rev()
                .map(|s| s.key)
                .collect()
        }
        None => vec![],
    };
    if keys.is_empty() {
        keys = store
            .list(&layout.changes_prefix(), None, Some(max_segments))
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
    }
    keys.truncate(max_segments.max(1));
    if keys.is_empty() {
        return Err(InferError::NoSegments {
            table: table.to_owned(),
            store: store.url(),
        });
    }
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut key_attrs: BTreeMap<String, String> = BTreeMap::new();
    let mut images = 0u64;
    for (key, body) in keys.iter().zip(store::get_many(store, &keys, 8).await) {
        let bad = |problem: String| InferError::Segment {
            key: key.clone(),
            problem,
        };
        let batches =
            crate::segment::read_segment_columns(key, body?, &["keys", "new_image", "old_image"])
                .map_err(|e| bad(e.to_string()))?;
        for batch in batches {
            let col = |n: &str| {
                batch
                    .column_by_name(n)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                    .ok_or_else(|| bad(format!("no {n} column")))
            };
            let (k, new, old) = (col("keys")?, col("new_image")?, col("old_image")?);
            for i in 0..batch.num_rows() {
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k.value(i)) {
                    for (name, v) in m {
                        if let Some(t) = v.as_object().and_then(|o| o.keys().next()) {
                            key_attrs.insert(name, t.clone());
                        }
                    }
                }
                let image = if !new.is_null(i) {
                    new.value(i)
                } else if !old.is_null(i) {
                    old.value(i)
                } else {
                    continue;
                };
                if let Ok(v) = serde_json::from_str::<Value>(image) {
                    images += 1;
                    walk(&v, "", 0, &mut tallies);
                }
            }
        }
    }
    let mut out = format!(
        "# Proposed by `streamseal schema infer` from {images} images in {} segment(s).\n\
# Review it: column names, and which key attribute is the partition key.\n\n\
table = \"{table}\"\n",
        keys.len()
    );
    let key_list: Vec<(&String, &String)> = key_attrs.iter().collect();
    if !key_list.is_empty() {
        out.push_str("\n[key]\n# The data cannot tell the partition key from the sort key: check against the table.\n");
        let kt = |t: &str| {
            if matches!(t, "S" | "N" | "B") {
                t.to_owned()
            } else {
                "S".into()
            }
        };
        out.push_str(&format!(
            "partition = {{ name = \"{}\", type = \"{}\" }}\n",
            key_list[0].0,
            kt(key_list[0].1)
        ));
        if let Some((n, t)) = key_list.get(1) {
            out.push_str(&format!(
                "sort = {{ name = \"{n}\", type = \"{}\" }}\n",
                kt(t)
            ));
        }
    }
    for (path, t) in &tallies {
        if key_attrs.contains_key(path) || t.seen * 2 < images {
            continue;
        }
        let dominant = t.s.max(t.n).max(t.b);
        if dominant * 100 < t.seen * 95 {
            continue;
        }
        let ty = if dominant == t.s {
            if t.s_date == t.s {
                "date".to_owned()
            } else if t.s_datetime == t.s {
                "timestamp".to_owned()
            } else {
                "string".to_owned()
            }
        } else if dominant == t.n {
            if t.n_int64 == t.n {
                "bigint".to_owned()
            } else if t.max_scale <= 18 {
                format!("decimal(38,{})", t.max_scale)
            } else {
                "double".to_owned()
            }
        } else {
            "boolean".to_owned()
        };
        let name: String = path
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        out.push_str(&format!(
            "\n[[column]]\nname = \"{name}\"\npath = \"{path}\"\ntype = \"{ty}\"\n"
        ));
    }
    Ok(out)
}

fn walk(v: &Value, prefix: &str, depth: usize, tallies: &mut BTreeMap<String, Tally>) {
    let Value::Object(m) = v else { return };
    for (name, typed) in m {
        // Paths are split at dots, so names containing one cannot be addressed.
        if name.contains('.') || name.is_empty() {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some((t, inner)) = typed.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if t == "M" && depth < 2 {
            walk(inner, &path, depth + 1, tallies);
            continue;
        }
        let tally = tallies.entry(path).or_default();
        tally.seen += 1;
        match (t.as_str(), inner.as_str()) {
            ("S", Some(s)) => {
                tally.s += 1;
                if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
                    tally.s_date += 1;
                } else if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                    tally.s_datetime += 1;
                }
            }
            ("N", Some(n)) => {
                tally.n += 1;
                if n.parse::<i64>().is_ok() {
                    tally.n_int64 += 1;
                }
                let scale = n
                    .split(['e', 'E'])
                    .next()
                    .and_then(|m| m.split_once('.'))
                    .map_or(0, |(_, f)| f.len());
                let exp = n.contains(['e', 'E']);
                tally.max_scale = tally.max_scale.max(if exp { 99 } else { scale });
            }
            ("BOOL", _) => tally.b += 1,
            _ => tally.other += 1,
        }
    }
}

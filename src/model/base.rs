//! Base state: the full contents of a table that existed before its stream was captured,
//! written once by `streamseal bootstrap` (from a parallel Scan or a DynamoDB export) as
//! Parquet files of `keys` and `item` (canonical DynamoDB JSON), plus a base manifest.
//!
//! ```text
//! <table>/base/<base-id>/part-<worker>-<n>.parquet     keys, item
//! <table>/base/<base-id>/base.json                     the base manifest (commit point)
//! ```
//!
//! Why base + changes is exact although a Scan is not a point-in-time read: the stream is
//! enabled before the scan starts, so every change after the scan's start is captured. A
//! restore applies, per key, the latest captured change over the base item (base items count
//! as older than any change). For a key changed after the scan started, the latest change
//! carries the full new item (or is a REMOVE) and wins whatever the scan read. For a key not
//! changed since the scan started, the scan read its value as of the start. Either way the
//! key ends in its latest state. The same holds for an export (a consistent copy as of its
//! export time).

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::item::{ItemHash, StateDigest};
use crate::model::layout::TableLayout;
use crate::model::manifest::BaseFile;
use crate::model::schema::KeySchema;
use crate::store::{ObjectStore, PutMode, StoreError};

/// Version of the base manifest.
pub(crate) const BASE_FORMAT: u32 = 1;

/// Rows per base file.
const ROWS_PER_FILE: usize = 200_000;
/// Bytes of item text per base file (before compression).
const BYTES_PER_FILE: usize = 128 << 20;

/// The base manifest (`<table>/base/<base-id>/base.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseManifest {
    /// [`BASE_FORMAT`].
    pub format: u32,
    /// Table.
    pub table: String,
    /// Id: the start time, 16-digit ms.
    pub base_id: String,
    /// `scan` or `export <uri>`.
    pub source: String,
    /// When the scan started (or the export's time), ms: changes from here on complete it.
    pub started_ms: i64,
    /// When the scan finished, ms.
    pub finished_ms: i64,
    /// The table's key schema.
    pub key_schema: Option<KeySchema>,
    /// Items.
    pub items: u64,
    /// Digest of the items as read.
    pub digest: StateDigest,
    /// Files.
    pub files: Vec<BaseFile>,
}

/// The newest committed base manifest of a table, if any.
pub(crate) async fn latest_base(
    store: &dyn ObjectStore,
    layout: &TableLayout,
) -> Result<Option<BaseManifest>, StoreError> {
    let prefix = layout.base_prefix();
    let mut newest: Option<String> = None;
    for m in store.list(&prefix, None, None).await? {
        if m.key.ends_with("/base.json") && newest.as_ref().is_none_or(|n| m.key > *n) {
            newest = Some(m.key);
        }
    }
    let Some(key) = newest else { return Ok(None) };
    let bytes = store.get(&key).await?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Permanent {
            op: "parse",
            store: store.url(),
            key,
            message: format!("not a base manifest: {e}"),
        })
}

/// Writes base files for one scan worker.
pub struct BaseWriter {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    keys: Vec<String>,
    items: Vec<String>,
    bytes: usize,
    next: usize,
    /// Files written.
    pub files: Vec<BaseFile>,
    /// Digest of the items pushed.
    pub digest: StateDigest,
    /// Items pushed.
    pub count: u64,
}

impl BaseWriter {
    /// A writer naming its files `<table>/base/<base_id>/part-<worker>-<n>.parquet`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        layout: &TableLayout,
        base_id: &str,
        worker: usize,
    ) -> BaseWriter {
        BaseWriter {
            store,
            prefix: layout.base_part_prefix(base_id, worker),
            keys: vec![],
            items: vec![],
            bytes: 0,
            next: 0,
            files: vec![],
            digest: StateDigest::ZERO,
            count: 0,
        }
    }

    /// Adds an item (canonical key and item text).
    pub async fn push(&mut self, key: String, item: String) -> Result<(), StoreError> {
        self.digest
            .add_item(&ItemHash(Sha256::digest(item.as_bytes()).into()));
        self.count += 1;
        self.bytes += item.len() + key.len();
        self.keys.push(key);
        self.items.push(item);
        if self.keys.len() >= ROWS_PER_FILE || self.bytes >= BYTES_PER_FILE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered items as one file.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let key = format!("{}-{:05}.parquet", self.prefix, self.next);
        self.next += 1;
        let rows = self.keys.len() as u64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("item", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(std::mem::take(&mut self.keys))),
            Arc::new(StringArray::from(std::mem::take(&mut self.items))),
        ];
        self.bytes = 0;
        let encode_err = |e: String| StoreError::Permanent {
            op: "encode",
            store: self.store.url(),
            key: key.clone(),
            message: e,
        };
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| encode_err(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props))
            .map_err(|e| encode_err(e.to_string()))?;
        w.write(&batch).map_err(|e| encode_err(e.to_string()))?;
        w.close().map_err(|e| encode_err(e.to_string()))?;
        let sha256 = hex::encode(Sha256::digest(&out));
        let bytes = out.len() as u64;
        // Write-once like every data object (the bucket policy refuses overwrites). A rerun
        // from the same export writes the same key: the same bytes are that same part.
        let created = self
            .store
            .put(&key, Bytes::from(out), PutMode::IfAbsent)
            .await?;
        if created == crate::store::PutOutcome::AlreadyExists {
            let stored = self.store.head(&key).await?.and_then(|m| m.sha256);
            if stored.as_deref() != Some(sha256.as_str()) {
                return Err(StoreError::Permanent {
                    op: "put",
                    store: self.store.url(),
                    key: key.clone(),
                    message: format!(
                        "a base part with other content is already there (SHA-256 {}, this one {sha256}): an earlier bootstrap wrote it; delete {}* and rerun",
                        stored.as_deref().unwrap_or("unknown"),
                        self.prefix
                    ),
                });
            }
        }
        self.files.push(BaseFile {
            key,
            bytes,
            rows,
            sha256,
        });
        Ok(())
    }
}

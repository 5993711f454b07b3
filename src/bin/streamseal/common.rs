//! Flags and steps several commands share: the table and its backup, schema files, who runs
//! the command, instants for people.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use streamseal::capture::SchemaSource;
use streamseal::model::schema::TableSchema;
use streamseal::store::ObjectStore;

/// `--table` and `--target`: a table's backup.
#[derive(clap::Args, Debug)]
pub(crate) struct TableTarget {
    /// DynamoDB table name.
    #[arg(long, value_name = "TABLE")]
    pub table: String,
    /// The backup: s3://bucket/prefix[?region=REGION], file:///path, or a directory path.
    #[arg(long, value_name = "URL")]
    pub target: String,
}

impl TableTarget {
    /// Checks the table name and opens the backup.
    pub(crate) async fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        streamseal::model::change::validate_table_name(&self.table)
            .map_err(|e| anyhow::anyhow!("--table {:?}: {e}", self.table))?;
        streamseal::store::open_target(&self.target)
            .await
            .with_context(|| format!("--target {:?}", self.target))
    }
}

/// Loads `--schema FILE`, when given.
pub(crate) fn load_schema(path: Option<&PathBuf>) -> Result<Option<TableSchema>> {
    path.map(|p| TableSchema::load(p).map_err(anyhow::Error::from))
        .transpose()
}

/// The capture's schemas: `--schema FILE` for every table, or key and images only.
pub(crate) fn schema_source(path: Option<&PathBuf>) -> Result<SchemaSource> {
    Ok(match (load_schema(path)?, path) {
        (Some(schema), Some(path)) => {
            SchemaSource::Fixed(Arc::new(schema), path.display().to_string())
        }
        _ => SchemaSource::None,
    })
}

/// Threads for preparing records and encoding Parquet, by default.
pub(crate) fn default_threads() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u16)
}

/// An instant (milliseconds since the epoch) in RFC 3339, or `-`.
pub(crate) fn instant(ms: Option<i64>) -> String {
    ms.map_or("-".into(), streamseal::model::clock::rfc3339)
}

/// Who ran the command, for manifests and acknowledgments (never credentials).
pub(crate) fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}

//! `streamseal athena-ddl`: the statements that make a backup queryable in Athena.

use std::path::PathBuf;

use anyhow::Result;

use crate::common::{self, TableTarget};
use crate::output::Output;

/// Print Athena DDL for a backup in S3: the changes table (partition projection, typed
/// columns from --schema) and a <table>_latest view (latest image per key, deletes
/// excluded). Paste the statements into the Athena console or run them with the CLI.
///
/// Also (re)writes, for this --target, each snapshot's file list the snapshot views read
/// (a list seal could not write, or one naming the bucket a backup was copied from), and,
/// when the chain adopted a bootstrap base, the base's file list (the <table>_base table
/// reads it).
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    at: TableTarget,
    /// Schema file whose typed columns the changes table declares.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Glue database for the tables.
    #[arg(long, default_value = "streamseal")]
    database: String,
    /// Per-snapshot views to emit: `latest`, `all` (one statement per sealed snapshot),
    /// `none`, or snapshot ids separated by commas. Any snapshot's state is also
    /// `<table>_snapshot_changes` filtered by `generation <= N` (docs/athena.md).
    #[arg(long, value_name = "WHICH", default_value = "latest")]
    snapshot_views: String,
    /// Drop each external table before creating it again (`CREATE EXTERNAL TABLE IF NOT
    /// EXISTS` keeps an old definition): after a schema change. Dropping an external table
    /// removes its catalog entry only, never the backup's objects.
    #[arg(long)]
    recreate_tables: bool,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    if !args.at.target.starts_with("s3://") {
        anyhow::bail!(
            "--target {:?}: Athena reads S3; pass the backup's s3://bucket/prefix",
            args.at.target
        );
    }
    let store = args.at.open().await?;
    let schema = common::load_schema(args.schema.as_ref())?.unwrap_or_default();
    use streamseal::ops::athena::SnapshotViews;
    let views = match args.snapshot_views.as_str() {
        "latest" => SnapshotViews::Latest,
        "all" => SnapshotViews::All,
        "none" => SnapshotViews::None,
        ids => SnapshotViews::Only(
            ids.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
    };
    let mut ddl = streamseal::ops::athena::ddl(
        store.as_ref(),
        &args.at.table,
        &schema,
        &args.database,
        &views,
    )
    .await
    .map_err(|e| match e {
        streamseal::ops::athena::AthenaError::BadDatabase { .. } => {
            anyhow::anyhow!("--database: {e}")
        }
        e => e.into(),
    })?;
    if args.recreate_tables {
        ddl.statements = streamseal::ops::athena::with_tables_recreated(ddl.statements);
    }
    if let Some((key, files)) = &ddl.base_files
        && !out.json()
    {
        eprintln!(
            "wrote {key}: the {files} base file(s) the chain adopted, for the {}_base table",
            streamseal::ops::athena::athena_name(&args.at.table)
        );
    }
    if let Some((key, files)) = &ddl.checkpoint_files
        && !out.json()
    {
        eprintln!(
            "wrote {key}: the {files} file(s) of the newest state checkpoint, for the {}_checkpoint table (the latest view and later snapshot views start from it)",
            streamseal::ops::athena::athena_name(&args.at.table)
        );
    }
    if !ddl.snapshot_lists_written.is_empty() && !out.json() {
        eprintln!(
            "wrote {} snapshot file list(s) for {} (missing, or naming another location)",
            ddl.snapshot_lists_written.len(),
            store.url()
        );
    }
    out.result(&ddl, || {
        for s in &ddl.statements {
            println!("{s}\n");
        }
    })
}

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
    let ddl = streamseal::ops::athena::ddl(store.as_ref(), &args.at.table, &schema, &args.database)
        .await
        .map_err(|e| match e {
            streamseal::ops::athena::AthenaError::BadDatabase { .. } => {
                anyhow::anyhow!("--database: {e}")
            }
            e => e.into(),
        })?;
    if let Some((key, files)) = &ddl.base_files
        && !out.json()
    {
        eprintln!(
            "wrote {key}: the {files} base file(s) the chain adopted, for the {}_base table",
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

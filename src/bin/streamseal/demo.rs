//! `streamseal demo`: the whole product on a generated workload, locally.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::output::{self, Output};

/// Run the whole product locally on a generated workload: capture, outage, seal, verify,
/// restore, check. No AWS account needed.
///
/// Generates an orders workload (every DynamoDB type, TTL deletes), feeds it through the
/// Lambda handler into DIR/backup, raises a CloudWatch alarm that seals and verifies a
/// snapshot, restores it to DIR/restore and compares it with the generator's ground truth.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Working directory (replaced if a previous demo created it).
    #[arg(long, value_name = "DIR", default_value = "streamseal-demo")]
    dir: PathBuf,
    /// Changes to generate.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    changes: u64,
    /// Records per Lambda invocation.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let started = std::time::Instant::now();
    if !out.json() {
        eprintln!(
            "demo: capturing {} changes through the Lambda handler into {} ...",
            args.changes,
            args.dir.join("backup").display()
        );
    }
    let r =
        streamseal::demo::run_demo(&args.dir, args.changes as usize, args.batch as usize).await?;
    let ok = r.verify_ok && r.items_match && r.digest_match;
    out.result(&r, || {
        let secs = |ms: u64| ms as f64 / 1000.0;
        let backup = r.dir.join("backup");
        println!(
            "streamseal demo ({})",
            output::duration(started.elapsed())
        );
        println!(
            "  capture   {} changes in {} Lambda batches -> {} segments, {}, {} ({:.0} changes/s)",
            r.changes,
            r.batches,
            r.segments,
            output::size(r.segment_bytes),
            output::millis(r.capture_ms),
            r.changes as f64 / secs(r.capture_ms).max(0.001)
        );
        println!(
            "  outage    CloudWatch alarm -> sealed snapshot {} in {}, verify {} in {}",
            r.snapshot_id,
            output::millis(r.seal_ms),
            if r.verify_ok { "OK" } else { "FAILED" },
            output::millis(r.verify_ms)
        );
        println!(
            "  restore   {} items to {} in {}",
            r.restored_items,
            r.dir.join("restore").display(),
            output::millis(r.restore_ms)
        );
        println!(
            "  check     ground truth {} items: items {}, digest {} ({})",
            r.truth_items,
            if r.items_match { "match" } else { "DIFFER" },
            if r.digest_match { "match" } else { "DIFFERS" },
            r.digest.to_hex()
        );
        println!();
        println!("Next:");
        println!(
            "  streamseal verify --table orders --target {} --deep",
            backup.display()
        );
        println!(
            "  streamseal snapshots --table orders --target {}",
            backup.display()
        );
        println!(
            "  duckdb -c \"SELECT event_name, count(*) FROM read_parquet('{}/orders/changes/*/*/*.parquet', hive_partitioning=true) GROUP BY 1\"",
            backup.display()
        );
        println!(
            "  streamseal restore --table orders --target {} --to dynamodb://orders-restored --create-table   # needs AWS credentials (or AWS_ENDPOINT_URL)",
            backup.display()
        );
    })?;
    if !ok {
        bail!("the demo's restored state does not match the ground truth");
    }
    Ok(())
}

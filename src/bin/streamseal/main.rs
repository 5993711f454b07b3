//! The streamseal command line: one module per subcommand, each a thin shell over the library
//! (parse flags, call it, print), and [`output`] for what they share: `--json`, progress bars,
//! sizes and durations, exit statuses. See `streamseal --help` and `streamseal <command> --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod acknowledge;
mod athena_ddl;
mod bootstrap;
mod checkpoint;
mod common;
mod compact;
mod demo;
mod diff;
mod get;
mod ingest;
mod output;
mod restore;
mod sample_events;
mod schema;
mod seal;
mod snapshots;
mod tail;
mod verify;

use output::Output;

/// Continuous, lossless, restorable DynamoDB backups.
///
/// Captures a table's DynamoDB Stream into Parquet segments in S3 or a local directory.
/// Targets are URLs: s3://bucket/prefix (region, credentials and endpoint from the standard
/// AWS environment, e.g. AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL) or file:///path. A
/// bucket in another region than AWS_REGION is found with one HeadBucket call; or give its
/// region as s3://bucket/prefix?region=REGION or STREAMSEAL_TARGET_REGION.
///
/// Exit status: 0 success; 1 error; 3 a verify found the backup incomplete; 4 corrupt.
#[derive(Parser, Debug)]
#[command(
    name = "streamseal",
    version,
    about,
    long_about,
    propagate_version = true
)]
struct Cli {
    /// Print the result as JSON on stdout (for scripts); progress and errors stay on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Demo(demo::Args),
    Ingest(ingest::Args),
    SampleEvents(sample_events::Args),
    Seal(seal::Args),
    Verify(verify::Args),
    Acknowledge(acknowledge::Args),
    Snapshots(snapshots::Args),
    Compact(compact::Args),
    Tail(tail::Args),
    #[command(subcommand)]
    Schema(schema::Command),
    AthenaDdl(athena_ddl::Args),
    Bootstrap(bootstrap::Args),
    Restore(restore::Args),
    Diff(diff::Args),
    Get(get::Args),
    Checkpoint(checkpoint::Args),
    Expire(checkpoint::ExpireArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            // The SDK's own warnings (each attempt of the region and credential chains) are
            // noise before the one error that matters; `RUST_LOG` brings them back.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,aws_config=error,aws_smithy_runtime=error".into()),
        )
        .with_target(false)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = Output::new(cli.json);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args, &out).await,
            Command::Ingest(args) => ingest::run(args, &out).await,
            Command::SampleEvents(args) => sample_events::run(args),
            Command::Seal(args) => seal::run(args, &out).await,
            Command::Verify(args) => verify::run(args, &out).await,
            Command::Acknowledge(args) => acknowledge::run(args, &out).await,
            Command::Snapshots(args) => snapshots::run(args, &out).await,
            Command::Compact(args) => compact::run(args, &out).await,
            Command::Tail(args) => tail::run(args, &out).await,
            Command::Schema(command) => schema::run(command, &out).await,
            Command::AthenaDdl(args) => athena_ddl::run(args, &out).await,
            Command::Bootstrap(args) => bootstrap::run(args, &out).await,
            Command::Restore(args) => restore::run(args, &out).await,
            Command::Diff(args) => diff::run(args, &out).await,
            Command::Get(args) => get::run(args, &out).await,
            Command::Checkpoint(args) => checkpoint::run(args, &out).await,
            Command::Expire(args) => checkpoint::run_expire(args, &out).await,
        }
    });
    output::exit(result)
}

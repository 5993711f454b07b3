//! The streamseal command line. Each subcommand is a thin shell over the library; see
//! `streamseal --help` and `streamseal <command> --help`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::value::RawValue;
use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::schema::TableSchema;
use streamseal::segment::EncodeOptions;

/// Continuous, lossless, restorable DynamoDB backups.
///
/// Captures a table's DynamoDB Stream into Parquet segments in S3 or a local directory.
/// Targets are URLs: s3://bucket/prefix (region, credentials and endpoint from the standard
/// AWS environment, e.g. AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL) or file:///path.
#[derive(Parser, Debug)]
#[command(name = "streamseal", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole product locally on a generated workload: capture, outage, seal, verify,
    /// restore, check. No AWS account needed.
    ///
    /// Generates an orders workload (every DynamoDB type, TTL deletes), feeds it through the
    /// Lambda handler into DIR/backup, raises a CloudWatch alarm that seals and verifies a
    /// snapshot, restores it to DIR/restore and compares it with the generator's ground truth.
    Demo(DemoArgs),
    /// Replay Lambda DynamoDB stream events through the capture path into a target.
    ///
    /// Reads one event document, or one event per line, from a file or stdin. The table name
    /// comes from each record's eventSourceARN. By default every event is checked before
    /// anything is written, and a bad record stops the run with an error naming it; with
    /// --quarantine-bad-records, bad records are kept verbatim under quarantine/ instead, as the
    /// Lambda does. Rerunning the same input is safe: segments are written only once.
    Ingest(IngestArgs),
    /// Print synthetic stream events for an orders-like table (one event per line).
    ///
    /// Deterministic for a given seed; items use every DynamoDB type. Useful to try `ingest`,
    /// to benchmark, and as test input.
    SampleEvents(SampleArgs),
    /// Seal the latest snapshot: an immutable manifest of everything captured so far.
    ///
    /// Seals every log entry waiting in the inbox (only what is not sealed yet: O(new
    /// changes), whatever the writers' clocks), resolves records stored twice by redelivered
    /// or bisected batches, records gaps, rejected entries and quarantined records in the
    /// findings ledger, writes the manifest once (If-None-Match), removes the sealed entries
    /// from the inbox, then runs a quick verify of the new snapshot. Exit status is that
    /// verify's: 0 ok, 3 incomplete (open findings), 4 corrupt; 1 if the seal failed.
    Seal(SealArgs),
    /// Verify a sealed snapshot: complete, intact, nothing extra. Names every problem.
    ///
    /// Quick (default): manifest digests along the parent chain, the file lists' and the
    /// findings ledger's sums, and every segment's and quarantined record's size and SHA-256
    /// via HEAD. --deep downloads each segment, recomputes SHA-256, parses the Parquet, counts
    /// rows and recomputes digest deltas, rebuilds the ledger from the chain, and (for the
    /// latest snapshot) audits the store for captured data no snapshot accounts for.
    ///
    /// Exit status: 0 complete and intact (acknowledged findings allowed); 3 incomplete
    /// (open gaps, rejected entries, quarantined records or orphans: the backup is intact
    /// but known to lack them); 4 corrupt (a sealed object is missing or altered); 1 verify
    /// could not run.
    Verify(VerifyArgs),
    /// Record a decision about an open finding (a gap, a rejected entry, a quarantined
    /// record), so verify stops failing on it.
    ///
    /// Writes an acknowledgment entry naming the finding (its id, as verify prints it) with
    /// your reason, then seals, which records the decision in the findings ledger for good:
    /// every later verify lists it as acknowledged, with who and why. Refuses ids that are
    /// not open in the latest snapshot's ledger.
    Acknowledge(AcknowledgeArgs),
    /// List a table's sealed snapshots, oldest first.
    Snapshots(SnapshotsArgs),
    /// Rewrite small sealed segments as large objects (Athena reads fewer files), and delete
    /// the small ones once that is sealed and old enough.
    ///
    /// Each run does two things. (1) For hours that ended at least --older-than ago, packs the
    /// segments one snapshot sealed in that hour into objects of up to --target-size MiB, next
    /// to them, and publishes each through the segment log; the next seal checks and records
    /// it, after which restore and verify read the compacted object instead. (2) For
    /// compactions sealed at least --grace ago, points that snapshot's Athena file list at the
    /// compacted objects and deletes the small segments. Capture can keep running: only sealed
    /// segments are read. Run it on a schedule, after seals.
    Compact(CompactArgs),
    /// Capture a table's stream through the DynamoDB Streams API (no Lambda needed).
    ///
    /// Reads every shard, parents before children, from per-shard checkpoints kept in the
    /// target (so a restart resumes with nothing lost or doubled), and writes segments through
    /// the same code as the Lambda. Keeps a copy of the shard map in the target. Runs until
    /// stopped, or with --until-idle until no record arrived for that long.
    Tail(TailArgs),
    /// Schema files: `schema infer` proposes one from the captured images.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Print Athena DDL for a backup in S3: the changes table (partition projection, typed
    /// columns from --schema) and a <table>_latest view (latest image per key, deletes
    /// excluded). Paste the statements into the Athena console or run them with the CLI.
    AthenaDdl(AthenaArgs),
    /// Write the base state of a table that existed before its stream was captured.
    ///
    /// Reads the whole table with a parallel Scan (or, with --from-export, a DynamoDB full
    /// export in DYNAMODB_JSON format, which costs no read capacity) into Parquet files under
    /// <table>/base/. Refuses to start unless the table's stream is enabled with new images:
    /// changes during the scan must be captured for base + changes to be exact. The next seal
    /// adopts the base.
    Bootstrap(BootstrapArgs),
    /// Restore a sealed snapshot (or any instant the backup covers) into DynamoDB or files.
    ///
    /// Rebuilds the table state from base state plus changes (latest change per key, REMOVEs
    /// dropped, duplicates ignored) in bounded memory, writes it to --to, then reads the target
    /// back and compares item count and state digest; exit status 1 on any difference, naming
    /// a few differing keys. A DynamoDB restore that stops midway resumes when rerun with the
    /// same arguments (finished partitions are not rewritten). AWS settings come from the
    /// standard environment.
    Restore(RestoreArgs),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Working directory (replaced if a previous demo created it).
    #[arg(long, value_name = "DIR", default_value = "streamseal-demo")]
    dir: PathBuf,
    /// Changes to generate.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    changes: u64,
    /// Records per Lambda invocation.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct TailArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Schema file with typed columns.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Stop after this many seconds without a new record (drain and exit).
    #[arg(long, value_name = "SECS")]
    until_idle: Option<u64>,
    /// Records per GetRecords call (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    batch: i32,
    /// Threads for preparing records and encoding Parquet.
    #[arg(long, default_value_t = default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Propose a schema file (typed columns for Athena) from the images a backup holds.
    ///
    /// Samples the latest snapshot's segments (or the first segments captured), and proposes a
    /// column for each attribute path present in most items with one dominant type. Prints
    /// TOML to stdout; review it before use.
    Infer(InferArgs),
}

#[derive(clap::Args, Debug)]
struct InferArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Segments to sample.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10000))]
    segments: u16,
}

#[derive(clap::Args, Debug)]
struct AthenaArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Schema file whose typed columns the changes table declares.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Glue database for the tables.
    #[arg(long, default_value = "streamseal")]
    database: String,
}

#[derive(clap::Args, Debug)]
struct BootstrapArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Parallel scan segments.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=10000))]
    segments: i32,
    /// Take the base from a DynamoDB full export instead of scanning: the export's folder
    /// (s3://bucket/prefix/AWSDynamoDB/<export-id> or a local directory).
    #[arg(long, value_name = "URI")]
    from_export: Option<String>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Snapshot id, or "latest".
    #[arg(long, value_name = "ID|latest", conflicts_with = "as_of")]
    snapshot: Option<String>,
    /// Restore the state as of this instant (RFC 3339, e.g. 2026-11-27T14:00:00Z) instead of a
    /// snapshot; it must be within what the latest snapshot covers.
    #[arg(long, value_name = "RFC3339")]
    as_of: Option<String>,
    /// dynamodb://TABLE, or file://DIR for gzip DynamoDB JSON lines (DynamoDB import format).
    #[arg(long, value_name = "URI")]
    to: String,
    /// Create the DynamoDB table with the key schema recorded in the manifest (on-demand).
    #[arg(long)]
    create_table: bool,
    /// Memory budget for rebuilding the state; beyond it, changes are spilled to disk.
    #[arg(long, value_name = "MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    memory_mb: u64,
    /// Directory for spill files (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    spill_dir: Option<PathBuf>,
    /// Parallel BatchWriteItem calls.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Refuse (before writing anything) a chain holding quarantined records that could be a
    /// key's latest change. Without it, such keys are left out and named, and every other item
    /// is restored and checked.
    #[arg(long)]
    strict: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct TableTarget {
    /// DynamoDB table name.
    #[arg(long, value_name = "TABLE")]
    table: String,
    /// The backup: s3://bucket/prefix, file:///path, or a directory path.
    #[arg(long, value_name = "URL")]
    target: String,
}

#[derive(clap::Args, Debug)]
struct SealArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Why: recorded in the manifest (e.g. "INC-1234 failover drill").
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Schema file whose [key] is recorded in the manifest (restores use it to create tables).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Write the manifest under S3 Object Lock for this many days (the bucket must have
    /// Object Lock enabled).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    retention_days: Option<u32>,
    /// Object Lock mode for --retention-days.
    #[arg(
        long,
        value_enum,
        default_value = "compliance",
        requires = "retention_days"
    )]
    retention_mode: streamseal::store::RetentionMode,
    /// Skip the quick verify after sealing.
    #[arg(long)]
    no_verify: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct CompactArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Only hours that ended at least this long ago (e.g. 90m, 6h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_ms)]
    older_than: i64,
    /// Largest compacted object, MiB.
    #[arg(long, value_name = "MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    target_size: u64,
    /// Delete small segments once their compaction has been sealed this long (readers that
    /// started before keep working until then).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration_ms)]
    grace: i64,
    /// Show what would be written and deleted; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

/// `90s`, `30m`, `6h`, `2d` (or `0`) as milliseconds.
fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 6h or 2d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(ms)
        .filter(|v| *v <= 3650 * 86_400_000)
        .ok_or_else(|| format!("{text:?} is longer than 10 years"))
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Snapshot id, or "latest".
    #[arg(long, value_name = "ID|latest", default_value = "latest")]
    snapshot: String,
    /// Download and recompute everything instead of checking metadata; for the latest
    /// snapshot, also audit the store for captured data no snapshot accounts for.
    #[arg(long)]
    deep: bool,
    /// Check only the segments this snapshot sealed, not the whole chain's (the chain's
    /// manifests are still checked).
    #[arg(long)]
    only_new: bool,
    /// Deep audit: judge an object no snapshot accounts for only once it is this much older
    /// than the latest seal (a writer may still be between the object and its entry).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration_ms)]
    orphan_grace: i64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct AcknowledgeArgs {
    #[command(flatten)]
    at: TableTarget,
    /// The finding's id, as verify prints it (e.g. gap-3fa19c2b7d01e4a5); repeat for several.
    #[arg(long = "finding", value_name = "ID", required = true)]
    findings: Vec<String>,
    /// Why the finding is acceptable, or what was done about it (kept for good).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Who decides (default: $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// Only write the acknowledgment; the next seal records it.
    #[arg(long)]
    no_seal: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct SnapshotsArgs {
    #[command(flatten)]
    at: TableTarget,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct IngestArgs {
    /// Where to write: s3://bucket/prefix, file:///path, or a directory path.
    #[arg(long, value_name = "URL")]
    target: String,
    /// Schema file with typed columns (see schemas/orders.toml); default: key and images only.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Events to replay: a file path, or - for stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    events: String,
    /// Keep unconvertible records under quarantine/ and carry on, instead of failing.
    #[arg(long)]
    quarantine_bad_records: bool,
    /// Threads for preparing records and encoding Parquet.
    #[arg(long, default_value_t = default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// zstd compression level for segments (1-19).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: i32,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

fn default_threads() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u16)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ViewArg {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

#[derive(clap::Args, Debug)]
struct SampleArgs {
    /// Total number of change records.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Records per event (Lambda's batch size).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    batch: u32,
    /// Approximate size of each item's DynamoDB JSON, in bytes.
    #[arg(long, default_value_t = 1024)]
    item_bytes: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Table name (goes into eventSourceARN).
    #[arg(long, default_value = "orders")]
    table: String,
    /// Stream view type of the generated records.
    #[arg(long, value_enum, default_value = "new-and-old-images")]
    view_type: ViewArg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_target(false)
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ingest(args) => ingest(args).await,
            Command::SampleEvents(args) => sample_events(args),
            Command::Seal(args) => seal(args).await,
            Command::Verify(args) => verify(args).await,
            Command::Acknowledge(args) => acknowledge(args).await,
            Command::Snapshots(args) => snapshots(args).await,
            Command::Compact(args) => compact(args).await,
            Command::Restore(args) => restore(args).await,
            Command::Bootstrap(args) => bootstrap(args).await,
            Command::Tail(args) => tail(args).await,
            Command::Demo(args) => demo(args).await,
            Command::AthenaDdl(args) => athena_ddl(args).await,
            Command::Schema(SchemaCommand::Infer(args)) => {
                let store = open_table(&args.at).await?;
                let text =
                    streamseal::ops::infer::infer(&store, &args.at.table, args.segments as usize)
                        .await
                        .map_err(anyhow::Error::msg)?;
                print!("{text}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<StatusExit>() {
                Some(s) => ExitCode::from(s.0.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A verify verdict other than ok, carried to `main` for its exit status (3 incomplete,
/// 4 corrupt; see `streamseal verify --help`).
#[derive(Debug)]
struct StatusExit(streamseal::model::findings::Status, String);

impl std::fmt::Display for StatusExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for StatusExit {}

/// `Ok` for an ok verdict, else the error that exits with the verdict's status.
fn verdict(report: &streamseal::ops::verify::VerifyReport, what: &str) -> Result<()> {
    use streamseal::model::findings::Status;
    let open = report
        .findings
        .iter()
        .filter(|f| f.kind != streamseal::model::findings::Kind::Acknowledged)
        .count();
    match report.status {
        Status::Ok => Ok(()),
        Status::Incomplete => Err(StatusExit(
            report.status,
            format!(
                "{what}: snapshot {} of {} is INCOMPLETE: {open} open finding(s) (exit status 3)",
                report.snapshot_id, report.table
            ),
        )
        .into()),
        Status::Corrupt => Err(StatusExit(
            report.status,
            format!(
                "{what}: snapshot {} of {} is CORRUPT: {open} finding(s) (exit status 4)",
                report.snapshot_id, report.table
            ),
        )
        .into()),
    }
}

/// One event of the input and the line it starts on.
struct InputEvent<'a> {
    line: usize,
    raw: &'a RawValue,
}

fn split_events<'a>(text: &'a str, origin: &str) -> Result<Vec<InputEvent<'a>>> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&RawValue>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(raw)) => {
                // byte_offset() is before any whitespace preceding the value; skip it.
                let skipped = text[start..].len() - text[start..].trim_start().len();
                let line = text[..start + skipped].matches('\n').count() + 1;
                out.push(InputEvent { line, raw });
            }
            Some(Err(e)) => bail!(
                "{origin}: not valid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        }
    }
    if out.is_empty() {
        bail!(
            "{origin}: no events found (expected a Lambda DynamoDB stream event, or one per line)"
        );
    }
    Ok(out)
}

async fn ingest(args: IngestArgs) -> Result<()> {
    let (text, origin) = if args.events == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading events from stdin")?;
        (buf, "stdin".to_owned())
    } else {
        let bytes = std::fs::read(&args.events)
            .with_context(|| format!("cannot read events file {}", args.events))?;
        (bytes, args.events.clone())
    };
    let text = String::from_utf8(text).map_err(|e| {
        anyhow::anyhow!(
            "{origin}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let events = split_events(&text, &origin)?;
    let schemas = match &args.schema {
        Some(path) => SchemaSource::Fixed(
            Arc::new(TableSchema::load(path)?),
            path.display().to_string(),
        ),
        None => SchemaSource::None,
    };
    let store = streamseal::store::open(&args.target).await?;
    let threads = usize::from(args.threads);
    let options = IngestOptions {
        encode: EncodeOptions {
            zstd_level: args.zstd_level,
            encode_threads: threads,
        },
        prepare_threads: threads,
        bad_records: if args.quarantine_bad_records {
            BadRecordPolicy::Quarantine
        } else {
            BadRecordPolicy::Reject
        },
    };
    let ingestor = Ingestor::new(store.clone(), schemas, options);

    // Check everything before writing anything, so bad input leaves the target untouched.
    let mut total_records = 0;
    for (n, event) in events.iter().enumerate() {
        total_records += ingestor
            .check_event(event.raw.get())
            .await
            .with_context(|| format!("{origin}: event {} (line {})", n + 1, event.line))?;
    }

    let started = std::time::Instant::now();
    let mut reports = Vec::with_capacity(events.len());
    let (mut rows, mut bytes, mut segments, mut quarantined) = (0u64, 0u64, 0usize, 0usize);
    for (n, event) in events.iter().enumerate() {
        let report = ingestor
            .ingest_event(event.raw.get())
            .await
            .with_context(|| format!("{origin}: event {} (line {})", n + 1, event.line))?;
        for s in &report.segments {
            rows += s.rows;
            bytes += s.bytes;
            if !args.json {
                println!(
                    "{} {} ({} rows, {} bytes)",
                    if s.created { "wrote  " } else { "present" },
                    s.key,
                    s.rows,
                    s.bytes
                );
            }
        }
        segments += report.segments.len();
        quarantined += report.quarantined.len();
        if !args.json {
            for q in &report.quarantined {
                println!(
                    "quarantined record {} of event {}: {} -> {}",
                    q.index,
                    n + 1,
                    q.reason,
                    q.key
                );
            }
        }
        if let Some(err) = &report.error {
            if args.json {
                reports.push(report.clone());
                println!("{}", serde_json::to_string_pretty(&reports)?);
            }
            bail!(
                "{origin}: event {} (line {}): stopped at record {}: {err}\nNothing is lost: rerun the same command; what was written is recognised and not duplicated.",
                n + 1,
                event.line,
                report.failed_from.unwrap_or(0)
            );
        }
        reports.push(report);
    }
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!(
            "{} events, {total_records} records -> {segments} segments ({rows} rows, {bytes} bytes), {quarantined} quarantined, in {secs:.2}s; target {}",
            events.len(),
            store.url()
        );
    }
    Ok(())
}

fn sample_events(args: SampleArgs) -> Result<()> {
    streamseal::model::change::validate_table_name(&args.table).map_err(anyhow::Error::msg)?;
    let view = match args.view_type {
        ViewArg::KeysOnly => StreamViewType::KeysOnly,
        ViewArg::NewImage => StreamViewType::NewImage,
        ViewArg::OldImage => StreamViewType::OldImage,
        ViewArg::NewAndOldImages => StreamViewType::NewAndOldImages,
    };
    let mut workload = Workload::new(args.seed, &args.table, view, args.item_bytes);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = args.records;
    while left > 0 {
        let n = left.min(args.batch as usize);
        use std::io::Write as _;
        writeln!(out, "{}", workload.next_event(n))?;
        left -= n;
    }
    Ok(())
}

async fn open_table(at: &TableTarget) -> Result<Arc<dyn streamseal::store::ObjectStore>> {
    streamseal::model::change::validate_table_name(&at.table)
        .map_err(|e| anyhow::anyhow!("--table {:?}: {e}", at.table))?;
    Ok(streamseal::store::open(&at.target).await?)
}

async fn compact(args: CompactArgs) -> Result<()> {
    let store = open_table(&args.at).await?;
    let options = streamseal::ops::compact::CompactOptions {
        older_than_ms: args.older_than,
        target_bytes: args.target_size << 20,
        grace_ms: args.grace,
        dry_run: args.dry_run,
        ..Default::default()
    };
    let report = streamseal::ops::compact::compact(&store, &args.at.table, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let verb = if args.dry_run { "would write" } else { "wrote" };
    for o in &report.written {
        println!(
            "{verb} {} ({} segments, {} rows, {:.1} MiB -> {:.1} MiB)",
            o.key,
            o.parts,
            o.rows,
            o.bytes_in as f64 / 1048576.0,
            o.bytes_out as f64 / 1048576.0
        );
    }
    let parts: usize = report.written.iter().map(|o| o.parts).sum();
    println!(
        "{} {} compacted object(s) from {parts} of {} candidate segment(s); {} {} small segment(s) whose compaction was sealed over the grace period ago ({} Athena list(s) rewritten); {} compaction(s) within the grace period; {} unsealed compaction(s){}; in {} ms",
        verb,
        report.written.len(),
        report.candidates,
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.deleted.len(),
        report.symlinks_rewritten,
        report.waiting_for_grace,
        report.unsealed
            + if args.dry_run {
                0
            } else {
                report.written.len()
            },
        if report.written.is_empty() && report.unsealed == 0 {
            ""
        } else {
            " (seal to publish them)"
        },
        report.elapsed_ms
    );
    Ok(())
}

async fn seal(args: SealArgs) -> Result<()> {
    let store = open_table(&args.at).await?;
    let key_schema = match &args.schema {
        Some(path) => TableSchema::load(path)?.key,
        None => None,
    };
    let options = streamseal::ops::seal::SealOptions {
        reason: args
            .reason
            .clone()
            .unwrap_or_else(|| format!("manual: streamseal seal by {}", whoami())),
        key_schema,
        retention: args.retention_days.map(|d| (args.retention_mode, d)),
        ..Default::default()
    };
    let report = streamseal::ops::seal::seal(&store, &args.at.table, &options).await?;
    let verify = if args.no_verify {
        None
    } else {
        Some(verify_sealed(&store, &args.at.table, &report.manifest.snapshot_id).await?)
    };
    if args.json {
        println!("{}", serde_json::json!({"seal": report, "verify": verify}));
    } else {
        let m = &report.manifest;
        println!(
            "sealed snapshot {} of {} in {} ms: {} new segment(s), {} new row(s), {:.1} MiB ({} duplicate segment(s) and {} duplicate row(s) resolved)",
            m.snapshot_id,
            m.table,
            report.elapsed_ms,
            m.files.segments,
            m.files.rows,
            m.files.segment_bytes as f64 / (1024.0 * 1024.0),
            m.files.duplicate_segments,
            m.files.duplicate_rows
        );
        println!(
            "  chain: {} segment(s), {} row(s), {} live item(s), state digest {}",
            m.totals.segments,
            m.totals.rows,
            m.item_count,
            m.state_digest
                .map_or("unknown (stream lacks NEW_AND_OLD_IMAGES)".into(), |d| d
                    .to_hex())
        );
        println!(
            "  newest change {}, lag {}; manifest {}",
            fmt_ms(m.watermark.newest_change_ms),
            report
                .lag_ms
                .map_or("n/a".into(), |l| format!("{:.1} s", l as f64 / 1000.0)),
            report.manifest_key
        );
        if report.leftover_log_entries > 0 {
            println!(
                "  removed {} entr{} the previous seal had sealed but not removed from the inbox",
                report.leftover_log_entries,
                if report.leftover_log_entries == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
        }
        for f in &report.findings {
            println!(
                "  new [{}] {}: {}{}",
                f.kind,
                f.object,
                f.problem,
                f.id.as_deref()
                    .map(|id| format!(" (finding {id})"))
                    .unwrap_or_default()
            );
        }
        if m.quarantined_records > 0 || m.known_gaps > 0 || report.open_findings > 0 {
            println!(
                "  {} quarantined record(s), {} known gap(s) in the chain; {} finding(s) open",
                m.quarantined_records, m.known_gaps, report.open_findings
            );
        }
        if let Some(v) = &verify {
            print!("{}", v.render());
        }
    }
    match verify {
        Some(v) => verdict(&v, "sealed, then verified"),
        None => Ok(()),
    }
}

/// The quick verify a seal runs on the snapshot it wrote: its own segments, the whole chain's
/// manifests, the ledger.
async fn verify_sealed(
    store: &Arc<dyn streamseal::store::ObjectStore>,
    table: &str,
    id: &str,
) -> Result<streamseal::ops::verify::VerifyReport> {
    Ok(streamseal::ops::verify::verify(
        store,
        table,
        id,
        streamseal::ops::verify::VerifyOptions {
            scope: streamseal::ops::verify::Scope::Snapshot,
            ..Default::default()
        },
    )
    .await?)
}

async fn acknowledge(args: AcknowledgeArgs) -> Result<()> {
    let store = open_table(&args.at).await?;
    let by = args.by.clone().unwrap_or_else(whoami);
    let entries = streamseal::model::findings::acknowledge(
        store.as_ref(),
        &args.at.table,
        &args.findings,
        &args.reason,
        &by,
        &streamseal::model::clock::SystemClock,
    )
    .await?;
    if args.no_seal {
        if args.json {
            println!("{}", serde_json::json!({"entries": entries}));
        } else {
            for e in &entries {
                println!("wrote {e}; the next seal records it");
            }
        }
        return Ok(());
    }
    let options = streamseal::ops::seal::SealOptions {
        reason: format!(
            "acknowledge {} by {by}: {}",
            args.findings.join(", "),
            args.reason
        ),
        ..Default::default()
    };
    let report = streamseal::ops::seal::seal(&store, &args.at.table, &options).await?;
    let verify = verify_sealed(&store, &args.at.table, &report.manifest.snapshot_id).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"entries": entries, "seal": report, "verify": verify})
        );
    } else {
        for f in report
            .findings
            .iter()
            .filter(|f| f.kind == streamseal::model::findings::Kind::Acknowledged)
        {
            println!(
                "recorded in snapshot {}: {}",
                report.manifest.snapshot_id, f.problem
            );
        }
        print!("{}", verify.render());
    }
    verdict(&verify, "acknowledged and sealed")
}

async fn verify(args: VerifyArgs) -> Result<()> {
    let store = open_table(&args.at).await?;
    let options = streamseal::ops::verify::VerifyOptions {
        mode: if args.deep {
            streamseal::ops::verify::Mode::Deep
        } else {
            streamseal::ops::verify::Mode::Quick
        },
        scope: if args.only_new {
            streamseal::ops::verify::Scope::Snapshot
        } else {
            streamseal::ops::verify::Scope::Chain
        },
        orphan_grace_ms: args.orphan_grace,
        ..Default::default()
    };
    let report =
        streamseal::ops::verify::verify(&store, &args.at.table, &args.snapshot, options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    verdict(&report, "verify")
}

async fn snapshots(args: SnapshotsArgs) -> Result<()> {
    let store = open_table(&args.at).await?;
    let layout = streamseal::model::layout::TableLayout::new(&args.at.table);
    let ids = streamseal::model::manifest::list_snapshot_ids(store.as_ref(), &layout, None).await?;
    let mut rows = Vec::new();
    for id in &ids {
        rows.push(streamseal::model::manifest::read_manifest(store.as_ref(), &layout, id).await?);
    }
    // The latest ledger holds every finding and decision of the chain.
    let ledger = match rows.last() {
        Some(m) => Some(streamseal::model::manifest::read_ledger(store.as_ref(), m).await?),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"snapshots": rows, "findings": ledger.map(|l| l.entries)})
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no sealed snapshots of {} in {}",
            args.at.table,
            store.url()
        );
        return Ok(());
    }
    println!(
        "{:<10}  {:<24}  {:>9}  {:>11}  {:>10}  {:<24}  {:>5}  {:>5}  reason",
        "id", "created", "segments", "rows", "items", "newest change", "open", "acked"
    );
    for m in &rows {
        let (open, acked) = m
            .findings
            .as_ref()
            .map_or((0, 0), |f| (f.open, f.acknowledged));
        println!(
            "{:<10}  {:<24}  {:>9}  {:>11}  {:>10}  {:<24}  {:>5}  {:>5}  {}",
            m.snapshot_id,
            m.created_at,
            m.totals.segments,
            m.totals.rows,
            m.item_count,
            fmt_ms(m.watermark.newest_change_ms),
            open,
            acked,
            m.reason
        );
    }
    if let Some(ledger) = ledger.filter(|l| !l.entries.is_empty()) {
        println!("findings (open until acknowledged; decisions are kept for good):");
        for e in &ledger.entries {
            match &e.acknowledged {
                None => println!(
                    "  {}  open          sealed in {}  {}: {}",
                    e.id, e.sealed_in, e.subject, e.detail
                ),
                Some(a) => println!(
                    "  {}  acknowledged  sealed in {}, decided in {} by {}: {}",
                    e.id, e.sealed_in, a.snapshot_id, a.by, a.reason
                ),
            }
        }
    }
    Ok(())
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("-".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
}

/// Who ran the command, for the manifest's reason (never credentials).
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}

async fn restore(args: RestoreArgs) -> Result<()> {
    use streamseal::aws::restore::{Request, Target, run};
    use streamseal::ops::restore::{MaterializeOptions, Point, Progress};
    let to = Target::parse(&args.to).map_err(anyhow::Error::msg)?;
    let point = match (&args.as_of, &args.snapshot) {
        (Some(t), _) => Point::AsOf(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| anyhow::anyhow!("--as-of {t:?} is not an RFC 3339 instant: {e}"))?
                .timestamp_millis(),
        ),
        (None, s) => Point::Snapshot(s.clone().unwrap_or_else(|| "latest".into())),
    };
    let store = open_table(&args.at).await?;
    let client = match &to {
        Target::Dynamo(_) => Some(streamseal::aws::dynamodb::client_from_env().await),
        Target::Files(_) => None,
    };
    let request = Request {
        table: args.at.table.clone(),
        point,
        to,
        create_table: args.create_table,
        materialize: MaterializeOptions {
            memory_mb: args.memory_mb as usize,
            spill_dir: args.spill_dir.clone(),
            concurrency: 4,
            min_partitions: 1,
        },
        workers: args.workers as usize,
        scan_segments: 8,
        max_attempts: 15,
        deadline: None,
        strict: args.strict,
    };
    let progress = Arc::new(Progress::default());
    let ticker = {
        let progress = progress.clone();
        progress_ticker(move |secs| {
            let changes = progress
                .changes_read
                .load(std::sync::atomic::Ordering::Relaxed);
            let items = progress
                .items_done
                .load(std::sync::atomic::Ordering::Relaxed);
            let mib = progress
                .bytes_read
                .load(std::sync::atomic::Ordering::Relaxed) as f64
                / (1024.0 * 1024.0);
            let total = progress
                .changes_total
                .load(std::sync::atomic::Ordering::Relaxed);
            let rate = changes as f64 / secs;
            let items_total = progress
                .items_total
                .load(std::sync::atomic::Ordering::Relaxed);
            let item_rate = items as f64 / secs;
            let eta = if changes < total && rate > 0.0 {
                format!(", reading ETA {:.0} s", (total - changes) as f64 / rate)
            } else if items < items_total && item_rate > 0.0 {
                format!(
                    ", writing ETA {:.0} s",
                    (items_total - items) as f64 / item_rate
                )
            } else {
                String::new()
            };
            format!(
                "restore: {changes}/{total} changes read ({rate:.0}/s, {mib:.1} MiB), {items}/{items_total} items written ({item_rate:.0}/s){eta}, {secs:.0} s"
            )
        })
    };
    let result = run(&store, client.as_ref(), &request, &progress).await;
    ticker.abort();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "restored {} of {} ({} partition(s)) to {}: {} items from {} changes in {:.1} s ({:.0} items/s){}",
            match &report.as_of {
                Some(t) => format!("as of {t}"),
                None => format!("snapshot {}", report.snapshot_id),
            },
            report.table,
            report.partitions,
            report.to,
            report.items,
            report.changes,
            report.elapsed_ms as f64 / 1000.0,
            report.items as f64 / (report.elapsed_ms.max(1) as f64 / 1000.0),
            if report.resumed { ", resumed" } else { "" }
        );
        println!(
            "  self-check: target holds {} items, digest {} -> {}",
            report.target_items,
            report.target_digest.to_hex(),
            if report.matches { "MATCH" } else { "MISMATCH" }
        );
        for k in &report.differing_keys {
            println!("  differs: {k}");
        }
        if !report.quarantined.is_empty() {
            println!(
                "  {} key(s) left out: their latest change is a quarantined record, kept verbatim (the rest was restored and checked without them):",
                report.quarantined.len()
            );
            for q in &report.quarantined {
                println!(
                    "  quarantined: {} (sequence number {}, record at {})",
                    q.key, q.sequence_number, q.object
                );
            }
        }
        if let Some(why) = &report.unproven {
            println!("  note: not proven against the snapshot: {why}");
        }
    }
    if !report.matches {
        bail!(
            "the restored {} does not match the backup ({} items and digest {} expected, {} found)",
            report.to,
            report.items,
            report.digest.to_hex(),
            report.target_items
        );
    }
    Ok(())
}

async fn bootstrap(args: BootstrapArgs) -> Result<()> {
    use streamseal::aws::bootstrap::{Source, bootstrap};
    let store = open_table(&args.at).await?;
    let client = streamseal::aws::dynamodb::client_from_env().await;
    let source = match &args.from_export {
        Some(uri) => Source::Export(uri.clone()),
        None => Source::Scan(args.segments),
    };
    let items = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let items = items.clone();
        progress_ticker(move |secs| {
            let n = items.load(std::sync::atomic::Ordering::Relaxed);
            format!(
                "bootstrap: {n} items read ({:.0}/s), {secs:.0} s",
                n as f64 / secs
            )
        })
    };
    let result = bootstrap(&store, &client, &args.at.table, &source, &items).await;
    ticker.abort();
    let base = result.map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&base)?);
    } else {
        println!(
            "base {} of {} written from {}: {} items in {} file(s), digest {}; the next seal adopts it",
            base.base_id,
            base.table,
            base.source,
            base.items,
            base.files.len(),
            base.digest.to_hex()
        );
    }
    Ok(())
}

/// Prints `line(seconds elapsed)` on stderr every 2 s until the returned task is aborted: the
/// progress of long commands.
fn progress_ticker(line: impl Fn(f64) -> String + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(2));
        interval.tick().await;
        loop {
            interval.tick().await;
            eprintln!("{}", line(started.elapsed().as_secs_f64().max(0.001)));
        }
    })
}

async fn tail(args: TailArgs) -> Result<()> {
    use streamseal::aws::tail::{SdkStreams, TailOptions, TailReport, stream_arn, tail};
    let store = open_table(&args.at).await?;
    let schemas = match &args.schema {
        Some(path) => SchemaSource::Fixed(
            Arc::new(TableSchema::load(path)?),
            path.display().to_string(),
        ),
        None => SchemaSource::None,
    };
    let ingestor = Ingestor::new(
        store.clone(),
        schemas,
        IngestOptions {
            encode: EncodeOptions {
                zstd_level: 1,
                encode_threads: args.threads as usize,
            },
            prepare_threads: args.threads as usize,
            bad_records: BadRecordPolicy::Quarantine,
        },
    );
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let options = TailOptions {
        until_idle: args.until_idle.map(std::time::Duration::from_secs),
        limit: args.batch,
        ..Default::default()
    };
    let mut report = TailReport::default();
    let arn = stream_arn(&ddb, &args.at.table)
        .await
        .map_err(anyhow::Error::msg)?;
    tail(
        &arn,
        &SdkStreams(streams),
        &ingestor,
        &store,
        &args.at.table,
        &options,
        &mut report,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    println!(
        "tail of {} stopped after {:.1} s idle: {} records in {} segment(s) from {} shard(s) ({} finished)",
        args.at.table,
        args.until_idle.unwrap_or(0) as f64,
        report.records,
        report.segments,
        report.shards,
        report.finished_shards
    );
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let started = std::time::Instant::now();
    eprintln!(
        "demo: capturing {} changes through the Lambda handler into {} ...",
        args.changes,
        args.dir.join("backup").display()
    );
    let r = streamseal::demo::run_demo(&args.dir, args.changes as usize, args.batch as usize)
        .await
        .map_err(anyhow::Error::msg)?;
    let ok = r.verify_ok && r.items_match && r.digest_match;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let secs = |ms: u64| ms as f64 / 1000.0;
        let backup = r.dir.join("backup");
        println!("streamseal demo ({:.1} s)", started.elapsed().as_secs_f64());
        println!(
            "  capture   {} changes in {} Lambda batches -> {} segments, {:.1} MiB, {:.1} s ({:.0} changes/s)",
            r.changes,
            r.batches,
            r.segments,
            r.segment_bytes as f64 / (1024.0 * 1024.0),
            secs(r.capture_ms),
            r.changes as f64 / secs(r.capture_ms).max(0.001)
        );
        println!(
            "  outage    CloudWatch alarm -> sealed snapshot {} in {} ms, verify {} in {} ms",
            r.snapshot_id,
            r.seal_ms,
            if r.verify_ok { "OK" } else { "FAILED" },
            r.verify_ms
        );
        println!(
            "  restore   {} items to {} in {:.1} s",
            r.restored_items,
            r.dir.join("restore").display(),
            secs(r.restore_ms)
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
    }
    if !ok {
        bail!("the demo's restored state does not match the ground truth");
    }
    Ok(())
}

async fn athena_ddl(args: AthenaArgs) -> Result<()> {
    if !args.at.target.starts_with("s3://") {
        bail!(
            "--target {:?}: Athena reads S3; pass the backup's s3://bucket/prefix",
            args.at.target
        );
    }
    if !args
        .database
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || args.database.is_empty()
    {
        bail!(
            "--database {:?}: use lower-case letters, digits and _",
            args.database
        );
    }
    let store = open_table(&args.at).await?;
    let schema = match &args.schema {
        Some(path) => TableSchema::load(path)?,
        None => TableSchema::default(),
    };
    // The earliest partition bounds the projection (keys sort by date): one small listing.
    let layout = streamseal::model::layout::TableLayout::new(&args.at.table);
    let first = store
        .list(&layout.changes_prefix(), None, Some(1))
        .await?
        .first()
        .and_then(|m| {
            m.key
                .split("dt=")
                .nth(1)
                .and_then(|d| d.get(..10))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
    // Each snapshot, with whether its chain includes a bootstrap base (its view reads it).
    let mut snapshots: Vec<(u64, bool)> = vec![];
    let mut base_files = vec![];
    for id in streamseal::model::manifest::list_snapshot_ids(store.as_ref(), &layout, None).await? {
        let Some(g) = streamseal::model::manifest::parse_snapshot_id(&id) else {
            continue;
        };
        let m = streamseal::model::manifest::read_manifest(store.as_ref(), &layout, &id).await?;
        snapshots.push((g, !m.base.is_empty()));
        base_files = m.base;
    }
    if !base_files.is_empty() {
        // The base's files share a folder with base.json, which Athena's Parquet reader would
        // trip on: the base table reads them through a symlink list, written here.
        let root = format!("{}/", store.url().trim_end_matches('/'));
        let list: String = base_files
            .iter()
            .map(|b| format!("{root}{}\n", b.key))
            .collect();
        let key = format!(
            "{}symlink.txt",
            streamseal::ops::athena::base_symlink_prefix(&args.at.table)
        );
        store
            .put(
                &key,
                bytes::Bytes::from(list),
                streamseal::store::PutMode::Overwrite,
            )
            .await?;
        eprintln!(
            "wrote {key}: the {} base file(s) the chain adopted, for the {}_base table",
            base_files.len(),
            streamseal::ops::athena::athena_name(&args.at.table)
        );
    }
    for s in streamseal::ops::athena::statements_with_snapshots(
        &args.at.table,
        &args.at.target,
        &schema,
        &args.database,
        &first,
        &snapshots,
    ) {
        println!("{s}\n");
    }
    Ok(())
}

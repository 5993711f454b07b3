//! `streamseal ingest`: replay Lambda stream events from a file through the capture path.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt as _;
use streamseal::capture::{BadRecordPolicy, IngestOptions, IngestReport, Ingestor};
use streamseal::progress::Progress;
use streamseal::segment::EncodeOptions;

use crate::common;
use crate::output::{self, Output};

/// Inputs up to this size are read once: every event is prepared and encoded, and its
/// segments (several times smaller than the event) kept until all are checked, then written.
/// Larger inputs are checked first and read again when written, so memory stays bounded.
const KEEP_PREPARED_BYTES: usize = 256 << 20;

/// Checked events written at the same time.
const WRITES_AT_ONCE: usize = 8;

/// Replay Lambda DynamoDB stream events through the capture path into a target.
///
/// Reads one event document, or one event per line, from a file or stdin. The table name
/// comes from each record's eventSourceARN. By default every event is checked before
/// anything is written, and a bad record stops the run with an error naming it; with
/// --quarantine-bad-records, bad records are kept verbatim under quarantine/ instead, as the
/// Lambda does. Rerunning the same input is safe: segments are written only once.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Where to write: s3://bucket/prefix[?region=REGION], file:///path, or a directory path.
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
    /// Threads for preparing records and encoding Parquet (an input file of 16 MiB or more is
    /// also read by two threads at once).
    #[arg(long, default_value_t = common::default_threads(), value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// zstd compression level for segments (1-19).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: i32,
}

/// The input's bytes and where they came from.
fn read_input(events: &str) -> Result<(Vec<u8>, String)> {
    if events == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading events from stdin")?;
        return Ok((buf, "stdin".to_owned()));
    }
    let bytes = read_file(Path::new(events))
        .with_context(|| format!("cannot read events file {events}"))?;
    Ok((bytes, events.to_owned()))
}

/// A file's bytes. A large one is read in two halves at once: most of reading a file the
/// kernel has cached is mapping and filling fresh memory, which two threads do in about half
/// the time.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::io::{Seek as _, SeekFrom};
        use std::os::unix::fs::FileExt as _;
        const TWO_READERS_FROM: u64 = 16 << 20;
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        if len >= TWO_READERS_FROM
            && let Ok(size) = usize::try_from(len)
        {
            let mut buf = vec![0u8; size];
            let (first, second) = buf.split_at_mut(size / 2);
            let half = first.len() as u64;
            std::thread::scope(|s| {
                let reader = s.spawn(|| file.read_exact_at(second, half));
                file.read_exact_at(first, 0)?;
                reader
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("reading thread panicked")))
            })?;
            // Whatever was appended while the halves were read.
            file.seek(SeekFrom::Start(len))?;
            file.read_to_end(&mut buf)?;
            return Ok(buf);
        }
    }
    std::fs::read(path)
}

pub(crate) async fn run(args: Args, out: &Output) -> Result<()> {
    let threads = usize::from(args.threads);
    let (bytes, origin) = read_input(&args.events)?;
    let events = streamseal::capture::input::split_events(&bytes, threads)
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    if events.is_empty() {
        bail!(
            "{origin}: no events found (expected a Lambda DynamoDB stream event, or one per line)"
        );
    }
    let schemas = common::schema_source(args.schema.as_ref())?;
    let store = streamseal::store::open_target(&args.target)
        .await
        .with_context(|| format!("--target {:?}", args.target))?;
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
    let at = |n: usize, line: usize| format!("{origin}: event {} (line {line})", n + 1);
    let progress = Arc::new(Progress::default());
    let shown = out.progress("ingest", progress.clone());

    // Check everything before writing anything, so bad input leaves the target untouched.
    progress.stage("checking events", events.len() as u64);
    let started = std::time::Instant::now();
    let keep = bytes.len() <= KEEP_PREPARED_BYTES;
    let mut prepared = Vec::with_capacity(if keep { events.len() } else { 0 });
    let mut total_records = 0;
    for (n, (line, event)) in events.iter().enumerate() {
        let checked = ingestor
            .prepare_event(event)
            .await
            .with_context(|| at(n, *line))?;
        total_records += checked.records();
        if keep {
            prepared.push(checked);
        }
        progress.add(1);
    }

    // Events are independent once checked: several are written at once (each still writes
    // its segments, then their inbox entries, in order), which matters most against S3.
    progress.stage("writing segments", events.len() as u64);
    let mut prepared = prepared.into_iter();
    let writes = events.iter().map(|(_, event)| {
        let ready = prepared.next();
        let ingestor = &ingestor;
        async move {
            match ready {
                Some(p) => ingestor.write_event(p, None).await,
                None => ingestor.ingest_event(event).await,
            }
        }
    });
    let mut written = futures_util::stream::iter(writes).buffered(WRITES_AT_ONCE);
    let mut reports: Vec<IngestReport> = Vec::with_capacity(events.len());
    let mut n = 0;
    while let Some(report) = written.next().await {
        let line = events[n].0;
        let report = report.with_context(|| at(n, line))?;
        progress.add(1);
        progress.add_bytes(report.segments.iter().map(|s| s.bytes).sum());
        if !out.json() {
            print_event(&shown, n, &report);
        }
        if let Some(err) = &report.error {
            let failed_from = report.failed_from.unwrap_or(0);
            reports.push(report.clone());
            drop(shown);
            out.result(&reports, || {})?;
            bail!(
                "{}: stopped at record {failed_from}: {err}\nNothing is lost: rerun the same command; what was written is recognised and not duplicated.",
                at(n, line)
            );
        }
        reports.push(report);
        n += 1;
    }
    drop(shown);
    let elapsed = started.elapsed();
    out.result(&reports, || {
        let segments: usize = reports.iter().map(|r| r.segments.len()).sum();
        let rows: u64 = reports.iter().flat_map(|r| &r.segments).map(|s| s.rows).sum();
        let bytes: u64 = reports.iter().flat_map(|r| &r.segments).map(|s| s.bytes).sum();
        let quarantined: usize = reports.iter().map(|r| r.quarantined.len()).sum();
        println!(
            "{} events, {total_records} records -> {segments} segments ({rows} rows, {}), {quarantined} quarantined, in {} ({:.0} records/s); target {}",
            events.len(),
            output::size(bytes),
            output::duration(elapsed),
            total_records as f64 / elapsed.as_secs_f64().max(1e-9),
            store.url()
        );
    })
}

/// The lines for people about one event's segments and quarantined records.
fn print_event(shown: &output::Shown, n: usize, report: &IngestReport) {
    shown.suspend(|| {
        for s in &report.segments {
            println!(
                "{} {} ({} rows, {})",
                if s.created { "wrote  " } else { "present" },
                s.key,
                s.rows,
                output::size(s.bytes)
            );
        }
        for q in &report.quarantined {
            println!(
                "quarantined record {} of event {}: {} -> {}",
                q.index,
                n + 1,
                q.reason,
                q.key
            );
        }
    });
}

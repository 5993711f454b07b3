//! Capture-path throughput: records/s and MB/s of Lambda event JSON.
//!
//! Inputs are synthetic `orders` events (NEW_AND_OLD_IMAGES, ~1 KB items of realistic text and
//! every DynamoDB type) of 100, 1,000 and 10,000 records (at 100, the fixed costs of a batch
//! weigh most). These stages are measured so the report shows where the time goes:
//!
//! - `classify`: recognise the payload's shape (what the Lambda handler does before capture);
//! - `split`: cut the event into raw records (what lets records be read in parallel);
//! - `parse`: split the event and read every record, validating and canonicalising the images
//!   and hashing them (the state digest), through the byte scanner;
//! - `parse-serde`: the same through serde_json alone (the fallback and reference), for
//!   comparison;
//! - `prepare`: what the capture path does before encoding: the event read in one pass
//!   (records found and parsed together, no `split`), the canonical texts written into column
//!   buffers, plus the typed columns of `schemas/orders.toml`;
//! - `encode`: prepared rows to a finished segment (Arrow columns, Parquet with zstd, SHA-256
//!   of the object, segment record), on 1 and on 2 threads;
//! - `canonicalize`: 10,000 items of the table canonicalised and hashed by one
//!   `Canonicalizer`, with their top-level attributes in the order the workload writes them
//!   (`recurring`) and in a different order per item (`shuffled`): the cost of sorting;
//! - `ingest`: the whole path into an in-memory store (prepare, Arrow, Parquet with zstd,
//!   SHA-256 of the object, segment record), on 1 and on 2 threads. Here the event is read
//!   in one pass (records found and parsed together), without the `split` step, by one
//!   `Ingestor` kept across batches (as the Lambda keeps one per container).
//! - `ingest-file/threads={1,2}/40x1000`: the 40 distinct 1,000-record events that
//!   `streamseal sample-events --records 40000 --batch 1000 --seed 11` prints, ingested one
//!   after the other into an in-memory store: the in-process figure to hold `streamseal
//!   ingest` of that file against (every event new to the caches, as in a real file).
//!
//! - `overhead`: the fixed costs of a batch, paid however few its records: starting and joining
//!   a scoped thread against handing work to the kept pool (`workers`), and 18 parquet column
//!   writers with and without zstd (parquet makes a zstd compression and decompression context
//!   per writer, which is why the capture path compresses pages itself, see `src/segment/pages.rs`).
//!
//! Run: `cargo bench --bench ingest` (criterion prints records/s and MiB/s per input).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamseal::capture::{IngestOptions, Ingestor, SchemaSource};
use streamseal::demo::workload::Workload;
use streamseal::model::change::{ChangeRecord, EventCursor, StreamViewType, parse_event};
use streamseal::model::item::{Canonicalizer, ColumnPaths, TextColumns};
use streamseal::model::layout::{HourPartition, TableLayout};
use streamseal::model::schema::TableSchema;
use streamseal::segment::{ColumnTexts, EncodeOptions, PreparedRow, SegmentBuilder};
use streamseal::store::memory::MemoryStore;

fn schema() -> TableSchema {
    TableSchema::parse(
        include_str!("../schemas/orders.toml"),
        "schemas/orders.toml",
    )
    .expect("orders schema")
}

fn event(records: usize) -> String {
    let mut w = Workload::new(11, "orders", StreamViewType::NewAndOldImages, 1024);
    // Warm the table so most changes are MODIFYs carrying two images, as in steady state.
    for _ in 0..2 {
        w.next_event(records);
    }
    w.next_event(records)
}

/// The workload's current items, as written (`recurring`) and with each item's top-level
/// attributes in an order of its own (`shuffled`: a `HashMap` per item, whose iteration order
/// is seeded per map).
fn items() -> (Vec<String>, Vec<String>) {
    let mut w = Workload::new(11, "orders", StreamViewType::NewAndOldImages, 1024);
    while w.len() < 10_000 {
        w.next_event(1_000);
    }
    let recurring: Vec<String> = w.items().take(10_000).map(str::to_owned).collect();
    let shuffled = recurring
        .iter()
        .map(|item| {
            let map: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_str(item).expect("item");
            let body: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).expect("name"), v.get()))
                .collect();
            format!("{{{}}}", body.join(","))
        })
        .collect::<Vec<String>>();
    // The same items either way: only the order of their attributes differs.
    let mut canon = Canonicalizer::new();
    for (a, b) in recurring.iter().zip(&shuffled).take(100) {
        let mut text = |item: &str| {
            canon
                .item(item, &ColumnPaths::default())
                .expect("item")
                .text
        };
        assert_eq!(text(a), text(b));
    }
    (recurring, shuffled)
}

fn bench(c: &mut Criterion) {
    let schema = schema();
    let (recurring, shuffled) = items();
    let bytes: usize = recurring.iter().map(String::len).sum();
    let mut group = c.benchmark_group("canonicalize");
    group
        .throughput(Throughput::ElementsAndBytes {
            elements: recurring.len() as u64,
            bytes: bytes as u64,
        })
        .sample_size(20);
    for (name, items) in [("recurring", &recurring), ("shuffled", &shuffled)] {
        group.bench_with_input(BenchmarkId::from_parameter(name), items, |b, items| {
            b.iter(|| {
                let mut canon = Canonicalizer::new();
                for item in items {
                    black_box(canon.item(item, &schema.paths).expect("item"));
                }
            })
        });
    }
    group.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for records in [100usize, 1_000, 10_000] {
        let text = event(records);
        let throughput = Throughput::ElementsAndBytes {
            elements: records as u64,
            bytes: text.len() as u64,
        };

        let raw = serde_json::value::RawValue::from_string(text.clone()).expect("raw event");
        let mut group = c.benchmark_group("classify");
        group.throughput(throughput.clone()).sample_size(20);
        group.bench_with_input(BenchmarkId::from_parameter(records), &raw, |b, raw| {
            b.iter(|| black_box(streamseal::lambda::classify(raw)))
        });
        group.finish();

        let mut group = c.benchmark_group("split");
        group.throughput(throughput.clone()).sample_size(20);
        group.bench_with_input(BenchmarkId::from_parameter(records), &text, |b, text| {
            b.iter(|| black_box(parse_event(text).expect("event").len()))
        });
        group.finish();

        let mut group = c.benchmark_group("parse");
        group.throughput(throughput.clone()).sample_size(20);
        group.bench_with_input(BenchmarkId::from_parameter(records), &text, |b, text| {
            b.iter(|| {
                let raws = parse_event(text).expect("event");
                let mut canon = Canonicalizer::new();
                let paths = ColumnPaths::default();
                for (i, raw) in raws.iter().enumerate() {
                    black_box(ChangeRecord::parse(raw, i, &mut canon, &paths).expect("record"));
                }
            })
        });
        group.finish();

        let mut group = c.benchmark_group("parse-serde");
        group.throughput(throughput.clone()).sample_size(20);
        group.bench_with_input(BenchmarkId::from_parameter(records), &text, |b, text| {
            b.iter(|| {
                let raws = parse_event(text).expect("event");
                let mut canon = Canonicalizer::new();
                let paths = ColumnPaths::default();
                for (i, raw) in raws.iter().enumerate() {
                    black_box(
                        ChangeRecord::parse_serde(raw, i, &mut canon, &paths).expect("record"),
                    );
                }
            })
        });
        group.finish();

        let mut group = c.benchmark_group("prepare");
        group.throughput(throughput.clone()).sample_size(20);
        group.bench_with_input(BenchmarkId::from_parameter(records), &text, |b, text| {
            b.iter(|| {
                // As the capture path reads a batch: records found and parsed in one pass.
                let mut cursor = EventCursor::new(text).expect("event");
                let mut canon = Canonicalizer::new();
                let mut texts = TextColumns::default();
                texts.reset_for(text.len());
                let mut i = 0;
                while cursor.next_start().expect("event").is_some() {
                    let (_, rec) = cursor
                        .record_into(i, &mut canon, &schema.paths, &mut texts)
                        .expect("record");
                    black_box(PreparedRow::new(rec.expect("record"), &schema, 0));
                    i += 1;
                }
                black_box(ColumnTexts::from(texts))
            })
        });
        group.finish();

        let (rows, texts) = {
            let raws = parse_event(&text).expect("event");
            let mut canon = Canonicalizer::new();
            let mut texts = TextColumns::default();
            let rows: Vec<PreparedRow<'_>> = raws
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let rec =
                        ChangeRecord::parse(raw, i, &mut canon, &schema.paths).expect("record");
                    PreparedRow::new(rec.into_spanned(&mut texts), &schema, 0)
                })
                .collect();
            (rows, [ColumnTexts::from(texts)])
        };
        let layout = TableLayout::new("orders");
        for (threads, level) in [(1usize, 1i32), (2, 1), (1, -1), (1, 3)] {
            let name = match level {
                1 => format!("encode/threads={threads}"),
                _ => format!("encode/threads={threads}/zstd={level}"),
            };
            let options = EncodeOptions {
                zstd_level: level,
                encode_threads: threads,
            };
            let mut builder = SegmentBuilder::new(&schema, rows.len());
            for row in &rows {
                builder.push(row);
            }
            let size = builder
                .finish(&layout, HourPartition::of_millis(0), options, &texts)
                .expect("encode")
                .bytes
                .len();
            println!(
                "{name}/{records}: segment of {size} bytes, {:.2}x smaller than the event",
                text.len() as f64 / size as f64
            );
            let mut group = c.benchmark_group(name);
            group.throughput(throughput.clone()).sample_size(20);
            group.bench_with_input(BenchmarkId::from_parameter(records), &rows, |b, rows| {
                b.iter(|| {
                    let mut builder = SegmentBuilder::new(&schema, rows.len());
                    for row in rows {
                        builder.push(row);
                    }
                    black_box(
                        builder
                            .finish(&layout, HourPartition::of_millis(0), options, &texts)
                            .expect("encode"),
                    )
                })
            });
            group.finish();
        }

        for threads in [1usize, 2] {
            let mut group = c.benchmark_group(format!("ingest/threads={threads}"));
            group.throughput(throughput.clone()).sample_size(20);
            // One ingestor for every batch, as the Lambda keeps one per container (its text
            // buffers are reused from batch to batch); the store is emptied each time so every
            // batch is written, not found already present.
            let store = Arc::new(MemoryStore::new());
            let ingestor = Ingestor::new(
                store.clone(),
                SchemaSource::Fixed(Arc::new(schema.clone()), "orders.toml".into()),
                IngestOptions::on_threads(threads),
            );
            group.bench_with_input(BenchmarkId::from_parameter(records), &text, |b, text| {
                b.iter(|| {
                    store.clear();
                    let report = runtime
                        .block_on(ingestor.ingest_event(text))
                        .expect("ingest");
                    assert!(report.error.is_none() && report.segments.iter().all(|s| s.created));
                    black_box(report)
                })
            });
            group.finish();
        }
    }
}

/// The events of `streamseal sample-events --records 40000 --batch 1000 --seed 11`, ingested in
/// turn by one ingestor (see the module doc).
fn ingest_file(c: &mut Criterion) {
    let schema = schema();
    let mut w = Workload::new(11, "orders", StreamViewType::NewAndOldImages, 1024);
    let events: Vec<String> = (0..40).map(|_| w.next_event(1000)).collect();
    let bytes: usize = events.iter().map(String::len).sum();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("ingest-file/threads={threads}"));
        group
            .throughput(Throughput::Elements(40_000))
            .sample_size(10);
        let store = Arc::new(MemoryStore::new());
        let ingestor = Ingestor::new(
            store.clone(),
            SchemaSource::Fixed(Arc::new(schema.clone()), "orders.toml".into()),
            IngestOptions::on_threads(threads),
        );
        group.bench_function(BenchmarkId::from_parameter("40x1000"), |b| {
            b.iter(|| {
                store.clear();
                for event in &events {
                    let report = runtime
                        .block_on(ingestor.ingest_event(event))
                        .expect("ingest");
                    assert!(report.error.is_none());
                    black_box(report);
                }
            })
        });
        group.finish();
    }
    eprintln!("ingest-file: 40 events, {bytes} bytes of event JSON");
}

/// Fixed costs of a batch (see the module doc).
fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("overhead");
    group.sample_size(20);
    let data = [1u64; 64];
    group.bench_function("scoped_thread_start_and_join", |b| {
        b.iter(|| std::thread::scope(|s| black_box(s.spawn(|| data.iter().sum::<u64>()).join())))
    });
    let pool = streamseal::capture::workers::pool(2).expect("a pool of two threads");
    group.bench_function("pool_handoff_and_wait", |b| {
        b.iter(|| black_box(pool.install(|| data.iter().sum::<u64>())))
    });
    // Eighteen text columns, the width of an `orders` segment: writers with zstd against
    // writers without compression; the difference is the codecs parquet makes per writer.
    let columns = arrow_schema::Schema::new(
        (0..18)
            .map(|i| arrow_schema::Field::new(format!("c{i}"), arrow_schema::DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    let parquet_schema = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&columns)
        .expect("parquet schema");
    let columns = Arc::new(columns);
    for (name, compression) in [
        ("uncompressed", parquet::basic::Compression::UNCOMPRESSED),
        (
            "zstd",
            parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(1).expect("zstd level 1"),
            ),
        ),
    ] {
        let props = Arc::new(
            parquet::file::properties::WriterProperties::builder()
                .set_compression(compression)
                .build(),
        );
        let file = parquet::file::writer::SerializedFileWriter::new(
            std::io::sink(),
            parquet_schema.root_schema_ptr(),
            props,
        )
        .expect("file writer");
        let factory =
            parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory::new(&file, columns.clone());
        group.bench_function(format!("column_writers_18/{name}"), |b| {
            b.iter(|| black_box(factory.create_column_writers(0).expect("column writers")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, ingest_file, overhead);
criterion_main!(benches);

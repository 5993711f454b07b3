//! Seal time for 200 new segments on top of a short and a 20x longer history.
//!
//! The history is 1,000 or 20,000 earlier segments, sealed regularly as they arrived (a seal
//! every 200 segments, so 5 or 100 snapshots); then 200 new segments arrive (one per second,
//! 100 records each, as a busy Lambda writes them) and wait in the inbox. Each iteration
//! puts the 200 entries back in the inbox (not timed), seals them (timed), and removes the
//! snapshot it wrote, so every iteration does the same work. The design target is a seal time
//! independent of the history: a ratio of medians under 1.3 between the two histories.
//!
//! Only log entries are written (a seal reads entries and file lists, not the Parquet files).
//! On the local store by default; `STREAMSEAL_BENCH_S3=1` runs the same on S3 through the
//! emulator (started like the tests start it; run `scripts/test` once to install it).
//! Run: `cargo bench --bench seal`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use streamseal::model::change::{SequenceNumber, StreamViewType};
use streamseal::model::item::StateDigest;
use streamseal::model::layout::{HourPartition, TableLayout};
use streamseal::model::log::{LogEntry, SequenceList};
use streamseal::model::manifest::Head;
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::segment::{SEGMENT_FORMAT, SegmentRecord};
use streamseal::store::local::LocalStore;
use streamseal::store::{ObjectStore, PutMode};

#[path = "../tests/common/mod.rs"]
mod common;

const TABLE: &str = "orders";
const ROWS: u64 = 100;
const NEW: u64 = 200;
/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

/// The inbox entry of segment number `i` (1 per second from `START_MS`).
fn entry(layout: &TableLayout, i: u64) -> (String, Bytes) {
    let created = START_MS + i as i64 * 1000;
    let base: u128 = 100_000_000_000_000_000_000 + u128::from(i) * 10_000;
    let seqs: Vec<String> = (0..ROWS)
        .map(|r| (base + u128::from(r) * 37).to_string())
        .collect();
    let first = SequenceNumber::parse(&seqs[0]).expect("seq");
    let last = SequenceNumber::parse(&seqs[seqs.len() - 1]).expect("seq");
    let tag = format!("{i:016x}");
    let key = layout.segment_key(HourPartition::of_millis(created), &first, &last, &tag);
    let record = SegmentRecord {
        format: SEGMENT_FORMAT,
        table: TABLE.into(),
        key,
        bytes: 40_000,
        rows: ROWS,
        sha256: format!("{:064x}", i),
        first_sequence: first.to_string(),
        last_sequence: last.to_string(),
        min_time_ms: Some(created - 900),
        max_time_ms: Some(created),
        digest_delta: Some(StateDigest::ZERO),
        item_count_delta: 10,
        ttl_deletes: 0,
        stream_view_type: StreamViewType::NewAndOldImages,
        event_source_arn: Some(format!(
            "arn:aws:dynamodb:eu-west-1:123456789012:table/{TABLE}/stream/2026-01-01T00:00:00.000"
        )),
        shard_id: None,
        written_at: String::new(),
        sequence_numbers: SequenceList::from_sequences(seqs.iter().map(String::as_str)),
    };
    (
        layout.segment_entry_key(&first, &last, &tag),
        Bytes::from(serde_json::to_vec(&LogEntry::Segment(record)).expect("json")),
    )
}

async fn write_entries(
    store: &Arc<dyn ObjectStore>,
    layout: &TableLayout,
    range: std::ops::Range<u64>,
) {
    let entries: Vec<(String, Bytes)> = range.map(|i| entry(layout, i)).collect();
    for chunk in entries.chunks(64) {
        let mut tasks = tokio::task::JoinSet::new();
        for (k, b) in chunk.iter().cloned() {
            let store = store.clone();
            tasks.spawn(async move { store.put(&k, b, PutMode::IfAbsent).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("task").expect("put");
        }
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let layout = TableLayout::new(TABLE);
    let s3 = std::env::var("STREAMSEAL_BENCH_S3").is_ok_and(|v| v == "1");
    let mut group = c.benchmark_group(if s3 {
        "seal_200_new_s3"
    } else {
        "seal_200_new"
    });
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if s3 { 30 } else { 10 }));
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once as a smoke test,
    // where 20,000 entries in a debug build would only cost CI time.
    let histories: &[u64] = if std::env::args().any(|a| a == "--bench") {
        &[1_000, 20_000]
    } else {
        &[400, 800]
    };
    for &history in histories {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = if s3 {
            let bucket = format!("bench-seal-{history}-{}", std::process::id());
            runtime.block_on(common::fresh_s3_store(&bucket, "backup"))
        } else {
            Arc::new(LocalStore::new(dir.path()).expect("local store"))
        };
        let t = Instant::now();
        // The history, sealed every NEW segments as a scheduled seal would.
        let mut parent = None;
        for from in (0..history).step_by(NEW as usize) {
            runtime.block_on(write_entries(
                &store,
                &layout,
                from..(from + NEW).min(history),
            ));
            parent = Some(
                runtime
                    .block_on(seal(&store, TABLE, &SealOptions::default()))
                    .expect("history seal"),
            );
        }
        let parent = parent.expect("a history");
        eprintln!(
            "history of {history} segments in {} snapshots set up in {:.1} s",
            parent.manifest.generation,
            t.elapsed().as_secs_f64()
        );
        let head = Bytes::from(
            serde_json::to_vec(&Head {
                snapshot_id: parent.manifest.snapshot_id.clone(),
            })
            .expect("head"),
        );
        group.bench_with_input(BenchmarkId::from_parameter(history), &history, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    runtime.block_on(write_entries(&store, &layout, history..history + NEW));
                    let started = Instant::now();
                    let report = runtime
                        .block_on(seal(&store, TABLE, &SealOptions::default()))
                        .expect("seal");
                    total += started.elapsed();
                    assert_eq!(report.manifest.files.segments, NEW);
                    assert_eq!(report.lookback_snapshots, 0);
                    // Undo the seal so the next iteration does the same work.
                    let m = &report.manifest;
                    runtime.block_on(async {
                        store
                            .delete(&layout.snapshot_key(&m.snapshot_id))
                            .await
                            .expect("delete manifest");
                        store.delete(&m.files.key).await.expect("delete file list");
                        store
                            .put(
                                &layout.snapshot_head_key(),
                                head.clone(),
                                PutMode::Overwrite,
                            )
                            .await
                            .expect("head");
                    });
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

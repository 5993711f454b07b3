//! Seal time for 1,000 new segments on top of a short and a long history (local store).
//!
//! The history is 1,000 or 100,000 earlier segments, already sealed into a parent snapshot;
//! then 1,000 new segments arrive (one per second, 100 records each, as a busy Lambda writes
//! them). Each iteration seals the new segments and then removes the snapshot it wrote, so
//! every iteration does the same work. The design target is seal time independent of the
//! history: under 1 s for 1,000 new segments, and a ratio under 1.3 between the histories.
//!
//! Only log entries are written (a seal reads the log, not the Parquet files), straight to
//! disk to keep the setup of 100,000 entries short. Run: `cargo bench --bench seal`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use streamseal::change::{SequenceNumber, StreamViewType};
use streamseal::item::StateDigest;
use streamseal::layout::{HourPartition, TableLayout};
use streamseal::log::{LogEntry, SequenceList};
use streamseal::manifest::Head;
use streamseal::seal::{SealOptions, seal};
use streamseal::segment::{SEGMENT_FORMAT, SegmentRecord};
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

const TABLE: &str = "orders";
const ROWS: u64 = 100;
/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

/// Writes the log entry of segment number `i` (1 per second from `START_MS`).
fn write_entry(root: &Path, layout: &TableLayout, i: u64) {
    let written = START_MS + i as i64 * 1000;
    let base: u128 = 100_000_000_000_000_000_000 + u128::from(i) * 10_000;
    let seqs: Vec<String> = (0..ROWS)
        .map(|r| (base + u128::from(r) * 37).to_string())
        .collect();
    let first = SequenceNumber::parse(&seqs[0]).expect("seq");
    let last = SequenceNumber::parse(&seqs[seqs.len() - 1]).expect("seq");
    let tag = format!("{i:016x}");
    let created = written - 500;
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
    let path = root.join(layout.log_key(written, &tag));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &path,
        serde_json::to_vec(&LogEntry::Segment(record)).expect("json"),
    )
    .expect("write");
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let layout = TableLayout::new(TABLE);
    let mut group = c.benchmark_group("seal_1000_new");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once as a smoke test,
    // where setting up 100,000 entries in a debug build would only cost CI a minute.
    let histories: &[u64] = if std::env::args().any(|a| a == "--bench") {
        &[1_000, 100_000]
    } else {
        &[1_000, 2_000]
    };
    for &history in histories {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalStore::new(dir.path()).expect("local store"));
        let t = Instant::now();
        for i in 0..history {
            write_entry(dir.path(), &layout, i);
        }
        let parent = runtime
            .block_on(seal(&store, TABLE, &SealOptions::default()))
            .expect("parent seal");
        for i in history..history + 1000 {
            write_entry(dir.path(), &layout, i);
        }
        eprintln!(
            "history of {history} segments set up in {:.1} s (parent snapshot {})",
            t.elapsed().as_secs_f64(),
            parent.manifest.snapshot_id
        );
        let head = serde_json::to_vec(&Head {
            snapshot_id: parent.manifest.snapshot_id.clone(),
        })
        .expect("head");
        group.bench_with_input(BenchmarkId::from_parameter(history), &history, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let report = runtime
                        .block_on(seal(&store, TABLE, &SealOptions::default()))
                        .expect("seal");
                    total += started.elapsed();
                    assert_eq!(report.manifest.files.segments, 1000);
                    // Undo the seal so the next iteration does the same work.
                    let m = &report.manifest;
                    let _ =
                        std::fs::remove_file(dir.path().join(layout.snapshot_key(&m.snapshot_id)));
                    let _ = std::fs::remove_file(dir.path().join(&m.files.key));
                    std::fs::write(dir.path().join(layout.snapshot_head_key()), &head)
                        .expect("head");
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

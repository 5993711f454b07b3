//! Materialization throughput: changes/s and MB/s of segments turned into the table state.
//!
//! A backup of 100,000 changes to ~1 KB items (NEW_AND_OLD_IMAGES, the `orders` workload,
//! every DynamoDB type) is captured into an in-memory store and sealed; each iteration
//! rebuilds the state into a sink that only counts (so the figure is materialization, not a
//! target's write speed): once with the whole state in memory, once with `--memory-mb 128`,
//! which spills the changes to disk in partitions by key hash. Peak RSS is measured by
//! `scripts/bench-restore-rss` (a process per run). Run: `cargo bench --bench restore`.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::ops::restore::{
    Item, MaterializeOptions, Point, Sink, SinkError, materialize, plan,
};
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::progress::Progress;
use streamseal::store::ObjectStore;
use streamseal::store::memory::MemoryStore;

struct Count(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl Sink for Count {
    async fn partition(&self, _: usize, _: usize, items: Vec<Item>) -> Result<(), SinkError> {
        self.0
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let changes: usize = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        2_000
    };
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let plan = runtime.block_on(async {
        let ing = Ingestor::new(
            store.clone(),
            SchemaSource::None,
            IngestOptions {
                encode: Default::default(),
                prepare_threads: 1,
                bad_records: BadRecordPolicy::Quarantine,
            },
        );
        let mut w = Workload::new(5, "orders", StreamViewType::NewAndOldImages, 1024);
        for _ in 0..changes / 1000 {
            ing.ingest_event(&w.next_event(1000)).await.expect("ingest");
        }
        seal(&store, "orders", &SealOptions::default())
            .await
            .expect("seal");
        plan(store.as_ref(), "orders", &Point::Snapshot("latest".into()))
            .await
            .expect("plan")
    });
    let mut group = c.benchmark_group("materialize");
    group
        .throughput(Throughput::ElementsAndBytes {
            elements: plan.changes(),
            bytes: plan.bytes(),
        })
        .sample_size(10);
    for memory_mb in [1024usize, 128] {
        let options = MaterializeOptions {
            memory_mb,
            ..Default::default()
        };
        group.bench_with_input(
            BenchmarkId::new(format!("memory_mb_{memory_mb}"), changes),
            &options,
            |b, options| {
                b.iter(|| {
                    runtime.block_on(async {
                        let sink = Count(Default::default());
                        let m = materialize(&store, &plan, options, &sink, &Progress::default())
                            .await
                            .expect("materialize");
                        assert_eq!(m.items, sink.0.into_inner());
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

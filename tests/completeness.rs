//! The promise, tested: when verify says OK the restore equals the table, and when something is
//! missing verify says so and names it. Each scenario runs on the local store and on S3 through
//! the emulator: writers with clocks hours ahead and behind, a write in flight during a seal, a
//! rejected log entry, a quarantined record (with and without a later change of its key), a
//! seal stopped between each of its writes, and deep verify's audit of what no snapshot
//! accounts for.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use streamseal::aws::restore::{Report, Request, Target, run};
use streamseal::capture::Ingestor;
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::findings::{Kind, Status};
use streamseal::model::item::canonicalize;
use streamseal::model::layout::TableLayout;
use streamseal::model::log::{GapRecord, LOG_FORMAT, LogEntry};
use streamseal::ops::restore::Point;
use streamseal::ops::seal::{SealOptions, SealReport, seal};
use streamseal::ops::verify::{Mode, Scope, VerifyOptions, VerifyReport, verify};
use streamseal::progress::Progress;
use streamseal::store::local::LocalStore;
use streamseal::store::{ObjectStore, PutMode};
use streamseal::testing::SkewedClock;
use streamseal::testing::faulty_store::FaultyStore;

const TABLE: &str = "orders";
const HOUR: i64 = 3_600_000;

/// Runs a scenario on a fresh local directory and on a fresh bucket of the emulator.
macro_rules! on_both_stores {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                let (_dir, store) = super::local();
                super::$scenario(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                let store = super::s3(stringify!($scenario)).await;
                super::$scenario(store).await;
            }
        }
    };
}

fn local() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    (dir, store)
}

async fn s3(name: &str) -> Arc<dyn ObjectStore> {
    let mut bucket: String = format!("c-{name}").replace('_', "-");
    bucket.truncate(63);
    common::fresh_s3_store(bucket.trim_end_matches('-'), "backup").await
}

fn workload(seed: u64) -> Workload {
    Workload::new(seed, TABLE, StreamViewType::NewAndOldImages, 300)
}

async fn ingest(ing: &Ingestor, event: &str) -> streamseal::capture::IngestReport {
    let report = ing.ingest_event(event).await.unwrap();
    assert!(report.error.is_none(), "{report:?}");
    report
}

async fn seal_now(store: &Arc<dyn ObjectStore>) -> SealReport {
    seal(store, TABLE, &SealOptions::default()).await.unwrap()
}

async fn check(store: &Arc<dyn ObjectStore>, which: &str, mode: Mode) -> VerifyReport {
    check_with_grace(
        store,
        which,
        mode,
        streamseal::ops::verify::DEFAULT_ORPHAN_GRACE_MS,
    )
    .await
}

async fn check_with_grace(
    store: &Arc<dyn ObjectStore>,
    which: &str,
    mode: Mode,
    orphan_grace_ms: i64,
) -> VerifyReport {
    verify(
        store,
        TABLE,
        which,
        VerifyOptions {
            mode,
            scope: Scope::Chain,
            concurrency: 8,
            orphan_grace_ms,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The ground truth's items, canonical.
fn truth(w: &Workload) -> BTreeSet<String> {
    w.items().map(|i| canonicalize(i).unwrap()).collect()
}

/// Restores `which` to files and reads the items back.
async fn restore(
    store: &Arc<dyn ObjectStore>,
    which: &str,
    strict: bool,
) -> Result<(Report, BTreeSet<String>), String> {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        store,
        None,
        &Request {
            strict,
            ..Request::new(
                TABLE,
                Point::Snapshot(which.into()),
                Target::Files(dir.path().to_owned()),
            )
        },
        &Progress::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut items = BTreeSet::new();
    for f in &report.files {
        let file = std::fs::File::open(f).unwrap();
        for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            items.insert(canonicalize(&v["Item"].to_string()).unwrap());
        }
    }
    Ok((report, items))
}

/// Verify (quick and deep) says OK and the restore equals the ground truth, item for item.
async fn promise_kept(store: &Arc<dyn ObjectStore>, w: &Workload) {
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(store, "latest", mode).await;
        assert_eq!(r.status, Status::Ok, "{}", r.render());
    }
    let (report, items) = restore(store, "latest", false).await.unwrap();
    assert!(report.matches, "{report:?}");
    assert!(report.quarantined.is_empty());
    assert_eq!(items, truth(w), "restore equals the ground truth");
}

// ---------------------------------------------------------------------------------------------
// 1. A writer whose clock runs two hours ahead, then writers with the right time.

async fn writer_two_hours_ahead(store: Arc<dyn ObjectStore>) {
    let mut w = workload(21);
    let ahead = common::ingestor(&store).with_clock(Arc::new(SkewedClock {
        offset_ms: 2 * HOUR,
    }));
    let right = common::ingestor(&store);
    for _ in 0..5 {
        ingest(&ahead, &w.next_event(100)).await;
    }
    seal_now(&store).await;
    for _ in 0..5 {
        ingest(&right, &w.next_event(100)).await;
    }
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.totals.rows, 1000, "every change sealed once");
    promise_kept(&store, &w).await;
}
on_both_stores!(writer_two_hours_ahead);

// ---------------------------------------------------------------------------------------------
// 2. A writer whose clock runs an hour behind, writing after a seal (sealed by a seal whose own
//    clock is wrong too).

async fn writer_an_hour_behind(store: Arc<dyn ObjectStore>) {
    let mut w = workload(22);
    let right = common::ingestor(&store);
    let behind = common::ingestor(&store).with_clock(Arc::new(SkewedClock { offset_ms: -HOUR }));
    for _ in 0..5 {
        ingest(&right, &w.next_event(100)).await;
    }
    seal_now(&store).await;
    for _ in 0..5 {
        ingest(&behind, &w.next_event(100)).await;
    }
    let skewed_seal = SealOptions {
        clock: Arc::new(SkewedClock {
            offset_ms: -3 * HOUR,
        }),
        ..Default::default()
    };
    let s = seal(&store, TABLE, &skewed_seal).await.unwrap();
    assert_eq!(s.manifest.files.rows, 500);
    assert_eq!(s.manifest.totals.rows, 1000);
    promise_kept(&store, &w).await;
}
on_both_stores!(writer_an_hour_behind);

// ---------------------------------------------------------------------------------------------
// 3. A write in flight during a seal: its entry lands after the seal listed the inbox.

async fn write_in_flight_during_a_seal(store: Arc<dyn ObjectStore>) {
    let mut w = workload(23);
    let right = common::ingestor(&store);
    for _ in 0..3 {
        ingest(&right, &w.next_event(50)).await;
    }
    let before = w.clone();
    let gate = Arc::new(FaultyStore::new(store.clone()));
    gate.hold_writes_matching("/inbox/");
    let gated: Arc<dyn ObjectStore> = gate.clone();
    let slow = common::ingestor(&gated);
    let event = w.next_event(50);
    let writer = tokio::spawn(async move { slow.ingest_event(&event).await });
    // The segment is stored; its entry's PUT is on its way.
    gate.held().await;
    let sealed = seal_now(&store).await;
    assert_eq!(sealed.manifest.files.rows, 150);
    let id = sealed.manifest.snapshot_id.clone();
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(&store, &id, mode).await;
        assert_eq!(
            r.status,
            Status::Ok,
            "no false alarm while a write is in flight: {}",
            r.render()
        );
    }
    gate.release();
    let report = writer.await.unwrap().unwrap();
    assert!(report.error.is_none(), "{report:?}");
    // The snapshot sealed before the write landed still verifies, and still restores to what
    // the table held when it was sealed.
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(&store, &id, mode).await;
        assert_eq!(
            r.status,
            Status::Ok,
            "no false alarm after the write landed: {}",
            r.render()
        );
    }
    let (_, items) = restore(&store, &id, false).await.unwrap();
    assert_eq!(items, truth(&before));
    // The next seal has it.
    let next = seal_now(&store).await;
    assert_eq!(next.manifest.files.rows, 50);
    promise_kept(&store, &w).await;
}
on_both_stores!(write_in_flight_during_a_seal);

// ---------------------------------------------------------------------------------------------
// 4. A rejected entry: verify keeps failing, naming it, until a person acknowledges it.

async fn rejected_entries_persist_until_acknowledged(store: Arc<dyn ObjectStore>) {
    let layout = TableLayout::new(TABLE);
    let mut w = workload(24);
    let right = common::ingestor(&store);
    ingest(&right, &w.next_event(40)).await;
    let report = ingest(&right, &w.next_event(40)).await;
    let entry_key = report.segments[0].log_key.clone();
    // The entry no longer adds up: its row count does not match its sequence list.
    let LogEntry::Segment(mut record) =
        LogEntry::parse(&entry_key, &store.get(&entry_key).await.unwrap()).unwrap()
    else {
        panic!("a segment entry")
    };
    record.rows += 1;
    store
        .put(
            &entry_key,
            Bytes::from(serde_json::to_vec(&LogEntry::Segment(record)).unwrap()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let first = seal_now(&store).await;
    assert_eq!(first.manifest.rejected_log_entries, 1);
    assert!(
        first
            .findings
            .iter()
            .any(|f| f.kind == Kind::Rejected && f.object == entry_key),
        "{:?}",
        first.findings
    );
    // Two more seals with new changes: the finding stays open in each.
    for _ in 0..2 {
        ingest(&right, &w.next_event(40)).await;
        seal_now(&store).await;
        for mode in [Mode::Quick, Mode::Deep] {
            let r = check(&store, "latest", mode).await;
            assert_eq!(r.status, Status::Incomplete, "{}", r.render());
            assert!(
                r.findings
                    .iter()
                    .any(|f| f.kind == Kind::Rejected && f.object == entry_key),
                "{}",
                r.render()
            );
        }
    }
    // The restore lacks exactly what verify names.
    let (_, items) = restore(&store, "latest", false).await.unwrap();
    assert_ne!(items, truth(&w));
    // A decision, recorded: verify is OK and says who decided and why.
    let id = streamseal::model::findings::finding_id(Kind::Rejected, &entry_key);
    streamseal::model::findings::acknowledge(
        store.as_ref(),
        TABLE,
        std::slice::from_ref(&id),
        "batch replayed from the source by hand",
        "tests",
        &streamseal::model::clock::SystemClock,
    )
    .await
    .unwrap();
    let decided = seal_now(&store).await;
    assert!(
        decided
            .findings
            .iter()
            .any(|f| f.kind == Kind::Acknowledged)
    );
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(&store, "latest", mode).await;
        assert_eq!(r.status, Status::Ok, "{}", r.render());
        assert!(
            r.findings.iter().any(|f| f.kind == Kind::Acknowledged
                && f.id.as_deref() == Some(id.as_str())
                && f.problem.contains("batch replayed from the source by hand")),
            "{}",
            r.render()
        );
    }
    // Acknowledging twice, or an unknown finding, is refused.
    assert!(
        streamseal::model::findings::acknowledge(
            store.as_ref(),
            TABLE,
            &[id],
            "again",
            "t",
            &streamseal::model::clock::SystemClock
        )
        .await
        .is_err()
    );
    let _ = layout;
}
on_both_stores!(rejected_entries_persist_until_acknowledged);

// ---------------------------------------------------------------------------------------------
// 5. A quarantined record: accounted in the digest, restore names its key and checks the rest;
//    --strict refuses. A later change of the same key restores exactly.

/// Adds an attribute of a type the canonicaliser does not know to `image` (`NewImage` or
/// `OldImage`) of a stream record.
fn with_unknown_type(record: &str, image: &str) -> String {
    let needle = format!("\"{image}\":{{");
    assert!(record.contains(&needle), "{record}");
    record.replacen(
        &needle,
        &format!("{needle}\"zz\":{{\"XX\":\"a future type\"}},"),
        1,
    )
}

/// The item of `w`'s truth whose key is `key` (canonical key text).
fn item_of(items: &BTreeSet<String>, key: &str) -> Option<String> {
    let k: serde_json::Value = serde_json::from_str(key).unwrap();
    items
        .iter()
        .find(|i| {
            let v: serde_json::Value = serde_json::from_str(i).unwrap();
            k.as_object()
                .unwrap()
                .iter()
                .all(|(name, value)| v.get(name) == Some(value))
        })
        .cloned()
}

/// The next change that writes an image, with every change generated before it (REMOVEs).
fn next_write(w: &mut Workload) -> (Vec<String>, streamseal::demo::workload::Change) {
    let mut before = vec![];
    loop {
        let c = w.next_change();
        if c.after.is_some() {
            return (before, c);
        }
        before.push(c.record);
    }
}

fn event_of(records: &[String]) -> String {
    format!("{{\"Records\":[{}]}}", records.join(","))
}

async fn quarantined_records_are_accounted(store: Arc<dyn ObjectStore>) {
    let mut w = workload(25);
    let ing = common::ingestor(&store);
    ingest(&ing, &w.next_event(30)).await;
    // A change whose new image DynamoDB could send but this version cannot convert.
    let (mut records, c) = next_write(&mut w);
    let key = c.key.clone();
    records.push(with_unknown_type(&c.record, "NewImage"));
    let report = ingest(&ing, &event_of(&records)).await;
    assert_eq!(report.quarantined.len(), 1);
    assert!(report.batch_item_failures.is_empty());
    // Other keys go on changing, up to the next change of `key`, which waits.
    let mut others = vec![];
    let mut later = None;
    while others.len() < 20 {
        let before = w.clone();
        let n = w.next_change();
        if n.key == key {
            later = Some((n, before));
            break;
        }
        others.push(n.record);
    }
    ingest(&ing, &event_of(&others)).await;
    let truth_now = match &later {
        Some((_, before)) => truth(before),
        None => truth(&w),
    };
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.quarantined_records, 1);
    assert_eq!(s.manifest.unknown_effects, 0);
    let r = check(&store, "latest", Mode::Deep).await;
    assert_eq!(r.status, Status::Incomplete, "{}", r.render());
    assert!(
        r.findings.iter().any(|f| f.kind == Kind::Quarantined),
        "{}",
        r.render()
    );
    // Restore succeeds, writes everything else exactly, and names the key.
    let (report, items) = restore(&store, "latest", false).await.unwrap();
    assert!(report.matches, "{report:?}");
    assert!(report.unproven.is_none(), "{report:?}");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert_eq!(report.quarantined[0].key, key);
    assert!(report.quarantined[0].object.contains("/quarantine/"));
    let mut expected = truth_now.clone();
    expected.remove(&item_of(&truth_now, &key).unwrap());
    assert_eq!(items, expected);
    let strict = restore(&store, "latest", true).await;
    assert!(
        strict.unwrap_err().contains("quarantined"),
        "--strict refuses"
    );

    // The key changes again (DynamoDB's old image carries the attribute this version could
    // not read): the chain of images telescopes and the restore is exact again.
    let mut filler = vec![];
    let later = match later {
        Some((n, _)) => n,
        None => loop {
            let n = w.next_change();
            if n.key == key {
                break n;
            }
            filler.push(n.record);
            assert!(
                filler.len() < 5000,
                "the workload never touched the key again"
            );
        },
    };
    filler.push(with_unknown_type(&later.record, "OldImage"));
    for chunk in filler.chunks(200) {
        ingest(&ing, &event_of(chunk)).await;
    }
    let s = seal_now(&store).await;
    // The later change is quarantined too (its old image has the unknown type), but its new
    // image is valid: the restore writes it.
    assert_eq!(s.manifest.quarantined_records, 2);
    let (report, items) = restore(&store, "latest", false).await.unwrap();
    assert!(
        report.matches && report.quarantined.is_empty(),
        "{report:?}"
    );
    assert!(report.unproven.is_none(), "{report:?}");
    assert_eq!(items, truth(&w));

    // Lambda redelivers the batch holding that quarantined record after the seal removed its
    // inbox entry: the record is quarantined again (a second entry in the inbox), and the
    // next seal lists it as a repeat, counting it once.
    let last = filler.chunks(200).last().unwrap();
    let again = ingest(&ing, &event_of(last)).await;
    assert_eq!(again.quarantined.len(), 1);
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.quarantined_records, 2, "counted once");
    let (report, items) = restore(&store, "latest", false).await.unwrap();
    assert!(report.matches, "{report:?}");
    assert_eq!(items, truth(&w));
    assert!(
        restore(&store, "latest", true).await.is_err(),
        "--strict refuses any chain holding a quarantined record that is not a REMOVE"
    );
}
on_both_stores!(quarantined_records_are_accounted);

// ---------------------------------------------------------------------------------------------
// 6. A seal stopped between each of its writes: nothing is lost, nothing counted twice.

/// Writes what a seal has to deal with: sealed history, a redelivery, a quarantined record
/// (the last change, so it stays its key's latest) and a gap waiting in the inbox. Returns the
/// workload (the truth) and the changes the segments hold.
async fn crash_setup(store: &Arc<dyn ObjectStore>) -> (Workload, u64) {
    let mut w = workload(26);
    let ing = common::ingestor(store);
    let first = w.next_event(30);
    ingest(&ing, &first).await;
    seal_now(store).await;
    ingest(&ing, &w.next_event(30)).await;
    // Lambda redelivers the first batch whole (its records were sealed already).
    ingest(&ing, &first).await;
    ingest(&ing, &w.next_event(30)).await;
    let (mut records, c) = next_write(&mut w);
    let rows = 90 + records.len() as u64;
    records.push(with_unknown_type(&c.record, "NewImage"));
    ingest(&ing, &event_of(&records)).await;
    let gap = LogEntry::Gap(GapRecord {
        format: LOG_FORMAT,
        table: TABLE.into(),
        source: "lambda-on-failure".into(),
        shard_id: Some("shardId-1".into()),
        start_sequence: Some("1".into()),
        end_sequence: Some("9".into()),
        records: Some(9),
        detail: "test".into(),
        written_at: String::new(),
    });
    store
        .put(
            &TableLayout::new(TABLE).gap_entry_key("00000000000000aa"),
            Bytes::from(serde_json::to_vec(&gap).unwrap()),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
    (w, rows)
}

/// What a correct backup of `crash_setup` looks like after a completed seal.
async fn crash_outcome(store: &Arc<dyn ObjectStore>, w: &Workload, rows: u64) {
    let layout = TableLayout::new(TABLE);
    let id = streamseal::model::manifest::resolve_snapshot(store.as_ref(), &layout, "latest")
        .await
        .unwrap();
    let m = streamseal::model::manifest::read_manifest(store.as_ref(), &layout, &id)
        .await
        .unwrap();
    assert_eq!(m.totals.rows, rows, "each change counted once");
    assert_eq!(
        m.quarantined_records, 1,
        "the quarantined record counted once"
    );
    assert_eq!(m.known_gaps, 1, "the gap counted once");
    let listed = store
        .list(&layout.inbox_prefix(), None, None)
        .await
        .unwrap();
    assert!(listed.is_empty(), "nothing left waiting: {listed:?}");
    let r = check(store, "latest", Mode::Deep).await;
    assert_eq!(r.status, Status::Incomplete, "{}", r.render());
    let open: BTreeSet<Kind> = r.findings.iter().map(|f| f.kind).collect();
    assert_eq!(
        open,
        [Kind::Gap, Kind::Quarantined].into_iter().collect(),
        "{}",
        r.render()
    );
    let (report, items) = restore(store, "latest", false).await.unwrap();
    assert!(report.matches, "{report:?}");
    assert_eq!(report.quarantined.len(), 1);
    // Everything but the quarantined key is exactly the truth.
    let all = truth(w);
    let mut expected = all.clone();
    expected.remove(&item_of(&all, &report.quarantined[0].key).unwrap());
    assert_eq!(items, expected);
}

async fn a_seal_stopped_between_any_two_writes(make: impl AsyncFn(usize) -> Arc<dyn ObjectStore>) {
    // How many writes a whole seal makes here.
    let store = make(usize::MAX).await;
    let (w, rows) = crash_setup(&store).await;
    let counting = Arc::new(FaultyStore::new(store.clone()));
    let as_store: Arc<dyn ObjectStore> = counting.clone();
    seal(
        &as_store,
        TABLE,
        &SealOptions {
            concurrency: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let total = counting.writes();
    eprintln!("a whole seal makes {total} writes here; stopping it after each of 0..{total}");
    assert!(
        total >= 8,
        "a seal here writes a ledger, a file list, a manifest, hints and removals ({total})"
    );
    crash_outcome(&store, &w, rows).await;

    for allowed in 0..total {
        let store = make(allowed).await;
        let (w, rows) = crash_setup(&store).await;
        let crashing = Arc::new(FaultyStore::new(store.clone()));
        crashing.hold_after_writes(allowed);
        let as_store: Arc<dyn ObjectStore> = crashing.clone();
        let options = SealOptions {
            concurrency: 4,
            ..Default::default()
        };
        // The seal is dropped while a write is held: what a process killed there leaves.
        tokio::select! {
            r = seal(&as_store, TABLE, &options) => panic!("the seal finished despite the crash after {allowed} writes: {:?}", r.map(|r| r.manifest.snapshot_id)),
            _ = crashing.held() => {}
        }
        // Whatever the crash left, the next seal (and the one after, for a seal whose
        // clean-up was cut short) ends in the same backup.
        seal_now(&store).await;
        seal_now(&store).await;
        crash_outcome(&store, &w, rows).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_stopped_between_any_two_writes_on_the_local_store() {
    let dirs = Mutex::new(vec![]);
    a_seal_stopped_between_any_two_writes(async |_| {
        let (dir, store) = local();
        dirs.lock().unwrap().push(dir);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_stopped_between_any_two_writes_on_s3() {
    a_seal_stopped_between_any_two_writes(async |n| {
        s3(&format!(
            "crash-{}",
            if n == usize::MAX {
                "all".into()
            } else {
                n.to_string()
            }
        ))
        .await
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Deep verify audits the store: captured data no snapshot accounts for is named.

async fn the_audit_names_what_no_snapshot_accounts_for(store: Arc<dyn ObjectStore>) {
    let layout = TableLayout::new(TABLE);
    let mut w = workload(27);
    let ing = common::ingestor(&store);
    ingest(&ing, &w.next_event(30)).await;
    // A writer stops between a segment and its entry, and its batch is never retried.
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    let faulty_store: Arc<dyn ObjectStore> = faulty.clone();
    let orphan_event = w.next_event(20);
    faulty.fail_puts_matching("/inbox/", None);
    let r = common::ingestor(&faulty_store)
        .ingest_event(&orphan_event)
        .await
        .unwrap();
    assert!(r.error.is_some());
    // A bisected retry: the whole batch's attempt failed after its segment, its halves landed.
    let mut bisected: Vec<String> = (0..10).map(|_| w.next_change().record).collect();
    let whole = format!("{{\"Records\":[{}]}}", bisected.join(","));
    let r = common::ingestor(&faulty_store)
        .ingest_event(&whole)
        .await
        .unwrap();
    assert!(r.error.is_some());
    faulty.heal();
    let second_half = bisected.split_off(5);
    ingest(&ing, &format!("{{\"Records\":[{}]}}", bisected.join(","))).await;
    ingest(
        &ing,
        &format!("{{\"Records\":[{}]}}", second_half.join(",")),
    )
    .await;
    // Something that is not a segment, where Athena reads segments.
    store
        .put(
            "orders/changes/dt=2026-01-01/hr=00/notes.txt",
            Bytes::from_static(b"hello"),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
    // S3 keeps modification times to the second: let the seal come clearly after.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    seal_now(&store).await;
    // With the default grace, objects written minutes before the seal are not judged yet.
    let r = check(&store, "latest", Mode::Deep).await;
    assert!(
        r.findings.iter().all(|f| f.kind != Kind::Orphan),
        "{}",
        r.render()
    );
    let r = check_with_grace(&store, "latest", Mode::Deep, 0).await;
    assert_eq!(r.status, Status::Corrupt, "{}", r.render());
    let audit = r.audit.clone().unwrap();
    assert_eq!(audit.superseded_segments, 1, "{}", r.render());
    let orphans: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.kind == Kind::Orphan)
        .map(|f| f.object.as_str())
        .collect();
    assert_eq!(orphans.len(), 1, "{}", r.render());
    assert!(orphans[0].contains("/changes/"), "{}", r.render());
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == Kind::Extra && f.object.ends_with("notes.txt"))
    );
    // Quick verify does not list the store; the snapshot itself is intact.
    assert_eq!(
        check(&store, "latest", Mode::Quick).await.status,
        Status::Ok
    );
    // The restore lacks the orphan's changes, which deep verify named: it either says the
    // result does not add up (later changes of the orphan's keys) or differs from the truth.
    match restore(&store, "latest", false).await {
        Err(e) => assert!(e.contains("does not match"), "{e}"),
        Ok((_, items)) => assert_ne!(items, truth(&w)),
    }

    // Replaying the lost batch and removing the stray file: the audit is clean.
    ingest(&ing, &orphan_event).await;
    store
        .delete("orders/changes/dt=2026-01-01/hr=00/notes.txt")
        .await
        .unwrap();
    seal_now(&store).await;
    let r = check_with_grace(&store, "latest", Mode::Deep, 0).await;
    assert_eq!(r.status, Status::Ok, "{}", r.render());
    promise_kept(&store, &w).await;
    let _ = layout;
}
on_both_stores!(the_audit_names_what_no_snapshot_accounts_for);

// ---------------------------------------------------------------------------------------------
// The same, through the command line: a writer under a skewed system clock (faketime), and a
// `streamseal seal` process killed (SIGKILL) between each of its writes to S3.

fn cli(args: &[&str], env: &[(&str, String)], prefix: &[&str]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_streamseal");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    };
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `faketime`, which scripts/test installs: the test needs a process whose clock is wrong.
fn faketime() -> &'static str {
    let ok = std::process::Command::new("faketime")
        .args(["-f", "+2h", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "faketime is not installed: run the suite with scripts/test (it installs it), or apt-get install faketime"
    );
    "faketime"
}

#[test]
fn cli_writers_with_skewed_clocks_lose_nothing() {
    let faketime = faketime();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup");
    let target = target.to_str().unwrap();
    let mut w = workload(41);
    let events = |w: &mut Workload| {
        (0..5)
            .map(|_| w.next_event(40))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let file = |name: &str, body: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    // libfaketime fakes the wall clock only; tokio's timers keep the real monotonic clock.
    let skew = |offset: &str| -> Vec<(&str, String)> {
        vec![
            ("FAKETIME", offset.into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ]
    };
    let ahead = file("ahead.jsonl", events(&mut w));
    let out = cli(
        &["ingest", "--events", &ahead, "--target", target],
        &skew("+2h"),
        &[faketime, "-f", "+2h"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // The writer's clock really ran ahead: its entries say so.
    let entry = std::fs::read_dir(dir.path().join("backup/orders/inbox"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    let written = chrono::DateTime::parse_from_rfc3339(v["written_at"].as_str().unwrap()).unwrap();
    let ahead_by = written.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    assert!(ahead_by > HOUR, "written_at is {ahead_by} ms ahead");
    let seal_args = ["seal", "--table", TABLE, "--target", target];
    common::run_ok(&seal_args);
    let right = file("right.jsonl", events(&mut w));
    common::run_ok(&["ingest", "--events", &right, "--target", target]);
    let behind = file("behind.jsonl", events(&mut w));
    let out = cli(
        &["ingest", "--events", &behind, "--target", target],
        &skew("-1h"),
        &[faketime, "-f", "-1h"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // A seal whose own clock is three hours behind.
    let out = cli(&seal_args, &[], &[faketime, "-f", "-3h"]);
    assert!(out.status.success(), "{}", text(&out));
    common::run_ok(&["verify", "--table", TABLE, "--target", target, "--deep"]);
    let restored = dir.path().join("restored");
    let to = format!("file://{}", restored.display());
    common::run_ok(&["restore", "--table", TABLE, "--target", target, "--to", &to]);
    let mut items = BTreeSet::new();
    for f in std::fs::read_dir(restored.join("data")).unwrap().flatten() {
        let file = std::fs::File::open(f.path()).unwrap();
        for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            items.insert(canonicalize(&v["Item"].to_string()).unwrap());
        }
    }
    assert_eq!(items, truth(&w), "the restore equals the ground truth");
}

/// Talks to the emulator's test gate (tests/support/moto_server.py).
fn gate(path: &str) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let endpoint = common::moto()
        .endpoint
        .trim_start_matches("http://")
        .to_owned();
    let mut s = std::net::TcpStream::connect(&endpoint).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("gate answered {response:?}: {e}"))
}

#[test]
fn a_seal_process_killed_between_any_two_writes_loses_and_doubles_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = common::moto_env();
    let run = |bucket: &str, allow: Option<usize>| -> Option<std::process::Output> {
        let target = format!("s3://{bucket}/backup");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamseal"))
            .args(["seal", "--table", TABLE, "--target", &target])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if allow.is_some() {
            // Wait until the gate holds a write (then kill), or the seal ends on its own.
            let started = std::time::Instant::now();
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if gate("/__gate").get("held").and_then(|h| h.as_u64()) > Some(0) {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    gate("/__gate/reset");
                    return None;
                }
                assert!(started.elapsed() < std::time::Duration::from_secs(60));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Some(child.wait_with_output().unwrap())
    };
    // How many writes a whole seal makes.
    let bucket = "cli-kill-count";
    let store = rt.block_on(common::fresh_s3_store(bucket, "backup"));
    let (w, rows) = rt.block_on(crash_setup(&store));
    gate(&format!("/__gate/arm?bucket={bucket}&allow=1000000"));
    let out = run(bucket, None).unwrap();
    let total = gate("/__gate")["writes"].as_u64().unwrap() as usize;
    gate("/__gate/reset");
    assert_eq!(
        out.status.code(),
        Some(3),
        "incomplete: a gap and a quarantined record: {}",
        text(&out)
    );
    rt.block_on(crash_outcome(&store, &w, rows));
    eprintln!("`streamseal seal` makes {total} writes here; killing it before each one");
    assert!(total >= 8, "{total}");
    for allow in 0..total {
        let bucket = format!("cli-kill-{allow}");
        let store = rt.block_on(common::fresh_s3_store(&bucket, "backup"));
        let (w, rows) = rt.block_on(crash_setup(&store));
        gate(&format!("/__gate/arm?bucket={bucket}&allow={allow}"));
        let finished = run(&bucket, Some(allow));
        gate("/__gate/reset");
        assert!(
            finished.is_none(),
            "the seal made fewer than {} writes",
            allow + 1
        );
        // A new seal picks up whatever the killed one left.
        let out = run(&bucket, None).unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        rt.block_on(crash_outcome(&store, &w, rows));
    }
}

// ---------------------------------------------------------------------------------------------
// Edges: a record both quarantined and converted, entries too large to record, a quarantined
// record edited after sealing, a rejected entry's segment in the audit, a partial redelivery
// whose segment is gone.

async fn edges_are_accounted_once(store: Arc<dyn ObjectStore>) {
    let layout = TableLayout::new(TABLE);
    let mut w = workload(28);
    let ing = common::ingestor(&store);
    ingest(&ing, &w.next_event(20)).await;
    // One writer quarantines a record (an older version, say); another converts it.
    let (mut records, c) = next_write(&mut w);
    records.push(c.record.clone());
    let mut quarantined = records.clone();
    let last = quarantined.len() - 1;
    quarantined[last] = with_unknown_type(&c.record, "NewImage");
    let r = ingest(&ing, &event_of(&quarantined)).await;
    assert_eq!(r.quarantined.len(), 1);
    ingest(&ing, &event_of(&records)).await;
    let s = seal_now(&store).await;
    assert_eq!(
        s.manifest.quarantined_records, 0,
        "the converted copy counts; the quarantined one repeats it"
    );
    let files = streamseal::model::manifest::read_files(store.as_ref(), &s.manifest)
        .await
        .unwrap();
    assert!(
        files.repeats.iter().any(|r| r.sequence_number.is_some()),
        "{:?}",
        files.repeats
    );
    promise_kept(&store, &w).await;

    // The other way round, across seals: quarantined first and sealed, converted later. The
    // record counts once, as the quarantined change (the converted row is skipped).
    let (mut records, c) = next_write(&mut w);
    records.push(c.record.clone());
    let mut quarantined = records.clone();
    let last = quarantined.len() - 1;
    quarantined[last] = with_unknown_type(&c.record, "NewImage");
    ingest(&ing, &event_of(&quarantined)).await;
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.quarantined_records, 1);
    ingest(&ing, &event_of(&records)).await;
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.quarantined_records, 1);
    let (report, items) = restore(&store, "latest", false).await.unwrap();
    assert!(report.matches && report.unproven.is_none(), "{report:?}");
    let all = truth(&w);
    let mut expected = all.clone();
    expected.remove(&item_of(&all, &c.key).unwrap());
    assert_eq!(items, expected);

    // A quarantined record edited after it was sealed.
    let q = &report.quarantined[0].object;
    let original = store.get(q).await.unwrap();
    let mut edited = original.to_vec();
    let at = edited.len() / 2;
    edited[at] = if edited[at] == b'a' { b'b' } else { b'a' };
    store
        .put(q, Bytes::from(edited), PutMode::Overwrite)
        .await
        .unwrap();
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(&store, "latest", mode).await;
        assert_eq!(r.status, Status::Corrupt, "{mode:?}: {}", r.render());
        assert!(
            r.findings
                .iter()
                .any(|f| f.kind == Kind::Altered && f.object == *q),
            "{}",
            r.render()
        );
    }
    store.put(q, original, PutMode::Overwrite).await.unwrap();

    // An entry too large to be one is rejected once and left where it is, seal after seal.
    let big = layout.segment_entry_key(
        &streamseal::model::change::SequenceNumber::parse("1").unwrap(),
        &streamseal::model::change::SequenceNumber::parse("2").unwrap(),
        "ffffffffffffffff",
    );
    store
        .put(&big, Bytes::from(vec![b' '; 1 << 21]), PutMode::IfAbsent)
        .await
        .unwrap();
    let s = seal_now(&store).await;
    assert_eq!(s.manifest.rejected_log_entries, 1);
    for _ in 0..2 {
        let s = seal_now(&store).await;
        let files = streamseal::model::manifest::read_files(store.as_ref(), &s.manifest)
            .await
            .unwrap();
        assert_eq!(files.kept, vec![big.clone()]);
        assert!(
            store.head(&big).await.unwrap().is_some(),
            "kept, never removed unrecorded"
        );
    }

    // A partial redelivery whose segment is gone: rejected and named, the seal goes on.
    let batch: Vec<String> = (0..10).map(|_| w.next_change().record).collect();
    ingest(&ing, &event_of(&batch[..5])).await;
    seal_now(&store).await;
    let r = ingest(&ing, &event_of(&batch)).await;
    store.delete(&r.segments[0].key).await.unwrap();
    let s = seal_now(&store).await;
    assert!(
        s.findings
            .iter()
            .any(|f| f.kind == Kind::Rejected && f.problem.contains("cannot be read")),
        "{:?}",
        s.findings
    );
    // The audit names no orphan for a rejected entry's segment: its finding does.
    let _ = check_with_grace(&store, "latest", Mode::Deep, 0).await;
    let r = check_with_grace(&store, "latest", Mode::Deep, 0).await;
    assert!(
        r.findings.iter().all(|f| f.kind != Kind::Orphan),
        "{}",
        r.render()
    );
}
on_both_stores!(edges_are_accounted_once);

//! Seal and verify on real stores (local directory, S3 on the emulator): duplicate resolution
//! against ground truth, tamper detection, write-once manifests and Object Lock.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use streamseal::change::StreamViewType;
use streamseal::ingest::Ingestor;
use streamseal::item::{StateDigest, item_hash};
use streamseal::layout::TableLayout;
use streamseal::log::LogEntry;
use streamseal::manifest::{self, Manifest};
use streamseal::seal::{SealOptions, seal};
use streamseal::store::local::LocalStore;
use streamseal::store::{ObjectStore, PutMode, PutOutcome, RetentionMode};
use streamseal::verify::{Mode, Scope, VerifyOptions, VerifyReport, verify};
use streamseal::workload::Workload;

const TABLE: &str = "orders";

fn ingestor(store: &Arc<dyn ObjectStore>) -> Ingestor {
    common::ingestor(store)
}

fn event(records: &[String]) -> String {
    format!("{{\"Records\":[{}]}}", records.join(","))
}

fn truth_digest(w: &Workload) -> StateDigest {
    let mut d = StateDigest::ZERO;
    for item in w.items() {
        d.add_item(&item_hash(item).unwrap());
    }
    d
}

async fn ingest(ing: &Ingestor, records: &[String]) {
    let report = ing.ingest_event(&event(records)).await.unwrap();
    assert!(report.error.is_none(), "{report:?}");
}

async fn check(store: &Arc<dyn ObjectStore>, mode: Mode) -> VerifyReport {
    verify(
        store,
        TABLE,
        "latest",
        VerifyOptions {
            mode,
            scope: Scope::Chain,
            concurrency: 8,
        },
    )
    .await
    .unwrap()
}

fn local() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    (dir, store)
}

/// Redelivered, bisected and overlapping batches, before and across seals: every sequence
/// number counts once and the digest equals the ground truth's.
#[tokio::test]
async fn redelivered_and_bisected_batches_count_once() {
    let (_dir, store) = local();
    let ing = ingestor(&store);
    let mut w = Workload::new(7, TABLE, StreamViewType::NewAndOldImages, 300);
    let batches: Vec<Vec<String>> = (0..12)
        .map(|_| (0..20).map(|_| w.next_change().record).collect())
        .collect();

    for b in &batches[..7] {
        ingest(&ing, b).await;
    }
    // Lambda redelivers batch 2 whole, and bisects batch 3 after a timeout.
    ingest(&ing, &batches[2]).await;
    ingest(&ing, &batches[3][..10]).await;
    ingest(&ing, &batches[3][10..]).await;
    // A retry that straddles two earlier batches.
    let straddle: Vec<String> = batches[4][10..]
        .iter()
        .chain(&batches[5][..10])
        .cloned()
        .collect();
    ingest(&ing, &straddle).await;
    let first = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    assert_eq!(first.manifest.files.rows, 7 * 20);
    assert!(first.manifest.files.duplicate_segments >= 3);

    // After the seal: half of batch 7 first, then all of it (a partial overlap the seal
    // resolves by reading that one segment), and redeliveries of batches sealed already.
    ingest(&ing, &batches[7][..10]).await;
    ingest(&ing, &batches[7]).await;
    for b in &batches[8..] {
        ingest(&ing, b).await;
    }
    ingest(&ing, &batches[1]).await;
    ingest(&ing, &batches[6][5..15]).await;
    let second = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    let m = &second.manifest;
    assert_eq!(m.totals.rows, 12 * 20, "each change counts once");
    assert_eq!(m.item_count, w.len() as i64);
    assert_eq!(m.state_digest, Some(truth_digest(&w)));
    assert!(
        second.lookback_log_entries > 0,
        "cross-seal duplicates were looked up"
    );
    let files = manifest::read_files(store.as_ref(), m).await.unwrap();
    assert!(
        files
            .segments
            .iter()
            .any(|s| !s.skipped_sequences.as_str().is_empty()),
        "the partial overlap is kept with skipped rows"
    );
    assert_eq!(files.duplicates.len(), 2);

    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(&store, mode).await;
        assert!(r.ok, "{}", r.render());
    }
}

/// Builds a small sealed backup and returns the manifest.
async fn sealed_backup(store: &Arc<dyn ObjectStore>) -> Manifest {
    let ing = ingestor(store);
    let mut w = Workload::new(11, TABLE, StreamViewType::NewAndOldImages, 200);
    for _ in 0..3 {
        let records: Vec<String> = (0..15).map(|_| w.next_change().record).collect();
        ingest(&ing, &records).await;
    }
    let report = seal(store, TABLE, &SealOptions::default()).await.unwrap();
    for mode in [Mode::Quick, Mode::Deep] {
        let r = check(store, mode).await;
        assert!(r.ok, "untouched snapshot verifies: {}", r.render());
    }
    report.manifest
}

/// How to undo a tamper: put the original bytes back, or delete what was added.
enum Undo {
    Put(String, Bytes),
    Delete(String),
}

/// After a tamper, checks that verify fails naming `object`, then undoes it and checks that
/// the snapshot verifies again.
async fn expect_detected(
    store: &Arc<dyn ObjectStore>,
    what: &str,
    object: &str,
    modes: &[Mode],
    undo: Undo,
) {
    for &mode in modes {
        let r = check(store, mode).await;
        assert!(!r.ok, "{what}: {mode:?} verify passed");
        assert!(
            r.findings.iter().any(|f| f.object == object),
            "{what}: {mode:?} verify does not name {object}: {}",
            r.render()
        );
    }
    match undo {
        Undo::Put(key, bytes) => store.put(&key, bytes, PutMode::Overwrite).await.map(|_| ()),
        Undo::Delete(key) => store.delete(&key).await,
    }
    .unwrap();
    let r = check(store, Mode::Deep).await;
    assert!(r.ok, "{what}: after undoing: {}", r.render());
}

async fn tamper_suite(store: Arc<dyn ObjectStore>) {
    let m = sealed_backup(&store).await;
    let layout = TableLayout::new(TABLE);
    let files = manifest::read_files(store.as_ref(), &m).await.unwrap();
    let seg = files.segments[1].key.clone();
    let original = store.get(&seg).await.unwrap();

    // Delete a segment.
    store.delete(&seg).await.unwrap();
    expect_detected(
        &store,
        "deleted segment",
        &seg,
        &[Mode::Quick, Mode::Deep],
        Undo::Put(seg.clone(), original.clone()),
    )
    .await;

    // Truncate one.
    store
        .put(
            &seg,
            original.slice(..original.len() / 2),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    expect_detected(
        &store,
        "truncated segment",
        &seg,
        &[Mode::Quick, Mode::Deep],
        Undo::Put(seg.clone(), original.clone()),
    )
    .await;

    // Flip one byte in the middle (same size).
    let mut flipped = original.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    store
        .put(&seg, Bytes::from(flipped), PutMode::Overwrite)
        .await
        .unwrap();
    expect_detected(
        &store,
        "flipped byte",
        &seg,
        &[Mode::Quick, Mode::Deep],
        Undo::Put(seg.clone(), original.clone()),
    )
    .await;

    // A log entry for a foreign object, slipped into the sealed range after sealing.
    let cursor = m.watermark.log_cursor.clone().unwrap();
    let t = layout.log_key_time(&cursor).unwrap();
    let foreign_log = layout.log_key(t - 1, "f0f0f0f0f0f0f0f0");
    let mut entry = match LogEntry::parse(&cursor, &store.get(&cursor).await.unwrap()).unwrap() {
        LogEntry::Segment(r) => r,
        other => panic!("expected a segment entry, got {other:?}"),
    };
    entry.key = entry.key.replace(".parquet", "-foreign.parquet");
    store
        .put(
            &foreign_log,
            Bytes::from(serde_json::to_vec(&LogEntry::Segment(entry)).unwrap()),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
    expect_detected(
        &store,
        "foreign log entry",
        &foreign_log,
        &[Mode::Quick],
        Undo::Delete(foreign_log.clone()),
    )
    .await;

    // Edit a manifest field.
    let mkey = layout.snapshot_key(&m.snapshot_id);
    let original_manifest = store.get(&mkey).await.unwrap();
    let mut edited = m.clone();
    edited.item_count += 1;
    store
        .put(&mkey, Bytes::from(edited.to_bytes()), PutMode::Overwrite)
        .await
        .unwrap();
    expect_detected(
        &store,
        "edited manifest",
        &mkey,
        &[Mode::Quick, Mode::Deep],
        Undo::Put(mkey.clone(), original_manifest),
    )
    .await;
}

#[tokio::test]
async fn tampering_is_detected_on_the_local_store() {
    let (_dir, store) = local();
    tamper_suite(store).await;
}

#[tokio::test]
async fn tampering_is_detected_on_s3() {
    let store = common::fresh_s3_store("seal-tamper", "backup").await;
    tamper_suite(store).await;
}

/// A foreign object under a valid-looking segment name with a well-formed log entry (a
/// segment of another table, copied in before the seal): the seal rejects the entry and verify
/// fails naming it.
#[tokio::test]
async fn foreign_segments_are_rejected_and_reported() {
    let (_dir, store) = local();
    let ing = ingestor(&store);
    let mut w = Workload::new(3, TABLE, StreamViewType::NewAndOldImages, 200);
    ingest(
        &ing,
        &(0..10).map(|_| w.next_change().record).collect::<Vec<_>>(),
    )
    .await;
    let mut other = Workload::new(4, "other", StreamViewType::NewAndOldImages, 200);
    ingest(
        &ing,
        &(0..10)
            .map(|_| other.next_change().record)
            .collect::<Vec<_>>(),
    )
    .await;
    let olayout = TableLayout::new("other");
    let olog = store
        .list(&olayout.log_prefix(), None, None)
        .await
        .unwrap()
        .remove(0)
        .key;
    let LogEntry::Segment(mut rec) =
        LogEntry::parse(&olog, &store.get(&olog).await.unwrap()).unwrap()
    else {
        panic!("segment entry expected")
    };
    let bytes = store.get(&rec.key).await.unwrap();
    rec.key = rec.key.replacen("other/", "orders/", 1);
    rec.table = TABLE.into();
    store.put(&rec.key, bytes, PutMode::IfAbsent).await.unwrap();
    let layout = TableLayout::new(TABLE);
    let tag = rec
        .key
        .rsplit('-')
        .next()
        .unwrap()
        .trim_end_matches(".parquet")
        .to_owned();
    let log_key = layout.log_key(chrono::Utc::now().timestamp_millis(), &tag);
    store
        .put(
            &log_key,
            Bytes::from(serde_json::to_vec(&LogEntry::Segment(rec)).unwrap()),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
    let sealed = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    assert_eq!(sealed.manifest.rejected_log_entries, 1);
    assert_eq!(
        sealed.manifest.files.rows, 10,
        "only this table's records count"
    );
    let r = check(&store, Mode::Quick).await;
    assert!(!r.ok);
    assert!(
        r.findings
            .iter()
            .any(|f| f.object == log_key && f.problem.contains("other")),
        "{}",
        r.render()
    );
}

/// Two seals racing from the same parent: the manifest id is written once, the loser starts
/// over, and the chain stays linear. A second write of an existing id is refused.
#[tokio::test]
async fn manifests_are_written_once() {
    let (_dir, store) = local();
    let first = sealed_backup(&store).await;
    let options = SealOptions::default();
    let (a, b) = tokio::join!(seal(&store, TABLE, &options), seal(&store, TABLE, &options));
    let (a, b) = (a.unwrap().manifest, b.unwrap().manifest);
    let mut ids = [a.snapshot_id.clone(), b.snapshot_id.clone()];
    ids.sort();
    assert_eq!(ids, [manifest::snapshot_id(2), manifest::snapshot_id(3)]);
    let later = if a.generation == 3 { &a } else { &b };
    assert_eq!(
        later.parent.as_ref().unwrap().snapshot_id,
        manifest::snapshot_id(2)
    );
    let key = TableLayout::new(TABLE).snapshot_key(&first.snapshot_id);
    let again = store
        .put(&key, Bytes::from(first.to_bytes()), PutMode::IfAbsent)
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::AlreadyExists);
    let r = check(&store, Mode::Quick).await;
    assert!(r.ok, "{}", r.render());
    assert_eq!(r.manifests, 3);
}

/// With Object Lock on the bucket, the manifest is written with a retention period and the
/// emulator refuses to delete its version before the period ends.
#[tokio::test]
async fn object_lock_protects_manifests() {
    let client = common::s3_client();
    let bucket = "seal-locked";
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(streamseal::store::s3::S3Store::new(client.clone(), bucket, "locked").unwrap());
    let ing = ingestor(&store);
    let mut w = Workload::new(5, TABLE, StreamViewType::NewAndOldImages, 200);
    ingest(
        &ing,
        &(0..10).map(|_| w.next_change().record).collect::<Vec<_>>(),
    )
    .await;
    let report = seal(
        &store,
        TABLE,
        &SealOptions {
            retention: Some((RetentionMode::Governance, 1)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.manifest.retain_until.is_some());
    let key = format!(
        "locked/{}",
        TableLayout::new(TABLE).snapshot_key(&report.manifest.snapshot_id)
    );
    let head = client
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert!(head.object_lock_retain_until_date().is_some());
    let version = head.version_id().unwrap().to_owned();
    let deleted = client
        .delete_object()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await;
    assert!(deleted.is_err(), "a locked manifest version was deleted");
    let still = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await;
    assert!(still.is_ok());
    let r = check(&store, Mode::Quick).await;
    assert!(r.ok, "{}", r.render());
}

/// Writes a log entry for a segment of `rows` records written at `written_ms` (no Parquet:
/// seal reads only the log).
async fn synthetic_entry(store: &Arc<dyn ObjectStore>, written_ms: i64, i: u64) {
    use streamseal::change::SequenceNumber;
    use streamseal::layout::HourPartition;
    use streamseal::log::SequenceList;
    use streamseal::segment::{SEGMENT_FORMAT, SegmentRecord};
    let layout = TableLayout::new(TABLE);
    let seqs: Vec<String> = (0..3u128)
        .map(|r| (100_000_000_000_000_000_000 + u128::from(i) * 100 + r).to_string())
        .collect();
    let (first, last) = (
        SequenceNumber::parse(&seqs[0]).unwrap(),
        SequenceNumber::parse(&seqs[2]).unwrap(),
    );
    let tag = format!("{i:016x}");
    let record = SegmentRecord {
        format: SEGMENT_FORMAT,
        table: TABLE.into(),
        key: layout.segment_key(HourPartition::of_millis(written_ms), &first, &last, &tag),
        bytes: 1,
        rows: 3,
        sha256: format!("{i:064x}"),
        first_sequence: first.to_string(),
        last_sequence: last.to_string(),
        min_time_ms: Some(written_ms - 10),
        max_time_ms: Some(written_ms - 1),
        digest_delta: Some(StateDigest::ZERO),
        item_count_delta: 3,
        ttl_deletes: 0,
        stream_view_type: StreamViewType::NewAndOldImages,
        event_source_arn: None,
        shard_id: None,
        written_at: String::new(),
        sequence_numbers: SequenceList::from_sequences(seqs.iter().map(String::as_str)),
    };
    store
        .put(
            &layout.log_key(written_ms, &tag),
            Bytes::from(serde_json::to_vec(&LogEntry::Segment(record)).unwrap()),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
}

/// Entries inside the overlap window (including one exactly at its start) are listed again by
/// the next seal and must be recognised as sealed, not sealed twice; an entry that becomes
/// visible late, inside the window, is still sealed.
#[tokio::test]
async fn the_overlap_window_neither_repeats_nor_loses_entries() {
    let (_dir, store) = local();
    let window = SealOptions::default().overlap_window_ms;
    let t0 = 1_767_225_600_000;
    synthetic_entry(&store, t0 - 1, 0).await;
    synthetic_entry(&store, t0, 1).await;
    synthetic_entry(&store, t0 + window / 2, 2).await;
    synthetic_entry(&store, t0 + window, 3).await;
    let first = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    assert_eq!(first.manifest.files.segments, 4);
    let again = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    assert_eq!(again.manifest.files.segments, 0);
    assert_eq!(again.manifest.files.duplicate_segments, 0);
    assert_eq!(again.manifest.rejected_log_entries, 0);
    // A slow writer's entry shows up after the seal, stamped inside the window.
    synthetic_entry(&store, t0 + window - 5, 4).await;
    let late = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    assert_eq!(late.manifest.files.segments, 1);
    assert_eq!(late.manifest.totals.rows, 15);
}

/// Quarantined records and known gaps are counted in the manifest; a gap fails verify (the
/// snapshot is known to be incomplete) and is named; a quarantined record is a note only.
#[tokio::test]
async fn quarantined_records_and_gaps_are_counted() {
    use streamseal::log::{GapRecord, LOG_FORMAT};
    let (_dir, store) = local();
    let ing = ingestor(&store);
    let report = ing
        .ingest_event(&common::fixture("malformed-record.json"))
        .await
        .unwrap();
    assert_eq!(report.quarantined.len(), 1);
    let table = report.table.clone().unwrap();
    let layout = TableLayout::new(&table);
    let sealed = seal(&store, &table, &SealOptions::default()).await.unwrap();
    assert_eq!(sealed.manifest.quarantined_records, 1);
    let ok = verify(&store, &table, "latest", VerifyOptions::default())
        .await
        .unwrap();
    assert!(ok.ok, "{}", ok.render());
    assert!(ok.render().contains("1 quarantined record"));

    let gap_key = layout.log_key(chrono::Utc::now().timestamp_millis(), "gap0000000000001");
    let gap = LogEntry::Gap(GapRecord {
        format: LOG_FORMAT,
        table: table.clone(),
        source: "lambda-on-failure".into(),
        shard_id: Some("shardId-00000001700000000000-abcdef12".into()),
        start_sequence: Some("100000000000000000001".into()),
        end_sequence: Some("100000000000000000009".into()),
        records: Some(9),
        detail: "test".into(),
        written_at: String::new(),
    });
    store
        .put(
            &gap_key,
            Bytes::from(serde_json::to_vec(&gap).unwrap()),
            PutMode::IfAbsent,
        )
        .await
        .unwrap();
    let sealed = seal(&store, &table, &SealOptions::default()).await.unwrap();
    assert_eq!(sealed.manifest.known_gaps, 1);
    let r = verify(&store, &table, "latest", VerifyOptions::default())
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(
        r.findings
            .iter()
            .any(|f| f.object == gap_key && f.problem.contains("9 record(s) missing")),
        "{}",
        r.render()
    );
}

//! Seal and verify on real stores (local directory, S3 on the emulator): duplicate resolution
//! against ground truth, tamper detection, write-once manifests and Object Lock.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use streamseal::capture::Ingestor;
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::findings::{Kind, Status};
use streamseal::model::item::{StateDigest, item_hash};
use streamseal::model::layout::TableLayout;
use streamseal::model::log::LogEntry;
use streamseal::model::manifest::{self, Manifest};
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::ops::verify::{Mode, Scope, VerifyOptions, VerifyReport, verify};
use streamseal::store::local::LocalStore;
use streamseal::store::{ObjectStore, PutMode, PutOutcome, RetentionMode};

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
            ..Default::default()
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
    // Lambda redelivers batch 2 whole (its entry is found waiting: nothing is added), and
    // bisects batch 3 after a timeout.
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
        second.lookback_snapshots > 0,
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
    // Batch 6's slice is a duplicate segment; batch 1's redelivery rewrote the very entry the
    // first seal had sealed (same name), which the second seal recognises from its parent.
    assert_eq!(files.duplicates.len(), 1);
    assert_eq!(second.leftover_log_entries, 1);

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

/// How to undo a tamper: put the original bytes back.
enum Undo {
    Put(String, Bytes),
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
    let Undo::Put(key, bytes) = undo;
    store.put(&key, bytes, PutMode::Overwrite).await.unwrap();
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

    // Edit the file list (a segment dropped from it, content re-serialised).
    let mut edited_files = files.clone();
    edited_files.segments.remove(0);
    let original_files = store.get(&m.files.key).await.unwrap();
    store
        .put(
            &m.files.key,
            Bytes::from(serde_json::to_vec(&edited_files).unwrap()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    expect_detected(
        &store,
        "edited file list",
        &m.files.key,
        &[Mode::Quick, Mode::Deep],
        Undo::Put(m.files.key.clone(), original_files),
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
        .list(&olayout.inbox_prefix(), None, None)
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
    let log_key = olog.replacen("other/", "orders/", 1);
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
    let _ = layout;
    let r = check(&store, Mode::Quick).await;
    assert_eq!(r.status, Status::Incomplete, "{}", r.render());
    assert!(
        r.findings.iter().any(|f| f.kind == Kind::Rejected
            && f.object == log_key
            && f.problem.contains("other")),
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

/// A bucket with Object Lock enabled on the emulator, as a store under `prefix`.
async fn locked_bucket(bucket: &str, prefix: &str) -> (aws_sdk_s3::Client, Arc<dyn ObjectStore>) {
    let client = common::s3_client();
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(streamseal::store::s3::S3Store::new(client.clone(), bucket, prefix).unwrap());
    (client, store)
}

/// Captures ten changes of `seed`'s workload (not sealed).
async fn ten_changes(store: &Arc<dyn ObjectStore>, seed: u64) {
    let mut w = Workload::new(seed, TABLE, StreamViewType::NewAndOldImages, 200);
    let records: Vec<String> = (0..10).map(|_| w.next_change().record).collect();
    ingest(&ingestor(store), &records).await;
}

/// With Object Lock on the bucket, the manifest is written with a retention period and the
/// emulator refuses to delete its version before the period ends.
#[tokio::test]
async fn object_lock_protects_manifests() {
    let bucket = "seal-locked";
    let (client, store) = locked_bucket(bucket, "locked").await;
    ten_changes(&store, 5).await;
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

/// The template's Object Lock: the bucket's default retention (COMPLIANCE, as
/// `ObjectLockRetentionDays` sets it; GOVERNANCE here so the emulator's bucket is disposable)
/// locks every object version the capture and the seal write, segments, inbox entries and
/// manifests alike, and also each rewrite of `head.json`: no version can be deleted before
/// its period ends. The backup stays readable and verifies.
#[tokio::test]
async fn default_retention_locks_segments_manifests_and_every_rewrite() {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    let bucket = "seal-default-locked";
    let (client, store) = locked_bucket(bucket, "b").await;
    client
        .put_object_lock_configuration()
        .bucket(bucket)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Governance)
                                .days(1)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    ten_changes(&store, 6).await;
    let inbox = store
        .list(&TableLayout::new(TABLE).inbox_prefix(), None, None)
        .await
        .unwrap();
    let report = seal(&store, TABLE, &SealOptions::default()).await.unwrap();
    let layout = TableLayout::new(TABLE);
    let segment = store
        .list(&format!("{TABLE}/changes/"), None, None)
        .await
        .unwrap()
        .remove(0)
        .key;
    for key in [
        segment,
        inbox[0].key.clone(),
        layout.snapshot_key(&report.manifest.snapshot_id),
        layout.snapshot_head_key(),
    ] {
        let full = format!("b/{key}");
        let versions = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(&full)
            .send()
            .await
            .unwrap();
        let version = versions
            .versions()
            .iter()
            .find(|v| v.key() == Some(full.as_str()))
            .and_then(|v| v.version_id())
            .unwrap_or_else(|| panic!("no version of {full}"))
            .to_owned();
        let head = client
            .head_object()
            .bucket(bucket)
            .key(&full)
            .version_id(&version)
            .send()
            .await
            .unwrap();
        assert!(
            head.object_lock_retain_until_date().is_some(),
            "{full} is not locked"
        );
        let deleted = client
            .delete_object()
            .bucket(bucket)
            .key(&full)
            .version_id(&version)
            .send()
            .await;
        assert!(deleted.is_err(), "a locked version of {full} was deleted");
    }
    // The seal removed the inbox entries it committed: a delete marker, the locked version
    // stays. Everything verifies.
    let r = check(&store, Mode::Deep).await;
    assert!(r.ok, "{}", r.render());
}

/// Quarantined records and known gaps are counted in the manifest and are open findings: verify
/// says incomplete and names them, in every later snapshot too.
#[tokio::test]
async fn quarantined_records_and_gaps_are_counted() {
    use streamseal::model::log::{GapRecord, LOG_FORMAT};
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
    let r = verify(&store, &table, "latest", VerifyOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Incomplete, "{}", r.render());
    assert!(
        r.findings.iter().any(|f| f.kind == Kind::Quarantined),
        "{}",
        r.render()
    );

    let gap_key = layout.gap_entry_key("0000000000000001");
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
    assert_eq!(r.status, Status::Incomplete, "{}", r.render());
    assert!(
        r.findings.iter().any(|f| f.kind == Kind::Gap
            && f.object == gap_key
            && f.problem.contains("9 record(s) missing")),
        "{}",
        r.render()
    );
    // Both stay open in later snapshots.
    seal(&store, &table, &SealOptions::default()).await.unwrap();
    let r = verify(&store, &table, "latest", VerifyOptions::default())
        .await
        .unwrap();
    let open: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
    assert!(
        open.contains(&Kind::Gap) && open.contains(&Kind::Quarantined),
        "{}",
        r.render()
    );
}

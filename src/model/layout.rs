//! Every object key streamseal reads or writes, in one place.
//!
//! Keys are relative to the store's root (`s3://bucket/prefix` or `file:///dir`), one folder
//! per table:
//!
//! ```text
//! <table>/changes/dt=YYYY-MM-DD/hr=HH/<first-seq>-<last-seq>-<tag>.parquet  segments (Athena location)
//! <table>/inbox/<kind>-<name>.json                                           log entries waiting for the next seal
//! <table>/quarantine/<sha256>.json                                           records that could not be converted
//! <table>/snapshots/<generation>.json                                        sealed manifests, written once
//! <table>/snapshots/head.json                                                hint: the latest generation (rewritten)
//! <table>/snapshot-files/<generation>-<sha256-prefix>.json                   a manifest's file list, written once
//! <table>/findings/<generation>-<sha256-prefix>.json                         a chain's findings ledger, written once
//! <table>/base/<start-ms>/part-*.parquet, base.json                          bootstrap base state (`crate::model::base`)
//! <table>/shards/<stream-label>.json                                         the stream's shard map (`crate::model::shards`)
//! <table>/checkpoints/<shard-id>.json                                        `tail`'s per-shard progress
//! <table>/restores/<sha16>.json                                              a DynamoDB restore's checkpoint
//! <table>/compaction/cleaned.json                                            compactions whose small segments are deleted
//! <table>/athena/snapshot-files/generation=<id>/symlink.txt                  Athena file list of a snapshot's segments
//! <table>/athena/base-files/symlink.txt                                      Athena file list of the adopted base
//! ```
//!
//! Segment names are deterministic: sequence numbers are zero-padded to 40 digits (so names
//! sort numerically) and `tag` is a hash of the segment's sequence numbers and event ids, so a
//! redelivered batch maps to the same names while two different batches never collide.
//!
//! Log entries are named by what they describe, never by when they were written: a segment's
//! entry by the segment (`s-<first>-<last>-<tag>`), a quarantined record's by the record's
//! SHA-256 (`q-`), a gap's by its range (`g-`), a compaction's by its parts (`c-`), an
//! acknowledgment by the decision (`a-`). They wait under `inbox/` until a seal has committed
//! them into a file list, which is their permanent record, and then the seal removes them. So
//! the inbox only ever holds what is not sealed yet, a seal lists all of it whatever the
//! writers' clocks say, and a redelivered batch rewrites the same name instead of adding one.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::model::change::SequenceNumber;

/// The Hive partition of an instant: `dt=YYYY-MM-DD/hr=HH` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourPartition {
    /// Milliseconds since the epoch at the start of the hour.
    pub hour_start_ms: i64,
}

impl HourPartition {
    /// The hour containing `ms`.
    pub fn of_millis(ms: i64) -> HourPartition {
        HourPartition {
            hour_start_ms: ms.div_euclid(3_600_000) * 3_600_000,
        }
    }

    /// `dt=YYYY-MM-DD/hr=HH`.
    pub(crate) fn path(&self) -> String {
        let t = DateTime::<Utc>::from_timestamp_millis(self.hour_start_ms).unwrap_or_default();
        format!(
            "dt={:04}-{:02}-{:02}/hr={:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour()
        )
    }
}

/// Object keys of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    table: String,
}

impl TableLayout {
    /// The layout of `table` (a validated DynamoDB table name).
    pub fn new(table: &str) -> TableLayout {
        TableLayout {
            table: table.to_owned(),
        }
    }

    /// The table name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Folder of all segments: the Athena table location.
    pub(crate) fn changes_prefix(&self) -> String {
        format!("{}/changes/", self.table)
    }

    /// Key of a segment.
    pub fn segment_key(
        &self,
        partition: HourPartition,
        first: &SequenceNumber,
        last: &SequenceNumber,
        tag: &str,
    ) -> String {
        format!(
            "{}/changes/{}/{}-{}-{}.parquet",
            self.table,
            partition.path(),
            first.padded(),
            last.padded(),
            tag
        )
    }

    /// Key of a compacted object: in the hour folder (`dt=…/hr=…`) of its parts, named by the
    /// snapshot that sealed them and `id`, a hash of their keys.
    pub(crate) fn compacted_key(&self, hour: &str, snapshot_id: &str, id: &str) -> String {
        format!(
            "{}{hour}/c-{snapshot_id}-{id}.parquet",
            self.changes_prefix()
        )
    }

    /// Folder of log entries waiting for the next seal.
    pub fn inbox_prefix(&self) -> String {
        format!("{}/inbox/", self.table)
    }

    /// Entry of a segment, named by the segment: a redelivered batch writes the same name.
    pub fn segment_entry_key(
        &self,
        first: &SequenceNumber,
        last: &SequenceNumber,
        tag: &str,
    ) -> String {
        format!(
            "{}s-{}-{}-{}.json",
            self.inbox_prefix(),
            first.padded(),
            last.padded(),
            tag
        )
    }

    /// Entry of a quarantined record, named by the SHA-256 of its verbatim text.
    pub(crate) fn quarantine_entry_key(&self, sha256_hex: &str) -> String {
        format!("{}q-{}.json", self.inbox_prefix(), sha256_hex)
    }

    /// Entry of a known gap, named by a hash of its range.
    pub fn gap_entry_key(&self, id: &str) -> String {
        format!("{}g-{}.json", self.inbox_prefix(), id)
    }

    /// Entry of a compacted object, named by the snapshot that sealed its parts and a hash of
    /// the parts.
    pub(crate) fn compaction_entry_key(&self, snapshot_id: &str, id: &str) -> String {
        format!("{}c-{}-{}.json", self.inbox_prefix(), snapshot_id, id)
    }

    /// Entry of an acknowledgment, named by a hash of the decision.
    pub(crate) fn acknowledgment_entry_key(&self, id: &str) -> String {
        format!("{}a-{}.json", self.inbox_prefix(), id)
    }

    /// Whether `key` is shaped like an inbox entry of this table (`inbox/<x>-<name>.json`,
    /// with no further folder).
    pub(crate) fn is_inbox_entry(&self, key: &str) -> bool {
        key.strip_prefix(&self.inbox_prefix())
            .and_then(|name| name.strip_suffix(".json"))
            .is_some_and(|name| {
                !name.contains('/')
                    && name.len() > 2
                    && matches!(&name[..2], "s-" | "q-" | "g-" | "c-" | "a-")
            })
    }

    /// Folder of the bootstrap bases (`crate::model::base`).
    pub(crate) fn base_prefix(&self) -> String {
        format!("{}/base/", self.table)
    }

    /// Key of the manifest of base `base_id`.
    pub(crate) fn base_manifest_key(&self, base_id: &str) -> String {
        format!("{}{base_id}/base.json", self.base_prefix())
    }

    /// Prefix of the Parquet parts one worker writes for base `base_id` (`-<n>.parquet` follows).
    pub(crate) fn base_part_prefix(&self, base_id: &str, worker: usize) -> String {
        format!("{}{base_id}/part-{worker:04}", self.base_prefix())
    }

    /// Folder of the stream's shard maps.
    pub(crate) fn shards_prefix(&self) -> String {
        format!("{}/shards/", self.table)
    }

    /// Key of the shard map of the stream labelled `label`.
    pub(crate) fn shard_map_key(&self, label: &str) -> String {
        format!("{}{label}.json", self.shards_prefix())
    }

    /// Key of `tail`'s checkpoint of shard `shard_id`.
    pub(crate) fn tail_checkpoint_key(&self, shard_id: &str) -> String {
        format!("{}/checkpoints/{shard_id}.json", self.table)
    }

    /// The write-once lock of a recovery run of `kind` in the time `window` (see
    /// `lambda::trigger::Dedupe`).
    pub(crate) fn lock_key(&self, kind: &str, window: &str) -> String {
        format!("{}/locks/{kind}-{window}.json", self.table)
    }

    /// The full report of a recovery task (seal, verify, restore), written once; the task's
    /// reply to Step Functions carries only its key and a summary.
    pub(crate) fn report_key(&self, at_ms: i64, what: &str, id: &str) -> String {
        let at = chrono::DateTime::from_timestamp_millis(at_ms)
            .unwrap_or_default()
            .format("%Y%m%dT%H%M%S%.3fZ");
        format!("{}/reports/{at}-{what}-{id}.json", self.table)
    }

    /// Key of a DynamoDB restore's checkpoint, named by a hash of what is restored where.
    pub(crate) fn restore_checkpoint_key(&self, id: &str) -> String {
        format!("{}/restores/{id}.json", self.table)
    }

    /// Key of the record of which compactions' small segments were deleted.
    pub(crate) fn compaction_cleaned_key(&self) -> String {
        format!("{}/compaction/cleaned.json", self.table)
    }

    /// Folder of the base's Athena file list (the adopted base files share their folder with
    /// `base.json`, which Athena's Parquet reader would trip on).
    pub(crate) fn athena_base_files_prefix(&self) -> String {
        format!("{}/athena/base-files/", self.table)
    }

    /// Folder of the checkpoints' Athena file lists (the checkpoint table's location).
    pub(crate) fn athena_checkpoint_files_prefix(&self) -> String {
        format!("{}/athena/checkpoint-files/", self.table)
    }

    /// Key of a checkpoint's Athena file list.
    pub(crate) fn athena_checkpoint_files_key(&self, snapshot_id: &str) -> String {
        format!(
            "{}generation={snapshot_id}/symlink.txt",
            self.athena_checkpoint_files_prefix()
        )
    }

    /// Key of the base's Athena file list.
    pub(crate) fn athena_base_files_key(&self) -> String {
        format!("{}symlink.txt", self.athena_base_files_prefix())
    }

    /// Folder of the per-snapshot Athena file lists (the snapshot table's location).
    pub(crate) fn athena_snapshot_files_prefix(&self) -> String {
        format!("{}/athena/snapshot-files/", self.table)
    }

    /// Key of a snapshot's Athena file list: the absolute URLs of the segments it sealed.
    pub fn athena_snapshot_files_key(&self, snapshot_id: &str) -> String {
        format!(
            "{}generation={snapshot_id}/symlink.txt",
            self.athena_snapshot_files_prefix()
        )
    }

    /// Folder of sealed manifests.
    pub(crate) fn snapshots_prefix(&self) -> String {
        format!("{}/snapshots/", self.table)
    }

    /// Key of the manifest of snapshot `id`.
    pub fn snapshot_key(&self, id: &str) -> String {
        format!("{}/snapshots/{}.json", self.table, id)
    }

    /// Key of the hint naming the latest snapshot.
    pub fn snapshot_head_key(&self) -> String {
        format!("{}/snapshots/head.json", self.table)
    }

    /// Key of a manifest's file list.
    pub(crate) fn snapshot_files_key(&self, id: &str, sha256_hex: &str) -> String {
        format!(
            "{}/snapshot-files/{}-{}.json",
            self.table,
            id,
            &sha256_hex[..sha256_hex.len().min(16)]
        )
    }

    /// Folder of findings ledgers.
    pub(crate) fn findings_prefix(&self) -> String {
        format!("{}/findings/", self.table)
    }

    /// Key of a findings ledger written by snapshot `id`, named by its content.
    pub(crate) fn findings_key(&self, id: &str, sha256_hex: &str) -> String {
        format!(
            "{}{}-{}.json",
            self.findings_prefix(),
            id,
            &sha256_hex[..sha256_hex.len().min(16)]
        )
    }

    /// Folder of quarantined records.
    pub(crate) fn quarantine_prefix(&self) -> String {
        format!("{}/quarantine/", self.table)
    }

    /// Key of a quarantined record, named by the SHA-256 of its verbatim text.
    pub(crate) fn quarantine_key(&self, sha256_hex: &str) -> String {
        format!("{}/quarantine/{}.json", self.table, sha256_hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours() {
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        let ms = 1_709_251_199_999;
        assert_eq!(HourPartition::of_millis(ms).path(), "dt=2024-02-29/hr=23");
        assert_eq!(
            HourPartition::of_millis(ms + 1).path(),
            "dt=2024-03-01/hr=00"
        );
    }

    #[test]
    fn keys_sort_by_sequence_and_time() {
        let l = TableLayout::new("orders");
        let p = HourPartition::of_millis(0);
        let a = SequenceNumber::parse("999999999999999999999").unwrap();
        let b = SequenceNumber::parse("1000000000000000000000").unwrap();
        assert!(l.segment_key(p, &a, &a, "t") < l.segment_key(p, &b, &b, "t"));
        assert_eq!(
            l.segment_key(p, &a, &b, "ab12"),
            "orders/changes/dt=1970-01-01/hr=00/0000000000000000000999999999999999999999-0000000000000000001000000000000000000000-ab12.parquet"
        );
        let entry = l.segment_entry_key(&a, &b, "ab12");
        assert_eq!(
            entry,
            "orders/inbox/s-0000000000000000000999999999999999999999-0000000000000000001000000000000000000000-ab12.json"
        );
        assert!(l.is_inbox_entry(&entry));
        assert!(l.is_inbox_entry(&l.quarantine_entry_key("00ff")));
        assert!(l.is_inbox_entry(&l.gap_entry_key("01")));
        assert!(l.is_inbox_entry(&l.compaction_entry_key("0000000003", "02")));
        assert!(l.is_inbox_entry(&l.acknowledgment_entry_key("03")));
        assert!(!l.is_inbox_entry("orders/inbox/x-1.json"));
        assert!(!l.is_inbox_entry("orders/inbox/s-1/2.json"));
        assert!(!l.is_inbox_entry("other/inbox/s-1.json"));
        assert!(!l.is_inbox_entry("orders/inbox/s-1.txt"));
    }
}

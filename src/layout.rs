//! Every object key streamseal reads or writes, in one place.
//!
//! Keys are relative to the store's root (`s3://bucket/prefix` or `file:///dir`), one folder
//! per table:
//!
//! ```text
//! <table>/changes/dt=YYYY-MM-DD/hr=HH/<first-seq>-<last-seq>-<tag>.parquet  segments (Athena location)
//! <table>/log/<YYYY-MM-DDTHH>/<written-at-ms>-<tag>.json                     one log entry per segment, quarantined record or gap
//! <table>/quarantine/<sha256>.json                                           records that could not be converted
//! <table>/snapshots/<generation>.json                                        sealed manifests, written once
//! <table>/snapshots/head.json                                                hint: the latest generation (rewritten)
//! <table>/snapshot-files/<generation>-<sha256-prefix>.json                   a manifest's file list, written once
//! <table>/base/<start-ms>/part-*.parquet, base.json                          bootstrap base state (`crate::base`)
//! <table>/shards/<stream-label>.json                                         the stream's shard map (`crate::shards`)
//! <table>/checkpoints/<shard-id>.json                                        `tail`'s per-shard progress
//! <table>/restores/<sha16>.json                                              a DynamoDB restore's checkpoint
//! ```
//!
//! Segment names are deterministic: sequence numbers are zero-padded to 40 digits (so names
//! sort numerically) and `tag` is a hash of the segment's sequence numbers and event ids, so a
//! redelivered batch maps to the same names while two different batches never collide. Log ids
//! start with the write time in milliseconds, zero-padded, so listing the log with `StartAfter`
//! returns exactly the entries written after a point in time. The log is grouped in one folder
//! per UTC hour of writing: on S3 that changes nothing (keys still sort by time), and on a
//! local disk a listing after a point in time reads only the folders from that hour on instead
//! of one directory holding the whole history.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::change::SequenceNumber;

/// Width of the millisecond timestamp at the start of log ids (good past the year 2286).
const LOG_TIME_DIGITS: usize = 16;

/// `<YYYY-MM-DDTHH>/<ms:16>`: the hour folder and time prefix of a log key.
fn log_stem(ms: i64) -> String {
    let ms = ms.max(0);
    format!(
        "{}/{:0width$}",
        hour_folder(ms),
        ms,
        width = LOG_TIME_DIGITS
    )
}

/// `YYYY-MM-DDTHH` of the UTC hour containing `ms`.
fn hour_folder(ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms.max(0)).unwrap_or_default();
    t.format("%Y-%m-%dT%H").to_string()
}

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
    pub fn path(&self) -> String {
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
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Folder of all segments: the Athena table location.
    pub fn changes_prefix(&self) -> String {
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

    /// Folder of the segment log.
    pub fn log_prefix(&self) -> String {
        format!("{}/log/", self.table)
    }

    /// Key of a log entry written at `written_ms`.
    pub fn log_key(&self, written_ms: i64, tag: &str) -> String {
        format!("{}{}-{}.json", self.log_prefix(), log_stem(written_ms), tag)
    }

    /// The `start_after` that lists the log entries written at or after `ms`.
    pub fn log_start_at(&self, ms: i64) -> String {
        // Every key of time `ms` is `<stem>-<tag>.json`, and `<stem>` sorts before it.
        format!("{}{}", self.log_prefix(), log_stem(ms))
    }

    /// The write time (ms) encoded in a log key of this table, if it is one.
    pub fn log_key_time(&self, key: &str) -> Option<i64> {
        let rest = key.strip_prefix(&self.log_prefix())?;
        let (hour, name) = rest.split_once('/')?;
        let digits = name.get(..LOG_TIME_DIGITS)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !name[LOG_TIME_DIGITS..].starts_with('-')
        {
            return None;
        }
        let ms: i64 = digits.parse().ok()?;
        (hour == hour_folder(ms) && name.ends_with(".json")).then_some(ms)
    }

    /// Folder of sealed manifests.
    pub fn snapshots_prefix(&self) -> String {
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
    pub fn snapshot_files_key(&self, id: &str, sha256_hex: &str) -> String {
        format!(
            "{}/snapshot-files/{}-{}.json",
            self.table,
            id,
            &sha256_hex[..sha256_hex.len().min(16)]
        )
    }

    /// Folder of quarantined records.
    pub fn quarantine_prefix(&self) -> String {
        format!("{}/quarantine/", self.table)
    }

    /// Key of a quarantined record, named by the SHA-256 of its verbatim text.
    pub fn quarantine_key(&self, sha256_hex: &str) -> String {
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
        assert!(l.log_key(9_999, "z") < l.log_key(10_000, "a"));
        assert!(l.log_key(3_599_999, "z") < l.log_key(3_600_000, "a"));
        assert!(l.log_key(1, "x").starts_with(&l.log_prefix()));
        assert_eq!(
            l.log_key(1_764_254_400_123, "ab"),
            "orders/log/2025-11-27T14/0001764254400123-ab.json"
        );
        let k = l.log_key(1_764_254_400_123, "ab");
        assert_eq!(l.log_key_time(&k), Some(1_764_254_400_123));
        assert!(l.log_start_at(1_764_254_400_123) < k);
        assert!(l.log_start_at(1_764_254_400_124) > k);
        assert_eq!(
            l.log_key_time("orders/log/2025-11-27T15/0001764254400123-ab.json"),
            None
        );
        assert_eq!(
            l.log_key_time("other/log/2025-11-27T14/0001764254400123-ab.json"),
            None
        );
    }
}

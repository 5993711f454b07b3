//! The segment log: one small JSON entry per published segment, quarantined record, known
//! gap, compaction or acknowledgment.
//!
//! An entry is the commit point of what it describes: a segment's records count as captured
//! once its entry is written. Entries are written once (`IfAbsent`) under `<table>/inbox/`,
//! named by what they describe (see [`crate::model::layout`]), and wait there until a seal copies
//! them into its file list (their permanent record) and removes them. A seal therefore lists
//! exactly what is not sealed yet, whatever the writers' clocks, and never the history.
//!
//! Segment entries carry the sequence number of every row as a [`SequenceList`], so a seal can
//! find records that a redelivered or bisected batch stored twice without opening Parquet.

use serde::{Deserialize, Serialize};

use crate::segment::SegmentRecord;

/// Version of the quarantine and gap entry formats.
pub const LOG_FORMAT: u32 = 1;

/// One entry of the segment log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogEntry {
    /// A segment: its object and what is in it.
    Segment(SegmentRecord),
    /// A record that could not be converted, kept verbatim under `quarantine/`.
    Quarantine(QuarantineRecord),
    /// Changes known to be missing from the backup (for example a Lambda on-failure
    /// destination message: records the function gave up on).
    Gap(GapRecord),
    /// A compacted object holding, row for row, the rows of several sealed segments (see
    /// [`crate::ops::compact`]).
    Compaction(CompactionRecord),
    /// A person's decision about a finding in the ledger (see [`crate::model::findings`]).
    Acknowledgment(AcknowledgmentRecord),
}

impl LogEntry {
    /// Parses a log entry read from `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<LogEntry, LogError> {
        serde_json::from_slice(bytes).map_err(|e| LogError::Parse {
            key: key.to_owned(),
            message: e.to_string(),
        })
    }

    /// The table the entry belongs to.
    pub(crate) fn table(&self) -> &str {
        match self {
            LogEntry::Segment(s) => &s.table,
            LogEntry::Quarantine(q) => &q.table,
            LogEntry::Gap(g) => &g.table,
            LogEntry::Compaction(c) => &c.table,
            LogEntry::Acknowledgment(a) => &a.table,
        }
    }
}

/// A log entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a log entry this version understands.
    #[error(
        "log entry {key} is not a valid streamseal log entry: {message} (it may be from a newer version or not written by streamseal)"
    )]
    Parse {
        /// Object key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A sequence list that does not decode.
    #[error("bad sequence list: {0}")]
    SequenceList(String),
}

/// The log entry of a quarantined record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRecord {
    /// [`LOG_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Key of the quarantine object.
    pub key: String,
    /// The record's sequence number, when it could be read.
    pub sequence_number: Option<String>,
    /// Why it could not be converted.
    pub reason: String,
    /// When the entry was written (RFC 3339, UTC).
    pub written_at: String,
}

/// The log entry of a known gap in the capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRecord {
    /// [`LOG_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// Who reported it (for example `lambda-on-failure`).
    pub source: String,
    /// Shard, when known.
    pub shard_id: Option<String>,
    /// First missing sequence number, when known.
    pub start_sequence: Option<String>,
    /// Last missing sequence number, when known.
    pub end_sequence: Option<String>,
    /// Number of missing records, when known.
    pub records: Option<u64>,
    /// Free-form detail (the original message, trimmed).
    pub detail: String,
    /// When the entry was written (RFC 3339, UTC).
    pub written_at: String,
}

/// The log entry of a compacted object: `key` holds the rows of `parts`, in order and row for
/// row, so any reader may read it in their place. Every part is a segment sealed in snapshot
/// `snapshot_id`; what the seal recorded about them (counted rows, skipped duplicates, digest
/// deltas) stays true of their rows in the compacted object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionRecord {
    /// [`LOG_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// The snapshot that sealed every part.
    pub snapshot_id: String,
    /// Key of the compacted object.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its rows (the sum of the parts' rows).
    pub rows: u64,
    /// The segments it holds, in row order.
    pub parts: Vec<CompactedPart>,
    /// When the entry was written (RFC 3339, UTC).
    pub written_at: String,
}

/// The log entry of an acknowledgment: finding `finding` of the ledger is accepted (or was
/// dealt with) for `reason`. Sealed like any other entry; the ledger then records it for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgmentRecord {
    /// [`LOG_FORMAT`].
    pub format: u32,
    /// Table name.
    pub table: String,
    /// The ledger id of the finding.
    pub finding: String,
    /// Why it is acceptable, or what was done about it.
    pub reason: String,
    /// Who decided.
    pub by: String,
    /// When the entry was written (RFC 3339, the writer's clock: informational).
    pub written_at: String,
}

/// One segment inside a compacted object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactedPart {
    /// The segment's key.
    pub key: String,
    /// Its SHA-256 as sealed.
    pub sha256: String,
    /// Its first row in the compacted object.
    pub first_row: u64,
    /// Its rows.
    pub rows: u64,
}

/// The sequence numbers of a segment's rows, in row order, front-coded: each number is written
/// as `<n>:<rest>` where `n` is how many leading characters it shares with the previous one.
/// Consecutive sequence numbers of a shard share most of their digits, so a 1,000-row segment
/// costs a few kilobytes of log instead of 40 kB.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SequenceList(String);

impl SequenceList {
    /// An empty list.
    pub(crate) fn new() -> SequenceList {
        SequenceList(String::new())
    }

    /// Builds a list from sequence numbers in order.
    pub fn from_sequences<'a>(seqs: impl IntoIterator<Item = &'a str>) -> SequenceList {
        let mut enc = SequenceListBuilder::default();
        for s in seqs {
            enc.push(s);
        }
        enc.finish()
    }

    /// The encoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decodes the list.
    pub(crate) fn decode(&self) -> Result<Vec<String>, LogError> {
        let mut out: Vec<String> = Vec::new();
        if self.0.is_empty() {
            return Ok(out);
        }
        for token in self.0.split(',') {
            let (shared, rest) = token
                .split_once(':')
                .ok_or_else(|| LogError::SequenceList(format!("token {token:?} has no ':'")))?;
            let shared: usize = shared.parse().map_err(|_| {
                LogError::SequenceList(format!("token {token:?}: bad prefix length"))
            })?;
            let prev = out.last().map(String::as_str).unwrap_or("");
            if shared > prev.len() {
                return Err(LogError::SequenceList(format!(
                    "token {token:?} shares {shared} characters with a {}-character predecessor",
                    prev.len()
                )));
            }
            if rest.is_empty() && shared == 0 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(LogError::SequenceList(format!(
                    "token {token:?} is not a sequence number"
                )));
            }
            let mut s = String::with_capacity(shared + rest.len());
            s.push_str(&prev[..shared]);
            s.push_str(rest);
            out.push(s);
        }
        Ok(out)
    }
}

/// Builds a [`SequenceList`] one number at a time.
#[derive(Debug, Clone, Default)]
pub(crate) struct SequenceListBuilder {
    text: String,
    prev: String,
}

impl SequenceListBuilder {
    /// Appends a sequence number (ASCII digits).
    pub(crate) fn push(&mut self, seq: &str) {
        let shared = self
            .prev
            .bytes()
            .zip(seq.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        if !self.text.is_empty() {
            self.text.push(',');
        }
        // `shared` counts equal bytes of ASCII digits, so slicing there is on a char boundary.
        // Sequence numbers have at most 40 digits: two decimal digits at most, written by hand
        // (this runs per change on the ingest path).
        if shared < 10 {
            self.text.push(char::from(b'0' + shared as u8));
        } else if shared < 100 {
            self.text.push(char::from(b'0' + (shared / 10) as u8));
            self.text.push(char::from(b'0' + (shared % 10) as u8));
        } else {
            let _ = std::fmt::Write::write_fmt(&mut self.text, format_args!("{shared}"));
        }
        self.text.push(':');
        self.text.push_str(&seq[shared..]);
        self.prev.clear();
        self.prev.push_str(seq);
    }

    /// The finished list.
    pub(crate) fn finish(self) -> SequenceList {
        SequenceList(self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_lists_round_trip_and_compress() {
        let seqs = [
            "4421584500000000017450439091",
            "4421584500000000017450439092",
            "4421584500000000017450439100",
            "9",
            "4421584500000000017450439100",
        ];
        let list = SequenceList::from_sequences(seqs);
        assert_eq!(list.decode().unwrap(), seqs);
        // A shard's run: 100 numbers a few hundred apart cost well under a third of their text.
        let run: Vec<String> = (0..100u64)
            .map(|i| format!("44215845000000000{}", 17_450_439_091 + i * 317))
            .collect();
        let list = SequenceList::from_sequences(run.iter().map(String::as_str));
        assert_eq!(list.decode().unwrap(), run);
        assert!(list.as_str().len() * 3 < run.iter().map(|s| s.len()).sum::<usize>());
        assert!(SequenceList::new().decode().unwrap().is_empty());
    }

    #[test]
    fn bad_sequence_lists_are_errors() {
        for bad in ["x", "0:", "5:1", "0:12,a:3", "0:1a", "0:1,,0:2"] {
            assert!(
                SequenceList(bad.into()).decode().is_err(),
                "{bad:?} should not decode"
            );
        }
    }

    #[test]
    fn entries_are_tagged_by_kind() {
        let q = LogEntry::Quarantine(QuarantineRecord {
            format: LOG_FORMAT,
            table: "t".into(),
            key: "t/quarantine/x.json".into(),
            sequence_number: None,
            reason: "bad".into(),
            written_at: "2026-01-01T00:00:00.000Z".into(),
        });
        let text = serde_json::to_string(&q).unwrap();
        assert!(text.starts_with(r#"{"kind":"quarantine""#), "{text}");
        assert_eq!(LogEntry::parse("k", text.as_bytes()).unwrap(), q);
        assert!(LogEntry::parse("k", br#"{"kind":"other"}"#).is_err());
        let extra = text.replace(r#""reason""#, r#""surprise":1,"reason""#);
        assert!(LogEntry::parse("k", extra.as_bytes()).is_err());
    }
}

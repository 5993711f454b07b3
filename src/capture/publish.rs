//! Step 3 of the capture path: writing a batch's quarantined records and segments, each followed
//! by its inbox entry, which is the commit point of what it describes.

use super::*;

/// The operation of the error for a segment already stored, under its name, with other
/// changes than the batch's (never acknowledged; the `SegmentConflicts` metric counts it).
pub(crate) const CONFLICT_OP: &str = "compare";

impl Ingestor {
    pub(super) async fn write_segment(
        &self,
        layout: &TableLayout,
        encoded: &crate::segment::EncodedSegment,
        shard: Option<&str>,
    ) -> Result<WrittenSegment, StoreError> {
        // The encoder has the object's SHA-256 already: S3 is sent that one (and checks it)
        // rather than a second hash of the same 2-3 MB.
        let outcome = self
            .store
            .put_with(
                &encoded.key,
                encoded.bytes.clone(),
                PutMode::IfAbsent,
                PutOptions {
                    retention: None,
                    sha256: Some(encoded.sha256),
                },
            )
            .await?;
        // The entry is written in both cases: after a crash between the two writes, the retry
        // finds the segment present and must still publish it. Its name is the segment's, so
        // a redelivery of a batch still waiting finds the entry present too; one redelivered
        // after its seal writes the entry again, and the next seal finds every record already
        // counted.
        let mut record = encoded.record.clone();
        if outcome == PutOutcome::AlreadyExists {
            // Same key, so the same sequence numbers and event ids (the name hashes them with
            // the stream and view type). The bytes may still differ: the batch may have been
            // first written by another version of the encoder (a deploy between a failure and
            // its retry), and the log must then describe the object actually stored. But an
            // object holding other changes under this name (written by something else, or
            // damaged) must not stand for these records: they are not acknowledged.
            let stored = self.store.get(&encoded.key).await?;
            if stored != encoded.bytes {
                let refuse = |message: String| StoreError::Permanent {
                    op: CONFLICT_OP,
                    store: self.store.url(),
                    key: encoded.key.clone(),
                    message,
                };
                match crate::segment::change_difference(
                    &encoded.key,
                    stored.clone(),
                    encoded.bytes.clone(),
                ) {
                    Ok(None) => {}
                    Ok(Some(difference)) => {
                        tracing::error!(key = %encoded.key, %difference, "segment already stored with other changes; not acknowledging these records");
                        return Err(refuse(format!(
                            "a segment with other changes is already stored under this name ({difference}); these records are not acknowledged. Inspect the object (`streamseal verify --deep` names it) before removing it"
                        )));
                    }
                    Err(e) => {
                        return Err(refuse(format!(
                            "a segment is already stored under this name and cannot be read back ({e}); these records are not acknowledged"
                        )));
                    }
                }
                tracing::warn!(key = %encoded.key, stored_bytes = stored.len(), encoded_bytes = encoded.bytes.len(), "segment already stored with other bytes and the same changes (an earlier encoder); describing the stored object");
                record.bytes = stored.len() as u64;
                record.sha256 = hex::encode(Sha256::digest(&stored));
            }
        }
        record.shard_id = shard.map(str::to_owned);
        record.written_at = self.clock.now_rfc3339();
        let log_key = entry_key_of(layout, &record, &encoded.tag)?;
        self.write_log(&log_key, &LogEntry::Segment(record)).await?;
        Ok(WrittenSegment {
            key: encoded.key.clone(),
            log_key,
            rows: encoded.record.rows,
            bytes: encoded.record.bytes,
            created: outcome == PutOutcome::Created,
        })
    }

    pub(super) async fn write_log(
        &self,
        log_key: &str,
        entry: &LogEntry,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_vec(entry).map_err(|e| StoreError::Permanent {
            op: "serialize",
            store: self.store.url(),
            key: log_key.to_owned(),
            message: e.to_string(),
        })?;
        self.store
            .put(log_key, Bytes::from(body), PutMode::IfAbsent)
            .await?;
        Ok(())
    }

    pub(super) async fn write_quarantine(
        &self,
        layout: &TableLayout,
        index: usize,
        raw: &str,
        reason: &str,
    ) -> Result<QuarantinedRecord, StoreError> {
        let sha = hex::encode(Sha256::digest(raw.as_bytes()));
        let key = layout.quarantine_key(&sha);
        // The record as it came: embedded as JSON when it is JSON, else kept as its text, so
        // even a record that is not valid JSON is in the backup byte for byte.
        #[derive(Serialize)]
        struct Body<'a> {
            format: u32,
            table: &'a str,
            reason: &'a str,
            sequence_number: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            record: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            record_text: Option<&'a str>,
        }
        let as_json = serde_json::from_str::<&RawValue>(raw).ok();
        let body = serde_json::to_vec(&Body {
            format: 1,
            table: layout.table(),
            reason,
            sequence_number: change::raw_sequence_number(raw),
            record: as_json,
            record_text: if as_json.is_none() { Some(raw) } else { None },
        })
        .map_err(|e| StoreError::Permanent {
            op: "serialize",
            store: self.store.url(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.store
            .put(&key, Bytes::from(body), PutMode::IfAbsent)
            .await?;
        // The entry lets a seal account for the record without listing `quarantine/`.
        let entry = LogEntry::Quarantine(QuarantineRecord {
            format: LOG_FORMAT,
            table: layout.table().to_owned(),
            key: key.clone(),
            sequence_number: change::raw_sequence_number(raw),
            reason: reason.to_owned(),
            written_at: self.clock.now_rfc3339(),
        });
        self.write_log(&layout.quarantine_entry_key(&sha), &entry)
            .await?;
        Ok(QuarantinedRecord {
            key,
            index,
            reason: reason.to_owned(),
        })
    }
}

/// The inbox entry of a segment the encoder described.
pub(super) fn entry_key_of(
    layout: &TableLayout,
    record: &crate::segment::SegmentRecord,
    tag: &str,
) -> Result<String, StoreError> {
    let bad = |message: String| StoreError::Permanent {
        op: "name",
        store: String::new(),
        key: record.key.clone(),
        message,
    };
    let first = SequenceNumber::parse(&record.first_sequence).map_err(bad)?;
    let last = SequenceNumber::parse(&record.last_sequence).map_err(bad)?;
    Ok(layout.segment_entry_key(&first, &last, tag))
}

//! A segment's rows as capture prepares them ([`PreparedRow`], their texts in a batch's
//! [`ColumnTexts`]), the name tag that identifies a segment by its rows ([`SegmentTag`]), and
//! the statistics its record carries ([`RowStats`]).

use super::*;

/// The name tag of a segment: the first 8 bytes (hex) of SHA-256 over the stream ARN, the view
/// type, and every row's sequence number and event id. The stream (a recreated table gets a new
/// one) and the view type are part of a segment's identity, not only its sequence numbers. Deep
/// verify recomputes it from the rows to prove an object is the segment its name claims.
#[derive(Clone)]
pub(crate) struct SegmentTag(Sha256);

impl SegmentTag {
    /// Starts the tag of a segment from `arn` with `view_type`.
    pub(crate) fn new(arn: Option<&str>, view_type: StreamViewType) -> SegmentTag {
        let mut h = Sha256::new();
        h.update(arn.unwrap_or("").as_bytes());
        h.update(b"\n");
        h.update(view_type.as_str().as_bytes());
        h.update(b"\n");
        SegmentTag(h)
    }

    /// Adds a row.
    pub(crate) fn push(&mut self, sequence: &str, event_id: &str) {
        // One update per row rather than four: the hasher copies each piece into its block
        // buffer, and per-call overhead dominated for pieces this small.
        let mut line = [0u8; 128];
        let (s, e) = (sequence.as_bytes(), event_id.as_bytes());
        let n = s.len() + e.len() + 2;
        if n <= line.len() {
            line[..s.len()].copy_from_slice(s);
            line[s.len()] = b'\n';
            line[s.len() + 1..n - 1].copy_from_slice(e);
            line[n - 1] = b'\n';
            self.0.update(&line[..n]);
        } else {
            self.0.update(s);
            self.0.update(b"\n");
            self.0.update(e);
            self.0.update(b"\n");
        }
    }

    /// The tag: 16 hex digits.
    pub(crate) fn finish(self) -> String {
        hex::encode(&self.0.finalize()[..8])
    }
}

/// The [`TextColumns`] of a batch, frozen into Arrow buffers that its segments' columns share
/// (slices of them become the `keys`, `new_image` and `old_image` arrays without copying).
#[derive(Debug, Clone)]
pub struct ColumnTexts {
    pub(super) keys: Buffer,
    pub(super) new_image: Buffer,
    pub(super) old_image: Buffer,
}

impl ColumnTexts {
    /// The key, new image and old image texts of `row`, which must be one of this buffer's
    /// rows (`None` for a range outside it, or what the row does not have).
    #[cfg(test)]
    pub(crate) fn of(&self, row: &PreparedRow<'_>) -> [Option<&[u8]>; 3] {
        [
            self.keys.get(row.keys.clone()),
            row.new_image.clone().and_then(|r| self.new_image.get(r)),
            row.old_image.clone().and_then(|r| self.old_image.get(r)),
        ]
    }

    /// The buffers back, for reuse, once no array uses them any more (`None` while one does).
    pub(crate) fn into_text_columns(self) -> Option<TextColumns> {
        Some(TextColumns {
            keys: self.keys.into_vec().ok()?,
            new_image: self.new_image.into_vec().ok()?,
            old_image: self.old_image.into_vec().ok()?,
        })
    }
}

impl From<TextColumns> for ColumnTexts {
    fn from(t: TextColumns) -> ColumnTexts {
        ColumnTexts {
            keys: Buffer::from_vec(t.keys),
            new_image: Buffer::from_vec(t.new_image),
            old_image: Buffer::from_vec(t.old_image),
        }
    }
}

/// A change record reduced to what a segment row needs: where its canonical key and image
/// texts are, image hashes and typed values. Preparing rows is independent per record, which
/// is what lets a batch be prepared on several threads (each writing its own [`TextColumns`]).
#[derive(Debug, Clone)]
pub struct PreparedRow<'a> {
    /// `eventID`.
    pub event_id: Cow<'a, str>,
    /// `eventName`.
    pub kind: ChangeKind,
    /// Sequence number.
    pub sequence: SequenceNumber,
    /// Approximate creation time, ms since the epoch.
    pub time_ms: Option<i64>,
    /// TTL deletion.
    pub ttl_delete: bool,
    /// Which [`ColumnTexts`] of the batch holds this row's texts (an index into the slice
    /// given to [`SegmentBuilder::finish`]).
    pub texts: usize,
    /// Canonical DynamoDB JSON of the key: where it is in `keys`.
    pub keys: Range<usize>,
    /// Canonical new image: where it is in `new_image`.
    pub new_image: Option<Range<usize>>,
    /// Canonical old image: where it is in `old_image`.
    pub old_image: Option<Range<usize>>,
    /// Hash of the new image.
    pub new_hash: Option<ItemHash>,
    /// Hash of the old image.
    pub old_hash: Option<ItemHash>,
    /// Typed column values, in schema order.
    pub typed: Vec<TypedValue<'a>>,
    /// The stream's view type.
    pub view_type: StreamViewType,
    /// Stream ARN.
    pub event_source_arn: Option<Cow<'a, str>>,
}

impl<'a> PreparedRow<'a> {
    /// Reduces a parsed record to its row; its texts are in the batch's `texts`-th
    /// [`TextColumns`].
    pub fn new(
        mut rec: ChangeRecord<'a, SpannedItem<'a>>,
        schema: &TableSchema,
        texts: usize,
    ) -> PreparedRow<'a> {
        let source = rec.new_image.as_mut().or(rec.old_image.as_mut());
        // The captured list becomes the typed list in place (the same size and alignment per
        // element, and the list first in the zip): no allocation per row, and the memory is
        // the list the image's scan has just written.
        let mut typed: Vec<TypedValue<'a>> = match source {
            Some(img) => std::mem::take(&mut img.captured)
                .into_iter()
                .zip(&schema.columns)
                .map(|(v, c)| c.typed(v))
                .collect(),
            None => Vec::new(),
        };
        // One value per column whatever was captured, so every Arrow column has every row.
        typed.resize(schema.columns.len(), TypedValue::Null);
        PreparedRow {
            texts,
            keys: rec.keys.span,
            new_hash: rec.new_image.as_ref().and_then(|i| i.hash),
            old_hash: rec.old_image.as_ref().and_then(|i| i.hash),
            new_image: rec.new_image.map(|i| i.span),
            old_image: rec.old_image.map(|i| i.span),
            typed,
            event_id: rec.event_id,
            kind: rec.kind,
            sequence: rec.sequence,
            time_ms: rec.approximate_creation_ms,
            ttl_delete: rec.ttl_delete,
            view_type: rec.view_type,
            event_source_arn: rec.event_source_arn,
        }
    }
}

/// What a segment record says about the rows: gathered in one pass over them (see
/// [`RowStats::of`]).
pub(super) struct RowStats {
    pub(super) tag: SegmentTag,
    pub(super) sequences: SequenceListBuilder,
    /// Rows holding the smallest and largest sequence numbers.
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) min_time: Option<i64>,
    pub(super) max_time: Option<i64>,
    /// `None` when a row lacks an image the digest needs (a view type without both).
    pub(super) digest: Option<StateDigest>,
    pub(super) count_delta: i64,
    pub(super) ttl_deletes: u64,
    pub(super) arn: Option<String>,
}

impl RowStats {
    /// The statistics of `rows`, in their order (the tag and the sequence list depend on it).
    pub(super) fn of(rows: &[&PreparedRow<'_>]) -> RowStats {
        // The tag starts from the first row's stream and view type; the record names the
        // first stream ARN any row has.
        let first = rows.first();
        let mut stats = RowStats {
            tag: SegmentTag::new(
                first.and_then(|r| r.event_source_arn.as_deref()),
                first.map_or(StreamViewType::KeysOnly, |r| r.view_type),
            ),
            sequences: SequenceListBuilder::default(),
            first: 0,
            last: 0,
            min_time: None,
            max_time: None,
            digest: Some(StateDigest::ZERO),
            count_delta: 0,
            ttl_deletes: 0,
            arn: rows
                .iter()
                .find_map(|r| r.event_source_arn.as_deref())
                .map(str::to_owned),
        };
        for (n, row) in rows.iter().enumerate() {
            let seq = row.sequence.as_str();
            stats.tag.push(seq, &row.event_id);
            stats.sequences.push(seq);
            if row.sequence < rows[stats.first].sequence {
                stats.first = n;
            }
            if row.sequence > rows[stats.last].sequence {
                stats.last = n;
            }
            if let Some(t) = row.time_ms {
                stats.min_time = Some(stats.min_time.map_or(t, |m| m.min(t)));
                stats.max_time = Some(stats.max_time.map_or(t, |m| m.max(t)));
            }
            match row.kind {
                ChangeKind::Insert => stats.count_delta += 1,
                ChangeKind::Remove => stats.count_delta -= 1,
                ChangeKind::Modify => {}
            }
            if row.ttl_delete {
                stats.ttl_deletes += 1;
            }
            // The digest moves by H(new) - H(old); it is only known when the stream carries
            // both.
            if let Some(digest) = &mut stats.digest {
                if row.view_type == StreamViewType::NewAndOldImages {
                    if let Some(h) = &row.new_hash {
                        digest.add_item(h);
                    }
                    if let Some(h) = &row.old_hash {
                        digest.remove_item(h);
                    }
                } else {
                    stats.digest = None;
                }
            }
        }
        stats
    }
}

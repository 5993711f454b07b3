//! A chain's state sums (digest, live items, unknown effects), and the watermark: what seal
//! and verify compute the same way.

use super::*;

/// A chain's state sums as seals keep them: digest, live items, and how many changes the chain
/// knows it cannot account for. Seal and verify both add a file list to its parent's sums
/// through this, so they cannot disagree about the arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateSums {
    /// Order-independent digest, when known.
    pub digest: Option<StateDigest>,
    /// Live items.
    pub item_count: i64,
    /// Entries whose effect on the state the digest and count cannot include (see
    /// [`Manifest::unknown_effects`]).
    pub unknown_effects: u64,
}

impl StateSums {
    /// The sums a child starts from: the parent's, or an empty table's.
    pub(crate) fn of_parent(parent: Option<&Manifest>) -> StateSums {
        match parent {
            Some(p) => StateSums {
                digest: p.state_digest,
                item_count: p.item_count,
                unknown_effects: p.unknown_effects,
            },
            None => StateSums {
                digest: Some(StateDigest::ZERO),
                item_count: 0,
                unknown_effects: 0,
            },
        }
    }

    /// These sums plus what `files` sealed: every segment's deltas and every quarantined
    /// record's known deltas. What cannot be added is counted, not guessed: a quarantined
    /// record that could not be read, a rejected entry that may have held changes (a segment's
    /// or a quarantined record's), a gap.
    pub(crate) fn plus(mut self, files: &SnapshotFiles) -> StateSums {
        for s in &files.segments {
            self.digest = StateDigest::sum_known(self.digest, s.digest_delta);
            self.item_count += s.item_count_delta;
        }
        for q in &files.quarantined {
            let e = &q.effect;
            if e.unknown.is_some() {
                self.unknown_effects += 1;
                continue;
            }
            // Known effect: a stream without both images has no digest to move.
            self.digest = StateDigest::sum_known(self.digest, e.digest_delta);
            self.item_count += e.item_count_delta.unwrap_or(0);
        }
        self.unknown_effects += files.gaps.len() as u64;
        self.unknown_effects += files
            .rejected
            .iter()
            .filter(|r| may_hold_changes(&r.log_key))
            .count() as u64;
        self
    }
}

/// Whether a log entry's name says it describes changes (a segment's or a quarantined
/// record's entry).
pub(super) fn may_hold_changes(log_key: &str) -> bool {
    let name = log_key.rsplit('/').next().unwrap_or("");
    name.starts_with("s-") || name.starts_with("q-")
}

/// The watermark after sealing `files` on top of `parent`.
pub(super) fn next_watermark(
    parent: Option<&Manifest>,
    files: &SnapshotFiles,
    inbox_entries: u64,
) -> Watermark {
    let mut shards: BTreeMap<String, String> = parent
        .map(|p| p.watermark.shards.clone())
        .unwrap_or_default();
    // Latest change per stream or shard that delivered to this seal.
    let mut latest: HashMap<String, i64> = HashMap::new();
    let mut newest = parent.and_then(|p| p.watermark.newest_change_ms);
    for s in &files.segments {
        if let Some(shard) = &s.shard_id {
            let last = shards.entry(shard.clone()).or_default();
            let bigger = match (
                SequenceNumber::parse(last),
                SequenceNumber::parse(&s.last_sequence),
            ) {
                (Ok(a), Ok(b)) => b > a,
                _ => true,
            };
            if bigger {
                *last = s.last_sequence.clone();
            }
        }
        if let Some(t) = s.max_time_ms {
            let group = s
                .shard_id
                .clone()
                .or_else(|| s.event_source_arn.clone())
                .unwrap_or_default();
            let e = latest.entry(group).or_insert(t);
            *e = (*e).max(t);
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    // Quarantined changes are changes of the chain too: a later copy of one (converted by
    // another writer) must find the look-back reaching it.
    for t in files.quarantined.iter().filter_map(|q| q.effect.created_ms) {
        newest = Some(newest.map_or(t, |n| n.max(t)));
    }
    let consistent_through_ms = latest
        .values()
        .copied()
        .min()
        .or_else(|| parent.and_then(|p| p.watermark.consistent_through_ms));
    Watermark {
        shards,
        newest_change_ms: newest,
        consistent_through_ms,
        inbox_entries,
    }
}

//! The checks of a manifest, a file list, and (deep) each object read back against what was
//! sealed.

use super::*;

pub(super) fn check_manifest(
    layout: &TableLayout,
    key: &str,
    id: &str,
    m: &Manifest,
    expected_sha: Option<&str>,
    find: &mut impl FnMut(Kind, &str, String),
) {
    if !m.digest_ok() {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest content does not match its manifest_sha256 (edited after sealing; content hashes to {})",
                m.compute_sha256()
            ),
        );
    }
    if let Some(expected) = expected_sha
        && m.manifest_sha256 != expected
    {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest_sha256 is {}, its child recorded {expected} (replaced after sealing)",
                m.manifest_sha256
            ),
        );
    }
    if m.snapshot_id != id || manifest::parse_snapshot_id(id) != Some(m.generation) {
        find(
            Kind::Altered,
            key,
            format!(
                "manifest says snapshot {} generation {}, its key says {id}",
                m.snapshot_id, m.generation
            ),
        );
    }
    if m.table != layout.table() {
        find(
            Kind::Altered,
            key,
            format!("manifest is for table {:?}", m.table),
        );
    }
}

pub(super) fn check_files(
    m: &Manifest,
    f: &SnapshotFiles,
    find: &mut impl FnMut(Kind, &str, String),
) {
    let key = &m.files.key;
    let rows: u64 = f.segments.iter().map(|s| s.counted_rows).sum();
    let bytes: u64 = f.segments.iter().map(|s| s.bytes).sum();
    if f.snapshot_id != m.snapshot_id || f.table != m.table {
        find(
            Kind::Altered,
            key,
            "file list belongs to another snapshot or table".into(),
        );
    }
    if f.segments.len() as u64 != m.files.segments
        || rows != m.files.rows
        || bytes != m.files.segment_bytes
        || f.duplicates.len() as u64 != m.files.duplicate_segments
        || f.rejected.len() as u64 != m.rejected_log_entries
    {
        find(
            Kind::Altered,
            key,
            "file list sums (segments, rows, bytes, duplicates, rejected) differ from the manifest's"
                .into(),
        );
    }
    for s in &f.segments {
        match (s.skipped_sequences.decode(), s.sequence_numbers.decode()) {
            (Ok(skipped), Ok(all))
                if s.counted_rows + skipped.len() as u64 <= s.rows
                    && s.counted_rows > 0
                    && all.len() as u64 == s.rows => {}
            (Ok(_), Ok(_)) => find(
                Kind::Altered,
                &s.key,
                "counted, skipped and listed rows do not add up to the rows".into(),
            ),
            (Err(e), _) | (_, Err(e)) => find(Kind::Altered, &s.key, format!("sequence list: {e}")),
        }
    }
}

/// Downloads-and-recomputes checks of one segment; returns rows read.
pub(super) fn deep_check(
    s: &SealedSegment,
    bytes: bytes::Bytes,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = &s.key;
    if bytes.len() as u64 != s.bytes {
        find(
            Kind::Altered,
            key,
            format!(
                "object is {} bytes, sealed as {} (truncated or replaced)",
                bytes.len(),
                s.bytes
            ),
        );
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != s.sha256 {
        find(
            Kind::Altered,
            key,
            format!("SHA-256 is {sha}, sealed as {} (content altered)", s.sha256),
        );
        // Parsing an altered file would only produce noise after this finding.
        return 0;
    }
    let Some(contents) = read_back(key, bytes, find) else {
        return 0;
    };
    check_contents(s, &contents, key, find)
}

/// The rows of an object whose bytes are as sealed, or an `altered` finding when they cannot
/// be read back as a segment.
fn read_back(
    key: &str,
    bytes: bytes::Bytes,
    find: &mut impl FnMut(Kind, &str, String),
) -> Option<SegmentContents> {
    SegmentContents::read(key, bytes)
        .map_err(|e| find(Kind::Altered, key, format!("cannot be read back: {e}")))
        .ok()
}

/// Deep checks of a compacted object: its size and hash as recorded, then each part's rows
/// (a slice of the object) against what the part's snapshot sealed. Returns rows read.
pub(super) fn deep_check_compacted(
    r: &crate::ops::compact::Replacement,
    parts: &[&SealedSegment],
    replaced: &HashMap<String, crate::ops::compact::Replacement>,
    bytes: bytes::Bytes,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = &r.key;
    let sha = hex::encode(Sha256::digest(&bytes));
    if bytes.len() as u64 != r.bytes || sha != r.sha256 {
        find(
            Kind::Altered,
            key,
            format!(
                "compacted object is {} bytes with SHA-256 {sha}, sealed as {} bytes with {}",
                bytes.len(),
                r.bytes,
                r.sha256
            ),
        );
        return 0;
    }
    let Some(contents) = read_back(key, bytes, find) else {
        return 0;
    };
    for s in parts {
        let Some(at) = replaced.get(&s.key) else {
            continue;
        };
        let (from, to) = (at.first_row as usize, (at.first_row + at.rows) as usize);
        let Some(rows) = contents.rows.get(from..to) else {
            find(
                Kind::Altered,
                key,
                format!(
                    "has {} rows; part {} should be rows {from}..{to}",
                    contents.rows.len(),
                    s.key
                ),
            );
            continue;
        };
        let slice = SegmentContents {
            view_type: contents.view_type,
            rows: rows.to_vec(),
        };
        let label = format!("{} (rows {from}..{to} of {key})", s.key);
        check_contents(s, &slice, &label, find);
    }
    contents.rows.len() as u64
}

/// Checks rows read back against what the seal recorded for segment `s`; findings name
/// `label`. Returns rows read.
pub(super) fn check_contents(
    s: &SealedSegment,
    contents: &SegmentContents,
    label: &str,
    find: &mut impl FnMut(Kind, &str, String),
) -> u64 {
    let key = label;
    let rows = contents.rows.len() as u64;
    if rows != s.rows {
        find(
            Kind::Altered,
            key,
            format!("has {rows} rows, sealed as {}", s.rows),
        );
    }
    // The name's tag is a hash of the stream, view type and every row's identity.
    if let Some(view) = contents.view_type {
        let mut tag = SegmentTag::new(s.event_source_arn.as_deref(), view);
        for r in &contents.rows {
            tag.push(&r.sequence, &r.event_id);
        }
        let tag = tag.finish();
        if !s.key.ends_with(&format!("-{tag}.parquet")) {
            find(
                Kind::Altered,
                key,
                format!(
                    "rows hash to tag {tag}, which is not the object's name (a foreign object)"
                ),
            );
        }
    } else {
        find(
            Kind::Altered,
            key,
            "file metadata has no stream view type".into(),
        );
    }
    let listed = s.sequence_numbers.decode().unwrap_or_default();
    if listed.len() == contents.rows.len()
        && listed
            .iter()
            .zip(&contents.rows)
            .any(|(a, r)| *a != r.sequence)
    {
        find(
            Kind::Altered,
            key,
            "its rows' sequence numbers are not the ones sealed".into(),
        );
    }
    let skipped: HashSet<String> = s
        .skipped_sequences
        .decode()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut counted_seen: HashSet<&str> = HashSet::new();
    let mut digest = Some(StateDigest::ZERO);
    let mut count = 0;
    let mut counted = 0;
    for r in &contents.rows {
        if skipped.contains(&r.sequence) || !counted_seen.insert(r.sequence.as_str()) {
            continue;
        }
        counted += 1;
        count += r.count;
        digest = StateDigest::sum_known(digest, r.digest);
    }
    if counted != s.counted_rows {
        find(
            Kind::Altered,
            key,
            format!(
                "{counted} rows count after skips, sealed as {}",
                s.counted_rows
            ),
        );
    }
    if count != s.item_count_delta {
        find(
            Kind::Altered,
            key,
            format!(
                "rows give item-count delta {count}, sealed as {}",
                s.item_count_delta
            ),
        );
    }
    if s.digest_delta.is_some() && digest != s.digest_delta {
        find(
            Kind::Altered,
            key,
            "images hash to a different digest delta than sealed".into(),
        );
    }
    rows
}

//! Quarantined records, accounted: what a record the capture could not convert does to the
//! table's state.
//!
//! A quarantined record is kept verbatim (`<table>/quarantine/<sha256>.json`), outside the
//! Parquet segments. It still changed an item, and the state digest is a sum of
//! `H(new image) - H(old image)` over every change: leaving a change out breaks the chain of
//! images for its key (the next change's old image is the image this one wrote), and a restore
//! would then disagree with the manifest. So the seal reads each quarantined record and
//! records its [`QuarantineEffect`]: the key it touches, its sequence number and creation time,
//! and its digest and count deltas, computed with the same hash the capture uses, except for
//! an image the canonicaliser refuses (an unknown attribute type, say). Such an image is hashed
//! *opaquely*: SHA-256 of a domain-separated canonical JSON form (object members sorted, set
//! elements sorted). The same item hashes the same in the record that wrote it and in the one
//! that replaced it, so the deltas still telescope and the digest stays exact.
//!
//! A restore then knows, for every key whose latest change is quarantined, that its image
//! cannot be written: it writes every other item, names those keys (and where their records
//! are), and checks the rest against the manifest with their opaque hashes taken out.
//! Whatever cannot be read at all (a record that is not JSON, or whose key is unreadable) is
//! an *unknown* effect: the manifest counts them, and a restore then says it cannot prove the
//! digest instead of claiming a match.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use crate::model::change::{SequenceNumber, StreamViewType};
use crate::model::item::{ItemHash, StateDigest};

/// What one quarantined record does to the table, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineEffect {
    /// Canonical DynamoDB JSON of the key it changes (the segments' `keys` form), when
    /// `dynamodb.Keys` is readable.
    pub keys: Option<String>,
    /// Its sequence number, when readable.
    pub sequence_number: Option<String>,
    /// `INSERT`, `MODIFY` or `REMOVE`, when readable.
    pub event_name: Option<String>,
    /// `ApproximateCreationDateTime` in ms, when readable.
    pub created_ms: Option<i64>,
    /// SHA-256 (hex) of the image it writes: the capture's item hash when the image is valid,
    /// else the opaque hash. `None` for a REMOVE, or when the record carries no new image.
    pub new_image_sha256: Option<String>,
    /// The new image was hashed opaquely: the canonicaliser refused it when the seal read it.
    /// Restores and verifies reuse the kind recorded here, so a later version that accepts
    /// the image still agrees with what was sealed (and leaves the key out rather than write
    /// an image the chain's digest does not hold).
    pub new_image_opaque: bool,
    /// Likewise for the old image.
    pub old_image_opaque: bool,
    /// `H(new) - H(old)`, when the stream carries both images and both could be hashed.
    pub digest_delta: Option<StateDigest>,
    /// +1 INSERT, -1 REMOVE, 0 MODIFY, when the event name is readable.
    pub item_count_delta: Option<i64>,
    /// Why part of its effect cannot be known, when it cannot.
    pub unknown: Option<String>,
}

impl QuarantineEffect {
    /// Whether a restore can place this change: its key, sequence number and kind are known.
    pub(crate) fn placeable(&self) -> bool {
        self.keys.is_some() && self.sequence_number.is_some() && self.event_name.is_some()
    }

    /// Whether the change is a REMOVE (its effect on the key is known: the item is gone).
    pub(crate) fn is_remove(&self) -> bool {
        self.event_name.as_deref() == Some("REMOVE")
    }
}

/// The stored quarantine object (`ingest` writes it).
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    record: Option<&'a RawValue>,
    record_text: Option<String>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(rename = "eventName")]
    event_name: Option<String>,
    #[serde(borrow)]
    dynamodb: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Dynamodb<'a> {
    #[serde(rename = "Keys", borrow)]
    keys: Option<&'a RawValue>,
    #[serde(rename = "NewImage", borrow)]
    new_image: Option<&'a RawValue>,
    #[serde(rename = "OldImage", borrow)]
    old_image: Option<&'a RawValue>,
    #[serde(rename = "SequenceNumber")]
    sequence_number: Option<String>,
    #[serde(rename = "ApproximateCreationDateTime")]
    created: Option<f64>,
    #[serde(rename = "StreamViewType")]
    view_type: Option<String>,
}

/// How to hash the images: as the canonicaliser decides now, or as a seal recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HashKinds {
    /// Item hash when the canonicaliser accepts an image, opaque otherwise (what a seal does).
    Decide,
    /// The kinds a sealed effect recorded (what verify recomputes with).
    AsSealed {
        /// The new image is hashed opaquely.
        new_opaque: bool,
        /// The old image is hashed opaquely.
        old_opaque: bool,
    },
}

/// Reads a stored quarantine object and works out its record's effect.
pub(crate) fn effect_of_object(bytes: &[u8]) -> QuarantineEffect {
    effect_of_object_with(bytes, HashKinds::Decide)
}

/// [`effect_of_object`], hashing images as `kinds` says.
pub(crate) fn effect_of_object_with(bytes: &[u8], kinds: HashKinds) -> QuarantineEffect {
    match serde_json::from_slice::<Stored>(bytes) {
        Ok(Stored {
            record: Some(raw), ..
        }) => effect_of_record_with(raw.get(), kinds),
        Ok(Stored {
            record_text: Some(text),
            ..
        }) => effect_of_record_with(&text, kinds),
        _ => unknown("the quarantine object holds no record"),
    }
}

/// The raw `NewImage` text of the record in a stored quarantine object, if it has one.
pub(crate) fn new_image_text(bytes: &[u8]) -> Option<String> {
    let stored: Stored = serde_json::from_slice(bytes).ok()?;
    let text = match (stored.record, &stored.record_text) {
        (Some(raw), _) => raw.get().to_owned(),
        (None, Some(t)) => t.clone(),
        (None, None) => return None,
    };
    let record: Record = serde_json::from_str(&text).ok()?;
    let d: Dynamodb = serde_json::from_str(record.dynamodb?.get()).ok()?;
    Some(d.new_image?.get().to_owned())
}

fn unknown(why: &str) -> QuarantineEffect {
    QuarantineEffect {
        keys: None,
        sequence_number: None,
        event_name: None,
        created_ms: None,
        new_image_sha256: None,
        new_image_opaque: false,
        old_image_opaque: false,
        digest_delta: None,
        item_count_delta: None,
        unknown: Some(why.to_owned()),
    }
}

/// The effect of one raw stream record (as Lambda delivered it).
pub(crate) fn effect_of_record(raw: &str) -> QuarantineEffect {
    effect_of_record_with(raw, HashKinds::Decide)
}

/// [`effect_of_record`], hashing images as `kinds` says.
pub(crate) fn effect_of_record_with(raw: &str, kinds: HashKinds) -> QuarantineEffect {
    let Ok(record) = serde_json::from_str::<Record>(raw) else {
        return unknown("the record is not a JSON object");
    };
    let Some(d) = record
        .dynamodb
        .and_then(|d| serde_json::from_str::<Dynamodb>(d.get()).ok())
    else {
        return unknown("the record has no readable dynamodb member");
    };
    let mut why: Vec<&str> = vec![];
    let keys = d
        .keys
        .and_then(|k| crate::model::item::canonicalize(k.get()).ok());
    if keys.is_none() {
        why.push("its Keys are unreadable");
    }
    let sequence_number = d
        .sequence_number
        .as_deref()
        .and_then(|s| SequenceNumber::parse(s).ok())
        .map(|s| s.as_str().to_owned());
    if sequence_number.is_none() {
        why.push("its sequence number is unreadable");
    }
    let event_name = record
        .event_name
        .filter(|n| matches!(n.as_str(), "INSERT" | "MODIFY" | "REMOVE"));
    let item_count_delta = match event_name.as_deref() {
        Some("INSERT") => Some(1),
        Some("REMOVE") => Some(-1),
        Some(_) => Some(0),
        None => {
            why.push("its eventName is unreadable");
            None
        }
    };
    let created_ms = d
        .created
        .filter(|s| s.is_finite() && (0.0..=253_402_300_799.0).contains(s))
        .map(|s| (s * 1000.0).round() as i64);
    let view_type = d
        .view_type
        .as_deref()
        .and_then(|v| StreamViewType::parse(v).ok());
    let remove = event_name.as_deref() == Some("REMOVE");
    let insert = event_name.as_deref() == Some("INSERT");
    let (new_kind, old_kind) = match kinds {
        HashKinds::Decide => (None, None),
        HashKinds::AsSealed {
            new_opaque,
            old_opaque,
        } => (Some(new_opaque), Some(old_opaque)),
    };
    let new_hash = if remove {
        None
    } else {
        d.new_image.map(|i| hash_as(i.get(), new_kind))
    };
    let old_hash = if insert {
        None
    } else {
        d.old_image.map(|i| hash_as(i.get(), old_kind))
    };
    let digest_delta = match (view_type, event_name.as_deref()) {
        (Some(StreamViewType::NewAndOldImages), Some(name)) => {
            let needs_new = name != "REMOVE";
            let needs_old = name != "INSERT";
            if (needs_new && new_hash.is_none()) || (needs_old && old_hash.is_none()) {
                why.push("an image it must carry is missing");
                None
            } else {
                let mut delta = StateDigest::ZERO;
                if let Some((h, _)) = &new_hash {
                    delta.add_item(h);
                }
                if let Some((h, _)) = &old_hash {
                    delta.remove_item(h);
                }
                Some(delta)
            }
        }
        (None, _) => {
            why.push("its StreamViewType is unreadable");
            None
        }
        // Streams without both images keep no state digest at all.
        _ => None,
    };
    QuarantineEffect {
        keys,
        sequence_number,
        event_name,
        created_ms,
        new_image_sha256: new_hash.map(|(h, _)| hex::encode(h.0)),
        new_image_opaque: new_hash.is_some_and(|(_, opaque)| opaque),
        old_image_opaque: old_hash.is_some_and(|(_, opaque)| opaque),
        digest_delta,
        item_count_delta,
        unknown: (!why.is_empty()).then(|| why.join("; ")),
    }
}

/// The hash of an image and whether it is opaque: as decided now (`None`), or of the kind a
/// seal recorded. An image recorded as valid that the canonicaliser now refuses gets its
/// opaque hash, which differs from the recorded one: verify names it.
fn hash_as(text: &str, opaque: Option<bool>) -> (ItemHash, bool) {
    match opaque {
        Some(true) => (opaque_hash(text), true),
        Some(false) | None => match crate::model::item::item_hash(text) {
            Ok(h) => (h, false),
            Err(_) => (opaque_hash(text), true),
        },
    }
}

/// SHA-256 over a domain tag and the image as canonical JSON: members sorted, set elements
/// (`SS`, `NS`, `BS`) sorted, no whitespace. The tag keeps it apart from every valid item's
/// hash (which is SHA-256 of canonical DynamoDB JSON, never starting with the tag).
fn opaque_hash(text: &str) -> ItemHash {
    let mut h = Sha256::new();
    h.update(b"streamseal:opaque-item:1\n");
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(mut v) => {
            sort_sets(&mut v);
            // serde_json's maps are ordered by key (no `preserve_order` feature), so this is
            // canonical.
            h.update(v.to_string().as_bytes());
        }
        Err(_) => h.update(text.as_bytes()),
    }
    ItemHash(h.finalize().into())
}

fn sort_sets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (name, value) in map.iter_mut() {
                if matches!(name.as_str(), "SS" | "NS" | "BS")
                    && let serde_json::Value::Array(items) = value
                {
                    items.sort_by_key(|a| a.to_string());
                } else {
                    sort_sets(value);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_sets),
        _ => {}
    }
}

/// A quarantine reason fit for a log line: every quoted value (`"…"`, as item errors and
/// serde quote them, and `` `…` ``) replaced by `"…"`, so attribute paths and what was wrong
/// stay readable and no item value reaches the logs. The full reason is kept with the record.
pub fn reason_without_values(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut chars = reason.chars();
    while let Some(c) = chars.next() {
        if c != '"' && c != '`' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        let mut escaped = false;
        for d in chars.by_ref() {
            match d {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                d if d == c => break,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_their_values_for_the_logs() {
        assert_eq!(
            reason_without_values(
                r#"dynamodb.NewImage: attribute total: "twelve" is not a decimal number"#
            ),
            r#"dynamodb.NewImage: attribute total: "…" is not a decimal number"#
        );
        assert_eq!(
            reason_without_values(r#"invalid type: string "a \"secret\" b", expected `1`"#),
            r#"invalid type: string "…", expected "…""#
        );
        assert_eq!(reason_without_values(r#"cut "off"#), r#"cut "…""#);
        assert_eq!(reason_without_values("no values"), "no values");
    }

    fn record(name: &str, keys: &str, new: Option<&str>, old: Option<&str>) -> String {
        let mut d = format!(
            r#""Keys":{keys},"SequenceNumber":"000123","ApproximateCreationDateTime":1700000000.5,"StreamViewType":"NEW_AND_OLD_IMAGES""#
        );
        if let Some(n) = new {
            d.push_str(&format!(r#","NewImage":{n}"#));
        }
        if let Some(o) = old {
            d.push_str(&format!(r#","OldImage":{o}"#));
        }
        format!(r#"{{"eventName":"{name}","dynamodb":{{{d}}}}}"#)
    }

    const K: &str = r#"{"pk":{"S":"a"}}"#;

    #[test]
    fn opaque_images_telescope_between_the_changes_that_write_and_replace_them() {
        let good = r#"{"pk":{"S":"a"},"n":{"N":"1"}}"#;
        // An image with a type the canonicaliser does not know, sent in two member orders.
        let bad1 = r#"{"pk":{"S":"a"},"v":{"XX":["b","a"]}}"#;
        let bad2 = r#"{ "v":{"XX":["b","a"]}, "pk":{"S":"a"} }"#;
        let later = r#"{"pk":{"S":"a"},"n":{"N":"2"}}"#;
        let q1 = effect_of_record(&record("MODIFY", K, Some(bad1), Some(good)));
        let q2 = effect_of_record(&record("MODIFY", K, Some(later), Some(bad2)));
        assert!(
            q1.unknown.is_none() && q2.unknown.is_none(),
            "{q1:?} {q2:?}"
        );
        assert_eq!(q1.keys.as_deref(), Some(K));
        assert_eq!(q1.sequence_number.as_deref(), Some("000123"));
        assert_eq!(q1.created_ms, Some(1_700_000_000_500));
        assert_eq!(q1.item_count_delta, Some(0));
        // good -> bad -> later: the deltas sum to H(later) - H(good), as if both were normal.
        let mut sum = q1.digest_delta.unwrap();
        sum.add(&q2.digest_delta.unwrap());
        let mut want = StateDigest::ZERO;
        want.add_item(&crate::model::item::item_hash(later).unwrap());
        want.remove_item(&crate::model::item::item_hash(good).unwrap());
        assert_eq!(sum, want);
        // A valid image hashes as the capture hashes it; the kinds are recorded.
        assert_eq!(
            q2.new_image_sha256.as_deref(),
            Some(hex::encode(crate::model::item::item_hash(later).unwrap().0).as_str())
        );
        assert!(q1.new_image_opaque && !q1.old_image_opaque);
        assert!(!q2.new_image_opaque && q2.old_image_opaque);
        // Recomputed with the recorded kinds, the effect is the same whatever decides now.
        let again = effect_of_record_with(
            &record("MODIFY", K, Some(bad1), Some(good)),
            HashKinds::AsSealed {
                new_opaque: true,
                old_opaque: false,
            },
        );
        assert_eq!(again, q1);
        assert_ne!(
            hash_as(bad1, None).0,
            crate::model::item::item_hash(good).unwrap()
        );
    }

    #[test]
    fn what_cannot_be_read_is_named_not_guessed() {
        let e = effect_of_record("not json at all");
        assert!(!e.placeable() && e.unknown.is_some());
        let e = effect_of_record(&record(
            "MODIFY",
            r#"{"pk":{"ZZ":"a"}}"#,
            Some("{}"),
            Some("{}"),
        ));
        assert!(e.keys.is_none());
        assert!(e.unknown.as_deref().unwrap().contains("Keys"), "{e:?}");
        let e = effect_of_record(&record("MODIFY", K, Some(r#"{"pk":{"S":"a"}}"#), None));
        assert!(e.digest_delta.is_none());
        assert!(e.unknown.as_deref().unwrap().contains("missing"), "{e:?}");
        let e = effect_of_record(&record("REMOVE", K, None, Some(r#"{"pk":{"S":"a"}}"#)));
        assert!(e.is_remove() && e.unknown.is_none() && e.new_image_sha256.is_none());
        assert_eq!(e.item_count_delta, Some(-1));
        let stored = format!(
            r#"{{"format":1,"table":"t","reason":"r","sequence_number":null,"record":{}}}"#,
            record("INSERT", K, Some(r#"{"pk":{"S":"a"}}"#), None)
        );
        assert!(effect_of_object(stored.as_bytes()).placeable());
        assert!(effect_of_object(b"{}").unknown.is_some());
    }
}

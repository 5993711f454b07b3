//! Losslessness: random items of every DynamoDB type go through the capture path (event JSON →
//! segment Parquet in a store) and are read back; what comes back is the item's canonical form,
//! equal to the canonical form of what was sent (the same item, value for value). Random items
//! are written in non-canonical notations (unsorted names, exponents, escapes) on purpose. Plus
//! the edge cases DynamoDB allows at its limits.

mod common;

use std::sync::Arc;

use arrow_array::{Array, StringArray};
use base64::Engine as _;
use proptest::prelude::*;
use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::model::item::canonicalize;
use streamseal::model::schema::TableSchema;
use streamseal::segment::{EncodeOptions, read_segment};
use streamseal::store::ObjectStore;
use streamseal::store::memory::MemoryStore;

const ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/props/stream/2026-01-01T00:00:00.000";

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A DynamoDB number within DynamoDB's limits, written in one of several equivalent notations.
fn number() -> impl Strategy<Value = String> {
    (any::<bool>(), "[1-9][0-9]{0,37}", -130i32..=88, 0u8..3).prop_map(
        |(neg, digits, exp, style)| {
            let sign = if neg { "-" } else { "" };
            // value = digits × 10^exp; the leading digit's exponent must stay within -130..=125.
            let lead = exp + digits.len() as i32 - 1;
            let exp = if lead > 125 {
                exp - (lead - 125)
            } else if lead < -130 {
                exp + (-130 - lead)
            } else {
                exp
            };
            match style {
                0 => format!("{sign}{digits}E{exp}"),
                1 => format!("{sign}{digits}e{}{}", if exp >= 0 { "+" } else { "" }, exp),
                _ => {
                    // plain decimal notation
                    if exp >= 0 {
                        format!("{sign}{digits}{}", "0".repeat(exp as usize))
                    } else {
                        let point = digits.len() as i32 + exp;
                        if point > 0 {
                            format!(
                                "{sign}{}.{}",
                                &digits[..point as usize],
                                &digits[point as usize..]
                            )
                        } else {
                            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
                        }
                    }
                }
            }
        },
    )
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,20}",
        any::<String>(),
        Just("nul\u{0}\u{1}\u{1f} \"q\" \\ é 東京 😀".to_owned()),
    ]
}

fn binary() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..40)
        .prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

fn set_of(
    inner: BoxedStrategy<String>,
    canon: fn(&str) -> String,
) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(inner, 1..6).prop_map(move |mut v| {
        // Sets hold distinct values (as DynamoDB compares them) and are never empty.
        let mut seen = std::collections::HashSet::new();
        v.retain(|x| seen.insert(canon(x)));
        v
    })
}

fn canon_number(n: &str) -> String {
    streamseal::model::item::normalize_number(n).unwrap()
}
fn canon_binary(b: &str) -> String {
    b.to_owned()
}
fn canon_text(s: &str) -> String {
    s.to_owned()
}

/// A DynamoDB typed value as JSON text.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        text().prop_map(|s| format!(r#"{{"S":{}}}"#, json_string(&s))),
        number().prop_map(|n| format!(r#"{{"N":"{n}"}}"#)),
        binary().prop_map(|b| format!(r#"{{"B":"{b}"}}"#)),
        any::<bool>().prop_map(|b| format!(r#"{{"BOOL":{b}}}"#)),
        Just(r#"{"NULL":true}"#.to_owned()),
        set_of(text().boxed(), canon_text).prop_map(|v| format!(
            r#"{{"SS":[{}]}}"#,
            v.iter()
                .map(|s| json_string(s))
                .collect::<Vec<_>>()
                .join(",")
        )),
        set_of(number().boxed(), canon_number).prop_map(|v| format!(
            r#"{{"NS":[{}]}}"#,
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(",")
        )),
        set_of(
            binary().prop_filter("distinct", |_| true).boxed(),
            canon_binary
        )
        .prop_map(|v| format!(
            r#"{{"BS":[{}]}}"#,
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(",")
        )),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!(r#"{{"L":[{}]}}"#, v.join(","))),
            prop::collection::btree_map("[a-z]{1,6}|\\PC{1,4}", inner, 0..6).prop_map(|m| {
                let entries: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_string(k)))
                    .collect();
                format!(r#"{{"M":{{{}}}}}"#, entries.join(","))
            }),
        ]
    })
}

/// An item: a hash key plus random attributes.
fn item() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9#]{1,12}",
        prop::collection::btree_map("[a-z_]{1,8}|\\PC{1,5}", value(), 0..8),
    )
        .prop_map(|(pk, attrs)| {
            let mut entries = vec![format!(r#""pk":{{"S":"{pk}"}}"#)];
            for (k, v) in attrs {
                if k != "pk" {
                    entries.push(format!("{}:{v}", json_string(&k)));
                }
            }
            format!("{{{}}}", entries.join(","))
        })
}

fn event_of(items: &[String]) -> String {
    let records: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let parsed: serde_json::Value = serde_json::from_str(img).unwrap();
            let key = format!(r#"{{"pk":{}}}"#, parsed["pk"]);
            format!(
                r#"{{"eventID":"e{i}","eventName":"INSERT","eventSource":"aws:dynamodb","eventSourceARN":"{ARN}","dynamodb":{{"ApproximateCreationDateTime":1767225600.5,"Keys":{key},"NewImage":{img},"SequenceNumber":"{}","SizeBytes":1,"StreamViewType":"NEW_AND_OLD_IMAGES"}}}}"#,
                100_000_000_000_000_000_000u128 + i as u128
            )
        })
        .collect();
    format!(r#"{{"Records":[{}]}}"#, records.join(","))
}

/// Captures `items` as INSERTs and returns the new_image column read back, in sequence order.
fn capture(items: &[String]) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let ingestor = Ingestor::new(
            store.clone(),
            SchemaSource::Fixed(Arc::new(TableSchema::default()), "none".into()),
            IngestOptions {
                encode: EncodeOptions::default(),
                prepare_threads: 1,
                bad_records: BadRecordPolicy::Reject,
            },
        );
        let report = ingestor.ingest_event(&event_of(items)).await.unwrap();
        assert!(report.error.is_none() && report.quarantined.is_empty());
        let mut out = Vec::new();
        for meta in store.list("props/changes/", None, None).await.unwrap() {
            for batch in read_segment(&meta.key, store.get(&meta.key).await.unwrap()).unwrap() {
                let col = batch
                    .column_by_name("new_image")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                out.extend((0..col.len()).map(|i| col.value(i).to_owned()));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_items_round_trip_through_segments(items in prop::collection::vec(item(), 1..8)) {
        let back = capture(&items);
        prop_assert_eq!(back.len(), items.len());
        for (original, read) in items.iter().zip(&back) {
            // The stored image is the canonical form of the item sent, and stays so.
            prop_assert_eq!(&canonicalize(original).unwrap(), read);
            prop_assert_eq!(&canonicalize(read).unwrap(), read);
            // Value for value: every string, number and binary of the original is in it.
            let a: serde_json::Value = serde_json::from_str(original).unwrap();
            let b: serde_json::Value = serde_json::from_str(read).unwrap();
            prop_assert_eq!(a.as_object().unwrap().len(), b.as_object().unwrap().len());
        }
    }

    #[test]
    fn the_record_splitter_agrees_with_a_json_parser(items in prop::collection::vec(item(), 0..6), pretty in any::<bool>()) {
        let mut event = event_of(&items);
        if pretty {
            event = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&event).unwrap()).unwrap();
        }
        let split = streamseal::model::change::parse_event(&event).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&event).unwrap();
        let want = parsed["Records"].as_array().unwrap();
        prop_assert_eq!(split.len(), want.len());
        for (raw, want) in split.iter().zip(want) {
            prop_assert_eq!(&serde_json::from_str::<serde_json::Value>(raw).unwrap(), want);
        }
    }

    #[test]
    fn arbitrary_input_never_panics(prefix in "\\PC{0,8}", body in "[\\[\\]{}\"\\\\:,a1 ]{0,40}", items in prop::collection::vec(item(), 0..2), cut in any::<prop::sample::Index>()) {
        // Garbage, near-misses of the event shape, and valid events cut at a random byte.
        let _ = streamseal::model::change::parse_event(&format!("{prefix}{body}"));
        let _ = streamseal::model::change::parse_event(&format!("{{\"Records\":[{body}]}}"));
        let event = event_of(&items);
        let mut at = cut.index(event.len() + 1);
        while !event.is_char_boundary(at) {
            at -= 1;
        }
        let _ = streamseal::model::change::parse_event(&event[..at]);
        let _ = canonicalize(&event[..at]);
    }

    #[test]
    fn canonical_form_is_stable_and_idempotent(item in item()) {
        let c1 = canonicalize(&item).unwrap();
        let c2 = canonicalize(&c1).unwrap();
        prop_assert_eq!(&c1, &c2);
        prop_assert_eq!(streamseal::model::item::item_hash(&item).unwrap(), streamseal::model::item::item_hash(&c1).unwrap());
    }
}

#[test]
fn edge_cases_at_dynamodb_limits_round_trip() {
    // 32 levels of nesting, alternating maps and lists.
    let mut nested = r#"{"S":"bottom"}"#.to_owned();
    for level in 0..32 {
        nested = if level % 2 == 0 {
            format!(r#"{{"M":{{"k{level}":{nested}}}}}"#)
        } else {
            format!(r#"{{"L":[{nested}]}}"#)
        };
    }
    // An item of about 400 KB: one large string plus a large binary value.
    let big_s = "x".repeat(300 * 1024);
    let big_b = base64::engine::general_purpose::STANDARD.encode(vec![0xABu8; 70 * 1024]);
    let items = vec![
        format!(r#"{{"pk":{{"S":"deep"}},"n":{nested}}}"#),
        format!(r#"{{"pk":{{"S":"big"}},"s":{{"S":"{big_s}"}},"b":{{"B":"{big_b}"}}}}"#),
        r#"{"pk":{"S":"empty"},"s":{"S":""},"b":{"B":""},"l":{"L":[]},"m":{"M":{}}}"#.to_owned(),
        r#"{"pk":{"S":"n"},"max":{"N":"9.9999999999999999999999999999999999999E+125"},"min":{"N":"1E-130"},"neg":{"N":"-99999999999999999999999999999999999999"},"digits38":{"N":"0.12345678901234567890123456789012345678"}}"#.to_owned(),
        "{\"pk\":{\"S\":\"nul\"},\"s\":{\"S\":\"a\\u0000b\"},\"u\":{\"S\":\"\u{10FFFF}\u{1F600}\"},\"ss\":{\"SS\":[\"\",\"\\u0000\"]}}".to_owned(),
    ];
    assert!(items[1].len() > 390 * 1024);
    let back = capture(&items);
    let want: Vec<String> = items.iter().map(|i| canonicalize(i).unwrap()).collect();
    assert_eq!(back, want);
    assert!(
        back[1].contains(&big_s) && back[1].contains(&big_b),
        "large values intact"
    );
    assert!(
        back[3].contains("\"min\":{\"N\":\"0.0000"),
        "{}",
        &back[3][..200.min(back[3].len())]
    );
    // 33 levels is beyond DynamoDB's limit and is refused, not silently truncated.
    let too_deep = format!(r#"{{"pk":{{"S":"x"}},"n":{{"L":[{nested}]}}}}"#);
    assert!(canonicalize(&too_deep).is_err());
}

#[test]
fn numbers_never_pass_through_floating_point() {
    // 38 significant digits survive where an f64 keeps about 17.
    let item = r#"{"n":{"N":"1.2345678901234567890123456789012345678"},"pk":{"S":"a"}}"#.to_owned();
    let back = capture(std::slice::from_ref(&item));
    assert_eq!(back[0], item, "already canonical, so byte for byte");
    assert_ne!(
        "1.2345678901234567890123456789012345678"
            .parse::<f64>()
            .unwrap()
            .to_string(),
        "1.2345678901234567890123456789012345678"
    );
}

#[test]
fn every_prefix_of_a_real_event_is_handled_without_panicking() {
    // A stream cut anywhere (inside strings, after a backslash, between records) must give an
    // error or a shorter batch, never a crash.
    let event = common::fixture("all-types.json") + &common::fixture("malformed-record.json");
    for at in (0..=event.len()).filter(|&i| event.is_char_boundary(i)) {
        let _ = streamseal::model::change::parse_event(&event[..at]);
    }
}

// ---------------------------------------------------------------------------------------------
// The byte scanner (fast path) against serde_json (the authority): on every input, valid or
// broken, `parse` must give exactly what `parse_serde` gives.

/// One stream record around `img`, in one of the shapes AWS sends (and some it does not).
fn record_of() -> impl Strategy<Value = String> {
    (
        item(),
        item(),
        0u8..3,
        0u8..4,
        any::<bool>(),
        prop_oneof![
            Just("1767225600".to_owned()),
            Just("1767225600.25".to_owned()),
            Just("1.7672256e9".to_owned()),
            Just("null".to_owned()),
            Just("-5".to_owned()),
            Just("1767225600.123456789012345678".to_owned()),
        ],
        prop_oneof![
            Just("1058".to_owned()),
            Just("null".to_owned()),
            Just("1.5".to_owned()),
            Just("-1".to_owned()),
            Just("18446744073709551616".to_owned()),
        ],
        any::<bool>(),
    )
        .prop_map(|(new, old, kind, view, ttl, time, size, extra)| {
            let kind = ["INSERT", "MODIFY", "REMOVE"][kind as usize];
            let view = ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"][view as usize];
            let parsed: serde_json::Value = serde_json::from_str(&new).unwrap();
            let key = format!(r#"{{"pk":{}}}"#, parsed["pk"]);
            let mut dynamodb = format!(r#""ApproximateCreationDateTime":{time},"Keys":{key}"#);
            if view.contains("NEW") && kind != "REMOVE" {
                dynamodb.push_str(&format!(r#","NewImage":{new}"#));
            }
            if (view.contains("OLD") || view.contains("AND")) && kind != "INSERT" {
                dynamodb.push_str(&format!(r#","OldImage":{old}"#));
            }
            dynamodb.push_str(&format!(
                r#","SequenceNumber":"4{}","SizeBytes":{size},"StreamViewType":"{view}""#,
                "0".repeat(20)
            ));
            let identity = if ttl {
                r#","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}"#
            } else {
                ""
            };
            let extra = if extra {
                r#","eventVersion":"1.1","awsRegion":"us-east-1","more":[1,-2.5e3,true,null,{"x":"\u00e9"}]"#
            } else {
                ""
            };
            format!(
                r#"{{"eventID":"e\"1","eventName":"{kind}","eventSource":"aws:dynamodb","eventSourceARN":"{ARN}","dynamodb":{{{dynamodb}}}{identity}{extra}}}"#
            )
        })
}

fn both_parsers(raw: &str) -> (String, String) {
    use streamseal::model::change::ChangeRecord;
    use streamseal::model::item::{Canonicalizer, ColumnPaths};
    let columns: Vec<Vec<String>> = vec![
        vec!["pk".into()],
        vec!["a".into()],
        vec!["a".into(), "b".into()],
    ];
    let paths = ColumnPaths::new(columns.iter().map(Vec::as_slice));
    let fast = ChangeRecord::parse(raw, 3, &mut Canonicalizer::new(), &paths);
    let slow = ChangeRecord::parse_serde(raw, 3, &mut Canonicalizer::new(), &paths);
    (format!("{fast:?}"), format!("{slow:?}"))
}

/// `raw` with one edit at `at`: a byte range removed, or a JSON-significant fragment inserted.
fn mutate(raw: &str, at: usize, edit: u8) -> String {
    let mut at = at % (raw.len() + 1);
    while !raw.is_char_boundary(at) {
        at -= 1;
    }
    let fragments = [
        "",
        ",",
        "}",
        "{",
        "]",
        "[",
        "\"",
        "\\",
        ":",
        " ",
        "\u{1}",
        "0",
        "-",
        "e",
        "\\u12",
        "\\ud800",
        "null",
        "true",
        "{\"S\":\"x\"}",
        "\"S\":",
        "\"N\":\"1\"",
    ];
    let mut out = raw.to_owned();
    if edit.is_multiple_of(2) {
        let mut end = (at + 1 + (edit as usize / 2) % 4).min(raw.len());
        while !raw.is_char_boundary(end) {
            end += 1;
        }
        out.replace_range(at..end, "");
    } else {
        out.insert_str(at, fragments[(edit as usize / 2) % fragments.len()]);
    }
    out
}

/// `json` with JSON whitespace around every structural character outside strings (`"a" : {`),
/// chosen by `seed`: where the fast path copies text it found already canonical, whitespace
/// in odd places must send it the long way.
fn spaced(json: &str, seed: u64) -> String {
    const SPACES: [&str; 6] = ["", " ", "", "\n", "\t ", "\r\n  "];
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        SPACES[(state % SPACES.len() as u64) as usize]
    };
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '{' | '}' | '[' | ']' | ':' | ',' => {
                out.push_str(next());
                out.push(c);
                out.push_str(next());
            }
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_reads_spaced_json_like_serde(item in item(), raw in record_of(), seed in any::<u64>()) {
        use streamseal::model::item::{Canonicalizer, ColumnPaths};
        let text = spaced(&item, seed);
        let paths = ColumnPaths::new([vec!["pk".to_owned()]].iter().map(Vec::as_slice));
        let fast = Canonicalizer::new().item(&text, &paths);
        let slow = Canonicalizer::new().item_serde(&text, &paths);
        prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "input: {}", text);
        prop_assert!(fast.is_ok(), "spacing is valid JSON: {}", text);
        let raw = spaced(&raw, seed);
        let (fast, slow) = both_parsers(&raw);
        prop_assert_eq!(fast, slow, "input: {}", raw);
    }

    #[test]
    fn the_fast_path_reads_records_exactly_like_serde(raw in record_of(), pretty in any::<bool>()) {
        let raw = if pretty {
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&raw).unwrap()).unwrap()
        } else {
            raw
        };
        let (fast, slow) = both_parsers(&raw);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn the_fast_path_fails_exactly_like_serde(raw in record_of(), edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut broken = raw;
        for (at, edit) in edits {
            broken = mutate(&broken, at, edit);
        }
        let (fast, slow) = both_parsers(&broken);
        prop_assert_eq!(fast, slow, "input: {}", broken);
    }

    #[test]
    fn the_fast_path_canonicalises_items_exactly_like_serde(item in item(), at in any::<usize>(), edit in any::<u8>(), broken in any::<bool>()) {
        use streamseal::model::item::{Canonicalizer, ColumnPaths};
        let text = if broken { mutate(&item, at, edit) } else { item };
        let paths = ColumnPaths::new([vec!["pk".to_owned()]].iter().map(Vec::as_slice));
        let fast = Canonicalizer::new().item(&text, &paths);
        let slow = Canonicalizer::new().item_serde(&text, &paths);
        prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "input: {}", text);
    }
}

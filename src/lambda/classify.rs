//! Recognising an event by its shape, reading as little of it as it can.

use super::*;

/// The kinds of payload the function recognises.
#[derive(Debug, PartialEq, Eq)]
pub enum EventShape {
    /// `{"Records": [{"eventSource": "aws:dynamodb", ...}]}`.
    DynamoDbStream,
    /// `{"Records": [{"eventSource": "aws:sqs", ...}]}`: the on-failure queue's messages.
    OnFailureQueue,
    /// Anything else, described.
    Other(String),
}

/// Recognises an event by its shape, reading only the top-level fields.
pub fn classify(payload: &RawValue) -> EventShape {
    // A stream batch is megabytes: read only up to its first record's eventSource.
    if let Some(source) = first_record_source(payload.get()) {
        return match source.as_deref() {
            Some("aws:dynamodb") | None => EventShape::DynamoDbStream,
            Some("aws:sqs") => EventShape::OnFailureQueue,
            Some(other) => EventShape::Other(format!(
                "records from {other:?}; this function reads DynamoDB streams"
            )),
        };
    }
    #[derive(serde::Deserialize)]
    struct Top {
        #[serde(rename = "detail-type", default)]
        detail_type: Option<String>,
        #[serde(default)]
        source: Option<String>,
    }
    match serde_json::from_str::<Top>(payload.get()) {
        Ok(Top {
            detail_type,
            source,
        }) => EventShape::Other(format!(
            "no Records array (source {:?}, detail-type {:?})",
            source.unwrap_or_default(),
            detail_type.unwrap_or_default()
        )),
        Err(e) => EventShape::Other(format!("payload is not a JSON object: {e}")),
    }
}

/// `Some(eventSource of the first record)` when `text` is an object with a `Records` array
/// (`Some(None)` for an empty array or a record without one); `None` otherwise. Stops parsing
/// at the first record: serde has no early exit, so the record seed ends the parse with an
/// error that carries the answer.
pub(super) fn first_record_source(text: &str) -> Option<Option<String>> {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    pub(super) const FOUND: &str = "\u{0}first-record-source:";
    struct TopSeed;
    impl<'de> Visitor<'de> for TopSeed {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an event object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "Records" {
                    map.next_value_seed(FirstSeed)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    struct FirstSeed;
    impl<'de> DeserializeSeed<'de> for FirstSeed {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for FirstSeed {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a Records array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            #[derive(serde::Deserialize)]
            struct Rec {
                #[serde(rename = "eventSource", default)]
                event_source: Option<String>,
            }
            let source = seq
                .next_element::<Rec>()
                .ok()
                .flatten()
                .and_then(|r| r.event_source);
            Err(de::Error::custom(format!(
                "{FOUND}{}",
                source.map(|s| format!("={s}")).unwrap_or_default()
            )))
        }
    }
    let mut d = serde_json::Deserializer::from_str(text);
    match de::Deserializer::deserialize_map(&mut d, TopSeed) {
        Ok(()) => None,
        Err(e) => {
            let message = e.to_string();
            let found = message.strip_prefix(FOUND)?;
            // serde_json appends " at line L column C" to custom errors.
            let found = found.rsplit_once(" at line ").map_or(found, |(f, _)| f);
            Some(found.strip_prefix('=').map(str::to_owned))
        }
    }
}

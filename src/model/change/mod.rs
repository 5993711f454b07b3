//! Change records: one DynamoDB stream record, parsed from the JSON AWS sends.
//!
//! A Lambda invocation receives `{"Records": [...]}` where each record looks like
//!
//! ```json
//! {"eventID": "…", "eventName": "MODIFY", "eventSource": "aws:dynamodb",
//!  "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-…",
//!  "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
//!  "dynamodb": {"ApproximateCreationDateTime": 1700000000.5, "Keys": {…}, "NewImage": {…},
//!               "OldImage": {…}, "SequenceNumber": "4421…", "SizeBytes": 59,
//!               "StreamViewType": "NEW_AND_OLD_IMAGES"}}
//! ```
//!
//! [`parse_event`] splits an event into raw records without interpreting them, so one bad record
//! cannot make its neighbours unreadable; [`ChangeRecord::parse`] then reads each raw record in a
//! single pass into a validated [`ChangeRecord`], canonicalising the images as it goes (see
//! [`crate::model::item`]). Sequence numbers are decimal strings of up to 40 digits and are ordered
//! numerically ([`SequenceNumber`]).
//!
//! The `aws_lambda_events` crate models the same event, but reads images into owned maps and,
//! as of 1.2, truncates a fractional `ApproximateCreationDateTime` to whole seconds; this module
//! never builds maps, keeps milliseconds, and keeps every field a backup needs. A test (`tests/handler.rs`) checks both parsers agree on
//! AWS's documented example events and pins the truncation.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::item::{
    CanonicalItem, Canonicalizer, ColumnPaths, SpannedItem, Str, TextColumns,
};
use crate::model::scan::Scanner;

mod event;
pub use event::*;

/// Longest sequence number DynamoDB Streams produces.
pub(crate) const MAX_SEQUENCE_DIGITS: usize = 40;

/// A stream sequence number: a decimal string of 1 to 40 digits, ordered as a number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Validates and wraps a sequence number.
    pub fn parse(text: &str) -> Result<SequenceNumber, String> {
        if text.is_empty()
            || text.len() > MAX_SEQUENCE_DIGITS
            || !text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!(
                "sequence number {text:?} is not a decimal string of 1 to {MAX_SEQUENCE_DIGITS} digits"
            ));
        }
        Ok(SequenceNumber(text.to_owned()))
    }

    /// The number as AWS sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Zero-padded to 40 digits, so that string order is numeric order (used in object names).
    pub(crate) fn padded(&self) -> String {
        format!(
            "{:0>width$}",
            self.significant(),
            width = MAX_SEQUENCE_DIGITS
        )
    }

    fn significant(&self) -> &str {
        significant(&self.0)
    }

    /// Orders the texts of two sequence numbers as numbers (the order of [`SequenceNumber`]),
    /// for code that holds their digits rather than the values.
    pub(crate) fn cmp_text(a: &str, b: &str) -> Ordering {
        let (a, b) = (significant(a), significant(b));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

/// The digits of a sequence number without leading zeros (`"0"` for zero).
fn significant(digits: &str) -> &str {
    let s = digits.trim_start_matches('0');
    if s.is_empty() { "0" } else { s }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        SequenceNumber::cmp_text(&self.0, &other.0)
    }
}
impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a stream record says happened to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A new item was added.
    Insert,
    /// An existing item was updated or overwritten.
    Modify,
    /// An item was deleted (by a caller, or by TTL).
    Remove,
}

impl ChangeKind {
    /// The `eventName` AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Modify => "MODIFY",
            ChangeKind::Remove => "REMOVE",
        }
    }
}

/// Which images the stream carries (the table's `StreamViewType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamViewType {
    /// Only the key attributes.
    KeysOnly,
    /// The item after the change.
    NewImage,
    /// The item before the change.
    OldImage,
    /// Both.
    NewAndOldImages,
}

impl StreamViewType {
    /// Parses AWS's spelling.
    pub(crate) fn parse(text: &str) -> Result<StreamViewType, String> {
        match text {
            "KEYS_ONLY" => Ok(StreamViewType::KeysOnly),
            "NEW_IMAGE" => Ok(StreamViewType::NewImage),
            "OLD_IMAGE" => Ok(StreamViewType::OldImage),
            "NEW_AND_OLD_IMAGES" => Ok(StreamViewType::NewAndOldImages),
            other => Err(format!(
                "unknown StreamViewType {other:?} (expected KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES)"
            )),
        }
    }

    /// AWS's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StreamViewType::KeysOnly => "KEYS_ONLY",
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::OldImage => "OLD_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }

    /// Whether records carry the item after the change.
    pub(crate) fn has_new(self) -> bool {
        matches!(
            self,
            StreamViewType::NewImage | StreamViewType::NewAndOldImages
        )
    }

    /// Whether records carry the item before the change.
    pub(crate) fn has_old(self) -> bool {
        matches!(
            self,
            StreamViewType::OldImage | StreamViewType::NewAndOldImages
        )
    }
}

/// One validated stream record. Images are already in canonical form (see [`crate::model::item`]):
/// read, checked and normalised in the same pass that read the record. `I` is how the key and
/// images are held: each in its own [`CanonicalItem`], or as [`SpannedItem`]s whose texts were
/// written into column buffers ([`EventCursor::record_into`]).
#[derive(Debug, Clone)]
pub struct ChangeRecord<'a, I = CanonicalItem> {
    /// `eventID`: unique per record.
    pub event_id: Cow<'a, str>,
    /// `eventName`.
    pub kind: ChangeKind,
    /// `dynamodb.SequenceNumber`.
    pub sequence: SequenceNumber,
    /// `dynamodb.ApproximateCreationDateTime` in milliseconds since the epoch (UTC).
    pub approximate_creation_ms: Option<i64>,
    /// `dynamodb.StreamViewType`.
    pub view_type: StreamViewType,
    /// True for deletions made by DynamoDB's TTL process.
    pub ttl_delete: bool,
    /// `dynamodb.Keys`, canonical.
    pub keys: I,
    /// `dynamodb.NewImage`, when the view type carries it.
    pub new_image: Option<I>,
    /// `dynamodb.OldImage`, when the view type carries it.
    pub old_image: Option<I>,
    /// `dynamodb.SizeBytes`.
    pub size_bytes: Option<u64>,
    /// `eventSourceARN` (the stream's ARN), which names the table.
    pub event_source_arn: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
struct WireIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "principalId", borrow, default)]
    principal_id: Option<Cow<'a, str>>,
}

/// The fields of a record, read by hand so the images go through the canonicaliser in the
/// same pass (a derived struct would need a second pass over each image).
struct WireRecord<'a, I = CanonicalItem> {
    event_id: Option<Cow<'a, str>>,
    event_name: Option<Cow<'a, str>>,
    event_source: Option<Cow<'a, str>>,
    event_source_arn: Option<Cow<'a, str>>,
    user_identity: Option<WireIdentity<'a>>,
    has_stream: bool,
    approximate_creation: Option<f64>,
    keys: Option<I>,
    new_image: Option<I>,
    old_image: Option<I>,
    sequence_number: Option<Cow<'a, str>>,
    size_bytes: Option<u64>,
    stream_view_type: Option<Cow<'a, str>>,
}

impl<I> Default for WireRecord<'_, I> {
    fn default() -> Self {
        WireRecord {
            event_id: None,
            event_name: None,
            event_source: None,
            event_source_arn: None,
            user_identity: None,
            has_stream: false,
            approximate_creation: None,
            keys: None,
            new_image: None,
            old_image: None,
            sequence_number: None,
            size_bytes: None,
            stream_view_type: None,
        }
    }
}

/// How a record's key and images are held ([`ChangeRecord`]'s `I`).
pub trait RecordImage {
    /// True for the empty item `{}`.
    fn is_empty_item(&self) -> bool;
}

impl RecordImage for CanonicalItem {
    fn is_empty_item(&self) -> bool {
        self.text == "{}"
    }
}

impl RecordImage for SpannedItem<'_> {
    fn is_empty_item(&self) -> bool {
        // `{}` is the only canonical item of two bytes.
        self.span.len() == 2
    }
}

/// Which of a record's items is being read, with the column paths to capture from it.
#[derive(Clone, Copy)]
enum Part<'p> {
    Keys,
    New(&'p ColumnPaths),
    Old(&'p ColumnPaths),
}

impl Part<'_> {
    /// The column paths to capture (none from the keys).
    fn paths(&self) -> &ColumnPaths {
        match self {
            Part::Keys => no_columns(),
            Part::New(paths) | Part::Old(paths) => paths,
        }
    }
}

/// Where the fast path puts the canonical key and images of a record.
trait ImageSink<'a> {
    type Item: RecordImage;
    fn scan(
        &mut self,
        part: Part,
        canon: &mut Canonicalizer,
        s: &mut Scanner<'a>,
    ) -> Option<Self::Item>;
}

/// Each item in its own `String` ([`ChangeRecord::parse`]).
struct OwnTexts;

impl<'a> ImageSink<'a> for OwnTexts {
    type Item = CanonicalItem;
    fn scan(
        &mut self,
        part: Part,
        canon: &mut Canonicalizer,
        s: &mut Scanner<'a>,
    ) -> Option<CanonicalItem> {
        // Keys are read for every record but the state digest needs image hashes only.
        canon.scan_item(s, part.paths(), !matches!(part, Part::Keys))
    }
}

impl<'a> ImageSink<'a> for TextColumns {
    type Item = SpannedItem<'a>;
    fn scan(
        &mut self,
        part: Part,
        canon: &mut Canonicalizer,
        s: &mut Scanner<'a>,
    ) -> Option<SpannedItem<'a>> {
        let (buffer, hash) = match part {
            Part::Keys => (&mut self.keys, false),
            Part::New(_) => (&mut self.new_image, true),
            Part::Old(_) => (&mut self.old_image, true),
        };
        canon.scan_item_into(s, part.paths(), hash, buffer)
    }
}

/// Reads a stream record into a [`WireRecord`] through serde: the record object itself
/// (`STREAM = false`, [`RecordSeed`]) or its `dynamodb` object (`STREAM = true`,
/// [`StreamSeed`]), whose images are canonicalised as they are read.
struct Seed<'s, 'a, const STREAM: bool> {
    wire: &'s mut WireRecord<'a>,
    canon: &'s mut Canonicalizer,
    paths: &'s ColumnPaths,
    /// The image field being read when an error happened.
    failed_image: &'s mut Option<&'static str>,
}

type RecordSeed<'s, 'a> = Seed<'s, 'a, false>;
type StreamSeed<'s, 'a> = Seed<'s, 'a, true>;

impl<'de, 's, const STREAM: bool> DeserializeSeed<'de> for Seed<'s, 'de, STREAM>
where
    Seed<'s, 'de, STREAM>: Visitor<'de, Value = ()>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for RecordSeed<'s, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB stream record object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "eventID" => self.wire.event_id = Some(map.next_value::<Str>()?.0),
                "eventName" => self.wire.event_name = Some(map.next_value::<Str>()?.0),
                "eventSource" => self.wire.event_source = Some(map.next_value::<Str>()?.0),
                "eventSourceARN" => self.wire.event_source_arn = Some(map.next_value::<Str>()?.0),
                "userIdentity" => {
                    self.wire.user_identity = map.next_value::<Option<WireIdentity>>()?
                }
                "dynamodb" => {
                    self.wire.has_stream = true;
                    map.next_value_seed(StreamSeed {
                        wire: &mut *self.wire,
                        canon: &mut *self.canon,
                        paths: self.paths,
                        failed_image: &mut *self.failed_image,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de, 's> Visitor<'de> for StreamSeed<'s, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the \"dynamodb\" object of a stream record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let no_columns = no_columns();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let (field, paths): (&'static str, &ColumnPaths) = match key.0.as_ref() {
                "Keys" => ("Keys", no_columns),
                "NewImage" => ("NewImage", self.paths),
                // Typed columns come from the new image, or the old one when there is no new
                // one (REMOVE); AWS sends NewImage first, so the old image's captures are
                // usually skipped.
                "OldImage" if self.wire.new_image.is_some() => ("OldImage", no_columns),
                "OldImage" => ("OldImage", self.paths),
                other => {
                    let wire = &mut *self.wire;
                    match other {
                        "ApproximateCreationDateTime" => {
                            wire.approximate_creation = map.next_value()?
                        }
                        "SequenceNumber" => wire.sequence_number = Some(map.next_value::<Str>()?.0),
                        "SizeBytes" => wire.size_bytes = map.next_value()?,
                        "StreamViewType" => {
                            wire.stream_view_type = Some(map.next_value::<Str>()?.0)
                        }
                        _ => map.next_value::<IgnoredAny>().map(|_| ())?,
                    }
                    continue;
                }
            };
            *self.failed_image = Some(field);
            let seed = if field == "Keys" {
                self.canon.key_seed(paths)
            } else {
                self.canon.item_seed(paths)
            };
            let item = map.next_value_seed(seed)?;
            *self.failed_image = None;
            match field {
                "Keys" => self.wire.keys = Some(item),
                "NewImage" => self.wire.new_image = Some(item),
                _ => self.wire.old_image = Some(item),
            }
        }
        Ok(())
    }
}

fn no_columns() -> &'static ColumnPaths {
    static NO_COLUMNS: std::sync::OnceLock<ColumnPaths> = std::sync::OnceLock::new();
    NO_COLUMNS.get_or_init(ColumnPaths::default)
}

/// The fast path of [`ChangeRecord::parse`]: reads the record at the scanner exactly as
/// [`RecordSeed`] would, or returns `None` for anything it does not read with certainty (the
/// serde path then reads the record again and is the authority, errors included).
fn scan_record<'a, K: ImageSink<'a>>(
    s: &mut Scanner<'a>,
    canon: &mut Canonicalizer,
    paths: &ColumnPaths,
    sink: &mut K,
) -> Option<WireRecord<'a, K::Item>> {
    let mut wire = WireRecord::default();
    s.eat(b'{')?;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match key.as_ref() {
            "eventID" => wire.event_id = Some(s.string()?),
            "eventName" => wire.event_name = Some(s.string()?),
            "eventSource" => wire.event_source = Some(s.string()?),
            "eventSourceARN" => wire.event_source_arn = Some(s.string()?),
            "userIdentity" => wire.user_identity = scan_identity(s)?,
            "dynamodb" => {
                wire.has_stream = true;
                scan_stream(s, &mut wire, canon, paths, sink)?;
            }
            _ => s.skip_value()?,
        }
    }
    Some(wire)
}

/// `userIdentity`: `null` or an object (the derived [`WireIdentity`] rejects duplicate fields,
/// so this steps aside on them).
fn scan_identity<'a>(s: &mut Scanner<'a>) -> Option<Option<WireIdentity<'a>>> {
    if s.null() {
        return Some(None);
    }
    s.eat(b'{')?;
    let mut identity = WireIdentity::default();
    let (mut seen_type, mut seen_principal) = (false, false);
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        let (seen, slot) = match key.as_ref() {
            "type" => (&mut seen_type, &mut identity.kind),
            "principalId" => (&mut seen_principal, &mut identity.principal_id),
            _ => {
                s.skip_value()?;
                continue;
            }
        };
        if std::mem::replace(seen, true) {
            return None;
        }
        *slot = if s.null() { None } else { Some(s.string()?) };
    }
    Some(Some(identity))
}

/// The `dynamodb` object, as [`StreamSeed`] reads it.
fn scan_stream<'a, K: ImageSink<'a>>(
    s: &mut Scanner<'a>,
    wire: &mut WireRecord<'a, K::Item>,
    canon: &mut Canonicalizer,
    paths: &ColumnPaths,
    sink: &mut K,
) -> Option<()> {
    s.eat(b'{')?;
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match key.as_ref() {
            "Keys" => wire.keys = Some(sink.scan(Part::Keys, canon, s)?),
            "NewImage" => wire.new_image = Some(sink.scan(Part::New(paths), canon, s)?),
            "OldImage" => {
                // Typed columns come from the new image when there is one.
                let paths = if wire.new_image.is_some() {
                    no_columns()
                } else {
                    paths
                };
                wire.old_image = Some(sink.scan(Part::Old(paths), canon, s)?);
            }
            "ApproximateCreationDateTime" => {
                wire.approximate_creation = if s.null() {
                    None
                } else {
                    Some(exact_f64(s.number()?)?)
                };
            }
            "SequenceNumber" => wire.sequence_number = Some(s.string()?),
            "SizeBytes" => {
                wire.size_bytes = if s.null() {
                    None
                } else {
                    let n = s.number()?;
                    if !n.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    Some(n.parse().ok()?)
                };
            }
            "StreamViewType" => wire.stream_view_type = Some(s.string()?),
            _ => s.skip_value()?,
        }
    }
    Some(())
}

/// A number as f64 when every parser rounds it the same way: at most 15 significant digits and
/// no exponent, so the value is an exact integer scaled by an exact power of ten (one correctly
/// rounded division, which is what serde_json computes too). Anything else steps aside.
fn exact_f64(text: &str) -> Option<f64> {
    if text.contains(['e', 'E']) || text.bytes().filter(u8::is_ascii_digit).count() > 15 {
        return None;
    }
    text.parse().ok()
}

/// Why an event or a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The event as a whole is unreadable: nothing in it can be processed.
    #[error("event is not a DynamoDB stream event: {0}")]
    Event(String),
    /// One record is unreadable; its neighbours are unaffected.
    #[error("record {index}{}: {reason}", describe(.event_id, .sequence))]
    Record {
        /// Position of the record in the event's `Records` array.
        index: usize,
        /// The record's `eventID`, when it could be read.
        event_id: Option<String>,
        /// The record's sequence number, when it could be read.
        sequence: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

fn describe(event_id: &Option<String>, sequence: &Option<String>) -> String {
    match (event_id, sequence) {
        (Some(id), Some(seq)) => format!(" (eventID {id}, sequence {seq})"),
        (Some(id), None) => format!(" (eventID {id})"),
        (None, Some(seq)) => format!(" (sequence {seq})"),
        (None, None) => String::new(),
    }
}

/// The sequence number of a raw record, if it has a readable one. Used to report a record that
/// failed to parse back to Lambda (`batchItemFailures` names records by sequence number).
pub(crate) fn raw_sequence_number(raw: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        dynamodb: Inner<'a>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(rename = "SequenceNumber", borrow)]
        sequence_number: Cow<'a, str>,
    }
    let outer: Outer = serde_json::from_str(raw).ok()?;
    SequenceNumber::parse(&outer.dynamodb.sequence_number)
        .ok()
        .map(|s| s.0)
}

/// Extracts the table name from a stream ARN
/// (`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`).
pub(crate) fn table_from_stream_arn(arn: &str) -> Result<&str, String> {
    let resource = arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.splitn(5, ':').nth(4))
        .ok_or_else(|| format!("eventSourceARN {arn:?} is not an ARN"))?;
    // The stream label is a timestamp with colons, so only the first five colons split.
    let mut parts = resource.splitn(4, '/');
    let name = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("table"), Some(name), Some("stream"), Some(label)) if !label.is_empty() => name,
        _ => {
            return Err(format!(
                "eventSourceARN {arn:?} is not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)"
            ));
        }
    };
    validate_table_name(name).map_err(|e| format!("eventSourceARN {arn:?}: {e}"))?;
    Ok(name)
}

/// DynamoDB table names: 3 to 255 characters of `a-z A-Z 0-9 _ - .`. Checked because the name
/// becomes part of every object key.
pub fn validate_table_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !(3..=255).contains(&name.len()) || !ok_chars {
        return Err(format!(
            "{name:?} is not a valid DynamoDB table name (3-255 characters of a-z, A-Z, 0-9, '_', '-', '.')"
        ));
    }
    Ok(())
}

impl<'a> ChangeRecord<'a> {
    /// Parses and validates one raw record; `index` is its position in the batch, for messages.
    /// Images are canonicalised with `canon`'s buffers and the values at `paths` captured.
    pub fn parse(
        raw: &'a str,
        index: usize,
        canon: &mut Canonicalizer,
        paths: &ColumnPaths,
    ) -> Result<ChangeRecord<'a>, ChangeError> {
        let mut scanner = Scanner::new(raw, 0);
        if let Some(mut wire) = scan_record(&mut scanner, canon, paths, &mut OwnTexts)
            && scanner.at_end()
        {
            return Self::from_wire_at(raw, index, &mut wire);
        }
        Self::parse_serde(raw, index, canon, paths)
    }

    /// [`ChangeRecord::parse`] through serde_json only, without the byte scanner's fast path:
    /// the authority the fast path is tested against (and its fallback).
    #[doc(hidden)]
    pub fn parse_serde(
        raw: &'a str,
        index: usize,
        canon: &mut Canonicalizer,
        paths: &ColumnPaths,
    ) -> Result<ChangeRecord<'a>, ChangeError> {
        let fail = |wire: &WireRecord, reason: String| record_error(raw, index, wire, reason);
        let mut wire = WireRecord::default();
        let mut failed_image = None;
        let mut de = serde_json::Deserializer::from_str(raw);
        let seed = RecordSeed {
            wire: &mut wire,
            canon: &mut *canon,
            paths,
            failed_image: &mut failed_image,
        };
        let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
        if let Err(e) = parsed {
            let reason = match failed_image {
                Some(field) => format!("dynamodb.{field}: {}", canon.error(e)),
                None => e.to_string(),
            };
            return Err(fail(&wire, reason));
        }
        Self::from_wire(&mut wire).map_err(|reason| fail(&wire, reason))
    }

    /// The same record with its key and images appended to `texts` (for records read
    /// through serde, whose items each come in a `String`).
    pub fn into_spanned(self, texts: &mut TextColumns) -> ChangeRecord<'a, SpannedItem<'a>> {
        ChangeRecord {
            keys: TextColumns::adopt(&mut texts.keys, self.keys),
            new_image: self
                .new_image
                .map(|i| TextColumns::adopt(&mut texts.new_image, i)),
            old_image: self
                .old_image
                .map(|i| TextColumns::adopt(&mut texts.old_image, i)),
            event_id: self.event_id,
            kind: self.kind,
            sequence: self.sequence,
            approximate_creation_ms: self.approximate_creation_ms,
            view_type: self.view_type,
            ttl_delete: self.ttl_delete,
            size_bytes: self.size_bytes,
            event_source_arn: self.event_source_arn,
        }
    }
}

impl<'a, I: RecordImage> ChangeRecord<'a, I> {
    /// Checks the fields the fast path read, as the serde path checks its own.
    fn from_wire_at(
        raw: &'a str,
        index: usize,
        wire: &mut WireRecord<'a, I>,
    ) -> Result<ChangeRecord<'a, I>, ChangeError> {
        Self::from_wire(wire).map_err(|reason| record_error(raw, index, wire, reason))
    }

    fn from_wire(wire: &mut WireRecord<'a, I>) -> Result<ChangeRecord<'a, I>, String> {
        if let Some(source) = &wire.event_source
            && source != "aws:dynamodb"
        {
            return Err(format!(
                "eventSource is {source:?}; streamseal reads DynamoDB stream records (\"aws:dynamodb\")"
            ));
        }
        let event_id = wire.event_id.clone().ok_or("missing eventID")?;
        let kind = match wire.event_name.as_deref() {
            Some("INSERT") => ChangeKind::Insert,
            Some("MODIFY") => ChangeKind::Modify,
            Some("REMOVE") => ChangeKind::Remove,
            Some(other) => {
                return Err(format!(
                    "unknown eventName {other:?} (expected INSERT, MODIFY or REMOVE)"
                ));
            }
            None => return Err("missing eventName".into()),
        };
        if !wire.has_stream {
            return Err("missing the \"dynamodb\" object".into());
        }
        let sequence = SequenceNumber::parse(
            wire.sequence_number
                .as_deref()
                .ok_or("missing dynamodb.SequenceNumber")?,
        )?;
        let view_type = StreamViewType::parse(
            wire.stream_view_type
                .as_deref()
                .ok_or("missing dynamodb.StreamViewType")?,
        )
        .map_err(|e| format!("dynamodb.StreamViewType: {e}"))?;
        let approximate_creation_ms = wire
            .approximate_creation
            .map(epoch_seconds_to_ms)
            .transpose()?;
        let keys = wire.keys.take().ok_or("missing dynamodb.Keys")?;
        if keys.is_empty_item() {
            return Err("dynamodb.Keys is empty".into());
        }
        let new_image = wire.new_image.take();
        let old_image = wire.old_image.take();
        let needs_new = view_type.has_new() && kind != ChangeKind::Remove;
        let needs_old = view_type.has_old() && kind != ChangeKind::Insert;
        if needs_new && new_image.is_none() {
            return Err(format!(
                "{} record of a {} stream has no dynamodb.NewImage",
                kind.as_str(),
                view_type.as_str()
            ));
        }
        if needs_old && old_image.is_none() {
            return Err(format!(
                "{} record of a {} stream has no dynamodb.OldImage",
                kind.as_str(),
                view_type.as_str()
            ));
        }
        let ttl_delete = kind == ChangeKind::Remove
            && wire.user_identity.as_ref().is_some_and(|u| {
                u.kind.as_deref() == Some("Service")
                    && u.principal_id.as_deref() == Some("dynamodb.amazonaws.com")
            });
        Ok(ChangeRecord {
            event_id,
            kind,
            sequence,
            approximate_creation_ms,
            view_type,
            ttl_delete,
            keys,
            new_image,
            old_image,
            size_bytes: wire.size_bytes,
            event_source_arn: wire.event_source_arn.clone(),
        })
    }
}

/// The error for record `index`, naming it by what could be read of it.
fn record_error<I>(
    raw: &str,
    index: usize,
    wire: &WireRecord<'_, I>,
    reason: String,
) -> ChangeError {
    ChangeError::Record {
        index,
        event_id: wire.event_id.as_deref().map(str::to_owned),
        sequence: wire
            .sequence_number
            .as_deref()
            .map(str::to_owned)
            .or_else(|| raw_sequence_number(raw)),
        reason,
    }
}

/// Converts `ApproximateCreationDateTime` (epoch seconds, possibly fractional) to milliseconds.
/// The value is a time, not a DynamoDB number, so a float is exact to well below a millisecond.
fn epoch_seconds_to_ms(secs: f64) -> Result<i64, String> {
    // Year 9999 bounds what a timestamp column and a `dt=` partition can hold.
    const MAX_SECS: f64 = 253_402_300_799.0;
    if !secs.is_finite() || !(0.0..=MAX_SECS).contains(&secs) {
        return Err(format!(
            "dynamodb.ApproximateCreationDateTime {secs} is not a time between 1970 and 9999 in epoch seconds"
        ));
    }
    Ok((secs * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_numerically() {
        assert_eq!(SequenceNumber::cmp_text("9", "10"), Ordering::Less);
        assert_eq!(SequenceNumber::cmp_text("0010", "10"), Ordering::Equal);
        assert_eq!(SequenceNumber::cmp_text("0", "1"), Ordering::Less);
        assert_eq!(
            SequenceNumber::cmp_text("999999999999999999999", "1000000000000000000000"),
            Ordering::Less
        );
    }

    #[test]
    fn the_scanner_and_serde_split_events_alike() {
        let cases = [
            r#"{"Records":[]}"#,
            r#" { "Records" : [ {"a":1} , {"b":"x}]\\\"{"} ] } "#,
            "{\"Records\":[{\"s\":\"\\\\\"},{\"l\":[[],{}],\"u\":\"é\\u0022\"}]}\n",
        ];
        for text in cases {
            let fast = split_records(text).unwrap_or_else(|| panic!("scanner refused {text}"));
            let event: WireEvent = serde_json::from_str(text).unwrap();
            let slow: Vec<&str> = event.records.iter().map(|r| r.get()).collect();
            assert_eq!(fast, slow, "{text}");
        }
        // Other shapes fall back to serde (which explains what is wrong).
        for text in [
            r#"{"records":[]}"#,
            r#"{"Records":[1]}"#,
            r#"{"Records":[{}],"x":1}"#,
            r#"{"Records":[{"a":"}"#,
            r#"{"Records":[{"a":"\"#,
            r#"{"Records":[{"a":"\\"#,
            r#"{"Records":[{"a":1}}]}"#,
            "",
            "[]",
        ] {
            assert!(split_records(text).is_none(), "{text}");
        }
        assert!(
            parse_event(r#"{"records":[]}"#)
                .unwrap_err()
                .to_string()
                .contains("Records")
        );
    }

    #[test]
    fn sequence_numbers_order_numerically() {
        let a = SequenceNumber::parse("999999999999999999999").unwrap(); // 21 digits
        let b = SequenceNumber::parse("1000000000000000000000").unwrap(); // 22 digits
        assert!(a < b, "string order would say otherwise");
        assert_eq!(b.padded().len(), 40);
        assert!(a.padded() < b.padded());
        let max = SequenceNumber::parse(&"9".repeat(40)).unwrap();
        assert!(b < max);
        assert!(SequenceNumber::parse(&"9".repeat(41)).is_err());
        assert!(SequenceNumber::parse("12a").is_err());
        assert!(SequenceNumber::parse("").is_err());
        assert_eq!(
            SequenceNumber::parse("007")
                .unwrap()
                .cmp(&SequenceNumber::parse("7").unwrap()),
            Ordering::Equal
        );
    }

    #[test]
    fn table_names_come_from_stream_arns() {
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders.v2/stream/2015-06-27T00:48:05.899";
        assert_eq!(table_from_stream_arn(arn), Ok("Orders.v2"));
        assert!(table_from_stream_arn("arn:aws:s3:::bucket").is_err());
        assert!(table_from_stream_arn("not an arn").is_err());
        assert!(table_from_stream_arn("arn:aws:dynamodb:r:a:table/a/b/stream/x").is_err());
        assert!(
            table_from_stream_arn("arn:aws:dynamodb:r:a:table/../stream/x").is_err(),
            "a name that could escape the key prefix is refused"
        );
    }

    #[test]
    fn creation_time_accepts_fractional_seconds() {
        assert_eq!(epoch_seconds_to_ms(1_479_499_740.0), Ok(1_479_499_740_000));
        assert_eq!(
            epoch_seconds_to_ms(1_700_000_000.123),
            Ok(1_700_000_000_123)
        );
        assert!(epoch_seconds_to_ms(-1.0).is_err());
        assert!(epoch_seconds_to_ms(f64::NAN).is_err());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    #[test]
    fn workload_records_take_the_fast_path() {
        let mut w = crate::demo::workload::Workload::new(
            11,
            "orders",
            StreamViewType::NewAndOldImages,
            1024,
        );
        w.next_event(100);
        let event = w.next_event(100);
        let raws = parse_event(&event).unwrap();
        let mut canon = Canonicalizer::new();
        for raw in raws {
            let mut s = Scanner::new(raw, 0);
            let got = scan_record(&mut s, &mut canon, &ColumnPaths::default(), &mut OwnTexts);
            assert!(
                got.is_some() && s.at_end(),
                "fast path stepped aside on {raw}"
            );
        }
    }
}

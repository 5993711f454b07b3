//! Lossless DynamoDB attribute values: validation, canonical form, item hash, state digest.
//!
//! Items travel through streamseal as *DynamoDB JSON* (`{"id":{"S":"a"},"n":{"N":"1.5"}}`).
//! This module reads that JSON in a single pass, without building a tree, and writes its
//! *canonical form*:
//!
//! - map entries sorted by their JSON-escaped name, set elements sorted by their canonical text;
//! - numbers normalised the way DynamoDB stores them (`"1.50"`, `"15e-1"` → `"1.5"`; no
//!   exponent, no leading or trailing zeros), never through floating point;
//! - binary values re-encoded as standard padded base64;
//! - strings re-escaped one fixed way (only `"`, `\` and control characters escaped).
//!
//! Two items are equal in DynamoDB if and only if their canonical forms are equal byte for
//! byte. Every value survives: S (empty, any Unicode, NUL), N (38 digits, exponents -130..+125),
//! B (empty too), BOOL, NULL, SS/NS/BS, L, M nested to DynamoDB's 32 levels. While reading, the
//! value is checked against DynamoDB's rules (valid numbers and base64, non-empty sets without
//! duplicates, no duplicate names, nesting limit), and values at the schema's typed-column paths
//! are captured ([`Captured`]).
//!
//! The [`ItemHash`] of an item is the SHA-256 of its canonical form. A [`StateDigest`] is an
//! order-independent sum of item hashes modulo 2^256: the digest of a table is the sum over its
//! items, and a change moves it by `H(new) - H(old)`.
//!
//! Why no tree: parsing images into owned maps and serialising them again costs more than
//! Parquet encoding and compression together. Here each entry is written once into an output
//! buffer; a map's entries are then put in order with one copy per nesting level.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

use crate::model::scan::Scanner;

mod digest;
mod fast;
mod scalars;
mod serde_path;

pub use digest::*;
pub use scalars::*;
pub(crate) use serde_path::Str;
use serde_path::*;

/// DynamoDB's documented limit on nested attribute depth (lists and maps inside each other).
pub(crate) const MAX_NESTING_DEPTH: usize = 32;
/// DynamoDB numbers carry at most 38 significant digits.
pub(crate) const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// Smallest and largest decimal exponent of a number's leading digit that DynamoDB accepts:
/// magnitudes from 1E-130 up to 9.99…E+125.
const MIN_EXPONENT: i64 = -130;
const MAX_EXPONENT: i64 = 125;

/// Why a piece of DynamoDB JSON is not a valid DynamoDB item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The text is not DynamoDB JSON, or a value breaks one of DynamoDB's rules. `path` names
    /// the attribute (`address.lines[2]`), empty when the problem is the item itself.
    #[error("{}{message}", if .path.is_empty() { String::new() } else { format!("attribute {}: ", .path) })]
    Invalid {
        /// Dotted path of the attribute.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A scalar captured at a typed-column path while canonicalising (see [`ColumnPaths`]).
///
/// The fast path borrows values from the event text (a typed column's value then costs no
/// allocation of its own); the serde path owns them (`Captured<'static>`).
#[derive(Debug, Clone, PartialEq)]
pub enum Captured<'a> {
    /// An S value.
    S(Cow<'a, str>),
    /// An N value, normalised.
    N(Cow<'a, str>),
    /// A BOOL value.
    Bool(bool),
    /// Any other type (B, NULL, sets, L, M): present, but no typed column can hold it.
    Other,
}

impl Captured<'_> {
    /// The same value, owning its text.
    pub(crate) fn into_owned(self) -> Captured<'static> {
        match self {
            Captured::S(s) => Captured::S(Cow::Owned(s.into_owned())),
            Captured::N(n) => Captured::N(Cow::Owned(n.into_owned())),
            Captured::Bool(b) => Captured::Bool(b),
            Captured::Other => Captured::Other,
        }
    }
}

/// The attribute paths whose values should be captured, as a trie over path segments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnPaths {
    children: Vec<(String, ColumnPaths)>,
    /// Columns whose path ends here.
    columns: Vec<usize>,
    /// Number of columns in the whole trie (root only).
    count: usize,
}

impl ColumnPaths {
    /// A trie of `paths`; column `i` is `paths[i]`.
    pub fn new<'p>(paths: impl IntoIterator<Item = &'p [String]>) -> ColumnPaths {
        let mut root = ColumnPaths::default();
        for (i, path) in paths.into_iter().enumerate() {
            let mut node = &mut root;
            for segment in path {
                let at = match node.children.iter().position(|(s, _)| s == segment) {
                    Some(at) => at,
                    None => {
                        node.children
                            .push((segment.clone(), ColumnPaths::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.columns.push(i);
            root.count = i + 1;
        }
        root
    }

    /// Number of columns.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is captured.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn child(&self, name: &[u8]) -> Option<&ColumnPaths> {
        // Called for every attribute name of the maps on a column path: the length and first
        // byte settle most comparisons without a call to compare memory.
        self.children
            .iter()
            .find(|(s, _)| {
                let s = s.as_bytes();
                s.len() == name.len() && s.first() == name.first() && s == name
            })
            .map(|(_, c)| c)
    }
}

/// Reusable buffers for canonicalising items. One per thread; it grows to the largest item seen.
#[derive(Debug, Default)]
pub struct Canonicalizer {
    out: Vec<u8>,
    scratch: Vec<u8>,
    entries: Vec<Entry>,
    binary: Vec<u8>,
    error_path: Vec<String>,
}

/// One map entry or set element written into `out`: `[start, key_end)` is its sort key,
/// `[start, end)` the whole entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first eight bytes of the sort key, big-endian and zero-padded: most comparisons end
    /// here, without touching the buffer. (Canonical text never holds a raw NUL, so padding
    /// orders a shorter key first, as the byte comparison would.)
    prefix: u64,
    start: usize,
    key_end: usize,
    end: usize,
}

impl Entry {
    /// An entry; [`sort_entries`] fills in its prefix once the map is complete. Read right
    /// after the key is written, the 8-byte load would wait on the several stores that wrote
    /// it (a third of the time of reading a map, measured).
    fn new(start: usize, key_end: usize, end: usize) -> Entry {
        Entry {
            prefix: 0,
            start,
            key_end,
            end,
        }
    }

    /// The first eight bytes of the key at `out[start..key_end]`, big-endian, zero-padded: one
    /// 8-byte load masked to the key's length where `out` has eight bytes from `start`.
    fn prefix_of(out: &[u8], start: usize, key_end: usize) -> u64 {
        let n = key_end.saturating_sub(start).min(8);
        match out.get(start..start + 8) {
            Some(word) => {
                let word = u64::from_be_bytes(word.try_into().unwrap_or([0; 8]));
                if n == 8 {
                    word
                } else {
                    word & !(u64::MAX >> (8 * n))
                }
            }
            None => {
                let mut head = [0u8; 8];
                for (h, &b) in head.iter_mut().zip(out.get(start..key_end).unwrap_or(&[])) {
                    *h = b;
                }
                u64::from_be_bytes(head)
            }
        }
    }

    fn key<'o>(&self, out: &'o [u8]) -> &'o [u8] {
        &out[self.start..self.key_end]
    }

    /// Orders two entries by their sort keys: the prefixes settle almost every comparison, so
    /// the keys' bytes are only looked at when the prefixes are equal.
    #[inline]
    fn cmp(&self, other: &Entry, out: &[u8]) -> std::cmp::Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key(out).cmp(other.key(out)))
    }
}

/// Starts an entry of a map or set whose first entry is `entries[base]`: the separating comma
/// is written in place, so a map that arrives sorted needs no rewriting.
fn begin_entry(out: &mut Vec<u8>, entries: &[Entry], base: usize) -> usize {
    if entries.len() > base {
        out.push(b',');
    }
    out.len()
}

/// Writes a string the scanner returned: a borrowed one has no quote, backslash or control
/// character (the scanner guarantees it), so its canonical form is itself between quotes.
#[allow(clippy::ptr_arg)] // the variant is the point: Borrowed means already plain
fn write_scanned_string(s: &std::borrow::Cow<'_, str>, out: &mut Vec<u8>) {
    match s {
        std::borrow::Cow::Borrowed(plain) => {
            out.push(b'"');
            out.extend_from_slice(plain.as_bytes());
            out.push(b'"');
        }
        std::borrow::Cow::Owned(decoded) => write_json_string(decoded, out),
    }
}

/// An item in canonical form, with its hash and captured typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalItem {
    /// Canonical DynamoDB JSON.
    pub text: String,
    /// SHA-256 of `text`, when the seed was asked to hash (images yes, keys no: the state
    /// digest needs image hashes only, and keys are read for every record).
    pub hash: Option<ItemHash>,
    /// Values at the requested column paths, by column index.
    pub captured: Vec<Option<Captured<'static>>>,
}

/// An item whose canonical text was appended to a column buffer (see [`TextColumns`]) rather
/// than kept in a `String` of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpannedItem<'a> {
    /// Where the canonical text is in its buffer.
    pub span: std::ops::Range<usize>,
    /// As [`CanonicalItem::hash`].
    pub hash: Option<ItemHash>,
    /// As [`CanonicalItem::captured`], or borrowed from the event text.
    pub captured: Vec<Option<Captured<'a>>>,
}

/// The canonical key and image texts of a run of records, back to back, one buffer per
/// segment column. The capture path writes them here as it
/// reads, so the Parquet columns are built from these buffers without copying each item (see
/// `segment::build_column`).
#[derive(Debug, Default)]
pub struct TextColumns {
    /// `keys` texts.
    pub keys: Vec<u8>,
    /// `new_image` texts.
    pub new_image: Vec<u8>,
    /// `old_image` texts.
    pub old_image: Vec<u8>,
}

impl TextColumns {
    /// Empties the buffers and sizes them for the records in `event_bytes` of event text, so
    /// that they rarely grow by copying (untouched capacity costs address space, not memory).
    pub fn reset_for(&mut self, event_bytes: usize) {
        for (buffer, share) in [
            (&mut self.keys, event_bytes / 16),
            (&mut self.new_image, event_bytes / 2),
            (&mut self.old_image, event_bytes / 2),
        ] {
            buffer.clear();
            buffer.reserve(share);
        }
    }

    /// Bytes allocated for the buffers.
    pub(crate) fn capacity(&self) -> usize {
        self.keys.capacity() + self.new_image.capacity() + self.old_image.capacity()
    }

    /// Appends an item canonicalised on its own (the serde path) to `buffer`.
    pub(crate) fn adopt(buffer: &mut Vec<u8>, item: CanonicalItem) -> SpannedItem<'static> {
        let start = buffer.len();
        buffer.extend_from_slice(item.text.as_bytes());
        SpannedItem {
            span: start..buffer.len(),
            hash: item.hash,
            captured: item.captured,
        }
    }

    /// The buffers' lengths, to [`TextColumns::rollback`] to.
    pub(crate) fn mark(&self) -> [usize; 3] {
        [self.keys.len(), self.new_image.len(), self.old_image.len()]
    }

    /// Drops what was appended since `mark` (a record that turned out unusable).
    pub(crate) fn rollback(&mut self, mark: [usize; 3]) {
        self.keys.truncate(mark[0]);
        self.new_image.truncate(mark[1]);
        self.old_image.truncate(mark[2]);
    }
}

impl Canonicalizer {
    /// Fresh buffers.
    pub fn new() -> Canonicalizer {
        Canonicalizer::default()
    }

    /// Canonicalises an item from DynamoDB JSON text.
    pub fn item(&mut self, text: &str, paths: &ColumnPaths) -> Result<CanonicalItem, ItemError> {
        let mut scanner = Scanner::new(text, 0);
        if let Some(item) = self.scan_item(&mut scanner, paths, true)
            && scanner.at_end()
        {
            return Ok(item);
        }
        self.item_serde(text, paths)
    }

    /// [`Canonicalizer::item`] through serde_json only (the authority the byte scanner's fast
    /// path is tested against, and its fallback).
    #[doc(hidden)]
    pub fn item_serde(
        &mut self,
        text: &str,
        paths: &ColumnPaths,
    ) -> Result<CanonicalItem, ItemError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let item = self
            .item_seed(paths)
            .deserialize(&mut de)
            .map_err(|e| self.error(e))?;
        de.end().map_err(|e| self.error(e))?;
        Ok(item)
    }

    /// A seed that canonicalises the item a deserializer yields next (used inside larger
    /// documents, such as a stream record, so the item is read in the same pass).
    pub(crate) fn item_seed<'c>(&'c mut self, paths: &'c ColumnPaths) -> ItemSeed<'c> {
        ItemSeed {
            c: self,
            paths,
            hash: true,
        }
    }

    /// Like [`Canonicalizer::item_seed`], without computing the hash (for keys).
    pub(crate) fn key_seed<'c>(&'c mut self, paths: &'c ColumnPaths) -> ItemSeed<'c> {
        ItemSeed {
            c: self,
            paths,
            hash: false,
        }
    }

    /// Turns a deserialisation error into an [`ItemError`] carrying the attribute path.
    pub(crate) fn error(&mut self, e: serde_json::Error) -> ItemError {
        let mut path = String::new();
        for segment in self.error_path.drain(..).rev() {
            if !path.is_empty() && !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(&segment);
        }
        ItemError::Invalid {
            path,
            message: e.to_string(),
        }
    }
}

/// See [`Canonicalizer::item_seed`].
pub(crate) struct ItemSeed<'c> {
    c: &'c mut Canonicalizer,
    paths: &'c ColumnPaths,
    hash: bool,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = CanonicalItem;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CanonicalItem, D::Error> {
        let c = self.c;
        c.out.clear();
        c.entries.clear();
        c.error_path.clear();
        let mut captured = vec![None; self.paths.len()];
        d.deserialize_map(MapSeed {
            c: &mut *c,
            node: Some(self.paths),
            captured: &mut captured,
            depth: 0,
        })?;
        let text = String::from_utf8(c.out.clone())
            .map_err(|_| de::Error::custom("canonical form is not UTF-8 (a bug)"))?;
        let hash = self
            .hash
            .then(|| ItemHash(Sha256::digest(text.as_bytes()).into()));
        Ok(CanonicalItem {
            text,
            hash,
            captured,
        })
    }
}

/// Parses, validates and canonicalises DynamoDB JSON in one call.
pub fn canonicalize(text: &str) -> Result<String, ItemError> {
    Ok(Canonicalizer::new()
        .item(text, &ColumnPaths::default())?
        .text)
}

/// The [`ItemHash`] of an item given as DynamoDB JSON.
pub fn item_hash(text: &str) -> Result<ItemHash, ItemError> {
    let canonical = canonicalize(text)?;
    Ok(ItemHash(Sha256::digest(canonical.as_bytes()).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalise_like_dynamodb() {
        let tiny = format!("0.{}1", "0".repeat(129));
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("1.50", "1.5"),
            ("15e-1", "1.5"),
            ("+7", "7"),
            ("007", "7"),
            ("1E+3", "1000"),
            ("-1.2300E2", "-123"),
            (".5", "0.5"),
            ("5.", "5"),
            ("0.05", "0.05"),
            ("1e-130", tiny.as_str()),
            (
                "12345678901234567890123456789012345678",
                "12345678901234567890123456789012345678",
            ),
            (
                "-0.00000000000000000000000000000000000012345678901234567890123456789012345678",
                "-0.00000000000000000000000000000000000012345678901234567890123456789012345678",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_number(input).as_deref(), Ok(want), "{input}");
            assert!(is_normalized(want.as_bytes()), "{want} is normalised");
        }
        assert_eq!(
            normalize_number("9.9999999999999999999999999999999999999E+125").map(|s| s.len()),
            Ok(126)
        );
    }

    #[test]
    fn numbers_outside_dynamodb_rules_are_rejected() {
        for bad in [
            "",
            "-",
            "abc",
            "1.2.3",
            "1e",
            "1e+-2",
            "0x10",
            "1 ",
            " 1",
            "NaN",
            "Infinity",
            "1e126",
            "1e-131",
            "123456789012345678901234567890123456789",
            "-",
            ".",
            "1.2.",
        ] {
            assert!(normalize_number(bad).is_err(), "{bad:?} should be rejected");
        }
        // The fast path must not accept what the slow path rejects.
        let huge = format!("1{}", "0".repeat(126));
        assert!(!is_normalized(huge.as_bytes()));
        assert!(normalize_number(&huge).is_err());
        let tiny = format!("0.{}1", "0".repeat(130));
        assert!(normalize_number(&tiny).is_err());
        assert!(
            !is_normalized(b"-0")
                && !is_normalized(b"01")
                && !is_normalized(b"1.0")
                && !is_normalized(b"1.")
        );
    }

    #[test]
    fn an_entry_prefix_is_its_key_zero_padded_wherever_the_key_ends() {
        // The prefix is read as one word masked to the key's length; check it against the
        // definition for every key length, with value bytes after the key and without.
        for len in 0..12 {
            let key: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
            let mut head = [0u8; 8];
            for (h, k) in head.iter_mut().zip(&key) {
                *h = *k;
            }
            let expected = u64::from_be_bytes(head);
            for tail in [&b""[..], b":", b":{\"S\":\"zzzzzzzz\"}"] {
                let mut out = b"{,".to_vec();
                let start = out.len();
                out.extend_from_slice(&key);
                let key_end = out.len();
                out.extend_from_slice(tail);
                let prefix = Entry::prefix_of(&out, start, key_end);
                assert_eq!(prefix, expected, "key length {len}, tail {tail:?}");
            }
        }
    }

    /// The first `is_normalized`, part by part: the reference the one-pass version is
    /// checked against.
    fn is_normalized_by_parts(text: &[u8]) -> bool {
        let body = text.strip_prefix(b"-").unwrap_or(text);
        let (int, frac) = match body.iter().position(|&b| b == b'.') {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let sig_int = if int == b"0" {
            0
        } else if int[0] == b'0' {
            return false;
        } else {
            int.len()
        };
        let (sig, leading_exp) = match frac {
            None => {
                if sig_int == 0 {
                    return text == b"0";
                }
                (sig_int, sig_int as i64 - 1)
            }
            Some(f) => {
                if f.is_empty() || !f.iter().all(u8::is_ascii_digit) || f[f.len() - 1] == b'0' {
                    return false;
                }
                if sig_int > 0 {
                    (sig_int + f.len(), sig_int as i64 - 1)
                } else {
                    let zeros = f.iter().take_while(|&&b| b == b'0').count();
                    (f.len() - zeros, -(zeros as i64) - 1)
                }
            }
        };
        sig <= MAX_SIGNIFICANT_DIGITS && (MIN_EXPONENT..=MAX_EXPONENT).contains(&leading_exp)
    }

    #[test]
    fn is_normalized_agrees_with_the_part_by_part_definition() {
        for text in [
            "0", "-0", "00", "01", "1", "-1", "0.5", "-0.5", ".5", "5.", "1.0", "1.50", "1.05",
            "0.0", "0.00", "-", "", ".", "1e5", "1E+5", "+1", "1..2", "1.2.3", "10", "100.001",
        ] {
            assert_eq!(
                is_normalized(text.as_bytes()),
                is_normalized_by_parts(text.as_bytes()),
                "{text:?}"
            );
        }
        // The limits: 38 significant digits, exponents 125 and -130.
        let nines = |n: usize| "9".repeat(n);
        for n in [37, 38, 39, 125, 126, 127] {
            for text in [
                nines(n),
                format!("-{}", nines(n)),
                format!("9.{}", nines(n)),
                format!("{}.9", nines(n)),
                format!("0.{}9", "0".repeat(n)),
                format!("0.{}1{}", "0".repeat(n), nines(3)),
                format!("-0.{}", nines(n)),
            ] {
                assert_eq!(
                    is_normalized(text.as_bytes()),
                    is_normalized_by_parts(text.as_bytes()),
                    "{text:?}"
                );
            }
        }
        let text = "-?[0-9]{0,40}(\\.[0-9]{0,40})?|-?0\\.0{0,135}[0-9]{0,5}|[-+0-9.eE ]{0,12}";
        proptest::proptest!(proptest::test_runner::Config::with_cases(8192), |(t in text)| {
            proptest::prop_assert_eq!(
                is_normalized(t.as_bytes()),
                is_normalized_by_parts(t.as_bytes()),
                "{:?}", t
            );
        });
    }

    #[test]
    fn base64_the_decoder_accepts_is_already_canonical() {
        use base64::Engine;
        // Text near valid base64: the alphabet, padding, and a few characters it rejects.
        let text = "[A-Za-z0-9+/]{0,12}(=|==|===)?[ A\\-_.=]?[A-Za-z0-9+/=]{0,3}";
        let accepted = std::cell::Cell::new(0);
        proptest::proptest!(proptest::test_runner::Config::with_cases(4096), |(t in text)| {
            let (mut buf, mut out) = (Vec::new(), Vec::new());
            if write_binary(&t, &mut buf, &mut out).is_ok() {
                accepted.set(accepted.get() + 1);
                let decoded = BASE64.decode(&t).map_err(|e| {
                    proptest::test_runner::TestCaseError::fail(e.to_string())
                })?;
                proptest::prop_assert_eq!(out, BASE64.encode(decoded).into_bytes());
            }
        });
        let accepted = accepted.get();
        assert!(
            accepted > 100,
            "only {accepted} of the generated texts were valid base64"
        );
        // The last: stray bits in its last character, which a lax decoder accepts (the
        // generator above found it against one).
        let bad = [
            "QQ",
            "QR==",
            "QQ=",
            "Q===",
            "QQ==QQ==",
            " QQ==",
            "QUI=\n",
            "aAaaAaa00+==",
        ];
        for bad in bad {
            assert!(
                write_binary(bad, &mut Vec::new(), &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn canonical_form_sorts_and_normalises() {
        let a = r#"{"b":{"N":"1.50"},"a":{"SS":["y","x"]},"c":{"M":{"z":{"NULL":true},"k":{"BS":["AQ==","AA=="]}}}}"#;
        let b = r#"{"a":{"SS":["x","y"]},"c":{"M":{"k":{"BS":["AA==","AQ=="]},"z":{"NULL":true}}},"b":{"N":"15E-1"}}"#;
        let ca = canonicalize(a).unwrap();
        assert_eq!(ca, canonicalize(b).unwrap());
        assert_eq!(
            ca,
            r#"{"a":{"SS":["x","y"]},"b":{"N":"1.5"},"c":{"M":{"k":{"BS":["AA==","AQ=="]},"z":{"NULL":true}}}}"#
        );
        assert_eq!(item_hash(a).unwrap(), item_hash(b).unwrap());
        assert_eq!(canonicalize(&ca).unwrap(), ca, "idempotent");
        assert_eq!(
            canonicalize(r#"{"l":{"L":[]},"m":{"M":{}},"e":{"S":""}}"#).unwrap(),
            r#"{"e":{"S":""},"l":{"L":[]},"m":{"M":{}}}"#
        );
        assert_eq!(
            canonicalize(r#"{"l":{"L":[{"N":"1"},{"L":[{"S":"x"}]}]}}"#).unwrap(),
            r#"{"l":{"L":[{"N":"1"},{"L":[{"S":"x"}]}]}}"#
        );
        assert_eq!(
            canonicalize(r#"{"s":{"S":"\u00e9\/"}}"#).unwrap(),
            "{\"s\":{\"S\":\"é/\"}}"
        );
    }

    #[test]
    fn hash_is_sha256_of_canonical_text() {
        let text = canonicalize(r#"{"s":{"S":"é\u0000\"q"},"n":{"N":"2"}}"#).unwrap();
        assert_eq!(
            text,
            "{\"n\":{\"N\":\"2\"},\"s\":{\"S\":\"é\\u0000\\\"q\"}}"
        );
        let want: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(item_hash(&text).unwrap().0, want);
    }

    #[test]
    fn a_reused_canonicalizer_reads_every_arrival_order_as_a_fresh_one() {
        // One canonicalizer reads maps of one shape in many arrival orders, nested maps, and a
        // duplicate name in a shape it has read before. Every result must equal a fresh
        // canonicalizer's: the buffers it keeps carry nothing from one item to the next.
        let names = ["e", "b", "d", "a", "c"];
        let mut orders: Vec<Vec<&str>> = Vec::new();
        for middle in [
            [1, 2, 3],
            [3, 2, 1],
            [2, 1, 3],
            [1, 3, 2],
            [3, 1, 2],
            [2, 3, 1],
        ] {
            orders.push(
                std::iter::once(names[0])
                    .chain(middle.iter().map(|&i| names[i]))
                    .chain(std::iter::once(names[4]))
                    .collect(),
            );
        }
        let map = |order: &[&str], value: &str| {
            let body: Vec<String> = order.iter().map(|n| format!(r#""{n}":{value}"#)).collect();
            format!("{{{}}}", body.join(","))
        };
        let paths = ColumnPaths::default();
        let mut shared = Canonicalizer::new();
        let mut checked = 0;
        for _ in 0..3 {
            for order in &orders {
                for inner in &orders {
                    let nested = format!(r#"{{"M":{}}}"#, map(inner, r#"{"N":"1.50"}"#));
                    let text = map(order, &nested);
                    let ours = shared.item(&text, &paths).map(|i| i.text);
                    let fresh = Canonicalizer::new().item(&text, &paths).map(|i| i.text);
                    assert_eq!(ours, fresh, "{text}");
                    assert!(ours.is_ok());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 108);
        // The same shape, but a name twice.
        let twice = map(&["e", "b", "b", "a", "c"], r#"{"S":"x"}"#);
        let err = shared.item(&twice, &paths).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        // And the shape after it still reads.
        let text = map(&orders[1], r#"{"BOOL":true}"#);
        assert_eq!(
            shared.item(&text, &paths).map(|i| i.text),
            Canonicalizer::new().item(&text, &paths).map(|i| i.text)
        );
    }

    #[test]
    fn invalid_items_are_rejected_with_the_attribute_path() {
        let cases = [
            (r#"{"a":{"X":"1"}}"#, "attribute a: unknown DynamoDB type"),
            (r#"{"a":{"S":"1","N":"1"}}"#, "exactly one type key"),
            (r#"{"a":{}}"#, "empty object"),
            (r#"{"a":{"NULL":false}}"#, "NULL must be true"),
            (
                r#"{"a":{"M":{"b":{"L":[{"S":"ok"},{"N":"x"}]}}}}"#,
                "attribute a.b[1]: \"x\" is not a decimal number",
            ),
            (r#"{"a":{"SS":[]}}"#, "attribute a: a set must not be empty"),
            (r#"{"a":{"NS":["1","1.0"]}}"#, "same value twice"),
            (r#"{"a":{"B":"***"}}"#, "base64"),
            (
                r#"{"a":{"S":"x"},"a":{"S":"y"}}"#,
                "attribute a: attribute name appears twice",
            ),
            (r#"{"a":{"S":5}}"#, "attribute a: invalid type"),
            (r#"[1]"#, "invalid type"),
            (r#"{"a":{"S":"x"}} trailing"#, "trailing characters"),
        ];
        for (text, want) in cases {
            let err = Canonicalizer::new()
                .item(text, &ColumnPaths::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn nesting_limit_is_dynamodb_s() {
        let nest = |levels: usize| {
            let mut s = String::from(r#"{"S":"leaf"}"#);
            for _ in 0..levels {
                s = format!(r#"{{"M":{{"k":{s}}}}}"#);
            }
            format!(r#"{{"top":{s}}}"#)
        };
        assert!(canonicalize(&nest(MAX_NESTING_DEPTH)).is_ok());
        assert!(
            canonicalize(&nest(MAX_NESTING_DEPTH + 1))
                .unwrap_err()
                .to_string()
                .contains("32 levels")
        );
    }

    #[test]
    fn captures_values_at_column_paths() {
        let paths = [
            vec!["a".to_owned()],
            vec!["m".to_owned(), "city".to_owned()],
            vec!["n".to_owned()],
            vec!["l".to_owned()],
        ];
        let trie = ColumnPaths::new(paths.iter().map(Vec::as_slice));
        let item = Canonicalizer::new()
            .item(r#"{"n":{"N":"1.50"},"m":{"M":{"city":{"S":"Zürich"}}},"a":{"BOOL":true},"l":{"L":[]}}"#, &trie)
            .unwrap();
        assert_eq!(
            item.captured,
            vec![
                Some(Captured::Bool(true)),
                Some(Captured::S("Zürich".into())),
                Some(Captured::N("1.5".into())),
                Some(Captured::Other)
            ]
        );
    }

    #[test]
    fn digest_adds_and_subtracts_modulo_2_256() {
        let h1 = ItemHash([0xff; 32]);
        let h2 = ItemHash([0x01; 32]);
        let mut d = StateDigest::ZERO;
        d.add_item(&h1);
        d.add_item(&h2);
        d.remove_item(&h1);
        assert_eq!(d, StateDigest::from_hash(&h2));
        d.remove_item(&h2);
        assert_eq!(d, StateDigest::ZERO);
        let mut e = StateDigest::ZERO;
        e.remove_item(&h2);
        assert_eq!(StateDigest::from_hex(&e.to_hex()), Ok(e));
    }
}

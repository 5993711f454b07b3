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

use crate::scan::Scanner;

/// DynamoDB's documented limit on nested attribute depth (lists and maps inside each other).
pub const MAX_NESTING_DEPTH: usize = 32;
/// DynamoDB numbers carry at most 38 significant digits.
pub const MAX_SIGNIFICANT_DIGITS: usize = 38;
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
    pub fn into_owned(self) -> Captured<'static> {
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
    pub fn len(&self) -> usize {
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
/// segment column, and the records' name-tag lines. The capture path writes them here as it
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
    pub fn capacity(&self) -> usize {
        self.keys.capacity() + self.new_image.capacity() + self.old_image.capacity()
    }

    /// Appends an item canonicalised on its own (the serde path) to `buffer`.
    pub fn adopt(buffer: &mut Vec<u8>, item: CanonicalItem) -> SpannedItem<'static> {
        let start = buffer.len();
        buffer.extend_from_slice(item.text.as_bytes());
        SpannedItem {
            span: start..buffer.len(),
            hash: item.hash,
            captured: item.captured,
        }
    }

    /// The buffers' lengths, to [`TextColumns::rollback`] to.
    pub fn mark(&self) -> [usize; 3] {
        [self.keys.len(), self.new_image.len(), self.old_image.len()]
    }

    /// Drops what was appended since `mark` (a record that turned out unusable).
    pub fn rollback(&mut self, mark: [usize; 3]) {
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
    pub fn item_seed<'c>(&'c mut self, paths: &'c ColumnPaths) -> ItemSeed<'c> {
        ItemSeed {
            c: self,
            paths,
            hash: true,
        }
    }

    /// Like [`Canonicalizer::item_seed`], without computing the hash (for keys).
    pub fn key_seed<'c>(&'c mut self, paths: &'c ColumnPaths) -> ItemSeed<'c> {
        ItemSeed {
            c: self,
            paths,
            hash: false,
        }
    }

    /// Turns a deserialisation error into an [`ItemError`] carrying the attribute path.
    pub fn error(&mut self, e: serde_json::Error) -> ItemError {
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
pub struct ItemSeed<'c> {
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

// ---------------------------------------------------------------------------------------------
// The fast path: the same canonical writing, driven by the byte scanner instead of serde.
// Every branch mirrors a serde visitor below; where the visitor would fail, this returns
// `None` and the caller re-reads the record through serde, which names the problem.

impl Canonicalizer {
    /// Canonicalises the item the scanner is at, or `None` to let the serde path decide.
    pub(crate) fn scan_item(
        &mut self,
        s: &mut Scanner<'_>,
        paths: &ColumnPaths,
        hash: bool,
    ) -> Option<CanonicalItem> {
        let mut text = Vec::new();
        let item = self.scan_item_into(s, paths, hash, &mut text)?;
        let text = String::from_utf8(text).ok()?;
        Some(CanonicalItem {
            text,
            hash: item.hash,
            captured: item
                .captured
                .into_iter()
                .map(|c| c.map(Captured::into_owned))
                .collect(),
        })
    }

    /// [`Canonicalizer::scan_item`] appending the canonical text to `dest` (a column buffer)
    /// instead of returning it; nothing is appended when it returns `None`.
    pub(crate) fn scan_item_into<'a>(
        &mut self,
        s: &mut Scanner<'a>,
        paths: &ColumnPaths,
        hash: bool,
        dest: &mut Vec<u8>,
    ) -> Option<SpannedItem<'a>> {
        self.out.clear();
        self.entries.clear();
        let mut captured = vec![None; paths.len()];
        self.scan_map(s, Some(paths), &mut captured, 0, true)?;
        // The top level's entries are put in order straight into the destination: one copy,
        // where rewriting in place and then copying out would be three.
        let sorted = sort_entries(self, 0, false).ok()?;
        let start = dest.len();
        dest.reserve(self.out.len() + 1);
        dest.push(b'{');
        if sorted {
            dest.extend_from_slice(&self.out[1..]);
        } else {
            for (i, e) in self.entries.iter().enumerate() {
                if i > 0 {
                    dest.push(b',');
                }
                dest.extend_from_slice(&self.out[e.start..e.end]);
            }
        }
        dest.push(b'}');
        self.entries.clear();
        let hash = hash.then(|| ItemHash(Sha256::digest(&dest[start..]).into()));
        Some(SpannedItem {
            span: start..dest.len(),
            hash,
            captured,
        })
    }

    fn scan_map<'a>(
        &mut self,
        s: &mut Scanner<'a>,
        node: Option<&ColumnPaths>,
        captured: &mut [Option<Captured<'a>>],
        depth: usize,
        top: bool,
    ) -> Option<()> {
        s.eat(b'{')?;
        let base = self.entries.len();
        let open = self.out.len();
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = s.next_key_raw(&mut first)? {
            let start = begin_entry(&mut self.out, &self.entries, base);
            // `"name":` as written is canonical when the scanner says so: one copy.
            let (key_end, child) = match key {
                Ok(raw) => {
                    self.out.extend_from_slice(raw);
                    // The name is the text between the quotes of `"name":`.
                    let name = raw.get(1..raw.len().saturating_sub(2)).unwrap_or_default();
                    (self.out.len() - 1, node.and_then(|n| n.child(name)))
                }
                Err(name) => {
                    write_scanned_string(&name, &mut self.out);
                    let end = self.out.len();
                    self.out.push(b':');
                    (end, node.and_then(|n| n.child(name.as_bytes())))
                }
            };
            self.scan_value(s, child, captured, depth)?;
            self.entries
                .push(Entry::new(start, key_end, self.out.len()));
        }
        if top {
            return Some(()); // scan_item orders the top level itself
        }
        finish_sorted(self, base, open + 1, b'}', false).ok()
    }

    fn scan_value<'a>(
        &mut self,
        s: &mut Scanner<'a>,
        node: Option<&ColumnPaths>,
        captured: &mut [Option<Captured<'a>>],
        depth: usize,
    ) -> Option<()> {
        let wanted = node.is_some_and(|n| !n.columns.is_empty());
        // Most values are `{"S":"text"}` or `{"N":"digits"}` as DynamoDB writes them: no
        // whitespace, no escapes, numbers normalised. Their canonical form is their own text,
        // copied in one piece.
        let before = s.clone();
        if let Some((tag, v, whole)) = s.plain_leaf() {
            if tag == b'S'
                || s.text()
                    .as_bytes()
                    .get(v.clone())
                    .is_some_and(is_normalized)
            {
                self.out.extend_from_slice(whole);
                if wanted {
                    let v = Cow::Borrowed(s.text().get(v)?);
                    place(
                        captured,
                        node,
                        if tag == b'S' {
                            Captured::S(v)
                        } else {
                            Captured::N(v)
                        },
                    );
                }
                return Some(());
            }
            *s = before; // a number to normalise: the general path below
        }
        s.eat(b'{')?;
        let mut first = true;
        let tag = match s.short_key() {
            Some(tag) => {
                first = false;
                std::borrow::Cow::Borrowed(tag)
            }
            None => s.next_key(&mut first)??,
        };
        let value = match tag.as_ref() {
            "S" => {
                let v = s.string()?;
                self.out.extend_from_slice(b"{\"S\":");
                write_scanned_string(&v, &mut self.out);
                self.out.push(b'}');
                wanted.then_some(Captured::S(v))
            }
            "N" => {
                let v = s.string()?;
                self.out.extend_from_slice(b"{\"N\":\"");
                let at = self.out.len();
                write_number(&v, &mut self.out).ok()?;
                // DynamoDB sends numbers normalised: then the text read is the text written,
                // already known to be UTF-8.
                let normalized = wanted.then(|| {
                    Captured::N(if self.out[at..] == *v.as_bytes() {
                        v
                    } else {
                        Cow::Owned(String::from_utf8_lossy(&self.out[at..]).into_owned())
                    })
                });
                self.out.extend_from_slice(b"\"}");
                normalized
            }
            "B" => {
                let v = s.string()?;
                self.out.extend_from_slice(b"{\"B\":\"");
                write_binary(&v, &mut self.binary, &mut self.out).ok()?;
                self.out.extend_from_slice(b"\"}");
                wanted.then_some(Captured::Other)
            }
            "BOOL" => {
                let v = s.boolean()?;
                self.out.extend_from_slice(if v {
                    b"{\"BOOL\":true}"
                } else {
                    b"{\"BOOL\":false}"
                });
                wanted.then_some(Captured::Bool(v))
            }
            "NULL" => {
                if !s.boolean()? {
                    return None;
                }
                self.out.extend_from_slice(b"{\"NULL\":true}");
                wanted.then_some(Captured::Other)
            }
            tag @ ("SS" | "NS" | "BS") => {
                self.out.extend_from_slice(b"{\"");
                self.out.extend_from_slice(tag.as_bytes());
                self.out.extend_from_slice(b"\":[");
                let base = self.entries.len();
                let content = self.out.len();
                s.eat(b'[')?;
                let mut first = true;
                while s.next_element(&mut first)? {
                    let v = s.string()?;
                    let start = begin_entry(&mut self.out, &self.entries, base);
                    match tag {
                        "SS" => write_scanned_string(&v, &mut self.out),
                        "NS" => {
                            self.out.push(b'"');
                            write_number(&v, &mut self.out).ok()?;
                            self.out.push(b'"');
                        }
                        _ => {
                            self.out.push(b'"');
                            write_binary(&v, &mut self.binary, &mut self.out).ok()?;
                            self.out.push(b'"');
                        }
                    }
                    let end = self.out.len();
                    self.entries.push(Entry::new(start, end, end));
                }
                if self.entries.len() == base {
                    return None;
                }
                finish_sorted(self, base, content, b']', true).ok()?;
                self.out.push(b'}');
                wanted.then_some(Captured::Other)
            }
            "L" => {
                let depth = nested::<de::value::Error>(depth).ok()?;
                self.out.extend_from_slice(b"{\"L\":[");
                s.eat(b'[')?;
                let mut first = true;
                let mut i = 0usize;
                while s.next_element(&mut first)? {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    // Values inside lists are never captured: typed columns address maps only.
                    self.scan_value(s, None, captured, depth)?;
                    i += 1;
                }
                self.out.extend_from_slice(b"]}");
                wanted.then_some(Captured::Other)
            }
            "M" => {
                let depth = nested::<de::value::Error>(depth).ok()?;
                self.out.extend_from_slice(b"{\"M\":");
                self.scan_map(s, node, captured, depth, false)?;
                self.out.push(b'}');
                wanted.then_some(Captured::Other)
            }
            _ => return None,
        };
        // Exactly one type key.
        if s.next_key(&mut first)?.is_some() {
            return None;
        }
        if let Some(v) = value {
            place(captured, node, v);
        }
        Some(())
    }
}

/// Puts a captured value in the slots of the columns at its path.
fn place<'a>(captured: &mut [Option<Captured<'a>>], node: Option<&ColumnPaths>, v: Captured<'a>) {
    if let Some(node) = node
        && let Some((&last, rest)) = node.columns.split_last()
    {
        // Usually one column per path: the value moves there, cloned only for the others.
        for &col in rest {
            if let Some(slot) = captured.get_mut(col) {
                *slot = Some(v.clone());
            }
        }
        if let Some(slot) = captured.get_mut(last) {
            *slot = Some(v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The single-pass canonicaliser: serde seeds that write canonical bytes as they read.

/// Reads a JSON object of attribute names to typed values (an item, or the body of an M).
struct MapSeed<'c, 'p> {
    c: &'c mut Canonicalizer,
    node: Option<&'p ColumnPaths>,
    captured: &'c mut Vec<Option<Captured<'static>>>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for MapSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of attribute names to DynamoDB typed values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let c = self.c;
        let base = c.entries.len();
        let open = c.out.len();
        c.out.push(b'{');
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let start = begin_entry(&mut c.out, &c.entries, base);
            write_json_string(&name.0, &mut c.out);
            let key_end = c.out.len();
            c.out.push(b':');
            let node = self.node.and_then(|n| n.child(name.0.as_bytes()));
            let seed = ValueSeed {
                c: &mut *c,
                node,
                captured: &mut *self.captured,
                depth: self.depth,
            };
            if let Err(e) = map.next_value_seed(seed) {
                c.error_path.push(name.0.into_owned());
                return Err(e);
            }
            c.entries.push(Entry::new(start, key_end, c.out.len()));
        }
        finish_sorted(c, base, open + 1, b'}', false).map_err(|(name, msg)| {
            c.error_path.push(name);
            de::Error::custom(msg)
        })
    }
}

/// Sorts the entries pushed since `base` (their bytes start at `content`), checks duplicates,
/// and rewrites them in order separated by commas, followed by `close`.
fn finish_sorted(
    c: &mut Canonicalizer,
    base: usize,
    content: usize,
    close: u8,
    is_set: bool,
) -> Result<(), (String, String)> {
    if sort_entries(c, base, is_set)? {
        c.out.push(close);
        c.entries.truncate(base);
        return Ok(());
    }
    let Canonicalizer {
        out,
        scratch,
        entries,
        ..
    } = c;
    let list = &entries[base..];
    scratch.clear();
    scratch.extend_from_slice(&out[content..]);
    out.truncate(content);
    for (i, e) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&scratch[e.start - content..e.end - content]);
    }
    out.push(close);
    entries.truncate(base);
    Ok(())
}

/// Puts the entries pushed since `base` in order and checks for duplicates. `true` when they
/// arrived in order, so the comma-separated text already written is final.
fn sort_entries(
    c: &mut Canonicalizer,
    base: usize,
    is_set: bool,
) -> Result<bool, (String, String)> {
    let Canonicalizer { out, entries, .. } = c;
    let list = &mut entries[base..];
    for e in list.iter_mut() {
        e.prefix = Entry::prefix_of(out, e.start, e.key_end);
    }
    if list.windows(2).all(|w| w[0].cmp(&w[1], out).is_lt()) {
        return Ok(true);
    }
    list.sort_unstable_by(|a, b| a.cmp(b, out));
    if let Some(w) = list.windows(2).find(|w| w[0].cmp(&w[1], out).is_eq()) {
        let key = String::from_utf8_lossy(w[0].key(out)).into_owned();
        return Err(if is_set {
            (
                String::new(),
                format!("a set must not contain the same value twice ({key})"),
            )
        } else {
            (
                key.trim_matches('"').to_owned(),
                "attribute name appears twice".to_owned(),
            )
        });
    }
    Ok(false)
}

/// Reads one typed value `{"TYPE": value}`.
struct ValueSeed<'c, 'p> {
    c: &'c mut Canonicalizer,
    node: Option<&'p ColumnPaths>,
    captured: &'c mut Vec<Option<Captured<'static>>>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl ValueSeed<'_, '_> {
    fn wanted(&self) -> bool {
        self.node.is_some_and(|n| !n.columns.is_empty())
    }

    fn capture(&mut self, value: impl FnOnce() -> Captured<'static>) {
        if let Some(node) = self.node
            && !node.columns.is_empty()
        {
            let v = value();
            for &col in &node.columns {
                if let Some(slot) = self.captured.get_mut(col) {
                    *slot = Some(v.clone());
                }
            }
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB typed value such as {\"S\": \"text\"}")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let Some(tag) = map.next_key::<Str<'de>>()? else {
            return Err(de::Error::custom(
                "empty object where a typed value was expected",
            ));
        };
        match tag.0.as_ref() {
            "S" => {
                let s = map.next_value::<Str>()?;
                self.c.out.extend_from_slice(b"{\"S\":");
                write_json_string(&s.0, &mut self.c.out);
                self.c.out.push(b'}');
                self.capture(|| Captured::S(Cow::Owned(s.0.clone().into_owned())));
            }
            "N" => {
                let n = map.next_value::<Str>()?;
                self.c.out.extend_from_slice(b"{\"N\":\"");
                let at = self.c.out.len();
                write_number(&n.0, &mut self.c.out).map_err(de::Error::custom)?;
                let normalized = self
                    .wanted()
                    .then(|| String::from_utf8_lossy(&self.c.out[at..]).into_owned());
                self.c.out.extend_from_slice(b"\"}");
                if let Some(n) = normalized {
                    self.capture(|| Captured::N(Cow::Owned(n)));
                }
            }
            "B" => {
                let b = map.next_value::<Str>()?;
                self.c.out.extend_from_slice(b"{\"B\":\"");
                write_binary(&b.0, &mut self.c.binary, &mut self.c.out)
                    .map_err(de::Error::custom)?;
                self.c.out.extend_from_slice(b"\"}");
                self.capture(|| Captured::Other);
            }
            "BOOL" => {
                let v = map.next_value::<bool>()?;
                self.c.out.extend_from_slice(if v {
                    b"{\"BOOL\":true}"
                } else {
                    b"{\"BOOL\":false}"
                });
                self.capture(|| Captured::Bool(v));
            }
            "NULL" => {
                if !map.next_value::<bool>()? {
                    return Err(de::Error::custom("NULL must be true"));
                }
                self.c.out.extend_from_slice(b"{\"NULL\":true}");
                self.capture(|| Captured::Other);
            }
            tag @ ("SS" | "NS" | "BS") => {
                let kind = match tag {
                    "SS" => SetKind::S,
                    "NS" => SetKind::N,
                    _ => SetKind::B,
                };
                self.c.out.extend_from_slice(b"{\"");
                self.c.out.extend_from_slice(tag.as_bytes());
                self.c.out.extend_from_slice(b"\":[");
                let base = self.c.entries.len();
                let content = self.c.out.len();
                map.next_value_seed(SetSeed {
                    c: &mut *self.c,
                    kind,
                })?;
                if self.c.entries.len() == base {
                    return Err(de::Error::custom("a set must not be empty"));
                }
                finish_sorted(self.c, base, content, b']', true)
                    .map_err(|(_, m)| de::Error::custom(m))?;
                self.c.out.push(b'}');
                self.capture(|| Captured::Other);
            }
            "L" => {
                let depth = nested(self.depth)?;
                self.c.out.extend_from_slice(b"{\"L\":[");
                map.next_value_seed(ListSeed {
                    c: &mut *self.c,
                    captured: &mut *self.captured,
                    depth,
                })?;
                self.c.out.extend_from_slice(b"]}");
                self.capture(|| Captured::Other);
            }
            "M" => {
                let depth = nested(self.depth)?;
                self.c.out.extend_from_slice(b"{\"M\":");
                map.next_value_seed(MapSeed {
                    c: &mut *self.c,
                    node: self.node,
                    captured: &mut *self.captured,
                    depth,
                })?;
                self.c.out.push(b'}');
                self.capture(|| Captured::Other);
            }
            other => {
                return Err(de::Error::custom(format_args!(
                    "unknown DynamoDB type {other:?} (expected S, N, B, BOOL, NULL, SS, NS, BS, L or M)"
                )));
            }
        }
        if let Some(extra) = map.next_key::<Str<'de>>()? {
            let _ = map.next_value::<IgnoredAny>();
            return Err(de::Error::custom(format_args!(
                "a typed value has exactly one type key, found {:?} and {:?}",
                tag.0, extra.0
            )));
        }
        Ok(())
    }
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth + 1 > MAX_NESTING_DEPTH {
        return Err(E::custom(format_args!(
            "nested deeper than DynamoDB's limit of {MAX_NESTING_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

struct ListSeed<'c> {
    c: &'c mut Canonicalizer,
    captured: &'c mut Vec<Option<Captured<'static>>>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of DynamoDB typed values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            if i > 0 {
                self.c.out.push(b',');
            }
            // Values inside lists are never captured: typed columns address maps only.
            let seed = ValueSeed {
                c: &mut *self.c,
                node: None,
                captured: &mut *self.captured,
                depth: self.depth,
            };
            match seq.next_element_seed(seed) {
                Ok(Some(())) => i += 1,
                Ok(None) => {
                    if i > 0 {
                        self.c.out.pop(); // the comma written for an element that did not come
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.c.error_path.push(format!("[{i}]"));
                    return Err(e);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum SetKind {
    S,
    N,
    B,
}

struct SetSeed<'c> {
    c: &'c mut Canonicalizer,
    kind: SetKind,
}

impl<'de> DeserializeSeed<'de> for SetSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SetSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let c = self.c;
        let base = c.entries.len();
        while let Some(s) = seq.next_element::<Str<'de>>()? {
            let start = begin_entry(&mut c.out, &c.entries, base);
            match self.kind {
                SetKind::S => write_json_string(&s.0, &mut c.out),
                SetKind::N => {
                    c.out.push(b'"');
                    write_number(&s.0, &mut c.out).map_err(de::Error::custom)?;
                    c.out.push(b'"');
                }
                SetKind::B => {
                    c.out.push(b'"');
                    write_binary(&s.0, &mut c.binary, &mut c.out).map_err(de::Error::custom)?;
                    c.out.push(b'"');
                }
            }
            let end = c.out.len();
            c.entries.push(Entry::new(start, end, end));
        }
        Ok(())
    }
}

/// A string that borrows from the input when it has no escapes.
pub(crate) struct Str<'a>(pub(crate) std::borrow::Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars.

/// Writes a binary value's base64 text, which must decode. The decoder is strict (standard
/// alphabet, canonical padding, no stray bits in the last character), and under those rules a
/// byte string has exactly one encoding: text it accepts is already canonical, so it is copied
/// as it came rather than decoded and encoded again.
fn write_binary(text: &str, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    BASE64
        .decode_vec(text, buf)
        .map_err(|e| format!("binary value is not valid base64 ({e})"))?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Normalises a DynamoDB number to the form DynamoDB stores: no exponent, no leading zeros, no
/// trailing fractional zeros, no `+`, `0` for every zero. Rejects text that is not a decimal
/// number, more than 38 significant digits, or a magnitude outside 1E-130..1E+126.
pub fn normalize_number(text: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(text.len() + 2);
    write_number(text, &mut out)?;
    String::from_utf8(out).map_err(|_| format!("{text:?} is not a decimal number"))
}

/// True when `text` is already in normalised form and within DynamoDB's limits (the common case:
/// DynamoDB sends numbers normalised), so it can be copied as is.
fn is_normalized(text: &[u8]) -> bool {
    // One pass over the digits: most numbers in an item are short integers and decimals
    // already in this form, and every one of them is checked.
    let body = match text {
        [b'-', rest @ ..] => rest,
        _ => text,
    };
    let int_len = body
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(body.len());
    let (int, rest) = body.split_at(int_len);
    let zero = int == b"0";
    match int.first() {
        None => return false,
        Some(b'0') if !zero => return false, // a leading zero
        Some(_) => {}
    }
    match rest {
        // An integer: its digits are all significant; zero has no sign.
        [] if zero => text == b"0",
        [] => int_len <= MAX_SIGNIFICANT_DIGITS && int_len as i64 - 1 <= MAX_EXPONENT,
        // A fraction: digits, the last not a zero.
        [b'.', frac @ ..] => {
            if frac.last().is_none_or(|&b| b == b'0') || !frac.iter().all(u8::is_ascii_digit) {
                return false;
            }
            if zero {
                // 0.000ddd: the exponent of the first significant digit.
                let zeros = frac.iter().take_while(|&&b| b == b'0').count();
                let exponent = -(zeros as i64) - 1;
                frac.len() - zeros <= MAX_SIGNIFICANT_DIGITS && exponent >= MIN_EXPONENT
            } else {
                int_len + frac.len() <= MAX_SIGNIFICANT_DIGITS && int_len as i64 - 1 <= MAX_EXPONENT
            }
        }
        _ => false,
    }
}

fn write_number(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    if is_normalized(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    let bad = || format!("{text:?} is not a decimal number");
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => {
            let exp_text = std::str::from_utf8(&rest[i + 1..]).map_err(|_| bad())?;
            let exp_digits = exp_text.trim_start_matches(['+', '-']);
            if exp_digits.is_empty()
                || !exp_digits.bytes().all(|b| b.is_ascii_digit())
                || exp_text.len() - exp_digits.len() > 1
                || exp_digits.len() > 6
            {
                return Err(bad());
            }
            let exp: i64 = exp_text.parse().map_err(|_| bad())?;
            (&rest[..i], exp)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    // All digits as one run; the value is digits × 10^(exponent - frac_len).
    let digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let mut scale = exponent - frac_part.len() as i64;
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        out.push(b'0');
        return Ok(());
    };
    let mut last = digits.len();
    while digits[last - 1] == b'0' {
        last -= 1;
        scale += 1;
    }
    let significant = &digits[first..last];
    if significant.len() > MAX_SIGNIFICANT_DIGITS {
        return Err(format!(
            "{text:?} has {} significant digits; DynamoDB allows at most {MAX_SIGNIFICANT_DIGITS}",
            significant.len()
        ));
    }
    let leading = scale + significant.len() as i64 - 1;
    if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&leading) {
        return Err(format!(
            "{text:?} is outside DynamoDB's number range (1E-130 to 9.99E+125)"
        ));
    }
    if negative {
        out.push(b'-');
    }
    if scale >= 0 {
        out.extend_from_slice(significant);
        out.extend(std::iter::repeat_n(b'0', scale as usize));
    } else {
        let point = significant.len() as i64 + scale;
        if point > 0 {
            out.extend_from_slice(&significant[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&significant[point as usize..]);
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(significant);
        }
    }
    Ok(())
}

/// Writes `s` as a JSON string with one fixed escaping: `"` `\` and control characters escaped,
/// everything else (including non-ASCII) as UTF-8.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------------
// Hashes and the state digest.

/// SHA-256 of an item's canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItemHash(pub [u8; 32]);

/// An order-independent multiset hash of a table: the sum of its items' hashes modulo 2^256.
///
/// Adding and subtracting commute, so the digest of a snapshot is its base's digest plus the
/// deltas of its segments in any order, and a scan of a restored table yields the same digest
/// exactly when the restore is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct StateDigest {
    /// Little-endian 64-bit limbs.
    limbs: [u64; 4],
}

impl StateDigest {
    /// The digest of an empty table.
    pub const ZERO: StateDigest = StateDigest { limbs: [0; 4] };

    fn from_hash(h: &ItemHash) -> StateDigest {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let start = 32 - 8 * (i + 1);
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&h.0[start..start + 8]);
            *limb = u64::from_be_bytes(chunk);
        }
        StateDigest { limbs }
    }

    /// Sums digests that may be unknown (a stream without both images): any unknown term
    /// makes the sum unknown.
    pub fn sum_known(sum: Option<StateDigest>, term: Option<StateDigest>) -> Option<StateDigest> {
        let (mut sum, term) = (sum?, term?);
        sum.add(&term);
        Some(sum)
    }

    /// Adds an item to the multiset.
    pub fn add_item(&mut self, h: &ItemHash) {
        self.add(&StateDigest::from_hash(h));
    }

    /// Removes an item from the multiset.
    pub fn remove_item(&mut self, h: &ItemHash) {
        self.sub(&StateDigest::from_hash(h));
    }

    /// `self += other (mod 2^256)`.
    pub fn add(&mut self, other: &StateDigest) {
        let mut carry = false;
        for i in 0..4 {
            let (s1, c1) = self.limbs[i].overflowing_add(other.limbs[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            self.limbs[i] = s2;
            carry = c1 || c2;
        }
    }

    /// `self -= other (mod 2^256)`.
    pub fn sub(&mut self, other: &StateDigest) {
        let mut borrow = false;
        for i in 0..4 {
            let (d1, b1) = self.limbs[i].overflowing_sub(other.limbs[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            self.limbs[i] = d2;
            borrow = b1 || b2;
        }
    }

    /// 64 lowercase hex digits, most significant first.
    pub fn to_hex(&self) -> String {
        let mut bytes = [0u8; 32];
        for i in 0..4 {
            bytes[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&self.limbs[i].to_be_bytes());
        }
        hex::encode(bytes)
    }

    /// Parses the form written by [`StateDigest::to_hex`].
    pub fn from_hex(text: &str) -> Result<StateDigest, String> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|e| format!("state digest {text:?} is not 64 hex digits ({e})"))?;
        Ok(StateDigest::from_hash(&ItemHash(bytes)))
    }
}

impl serde::Serialize for StateDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for StateDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StateDigest::from_hex(&text).map_err(de::Error::custom)
    }
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

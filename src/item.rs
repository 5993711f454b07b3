//! Lossless DynamoDB attribute values: parsing, validation, canonical form and item hash.
//!
//! Items travel through streamseal as *DynamoDB JSON* text (`{"id":{"S":"a"},"n":{"N":"1.5"}}`),
//! exactly as AWS sends them. This module parses that text into a borrowed tree ([`Item`],
//! [`AttrValue`]) without copying strings that need no unescaping, checks it against DynamoDB's
//! rules (numbers of at most 38 significant digits with exponents inside DynamoDB's range, valid
//! base64, non-empty duplicate-free sets, nesting limits), and writes its *canonical form*:
//! DynamoDB JSON with map keys sorted, set elements sorted, numbers normalised (`"1.50"` and
//! `"15e-1"` are both `"1.5"`, as DynamoDB itself stores them) and binary values re-encoded as
//! standard base64. Two items are equal in DynamoDB if and only if their canonical forms are equal
//! byte for byte.
//!
//! Numbers are never converted to floating point: they stay decimal strings end to end.
//!
//! The [`ItemHash`] of an item is the SHA-256 of its canonical form, and a [`StateDigest`] is an
//! order-independent sum of item hashes modulo 2^256: the digest of a table is the sum over its
//! items, and a change moves it by `H(new) - H(old)`. The canonical form is streamed straight into
//! the hasher, so hashing an image allocates nothing beyond the parsed tree.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

/// DynamoDB's documented limit on nested attribute depth (lists and maps inside each other).
pub const MAX_NESTING_DEPTH: usize = 32;
/// DynamoDB numbers carry at most 38 significant digits.
pub const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// Smallest and largest decimal exponent of a number's leading digit that DynamoDB accepts:
/// magnitudes from 1E-130 up to 9.99…E+125.
const MIN_EXPONENT: i64 = -130;
const MAX_EXPONENT: i64 = 125;

/// Why a piece of DynamoDB JSON is not a valid DynamoDB value. The message names the attribute
/// path so a user can find the offending value in their own data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The text is not JSON of the DynamoDB JSON shape.
    #[error("not valid DynamoDB JSON: {0}")]
    Json(String),
    /// A value that parsed but breaks one of DynamoDB's rules.
    #[error("attribute {path}: {reason}")]
    Invalid {
        /// Dotted path of the attribute, e.g. `address.lines[2]`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One DynamoDB attribute value, borrowing its strings from the JSON text where possible.
///
/// `N` keeps the number exactly as written; `B` and `BS` keep the base64 text as written. Both
/// are validated when the item is [checked](Item::validate) and normalised only in the canonical
/// form, so the stored image stays verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    /// String (may be empty, may contain any Unicode including NUL).
    S(Cow<'a, str>),
    /// Number, as its decimal text.
    N(Cow<'a, str>),
    /// Binary, as its base64 text.
    B(Cow<'a, str>),
    /// Boolean.
    Bool(bool),
    /// The NULL type (`{"NULL": true}`).
    Null,
    /// String set.
    Ss(Vec<Cow<'a, str>>),
    /// Number set.
    Ns(Vec<Cow<'a, str>>),
    /// Binary set (base64 texts).
    Bs(Vec<Cow<'a, str>>),
    /// List.
    L(Vec<AttrValue<'a>>),
    /// Map, in the order the JSON listed its entries.
    M(Vec<(Cow<'a, str>, AttrValue<'a>)>),
}

/// A whole item (or a key): a map from attribute names to values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item<'a>(pub Vec<(Cow<'a, str>, AttrValue<'a>)>);

impl<'a> Item<'a> {
    /// Parses DynamoDB JSON text (an object of attribute names to typed values) and validates it.
    pub fn parse(text: &'a str) -> Result<Item<'a>, ItemError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let item = ItemSeed { depth: 0 }
            .deserialize(&mut de)
            .map_err(|e| ItemError::Json(e.to_string()))?;
        de.end().map_err(|e| ItemError::Json(e.to_string()))?;
        item.validate()?;
        Ok(item)
    }

    /// Checks every value against DynamoDB's rules. [`Item::parse`] already calls this.
    pub fn validate(&self) -> Result<(), ItemError> {
        let mut path = String::new();
        validate_map(&self.0, &mut path)
    }

    /// Looks up a top-level attribute.
    pub fn get(&self, name: &str) -> Option<&AttrValue<'a>> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Follows a dotted path (`address.city`) through nested maps.
    pub fn get_path(&self, path: &str) -> Option<&AttrValue<'a>> {
        let mut parts = path.split('.');
        let mut current = self.get(parts.next()?)?;
        for part in parts {
            match current {
                AttrValue::M(entries) => {
                    current = entries.iter().find(|(k, _)| k == part).map(|(_, v)| v)?;
                }
                _ => return None,
            }
        }
        Some(current)
    }

    /// The canonical DynamoDB JSON text of this item (see the module docs).
    pub fn canonical_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        write_canonical_map(&self.0, &mut out);
        // The canonical writer only emits UTF-8: names and strings come from `str`, everything
        // else is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The SHA-256 of the canonical form, streamed into the hasher without building the text.
    pub fn hash(&self) -> ItemHash {
        let mut hasher = Sha256::new();
        write_canonical_map(&self.0, &mut hasher);
        ItemHash(hasher.finalize().into())
    }
}

/// Parses, validates and canonicalises DynamoDB JSON in one call.
pub fn canonicalize(text: &str) -> Result<String, ItemError> {
    Ok(Item::parse(text)?.canonical_json())
}

// ---------------------------------------------------------------------------------------------
// Deserialisation: a hand-written visitor so strings borrow from the input when they can, and
// the one-key `{"TYPE": value}` shape of DynamoDB JSON is enforced while parsing.

struct ItemSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(MapVisitor { depth: self.depth })
            .map(Item)
    }
}

struct MapVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for MapVisitor {
    type Value = Vec<(Cow<'de, str>, AttrValue<'de>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of attribute names to DynamoDB typed values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let value = map.next_value_seed(ValueSeed { depth: self.depth })?;
            entries.push((name.0, value));
        }
        Ok(entries)
    }
}

/// A string that borrows from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = AttrValue<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = AttrValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB typed value such as {\"S\": \"text\"}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(tag) = map.next_key::<Str<'de>>()? else {
            return Err(de::Error::custom(
                "empty object where a typed value was expected",
            ));
        };
        let value = match tag.0.as_ref() {
            "S" => AttrValue::S(map.next_value::<Str>()?.0),
            "N" => AttrValue::N(map.next_value::<Str>()?.0),
            "B" => AttrValue::B(map.next_value::<Str>()?.0),
            "BOOL" => AttrValue::Bool(map.next_value::<bool>()?),
            "NULL" => {
                if !map.next_value::<bool>()? {
                    return Err(de::Error::custom("NULL must be true"));
                }
                AttrValue::Null
            }
            "SS" => AttrValue::Ss(map.next_value::<StrList>()?.0),
            "NS" => AttrValue::Ns(map.next_value::<StrList>()?.0),
            "BS" => AttrValue::Bs(map.next_value::<StrList>()?.0),
            "L" => {
                let depth = self.nested()?;
                AttrValue::L(map.next_value_seed(ListSeed { depth })?)
            }
            "M" => {
                let depth = self.nested()?;
                AttrValue::M(map.next_value_seed(MapSeed { depth })?)
            }
            other => {
                return Err(de::Error::custom(format_args!(
                    "unknown DynamoDB type {other:?} (expected S, N, B, BOOL, NULL, SS, NS, BS, L or M)"
                )));
            }
        };
        if let Some(extra) = map.next_key::<Str<'de>>()? {
            return Err(de::Error::custom(format_args!(
                "a typed value has exactly one type key, found {:?} and {:?}",
                tag.0, extra.0
            )));
        }
        Ok(value)
    }
}

impl ValueSeed {
    fn nested<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_NESTING_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than DynamoDB's limit of {MAX_NESTING_DEPTH} levels"
            )));
        }
        Ok(depth)
    }
}

struct MapSeed {
    depth: usize,
}
impl<'de> DeserializeSeed<'de> for MapSeed {
    type Value = Vec<(Cow<'de, str>, AttrValue<'de>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(MapVisitor { depth: self.depth })
    }
}

struct ListSeed {
    depth: usize,
}
impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = Vec<AttrValue<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for ListSeed {
    type Value = Vec<AttrValue<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of DynamoDB typed values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element_seed(ValueSeed { depth: self.depth })? {
            out.push(v);
        }
        Ok(out)
    }
}

struct StrList<'a>(Vec<Cow<'a, str>>);
impl<'de> de::Deserialize<'de> for StrList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    out.push(s.0);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn invalid(path: &str, reason: impl Into<String>) -> ItemError {
    ItemError::Invalid {
        path: if path.is_empty() {
            "(item)".into()
        } else {
            path.to_owned()
        },
        reason: reason.into(),
    }
}

fn validate_map(entries: &[(Cow<str>, AttrValue)], path: &mut String) -> Result<(), ItemError> {
    // Duplicate names: JSON allows them, DynamoDB does not. Small maps are the norm, so a
    // quadratic scan beats hashing until a map is large.
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(other, _)| other == k) {
                return Err(invalid(path, format!("attribute name {k:?} appears twice")));
            }
        }
    } else {
        let mut names: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(
                path,
                format!("attribute name {:?} appears twice", w[0]),
            ));
        }
    }
    for (name, value) in entries {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(name);
        validate_value(value, path)?;
        path.truncate(len);
    }
    Ok(())
}

fn validate_value(value: &AttrValue, path: &mut String) -> Result<(), ItemError> {
    match value {
        AttrValue::S(_) | AttrValue::Bool(_) | AttrValue::Null => Ok(()),
        AttrValue::N(n) => normalize_number(n)
            .map(|_| ())
            .map_err(|e| invalid(path, e)),
        AttrValue::B(b) => decode_binary(b).map(|_| ()).map_err(|e| invalid(path, e)),
        AttrValue::Ss(items) => check_set(path, items.iter().map(|s| Ok(s.as_bytes().to_vec()))),
        AttrValue::Ns(items) => check_set(
            path,
            items
                .iter()
                .map(|n| normalize_number(n).map(String::into_bytes)),
        ),
        AttrValue::Bs(items) => check_set(path, items.iter().map(|b| decode_binary(b))),
        AttrValue::L(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                validate_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        AttrValue::M(entries) => validate_map(entries, path),
    }
}

fn check_set(
    path: &str,
    elements: impl Iterator<Item = Result<Vec<u8>, String>>,
) -> Result<(), ItemError> {
    let mut seen = Vec::new();
    for element in elements {
        seen.push(element.map_err(|e| invalid(path, e))?);
    }
    if seen.is_empty() {
        return Err(invalid(path, "a set must not be empty"));
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(path, "a set must not contain the same value twice"));
    }
    Ok(())
}

fn decode_binary(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text)
        .map_err(|e| format!("binary value is not valid base64 ({e})"))
}

/// Normalises a DynamoDB number to the form DynamoDB stores: no exponent, no leading zeros, no
/// trailing fractional zeros, no `+`, `0` for every zero. Rejects text that is not a decimal
/// number, more than 38 significant digits, or a magnitude outside 1E-130..1E+126.
pub fn normalize_number(text: &str) -> Result<String, String> {
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
    // All digits as one string; the value is digits × 10^(exponent - frac_len).
    let digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let mut scale = exponent - frac_part.len() as i64;
    let first = digits.iter().position(|&d| d != b'0');
    let Some(first) = first else {
        return Ok("0".to_owned());
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
    // Exponent of the leading digit, as in scientific notation.
    let leading = scale + significant.len() as i64 - 1;
    if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&leading) {
        return Err(format!(
            "{text:?} is outside DynamoDB's number range (1E-130 to 9.99E+125)"
        ));
    }
    let mut out = String::with_capacity(significant.len() + 8);
    if negative {
        out.push('-');
    }
    let sig = std::str::from_utf8(significant).map_err(|_| bad())?;
    if scale >= 0 {
        out.push_str(sig);
        out.extend(std::iter::repeat_n('0', scale as usize));
    } else {
        let point = significant.len() as i64 + scale;
        if point > 0 {
            out.push_str(&sig[..point as usize]);
            out.push('.');
            out.push_str(&sig[point as usize..]);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(sig);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Canonical form.

/// Where canonical bytes go: a buffer (for the text) or a hasher (for the hash).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}
impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}
impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn write_canonical_map<W: Sink>(entries: &[(Cow<str>, AttrValue)], out: &mut W) {
    let mut order: Vec<&(Cow<str>, AttrValue)> = entries.iter().collect();
    order.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.put(b"{");
    for (i, (name, value)) in order.into_iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_json_string(name, out);
        out.put(b":");
        write_canonical_value(value, out);
    }
    out.put(b"}");
}

fn write_canonical_value<W: Sink>(value: &AttrValue, out: &mut W) {
    match value {
        AttrValue::S(s) => {
            out.put(b"{\"S\":");
            write_json_string(s, out);
            out.put(b"}");
        }
        AttrValue::N(n) => {
            out.put(b"{\"N\":\"");
            // Validated items always normalise; an unvalidated one keeps its text.
            match normalize_number(n) {
                Ok(norm) => out.put(norm.as_bytes()),
                Err(_) => out.put(n.as_bytes()),
            }
            out.put(b"\"}");
        }
        AttrValue::B(b) => {
            out.put(b"{\"B\":\"");
            out.put(canonical_binary(b).as_bytes());
            out.put(b"\"}");
        }
        AttrValue::Bool(true) => out.put(b"{\"BOOL\":true}"),
        AttrValue::Bool(false) => out.put(b"{\"BOOL\":false}"),
        AttrValue::Null => out.put(b"{\"NULL\":true}"),
        AttrValue::Ss(items) => {
            let mut sorted: Vec<&str> = items.iter().map(|s| s.as_ref()).collect();
            sorted.sort_unstable();
            write_string_set(b"SS", sorted.iter().copied(), out);
        }
        AttrValue::Ns(items) => {
            let mut sorted: Vec<String> = items
                .iter()
                .map(|n| normalize_number(n).unwrap_or_else(|_| n.to_string()))
                .collect();
            sorted.sort_unstable();
            write_string_set(b"NS", sorted.iter().map(String::as_str), out);
        }
        AttrValue::Bs(items) => {
            let mut sorted: Vec<String> = items.iter().map(|b| canonical_binary(b)).collect();
            sorted.sort_unstable();
            write_string_set(b"BS", sorted.iter().map(String::as_str), out);
        }
        AttrValue::L(items) => {
            out.put(b"{\"L\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_canonical_value(item, out);
            }
            out.put(b"]}");
        }
        AttrValue::M(entries) => {
            out.put(b"{\"M\":");
            write_canonical_map(entries, out);
            out.put(b"}");
        }
    }
}

fn write_string_set<'s, W: Sink>(tag: &[u8], items: impl Iterator<Item = &'s str>, out: &mut W) {
    out.put(b"{\"");
    out.put(tag);
    out.put(b"\":[");
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_json_string(s, out);
    }
    out.put(b"]}");
}

fn canonical_binary(text: &str) -> String {
    match BASE64.decode(text) {
        Ok(bytes) => BASE64.encode(bytes),
        Err(_) => text.to_owned(),
    }
}

/// Writes `s` as a JSON string with one fixed escaping: `"` `\` and control characters escaped,
/// everything else (including non-ASCII) as UTF-8.
fn write_json_string<W: Sink>(s: &str, out: &mut W) {
    out.put(b"\"");
    let bytes = s.as_bytes();
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
        out.put(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.put(escape);
        }
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
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
            ("1e-130", &format!("0.{}1", "0".repeat(129))),
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
        ] {
            assert!(normalize_number(bad).is_err(), "{bad:?} should be rejected");
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
        assert_eq!(
            Item::parse(a).unwrap().hash(),
            Item::parse(b).unwrap().hash()
        );
    }

    #[test]
    fn hash_is_sha256_of_canonical_text() {
        let item = Item::parse(r#"{"s":{"S":"é\u0000\"q"},"n":{"N":"2"}}"#).unwrap();
        let text = item.canonical_json();
        assert_eq!(
            text,
            "{\"n\":{\"N\":\"2\"},\"s\":{\"S\":\"é\\u0000\\\"q\"}}"
        );
        let want: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(item.hash().0, want);
    }

    #[test]
    fn invalid_items_are_rejected_with_the_attribute_path() {
        let cases = [
            (r#"{"a":{"X":"1"}}"#, "unknown DynamoDB type"),
            (r#"{"a":{"S":"1","N":"1"}}"#, "exactly one type key"),
            (r#"{"a":{}}"#, "empty object"),
            (r#"{"a":{"NULL":false}}"#, "NULL must be true"),
            (r#"{"a":{"M":{"b":{"L":[{"N":"x"}]}}}}"#, "a.b[0]"),
            (r#"{"a":{"SS":[]}}"#, "must not be empty"),
            (r#"{"a":{"NS":["1","1.0"]}}"#, "same value twice"),
            (r#"{"a":{"B":"***"}}"#, "base64"),
            (r#"{"a":{"S":"x"},"a":{"S":"y"}}"#, "appears twice"),
            (r#"[1]"#, "DynamoDB JSON"),
            (r#"{"a":{"S":"x"}} trailing"#, "DynamoDB JSON"),
        ];
        for (text, want) in cases {
            let err = Item::parse(text).unwrap_err().to_string();
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
        assert!(Item::parse(&nest(MAX_NESTING_DEPTH)).is_ok());
        assert!(Item::parse(&nest(MAX_NESTING_DEPTH + 1)).is_err());
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

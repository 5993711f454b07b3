//! A strict, allocation-free JSON tokenizer over bytes: the fast path of record parsing.
//!
//! serde_json reads a stream record well, but a visitor call per token costs more than the rest
//! of the capture path's parsing work together. This scanner reads the same grammar (RFC 8259)
//! directly from the event's bytes: strings come back borrowed from the input unless they hold
//! escapes, numbers as their validated text, and sixteen string bytes are examined per step
//! (as two machine words).
//!
//! It is deliberately *partial*: every method returns `None` for anything it does not read
//! with certainty (a raw control character, a bad escape, a malformed number, deep nesting).
//! `None` never means "invalid": callers fall back to the serde_json path, which is
//! authoritative and produces the error message. So the fast path may be incomplete, never
//! different: on every input it either yields exactly what the serde path yields or steps aside
//! (the differential tests in `tests/roundtrip.rs` check this on random and mutated records).

use std::borrow::Cow;
use std::ops::Range;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nesting the scanner follows when skipping values it does not read (serde_json's own limit is
/// 128; anything deeper goes to the slow path).
const MAX_SKIP_DEPTH: usize = 100;

/// A cursor over JSON text.
#[derive(Clone)]
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

/// Bit 7 of each byte of the result is set for a byte of `word` that ends or interrupts a plain
/// string run: `"`, `\` or a control character. Only the lowest set bit is exact (borrows may
/// mark bytes above it), which is all the caller uses.
#[inline]
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (LO * b'"' as u64);
    let backslash = word ^ (LO * b'\\' as u64);
    let zero_quote = quote.wrapping_sub(LO) & !quote;
    let zero_backslash = backslash.wrapping_sub(LO) & !backslash;
    let control = word.wrapping_sub(LO * 0x20) & !word;
    (zero_quote | zero_backslash | control) & HI
}

impl<'a> Scanner<'a> {
    /// A scanner at byte `pos` of `text`.
    pub(crate) fn new(text: &'a str, pos: usize) -> Scanner<'a> {
        Scanner { text, pos }
    }

    /// Current byte offset.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The whole input.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skips whitespace and returns the next byte without consuming it.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `c` (after whitespace) or returns `None`.
    #[inline]
    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    /// Consumes `c` if it is next; says whether it was.
    #[inline]
    pub(crate) fn eat_if(&mut self, c: u8) -> bool {
        self.peek() == Some(c) && {
            self.pos += 1;
            true
        }
    }

    /// True when only whitespace remains.
    pub(crate) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// After an object's `{` (or a value inside it): the next member's name, `None` at the
    /// closing `}` — the whole protocol is `while let Some(k) = s.next_key(&mut first)? {..}`.
    #[inline]
    pub(crate) fn next_key(&mut self, first: &mut bool) -> Option<Option<Cow<'a, str>>> {
        if self.eat_if(b'}') {
            return Some(None);
        }
        if !std::mem::take(first) {
            self.eat(b',')?;
        }
        let key = self.string()?;
        self.eat(b':')?;
        Some(Some(key))
    }

    /// [`Scanner::next_key`] for a member whose name the caller copies: `Ok` with its name and
    /// colon as written (`"name":`) when that text is already canonical (no escapes in the
    /// name, nothing between its closing quote and the colon), else `Err` with the name.
    ///
    /// The canonical case stays bytes: a `str` slice's boundary checks are a call per member.
    #[inline]
    pub(crate) fn next_key_raw(
        &mut self,
        first: &mut bool,
    ) -> Option<Option<Result<&'a [u8], Cow<'a, str>>>> {
        if self.eat_if(b'}') {
            return Some(None);
        }
        if !std::mem::take(first) {
            self.eat(b',')?;
        }
        self.peek()?;
        let open = self.pos;
        if self.bytes().get(open) != Some(&b'"') {
            return None;
        }
        self.pos += 1;
        let key = match self.string_body()? {
            Ok(end) => {
                if self.bytes().get(self.pos) == Some(&b':') {
                    self.pos += 1;
                    return Some(Some(Ok(self.bytes().get(open..self.pos)?)));
                }
                Cow::Borrowed(self.text.get(open + 1..end)?)
            }
            Err(backslash) => self.escaped(open + 1, backslash)?,
        };
        self.eat(b':')?;
        Some(Some(Err(key)))
    }

    /// Right after an object's `{`: its first member's name and colon when the name is one to
    /// five uppercase ASCII letters (`"S":`, `"BOOL":`: DynamoDB's type tags), read without the
    /// general string machinery. `None`, consuming nothing, for anything else.
    #[inline]
    pub(crate) fn short_key(&mut self) -> Option<&'a str> {
        self.peek()?;
        let b = self.bytes();
        let open = self.pos;
        if b.get(open) != Some(&b'"') {
            return None;
        }
        let mut i = open + 1;
        while i <= open + 5 && b.get(i).is_some_and(u8::is_ascii_uppercase) {
            i += 1;
        }
        if i == open + 1 || b.get(i) != Some(&b'"') {
            return None;
        }
        self.pos = i + 1;
        if self.eat(b':').is_none() {
            self.pos = open;
            return None;
        }
        self.text.get(open + 1..i)
    }

    /// A typed value written `{"S":"..."}` or `{"N":"..."}` exactly (no whitespace inside,
    /// a string without escapes): its tag (`b'S'` or `b'N'`), where its string is, and its
    /// whole text, consumed. `None`, consuming nothing but leading whitespace, for any other
    /// value.
    ///
    /// Bytes and a range rather than `str`s: the caller copies the whole and looks at the
    /// string's bytes, and makes a `str` of it only for the few values a typed column takes
    /// (a `str` slice's boundary checks are a call each, on every value).
    #[inline]
    pub(crate) fn plain_leaf(&mut self) -> Option<(u8, Range<usize>, &'a [u8])> {
        self.peek()?;
        let b = self.bytes();
        let start = self.pos;
        let tag = match b.get(start..start + 6)? {
            b"{\"S\":\"" => b'S',
            b"{\"N\":\"" => b'N',
            _ => return None,
        };
        let mut probe = Scanner::new(self.text, start + 6);
        let Ok(value_end) = probe.string_body()? else {
            return None;
        };
        if b.get(probe.pos) != Some(&b'}') {
            return None;
        }
        let end = probe.pos + 1;
        let whole = b.get(start..end)?;
        self.pos = end;
        Some((tag, start + 6..value_end, whole))
    }

    /// Inside an array after `[`: true when another element follows (its comma consumed).
    #[inline]
    pub(crate) fn next_element(&mut self, first: &mut bool) -> Option<bool> {
        if self.eat_if(b']') {
            return Some(false);
        }
        if !std::mem::take(first) {
            self.eat(b',')?;
        }
        Some(true)
    }

    /// A string, borrowed when it has no escapes. A borrowed string holds no `"`, `\` or
    /// control character (the canonical writer relies on this to copy it unexamined).
    #[inline]
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.pos;
        match self.string_body()? {
            Ok(end) => self.text.get(start..end).map(Cow::Borrowed),
            Err(backslash) => self.escaped(start, backslash),
        }
    }

    /// The body of a string whose opening quote is consumed: `Ok(end)` at its closing quote
    /// (consumed) when it has no escapes, `Err(at)` at its first backslash (nothing consumed).
    /// `None` at a raw control character or the end of the text.
    #[inline(always)]
    fn string_body(&mut self) -> Option<Result<usize, usize>> {
        let b = self.bytes();
        let mut i = self.pos;
        loop {
            // Sixteen bytes per step as two words, each examined at once (SWAR). Most strings
            // (names, type tags, short values) end within the first step; the lowest marked
            // byte of a word is exact, so no second look is needed to find it.
            if let Some(block) = b.get(i..i + 16) {
                let (lo, hi) = block.split_at(8);
                let word = |h: &[u8]| u64::from_le_bytes(h.try_into().unwrap_or([0; 8]));
                let mask = special_bytes(word(lo));
                if mask != 0 {
                    i += (mask.trailing_zeros() / 8) as usize;
                } else {
                    let mask = special_bytes(word(hi));
                    if mask == 0 {
                        i += 16;
                        continue;
                    }
                    i += 8 + (mask.trailing_zeros() / 8) as usize;
                }
            } else {
                while b
                    .get(i)
                    .is_some_and(|&c| c >= 0x20 && c != b'"' && c != b'\\')
                {
                    i += 1;
                }
            }
            return match *b.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    Some(Ok(i))
                }
                b'\\' => Some(Err(i)),
                _ => None, // a raw control character: invalid JSON
            };
        }
    }

    /// The rest of a string that holds escapes, from its first backslash at `at`.
    #[cold]
    fn escaped(&mut self, start: usize, mut at: usize) -> Option<Cow<'a, str>> {
        let b = self.bytes();
        let mut out = String::with_capacity(at - start + 16);
        out.push_str(self.text.get(start..at)?);
        loop {
            match *b.get(at)? {
                b'"' => {
                    self.pos = at + 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    let c = match *b.get(at + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = hex4(b.get(at + 2..at + 6)?)?;
                            at += 6;
                            let code = match hi {
                                0xD800..=0xDBFF => {
                                    if b.get(at..at + 2)? != b"\\u" {
                                        return None;
                                    }
                                    let lo = hex4(b.get(at + 2..at + 6)?)?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return None;
                                    }
                                    at += 6;
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return None,
                                _ => hi,
                            };
                            out.push(char::from_u32(code)?);
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                    at += 2;
                }
                c if c < 0x20 => return None,
                _ => {
                    let run = b[at..]
                        .iter()
                        .position(|&c| c < 0x20 || c == b'"' || c == b'\\')?;
                    out.push_str(self.text.get(at..at + run)?);
                    at += run;
                }
            }
        }
    }

    /// A JSON number's text, checked against the grammar
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    pub(crate) fn number(&mut self) -> Option<&'a str> {
        self.peek()?;
        let b = self.bytes();
        let start = self.pos;
        let mut i = start;
        let digits = |mut i: usize| {
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i > from).then_some(i)
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        if b.get(i) == Some(&b'0') {
            i += 1;
        } else {
            i = digits(i)?;
        }
        if b.get(i) == Some(&b'.') {
            i = digits(i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits(i)?;
        }
        // A number must end at a delimiter; `01` or `1x` are not numbers.
        if b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.')
        {
            return None;
        }
        self.pos = i;
        self.text.get(start..i)
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// Consumes `null` if it is next.
    pub(crate) fn null(&mut self) -> bool {
        self.literal(b"null")
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.peek().is_none() {
            return false;
        }
        let b = self.bytes();
        let end = self.pos + word.len();
        let matches = b.get(self.pos..end) == Some(word)
            && !b.get(end).is_some_and(u8::is_ascii_alphanumeric);
        if matches {
            self.pos = end;
        }
        matches
    }

    /// Skips any JSON value, validating it as it goes.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        self.skip(0)
    }

    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.pos += 1;
                let mut first = true;
                while self.next_key(&mut first)?.is_some() {
                    self.skip(depth + 1)?;
                }
                Some(())
            }
            b'[' => {
                self.pos += 1;
                let mut first = true;
                while self.next_element(&mut first)? {
                    self.skip(depth + 1)?;
                }
                Some(())
            }
            b't' | b'f' => self.boolean().map(drop),
            b'n' => self.null().then_some(()),
            _ => self.number().map(drop),
        }
    }
}

fn hex4(digits: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(text: &str) -> Option<String> {
        let mut s = Scanner::new(text, 0);
        let v = s.string()?.into_owned();
        s.at_end().then_some(v)
    }

    #[test]
    fn strings_agree_with_serde_json() {
        for text in [
            r#""""#,
            r#""plain ascii that is longer than eight bytes""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u6771\ud83d\ude00 and é東😀""#,
            "\"short\"",
            "\"exactly8\"",
            "\"tab\there\"",
            "\"nul\u{0}\"",
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\x""#,
            r#""unterminated"#,
            r#""\u12""#,
        ] {
            let ours = string(text);
            let theirs = serde_json::from_str::<String>(text).ok();
            assert_eq!(ours.is_some(), theirs.is_some(), "{text:?}");
            if let Some(ours) = ours {
                assert_eq!(Some(ours), theirs, "{text:?}");
            }
        }
    }

    #[test]
    fn member_names_come_back_as_written_only_when_canonical() {
        // (object text, what next_key_raw gives for its first member)
        let raw = |t: &'static str| Some(Ok(t.as_bytes()));
        let name = |t: &'static str| Some(Err(t.to_owned()));
        for (text, expected) in [
            (r#"{"pk":1}"#, raw(r#""pk":"#)),
            (r#"{"":1}"#, raw(r#""":"#)),
            (
                r#"{ "a long name past sixteen bytes":1}"#,
                raw(r#""a long name past sixteen bytes":"#),
            ),
            (r#"{"pk" :1}"#, name("pk")),
            (r#"{"p\u006b":1}"#, name("pk")),
            (r#"{"a\"b":1}"#, name("a\"b")),
            (r#"{"é":1}"#, raw(r#""é":"#)),
        ] {
            let mut s = Scanner::new(text, 1);
            let got = s
                .next_key_raw(&mut true)
                .flatten()
                .map(|k| k.map_err(Cow::into_owned));
            assert_eq!(got, expected, "{text}");
            assert_eq!(s.peek(), Some(b'1'), "{text}: the colon is consumed");
        }
        for broken in [r#"{pk:1}"#, r#"{"pk"1}"#, r#"{"pk"#, "{\"p\u{1}k\":1}"] {
            let mut s = Scanner::new(broken, 1);
            assert_eq!(s.next_key_raw(&mut true), None, "{broken}");
        }
        let mut s = Scanner::new("{}", 1);
        assert_eq!(s.next_key_raw(&mut true), Some(None));
    }

    #[test]
    fn plain_leaves_are_exactly_s_or_n_without_escapes_or_spaces() {
        for (text, expected) in [
            (r#"{"S":"abc"}"#, Some((b'S', "abc"))),
            (r#"{"N":"-1.5"}"#, Some((b'N', "-1.5"))),
            (r#"{"S":""}"#, Some((b'S', ""))),
            (
                r#"  {"S":"a string longer than sixteen bytes"}"#,
                Some((b'S', "a string longer than sixteen bytes")),
            ),
            (r#"{"S":"a\"b"}"#, None),
            (r#"{"S": "a"}"#, None),
            (r#"{"S":"a" }"#, None),
            (r#"{"B":"AA=="}"#, None),
            (r#"{"SS":["a"]}"#, None),
            (r#"{"S":"a""#, None),
        ] {
            let mut s = Scanner::new(text, 0);
            let got = s.plain_leaf();
            let trimmed = text.trim_start();
            match expected {
                Some((tag, value)) => {
                    let (t, range, whole) = got.unwrap_or_else(|| panic!("{text}"));
                    assert_eq!((t, &text[range]), (tag, value), "{text}");
                    assert_eq!(whole, trimmed.as_bytes(), "{text}");
                    assert!(s.at_end(), "{text}: the value is consumed");
                }
                None => {
                    assert_eq!(got, None, "{text}");
                    assert_eq!(
                        s.pos(),
                        text.len() - trimmed.len(),
                        "{text}: nothing consumed"
                    );
                }
            }
        }
    }

    #[test]
    fn every_string_byte_position_finds_the_first_special_byte() {
        // Many 16-byte steps. 0x1f is the last control character; 0x20 and 0x7f are ordinary
        // string bytes.
        for len in 0..100 {
            for special in ["\"", "\\n", "\u{1}", "\u{1f}", " ", "\u{7f}", "\u{e9}"] {
                let body = "x".repeat(len);
                let text = format!("\"{body}{special}tail\"");
                let ours = string(&text);
                let theirs = serde_json::from_str::<String>(&text).ok();
                assert_eq!(ours, theirs, "{text:?}");
            }
        }
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for (text, ok) in [
            ("0", true),
            ("-0", true),
            ("12.50", true),
            ("1e5", true),
            ("1E+5", true),
            ("-1.5e-3", true),
            ("01", false),
            ("1.", false),
            (".5", false),
            ("-", false),
            ("1e", false),
            ("+1", false),
            ("1x", false),
        ] {
            let mut s = Scanner::new(text, 0);
            let ours = s.number().is_some() && s.at_end();
            assert_eq!(ours, ok, "{text:?}");
            assert_eq!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
                ok,
                "{text:?}"
            );
        }
    }

    #[test]
    fn skipping_validates_what_it_skips() {
        for (text, ok) in [
            (r#"{"a":[1,true,null,{"b":"c"}],"d":-2.5e3}"#, true),
            (r#"[ ]"#, true),
            (r#"{ }"#, true),
            (r#"[1,]"#, false),
            (r#"{"a":1,}"#, false),
            (r#"{"a" 1}"#, false),
            (r#"[tru]"#, false),
            (r#"[nulls]"#, false),
        ] {
            let mut s = Scanner::new(text, 0);
            let ours = s.skip_value().is_some() && s.at_end();
            assert_eq!(ours, ok, "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Scanner::new(&deep, 0).skip_value().is_none());
    }
}

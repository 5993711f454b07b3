//! Finding records in an event's text: where each record (and, for `streamseal ingest`, each
//! event of a file) begins and ends, by balancing brackets outside strings, without parsing
//! them; and [`EventCursor`], which finds and parses records in one pass. Reading a record is
//! [`ChangeRecord::parse`]'s job (in the parent module).

use super::*;

/// Splits a Lambda DynamoDB stream event into its raw records (each a JSON object's text).
///
/// A byte-level scanner finds the record boundaries of the usual `{"Records":[{…},{…}]}` shape
/// without parsing the records (each is parsed, and so validated, on its own afterwards, which
/// is what lets records be read in parallel and a broken record be quarantined alone). Any
/// other shape goes through serde_json, which also produces the error message.
pub fn parse_event(text: &str) -> Result<Vec<&str>, ChangeError> {
    if let Some(records) = split_records(text) {
        return Ok(records);
    }
    let event: WireEvent = serde_json::from_str(text).map_err(|e| {
        ChangeError::Event(if e.is_data() {
            format!("{e} (expected an object with a \"Records\" array)")
        } else {
            e.to_string()
        })
    })?;
    Ok(event.records.into_iter().map(RawValue::get).collect())
}

/// The scanner behind [`parse_event`]: `None` unless the text is exactly
/// `{"Records":[ {…}, … ]}` (any whitespace), every element an object with balanced brackets
/// outside strings.
pub(super) fn split_records(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
            i += 1;
        }
        i
    };
    let expect = |i: usize, token: &[u8]| {
        b.get(i..i + token.len())
            .filter(|s| *s == token)
            .map(|_| i + token.len())
    };
    let mut i = expect(ws(0), b"{")?;
    i = expect(ws(i), b"\"Records\"")?;
    i = expect(ws(i), b":")?;
    i = expect(ws(i), b"[")?;
    let mut records = Vec::new();
    i = ws(i);
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let start = i;
            i = record_end(b, start)?;
            records.push(text.get(start..i)?);
            i = ws(i);
            match b.get(i)? {
                b',' => i = ws(i + 1),
                b']' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    i = expect(ws(i), b"}")?;
    (ws(i) == b.len()).then_some(records)
}

/// The end (exclusive) of the object starting at `start`, found by balancing brackets outside
/// strings: how a record is delimited without being parsed. `None` unless `b[start]` is `{`
/// and the brackets balance.
fn record_end(b: &[u8], start: usize) -> Option<usize> {
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let mut i = start;
    let mut depth = 0usize;
    loop {
        match *b.get(i)? {
            b'"' => {
                // Jump to the closing quote, stepping over escaped characters.
                i += 1;
                loop {
                    i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
                    if b[i] == b'\\' {
                        i += 2;
                    } else {
                        break;
                    }
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The JSON objects of a text holding one or more, back to back or one per line (the input of
/// `streamseal ingest`): each one's first line (from 1) and its text. Objects are delimited
/// the way records are, by balancing brackets outside strings, without being parsed; reading
/// them is the capture path's job. Anything else between them is an error naming its line.
pub fn split_documents(text: &str) -> Result<Vec<(usize, &str)>, String> {
    match split_lines(text) {
        Some(lines) => Ok(lines),
        None => split_balanced(text),
    }
}

/// [`split_documents`] by balancing brackets, for any layout.
fn split_balanced(text: &str) -> Result<Vec<(usize, &str)>, String> {
    let b = text.as_bytes();
    let mut out = vec![];
    let mut at = 0;
    let mut line = 1;
    loop {
        let skipped = b[at..]
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len() - at);
        line += memchr::memchr_iter(b'\n', &b[at..at + skipped]).count();
        at += skipped;
        if at == b.len() {
            return Ok(out);
        }
        let column = at
            - b[..at]
                .iter()
                .rposition(|c| *c == b'\n')
                .map_or(0, |n| n + 1)
            + 1;
        if b[at] != b'{' {
            let found: String = text[at..].chars().take(20).collect();
            return Err(format!(
                "not valid JSON at line {line} column {column}: expected an object (an event), found {found:?}"
            ));
        }
        let end = record_end(b, at).ok_or_else(|| {
            format!(
                "not valid JSON at line {line} column {column}: the object starting here does not end"
            )
        })?;
        out.push((line, &text[at..end]));
        line += memchr::memchr_iter(b'\n', &b[at..end]).count();
        at = end;
    }
}

/// [`split_documents`] for the usual input, one object per line (JSON Lines), found with
/// `memchr` instead of a walk over every byte; `None` for anything else.
///
/// A line is taken whole when it starts with `{`, ends with `}`, and holds no `}` followed
/// (after blanks) by `{`. That is exact: JSON strings cannot hold a raw line break, and
/// outside a string `{` can never follow `}`, so such a line cannot continue on the next one,
/// and without `}{` it cannot hold two objects side by side. A `}{` inside a string only
/// sends the text the long way. Whether each line is valid JSON is the parser's question.
fn split_lines(text: &str) -> Option<Vec<(usize, &str)>> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        match json_line(line.as_bytes()) {
            JsonLine::Blank => {}
            JsonLine::Object(range) => out.push((n + 1, &line[range])),
            JsonLine::Other => return None,
        }
    }
    Some(out)
}

/// What one line of an input is, for [`split_lines`]: blank, one whole object (the byte range
/// without the surrounding blanks), or something that sends the input the long way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonLine {
    /// Only blanks.
    Blank,
    /// One object, at this range of the line.
    Object(std::ops::Range<usize>),
    /// Anything else.
    Other,
}

/// Classifies one line (without its line break) as [`split_lines`] does.
pub fn json_line(line: &[u8]) -> JsonLine {
    let start = line.iter().position(|c| !c.is_ascii_whitespace());
    let end = line.iter().rposition(|c| !c.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return JsonLine::Blank;
    };
    let b = &line[start..=end];
    if b[0] != b'{' || b[b.len() - 1] != b'}' {
        return JsonLine::Other;
    }
    let side_by_side = memchr::memchr_iter(b'}', b).any(|close| {
        b[close + 1..]
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|c| *c == b'{')
    });
    if side_by_side {
        JsonLine::Other
    } else {
        JsonLine::Object(start..end + 1)
    }
}

/// Reads the records of a `{"Records":[…]}` event in the pass that finds them: each record's
/// raw text and its parse come out together, so a batch is read once instead of being split
/// first. Record boundaries are exactly those of [`parse_event`]; an event this cursor cannot
/// walk (another shape, unbalanced brackets, trailing text) makes it return `None`, and the
/// caller goes back to [`parse_event`], which reads it or names the problem.
///
/// A cursor can also start at a *guessed* record boundary in the middle of an event
/// ([`EventCursor::at`], [`guess_boundary`]): that is how several threads read one event.
/// A guess is only trusted once the cursor reading the part before it lands on it exactly.
#[derive(Clone)]
pub struct EventCursor<'a> {
    s: Scanner<'a>,
    first: bool,
}

impl<'a> EventCursor<'a> {
    /// A cursor before the first record, or `None` if `text` does not start `{"Records":[`.
    pub fn new(text: &'a str) -> Option<EventCursor<'a>> {
        let mut s = Scanner::new(text, 0);
        s.eat(b'{')?;
        if s.string()? != "Records" {
            return None;
        }
        s.eat(b':')?;
        s.eat(b'[')?;
        Some(EventCursor { s, first: true })
    }

    /// A cursor at byte `pos`, taken to be the start of a record.
    pub(crate) fn at(text: &'a str, pos: usize) -> EventCursor<'a> {
        EventCursor {
            s: Scanner::new(text, pos),
            first: true,
        }
    }

    /// The event text.
    pub(crate) fn text(&self) -> &'a str {
        self.s.text()
    }

    /// The byte position the cursor is at.
    pub(crate) fn pos(&self) -> usize {
        self.s.pos()
    }

    /// Where the next record starts; `Some(None)` once the array and the event are complete
    /// (nothing but whitespace after them), `None` if the text breaks the shape.
    pub fn next_start(&mut self) -> Option<Option<usize>> {
        if !self.s.next_element(&mut self.first)? {
            self.s.eat(b'}')?;
            return self.s.at_end().then_some(None);
        }
        (self.s.peek()? == b'{').then_some(Some(self.s.pos()))
    }

    /// Reads the record [`EventCursor::next_start`] found; `index` is its position in the
    /// batch, for messages. The outer `None` means its brackets do not balance (the event as a
    /// whole is broken); a record that is merely invalid comes back as an error, like
    /// [`ChangeRecord::parse`] gives it. The canonical key and images are written into `texts`
    /// (the capture path builds its Parquet columns from those buffers); a record that fails
    /// leaves nothing there.
    pub fn record_into(
        &mut self,
        index: usize,
        canon: &mut Canonicalizer,
        paths: &ColumnPaths,
        texts: &mut TextColumns,
    ) -> Option<(
        &'a str,
        Result<ChangeRecord<'a, SpannedItem<'a>>, ChangeError>,
    )> {
        let text = self.s.text();
        let start = self.s.pos();
        let mark = texts.mark();
        let mut attempt = self.s.clone();
        if let Some(mut wire) = scan_record(&mut attempt, canon, paths, texts) {
            let raw = text.get(start..attempt.pos())?;
            self.s = attempt;
            let parsed = ChangeRecord::from_wire_at(raw, index, &mut wire);
            if parsed.is_err() {
                texts.rollback(mark);
            }
            return Some((raw, parsed));
        }
        texts.rollback(mark);
        let end = record_end(text.as_bytes(), start)?;
        let raw = text.get(start..end)?;
        self.s = Scanner::new(text, end);
        let parsed = ChangeRecord::parse_serde(raw, index, canon, paths);
        Some((raw, parsed.map(|rec| rec.into_spanned(texts))))
    }
}

/// The raw text of the first record of a usual-shape event (see [`EventCursor`]); `None` for
/// an event without records or of another shape.
pub(crate) fn first_record(text: &str) -> Option<&str> {
    let mut cursor = EventCursor::new(text)?;
    let start = cursor.next_start()??;
    text.get(start..record_end(text.as_bytes(), start)?)
}

/// A plausible record boundary at or after byte `from`: the `{` of `},{"name"` where `name` is
/// a member of a stream record. Only a guess (an image can hold the same bytes); see
/// [`EventCursor`] for how it is checked.
pub(crate) fn guess_boundary(text: &str, from: usize) -> Option<usize> {
    const FIELDS: [&[u8]; 8] = [
        b"eventID\"",
        b"eventName\"",
        b"eventVersion\"",
        b"eventSource\"",
        b"eventSourceARN\"",
        b"awsRegion\"",
        b"dynamodb\"",
        b"userIdentity\"",
    ];
    let b = text.as_bytes();
    let mut at = from;
    while let Some(found) = memchr::memmem::find(b.get(at..)?, b"},{\"") {
        let brace = at + found + 2;
        let name = &b[brace + 2..];
        if FIELDS.iter().any(|f| name.starts_with(f)) {
            return Some(brace);
        }
        at = brace;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_by_brackets_with_their_lines() {
        let text = "{\"a\":\"}{\\\"\"}\n\n  {\"b\":\n[1]}{\"c\":{}}\n";
        let docs = split_documents(text).unwrap();
        assert_eq!(
            docs,
            vec![
                (1, "{\"a\":\"}{\\\"\"}"),
                (3, "{\"b\":\n[1]}"),
                (4, "{\"c\":{}}")
            ]
        );
        assert_eq!(split_documents(" \n").unwrap(), vec![]);
        assert!(
            split_documents("{}\n [1]")
                .unwrap_err()
                .starts_with("not valid JSON at line 2 column 2: expected")
        );
        assert!(
            split_documents("{}\n\n{\"a\":1")
                .unwrap_err()
                .starts_with("not valid JSON at line 3 column 1:")
        );
    }

    #[test]
    fn one_object_per_line_splits_as_the_bracket_walk_does() {
        let texts = [
            "{\"a\":1}\n{\"b\":{\"c\":[{}]}}\n",
            "{\"a\":1}\r\n\r\n  {\"b\":2}  \r\n",
            "{\"a\":\"x}{y\"}\n",
            "{\"a\":1}{\"b\":2}\n{\"c\":3}",
            "{\"a\":1} \t {\"b\":2}",
            "{\"a\":{}}\n",
        ];
        for text in texts {
            let lines = split_lines(text);
            let balanced = split_balanced(text).unwrap();
            if let Some(lines) = lines {
                assert_eq!(lines, balanced, "{text:?}");
            }
            assert_eq!(split_documents(text).unwrap(), balanced, "{text:?}");
        }
        // Two objects on one line, or a brace inside a string, take the long way.
        assert!(split_lines("{\"a\":1} {\"b\":2}").is_none());
        assert!(split_lines("{\"a\":\"x} {y\"}").is_none());
        assert!(split_lines("{\"a\":\n1}").is_none());
        assert_eq!(split_lines("{\"a\":1}\n{\"b\":2}").unwrap().len(), 2);
    }
}

//! Event files, as `streamseal ingest` reads them: split into events, each checked as UTF-8
//! on its own, on the capture's kept threads when the file is one event per line.

use rayon::prelude::*;

use crate::model::change::{JsonLine, json_line, split_documents};

/// The events of an input file: each one's first line (from 1) and its text. An input of one
/// object per line (the usual shape) is split on line breaks, and its lines are checked (shape
/// and UTF-8) on `threads` threads; anything else is checked as one text and split by
/// balancing brackets ([`split_documents`]). Errors name the line, or the byte offset.
pub fn split_events(bytes: &[u8], threads: usize) -> Result<Vec<(usize, &str)>, String> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        lines.push(&bytes[start..end]);
        start = end + 1;
    }
    lines.push(&bytes[start..]);
    /// One line: `Ok(None)` when blank, `Err(None)` when not an object alone on its line.
    type Line<'a> = Result<Option<(usize, &'a str)>, Option<String>>;
    fn read<'a>((n, line): (usize, &&'a [u8])) -> Line<'a> {
        match json_line(line) {
            JsonLine::Blank => Ok(None),
            JsonLine::Other => Err(None),
            JsonLine::Object(range) => match std::str::from_utf8(&line[range.clone()]) {
                Ok(text) => Ok(Some((n + 1, text))),
                Err(e) => Err(Some(format!(
                    "line {}: not UTF-8 text (invalid byte at column {})",
                    n + 1,
                    range.start + e.valid_up_to() + 1
                ))),
            },
        }
    }
    let checked: Result<Vec<_>, _> = match crate::capture::workers::pool(threads) {
        Some(pool) => pool.install(|| lines.par_iter().enumerate().map(read).collect()),
        None => lines.iter().enumerate().map(read).collect(),
    };
    match checked {
        Ok(events) => Ok(events.into_iter().flatten().collect()),
        Err(Some(message)) => Err(message),
        Err(None) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                )
            })?;
            split_documents(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_as_text_does_on_any_thread_count() {
        let texts = [
            "{\"a\":1}\n{\"b\":{\"c\":[{}]}}\n",
            "{\"a\":1}\r\n\r\n  {\"b\":2}  \r\n",
            "{\"a\":1} {\"b\":2}\n{\"c\":3}",
            "{\"b\":\n[1]}{\"c\":{}}\n",
            "",
            "\n\n",
        ];
        for text in texts {
            for threads in [1, 2] {
                assert_eq!(
                    split_events(text.as_bytes(), threads).unwrap(),
                    split_documents(text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named() {
        let lines = b"{\"a\":1}\n{\"b\":\"\xff\"}\n";
        assert_eq!(
            split_events(lines, 2).unwrap_err(),
            "line 2: not UTF-8 text (invalid byte at column 7)"
        );
        let other = b"{\"a\":\n\"\xff\"}";
        assert_eq!(
            split_events(other, 2).unwrap_err(),
            "not UTF-8 text (invalid byte at offset 7)"
        );
        assert!(split_documents("{}\n [1]").is_err());
        assert!(split_events(b"{}\n [1]", 2).is_err());
    }
}

//! The fast path: the same canonical writing, driven by the byte scanner instead of serde.
//! Every branch mirrors a serde visitor of `serde_path`; where the visitor would fail, this
//! returns `None` and the caller re-reads the record through serde, which names the problem.

use super::*;

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

    pub(super) fn scan_map<'a>(
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

    pub(super) fn scan_value<'a>(
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
pub(super) fn place<'a>(
    captured: &mut [Option<Captured<'a>>],
    node: Option<&ColumnPaths>,
    v: Captured<'a>,
) {
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

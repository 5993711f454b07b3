//! The single-pass canonicaliser: serde seeds that write canonical bytes as they read (the
//! authority, and the fallback of the fast path).

use super::*;

/// Reads a JSON object of attribute names to typed values (an item, or the body of an M).
pub(super) struct MapSeed<'c, 'p> {
    pub(super) c: &'c mut Canonicalizer,
    pub(super) node: Option<&'p ColumnPaths>,
    pub(super) captured: &'c mut Vec<Option<Captured<'static>>>,
    pub(super) depth: usize,
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
pub(super) fn finish_sorted(
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
pub(super) fn sort_entries(
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
pub(super) struct ValueSeed<'c, 'p> {
    pub(super) c: &'c mut Canonicalizer,
    pub(super) node: Option<&'p ColumnPaths>,
    pub(super) captured: &'c mut Vec<Option<Captured<'static>>>,
    pub(super) depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl ValueSeed<'_, '_> {
    pub(super) fn wanted(&self) -> bool {
        self.node.is_some_and(|n| !n.columns.is_empty())
    }

    pub(super) fn capture(&mut self, value: impl FnOnce() -> Captured<'static>) {
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

pub(super) fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth + 1 > MAX_NESTING_DEPTH {
        return Err(E::custom(format_args!(
            "nested deeper than DynamoDB's limit of {MAX_NESTING_DEPTH} levels"
        )));
    }
    Ok(depth + 1)
}

pub(super) struct ListSeed<'c> {
    pub(super) c: &'c mut Canonicalizer,
    pub(super) captured: &'c mut Vec<Option<Captured<'static>>>,
    pub(super) depth: usize,
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
pub(super) enum SetKind {
    S,
    N,
    B,
}

pub(super) struct SetSeed<'c> {
    pub(super) c: &'c mut Canonicalizer,
    pub(super) kind: SetKind,
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

//! Deterministic synthetic change streams for an `orders`-like table (see `schemas/orders.toml`).
//!
//! Used by the tests, the benchmarks and `streamseal sample-events`. A [`Workload`] keeps the
//! ground-truth table state as it emits INSERT, MODIFY, REMOVE and TTL-REMOVE records, shaped
//! exactly like Lambda's DynamoDB stream events, so a test can compare what a backup restores
//! with what the table held. Items use every DynamoDB type (S including empty and non-ASCII, N
//! with 38 digits and extreme exponents, B, BOOL, NULL, SS, NS, BS, L, nested M) and realistic
//! text, padded to a target size.
//!
//! The generator is a SplitMix64 written out here rather than a `rand` RNG because fixtures and
//! benchmark inputs must stay byte-identical across dependency upgrades, which `rand` does not
//! promise for its small RNGs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;

use crate::model::change::StreamViewType;

/// SplitMix64: tiny, fast, and stable forever.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p` percent.
    pub(crate) fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

const WORDS: &[&str] = &[
    "delivery",
    "window",
    "fragile",
    "customer",
    "requested",
    "leave",
    "parcel",
    "with",
    "neighbour",
    "at",
    "the",
    "back",
    "door",
    "please",
    "ring",
    "twice",
    "gift",
    "wrap",
    "included",
    "invoice",
    "attached",
    "express",
    "warehouse",
    "Zürich",
    "São",
    "Paulo",
    "東京",
    "naïve",
    "café",
    "ø",
    "order",
    "priority",
    "return",
    "label",
    "printed",
    "signed",
    "by",
    "courier",
    "on",
    "arrival",
];
const CITIES: &[&str] = &[
    "Berlin",
    "Lisbon",
    "Zürich",
    "Osaka",
    "Austin",
    "Nairobi",
    "Montréal",
    "Perth",
];
const STATUSES: &[&str] = &["PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"];

/// One emitted change and its place in the ground truth.
#[derive(Debug, Clone)]
pub struct Change {
    /// The Lambda record JSON.
    pub record: String,
    /// Canonical key text.
    pub key: String,
    /// The item after the change, `None` when removed.
    pub after: Option<String>,
}

/// A generator of changes plus the table state they produce.
#[derive(Debug, Clone)]
pub struct Workload {
    rng: Rng,
    table: String,
    view: StreamViewType,
    item_bytes: usize,
    /// Ground truth: key text → item DynamoDB JSON.
    state: BTreeMap<String, (String, String, String)>,
    /// The live keys in no particular order, so a random pick is O(1).
    live: Vec<String>,
    /// Each live key's index in `live`.
    slot: HashMap<String, usize>,
    next_customer: u64,
    sequence: u128,
    time_ms: i64,
    /// Milliseconds between consecutive changes.
    pub step_ms: i64,
    /// At most this many live items: once reached, an insert becomes an update, so a longer
    /// history makes the same size of table (benchmarks of history length).
    pub max_items: Option<usize>,
}

impl Workload {
    /// A workload for `table` with items of about `item_bytes` bytes of DynamoDB JSON.
    pub fn new(seed: u64, table: &str, view: StreamViewType, item_bytes: usize) -> Workload {
        Workload {
            rng: Rng::new(seed),
            table: table.to_owned(),
            view,
            item_bytes,
            state: BTreeMap::new(),
            live: Vec::new(),
            slot: HashMap::new(),
            next_customer: 0,
            // 21 digits, as real sequence numbers have at least.
            sequence: 100_000_000_000_000_000_000 + u128::from(seed % 1000) * 1_000_000,
            time_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            step_ms: 250,
            max_items: None,
        }
    }

    /// The stream ARN the records carry.
    pub fn stream_arn(&self) -> String {
        format!(
            "arn:aws:dynamodb:eu-west-1:123456789012:table/{}/stream/2026-01-01T00:00:00.000",
            self.table
        )
    }

    /// The ground-truth items (DynamoDB JSON), in key order.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.state.values().map(|(_, _, item)| item.as_str())
    }

    /// Number of live items.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// Current synthetic clock, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.time_ms
    }

    /// Emits the next change.
    pub fn next_change(&mut self) -> Change {
        self.sequence += 1 + u128::from(self.rng.below(50));
        self.time_ms += self.step_ms;
        let mut roll = self.rng.below(100);
        if roll < 50 && self.max_items.is_some_and(|m| self.live.len() >= m) {
            roll = 50 + roll % 35;
        }
        let existing = if self.live.is_empty() {
            None
        } else {
            let n = self.rng.below(self.live.len() as u64) as usize;
            self.live.get(n).cloned()
        };
        match (roll, existing) {
            (0..=49, _) | (_, None) => {
                self.next_customer += 1;
                let pk = format!("customer#{:06}", self.next_customer % 5000);
                let sk = format!("order#{:012x}", self.rng.next_u64() & 0xffff_ffff_ffff);
                let key = format!(r#"{{"pk":{{"S":"{pk}"}},"sk":{{"S":"{sk}"}}}}"#);
                let item = self.item(&pk, &sk);
                let old = self
                    .state
                    .insert(key.clone(), (pk, sk, item.clone()))
                    .map(|(_, _, i)| i);
                let kind = if old.is_some() {
                    "MODIFY"
                } else {
                    self.slot.insert(key.clone(), self.live.len());
                    self.live.push(key.clone());
                    "INSERT"
                };
                self.change(kind, &key, Some(item), old, false)
            }
            (50..=84, Some(key)) => {
                let (pk, sk, old) = self.state[&key].clone();
                let item = self.item(&pk, &sk);
                self.state.insert(key.clone(), (pk, sk, item.clone()));
                self.change("MODIFY", &key, Some(item), Some(old), false)
            }
            (roll, Some(key)) => {
                let (_, _, old) = self.state.remove(&key).unwrap_or_default();
                self.forget(&key);
                self.change("REMOVE", &key, None, Some(old), roll >= 95)
            }
        }
    }

    /// Drops `key` from the pick list by moving the last key into its slot.
    fn forget(&mut self, key: &str) {
        if let Some(at) = self.slot.remove(key) {
            self.live.swap_remove(at);
            if let Some(moved) = self.live.get(at) {
                self.slot.insert(moved.clone(), at);
            }
        }
    }

    /// A Lambda event of `n` changes.
    pub fn next_event(&mut self, n: usize) -> String {
        let records: Vec<String> = (0..n).map(|_| self.next_change().record).collect();
        format!("{{\"Records\":[{}]}}", records.join(","))
    }

    fn change(
        &mut self,
        kind: &str,
        key: &str,
        new: Option<String>,
        old: Option<String>,
        ttl: bool,
    ) -> Change {
        let mut dynamodb = format!(
            r#"{{"ApproximateCreationDateTime":{}.{:03},"Keys":{key},"#,
            self.time_ms / 1000,
            self.time_ms % 1000
        );
        if self.view.has_new()
            && let Some(n) = &new
        {
            let _ = write!(dynamodb, r#""NewImage":{n},"#);
        }
        if self.view.has_old()
            && let Some(o) = &old
        {
            let _ = write!(dynamodb, r#""OldImage":{o},"#);
        }
        let size =
            key.len() + new.as_ref().map_or(0, String::len) + old.as_ref().map_or(0, String::len);
        let _ = write!(
            dynamodb,
            r#""SequenceNumber":"{}","SizeBytes":{size},"StreamViewType":"{}"}}"#,
            self.sequence,
            self.view.as_str()
        );
        let identity = if ttl {
            r#","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"}"#
        } else {
            ""
        };
        let record = format!(
            r#"{{"eventID":"{:032x}","eventName":"{kind}","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"eu-west-1","dynamodb":{dynamodb},"eventSourceARN":"{}"{identity}}}"#,
            self.rng.next_u64() as u128 * 31 + self.sequence,
            self.stream_arn()
        );
        Change {
            record,
            key: key.to_owned(),
            after: new,
        }
    }

    fn words(&mut self, n: usize) -> String {
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[self.rng.below(WORDS.len() as u64) as usize]);
        }
        out
    }

    fn item(&mut self, pk: &str, sk: &str) -> String {
        let r = &mut self.rng;
        let city = CITIES[r.below(CITIES.len() as u64) as usize];
        let status = STATUSES[r.below(STATUSES.len() as u64) as usize];
        let cents = r.below(10_000_000);
        let lines = 1 + r.below(4);
        let placed = self.time_ms / 1000 - r.below(86_400) as i64;
        let mut items = String::new();
        for i in 0..lines {
            if i > 0 {
                items.push(',');
            }
            let _ = write!(
                items,
                r#"{{"M":{{"sku":{{"S":"SKU-{:05}"}},"qty":{{"N":"{}"}},"price":{{"N":"{}.{:02}"}}}}}}"#,
                r.below(99_999),
                1 + r.below(9),
                r.below(500),
                r.below(100)
            );
        }
        let sig: Vec<u8> = (0..(r.below(24) as usize))
            .map(|_| r.next_u64() as u8)
            .collect();
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        let gift = r.chance(20);
        let coupon = if r.chance(30) {
            r#"{"NULL":true}"#.to_owned()
        } else {
            format!(r#"{{"S":"SAVE{}"}}"#, r.below(50))
        };
        // Edge values rotate through the workload so every batch exercises them.
        let edge = match r.below(6) {
            0 => r#"{"N":"12345678901234567890123456789012345678"}"#,
            1 => r#"{"N":"-9.9999999999999999999999999999999999999E+125"}"#,
            2 => r#"{"N":"1E-130"}"#,
            3 => r#"{"S":""}"#,
            4 => r#"{"B":""}"#,
            _ => r#"{"S":"nul\u0000 tab\t quote\" backslash\\ emoji 😀"}"#,
        };
        let qty_set = {
            let a = 1 + r.below(5);
            format!(r#"["{a}","{}","-{}.5"]"#, a + 1 + r.below(5), r.below(9))
        };
        let weight = format!("{}.{:03}", r.below(40), r.below(1000));
        let ship = format!("2026-{:02}-{:02}", 1 + r.below(12), 1 + r.below(28));
        let expires = placed + 30 * 86_400;
        let customer_name = self.words(2);
        let mut item = format!(
            concat!(
                r#"{{"pk":{{"S":"{pk}"}},"sk":{{"S":"{sk}"}},"#,
                r#""customer":{{"M":{{"id":{{"S":"{pk}"}},"name":{{"S":"{name}"}},"address":{{"M":{{"city":{{"S":"{city}"}},"postcode":{{"S":"{pc:05}"}},"lines":{{"L":[{{"S":"{n1} Main St"}},{{"S":"Apt {n2}"}}]}}}}}}}}}},"#,
                r#""status":{{"S":"{status}"}},"total":{{"N":"{eur}.{ct:02}"}},"item_count":{{"N":"{lines}"}},"#,
                r#""weight_kg":{{"N":"{weight}"}},"gift":{{"BOOL":{gift}}},"ship_date":{{"S":"{ship}"}},"#,
                r#""placed_at":{{"N":"{placed}"}},"expires_at":{{"N":"{expires}"}},"coupon":{coupon},"#,
                r#""tags":{{"SS":["{status}","web","{city}"]}},"qty_set":{{"NS":{qty_set}}},"#,
                r#""blobs":{{"BS":["AQID","{sig_or}"]}},"signature":{{"B":"{sig}"}},"#,
                r#""lines":{{"L":[{items}]}},"edge":{edge},"#
            ),
            pk = pk,
            sk = sk,
            name = customer_name,
            city = city,
            pc = placed % 100_000,
            n1 = cents % 300,
            n2 = cents % 40,
            status = status,
            eur = cents / 100,
            ct = cents % 100,
            lines = lines,
            weight = weight,
            gift = gift,
            ship = ship,
            placed = placed,
            expires = expires,
            coupon = coupon,
            qty_set = qty_set,
            sig_or = if sig.is_empty() || sig == "AQID" {
                "BAUG".to_owned()
            } else {
                sig.clone()
            },
            sig = sig,
            items = items,
            edge = edge,
        );
        let used = item.len() + 24;
        let words = self.item_bytes.saturating_sub(used) / 7;
        let notes = self.words(words.max(1));
        let _ = write!(item, r#""notes":{{"S":"{notes}"}}}}"#);
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::change::{ChangeRecord, parse_event};
    use crate::model::item::{Canonicalizer, ColumnPaths, canonicalize};

    #[test]
    fn events_parse_and_items_are_valid_and_sized() {
        let mut w = Workload::new(7, "orders", StreamViewType::NewAndOldImages, 1024);
        let event = w.next_event(500);
        let raws = parse_event(&event).unwrap();
        assert_eq!(raws.len(), 500);
        let mut kinds = std::collections::HashSet::new();
        let mut ttl = 0;
        for (i, raw) in raws.iter().enumerate() {
            let rec =
                ChangeRecord::parse(raw, i, &mut Canonicalizer::new(), &ColumnPaths::default())
                    .unwrap_or_else(|e| panic!("{e}\n{raw}"));
            kinds.insert(rec.kind);
            ttl += rec.ttl_delete as usize;
            if let Some(img) = &rec.new_image {
                assert!(
                    (900..1300).contains(&img.text.len()),
                    "item size {}",
                    img.text.len()
                );
            }
        }
        assert_eq!(kinds.len(), 3);
        assert!(ttl > 0);
        for item in w.items() {
            canonicalize(item).unwrap();
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a = Workload::new(1, "t_1", StreamViewType::NewImage, 600).next_event(20);
        let b = Workload::new(1, "t_1", StreamViewType::NewImage, 600).next_event(20);
        assert_eq!(a, b);
    }

    #[test]
    fn pick_list_tracks_the_table() {
        let mut w = Workload::new(3, "t", StreamViewType::NewAndOldImages, 200);
        for _ in 0..5_000 {
            w.next_change();
        }
        let mut live = w.live.clone();
        live.sort();
        let state: Vec<String> = w.state.keys().cloned().collect();
        assert_eq!(live, state);
        for (key, at) in &w.slot {
            assert_eq!(&w.live[*at], key);
        }
    }
}

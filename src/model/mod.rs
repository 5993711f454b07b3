//! The data model: what every stage agrees on, with no I/O but the store reads of manifests,
//! ledgers, bases and shard maps.
//!
//! - [`item`]: lossless DynamoDB attribute values: validation, canonical form, item hash and
//!   the order-independent [`item::StateDigest`]; `scan` is its strict byte tokenizer (the
//!   fast path; serde_json remains the authority and the fallback).
//! - [`change`]: change records parsed from Lambda DynamoDB stream events; sequence numbers.
//! - [`schema`]: optional `schemas/<table>.toml` files: key schema and typed columns.
//! - [`definition`]: the source table's definition as DynamoDB describes it (keys, indexes,
//!   billing, TTL, stream), so a restore can recreate the table without a schema file.
//! - [`layout`]: every object key in one place.
//! - [`log`]: log entries (segments, quarantined records, gaps, compactions,
//!   acknowledgments), which wait in the inbox until a seal commits them.
//! - [`manifest`]: sealed manifests, file lists and ledgers, their digests.
//! - [`findings`]: the finding kinds every report uses, and the ledger that carries gaps,
//!   rejected entries and quarantined records until a person acknowledges them.
//! - [`quarantine`]: what a quarantined record does to the state.
//! - [`base`]: bootstrap base state files and their manifest.
//! - [`checkpoint`]: state checkpoints (the full state at a snapshot) and expire records.
//! - [`shards`]: the stream's shard map kept in the store.
//! - [`clock`]: injectable time (nothing about completeness depends on it).

pub mod base;
pub mod change;
pub mod checkpoint;
pub mod clock;
pub mod definition;
pub mod findings;
pub mod item;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod quarantine;
mod scan;
pub mod schema;
pub mod shards;

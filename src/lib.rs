//! streamseal: continuous, lossless, restorable backups of Amazon DynamoDB tables.
//!
//! A table's DynamoDB Stream is captured, batch by batch, into immutable Parquet *segments* in
//! an object store (S3 or a local directory). Each segment keeps every change losslessly (the
//! key and both images in canonical DynamoDB JSON: the same item value for value, see [`item`])
//! next to typed columns for Athena, and is described by a *log entry* named by the segment,
//! which waits in the table's inbox until a seal records it: later stages (seal, verify,
//! restore) read entries and file lists instead of listing the whole bucket.
//!
//! # Layout
//!
//! - [`item`]: lossless DynamoDB attribute values: parsing, validation, canonical form, item
//!   hash and the order-independent [`item::StateDigest`].
//! - `scan`: a strict byte-level JSON tokenizer, the fast path of record parsing (serde_json
//!   remains the authority: the fast path steps aside on anything it does not read exactly).
//! - [`change`]: change records parsed from Lambda DynamoDB stream events; sequence numbers.
//! - [`schema`]: optional `schemas/<table>.toml` files: key schema and typed columns.
//! - [`segment`]: change records → Arrow → Parquet bytes + [`segment::SegmentRecord`].
//! - [`layout`]: every object key in one place.
//! - [`store`]: the [`store::ObjectStore`] trait and its S3, local and in-memory backends,
//!   plus the conformance suite they all pass.
//! - [`ingest`]: the capture path every front end shares: batch in, segments and quarantined
//!   records out, with `batchItemFailures` semantics.
//! - [`lambda`]: the Lambda handler: configuration from the environment, dispatch by event
//!   shape, metrics.
//! - [`log`]: the log entries (segments, quarantined records, gaps, compactions,
//!   acknowledgments) that wait in the inbox until a seal commits them.
//! - [`manifest`]: sealed snapshot manifests, their file lists and digests.
//! - [`seal`]: sealing in O(new changes) from the inbox, resolving duplicate records.
//! - [`findings`]: the finding kinds every report uses, and the ledger that carries gaps,
//!   rejected entries and quarantined records until a person acknowledges them.
//! - [`quarantine`]: what a quarantined record does to the state, so restores and digests
//!   account for it.
//! - [`verify`]: quick and deep verification of a snapshot and its chain, and deep verify's
//!   audit of the whole store.
//! - [`clock`]: injectable time (nothing about completeness depends on it).
//! - [`trigger`]: outage events (alarms, AWS Health, manual requests, Step Functions tasks,
//!   restore tasks).
//! - [`compact`]: small sealed segments rewritten as large objects, published through the log.
//! - [`onfailure`]: the event source mapping's on-failure messages, recorded as gaps.
//! - [`athena`]: Athena DDL (changes table with partition projection, latest-state view).
//! - [`infer`]: proposing a schema file from captured images.
//! - [`workers`]: helper threads kept for the process's life, for batches split across
//!   threads.
//! - [`workload`]: deterministic synthetic change streams for tests, benches and samples.
//!
//! The binaries are thin: `streamseal` (the CLI, `src/bin/streamseal.rs`) and
//! `streamseal-lambda` (`src/bin/streamseal-lambda.rs`). Domain modules never call an AWS SDK;
//! only `store::s3` and the [`aws`] module (DynamoDB reads and writes, the stream API) do.

pub mod athena;
pub mod aws;
pub mod base;
pub mod change;
pub mod clock;
pub mod compact;
pub mod demo;
pub mod findings;
pub mod infer;
pub mod ingest;
pub mod item;
pub mod lambda;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod onfailure;
mod pages;
pub mod quarantine;
pub mod restore;
mod scan;
pub mod schema;
pub mod seal;
pub mod segment;
pub mod shards;
pub mod store;
pub mod trigger;
pub mod verify;
pub mod workers;
pub mod workload;

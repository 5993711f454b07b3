//! streamseal: continuous, lossless, restorable backups of Amazon DynamoDB tables.
//!
//! A table's DynamoDB Stream is captured, batch by batch, into immutable Parquet *segments* in
//! an object store (S3 or a local directory). Each segment keeps every change losslessly (the
//! key and both images in canonical DynamoDB JSON: the same item value for value, see
//! [`model::item`]) next to typed columns for Athena, and is described by a *log entry* named
//! by the segment, which waits in the table's inbox until a seal records it. Seals turn what
//! was captured into immutable snapshot manifests; verify proves them complete and intact, or
//! names what is wrong; restore rebuilds a table from them.
//!
//! # Layout
//!
//! The crate is organised by stage; each folder's `mod.rs` says more.
//!
//! - [`model`]: what everything else agrees on, with no I/O of its own: items and their
//!   canonical form and digest ([`model::item`], with the byte tokenizer `scan`), stream
//!   records and sequence numbers ([`model::change`]), schema files ([`model::schema`]), every
//!   object key ([`model::layout`]), log entries ([`model::log`]), manifests, file lists and
//!   ledgers ([`model::manifest`], [`model::findings`]), quarantined records' effects
//!   ([`model::quarantine`]), bootstrap bases ([`model::base`]), shard maps
//!   ([`model::shards`]) and injectable time ([`model::clock`]).
//! - [`segment`]: prepared rows → Arrow columns → one Parquet object and its record; reading
//!   segments back ([`segment::pages`]: page compression with one zstd context per thread).
//! - [`capture`]: the capture path every front end shares: one batch of stream records in,
//!   segments, quarantined records and their inbox entries out ([`capture::workers`]: the
//!   kept thread pools; [`capture::input`]: event files split for `streamseal ingest`).
//! - [`ops`]: what runs on a captured backup: [`ops::seal`], [`ops::verify`],
//!   [`ops::restore`] (materialization in bounded memory, file sinks), [`ops::compact`],
//!   [`ops::athena`] (DDL), [`ops::infer`] (schema proposals).
//! - [`store`]: the [`store::ObjectStore`] trait and its S3, local and in-memory backends.
//! - [`aws`]: everything that calls an AWS SDK but S3: DynamoDB reads and writes, the
//!   Streams API (`tail`), bootstrap, a whole restore with its self-check.
//! - [`lambda`]: the Lambda handler: configuration, dispatch by event shape, outage
//!   triggers ([`lambda::trigger`]), on-failure messages ([`lambda::onfailure`]), metrics.
//! - [`progress`]: counters long operations advance and callers (the CLI's progress bars)
//!   read.
//! - `testing` (only with the `testing` cargo feature, which the crate's own tests turn on):
//!   the object store conformance suite, a store that fails or holds chosen writes, DynamoDB
//!   fault injection and a skewed clock.
//! - [`demo`]: the whole product in one process on a generated workload
//!   ([`demo::workload`]: deterministic synthetic streams with ground truth, also behind the
//!   CLI's `sample-events`).
//!
//! The binaries are thin: `streamseal` (the CLI, one file per command under
//! `src/bin/streamseal/`) and `streamseal-lambda` (`src/bin/streamseal-lambda.rs`). Only
//! [`store::s3`] and [`aws`] send requests through an AWS SDK; [`lambda`] and the CLI only build
//! clients from [`aws::config`]'s configuration and hand them in.

pub mod aws;
pub mod capture;
pub mod demo;
pub mod lambda;
pub mod model;
pub mod ops;
pub mod progress;
pub mod segment;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

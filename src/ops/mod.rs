//! What runs on a captured backup.
//!
//! - [`seal`]: turns what waits in the inbox into an immutable snapshot, in O(new changes).
//! - [`verify`]: quick and deep verification of a snapshot and its chain, and deep verify's
//!   audit of the whole store.
//! - [`restore`]: the table state at a snapshot or an instant, in bounded memory, handed to a
//!   sink (DynamoDB-JSON files here; DynamoDB in `crate::aws::restore`).
//! - [`checkpoint`]: state checkpoints (the full state at a snapshot) and `expire`, which
//!   deletes changes a checkpoint covers once they are older than the retention.
//! - [`compact`]: small sealed segments rewritten as large objects, published through the
//!   inbox.
//! - [`athena`]: Athena DDL for the changes table and its views.
//! - [`infer`]: a schema file proposed from captured images.
//! - [`get`]: one item at a snapshot or an instant, or its history, without materializing
//!   the table.
//! - [`diff`]: the keys that differ between two points of a backup, in bounded memory.

pub mod athena;
pub mod checkpoint;
pub mod compact;
pub mod diff;
pub mod get;
pub mod infer;
pub mod restore;
pub mod seal;
pub mod verify;

//! The object store conformance suite, run against every backend: in memory, a local
//! directory, and S3 through the moto emulator on loopback.

mod common;

use std::sync::Arc;

use streamseal::store::{local::LocalStore, memory::MemoryStore};
use streamseal::testing::store_conformance as conformance;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(Arc::new(LocalStore::new(dir.path()).unwrap()))
        .await
        .unwrap();
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    conformance::run(common::fresh_s3_store("conformance", "").await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_with_prefix_conforms() {
    conformance::run(common::fresh_s3_store("conformance-prefixed", "backups/prod/").await)
        .await
        .unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

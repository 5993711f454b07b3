//! An in-process object store for unit tests and the in-process demo.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{
    Listing, ObjectMeta, ObjectStore, PutMode, PutOutcome, PutResult, StoreError, check_key,
};

/// Objects in a sorted map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, (Bytes, i64)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, i64)>> {
        // A panic while holding the lock cannot leave the map half-updated (every operation is a
        // single map call), so a poisoned lock is safe to keep using.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every key, in order (for tests).
    pub fn keys(&self) -> Vec<String> {
        self.objects().keys().cloned().collect()
    }

    /// Removes every object (benchmarks reuse one store across iterations).
    pub fn clear(&self) {
        self.objects().clear();
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn url(&self) -> String {
        "memory://".into()
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> PutResult {
        check_key(&self.url(), key)?;
        let mut objects = self.objects();
        if mode == PutMode::IfAbsent && objects.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        // The write time is the store's own clock, as S3's LastModified is.
        objects.insert(
            key.to_owned(),
            (body, chrono::Utc::now().timestamp_millis()),
        );
        Ok(PutOutcome::Created)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(&self.url(), key)?;
        self.objects()
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| StoreError::NotFound {
                store: self.url(),
                key: key.to_owned(),
            })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_key(&self.url(), key)?;
        Ok(self.objects().get(key).map(|(b, t)| ObjectMeta {
            key: key.to_owned(),
            size: b.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(b))),
            modified_ms: Some(*t),
        }))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Listing {
        use std::ops::Bound;
        let objects = self.objects();
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        Ok(objects
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit.unwrap_or(usize::MAX))
            .map(|(k, (v, t))| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
                sha256: None,
                modified_ms: Some(*t),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(&self.url(), key)?;
        self.objects().remove(key);
        Ok(())
    }
}

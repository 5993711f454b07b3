//! A store wrapper that injects failures, for tests of retry and partial-failure behaviour.
//!
//! [`FaultyStore`] forwards to an inner store until told to fail: puts whose key contains a
//! pattern, or every put after the first `n`, then fail with a transient error (as a throttled
//! or unreachable S3 would) for a set number of times or until [`FaultyStore::heal`].

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, PutMode, PutOutcome, StoreError};

#[derive(Debug, Default, Clone)]
struct Plan {
    /// Puts allowed before failures start (`None`: no count-based failure).
    fail_after_puts: Option<usize>,
    /// Fail puts whose key contains this.
    fail_matching: Option<String>,
    /// How many failures to inject before healing by itself (`None`: until healed).
    failures_left: Option<usize>,
    puts_seen: usize,
}

/// Forwards to `inner`, failing puts as planned.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: Mutex<Plan>,
}

impl FaultyStore {
    /// A pass-through wrapper.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            plan: Mutex::new(Plan::default()),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets `n` more puts through, then fails every put until healed.
    pub fn fail_after_puts(&self, n: usize) {
        let mut p = self.plan();
        p.fail_after_puts = Some(p.puts_seen + n);
        p.failures_left = None;
    }

    /// Fails puts of keys containing `pattern`, `times` times (or until healed when `None`).
    pub fn fail_puts_matching(&self, pattern: &str, times: Option<usize>) {
        let mut p = self.plan();
        p.fail_matching = Some(pattern.to_owned());
        p.failures_left = times;
    }

    /// Stops injecting failures.
    pub fn heal(&self) {
        let mut p = self.plan();
        p.fail_after_puts = None;
        p.fail_matching = None;
    }

    /// Counts a put and fails it when the plan says so.
    fn inject(&self, key: &str) -> Result<(), StoreError> {
        let fail = {
            let mut p = self.plan();
            p.puts_seen += 1;
            let planned = p.fail_after_puts.is_some_and(|n| p.puts_seen > n)
                || p.fail_matching.as_deref().is_some_and(|m| key.contains(m));
            let fail = planned && p.failures_left != Some(0);
            if fail && let Some(left) = p.failures_left.as_mut() {
                *left -= 1;
            }
            fail
        };
        if fail {
            return Err(StoreError::Transient {
                op: "put",
                store: self.url(),
                key: key.to_owned(),
                message: "injected failure (SlowDown)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome, StoreError> {
        self.inject(key)?;
        self.inner.put(key, body, mode).await
    }

    async fn put_with_sha256(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        sha256: [u8; 32],
    ) -> Result<PutOutcome, StoreError> {
        self.inject(key)?;
        self.inner.put_with_sha256(key, body, mode, sha256).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix, start_after, limit).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

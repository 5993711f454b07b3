//! A store wrapper that injects failures and stops, for tests of retry, partial-failure and
//! crash behaviour.
//!
//! [`FaultyStore`] forwards to an inner store until told otherwise:
//! - to *fail*: puts whose key contains a pattern, or every put after the first `n`, fail with
//!   a transient error (as a throttled or unreachable S3 would) for a set number of times or
//!   until [`FaultyStore::heal`];
//! - to *hold*: writes (puts and deletes) whose key contains a pattern, or every write after
//!   the first `n`, wait without reaching the inner store until [`FaultyStore::release`]. A
//!   test that drops the caller's future while a write is held sees exactly what a process
//!   killed between two writes leaves behind; one that releases it sees a write in flight.

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{Listing, ObjectMeta, ObjectStore, PutMode, PutOptions, PutResult, StoreError};

#[derive(Debug, Default, Clone)]
struct Plan {
    /// Puts allowed before failures start (`None`: no count-based failure).
    fail_after_puts: Option<usize>,
    /// Fail puts whose key contains this.
    fail_matching: Option<String>,
    /// How many failures to inject before healing by itself (`None`: until healed).
    failures_left: Option<usize>,
    puts_seen: usize,
    /// Writes allowed before writes are held (`None`: no count-based hold).
    hold_after_writes: Option<usize>,
    /// Hold writes whose key contains this.
    hold_matching: Option<String>,
    writes_seen: usize,
}

/// Forwards to `inner`, failing puts and holding writes as planned.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: Mutex<Plan>,
    held: tokio::sync::Notify,
    released: tokio::sync::Semaphore,
}

impl FaultyStore {
    /// A pass-through wrapper.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            plan: Mutex::new(Plan::default()),
            held: tokio::sync::Notify::new(),
            released: tokio::sync::Semaphore::new(0),
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

    /// Lets `n` more writes (puts and deletes) through, then holds every later one until
    /// released.
    pub fn hold_after_writes(&self, n: usize) {
        let mut p = self.plan();
        p.hold_after_writes = Some(p.writes_seen + n);
    }

    /// Holds writes of keys containing `pattern` until released.
    pub fn hold_writes_matching(&self, pattern: &str) {
        self.plan().hold_matching = Some(pattern.to_owned());
    }

    /// Waits until a write is held (returns at once if one was held since the last wait).
    pub async fn held(&self) {
        self.held.notified().await;
    }

    /// Lets every held write through and holds no more.
    pub fn release(&self) {
        let mut p = self.plan();
        p.hold_after_writes = None;
        p.hold_matching = None;
        self.released
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// Writes (puts and deletes) seen so far, held ones included.
    pub fn writes(&self) -> usize {
        self.plan().writes_seen
    }

    /// Counts a write and holds it when the plan says so.
    async fn hold(&self, key: &str) {
        let hold = {
            let mut p = self.plan();
            p.writes_seen += 1;
            p.hold_after_writes.is_some_and(|n| p.writes_seen > n)
                || p.hold_matching.as_deref().is_some_and(|m| key.contains(m))
        };
        if hold {
            self.held.notify_one();
            // Closed or released: either way the write goes on.
            let _ = self.released.acquire().await;
        }
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

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> PutResult {
        self.hold(key).await;
        self.inject(key)?;
        self.inner.put(key, body, mode).await
    }

    async fn put_with(&self, key: &str, body: Bytes, mode: PutMode, opts: PutOptions) -> PutResult {
        self.hold(key).await;
        self.inject(key)?;
        self.inner.put_with(key, body, mode, opts).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Listing {
        self.inner.list(prefix, start_after, limit).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.hold(key).await;
        self.inner.delete(key).await
    }
}

//! Progress of long operations: counters an operation advances as it goes and a caller reads
//! while it runs (the CLI draws its progress bars from them). Relaxed atomics, so advancing
//! costs next to nothing, and optional everywhere: an operation given none counts nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an operation has done so far.
#[derive(Debug, Default)]
pub struct Progress {
    stage: Mutex<&'static str>,
    done: AtomicU64,
    total: AtomicU64,
    bytes: AtomicU64,
}

/// A reading of a [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// What is being done now (`""` before the first stage).
    pub stage: &'static str,
    /// Units done in this stage.
    pub done: u64,
    /// Units this stage will do, when known (0: unknown).
    pub total: u64,
    /// Bytes read or written so far, over every stage.
    pub bytes: u64,
}

impl Progress {
    /// A new stage of `total` units (0 when unknown): the count starts again.
    pub fn stage(&self, name: &'static str, total: u64) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = name;
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// Raises the current stage's total (work discovered as it goes).
    pub(crate) fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more units done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more bytes read or written.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// What has been done so far.
    pub fn read(&self) -> Snapshot {
        Snapshot {
            stage: *self.stage.lock().unwrap_or_else(|p| p.into_inner()),
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Advances `progress`, when there is one.
pub(crate) fn tick(progress: Option<&Progress>, n: u64, bytes: u64) {
    if let Some(p) = progress {
        p.add(n);
        if bytes > 0 {
            p.add_bytes(bytes);
        }
    }
}

/// Starts a stage of `progress`, when there is one.
pub(crate) fn stage(progress: Option<&Progress>, name: &'static str, total: u64) {
    if let Some(p) = progress {
        p.stage(name, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_counts_from_zero_and_bytes_add_up_over_stages() {
        let p = Progress::default();
        assert_eq!(p.read().stage, "");
        stage(Some(&p), "reading", 10);
        tick(Some(&p), 4, 100);
        assert_eq!(
            p.read(),
            Snapshot {
                stage: "reading",
                done: 4,
                total: 10,
                bytes: 100
            }
        );
        stage(Some(&p), "writing", 0);
        p.add_total(3);
        tick(Some(&p), 1, 50);
        tick(None, 1, 1);
        assert_eq!(
            p.read(),
            Snapshot {
                stage: "writing",
                done: 1,
                total: 3,
                bytes: 150
            }
        );
    }
}

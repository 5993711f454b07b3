//! The text buffers a batch's canonical keys and images are written into, kept from one batch
//! to the next.

use super::*;

/// Text buffers kept from one batch to the next. A batch's canonical texts go into buffers an
/// earlier batch already grew, whose memory is already mapped: fresh buffers cost page faults
/// and zeroing on every batch (measured in `docs/performance.md`). A few are kept (one per reading
/// thread), and none over 64 MiB, so an unusually large event does not stay resident.
#[derive(Default)]
pub(super) struct BufferPool(pub(super) Mutex<Vec<TextColumns>>);

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buffers' contents are megabytes of item text: show how many are kept, not them.
        let kept = self.0.lock().map_or(0, |p| p.len());
        write!(f, "BufferPool({kept} kept)")
    }
}

impl BufferPool {
    pub(super) const KEEP: usize = 8;
    pub(super) const MAX_BYTES: usize = 64 << 20;

    /// Empty buffers sized for `event_bytes` of event text.
    pub(super) fn take(&self, event_bytes: usize) -> TextColumns {
        let mut texts = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        texts.reset_for(event_bytes);
        texts
    }

    /// Keeps `texts` for a later batch.
    pub(super) fn give(&self, texts: TextColumns) {
        if texts.capacity() <= Self::MAX_BYTES {
            let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < Self::KEEP {
                pool.push(texts);
            }
        }
    }

    /// Keeps the buffers of a batch whose segments are encoded (no array still uses them).
    pub(super) fn give_all(&self, texts: Vec<ColumnTexts>) {
        for t in texts {
            if let Some(t) = t.into_text_columns() {
                self.give(t);
            }
        }
    }
}

//! Time, injectable.
//!
//! Nothing streamseal decides about *completeness* depends on a clock: log entries are named
//! by what they hold and found through the inbox, not by the time they were written (see
//! [`crate::ops::seal`]). Clocks still stamp things people read (`written_at`, a manifest's
//! `created_at`, Object Lock periods, a seal's lag), and every such stamp comes from a
//! [`Clock`] the caller hands in, so tests can run a writer two hours ahead or a seal an hour
//! behind and prove that nothing is lost.

use std::fmt::Debug;
use std::sync::Arc;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The current time as RFC 3339 with milliseconds, UTC.
    fn now_rfc3339(&self) -> String {
        rfc3339(self.now_ms())
    }
}

/// A clock shared by the stages of one process.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// The machine's clock, shared.
pub(crate) fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// RFC 3339 with milliseconds, UTC, of an instant in ms (the raw number when out of range).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_print_as_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    }
}

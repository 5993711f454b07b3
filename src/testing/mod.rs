//! Test scaffolding, compiled only with the `testing` cargo feature (the crate's own
//! integration tests turn it on through a dev-dependency on itself): nothing here ships in the
//! CLI or the Lambda.
//!
//! - [`store_conformance`]: the one suite every [`crate::store::ObjectStore`] backend passes.
//! - [`faulty_store`]: a store wrapper that fails or holds chosen writes, to show what a
//!   throttled store, a crash between two writes or a write in flight leaves behind.
//! - [`dynamo_faults`]: faults injected into DynamoDB calls at the SDK's interceptor layer, so
//!   the real request path and retry policy run.
//! - [`SkewedClock`]: the machine's clock moved by an offset, for writers and seals whose
//!   clocks disagree.
//!
//! The deterministic workload generator stays in [`crate::demo::workload`], because the `demo`
//! and `sample-events` commands ship it.

pub mod dynamo_faults;
pub mod faulty_store;
pub mod store_conformance;

use crate::model::clock::Clock;

/// The machine's clock moved by a fixed offset: a host whose clock runs ahead (positive) or
/// behind (negative).
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    /// Milliseconds added to the machine's clock.
    pub offset_ms: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::clock::SystemClock;

    #[test]
    fn a_skewed_clock_runs_at_its_offset() {
        let ahead = SkewedClock {
            offset_ms: 2 * 3_600_000,
        };
        let d = ahead.now_ms() - SystemClock.now_ms();
        assert!((7_199_000..=7_200_000).contains(&d), "{d}");
    }
}

//! One AWS configuration for every client streamseal builds (S3, DynamoDB, DynamoDB Streams):
//! region, credentials and endpoint from the standard chain (`AWS_REGION`, `AWS_PROFILE`,
//! `AWS_ENDPOINT_URL`, instance and Lambda roles, …), and one retry policy.
//!
//! The retry policy is the SDK's standard retry, configured once here: exponential backoff with
//! jitter, a retry quota shared by a client's calls, and the SDK's classifier, which retries
//! throttling (`ThrottlingException`, `ProvisionedThroughputExceededException`, `SlowDown`, …),
//! transient errors (timeouts, 5xx, dropped connections) and nothing else: access denied,
//! validation errors and missing resources fail at once. No module keeps a retry loop of its
//! own; the one resubmission left, of `BatchWriteItem`'s unprocessed items (a partial success,
//! not an error), paces itself with [`resubmit_backoff`].

use std::sync::Once;
use std::time::Duration;

use aws_config::retry::RetryConfig;

/// Attempts per call (the first and up to seven retries).
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// The retry policy of every AWS client streamseal builds.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(5))
}

/// A configuration loader with streamseal's retry policy, for callers that set more (tests
/// point it at an emulator).
pub(crate) fn loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(retry_config())
}

/// Loads the configuration from the standard environment. Without a region, warns once, in
/// one line, saying how to set one (calls then fail naming the missing region).
pub async fn load() -> aws_config::SdkConfig {
    let config = loader().load().await;
    if config.region().is_none() {
        static WARNED: Once = Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "no AWS region found: set AWS_REGION (e.g. AWS_REGION=us-east-1), or a region in the AWS_PROFILE's config"
            );
        });
    }
    config
}

/// Backoff between resubmissions of `BatchWriteItem`'s unprocessed items: the same shape as
/// the retry policy (exponential from 50 ms, capped at 5 s, with jitter), for
/// [`MAX_ATTEMPTS`] - 1 resubmissions.
pub(crate) fn resubmit_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(MAX_ATTEMPTS as usize - 1)
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resubmissions_are_bounded_and_capped() {
        let delays: Vec<Duration> = resubmit_backoff().collect();
        assert_eq!(delays.len(), MAX_ATTEMPTS as usize - 1);
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert_eq!(retry_config().max_attempts(), MAX_ATTEMPTS);
    }
}

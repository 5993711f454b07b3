//! Fault injection for DynamoDB clients, at the SDK's client layer (an interceptor), so tests
//! exercise the real request path and the real retry policy: throttling errors,
//! `UnprocessedItems`, access denied, and an outage of the target after a number of writes. Used by the restore tests; harmless unless installed.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

/// Which faults to inject into `BatchWriteItem` calls (counted from 1).
#[derive(Debug, Default)]
pub struct DynamoFaults {
    /// `BatchWriteItem` calls seen.
    pub calls: AtomicU64,
    /// Every n-th call answers `ProvisionedThroughputExceededException` (0: never).
    pub throttle_every: u64,
    /// Every n-th call answers with all its items unprocessed (0: never).
    pub unprocessed_every: u64,
    /// After this many calls, every call fails as if the target were unreachable.
    pub fail_after: Option<u64>,
    /// After this many calls, every call is answered `AccessDeniedException`.
    pub deny_after: Option<u64>,
    /// Faults injected so far.
    pub injected: AtomicU64,
}

#[derive(Debug, Clone)]
enum Fault {
    Throttle,
    Deny,
    Unprocessed(Vec<u8>),
}

impl Storable for Fault {
    type Storer = StoreReplace<Fault>;
}

impl DynamoFaults {
    /// `BatchWriteItem` calls seen.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Intercept for DynamoFaults {
    fn name(&self) -> &'static str {
        "DynamoFaults"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        if request.headers().get("x-amz-target") != Some("DynamoDB_20120810.BatchWriteItem") {
            return Ok(());
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_after.is_some_and(|f| n > f) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err("injected fault: the target table is unreachable".into());
        }
        let fault = if self.deny_after.is_some_and(|d| n > d) {
            Some(Fault::Deny)
        } else if self.throttle_every > 0 && n.is_multiple_of(self.throttle_every) {
            Some(Fault::Throttle)
        } else if self.unprocessed_every > 0 && n.is_multiple_of(self.unprocessed_every) {
            request
                .body()
                .bytes()
                .map(|b| Fault::Unprocessed(b.to_vec()))
        } else {
            None
        };
        if let Some(f) = fault {
            self.injected.fetch_add(1, Ordering::Relaxed);
            cfg.interceptor_state().store_put(f);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(fault) = cfg.load::<Fault>().cloned() else {
            return Ok(());
        };
        // One fault per attempt: the SDK's own retry of this call must see the real answer.
        cfg.interceptor_state().unset::<Fault>();
        let (status, body) = match fault {
            Fault::Throttle => (
                400u16,
                serde_json::json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "message": "injected: throughput exceeded"
                }),
            ),
            Fault::Deny => (
                400u16,
                serde_json::json!({
                    "__type": "com.amazon.coral.service#AccessDeniedException",
                    "message": "injected: not authorized to perform dynamodb:BatchWriteItem"
                }),
            ),
            Fault::Unprocessed(request) => {
                let v: serde_json::Value = serde_json::from_slice(&request)?;
                (
                    200,
                    serde_json::json!({ "UnprocessedItems": v["RequestItems"] }),
                )
            }
        };
        *context.response_mut() = Response::new(
            StatusCode::try_from(status)?,
            SdkBody::from(body.to_string()),
        );
        Ok(())
    }
}

/// A shareable handle to [`DynamoFaults`] (an SDK interceptor is owned by the client; tests
/// keep the other handle to read the counters).
#[derive(Debug, Clone)]
pub struct SharedFaults(pub std::sync::Arc<DynamoFaults>);

impl Intercept for SharedFaults {
    fn name(&self) -> &'static str {
        "DynamoFaults"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.read_before_transmit(context, rc, cfg)
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.modify_before_deserialization(context, rc, cfg)
    }
}

//! The error of a DynamoDB or DynamoDB Streams call, as the adapters in this folder report it:
//! which operation on which resource, the service's error code when there is one, and the
//! SDK's error as the source.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::store::StoreError;

/// A failed AWS call, or an answer streamseal cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The call failed, after the retry policy ([`crate::aws::config`]) gave up or at once
    /// for errors retrying cannot fix (access denied, validation, missing resource).
    #[error("{op} {resource}: {message}")]
    Call {
        /// The API operation, e.g. `BatchWriteItem`.
        op: &'static str,
        /// Table, stream or shard it was called on.
        resource: String,
        /// The service's error code (`AccessDeniedException`, …), when it answered.
        code: Option<String>,
        /// What the service or the connection said.
        message: String,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An item or record the service returned (or one to send) cannot be converted.
    #[error("{context}: {problem}")]
    Convert {
        /// Which item or record.
        context: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The service answered, but not as expected (a table that does not become active, …).
    #[error("{0}")]
    Unexpected(String),
    /// The backup store failed (checkpoints kept there).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The service's error code (when it answered) and a one-line message: `Code: message` for a
/// service error, else the error and its sources (a dispatch or timeout error's own display
/// is generic; its sources say what happened), never the SDK's debug dump.
pub(crate) fn describe<E, R>(err: &SdkError<E, R>) -> (Option<String>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(s) => (
            s.code().map(str::to_owned),
            format!(
                "{}: {}",
                s.code().unwrap_or("error"),
                s.message().unwrap_or("no message")
            ),
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            (None, text)
        }
    }
}

impl AwsError {
    /// The error of a call of `op` on `resource`.
    pub(crate) fn call<E, R>(op: &'static str, resource: &str, err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, message) = describe(&err);
        AwsError::Call {
            op,
            resource: resource.to_owned(),
            code,
            message,
            source: Box::new(err),
        }
    }

    /// A conversion error about `context`.
    pub(crate) fn convert(context: impl Into<String>, problem: impl std::fmt::Display) -> AwsError {
        AwsError::Convert {
            context: context.into(),
            problem: problem.to_string(),
        }
    }
}

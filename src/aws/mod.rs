//! Adapters to AWS services other than S3 (which is an object store, `crate::store::s3`):
//! DynamoDB as a restore target and scan source, DynamoDB Streams for `tail`, bootstrap from a
//! scan or an export, and the whole restore. Domain modules never import an AWS SDK; these
//! adapters do, all with the one configuration and retry policy of [`config`].

pub mod bootstrap;
pub mod config;
pub mod distributed;
pub mod dynamodb;
mod error;
pub mod inplace;
pub mod restore;
pub mod tail;

pub use error::AwsError;
pub(crate) use error::describe as describe_sdk_error;

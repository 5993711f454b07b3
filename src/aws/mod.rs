//! Adapters to AWS services other than S3 (which is an object store, `crate::store::s3`).
//! Domain modules never import an AWS SDK; these adapters do.

pub mod bootstrap;
pub mod dynamodb;
pub mod faults;
pub mod restore;
pub mod tail;

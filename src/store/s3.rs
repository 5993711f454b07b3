//! Amazon S3 (or an S3-compatible endpoint) as an object store: `s3://bucket/prefix`.
//!
//! Region, credentials and endpoint come from the standard AWS configuration chain
//! (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, instance and
//! Lambda roles, …). When an endpoint is overridden the client uses path-style addressing, which
//! emulators and most S3-compatible stores need. Every put carries its SHA-256
//! (`x-amz-checksum-sha256`), so S3 rejects a body corrupted in transit, and immutable writes
//! use `If-None-Match: *` so a second writer of the same key is refused instead of overwriting.
//! Encryption at rest is the bucket's default encryption (SSE-KMS in `deploy/template.yaml`).
//!
//! The bucket may be in another region than the client's (the two-region deployment writes to
//! the recovery region from the table's): the client then signs for the bucket's region, given
//! or discovered once with HeadBucket (S3 names the region in `x-amz-bucket-region` even when
//! it refuses the call). The SDK does not follow S3's `PermanentRedirect`; a redirect is a
//! [`StoreError::WrongRegion`] naming the bucket's region, never retried.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ObjectLockMode};
use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{
    Listing, ObjectMeta, ObjectStore, PutMode, PutOptions, PutOutcome, PutResult, Retention,
    RetentionMode, StoreError, check_key,
};

/// An S3 bucket, optionally under a key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

/// Whether the environment points the SDK at a non-AWS endpoint.
fn endpoint_overridden() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

impl S3Store {
    /// Builds a client from the standard AWS environment, for the bucket's `region` (none:
    /// discovered, see [`S3Store::from_config`]).
    pub async fn from_env(
        bucket: &str,
        prefix: &str,
        region: Option<String>,
    ) -> Result<S3Store, StoreError> {
        S3Store::from_config(&crate::aws::config::load().await, bucket, prefix, region).await
    }

    /// Builds a client from a loaded AWS configuration, signing for `region`, the bucket's.
    /// Without one, asks S3 where the bucket is (one HeadBucket) and uses that region when S3
    /// names one; if it does not (no such bucket, no network), keeps the configuration's
    /// region, and the first call reports what is wrong.
    pub async fn from_config(
        config: &aws_config::SdkConfig,
        bucket: &str,
        prefix: &str,
        region: Option<String>,
    ) -> Result<S3Store, StoreError> {
        let build = |region: Option<&str>| {
            let mut builder = aws_sdk_s3::config::Builder::from(config);
            if endpoint_overridden() || config.endpoint_url().is_some() {
                builder = builder.force_path_style(true);
            }
            if let Some(r) = region {
                builder = builder.region(aws_sdk_s3::config::Region::new(r.to_owned()));
            }
            Client::from_conf(builder.build())
        };
        if region.is_some() {
            return S3Store::new(build(region.as_deref()), bucket, prefix);
        }
        let store = S3Store::new(build(None), bucket, prefix)?;
        match store.bucket_region().await {
            Some(found) if Some(found.as_str()) != store.region().as_deref() => {
                tracing::info!(bucket, region = %found, "the bucket is in another region than the client's; using the bucket's");
                S3Store::new(build(Some(&found)), bucket, prefix)
            }
            _ => Ok(store),
        }
    }

    /// The region S3 says the bucket is in (HeadBucket's `x-amz-bucket-region`, which S3 sends
    /// with a success, a redirect and a refusal alike), if it says.
    pub async fn bucket_region(&self) -> Option<String> {
        let found = match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(out) => out.bucket_region().map(str::to_owned),
            Err(SdkError::ServiceError(e)) => region_header(e.raw()),
            Err(SdkError::ResponseError(e)) => region_header(e.raw()),
            Err(e) => {
                tracing::debug!(bucket = %self.bucket, error = %crate::aws::describe_sdk_error(&e).1, "could not ask S3 for the bucket's region");
                None
            }
        };
        found.filter(|r| !r.is_empty())
    }

    /// The region the client signs for.
    pub fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.to_string())
    }

    /// Wraps an existing client (built once per Lambda container and shared).
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Result<S3Store, StoreError> {
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(StoreError::BadUrl {
                url: format!("s3://{bucket}/{prefix}"),
                reason: format!("{bucket:?} is not a valid S3 bucket name"),
            });
        }
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(S3Store {
            client,
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// The PutObject request, with the body's SHA-256 as its checksum (S3 checks it on
    /// receipt and keeps it for HEAD).
    async fn send_put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        retention: Option<Retention>,
        sha256: [u8; 32],
    ) -> Result<PutOutcome, StoreError> {
        let checksum = base64::engine::general_purpose::STANDARD.encode(sha256);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            // Naming the algorithm as well as giving the value makes every S3 implementation
            // keep the checksum for HEAD (moto keys it off `x-amz-sdk-checksum-algorithm`).
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            .body(ByteStream::from(body));
        if mode == PutMode::IfAbsent {
            request = request.if_none_match("*");
        }
        if let Some(r) = retention {
            request = request
                .object_lock_mode(match r.mode {
                    RetentionMode::Governance => ObjectLockMode::Governance,
                    RetentionMode::Compliance => ObjectLockMode::Compliance,
                })
                .object_lock_retain_until_date(DateTime::from_millis(r.until_ms));
        }
        match request.send().await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(SdkError::ServiceError(e)) if status_of(e.raw()) == 412 => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(self.error("put", key, e)),
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn error<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &err {
            SdkError::ServiceError(e) => Some(status_of(e.raw())),
            SdkError::ResponseError(e) => Some(status_of(e.raw())),
            _ => None,
        };
        let raw = match &err {
            SdkError::ServiceError(e) => Some(e.raw()),
            SdkError::ResponseError(e) => Some(e.raw()),
            _ => None,
        };
        let named = raw.and_then(region_header);
        let client_region = self.region().unwrap_or_else(|| "none".into());
        // 301 PermanentRedirect (or a 400 naming another region, as an
        // AuthorizationHeaderMalformed does): the bucket is elsewhere. Any other status
        // (404 included) keeps its meaning, whatever region header comes with it.
        let elsewhere = named.as_deref().is_some_and(|r| r != client_region);
        if status == Some(301) || (status == Some(400) && elsewhere) {
            return StoreError::WrongRegion {
                op,
                store: self.url(),
                key: key.to_owned(),
                region: named.unwrap_or_else(|| "unknown".into()),
            };
        }
        let (_, message) = crate::aws::describe_sdk_error(&err);
        let transient = match &err {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            // A connection that failed may work later; a request that could not be built
            // (no region, no credentials) will not.
            SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
            SdkError::ServiceError(_) => {
                status.is_some_and(|s| s == 408 || s == 409 || s == 429 || s >= 500)
            }
            _ => false,
        };
        if status == Some(404) {
            return StoreError::NotFound {
                store: self.url(),
                key: key.to_owned(),
            };
        }
        if status == Some(403) {
            return StoreError::Denied {
                op,
                store: self.url(),
                key: key.to_owned(),
                message,
            };
        }
        if transient {
            StoreError::Transient {
                op,
                store: self.url(),
                key: key.to_owned(),
                message,
            }
        } else {
            StoreError::Permanent {
                op,
                store: self.url(),
                key: key.to_owned(),
                message,
            }
        }
    }
}

/// The `x-amz-bucket-region` header of a response.
fn region_header(raw: &HttpResponse) -> Option<String> {
    raw.headers()
        .get("x-amz-bucket-region")
        .map(str::to_owned)
        .filter(|r| !r.is_empty())
}

fn status_of(raw: &HttpResponse) -> u16 {
    raw.status().as_u16()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> PutResult {
        self.put_with(key, body, mode, PutOptions::default()).await
    }

    async fn put_with(&self, key: &str, body: Bytes, mode: PutMode, opts: PutOptions) -> PutResult {
        check_key(&self.url(), key)?;
        let sha256 = opts.sha256.unwrap_or_else(|| Sha256::digest(&body).into());
        self.send_put(key, body, mode, opts.retention, sha256).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(&self.url(), key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("get", key, e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Transient {
                op: "get",
                store: self.url(),
                key: key.to_owned(),
                message: format!("reading the body: {e}"),
            })?;
        Ok(body.into_bytes())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_key(&self.url(), key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                // S3 reports the checksum the object was written with (base64); one that does
                // not decode is reported as absent, which verify treats as a finding.
                sha256: out
                    .checksum_sha256()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .filter(|d| d.len() == 32)
                    .map(hex::encode),
                modified_ms: out.last_modified().and_then(|t| t.to_millis().ok()),
            })),
            Err(e) => match self.error("head", key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Listing {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let remaining = limit.map(|l| l.saturating_sub(out.len()));
            if remaining == Some(0) {
                break;
            }
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .max_keys(remaining.unwrap_or(1000).min(1000) as i32);
            if let Some(t) = &token {
                request = request.continuation_token(t);
            } else if let Some(s) = start_after {
                request = request.start_after(self.full_key(s));
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.error("list", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    sha256: None,
                    modified_ms: object.last_modified().and_then(|t| t.to_millis().ok()),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(&self.url(), key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("delete", key, e))?;
        Ok(())
    }
}

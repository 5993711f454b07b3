//! Object stores: where segments, log entries, manifests and quarantined records live.
//!
//! One small trait, [`ObjectStore`], with three backends:
//!
//! - [`s3::S3Store`] (`s3://bucket/prefix`) through `aws-sdk-s3`: the production store.
//! - [`local::LocalStore`] (`file:///path`): a directory, written atomically (temp file, fsync,
//!   link or rename, fsync of the directory).
//! - [`memory::MemoryStore`]: in process, for unit tests and the in-process demo.
//!
//! Objects are immutable in practice: data is written once with [`PutMode::IfAbsent`], which
//! is how a redelivered batch is recognised (`AlreadyExists`) instead of producing a copy.
//! `crate::testing::store_conformance` (behind the `testing` feature) is the single test
//! suite every backend passes.

pub mod local;
pub mod memory;
pub mod s3;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Write only if no object has the key (`If-None-Match: *`).
    IfAbsent,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was written.
    Created,
    /// `IfAbsent` and an object already had the key; nothing was written.
    AlreadyExists,
}

/// How long a written object must stay undeletable and unchanged, where the store enforces it
/// (S3 Object Lock on a bucket created with it enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Governance (privileged users may lift it) or compliance (nobody can, not even root).
    pub mode: RetentionMode,
    /// End of the retention period, ms since the epoch.
    pub until_ms: i64,
}

/// What a write may carry besides its body and mode (see [`ObjectStore::put_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Keep the object undeletable and unchanged until then, where the store enforces it
    /// (S3 Object Lock).
    pub retention: Option<Retention>,
    /// The body's SHA-256 when the caller already has it (the segment encoder computes it for
    /// the segment record): a store that sends a checksum with the body uses it instead of
    /// hashing the body again. S3 verifies it on receipt and refuses a body that does not
    /// match (`BadDigest`, a `Permanent` error; the moto emulator the tests use does not
    /// check), so the SHA-256 in a segment record is one S3 checked.
    pub sha256: Option<[u8; 32]>,
}

/// S3 Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` may delete or shorten it.
    Governance,
    /// Nobody can delete the object version or shorten the period.
    Compliance,
}

/// What a listing or a HEAD returns about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content (hex) as the store records it: returned by `head` (S3 reports
    /// the `x-amz-checksum-sha256` the object was written with; the local and memory stores
    /// compute it), never by `list`. `None` when the store has no checksum for the object,
    /// for example an S3 object written by another tool without one.
    pub sha256: Option<String>,
    /// When the store last wrote the object (ms since the epoch), by the store's own clock
    /// (S3's `LastModified`, the file's modification time), when it reports one. Only deep
    /// verify's audit reads it, to leave alone what was written after the latest seal.
    pub modified_ms: Option<i64>,
}

/// A failed store operation, with the key it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object has the key.
    #[error("object {key} not found in {store}")]
    NotFound {
        /// Store URL.
        store: String,
        /// Object key.
        key: String,
    },
    /// A failure that may succeed when retried (network, throttling, 5xx, I/O interruption).
    #[error("{op} {key} in {store} failed (transient, retry may succeed): {message}")]
    Transient {
        /// Operation name.
        op: &'static str,
        /// Store URL.
        store: String,
        /// Object key.
        key: String,
        /// Underlying error.
        message: String,
    },
    /// A failure retrying will not fix (permissions, bad bucket, invalid key).
    #[error("{op} {key} in {store} failed: {message}")]
    Permanent {
        /// Operation name.
        op: &'static str,
        /// Store URL.
        store: String,
        /// Object key.
        key: String,
        /// Underlying error.
        message: String,
    },
    /// The store refused the operation (S3's 403): no permission, or, for a read by a role
    /// without `s3:ListBucket`, no such object (S3 does not say which).
    #[error(
        "{op} {key} in {store} was refused (access denied, or the object does not exist and the caller may not list the bucket): {message}"
    )]
    Denied {
        /// Operation name.
        op: &'static str,
        /// Store URL.
        store: String,
        /// Object key.
        key: String,
        /// Underlying error.
        message: String,
    },
    /// The bucket is in another region than the client was configured for (S3 answered with
    /// a redirect, which the SDK does not follow). A configuration error: retrying cannot fix it.
    #[error(
        "{op} {key} in {store} failed: S3 redirected the request to the bucket's region, {region}, which is not the one the client signs for; give the target its region (s3://bucket/prefix?region={region}, or STREAMSEAL_TARGET_REGION={region})"
    )]
    WrongRegion {
        /// Operation name.
        op: &'static str,
        /// Store URL.
        store: String,
        /// Object key.
        key: String,
        /// The bucket's region, as S3 named it (`x-amz-bucket-region`), or `unknown`.
        region: String,
    },
    /// The store URL itself is unusable.
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl StoreError {
    /// Whether the failure says nothing about the object: it may pass later (transient), or
    /// once the configuration is fixed (access denied, another region). A check that would
    /// otherwise condemn an entry for good must fail instead.
    pub(crate) fn says_nothing_about_the_object(&self) -> bool {
        matches!(
            self,
            StoreError::Transient { .. }
                | StoreError::Denied { .. }
                | StoreError::WrongRegion { .. }
        )
    }
}

/// What a write returns.
pub type PutResult = Result<PutOutcome, StoreError>;

/// What a listing returns.
pub type Listing = Result<Vec<ObjectMeta>, StoreError>;

/// The operations streamseal needs from a bucket or a directory.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// The store's URL, for messages (`s3://bucket/prefix`, `file:///dir`, `memory://`).
    fn url(&self) -> String;

    /// Writes an object. With [`PutMode::IfAbsent`], an existing object is left untouched and
    /// [`PutOutcome::AlreadyExists`] is returned.
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> PutResult;

    /// [`ObjectStore::put`] with [`PutOptions`]: a retention period and the body's SHA-256
    /// where the store can use them. Stores that cannot (local, memory) write the body like
    /// [`ObjectStore::put`].
    async fn put_with(&self, key: &str, body: Bytes, mode: PutMode, opts: PutOptions) -> PutResult {
        let _ = opts;
        self.put(key, body, mode).await
    }

    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;

    /// Size and SHA-256 of an object, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Objects whose keys start with `prefix` and sort after `start_after`, in key order, at
    /// most `limit` of them (all when `None`).
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Listing;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Opens a store from a URL: `s3://bucket[/prefix][?region=REGION]`, `file:///abs/path` (or a
/// plain path), or `memory://`. S3 settings (endpoint, credentials, the client's region) come
/// from the standard AWS environment; see [`s3::S3Store::from_env`]. The bucket's region, when
/// it is not the client's, is the URL's `?region=`, else discovered from S3 (HeadBucket's
/// `x-amz-bucket-region`) once when the store is opened. For the backup itself use
/// [`open_target`], which also reads `STREAMSEAL_TARGET_REGION`.
pub async fn open(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_with(url, None, Role::Other).await
}

/// Opens the backup (`--target`, `STREAMSEAL_TARGET`): as [`open`], and an S3 bucket's region,
/// when the URL gives none, may also come from `STREAMSEAL_TARGET_REGION` (the two-region
/// deployment sets it). Other stores (schema files, exports) never take it: they may be in
/// another region than the backup.
pub async fn open_target(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    open_with(url, None, Role::Target).await
}

/// Which store is opened: the backup, or another (schemas, an export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The backup: `STREAMSEAL_TARGET_REGION` applies.
    Target,
    /// Anything else.
    Other,
}

/// [`open`] with an already loaded AWS configuration (the Lambda loads it once per container
/// and shares it between the S3 and stream clients).
pub(crate) async fn open_with(
    url: &str,
    aws: Option<&aws_config::SdkConfig>,
    role: Role,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (rest, region) = s3_region(url, rest, role)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let loaded;
        let config = match aws {
            Some(config) => config,
            None => {
                loaded = crate::aws::config::load().await;
                &loaded
            }
        };
        Ok(Arc::new(
            s3::S3Store::from_config(config, bucket, prefix, region).await?,
        ))
    } else if let Some(path) = url.strip_prefix("file://") {
        Ok(Arc::new(local::LocalStore::new(path)?))
    } else if url == "memory://" {
        Ok(Arc::new(memory::MemoryStore::new()))
    } else if url.contains("://") {
        Err(StoreError::BadUrl {
            url: url.to_owned(),
            reason: "expected s3://bucket/prefix, file:///path or memory://".into(),
        })
    } else {
        Ok(Arc::new(local::LocalStore::new(url)?))
    }
}

/// Splits an S3 URL's `?region=` off, or, for the backup, takes `STREAMSEAL_TARGET_REGION`
/// (set and not empty).
fn s3_region<'a>(
    url: &str,
    rest: &'a str,
    role: Role,
) -> Result<(&'a str, Option<String>), StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let (rest, region) = match rest.split_once('?') {
        None => (rest, None),
        Some((rest, query)) => {
            let Some(region) = query.strip_prefix("region=") else {
                return Err(bad(format!(
                    "unknown query {query:?}: the only one is ?region=REGION (the bucket's region)"
                )));
            };
            (rest, Some(region.to_owned()))
        }
    };
    let region = region.or_else(|| {
        (role == Role::Target)
            .then(|| std::env::var("STREAMSEAL_TARGET_REGION").ok())
            .flatten()
            .filter(|r| !r.is_empty())
    });
    if let Some(r) = &region {
        let valid = !r.is_empty()
            && r.len() <= 32
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(bad(format!(
                "{r:?} is not an AWS region (like eu-west-1); from ?region= or STREAMSEAL_TARGET_REGION"
            )));
        }
    }
    Ok((rest, region))
}

/// Checks a key is a relative, normalised path: no empty segments, no `.`/`..`, no leading `/`.
pub(crate) fn check_key(store: &str, key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || key.contains('\0');
    if bad {
        return Err(StoreError::Permanent {
            op: "validate",
            store: store.to_owned(),
            key: key.to_owned(),
            message: "object keys must be relative paths without empty, '.' or '..' segments"
                .into(),
        });
    }
    Ok(())
}

/// Reads many objects with at most `concurrency` requests in flight; results are in the order
/// of `keys`. Seal and verify use it to read hundreds of small log entries without paying one
/// round trip each in sequence.
pub(crate) async fn get_many(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
) -> Vec<Result<Bytes, StoreError>> {
    get_many_counted(store, keys, concurrency, None).await
}

/// [`get_many`], counting each object read (and its bytes) in `progress`.
pub(crate) async fn get_many_counted(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
    progress: Option<&crate::progress::Progress>,
) -> Vec<Result<Bytes, StoreError>> {
    run_many(
        store,
        keys,
        concurrency,
        |s, k| async move { s.get(&k).await },
        progress,
        |b: &Bytes| b.len() as u64,
    )
    .await
}

/// Deletes many objects, at most `concurrency` at a time (each counted in `progress`); the
/// first failure is returned after every deletion has been tried. Deleting a missing object
/// succeeds.
pub(crate) async fn delete_many(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
    progress: Option<&crate::progress::Progress>,
) -> Result<(), StoreError> {
    let results = run_many(
        store,
        keys,
        concurrency,
        |s, k| async move { s.delete(&k).await },
        progress,
        |_| 0,
    )
    .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// HEADs many objects with at most `concurrency` requests in flight, in the order of `keys`.
pub(crate) async fn head_many(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
) -> Vec<Result<Option<ObjectMeta>, StoreError>> {
    head_many_counted(store, keys, concurrency, None).await
}

/// [`head_many`], counting each object in `progress`.
pub(crate) async fn head_many_counted(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
    progress: Option<&crate::progress::Progress>,
) -> Vec<Result<Option<ObjectMeta>, StoreError>> {
    run_many(
        store,
        keys,
        concurrency,
        |s, k| async move { s.head(&k).await },
        progress,
        |_| 0,
    )
    .await
}

async fn run_many<T, F, Fut>(
    store: &Arc<dyn ObjectStore>,
    keys: &[String],
    concurrency: usize,
    op: F,
    progress: Option<&crate::progress::Progress>,
    size: impl Fn(&T) -> u64,
) -> Vec<Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn ObjectStore>, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let mut out: Vec<Option<Result<T, StoreError>>> = (0..keys.len()).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < keys.len() || !tasks.is_empty() {
        while next < keys.len() && tasks.len() < concurrency.max(1) {
            let fut = op(store.clone(), keys[next].clone());
            let i = next;
            tasks.spawn(async move { (i, fut.await) });
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok((i, r))) => {
                if let Ok(v) = &r {
                    crate::progress::tick(progress, 1, size(v));
                }
                out[i] = Some(r)
            }
            Some(Err(e)) => {
                // A panicked or cancelled task: report it on every key still without a result
                // rather than guess which one it was.
                for (slot, key) in out.iter_mut().zip(keys) {
                    if slot.is_none() {
                        *slot = Some(Err(StoreError::Transient {
                            op: "read",
                            store: store.url(),
                            key: key.clone(),
                            message: format!("task failed: {e}"),
                        }));
                    }
                }
            }
            None => break,
        }
    }
    out.into_iter()
        .zip(keys)
        .map(|(r, key)| {
            r.unwrap_or_else(|| {
                Err(StoreError::Transient {
                    op: "read",
                    store: store.url(),
                    key: key.clone(),
                    message: "no result".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_url_carries_the_bucket_region() {
        let url = "s3://b/p?region=eu-west-1";
        let (rest, region) = s3_region(url, "b/p?region=eu-west-1", Role::Other).unwrap();
        assert_eq!((rest, region.as_deref()), ("b/p", Some("eu-west-1")));
        for bad in ["b/p?region=", "b/p?region=EU", "b/p?versionId=3"] {
            let err = s3_region(url, bad, Role::Target).unwrap_err().to_string();
            assert!(err.contains("region"), "{bad}: {err}");
        }
    }
}

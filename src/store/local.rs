//! A directory as an object store (`file:///path`).
//!
//! Keys map to files under the root. A put writes a uniquely named temporary file in the target
//! directory, fsyncs it, then publishes it atomically: `IfAbsent` with `link(2)`, which fails if
//! the name exists (so two writers cannot both win), `Overwrite` with `rename(2)`; the directory
//! is fsynced afterwards so the name survives a crash. Readers never see a partial object.
//! Temporary files start with `.tmp-` and are skipped by listings.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{
    Listing, ObjectMeta, ObjectStore, PutMode, PutOutcome, PutResult, StoreError, check_key,
};

const TMP_PREFIX: &str = ".tmp-";

/// A store rooted at a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// A store at `root` (created if missing, on first write).
    pub fn new(root: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let root = root.as_ref();
        if root.as_os_str().is_empty() {
            return Err(StoreError::BadUrl {
                url: "file://".into(),
                reason: "no directory given".into(),
            });
        }
        // Absolute, without `.` components, so messages and URLs name the directory plainly.
        let root = std::path::absolute(root).map_err(|e| StoreError::BadUrl {
            url: root.display().to_string(),
            reason: format!("cannot resolve the path: {e}"),
        })?;
        Ok(LocalStore { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(&self.url(), key)?;
        Ok(self.root.join(key))
    }

    fn io_error(&self, op: &'static str, key: &str, e: std::io::Error) -> StoreError {
        use std::io::ErrorKind::*;
        let message = e.to_string();
        match e.kind() {
            NotFound => StoreError::NotFound {
                store: self.url(),
                key: key.to_owned(),
            },
            Interrupted | TimedOut | WouldBlock | StorageFull | ResourceBusy => {
                StoreError::Transient {
                    op,
                    store: self.url(),
                    key: key.to_owned(),
                    message,
                }
            }
            _ => StoreError::Permanent {
                op,
                store: self.url(),
                key: key.to_owned(),
                message,
            },
        }
    }

    fn put_blocking(
        &self,
        key: &str,
        body: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io_error("put", key, e))?;
        if mode == PutMode::IfAbsent && path.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| -> std::io::Result<PutOutcome> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(body)?;
            file.sync_all()?;
            drop(file);
            let outcome = match mode {
                PutMode::Overwrite => {
                    std::fs::rename(&tmp, &path)?;
                    PutOutcome::Created
                }
                PutMode::IfAbsent => match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => PutOutcome::Created,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        PutOutcome::AlreadyExists
                    }
                    Err(e) => return Err(e),
                },
            };
            // Make the new name durable.
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(outcome)
        })();
        // After a rename the temp name is gone; after a link (or a failure) it must go.
        let _ = std::fs::remove_file(&tmp);
        result.map_err(|e| self.io_error("put", key, e))
    }

    fn list_blocking(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk only the deepest directory the prefix names, not the whole root.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_error("list", prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let file_type = entry
                    .file_type()
                    .map_err(|e| self.io_error("list", prefix, e))?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(key) = rel.to_str() else { continue };
                let key = key.replace(std::path::MAIN_SEPARATOR, "/");
                if file_type.is_dir() {
                    // Descend only where keys under this directory can match the prefix.
                    let as_dir = format!("{key}/");
                    // ...and skip folders whose every key sorts before `start_after` (the
                    // comparison is decided inside the folder name), so listing a log
                    // after a point in time reads only the folders from that point on.
                    let all_before = start_after
                        .is_some_and(|s| as_dir.as_str() < s && !s.starts_with(as_dir.as_str()));
                    if (as_dir.starts_with(prefix) || prefix.starts_with(&as_dir)) && !all_before {
                        stack.push(path);
                    }
                } else if key.starts_with(prefix) && start_after.is_none_or(|s| key.as_str() > s) {
                    let meta = entry
                        .metadata()
                        .map_err(|e| self.io_error("list", &key, e))?;
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        sha256: None,
                        modified_ms: modified_ms(&meta),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(limit) = limit {
            out.truncate(limit);
        }
        Ok(out)
    }
}

/// A file's modification time in ms, as the file system reports it.
fn modified_ms(meta: &std::fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Transient {
            op: "io",
            store: "file://".into(),
            key: String::new(),
            message: format!("I/O task failed: {e}"),
        })
    })
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> PutResult {
        let this = LocalStore {
            root: self.root.clone(),
        };
        let key = key.to_owned();
        blocking(move || this.put_blocking(&key, &body, mode)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| self.io_error("get", key, e))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        let this = LocalStore {
            root: self.root.clone(),
        };
        let key = key.to_owned();
        blocking(move || {
            // A file has no stored checksum, so it is computed: HEAD on a disk costs a read.
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(this.io_error("head", &key, e)),
            };
            let meta = file
                .metadata()
                .map_err(|e| this.io_error("head", &key, e))?;
            if !meta.is_file() {
                return Ok(None);
            }
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf)
                    .map_err(|e| this.io_error("head", &key, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(Some(ObjectMeta {
                key,
                size: meta.len(),
                sha256: Some(hex::encode(hasher.finalize())),
                modified_ms: modified_ms(&meta),
            }))
        })
        .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Listing {
        let this = LocalStore {
            root: self.root.clone(),
        };
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        blocking(move || this.list_blocking(&prefix, start_after.as_deref(), limit)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error("delete", key, e)),
        }
    }
}

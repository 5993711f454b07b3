//! Where materialized partitions go: the DynamoDB import format in files ([`FileSink`]) or
//! objects of a store such as S3 ([`StoreSink`], which DynamoDB's import from S3 reads), and
//! their readers.

use super::*;

/// Why a sink could not take a partition.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A restore file could not be written or read back.
    #[error("restore file {path}: {problem}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The target directory already holds restore output.
    #[error("{path} already holds restore output; choose an empty directory")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The caller's time budget ran out before this partition (a rerun resumes).
    #[error("time budget used up after {written} partition(s) of {count}; rerun to resume")]
    Deadline {
        /// Partitions written by this run.
        written: usize,
        /// Partitions in all.
        count: usize,
    },
    /// The target failed (a DynamoDB call, its checkpoint).
    #[error(transparent)]
    Target(Box<dyn std::error::Error + Send + Sync>),
}

impl SinkError {
    pub(crate) fn file(path: &Path, problem: impl std::fmt::Display) -> SinkError {
        SinkError::File {
            path: path.to_owned(),
            problem: problem.to_string(),
        }
    }
}

/// A sink that writes gzip DynamoDB JSON lines (`{"Item": {...}}` per line), one file per
/// partition, the format DynamoDB's import from S3 accepts (`DYNAMODB_JSON`, `GZIP`).
#[derive(Debug)]
pub(crate) struct FileSink {
    pub(super) dir: PathBuf,
    files: std::sync::Mutex<Vec<PathBuf>>,
}

impl FileSink {
    /// Writes under `dir/data/`. Refuses a directory that already holds restore output.
    pub(crate) fn new(dir: &Path) -> Result<FileSink, SinkError> {
        let data = dir.join("data");
        if data.exists()
            && std::fs::read_dir(&data)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(SinkError::NotEmpty { path: data });
        }
        std::fs::create_dir_all(&data).map_err(|e| SinkError::file(&data, e))?;
        Ok(FileSink {
            dir: data,
            files: Default::default(),
        })
    }

    /// Files written, in partition order.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut f = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        f.sort();
        f
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn partition(
        &self,
        index: usize,
        _count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        let path = self.dir.join(part_name(index));
        let tmp = self.dir.join(format!(".{}.tmp", part_name(index)));
        // Compressing is the bulk of the work: off the async threads, so partitions written
        // at once use every core.
        let (tmp_path, final_path) = (tmp, path.clone());
        let write = move || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp_path)?;
            let mut w = BufWriter::with_capacity(256 * 1024, f);
            w.write_all(&encode_items(&items)?)?;
            w.flush()?;
            w.get_ref().sync_all()?;
            std::fs::rename(&tmp_path, &final_path)
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| SinkError::file(&path, e))?
            .map_err(|e| SinkError::file(&path, e))?;
        if let Ok(mut f) = self.files.lock() {
            f.push(path);
        }
        Ok(())
    }
}

/// A partition's file name: `part-NNNNN.json.gz`.
fn part_name(index: usize) -> String {
    format!("part-{index:05}.json.gz")
}

/// Items as gzip DynamoDB JSON lines, `{"Item": {...}}` per line.
fn encode_items(items: &[Item]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for it in items {
        gz.write_all(b"{\"Item\":")?;
        gz.write_all(it.item.as_bytes())?;
        gz.write_all(b"}\n")?;
    }
    gz.finish()
}

/// A sink that writes the same gzip DynamoDB JSON lines as [`FileSink`] as objects
/// `data/part-NNNNN.json.gz` of a store (an S3 prefix DynamoDB's import from S3 can read).
/// Each object is written once; a location that already holds restore output is refused.
#[derive(Debug)]
pub(crate) struct StoreSink {
    store: Arc<dyn ObjectStore>,
    keys: std::sync::Mutex<Vec<String>>,
}

impl StoreSink {
    /// Writes under the store's `data/`. Refuses a location that already holds restore output.
    pub(crate) async fn new(store: Arc<dyn ObjectStore>) -> Result<StoreSink, SinkError> {
        let here = PathBuf::from(format!("{}data/", store.url()));
        let listed = store
            .list("data/", None, Some(1))
            .await
            .map_err(|e| SinkError::file(&here, e))?;
        if !listed.is_empty() {
            return Err(SinkError::NotEmpty { path: here });
        }
        Ok(StoreSink {
            store,
            keys: Default::default(),
        })
    }

    /// Keys written, in partition order.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut k = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        k.sort();
        k
    }
}

#[async_trait::async_trait]
impl Sink for StoreSink {
    async fn partition(
        &self,
        index: usize,
        _count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        let key = format!("data/{}", part_name(index));
        let here = PathBuf::from(format!("{}{key}", self.store.url()));
        let body = encode_items(&items).map_err(|e| SinkError::file(&here, e))?;
        match self
            .store
            .put(
                &key,
                bytes::Bytes::from(body),
                crate::store::PutMode::IfAbsent,
            )
            .await
        {
            Ok(crate::store::PutOutcome::Created) => {}
            Ok(crate::store::PutOutcome::AlreadyExists) => {
                return Err(SinkError::file(
                    &here,
                    "written meanwhile by something else (another restore to this location?)",
                ));
            }
            Err(e) => return Err(SinkError::file(&here, e)),
        }
        if let Ok(mut k) = self.keys.lock() {
            k.push(key);
        }
        Ok(())
    }
}

/// Reads [`StoreSink`]'s objects back: items and their digest.
pub(crate) async fn read_item_objects(
    store: &dyn ObjectStore,
    keys: &[String],
) -> Result<(u64, StateDigest), SinkError> {
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    for key in keys {
        let here = PathBuf::from(format!("{}{key}", store.url()));
        let bytes = store
            .get(key)
            .await
            .map_err(|e| SinkError::file(&here, e))?;
        let reader = BufReader::new(flate2::read::GzDecoder::new(&bytes[..]));
        let (n, d) = read_items(&here, reader)?;
        count += n;
        digest.add(&d);
    }
    Ok((count, digest))
}

/// Reads DynamoDB JSON lines files (gzip or plain) back: items and their digest. Used to check
/// a file restore, and by tests.
pub(crate) fn read_item_files(paths: &[PathBuf]) -> Result<(u64, StateDigest), SinkError> {
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    for path in paths {
        let f = std::fs::File::open(path).map_err(|e| SinkError::file(path, e))?;
        let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::GzDecoder::new(f)))
        } else {
            Box::new(BufReader::new(f))
        };
        let (n, d) = read_items(path, reader)?;
        count += n;
        digest.add(&d);
    }
    Ok((count, digest))
}

/// Items and digest of DynamoDB JSON lines read from `reader` (`path` names it in errors).
fn read_items(path: &Path, reader: impl BufRead) -> Result<(u64, StateDigest), SinkError> {
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    {
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| SinkError::file(path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(rename = "Item", borrow)]
                item: &'a serde_json::value::RawValue,
            }
            let l: Line = serde_json::from_str(&line)
                .map_err(|e| SinkError::file(path, format!("line {}: {e}", n + 1)))?;
            let h = crate::model::item::item_hash(l.item.get())
                .map_err(|e| SinkError::file(path, format!("line {}: {e}", n + 1)))?;
            digest.add_item(&h);
            count += 1;
        }
    }
    Ok((count, digest))
}

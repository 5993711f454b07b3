//! Where materialized partitions go: the DynamoDB import format in files ([`FileSink`]) and
//! its reader.

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
    fn file(path: &Path, problem: impl std::fmt::Display) -> SinkError {
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
    /// Files written.
    pub files: Vec<PathBuf>,
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
            files: vec![],
        })
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn partition(
        &mut self,
        index: usize,
        _count: usize,
        items: Vec<Item>,
    ) -> Result<(), SinkError> {
        let path = self.dir.join(format!("part-{index:05}.json.gz"));
        let tmp = self.dir.join(format!(".part-{index:05}.json.gz.tmp"));
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let mut gz = flate2::write::GzEncoder::new(
                BufWriter::with_capacity(256 * 1024, f),
                flate2::Compression::fast(),
            );
            for it in &items {
                gz.write_all(b"{\"Item\":")?;
                gz.write_all(it.item.as_bytes())?;
                gz.write_all(b"}\n")?;
            }
            let mut w = gz.finish()?;
            w.flush()?;
            w.get_ref().sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| SinkError::file(&path, e))?;
        self.files.push(path);
        Ok(())
    }
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

//! The materialization's memory bound: changes spilled to one file per partition by key hash
//! (a fixed hash, so a resumed restore finds every key where it was), each folded on its own.

use super::*;

/// Partition writers for the spilling mode.
pub(super) struct Spill {
    pub(super) dir: tempfile::TempDir,
    pub(super) writers: Vec<BufWriter<std::fs::File>>,
}

/// FNV-1a: a fixed hash, so a key lands in the same partition in every run (a resumed restore
/// relies on it: its checkpoint names partitions).
pub(crate) fn partition_of(key: &str, partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % partitions as u64) as usize
}

/// A work directory `<prefix>…` under `parent` (default: the system temp directory), removed
/// when dropped.
pub(crate) fn work_dir(
    parent: Option<&Path>,
    prefix: &str,
) -> Result<tempfile::TempDir, RestoreError> {
    let b = tempfile::Builder::new().prefix(prefix).to_owned();
    match parent {
        Some(p) => b.tempdir_in(p),
        None => b.tempdir(),
    }
    .map_err(|source| RestoreError::Spill {
        path: parent.map_or("temp dir".into(), |p| p.display().to_string()),
        source,
    })
}

impl Spill {
    pub(super) fn new(parent: Option<&Path>, n: usize) -> Result<Spill, RestoreError> {
        let dir = work_dir(parent, "streamseal-restore-")?;
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.path().join(format!("part-{i:05}"));
            let f = std::fs::File::create(&path).map_err(|source| RestoreError::Spill {
                path: path.display().to_string(),
                source,
            })?;
            writers.push(BufWriter::with_capacity(64 * 1024, f));
        }
        Ok(Spill { dir, writers })
    }

    pub(super) fn push(
        &mut self,
        key: &str,
        seq: &str,
        image: Option<&str>,
    ) -> Result<(), RestoreError> {
        let i = partition_of(key, self.writers.len());
        // One record per line: key, sequence number, image (or `-` for a REMOVE), tab-separated.
        // Canonical DynamoDB JSON never contains a raw tab or newline (they are escaped).
        let w = &mut self.writers[i];
        let r = w
            .write_all(key.as_bytes())
            .and_then(|_| w.write_all(b"\t"))
            .and_then(|_| w.write_all(seq.as_bytes()))
            .and_then(|_| w.write_all(b"\t"))
            .and_then(|_| w.write_all(image.unwrap_or("-").as_bytes()))
            .and_then(|_| w.write_all(b"\n"));
        r.map_err(|source| RestoreError::Spill {
            path: self
                .dir
                .path()
                .join(format!("part-{i:05}"))
                .display()
                .to_string(),
            source,
        })
    }

    pub(super) fn finish(&mut self) -> Result<(), RestoreError> {
        for w in &mut self.writers {
            w.flush().map_err(|source| RestoreError::Spill {
                path: self.dir.path().display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    pub(super) fn read(&self, i: usize) -> Result<State, RestoreError> {
        let path = self.dir.path().join(format!("part-{i:05}"));
        let err = |source| RestoreError::Spill {
            path: path.display().to_string(),
            source,
        };
        let f = std::fs::File::open(&path).map_err(err)?;
        let mut state = State::default();
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(err)? == 0 {
                break;
            }
            let text = line.trim_end_matches('\n');
            let mut parts = text.splitn(3, '\t');
            let (Some(key), Some(seq), Some(image)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(err(std::io::Error::other("malformed spill record")));
            };
            fold(
                &mut state,
                key,
                seq,
                if image == "-" { None } else { Some(image) },
            );
        }
        Ok(state)
    }
}

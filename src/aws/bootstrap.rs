//! `streamseal bootstrap`: the base state of a table that existed before its stream was
//! captured, from a parallel Scan or from a DynamoDB native export. See [`crate::model::base`] for why
//! base + captured changes is exact.

use std::io::BufRead as _;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use bytes::Bytes;

use crate::aws::AwsError;
use crate::aws::dynamodb::{self, SegmentScan, from_attribute_map, key_text};
use crate::model::base::{self, BASE_FORMAT, BaseManifest, BaseWriter};
use crate::model::item::{StateDigest, canonicalize};
use crate::model::layout::TableLayout;
use crate::model::schema::KeySchema;
use crate::progress::Progress;
use crate::store::{self, ObjectStore, PutMode, StoreError};

/// Why a bootstrap could not start or finish. Nothing is adopted until the base manifest is
/// written, which is the last step.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The table already has a base.
    #[error(
        "table {table} already has a base state ({base_id} from {source_text}); a second one is not needed: the stream capture keeps it current"
    )]
    AlreadyBootstrapped {
        /// The table.
        table: String,
        /// The existing base.
        base_id: String,
        /// Where it came from.
        source_text: String,
    },
    /// The table is missing.
    #[error("table {table} does not exist")]
    NoTable {
        /// The table.
        table: String,
    },
    /// The table's stream cannot keep a base exact.
    #[error("table {table}: {problem} (refusing to start)")]
    Stream {
        /// The table.
        table: String,
        /// What is wrong with its stream.
        problem: String,
    },
    /// The export is not one a base can come from, or is damaged.
    #[error("export {uri}: {problem}")]
    Export {
        /// The export's folder.
        uri: String,
        /// What is wrong, with the file and line.
        problem: String,
    },
    /// An item cannot be read.
    #[error("{context}: {problem}")]
    Item {
        /// Which item.
        context: String,
        /// What is wrong.
        problem: String,
    },
    /// A DynamoDB call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The backup store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the base comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A parallel Scan with this many segments.
    Scan(i32),
    /// A DynamoDB full export (`DYNAMODB_JSON`) at this URI: the export's folder, holding
    /// `manifest-summary.json`, `manifest-files.json` and `data/`.
    Export(String),
}

/// Bootstraps `table` into `store`, counting items read in `progress`.
pub async fn bootstrap(
    store: &Arc<dyn ObjectStore>,
    client: &Client,
    table: &str,
    source: &Source,
    progress: Option<Arc<Progress>>,
) -> Result<BaseManifest, BootstrapError> {
    let layout = TableLayout::new(table);
    if let Some(existing) = base::latest_base(store.as_ref(), &layout).await? {
        return Err(BootstrapError::AlreadyBootstrapped {
            table: table.to_owned(),
            base_id: existing.base_id,
            source_text: existing.source,
        });
    }
    // A base joins the chain by replaying every change over it; changes already expired
    // cannot be replayed.
    if !crate::model::checkpoint::list_expired(store.as_ref(), &layout)
        .await?
        .is_empty()
    {
        return Err(BootstrapError::Stream {
            table: table.to_owned(),
            problem: "this backup has expired changes (`streamseal expire`), and a base joins a chain by replaying every change; bootstrap into a new prefix instead".into(),
        });
    }
    let key = dynamodb::describe_key_schema(client, table)
        .await?
        .ok_or_else(|| BootstrapError::NoTable {
            table: table.to_owned(),
        })?;
    let stream_problem = match dynamodb::stream_enabled(client, table).await? {
        None => Some(
            "no stream is enabled; enable a NEW_AND_OLD_IMAGES stream and its capture first, so that every change during the scan is captured".to_owned(),
        ),
        Some(v) if v != "NEW_AND_OLD_IMAGES" && v != "NEW_IMAGE" => Some(format!(
            "the stream is {v}; a base needs a stream with new images (NEW_AND_OLD_IMAGES) to stay exact"
        )),
        Some(_) => None,
    };
    if let Some(problem) = stream_problem {
        return Err(BootstrapError::Stream {
            table: table.to_owned(),
            problem,
        });
    }
    crate::progress::stage(progress.as_deref(), "reading items", 0);
    let started_ms = chrono::Utc::now().timestamp_millis();
    let (base_id, source_text, started_ms, writers) = match source {
        Source::Scan(segments) => {
            let base_id = format!("{started_ms:016}");
            let writers = scan(
                store, client, table, &layout, &base_id, &key, *segments, progress,
            )
            .await?;
            (base_id, "scan".to_owned(), started_ms, writers)
        }
        Source::Export(uri) => {
            let (export_ms, writers) =
                export(store, uri, &layout, &key, progress.as_deref()).await?;
            let base_id = format!("{export_ms:016}");
            (base_id, format!("export {uri}"), export_ms, writers)
        }
    };
    let mut digest = StateDigest::ZERO;
    let mut count = 0;
    let mut files = vec![];
    for w in writers {
        digest.add(&w.digest);
        count += w.count;
        files.extend(w.files);
    }
    let manifest = BaseManifest {
        format: BASE_FORMAT,
        table: table.to_owned(),
        base_id: base_id.clone(),
        source: source_text,
        started_ms,
        finished_ms: chrono::Utc::now().timestamp_millis(),
        key_schema: Some(key),
        items: count,
        digest,
        files,
    };
    // A struct of strings and numbers always serializes.
    let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    store
        .put(
            &layout.base_manifest_key(&base_id),
            Bytes::from(body),
            PutMode::IfAbsent,
        )
        .await?;
    Ok(manifest)
}

#[allow(clippy::too_many_arguments)]
async fn scan(
    store: &Arc<dyn ObjectStore>,
    client: &Client,
    table: &str,
    layout: &TableLayout,
    base_id: &str,
    key: &KeySchema,
    segments: i32,
    progress: Option<Arc<Progress>>,
) -> Result<Vec<BaseWriter>, BootstrapError> {
    let segments = segments.clamp(1, 1_000_000);
    let mut tasks = tokio::task::JoinSet::new();
    for seg in 0..segments {
        let client = client.clone();
        let table = table.to_owned();
        let key = key.clone();
        let progress = progress.clone();
        let mut writer = BaseWriter::new(store.clone(), layout, base_id, seg as usize);
        tasks.spawn(async move {
            let mut scan = SegmentScan::new(client, &table, seg, segments);
            while let Some(items) = scan.next_page().await? {
                for item in &items {
                    let text = canonicalize(&from_attribute_map(item)?).map_err(|e| {
                        BootstrapError::Item {
                            context: format!("an item of {table} (scan segment {seg})"),
                            problem: e.to_string(),
                        }
                    })?;
                    writer.push(key_text(item, &key)?, text).await?;
                }
                crate::progress::tick(progress.as_deref(), items.len() as u64, 0);
            }
            writer.flush().await?;
            Ok::<_, BootstrapError>(writer)
        });
    }
    let mut writers = vec![];
    while let Some(r) = tasks.join_next().await {
        writers.push(r.map_err(|e| BootstrapError::Item {
            context: format!("a scan task of {table}"),
            problem: e.to_string(),
        })??);
    }
    writers.sort_by_key(|w| w.files.first().map(|f| f.key.clone()));
    Ok(writers)
}

async fn export(
    store: &Arc<dyn ObjectStore>,
    uri: &str,
    layout: &TableLayout,
    key: &KeySchema,
    progress: Option<&Progress>,
) -> Result<(i64, Vec<BaseWriter>), BootstrapError> {
    let bad = |problem: String| BootstrapError::Export {
        uri: uri.to_owned(),
        problem,
    };
    let src = store::open(uri).await?;
    let summary = src
        .get("manifest-summary.json")
        .await
        .map_err(|e| bad(format!("reading manifest-summary.json: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Summary {
        #[serde(rename = "exportTime")]
        export_time: String,
        #[serde(rename = "outputFormat", default)]
        output_format: Option<String>,
        #[serde(rename = "exportType", default)]
        export_type: Option<String>,
    }
    let summary: Summary =
        serde_json::from_slice(&summary).map_err(|e| bad(format!("manifest-summary.json: {e}")))?;
    if summary
        .output_format
        .as_deref()
        .is_some_and(|f| f != "DYNAMODB_JSON")
    {
        return Err(bad(format!(
            "export format {:?}; only DYNAMODB_JSON exports are supported",
            summary.output_format
        )));
    }
    if summary
        .export_type
        .as_deref()
        .is_some_and(|t| t != "FULL_EXPORT")
    {
        return Err(bad(format!(
            "a {:?}; a base needs a FULL_EXPORT",
            summary.export_type
        )));
    }
    let export_ms = chrono::DateTime::parse_from_rfc3339(&summary.export_time)
        .map_err(|e| bad(format!("manifest-summary.json: exportTime: {e}")))?
        .timestamp_millis();
    let files = src
        .get("manifest-files.json")
        .await
        .map_err(|e| bad(format!("reading manifest-files.json: {e}")))?;
    let base_id = format!("{export_ms:016}");
    let mut writer = BaseWriter::new(store.clone(), layout, &base_id, 0);
    for (n, line) in files.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "dataFileS3Key")]
            data_file: String,
            #[serde(rename = "itemCount", default)]
            item_count: Option<u64>,
        }
        let e: Entry = serde_json::from_slice(line)
            .map_err(|e| bad(format!("manifest-files.json line {}: {e}", n + 1)))?;
        // Keys are relative to the bucket; the data files sit under the export's `data/`.
        let rel = e
            .data_file
            .rfind("/data/")
            .map(|i| &e.data_file[i + 1..])
            .unwrap_or(&e.data_file);
        let body = src
            .get(rel)
            .await
            .map_err(|err| bad(format!("data file {rel}: {err}")))?;
        let reader: Box<dyn std::io::BufRead> = if rel.ends_with(".gz") {
            Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(
                &body[..],
            )))
        } else {
            Box::new(std::io::BufReader::new(&body[..]))
        };
        let mut seen = 0u64;
        for (i, l) in reader.lines().enumerate() {
            let l = l.map_err(|err| bad(format!("data file {rel}: {err}")))?;
            if l.trim().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(rename = "Item", borrow)]
                item: &'a serde_json::value::RawValue,
            }
            let parsed: Line = serde_json::from_str(&l)
                .map_err(|err| bad(format!("data file {rel} line {}: {err}", i + 1)))?;
            let text = canonicalize(parsed.item.get())
                .map_err(|err| bad(format!("data file {rel} line {}: {err}", i + 1)))?;
            let map =
                dynamodb::to_attribute_map(&text, &format!("data file {rel} line {}", i + 1))?;
            writer.push(key_text(&map, key)?, text).await?;
            seen += 1;
            crate::progress::tick(progress, 1, 0);
        }
        if let Some(c) = e.item_count
            && c != seen
        {
            return Err(bad(format!(
                "data file {rel} holds {seen} items, manifest-files.json says {c}"
            )));
        }
    }
    writer.flush().await?;
    Ok((export_ms, vec![writer]))
}

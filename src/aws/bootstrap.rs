//! `streamseal bootstrap`: the base state of a table that existed before its stream was
//! captured, from a parallel Scan or from a DynamoDB native export. See [`crate::model::base`] for why
//! base + captured changes is exact.

use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use bytes::Bytes;

use crate::aws::dynamodb::{self, SegmentScan, from_attribute_map, key_text};
use crate::model::base::{self, BASE_FORMAT, BaseManifest, BaseWriter};
use crate::model::item::{StateDigest, canonicalize};
use crate::model::layout::TableLayout;
use crate::model::schema::KeySchema;
use crate::store::{self, ObjectStore, PutMode};

/// Where the base comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A parallel Scan with this many segments.
    Scan(i32),
    /// A DynamoDB full export (`DYNAMODB_JSON`) at this URI: the export's folder, holding
    /// `manifest-summary.json`, `manifest-files.json` and `data/`.
    Export(String),
}

/// Bootstraps `table` into `store`. `items` counts items read, for progress lines.
pub async fn bootstrap(
    store: &Arc<dyn ObjectStore>,
    client: &Client,
    table: &str,
    source: &Source,
    items: &AtomicU64,
) -> Result<BaseManifest, String> {
    let layout = TableLayout::new(table);
    if let Some(existing) = base::latest_base(store.as_ref(), &layout)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "table {table} already has a base state ({} from {}); a second one is not needed: the stream capture keeps it current",
            existing.base_id, existing.source
        ));
    }
    let key = dynamodb::describe_key_schema(client, table)
        .await?
        .ok_or_else(|| format!("table {table} does not exist"))?;
    match dynamodb::stream_enabled(client, table).await? {
        None => {
            return Err(format!(
                "table {table} has no stream enabled; enable a NEW_AND_OLD_IMAGES stream and its capture first, so that every change during the scan is captured (refusing to start)"
            ));
        }
        Some(v) if v != "NEW_AND_OLD_IMAGES" && v != "NEW_IMAGE" => {
            return Err(format!(
                "table {table}'s stream is {v}; a base needs a stream with new images (NEW_AND_OLD_IMAGES) to stay exact (refusing to start)"
            ));
        }
        Some(_) => {}
    }
    let started_ms = chrono::Utc::now().timestamp_millis();
    let (base_id, source_text, started_ms, writers) = match source {
        Source::Scan(segments) => {
            let base_id = format!("{started_ms:016}");
            let writers = scan(
                store, client, table, &layout, &base_id, &key, *segments, items,
            )
            .await?;
            (base_id, "scan".to_owned(), started_ms, writers)
        }
        Source::Export(uri) => {
            let (export_ms, writers) = export(store, uri, &layout, &key, items).await?;
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
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    store
        .put(
            &base::base_manifest_key(&layout, &base_id),
            Bytes::from(body),
            PutMode::IfAbsent,
        )
        .await
        .map_err(|e| e.to_string())?;
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
    items: &AtomicU64,
) -> Result<Vec<BaseWriter>, String> {
    let segments = segments.clamp(1, 1_000_000);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for seg in 0..segments {
        let client = client.clone();
        let table = table.to_owned();
        let key = key.clone();
        let counter = counter.clone();
        let mut writer = BaseWriter::new(store.clone(), layout, base_id, seg as usize);
        tasks.spawn(async move {
            let mut scan = SegmentScan::new(client, &table, seg, segments);
            while let Some(items) = scan.next_page().await? {
                for item in &items {
                    let text =
                        canonicalize(&from_attribute_map(item)?).map_err(|e| e.to_string())?;
                    writer
                        .push(key_text(item, &key)?, text)
                        .await
                        .map_err(|e| e.to_string())?;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            writer.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(writer)
        });
    }
    let mut writers = vec![];
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(r) => writers.push(r.map_err(|e| format!("scan task failed: {e}"))??),
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        items.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    items.store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
    writers.sort_by_key(|w| w.files.first().map(|f| f.key.clone()));
    Ok(writers)
}

async fn export(
    store: &Arc<dyn ObjectStore>,
    uri: &str,
    layout: &TableLayout,
    key: &KeySchema,
    items: &AtomicU64,
) -> Result<(i64, Vec<BaseWriter>), String> {
    let src = store::open(uri).await.map_err(|e| e.to_string())?;
    let summary = src
        .get("manifest-summary.json")
        .await
        .map_err(|e| format!("{uri}: reading manifest-summary.json: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Summary {
        #[serde(rename = "exportTime")]
        export_time: String,
        #[serde(rename = "outputFormat", default)]
        output_format: Option<String>,
        #[serde(rename = "exportType", default)]
        export_type: Option<String>,
    }
    let summary: Summary = serde_json::from_slice(&summary)
        .map_err(|e| format!("{uri}/manifest-summary.json: {e}"))?;
    if summary
        .output_format
        .as_deref()
        .is_some_and(|f| f != "DYNAMODB_JSON")
    {
        return Err(format!(
            "{uri}: export format {:?}; only DYNAMODB_JSON exports are supported",
            summary.output_format
        ));
    }
    if summary
        .export_type
        .as_deref()
        .is_some_and(|t| t != "FULL_EXPORT")
    {
        return Err(format!(
            "{uri}: a {:?}; a base needs a FULL_EXPORT",
            summary.export_type
        ));
    }
    let export_ms = chrono::DateTime::parse_from_rfc3339(&summary.export_time)
        .map_err(|e| format!("{uri}/manifest-summary.json: exportTime: {e}"))?
        .timestamp_millis();
    let files = src
        .get("manifest-files.json")
        .await
        .map_err(|e| format!("{uri}: reading manifest-files.json: {e}"))?;
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
            .map_err(|e| format!("{uri}/manifest-files.json line {}: {e}", n + 1))?;
        // Keys are relative to the bucket; the data files sit under the export's `data/`.
        let rel = e
            .data_file
            .rfind("/data/")
            .map(|i| &e.data_file[i + 1..])
            .unwrap_or(&e.data_file);
        let body = src
            .get(rel)
            .await
            .map_err(|err| format!("{uri}: data file {rel}: {err}"))?;
        let reader: Box<dyn std::io::BufRead> = if rel.ends_with(".gz") {
            Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(
                &body[..],
            )))
        } else {
            Box::new(std::io::BufReader::new(&body[..]))
        };
        let mut seen = 0u64;
        for (i, l) in reader.lines().enumerate() {
            let l = l.map_err(|err| format!("{rel}: {err}"))?;
            if l.trim().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(rename = "Item", borrow)]
                item: &'a serde_json::value::RawValue,
            }
            let parsed: Line =
                serde_json::from_str(&l).map_err(|err| format!("{rel} line {}: {err}", i + 1))?;
            let text = canonicalize(parsed.item.get())
                .map_err(|err| format!("{rel} line {}: {err}", i + 1))?;
            let map = dynamodb::to_attribute_map(&text)?;
            writer
                .push(key_text(&map, key)?, text)
                .await
                .map_err(|e| e.to_string())?;
            seen += 1;
            items.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = e.item_count
            && c != seen
        {
            return Err(format!(
                "{uri}: data file {rel} holds {seen} items, manifest-files.json says {c}"
            ));
        }
    }
    writer.flush().await.map_err(|e| e.to_string())?;
    Ok((export_ms, vec![writer]))
}

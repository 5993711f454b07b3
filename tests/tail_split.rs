//! `tail` across a shard split, which the emulator cannot produce: a simulated stream (the
//! `StreamApi` trait) with a closed parent shard and two children listed before it, plus an
//! iterator that expires once. Children are read only after their parent is finished, every
//! record is captured once, and the sealed state equals the ground truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, Record, StreamRecord};
use base64::Engine as _;
use serde_json::Value;
use streamseal::aws::AwsError;
use streamseal::aws::tail::{
    RecordsPage, ShardInfo, StreamApi, StreamApiError, TailOptions, TailReport, tail,
};
use streamseal::capture::{BadRecordPolicy, IngestOptions, Ingestor, SchemaSource};
use streamseal::demo::workload::Workload;
use streamseal::model::change::StreamViewType;
use streamseal::model::item::{StateDigest, item_hash};
use streamseal::ops::seal::{SealOptions, seal};
use streamseal::store::ObjectStore;
use streamseal::store::local::LocalStore;

fn av(v: &Value) -> AttributeValue {
    let (t, x) = v.as_object().unwrap().iter().next().unwrap();
    let s = |x: &Value| x.as_str().unwrap().to_owned();
    let b = |x: &Value| {
        Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(x.as_str().unwrap())
                .unwrap(),
        )
    };
    match t.as_str() {
        "S" => AttributeValue::S(s(x)),
        "N" => AttributeValue::N(s(x)),
        "B" => AttributeValue::B(b(x)),
        "BOOL" => AttributeValue::Bool(x.as_bool().unwrap()),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(x.as_array().unwrap().iter().map(s).collect()),
        "NS" => AttributeValue::Ns(x.as_array().unwrap().iter().map(s).collect()),
        "BS" => AttributeValue::Bs(x.as_array().unwrap().iter().map(b).collect()),
        "L" => AttributeValue::L(x.as_array().unwrap().iter().map(av).collect()),
        "M" => AttributeValue::M(map(x)),
        other => panic!("type {other}"),
    }
}

fn map(v: &Value) -> HashMap<String, AttributeValue> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), av(v)))
        .collect()
}

/// A Lambda-shaped workload record as the stream API returns it.
fn sdk_record(json: &str, seq: u128) -> Record {
    let v: Value = serde_json::from_str(json).unwrap();
    let d = &v["dynamodb"];
    let mut sr = StreamRecord::builder()
        .sequence_number(seq.to_string())
        .stream_view_type(aws_sdk_dynamodbstreams::types::StreamViewType::NewAndOldImages)
        .set_keys(Some(map(&d["Keys"])))
        .approximate_creation_date_time(DateTime::from_secs_f64(
            d["ApproximateCreationDateTime"].as_f64().unwrap(),
        ));
    if d.get("NewImage").is_some() {
        sr = sr.set_new_image(Some(map(&d["NewImage"])));
    }
    if d.get("OldImage").is_some() {
        sr = sr.set_old_image(Some(map(&d["OldImage"])));
    }
    Record::builder()
        .event_id(v["eventID"].as_str().unwrap())
        .event_name(OperationType::from(v["eventName"].as_str().unwrap()))
        .event_source("aws:dynamodb")
        .aws_region("eu-west-1")
        .dynamodb(sr.build())
        .build()
}

struct Shard {
    info: ShardInfo,
    records: Vec<Record>,
    closed: bool,
}

struct Fake {
    shards: Vec<Shard>,
    calls: Mutex<Vec<String>>,
    expire_once: Mutex<bool>,
}

#[async_trait::async_trait]
impl StreamApi for Fake {
    async fn shards(&self, _: &str) -> Result<Vec<ShardInfo>, AwsError> {
        Ok(self.shards.iter().map(|s| s.info.clone()).collect())
    }

    async fn iterator(
        &self,
        _: &str,
        shard: &str,
        after: Option<&str>,
    ) -> Result<Option<String>, AwsError> {
        let s = self
            .shards
            .iter()
            .find(|s| s.info.shard_id == shard)
            .unwrap();
        let pos = match after {
            None => 0,
            Some(seq) => {
                s.records
                    .iter()
                    .position(|r| r.dynamodb().unwrap().sequence_number() == Some(seq))
                    .unwrap()
                    + 1
            }
        };
        Ok(Some(format!("{shard}|{pos}")))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, StreamApiError> {
        let (shard, pos) = iterator.split_once('|').unwrap();
        let pos: usize = pos.parse().unwrap();
        if pos == 3 && shard == "shardId-parent" {
            let mut once = self.expire_once.lock().unwrap();
            if *once {
                *once = false;
                return Err(StreamApiError::Expired);
            }
        }
        self.calls.lock().unwrap().push(shard.to_owned());
        let s = self
            .shards
            .iter()
            .find(|s| s.info.shard_id == shard)
            .unwrap();
        let end = (pos + limit as usize).min(s.records.len());
        let next = if end == s.records.len() && s.closed {
            None
        } else {
            Some(format!("{shard}|{end}"))
        };
        Ok(RecordsPage {
            records: s.records[pos..end].to_vec(),
            next,
        })
    }
}

#[tokio::test]
async fn a_split_is_followed_parent_first_and_loses_nothing() {
    let mut w = Workload::new(5, "split", StreamViewType::NewAndOldImages, 300);
    let mut seq: u128 = 300_000_000_000_000_000_000;
    let mut next = |w: &mut Workload| {
        seq += 17;
        let c = w.next_change();
        (c.key.clone(), sdk_record(&c.record, seq))
    };
    let parent: Vec<Record> = (0..30).map(|_| next(&mut w).1).collect();
    // After the split each key's changes go to one child, by key.
    let (mut a, mut b): (Vec<Record>, Vec<Record>) = (vec![], vec![]);
    for _ in 0..50 {
        let (key, r) = next(&mut w);
        if key.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
            a.push(r)
        } else {
            b.push(r)
        }
    }
    let info = |id: &str, parent: Option<&str>| ShardInfo {
        shard_id: id.into(),
        parent_shard_id: parent.map(Into::into),
        starting_sequence: None,
        ending_sequence: None,
    };
    let fake = Fake {
        // Children listed before their parent, as DescribeStream may.
        shards: vec![
            Shard {
                info: info("shardId-child-a", Some("shardId-parent")),
                records: a,
                closed: false,
            },
            Shard {
                info: info("shardId-child-b", Some("shardId-parent")),
                records: b,
                closed: false,
            },
            Shard {
                info: info("shardId-parent", None),
                records: parent,
                closed: true,
            },
        ],
        calls: Mutex::new(vec![]),
        expire_once: Mutex::new(true),
    };
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let ingestor = Ingestor::new(
        store.clone(),
        SchemaSource::None,
        IngestOptions {
            encode: Default::default(),
            prepare_threads: 1,
            bad_records: BadRecordPolicy::Quarantine,
        },
    );
    let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/split/stream/2026-01-01T00:00:00.000";
    let options = TailOptions {
        until_idle: Some(std::time::Duration::from_millis(50)),
        poll_interval: std::time::Duration::from_millis(10),
        limit: 3,
        ..Default::default()
    };
    let mut report = TailReport::default();
    tail(
        arn,
        &fake,
        &ingestor,
        &store,
        "split",
        &options,
        &mut report,
    )
    .await
    .unwrap();
    assert_eq!(report.records, 80);
    let quarantined = std::fs::read_dir(dir.path().join("split"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name() == "quarantine");
    assert!(!quarantined, "no record was quarantined");
    assert_eq!(report.finished_shards, 1, "the parent is finished");

    assert!(!fake.shards[0].records.is_empty() && !fake.shards[1].records.is_empty());
    let calls = fake.calls.lock().unwrap().clone();
    let last_parent = calls.iter().rposition(|s| s == "shardId-parent").unwrap();
    let first_child = calls
        .iter()
        .position(|s| s.starts_with("shardId-child"))
        .unwrap();
    assert!(
        last_parent < first_child,
        "children read only after the parent: {calls:?}"
    );

    let sealed = seal(&store, "split", &SealOptions::default())
        .await
        .unwrap();
    let m = &sealed.manifest;
    assert_eq!(m.totals.rows, 80);
    let mut truth = StateDigest::ZERO;
    for item in w.items() {
        truth.add_item(&item_hash(item).unwrap());
    }
    assert_eq!(m.state_digest, Some(truth));
    assert_eq!(m.item_count, w.len() as i64);
    assert_eq!(m.watermark.shards.len(), 3, "{:?}", m.watermark.shards);
}

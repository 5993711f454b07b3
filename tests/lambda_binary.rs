//! The `streamseal-lambda` binary, end to end over the real Lambda Runtime API protocol: a
//! minimal Runtime API on loopback hands it events one invocation at a time, the binary
//! writes to S3 (the moto emulator) and posts its answers back.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, body })
}

/// What the function answered, and what it printed.
struct Served {
    /// `(path, body)` of each answer, in invocation order.
    responses: Vec<(String, String)>,
    stdout: String,
    stderr: String,
}

/// Starts `streamseal-lambda` with `env` against a Runtime API on loopback and hands it
/// `events`, one invocation each; stops once every one is answered (bounded to 60 s each).
fn serve(events: &[String], env: &[(&str, String)]) -> Served {
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = api.local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamseal-lambda"))
        .envs(common::moto_env())
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "streamseal-ingest")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/streamseal-ingest")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut responses: Vec<(String, String)> = vec![];
    api.set_nonblocking(true).unwrap();
    let started = std::time::Instant::now();
    let limit = Duration::from_secs(60 * events.len().max(1) as u64);
    'serve: while responses.len() < events.len() && started.elapsed() < limit {
        let stream = match api.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => panic!("runtime API accept: {e}"),
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while let Some(req) = read_request(&mut reader) {
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/2018-06-01/runtime/invocation/next") => {
                    let Some(event) = events.get(responses.len()) else {
                        break 'serve;
                    };
                    let deadline = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + 60_000;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-{}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:streamseal-ingest\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n",
                        responses.len() + 1,
                        event.len()
                    );
                    writer.write_all(head.as_bytes()).unwrap();
                    writer.write_all(event.as_bytes()).unwrap();
                }
                ("POST", path) => {
                    writer
                        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                        .unwrap();
                    responses.push((path.to_owned(), String::from_utf8(req.body).unwrap()));
                }
                _ => break 'serve,
            }
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    Served {
        responses,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn create_bucket(rt: &tokio::runtime::Runtime, bucket: &str) {
    rt.block_on(async {
        common::s3_client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap()
    });
}

#[test]
fn the_binary_serves_a_stream_event_over_the_runtime_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    create_bucket(&rt, "lambda-binary");
    let served = serve(
        &[common::fixture("view-new-and-old-images.json")],
        &[
            ("STREAMSEAL_TARGET", "s3://lambda-binary/backups".into()),
            (
                "STREAMSEAL_SCHEMAS",
                common::root().join("schemas").display().to_string(),
            ),
        ],
    );
    let (stdout, stderr) = (&served.stdout, &served.stderr);
    let (path, body) = served.responses.first().unwrap_or_else(|| {
        panic!("no response from the function\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert_eq!(
        path, "/2018-06-01/runtime/invocation/req-1/response",
        "{body}\n{stdout}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body, serde_json::json!({"batchItemFailures": []}));

    // Logs are JSON lines; the metrics line is CloudWatch EMF.
    let emf: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "{stdout}");
    assert_eq!(emf[0]["Records"], 3);
    assert_eq!(emf[0]["QuarantinedRecords"], 0);
    assert!(
        stdout.lines().any(|l| l.contains("\"batch handled\"")),
        "{stdout}"
    );

    // The segment is in S3 with the typed columns of schemas/orders.toml.
    let listed = rt.block_on(async {
        common::s3_client()
            .list_objects_v2()
            .bucket("lambda-binary")
            .prefix("backups/orders/")
            .send()
            .await
            .unwrap()
    });
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys.iter().filter(|k| k.contains("/changes/dt=")).count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.contains("/inbox/")).count(),
        1,
        "{keys:?}"
    );
}

/// A record the capture cannot convert (a type this version does not know in its new image),
/// through the real binary: no batch fails, the record is kept and accounted; the outage seal
/// reports the snapshot incomplete, naming it; `streamseal restore` exits 0 and names the key,
/// `--strict` refuses.
#[test]
fn a_quarantined_record_through_the_binary_restores_everything_else() {
    use streamseal::demo::workload::Workload;
    use streamseal::model::change::StreamViewType;
    let rt = tokio::runtime::Runtime::new().unwrap();
    create_bucket(&rt, "lambda-quarantine");
    let mut w = Workload::new(31, "orders", StreamViewType::NewAndOldImages, 300);
    let mut events: Vec<String> = (0..3).map(|_| w.next_event(50)).collect();
    // The last change of the stream: a new image with an attribute of an unknown type.
    let mut records: Vec<String> = vec![];
    let bad = loop {
        let c = w.next_change();
        if c.after.is_some() {
            break c;
        }
        records.push(c.record);
    };
    records.push(bad.record.replacen(
        "\"NewImage\":{",
        "\"NewImage\":{\"zz\":{\"XX\":\"a future type\"},",
        1,
    ));
    events.push(format!("{{\"Records\":[{}]}}", records.join(",")));
    events.push(common::fixture("triggers/step-functions-seal.json"));
    let served = serve(
        &events,
        &[
            ("STREAMSEAL_TARGET", "s3://lambda-quarantine/backups".into()),
            ("STREAMSEAL_SEAL_TABLES", "orders".into()),
        ],
    );
    assert_eq!(
        served.responses.len(),
        events.len(),
        "stdout:\n{}\nstderr:\n{}",
        served.stdout,
        served.stderr
    );
    for (path, body) in &served.responses[..4] {
        assert!(path.ends_with("/response"), "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"batchItemFailures": []}),
            "no batch fails"
        );
    }
    let emf: Vec<serde_json::Value> = served
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf[3]["QuarantinedRecords"], 1, "{}", served.stdout);
    // The seal answers (it does not fail): incomplete, naming the quarantined record, and the
    // findings metrics say the same.
    let (path, body) = &served.responses[4];
    assert!(path.ends_with("/response"), "{path}: {body}");
    let report: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(report["status"], "incomplete", "{report}");
    assert_eq!(
        report["tables"][0]["first_findings"][0]["kind"], "quarantined",
        "{report}"
    );
    let metrics = emf
        .iter()
        .find(|m| m.get("FindingsQuarantined").is_some())
        .unwrap_or_else(|| panic!("no findings metrics: {}", served.stdout));
    assert_eq!(metrics["FindingsQuarantined"], 1);
    assert_eq!(metrics["FindingsMissing"], 0);
    assert_eq!(metrics["VerifyStatus"], 1);

    // The CLI restores everything but the quarantined key, and names it.
    let dir = tempfile::tempdir().unwrap();
    let restore = |to: &str, strict: bool| {
        let mut args = vec![
            "restore",
            "--table",
            "orders",
            "--target",
            "s3://lambda-quarantine/backups",
            "--to",
            to,
        ];
        if strict {
            args.push("--strict");
        }
        common::cli(&args, &common::moto_env(), None)
    };
    let to = format!("file://{}", dir.path().join("restored").display());
    let out = restore(&to, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-> MATCH"), "{stdout}");
    assert!(
        stdout.contains(&format!("quarantined: {}", bad.key)) && stdout.contains("/quarantine/"),
        "{stdout}"
    );
    let to = format!("file://{}", dir.path().join("strict").display());
    let strict = restore(&to, true);
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("--strict"),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
}

/// A backup made as the default template makes it, with no schema file, recreates its table
/// as it was: the `streamseal-lambda` binary captures a table with a composite key, a global
/// and a local secondary index and a TTL attribute (records read from the emulator's stream,
/// as the event source mapping delivers them), seals it, and `restore --create-table` makes a
/// new table whose keys, attribute types, indexes, TTL, billing mode and stream match the
/// source's, holding the same items.
#[test]
fn a_table_captured_without_a_schema_file_is_recreated_as_it_was() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
        KeyType, LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType,
        StreamSpecification, StreamViewType, TimeToLiveSpecification,
    };
    use streamseal::aws::tail::{SdkStreams, StreamApi, lambda_event};
    let rt = tokio::runtime::Runtime::new().unwrap();
    create_bucket(&rt, "lambda-definition");
    let ddb = common::dynamodb_client(None);
    let table = "definition-orders";
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let events: Vec<String> = rt.block_on(async {
        ddb.create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("customer", KeyType::Hash))
            .key_schema(key("order_no", KeyType::Range))
            .attribute_definitions(attr("customer", ScalarAttributeType::S))
            .attribute_definitions(attr("order_no", ScalarAttributeType::N))
            .attribute_definitions(attr("status", ScalarAttributeType::S))
            .attribute_definitions(attr("placed", ScalarAttributeType::N))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name("by_status")
                    .key_schema(key("status", KeyType::Hash))
                    .key_schema(key("placed", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .non_key_attributes("total")
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .local_secondary_indexes(
                LocalSecondaryIndex::builder()
                    .index_name("by_placed")
                    .key_schema(key("customer", KeyType::Hash))
                    .key_schema(key("placed", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        ddb.update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        for i in 0..24u32 {
            ddb.put_item()
                .table_name(table)
                .item("customer", AttributeValue::S(format!("c{}", i % 5)))
                .item("order_no", AttributeValue::N(i.to_string()))
                .item(
                    "status",
                    AttributeValue::S(["open", "paid", "sent"][i as usize % 3].into()),
                )
                .item("placed", AttributeValue::N((1_700_000_000 + i).to_string()))
                .item("total", AttributeValue::N(format!("{}.{:02}", i * 3, i)))
                .item("expires", AttributeValue::N("4102444800".into()))
                .send()
                .await
                .unwrap();
        }
        // Read the stream as the event source mapping does, in Lambda's event shape.
        let arn = streamseal::aws::tail::stream_arn(&ddb, table)
            .await
            .unwrap();
        let streams = SdkStreams(common::streams_client());
        let mut events = vec![];
        for shard in streams.shards(&arn).await.unwrap() {
            let Some(mut it) = streams.iterator(&arn, &shard.shard_id, None).await.unwrap() else {
                continue;
            };
            loop {
                let page = streams.records(&it, 10).await.unwrap();
                if page.records.is_empty() {
                    break;
                }
                events.push(lambda_event(&page.records, &arn, "us-east-1").unwrap());
                match page.next {
                    Some(n) => it = n,
                    None => break,
                }
            }
        }
        events
    });
    assert!(events.len() >= 3, "{} events", events.len());
    let mut invocations = events.clone();
    invocations.push(
        serde_json::json!({"action": "seal", "table": table, "reason": "definition test"})
            .to_string(),
    );
    let served = serve(
        &invocations,
        &[
            ("STREAMSEAL_TARGET", "s3://lambda-definition/backups".into()),
            ("STREAMSEAL_SEAL_TABLES", table.into()),
        ],
    );
    assert_eq!(
        served.responses.len(),
        invocations.len(),
        "stderr:\n{}",
        served.stderr
    );
    let sealed: serde_json::Value =
        serde_json::from_str(&served.responses.last().unwrap().1).unwrap();
    assert_eq!(sealed["status"], "ok", "{sealed}");

    let restored = "definition-orders-restored";
    common::run_ok_env(
        &[
            "restore",
            "--table",
            table,
            "--target",
            "s3://lambda-definition/backups",
            "--to",
            &format!("dynamodb://{restored}"),
            "--create-table",
        ],
        &common::moto_env(),
    );
    let described = |name: &str| {
        rt.block_on(async {
            streamseal::aws::dynamodb::describe_definition(&ddb, name)
                .await
                .unwrap()
                .unwrap()
        })
    };
    let (mut source, mut copy) = (described(table), described(restored));
    source.described_at.clear();
    copy.described_at.clear();
    source.attributes.sort_by(|a, b| a.name.cmp(&b.name));
    copy.attributes.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(source.global_indexes.len(), 1);
    assert_eq!(source.global_indexes[0].non_key_attributes, vec!["total"]);
    assert_eq!(source.local_indexes.len(), 1);
    assert_eq!(source.ttl_attribute.as_deref(), Some("expires"));
    assert_eq!(source.billing_mode, "PAY_PER_REQUEST");
    assert_eq!(
        source.stream_view_type.as_deref(),
        Some("NEW_AND_OLD_IMAGES")
    );
    assert_eq!(copy, source, "the recreated table is defined as the source");
    let items = |name: &str| {
        rt.block_on(async {
            let page = ddb.scan().table_name(name).send().await.unwrap();
            assert!(page.last_evaluated_key().is_none(), "one page");
            let mut all: Vec<String> = page
                .items()
                .iter()
                .map(|i| {
                    streamseal::model::item::canonicalize(
                        &streamseal::aws::dynamodb::from_attribute_map(i).unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            all.sort();
            all
        })
    };
    let source_items = items(table);
    assert_eq!(source_items.len(), 24);
    assert_eq!(items(restored), source_items);

    // The managed bulk path gets the same definition: the import request creates the global
    // index (ImportTable takes no local index, TTL or stream: set after the import).
    let report = common::run_json(
        &[
            "restore",
            "--table",
            table,
            "--target",
            "s3://lambda-definition/backups",
            "--to",
            "s3://lambda-definition/import",
            "--json",
        ],
        &common::moto_env(),
    );
    assert_eq!(report["matches"], true, "{report}");
    let t = &report["import_request"]["TableCreationParameters"];
    assert_eq!(t["GlobalSecondaryIndexes"][0]["IndexName"], "by_status");
    assert_eq!(
        t["GlobalSecondaryIndexes"][0]["Projection"],
        serde_json::json!({"ProjectionType": "INCLUDE", "NonKeyAttributes": ["total"]})
    );
    assert_eq!(t["AttributeDefinitions"].as_array().unwrap().len(), 4);
    assert!(t.get("LocalSecondaryIndexes").is_none());
}

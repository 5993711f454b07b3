//! Shared test support: the moto emulator on loopback, S3 clients for it, fixtures, Python.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use streamseal::store::ObjectStore;
use streamseal::store::s3::S3Store;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = root().join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The Python of the test venv (set up by scripts/test).
pub fn python() -> PathBuf {
    let path = std::env::var_os("STREAMSEAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} not found: run the suite with scripts/test, which installs the pinned emulator, pyarrow and DuckDB",
        path.display()
    );
    path
}

/// Runs the `streamseal` CLI from the repository root with `args`, extra environment `env`,
/// and `stdin` (or no input), and returns its output (stdout and stderr captured).
pub fn cli(args: &[&str], env: &[(&str, String)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamseal"));
    cmd.args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs the CLI with `args`, asserts it succeeded, and returns its stdout.
pub fn run_ok(args: &[&str]) -> String {
    run_ok_env(args, &[])
}

/// Runs the CLI with `args` and extra environment `env`, asserts it succeeded, and returns
/// its stdout.
pub fn run_ok_env(args: &[&str], env: &[(&str, String)]) -> String {
    let out = cli(args, env, None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "streamseal {args:?} failed ({}):\n--- stderr\n{}\n--- stdout\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the CLI with `args` and extra environment `env`, asserts it succeeded, and returns
/// its stdout parsed as JSON.
pub fn run_json(args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let stdout = run_ok_env(args, env);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("streamseal {args:?}: stdout is not JSON ({e}):\n{stdout}"))
}

/// Runs the CLI with `args` and extra environment `env`, asserts it failed, and returns its
/// exit code and stderr.
pub fn run_err(args: &[&str], env: &[(&str, String)]) -> (Option<i32>, String) {
    let out = cli(args, env, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "streamseal {args:?} should fail; stdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code(), stderr)
}

/// A moto server for this test process. It exits when the process does (its stdin closes).
pub struct Moto {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The process-wide emulator, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let mut child = Command::new(python())
            .arg(root().join("tests/support/moto_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server (python tests/support/moto_server.py)");
        let stdout = child.stdout.take().expect("moto stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading moto's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("moto printed {line:?}, not a port"));
        Moto {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    })
}

/// An S3 client for the emulator (dummy credentials; moto accepts any).
pub fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto().endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Waits, if need be, until at least `margin_secs` remain in the current UTC hour: recovery
/// runs are de-duplicated per hour, and a test that sends two events expecting the second to
/// be a duplicate must not straddle the hour.
pub fn clear_of_the_hour_end(margin_secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 3600 - now % 3600;
    if left < margin_secs {
        std::thread::sleep(std::time::Duration::from_secs(left + 1));
    }
}

/// A DynamoDB Streams client for the emulator.
pub fn streams_client() -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .endpoint_url(&moto().endpoint)
            .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build(),
    )
}

/// A fresh bucket on the emulator, as a store under `prefix`.
pub async fn fresh_s3_store(bucket: &str, prefix: &str) -> Arc<dyn ObjectStore> {
    let client = s3_client();
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
    Arc::new(S3Store::new(client, bucket, prefix).expect("S3 store"))
}

/// Environment for a child process (the CLI) to reach the emulator.
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", moto().endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// A DynamoDB client for the emulator, optionally with injected faults.
pub fn dynamodb_client(
    faults: Option<Arc<streamseal::testing::dynamo_faults::DynamoFaults>>,
) -> aws_sdk_dynamodb::Client {
    // The project's retry policy, pointed at the emulator.
    let mut config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .retry_config(streamseal::aws::config::retry_config())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ));
    if let Some(f) = faults {
        config = config.interceptor(streamseal::testing::dynamo_faults::SharedFaults(f));
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// Creates an on-demand table keyed `pk` (S) + `sk` (S), with a NEW_AND_OLD_IMAGES stream when
/// `stream` is set.
pub async fn create_orders_table(client: &aws_sdk_dynamodb::Client, table: &str, stream: bool) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let mut req = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    if stream {
        req = req.stream_specification(new_and_old_images());
    }
    for (name, kt) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kt)
                    .build()
                    .unwrap(),
            );
    }
    req.send().await.unwrap();
}

/// A NEW_AND_OLD_IMAGES stream specification.
pub fn new_and_old_images() -> aws_sdk_dynamodb::types::StreamSpecification {
    aws_sdk_dynamodb::types::StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
        .build()
        .unwrap()
}

/// Every item of a `pk`/`sk` table, as canonical DynamoDB JSON, by `pk\0sk` (an independent
/// scan, for comparing tables item for item and type for type).
pub async fn scan_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let text = streamseal::model::item::canonicalize(
                &streamseal::aws::dynamodb::from_attribute_map(item).unwrap(),
            )
            .unwrap();
            let pk = item["pk"].as_s().unwrap().clone();
            let sk = item["sk"].as_s().unwrap().clone();
            out.insert(format!("{pk}\u{0}{sk}"), text);
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out
}

/// Applies one workload change to the table (PutItem or DeleteItem) and returns it.
pub async fn apply_change(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    w: &mut streamseal::demo::workload::Workload,
) -> streamseal::demo::workload::Change {
    use streamseal::aws::dynamodb::to_attribute_map;
    let c = w.next_change();
    match &c.after {
        Some(item) => client
            .put_item()
            .table_name(table)
            .set_item(Some(to_attribute_map(item, "item").unwrap()))
            .send()
            .await
            .map(|_| ())
            .unwrap(),
        None => client
            .delete_item()
            .table_name(table)
            .set_key(Some(to_attribute_map(&c.key, "key").unwrap()))
            .send()
            .await
            .map(|_| ())
            .unwrap(),
    }
    c
}

/// The capture path as the Lambda runs it (quarantine bad records, one thread, no schema).
pub fn ingestor(store: &Arc<dyn ObjectStore>) -> streamseal::capture::Ingestor {
    streamseal::capture::Ingestor::new(
        store.clone(),
        streamseal::capture::SchemaSource::None,
        streamseal::capture::IngestOptions {
            encode: Default::default(),
            prepare_threads: 1,
            bad_records: streamseal::capture::BadRecordPolicy::Quarantine,
        },
    )
}

/// Runs `sql` in DuckDB (tests/support/duckdb_query.py) and returns the rows as strings.
pub fn duckdb_rows(sql: &str) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("query.sql");
    std::fs::write(&file, sql).unwrap();
    let out = Command::new(python())
        .arg(root().join("tests/support/duckdb_query.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

//! The `streamseal-lambda` binary, end to end over the real Lambda Runtime API protocol: a
//! minimal Runtime API on loopback hands it one DynamoDB stream event, the binary writes the
//! segments to S3 (the moto emulator) and posts `{"batchItemFailures": []}` back.

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

#[test]
fn the_binary_serves_a_stream_event_over_the_runtime_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        common::s3_client()
            .create_bucket()
            .bucket("lambda-binary")
            .send()
            .await
            .unwrap()
    });

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
        .env("STREAMSEAL_TARGET", "s3://lambda-binary/backups")
        .env(
            "STREAMSEAL_SCHEMAS",
            common::root().join("schemas").display().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let event = common::fixture("view-new-and-old-images.json");
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let mut served = false;
    let mut response = None;
    // Serve until the function has answered the one invocation; bounded to 60 s, and stops
    // early if the function exits (a start-up error is then in its stderr).
    api.set_nonblocking(true).unwrap();
    let started = std::time::Instant::now();
    'serve: while response.is_none() && started.elapsed() < Duration::from_secs(60) {
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
                ("GET", "/2018-06-01/runtime/invocation/next") if !served => {
                    served = true;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-1\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:streamseal-ingest\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n",
                        event.len()
                    );
                    writer.write_all(head.as_bytes()).unwrap();
                    writer.write_all(event.as_bytes()).unwrap();
                }
                ("POST", path) => {
                    writer
                        .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                        .unwrap();
                    response = Some((path.to_owned(), String::from_utf8(req.body).unwrap()));
                    break 'serve;
                }
                // A second GET means the invocation was answered elsewhere; stop serving.
                _ => break 'serve,
            }
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (path, body) = response.unwrap_or_else(|| {
        panic!("no response from the function\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert_eq!(
        path, "/2018-06-01/runtime/invocation/req-1/response",
        "{body}\n{stdout}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
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

//! The object store conformance suite, run against every backend: in memory, a local
//! directory, and S3 through the moto emulator on loopback.

mod common;

use std::sync::Arc;

use streamseal::store::s3::S3Store;
use streamseal::store::{ObjectStore, PutMode, StoreError};
use streamseal::store::{local::LocalStore, memory::MemoryStore};
use streamseal::testing::store_conformance as conformance;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(Arc::new(LocalStore::new(dir.path()).unwrap()))
        .await
        .unwrap();
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    conformance::run(common::fresh_s3_store("conformance", "").await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_with_prefix_conforms() {
    conformance::run(common::fresh_s3_store("conformance-prefixed", "backups/prod/").await)
        .await
        .unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// An SDK configuration for the emulator, in `region`.
fn moto_config(region: &str) -> aws_config::SdkConfig {
    moto_config_at(&common::moto().endpoint, region)
}

fn moto_config_at(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
            aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests"),
        ))
        .build()
}

/// The two-region deployment: the bucket lives in the recovery region, the writer runs in the
/// table's. Opened without a region, the store asks S3 where the bucket is and signs for that
/// region; it then passes the whole conformance suite. Given a region, it uses it as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_in_another_region_conforms() {
    let eu = aws_sdk_s3::Client::new(&moto_config("eu-west-1"));
    eu.create_bucket()
        .bucket("conformance-eu")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let from_us = moto_config("us-east-1");
    let store = S3Store::from_config(&from_us, "conformance-eu", "dr/", None)
        .await
        .unwrap();
    assert_eq!(store.region().as_deref(), Some("eu-west-1"), "discovered");
    conformance::run(Arc::new(store)).await.unwrap();

    let given = S3Store::from_config(&from_us, "conformance-eu", "dr/", Some("eu-west-1".into()))
        .await
        .unwrap();
    assert_eq!(given.region().as_deref(), Some("eu-west-1"));
    let bad = streamseal::store::open("s3://conformance-eu/dr?region=EU west").await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("is not an AWS region"),
        "a bad region is refused"
    );
}

/// S3 answers a client signing for the wrong region with `301 PermanentRedirect`, which the
/// SDK does not follow. The store turns it into a configuration error naming the bucket's
/// region and how to give it, not a transient failure to retry until records expire. (The
/// emulator does not redirect, so a loopback server answers as S3 does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_to_another_region_is_a_clear_configuration_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>dr-bucket.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>dr-bucket</Bucket></Error>";
            let _ = write!(
                conn,
                "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-west-1\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
        }
    });
    let from_us = moto_config_at(&endpoint, "us-east-1");
    let store = S3Store::from_config(&from_us, "dr-bucket", "", Some("us-east-1".into()))
        .await
        .unwrap();
    let err = store
        .put(
            "a/b.json",
            bytes::Bytes::from_static(b"{}"),
            PutMode::IfAbsent,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::WrongRegion { ref region, .. } if region == "eu-west-1"),
        "{text}"
    );
    assert!(
        text.contains("?region=eu-west-1") && text.contains("STREAMSEAL_TARGET_REGION=eu-west-1"),
        "{text}"
    );
    let listed = store.list("a/", None, None).await.unwrap_err();
    assert!(matches!(listed, StoreError::WrongRegion { .. }), "{listed}");

    // Without a region, opening asks S3 where the bucket is: the redirect names it.
    let discovered = S3Store::from_config(&from_us, "dr-bucket", "", None)
        .await
        .unwrap();
    assert_eq!(discovered.region().as_deref(), Some("eu-west-1"));
}

//! `docs/runbook.md`, run: every block fenced as `sh emulator` is executed in order by bash,
//! with the runbook's variables set, the `streamseal` binary and the pinned `aws` CLI on PATH,
//! against the moto emulator (two regions: primary and recovery). Between blocks the test
//! plays the world: writes to the source table while capture is being enabled, writes to the
//! recovered table before fail-back. It checks what each step promises: the outage restore
//! equals the source, the fail-back restore equals the recovered table.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

const PRIMARY: &str = "us-east-1";
const RECOVERY: &str = "us-west-2";
const TABLE: &str = "runbook-orders";

fn blocks(markdown: &str) -> Vec<String> {
    let mut out = vec![];
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```sh emulator") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

fn client(region: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new(region.to_owned()))
        .endpoint_url(&common::moto().endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn table_items(c: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, String> {
    common::scan_items(c, table).await
}

#[tokio::test]
async fn the_runbook_commands_work_against_the_emulator() {
    let text = std::fs::read_to_string(common::root().join("docs/runbook.md")).unwrap();
    let steps = blocks(&text);
    assert!(steps.len() >= 8, "found {} emulator blocks", steps.len());

    // An existing table with history and no stream, and the bucket.
    let bucket = "runbook-backup";
    common::s3_client()
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let primary = client(PRIMARY);
    let recovery = client(RECOVERY);
    common::create_orders_table(&primary, TABLE, false).await;
    let mut source = streamseal::demo::workload::Workload::new(
        31,
        TABLE,
        streamseal::model::change::StreamViewType::NewAndOldImages,
        200,
    );
    for _ in 0..150 {
        common::apply_change(&primary, TABLE, &mut source).await;
    }

    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_streamseal"))
        .parent()
        .unwrap()
        .to_owned();
    let venv_bin = common::python().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut recovered_writes = streamseal::demo::workload::Workload::new(
        32,
        "x",
        streamseal::model::change::StreamViewType::NewAndOldImages,
        200,
    );
    let mut checked_outage = false;
    let mut checked_failback = false;
    for (i, step) in steps.iter().enumerate() {
        // The world between steps.
        if step.contains("streamseal bootstrap --table \"$TABLE\" --target \"$BACKUP\" --segments")
            || step.contains("--reason \"capture enabled\"")
        {
            for _ in 0..40 {
                common::apply_change(&primary, TABLE, &mut source).await;
            }
        }
        if step.contains("--reason \"fail-back\"") {
            let recovered = format!("{TABLE}-recovered");
            for _ in 0..30 {
                common::apply_change(&recovery, &recovered, &mut recovered_writes).await;
            }
        }

        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{step}"))
            .envs(common::moto_env())
            .env("AWS_REGION", PRIMARY)
            .env("AWS_DEFAULT_REGION", PRIMARY)
            .env("PATH", &path)
            .env("TABLE", TABLE)
            .env("PRIMARY_REGION", PRIMARY)
            .env("RECOVERY_REGION", RECOVERY)
            .env("BACKUP", format!("s3://{bucket}/backups"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runbook block {} failed:\n{step}\n--- stdout\n{}\n--- stderr\n{}",
            i + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // What the step promises.
        if step.contains("--to \"dynamodb://$TABLE-recovered\"") {
            assert_eq!(
                table_items(&recovery, &format!("{TABLE}-recovered")).await,
                table_items(&primary, TABLE).await,
                "the outage restore differs from the source"
            );
            checked_outage = true;
        }
        if step.contains("--to \"dynamodb://$TABLE-failback\"") {
            assert_eq!(
                table_items(&primary, &format!("{TABLE}-failback")).await,
                table_items(&recovery, &format!("{TABLE}-recovered")).await,
                "the fail-back restore differs from the recovered table"
            );
            checked_failback = true;
        }
    }
    assert!(checked_outage && checked_failback);
}

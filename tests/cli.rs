//! The `streamseal` binary as a user runs it: bad input gets one clear error line and writes
//! nothing; good input lands in a local directory or in S3 (the emulator) and reruns are safe.

mod common;

use std::path::Path;

/// Every segment of an `ingest --json` report (one report per event).
fn segments(reports: &serde_json::Value) -> Vec<&serde_json::Value> {
    reports
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["segments"].as_array().unwrap())
        .collect()
}

fn files_under(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn bad_input_gives_one_clear_error_and_writes_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--events", "tests/fixtures/bad/not-json.txt"],
            "tests/fixtures/bad/not-json.txt: not valid JSON at line 1 column 1",
        ),
        (
            &["--events", "tests/fixtures/bad/wrong-shape.json"],
            "missing field `Records`",
        ),
        (
            &["--events", "tests/fixtures/bad/unknown-view-type.json"],
            "record 1 (eventID c81e728d9d4c2f636f067f89cc14862c, sequence 4421584500000000017450439092): dynamodb.StreamViewType: unknown StreamViewType \"NEW_AND_OLDER_IMAGES\"",
        ),
        (
            &[
                "--events",
                "tests/fixtures/view-new-image.json",
                "--schema",
                "tests/fixtures/bad/schema-unknown-type.toml",
            ],
            "schema file tests/fixtures/bad/schema-unknown-type.toml, line 6: unknown column type \"money\"",
        ),
        (
            &["--events", "tests/fixtures/malformed-record.json"],
            "record 1 (eventID 0b, sequence 6600000000000000000002): dynamodb.NewImage: attribute total: \"twelve\" is not a decimal number",
        ),
        (
            &["--events", "tests/fixtures/does-not-exist.json"],
            "cannot read events file tests/fixtures/does-not-exist.json",
        ),
        (
            &[
                "--events",
                "tests/fixtures/view-new-image.json",
                "--threads",
                "0",
            ],
            "invalid value '0' for '--threads",
        ),
    ];
    for (extra, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("backup");
        let mut args = vec!["ingest", "--target", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (_, stderr) = common::run_err(&args, &[]);
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr was:\n{stderr}\nexpected to contain: {needle}"
        );
        let error_lines = stderr.lines().filter(|l| l.starts_with("error")).count();
        assert_eq!(error_lines, 1, "{args:?}: one error line, got:\n{stderr}");
        assert_eq!(files_under(&target), 0, "{args:?}: nothing written");
    }
}

#[test]
fn a_bad_event_later_in_the_input_stops_the_run_before_any_write() {
    let good = common::fixture("view-new-and-old-images.json").replace('\n', "");
    let bad = common::fixture("bad/unknown-view-type.json").replace('\n', "");
    let dir = tempfile::tempdir().unwrap();
    let out = common::cli(
        &["ingest", "--target", dir.path().to_str().unwrap()],
        &[],
        Some(&format!("{good}\n{bad}\n")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("stdin: event 2 (line 2)"), "{stderr}");
    assert_eq!(files_under(dir.path()), 0);
}

#[test]
fn quarantine_mode_keeps_bad_records_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = common::run_ok(&[
        "ingest",
        "--target",
        dir.path().to_str().unwrap(),
        "--events",
        "tests/fixtures/malformed-record.json",
        "--quarantine-bad-records",
    ]);
    assert!(stdout.contains("quarantined record 1"), "{stdout}");
    assert_eq!(files_under(&dir.path().join("orders/quarantine")), 1);
    assert_eq!(files_under(&dir.path().join("orders/changes")), 1);
}

/// An input large enough to be read in two halves at once (16 MiB and up) and split on two
/// threads arrives whole: every record of every event is ingested, once.
#[test]
fn a_large_events_file_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let text = common::run_ok(&[
        "sample-events",
        "--records",
        "9500",
        "--batch",
        "500",
        "--item-bytes",
        "1024",
    ]);
    assert!(text.len() > 16 << 20, "{} bytes", text.len());
    std::fs::write(&events, &text).unwrap();
    let target = dir.path().join("backup");
    let args = [
        "ingest",
        "--threads",
        "2",
        "--events",
        events.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--json",
    ];
    let report = common::run_json(&args, &[]);
    let events = report.as_array().unwrap();
    assert_eq!(events.len(), 19);
    let records: u64 = events.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    let rows: u64 = segments(&report)
        .iter()
        .map(|s| s["rows"].as_u64().unwrap())
        .sum();
    assert_eq!((records, rows), (9500, 9500));
    // The same input again finds everything written.
    let again = common::run_json(&args, &[]);
    assert!(segments(&again).iter().all(|s| s["created"] == false));
}

#[test]
fn ingest_to_s3_then_rerun_is_idempotent() {
    let env = common::moto_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        common::s3_client()
            .create_bucket()
            .bucket("cli-ingest")
            .send()
            .await
            .unwrap()
    });
    let args = [
        "ingest",
        "--target",
        "s3://cli-ingest/backups",
        "--schema",
        "schemas/orders.toml",
        "--events",
        "tests/fixtures/sample-events.jsonl",
        "--json",
    ];
    let report = common::run_json(&args, &env);
    let written = segments(&report);
    assert!(!written.is_empty());
    assert!(written.iter().all(|s| s["created"] == true));
    let listed = rt.block_on(async {
        common::s3_client()
            .list_objects_v2()
            .bucket("cli-ingest")
            .prefix("backups/orders/changes/")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(listed.contents().len(), written.len());

    let report = common::run_json(&args, &env);
    assert!(segments(&report).iter().all(|s| s["created"] == false));
}

#[test]
fn help_explains_the_commands() {
    let text = common::run_ok(&["--help"]);
    assert!(
        text.contains("ingest") && text.contains("sample-events"),
        "{text}"
    );
    let text = common::run_ok(&["ingest", "--help"]);
    assert!(
        text.contains("--quarantine-bad-records") && text.contains("s3://bucket/prefix"),
        "{text}"
    );
    let (_, err) = common::run_err(&["ingest", "--bogus"], &[]);
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
}

/// `seal`, `verify` and `snapshots` as an operator runs them on a local backup and on S3:
/// reports in text and JSON, a tampered segment fails verify with exit status 4 (corrupt) naming it,
/// bad flags and unknown snapshots get clear errors.
#[test]
fn seal_verify_and_snapshots_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    common::run_ok(&[
        "ingest",
        "--events",
        "tests/fixtures/sample-events.jsonl",
        "--target",
        &target,
    ]);

    let report = common::run_json(
        &[
            "seal", "--table", "orders", "--target", &target, "--reason", "drill", "--json",
        ],
        &[],
    );
    assert_eq!(report["seal"]["manifest"]["reason"], "drill");
    assert_eq!(report["seal"]["manifest"]["snapshot_id"], "0000000001");
    assert_eq!(report["verify"]["ok"], true);
    let rows = report["seal"]["manifest"]["totals"]["rows"]
        .as_u64()
        .unwrap();
    assert!(rows > 0);

    let out = common::run_ok(&["seal", "--table", "orders", "--target", &target]);
    assert!(
        out.contains("sealed snapshot 0000000002 of orders") && out.contains("OK:"),
        "{out}"
    );

    let out = common::run_ok(&["snapshots", "--table", "orders", "--target", &target]);
    assert!(
        out.contains("0000000001") && out.contains("0000000002") && out.contains("drill"),
        "{out}"
    );

    let v = common::run_json(
        &[
            "verify", "--table", "orders", "--target", &target, "--deep", "--json",
        ],
        &[],
    );
    assert_eq!(v["rows_read"].as_u64(), Some(rows));

    // Truncate a segment: verify exits 4 (corrupt) and names it, in text and in JSON.
    let seg = std::fs::read_dir(dir.path().join("orders/changes"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .flat_map(|h| std::fs::read_dir(h.path()).unwrap().flatten())
        .next()
        .unwrap()
        .path();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - 1]).unwrap();
    let key = seg
        .strip_prefix(dir.path())
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let bad = common::cli(
        &[
            "verify",
            "--table",
            "orders",
            "--target",
            &target,
            "--snapshot",
            "1",
        ],
        &[],
        None,
    );
    assert_eq!(bad.status.code(), Some(4));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.starts_with("CORRUPT") && out.contains(&format!("[altered] {key}")),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is CORRUPT"));
    let bad = common::cli(
        &["verify", "--table", "orders", "--target", &target, "--json"],
        &[],
        None,
    );
    assert_eq!(bad.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["status"], "corrupt");
    assert_eq!(v["findings"][0]["object"], key.as_str());
    assert_eq!(v["findings"][0]["kind"], "altered");
    std::fs::write(&seg, &bytes).unwrap();

    // Clear errors for what cannot work.
    for (args, expected) in [
        (
            vec![
                "verify",
                "--table",
                "orders",
                "--target",
                &target,
                "--snapshot",
                "abc",
            ],
            "\"abc\" is not a snapshot id",
        ),
        (
            vec![
                "verify",
                "--table",
                "orders",
                "--target",
                &target,
                "--snapshot",
                "9",
            ],
            "snapshot 0000000009 of table orders does not exist",
        ),
        (
            vec!["verify", "--table", "customers", "--target", &target],
            "table customers has no sealed snapshot",
        ),
        (
            vec!["seal", "--table", "bad table!", "--target", &target],
            "--table \"bad table!\"",
        ),
        (
            vec![
                "seal",
                "--table",
                "orders",
                "--target",
                &target,
                "--retention-days",
                "0",
            ],
            "--retention-days",
        ),
        (vec!["seal", "--target", &target], "--table <TABLE>"),
    ] {
        let (_, err) = common::run_err(&args, &[]);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// `restore` and `bootstrap` as an operator runs them against the emulator: a restore into a
/// new table with --create-table matches; a second restore into the same table, a bad --to,
/// a bad --as-of and a table without a stream are refused with clear errors and exit 1.
#[test]
fn restore_and_bootstrap_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    let env = common::moto_env();
    common::run_ok_env(
        &[
            "ingest",
            "--events",
            "tests/fixtures/sample-events.jsonl",
            "--target",
            &target,
        ],
        &env,
    );
    common::run_ok_env(
        &[
            "seal",
            "--table",
            "orders",
            "--target",
            &target,
            "--schema",
            "schemas/orders.toml",
        ],
        &env,
    );

    let out = common::run_ok_env(
        &[
            "restore",
            "--table",
            "orders",
            "--target",
            &target,
            "--to",
            "dynamodb://cli-restored",
            "--create-table",
        ],
        &env,
    );
    assert!(
        out.contains("MATCH") && out.contains("to dynamodb://cli-restored"),
        "{out}"
    );

    let files = dir.path().join("files");
    let to_files = format!("file://{}", files.display());
    let r = common::run_json(
        &[
            "restore", "--table", "orders", "--target", &target, "--to", &to_files, "--json",
        ],
        &env,
    );
    assert_eq!(r["matches"], true);
    assert!(files.join("data/part-00000.json.gz").exists());

    for (args, expected) in [
        (
            vec![
                "restore",
                "--table",
                "orders",
                "--target",
                &target,
                "--to",
                "dynamodb://cli-restored",
            ],
            "is not empty",
        ),
        (
            vec![
                "restore", "--table", "orders", "--target", &target, "--to", "ftp://x",
            ],
            "expected dynamodb://TABLE, s3://bucket/prefix or file://DIR",
        ),
        (
            vec![
                "restore",
                "--table",
                "orders",
                "--target",
                &target,
                "--to",
                "dynamodb://xyz",
                "--as-of",
                "yesterday",
            ],
            "is not an RFC 3339 instant",
        ),
        (
            vec![
                "restore",
                "--table",
                "orders",
                "--target",
                &target,
                "--to",
                "dynamodb://missing-table",
            ],
            "does not exist; create it, or pass --create-table",
        ),
        (
            vec!["bootstrap", "--table", "cli-restored", "--target", &target],
            "no stream is enabled",
        ),
    ] {
        let (code, err) = common::run_err(&args, &env);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// `demo`, the README's main command: runs end to end on a small size and reports a digest
/// match; a rerun replaces its own directory; a foreign directory and bad flags are refused.
#[test]
fn demo_runs_end_to_end_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let demo = demo_dir.to_str().unwrap();
    for _ in 0..2 {
        let r = common::run_json(&["demo", "--dir", demo, "--changes", "1500", "--json"], &[]);
        assert_eq!(r["digest_match"], true);
        assert_eq!(r["items_match"], true);
        assert_eq!(r["verify_ok"], true);
        assert_eq!(r["changes"], 1500);
    }
    // The outage seal recorded the schema file's key, so a restore can create the table.
    let manifest =
        std::fs::read_to_string(demo_dir.join("backup/orders/snapshots/0000000001.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["key_schema"]["partition"]["name"], "pk");
    let out = common::run_ok(&["demo", "--dir", demo, "--changes", "300"]);
    assert!(
        out.contains("digest match") && out.contains("Next:"),
        "{out}"
    );
    assert!(
        !out.contains("CloudWatchMetrics"),
        "no metrics lines on the terminal"
    );

    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    for (args, expected) in [
        (
            vec!["demo", "--dir", foreign.to_str().unwrap()],
            "is not a previous demo",
        ),
        (vec!["demo", "--changes", "0"], "--changes"),
        (vec!["demo", "--changes", "many"], "--changes"),
    ] {
        let (_, err) = common::run_err(&args, &[]);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(foreign.join("keep.txt").exists());
}

/// `compact` from the command line: dry run changes nothing, a run writes compacted objects,
/// a seal publishes them, a clean-up run with no grace deletes the small files, and the
/// snapshot still deep-verifies; bad durations are refused clearly.
#[test]
fn compact_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_owned();
    common::run_ok(&[
        "ingest",
        "--events",
        "tests/fixtures/sample-events.jsonl",
        "--target",
        &target,
    ]);
    common::run_ok(&["seal", "--table", "orders", "--target", &target]);
    let before = files_under(dir.path());
    let dry = common::run_ok(&[
        "compact",
        "--table",
        "orders",
        "--target",
        &target,
        "--older-than",
        "0",
        "--dry-run",
    ]);
    assert!(dry.contains("would write"), "{dry}");
    assert_eq!(files_under(dir.path()), before);
    let report = common::run_json(
        &[
            "compact",
            "--table",
            "orders",
            "--target",
            &target,
            "--older-than",
            "0",
            "--json",
        ],
        &[],
    );
    let written = report["written"].as_array().unwrap().len();
    assert!(written > 0, "{report}");
    common::run_ok(&["seal", "--table", "orders", "--target", &target]);
    let out = common::run_ok(&[
        "compact",
        "--table",
        "orders",
        "--target",
        &target,
        "--older-than",
        "3650d",
        "--grace",
        "0",
    ]);
    assert!(out.contains("deleted"), "{out}");
    common::run_ok(&["verify", "--table", "orders", "--target", &target, "--deep"]);

    let (_, err) = common::run_err(
        &[
            "compact",
            "--table",
            "orders",
            "--target",
            &target,
            "--grace",
            "5 fortnights",
        ],
        &[],
    );
    assert!(
        err.contains("\"5 fortnights\" is not a duration like 90s, 30m, 6h or 2d"),
        "{err}"
    );
}

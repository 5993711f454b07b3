//! The one test suite every [`ObjectStore`] backend passes (memory, local directory, and S3
//! through the emulator). Integration tests call [`run`] with a fresh, empty store.
//!
//! It checks the behaviour the rest of streamseal relies on: exact bytes back, `IfAbsent`
//! refusing a second writer (also under a race), listings in key order with `start_after`,
//! limits and pagination past 1,000 keys, prefix boundaries, idempotent deletes, and rejection
//! of keys that could escape the store root.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::store::{ObjectStore, PutMode, PutOutcome, StoreError};

fn check(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("conformance: {what}"))
    }
}

fn e(err: StoreError) -> String {
    format!("conformance: unexpected store error: {err}")
}

/// Runs the suite against an empty store. Returns the first failed expectation.
pub async fn run(store: Arc<dyn ObjectStore>) -> Result<(), String> {
    let s = store.as_ref();

    // Exact bytes, including empty and binary bodies.
    let binary: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
    for (key, body) in [
        ("t/bytes/empty", Vec::new()),
        ("t/bytes/binary", binary.clone()),
        ("t/bytes/unicode é/ключ", "é\0x".as_bytes().to_vec()),
    ] {
        let put = s
            .put(key, Bytes::from(body.clone()), PutMode::IfAbsent)
            .await
            .map_err(e)?;
        check(
            put == PutOutcome::Created,
            &format!("first IfAbsent put of {key} creates"),
        )?;
        let got = s.get(key).await.map_err(e)?;
        check(
            got.as_ref() == body.as_slice(),
            &format!("get {key} returns the bytes put"),
        )?;
        let head = s.head(key).await.map_err(e)?;
        check(
            head.map(|m| m.size) == Some(body.len() as u64),
            &format!("head {key} gives its size"),
        )?;
    }

    // IfAbsent refuses, Overwrite replaces.
    let again = s
        .put(
            "t/bytes/binary",
            Bytes::from_static(b"other"),
            PutMode::IfAbsent,
        )
        .await
        .map_err(e)?;
    check(
        again == PutOutcome::AlreadyExists,
        "second IfAbsent put reports AlreadyExists",
    )?;
    check(
        s.get("t/bytes/binary").await.map_err(e)?.as_ref() == binary.as_slice(),
        "refused put leaves the object unchanged",
    )?;
    s.put(
        "t/bytes/binary",
        Bytes::from_static(b"new"),
        PutMode::Overwrite,
    )
    .await
    .map_err(e)?;
    check(
        s.get("t/bytes/binary").await.map_err(e)?.as_ref() == b"new",
        "Overwrite replaces the object",
    )?;

    // Missing objects.
    check(
        s.head("t/missing").await.map_err(e)?.is_none(),
        "head of a missing key is None",
    )?;
    check(
        matches!(s.get("t/missing").await, Err(StoreError::NotFound { .. })),
        "get of a missing key is NotFound",
    )?;

    // A race of IfAbsent writers: exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .put("t/race/key", Bytes::from(vec![i; 1000]), PutMode::IfAbsent)
                .await
        });
    }
    let mut created = 0;
    while let Some(r) = tasks.join_next().await {
        if r.map_err(|err| err.to_string())?.map_err(e)? == PutOutcome::Created {
            created += 1;
        }
    }
    check(
        created == 1,
        &format!("exactly one of 8 racing IfAbsent puts wins (got {created})"),
    )?;
    let winner = s.get("t/race/key").await.map_err(e)?;
    check(
        winner.len() == 1000 && winner.iter().all(|&b| b == winner[0]),
        "the winner's bytes are whole",
    )?;

    // Listings: order, prefix boundary, start_after, limit, pagination past 1,000 keys.
    const MANY: usize = 1005;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..MANY {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .put(
                    &format!("t/list/{i:05}.json"),
                    Bytes::from(i.to_string()),
                    PutMode::IfAbsent,
                )
                .await
        });
        if tasks.len() >= 32
            && let Some(r) = tasks.join_next().await
        {
            r.map_err(|err| err.to_string())?.map_err(e)?;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|err| err.to_string())?.map_err(e)?;
    }
    s.put(
        "t/listx/outside",
        Bytes::from_static(b"x"),
        PutMode::IfAbsent,
    )
    .await
    .map_err(e)?;
    s.put(
        "t/list/sub/deeper.json",
        Bytes::from_static(b"d"),
        PutMode::IfAbsent,
    )
    .await
    .map_err(e)?;
    let all = s.list("t/list/", None, None).await.map_err(e)?;
    check(
        all.len() == MANY + 1,
        &format!(
            "list returns every key under the prefix ({} of {})",
            all.len(),
            MANY + 1
        ),
    )?;
    check(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "list is in key order",
    )?;
    check(
        all.iter().all(|m| m.key.starts_with("t/list/")),
        "list stays inside the prefix",
    )?;
    check(
        all.iter().any(|m| m.key == "t/list/sub/deeper.json"),
        "list is recursive",
    )?;
    let after = s
        .list("t/list/", Some("t/list/00999.json"), None)
        .await
        .map_err(e)?;
    check(
        after.first().map(|m| m.key.as_str()) == Some("t/list/01000.json") && after.len() == 6,
        "start_after skips keys up to and including it",
    )?;
    let limited = s
        .list("t/list/", Some("t/list/00010.json"), Some(3))
        .await
        .map_err(e)?;
    let keys: Vec<&str> = limited.iter().map(|m| m.key.as_str()).collect();
    check(
        keys == [
            "t/list/00011.json",
            "t/list/00012.json",
            "t/list/00013.json",
        ],
        "limit caps the listing",
    )?;
    check(
        all.iter()
            .find(|m| m.key == "t/list/00123.json")
            .map(|m| m.size)
            == Some(3),
        "list reports sizes",
    )?;
    check(
        s.list("t/nothing/", None, None)
            .await
            .map_err(e)?
            .is_empty(),
        "an empty prefix lists nothing",
    )?;

    // start_after across folders: a listing after a point skips whole earlier folders (the
    // local store prunes them) and still returns every later key, in order.
    for key in [
        "t/tree/a/1",
        "t/tree/b/1",
        "t/tree/b/2",
        "t/tree/c/1",
        "t/tree/c/d/1",
    ] {
        s.put(key, Bytes::from_static(b"x"), PutMode::IfAbsent)
            .await
            .map_err(e)?;
    }
    for (after, expected) in [
        (
            "t/tree/b/1",
            &["t/tree/b/2", "t/tree/c/1", "t/tree/c/d/1"][..],
        ),
        (
            "t/tree/b",
            &["t/tree/b/1", "t/tree/b/2", "t/tree/c/1", "t/tree/c/d/1"][..],
        ),
        (
            "t/tree/a/9",
            &["t/tree/b/1", "t/tree/b/2", "t/tree/c/1", "t/tree/c/d/1"][..],
        ),
        ("t/tree/c/", &["t/tree/c/1", "t/tree/c/d/1"][..]),
        ("t/tree/c/2", &["t/tree/c/d/1"][..]),
        ("t/tree/d", &[][..]),
    ] {
        let got = s.list("t/tree/", Some(after), None).await.map_err(e)?;
        let keys: Vec<&str> = got.iter().map(|m| m.key.as_str()).collect();
        check(
            keys == expected,
            &format!("list after {after:?} across folders gives {expected:?}, got {keys:?}"),
        )?;
    }

    // HEAD reports the SHA-256 of the content (what quick verify compares).
    let head = s.head("t/list/00123.json").await.map_err(e)?;
    check(
        head.and_then(|m| m.sha256) == Some(hex::encode(Sha256::digest(b"123"))),
        "head reports the content's SHA-256",
    )?;

    // A put given the body's SHA-256 (what the capture path does with segments) writes the
    // same object, and HEAD reports that checksum.
    let body = Bytes::from_static(b"segment bytes");
    let sha256: [u8; 32] = Sha256::digest(&body).into();
    let hashed = crate::store::PutOptions {
        retention: None,
        sha256: Some(sha256),
    };
    let put = s
        .put_with("t/hashed/seg", body.clone(), PutMode::IfAbsent, hashed)
        .await
        .map_err(e)?;
    check(
        put == PutOutcome::Created,
        "put_with (a known SHA-256) creates",
    )?;
    check(
        s.get("t/hashed/seg").await.map_err(e)? == body,
        "put_with (a known SHA-256) stores the bytes",
    )?;
    check(
        s.head("t/hashed/seg")
            .await
            .map_err(e)?
            .and_then(|m| m.sha256)
            == Some(hex::encode(sha256)),
        "head reports the SHA-256 of a put_with (a known SHA-256) object",
    )?;
    let again = s
        .put_with("t/hashed/seg", body, PutMode::IfAbsent, hashed)
        .await
        .map_err(e)?;
    check(
        again == PutOutcome::AlreadyExists,
        "put_with (a known SHA-256) IfAbsent reports AlreadyExists",
    )?;

    // Deletes are idempotent.
    s.delete("t/list/00000.json").await.map_err(e)?;
    s.delete("t/list/00000.json").await.map_err(e)?;
    check(
        s.head("t/list/00000.json").await.map_err(e)?.is_none(),
        "deleted object is gone",
    )?;

    // Keys that could escape the root are refused before any I/O.
    for bad in ["../escape", "/absolute", "a//b", "a/./b", ""] {
        check(
            s.put(bad, Bytes::from_static(b"x"), PutMode::Overwrite)
                .await
                .is_err(),
            &format!("key {bad:?} is refused"),
        )?;
    }
    Ok(())
}

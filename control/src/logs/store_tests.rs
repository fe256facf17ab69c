//! Tests of the log store against a real SQLite file in a temporary folder.

use super::*;
use crate::logs::wire::PushStream;
use std::collections::BTreeMap;
use std::time::Duration;

const SEC: i64 = 1_000_000_000;

fn stream(pod: &str, container: &str, app: &str, lines: &[(u64, i64, &str)]) -> PushStream {
    PushStream {
        source: format!("uid-{pod}/{container}/0"),
        namespace: "ns1".into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        container: container.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        lines: lines
            .iter()
            .map(|(p, t, l)| (Some(*p), *t, 0u8, l.to_string()))
            .collect(),
    }
}

fn store(dir: &tempfile::TempDir, retention: Retention) -> LogStore {
    LogStore::open(&dir.path().join("logs.db"), retention).expect("open")
}

fn q(pairs: &[(&str, &str)]) -> Query {
    let v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    query::parse(&v, Utc::now()).expect("query")
}

fn texts(s: &LogStore, query: &Query) -> Vec<String> {
    s.query(query)
        .expect("query")
        .0
        .into_iter()
        .map(|l| l.line)
        .collect()
}

#[test]
fn filters_by_labels_pod_container_and_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, Retention::default());
    let req = PushRequest {
        node: "n1".into(),
        streams: vec![
            stream(
                "web-1",
                "nginx",
                "web",
                &[(0, 10 * SEC, "a"), (10, 20 * SEC, "b")],
            ),
            stream("db-1", "pg", "db", &[(0, 15 * SEC, "c")]),
        ],
    };
    assert_eq!(s.push(&req, 0).expect("push").accepted, 3);
    assert_eq!(texts(&s, &q(&[])), ["a", "c", "b"]);
    assert_eq!(texts(&s, &q(&[("selector", "app=web")])), ["a", "b"]);
    assert_eq!(texts(&s, &q(&[("selector", "app!=web")])), ["c"]);
    assert_eq!(texts(&s, &q(&[("pod", "db-1")])), ["c"]);
    assert_eq!(texts(&s, &q(&[("container", "nginx")])), ["a", "b"]);
    assert_eq!(
        texts(&s, &q(&[("namespace", "other")])),
        Vec::<String>::new()
    );
    let since = rfc3339(12 * SEC);
    let until = rfc3339(20 * SEC);
    assert_eq!(
        texts(&s, &q(&[("since", &since), ("until", &until)])),
        ["c"]
    );
    let line = &s.query(&q(&[("pod", "web-1")])).expect("query").0[0];
    assert_eq!(
        (
            line.node.as_str(),
            line.namespace.as_str(),
            line.container.as_str()
        ),
        ("n1", "ns1", "nginx")
    );
    assert_eq!(line.time, "1970-01-01T00:00:10.000000000Z");
}

#[test]
fn pages_follow_continue_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, Retention::default());
    let lines: Vec<(u64, i64, String)> = (0..25).map(|i| (i, SEC, format!("l{i}"))).collect();
    let refs: Vec<(u64, i64, &str)> = lines.iter().map(|(p, t, l)| (*p, *t, l.as_str())).collect();
    let req = PushRequest {
        node: "n1".into(),
        streams: vec![stream("p", "c", "x", &refs)],
    };
    s.push(&req, 0).expect("push");
    let mut got = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut pairs = vec![("limit", "10")];
        if let Some(t) = &token {
            pairs.push(("continue", t));
        }
        let (items, next) = s.query(&q(&pairs)).expect("query");
        got.extend(items.into_iter().map(|l| l.line));
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("l{i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn resent_lines_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(&dir, Retention::default());
    let first = PushRequest {
        node: "n1".into(),
        streams: vec![stream("p", "c", "x", &[(0, SEC, "one"), (40, SEC, "two")])],
    };
    s.push(&first, 0).expect("push");
    // The agent crashed before saving its offset and sends from position 0 again.
    let again = PushRequest {
        node: "n1".into(),
        streams: vec![stream(
            "p",
            "c",
            "x",
            &[(0, SEC, "one"), (40, SEC, "two"), (80, SEC, "three")],
        )],
    };
    let r = s.push(&again, 0).expect("push");
    assert_eq!((r.accepted, r.duplicates), (1, 2));
    assert_eq!(texts(&s, &q(&[])), ["one", "two", "three"]);
    assert_eq!(s.cursor("n1", "uid-p/c/0").expect("cursor"), Some(80));
    // The same source on another node is another stream.
    let other = PushRequest {
        node: "n2".into(),
        ..again
    };
    assert_eq!(s.push(&other, 0).expect("push").accepted, 3);
}

#[test]
fn age_retention_drops_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(
        &dir,
        Retention {
            max_age: Duration::from_secs(60),
            ..Retention::default()
        },
    );
    let now = 1_000 * SEC;
    let req = PushRequest {
        node: "n1".into(),
        streams: vec![stream(
            "p",
            "c",
            "x",
            &[
                (0, now - 120 * SEC, "old"),
                (1, now - 61 * SEC, "older than a minute"),
                (2, now - 30 * SEC, "new"),
            ],
        )],
    };
    s.push(&req, now).expect("push");
    let swept = s.sweep(now).expect("sweep");
    assert_eq!(swept.by_age, 2);
    assert_eq!(texts(&s, &q(&[])), ["new"]);
}

#[test]
fn size_retention_drops_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(
        &dir,
        Retention {
            max_bytes: u64::MAX / 4,
            ..Retention::default()
        },
    );
    let text = "x".repeat(200);
    let lines: Vec<(u64, i64, String)> = (0..5000)
        .map(|i| (i, (i as i64 + 1) * SEC, format!("{i:05} {text}")))
        .collect();
    let refs: Vec<(u64, i64, &str)> = lines.iter().map(|(p, t, l)| (*p, *t, l.as_str())).collect();
    s.push(
        &PushRequest {
            node: "n1".into(),
            streams: vec![stream("p", "c", "x", &refs)],
        },
        0,
    )
    .expect("push");
    let full = s.used_bytes().expect("used");
    assert!(full > 1_000_000, "5000 lines of 200 bytes use {full} bytes");
    drop(s);
    let max = full / 2;
    let s = store(
        &dir,
        Retention {
            max_bytes: max,
            max_age: Duration::from_secs(u64::MAX / 4_000_000_000),
            ..Retention::default()
        },
    );
    let swept = s.sweep(6000 * SEC).expect("sweep");
    assert!(swept.by_size > 0 && swept.by_age == 0, "{swept:?}");
    assert!(s.used_bytes().expect("used") <= max);
    let left = texts(&s, &q(&[("limit", "50000")]));
    assert_eq!(left.len() as u64, 5000 - swept.by_size);
    // What is left is the newest lines, in order, ending with the last one.
    assert!(left.last().is_some_and(|l| l.starts_with("04999 ")));
    let first: usize = left[0][..5].parse().expect("number");
    assert_eq!(first as u64, swept.by_size);
}

#[test]
fn drop_estimates() {
    assert_eq!(lines_to_drop(100, 200, 10), 0);
    assert_eq!(lines_to_drop(200, 100, 10), 6);
    assert_eq!(lines_to_drop(1_000, 999, 1_000_000), 109_000);
    assert_eq!(lines_to_drop(10, 1, 3), 3);
}

//! The conformance suite every `Backend` must pass: create/update/delete rules, optimistic
//! concurrency, range reads with paging, watch ordering from any revision, and compaction.
//! Each check is a plain async function that panics with a message on failure, so a backend's
//! test module calls `run_all(fresh_backend)`.

use super::{Backend, EventKind, StoreError};
use std::future::Future;
use std::time::Duration;

async fn next_event(rx: &mut super::WatchReceiver) -> super::Event {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watch closed while an event was expected"),
        Err(_) => panic!("no watch event within 5 s"),
    }
}

pub async fn create_get_update_delete(b: &dyn Backend) {
    let a = b.create("/r/pods/a", b"1".to_vec()).await.expect("create");
    assert_eq!(a.create_rev, a.mod_rev);
    assert!(matches!(
        b.create("/r/pods/a", b"x".to_vec()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let got = b.get("/r/pods/a").await.expect("get").expect("present");
    assert_eq!(got, a);
    let a2 = b
        .update("/r/pods/a", a.mod_rev, b"2".to_vec())
        .await
        .expect("update");
    assert!(a2.mod_rev > a.mod_rev);
    assert_eq!(a2.create_rev, a.create_rev);
    let stale = b.update("/r/pods/a", a.mod_rev, b"3".to_vec()).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected, actual, .. }) if expected == a.mod_rev && actual == a2.mod_rev)
    );
    assert!(matches!(
        b.update("/r/pods/none", 1, b"x".to_vec()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        b.delete("/r/pods/a", Some(a.mod_rev)).await,
        Err(StoreError::Conflict { .. })
    ));
    let gone = b
        .delete("/r/pods/a", Some(a2.mod_rev))
        .await
        .expect("delete");
    assert_eq!(gone.value, b"2");
    assert!(gone.mod_rev > a2.mod_rev);
    assert!(b.get("/r/pods/a").await.expect("get").is_none());
    assert!(matches!(
        b.delete("/r/pods/a", None).await,
        Err(StoreError::NotFound { .. })
    ));
    // A key can be created again after deletion and gets a new create revision.
    let again = b
        .create("/r/pods/a", b"4".to_vec())
        .await
        .expect("re-create");
    assert!(again.create_rev > gone.mod_rev);
    assert_eq!(b.revision().await.expect("revision"), again.mod_rev);
}

pub async fn concurrent_updates_conflict(b: &'static dyn Backend) {
    let base = b.create("/r/cm/c", b"0".to_vec()).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(async move {
            b.update("/r/cm/c", base.mod_rev, vec![i]).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(
        ok, 1,
        "exactly one of 16 racing updates from the same revision may win"
    );
    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(async move {
            b.create(&format!("/r/cm/n{i:02}"), vec![i]).await
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.expect("join").expect("create").mod_rev);
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 16, "every write gets its own revision");
}

pub async fn list_prefix_and_paging(b: &dyn Backend) {
    for name in ["b", "a", "c", "d"] {
        b.create(&format!("/r/svc/ns1/{name}"), name.as_bytes().to_vec())
            .await
            .expect("create");
    }
    b.create("/r/svc/ns2/x", b"x".to_vec())
        .await
        .expect("create");
    b.create("/r/svcx/ns1/y", b"y".to_vec())
        .await
        .expect("create");
    let all = b.list("/r/svc/", None, 0).await.expect("list");
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/r/svc/ns1/a",
            "/r/svc/ns1/b",
            "/r/svc/ns1/c",
            "/r/svc/ns1/d",
            "/r/svc/ns2/x"
        ]
    );
    assert!(!all.more);
    assert_eq!(all.revision, b.revision().await.expect("revision"));
    let page = b.list("/r/svc/ns1/", None, 3).await.expect("page 1");
    assert_eq!(page.items.len(), 3);
    assert!(page.more);
    let last = page
        .items
        .last()
        .map(|kv| kv.key.clone())
        .unwrap_or_default();
    let rest = b.list("/r/svc/ns1/", Some(&last), 3).await.expect("page 2");
    assert_eq!(
        rest.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/r/svc/ns1/d"]
    );
    assert!(!rest.more);
}

pub async fn watch_from_any_revision(b: &dyn Backend) {
    let start = b.revision().await.expect("revision");
    let mut live = b.watch("/r/w/", start).await.expect("watch");
    let one = b.create("/r/w/one", b"1".to_vec()).await.expect("create");
    b.create("/r/other/zzz", b"z".to_vec())
        .await
        .expect("create outside prefix");
    let two = b
        .update("/r/w/one", one.mod_rev, b"2".to_vec())
        .await
        .expect("update");
    let three = b.delete("/r/w/one", None).await.expect("delete");
    let seen = [
        next_event(&mut live).await,
        next_event(&mut live).await,
        next_event(&mut live).await,
    ];
    assert_eq!(
        seen.iter().map(|e| e.kv.mod_rev).collect::<Vec<_>>(),
        [one.mod_rev, two.mod_rev, three.mod_rev]
    );
    assert_eq!(
        seen.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Put, EventKind::Put, EventKind::Delete]
    );
    assert_eq!(
        seen[1].prev.as_ref().map(|p| p.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(
        seen[2].kv.value, b"2",
        "a delete event carries the last value"
    );
    // Starting from each revision in between replays exactly the later events.
    for (from, expect) in [(one.mod_rev, 2usize), (two.mod_rev, 1)] {
        let mut rx = b.watch("/r/w/", from).await.expect("watch from history");
        let mut got = Vec::new();
        for _ in 0..expect {
            got.push(next_event(&mut rx).await.kv.mod_rev);
        }
        assert!(
            got.iter().all(|r| *r > from),
            "events after {from}: {got:?}"
        );
        assert_eq!(got.last(), Some(&three.mod_rev));
    }
}

pub async fn compaction_gives_compacted(b: &dyn Backend) {
    let mut kv = b.create("/r/c/k", b"0".to_vec()).await.expect("create");
    let early = kv.mod_rev;
    for i in 1..20u8 {
        kv = b
            .update("/r/c/k", kv.mod_rev, vec![i])
            .await
            .expect("update");
    }
    let other = b.create("/r/c/keep", b"k".to_vec()).await.expect("create");
    let compacted = b.compact(5).await.expect("compact");
    assert!(compacted > early);
    assert!(matches!(
        b.watch("/r/c/", early).await,
        Err(StoreError::Compacted { .. })
    ));
    // Live values survive compaction, however old.
    assert_eq!(
        b.get("/r/c/k").await.expect("get").map(|k| k.value),
        Some(vec![19])
    );
    assert_eq!(
        b.get("/r/c/keep").await.expect("get").map(|k| k.mod_rev),
        Some(other.mod_rev)
    );
    let mut rx = b
        .watch("/r/c/", compacted)
        .await
        .expect("watch after compaction point");
    let next = b
        .update("/r/c/k", kv.mod_rev, b"new".to_vec())
        .await
        .expect("update");
    loop {
        let ev = next_event(&mut rx).await;
        if ev.kv.mod_rev == next.mod_rev {
            break;
        }
    }
}

/// Runs every check, each on a fresh backend from `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = &'static dyn Backend>,
{
    create_get_update_delete(fresh().await).await;
    concurrent_updates_conflict(fresh().await).await;
    list_prefix_and_paging(fresh().await).await;
    watch_from_any_revision(fresh().await).await;
    compaction_gives_compacted(fresh().await).await;
}

//! Crash durability: a child process writes to the SQLite store and prints each key once the
//! write is acknowledged; the parent SIGKILLs it mid-stream, reopens the store and checks that
//! every acknowledged write is there and the database is consistent.

use keel_control::store::Backend;
use keel_control::store::sqlite::SqliteBackend;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "KEEL_STORE_CRASH_CHILD_DB";

/// In the child (env set): write forever, acknowledging on stdout. In a normal run: nothing.
#[test]
fn crash_child_writer() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = SqliteBackend::open(std::path::Path::new(&db)).expect("open");
        let mut handles = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/registry/crash/w{w}/k{i:06}");
                    store.create(&key, vec![b'x'; 512]).await.expect("create");
                    println!("{key}");
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with("/registry/crash/") {
            acked.push(line);
        }
        if acked.len() >= 3000 {
            break;
        }
    }
    // SIGKILL while the writers are still going.
    child.kill().expect("kill -9 the writer");
    let _ = child.wait();
    assert!(
        acked.len() >= 3000,
        "the writer acknowledged only {} writes",
        acked.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = SqliteBackend::open(&db).expect("reopen after the crash");
        for key in &acked {
            assert!(
                store.get(key).await.expect("get").is_some(),
                "acknowledged write {key} was lost"
            );
        }
        let all = store.list("/registry/crash/", None, 0).await.expect("list");
        assert!(all.items.len() >= acked.len());
        assert_eq!(all.revision, store.revision().await.expect("revision"));
        // The store keeps working after recovery.
        store
            .create("/registry/crash/after", b"ok".to_vec())
            .await
            .expect("write after recovery");
    });
}

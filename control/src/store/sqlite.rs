//! The embedded SQLite backend. One `log` table holds every revision (kine's model: the row id
//! is the revision), a `current` table holds the live version of each key for fast reads, and
//! both change in one transaction. A single writer thread batches concurrent writes into one
//! transaction (group commit), so every acknowledged write is on disk (WAL, synchronous=FULL)
//! without paying one fsync per request. Readers use their own connections (WAL snapshots).

use super::{Backend, Event, EventKind, KeyValue, ListResult, Result, StoreError, WatchReceiver};
use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many events a watcher may fall behind before it is dropped.
const WATCH_BUFFER: usize = 8192;
/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;
const READERS: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE UNIQUE INDEX IF NOT EXISTS log_key_prev ON log(key, prev_rev);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        expected: i64,
        value: Vec<u8>,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact {
        keep: i64,
    },
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<KeyValue>>,
}

pub struct SqliteBackend {
    path: PathBuf,
    writer: mpsc::UnboundedSender<WriteRequest>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    events: broadcast::Sender<Arc<Event>>,
}

fn sql_err(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
    let path = path.display().to_string();
    move |source| StoreError::Sqlite { op, path, source }
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err("open", path))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_err("configure", path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err("configure", path))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err("configure", path))?;
    Ok(conn)
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\u{10ffff}".to_string()
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Arc<Self>> {
        let writer_conn = open(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        writer_conn
            .execute_batch(SCHEMA)
            .map_err(sql_err("create schema", path))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let backend = Arc::new(SqliteBackend {
            path: path.to_path_buf(),
            writer: tx,
            readers,
            next_reader: Default::default(),
            events: events.clone(),
        });
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_conn, path, rx, events))
            .map_err(|e| StoreError::Io {
                op: "start writer thread",
                detail: e.to_string(),
            })?;
        Ok(backend)
    }

    /// Writes an online-consistent copy of the database to `dest` (SQLite's backup API).
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        self.with_reader(|conn, path| {
            conn.backup(rusqlite::DatabaseName::Main, dest, None)
                .map_err(sql_err("backup", path))
        })
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Connection, &Path) -> Result<T>) -> Result<T> {
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        let guard = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&guard, &self.path)
    }

    async fn blocking_read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection, &Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.with_reader(f))
            .await
            .map_err(|e| StoreError::Io {
                op: "read",
                detail: e.to_string(),
            })?
    }

    async fn write(&self, op: WriteOp) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn read_revision(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'log'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
    .map_err(sql_err("read revision", path))
}

fn read_compacted(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row(
        "SELECT value FROM meta WHERE name = 'compact_rev'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
    .map_err(sql_err("read compact revision", path))
}

fn current(conn: &Connection, path: &Path, key: &str) -> Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT rev, create_rev, value FROM current WHERE key = ?1")
        .and_then(|mut st| {
            st.query_row([key], |r| {
                Ok(KeyValue {
                    key: key.to_string(),
                    mod_rev: r.get(0)?,
                    create_rev: r.get(1)?,
                    value: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(sql_err("read key", path))
}

/// Applies one write inside the open transaction; returns the event it produced.
fn apply(conn: &Connection, path: &Path, op: WriteOp) -> Result<Event> {
    let insert = |key: &str,
                  deleted: bool,
                  create_rev: i64,
                  prev_rev: i64,
                  value: &[u8]|
     -> Result<i64> {
        conn.prepare_cached(
            "INSERT INTO log (key, deleted, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut st| st.execute(params![key, deleted as i64, create_rev, prev_rev, value]))
        .map_err(sql_err("append to log", path))?;
        Ok(conn.last_insert_rowid())
    };
    let last_rev = |key: &str| -> Result<i64> {
        conn.query_row("SELECT MAX(rev) FROM log WHERE key = ?1", [key], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map(|v| v.unwrap_or(0))
        .map_err(sql_err("read key history", path))
    };
    match op {
        WriteOp::Create { key, value } => {
            if current(conn, path, &key)?.is_some() {
                return Err(StoreError::AlreadyExists { key });
            }
            let prev_rev = last_rev(&key)?;
            let rev = insert(&key, false, 0, prev_rev, &value)?;
            conn.execute("UPDATE log SET create_rev = ?1 WHERE rev = ?1", [rev])
                .map_err(sql_err("append to log", path))?;
            conn.prepare_cached(
                "INSERT INTO current (key, rev, create_rev, value) VALUES (?1, ?2, ?2, ?3)",
            )
            .and_then(|mut st| st.execute(params![key, rev, value]))
            .map_err(sql_err("write key", path))?;
            let kv = KeyValue {
                key,
                value,
                create_rev: rev,
                mod_rev: rev,
            };
            Ok(Event {
                kind: EventKind::Put,
                kv,
                prev: None,
            })
        }
        WriteOp::Update {
            key,
            expected,
            value,
        } => {
            let Some(prev) = current(conn, path, &key)? else {
                return Err(StoreError::NotFound { key });
            };
            if prev.mod_rev != expected {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    actual: prev.mod_rev,
                });
            }
            let rev = insert(&key, false, prev.create_rev, prev.mod_rev, &value)?;
            conn.prepare_cached("UPDATE current SET rev = ?2, value = ?3 WHERE key = ?1")
                .and_then(|mut st| st.execute(params![key, rev, value]))
                .map_err(sql_err("write key", path))?;
            let kv = KeyValue {
                key,
                value,
                create_rev: prev.create_rev,
                mod_rev: rev,
            };
            Ok(Event {
                kind: EventKind::Put,
                kv,
                prev: Some(prev),
            })
        }
        WriteOp::Delete { key, expected } => {
            let Some(prev) = current(conn, path, &key)? else {
                return Err(StoreError::NotFound { key });
            };
            if let Some(expected) = expected.filter(|e| *e != prev.mod_rev) {
                return Err(StoreError::Conflict {
                    key,
                    expected,
                    actual: prev.mod_rev,
                });
            }
            let rev = insert(&key, true, prev.create_rev, prev.mod_rev, &prev.value)?;
            conn.prepare_cached("DELETE FROM current WHERE key = ?1")
                .and_then(|mut st| st.execute([&key]))
                .map_err(sql_err("delete key", path))?;
            let kv = KeyValue {
                key,
                value: prev.value.clone(),
                create_rev: prev.create_rev,
                mod_rev: rev,
            };
            Ok(Event {
                kind: EventKind::Delete,
                kv,
                prev: Some(prev),
            })
        }
        WriteOp::Compact { .. } => unreachable!("compaction runs outside a write batch"),
    }
}

fn compact(conn: &Connection, path: &Path, keep: i64) -> Result<KeyValue> {
    let head = read_revision(conn, path)?;
    let target = (head - keep.max(0)).max(0);
    let done = read_compacted(conn, path)?;
    if target > done {
        // Keep every row that is still some key's live version; drop the rest up to target.
        let tx = conn
            .unchecked_transaction()
            .map_err(sql_err("compact", path))?;
        tx.execute(
            "DELETE FROM log WHERE rev <= ?1 AND rev NOT IN (SELECT rev FROM current)",
            [target],
        )
        .map_err(sql_err("compact", path))?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('compact_rev', ?1)",
            [target],
        )
        .map_err(sql_err("compact", path))?;
        tx.commit().map_err(sql_err("compact", path))?;
    }
    Ok(KeyValue {
        key: String::new(),
        value: Vec::new(),
        create_rev: 0,
        mod_rev: target.max(done),
    })
}

fn writer_loop(
    conn: Connection,
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
    events: broadcast::Sender<Arc<Event>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let mut done: Vec<(oneshot::Sender<Result<KeyValue>>, Result<Event>)> =
            Vec::with_capacity(batch.len());
        let mut compactions = Vec::new();
        if let Err(e) = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_err("begin", &path))
        {
            fail_all(batch, &e);
            continue;
        }
        for req in batch {
            match req.op {
                WriteOp::Compact { keep } => compactions.push((req.reply, keep)),
                op => done.push((req.reply, apply(&conn, &path, op))),
            }
        }
        if let Err(e) = conn
            .execute_batch("COMMIT")
            .map_err(sql_err("commit", &path))
        {
            let _ = conn.execute_batch("ROLLBACK");
            for (reply, _) in done {
                let _ = reply.send(Err(StoreError::Io {
                    op: "commit",
                    detail: e.to_string(),
                }));
            }
            continue;
        }
        for (reply, result) in done {
            let result = result.map(|event| {
                let kv = event.kv.clone();
                let _ = events.send(Arc::new(event));
                kv
            });
            let _ = reply.send(result);
        }
        for (reply, keep) in compactions {
            let result = compact(&conn, &path, keep);
            if result.is_ok() {
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
            }
            let _ = reply.send(result);
        }
    }
}

fn fail_all(batch: Vec<WriteRequest>, e: &StoreError) {
    for req in batch {
        let _ = req.reply.send(Err(StoreError::Io {
            op: "begin",
            detail: e.to_string(),
        }));
    }
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let key: String = r.get(1)?;
    let kind = if r.get::<_, i64>(2)? != 0 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let create_rev: i64 = r.get(3)?;
    let kv = KeyValue {
        key: key.clone(),
        mod_rev: r.get(0)?,
        create_rev,
        value: r.get(5)?,
    };
    let prev = match r.get::<_, Option<Vec<u8>>>(6)? {
        Some(value) => Some(KeyValue {
            key,
            value,
            create_rev,
            mod_rev: r.get(4)?,
        }),
        None => None,
    };
    Ok(Event { kind, kv, prev })
}

#[async_trait]
impl Backend for Arc<SqliteBackend> {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking_read(move |conn, path| current(conn, path, &key))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult> {
        let (prefix, start) = (prefix.to_string(), start_after.map(str::to_string));
        self.blocking_read(move |conn, path| {
            let tx = conn.unchecked_transaction().map_err(sql_err("begin read", path))?;
            let revision = read_revision(&tx, path)?;
            let lower = start.unwrap_or_default();
            let lower = if lower.is_empty() { prefix.clone() } else { lower };
            let op = if lower == prefix { ">=" } else { ">" };
            let sql = format!(
                "SELECT key, rev, create_rev, value FROM current WHERE key {op} ?1 AND key < ?2 ORDER BY key LIMIT ?3"
            );
            let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
            let mut items = tx
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_map(params![lower, prefix_end(&prefix), fetch], |r| {
                        Ok(KeyValue { key: r.get(0)?, mod_rev: r.get(1)?, create_rev: r.get(2)?, value: r.get(3)? })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(sql_err("list", path))?;
            let more = limit != 0 && items.len() > limit;
            items.truncate(if limit == 0 { items.len() } else { limit });
            Ok(ListResult { items, revision, more })
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.write(WriteOp::Create {
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, expected: i64, value: Vec<u8>) -> Result<KeyValue> {
        self.write(WriteOp::Update {
            key: key.to_string(),
            expected,
            value,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<KeyValue> {
        self.write(WriteOp::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchReceiver> {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = self.events.subscribe();
        let p = prefix.to_string();
        let (compacted, history) = self
            .blocking_read(move |conn, path| {
                let compacted = read_compacted(conn, path)?;
                if after < compacted {
                    return Ok((compacted, Vec::new()));
                }
                let history = conn
                    .prepare_cached(
                        "SELECT l.rev, l.key, l.deleted, l.create_rev, l.prev_rev, l.value, p.value
                         FROM log l LEFT JOIN log p ON p.rev = l.prev_rev AND p.key = l.key
                         WHERE l.rev > ?1 AND l.key >= ?2 AND l.key < ?3 ORDER BY l.rev",
                    )
                    .and_then(|mut st| {
                        st.query_map(params![after, p, prefix_end(&p)], row_event)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(sql_err("read history", path))?;
                Ok((compacted, history))
            })
            .await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(1024);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = after;
            for event in history {
                last = event.kv.mod_rev;
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(event) => {
                        if event.kv.mod_rev <= last || !event.kv.key.starts_with(&prefix) {
                            continue;
                        }
                        last = event.kv.mod_rev;
                        if tx.send((*event).clone()).await.is_err() {
                            return;
                        }
                    }
                    // A watcher that fell behind is dropped; the client re-lists.
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, keep: i64) -> Result<i64> {
        Ok(self.write(WriteOp::Compact { keep }).await?.mod_rev)
    }

    async fn revision(&self) -> Result<i64> {
        self.blocking_read(read_revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = std::sync::atomic::AtomicUsize::new(0);
        super::super::conformance::run_all(|| {
            let path = dir.path().join(format!(
                "db{}",
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            async move {
                let b: Arc<SqliteBackend> = SqliteBackend::open(&path).expect("open");
                let leaked: &'static Arc<SqliteBackend> = Box::leak(Box::new(b));
                leaked as &'static dyn Backend
            }
        })
        .await;
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/a/"), "/a0");
        assert_eq!(prefix_end("/r/pods/"), "/r/pods0");
    }
}

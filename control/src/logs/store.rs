//! The log store: one SQLite file in WAL mode (`<data dir>/logs.db`), separate from the API
//! store so log volume never slows the API. Two tables:
//!
//! - `streams`: one row per (node, source) with its labels (namespace, pod, pod uid, container,
//!   the pod's labels) and the source's `cursor`, the highest line position stored;
//! - `lines`: time (Unix ns), stream, stdout/stderr, text.
//!
//! Pushes are exactly-once per positioned source: a line at or below the cursor is a resend (the
//! agent died after the push but before it saved its offset) and is dropped. Retention deletes
//! lines older than the maximum age, then the oldest lines until the used pages fit the maximum
//! size. `synchronous=NORMAL`: a crash of keel-control loses nothing, a power loss may lose the
//! last pushes (the agent cannot resend those; acceptable for logs, not for the API store).

use super::query::{self, Query};
use super::wire::{LogLine, PushRequest, PushResponse};
use super::{LogError, Result, Retention};
use crate::apiserver::selectors::LabelSelector;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    source TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    pod_uid TEXT NOT NULL,
    container TEXT NOT NULL,
    labels TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    UNIQUE (node, source)
);
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    stream INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    err INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_ts ON lines (ts);
CREATE INDEX IF NOT EXISTS lines_stream_ts ON lines (stream, ts);
";

/// The container name the agents' own logs are stored under.
pub const AGENT_CONTAINER: &str = "keel-agent";

pub struct LogStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    retention: Retention,
    /// Text bytes pushed since the last size check.
    unchecked: AtomicU64,
}

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub by_age: u64,
    pub by_size: u64,
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let err = sql_err("open", path);
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql_err("configure", path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err("configure", path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err("configure", path))?;
    Ok(conn)
}

fn sql_err(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> LogError + use<> {
    let path = path.display().to_string();
    move |source| LogError::Sqlite { op, path, source }
}

/// Unix ns as RFC 3339 with nanoseconds.
pub fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

struct StreamInfo {
    node: String,
    namespace: String,
    pod: String,
    pod_uid: String,
    container: String,
}

impl LogStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path, retention: Retention) -> Result<LogStore> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let writer = open(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        writer
            .execute_batch(SCHEMA)
            .map_err(sql_err("create schema", path))?;
        let reader = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(LogStore {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            retention,
            unchecked: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Stores a push (one transaction); drops lines at or below each source's cursor.
    pub fn push(&self, req: &PushRequest, now_ns: i64) -> Result<PushResponse> {
        let mut out = PushResponse::default();
        let mut bytes = 0u64;
        {
            let mut conn = self.writer.lock().map_err(|_| LogError::Poisoned)?;
            let tx = conn.transaction().map_err(sql_err("begin", &self.path))?;
            for s in &req.streams {
                let labels = serde_json::to_string(&s.labels).unwrap_or_else(|_| "{}".into());
                tx.execute(
                    "INSERT INTO streams (node, source, namespace, pod, pod_uid, container, labels, cursor, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, -1, ?8)
                     ON CONFLICT (node, source) DO UPDATE SET labels = excluded.labels, updated = excluded.updated",
                    params![req.node, s.source, s.namespace, s.pod, s.pod_uid, s.container, labels, now_ns],
                )
                .map_err(sql_err("upsert stream", &self.path))?;
                let (id, cursor): (i64, i64) = tx
                    .query_row(
                        "SELECT id, cursor FROM streams WHERE node = ?1 AND source = ?2",
                        params![req.node, s.source],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(sql_err("read stream", &self.path))?;
                let mut top = cursor;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO lines (stream, ts, err, line) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(sql_err("prepare insert", &self.path))?;
                for (pos, ts, stream, text) in &s.lines {
                    if let Some(p) = pos {
                        let p = i64::try_from(*p).unwrap_or(i64::MAX);
                        if p <= cursor {
                            out.duplicates += 1;
                            continue;
                        }
                        top = top.max(p);
                    }
                    insert
                        .execute(params![id, ts, i64::from(*stream != 0), text])
                        .map_err(sql_err("insert line", &self.path))?;
                    out.accepted += 1;
                    bytes += text.len() as u64;
                }
                drop(insert);
                if top > cursor {
                    tx.execute(
                        "UPDATE streams SET cursor = ?1 WHERE id = ?2",
                        params![top, id],
                    )
                    .map_err(sql_err("advance cursor", &self.path))?;
                }
            }
            tx.commit().map_err(sql_err("commit", &self.path))?;
        }
        // Keep the size bound between timer passes under heavy shipping.
        let seen = self.unchecked.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if seen > self.retention.max_bytes / 10 {
            self.unchecked.store(0, Ordering::Relaxed);
            self.sweep_size()?;
        }
        Ok(out)
    }

    /// The lines matching `q`, oldest first, and the `continue` token when more remain.
    pub fn query(&self, q: &Query) -> Result<(Vec<LogLine>, Option<String>)> {
        let conn = self.reader.lock().map_err(|_| LogError::Poisoned)?;
        let mut sql = String::from(
            "SELECT id, node, namespace, pod, pod_uid, container, labels FROM streams WHERE 1 = 1",
        );
        let mut args: Vec<String> = Vec::new();
        for (col, val) in [
            ("namespace", &q.namespace),
            ("pod", &q.pod),
            ("container", &q.container),
            ("node", &q.node),
        ] {
            if let Some(v) = val {
                args.push(v.clone());
                let _ = write!(sql, " AND {col} = ?{}", args.len());
            }
        }
        match q.agent {
            Some(true) => {
                let _ = write!(sql, " AND source = 'agent'");
            }
            Some(false) => {
                let _ = write!(sql, " AND source != 'agent'");
            }
            None => {}
        }
        let mut streams: HashMap<i64, StreamInfo> = HashMap::new();
        {
            let mut stmt = conn
                .prepare(&sql)
                .map_err(sql_err("select streams", &self.path))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        StreamInfo {
                            node: r.get(1)?,
                            namespace: r.get(2)?,
                            pod: r.get(3)?,
                            pod_uid: r.get(4)?,
                            container: r.get(5)?,
                        },
                        r.get::<_, String>(6)?,
                    ))
                })
                .map_err(sql_err("select streams", &self.path))?;
            for row in rows {
                let (id, info, labels) = row.map_err(sql_err("read streams", &self.path))?;
                if matches_selector(q.selector.as_ref(), &labels) {
                    streams.insert(id, info);
                }
            }
        }
        if streams.is_empty() {
            return Ok((Vec::new(), None));
        }
        let ids: Vec<String> = streams.keys().map(i64::to_string).collect();
        let (after_ts, after_id) = q.after.unwrap_or((i64::MIN, i64::MIN));
        let sql = format!(
            "SELECT id, stream, ts, err, line FROM lines
             WHERE stream IN ({}) AND ts >= ?1 AND ts < ?2 AND (ts > ?3 OR (ts = ?3 AND id > ?4))
             ORDER BY ts, id LIMIT ?5",
            ids.join(",")
        );
        let mut stmt = conn
            .prepare(&sql)
            .map_err(sql_err("select lines", &self.path))?;
        let limit = q.limit.min(query::MAX_LIMIT);
        let rows = stmt
            .query_map(
                params![
                    q.since.unwrap_or(i64::MIN),
                    q.until.unwrap_or(i64::MAX),
                    after_ts,
                    after_id,
                    (limit + 1) as i64
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .map_err(sql_err("select lines", &self.path))?;
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for row in rows {
            let (id, stream, ts, err, line) = row.map_err(sql_err("read lines", &self.path))?;
            if items.len() == limit {
                more = true;
                break;
            }
            let Some(s) = streams.get(&stream) else {
                continue;
            };
            last = Some((ts, id));
            items.push(LogLine {
                time: rfc3339(ts),
                node: s.node.clone(),
                namespace: s.namespace.clone(),
                pod: s.pod.clone(),
                pod_uid: s.pod_uid.clone(),
                container: s.container.clone(),
                stream: if err != 0 { "stderr" } else { "stdout" }.into(),
                line,
            });
        }
        let token = more
            .then_some(last)
            .flatten()
            .map(|(t, i)| query::token(t, i));
        Ok((items, token))
    }

    /// Applies the age and then the size limit.
    pub fn sweep(&self, now_ns: i64) -> Result<Swept> {
        let max_age = i64::try_from(self.retention.max_age.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(max_age);
        let by_age = {
            let conn = self.writer.lock().map_err(|_| LogError::Poisoned)?;
            let n = conn
                .execute("DELETE FROM lines WHERE ts < ?1", params![cutoff])
                .map_err(sql_err("delete old lines", &self.path))?;
            conn.execute(
                "DELETE FROM streams WHERE updated < ?1
                 AND NOT EXISTS (SELECT 1 FROM lines WHERE lines.stream = streams.id)",
                params![cutoff],
            )
            .map_err(sql_err("delete old streams", &self.path))?;
            n as u64
        };
        let by_size = self.sweep_size()?;
        Ok(Swept { by_age, by_size })
    }

    /// Bytes of the pages in use (the file's pages minus its free list).
    pub fn used_bytes(&self) -> Result<u64> {
        let conn = self.writer.lock().map_err(|_| LogError::Poisoned)?;
        used(&conn, &self.path)
    }

    /// Deletes the oldest lines until the used pages fit in 90% of the maximum size.
    fn sweep_size(&self) -> Result<u64> {
        let conn = self.writer.lock().map_err(|_| LogError::Poisoned)?;
        let max = self.retention.max_bytes;
        let mut deleted = 0u64;
        for _ in 0..20 {
            let used = used(&conn, &self.path)?;
            if used <= max {
                break;
            }
            let count: i64 = conn
                .query_row("SELECT count(*) FROM lines", [], |r| r.get(0))
                .map_err(sql_err("count lines", &self.path))?;
            if count == 0 {
                break;
            }
            let n = lines_to_drop(used, max, count as u64);
            let gone = conn
                .execute(
                    "DELETE FROM lines WHERE id IN (SELECT id FROM lines ORDER BY ts, id LIMIT ?1)",
                    params![n as i64],
                )
                .map_err(sql_err("delete oldest lines", &self.path))?;
            deleted += gone as u64;
        }
        Ok(deleted)
    }

    /// The newest stored position of a source (tests and diagnostics).
    pub fn cursor(&self, node: &str, source: &str) -> Result<Option<i64>> {
        let conn = self.reader.lock().map_err(|_| LogError::Poisoned)?;
        conn.query_row(
            "SELECT cursor FROM streams WHERE node = ?1 AND source = ?2",
            params![node, source],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("read cursor", &self.path))
    }
}

fn used(conn: &Connection, path: &Path) -> Result<u64> {
    let get = |p: &str| -> Result<u64> {
        conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as u64)
            .map_err(sql_err("read page counts", path))
    };
    let pages = get("page_count")?.saturating_sub(get("freelist_count")?);
    Ok(pages * get("page_size")?)
}

/// How many of `count` lines to delete so `used` bytes shrink to 90% of `max`, assuming the
/// lines share the space evenly (the loop in `sweep_size` corrects the estimate).
pub fn lines_to_drop(used: u64, max: u64, count: u64) -> u64 {
    if used <= max || count == 0 {
        return 0;
    }
    let target = max / 10 * 9;
    let excess = used - target.min(used);
    let n = (u128::from(count) * u128::from(excess)).div_ceil(u128::from(used.max(1)));
    (n as u64).clamp(1, count)
}

fn matches_selector(selector: Option<&LabelSelector>, labels: &str) -> bool {
    let Some(sel) = selector else {
        return true;
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(labels).unwrap_or_default();
    sel.matches_labels(Some(&map))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

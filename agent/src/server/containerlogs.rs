//! `GET /containerLogs/<namespace>/<pod>/<container>`: kubelet's log endpoint over the CRI log
//! files the executor leaves under `<root>/pods/<uid>/logs/` (`pod::record`). Query parameters
//! as kube-apiserver forwards them (`follow`, `previous`, `sinceSeconds`, `sinceTime`,
//! `timestamps`, `tailLines`, `limitBytes`); errors with kubelet's texts
//! (`pkg/kubelet/server/server.go`, `pkg/kubelet/kuberuntime/kuberuntime_container.go`).
//!
//! Files are read on a blocking thread that sends chunks into the response body. `follow`
//! polls the current file, reopens it when the supervisor rotated it (`<log>.1`), and ends once
//! the instance's `exit.json` exists (after reading what was written before the exit) or the
//! client went away.

use super::crilog::{self, Joiner, Limit, Line, Options, Tail};
use crate::pod::record::{ContainerRecord, PodRecord};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often `follow` looks for new records, rotation and the exit.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The supervisor's durable exit record in the instance's state folder (`EXIT_FILE_NAME` in
/// `shim/src/proto.rs`; the agent does not link the shim).
const EXIT_FILE: &str = "exit.json";
/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 32 * 1024;

/// A request that cannot be served, with kubelet's status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogsError {
    /// 400: a query parameter is malformed.
    #[error("{0}")]
    BadParameter(String),
    /// 404: no pod of that name runs here.
    #[error("pod \"{pod}\" in namespace \"{namespace}\" is not running on this node")]
    PodNotFound { namespace: String, pod: String },
    /// 400: the container has no instance on disk.
    #[error("container \"{container}\" in pod \"{pod}\" is not available")]
    NotAvailable { container: String, pod: String },
    /// 400: the instance is recorded but its runtime container does not exist yet.
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")]
    WaitingToStart { container: String, pod: String },
    /// 400: `previous` without an earlier instance.
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { container: String, pod: String },
}

impl LogsError {
    pub fn status(&self) -> u16 {
        match self {
            LogsError::PodNotFound { .. } => 404,
            _ => 400,
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, LogsError> {
    // Go's strconv.ParseBool, which kubelet's query decoding uses.
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(LogsError::BadParameter(format!(
            "{key}: invalid value {v:?}: must be true or false"
        ))),
    }
}

fn parse_int(key: &str, v: &str, min: i64) -> Result<i64, LogsError> {
    match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(LogsError::BadParameter(format!(
            "{key}: Invalid value: {v:?}: must be an integer greater than or equal to {min}"
        ))),
    }
}

/// Validates the query like kube-apiserver's `PodLogOptions` validation.
pub fn options(query: &[(String, String)], now: DateTime<Utc>) -> Result<Options, LogsError> {
    let mut o = Options::default();
    let (mut since_seconds, mut since_time) = (None, None);
    for (k, v) in query {
        match k.as_str() {
            "follow" => o.follow = parse_bool(k, v)?,
            "previous" => o.previous = parse_bool(k, v)?,
            "timestamps" => o.timestamps = parse_bool(k, v)?,
            "tailLines" => o.tail_lines = Some(parse_int(k, v, 0)? as u64),
            "limitBytes" => o.limit_bytes = Some(parse_int(k, v, 1)? as u64),
            "sinceSeconds" => since_seconds = Some(parse_int(k, v, 1)?),
            "sinceTime" => {
                let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
                    LogsError::BadParameter(format!(
                        "sinceTime: Invalid value: {v:?}: must be an RFC 3339 time"
                    ))
                })?;
                since_time = Some(t.with_timezone(&Utc));
            }
            _ => {}
        }
    }
    o.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(LogsError::BadParameter(
                "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ));
        }
        (Some(s), None) => Some(now - chrono::Duration::seconds(s)),
        (None, t) => t,
    };
    Ok(o)
}

/// The container instance to read: the pod's newest record of that name (a pod deleted and
/// created again under the same name has a new uid; the newest wins).
pub fn find(
    pods_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerRecord, LogsError> {
    let newest = |r: &PodRecord| {
        r.containers
            .iter()
            .map(|c| c.created_at.clone())
            .max()
            .unwrap_or_default()
    };
    let record = PodRecord::load_all(pods_dir)
        .into_iter()
        .filter(|r| r.namespace == namespace && r.name == pod)
        .max_by_key(newest)
        .ok_or_else(|| LogsError::PodNotFound {
            namespace: namespace.into(),
            pod: pod.into(),
        })?;
    if let Some(c) = record.container(container, previous) {
        // The executor records an instance before the shim creates it (and its log file).
        if !previous && !c.log_path.exists() && !c.state_dir.is_dir() {
            return Err(LogsError::WaitingToStart {
                container: container.into(),
                pod: pod.into(),
            });
        }
        return Ok(c.clone());
    }
    if previous && record.container(container, false).is_some() {
        return Err(LogsError::NoPrevious {
            container: container.into(),
            pod: pod.into(),
        });
    }
    Err(LogsError::NotAvailable {
        container: container.into(),
        pod: pod.into(),
    })
}

/// The instance's files, oldest first: `<log>.N` ... `<log>.1`, `<log>`.
pub fn files(log: &Path) -> Vec<PathBuf> {
    let rotated = |i: u32| PathBuf::from(format!("{}.{i}", log.display()));
    let mut n = 0;
    while rotated(n + 1).exists() {
        n += 1;
    }
    let mut out: Vec<PathBuf> = (1..=n).rev().map(rotated).collect();
    out.push(log.to_path_buf());
    out
}

/// Renders lines into chunks for the response; false once nothing more may be sent.
struct Sink {
    opts: Options,
    limit: Limit,
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
}

impl Sink {
    fn line(&mut self, line: &Line) -> bool {
        if let Some(bytes) = crilog::render(line, &self.opts) {
            let bytes = self.limit.take(bytes);
            self.buf.extend(bytes);
        }
        if self.buf.len() >= CHUNK {
            return self.flush();
        }
        !self.limit.exhausted()
    }

    fn flush(&mut self) -> bool {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            if self.tx.blocking_send(chunk).is_err() {
                return false;
            }
        }
        !self.limit.exhausted()
    }
}

/// A file read record by record, keeping a half-written last record until its newline comes.
struct Follower {
    file: File,
    inode: u64,
    rest: Vec<u8>,
}

impl Follower {
    fn open(path: &Path) -> Option<Follower> {
        let file = File::open(path).ok()?;
        let inode = file.metadata().ok()?.ino();
        Some(Follower {
            file,
            inode,
            rest: Vec::new(),
        })
    }

    /// Every complete record appended since the last call.
    fn records(&mut self, mut each: impl FnMut(&[u8])) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.rest.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(i) = self.rest[start..].iter().position(|b| *b == b'\n') {
                each(&self.rest[start..start + i]);
                start += i + 1;
            }
            self.rest.drain(..start);
        }
    }

    /// Whether `path` is now another file than the one open (the supervisor rotated it).
    fn rotated(&self, path: &Path) -> bool {
        std::fs::metadata(path).map_or(true, |m| m.ino() != self.inode)
    }
}

/// Feeds parsed records into `joiner`, handing each finished line to `out`.
fn feed(raw: &[u8], joiner: &mut Joiner, out: &mut impl FnMut(Line)) {
    match crilog::parse(raw) {
        Ok(r) => {
            if let Some(line) = joiner.push(r) {
                out(line);
            }
        }
        Err(e) => tracing::debug!(error = %e, "skipping a CRI log record"),
    }
}

/// Where finished lines go: into the tail buffer during the first pass when `tailLines` is
/// set, then to the response.
struct Out {
    tail: Option<Tail>,
    sink: Sink,
    stopped: bool,
}

impl Out {
    fn line(&mut self, line: Line) {
        match self.tail.as_mut() {
            Some(t) => t.push(line),
            None => {
                if !self.stopped && !self.sink.line(&line) {
                    self.stopped = true;
                }
            }
        }
    }

    /// Ends the first pass: what the tail kept goes out.
    fn end_first_pass(&mut self) {
        if let Some(t) = self.tail.take() {
            for line in t.into_lines() {
                self.line(line);
            }
        }
    }

    /// Sends what is buffered, also after the limit was reached.
    fn flush(&mut self) {
        if !self.sink.flush() {
            self.stopped = true;
        }
    }
}

/// The instance has exited (or its state is gone): nothing more will be written.
fn exited(instance: &ContainerRecord) -> bool {
    let dir = &instance.state_dir;
    !dir.is_dir() || dir.join(EXIT_FILE).exists()
}

/// Streams the instance's log into `tx` (blocking: run it on a blocking thread).
pub fn stream(instance: &ContainerRecord, opts: Options, tx: mpsc::Sender<Bytes>) {
    let follow = opts.follow;
    let mut out = Out {
        tail: opts.tail_lines.map(|n| Tail::new(Some(n))),
        sink: Sink {
            limit: Limit::new(opts.limit_bytes),
            opts,
            buf: Vec::new(),
            tx,
        },
        stopped: false,
    };
    let mut joiner = Joiner::default();
    let all = files(&instance.log_path);
    let current = &instance.log_path;
    for old in &all[..all.len() - 1] {
        if let Some(mut f) = Follower::open(old) {
            f.records(|raw| feed(raw, &mut joiner, &mut |l| out.line(l)));
        }
    }
    let mut file = Follower::open(current);
    if let Some(f) = file.as_mut() {
        f.records(|raw| feed(raw, &mut joiner, &mut |l| out.line(l)));
    }
    if !follow {
        for line in joiner.finish() {
            out.line(line);
        }
        out.end_first_pass();
        out.flush();
        return;
    }
    out.end_first_pass();
    out.flush();
    loop {
        if out.stopped || out.sink.tx.is_closed() {
            return;
        }
        // Looked at before reading, so whatever was written before the exit is read below.
        let done = exited(instance);
        if let Some(f) = file.as_mut() {
            f.records(|raw| feed(raw, &mut joiner, &mut |l| out.line(l)));
        }
        let reopen = file.as_ref().is_none_or(|f| f.rotated(current));
        if reopen && let Some(mut next) = Follower::open(current) {
            if let Some(f) = file.as_mut() {
                f.records(|raw| feed(raw, &mut joiner, &mut |l| out.line(l)));
            }
            next.records(|raw| feed(raw, &mut joiner, &mut |l| out.line(l)));
            file = Some(next);
        }
        if done {
            for line in joiner.finish() {
                out.line(line);
            }
            out.flush();
            return;
        }
        out.flush();
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_validated() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T08:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let o = options(
            &q(&[
                ("follow", "true"),
                ("previous", "false"),
                ("tailLines", "5"),
                ("timestamps", "1"),
                ("limitBytes", "10"),
                ("sinceSeconds", "60"),
            ]),
            now,
        )
        .expect("valid");
        assert!(o.follow && !o.previous && o.timestamps);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        assert_eq!(o.since, Some(now - chrono::Duration::seconds(60)));
        let t = options(&q(&[("sinceTime", "2026-11-27T07:00:00Z")]), now).expect("time");
        assert_eq!(
            t.since.map(|s| s.to_rfc3339()),
            Some("2026-11-27T07:00:00+00:00".into())
        );
        for bad in [
            ("tailLines", "-1"),
            ("limitBytes", "0"),
            ("sinceSeconds", "0"),
            ("follow", "yes"),
            ("sinceTime", "yesterday"),
        ] {
            let e = options(&q(&[bad]), now).expect_err(bad.0);
            assert_eq!(e.status(), 400);
            assert!(e.to_string().starts_with(bad.0), "{e}");
        }
        let both = options(
            &q(&[("sinceSeconds", "1"), ("sinceTime", "2026-11-27T07:00:00Z")]),
            now,
        );
        assert!(both.expect_err("both").to_string().contains("at most one"));
    }

    fn instance(dir: &Path, name: &str, restart: u32) -> ContainerRecord {
        let logs = dir.join("logs").join(name);
        std::fs::create_dir_all(&logs).expect("logs dir");
        let state = dir.join("state").join(format!("{name}-{restart}"));
        std::fs::create_dir_all(&state).expect("state dir");
        ContainerRecord {
            name: name.into(),
            id: format!("{restart:064}"),
            restart_count: restart,
            log_path: logs.join(format!("{restart}.log")),
            state_dir: state,
            created_at: format!("2026-11-27T08:00:0{restart}Z"),
            ..Default::default()
        }
    }

    fn write_record(pods: &Path, uid: &str, ns: &str, name: &str, cs: Vec<ContainerRecord>) {
        let r = PodRecord {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            containers: cs,
            ..Default::default()
        };
        let dir = pods.join(uid);
        std::fs::create_dir_all(&dir).expect("pod dir");
        std::fs::write(PodRecord::path(&dir), serde_json::to_vec(&r).expect("json"))
            .expect("write");
    }

    #[test]
    fn finds_instances_with_kubelet_errors() {
        let t = tempfile::tempdir().expect("tempdir");
        let pods = t.path().join("pods");
        let web0 = instance(t.path(), "web", 0);
        write_record(&pods, "u1", "default", "web", vec![web0.clone()]);
        assert_eq!(
            find(&pods, "default", "web", "web", false),
            Ok(web0.clone())
        );
        assert_eq!(
            find(&pods, "default", "web", "web", true)
                .expect_err("no previous")
                .to_string(),
            "previous terminated container \"web\" in pod \"web\" not found"
        );
        assert_eq!(
            find(&pods, "default", "web", "db", false)
                .expect_err("no db")
                .to_string(),
            "container \"db\" in pod \"web\" is not available"
        );
        let mut starting = instance(t.path(), "side", 0);
        starting.state_dir = t.path().join("not-created-yet");
        write_record(&pods, "u3", "default", "side", vec![starting]);
        assert_eq!(
            find(&pods, "default", "side", "side", false)
                .expect_err("not started")
                .to_string(),
            "container \"side\" in pod \"side\" is waiting to start: ContainerCreating"
        );
        let missing = find(&pods, "other", "web", "web", false).expect_err("other ns");
        assert_eq!(missing.status(), 404);
        // A newer pod of the same name (new uid) wins; previous is the instance before.
        let web1 = instance(t.path(), "web", 1);
        let web2 = instance(t.path(), "web", 2);
        write_record(
            &pods,
            "u2",
            "default",
            "web",
            vec![web2.clone(), web1.clone()],
        );
        assert_eq!(find(&pods, "default", "web", "web", false), Ok(web2));
        assert_eq!(find(&pods, "default", "web", "web", true), Ok(web1));
    }

    fn rec(t: &str, content: &str) -> String {
        format!("2026-11-27T08:00:{t}.000000000Z stdout F {content}\n")
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> String {
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).expect("utf8")
    }

    #[tokio::test]
    async fn reads_rotated_files_oldest_first() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = instance(t.path(), "web", 0);
        let log = c.log_path.display().to_string();
        std::fs::write(format!("{log}.2"), rec("01", "a")).expect("w");
        std::fs::write(format!("{log}.1"), rec("02", "b")).expect("w");
        std::fs::write(&log, rec("03", "c") + &rec("04", "d")).expect("w");
        assert_eq!(files(&c.log_path).len(), 3);
        let (tx, rx) = mpsc::channel(4);
        let c2 = c.clone();
        let opts = Options {
            tail_lines: Some(3),
            ..Default::default()
        };
        std::thread::spawn(move || stream(&c2, opts, tx));
        assert_eq!(collect(rx).await, "b\nc\nd\n");
        let (tx, rx) = mpsc::channel(4);
        let c3 = c.clone();
        let opts = Options {
            limit_bytes: Some(3),
            follow: true,
            ..Default::default()
        };
        std::thread::spawn(move || stream(&c3, opts, tx));
        assert_eq!(collect(rx).await, "a\nb", "the limit also ends a follow");
    }

    #[tokio::test]
    async fn follow_survives_rotation_and_ends_at_exit() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = instance(t.path(), "web", 0);
        std::fs::write(&c.log_path, rec("01", "first")).expect("w");
        let (tx, mut rx) = mpsc::channel(4);
        let c2 = c.clone();
        let opts = Options {
            follow: true,
            ..Default::default()
        };
        let reader = std::thread::spawn(move || stream(&c2, opts, tx));
        let next = |rx: &mut mpsc::Receiver<Bytes>| {
            let got = rx.blocking_recv().expect("a chunk");
            String::from_utf8(got.to_vec()).expect("utf8")
        };
        let mut rx2 = tokio::task::spawn_blocking(move || {
            assert_eq!(next(&mut rx), "first\n");
            rx
        })
        .await
        .expect("join");
        // Appended, then rotated (rename + new file) as the supervisor does.
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&c.log_path)
                .expect("open");
            f.write_all(text.as_bytes()).expect("append");
        };
        append(&rec("02", "second"));
        std::fs::rename(&c.log_path, format!("{}.1", c.log_path.display())).expect("rotate");
        append(&rec("03", "third"));
        append("2026-11-27T08:00:04.000000000Z stdout P no newline\n");
        std::fs::write(c.state_dir.join(EXIT_FILE), "{}").expect("exit");
        let rest = tokio::task::spawn_blocking(move || {
            let mut all = String::new();
            while let Some(b) = rx2.blocking_recv() {
                all.push_str(&String::from_utf8_lossy(&b));
            }
            all
        })
        .await
        .expect("join");
        assert_eq!(rest, "second\nthird\nno newline");
        reader.join().expect("reader ends after the exit");
    }

    #[tokio::test]
    async fn follow_ends_when_the_client_goes_away() {
        let t = tempfile::tempdir().expect("tempdir");
        let c = instance(t.path(), "web", 0);
        std::fs::write(&c.log_path, rec("01", "first")).expect("w");
        let (tx, rx) = mpsc::channel(4);
        let c2 = c.clone();
        let opts = Options {
            follow: true,
            ..Default::default()
        };
        let reader = std::thread::spawn(move || stream(&c2, opts, tx));
        drop(rx);
        reader.join().expect("the reader stops without an exit");
    }
}

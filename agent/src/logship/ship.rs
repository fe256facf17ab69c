//! The shipping loop: find the CRI log files of the pods on disk (live ones under
//! `pods/<uid>/`, retired ones under `logship/retired/<uid>/`), read new records from each,
//! add the agent's own lines, push one batch, and only then advance and (at most every
//! `PERSIST_EVERY`) save the read points. A failed push is retried with backoff while the
//! files wait on disk. A retired pod's folder is deleted once it has been read to its end and
//! shipped.

use super::agentlog::{self, AgentLine};
use super::cri::ShipLine;
use super::offsets::{self, State};
use super::push::{self, PushRequest, PushStream};
use super::tail::Tailer;
use super::{RetiredPod, retired_dir, state_path};
use crate::pod::record::PodRecord;
use crate::state::Layout;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Text bytes per push (split further when JSON escaping makes the body too large).
pub const BATCH_BYTES: usize = 1 << 20;
pub const BATCH_LINES: usize = 20_000;
const POLL: Duration = Duration::from_millis(100);
const DISCOVER_EVERY: Duration = Duration::from_secs(1);
const PERSIST_EVERY: Duration = Duration::from_millis(500);
/// A retired folder is removed unshipped after this long (the store kept refusing).
const RETIRED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One file being followed.
struct Source {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    tailer: Tailer,
    retired: bool,
    /// Last read: caught up with the file and the file exists.
    drained: bool,
}

pub struct Shipper {
    layout: Layout,
    node: String,
    client: kube::Client,
    state: State,
    sources: BTreeMap<String, Source>,
    /// Pods whose labels the API could not give yet.
    unresolved: BTreeSet<String>,
    /// The retired folders seen in the last discovery: uid to folder age.
    retired: BTreeMap<String, Duration>,
    last_discovery: Option<Instant>,
    last_persist: Instant,
    dirty: bool,
    /// Totals for the stop line and the tests.
    pub shipped: u64,
}

/// A batch read from the files, not yet pushed.
struct Batch {
    req: PushRequest,
    bytes: usize,
    /// Some file has more to read now: read again without waiting.
    more: bool,
}

impl Shipper {
    pub fn new(layout: Layout, node: String, client: kube::Client) -> Shipper {
        let state = State::load(&state_path(&layout));
        Shipper {
            layout,
            node,
            client,
            state,
            sources: BTreeMap::new(),
            unresolved: BTreeSet::new(),
            retired: BTreeMap::new(),
            last_discovery: None,
            last_persist: Instant::now(),
            dirty: false,
            shipped: 0,
        }
    }

    /// Runs until `stop`; then ships what is on disk once more (bounded) and saves.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        let mut deadline: Option<Instant> = None;
        loop {
            let stopping = *stop.borrow() || stop.has_changed().is_err();
            if stopping {
                // A last drain of what is on disk, bounded: a chatty container never stops.
                let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                if Instant::now() >= d {
                    break;
                }
            }
            if self
                .last_discovery
                .is_none_or(|t| t.elapsed() >= DISCOVER_EVERY)
            {
                self.discover();
                self.resolve_labels().await;
                self.last_discovery = Some(Instant::now());
            }
            let batch = self.read_batch();
            if batch.req.streams.is_empty() {
                self.cleanup_retired();
                self.persist(false);
                if stopping {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let full = batch.more || batch.bytes >= BATCH_BYTES || batch.req.lines() >= BATCH_LINES;
            let lines = batch.req.lines() as u64;
            let mut req = Some(batch.req);
            // Retry this batch until it is accepted (the files keep the rest).
            while let Some(r) = req.take() {
                let sent = if stopping {
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        push::send(&self.client, r.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(push::PushError::Send("timed out while stopping".into()))
                    })
                } else {
                    push::send(&self.client, r.clone()).await
                };
                match sent {
                    Ok(_) => {
                        backoff = Duration::from_millis(200);
                        self.shipped += lines;
                        self.commit();
                    }
                    Err(e) => {
                        if stopping {
                            tracing::warn!(error = %e, "log shipping stopped with lines unshipped; they are sent after the restart");
                            self.persist(true);
                            return;
                        }
                        tracing::warn!(error = %e, retry_in = ?backoff, "log push failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        req = Some(r);
                    }
                }
            }
            self.persist(false);
            if !full && !stopping {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        self.persist(true);
        tracing::info!(lines = self.shipped, "log shipping stopped");
    }

    /// Finds the log files of live and retired pods; starts and retargets tailers.
    fn discover(&mut self) {
        let mut found: BTreeMap<String, (PathBuf, String, String, String, String, bool)> =
            BTreeMap::new();
        for rec in PodRecord::load_all(&self.layout.pods()) {
            for c in &rec.containers {
                let key = offsets::source(&rec.uid, &c.name, c.restart_count);
                found.insert(
                    key,
                    (
                        c.log_path.clone(),
                        rec.namespace.clone(),
                        rec.name.clone(),
                        rec.uid.clone(),
                        c.name.clone(),
                        false,
                    ),
                );
            }
            if !self.state.labels.contains_key(&rec.uid) {
                self.unresolved.insert(rec.uid.clone());
            }
        }
        self.retired.clear();
        let retired = retired_dir(&self.layout);
        for entry in std::fs::read_dir(&retired).into_iter().flatten().flatten() {
            let dir = entry.path();
            let Some(meta) = RetiredPod::load(&dir) else {
                continue;
            };
            let age = std::fs::metadata(RetiredPod::path(&dir))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            self.retired.insert(meta.uid.clone(), age);
            self.state
                .labels
                .insert(meta.uid.clone(), meta.labels.clone());
            self.unresolved.remove(&meta.uid);
            let logs = dir.join("logs");
            for c in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                let container = c.file_name().to_string_lossy().into_owned();
                for f in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let Some(restart) = name.strip_suffix(".log").and_then(|n| n.parse().ok())
                    else {
                        continue;
                    };
                    let key = offsets::source(&meta.uid, &container, restart);
                    found.insert(
                        key,
                        (
                            f.path(),
                            meta.namespace.clone(),
                            meta.name.clone(),
                            meta.uid.clone(),
                            container.clone(),
                            true,
                        ),
                    );
                }
            }
        }
        // Sources no longer on disk anywhere: their files are gone.
        let gone: Vec<String> = self
            .sources
            .keys()
            .filter(|k| !found.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.sources.remove(&k);
            self.state.sources.remove(&k);
            self.dirty = true;
        }
        for (key, (path, namespace, pod, uid, container, retired)) in found {
            match self.sources.get_mut(&key) {
                Some(s) => {
                    s.tailer.path = path;
                    s.retired = retired;
                }
                None => {
                    let at = self.state.sources.get(&key).copied().unwrap_or_default();
                    self.sources.insert(
                        key,
                        Source {
                            namespace,
                            pod,
                            uid,
                            container,
                            tailer: Tailer::new(path, at),
                            retired,
                            drained: false,
                        },
                    );
                }
            }
        }
    }

    /// Asks the API for the labels of pods seen for the first time.
    async fn resolve_labels(&mut self) {
        let todo: Vec<String> = self.unresolved.iter().cloned().collect();
        for uid in todo {
            let Some(s) = self.sources.values().find(|s| s.uid == uid) else {
                continue;
            };
            let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &s.namespace);
            match api.get_opt(&s.pod).await {
                Ok(p) => {
                    let labels = p
                        .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
                        .and_then(|p| p.metadata.labels)
                        .unwrap_or_default();
                    self.state.labels.insert(uid.clone(), labels);
                    self.unresolved.remove(&uid);
                    self.dirty = true;
                }
                Err(e) => {
                    tracing::debug!(pod = %s.pod, error = %e, "reading the pod's labels for its logs")
                }
            }
        }
    }

    /// Reads new lines from every source and the agent's queue, up to one batch.
    fn read_batch(&mut self) -> Batch {
        let mut batch = Batch {
            req: PushRequest {
                node: self.node.clone(),
                streams: Vec::new(),
            },
            bytes: 0,
            more: false,
        };
        let mut lines: Vec<ShipLine> = Vec::new();
        for (key, s) in self.sources.iter_mut() {
            let budget = BATCH_BYTES.saturating_sub(batch.bytes);
            if budget == 0 || batch.req.lines() >= BATCH_LINES {
                batch.more = true;
                break;
            }
            lines.clear();
            let lost = s.tailer.lost;
            let read = s.tailer.read(budget, &mut lines);
            if s.tailer.lost > lost {
                tracing::warn!(file = %s.tailer.path.display(), "a rotated container log was deleted before it was shipped: lines are lost (the container writes faster than the log store takes them)");
            }
            match read {
                Ok(r) => {
                    s.drained = r.caught_up && !r.missing;
                    batch.more |= !r.caught_up;
                }
                Err(e) => {
                    tracing::debug!(file = %s.tailer.path.display(), error = %e, "reading a container log");
                    s.drained = false;
                    continue;
                }
            }
            if lines.is_empty() {
                continue;
            }
            batch.bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
            batch.req.streams.push(PushStream {
                source: key.clone(),
                namespace: s.namespace.clone(),
                pod: s.pod.clone(),
                pod_uid: s.uid.clone(),
                container: s.container.clone(),
                labels: self.state.labels.get(&s.uid).cloned().unwrap_or_default(),
                lines: lines
                    .drain(..)
                    .map(|l| (Some(l.pos), l.time_ns, l.stream, l.text))
                    .collect(),
            });
        }
        let mut own: Vec<AgentLine> = Vec::new();
        let dropped = agentlog::queue().take_dropped();
        if dropped > 0 {
            own.push(AgentLine {
                time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
                error: true,
                text: format!(
                    " WARN keel_agent::logship: {dropped} agent log lines were dropped while the control plane did not take them"
                ),
            });
        }
        own.extend(agentlog::queue().take(5_000));
        if !own.is_empty() {
            batch.bytes += own.iter().map(|l| l.text.len()).sum::<usize>();
            batch.req.streams.push(PushStream {
                source: "agent".into(),
                container: super::AGENT_CONTAINER.into(),
                lines: own
                    .into_iter()
                    .map(|l| (None, l.time_ns, u8::from(l.error), l.text))
                    .collect(),
                ..Default::default()
            });
        }
        batch
    }

    /// The batch was stored: remember where each source is.
    fn commit(&mut self) {
        for (key, s) in &self.sources {
            let at = s.tailer.resume();
            if self.state.sources.get(key) != Some(&at) {
                self.state.sources.insert(key.clone(), at);
                self.dirty = true;
            }
        }
    }

    /// Deletes retired pods' folders that are fully shipped.
    fn cleanup_retired(&mut self) {
        let done: Vec<String> = self
            .retired
            .iter()
            .filter(|(uid, age)| {
                let mine: Vec<&Source> = self
                    .sources
                    .values()
                    .filter(|s| &s.uid == *uid && s.retired)
                    .collect();
                **age > RETIRED_MAX_AGE
                    || (**age > Duration::from_secs(2) && mine.iter().all(|s| s.drained))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in done {
            let dir = retired_dir(&self.layout).join(&uid);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a shipped pod's logs");
                continue;
            }
            self.sources.retain(|_, s| s.uid != uid);
            self.state.forget_pod(&uid);
            self.retired.remove(&uid);
            self.dirty = true;
        }
    }

    fn persist(&mut self, now: bool) {
        if !self.dirty || (!now && self.last_persist.elapsed() < PERSIST_EVERY) {
            return;
        }
        if let Err(e) = self.state.save(&state_path(&self.layout)) {
            tracing::warn!(error = %e, "saving the log shipping offsets");
            return;
        }
        self.dirty = false;
        self.last_persist = Instant::now();
    }
}
